//! GPU path of attention with materialised probabilities (`shaders/attention.wgsl`).

use crate::attention::pack::{pack, AttentionUniform};
use crate::attention::{check_inputs, resolve, AttentionOutput, AttentionParams, AttentionShape};
use crate::context::{GpuContext, PipelineKey};
use crate::error::{Error, Result};
use crate::gpu::{self, TensorBinding, Window};
use crate::tensor::{DType, Element, TensorView};

/// The kernel with the shared mask code and the declarations of its tensors: Q, K, V and
/// the output in `dtype`, the probabilities in `probs`.
pub(crate) fn source(dtype: DType, probs: DType) -> String {
    let tensors = [
        TensorBinding {
            name: "q",
            binding: 2,
            dtype,
            writable: false,
        },
        TensorBinding {
            name: "k",
            binding: 3,
            dtype,
            writable: false,
        },
        TensorBinding {
            name: "v",
            binding: 4,
            dtype,
            writable: false,
        },
        TensorBinding {
            name: "probs",
            binding: 5,
            dtype: probs,
            writable: true,
        },
        TensorBinding {
            name: "out",
            binding: 6,
            dtype,
            writable: true,
        },
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
    /// Q, in the shape's layout unless `q_strides` is set.
    pub q: TensorView<'a>,
    /// K with `num_kv_heads` heads; same storage type as Q.
    pub k: TensorView<'a>,
    /// V, with K's strides and storage type.
    pub v: TensorView<'a>,
    /// Output with `num_heads` heads, in the shape's layout unless `out_strides` is set;
    /// written.
    pub out: TensorView<'a>,
    /// Element strides `[batch, seq, head]` of Q; `None` takes them from the shape's layout.
    /// Explicit strides read Q, K and V straight out of a fused QKV projection.
    pub q_strides: Option<[usize; 3]>,
    /// Element strides of K and V; `None` takes them from the shape's layout.
    pub kv_strides: Option<[usize; 3]>,
    /// Element strides of the output; `None` takes them from the shape's layout.
    pub out_strides: Option<[usize; 3]>,
    /// Log-sum-exp `[batch, heads, q_len]` as f32, written from element 0.
    pub lse: &'a wgpu::Buffer,
    /// Probabilities `[batch, heads, q_len, kv_len]` in f32, f16 or bf16; written. The fused
    /// kernel ignores it.
    pub probs: Option<TensorView<'a>>,
}

/// Binding windows of the tensors of one attention call.
pub(crate) struct Windows<'a> {
    pub dtype: DType,
    pub q: Window<'a>,
    pub k: Window<'a>,
    pub v: Window<'a>,
    pub out: Window<'a>,
    pub lse: Window<'a>,
}

/// Checks the views, binds each through a window within the binding limit, and completes
/// the uniform with strides and window-relative offsets.
pub(crate) fn bind_views<'a>(
    ctx: &GpuContext,
    shape: &AttentionShape,
    buffers: &AttentionBuffers<'a>,
    uniform: &mut AttentionUniform,
) -> Result<Windows<'a>> {
    let dtype = gpu::common_dtype(&[
        ("q", buffers.q.dtype),
        ("k", buffers.k.dtype),
        ("v", buffers.v.dtype),
        ("out", buffers.out.dtype),
    ])?;
    gpu::require_dtype(ctx, dtype)?;
    let rows = (shape.batch * shape.num_heads * shape.q_len) as u64;
    let size = dtype.size();
    let layout_q = shape
        .layout
        .strides(shape.q_len, shape.num_heads, shape.head_dim);
    let layout_kv = shape
        .layout
        .strides(shape.kv_len, shape.num_kv_heads, shape.head_dim);
    let q_strides = buffers.q_strides.unwrap_or(layout_q);
    let kv_strides = buffers.kv_strides.unwrap_or(layout_kv);
    let out_strides = buffers.out_strides.unwrap_or(layout_q);
    let q_counts = [shape.batch, shape.q_len, shape.num_heads];
    let kv_counts = [shape.batch, shape.kv_len, shape.num_kv_heads];
    let extent = |name, counts, strides| -> Result<u64> {
        Ok(crate::rope::heads_extent(name, counts, strides, shape.head_dim)?.unwrap_or(0) as u64)
    };
    let (q_extent, kv_extent) = (
        extent("q", q_counts, q_strides)?,
        extent("k", kv_counts, kv_strides)?,
    );
    let out_extent = extent("out", q_counts, out_strides)?;
    gpu::check_view("q", buffers.q.buffer, buffers.q.offset, q_extent, size)?;
    gpu::check_view("k", buffers.k.buffer, buffers.k.offset, kv_extent, size)?;
    gpu::check_view("v", buffers.v.buffer, buffers.v.offset, kv_extent, size)?;
    gpu::check_view(
        "out",
        buffers.out.buffer,
        buffers.out.offset,
        out_extent,
        size,
    )?;
    gpu::check_view("lse", buffers.lse, 0, rows, 4)?;
    let written = [("out", buffers.out.buffer), ("lse", buffers.lse)];
    let read = [
        ("q", buffers.q.buffer),
        ("k", buffers.k.buffer),
        ("v", buffers.v.buffer),
    ];
    gpu::check_not_shared(&written, &read)?;

    // NOTE: Q, K, V and the output are bound whole; a tensor past the binding limit is
    // rejected, and only the probabilities are split across dispatches.
    let window = |name, view: &TensorView<'a>, len| {
        gpu::window(ctx, name, view.buffer, view.offset, view.offset + len, size)
    };
    let windows = Windows {
        dtype,
        q: window("q", &buffers.q, q_extent)?,
        k: window("k", &buffers.k, kv_extent)?,
        v: window("v", &buffers.v, kv_extent)?,
        out: window("out", &buffers.out, out_extent)?,
        lse: gpu::window(ctx, "lse", buffers.lse, 0, rows, 4)?,
    };
    // check_view bounded every element index by u32::MAX, so the strides fit too.
    let packed = |strides: [usize; 3], offset: u32| {
        [
            strides[0] as u32,
            strides[1] as u32,
            strides[2] as u32,
            offset,
        ]
    };
    uniform.q_strides = packed(q_strides, windows.q.local(buffers.q.offset));
    uniform.kv_strides = packed(kv_strides, windows.k.local(buffers.k.offset));
    uniform.v_offset = windows.v.local(buffers.v.offset);
    uniform.out_strides = packed(out_strides, windows.out.local(buffers.out.offset));
    Ok(windows)
}

/// Records attention with materialised probabilities over caller buffers; nothing is
/// submitted. Query rows are split over several dispatches when their probabilities do not
/// fit one binding.
///
/// # Errors
/// Invalid shape or params, a missing probabilities view, views that do not fit their
/// buffers or mix storage types, or a Q, K, V or output tensor (or one probabilities row)
/// past the binding limit. [`Error::InvalidBuffer`] for a buffer without `STORAGE` usage,
/// or for an output (out, lse, probabilities) whose buffer is also bound as another tensor.
pub fn record(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    shape: &AttentionShape,
    params: &AttentionParams,
    buffers: &AttentionBuffers<'_>,
) -> Result<()> {
    let resolved = resolve(shape, params)?;
    let (mut uniform, aux) = pack(shape, params, &resolved)?;
    let windows = bind_views(ctx, shape, buffers, &mut uniform)?;
    let (_, _, probs_len) = shape.lens()?;
    let probs = buffers.probs.ok_or_else(|| {
        Error::shape(
            "probs",
            0,
            "the materialising kernel needs a probabilities view",
        )
    })?;
    gpu::require_dtype(ctx, probs.dtype)?;
    let probs_size = probs.dtype.size();
    gpu::check_view(
        "probs",
        probs.buffer,
        probs.offset,
        probs_len as u64,
        probs_size,
    )?;
    let bound = [
        ("q", buffers.q.buffer),
        ("k", buffers.k.buffer),
        ("v", buffers.v.buffer),
        ("out", buffers.out.buffer),
        ("lse", buffers.lse),
    ];
    gpu::check_not_shared(&[("probs", probs.buffer)], &bound)?;
    let rows = (shape.batch * shape.num_heads * shape.q_len) as u64;
    if rows == 0 {
        return Ok(());
    }

    let aux = gpu::storage_init(
        ctx,
        "attention tables",
        bytemuck::cast_slice(&aux),
        wgpu::BufferUsages::empty(),
    );
    let workgroup_size = gpu::workgroup_size(ctx);
    let recompute = probs.dtype != DType::F32;
    let key = PipelineKey {
        shader: "attention",
        entry_point: "main",
        constants: vec![
            ("WORKGROUP_SIZE", f64::from(workgroup_size).to_bits()),
            ("RECOMPUTE_SCORES", f64::from(u8::from(recompute)).to_bits()),
        ],
        dtypes: vec![windows.dtype, probs.dtype],
    };
    let pipeline = ctx.pipeline(&key, || source(windows.dtype, probs.dtype))?;

    let kv = shape.kv_len as u64;
    for chunk in gpu::row_chunks(ctx, "probs", "probabilities", &probs, rows, kv)? {
        let gpu::RowChunk {
            first_row,
            end_row,
            first,
            window: probs_window,
        } = chunk;
        let chunk = AttentionUniform {
            row_base: first_row as u32,
            probs_local: probs_window.local(first),
            ..uniform
        };
        let chunk = gpu::uniform(ctx, "attention params", &chunk);
        let resources = vec![
            (0, chunk.as_entire_binding()),
            (1, aux.as_entire_binding()),
            (2, windows.q.resource()),
            (3, windows.k.resource()),
            (4, windows.v.resource()),
            (5, probs_window.resource()),
            (6, windows.out.resource()),
            (7, windows.lse.resource()),
        ];
        let bind_group = gpu::bind_group_at(ctx, &pipeline, "attention", resources);
        gpu::record_dispatch(
            ctx,
            encoder,
            &pipeline,
            &bind_group,
            "attention",
            end_row - first_row,
        )?;
    }
    Ok(())
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
    pub(crate) fn new<T: Element>(
        ctx: &GpuContext,
        shape: &AttentionShape,
        q: &[T],
        k: &[T],
        v: &[T],
    ) -> Self {
        let none = wgpu::BufferUsages::empty();
        let rows = shape.batch * shape.num_heads * shape.q_len;
        Self {
            q: gpu::storage_init(ctx, "attention q", bytemuck::cast_slice(q), none),
            k: gpu::storage_init(ctx, "attention k", bytemuck::cast_slice(k), none),
            v: gpu::storage_init(ctx, "attention v", bytemuck::cast_slice(v), none),
            out: gpu::storage_empty(
                ctx,
                "attention out",
                q.len() as u64 * T::DTYPE.size(),
                wgpu::BufferUsages::COPY_SRC,
            ),
            lse: gpu::storage_empty(
                ctx,
                "attention lse",
                (rows * 4) as u64,
                wgpu::BufferUsages::COPY_SRC,
            ),
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
            q_strides: None,
            kv_strides: None,
            out_strides: None,
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
pub fn attention<T: Element>(
    ctx: &GpuContext,
    shape: &AttentionShape,
    params: &AttentionParams,
    q: &[T],
    k: &[T],
    v: &[T],
) -> Result<AttentionOutput<T>> {
    resolve(shape, params)?;
    check_inputs(shape, q.len(), k.len(), v.len())?;
    gpu::require_dtype(ctx, T::DTYPE)?;
    let (q_len, _, probs_len) = shape.lens()?;
    let rows = shape.batch * shape.num_heads * shape.q_len;
    if q_len == 0 {
        return Ok(AttentionOutput {
            probs: vec![0.0; probs_len],
            out: Vec::new(),
            lse: Vec::new(),
        });
    }

    let uploaded = Uploaded::new(ctx, shape, q, k, v);
    let probs = gpu::storage_empty(
        ctx,
        "attention probs",
        (probs_len * 4) as u64,
        wgpu::BufferUsages::COPY_SRC,
    );
    gpu::submit_scoped(ctx, "attention", |encoder| {
        record(
            ctx,
            encoder,
            shape,
            params,
            &uploaded.buffers(Some(TensorView::new(&probs))),
        )
    })?;
    Ok(AttentionOutput {
        probs: gpu::read_f32(ctx, &probs, probs_len)?,
        out: gpu::read_elements(ctx, &uploaded.out, q_len)?,
        lse: gpu::read_f32(ctx, &uploaded.lse, rows)?,
    })
}
