//! Masked scaled dot-product attention with positional biases.
//!
//! For query row `i` of head `h` (position `p = q_offset + i`) and key `j` (position `j`):
//!
//! 1. `s = (q · k_j) * scale` (default `scale = 1/sqrt(head_dim)`);
//! 2. `s = c * tanh(s / c)` when a softcap `c` is set (Gemma 2);
//! 3. `s += -slope_h * (p - j)` with ALiBi (or `* |p - j|` for the symmetric form);
//! 4. the masks decide which keys are visible, as predicates combined with AND;
//! 5. `P = softmax(s)` over the visible keys and `O = P V`, accumulated in f32 on the GPU
//!    and f64 on the CPU.
//!
//! A query row with no visible key gets all-zero probabilities and a zero output, as
//! FlashAttention and PyTorch's FlexAttention return; never NaN.
//!
//! Query head `h` reads KV head `h / (num_heads / num_kv_heads)` (grouped-query attention,
//! Ainslie et al., 2023; MQA when `num_kv_heads == 1`).

pub mod gpu;

use crate::alibi::{self, Alibi};
use crate::error::{check_len, checked_product, Error, Result};
use crate::tensor::Layout;

/// Shapes of one attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    /// Sequences in the batch.
    pub batch: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads; must divide `num_heads`.
    pub num_kv_heads: usize,
    /// Query rows per sequence.
    pub q_len: usize,
    /// Keys per sequence.
    pub kv_len: usize,
    /// Features per head.
    pub head_dim: usize,
    /// Layout of Q, K, V and the output; probabilities are always `[batch, heads, q_len, kv_len]`.
    pub layout: Layout,
}

impl AttentionShape {
    /// A shape in the [`Layout::Bhsd`] layout (PyTorch SDPA's).
    pub fn new(
        batch: usize,
        num_heads: usize,
        num_kv_heads: usize,
        q_len: usize,
        kv_len: usize,
        head_dim: usize,
    ) -> Self {
        Self {
            batch,
            num_heads,
            num_kv_heads,
            q_len,
            kv_len,
            head_dim,
            layout: Layout::Bhsd,
        }
    }

    /// Checks the head counts and sizes.
    ///
    /// # Errors
    /// [`Error::InvalidShape`] for zero heads or head_dim, or a `num_kv_heads` that does not
    /// divide `num_heads`.
    pub fn validate(&self) -> Result<()> {
        if self.num_heads == 0 {
            return Err(Error::shape(
                "num_heads",
                0,
                "attention needs at least one query head",
            ));
        }
        if self.num_kv_heads == 0 || !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(Error::shape(
                "num_kv_heads",
                self.num_kv_heads,
                format!(
                    "must be at least 1 and divide num_heads = {}",
                    self.num_heads
                ),
            ));
        }
        if self.head_dim == 0 {
            return Err(Error::shape("head_dim", 0, "head_dim must be at least 1"));
        }
        self.lens().map(|_| ())
    }

    /// Element counts `(q, kv, probs)`; the output has as many elements as `q`.
    pub fn lens(&self) -> Result<(usize, usize, usize)> {
        Ok((
            checked_product(
                "q",
                &[self.batch, self.num_heads, self.q_len, self.head_dim],
            )?,
            checked_product(
                "k",
                &[self.batch, self.num_kv_heads, self.kv_len, self.head_dim],
            )?,
            checked_product(
                "probs",
                &[self.batch, self.num_heads, self.q_len, self.kv_len],
            )?,
        ))
    }

    /// The default query offset `kv_len - q_len` (bottom-right alignment).
    pub fn default_q_offset(&self) -> i64 {
        self.kv_len as i64 - self.q_len as i64
    }
}

/// Scale, biases and masks of an attention call.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AttentionParams {
    /// Multiplies `q · k`; `None` means `1/sqrt(head_dim)`.
    pub scale: Option<f32>,
    /// Softcap `c`: scores become `c * tanh(s / c)` before biases and masks.
    pub softcap: Option<f32>,
    /// Hide keys after the query's position (`j > p`).
    pub causal: bool,
    /// Position of query row 0. `None` means `kv_len - q_len` (bottom-right, as when decoding
    /// with a KV cache; negative when `q_len > kv_len`). `Some(0)` is PyTorch's top-left
    /// `is_causal`.
    pub q_offset: Option<i64>,
    /// Sliding window `W`: key `j` is visible to position `p` only when `p - W < j <= p`, i.e.
    /// `W` keys including the query's own (transformers' `sliding_window` and llama.cpp;
    /// FlashAttention's `window_size = (W - 1, 0)`). A window implies the causal bound.
    pub window: Option<usize>,
    /// Valid key count per sequence (right padding): keys `j >= key_lengths[b]` are hidden.
    pub key_lengths: Option<Vec<usize>>,
    /// Boolean mask `[q_len, kv_len]`, `true` = may attend, shared by every sequence and head.
    pub mask: Option<Vec<bool>>,
    /// ALiBi biases; `num_heads` must equal the shape's.
    pub alibi: Option<Alibi>,
}

/// Attention results.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionOutput {
    /// Probabilities `[batch, num_heads, q_len, kv_len]`.
    pub probs: Vec<f32>,
    /// Output `P V`, in the shape's layout with `num_heads` heads.
    pub out: Vec<f32>,
}

/// Everything resolved from shape and params that both paths need.
#[derive(Clone, Debug)]
pub(crate) struct Resolved {
    pub scale: f64,
    pub q_offset: i64,
    pub slopes: Option<Vec<f64>>,
}

/// Validates `params` against `shape` and resolves the defaults.
pub(crate) fn resolve(shape: &AttentionShape, params: &AttentionParams) -> Result<Resolved> {
    shape.validate()?;
    let scale = match params.scale {
        Some(scale) if !scale.is_finite() => {
            return Err(Error::param(
                "scale",
                f64::from(scale),
                "the scale must be finite",
            ))
        }
        Some(scale) => f64::from(scale),
        None => 1.0 / (shape.head_dim as f64).sqrt(),
    };
    if let Some(softcap) = params.softcap {
        if !(softcap.is_finite() && softcap > 0.0) {
            return Err(Error::param(
                "softcap",
                f64::from(softcap),
                "the softcap must be finite and greater than 0",
            ));
        }
    }
    if params.window == Some(0) {
        return Err(Error::shape(
            "window",
            0,
            "a window of 0 keys hides every key; use at least 1 or None",
        ));
    }
    if let Some(lengths) = &params.key_lengths {
        check_len("key_lengths", lengths.len(), shape.batch)?;
        if let Some((b, &length)) = lengths.iter().enumerate().find(|(_, &l)| l > shape.kv_len) {
            return Err(Error::shape(
                "key_lengths",
                length,
                format!("key_lengths[{b}] exceeds kv_len = {}", shape.kv_len),
            ));
        }
    }
    if let Some(mask) = &params.mask {
        check_len(
            "mask",
            mask.len(),
            checked_product("mask", &[shape.q_len, shape.kv_len])?,
        )?;
    }
    let slopes = match &params.alibi {
        Some(alibi) if alibi.num_heads != shape.num_heads => {
            return Err(Error::shape(
                "alibi.num_heads",
                alibi.num_heads,
                format!("must equal the attention's num_heads = {}", shape.num_heads),
            ))
        }
        Some(alibi) => Some(alibi.slopes()?),
        None => None,
    };
    let q_offset = params.q_offset.unwrap_or_else(|| shape.default_q_offset());
    // The GPU forms positions in i32.
    let limit = i64::from(i32::MAX);
    if q_offset.abs() > limit
        || q_offset + shape.q_len as i64 > limit
        || shape.kv_len as i64 > limit
    {
        return Err(Error::shape(
            "q_offset",
            q_offset,
            "query and key positions must stay within i32",
        ));
    }
    Ok(Resolved {
        scale,
        q_offset,
        slopes,
    })
}

/// Whether key `j` is visible to query row `i` of sequence `b`.
pub(crate) fn visible(
    params: &AttentionParams,
    shape: &AttentionShape,
    q_offset: i64,
    b: usize,
    i: usize,
    j: usize,
) -> bool {
    let position = q_offset + i as i64;
    let key = j as i64;
    if let Some(lengths) = &params.key_lengths {
        if j >= lengths[b] {
            return false;
        }
    }
    if (params.causal || params.window.is_some()) && key > position {
        return false;
    }
    if let Some(window) = params.window {
        if key <= position - window as i64 {
            return false;
        }
    }
    if let Some(mask) = &params.mask {
        if !mask[i * shape.kv_len + j] {
            return false;
        }
    }
    true
}

fn check_inputs(shape: &AttentionShape, q: &[f32], k: &[f32], v: &[f32]) -> Result<()> {
    let (q_len, kv_len, _) = shape.lens()?;
    check_len("q", q.len(), q_len)?;
    check_len("k", k.len(), kv_len)?;
    check_len("v", v.len(), kv_len)
}

/// Computes attention on the CPU, every sum in f64.
///
/// # Errors
/// [`Error::InvalidShape`] / [`Error::InvalidParameter`] / [`Error::LengthMismatch`] naming
/// the first invalid shape, parameter or input.
pub fn attention_cpu(
    shape: &AttentionShape,
    params: &AttentionParams,
    q: &[f32],
    k: &[f32],
    v: &[f32],
) -> Result<AttentionOutput> {
    let resolved = resolve(shape, params)?;
    check_inputs(shape, q, k, v)?;
    let (q_total, _, probs_total) = shape.lens()?;
    let mut probs = vec![0.0f32; probs_total];
    let mut out = vec![0.0f32; q_total];
    let group = shape.num_heads / shape.num_kv_heads;
    let q_strides = shape
        .layout
        .strides(shape.q_len, shape.num_heads, shape.head_dim);
    let kv_strides = shape
        .layout
        .strides(shape.kv_len, shape.num_kv_heads, shape.head_dim);
    let mut scores: Vec<Option<f64>> = vec![None; shape.kv_len];

    for b in 0..shape.batch {
        for h in 0..shape.num_heads {
            let kv_head = h / group;
            for i in 0..shape.q_len {
                let q_start = b * q_strides[0] + i * q_strides[1] + h * q_strides[2];
                let q_row = &q[q_start..][..shape.head_dim];
                let mut max = f64::NEG_INFINITY;
                for (j, score) in scores.iter_mut().enumerate() {
                    *score = None;
                    if !visible(params, shape, resolved.q_offset, b, i, j) {
                        continue;
                    }
                    let k_row = &k
                        [b * kv_strides[0] + j * kv_strides[1] + kv_head * kv_strides[2]..]
                        [..shape.head_dim];
                    let dot: f64 = q_row
                        .iter()
                        .zip(k_row)
                        .map(|(&a, &b)| f64::from(a) * f64::from(b))
                        .sum();
                    let mut s = dot * resolved.scale;
                    if let Some(cap) = params.softcap {
                        let cap = f64::from(cap);
                        s = cap * (s / cap).tanh();
                    }
                    if let (Some(slopes), Some(alibi)) = (&resolved.slopes, &params.alibi) {
                        s += alibi::bias(
                            slopes[h],
                            alibi.bias,
                            resolved.q_offset + i as i64,
                            j as i64,
                        );
                    }
                    *score = Some(s);
                    max = max.max(s);
                }
                if scores.iter().all(Option::is_none) {
                    // No visible key: probabilities and output stay zero.
                    continue;
                }

                let sum: f64 = scores.iter().flatten().map(|s| (s - max).exp()).sum();
                let probs_row = &mut probs
                    [((b * shape.num_heads + h) * shape.q_len + i) * shape.kv_len..]
                    [..shape.kv_len];
                let mut acc = vec![0.0f64; shape.head_dim];
                for (j, (&score, p_out)) in scores.iter().zip(probs_row.iter_mut()).enumerate() {
                    let Some(s) = score else { continue };
                    let p = (s - max).exp() / sum;
                    *p_out = p as f32;
                    let v_row = &v
                        [b * kv_strides[0] + j * kv_strides[1] + kv_head * kv_strides[2]..]
                        [..shape.head_dim];
                    for (a, &x) in acc.iter_mut().zip(v_row) {
                        *a += p * f64::from(x);
                    }
                }
                for (o, a) in out[q_start..][..shape.head_dim].iter_mut().zip(acc) {
                    *o = a as f32;
                }
            }
        }
    }
    Ok(AttentionOutput { probs, out })
}
