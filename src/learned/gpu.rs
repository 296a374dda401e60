//! GPU path of the learned absolute embedding (`shaders/learned.wgsl`).

use crate::context::GpuContext;
use crate::error::{check_len, checked_product, Error, Result};
use crate::gpu::{self, StatusBuffer, TensorBinding, UploadedPositions};
use crate::learned::LearnedTable;
use crate::tensor::{DType, Element, GpuPositions, Positions, TensorView};

/// Mirrors `Params` in `shaders/learned.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct LearnedUniform {
    rows: u32,
    seq_len: u32,
    dim: u32,
    max_positions: u32,
    start: u32,
    use_ids: u32,
    ids_batch_stride: u32,
    ids_offset: u32,
    table_offset: u32,
    out_offset: u32,
    row_base: u32,
    _pad: u32,
}

/// The kernel with its tensor declarations; the table and embeddings share one storage type.
pub(crate) fn source(dtype: DType) -> String {
    let tensors = [
        TensorBinding {
            name: "table",
            binding: 1,
            dtype,
            writable: false,
        },
        TensorBinding {
            name: "out",
            binding: 3,
            dtype,
            writable: true,
        },
    ];
    [
        gpu::tensor_declarations(&tensors).as_str(),
        include_str!("../../shaders/learned.wgsl"),
    ]
    .concat()
}

/// Records `target[b, t, :] += table[position, :]` for `[batch, seq_len, dim]` in the
/// caller's buffers. Positions past the table leave their rows unwritten and increment
/// `status`.
///
/// # Errors
/// Invalid shapes, buffers too small for them, a buffer without `STORAGE` usage or a table
/// or id buffer that is also the target ([`Error::InvalidBuffer`]), a `Start` position
/// range past the table, or a binding past the device limit.
#[allow(clippy::too_many_arguments)]
pub fn record(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    shape: &LearnedTable,
    table: TensorView<'_>,
    positions: GpuPositions<'_>,
    batch: usize,
    seq_len: usize,
    target: TensorView<'_>,
    status: &StatusBuffer,
) -> Result<()> {
    let table_len = checked_product("table", &[shape.max_positions, shape.dim])?;
    shape.validate(table_len)?;
    let dtype = gpu::common_dtype(&[("table", table.dtype), ("target", target.dtype)])?;
    gpu::require_dtype(ctx, dtype)?;
    gpu::check_view(
        "table",
        table.buffer,
        table.offset,
        table_len as u64,
        dtype.size(),
    )?;
    let rows = checked_product("rows", &[batch, seq_len])?;
    let elements = checked_product("target", &[rows, shape.dim])? as u64;
    gpu::check_view(
        "target",
        target.buffer,
        target.offset,
        elements,
        dtype.size(),
    )?;
    if let GpuPositions::Start(start) = positions {
        Positions::Start(start).validate(batch, seq_len, shape.max_positions as u64)?;
    }
    let binding = gpu::position_binding(positions, batch, seq_len)?;
    let mut bound = vec![("table", table.buffer)];
    bound.extend(binding.buffer.map(|ids| ("positions", ids)));
    gpu::check_not_shared(&[("target", target.buffer)], &bound)?;
    if elements == 0 {
        return Ok(());
    }

    // A start position reads only the rows [start, start + seq_len) of the table, so only
    // those are bound, and the kernel sees them as positions from 0. Ids may point anywhere,
    // so the whole table is bound.
    let size = dtype.size();
    let dim = shape.dim as u64;
    let (table_window, table_first_row, max_positions, start) = match positions {
        GpuPositions::Start(start) => {
            let first = table.offset + u64::from(start) * dim;
            let window = gpu::window(
                ctx,
                "table",
                table.buffer,
                first,
                first + seq_len as u64 * dim,
                size,
            )?;
            (window, first, seq_len as u32, 0)
        }
        GpuPositions::Buffer { .. } => {
            // NOTE: a table past the binding limit is rejected here when the ids live in a
            // GPU buffer, because the rows they select are not known on the host.
            let window = gpu::window(
                ctx,
                "table",
                table.buffer,
                table.offset,
                table.offset + table_len as u64,
                size,
            )?;
            (
                window,
                table.offset,
                shape.max_positions as u32,
                binding.start,
            )
        }
    };
    let workgroup_size = gpu::workgroup_size(ctx);
    let pipeline = ctx.pipeline(
        &gpu::key("learned", "main", workgroup_size, &[dtype]),
        || source(dtype),
    )?;
    let placeholder = gpu::storage_empty(ctx, "learned no ids", 16, wgpu::BufferUsages::empty());
    let ids = binding.window(ctx, batch, seq_len, &placeholder)?;

    // Rows are split so that each dispatch binds a target window within the binding limit.
    for chunk in gpu::row_chunks(ctx, "target", "target", &target, rows as u64, dim)? {
        let gpu::RowChunk {
            first_row,
            end_row,
            first,
            window,
        } = chunk;
        let uniform = LearnedUniform {
            rows: (end_row - first_row) as u32,
            seq_len: seq_len as u32,
            dim: shape.dim as u32,
            max_positions,
            start,
            use_ids: binding.use_ids,
            ids_batch_stride: binding.ids_batch_stride,
            ids_offset: ids.local(u64::from(binding.ids_offset)),
            table_offset: table_window.local(table_first_row),
            out_offset: window.local(first),
            row_base: first_row as u32,
            _pad: 0,
        };
        let uniform = gpu::uniform(ctx, "learned params", &uniform);
        let resources = vec![
            (0, uniform.as_entire_binding()),
            (1, table_window.resource()),
            (2, ids.resource()),
            (3, window.resource()),
            (4, status.buffer().as_entire_binding()),
        ];
        let bind_group = gpu::bind_group_at(ctx, &pipeline, "learned", resources);
        // The kernel takes four columns per invocation when the width divides into quads.
        let group = if dim.is_multiple_of(4) { 4 } else { 1 };
        let invocations = (end_row - first_row) * (dim / group);
        gpu::record_dispatch(
            ctx,
            encoder,
            &pipeline,
            &bind_group,
            "learned",
            invocations.div_ceil(u64::from(workgroup_size)),
        )?;
    }
    Ok(())
}

/// Adds table rows to `embeddings` `[batch, seq_len, dim]` on the GPU and returns the sum.
///
/// # Errors
/// As for [`crate::learned::add_cpu`], and [`Error::Gpu`] if wgpu fails.
pub fn add<T: Element>(
    ctx: &GpuContext,
    shape: &LearnedTable,
    table: &[T],
    positions: Positions<'_>,
    batch: usize,
    seq_len: usize,
    embeddings: &[T],
) -> Result<Vec<T>> {
    gpu::require_dtype(ctx, T::DTYPE)?;
    shape.validate(table.len())?;
    check_len(
        "embeddings",
        embeddings.len(),
        checked_product("embeddings", &[batch, seq_len, shape.dim])?,
    )?;
    positions.validate(batch, seq_len, shape.max_positions as u64)?;
    if embeddings.is_empty() {
        return Ok(Vec::new());
    }

    let table_buffer = gpu::storage_init(
        ctx,
        "learned table",
        bytemuck::cast_slice(table),
        wgpu::BufferUsages::empty(),
    );
    let target = gpu::storage_init(
        ctx,
        "learned target",
        bytemuck::cast_slice(embeddings),
        wgpu::BufferUsages::COPY_SRC,
    );
    let uploaded = UploadedPositions::new(ctx, positions, seq_len);
    let status = StatusBuffer::new(ctx);
    gpu::submit_scoped(ctx, "learned add", |encoder| {
        record(
            ctx,
            encoder,
            shape,
            TensorView::new(&table_buffer).with_dtype(T::DTYPE),
            uploaded.as_gpu(),
            batch,
            seq_len,
            TensorView::new(&target).with_dtype(T::DTYPE),
            &status,
        )
    })?;
    let out = gpu::read_elements(ctx, &target, embeddings.len())?;
    let out_of_range = status.read(ctx)?;
    if out_of_range > 0 {
        return Err(Error::PositionsOutOfRange {
            count: out_of_range,
            limit: shape.max_positions as u64,
        });
    }
    Ok(out)
}
