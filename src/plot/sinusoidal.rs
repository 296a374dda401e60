//! The sinusoidal table as a position-by-feature heatmap.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::draw::{self, DrawResult, Figure, Heatmap, FONT};
use super::{Backend, PlotError};
use crate::error::Result;
use crate::sinusoidal::{self, Sinusoidal, SinusoidalFrequencies, SinusoidalLayout};
use crate::tensor::Positions;

/// The sinusoidal encoding table of positions `0..positions`.
#[derive(Clone, Debug, PartialEq)]
pub struct SinusoidalPlot {
    /// Width, base, layout and frequency rule.
    pub encoding: Sinusoidal,
    /// Rows of the table: positions 0 to `positions - 1`.
    pub positions: usize,
}

impl SinusoidalPlot {
    /// Computes the table `[positions, dim]` (row-major, values in [-1, 1]).
    ///
    /// # Errors
    /// As for [`crate::sinusoidal::table_cpu`] and [`crate::sinusoidal::gpu::table`].
    pub fn data(&self, backend: Backend<'_>) -> Result<Vec<f32>> {
        let start = Positions::Start(0);
        match backend {
            Backend::Gpu(ctx) => {
                sinusoidal::gpu::table::<f32>(ctx, &self.encoding, start, self.positions)
            }
            Backend::Cpu => sinusoidal::table_cpu(&self.encoding, start, self.positions),
        }
    }

    /// Draws `table` (from [`SinusoidalPlot::data`]) as a heatmap with a colour bar.
    ///
    /// # Errors
    /// [`PlotError::Invalid`] for a table of the wrong length or an unsupported extension,
    /// [`PlotError::Write`] when drawing or writing fails.
    pub fn save(&self, table: &[f32], path: &Path, size: (u32, u32)) -> Result<(), PlotError> {
        if table.len() != self.positions * self.encoding.dim {
            return Err(PlotError::Invalid(format!(
                "the sinusoidal table has {} values but positions x dim is {}",
                table.len(),
                self.positions * self.encoding.dim
            )));
        }
        draw::save(
            &SinusoidalFigure {
                plot: self,
                table,
                size,
            },
            path,
        )
    }

    fn title(&self) -> String {
        let layout = match self.encoding.layout {
            SinusoidalLayout::Interleaved => "interleaved [sin, cos, sin, cos, ...]",
            SinusoidalLayout::Concat => "concat [sin ... sin, cos ... cos]",
        };
        let frequencies = match self.encoding.frequencies {
            SinusoidalFrequencies::Vaswani => "w_i = base^(-2i/d)",
            SinusoidalFrequencies::Tensor2Tensor => "w_i = base^(-i/(d/2-1))",
        };
        format!(
            "Sinusoidal encoding, {layout}, d = {}, base {}, {frequencies}",
            self.encoding.dim,
            draw::short_number(self.encoding.base, 6)
        )
    }
}

struct SinusoidalFigure<'a> {
    plot: &'a SinusoidalPlot,
    table: &'a [f32],
    size: (u32, u32),
}

impl Figure for SinusoidalFigure<'_> {
    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let font_size = (self.size.1 / 40).clamp(12, 22);
        let root = root
            .margin(font_size / 2, 0, 0, 0)
            .titled(&self.plot.title(), (FONT, font_size + 2))?;
        let bar_width = font_size * 7;
        let (map_area, bar_area) = root.split_horizontally(self.size.0.saturating_sub(bar_width));
        let color = |_: usize, _: usize, value: f32| draw::diverging(f64::from(value));
        draw::draw_heatmap(
            &map_area,
            &Heatmap {
                values: self.table,
                rows: self.plot.positions,
                cols: self.plot.encoding.dim,
                color: &color,
                title: String::new(),
                x_desc: "feature (column of the table)",
                y_desc: "position",
                font_size,
            },
        )?;
        draw::draw_color_bar(&bar_area, (-1.0, 1.0), &draw::diverging, "value", font_size)
    }
}
