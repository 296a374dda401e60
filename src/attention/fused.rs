//! GPU path of fused attention (`shaders/flash_attention.wgsl`): one pass over tiles of keys
//! with an online softmax; the score matrix is never written.

use crate::attention::gpu::{bind_views, AttentionBuffers, Uploaded};
use crate::attention::pack::pack;
use crate::attention::{check_inputs, resolve, AttentionOutput, AttentionParams, AttentionShape};
use crate::context::{GpuContext, PipelineKey};
use crate::error::{Error, Result};
use crate::gpu::{self, TensorBinding};
use crate::tensor::{DType, Element, TensorView};

/// Largest head_dim the fused kernel holds; wider heads use the materialising kernel.
/// Mirrors `MAX_HEAD_DIM` in `shaders/flash_attention.wgsl`.
pub const MAX_FUSED_HEAD_DIM: usize = 256;

/// Query rows per workgroup and keys per tile; mirror `BLOCK_ROWS` and `BLOCK_KEYS` in the
/// shader, which sizes its workgroup arrays with them.
const BLOCK_ROWS: usize = 8;
const BLOCK_KEYS: usize = 64;

/// Workgroups below which split-K spreads the keys of a row block over more workgroups.
/// About four per core of a large GPU; software adapters reach it with fewer splits.
const TARGET_WORKGROUPS: usize = 512;

/// Composes the kernel with the shared mask code and the declarations of Q, K, V and the output.
pub(crate) fn source(dtype: DType) -> String {
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
            name: "out",
            binding: 5,
            dtype,
            writable: true,
        },
    ];
    [
        gpu::tensor_declarations(&tensors).as_str(),
        include_str!("../../shaders/attention_common.wgsl"),
        include_str!("../../shaders/flash_attention.wgsl"),
    ]
    .concat()
}

fn key(entry_point: &'static str, dtype: DType) -> PipelineKey {
    PipelineKey {
        shader: "flash_attention",
        entry_point,
        constants: Vec::new(),
        dtypes: vec![dtype],
    }
}

/// Workgroup memory the fused kernel declares: Q and K/V chunks, the score tile, the
/// visibility bits and four per-row arrays, in bytes.
pub const FUSED_WORKGROUP_BYTES: u32 = 4 * (256 + 2048 + 512 + 64 + 4 * 8);

/// Checks whether the device can run the fused kernel's fixed 64-invocation workgroups.
fn device_fits(ctx: &GpuContext) -> bool {
    let limits = ctx.device().limits();
    limits.max_compute_invocations_per_workgroup >= BLOCK_KEYS as u32
        && limits.max_compute_workgroup_size_x >= BLOCK_KEYS as u32
        && limits.max_compute_workgroup_storage_size >= FUSED_WORKGROUP_BYTES
}

/// Row blocks of the dispatch: `batch * kv_heads * ceil(group * q_len / BLOCK_ROWS)`.
fn row_blocks(shape: &AttentionShape) -> usize {
    let group = shape.num_heads / shape.num_kv_heads;
    shape.batch * shape.num_kv_heads * (group * shape.q_len).div_ceil(BLOCK_ROWS)
}

/// Number of key slices per row block: enough workgroups to fill a large GPU when there
/// are few rows (decoding), with at least two key tiles per slice.
pub fn default_splits(shape: &AttentionShape) -> usize {
    let blocks = row_blocks(shape).max(1);
    let tiles = shape.kv_len.div_ceil(BLOCK_KEYS);
    TARGET_WORKGROUPS.div_ceil(blocks).min(tiles / 2).max(1)
}

/// Records fused attention over caller buffers: output and log-sum-exp, no probabilities.
/// `num_splits` sets the split-K factor (`None` picks [`default_splits`]).
///
/// Heads wider than [`MAX_FUSED_HEAD_DIM`], and devices whose limits are below the kernel's
/// 64 invocations or [`FUSED_WORKGROUP_BYTES`] of workgroup memory, fall back to the
/// materialising kernel with a scratch probabilities buffer.
///
/// # Errors
/// Invalid shape or params, views that do not fit their buffers or mix storage types, a
/// zero `num_splits`, or bindings past the device limit. [`Error::InvalidBuffer`] for a
/// buffer without `STORAGE` usage, or for an output (out, lse) whose buffer is also bound
/// as another tensor.
pub fn record(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    shape: &AttentionShape,
    params: &AttentionParams,
    buffers: &AttentionBuffers<'_>,
    num_splits: Option<usize>,
) -> Result<()> {
    if shape.head_dim > MAX_FUSED_HEAD_DIM || !device_fits(ctx) {
        let (_, _, probs_len) = shape.lens()?;
        // Checked before the scratch buffer exists: a buffer past the device's limits is a
        // wgpu error that goes to the device's error handler, not to the caller.
        let bytes = (probs_len as u64).saturating_mul(4);
        let max_buffer_size = ctx.device().limits().max_buffer_size;
        if bytes > max_buffer_size {
            return Err(Error::Unsupported {
                what: format!(
                    "a scratch probabilities buffer of {bytes} bytes (max_buffer_size is {max_buffer_size})"
                ),
                hint: "split the call into fewer query rows or keys".into(),
            });
        }
        let scratch = gpu::storage_empty(
            ctx,
            "attention scratch probs",
            bytes,
            wgpu::BufferUsages::empty(),
        );
        let buffers = AttentionBuffers {
            probs: Some(TensorView::new(&scratch)),
            ..*buffers
        };
        return crate::attention::gpu::record(ctx, encoder, shape, params, &buffers);
    }
    let resolved = resolve(shape, params)?;
    let (mut uniform, aux) = pack(shape, params, &resolved)?;
    let windows = bind_views(ctx, shape, buffers, &mut uniform)?;
    let dtype = windows.dtype;
    let splits = num_splits.unwrap_or_else(|| default_splits(shape));
    if splits == 0 || splits > u32::MAX as usize {
        return Err(Error::shape(
            "num_splits",
            splits,
            "must be at least 1 and below 2^32",
        ));
    }
    let rows = shape.batch * shape.num_heads * shape.q_len;
    if rows == 0 {
        return Ok(());
    }
    uniform.num_splits = splits as u32;

    let partial_floats = if splits > 1 {
        rows * splits * (shape.head_dim + 2)
    } else {
        0
    };
    let partials = gpu::storage_empty(
        ctx,
        "attention partials",
        (partial_floats * 4) as u64,
        wgpu::BufferUsages::empty(),
    );
    let partials = gpu::window(
        ctx,
        "split-K partials",
        &partials,
        0,
        partial_floats as u64,
        4,
    )?;
    let aux = gpu::storage_init(
        ctx,
        "attention tables",
        bytemuck::cast_slice(&aux),
        wgpu::BufferUsages::empty(),
    );
    let uniform = gpu::uniform(ctx, "flash attention params", &uniform);

    let main = ctx.pipeline(&key("main", dtype), || source(dtype))?;
    let resources = vec![
        (0, uniform.as_entire_binding()),
        (1, aux.as_entire_binding()),
        (2, windows.q.resource()),
        (3, windows.k.resource()),
        (4, windows.v.resource()),
        (5, windows.out.resource()),
        (6, windows.lse.resource()),
        (7, partials.resource()),
    ];
    let bind_group = gpu::bind_group_at(ctx, &main, "flash attention", resources);
    gpu::record_dispatch(
        ctx,
        encoder,
        &main,
        &bind_group,
        "flash attention",
        (row_blocks(shape) * splits) as u64,
    )?;
    if splits > 1 {
        let merge = ctx.pipeline(&key("merge", dtype), || source(dtype))?;
        // The merge entry point's automatic layout holds only the bindings it uses.
        let resources = vec![
            (0, uniform.as_entire_binding()),
            (1, aux.as_entire_binding()),
            (5, windows.out.resource()),
            (6, windows.lse.resource()),
            (7, partials.resource()),
        ];
        let bind_group = gpu::bind_group_at(ctx, &merge, "flash attention merge", resources);
        gpu::record_dispatch(
            ctx,
            encoder,
            &merge,
            &bind_group,
            "flash attention merge",
            rows as u64,
        )?;
    }
    Ok(())
}

/// Computes fused attention on the GPU and reads back the output and log-sum-exp (`probs`
/// is empty). `T` is the storage type of Q, K, V and the output.
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
    num_splits: Option<usize>,
) -> Result<AttentionOutput<T>> {
    resolve(shape, params)?;
    check_inputs(shape, q.len(), k.len(), v.len())?;
    gpu::require_dtype(ctx, T::DTYPE)?;
    let (q_len, _, _) = shape.lens()?;
    let rows = shape.batch * shape.num_heads * shape.q_len;
    if q_len == 0 {
        return Ok(AttentionOutput {
            probs: Vec::new(),
            out: Vec::new(),
            lse: Vec::new(),
        });
    }

    let uploaded = Uploaded::new(ctx, shape, q, k, v);
    gpu::submit_scoped(ctx, "flash attention", |encoder| {
        record(
            ctx,
            encoder,
            shape,
            params,
            &uploaded.buffers(None),
            num_splits,
        )
    })?;
    Ok(AttentionOutput {
        probs: Vec::new(),
        out: gpu::read_elements(ctx, &uploaded.out, q_len)?,
        lse: gpu::read_f32(ctx, &uploaded.lse, rows)?,
    })
}
