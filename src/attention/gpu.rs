//! GPU path of attention with materialised probabilities (`shaders/attention.wgsl`).

use crate::alibi::AlibiBias;
use crate::attention::{check_inputs, resolve, AttentionOutput, AttentionParams, AttentionShape};
use crate::context::GpuContext;
use crate::error::{Error, Result};
use crate::gpu;
use crate::tensor::TensorView;

/// Mirrors `Params` in `shaders/attention.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct AttentionUniform {
    batch: u32,
    heads: u32,
    group: u32,
    q_len: u32,
    kv_len: u32,
    head_dim: u32,
    flags: u32,
    window: u32,
    q_offset: i32,
    scale: f32,
    softcap: f32,
    _pad0: u32,
    q_strides: [u32; 4],
    kv_strides: [u32; 4],
}

// Flag bits; mirrored by the FLAG_* constants in shaders/attention.wgsl.
const FLAG_CAUSAL: u32 = 1;
const FLAG_WINDOW: u32 = 2;
const FLAG_KEY_LENGTHS: u32 = 4;
const FLAG_MASK: u32 = 8;
const FLAG_ALIBI: u32 = 16;
const FLAG_SYMMETRIC: u32 = 32;
const FLAG_SOFTCAP: u32 = 64;

/// Invocations per query row. 64 keeps the three reductions short on wide GPUs and on
/// lavapipe's 8-wide SIMD alike; the shader's reduction arrays hold up to 256.
const ATTENTION_WORKGROUP_SIZE: u32 = 64;

const SOURCE: &str = include_str!("../../shaders/attention.wgsl");

pub(crate) fn source() -> &'static str {
    SOURCE
}

/// Caller buffers for one attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttentionBuffers<'a> {
    /// Q in the shape's layout.
    pub q: TensorView<'a>,
    /// K in the shape's layout with `num_kv_heads` heads.
    pub k: TensorView<'a>,
    /// V, same layout as K.
    pub v: TensorView<'a>,
    /// Probabilities `[batch, heads, q_len, kv_len]`, written from element 0 of the buffer.
    pub probs: &'a wgpu::Buffer,
    /// Output, same layout as Q; written.
    pub out: TensorView<'a>,
}

fn to_u32(name: &'static str, value: usize) -> Result<u32> {
    u32::try_from(value).map_err(|_| Error::shape(name, value, "must be below 2^32"))
}

/// Packs a boolean mask 32 bits per word, bit `n % 32` of word `n / 32`.
fn pack_mask(mask: &[bool]) -> Vec<u32> {
    mask.chunks(32)
        .map(|bits| {
            bits.iter()
                .enumerate()
                .fold(0u32, |word, (n, &bit)| word | (u32::from(bit) << n))
        })
        .collect()
}

/// Records attention over caller buffers into `encoder`; nothing is submitted.
///
/// # Errors
/// Invalid shape or params, views that do not fit their buffers, or bindings past the
/// device limit.
pub fn record(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    shape: &AttentionShape,
    params: &AttentionParams,
    buffers: &AttentionBuffers<'_>,
) -> Result<()> {
    let resolved = resolve(shape, params)?;
    let (q_len, kv_len, probs_len) = shape.lens()?;
    gpu::check_view("q", buffers.q.buffer, buffers.q.offset, q_len as u64, 4)?;
    gpu::check_view("k", buffers.k.buffer, buffers.k.offset, kv_len as u64, 4)?;
    gpu::check_view("v", buffers.v.buffer, buffers.v.offset, kv_len as u64, 4)?;
    gpu::check_view(
        "out",
        buffers.out.buffer,
        buffers.out.offset,
        q_len as u64,
        4,
    )?;
    gpu::check_view("probs", buffers.probs, 0, probs_len as u64, 4)?;
    for (name, buffer) in [
        ("q", buffers.q.buffer),
        ("k", buffers.k.buffer),
        ("v", buffers.v.buffer),
        ("out", buffers.out.buffer),
    ] {
        gpu::check_binding(ctx, name, buffer.size())?;
    }
    gpu::check_binding(ctx, "probs", (probs_len * 4) as u64)?;
    let rows = shape.batch * shape.num_heads * shape.q_len;
    if rows == 0 {
        return Ok(());
    }

    let mut flags = 0;
    if params.causal {
        flags |= FLAG_CAUSAL;
    }
    if params.window.is_some() {
        flags |= FLAG_WINDOW;
    }
    if params.key_lengths.is_some() {
        flags |= FLAG_KEY_LENGTHS;
    }
    if params.mask.is_some() {
        flags |= FLAG_MASK;
    }
    if let Some(alibi) = &params.alibi {
        flags |= FLAG_ALIBI;
        if alibi.bias == AlibiBias::Symmetric {
            flags |= FLAG_SYMMETRIC;
        }
    }
    if params.softcap.is_some() {
        flags |= FLAG_SOFTCAP;
    }

    let q_strides = shape
        .layout
        .strides(shape.q_len, shape.num_heads, shape.head_dim);
    let kv_strides = shape
        .layout
        .strides(shape.kv_len, shape.num_kv_heads, shape.head_dim);
    // K and V share strides, so their offsets must agree for one uniform to describe both.
    if buffers.k.offset != buffers.v.offset {
        return Err(Error::shape(
            "v.offset",
            buffers.v.offset as i64,
            format!(
                "must equal k.offset = {}; put K and V at the same offset in their buffers",
                buffers.k.offset
            ),
        ));
    }
    let uniform = AttentionUniform {
        batch: to_u32("batch", shape.batch)?,
        heads: to_u32("num_heads", shape.num_heads)?,
        group: to_u32("num_heads", shape.num_heads / shape.num_kv_heads)?,
        q_len: to_u32("q_len", shape.q_len)?,
        kv_len: to_u32("kv_len", shape.kv_len)?,
        head_dim: to_u32("head_dim", shape.head_dim)?,
        flags,
        window: to_u32("window", params.window.unwrap_or(0).min(u32::MAX as usize))?,
        q_offset: resolved.q_offset as i32,
        scale: resolved.scale as f32,
        softcap: params.softcap.unwrap_or(1.0),
        _pad0: 0,
        q_strides: [
            to_u32("q", q_strides[0])?,
            to_u32("q", q_strides[1])?,
            to_u32("q", q_strides[2])?,
            buffers.q.offset as u32,
        ],
        kv_strides: [
            to_u32("k", kv_strides[0])?,
            to_u32("k", kv_strides[1])?,
            to_u32("k", kv_strides[2])?,
            buffers.k.offset as u32,
        ],
    };
    if buffers.out.offset != buffers.q.offset {
        return Err(Error::shape(
            "out.offset",
            buffers.out.offset as i64,
            format!(
                "must equal q.offset = {}; the output shares Q's layout",
                buffers.q.offset
            ),
        ));
    }

    let key_lengths: Vec<u32> = params
        .key_lengths
        .iter()
        .flatten()
        .map(|&l| l as u32)
        .collect();
    let mask_bits = params.mask.as_deref().map(pack_mask).unwrap_or_default();
    let slopes: Vec<f32> = resolved
        .slopes
        .iter()
        .flatten()
        .map(|&s| s as f32)
        .collect();
    let none = wgpu::BufferUsages::empty();
    let key_lengths = gpu::storage_init(
        ctx,
        "attention key lengths",
        bytemuck::cast_slice(&key_lengths),
        none,
    );
    let mask_bits = gpu::storage_init(
        ctx,
        "attention mask",
        bytemuck::cast_slice(&mask_bits),
        none,
    );
    let slopes = gpu::storage_init(ctx, "attention slopes", bytemuck::cast_slice(&slopes), none);
    let uniform = gpu::uniform(ctx, "attention params", &uniform);

    let pipeline = ctx.pipeline(
        &gpu::key("attention", "main", ATTENTION_WORKGROUP_SIZE),
        SOURCE,
    )?;
    let bind_group = gpu::bind_group(
        ctx,
        &pipeline,
        "attention",
        &[
            &uniform,
            buffers.q.buffer,
            buffers.k.buffer,
            buffers.v.buffer,
            &key_lengths,
            &mask_bits,
            &slopes,
            buffers.probs,
            buffers.out.buffer,
        ],
    );
    gpu::record_dispatch(
        ctx,
        encoder,
        &pipeline,
        &bind_group,
        "attention",
        rows as u64,
    )
}

/// Computes attention on the GPU and reads back probabilities and output.
///
/// # Errors
/// As for [`crate::attention::attention_cpu`], and [`Error::Gpu`] if wgpu fails.
pub fn attention(
    ctx: &GpuContext,
    shape: &AttentionShape,
    params: &AttentionParams,
    q: &[f32],
    k: &[f32],
    v: &[f32],
) -> Result<AttentionOutput> {
    resolve(shape, params)?;
    check_inputs(shape, q, k, v)?;
    let (q_len, _, probs_len) = shape.lens()?;
    if q_len == 0 {
        return Ok(AttentionOutput {
            probs: vec![0.0; probs_len],
            out: Vec::new(),
        });
    }

    let none = wgpu::BufferUsages::empty();
    let q_buffer = gpu::storage_init(ctx, "attention q", bytemuck::cast_slice(q), none);
    let k_buffer = gpu::storage_init(ctx, "attention k", bytemuck::cast_slice(k), none);
    let v_buffer = gpu::storage_init(ctx, "attention v", bytemuck::cast_slice(v), none);
    let probs = gpu::storage_empty(
        ctx,
        "attention probs",
        (probs_len * 4) as u64,
        wgpu::BufferUsages::COPY_SRC,
    );
    let out = gpu::storage_empty(
        ctx,
        "attention out",
        (q_len * 4) as u64,
        wgpu::BufferUsages::COPY_SRC,
    );
    let buffers = AttentionBuffers {
        q: TensorView::new(&q_buffer),
        k: TensorView::new(&k_buffer),
        v: TensorView::new(&v_buffer),
        probs: &probs,
        out: TensorView::new(&out),
    };
    gpu::submit_scoped(ctx, "attention", |encoder| {
        record(ctx, encoder, shape, params, &buffers)
    })?;
    Ok(AttentionOutput {
        probs: gpu::read_f32(ctx, &probs, probs_len)?,
        out: gpu::read_f32(ctx, &out, q_len)?,
    })
}
