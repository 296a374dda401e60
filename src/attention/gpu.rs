//! GPU path of attention with materialised probabilities (`shaders/attention.wgsl`).

use crate::attention::pack::{pack, AttentionUniform};
use crate::attention::{check_inputs, resolve, AttentionOutput, AttentionParams, AttentionShape};
use crate::context::{GpuContext, PipelineKey};
use crate::error::{Error, Result};
use crate::gpu::{self, TensorBinding};
use crate::tensor::{DType, Element, TensorView};

/// Invocations per query row. 64 keeps the reductions short on wide GPUs and on lavapipe's
/// 8-wide SIMD alike; the shader's reduction arrays hold up to 256.
const WORKGROUP_SIZE: u32 = 64;

/// The kernel with the shared mask code and the declarations of its tensors: Q, K, V and
/// the output in `dtype`, the probabilities in `probs`.
pub(crate) fn source(dtype: DType, probs: DType) -> String {
    let tensors = [
        TensorBinding { name: "q", binding: 2, dtype, writable: false },
        TensorBinding { name: "k", binding: 3, dtype, writable: false },
        TensorBinding { name: "v", binding: 4, dtype, writable: false },
        TensorBinding { name: "probs", binding: 5, dtype: probs, writable: true },
        TensorBinding { name: "out", binding: 6, dtype, writable: true },
    ];
    [
        gpu::tensor_declarations(&tensors).as_str(),
        include_str!("../../shaders/attention_common.wgsl"),
        include_str!("../../shaders/attention.wgsl"),
    ]
    .concat()
}

/// Caller buffers for one attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttentionBuffers<'a> {
    /// Q in the shape's layout.
    pub q: TensorView<'a>,
    /// K in the shape's layout with `num_kv_heads` heads; same storage type as Q.
    pub k: TensorView<'a>,
    /// V, same layout, storage type and element offset as K.
    pub v: TensorView<'a>,
    /// Output, same layout, storage type and element offset as Q; written.
    pub out: TensorView<'a>,
    /// Log-sum-exp `[batch, heads, q_len]` as f32, written from element 0.
    pub lse: &'a wgpu::Buffer,
    /// Probabilities `[batch, heads, q_len, kv_len]`, written from element 0 of the view
    /// (its offset must be 0) in f32, f16 or bf16. The fused kernel ignores it.
    pub probs: Option<TensorView<'a>>,
}

/// Checks the views and completes the uniform with their strides and offsets; returns the
/// storage type of Q, K, V and the output.
pub(crate) fn bind_views(ctx: &GpuContext, shape: &AttentionShape, buffers: &AttentionBuffers<'_>, uniform: &mut AttentionUniform) -> Result<DType> {
    let dtype = gpu::common_dtype(&[("q", buffers.q.dtype), ("k", buffers.k.dtype), ("v", buffers.v.dtype), ("out", buffers.out.dtype)])?;
    gpu::require_dtype(ctx, dtype)?;
    let (q_len, kv_len, _) = shape.lens()?;
    let size = dtype.size();
    gpu::check_view("q", buffers.q.buffer, buffers.q.offset, q_len as u64, size)?;
    gpu::check_view("k", buffers.k.buffer, buffers.k.offset, kv_len as u64, size)?;
    gpu::check_view("v", buffers.v.buffer, buffers.v.offset, kv_len as u64, size)?;
    gpu::check_view("out", buffers.out.buffer, buffers.out.offset, q_len as u64, size)?;
    gpu::check_view("lse", buffers.lse, 0, (shape.batch * shape.num_heads * shape.q_len) as u64, 4)?;
    for (name, buffer) in [("q", buffers.q.buffer), ("k", buffers.k.buffer), ("v", buffers.v.buffer), ("out", buffers.out.buffer), ("lse", buffers.lse)] {
        gpu::check_binding(ctx, name, buffer.size())?;
    }
    if buffers.k.offset != buffers.v.offset {
        return Err(Error::shape("v.offset", buffers.v.offset as i64, format!("must equal k.offset = {}; put K and V at the same offset in their buffers", buffers.k.offset)));
    }
    if buffers.out.offset != buffers.q.offset {
        return Err(Error::shape("out.offset", buffers.out.offset as i64, format!("must equal q.offset = {}; the output shares Q's layout", buffers.q.offset)));
    }

    let q_strides = shape.layout.strides(shape.q_len, shape.num_heads, shape.head_dim);
    let kv_strides = shape.layout.strides(shape.kv_len, shape.num_kv_heads, shape.head_dim);
    // check_view bounded every element index by u32::MAX, so the strides fit too.
    uniform.q_strides = [q_strides[0] as u32, q_strides[1] as u32, q_strides[2] as u32, buffers.q.offset as u32];
    uniform.kv_strides = [kv_strides[0] as u32, kv_strides[1] as u32, kv_strides[2] as u32, buffers.k.offset as u32];
    Ok(dtype)
}

/// Records attention with materialised probabilities over caller buffers; nothing is
/// submitted.
///
/// # Errors
/// Invalid shape or params, a missing probabilities view, views that do not fit their
/// buffers or mix storage types, or bindings past the device limit.
pub fn record(ctx: &GpuContext, encoder: &mut wgpu::CommandEncoder, shape: &AttentionShape, params: &AttentionParams, buffers: &AttentionBuffers<'_>) -> Result<()> {
    let resolved = resolve(shape, params)?;
    let (mut uniform, aux) = pack(shape, params, &resolved)?;
    let dtype = bind_views(ctx, shape, buffers, &mut uniform)?;
    let (_, _, probs_len) = shape.lens()?;
    let probs = buffers.probs.ok_or_else(|| Error::shape("probs", 0, "the materialising kernel needs a probabilities view"))?;
    gpu::require_dtype(ctx, probs.dtype)?;
    if probs.offset != 0 {
        return Err(Error::shape("probs.offset", probs.offset as i64, "the probabilities start at element 0 of their buffer"));
    }
    gpu::check_view("probs", probs.buffer, 0, probs_len as u64, probs.dtype.size())?;
    gpu::check_binding(ctx, "probs", probs_len as u64 * probs.dtype.size())?;
    let rows = shape.batch * shape.num_heads * shape.q_len;
    if rows == 0 {
        return Ok(());
    }

    let aux = gpu::storage_init(ctx, "attention tables", bytemuck::cast_slice(&aux), wgpu::BufferUsages::empty());
    let uniform = gpu::uniform(ctx, "attention params", &uniform);
    let recompute = probs.dtype != DType::F32;
    let key = PipelineKey {
        shader: "attention",
        entry_point: "main",
        constants: vec![
            ("WORKGROUP_SIZE", f64::from(WORKGROUP_SIZE).to_bits()),
            ("RECOMPUTE_SCORES", f64::from(u8::from(recompute)).to_bits()),
        ],
        dtypes: vec![dtype, probs.dtype],
    };
    let pipeline = ctx.pipeline(&key, || source(dtype, probs.dtype))?;
    let bind_group = gpu::bind_group(ctx, &pipeline, "attention", &[&uniform, &aux, buffers.q.buffer, buffers.k.buffer, buffers.v.buffer, probs.buffer, buffers.out.buffer, buffers.lse]);
    gpu::record_dispatch(ctx, encoder, &pipeline, &bind_group, "attention", rows as u64)
}

/// Uploaded inputs and output buffers for the convenience calls.
pub(crate) struct Uploaded {
    pub q: wgpu::Buffer,
    pub k: wgpu::Buffer,
    pub v: wgpu::Buffer,
    pub out: wgpu::Buffer,
    pub lse: wgpu::Buffer,
    pub dtype: DType,
}

impl Uploaded {
    pub(crate) fn new<T: Element>(ctx: &GpuContext, shape: &AttentionShape, q: &[T], k: &[T], v: &[T]) -> Self {
        let none = wgpu::BufferUsages::empty();
        let rows = shape.batch * shape.num_heads * shape.q_len;
        Self {
            q: gpu::storage_init(ctx, "attention q", bytemuck::cast_slice(q), none),
            k: gpu::storage_init(ctx, "attention k", bytemuck::cast_slice(k), none),
            v: gpu::storage_init(ctx, "attention v", bytemuck::cast_slice(v), none),
            out: gpu::storage_empty(ctx, "attention out", q.len() as u64 * T::DTYPE.size(), wgpu::BufferUsages::COPY_SRC),
            lse: gpu::storage_empty(ctx, "attention lse", (rows * 4) as u64, wgpu::BufferUsages::COPY_SRC),
            dtype: T::DTYPE,
        }
    }

    pub(crate) fn buffers<'a>(&'a self, probs: Option<TensorView<'a>>) -> AttentionBuffers<'a> {
        AttentionBuffers {
            q: TensorView::new(&self.q).with_dtype(self.dtype),
            k: TensorView::new(&self.k).with_dtype(self.dtype),
            v: TensorView::new(&self.v).with_dtype(self.dtype),
            out: TensorView::new(&self.out).with_dtype(self.dtype),
            lse: &self.lse,
            probs,
        }
    }
}

/// Computes attention on the GPU with materialised probabilities (kept in f32) and reads
/// back probabilities, output and log-sum-exp. `T` is the storage type of Q, K, V and the
/// output.
///
/// # Errors
/// As for [`crate::attention::attention_cpu`], [`Error::Unsupported`] for f16 without
/// `SHADER_F16`, and [`Error::Gpu`] if wgpu fails.
pub fn attention<T: Element>(ctx: &GpuContext, shape: &AttentionShape, params: &AttentionParams, q: &[T], k: &[T], v: &[T]) -> Result<AttentionOutput<T>> {
    resolve(shape, params)?;
    check_inputs(shape, q.len(), k.len(), v.len())?;
    gpu::require_dtype(ctx, T::DTYPE)?;
    let (q_len, _, probs_len) = shape.lens()?;
    let rows = shape.batch * shape.num_heads * shape.q_len;
    if q_len == 0 {
        return Ok(AttentionOutput { probs: vec![0.0; probs_len], out: Vec::new(), lse: Vec::new() });
    }

    let uploaded = Uploaded::new(ctx, shape, q, k, v);
    let probs = gpu::storage_empty(ctx, "attention probs", (probs_len * 4) as u64, wgpu::BufferUsages::COPY_SRC);
    gpu::submit_scoped(ctx, "attention", |encoder| record(ctx, encoder, shape, params, &uploaded.buffers(Some(TensorView::new(&probs)))))?;
    Ok(AttentionOutput {
        probs: gpu::read_f32(ctx, &probs, probs_len)?,
        out: gpu::read_elements(ctx, &uploaded.out, q_len)?,
        lse: gpu::read_f32(ctx, &uploaded.lse, rows)?,
    })
}
