//! Drawing helpers shared by the plots: output formats, the embedded font, colour maps,
//! heatmap panels and colour bars.

use std::error::Error as StdError;
use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::colors::colormaps::ViridisRGB;

use super::text::TextBackend;
use super::PlotError;

/// The result of drawing steps; plotters' errors are boxed and turned into
/// [`PlotError::Write`] once, in [`save`].
pub(crate) type DrawResult = Result<(), Box<dyn StdError>>;

/// The font family every label uses, registered from the `dejavu` crate.
pub(crate) const FONT: &str = "sans-serif";

/// Colour of cells that a mask hides.
pub(crate) const HIDDEN: RGBColor = RGBColor(215, 215, 215);

/// Line colours of multi-series charts (the Tableau 10 palette).
pub(crate) const SERIES_COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// The image format of an output file, chosen by its extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    /// `.png`: a raster image.
    Png,
    /// `.svg`: vector axes and text; heatmaps are embedded as PNG images.
    Svg,
}

impl ImageFormat {
    /// Returns the format for `path`'s extension (case-insensitive).
    ///
    /// # Errors
    /// [`PlotError::Invalid`] for any extension other than `.png` and `.svg`.
    pub fn from_path(path: &Path) -> Result<Self, PlotError> {
        let extension = path
            .extension()
            .map(|ext| ext.to_string_lossy().to_ascii_lowercase());
        match extension.as_deref() {
            Some("png") => Ok(ImageFormat::Png),
            Some("svg") => Ok(ImageFormat::Svg),
            _ => Err(PlotError::Invalid(format!(
                "unsupported output file {}: the extension must be .png or .svg",
                path.display()
            ))),
        }
    }
}

/// A picture that can be drawn on any plotters backend.
pub(crate) trait Figure {
    /// Width and height in pixels.
    fn size(&self) -> (u32, u32);

    /// Draws the picture on `root`, which is already filled white.
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static;
}

/// Draws `figure` to `path` as PNG or SVG, by the extension.
///
/// # Errors
/// [`PlotError::Invalid`] for another extension, [`PlotError::Write`] when drawing or
/// writing the file fails.
pub(crate) fn save(figure: &impl Figure, path: &Path) -> Result<(), PlotError> {
    register_fonts();
    let format = ImageFormat::from_path(path)?;
    let size = figure.size();
    let result = match format {
        ImageFormat::Png => draw_and_present(
            figure,
            TextBackend::new(BitMapBackend::new(path, size), true),
        ),
        ImageFormat::Svg => {
            draw_and_present(figure, TextBackend::new(SVGBackend::new(path, size), false))
        }
    };
    result.map_err(|error| PlotError::Write {
        path: path.display().to_string(),
        message: error.to_string(),
    })
}

fn draw_and_present<DB: DrawingBackend>(figure: &impl Figure, backend: DB) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let root = backend.into_drawing_area();
    root.fill(&WHITE)?;
    figure.draw(&root)?;
    root.present()?;
    Ok(())
}

/// Registers DejaVu Sans from the `dejavu` crate under [`FONT`], so text renders the same
/// on every machine, without system fonts.
fn register_fonts() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // Both byte slices are valid TrueType files; if registration failed anyway, drawing
        // the first label would return plotters' "font unavailable" error.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
        let _ = plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold());
    });
}

/// Maps `t` in [-1, 1] to a blue-white-red diverging colour (ColorBrewer RdBu, 5 classes);
/// values outside are clamped.
pub(crate) fn diverging(t: f64) -> RGBColor {
    const ANCHORS: [(u8, u8, u8); 5] = [
        (33, 102, 172),
        (146, 197, 222),
        (247, 247, 247),
        (244, 165, 130),
        (178, 24, 43),
    ];
    let position = (t.clamp(-1.0, 1.0) + 1.0) * 2.0;
    let index = (position.floor() as usize).min(ANCHORS.len() - 2);
    let fraction = position - index as f64;
    let (low, high) = (ANCHORS[index], ANCHORS[index + 1]);
    let mix =
        |a: u8, b: u8| (f64::from(a) + (f64::from(b) - f64::from(a)) * fraction).round() as u8;
    RGBColor(mix(low.0, high.0), mix(low.1, high.1), mix(low.2, high.2))
}

/// Maps `t` in [0, 1] to viridis; values outside are clamped.
pub(crate) fn sequential(t: f64) -> RGBColor {
    ViridisRGB.get_color(t.clamp(0.0, 1.0) as f32)
}

/// A matrix drawn as a raster of coloured cells, row 0 at the top.
pub(crate) struct Heatmap<'a> {
    /// Row-major values, `rows * cols`.
    pub values: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    /// Colour of each cell, from its row, column and value.
    pub color: &'a dyn Fn(usize, usize, f32) -> RGBColor,
    pub title: String,
    pub x_desc: &'a str,
    pub y_desc: &'a str,
    /// Caption and label size in pixels.
    pub font_size: u32,
}

/// Draws `heatmap` with integer axes in `area`. Cells are sampled nearest-neighbour onto the
/// plotting area's pixels, so any matrix size draws as one image of the area's size.
pub(crate) fn draw_heatmap<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    heatmap: &Heatmap<'_>,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let label_size = heatmap.font_size * 4 / 5;
    // Cell c spans [c - 0.5, c + 0.5], so integer ticks sit at cell centres. Rows run down
    // from 0 at the top, which plotters' upward y axis gives as -row.
    let mut builder = ChartBuilder::on(area);
    if !heatmap.title.is_empty() {
        builder.caption(&heatmap.title, (FONT, heatmap.font_size));
    }
    let mut chart = builder
        .margin(heatmap.font_size / 2)
        .x_label_area_size(heatmap.font_size * 2 + 6)
        .y_label_area_size(heatmap.font_size * 3)
        .build_cartesian_2d(
            -0.5..heatmap.cols as f64 - 0.5,
            -(heatmap.rows as f64) + 0.5..0.5,
        )?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc(heatmap.x_desc)
        .y_desc(heatmap.y_desc)
        .x_labels(heatmap.cols.min(9))
        .y_labels(heatmap.rows.min(9))
        .x_label_formatter(&|x| integer_label(*x))
        .y_label_formatter(&|y| integer_label(-*y))
        .label_style((FONT, label_size))
        .axis_desc_style((FONT, label_size))
        .draw()?;

    let (x_pixels, y_pixels) = chart.plotting_area().get_pixel_range();
    let width = x_pixels.len();
    let height = y_pixels.len();
    if width == 0 || height == 0 {
        return Err(
            "the image is too small for the heatmap; use a larger --width and --height".into(),
        );
    }
    let mut rgb = vec![0u8; width * height * 3];
    for y in 0..height {
        let row = y * heatmap.rows / height;
        for x in 0..width {
            let col = x * heatmap.cols / width;
            let color = (heatmap.color)(row, col, heatmap.values[row * heatmap.cols + col]);
            rgb[(y * width + x) * 3..][..3].copy_from_slice(&[color.0, color.1, color.2]);
        }
    }
    let top_left = (-0.5, 0.5);
    let image = BitMapElement::with_owned_buffer(top_left, (width as u32, height as u32), rgb)
        .ok_or("the heatmap's pixel buffer does not match its size")?;
    chart.plotting_area().draw(&image)?;
    Ok(())
}

/// Formats the label of an integer tick, and an empty label between integers.
fn integer_label(value: f64) -> String {
    if (value - value.round()).abs() < 1e-9 {
        format!("{}", value.round() as i64)
    } else {
        String::new()
    }
}

/// Draws a vertical colour bar for values `min..max` with `color(value)` in `area`.
pub(crate) fn draw_color_bar<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    (min, max): (f64, f64),
    color: &dyn Fn(f64) -> RGBColor,
    label: &str,
    font_size: u32,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let label_size = font_size * 4 / 5;
    let max = if max > min { max } else { min + 1.0 };
    let mut chart = ChartBuilder::on(area)
        .margin_top(font_size * 2)
        .margin_bottom(font_size * 2 + 6)
        .margin_right(font_size / 2)
        .y_label_area_size(font_size * 4)
        .build_cartesian_2d(0.0..1.0, min..max)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_desc(label)
        .y_labels(7)
        .label_style((FONT, label_size))
        .axis_desc_style((FONT, label_size))
        .draw()?;

    // 128 bands look continuous at colour-bar heights and keep an SVG small.
    let steps = 128;
    let band = (max - min) / steps as f64;
    chart.draw_series((0..steps).map(|step| {
        let low = min + step as f64 * band;
        Rectangle::new(
            [(0.0, low), (1.0, low + band)],
            color(low + band / 2.0).filled(),
        )
    }))?;
    Ok(())
}

/// Splits `count` panels into a grid of `(columns, rows)`: about square, preferring a grid
/// with fewer empty cells (8 panels give 4 x 2, not 3 x 3).
pub(crate) fn grid(count: usize) -> (usize, usize) {
    let count = count.max(1);
    let square = (count as f64).sqrt().ceil() as usize;
    let columns = (square..=square + 1)
        .min_by_key(|&columns| columns * count.div_ceil(columns) - count)
        .unwrap_or(square);
    (columns, count.div_ceil(columns))
}

/// Formats a number with up to `digits` significant digits and no trailing zeros.
pub(crate) fn short_number(value: f64, digits: usize) -> String {
    if value == 0.0 || !value.is_finite() {
        return format!("{value}");
    }
    let magnitude = value.abs().log10().floor() as i32;
    if !(-4..=6).contains(&magnitude) {
        return format!("{value:.*e}", digits.saturating_sub(1));
    }
    let decimals = (digits as i32 - 1 - magnitude).max(0) as usize;
    let text = format!("{value:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}
