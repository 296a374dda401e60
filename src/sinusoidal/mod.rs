//! Sinusoidal position encodings (Vaswani et al., 2017, "Attention Is All You Need", §3.5).
//!
//! `PE[p, 2i] = sin(p w_i)`, `PE[p, 2i+1] = cos(p w_i)` in the paper's [`SinusoidalLayout::Interleaved`]
//! layout; many ports (tensor2tensor, fairseq, Marian) put all sines first
//! ([`SinusoidalLayout::Concat`]). The CPU path evaluates the angles in f64; the GPU path
//! reduces them exactly with fixed-point turns, so both stay accurate at large positions.

pub mod gpu;

use crate::angle::sin_cos_of_product;
use crate::error::{check_len, checked_product, Error, Result};
use crate::tensor::Positions;

/// Where the sine and cosine of each frequency go in a row of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum SinusoidalLayout {
    /// `[sin w_0, cos w_0, sin w_1, cos w_1, ...]` (the paper).
    #[default]
    Interleaved,
    /// `[sin w_0, ..., sin w_{d/2-1}, cos w_0, ..., cos w_{d/2-1}]` (tensor2tensor, fairseq,
    /// Marian, XLM).
    Concat,
}

/// How the frequencies `w_i` fall with the column index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum SinusoidalFrequencies {
    /// `w_i = base^(-2i/d)` (the paper).
    #[default]
    Vaswani,
    /// `w_i = base^(-i/(d/2 - 1))` (tensor2tensor `get_timing_signal_1d`, fairseq, M2M100,
    /// NLLB): the last frequency is exactly `1/base`. Needs `d >= 4`.
    Tensor2Tensor,
}

/// A sinusoidal encoding of width `dim`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sinusoidal {
    /// Width of each encoding row (the model dimension); even.
    pub dim: usize,
    /// Base of the geometric frequency progression, 10000 in the paper.
    pub base: f64,
    /// Column order.
    pub layout: SinusoidalLayout,
    /// Frequency rule.
    pub frequencies: SinusoidalFrequencies,
}

impl Sinusoidal {
    /// The paper's encoding: interleaved layout, Vaswani frequencies, base 10000.
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            base: 10_000.0,
            layout: SinusoidalLayout::Interleaved,
            frequencies: SinusoidalFrequencies::Vaswani,
        }
    }

    /// Sets the layout.
    pub fn with_layout(mut self, layout: SinusoidalLayout) -> Self {
        self.layout = layout;
        self
    }

    /// Sets the frequency rule.
    pub fn with_frequencies(mut self, frequencies: SinusoidalFrequencies) -> Self {
        self.frequencies = frequencies;
        self
    }

    /// Sets the base.
    pub fn with_base(mut self, base: f64) -> Self {
        self.base = base;
        self
    }

    /// Checks the parameters.
    ///
    /// # Errors
    /// [`Error::InvalidShape`] for an odd or zero `dim` (or `dim < 4` with
    /// [`SinusoidalFrequencies::Tensor2Tensor`]); [`Error::InvalidParameter`] for a base that
    /// is not finite and above 0.
    pub fn validate(&self) -> Result<()> {
        if self.dim == 0 || !self.dim.is_multiple_of(2) {
            return Err(Error::shape(
                "dim",
                self.dim,
                "the encoding width must be even and at least 2",
            ));
        }
        if self.dim > u32::MAX as usize / 2 {
            return Err(Error::shape(
                "dim",
                self.dim,
                "the encoding width must be below 2^32",
            ));
        }
        if self.frequencies == SinusoidalFrequencies::Tensor2Tensor && self.dim < 4 {
            return Err(Error::shape(
                "dim",
                self.dim,
                "Tensor2Tensor frequencies divide by dim/2 - 1, so dim must be at least 4",
            ));
        }
        if !(self.base.is_finite() && self.base > 0.0) {
            return Err(Error::param(
                "base",
                self.base,
                "the base must be finite and greater than 0",
            ));
        }
        Ok(())
    }

    /// The `dim / 2` frequencies `w_i` in radians per position, in f64.
    ///
    /// # Errors
    /// As for [`Sinusoidal::validate`].
    pub fn frequencies(&self) -> Result<Vec<f64>> {
        self.validate()?;
        let half = self.dim / 2;
        let exponent_step = match self.frequencies {
            SinusoidalFrequencies::Vaswani => 2.0 / self.dim as f64,
            SinusoidalFrequencies::Tensor2Tensor => 1.0 / (half - 1) as f64,
        };
        Ok((0..half)
            .map(|i| self.base.powf(-(i as f64) * exponent_step))
            .collect())
    }

    /// Columns of the sine and cosine of frequency `i`.
    pub(crate) fn columns(&self, i: usize) -> (usize, usize) {
        match self.layout {
            SinusoidalLayout::Interleaved => (2 * i, 2 * i + 1),
            SinusoidalLayout::Concat => (i, self.dim / 2 + i),
        }
    }
}

/// Computes the table rows `[seq_len, dim]` for `seq_len` tokens on the CPU, in f64 rounded
/// to f32.
///
/// # Errors
/// Invalid parameters (see [`Sinusoidal::validate`]), or [`Positions::Ids`] of the wrong length.
pub fn table_cpu(
    encoding: &Sinusoidal,
    positions: Positions<'_>,
    seq_len: usize,
) -> Result<Vec<f32>> {
    let len = checked_product("table", &[seq_len, encoding.dim])?;
    let mut table = vec![0.0f32; len];
    add_cpu(encoding, positions, 1, seq_len, &mut table)?;
    Ok(table)
}

/// Adds the encoding to `embeddings` of shape `[batch, seq_len, dim]` in place, on the CPU.
///
/// # Errors
/// Invalid parameters, an `embeddings` length other than `batch * seq_len * dim`, or
/// positions of the wrong length.
pub fn add_cpu(
    encoding: &Sinusoidal,
    positions: Positions<'_>,
    batch: usize,
    seq_len: usize,
    embeddings: &mut [f32],
) -> Result<()> {
    let frequencies = encoding.frequencies()?;
    check_len(
        "embeddings",
        embeddings.len(),
        checked_product("embeddings", &[batch, seq_len, encoding.dim])?,
    )?;
    positions.validate(batch, seq_len, 1 << 32)?;

    for b in 0..batch {
        for t in 0..seq_len {
            let position = positions.get(b, t, seq_len) as f64;
            let row = &mut embeddings[(b * seq_len + t) * encoding.dim..][..encoding.dim];
            for (i, &w) in frequencies.iter().enumerate() {
                let (sin, cos) = sin_cos_of_product(position, w);
                let (sin_col, cos_col) = encoding.columns(i);
                row[sin_col] = (f64::from(row[sin_col]) + sin) as f32;
                row[cos_col] = (f64::from(row[cos_col]) + cos) as f32;
            }
        }
    }
    Ok(())
}
