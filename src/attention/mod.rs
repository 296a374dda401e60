//! Masked scaled dot-product attention with positional biases.
//!
//! For query row `i` of head `h` in sequence `b` (position `p = q_offset_b + i`) and key `j`
//! (position `j`):
//!
//! 1. `s = (q · k_j) * scale` (default `scale = 1/sqrt(head_dim)`);
//! 2. `s = c * tanh(s / c)` when a softcap `c` is set (Gemma 2);
//! 3. `s += -slope_h * (p - j)` with ALiBi (or `* |p - j|` for the symmetric form);
//! 4. `s += additive[b, h, i, j]` for a finite additive-mask entry;
//! 5. the masks decide which keys are visible, as predicates combined with AND (never by
//!    adding large negative numbers, which overflow to -inf in f16);
//! 6. `P = softmax(s)` over the visible keys, with an optional per-head sink logit joining
//!    the denominator only, and `O = P V`; accumulated in f32 on the GPU, f64 on the CPU.
//!
//! A query row with no visible key gets all-zero probabilities and a zero output, as
//! FlashAttention and PyTorch's FlexAttention return; never NaN. Its log-sum-exp is
//! [`NO_KEY_LSE`] (or the sink logit when the head has a sink).
//!
//! Query head `h` reads KV head `h / (num_heads / num_kv_heads)` (grouped-query attention,
//! Ainslie et al., 2023; MQA when `num_kv_heads == 1`).
//!
//! # Mapping to other libraries
//! - PyTorch SDPA `is_causal=True` is `causal` with `q_offset: Some(0)` (top-left); its
//!   `attn_mask` is [`BoolMask`] (`True` = attend) or [`AdditiveMask`] (float, added).
//!   `torch.nn.attention.bias.causal_lower_right` is the default `q_offset` (bottom-right).
//! - FlashAttention's `causal=True` is bottom-right (the default here) and its
//!   `window_size=(W - 1, 0)` is `window: Some(W)`.
//! - Hugging Face: `sliding_window = W` is `window: Some(W)`; its 2-D `attention_mask` of
//!   ones and zeros is `key_starts` (left padding) or `key_lengths` (right padding); gpt-oss
//!   `sinks` are `sinks`; Gemma 2 `attn_logit_softcapping` is `softcap`.

mod cpu;
pub mod fused;
pub mod gpu;
pub(crate) mod pack;

pub use cpu::attention_cpu;

use crate::alibi::Alibi;
use crate::error::{check_len, checked_product, Error, Result};
use crate::tensor::Layout;

/// The log-sum-exp reported for a row with no visible key and no sink: the most negative
/// finite f32, because WGSL lets compilers assume finite math.
pub const NO_KEY_LSE: f32 = f32::MIN;

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

/// A boolean mask `[batch, heads, q_len, kv_len]` (`true` = may attend) whose batch and head
/// dimensions may be 1 to broadcast.
#[derive(Clone, Debug, PartialEq)]
pub struct BoolMask {
    /// The values, row-major.
    pub values: Vec<bool>,
    /// 1 (shared by every sequence) or the batch size.
    pub batch: usize,
    /// 1 (shared by every head) or the number of query heads.
    pub heads: usize,
}

impl BoolMask {
    /// A `[q_len, kv_len]` mask shared by every sequence and head.
    pub fn shared(values: Vec<bool>) -> Self {
        Self {
            values,
            batch: 1,
            heads: 1,
        }
    }
}

/// An additive f32 mask `[batch, heads, q_len, kv_len]` with broadcastable batch and head
/// dimensions. `-inf` entries hide the key; finite entries are added to the score. NaN is
/// rejected.
#[derive(Clone, Debug, PartialEq)]
pub struct AdditiveMask {
    /// The values, row-major.
    pub values: Vec<f32>,
    /// 1 (shared by every sequence) or the batch size.
    pub batch: usize,
    /// 1 (shared by every head) or the number of query heads.
    pub heads: usize,
}

/// Segment ids of packed sequences: a query sees only keys with its own segment id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segments {
    /// Segment of each query row, `[batch, q_len]`.
    pub q: Vec<u32>,
    /// Segment of each key, `[batch, kv_len]`.
    pub kv: Vec<u32>,
}

/// Scale, biases and masks of an attention call. Every mask set here applies; they combine
/// with AND.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AttentionParams {
    /// Multiplies `q · k`; `None` means `1/sqrt(head_dim)`.
    pub scale: Option<f32>,
    /// Softcap `c`: scores become `c * tanh(s / c)` before biases and masks.
    pub softcap: Option<f32>,
    /// Hide keys after the query's position (`j > p`).
    pub causal: bool,
    /// Position of query row 0 in every sequence. `None` means `kv_len - q_len`
    /// (bottom-right, as when decoding with a KV cache; negative when `q_len > kv_len`).
    /// `Some(0)` is PyTorch's top-left `is_causal`.
    pub q_offset: Option<i64>,
    /// Position of query row 0 per sequence, for batches whose sequences differ; overrides
    /// `q_offset`.
    pub q_offsets: Option<Vec<i64>>,
    /// Sliding window `W`: key `j` is visible to position `p` only when `p - W < j <= p`, i.e.
    /// `W` keys including the query's own. A window implies the causal bound.
    pub window: Option<usize>,
    /// Valid key count per sequence (right padding): keys `j >= key_lengths[b]` are hidden.
    pub key_lengths: Option<Vec<usize>>,
    /// First valid key per sequence (left padding, as batched generation uses): keys
    /// `j < key_starts[b]` are hidden.
    pub key_starts: Option<Vec<usize>>,
    /// Packed sequences.
    pub segments: Option<Segments>,
    /// Boolean mask, `true` = may attend.
    pub mask: Option<BoolMask>,
    /// Additive mask.
    pub additive_mask: Option<AdditiveMask>,
    /// ALiBi biases; `num_heads` must equal the shape's.
    pub alibi: Option<Alibi>,
    /// One learned logit per query head that joins the softmax denominator (gpt-oss
    /// "attention sinks"): probabilities then sum to less than 1.
    pub sinks: Option<Vec<f32>>,
}

/// Attention results; `T` is the storage type of the output.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionOutput<T = f32> {
    /// Probabilities `[batch, num_heads, q_len, kv_len]`; empty from the fused kernel.
    pub probs: Vec<f32>,
    /// Output `P V`, in the shape's layout with `num_heads` heads.
    pub out: Vec<T>,
    /// Natural log of each row's softmax denominator (including the sink), in the scaled
    /// and biased score units, `[batch, num_heads, q_len]`; [`NO_KEY_LSE`] for a row with
    /// no visible key and no sink.
    pub lse: Vec<f32>,
}

/// Everything resolved from shape and params that both paths need.
#[derive(Clone, Debug)]
pub(crate) struct Resolved {
    pub scale: f64,
    /// Position of query row 0, per sequence.
    pub q_offsets: Vec<i64>,
    /// Valid key range `[start, end)` per sequence.
    pub key_ranges: Vec<(usize, usize)>,
    pub slopes: Option<Vec<f64>>,
}

fn check_broadcast(
    name: &'static str,
    batch: usize,
    heads: usize,
    len: usize,
    shape: &AttentionShape,
) -> Result<()> {
    if batch != 1 && batch != shape.batch {
        return Err(Error::shape(
            name,
            batch,
            format!(
                "the mask's batch dimension must be 1 or batch = {}",
                shape.batch
            ),
        ));
    }
    if heads != 1 && heads != shape.num_heads {
        return Err(Error::shape(
            name,
            heads,
            format!(
                "the mask's head dimension must be 1 or num_heads = {}",
                shape.num_heads
            ),
        ));
    }
    check_len(
        name,
        len,
        checked_product(name, &[batch, heads, shape.q_len, shape.kv_len])?,
    )
}

fn resolve_masks(shape: &AttentionShape, params: &AttentionParams) -> Result<()> {
    if let Some(mask) = &params.mask {
        check_broadcast("mask", mask.batch, mask.heads, mask.values.len(), shape)?;
    }
    if let Some(mask) = &params.additive_mask {
        check_broadcast(
            "additive_mask",
            mask.batch,
            mask.heads,
            mask.values.len(),
            shape,
        )?;
        if let Some(index) = mask
            .values
            .iter()
            .position(|v| v.is_nan() || *v == f32::INFINITY)
        {
            return Err(Error::param(
                "additive_mask",
                f64::from(mask.values[index]),
                format!("entry {index} is NaN or +inf; use -inf to hide a key"),
            ));
        }
    }
    if let Some(segments) = &params.segments {
        check_len(
            "segments.q",
            segments.q.len(),
            checked_product("segments.q", &[shape.batch, shape.q_len])?,
        )?;
        check_len(
            "segments.kv",
            segments.kv.len(),
            checked_product("segments.kv", &[shape.batch, shape.kv_len])?,
        )?;
    }
    if let Some(sinks) = &params.sinks {
        check_len("sinks", sinks.len(), shape.num_heads)?;
        if let Some(&bad) = sinks.iter().find(|s| !s.is_finite()) {
            return Err(Error::param(
                "sinks",
                f64::from(bad),
                "every sink logit must be finite",
            ));
        }
    }
    Ok(())
}

/// The number of sequences that need per-sequence tables: `batch`, or 0 when there are no
/// query rows. A call without query rows computes nothing, so a huge `batch` of empty
/// sequences must not allocate one table entry per sequence.
fn table_sequences(shape: &AttentionShape) -> usize {
    if shape.num_heads == 0 || shape.q_len == 0 {
        0
    } else {
        shape.batch
    }
}

fn resolve_key_ranges(
    shape: &AttentionShape,
    params: &AttentionParams,
) -> Result<Vec<(usize, usize)>> {
    let mut ranges = vec![(0, shape.kv_len); table_sequences(shape)];
    if let Some(lengths) = &params.key_lengths {
        check_len("key_lengths", lengths.len(), shape.batch)?;
        for (b, &length) in lengths.iter().enumerate() {
            if length > shape.kv_len {
                return Err(Error::shape(
                    "key_lengths",
                    length,
                    format!("key_lengths[{b}] exceeds kv_len = {}", shape.kv_len),
                ));
            }
            if let Some(range) = ranges.get_mut(b) {
                range.1 = length;
            }
        }
    }
    if let Some(starts) = &params.key_starts {
        check_len("key_starts", starts.len(), shape.batch)?;
        for (b, &start) in starts.iter().enumerate() {
            if start > shape.kv_len {
                return Err(Error::shape(
                    "key_starts",
                    start,
                    format!("key_starts[{b}] exceeds kv_len = {}", shape.kv_len),
                ));
            }
            if let Some(range) = ranges.get_mut(b) {
                range.0 = start;
            }
        }
    }
    Ok(ranges)
}

fn resolve_q_offsets(shape: &AttentionShape, params: &AttentionParams) -> Result<Vec<i64>> {
    let q_offsets = match &params.q_offsets {
        Some(offsets) => {
            check_len("q_offsets", offsets.len(), shape.batch)?;
            offsets.clone()
        }
        None => vec![
            params.q_offset.unwrap_or_else(|| shape.default_q_offset());
            table_sequences(shape)
        ],
    };
    // The GPU forms positions and distances in i32.
    let limit = i64::from(i32::MAX) / 2;
    for &q_offset in &q_offsets {
        if q_offset.unsigned_abs() > limit as u64
            || q_offset + shape.q_len as i64 > limit
            || shape.kv_len as i64 > limit
        {
            return Err(Error::shape(
                "q_offset",
                q_offset,
                "query and key positions must stay within +-2^30",
            ));
        }
    }
    Ok(q_offsets)
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
    resolve_masks(shape, params)?;
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
    Ok(Resolved {
        scale,
        q_offsets: resolve_q_offsets(shape, params)?,
        key_ranges: resolve_key_ranges(shape, params)?,
        slopes,
    })
}

/// Index of element `[b, h, i, j]` in a broadcastable mask.
pub(crate) fn mask_index(
    mask_batch: usize,
    mask_heads: usize,
    shape: &AttentionShape,
    b: usize,
    h: usize,
    i: usize,
    j: usize,
) -> usize {
    let b = if mask_batch == 1 { 0 } else { b };
    let h = if mask_heads == 1 { 0 } else { h };
    ((b * mask_heads + h) * shape.q_len + i) * shape.kv_len + j
}

/// Whether key `j` is visible to query row `i` of head `h` in sequence `b`.
pub(crate) fn visible(
    params: &AttentionParams,
    resolved: &Resolved,
    shape: &AttentionShape,
    b: usize,
    h: usize,
    i: usize,
    j: usize,
) -> bool {
    let (start, end) = resolved.key_ranges[b];
    if j < start || j >= end {
        return false;
    }
    let position = resolved.q_offsets[b] + i as i64;
    let key = j as i64;
    if (params.causal || params.window.is_some()) && key > position {
        return false;
    }
    if let Some(window) = params.window {
        // A window wider than any distance hides nothing, as on the GPU, which clamps it.
        if key <= position.saturating_sub(i64::try_from(window).unwrap_or(i64::MAX)) {
            return false;
        }
    }
    if let Some(segments) = &params.segments {
        if segments.q[b * shape.q_len + i] != segments.kv[b * shape.kv_len + j] {
            return false;
        }
    }
    if let Some(mask) = &params.mask {
        if !mask.values[mask_index(mask.batch, mask.heads, shape, b, h, i, j)] {
            return false;
        }
    }
    if let Some(mask) = &params.additive_mask {
        if mask.values[mask_index(mask.batch, mask.heads, shape, b, h, i, j)] == f32::NEG_INFINITY {
            return false;
        }
    }
    true
}

pub(crate) fn check_inputs(shape: &AttentionShape, q: usize, k: usize, v: usize) -> Result<()> {
    let (q_len, kv_len, _) = shape.lens()?;
    check_len("q", q, q_len)?;
    check_len("k", k, kv_len)?;
    check_len("v", v, kv_len)
}
