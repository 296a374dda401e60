//! GPU path of RoPE (`shaders/rope.wgsl`): plain RoPE and its gradient, multi-axis RoPE
//! (M-RoPE and axial 2-D), shifts of cached keys, and cos/sin tables.
//!
//! Each operation has a `record*` function that records into the caller's encoder over the
//! caller's buffers, and a convenience function that uploads host slices, runs and reads
//! back. All of them dispatch the `apply` entry point of the one kernel, with angles reduced
//! exactly from fixed-point turns (`shaders/angle.wgsl`).

mod axes;
mod kernel;
mod shift;

pub use axes::{apply_axes, apply_axes_backward, record_axes, AxesDispatch, GpuAxisPositions};
pub(crate) use kernel::{source, source_vec4};
pub use shift::{record_shift, shift, ShiftDispatch};

use kernel::{KernelCall, PositionSource};

use crate::context::GpuContext;
use crate::error::{check_len, checked_product, Result};
use crate::gpu::{self, StatusBuffer, UploadedPositions};
use crate::rope::{
    check_frequencies, check_shape, QkShape, RopeConfig, RopeFrequencies, RopeTables,
};
use crate::tensor::{Element, GpuPositions, Positions, TensorView};

/// A tensor of heads in a caller's buffer: where it starts and its element strides.
#[derive(Clone, Copy, Debug)]
pub struct HeadsView<'a> {
    /// Buffer and element offset of element `[0, 0, 0, 0]`.
    pub view: TensorView<'a>,
    /// Element strides `[batch, seq, head]`; features within a head are contiguous. `None`
    /// takes them from the shape's [`crate::Layout`]. Explicit strides read Q or K straight
    /// out of a fused QKV projection.
    pub strides: Option<[usize; 3]>,
}

impl<'a> HeadsView<'a> {
    /// A densely packed tensor at element 0 of `buffer`.
    pub fn new(buffer: &'a wgpu::Buffer) -> Self {
        Self {
            view: TensorView::new(buffer),
            strides: None,
        }
    }
}

/// One RoPE dispatch over caller buffers.
#[derive(Clone, Copy, Debug)]
pub struct RopeDispatch<'a> {
    /// Shapes of Q and K.
    pub shape: QkShape,
    /// Position of each token.
    pub positions: GpuPositions<'a>,
    /// Q, rotated in place.
    pub q: HeadsView<'a>,
    /// K, rotated in place; `None` when `shape.num_kv_heads == 0`.
    pub k: Option<HeadsView<'a>>,
    /// Positions at or past this limit are counted in `status` and their tokens left
    /// unrotated (only checked for [`GpuPositions::Buffer`]). Q and K in one buffer are
    /// rotated by two dispatches, and each counts the token.
    pub position_limit: Option<u32>,
    /// Counter for out-of-range positions; required with [`GpuPositions::Buffer`] and a limit.
    pub status: Option<&'a StatusBuffer>,
    /// Rotate by the negative angle, keeping the attention factor: the gradient of RoPE with
    /// respect to its input (see [`apply_backward`]).
    pub inverse: bool,
}

/// Records RoPE on Q and K in the caller's buffers into `encoder`; nothing is submitted.
///
/// # Errors
/// Invalid config, frequencies or shape. Views that do not fit their buffers, or whose
/// strides make heads overlap. A position buffer with a limit but no status buffer, and
/// bindings past the device limit.
pub fn record(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    config: &RopeConfig,
    frequencies: &RopeFrequencies,
    dispatch: &RopeDispatch<'_>,
) -> Result<()> {
    let shape = dispatch.shape;
    let half = config.rotary_dim / 2;
    let call = KernelCall {
        shape,
        positions: PositionSource::single_axis(dispatch.positions, shape.batch, shape.seq_len)?,
        axis_starts: [half, half],
        q: dispatch.q,
        k: dispatch.k,
        position_limit: dispatch.position_limit,
        status: dispatch.status,
        direction: if dispatch.inverse { -1.0 } else { 1.0 },
    };
    kernel::record_kernel(ctx, encoder, config, frequencies, &call)
}

/// Rotates copies of `q` and `k` on the GPU and returns them `(q, k)`.
///
/// # Errors
/// As for [`crate::rope::apply_cpu`], and [`crate::Error::Gpu`] if wgpu fails.
pub fn apply<T: Element>(
    ctx: &GpuContext,
    config: &RopeConfig,
    frequencies: &RopeFrequencies,
    shape: &QkShape,
    positions: Positions<'_>,
    q: &[T],
    k: &[T],
) -> Result<(Vec<T>, Vec<T>)> {
    rotate_copies(ctx, config, frequencies, shape, positions, [q, k], false)
}

/// Applies the gradient of RoPE with respect to its input to copies of `dq` and `dk` (the
/// gradients of the loss with respect to the rotated Q and K) and returns `(dq_in, dk_in)`.
///
/// RoPE maps each pair by `attention_factor * R(θ)`, a linear map whose transpose is
/// `attention_factor * R(-θ)`, so the backward pass rotates by the negative angle and keeps
/// the attention factor. It inverts [`apply`] only when the attention factor is 1; otherwise
/// `apply` then `apply_backward` scales by `attention_factor^2`. Pass-through features are
/// copied unchanged (their gradient is the identity).
///
/// # Errors
/// As for [`apply`].
pub fn apply_backward<T: Element>(
    ctx: &GpuContext,
    config: &RopeConfig,
    frequencies: &RopeFrequencies,
    shape: &QkShape,
    positions: Positions<'_>,
    dq: &[T],
    dk: &[T],
) -> Result<(Vec<T>, Vec<T>)> {
    rotate_copies(ctx, config, frequencies, shape, positions, [dq, dk], true)
}

fn rotate_copies<T: Element>(
    ctx: &GpuContext,
    config: &RopeConfig,
    frequencies: &RopeFrequencies,
    shape: &QkShape,
    positions: Positions<'_>,
    [q, k]: [&[T]; 2],
    inverse: bool,
) -> Result<(Vec<T>, Vec<T>)> {
    gpu::require_dtype(ctx, T::DTYPE)?;
    check_shape(config, shape)?;
    check_frequencies(config, frequencies)?;
    let (q_len, k_len) = shape.lens()?;
    check_len("q", q.len(), q_len)?;
    check_len("k", k.len(), k_len)?;
    positions.validate(shape.batch, shape.seq_len, 1 << 32)?;
    if q.is_empty() && k.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }

    let usage = wgpu::BufferUsages::COPY_SRC;
    let q_buffer = gpu::storage_init(ctx, "rope q", bytemuck::cast_slice(q), usage);
    let k_buffer = gpu::storage_init(ctx, "rope k", bytemuck::cast_slice(k), usage);
    let uploaded = UploadedPositions::new(ctx, positions, shape.seq_len);
    let heads = |buffer| HeadsView {
        view: TensorView::new(buffer).with_dtype(T::DTYPE),
        strides: None,
    };
    let dispatch = RopeDispatch {
        shape: *shape,
        positions: uploaded.as_gpu(),
        q: heads(&q_buffer),
        k: Some(heads(&k_buffer)),
        position_limit: None,
        status: None,
        inverse,
    };
    gpu::submit_scoped(ctx, "rope", |encoder| {
        record(ctx, encoder, config, frequencies, &dispatch)
    })?;
    Ok((
        gpu::read_elements(ctx, &q_buffer, q.len())?,
        gpu::read_elements(ctx, &k_buffer, k.len())?,
    ))
}

/// Computes cos/sin tables `[seq_len, rotary_dim]` on the GPU (see [`RopeTables`]).
///
/// # Errors
/// Invalid config or positions, and [`crate::Error::Gpu`] if wgpu fails.
pub fn tables(
    ctx: &GpuContext,
    config: &RopeConfig,
    frequencies: &RopeFrequencies,
    positions: Positions<'_>,
    seq_len: usize,
) -> Result<RopeTables> {
    config.validate()?;
    check_frequencies(config, frequencies)?;
    positions.validate(1, seq_len, 1 << 32)?;
    let len = checked_product("tables", &[seq_len, config.rotary_dim])?;
    if len == 0 {
        return Ok(RopeTables {
            cos: Vec::new(),
            sin: Vec::new(),
        });
    }

    let uploaded = UploadedPositions::new(ctx, positions, seq_len);
    let source = PositionSource::single_axis(uploaded.as_gpu(), 1, seq_len)?;
    let usage = wgpu::BufferUsages::COPY_SRC;
    let cos = gpu::storage_empty(ctx, "rope cos", (len * 4) as u64, usage);
    let sin = gpu::storage_empty(ctx, "rope sin", (len * 4) as u64, usage);
    gpu::submit_scoped(ctx, "rope tables", |encoder| {
        kernel::record_tables(
            ctx,
            encoder,
            config,
            frequencies,
            &source,
            seq_len,
            [&cos, &sin],
        )
    })?;
    Ok(RopeTables {
        cos: gpu::read_f32(ctx, &cos, len)?,
        sin: gpu::read_f32(ctx, &sin, len)?,
    })
}
