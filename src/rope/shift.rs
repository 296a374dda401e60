//! Re-rotating keys already in a KV cache by a signed position delta, in place.
//!
//! RoPE rotations compose: rotating pair `i` by `p * inv_freq[i]` and then by
//! `delta * inv_freq[i]` equals rotating it by `(p + delta) * inv_freq[i]`. So when tokens
//! before a cached key are dropped or inserted, shifting the key by the change of its
//! position makes it equal to a key rotated at the new position, without the unrotated key.
//!
//! A shift is a pure rotation: the attention factor of the frequencies is not applied again,
//! because the cached keys already carry it. The frequencies must be those the keys were
//! rotated with, which for dynamic NTK and LongRoPE are those of the length at which they
//! were written. A shift cannot convert keys from one set of frequencies to another.

use crate::error::{Error, Result};
use crate::rope::{
    check_frequencies, heads_extent, rotate_head, QkShape, RopeConfig, RopeFrequencies,
};
use crate::tensor::Layout;

/// A block of cached heads inside a larger buffer or slice: `batch x seq_len x num_heads`
/// heads of `head_dim` contiguous features, with head `[b, t, h]` starting at element
/// `offset + b * strides[0] + t * strides[1] + h * strides[2]`.
///
/// Elements outside the heads (other layers, other tokens, padding) are never read or
/// written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheRegion {
    /// Sequences.
    pub batch: usize,
    /// Tokens per sequence.
    pub seq_len: usize,
    /// Heads per token.
    pub num_heads: usize,
    /// Features per head; must equal the config's `head_dim`.
    pub head_dim: usize,
    /// Element offset of head `[0, 0, 0]`, counted in elements of the storage type.
    pub offset: usize,
    /// Element strides `[batch, seq, head]`.
    pub strides: [usize; 3],
}

impl CacheRegion {
    /// Creates a densely packed region at element 0, with the strides of `layout`.
    pub fn dense(
        batch: usize,
        seq_len: usize,
        num_heads: usize,
        head_dim: usize,
        layout: Layout,
    ) -> Self {
        Self {
            batch,
            seq_len,
            num_heads,
            head_dim,
            offset: 0,
            strides: layout.strides(seq_len, num_heads, head_dim),
        }
    }

    /// Returns the same region starting at element `offset`.
    pub fn with_offset(self, offset: usize) -> Self {
        Self { offset, ..self }
    }

    /// Returns the same region with element strides `[batch, seq, head]`.
    pub fn with_strides(self, strides: [usize; 3]) -> Self {
        Self { strides, ..self }
    }

    /// Describes the region as the shape of a Q-only rotation; its strides come from the
    /// region, not from the shape's layout.
    pub(crate) fn qk_shape(&self) -> QkShape {
        QkShape {
            batch: self.batch,
            seq_len: self.seq_len,
            num_heads: self.num_heads,
            num_kv_heads: 0,
            head_dim: self.head_dim,
            layout: Layout::Bshd,
        }
    }

    /// Checks that heads do not overlap and returns the element past the last one, counted
    /// from element 0 (`None` for an empty region).
    pub(crate) fn end(&self) -> Result<Option<usize>> {
        let counts = [self.batch, self.seq_len, self.num_heads];
        let Some(extent) = heads_extent("k", counts, self.strides, self.head_dim)? else {
            return Ok(None);
        };
        let end = self.offset.checked_add(extent).ok_or_else(|| {
            Error::shape("offset", self.offset, "offset + extent overflows usize")
        })?;
        Ok(Some(end))
    }
}

/// Checks a shift's config, frequencies, region and delta, and returns `|delta|`, the
/// position whose angle the shift rotates by.
pub(crate) fn check_shift(
    config: &RopeConfig,
    frequencies: &RopeFrequencies,
    region: &CacheRegion,
    delta: i64,
) -> Result<u32> {
    config.validate()?;
    check_frequencies(config, frequencies)?;
    if region.head_dim != config.head_dim {
        return Err(Error::shape(
            "head_dim",
            region.head_dim,
            format!(
                "the region's head_dim must equal the config's head_dim = {}",
                config.head_dim
            ),
        ));
    }
    u32::try_from(delta.unsigned_abs()).map_err(|_| {
        Error::param(
            "delta",
            delta as f64,
            "a shift must move keys by less than 2^32 positions either way",
        )
    })
}

/// Shifts the keys in `region` of `data` by `delta` positions on the CPU, in f64: each pair
/// rotates by `delta * inv_freq[i]` (clockwise for a negative delta), with no attention
/// factor. A delta of 0 leaves `data` untouched.
///
/// # Errors
/// Invalid config or frequencies; [`Error::InvalidShape`] for a region whose `head_dim`
/// differs from the config's or whose heads overlap; [`Error::InvalidParameter`] for
/// `|delta| >= 2^32`; [`Error::BufferTooSmall`] when the region reaches past `data`.
pub fn shift_cpu(
    config: &RopeConfig,
    frequencies: &RopeFrequencies,
    region: &CacheRegion,
    delta: i64,
    data: &mut [f32],
) -> Result<()> {
    check_shift(config, frequencies, region, delta)?;
    let Some(end) = region.end()? else {
        return Ok(());
    };
    if end > data.len() {
        return Err(Error::BufferTooSmall {
            name: "k",
            offset: region.offset as u64,
            end: end as u64,
            capacity: data.len() as u64,
        });
    }
    if delta == 0 {
        return Ok(());
    }

    let cos_sin: Vec<(f64, f64)> = frequencies
        .inv_freq
        .iter()
        .map(|&w| {
            let (s, c) = crate::angle::sin_cos_of_product(delta as f64, w);
            (c, s)
        })
        .collect();
    let [batch_stride, seq_stride, head_stride] = region.strides;
    for b in 0..region.batch {
        for t in 0..region.seq_len {
            for h in 0..region.num_heads {
                let start = region.offset + b * batch_stride + t * seq_stride + h * head_stride;
                rotate_head(&mut data[start..start + region.head_dim], &cos_sin, config);
            }
        }
    }
    Ok(())
}
