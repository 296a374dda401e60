//! ALiBi: attention with linear biases (Press et al., 2021, "Train Short, Test Long").
//!
//! Head `h` adds `-slope_h * (p - j)` to the score of query position `p` and key position
//! `j` (the paper and BLOOM); [`AlibiBias::Symmetric`] adds `-slope_h * |p - j|` for
//! bidirectional encoders. The slopes are a geometric sequence per head count, computed once
//! on the host in f64.

pub mod gpu;

use crate::error::{checked_product, Error, Result};

/// Which distance the bias grows with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum AlibiBias {
    /// `-slope * (p - j)`: the paper and BLOOM. Under a causal mask every visible key has
    /// `j <= p`, so the bias is never positive there.
    #[default]
    Causal,
    /// `-slope * |p - j|`, for encoders that attend both ways.
    Symmetric,
}

/// ALiBi settings: head count, bias form and the `max_bias` that sets the slopes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Alibi {
    /// Number of attention heads.
    pub num_heads: usize,
    /// Exponent scale of the slopes; 8 in the paper (ggml's `max_bias`).
    pub max_bias: f64,
    /// Bias form.
    pub bias: AlibiBias,
}

impl Alibi {
    /// The paper's ALiBi for `num_heads` heads (`max_bias = 8`, causal bias).
    pub fn new(num_heads: usize) -> Self {
        Self {
            num_heads,
            max_bias: 8.0,
            bias: AlibiBias::Causal,
        }
    }

    /// The slope of each head, in f64.
    ///
    /// With `m = 2^floor(log2 n)`, head `h < m` gets `2^(-max_bias (h+1) / m)` and head
    /// `m + k` gets `2^(-max_bias (2k+1) / (2m))`: every other slope of the `2m` sequence.
    /// This is the ALiBi authors' `get_slopes` (ofirpress/attention_with_linear_biases) for
    /// `max_bias = 8`, and ggml's `m0`/`m1` rule for any `max_bias`.
    ///
    /// # Errors
    /// [`Error::InvalidShape`] for zero heads; [`Error::InvalidParameter`] for a `max_bias`
    /// that is not finite and above 0.
    pub fn slopes(&self) -> Result<Vec<f64>> {
        if self.num_heads == 0 {
            return Err(Error::shape(
                "num_heads",
                0,
                "ALiBi needs at least one head",
            ));
        }
        if !(self.max_bias.is_finite() && self.max_bias > 0.0) {
            return Err(Error::param(
                "max_bias",
                self.max_bias,
                "max_bias must be finite and greater than 0",
            ));
        }
        let m = 1usize << self.num_heads.ilog2();
        let slopes = (0..self.num_heads).map(|h| {
            if h < m {
                (-self.max_bias * (h + 1) as f64 / m as f64).exp2()
            } else {
                let k = h - m;
                (-self.max_bias * (2 * k + 1) as f64 / (2 * m) as f64).exp2()
            }
        });
        Ok(slopes.collect())
    }
}

/// The bias for one head, query position `p` and key position `j`, in f64.
pub(crate) fn bias(slope: f64, form: AlibiBias, query_position: i64, key_position: i64) -> f64 {
    let distance = (query_position - key_position) as f64;
    match form {
        AlibiBias::Causal => -slope * distance,
        AlibiBias::Symmetric => -slope * distance.abs(),
    }
}

/// Computes the bias tensor `[num_heads, q_len, kv_len]` on the CPU, where query row `i` has
/// position `q_offset + i` and key `j` has position `j`.
///
/// # Errors
/// As for [`Alibi::slopes`], and [`Error::InvalidShape`] when the tensor overflows.
pub fn bias_cpu(alibi: &Alibi, q_len: usize, kv_len: usize, q_offset: i64) -> Result<Vec<f32>> {
    let slopes = alibi.slopes()?;
    let mut out = vec![0.0f32; checked_product("bias", &[alibi.num_heads, q_len, kv_len])?];
    for (h, &slope) in slopes.iter().enumerate() {
        for i in 0..q_len {
            let row = &mut out[(h * q_len + i) * kv_len..][..kv_len];
            for (j, value) in row.iter_mut().enumerate() {
                *value = bias(slope, alibi.bias, q_offset + i as i64, j as i64) as f32;
            }
        }
    }
    Ok(out)
}
