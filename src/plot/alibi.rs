//! The ALiBi bias matrix of each head, as a grid of small heatmaps.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::draw::{self, short_number, DrawResult, Figure, Heatmap, FONT};
use super::{Backend, PlotError};
use crate::alibi::{self, Alibi, AlibiBias};
use crate::error::Result;

/// The ALiBi bias of every head for `len` query positions and `len` keys.
#[derive(Clone, Debug, PartialEq)]
pub struct AlibiPlot {
    /// Head count, bias form and `max_bias`.
    pub alibi: Alibi,
    /// Query positions and keys: query row `i` has position `i`, key `j` position `j`.
    pub len: usize,
}

/// The bias tensor and the slopes it was made with.
#[derive(Clone, Debug, PartialEq)]
pub struct AlibiData {
    /// `[num_heads, len, len]`: `-m_h * (i - j)`, or `-m_h * |i - j|` for the symmetric
    /// form.
    pub bias: Vec<f32>,
    /// The slope `m_h` of each head, from [`Alibi::slopes`].
    pub slopes: Vec<f64>,
}

impl AlibiPlot {
    /// Computes the bias of every head.
    ///
    /// # Errors
    /// As for [`crate::alibi::bias_cpu`] and [`crate::alibi::gpu::bias`].
    pub fn data(&self, backend: Backend<'_>) -> Result<AlibiData> {
        let slopes = self.alibi.slopes()?;
        let bias = match backend {
            Backend::Gpu(ctx) => alibi::gpu::bias::<f32>(ctx, &self.alibi, self.len, self.len, 0)?,
            Backend::Cpu => alibi::bias_cpu(&self.alibi, self.len, self.len, 0)?,
        };
        Ok(AlibiData { bias, slopes })
    }

    /// Draws `data` (from [`AlibiPlot::data`]) as one heatmap per head on a shared colour
    /// scale, with each head's slope in its title.
    ///
    /// # Errors
    /// [`PlotError::Invalid`] when `data` does not match the plot or for an unsupported
    /// extension, [`PlotError::Write`] when drawing or writing fails.
    pub fn save(&self, data: &AlibiData, path: &Path, size: (u32, u32)) -> Result<(), PlotError> {
        let heads = self.alibi.num_heads;
        if data.slopes.len() != heads || data.bias.len() != heads * self.len * self.len {
            return Err(PlotError::Invalid(format!(
                "expected {heads} slopes and {heads} x {len} x {len} bias values",
                len = self.len
            )));
        }
        draw::save(
            &AlibiFigure {
                plot: self,
                data,
                size,
            },
            path,
        )
    }
}

/// `m = 2^-e = value`, with `e` to 4 significant digits.
pub(super) fn slope_label(slope: f64) -> String {
    format!(
        "m = 2^-{} = {}",
        short_number(-slope.log2(), 4),
        short_number(slope, 3)
    )
}

struct AlibiFigure<'a> {
    plot: &'a AlibiPlot,
    data: &'a AlibiData,
    size: (u32, u32),
}

impl Figure for AlibiFigure<'_> {
    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let heads = self.plot.alibi.num_heads;
        let (columns, rows) = draw::grid(heads);
        let font_size = (self.size.1 / rows as u32 / 24).clamp(10, 16);
        let formula = match self.plot.alibi.bias {
            AlibiBias::Causal => "-m·(i - j)",
            AlibiBias::Symmetric => "-m·|i - j|",
        };
        let title =
            format!("ALiBi bias {formula}, query position i (rows) by key position j (columns)");
        let subtitle = format!(
            "{heads} heads, max_bias {}, one colour scale for all heads",
            short_number(self.plot.alibi.max_bias, 4)
        );
        let root = root
            .margin(font_size / 2, 0, 0, 0)
            .titled(&title, (FONT, font_size + 4))?
            .titled(&subtitle, (FONT, font_size + 1))?;
        let bar_width = font_size * 7;
        let (grid_area, bar_area) = root.split_horizontally(self.size.0.saturating_sub(bar_width));

        // One scale for every head, so steeper slopes show as darker maps.
        let limit = self
            .data
            .bias
            .iter()
            .fold(0.0f64, |limit, &value| limit.max(f64::from(value).abs()))
            .max(f64::MIN_POSITIVE);
        let color = |_: usize, _: usize, value: f32| draw::diverging(f64::from(value) / limit);
        let len = self.plot.len;
        for (head, panel) in grid_area
            .split_evenly((rows, columns))
            .iter()
            .enumerate()
            .take(heads)
        {
            draw::draw_heatmap(
                panel,
                &Heatmap {
                    values: &self.data.bias[head * len * len..][..len * len],
                    rows: len,
                    cols: len,
                    color: &color,
                    title: format!("head {head}: {}", slope_label(self.data.slopes[head])),
                    x_desc: "key j",
                    y_desc: "query i",
                    font_size,
                },
            )?;
        }
        let bar_color = |value: f64| draw::diverging(value / limit);
        draw::draw_color_bar(&bar_area, (-limit, limit), &bar_color, "bias", font_size)
    }
}
