//! RoPE wavelengths per dimension pair for every scaling method, on one log-scale chart.

use std::f64::consts::PI;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::draw::{self, short_number, DrawResult, Figure, FONT, SERIES_COLORS};
use super::{Backend, PlotError};
use crate::rope::{self, Llama3, RopeConfig, RopeScaling, Yarn};
use crate::tensor::Positions;

/// The angle near which each pair's rotation is measured, in radians: below π, so
/// `atan2(sin, cos)` returns it without wrapping, and far above the GPU's angle resolution
/// of 2π / 2^32.
const MEASURED_ANGLE: f64 = 3.0;

/// One curve: a legend label, and the RoPE config and sequence length whose frequencies it
/// draws.
#[derive(Clone, Debug, PartialEq)]
pub struct RopeCase {
    /// Legend text.
    pub label: String,
    /// Dimensions, base and scaling method.
    pub config: RopeConfig,
    /// The sequence length passed to [`RopeConfig::frequencies`]; only dynamic NTK and
    /// LongRoPE look at it.
    pub seq_len: u64,
}

/// The settings a comparison of scaling methods is drawn for.
#[derive(Clone, Debug, PartialEq)]
pub struct RopeComparison {
    /// Dimensions, base and layout of the curves. When its scaling is not `None`, that
    /// method is drawn with the config's parameters instead of the defaults below.
    pub config: RopeConfig,
    /// Context extension factor of linear, dynamic NTK, YaRN and Llama 3.
    pub factor: f64,
    /// Trained context length in tokens (`original_max_position_embeddings`).
    pub original_max_position_embeddings: u64,
    /// Sequence length in tokens for dynamic NTK and for LongRoPE's choice between short
    /// and long factors.
    pub seq_len: u64,
    /// A LongRoPE config and its name, drawn when `config` is not LongRoPE itself, because
    /// LongRoPE's per-pair factors exist only in a model's config. `None` leaves LongRoPE
    /// out, and a legend line notes that.
    pub longrope: Option<(String, RopeConfig)>,
}

/// Wavelengths of one curve.
#[derive(Clone, Debug, PartialEq)]
pub struct Wavelengths {
    /// `2π / inv_freq[i]` in positions for each rotated pair `i`, as measured from the
    /// computed cos and sin tables.
    pub per_pair: Vec<f64>,
    /// The factor that multiplies cos and sin (1 except for YaRN and LongRoPE).
    pub attention_factor: f64,
}

/// Wavelength per dimension pair for several RoPE configs.
#[derive(Clone, Debug, PartialEq)]
pub struct RopeFrequencyPlot {
    /// The curves, drawn in order.
    pub cases: Vec<RopeCase>,
    /// Chart title.
    pub title: String,
    /// Horizontal reference lines: label and length in tokens.
    pub reference_lengths: Vec<(String, f64)>,
    /// A line for the legend about a method that is not drawn.
    pub note: Option<String>,
}

impl RopeFrequencyPlot {
    /// Builds the curves of no scaling, linear, dynamic NTK, YaRN, Llama 3 and LongRoPE for
    /// `settings`. Methods other than the config's own use transformers' defaults: YaRN's
    /// `beta_fast = 32`, `beta_slow = 1`, and Llama 3's `low_freq_factor = 1`,
    /// `high_freq_factor = 4` (Llama 3.1's values).
    pub fn comparison(settings: &RopeComparison) -> Self {
        let config = &settings.config;
        let (factor, original) = (settings.factor, settings.original_max_position_embeddings);
        let scaled = |scaling: RopeScaling| match (&config.scaling, &scaling) {
            (own, default) if own.rope_type() == default.rope_type() => own.clone(),
            _ => scaling,
        };
        let methods = [
            RopeScaling::None,
            scaled(RopeScaling::Linear { factor }),
            scaled(RopeScaling::Dynamic {
                factor,
                max_position_embeddings: original,
            }),
            scaled(RopeScaling::Yarn(Yarn::new(factor, original))),
            scaled(RopeScaling::Llama3(Llama3 {
                factor,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: original,
            })),
        ];
        let mut cases: Vec<RopeCase> = methods
            .into_iter()
            .map(|scaling| RopeCase {
                label: method_label(&scaling, settings.seq_len),
                config: config.clone().with_scaling(scaling),
                seq_len: settings.seq_len,
            })
            .collect();

        let mut note = None;
        if let RopeScaling::LongRope(_) = config.scaling {
            cases.push(RopeCase {
                label: method_label(&config.scaling, settings.seq_len),
                config: config.clone(),
                seq_len: settings.seq_len,
            });
        } else if let Some((name, other)) = &settings.longrope {
            cases.push(RopeCase {
                label: format!(
                    "{}; {name}: {}",
                    method_label(&other.scaling, settings.seq_len),
                    dimensions(other)
                ),
                config: other.clone(),
                seq_len: settings.seq_len,
            });
        } else {
            note = Some("LongRoPE not drawn: its factors come only from a config".to_owned());
        }

        RopeFrequencyPlot {
            cases,
            title: format!(
                "RoPE wavelength 2π/inv_freq per pair: {}, trained length {original}, factor {}",
                dimensions(config),
                short_number(factor, 4)
            ),
            reference_lengths: vec![
                (format!("trained length {original}"), original as f64),
                (
                    format!(
                        "factor x trained length {}",
                        short_number(factor * original as f64, 6)
                    ),
                    factor * original as f64,
                ),
            ],
            note,
        }
    }

    /// Measures the wavelengths of every case (see [`wavelengths`]).
    ///
    /// # Errors
    /// As for [`wavelengths`].
    pub fn data(&self, backend: Backend<'_>) -> Result<Vec<Wavelengths>, PlotError> {
        self.cases
            .iter()
            .map(|case| wavelengths(backend, &case.config, case.seq_len))
            .collect()
    }

    /// Draws `data` (from [`RopeFrequencyPlot::data`]) as one log-scale line per case.
    ///
    /// # Errors
    /// [`PlotError::Invalid`] when `data` does not match the cases or for an unsupported
    /// extension, [`PlotError::Write`] when drawing or writing fails.
    pub fn save(
        &self,
        data: &[Wavelengths],
        path: &Path,
        size: (u32, u32),
    ) -> Result<(), PlotError> {
        if data.len() != self.cases.len() || data.iter().any(|curve| curve.per_pair.is_empty()) {
            return Err(PlotError::Invalid(format!(
                "expected wavelengths for {} cases, each with at least one pair",
                self.cases.len()
            )));
        }
        draw::save(
            &FrequencyFigure {
                plot: self,
                data,
                size,
            },
            path,
        )
    }
}

/// `head_dim 128, base 500000`, with the rotated width when it is partial.
pub(super) fn dimensions(config: &RopeConfig) -> String {
    let width = if config.rotary_dim == config.head_dim {
        format!("head_dim {}", config.head_dim)
    } else {
        format!(
            "rotary_dim {} of head_dim {}",
            config.rotary_dim, config.head_dim
        )
    };
    format!("{width}, base {}", short_number(config.base, 6))
}

/// The legend text of a scaling method and its parameters.
pub(super) fn method_label(scaling: &RopeScaling, seq_len: u64) -> String {
    match scaling {
        RopeScaling::None => "none (plain RoPE)".to_owned(),
        RopeScaling::Linear { factor } => format!("linear, factor {}", short_number(*factor, 4)),
        RopeScaling::Dynamic {
            factor,
            max_position_embeddings,
        } => format!(
            "dynamic NTK, factor {}, trained {max_position_embeddings}, at seq_len {seq_len}",
            short_number(*factor, 4)
        ),
        RopeScaling::Yarn(yarn) => format!(
            "YaRN, factor {}, beta_fast {}, beta_slow {}",
            short_number(yarn.factor, 4),
            short_number(yarn.beta_fast, 4),
            short_number(yarn.beta_slow, 4)
        ),
        RopeScaling::Llama3(llama3) => format!(
            "Llama 3, factor {}, low/high_freq_factor {}/{}",
            short_number(llama3.factor, 4),
            short_number(llama3.low_freq_factor, 4),
            short_number(llama3.high_freq_factor, 4)
        ),
        RopeScaling::LongRope(long_rope) => {
            let original = long_rope.original_max_position_embeddings;
            let which = if seq_len > original { "long" } else { "short" };
            format!("LongRoPE, {which} factors (seq_len {seq_len}, trained {original})")
        }
    }
}

/// Measures `2π / inv_freq` for each rotated pair of `config` from the cos and sin tables
/// that `backend` computes.
///
/// Pair `i` is read at position `p_i = floor(3 / inv_freq_i)` (at least 1), where its angle
/// `θ = p_i inv_freq_i` is just under 3 radians, and its wavelength is `2π p_i / θ` with
/// `θ = atan2(sin, cos)`. The attention factor scales cos and sin alike and cancels. Near 3
/// radians the f32 rounding of cos and sin, and the GPU's angle resolution of 2π / 2^32,
/// change the wavelength by less than 1e-7 of itself.
///
/// # Errors
/// [`PlotError::Posenc`] for an invalid config or a GPU failure; [`PlotError::Invalid`]
/// when a pair turns more than π radians per position, because its wavelength is then
/// below 2 positions and a table cannot tell it from a longer one.
pub fn wavelengths(
    backend: Backend<'_>,
    config: &RopeConfig,
    seq_len: u64,
) -> Result<Wavelengths, PlotError> {
    let frequencies = config.frequencies(seq_len)?;
    if let Some((pair, &inv_freq)) = frequencies
        .inv_freq
        .iter()
        .enumerate()
        .find(|(_, &w)| !(w > 0.0 && w <= PI))
    {
        return Err(PlotError::Invalid(format!(
            "pair {pair} turns {inv_freq} radians per position, outside (0, π], so its \
             wavelength cannot be measured; use a base above 1 and scaling factors of at least 1"
        )));
    }
    let positions: Vec<u32> = frequencies
        .inv_freq
        .iter()
        .map(|&w| (MEASURED_ANGLE / w).floor().clamp(1.0, f64::from(u32::MAX)) as u32)
        .collect();
    let rows = positions.len();
    let tables = match backend {
        Backend::Gpu(ctx) => {
            rope::gpu::tables(ctx, config, &frequencies, Positions::Ids(&positions), rows)?
        }
        Backend::Cpu => rope::tables_cpu(config, &frequencies, Positions::Ids(&positions), rows)?,
    };

    let per_pair = positions
        .iter()
        .enumerate()
        .map(|(pair, &position)| {
            let (column, _) = config.layout.pair(pair, config.rotary_dim);
            let index = pair * config.rotary_dim + column;
            let angle = f64::from(tables.sin[index]).atan2(f64::from(tables.cos[index]));
            2.0 * PI * f64::from(position) / angle
        })
        .collect();
    Ok(Wavelengths {
        per_pair,
        attention_factor: frequencies.attention_factor,
    })
}

struct FrequencyFigure<'a> {
    plot: &'a RopeFrequencyPlot,
    data: &'a [Wavelengths],
    size: (u32, u32),
}

impl FrequencyFigure<'_> {
    /// Returns the y range: every wavelength and reference line, with a margin on the log scale.
    fn y_range(&self) -> (f64, f64) {
        let values = self
            .data
            .iter()
            .flat_map(|curve| curve.per_pair.iter().copied())
            .chain(
                self.plot
                    .reference_lengths
                    .iter()
                    .map(|(_, length)| *length),
            );
        let (low, high) = values.fold((f64::INFINITY, 0.0f64), |(low, high), value| {
            (low.min(value), high.max(value))
        });
        (low / 2.0, high * 4.0)
    }
}

impl Figure for FrequencyFigure<'_> {
    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let font_size = (self.size.1 / 45).clamp(11, 20);
        let pairs = self
            .data
            .iter()
            .map(|curve| curve.per_pair.len())
            .max()
            .unwrap_or(1);
        let (low, high) = self.y_range();
        let mut chart = ChartBuilder::on(root)
            .caption(&self.plot.title, (FONT, font_size + 2))
            .margin(font_size)
            .x_label_area_size(font_size * 3)
            .y_label_area_size(font_size * 5)
            .build_cartesian_2d(0.0..(pairs - 1).max(1) as f64, (low..high).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("dimension pair i")
            .y_desc("wavelength 2π/inv_freq (positions, log scale)")
            .x_label_formatter(&|x| format!("{}", x.round() as i64))
            .y_label_formatter(&|y| log_tick(*y))
            .label_style((FONT, font_size * 4 / 5))
            .axis_desc_style((FONT, font_size))
            .light_line_style(RGBColor(235, 235, 235))
            .max_light_lines(1)
            .draw()?;

        for (index, (label, length)) in self.plot.reference_lengths.iter().enumerate() {
            let style = RGBColor(90, 90, 90).stroke_width(1);
            let points = [(0.0, *length), ((pairs - 1) as f64, *length)];
            chart
                .draw_series(DashedLineSeries::new(
                    points,
                    6 + 4 * index as i32,
                    4,
                    style,
                ))?
                .label(label.as_str())
                .legend(move |(x, y)| {
                    EmptyElement::at((x, y))
                        + PathElement::new([(0, 0), (8, 0)], style)
                        + PathElement::new([(12, 0), (20, 0)], style)
                });
        }
        for (index, (case, curve)) in self.plot.cases.iter().zip(self.data).enumerate() {
            let color = SERIES_COLORS[index % SERIES_COLORS.len()];
            // Methods coincide over many pairs (YaRN and Llama 3 with linear at low
            // frequencies), so earlier curves are drawn wider to stay visible underneath.
            let width = (7 - index.min(5)) as u32;
            let points = curve
                .per_pair
                .iter()
                .enumerate()
                .map(|(i, &w)| (i as f64, w));
            let mut label = case.label.clone();
            if curve.attention_factor != 1.0 {
                label.push_str(&format!(
                    ", attention factor {}",
                    short_number(curve.attention_factor, 4)
                ));
            }
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(width)))?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], color.stroke_width(width.min(4)))
                });
        }
        if let Some(note) = &self.plot.note {
            chart
                .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
                .label(note.as_str())
                .legend(|(x, y)| Cross::new((x + 10, y), 4, BLACK));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font((FONT, font_size * 4 / 5))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .draw()?;
        Ok(())
    }
}

/// Formats a log-axis tick: `10^k` for powers of ten from 10^4 up, otherwise the number.
fn log_tick(value: f64) -> String {
    let exponent = value.log10().round();
    if exponent >= 4.0 && (value / 10f64.powf(exponent) - 1.0).abs() < 1e-9 {
        format!("10^{exponent}")
    } else {
        short_number(value, 3)
    }
}
