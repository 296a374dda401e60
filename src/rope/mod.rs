//! Rotary position embedding (Su et al., 2021, "RoFormer").
//!
//! Each rotated pair `(x_a, x_b)` of a head at position `p` becomes
//! `(x_a cos θ - x_b sin θ, x_b cos θ + x_a sin θ) * attention_factor` with
//! `θ = p * inv_freq[i]`. [`RopeLayout`] says which features form pair `i`. Features at and
//! past `rotary_dim` pass through unchanged (partial rotary, as in GPT-NeoX and Phi).
//!
//! Frequencies come from [`RopeConfig::frequencies`], computed once on the host in f64 with
//! any [`RopeScaling`] method, and feed both paths. The CPU path ([`apply_cpu`]) evaluates
//! every angle in f64; the GPU path ([`gpu`]) reduces angles exactly with fixed-point turns.
//!
//! Beyond plain RoPE: [`apply_backward_cpu`] (the gradient), [`multi_axis`] (M-RoPE of
//! Qwen2-VL and axial 2-D RoPE for image patches) and [`shift`] (re-rotating cached keys by
//! a signed position delta), each on the CPU here and on the GPU in [`gpu`].

pub mod gpu;
pub mod multi_axis;
pub mod scaling;
pub mod shift;

pub use multi_axis::{AxialFrequencies, AxisOrder, AxisPositions, MultiAxisRope, RopeAxes};
pub use scaling::{Llama3, LongRope, RopeFrequencies, RopeScaling, Yarn};
pub use shift::CacheRegion;

use crate::error::{check_len, checked_product, Error, Result};
use crate::tensor::{Layout, Positions};

/// Which features of a head form each rotated pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum RopeLayout {
    /// Pair `(i, i + rotary_dim/2)`: GPT-NeoX and Llama in Hugging Face (`rotate_half`).
    #[default]
    Half,
    /// Pair `(2i, 2i + 1)`: GPT-J, RoFormer, Meta's original Llama and llama.cpp's
    /// `LLAMA_ROPE_TYPE_NORM`.
    Interleaved,
}

impl RopeLayout {
    /// Feature indices of pair `i` within a head.
    pub(crate) fn pair(self, i: usize, rotary_dim: usize) -> (usize, usize) {
        match self {
            RopeLayout::Half => (i, i + rotary_dim / 2),
            RopeLayout::Interleaved => (2 * i, 2 * i + 1),
        }
    }
}

/// RoPE settings of a model.
#[derive(Clone, Debug, PartialEq)]
pub struct RopeConfig {
    /// Features per head.
    pub head_dim: usize,
    /// Leading features of each head that rotate; even, at most `head_dim`.
    pub rotary_dim: usize,
    /// The RoPE base θ (`rope_theta`): 10000 for Llama 2, 500000 for Llama 3.
    pub base: f64,
    /// Pairing of features.
    pub layout: RopeLayout,
    /// Context-extension scaling.
    pub scaling: RopeScaling,
}

impl RopeConfig {
    /// Plain RoPE over the whole head, half layout, base 10000.
    pub fn new(head_dim: usize) -> Self {
        Self {
            head_dim,
            rotary_dim: head_dim,
            base: 10_000.0,
            layout: RopeLayout::Half,
            scaling: RopeScaling::None,
        }
    }

    /// Sets the base θ.
    pub fn with_base(mut self, base: f64) -> Self {
        self.base = base;
        self
    }

    /// Sets the pairing of features.
    pub fn with_layout(mut self, layout: RopeLayout) -> Self {
        self.layout = layout;
        self
    }

    /// Rotates only the first `rotary_dim` features of each head.
    pub fn with_rotary_dim(mut self, rotary_dim: usize) -> Self {
        self.rotary_dim = rotary_dim;
        self
    }

    /// Sets the scaling method.
    pub fn with_scaling(mut self, scaling: RopeScaling) -> Self {
        self.scaling = scaling;
        self
    }

    /// Checks the dimensions and the base.
    ///
    /// # Errors
    /// [`Error::InvalidShape`] for a zero `head_dim`, an odd or zero `rotary_dim`, or
    /// `rotary_dim > head_dim`; [`Error::InvalidParameter`] for a base that is not finite
    /// and above 0.
    pub fn validate(&self) -> Result<()> {
        if self.head_dim == 0 {
            return Err(Error::shape(
                "head_dim",
                self.head_dim,
                "head_dim must be at least 2",
            ));
        }
        if self.rotary_dim == 0 || !self.rotary_dim.is_multiple_of(2) {
            return Err(Error::shape(
                "rotary_dim",
                self.rotary_dim,
                "rotary_dim must be even and at least 2",
            ));
        }
        if self.rotary_dim > self.head_dim {
            return Err(Error::shape(
                "rotary_dim",
                self.rotary_dim,
                format!("rotary_dim must not exceed head_dim = {}", self.head_dim),
            ));
        }
        if !(self.base.is_finite() && self.base > 0.0) {
            return Err(Error::param(
                "base",
                self.base,
                "the RoPE base must be finite and greater than 0",
            ));
        }
        Ok(())
    }

    /// Computes the scaled inverse frequencies and attention factor for a sequence of
    /// `seq_len` positions (the largest position plus one). Only dynamic NTK and LongRoPE
    /// look at `seq_len`; nothing is remembered between calls.
    ///
    /// # Errors
    /// As for [`RopeConfig::validate`] and [`RopeScaling::frequencies`].
    pub fn frequencies(&self, seq_len: u64) -> Result<RopeFrequencies> {
        self.validate()?;
        self.scaling
            .frequencies(self.base, self.rotary_dim, seq_len)
    }
}

/// Shapes of the Q and K tensors rotated in one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QkShape {
    /// Sequences in the batch.
    pub batch: usize,
    /// Tokens per sequence.
    pub seq_len: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key heads (fewer than `num_heads` with GQA/MQA); 0 rotates Q only.
    pub num_kv_heads: usize,
    /// Features per head.
    pub head_dim: usize,
    /// Memory layout of both tensors.
    pub layout: Layout,
}

impl QkShape {
    /// Element counts of Q and K.
    pub fn lens(&self) -> Result<(usize, usize)> {
        Ok((
            checked_product(
                "q",
                &[self.batch, self.seq_len, self.num_heads, self.head_dim],
            )?,
            checked_product(
                "k",
                &[self.batch, self.seq_len, self.num_kv_heads, self.head_dim],
            )?,
        ))
    }
}

/// cos and sin tables `[seq_len, rotary_dim]`, multiplied by the attention factor and
/// arranged for the layout as transformers arranges them: half layout
/// `[c_0..c_{r/2-1}, c_0..c_{r/2-1}]`, interleaved `[c_0, c_0, c_1, c_1, ...]`.
#[derive(Clone, Debug, PartialEq)]
pub struct RopeTables {
    /// `attention_factor * cos(p * inv_freq)`.
    pub cos: Vec<f32>,
    /// `attention_factor * sin(p * inv_freq)`.
    pub sin: Vec<f32>,
}

/// Computes cos/sin tables on the CPU in f64 for `seq_len` tokens of one sequence.
///
/// # Errors
/// Invalid config, or positions of the wrong length.
pub fn tables_cpu(
    config: &RopeConfig,
    frequencies: &RopeFrequencies,
    positions: Positions<'_>,
    seq_len: usize,
) -> Result<RopeTables> {
    config.validate()?;
    check_frequencies(config, frequencies)?;
    positions.validate(1, seq_len, 1 << 32)?;
    let len = checked_product("tables", &[seq_len, config.rotary_dim])?;
    let (mut cos, mut sin) = (vec![0.0f32; len], vec![0.0f32; len]);
    for t in 0..seq_len {
        let position = positions.get(0, t, seq_len) as f64;
        for (i, &w) in frequencies.inv_freq.iter().enumerate() {
            let (s, c) = crate::angle::sin_cos_of_product(position, w);
            let (a, b) = config.layout.pair(i, config.rotary_dim);
            for column in [a, b] {
                cos[t * config.rotary_dim + column] = (c * frequencies.attention_factor) as f32;
                sin[t * config.rotary_dim + column] = (s * frequencies.attention_factor) as f32;
            }
        }
    }
    Ok(RopeTables { cos, sin })
}

/// Largest inverse frequency, 2^52: an f64 above it has no fractional part.
const MAX_INV_FREQ: f64 = 4_503_599_627_370_496.0;

pub(crate) fn check_frequencies(config: &RopeConfig, frequencies: &RopeFrequencies) -> Result<()> {
    check_len(
        "inv_freq",
        frequencies.inv_freq.len(),
        config.rotary_dim / 2,
    )?;
    if let Some(&bad) = frequencies.inv_freq.iter().find(|w| !w.is_finite()) {
        return Err(Error::param(
            "inv_freq",
            bad,
            "every inverse frequency must be finite",
        ));
    }
    // Past 2^52 radians per position an f64 frequency has no fractional turns left, so the
    // angle of every position is undefined in f64; bases below 1 produce such frequencies.
    if let Some(&bad) = frequencies.inv_freq.iter().find(|w| w.abs() > MAX_INV_FREQ) {
        return Err(Error::param(
            "inv_freq",
            bad,
            format!("inverse frequencies above {MAX_INV_FREQ:e} radians per position have no defined angle; use a base above 1"),
        ));
    }
    if !frequencies.attention_factor.is_finite() {
        return Err(Error::param(
            "attention_factor",
            frequencies.attention_factor,
            "must be finite",
        ));
    }
    Ok(())
}

pub(crate) fn check_shape(config: &RopeConfig, shape: &QkShape) -> Result<()> {
    config.validate()?;
    if shape.head_dim != config.head_dim {
        return Err(Error::shape(
            "head_dim",
            shape.head_dim,
            format!(
                "the tensor's head_dim must equal the config's head_dim = {}",
                config.head_dim
            ),
        ));
    }
    Ok(())
}

/// Rotates Q `[.., num_heads, ..]` and K `[.., num_kv_heads, ..]` in place on the CPU, with
/// every angle and product in f64.
///
/// # Errors
/// Invalid config or shape, frequencies of the wrong length, `q`/`k` lengths that do not
/// match `shape`, or positions of the wrong length.
pub fn apply_cpu(
    config: &RopeConfig,
    frequencies: &RopeFrequencies,
    shape: &QkShape,
    positions: Positions<'_>,
    q: &mut [f32],
    k: &mut [f32],
) -> Result<()> {
    check_qk(config, frequencies, shape, q, k)?;
    positions.validate(shape.batch, shape.seq_len, 1 << 32)?;
    let seq_len = shape.seq_len;
    rotate_qk_cpu(config, frequencies, shape, 1.0, [q, k], |b, t, _| {
        positions.get(b, t, seq_len)
    });
    Ok(())
}

/// Applies the gradient of RoPE with respect to its input in place on the CPU. `dq` and
/// `dk` contain the gradients of the loss with respect to the rotated Q and K, and become
/// the gradients with respect to Q and K before rotation.
///
/// Each pair maps by `attention_factor * R(θ)`, so the gradient is its transpose
/// `attention_factor * R(-θ)`: rotation by the negative angle, with the attention factor
/// kept. This inverts [`apply_cpu`] only when the attention factor is 1; pass-through
/// features are left unchanged.
///
/// # Errors
/// As for [`apply_cpu`].
pub fn apply_backward_cpu(
    config: &RopeConfig,
    frequencies: &RopeFrequencies,
    shape: &QkShape,
    positions: Positions<'_>,
    dq: &mut [f32],
    dk: &mut [f32],
) -> Result<()> {
    check_qk(config, frequencies, shape, dq, dk)?;
    positions.validate(shape.batch, shape.seq_len, 1 << 32)?;
    let seq_len = shape.seq_len;
    rotate_qk_cpu(config, frequencies, shape, -1.0, [dq, dk], |b, t, _| {
        positions.get(b, t, seq_len)
    });
    Ok(())
}

/// Checks the config, frequencies, shape and the lengths of Q and K.
pub(crate) fn check_qk(
    config: &RopeConfig,
    frequencies: &RopeFrequencies,
    shape: &QkShape,
    q: &[f32],
    k: &[f32],
) -> Result<()> {
    check_shape(config, shape)?;
    check_frequencies(config, frequencies)?;
    let (q_len, k_len) = shape.lens()?;
    check_len("q", q.len(), q_len)?;
    check_len("k", k.len(), k_len)
}

/// Rotates every head of Q and K in place, in f64, after the caller has validated them.
/// Pair `i` of token `t` in sequence `b` rotates by the angle of `position(b, t, i)`, and
/// `sign` is 1 to rotate by +angle or -1 by -angle.
pub(crate) fn rotate_qk_cpu(
    config: &RopeConfig,
    frequencies: &RopeFrequencies,
    shape: &QkShape,
    sign: f64,
    [q, k]: [&mut [f32]; 2],
    position: impl Fn(usize, usize, usize) -> u64,
) {
    let mut cos_sin = vec![(0.0f64, 0.0f64); config.rotary_dim / 2];
    for b in 0..shape.batch {
        for t in 0..shape.seq_len {
            for (i, (entry, &w)) in cos_sin.iter_mut().zip(&frequencies.inv_freq).enumerate() {
                *entry = scaled_cos_sin(position(b, t, i) as f64, w, sign, frequencies);
            }
            for (tensor, heads) in [(&mut *q, shape.num_heads), (&mut *k, shape.num_kv_heads)] {
                let [batch_stride, seq_stride, head_stride] =
                    shape.layout.strides(shape.seq_len, heads, shape.head_dim);
                for h in 0..heads {
                    let head = &mut tensor[b * batch_stride + t * seq_stride + h * head_stride..]
                        [..shape.head_dim];
                    rotate_head(head, &cos_sin, config);
                }
            }
        }
    }
}

/// `attention_factor * (cos θ, sign * sin θ)` for `θ = position * w`, in f64 with the
/// rounding of the product added back.
pub(crate) fn scaled_cos_sin(
    position: f64,
    w: f64,
    sign: f64,
    frequencies: &RopeFrequencies,
) -> (f64, f64) {
    let (s, c) = crate::angle::sin_cos_of_product(position, w);
    (
        c * frequencies.attention_factor,
        sign * s * frequencies.attention_factor,
    )
}

/// Rotates one head by precomputed `(cos, sin)` pairs, in f64.
pub(crate) fn rotate_head(head: &mut [f32], cos_sin: &[(f64, f64)], config: &RopeConfig) {
    for (i, &(c, s)) in cos_sin.iter().enumerate() {
        let (a, b) = config.layout.pair(i, config.rotary_dim);
        let (x_a, x_b) = (f64::from(head[a]), f64::from(head[b]));
        head[a] = (x_a * c - x_b * s) as f32;
        head[b] = (x_b * c + x_a * s) as f32;
    }
}

/// Checks that `counts = [batch, seq, heads]` heads of `head_dim` contiguous features at
/// element `strides` never share an element, and returns the element past the last one
/// (`None` when there are no elements).
///
/// The test is the usual sufficient one: sorted by stride, each dimension's stride is at
/// least the extent of the dimensions inside it. Overlapping heads would be rotated twice.
pub(crate) fn heads_extent(
    name: &'static str,
    counts: [usize; 3],
    strides: [usize; 3],
    head_dim: usize,
) -> Result<Option<usize>> {
    if counts.contains(&0) || head_dim == 0 {
        return Ok(None);
    }
    let mut dims: Vec<(usize, usize)> = counts
        .into_iter()
        .zip(strides)
        .filter(|&(count, _)| count > 1)
        .collect();
    dims.sort_by_key(|&(_, stride)| stride);
    let mut extent = head_dim;
    for (count, stride) in dims {
        if stride < extent {
            return Err(Error::shape(
                name,
                stride,
                format!(
                    "with counts {counts:?} and strides {strides:?} (batch, seq, head) the \
                     heads may overlap, because a stride of {stride} is below the {extent} \
                     elements it steps over; make each stride at least the extent of the \
                     dimensions inside it"
                ),
            ));
        }
        extent = (count - 1)
            .checked_mul(stride)
            .and_then(|span| span.checked_add(extent))
            .ok_or_else(|| Error::shape(name, i64::MAX, "the strides overflow usize"))?;
    }
    Ok(Some(extent))
}
