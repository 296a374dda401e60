//! Helpers shared by the kernel modules: shader sources, buffers, bind groups, dispatches.

use crate::context::{GpuContext, PipelineKey};
use crate::error::{Error, Result};
use crate::tensor::DType;

mod dtype;
mod positions;
mod readback;
mod window;

pub(crate) use dtype::{
    common_dtype, require_dtype, tensor_declarations, vec4_declarations, TensorBinding,
};
pub use positions::StatusBuffer;
pub(crate) use positions::{position_binding, PositionBinding, UploadedPositions};
pub(crate) use readback::{read_elements, read_f32, read_u32};
pub(crate) use window::{
    row_chunks, row_too_large, rows_per_window, vec4_window, window, RowChunk, Window,
};

/// Every shader the crate compiles, composed as the pipelines see it, for every storage
/// type: `(name, source)`.
///
/// WGSL has no generics, so each kernel reads and writes its tensors through `load_*` and
/// `store_*` functions generated per storage type; kernels that
/// need shared helpers (`angle.wgsl`, `attention_common.wgsl`) get them prepended.
pub fn shader_sources() -> Vec<(String, String)> {
    let mut sources = Vec::new();
    for dtype in [DType::F32, DType::F16, DType::Bf16] {
        let variants = [
            ("sinusoidal", crate::sinusoidal::gpu::source(dtype)),
            ("learned", crate::learned::gpu::source(dtype)),
            ("rope", crate::rope::gpu::source(dtype)),
            ("alibi", crate::alibi::gpu::source(dtype)),
            (
                "attention",
                crate::attention::gpu::source(dtype, DType::F32),
            ),
            ("flash_attention", crate::attention::fused::source(dtype)),
        ];
        sources.extend(
            variants
                .into_iter()
                .map(|(name, source)| (format!("{name} {}", dtype.name()), source)),
        );
    }
    sources.push((
        "rope f32 with vec4 bindings".to_string(),
        crate::rope::gpu::source_vec4(),
    ));
    // The copy kernels of the benchmark, which measures every ratio against them.
    sources.push((
        "copy".to_string(),
        include_str!("../../shaders/copy.wgsl").to_string(),
    ));
    sources.push((
        "attention f32 with f16 probabilities".to_string(),
        crate::attention::gpu::source(DType::F32, DType::F16),
    ));
    sources
}

/// Invocations per workgroup for the element-wise kernels. 64 is a multiple of every
/// subgroup width in use (8 on lavapipe, 32 on NVIDIA, 64 on AMD GCN) and well below the
/// WebGPU minimum of 256 invocations per workgroup.
pub(crate) const WORKGROUP_SIZE: u32 = 64;

/// Invocations per workgroup for the element-wise kernels on this device:
/// [`WORKGROUP_SIZE`], or the largest power of two the device allows when its limits are
/// lower.
pub(crate) fn workgroup_size(ctx: &GpuContext) -> u32 {
    let limits = ctx.device().limits();
    let allowed = limits
        .max_compute_invocations_per_workgroup
        .min(limits.max_compute_workgroup_size_x)
        .max(1);
    WORKGROUP_SIZE.min(1 << allowed.ilog2())
}

/// Builds a pipeline key with the workgroup size override set.
pub(crate) fn key(
    shader: &'static str,
    entry_point: &'static str,
    workgroup_size: u32,
    dtypes: &[DType],
) -> PipelineKey {
    PipelineKey {
        shader,
        entry_point,
        constants: vec![("WORKGROUP_SIZE", f64::from(workgroup_size).to_bits())],
        dtypes: dtypes.to_vec(),
    }
}

/// A 2-D dispatch covering `workgroups` workgroups within the per-dimension limit. The
/// kernels linearise `workgroup_id.x + workgroup_id.y * num_workgroups.x` and skip ids past
/// their count.
pub(crate) fn grid(ctx: &GpuContext, workgroups: u64) -> Result<(u32, u32)> {
    let max = u64::from(ctx.device().limits().max_compute_workgroups_per_dimension);
    if workgroups == 0 {
        return Ok((0, 0));
    }
    let x = workgroups.min(max);
    let y = workgroups.div_ceil(x);
    if y > max {
        return Err(Error::shape(
            "workgroups",
            workgroups as i64,
            format!("needs more than {max} x {max} workgroups; split the work into smaller calls"),
        ));
    }
    Ok((x as u32, y as u32))
}

/// Checks that a buffer can be bound as storage and has room for `len` elements of
/// `element_bytes` each from element `offset`.
pub(crate) fn check_view(
    name: &'static str,
    buffer: &wgpu::Buffer,
    offset: u64,
    len: u64,
    element_bytes: u64,
) -> Result<()> {
    check_usage(name, buffer, wgpu::BufferUsages::STORAGE, "STORAGE")?;
    check_extent(name, buffer, offset, len, element_bytes)
}

/// Fails with [`Error::InvalidBuffer`] unless `buffer` was created with `usage`.
///
/// Without the check, binding or copying the buffer is a wgpu validation error that reaches
/// the device's error handler, not the caller.
pub(crate) fn check_usage(
    name: &'static str,
    buffer: &wgpu::Buffer,
    usage: wgpu::BufferUsages,
    usage_name: &str,
) -> Result<()> {
    if buffer.usage().contains(usage) {
        return Ok(());
    }
    Err(Error::InvalidBuffer {
        name,
        reason: format!(
            "it was created without {usage_name} usage; add wgpu::BufferUsages::{usage_name}"
        ),
    })
}

/// Fails with [`Error::InvalidBuffer`] when a buffer that a kernel writes is also bound to
/// another of its bindings: WebGPU forbids a writable storage binding to share its buffer
/// with any other binding of the same dispatch.
pub(crate) fn check_not_shared(
    written: &[(&'static str, &wgpu::Buffer)],
    bound: &[(&'static str, &wgpu::Buffer)],
) -> Result<()> {
    for (index, &(name, buffer)) in written.iter().enumerate() {
        let others = written[index + 1..].iter().chain(bound);
        if let Some((other, _)) = others.into_iter().find(|(_, b)| *b == buffer) {
            return Err(Error::InvalidBuffer {
                name,
                reason: format!(
                    "the kernel writes {name} and also binds its buffer as {other}; use separate buffers"
                ),
            });
        }
    }
    Ok(())
}

/// Checks that a buffer has room for `len` elements of `element_bytes` each from element
/// `offset`.
pub(crate) fn check_extent(
    name: &'static str,
    buffer: &wgpu::Buffer,
    offset: u64,
    len: u64,
    element_bytes: u64,
) -> Result<()> {
    let capacity = buffer.size() / element_bytes;
    let end = offset.saturating_add(len);
    if end > capacity {
        return Err(Error::BufferTooSmall {
            name,
            offset,
            end,
            capacity,
        });
    }
    if offset > u64::from(u32::MAX) || end > u64::from(u32::MAX) {
        return Err(Error::shape(
            name,
            end as i64,
            "element indices must fit in u32 for the shader; split the tensor",
        ));
    }
    Ok(())
}

/// Creates a storage buffer holding `data`, at least 16 bytes long so it can be bound even
/// when `data` is empty.
pub(crate) fn storage_init(
    ctx: &GpuContext,
    label: &str,
    data: &[u8],
    extra: wgpu::BufferUsages,
) -> wgpu::Buffer {
    let usage = wgpu::BufferUsages::STORAGE | extra;
    if data.len() < 16 {
        let mut padded = [0u8; 16];
        padded[..data.len()].copy_from_slice(data);
        return buffer_init(ctx, label, &padded, usage);
    }
    buffer_init(ctx, label, data, usage)
}

/// Creates a buffer holding `data` (rounded up to a multiple of 4 bytes).
///
/// `wgpu::util::DeviceExt::create_buffer_init` panics when the device is lost, because the
/// mapping of a new buffer then fails. Here the failed mapping leaves the buffer invalid
/// instead, and the error scope around the submit that uses it reports the error.
fn buffer_init(
    ctx: &GpuContext,
    label: &str,
    data: &[u8],
    usage: wgpu::BufferUsages,
) -> wgpu::Buffer {
    let buffer = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: (data.len() as u64)
            .next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT)
            .max(wgpu::COPY_BUFFER_ALIGNMENT),
        usage,
        mapped_at_creation: true,
    });
    if let Ok(mut view) = buffer.get_mapped_range_mut(..) {
        view.slice(..data.len()).copy_from_slice(data);
    }
    buffer.unmap();
    buffer
}

/// Creates an uninitialised storage buffer of at least `bytes` (rounded up to 16).
pub(crate) fn storage_empty(
    ctx: &GpuContext,
    label: &str,
    bytes: u64,
    extra: wgpu::BufferUsages,
) -> wgpu::Buffer {
    ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: bytes.max(16).next_multiple_of(16),
        usage: wgpu::BufferUsages::STORAGE | extra,
        mapped_at_creation: false,
    })
}

/// Creates a uniform buffer from a `Pod` struct.
pub(crate) fn uniform<T: bytemuck::Pod>(ctx: &GpuContext, label: &str, value: &T) -> wgpu::Buffer {
    let usage = wgpu::BufferUsages::UNIFORM;
    buffer_init(ctx, label, bytemuck::bytes_of(value), usage)
}

/// Creates a bind group for group 0 of `pipeline`, binding `buffers` to bindings 0, 1, ...
pub(crate) fn bind_group(
    ctx: &GpuContext,
    pipeline: &wgpu::ComputePipeline,
    label: &str,
    buffers: &[&wgpu::Buffer],
) -> wgpu::BindGroup {
    let numbered: Vec<(u32, wgpu::BindingResource<'_>)> = buffers
        .iter()
        .enumerate()
        .map(|(i, &buffer)| (i as u32, buffer.as_entire_binding()))
        .collect();
    bind_group_at(ctx, pipeline, label, numbered)
}

/// Creates a bind group for group 0 of `pipeline` from `(binding, resource)` pairs; an entry
/// point's automatic layout holds only the bindings it uses.
pub(crate) fn bind_group_at(
    ctx: &GpuContext,
    pipeline: &wgpu::ComputePipeline,
    label: &str,
    resources: Vec<(u32, wgpu::BindingResource<'_>)>,
) -> wgpu::BindGroup {
    let entries: Vec<wgpu::BindGroupEntry<'_>> = resources
        .into_iter()
        .map(|(binding, resource)| wgpu::BindGroupEntry { binding, resource })
        .collect();
    ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some(label),
        layout: &pipeline.get_bind_group_layout(0),
        entries: &entries,
    })
}

/// Records one compute pass with a single dispatch of `workgroups` workgroups.
pub(crate) fn record_dispatch(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    pipeline: &wgpu::ComputePipeline,
    bind_group: &wgpu::BindGroup,
    label: &str,
    workgroups: u64,
) -> Result<()> {
    let (x, y) = grid(ctx, workgroups)?;
    if x == 0 {
        return Ok(());
    }
    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some(label),
        timestamp_writes: None,
    });
    pass.set_pipeline(pipeline);
    pass.set_bind_group(0, bind_group, &[]);
    pass.dispatch_workgroups(x, y, 1);
    Ok(())
}

/// Runs `record` into a fresh encoder inside validation and out-of-memory error scopes,
/// submits it, and turns any wgpu error into [`Error::Gpu`].
pub(crate) fn submit_scoped<T>(
    ctx: &GpuContext,
    during: &'static str,
    record: impl FnOnce(&mut wgpu::CommandEncoder) -> Result<T>,
) -> Result<T> {
    let device = ctx.device();
    let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
        label: Some(during),
    });
    let recorded = record(&mut encoder);
    if recorded.is_ok() {
        ctx.queue().submit([encoder.finish()]);
    }
    let validation_error = pollster::block_on(validation.pop());
    let oom_error = pollster::block_on(oom.pop());
    let value = recorded?;
    if let Some(error) = validation_error.or(oom_error) {
        return Err(Error::Gpu {
            during,
            message: error.to_string(),
        });
    }
    Ok(value)
}
