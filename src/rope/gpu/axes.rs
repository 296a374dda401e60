//! Multi-axis RoPE (M-RoPE, axial 2-D) on the GPU; the math is in
//! [`crate::rope::multi_axis`].

use super::kernel::{self, IdStrides, KernelCall, PositionSource};
use super::HeadsView;
use crate::context::GpuContext;
use crate::error::{check_len, checked_product, Result};
use crate::gpu::{self, StatusBuffer};
use crate::rope::multi_axis::{AxisOrder, AxisPositions, MultiAxisRope};
use crate::rope::{check_frequencies, check_shape, QkShape, RopeFrequencies};
use crate::tensor::{Element, TensorView};

/// Multi-axis position ids in a caller's GPU buffer: [`MultiAxisRope::axis_count`] u32 ids
/// per token, ordered by `order`.
#[derive(Clone, Copy, Debug)]
pub struct GpuAxisPositions<'a> {
    /// The buffer and the element offset of the first id. The ids are u32, and the view's
    /// `dtype` is ignored.
    pub ids: TensorView<'a>,
    /// Order of the ids.
    pub order: AxisOrder,
    /// `true` when the buffer contains `axes * batch * seq_len` ids (one list per sequence),
    /// `false` when every sequence shares `axes * seq_len` ids.
    pub per_sequence: bool,
}

/// One multi-axis RoPE dispatch over caller buffers.
#[derive(Clone, Copy, Debug)]
pub struct AxesDispatch<'a> {
    /// Shapes of Q and K.
    pub shape: QkShape,
    /// The ids of every token.
    pub positions: GpuAxisPositions<'a>,
    /// Q, rotated in place.
    pub q: HeadsView<'a>,
    /// K, rotated in place; `None` when `shape.num_kv_heads == 0`.
    pub k: Option<HeadsView<'a>>,
    /// A token with any id at or past this limit is counted in `status` and left unrotated.
    pub position_limit: Option<u32>,
    /// Counter for tokens out of range; required with a limit.
    pub status: Option<&'a StatusBuffer>,
    /// Rotate by the negative angles, keeping the attention factor: the gradient.
    pub inverse: bool,
}

/// Records multi-axis RoPE on Q and K in the caller's buffers into `encoder`; nothing is
/// submitted.
///
/// # Errors
/// As for [`MultiAxisRope::validate`] and [`super::record`]; [`crate::Error::BufferTooSmall`]
/// named `positions` when the id buffer is shorter than the shape needs.
pub fn record_axes(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    rope: &MultiAxisRope,
    frequencies: &RopeFrequencies,
    dispatch: &AxesDispatch<'_>,
) -> Result<()> {
    rope.validate()?;
    let shape = dispatch.shape;
    let GpuAxisPositions {
        ids,
        order,
        per_sequence,
    } = dispatch.positions;
    let axes = rope.axis_count();
    let sequences = if per_sequence { shape.batch } else { 1 };
    let count = checked_product("positions", &[axes, sequences, shape.seq_len])?;
    gpu::check_view("positions", ids.buffer, ids.offset, count as u64, 4)?;

    // check_view keeps every id index below 2^32, so the strides fit in u32.
    let [batch, token, axis] = order.strides(axes, shape.batch, shape.seq_len, per_sequence);
    let call = KernelCall {
        shape,
        positions: PositionSource::Ids {
            buffer: ids.buffer,
            offset: ids.offset as u32,
            strides: IdStrides {
                batch: batch as u32,
                token: token as u32,
                axis: axis as u32,
            },
            axes: axes as u32,
        },
        axis_starts: rope.axis_starts(),
        q: dispatch.q,
        k: dispatch.k,
        position_limit: dispatch.position_limit,
        status: dispatch.status,
        direction: if dispatch.inverse { -1.0 } else { 1.0 },
    };
    kernel::record_kernel(ctx, encoder, &rope.config, frequencies, &call)
}

/// Rotates copies of `q` and `k` on the GPU with multi-axis RoPE and returns them `(q, k)`.
///
/// # Errors
/// As for [`crate::rope::multi_axis::apply_cpu`], and [`crate::Error::Gpu`] if wgpu fails.
pub fn apply_axes<T: Element>(
    ctx: &GpuContext,
    rope: &MultiAxisRope,
    frequencies: &RopeFrequencies,
    shape: &QkShape,
    positions: AxisPositions<'_>,
    q: &[T],
    k: &[T],
) -> Result<(Vec<T>, Vec<T>)> {
    rotate_copies(ctx, rope, frequencies, shape, positions, [q, k], false)
}

/// Applies the gradient of multi-axis RoPE (rotation by the negative angles, attention factor
/// kept) to copies of `dq` and `dk` on the GPU and returns them.
///
/// # Errors
/// As for [`apply_axes`].
pub fn apply_axes_backward<T: Element>(
    ctx: &GpuContext,
    rope: &MultiAxisRope,
    frequencies: &RopeFrequencies,
    shape: &QkShape,
    positions: AxisPositions<'_>,
    dq: &[T],
    dk: &[T],
) -> Result<(Vec<T>, Vec<T>)> {
    rotate_copies(ctx, rope, frequencies, shape, positions, [dq, dk], true)
}

fn rotate_copies<T: Element>(
    ctx: &GpuContext,
    rope: &MultiAxisRope,
    frequencies: &RopeFrequencies,
    shape: &QkShape,
    positions: AxisPositions<'_>,
    [q, k]: [&[T]; 2],
    inverse: bool,
) -> Result<(Vec<T>, Vec<T>)> {
    gpu::require_dtype(ctx, T::DTYPE)?;
    rope.validate()?;
    check_shape(&rope.config, shape)?;
    check_frequencies(&rope.config, frequencies)?;
    let (q_len, k_len) = shape.lens()?;
    check_len("q", q.len(), q_len)?;
    check_len("k", k.len(), k_len)?;
    let axes = rope.axis_count();
    positions.strides(axes, shape.batch, shape.seq_len)?;
    if q.is_empty() && k.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }

    let usage = wgpu::BufferUsages::COPY_SRC;
    let q_buffer = gpu::storage_init(ctx, "rope q", bytemuck::cast_slice(q), usage);
    let k_buffer = gpu::storage_init(ctx, "rope k", bytemuck::cast_slice(k), usage);
    let ids = gpu::storage_init(
        ctx,
        "rope axis positions",
        bytemuck::cast_slice(positions.ids),
        wgpu::BufferUsages::empty(),
    );
    let heads = |buffer| HeadsView {
        view: TensorView::new(buffer).with_dtype(T::DTYPE),
        strides: None,
    };
    let dispatch = AxesDispatch {
        shape: *shape,
        positions: GpuAxisPositions {
            ids: TensorView::new(&ids),
            order: positions.order,
            per_sequence: positions.ids.len() == axes * shape.batch * shape.seq_len,
        },
        q: heads(&q_buffer),
        k: Some(heads(&k_buffer)),
        position_limit: None,
        status: None,
        inverse,
    };
    gpu::submit_scoped(ctx, "rope axes", |encoder| {
        record_axes(ctx, encoder, rope, frequencies, &dispatch)
    })?;
    Ok((
        gpu::read_elements(ctx, &q_buffer, q.len())?,
        gpu::read_elements(ctx, &k_buffer, k.len())?,
    ))
}
