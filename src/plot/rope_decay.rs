//! RoFormer's long-term decay of RoPE: the relative upper bound by relative distance.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::draw::{self, short_number, DrawResult, Figure, FONT, SERIES_COLORS};
use super::rope_frequencies::{dimensions, method_label};
use super::{Backend, PlotError};
use crate::rope::{self, QkShape, RopeConfig, RopeScaling};
use crate::tensor::{Layout, Positions};

/// One curve: a legend label and the RoPE config it is computed for.
#[derive(Clone, Debug, PartialEq)]
pub struct DecayCase {
    /// Legend text.
    pub label: String,
    /// Dimensions, base and scaling method.
    pub config: RopeConfig,
}

/// RoFormer's relative upper bound of RoPE attention by relative distance.
#[derive(Clone, Debug, PartialEq)]
pub struct RopeDecayPlot {
    /// The curves, drawn in order.
    pub cases: Vec<DecayCase>,
    /// Relative distances `r` in positions, ascending.
    pub distances: Vec<u32>,
    /// Chart title.
    pub title: String,
}

impl RopeDecayPlot {
    /// The curve of `config` at `points` distances spread evenly over `0..=max_distance`
    /// (every distance when there are at most `points`), and, when `config` has a scaling
    /// method, the curve without scaling for reference.
    pub fn new(config: &RopeConfig, max_distance: u32, points: usize) -> Self {
        let distances = sample_distances(max_distance, points);
        let seq_len = u64::from(max_distance) + 1;
        let mut cases = vec![DecayCase {
            label: method_label(&config.scaling, seq_len),
            config: config.clone(),
        }];
        if config.scaling != RopeScaling::None {
            cases.push(DecayCase {
                label: "none (for reference)".to_owned(),
                config: config.clone().with_scaling(RopeScaling::None),
            });
        }
        RopeDecayPlot {
            cases,
            distances,
            title: format!(
                "RoPE long-term decay: (1/(d/2)) Σ_j |Σ_(k<j) e^(i r θ_k)|, {}",
                dimensions(config)
            ),
        }
    }

    /// Computes the bound of every case at every distance (see [`relative_upper_bound`]).
    ///
    /// # Errors
    /// As for [`relative_upper_bound`].
    pub fn data(&self, backend: Backend<'_>) -> Result<Vec<Vec<f64>>, PlotError> {
        self.cases
            .iter()
            .map(|case| relative_upper_bound(backend, &case.config, &self.distances))
            .collect()
    }

    /// Draws `data` (from [`RopeDecayPlot::data`]) as one line per case.
    ///
    /// # Errors
    /// [`PlotError::Invalid`] when `data` does not match the cases and distances or for an
    /// unsupported extension, [`PlotError::Write`] when drawing or writing fails.
    pub fn save(&self, data: &[Vec<f64>], path: &Path, size: (u32, u32)) -> Result<(), PlotError> {
        let matches = data.len() == self.cases.len()
            && data.iter().all(|curve| curve.len() == self.distances.len());
        if !matches || self.distances.is_empty() {
            return Err(PlotError::Invalid(format!(
                "expected {} curves of {} distances each",
                self.cases.len(),
                self.distances.len()
            )));
        }
        draw::save(
            &DecayFigure {
                plot: self,
                data,
                size,
            },
            path,
        )
    }
}

/// `points` integer distances spread evenly over `0..=max_distance`, or all of them when
/// there are at most `points`.
fn sample_distances(max_distance: u32, points: usize) -> Vec<u32> {
    let count = u64::from(max_distance) + 1;
    if count <= points as u64 || points < 2 {
        return (0..=max_distance).collect();
    }
    let mut distances: Vec<u32> = (0..points as u64)
        .map(|i| ((i * u64::from(max_distance)) as f64 / (points - 1) as f64).round() as u32)
        .collect();
    distances.dedup();
    distances
}

/// Computes RoFormer's relative upper bound (Su et al., 2021, section 3.4.3) at each
/// relative distance `r`: `B(r) = (1/(d/2)) Σ_{j=1..d/2} |S_j|` with
/// `S_j = Σ_{k<j} e^(i r θ_k)`, where `d` is `rotary_dim` and `θ_k` the scaled inverse
/// frequencies. With the pairs of `q` and `k` read as complex numbers, `h_j = q_j conj(k_j)`
/// and `h_(d/2) = 0`, Abel summation gives `|q · R(r) k| <= max_j |h_(j+1) - h_j| · (d/2) B(r)`.
///
/// The terms `e^(i r θ_k)` are read from rotated vectors: a head whose first feature of
/// every pair is 1 and second is 0 is rotated by `backend` at position `r`, so pair `k`
/// becomes `attention_factor * (cos rθ_k, sin rθ_k)`. The attention factor multiplies
/// every score by the same constant, so it is divided out. `B(0) = (d/2 + 1) / 2`.
///
/// # Errors
/// [`PlotError::Posenc`] for an invalid config or a GPU failure.
pub fn relative_upper_bound(
    backend: Backend<'_>,
    config: &RopeConfig,
    distances: &[u32],
) -> Result<Vec<f64>, PlotError> {
    let seq_len = distances.iter().max().map_or(1, |&max| u64::from(max) + 1);
    let frequencies = config.frequencies(seq_len)?;
    let shape = QkShape {
        batch: 1,
        seq_len: distances.len(),
        num_heads: 1,
        num_kv_heads: 0,
        head_dim: config.head_dim,
        layout: Layout::Bshd,
    };
    let half = config.rotary_dim / 2;
    let mut unit = vec![0.0f32; config.head_dim];
    for pair in 0..half {
        unit[config.layout.pair(pair, config.rotary_dim).0] = 1.0;
    }
    let q = unit.repeat(distances.len());
    let positions = Positions::Ids(distances);
    let rotated = match backend {
        Backend::Gpu(ctx) => {
            rope::gpu::apply(ctx, config, &frequencies, &shape, positions, &q, &[])?.0
        }
        Backend::Cpu => {
            let mut q = q;
            rope::apply_cpu(config, &frequencies, &shape, positions, &mut q, &mut [])?;
            q
        }
    };

    let factor = frequencies.attention_factor;
    let bounds = rotated
        .chunks_exact(config.head_dim)
        .map(|head| {
            let (mut real, mut imaginary, mut total) = (0.0f64, 0.0f64, 0.0f64);
            for pair in 0..half {
                let (a, b) = config.layout.pair(pair, config.rotary_dim);
                real += f64::from(head[a]) / factor;
                imaginary += f64::from(head[b]) / factor;
                total += real.hypot(imaginary);
            }
            total / half as f64
        })
        .collect();
    Ok(bounds)
}

struct DecayFigure<'a> {
    plot: &'a RopeDecayPlot,
    data: &'a [Vec<f64>],
    size: (u32, u32),
}

impl Figure for DecayFigure<'_> {
    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let font_size = (self.size.1 / 45).clamp(11, 20);
        let max_distance = f64::from(*self.plot.distances.last().unwrap_or(&1)).max(1.0);
        let high = self
            .data
            .iter()
            .flatten()
            .fold(0.0f64, |high, &value| high.max(value));
        let mut chart = ChartBuilder::on(root)
            .caption(&self.plot.title, (FONT, font_size + 2))
            .margin(font_size)
            .x_label_area_size(font_size * 3)
            .y_label_area_size(font_size * 4)
            .build_cartesian_2d(0.0..max_distance, 0.0..high * 1.05)?;
        chart
            .configure_mesh()
            .x_desc("relative distance r (positions)")
            .y_desc("relative upper bound B(r)")
            .x_label_formatter(&|x| short_number(*x, 6))
            .y_label_formatter(&|y| short_number(*y, 3))
            .label_style((FONT, font_size * 4 / 5))
            .axis_desc_style((FONT, font_size))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()?;

        for (index, (case, curve)) in self.plot.cases.iter().zip(self.data).enumerate() {
            let color = SERIES_COLORS[index % SERIES_COLORS.len()];
            let points = self
                .plot
                .distances
                .iter()
                .zip(curve)
                .map(|(&r, &bound)| (f64::from(r), bound));
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(1)))?
                .label(case.label.as_str())
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FONT, font_size * 4 / 5))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .draw()?;
        Ok(())
    }
}
