//! RoPE context-extension scaling: each method rewrites the inverse frequencies and may set
//! an attention factor that multiplies cos and sin.
//!
//! Every formula follows transformers 5.x `modeling_rope_utils` (the `_compute_*_parameters`
//! functions), evaluated in f64 here where transformers uses f32. Parameter names are the
//! `rope_scaling` / `rope_parameters` keys of a Hugging Face `config.json`.
//!
//! Where llama.cpp differs (ggml `ggml_rope_yarn_corr_dims` and llama.cpp's model loader):
//! - YaRN: ggml always rounds the ramp bounds outwards (floor / ceil), which is transformers'
//!   default `truncate: true`; gpt-oss sets `truncate: false`, which ggml cannot express.
//! - Llama 3: llama.cpp's converter bakes the per-pair divisors into a `rope_freqs` tensor of
//!   the GGUF file, so the result matches only when the converter used the same parameters.
//! - LongRoPE: llama.cpp picks the long factors from the context size it was started with,
//!   not from the current sequence length, so a short prompt in a long context uses the long
//!   factors there and the short ones here.
//! - Dynamic NTK: llama.cpp has no per-call base; see [`RopeScaling::Dynamic`] for how
//!   posenc and transformers differ.

use std::f64::consts::PI;

use crate::error::{Error, Result};

/// A RoPE scaling method and its parameters.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum RopeScaling {
    /// Plain RoPE (`rope_type: "default"`).
    #[default]
    None,
    /// Position interpolation (Chen et al., 2023): `inv_freq / factor`.
    Linear {
        /// Divisor of every frequency, > 0.
        factor: f64,
    },
    /// Dynamic NTK scaling (the /r/LocalLLaMA proposal, as in transformers): for
    /// `seq_len > max_position_embeddings` the base grows to
    /// `base * (factor * seq_len / max_position_embeddings - (factor - 1))^(d / (d - 2))`.
    ///
    /// posenc computes the base from the `seq_len` passed to each call and remembers nothing.
    /// transformers' `dynamic_rope_update` keeps a grown base until the length drops back
    /// to the trained one, so during generation past the trained length both agree, but keys
    /// already in a KV cache were rotated with the base of the length at which they were
    /// written: they are not re-rotated when the base grows, by either library.
    Dynamic {
        /// Growth factor, >= 1.
        factor: f64,
        /// The trained context length (the config's `max_position_embeddings`).
        max_position_embeddings: u64,
    },
    /// YaRN (Peng et al., 2023): interpolate low frequencies, keep high ones, ramp between.
    Yarn(Yarn),
    /// Llama 3.1 frequency-dependent scaling.
    Llama3(Llama3),
    /// LongRoPE (Ding et al., 2024) as in Phi-3: per-pair divisors, short or long by length.
    LongRope(LongRope),
}

/// YaRN parameters (transformers `_compute_yarn_parameters`).
#[derive(Clone, Debug, PartialEq)]
pub struct Yarn {
    /// Context extension factor. transformers 5.x uses
    /// `max_position_embeddings / original_max_position_embeddings` where the config gives
    /// none; the config loader applies that rule.
    pub factor: f64,
    /// The trained context length.
    pub original_max_position_embeddings: u64,
    /// Number of rotations over the trained length above which a pair keeps its frequency
    /// (default 32).
    pub beta_fast: f64,
    /// Number of rotations below which a pair is fully interpolated (default 1).
    pub beta_slow: f64,
    /// DeepSeek's `mscale`: numerator of the attention factor ratio.
    pub mscale: Option<f64>,
    /// DeepSeek's `mscale_all_dim`: denominator of the attention factor ratio.
    pub mscale_all_dim: Option<f64>,
    /// Explicit attention factor; when `None` it is derived from `factor` and the mscales.
    pub attention_factor: Option<f64>,
    /// Round the ramp bounds outwards to whole pairs (default true; gpt-oss sets false).
    pub truncate: bool,
}

impl Yarn {
    /// YaRN with transformers' defaults for everything but the factor and trained length.
    pub fn new(factor: f64, original_max_position_embeddings: u64) -> Self {
        Self {
            factor,
            original_max_position_embeddings,
            beta_fast: 32.0,
            beta_slow: 1.0,
            mscale: None,
            mscale_all_dim: None,
            attention_factor: None,
            truncate: true,
        }
    }
}

/// Llama 3.1 scaling parameters (transformers `_compute_llama3_parameters`).
#[derive(Clone, Debug, PartialEq)]
pub struct Llama3 {
    /// Divisor of the low frequencies (8 for Llama 3.1, 32 for Llama 3.2).
    pub factor: f64,
    /// Wavelengths above `original / low_freq_factor` are divided by `factor`.
    pub low_freq_factor: f64,
    /// Wavelengths below `original / high_freq_factor` are kept.
    pub high_freq_factor: f64,
    /// The trained context length (8192 for Llama 3).
    pub original_max_position_embeddings: u64,
}

/// LongRoPE parameters (transformers `_compute_longrope_parameters`).
#[derive(Clone, Debug, PartialEq)]
pub struct LongRope {
    /// Per-pair divisors used while `seq_len <= original_max_position_embeddings`.
    pub short_factor: Vec<f64>,
    /// Per-pair divisors used from `seq_len = original_max_position_embeddings + 1` on.
    pub long_factor: Vec<f64>,
    /// The trained context length `L0` (4096 for Phi-3.5-mini).
    pub original_max_position_embeddings: u64,
    /// The extended context length `L` (131072 for Phi-3.5-mini); `s = L / L0`.
    pub max_position_embeddings: u64,
    /// Explicit attention factor; when `None` it is `sqrt(1 + ln s / ln L0)` (1 for s <= 1).
    pub attention_factor: Option<f64>,
}

/// Inverse frequencies after scaling, and the factor that multiplies cos and sin.
#[derive(Clone, Debug, PartialEq)]
pub struct RopeFrequencies {
    /// Radians per position for each rotated pair, `rotary_dim / 2` values.
    pub inv_freq: Vec<f64>,
    /// Multiplies cos and sin (1 except for YaRN and LongRoPE).
    pub attention_factor: f64,
}

/// `base^(-2i/dim)` for `i < dim/2`, in f64.
pub(crate) fn default_inv_freq(base: f64, dim: usize) -> Vec<f64> {
    (0..dim / 2)
        .map(|i| base.powf(-((2 * i) as f64) / dim as f64))
        .collect()
}

fn positive(name: &'static str, value: f64) -> Result<()> {
    if !(value.is_finite() && value > 0.0) {
        return Err(Error::param(
            name,
            value,
            "must be finite and greater than 0",
        ));
    }
    Ok(())
}

fn at_least_one(name: &'static str, value: f64) -> Result<()> {
    if !(value.is_finite() && value >= 1.0) {
        return Err(Error::param(name, value, "must be finite and at least 1"));
    }
    Ok(())
}

fn nonzero_length(name: &'static str, value: u64) -> Result<()> {
    if value == 0 {
        return Err(Error::param(
            name,
            0.0,
            "the context length must be at least 1",
        ));
    }
    Ok(())
}

impl RopeScaling {
    /// Computes the scaled frequencies for `rotary_dim` rotated features and a RoPE base,
    /// given the current sequence length (used by `Dynamic` and `LongRope` only).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming the first parameter out of range, or
    /// [`Error::LengthMismatch`] for LongRoPE factor lists of the wrong length.
    pub fn frequencies(
        &self,
        base: f64,
        rotary_dim: usize,
        seq_len: u64,
    ) -> Result<RopeFrequencies> {
        let plain = |inv_freq| {
            Ok(RopeFrequencies {
                inv_freq,
                attention_factor: 1.0,
            })
        };
        match self {
            RopeScaling::None => plain(default_inv_freq(base, rotary_dim)),
            RopeScaling::Linear { factor } => {
                positive("factor", *factor)?;
                plain(
                    default_inv_freq(base, rotary_dim)
                        .into_iter()
                        .map(|w| w / factor)
                        .collect(),
                )
            }
            RopeScaling::Dynamic {
                factor,
                max_position_embeddings,
            } => dynamic(base, rotary_dim, *factor, *max_position_embeddings, seq_len)
                .and_then(plain),
            RopeScaling::Yarn(yarn) => yarn.frequencies(base, rotary_dim),
            RopeScaling::Llama3(llama3) => llama3.frequencies(base, rotary_dim).and_then(plain),
            RopeScaling::LongRope(long_rope) => long_rope.frequencies(base, rotary_dim, seq_len),
        }
    }

    /// The `rope_type` name transformers uses for this method.
    pub fn rope_type(&self) -> &'static str {
        match self {
            RopeScaling::None => "default",
            RopeScaling::Linear { .. } => "linear",
            RopeScaling::Dynamic { .. } => "dynamic",
            RopeScaling::Yarn(_) => "yarn",
            RopeScaling::Llama3(_) => "llama3",
            RopeScaling::LongRope(_) => "longrope",
        }
    }
}

fn dynamic(
    base: f64,
    dim: usize,
    factor: f64,
    max_position_embeddings: u64,
    seq_len: u64,
) -> Result<Vec<f64>> {
    at_least_one("factor", factor)?;
    nonzero_length("max_position_embeddings", max_position_embeddings)?;
    if dim <= 2 {
        return Err(Error::shape(
            "rotary_dim",
            dim,
            "dynamic NTK raises to d / (d - 2), so rotary_dim must be at least 4",
        ));
    }
    if seq_len <= max_position_embeddings {
        return Ok(default_inv_freq(base, dim));
    }
    let growth = factor * seq_len as f64 / max_position_embeddings as f64 - (factor - 1.0);
    let scaled_base = base * growth.powf(dim as f64 / (dim as f64 - 2.0));
    Ok(default_inv_freq(scaled_base, dim))
}

/// YaRN's `get_mscale`: `0.1 * mscale * ln(scale) + 1` for scale > 1, else 1.
fn yarn_mscale(scale: f64, mscale: f64) -> f64 {
    if scale <= 1.0 {
        1.0
    } else {
        0.1 * mscale * scale.ln() + 1.0
    }
}

impl Yarn {
    /// The pair index at which `num_rotations` full turns fit in the trained length:
    /// `d * ln(L / (2 pi r)) / (2 ln base)`.
    fn correction_dim(&self, num_rotations: f64, dim: usize, base: f64) -> f64 {
        let length = self.original_max_position_embeddings as f64;
        dim as f64 * (length / (num_rotations * 2.0 * PI)).ln() / (2.0 * base.ln())
    }

    /// The ramp bounds `(low, high)` in pair indices, clamped to `[0, dim - 1]`.
    pub fn ramp_bounds(&self, base: f64, rotary_dim: usize) -> (f64, f64) {
        let mut low = self.correction_dim(self.beta_fast, rotary_dim, base);
        let mut high = self.correction_dim(self.beta_slow, rotary_dim, base);
        if self.truncate {
            low = low.floor();
            high = high.ceil();
        }
        (low.max(0.0), high.min(rotary_dim as f64 - 1.0))
    }

    /// The attention factor: explicit, or `mscale(factor, mscale) / mscale(factor,
    /// mscale_all_dim)` when both are set and non-zero, or `0.1 ln(factor) + 1`.
    pub fn resolved_attention_factor(&self) -> f64 {
        if let Some(factor) = self.attention_factor {
            return factor;
        }
        match (self.mscale, self.mscale_all_dim) {
            (Some(m), Some(all)) if m != 0.0 && all != 0.0 => {
                yarn_mscale(self.factor, m) / yarn_mscale(self.factor, all)
            }
            _ => yarn_mscale(self.factor, 1.0),
        }
    }

    fn validate(&self, base: f64) -> Result<()> {
        positive("factor", self.factor)?;
        nonzero_length(
            "original_max_position_embeddings",
            self.original_max_position_embeddings,
        )?;
        positive("beta_fast", self.beta_fast)?;
        positive("beta_slow", self.beta_slow)?;
        if base <= 1.0 {
            return Err(Error::param(
                "base",
                base,
                "YaRN divides by ln(base), so the base must be above 1",
            ));
        }
        for (name, value) in [
            ("mscale", self.mscale),
            ("mscale_all_dim", self.mscale_all_dim),
            ("attention_factor", self.attention_factor),
        ] {
            if let Some(value) = value {
                if !value.is_finite() || value < 0.0 {
                    return Err(Error::param(name, value, "must be finite and not negative"));
                }
            }
        }
        if self.attention_factor == Some(0.0) {
            return Err(Error::param(
                "attention_factor",
                0.0,
                "a zero attention factor zeroes every rotated feature",
            ));
        }
        Ok(())
    }

    fn frequencies(&self, base: f64, dim: usize) -> Result<RopeFrequencies> {
        self.validate(base)?;
        let (low, mut high) = self.ramp_bounds(base, dim);
        if low == high {
            // transformers widens an empty ramp by 0.001 to avoid dividing by zero.
            high += 0.001;
        }
        let inv_freq = default_inv_freq(base, dim)
            .into_iter()
            .enumerate()
            .map(|(i, extrapolation)| {
                let interpolation = extrapolation / self.factor;
                let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
                // ramp = 0 keeps the original (extrapolated) frequency, 1 interpolates.
                interpolation * ramp + extrapolation * (1.0 - ramp)
            })
            .collect();
        Ok(RopeFrequencies {
            inv_freq,
            attention_factor: self.resolved_attention_factor(),
        })
    }
}

impl Llama3 {
    fn frequencies(&self, base: f64, dim: usize) -> Result<Vec<f64>> {
        positive("factor", self.factor)?;
        positive("low_freq_factor", self.low_freq_factor)?;
        positive("high_freq_factor", self.high_freq_factor)?;
        nonzero_length(
            "original_max_position_embeddings",
            self.original_max_position_embeddings,
        )?;
        if self.high_freq_factor <= self.low_freq_factor {
            return Err(Error::param(
                "high_freq_factor",
                self.high_freq_factor,
                format!(
                    "must be greater than low_freq_factor = {}",
                    self.low_freq_factor
                ),
            ));
        }

        let old_context = self.original_max_position_embeddings as f64;
        let low_freq_wavelen = old_context / self.low_freq_factor;
        let high_freq_wavelen = old_context / self.high_freq_factor;
        let scaled = default_inv_freq(base, dim).into_iter().map(|w| {
            let wavelen = 2.0 * PI / w;
            if wavelen < high_freq_wavelen {
                w
            } else if wavelen > low_freq_wavelen {
                w / self.factor
            } else {
                let smooth = (old_context / wavelen - self.low_freq_factor)
                    / (self.high_freq_factor - self.low_freq_factor);
                (1.0 - smooth) * w / self.factor + smooth * w
            }
        });
        Ok(scaled.collect())
    }
}

impl LongRope {
    /// `s = max_position_embeddings / original_max_position_embeddings`.
    pub fn scale(&self) -> f64 {
        self.max_position_embeddings as f64 / self.original_max_position_embeddings as f64
    }

    /// The attention factor: explicit, or `sqrt(1 + ln s / ln L0)` (1 when s <= 1).
    pub fn resolved_attention_factor(&self) -> f64 {
        if let Some(factor) = self.attention_factor {
            return factor;
        }
        let scale = self.scale();
        if scale <= 1.0 {
            1.0
        } else {
            (1.0 + scale.ln() / (self.original_max_position_embeddings as f64).ln()).sqrt()
        }
    }

    fn frequencies(&self, base: f64, dim: usize, seq_len: u64) -> Result<RopeFrequencies> {
        nonzero_length(
            "original_max_position_embeddings",
            self.original_max_position_embeddings,
        )?;
        nonzero_length("max_position_embeddings", self.max_position_embeddings)?;
        if self.original_max_position_embeddings < 2
            && self.attention_factor.is_none()
            && self.scale() > 1.0
        {
            return Err(Error::param(
                "original_max_position_embeddings",
                1.0,
                "the default attention factor divides by ln(L0), so L0 must be at least 2",
            ));
        }
        if let Some(factor) = self.attention_factor {
            positive("attention_factor", factor)?;
        }
        for (name, factors) in [
            ("short_factor", &self.short_factor),
            ("long_factor", &self.long_factor),
        ] {
            if factors.len() != dim / 2 {
                return Err(Error::LengthMismatch {
                    name,
                    expected: (dim / 2) as u64,
                    actual: factors.len() as u64,
                });
            }
            if let Some(&bad) = factors.iter().find(|f| !(f.is_finite() && **f > 0.0)) {
                return Err(Error::param(
                    name,
                    bad,
                    "every factor must be finite and greater than 0",
                ));
            }
        }

        let factors = if seq_len > self.original_max_position_embeddings {
            &self.long_factor
        } else {
            &self.short_factor
        };
        let inv_freq = default_inv_freq(base, dim)
            .into_iter()
            .zip(factors)
            .map(|(w, f)| w / f)
            .collect();
        Ok(RopeFrequencies {
            inv_freq,
            attention_factor: self.resolved_attention_factor(),
        })
    }
}
