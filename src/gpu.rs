//! Helpers shared by the kernel modules: shader sources, buffers, dispatch sizes, readback.

use wgpu::util::DeviceExt;

use crate::context::{GpuContext, PipelineKey};
use crate::error::{Error, Result};

/// Every shader the crate compiles, composed as the pipelines see it: `(name, source)`.
///
/// A kernel file that needs the angle helpers is compiled with `angle.wgsl` prepended.
pub fn shader_sources() -> Vec<(&'static str, &'static str)> {
    vec![
        ("sinusoidal", crate::sinusoidal::gpu::source()),
        ("learned", crate::learned::gpu::source()),
        ("rope", crate::rope::gpu::source()),
        ("alibi", crate::alibi::gpu::source()),
        ("attention", crate::attention::gpu::source()),
        ("flash_attention", crate::attention::fused::source()),
    ]
}

/// Invocations per workgroup for the element-wise kernels. 64 is a multiple of every
/// subgroup width in use (8 on lavapipe, 32 on NVIDIA, 64 on AMD GCN) and well below the
/// WebGPU minimum of 256 invocations per workgroup.
pub(crate) const WORKGROUP_SIZE: u32 = 64;

/// Builds a pipeline key with the workgroup size override set.
pub(crate) fn key(
    shader: &'static str,
    entry_point: &'static str,
    workgroup_size: u32,
) -> PipelineKey {
    PipelineKey {
        shader,
        entry_point,
        constants: vec![("WORKGROUP_SIZE", f64::from(workgroup_size).to_bits())],
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

/// Checks that a buffer holds `len` elements of `element_bytes` each from element `offset`.
pub(crate) fn check_view(
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

/// Checks that a binding of `bytes` fits the device's storage binding limit.
pub(crate) fn check_binding(ctx: &GpuContext, name: &'static str, bytes: u64) -> Result<()> {
    let limit = ctx.device().limits().max_storage_buffer_binding_size;
    if bytes > limit {
        // NOTE: tensors past the binding limit are rejected here, not yet split into chunks.
        return Err(Error::Unsupported {
            what: format!(
                "a {name} binding of {bytes} bytes (max_storage_buffer_binding_size is {limit})"
            ),
            hint: "split the work into smaller calls".into(),
        });
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
        return ctx
            .device()
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: &padded,
                usage,
            });
    }
    ctx.device()
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: data,
            usage,
        })
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
    ctx.device()
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytemuck::bytes_of(value),
            usage: wgpu::BufferUsages::UNIFORM,
        })
}

/// Creates a bind group for group 0 of `pipeline`, binding `buffers` to bindings 0, 1, ...
pub(crate) fn bind_group(
    ctx: &GpuContext,
    pipeline: &wgpu::ComputePipeline,
    label: &str,
    buffers: &[&wgpu::Buffer],
) -> wgpu::BindGroup {
    let numbered: Vec<(u32, &wgpu::Buffer)> = buffers
        .iter()
        .enumerate()
        .map(|(i, &buffer)| (i as u32, buffer))
        .collect();
    bind_group_at(ctx, pipeline, label, &numbered)
}

/// Creates a bind group for group 0 of `pipeline` from `(binding, buffer)` pairs; an entry
/// point's automatic layout holds only the bindings it uses.
pub(crate) fn bind_group_at(
    ctx: &GpuContext,
    pipeline: &wgpu::ComputePipeline,
    label: &str,
    buffers: &[(u32, &wgpu::Buffer)],
) -> wgpu::BindGroup {
    let entries: Vec<wgpu::BindGroupEntry<'_>> = buffers
        .iter()
        .map(|&(binding, buffer)| wgpu::BindGroupEntry {
            binding,
            resource: buffer.as_entire_binding(),
        })
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

/// Copies `bytes` bytes from the start of `buffer` to the host and waits for them.
pub(crate) fn read_bytes(ctx: &GpuContext, buffer: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
    if bytes == 0 {
        return Ok(Vec::new());
    }
    let size = bytes.next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT);
    let staging = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("posenc readback"),
        size,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    submit_scoped(ctx, "readback copy", |encoder| {
        encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, size);
        Ok(())
    })?;

    let (sender, receiver) = futures::channel::oneshot::channel();
    staging
        .slice(..)
        .map_async(wgpu::MapMode::Read, move |result| {
            // The receiver outlives this callback unless the caller is gone, so a failed send
            // only means nobody is waiting any more.
            let _ = sender.send(result);
        });
    ctx.device()
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| Error::Gpu {
            during: "device poll",
            message: e.to_string(),
        })?;
    let mapped = pollster::block_on(receiver).map_err(|_| Error::Gpu {
        during: "readback",
        message: "the map callback was dropped (device lost?)".into(),
    })?;
    mapped.map_err(|e| Error::Gpu {
        during: "readback map",
        message: e.to_string(),
    })?;

    let view = staging
        .slice(..)
        .get_mapped_range()
        .map_err(|e| Error::Gpu {
            during: "readback view",
            message: e.to_string(),
        })?;
    let out = view[..bytes as usize].to_vec();
    drop(view);
    staging.unmap();
    Ok(out)
}

/// Reads `len` f32 values from the start of `buffer`.
pub(crate) fn read_f32(ctx: &GpuContext, buffer: &wgpu::Buffer, len: usize) -> Result<Vec<f32>> {
    let bytes = read_bytes(ctx, buffer, (len * 4) as u64)?;
    Ok(bytemuck::pod_collect_to_vec(&bytes))
}

/// Reads `len` u32 values from the start of `buffer`.
pub(crate) fn read_u32(ctx: &GpuContext, buffer: &wgpu::Buffer, len: usize) -> Result<Vec<u32>> {
    let bytes = read_bytes(ctx, buffer, (len * 4) as u64)?;
    Ok(bytemuck::pod_collect_to_vec(&bytes))
}

/// The uniform fields that describe positions, and the buffer to bind for the ids.
pub(crate) struct PositionBinding<'a> {
    pub start: u32,
    pub use_ids: u32,
    pub ids_batch_stride: u32,
    pub ids_offset: u32,
    /// The caller's id buffer, or `None` when a placeholder must be bound.
    pub buffer: Option<&'a wgpu::Buffer>,
}

/// Validates GPU positions for `batch * seq_len` tokens and describes them for a kernel.
pub(crate) fn position_binding<'a>(
    positions: crate::tensor::GpuPositions<'a>,
    batch: usize,
    seq_len: usize,
) -> Result<PositionBinding<'a>> {
    use crate::tensor::GpuPositions;
    match positions {
        GpuPositions::Start(start) => {
            if u64::from(start) + seq_len as u64 > 1 << 32 {
                return Err(Error::PositionOutOfRange {
                    position: u64::from(start) + seq_len as u64 - 1,
                    index: seq_len.saturating_sub(1),
                    limit: 1 << 32,
                });
            }
            Ok(PositionBinding {
                start,
                use_ids: 0,
                ids_batch_stride: 0,
                ids_offset: 0,
                buffer: None,
            })
        }
        GpuPositions::Buffer { ids, per_sequence } => {
            let count = if per_sequence {
                batch * seq_len
            } else {
                seq_len
            };
            check_view("positions", ids.buffer, ids.offset, count as u64, 4)?;
            Ok(PositionBinding {
                start: 0,
                use_ids: 1,
                ids_batch_stride: if per_sequence { seq_len as u32 } else { 0 },
                ids_offset: ids.offset as u32,
                buffer: Some(ids.buffer),
            })
        }
    }
}

/// Host positions uploaded for a kernel.
pub(crate) struct UploadedPositions {
    start: u32,
    ids: Option<(wgpu::Buffer, bool)>,
}

impl UploadedPositions {
    /// Uploads `positions` for `seq_len` tokens (ids are copied to a new buffer).
    pub(crate) fn new(
        ctx: &GpuContext,
        positions: crate::tensor::Positions<'_>,
        seq_len: usize,
    ) -> Self {
        match positions {
            crate::tensor::Positions::Start(start) => Self { start, ids: None },
            crate::tensor::Positions::Ids(ids) => {
                let buffer = storage_init(
                    ctx,
                    "posenc positions",
                    bytemuck::cast_slice(ids),
                    wgpu::BufferUsages::empty(),
                );
                Self {
                    start: 0,
                    ids: Some((buffer, ids.len() != seq_len)),
                }
            }
        }
    }

    /// The positions as a kernel takes them.
    pub(crate) fn as_gpu(&self) -> crate::tensor::GpuPositions<'_> {
        match &self.ids {
            None => crate::tensor::GpuPositions::Start(self.start),
            Some((buffer, per_sequence)) => crate::tensor::GpuPositions::Buffer {
                ids: crate::tensor::TensorView::new(buffer),
                per_sequence: *per_sequence,
            },
        }
    }
}

/// A small GPU counter that kernels increment for each position out of range.
///
/// Create one per context (or per thread), pass it to the `record` calls that take
/// positions from a GPU buffer, and read it after submitting: a non-zero count means those
/// rows were left unwritten.
#[derive(Debug)]
pub struct StatusBuffer {
    buffer: wgpu::Buffer,
}

impl StatusBuffer {
    /// Creates a zeroed counter.
    pub fn new(ctx: &GpuContext) -> Self {
        Self {
            buffer: storage_init(
                ctx,
                "posenc status",
                &[0u8; 16],
                wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            ),
        }
    }

    /// The buffer kernels bind.
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    /// Records a reset of the counter to zero.
    pub fn record_reset(&self, encoder: &mut wgpu::CommandEncoder) {
        encoder.clear_buffer(&self.buffer, 0, None);
    }

    /// Reads the count; blocks until submitted work finishes.
    ///
    /// # Errors
    /// [`Error::Gpu`] if the readback fails.
    pub fn read(&self, ctx: &GpuContext) -> Result<u32> {
        Ok(read_u32(ctx, &self.buffer, 1)?
            .first()
            .copied()
            .unwrap_or(0))
    }
}

impl GpuContext {
    /// Copies the first `len` f32 values of `buffer` (which needs `COPY_SRC`) to the host,
    /// waiting for submitted work to finish.
    ///
    /// # Errors
    /// [`Error::BufferTooSmall`] when the buffer holds fewer values, [`Error::Gpu`] when the
    /// copy or the mapping fails.
    pub fn read_f32(&self, buffer: &wgpu::Buffer, len: usize) -> Result<Vec<f32>> {
        check_view("buffer", buffer, 0, len as u64, 4)?;
        read_f32(self, buffer, len)
    }
}
