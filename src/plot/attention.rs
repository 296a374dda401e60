//! Attention probability maps on seeded random Q and K, one heatmap per sequence and head.

use std::f64::consts::PI;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::alibi::slope_label;
use super::draw::{self, DrawResult, Figure, Heatmap, FONT, HIDDEN};
use super::{Backend, PlotError};
use crate::attention::{self, AttentionParams, AttentionShape};
use crate::error::Result;

/// Masked attention of random Q and K; `q_len` must equal `kv_len`.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionPlot {
    /// Batch, heads, lengths and head_dim; one panel per sequence and head.
    pub shape: AttentionShape,
    /// Scale, masks and biases.
    pub params: AttentionParams,
    /// Seed of the ChaCha8 generator that draws Q and K.
    pub seed: u64,
}

/// Probabilities and the mask that produced them.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionMap {
    /// `[batch, num_heads, q_len, kv_len]`.
    pub probs: Vec<f32>,
    /// Whether the masks let query row `i` see key `j`, in the layout of `probs`.
    pub visible: Vec<bool>,
}

impl AttentionPlot {
    /// Draws Q and K with independent standard normal entries (Box-Muller on a ChaCha8
    /// stream seeded with `seed`; Q first, then K), so scores `q · k / sqrt(head_dim)` have
    /// unit variance. V is zero, because the plot shows only probabilities.
    ///
    /// # Errors
    /// [`crate::Error::InvalidShape`] when the tensors overflow `usize`.
    pub fn inputs(&self) -> Result<[Vec<f32>; 3]> {
        let (q_len, kv_len, _) = self.shape.lens()?;
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let mut normal = || {
            // 1 - u lies in (0, 1], so the logarithm is finite.
            let u1: f64 = 1.0 - rng.random::<f64>();
            let u2: f64 = rng.random();
            ((-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos()) as f32
        };
        let q = (0..q_len).map(|_| normal()).collect();
        let k = (0..kv_len).map(|_| normal()).collect();
        Ok([q, k, vec![0.0; kv_len]])
    }

    /// Computes the probabilities, and the visibility of every (row, key) pair on the host.
    ///
    /// # Errors
    /// As for [`crate::attention::attention_cpu`] and [`crate::attention::gpu::attention`].
    pub fn data(&self, backend: Backend<'_>) -> Result<AttentionMap> {
        let resolved = attention::resolve(&self.shape, &self.params)?;
        let [q, k, v] = self.inputs()?;
        let probs = match backend {
            Backend::Gpu(ctx) => {
                attention::gpu::attention::<f32>(ctx, &self.shape, &self.params, &q, &k, &v)?.probs
            }
            Backend::Cpu => attention::attention_cpu(&self.shape, &self.params, &q, &k, &v)?.probs,
        };
        let shape = &self.shape;
        let mut visible = Vec::with_capacity(probs.len());
        for b in 0..shape.batch {
            for h in 0..shape.num_heads {
                for i in 0..shape.q_len {
                    visible.extend(
                        (0..shape.kv_len).map(|j| {
                            attention::visible(&self.params, &resolved, shape, b, h, i, j)
                        }),
                    );
                }
            }
        }
        Ok(AttentionMap { probs, visible })
    }

    /// Draws `map` (from [`AttentionPlot::data`]): one heatmap per sequence and head, with
    /// colour on a square-root scale of the probability from 0 to 1 and hidden keys in grey.
    ///
    /// # Errors
    /// [`PlotError::Invalid`] when `map` does not match the shape or for an unsupported
    /// extension, [`PlotError::Write`] when drawing or writing fails.
    pub fn save(&self, map: &AttentionMap, path: &Path, size: (u32, u32)) -> Result<(), PlotError> {
        let expected =
            self.shape.batch * self.shape.num_heads * self.shape.q_len * self.shape.kv_len;
        if map.probs.len() != expected || map.visible.len() != expected {
            return Err(PlotError::Invalid(format!(
                "expected {expected} probabilities and visibility flags"
            )));
        }
        draw::save(
            &AttentionFigure {
                plot: self,
                map,
                size,
            },
            path,
        )
    }

    /// Describes the masks and biases in use, for the title.
    fn describe_masks(&self) -> String {
        let params = &self.params;
        let mut parts = Vec::new();
        if params.causal {
            parts.push("causal".to_owned());
        }
        if let Some(window) = params.window {
            parts.push(format!("window {window}"));
        }
        if let Some(lengths) = &params.key_lengths {
            parts.push(format!("key_lengths {lengths:?}"));
        }
        if let Some(segments) = &params.segments {
            let mut ids = segments.q[..self.shape.q_len].to_vec();
            ids.dedup();
            parts.push(format!("{} packed segments", ids.len()));
        }
        if params.alibi.is_some() {
            parts.push("ALiBi".to_owned());
        }
        if parts.is_empty() {
            parts.push("no mask".to_owned());
        }
        parts.join(", ")
    }

    /// Returns the title of the panel of sequence `b` and head `h`.
    fn panel_title(&self, b: usize, h: usize, slopes: Option<&[f64]>) -> String {
        let mut parts = Vec::new();
        if self.shape.batch > 1 {
            parts.push(format!("sequence {b}"));
        }
        if self.shape.num_heads > 1 || slopes.is_some() {
            parts.push(format!("head {h}"));
        }
        if let Some(slopes) = slopes {
            parts.push(slope_label(slopes[h]));
        }
        parts.join(", ")
    }
}

struct AttentionFigure<'a> {
    plot: &'a AttentionPlot,
    map: &'a AttentionMap,
    size: (u32, u32),
}

impl Figure for AttentionFigure<'_> {
    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let shape = &self.plot.shape;
        let panels = shape.batch * shape.num_heads;
        let (columns, rows) = draw::grid(panels);
        let font_size = (self.size.1 / rows as u32 / 24).clamp(10, 16);
        let title = format!(
            "Attention probabilities on random Q and K (seed {}, head_dim {})",
            self.plot.seed, shape.head_dim
        );
        let root = root
            .margin(font_size / 2, 0, 0, 0)
            .titled(&title, (FONT, font_size + 4))?
            .titled(&self.plot.describe_masks(), (FONT, font_size + 1))?;
        let bar_width = font_size * 7;
        let (grid_area, bar_area) = root.split_horizontally(self.size.0.saturating_sub(bar_width));

        // A square-root scale keeps small probabilities apart in rows of many keys, while
        // rows of one visible key reach 1.
        let probability_color = |p: f64| draw::sequential(p.max(0.0).sqrt());
        let cells = shape.q_len * shape.kv_len;
        let slopes = self
            .plot
            .params
            .alibi
            .map(|alibi| alibi.slopes())
            .transpose()?;
        let areas = grid_area.split_evenly((rows, columns));
        for (panel, area) in areas.iter().enumerate().take(panels) {
            let visible = &self.map.visible[panel * cells..][..cells];
            let color = |row: usize, col: usize, p: f32| {
                if visible[row * shape.kv_len + col] {
                    probability_color(f64::from(p))
                } else {
                    HIDDEN
                }
            };
            let (b, h) = (panel / shape.num_heads, panel % shape.num_heads);
            draw::draw_heatmap(
                area,
                &Heatmap {
                    values: &self.map.probs[panel * cells..][..cells],
                    rows: shape.q_len,
                    cols: shape.kv_len,
                    color: &color,
                    title: self.plot.panel_title(b, h, slopes.as_deref()),
                    x_desc: "key j",
                    y_desc: "query i",
                    font_size,
                },
            )?;
        }
        let label = "probability, square-root scale (grey: hidden)";
        draw::draw_color_bar(&bar_area, (0.0, 1.0), &probability_color, label, font_size)
    }
}
