//! Plot data and pictures for `posenc plot`: the sinusoidal table, RoPE wavelengths and
//! long-term decay, ALiBi biases and attention probability maps.
//!
//! Each plot has a spec type whose `data` method computes plain numbers on the GPU or the CPU
//! reference (see [`Backend`]), and whose `save` method draws those numbers to a PNG or SVG
//! file with `plotters`. Tests compare the data of the two backends; the pictures are only
//! checked to be valid files. [`cli`] contains the command-line options and turns them into a
//! [`cli::PlotJob`].
//!
//! | plot | data | GPU operation |
//! |---|---|---|
//! | [`SinusoidalPlot`] | the table `[positions, dim]` | [`crate::sinusoidal::gpu::table`] |
//! | [`RopeFrequencyPlot`] | wavelength `2π / inv_freq` per pair and method | [`crate::rope::gpu::tables`] |
//! | [`RopeDecayPlot`] | RoFormer's relative upper bound per distance | [`crate::rope::gpu::apply`] |
//! | [`AlibiPlot`] | the bias `[heads, len, len]` | [`crate::alibi::gpu::bias`] |
//! | [`AttentionPlot`] | probabilities `[batch, heads, seq, seq]` | [`crate::attention::gpu::attention`] |

mod alibi;
mod attention;
pub mod cli;
mod draw;
mod rope_decay;
mod rope_frequencies;
mod sinusoidal;
mod text;

pub use alibi::{AlibiData, AlibiPlot};
pub use attention::{AttentionMap, AttentionPlot};
pub use draw::ImageFormat;
pub use rope_decay::{relative_upper_bound, DecayCase, RopeDecayPlot};
pub use rope_frequencies::{wavelengths, RopeCase, RopeComparison, RopeFrequencyPlot, Wavelengths};
pub use sinusoidal::SinusoidalPlot;

use crate::context::GpuContext;

/// The compute path of plot data.
#[derive(Clone, Copy)]
pub enum Backend<'a> {
    /// posenc's GPU kernels on this context.
    Gpu(&'a GpuContext),
    /// posenc's CPU reference.
    Cpu,
}

impl Backend<'_> {
    /// Returns a short name for messages: the adapter's description, or `CPU`.
    pub fn describe(&self) -> String {
        match self {
            Backend::Gpu(ctx) => format!("GPU {}", ctx.describe()),
            Backend::Cpu => "the CPU reference".to_owned(),
        }
    }
}

/// An error that stopped a plot.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlotError {
    /// A posenc operation rejected its input or failed on the GPU.
    #[error(transparent)]
    Posenc(#[from] crate::Error),
    /// An option value that the plot cannot use; the message names it and the fix.
    #[error("{0}")]
    Invalid(String),
    /// Drawing or writing the image file failed.
    #[error("failed to write {path}: {message}")]
    Write {
        /// The output file.
        path: String,
        /// The drawing library's or the file system's message.
        message: String,
    },
}
