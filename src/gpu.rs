//! Helpers shared by the kernel modules: shader sources, buffers, dispatch sizes, readback.

use wgpu::util::DeviceExt;

use crate::context::{GpuContext, PipelineKey};
use crate::error::{Error, Result};
use crate::tensor::DType;

/// Every shader the crate compiles, composed as the pipelines see it, for every storage
/// type: `(name, source)`.
///
/// WGSL has no generics, so each kernel reads and writes its tensors through `load_*` and
/// `store_*` functions that [`tensor_declarations`] generates per storage type; kernels that
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
        "attention f32 with f16 probabilities".to_string(),
        crate::attention::gpu::source(DType::F32, DType::F16),
    ));
    sources
}

/// How a kernel binds one tensor: its WGSL name, binding number, storage type and access.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TensorBinding {
    pub name: &'static str,
    pub binding: u32,
    pub dtype: DType,
    pub writable: bool,
}

/// Rounds an f32 to the nearest-even bfloat16, keeping NaN a NaN; WGSL for the bf16 stores.
const BF16_ROUNDING: &str = "
fn bf16_bits(x: f32) -> u32 {
    let bits = bitcast<u32>(x);
    if (bits & 0x7fffffffu) > 0x7f800000u {
        return (bits >> 16u) | 0x40u;
    }
    return (bits + 0x7fffu + ((bits >> 16u) & 1u)) >> 16u;
}
";

/// Generates the WGSL declaration of each tensor and its `load_NAME(i) -> f32` and
/// `store_NAME(i, x)` functions for the tensor's storage type.
///
/// f16 converts on load and store (values past the f16 range saturate to +-65504 instead of
/// being undefined). bf16 packs two elements per `u32`: loads shift the half into the high
/// bits of an f32; stores round to nearest even and replace their half with an atomic AND
/// then OR, because the neighbour in the same word may be written by another invocation.
pub(crate) fn tensor_declarations(tensors: &[TensorBinding]) -> String {
    let mut text = String::new();
    if tensors.iter().any(|t| t.dtype == DType::F16) {
        text.push_str("enable f16;\n");
    }
    if tensors.iter().any(|t| t.dtype == DType::Bf16 && t.writable) {
        text.push_str(BF16_ROUNDING);
    }
    for t in tensors {
        let (name, binding) = (t.name, t.binding);
        let access = if t.writable { "read_write" } else { "read" };
        let declaration = match (t.dtype, t.writable) {
            (DType::F32, _) => format!(
                "@group(0) @binding({binding}) var<storage, {access}> {name}: array<f32>;
fn load_{name}(i: u32) -> f32 {{ return {name}[i]; }}
"
            ),
            (DType::F16, _) => format!(
                "@group(0) @binding({binding}) var<storage, {access}> {name}: array<f16>;
fn load_{name}(i: u32) -> f32 {{ return f32({name}[i]); }}
"
            ),
            (DType::Bf16, false) => format!(
                "@group(0) @binding({binding}) var<storage, read> {name}: array<u32>;
fn load_{name}(i: u32) -> f32 {{
    let word = {name}[i >> 1u];
    return bitcast<f32>(select(word << 16u, word & 0xffff0000u, (i & 1u) == 1u));
}}
"
            ),
            (DType::Bf16, true) => format!(
                "@group(0) @binding({binding}) var<storage, read_write> {name}: array<atomic<u32>>;
fn load_{name}(i: u32) -> f32 {{
    let word = atomicLoad(&{name}[i >> 1u]);
    return bitcast<f32>(select(word << 16u, word & 0xffff0000u, (i & 1u) == 1u));
}}
"
            ),
        };
        text.push_str(&declaration);
        if t.writable {
            let store = match t.dtype {
                DType::F32 => format!("fn store_{name}(i: u32, x: f32) {{ {name}[i] = x; }}\n"),
                DType::F16 => format!("fn store_{name}(i: u32, x: f32) {{ {name}[i] = f16(clamp(x, -65504.0, 65504.0)); }}\n"),
                DType::Bf16 => format!(
                    "fn store_{name}(i: u32, x: f32) {{
    let shift = (i & 1u) * 16u;
    atomicAnd(&{name}[i >> 1u], ~(0xffffu << shift));
    atomicOr(&{name}[i >> 1u], bf16_bits(x) << shift);
}}
"
                ),
            };
            text.push_str(&store);
        }
    }
    text
}

/// Fails with [`Error::Unsupported`] when the device cannot store `dtype`.
pub(crate) fn require_dtype(ctx: &GpuContext, dtype: DType) -> Result<()> {
    if dtype == DType::F16 && !ctx.supports_f16() {
        return Err(Error::Unsupported {
            what: "f16 storage (wgpu::Features::SHADER_F16)".into(),
            hint: "use DType::Bf16 or DType::F32, or an adapter with SHADER_F16".into(),
        });
    }
    Ok(())
}

/// Fails unless every view has the same storage type, and returns it.
pub(crate) fn common_dtype(views: &[(&'static str, DType)]) -> Result<DType> {
    let (first_name, first) = views[0];
    for &(name, dtype) in &views[1..] {
        if dtype != first {
            return Err(Error::shape(
                name,
                0,
                format!(
                    "{name} is {} but {first_name} is {}; use one storage type for both",
                    dtype.name(),
                    first.name()
                ),
            ));
        }
    }
    Ok(first)
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

/// A byte range of a buffer to bind, starting at an offset the device accepts. Kernels
/// index elements relative to `first`, the element at the start of the range.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Window<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub offset: u64,
    pub size: u64,
    pub first: u64,
}

impl<'a> Window<'a> {
    pub(crate) fn resource(&self) -> wgpu::BindingResource<'a> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: self.buffer,
            offset: self.offset,
            size: std::num::NonZeroU64::new(self.size),
        })
    }

    /// The index of absolute element `element` within the window, for the shader.
    pub(crate) fn local(&self, element: u64) -> u32 {
        (element - self.first) as u32
    }
}

/// The binding window covering elements `start..end` of `buffer`: the start rounded down to
/// the device's offset alignment, the end rounded up to 4 bytes.
///
/// # Errors
/// [`Error::Unsupported`] when the window exceeds `max_storage_buffer_binding_size`; callers
/// split their work so that this only happens when a single row cannot fit.
pub(crate) fn window<'a>(
    ctx: &GpuContext,
    name: &'static str,
    buffer: &'a wgpu::Buffer,
    start: u64,
    end: u64,
    element_bytes: u64,
) -> Result<Window<'a>> {
    let limits = ctx.device().limits();
    let alignment = u64::from(limits.min_storage_buffer_offset_alignment).max(4);
    let offset = start * element_bytes / alignment * alignment;
    let end_bytes = (end * element_bytes)
        .next_multiple_of(4)
        .min(buffer.size())
        .max(offset + 4);
    let size = end_bytes - offset;
    let limit = limits.max_storage_buffer_binding_size;
    if size > limit {
        return Err(Error::Unsupported {
            what: format!(
                "binding {size} bytes of {name} (max_storage_buffer_binding_size is {limit})"
            ),
            hint:
                "split the call into smaller tensors, or use a device with a larger binding limit"
                    .into(),
        });
    }
    Ok(Window {
        buffer,
        offset,
        size,
        first: offset / element_bytes,
    })
}

/// How many consecutive rows of `row_bytes`, `stride_bytes` apart, fit in one binding window
/// (0 when not even one does). With rows of 1 byte, it is the usable bytes of a window.
pub(crate) fn rows_per_window(ctx: &GpuContext, stride_bytes: u64, row_bytes: u64) -> u64 {
    let limits = ctx.device().limits();
    let alignment = u64::from(limits.min_storage_buffer_offset_alignment).max(4);
    // The window may start up to alignment - 1 bytes early and end up to 3 bytes late.
    let usable = limits
        .max_storage_buffer_binding_size
        .saturating_sub(alignment + 3);
    if usable < row_bytes {
        return 0;
    }
    1 + (usable - row_bytes) / stride_bytes.max(1)
}

/// How many consecutive rows of `row_bytes`, `stride_bytes` apart, fit in one binding window
/// that must start at byte `start` (0 when not even one does).
pub(crate) fn rows_fitting(ctx: &GpuContext, start: u64, stride_bytes: u64, row_bytes: u64) -> u64 {
    let limits = ctx.device().limits();
    let alignment = u64::from(limits.min_storage_buffer_offset_alignment).max(4);
    // The window starts at the aligned byte below `start`, and its end is rounded up to 4.
    let lead = start % alignment;
    let tail = if (start + row_bytes) % 4 == 0 && stride_bytes % 4 == 0 {
        0
    } else {
        3
    };
    let usable = limits
        .max_storage_buffer_binding_size
        .saturating_sub(lead + tail);
    if usable < row_bytes {
        return 0;
    }
    1 + (usable - row_bytes) / stride_bytes.max(1)
}

/// The error for a row that does not fit in one binding window.
pub(crate) fn row_too_large(ctx: &GpuContext, name: &'static str, row_bytes: u64) -> Error {
    Error::Unsupported {
        what: format!(
            "a single {name} row of {row_bytes} bytes in one binding (max_storage_buffer_binding_size is {})",
            ctx.device().limits().max_storage_buffer_binding_size
        ),
        hint: "use a device with a larger binding limit".into(),
    }
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

impl<'a> PositionBinding<'a> {
    /// The binding window over the ids (or over `placeholder` when positions come from a
    /// start); the kernel's ids offset is `window.local(ids_offset)`.
    pub(crate) fn window(
        &self,
        ctx: &GpuContext,
        batch: usize,
        seq_len: usize,
        placeholder: &'a wgpu::Buffer,
    ) -> Result<Window<'a>> {
        let Some(buffer) = self.buffer else {
            return window(ctx, "positions", placeholder, 0, 4, 4);
        };
        let count = if self.ids_batch_stride > 0 {
            batch * seq_len
        } else {
            seq_len
        } as u64;
        let offset = u64::from(self.ids_offset);
        window(ctx, "positions", buffer, offset, offset + count, 4)
    }
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

/// Reads `len` elements of type `T` from the start of `buffer`.
pub(crate) fn read_elements<T: crate::tensor::Element>(
    ctx: &GpuContext,
    buffer: &wgpu::Buffer,
    len: usize,
) -> Result<Vec<T>> {
    let bytes = read_bytes(ctx, buffer, (len * std::mem::size_of::<T>()) as u64)?;
    Ok(bytemuck::pod_collect_to_vec(&bytes))
}
