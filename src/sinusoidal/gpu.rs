//! GPU path of the sinusoidal encoding (`shaders/sinusoidal.wgsl`).

use crate::angle::turns_table;
use crate::context::GpuContext;
use crate::error::{check_len, checked_product, Result};
use crate::gpu::{self, TensorBinding, UploadedPositions};
use crate::sinusoidal::{Sinusoidal, SinusoidalLayout};
use crate::tensor::{DType, Element, GpuPositions, Positions, TensorView};

/// Mirrors `Params` in `shaders/sinusoidal.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct SinusoidalUniform {
    rows: u32,
    seq_len: u32,
    half_dim: u32,
    column_order: u32,
    accumulate: u32,
    start: u32,
    use_ids: u32,
    ids_batch_stride: u32,
    ids_offset: u32,
    out_offset: u32,
    row_stride: u32,
    row_base: u32,
}

/// The kernel with the angle helpers it calls and its tensor declarations.
pub(crate) fn source(dtype: DType) -> String {
    let tensors = [TensorBinding {
        name: "out",
        binding: 3,
        dtype,
        writable: true,
    }];
    [
        gpu::tensor_declarations(&tensors).as_str(),
        include_str!("../../shaders/angle.wgsl"),
        include_str!("../../shaders/sinusoidal.wgsl"),
    ]
    .concat()
}

/// Records the encoding of `batch * seq_len` tokens into `target`, a `[batch, seq_len, dim]`
/// tensor in the caller's buffer: written when `accumulate` is false, added when true.
///
/// Nothing is submitted; the caller submits `encoder`.
///
/// # Errors
/// Invalid parameters, a target or id buffer too small for the shape, a buffer without
/// `STORAGE` usage or an id buffer that is also the target ([`crate::Error::InvalidBuffer`]),
/// or a tensor larger than the device's storage binding limit.
#[allow(clippy::too_many_arguments)]
pub fn record(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    encoding: &Sinusoidal,
    positions: GpuPositions<'_>,
    batch: usize,
    seq_len: usize,
    target: TensorView<'_>,
    accumulate: bool,
) -> Result<()> {
    let frequencies = encoding.frequencies()?;
    let rows = checked_product("rows", &[batch, seq_len])?;
    let elements = checked_product("target", &[rows, encoding.dim])? as u64;
    gpu::require_dtype(ctx, target.dtype)?;
    let size = target.dtype.size();
    gpu::check_view("target", target.buffer, target.offset, elements, size)?;
    let binding = gpu::position_binding(positions, batch, seq_len)?;
    if let Some(ids) = binding.buffer {
        gpu::check_not_shared(&[("target", target.buffer)], &[("positions", ids)])?;
    }
    if elements == 0 {
        return Ok(());
    }

    let workgroup_size = gpu::workgroup_size(ctx);
    let pipeline = ctx.pipeline(
        &gpu::key("sinusoidal", "main", workgroup_size, &[target.dtype]),
        || source(target.dtype),
    )?;
    let turns = gpu::storage_init(
        ctx,
        "sinusoidal turns",
        bytemuck::cast_slice(&turns_table(&frequencies)),
        wgpu::BufferUsages::empty(),
    );
    let placeholder = gpu::storage_empty(ctx, "sinusoidal no ids", 16, wgpu::BufferUsages::empty());
    let ids = binding.window(ctx, batch, seq_len, &placeholder)?;

    // Rows are split so that each dispatch binds a window within the binding limit.
    let dim = encoding.dim as u64;
    for chunk in gpu::row_chunks(ctx, "target", "target", &target, rows as u64, dim)? {
        let gpu::RowChunk {
            first_row,
            end_row,
            window,
            ..
        } = chunk;
        let uniform = SinusoidalUniform {
            rows: (end_row - first_row) as u32,
            seq_len: seq_len as u32,
            half_dim: (encoding.dim / 2) as u32,
            column_order: match encoding.layout {
                SinusoidalLayout::Interleaved => 0,
                SinusoidalLayout::Concat => 1,
            },
            accumulate: u32::from(accumulate),
            start: binding.start,
            use_ids: binding.use_ids,
            ids_batch_stride: binding.ids_batch_stride,
            ids_offset: ids.local(u64::from(binding.ids_offset)),
            out_offset: window.local(target.offset + first_row * dim),
            row_stride: encoding.dim as u32,
            row_base: first_row as u32,
        };
        let uniform = gpu::uniform(ctx, "sinusoidal params", &uniform);
        let resources = vec![
            (0, uniform.as_entire_binding()),
            (1, turns.as_entire_binding()),
            (2, ids.resource()),
            (3, window.resource()),
        ];
        let bind_group = gpu::bind_group_at(ctx, &pipeline, "sinusoidal", resources);
        let invocations = (end_row - first_row) * dim / 2;
        gpu::record_dispatch(
            ctx,
            encoder,
            &pipeline,
            &bind_group,
            "sinusoidal",
            invocations.div_ceil(u64::from(workgroup_size)),
        )?;
    }
    Ok(())
}

/// Computes the table rows `[seq_len, dim]` on the GPU and reads them back.
///
/// # Errors
/// As for [`record`], and [`crate::Error::Gpu`] if wgpu fails.
pub fn table<T: Element>(
    ctx: &GpuContext,
    encoding: &Sinusoidal,
    positions: Positions<'_>,
    seq_len: usize,
) -> Result<Vec<T>> {
    let zeros = vec![T::from_f32(0.0); checked_product("table", &[seq_len, encoding.dim])?];
    run(ctx, encoding, positions, 1, seq_len, &zeros, false)
}

/// Adds the encoding to `embeddings` `[batch, seq_len, dim]` on the GPU and returns the sum.
///
/// # Errors
/// As for [`record`], a wrong `embeddings` length, and [`crate::Error::Gpu`] if wgpu fails.
pub fn add<T: Element>(
    ctx: &GpuContext,
    encoding: &Sinusoidal,
    positions: Positions<'_>,
    batch: usize,
    seq_len: usize,
    embeddings: &[T],
) -> Result<Vec<T>> {
    run(ctx, encoding, positions, batch, seq_len, embeddings, true)
}

fn run<T: Element>(
    ctx: &GpuContext,
    encoding: &Sinusoidal,
    positions: Positions<'_>,
    batch: usize,
    seq_len: usize,
    input: &[T],
    accumulate: bool,
) -> Result<Vec<T>> {
    encoding.validate()?;
    gpu::require_dtype(ctx, T::DTYPE)?;
    check_len(
        "embeddings",
        input.len(),
        checked_product("embeddings", &[batch, seq_len, encoding.dim])?,
    )?;
    positions.validate(batch, seq_len, 1 << 32)?;
    if input.is_empty() {
        return Ok(Vec::new());
    }

    let target = gpu::storage_init(
        ctx,
        "sinusoidal target",
        bytemuck::cast_slice(input),
        wgpu::BufferUsages::COPY_SRC,
    );
    let uploaded = UploadedPositions::new(ctx, positions, seq_len);
    gpu::submit_scoped(ctx, "sinusoidal", |encoder| {
        record(
            ctx,
            encoder,
            encoding,
            uploaded.as_gpu(),
            batch,
            seq_len,
            TensorView::new(&target).with_dtype(T::DTYPE),
            accumulate,
        )
    })?;
    gpu::read_elements(ctx, &target, input.len())
}
