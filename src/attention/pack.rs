//! Packs attention masks and biases for the GPU: one uniform struct shared by both
//! attention kernels, and one `u32` storage buffer ("aux") holding every per-sequence, per-
//! head and per-element table, so the kernels stay within WebGPU's default of 8 storage
//! buffers per stage.

use crate::alibi::AlibiBias;
use crate::attention::{AttentionParams, AttentionShape, Resolved};
use crate::error::{Error, Result};

/// Mirrors `Params` in `shaders/attention_common.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct AttentionUniform {
    pub batch: u32,
    pub heads: u32,
    pub kv_heads: u32,
    pub group: u32,
    pub q_len: u32,
    pub kv_len: u32,
    pub head_dim: u32,
    pub flags: u32,
    pub window: u32,
    pub scale: f32,
    pub softcap: f32,
    pub num_splits: u32,
    pub q_strides: [u32; 4],
    pub kv_strides: [u32; 4],
    pub off_ranges: u32,
    pub off_q_offsets: u32,
    pub off_q_segments: u32,
    pub off_kv_segments: u32,
    pub off_mask: u32,
    pub mask_batch_stride: u32,
    pub mask_head_stride: u32,
    pub off_additive: u32,
    pub off_additive_bits: u32,
    pub additive_batch_stride: u32,
    pub additive_head_stride: u32,
    pub off_slopes: u32,
    pub off_sinks: u32,
    pub row_base: u32,
    pub probs_local: u32,
    pub v_offset: u32,
    pub out_strides: [u32; 4],
}

// Flag bits; mirrored by the FLAG_* constants in shaders/attention_common.wgsl.
pub(crate) const FLAG_CAUSAL: u32 = 1;
pub(crate) const FLAG_WINDOW: u32 = 2;
pub(crate) const FLAG_SEGMENTS: u32 = 4;
pub(crate) const FLAG_MASK: u32 = 8;
pub(crate) const FLAG_ADDITIVE: u32 = 16;
pub(crate) const FLAG_ALIBI: u32 = 32;
pub(crate) const FLAG_SYMMETRIC: u32 = 64;
pub(crate) const FLAG_SOFTCAP: u32 = 128;
pub(crate) const FLAG_SINKS: u32 = 256;

fn to_u32(name: &'static str, value: usize) -> Result<u32> {
    u32::try_from(value)
        .map_err(|_| Error::shape(name, value, "must be below 2^32; split the call"))
}

/// Appends bits, 32 per word, bit `n % 32` of word `n / 32`.
fn push_bits(aux: &mut Vec<u32>, bits: impl Iterator<Item = bool>) {
    let mut word = 0u32;
    let mut count = 0;
    for bit in bits {
        word |= u32::from(bit) << (count % 32);
        count += 1;
        if count % 32 == 0 {
            aux.push(word);
            word = 0;
        }
    }
    if count % 32 != 0 {
        aux.push(word);
    }
}

/// Element strides (batch, head) of a broadcastable mask with `batch` x `heads` planes.
fn mask_strides(shape: &AttentionShape, batch: usize, heads: usize) -> Result<(u32, u32)> {
    let plane = shape.q_len * shape.kv_len;
    let batch_stride = if batch == 1 { 0 } else { heads * plane };
    let head_stride = if heads == 1 { 0 } else { plane };
    to_u32("mask", batch * heads * plane)?;
    Ok((to_u32("mask", batch_stride)?, to_u32("mask", head_stride)?))
}

fn offset(aux: &[u32]) -> Result<u32> {
    to_u32("attention tables", aux.len())
}

/// Builds the uniform (strides and offsets of views excluded) and the aux words.
pub(crate) fn pack(
    shape: &AttentionShape,
    params: &AttentionParams,
    resolved: &Resolved,
) -> Result<(AttentionUniform, Vec<u32>)> {
    let mut uniform = AttentionUniform {
        batch: to_u32("batch", shape.batch)?,
        heads: to_u32("num_heads", shape.num_heads)?,
        kv_heads: to_u32("num_kv_heads", shape.num_kv_heads)?,
        group: to_u32("num_heads", shape.num_heads / shape.num_kv_heads)?,
        q_len: to_u32("q_len", shape.q_len)?,
        kv_len: to_u32("kv_len", shape.kv_len)?,
        head_dim: to_u32("head_dim", shape.head_dim)?,
        window: to_u32("window", params.window.unwrap_or(0).min(i32::MAX as usize))?,
        scale: resolved.scale as f32,
        softcap: params.softcap.unwrap_or(1.0),
        num_splits: 1,
        ..AttentionUniform::default()
    };
    let mut aux = Vec::new();
    let mut flags = 0;
    if params.causal {
        flags |= FLAG_CAUSAL;
    }
    if params.window.is_some() {
        flags |= FLAG_WINDOW;
    }
    if params.softcap.is_some() {
        flags |= FLAG_SOFTCAP;
    }

    uniform.off_ranges = offset(&aux)?;
    for &(start, end) in &resolved.key_ranges {
        aux.extend([start as u32, end as u32]);
    }
    uniform.off_q_offsets = offset(&aux)?;
    aux.extend(resolved.q_offsets.iter().map(|&o| o as i32 as u32));

    if let Some(segments) = &params.segments {
        flags |= FLAG_SEGMENTS;
        uniform.off_q_segments = offset(&aux)?;
        aux.extend(&segments.q);
        uniform.off_kv_segments = offset(&aux)?;
        aux.extend(&segments.kv);
    }
    if let Some(mask) = &params.mask {
        flags |= FLAG_MASK;
        (uniform.mask_batch_stride, uniform.mask_head_stride) =
            mask_strides(shape, mask.batch, mask.heads)?;
        uniform.off_mask = offset(&aux)?;
        push_bits(&mut aux, mask.values.iter().copied());
    }
    if let Some(mask) = &params.additive_mask {
        flags |= FLAG_ADDITIVE;
        (uniform.additive_batch_stride, uniform.additive_head_stride) =
            mask_strides(shape, mask.batch, mask.heads)?;
        uniform.off_additive = offset(&aux)?;
        // Hidden entries are stored as 0 and flagged below, so the kernel never sees -inf.
        aux.extend(mask.values.iter().map(|&v| {
            if v == f32::NEG_INFINITY {
                0
            } else {
                v.to_bits()
            }
        }));
        uniform.off_additive_bits = offset(&aux)?;
        push_bits(
            &mut aux,
            mask.values.iter().map(|&v| v != f32::NEG_INFINITY),
        );
    }
    if let (Some(slopes), Some(alibi)) = (&resolved.slopes, &params.alibi) {
        flags |= FLAG_ALIBI;
        if alibi.bias == AlibiBias::Symmetric {
            flags |= FLAG_SYMMETRIC;
        }
        uniform.off_slopes = offset(&aux)?;
        aux.extend(slopes.iter().map(|&s| (s as f32).to_bits()));
    }
    if let Some(sinks) = &params.sinks {
        flags |= FLAG_SINKS;
        uniform.off_sinks = offset(&aux)?;
        aux.extend(sinks.iter().map(|s| s.to_bits()));
    }
    offset(&aux)?;
    uniform.flags = flags;
    Ok((uniform, aux))
}
