//! The kernel side of `shaders/rope.wgsl`: its uniform, its source and one recorded `apply`
//! dispatch. Every public GPU function of [`crate::rope::gpu`] describes its work as a
//! [`KernelCall`]: plain RoPE, its gradient, multi-axis RoPE and a cache shift differ only
//! in where positions come from, which axis each pair takes, and the sign of the angle.

use super::HeadsView;
use crate::angle::turns_table;
use crate::context::GpuContext;
use crate::error::{checked_product, Error, Result};
use crate::gpu::{self, PositionBinding, StatusBuffer, TensorBinding};
use crate::rope::{
    check_frequencies, check_shape, heads_extent, QkShape, RopeConfig, RopeFrequencies, RopeLayout,
};
use crate::tensor::{DType, GpuPositions};

/// Mirrors `Params` in `shaders/rope.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct RopeUniform {
    pub tokens: u32,
    pub seq_len: u32,
    pub half_rotary: u32,
    pub rotary_dim: u32,
    pub pairing: u32,
    pub q_heads: u32,
    pub k_heads: u32,
    pub attention_factor: f32,
    pub direction: f32,
    pub start: u32,
    pub position_step: u32,
    pub use_ids: u32,
    pub ids_batch_stride: u32,
    pub ids_token_stride: u32,
    pub ids_axis_stride: u32,
    pub ids_offset: u32,
    pub axes: u32,
    pub axis1_start: u32,
    pub axis2_start: u32,
    pub position_limit: u32,
    pub has_limit: u32,
    pub q_offset: u32,
    pub q_batch_stride: u32,
    pub q_seq_stride: u32,
    pub q_head_stride: u32,
    pub k_offset: u32,
    pub k_batch_stride: u32,
    pub k_seq_stride: u32,
    pub k_head_stride: u32,
    pub _pad: [u32; 3],
}

/// Composes the kernel with the angle helpers it calls and the declarations of Q and K for
/// `dtype`.
pub(crate) fn source(dtype: DType) -> String {
    compose(dtype, false)
}

/// Composes the f32 kernel with Q and K bound as `array<vec4<f32>>`.
pub(crate) fn source_vec4() -> String {
    compose(DType::F32, true)
}

/// Composes the kernel as [`source`] does, with Q and K bound as `array<vec4<f32>>` when
/// `vec4` is set (f32 only).
fn compose(dtype: DType, vec4: bool) -> String {
    let tensors = [
        TensorBinding {
            name: "q",
            binding: 3,
            dtype,
            writable: true,
        },
        TensorBinding {
            name: "k",
            binding: 4,
            dtype,
            writable: true,
        },
    ];
    let declarations = if vec4 {
        gpu::vec4_declarations(&tensors)
    } else {
        gpu::tensor_declarations(&tensors)
    };
    [
        declarations.as_str(),
        include_str!("../../../shaders/angle.wgsl"),
        include_str!("../../../shaders/rope.wgsl"),
    ]
    .concat()
}

/// Element strides of the position ids: between sequences, tokens and axes.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct IdStrides {
    pub batch: u32,
    pub token: u32,
    pub axis: u32,
}

/// Source of each token's positions in the kernel.
#[derive(Clone, Copy, Debug)]
pub(super) enum PositionSource<'a> {
    /// One axis; token `t` of every sequence is at `start + t * step`.
    Arithmetic { start: u32, step: u32 },
    /// `axes` ids per token in a caller's buffer, already checked against its size.
    Ids {
        buffer: &'a wgpu::Buffer,
        offset: u32,
        strides: IdStrides,
        axes: u32,
    },
}

impl<'a> PositionSource<'a> {
    /// Validates one-axis GPU positions for `batch * seq_len` tokens.
    pub(super) fn single_axis(
        positions: GpuPositions<'a>,
        batch: usize,
        seq_len: usize,
    ) -> Result<Self> {
        let PositionBinding {
            start,
            ids_batch_stride,
            ids_offset,
            buffer,
            ..
        } = gpu::position_binding(positions, batch, seq_len)?;
        Ok(match buffer {
            None => PositionSource::Arithmetic { start, step: 1 },
            Some(buffer) => PositionSource::Ids {
                buffer,
                offset: ids_offset,
                strides: IdStrides {
                    batch: ids_batch_stride,
                    token: 1,
                    axis: 0,
                },
                axes: 1,
            },
        })
    }

    /// Returns the uniform fields `(start, position_step, use_ids, strides, offset, axes)`.
    fn fields(&self) -> (u32, u32, u32, IdStrides, u32, u32) {
        match *self {
            PositionSource::Arithmetic { start, step } => {
                (start, step, 0, IdStrides::default(), 0, 1)
            }
            PositionSource::Ids {
                offset,
                strides,
                axes,
                ..
            } => (0, 0, 1, strides, offset, axes),
        }
    }

    fn buffer(&self) -> Option<&'a wgpu::Buffer> {
        match *self {
            PositionSource::Arithmetic { .. } => None,
            PositionSource::Ids { buffer, .. } => Some(buffer),
        }
    }
}

/// One `apply` dispatch, however the public function describes it.
#[derive(Clone, Copy, Debug)]
pub(super) struct KernelCall<'a> {
    pub shape: QkShape,
    pub positions: PositionSource<'a>,
    /// First pair that takes axis 1 and first pair that takes axis 2; `rotary_dim / 2` for
    /// an axis that no pair takes.
    pub axis_starts: [usize; 2],
    pub q: HeadsView<'a>,
    /// K; ignored when `shape.num_kv_heads == 0`, and required otherwise.
    pub k: Option<HeadsView<'a>>,
    pub position_limit: Option<u32>,
    pub status: Option<&'a StatusBuffer>,
    /// 1 rotates by +angle, -1 by -angle.
    pub direction: f32,
}

/// Validates a heads view and returns `(offset, strides)` for the shader.
pub(super) fn heads_layout(
    name: &'static str,
    heads_view: &HeadsView<'_>,
    shape: &QkShape,
    heads: usize,
) -> Result<(u32, [u32; 3])> {
    let strides = heads_view
        .strides
        .unwrap_or_else(|| shape.layout.strides(shape.seq_len, heads, shape.head_dim));
    let counts = [shape.batch, shape.seq_len, heads];
    let Some(extent) = heads_extent(name, counts, strides, shape.head_dim)? else {
        return Ok((0, [0; 3]));
    };
    gpu::check_view(
        name,
        heads_view.view.buffer,
        heads_view.view.offset,
        extent as u64,
        heads_view.view.dtype.size(),
    )?;
    let to_u32 = |s: usize| {
        u32::try_from(s).map_err(|_| Error::shape(name, s, "strides must be below 2^32"))
    };
    Ok((
        heads_view.view.offset as u32,
        [
            to_u32(strides[0])?,
            to_u32(strides[1])?,
            to_u32(strides[2])?,
        ],
    ))
}

fn turns_buffer(ctx: &GpuContext, frequencies: &RopeFrequencies) -> wgpu::Buffer {
    gpu::storage_init(
        ctx,
        "rope turns",
        bytemuck::cast_slice(&turns_table(&frequencies.inv_freq)),
        wgpu::BufferUsages::empty(),
    )
}

pub(super) fn layout_code(layout: RopeLayout) -> u32 {
    match layout {
        RopeLayout::Half => 0,
        RopeLayout::Interleaved => 1,
    }
}

/// Fills the uniform fields that describe the rotation and the positions, shared by `apply`
/// and `tables`. Tensor fields stay zero.
pub(super) fn base_uniform(
    config: &RopeConfig,
    frequencies: &RopeFrequencies,
    positions: &PositionSource<'_>,
    axis_starts: [usize; 2],
    direction: f32,
) -> RopeUniform {
    let (start, position_step, use_ids, strides, ids_offset, axes) = positions.fields();
    RopeUniform {
        half_rotary: (config.rotary_dim / 2) as u32,
        rotary_dim: config.rotary_dim as u32,
        pairing: layout_code(config.layout),
        attention_factor: frequencies.attention_factor as f32,
        direction,
        start,
        position_step,
        use_ids,
        ids_batch_stride: strides.batch,
        ids_token_stride: strides.token,
        ids_axis_stride: strides.axis,
        ids_offset,
        axes,
        axis1_start: axis_starts[0] as u32,
        axis2_start: axis_starts[1] as u32,
        position_limit: u32::MAX,
        ..RopeUniform::default()
    }
}

/// Records one `apply` dispatch (two when Q and K share a buffer) into `encoder`.
pub(super) fn record_kernel(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    config: &RopeConfig,
    frequencies: &RopeFrequencies,
    call: &KernelCall<'_>,
) -> Result<()> {
    // WebGPU forbids binding one buffer read-write twice in a dispatch, so Q and K that share
    // a buffer (a fused QKV projection) are rotated by one dispatch each.
    if let Some(k) = call
        .k
        .filter(|k| k.view.buffer == call.q.view.buffer && call.shape.num_kv_heads > 0)
    {
        // NOTE: Q and K views that share elements (not only a buffer) are not detected; the
        // shared elements would be rotated twice.
        let q_only = KernelCall {
            k: None,
            shape: QkShape {
                num_kv_heads: 0,
                ..call.shape
            },
            ..*call
        };
        let k_only = KernelCall {
            q: k,
            k: None,
            shape: QkShape {
                num_heads: call.shape.num_kv_heads,
                num_kv_heads: 0,
                ..call.shape
            },
            ..*call
        };
        record_kernel(ctx, encoder, config, frequencies, &q_only)?;
        return record_kernel(ctx, encoder, config, frequencies, &k_only);
    }

    let shape = &call.shape;
    check_shape(config, shape)?;
    check_frequencies(config, frequencies)?;
    let tokens = checked_product("tokens", &[shape.batch, shape.seq_len])?;
    let dtype = match (&call.k, shape.num_kv_heads) {
        (Some(k), heads) if heads > 0 => {
            gpu::common_dtype(&[("q", call.q.view.dtype), ("k", k.view.dtype)])?
        }
        _ => call.q.view.dtype,
    };
    gpu::require_dtype(ctx, dtype)?;
    let (q_offset, q_strides) = heads_layout("q", &call.q, shape, shape.num_heads)?;
    let (k_offset, k_strides) = match (&call.k, shape.num_kv_heads) {
        (_, 0) => (0, [0; 3]),
        (Some(k), heads) => heads_layout("k", k, shape, heads)?,
        (None, heads) => {
            return Err(Error::shape(
                "num_kv_heads",
                heads,
                "no K view was given; pass one or set num_kv_heads to 0",
            ))
        }
    };
    let ids = call.positions.buffer();
    let has_limit = ids.is_some() && call.position_limit.is_some();
    if has_limit && call.status.is_none() {
        return Err(Error::shape(
            "status",
            0,
            "a position limit on GPU positions needs a StatusBuffer to report positions out of range",
        ));
    }
    if tokens == 0 || shape.num_heads + shape.num_kv_heads == 0 {
        return Ok(());
    }
    if tokens > u32::MAX as usize {
        return Err(Error::shape(
            "tokens",
            tokens,
            "batch * seq_len must be below 2^32",
        ));
    }

    // Each tensor is bound through a window; when a window would pass the binding limit the
    // call is split into smaller ones over sequences, tokens and finally heads.
    let size = dtype.size();
    let q_extent = view_extent(&call.q, shape, shape.num_heads)?;
    let k_extent = match &call.k {
        Some(k) if shape.num_kv_heads > 0 => view_extent(k, shape, shape.num_kv_heads)?,
        _ => 0,
    };
    let usable = gpu::rows_per_window(ctx, 1, 1);
    if (q_extent.max(k_extent) as u64) * size > usable {
        return record_split(ctx, encoder, config, frequencies, call, size);
    }
    let (q_window, k_window, vec4) = bind_qk(
        ctx,
        config,
        call,
        dtype,
        [q_offset, k_offset],
        [q_strides, k_strides],
        [q_extent, k_extent],
    )?;
    let placeholder = gpu::storage_empty(ctx, "rope no ids", 16, wgpu::BufferUsages::empty());
    let ids_window = match call.positions {
        PositionSource::Ids {
            buffer,
            offset,
            strides,
            axes,
        } => {
            let last = ids_extent(shape, strides, axes);
            Some(gpu::window(
                ctx,
                "positions",
                buffer,
                u64::from(offset),
                u64::from(offset) + last,
                4,
            )?)
        }
        PositionSource::Arithmetic { .. } => None,
    };
    let base = base_uniform(
        config,
        frequencies,
        &call.positions,
        call.axis_starts,
        call.direction,
    );
    let uniform = RopeUniform {
        tokens: tokens as u32,
        seq_len: shape.seq_len as u32,
        q_heads: shape.num_heads as u32,
        k_heads: shape.num_kv_heads as u32,
        position_limit: call.position_limit.unwrap_or(u32::MAX),
        has_limit: u32::from(has_limit),
        q_offset: q_window.local(u64::from(q_offset)),
        q_batch_stride: q_strides[0],
        q_seq_stride: q_strides[1],
        q_head_stride: q_strides[2],
        k_offset: k_window.map_or(0, |w| w.local(u64::from(k_offset))),
        k_batch_stride: k_strides[0],
        k_seq_stride: k_strides[1],
        k_head_stride: k_strides[2],
        ids_offset: ids_window.map_or(0, |w| w.local(u64::from(base.ids_offset))),
        ..base
    };
    let workgroup_size = u64::from(gpu::workgroup_size(ctx));
    let shader = if vec4 { "rope vec4" } else { "rope" };
    let angles = ctx.pipeline(
        &gpu::key(shader, "angles", workgroup_size as u32, &[dtype]),
        || compose(dtype, vec4),
    )?;
    let rotate = ctx.pipeline(
        &gpu::key(shader, "rotate_heads", workgroup_size as u32, &[dtype]),
        || compose(dtype, vec4),
    )?;
    let uniform = gpu::uniform(ctx, "rope params", &uniform);
    let turns = turns_buffer(ctx, frequencies);
    // A scratch table of (cos, sin) per token and pair: at most as large as Q, whose window
    // fits the binding limit, because every head has at least rotary_dim features.
    let half = (config.rotary_dim / 2) as u64;
    let table = gpu::storage_empty(
        ctx,
        "rope angle table",
        tokens as u64 * half * 8,
        wgpu::BufferUsages::empty(),
    );
    // A buffer bound read-write may not be bound again in the same dispatch, so the unused
    // K binding gets a placeholder of its own.
    let k_placeholder = gpu::storage_empty(ctx, "rope no k", 16, wgpu::BufferUsages::empty());
    let own_status;
    let status = match call.status {
        Some(status) => status.buffer(),
        None => {
            own_status =
                gpu::storage_empty(ctx, "rope unused status", 16, wgpu::BufferUsages::empty());
            &own_status
        }
    };
    let ids = || ids_window.map_or_else(|| placeholder.as_entire_binding(), |w| w.resource());
    let angle_resources = vec![
        (0, uniform.as_entire_binding()),
        (1, turns.as_entire_binding()),
        (2, ids()),
        (5, status.as_entire_binding()),
        (6, table.as_entire_binding()),
    ];
    let bind_group = gpu::bind_group_at(ctx, &angles, "rope angles", angle_resources);
    gpu::record_dispatch(
        ctx,
        encoder,
        &angles,
        &bind_group,
        "rope angles",
        (tokens as u64 * half).div_ceil(workgroup_size),
    )?;

    // Each rotate invocation takes four pairs when they divide into quads, else one.
    let group = if half.is_multiple_of(4) { 4 } else { 1 };
    let invocations =
        tokens as u64 * (shape.num_heads + shape.num_kv_heads) as u64 * (half / group);
    let rotate_resources = vec![
        (0, uniform.as_entire_binding()),
        (2, ids()),
        (3, q_window.resource()),
        (
            4,
            k_window.map_or_else(|| k_placeholder.as_entire_binding(), |w| w.resource()),
        ),
        (6, table.as_entire_binding()),
    ];
    let bind_group = gpu::bind_group_at(ctx, &rotate, "rope rotate", rotate_resources);
    gpu::record_dispatch(
        ctx,
        encoder,
        &rotate,
        &bind_group,
        "rope rotate",
        invocations.div_ceil(workgroup_size),
    )
}

/// Windows of Q and K, and whether they are bound as `array<vec4<f32>>`: for f32 in the half
/// layout with pairs in quads, four consecutive features move in one access when every
/// offset and stride is a multiple of 4 and the buffers allow 16-byte windows.
#[allow(clippy::type_complexity)]
fn bind_qk<'a>(
    ctx: &GpuContext,
    config: &RopeConfig,
    call: &KernelCall<'a>,
    dtype: DType,
    offsets: [u32; 2],
    strides: [[u32; 3]; 2],
    extents: [usize; 2],
) -> Result<(gpu::Window<'a>, Option<gpu::Window<'a>>, bool)> {
    let k = call.k.filter(|_| call.shape.num_kv_heads > 0);
    let aligned =
        offsets.iter().all(|o| o % 4 == 0) && strides.iter().flatten().all(|s| s % 4 == 0);
    if dtype == DType::F32
        && config.layout == RopeLayout::Half
        && (config.rotary_dim / 2).is_multiple_of(4)
        && aligned
    {
        let q = gpu::vec4_window(
            ctx,
            "q",
            call.q.view.buffer,
            call.q.view.offset,
            call.q.view.offset + extents[0] as u64,
        )?;
        let k_window = match k {
            Some(k) => gpu::vec4_window(
                ctx,
                "k",
                k.view.buffer,
                k.view.offset,
                k.view.offset + extents[1] as u64,
            )?
            .map(Some),
            None => Some(None),
        };
        if let (Some(q), Some(k_window)) = (q, k_window) {
            return Ok((q, k_window, true));
        }
    }
    let size = dtype.size();
    let q = gpu::window(
        ctx,
        "q",
        call.q.view.buffer,
        call.q.view.offset,
        call.q.view.offset + extents[0] as u64,
        size,
    )?;
    let k_window = match k {
        Some(k) => Some(gpu::window(
            ctx,
            "k",
            k.view.buffer,
            k.view.offset,
            k.view.offset + extents[1] as u64,
            size,
        )?),
        None => None,
    };
    Ok((q, k_window, false))
}

/// Elements from a heads view's first element to one past its last.
fn view_extent(view: &HeadsView<'_>, shape: &QkShape, heads: usize) -> Result<usize> {
    let strides = view
        .strides
        .unwrap_or_else(|| shape.layout.strides(shape.seq_len, heads, shape.head_dim));
    Ok(heads_extent(
        "view",
        [shape.batch, shape.seq_len, heads],
        strides,
        shape.head_dim,
    )?
    .unwrap_or(0))
}

/// Elements of the id buffer the call reads, from its offset.
fn ids_extent(shape: &QkShape, strides: IdStrides, axes: u32) -> u64 {
    let last_token = (shape.batch.max(1) - 1) as u64 * u64::from(strides.batch)
        + (shape.seq_len.max(1) - 1) as u64 * u64::from(strides.token);
    last_token + (u64::from(axes) - 1) * u64::from(strides.axis) + 1
}

/// The same call restricted to sequence `b`, tokens `tokens` and, for Q-only calls, query
/// heads `heads`, with explicit strides so the sub-views keep the original layout.
fn sub_call<'a>(
    call: &KernelCall<'a>,
    b: usize,
    tokens: std::ops::Range<usize>,
    heads: std::ops::Range<usize>,
) -> KernelCall<'a> {
    let shape = call.shape;
    let shift = |view: HeadsView<'a>, heads_total: usize, first_head: usize| {
        let strides = view.strides.unwrap_or_else(|| {
            shape
                .layout
                .strides(shape.seq_len, heads_total, shape.head_dim)
        });
        let offset = view.view.offset
            + (b * strides[0] + tokens.start * strides[1] + first_head * strides[2]) as u64;
        HeadsView {
            view: crate::tensor::TensorView {
                offset,
                ..view.view
            },
            strides: Some(strides),
        }
    };
    let positions = match call.positions {
        PositionSource::Arithmetic { start, step } => PositionSource::Arithmetic {
            start: start.wrapping_add(tokens.start as u32 * step),
            step,
        },
        PositionSource::Ids {
            buffer,
            offset,
            strides,
            axes,
        } => PositionSource::Ids {
            buffer,
            offset: offset + b as u32 * strides.batch + tokens.start as u32 * strides.token,
            strides,
            axes,
        },
    };
    KernelCall {
        shape: QkShape {
            batch: 1,
            seq_len: tokens.len(),
            num_heads: heads.len(),
            ..shape
        },
        positions,
        q: shift(call.q, shape.num_heads, heads.start),
        k: call.k.map(|k| shift(k, shape.num_kv_heads, 0)),
        ..*call
    }
}

/// Records a call whose tensors do not fit one binding as several smaller calls: token
/// ranges of each sequence, or for a single token that does not fit, Q and K separately in
/// ranges of heads.
fn record_split(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    config: &RopeConfig,
    frequencies: &RopeFrequencies,
    call: &KernelCall<'_>,
    size: u64,
) -> Result<()> {
    let shape = call.shape;
    if shape.num_kv_heads > 0 {
        if let Some(k) = call.k {
            // Q and K separately first: each then only needs its own window to fit.
            let q_only = KernelCall {
                k: None,
                shape: QkShape {
                    num_kv_heads: 0,
                    ..shape
                },
                ..*call
            };
            let k_only = KernelCall {
                q: k,
                k: None,
                shape: QkShape {
                    num_heads: shape.num_kv_heads,
                    num_kv_heads: 0,
                    ..shape
                },
                ..*call
            };
            record_kernel(ctx, encoder, config, frequencies, &q_only)?;
            return record_kernel(ctx, encoder, config, frequencies, &k_only);
        }
    }
    let strides = call.q.strides.unwrap_or_else(|| {
        shape
            .layout
            .strides(shape.seq_len, shape.num_heads, shape.head_dim)
    });
    let usable = (gpu::rows_per_window(ctx, 1, 1)) / size;
    let one_token = view_extent(
        &call.q,
        &QkShape {
            batch: 1,
            seq_len: 1,
            ..shape
        },
        shape.num_heads,
    )? as u64;
    if one_token <= usable {
        // Tokens per call: (T - 1) * seq_stride + one_token <= usable.
        let per_call = ((usable - one_token) / (strides[1] as u64).max(1) + 1)
            .min(shape.seq_len as u64) as usize;
        for b in 0..shape.batch {
            for first in (0..shape.seq_len).step_by(per_call) {
                let tokens = first..(first + per_call).min(shape.seq_len);
                record_kernel(
                    ctx,
                    encoder,
                    config,
                    frequencies,
                    &sub_call(call, b, tokens, 0..shape.num_heads),
                )?;
            }
        }
        return Ok(());
    }
    let head_bytes = shape.head_dim as u64 * size;
    if (shape.head_dim as u64) > usable {
        return Err(gpu::row_too_large(ctx, "head", head_bytes));
    }
    // Heads per call for one token: (H - 1) * head_stride + head_dim <= usable.
    let per_call = ((usable - shape.head_dim as u64) / (strides[2] as u64).max(1) + 1) as usize;
    for b in 0..shape.batch {
        for t in 0..shape.seq_len {
            for first in (0..shape.num_heads).step_by(per_call) {
                let heads = first..(first + per_call).min(shape.num_heads);
                record_kernel(
                    ctx,
                    encoder,
                    config,
                    frequencies,
                    &sub_call(call, b, t..t + 1, heads),
                )?;
            }
        }
    }
    Ok(())
}

/// Records the `tables` entry point for one-axis positions into `encoder`, writing
/// `[seq_len, rotary_dim]` cos and sin tables into `cos` and `sin`.
pub(super) fn record_tables(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    config: &RopeConfig,
    frequencies: &RopeFrequencies,
    positions: &PositionSource<'_>,
    seq_len: usize,
    [cos, sin]: [&wgpu::Buffer; 2],
) -> Result<()> {
    let half = config.rotary_dim / 2;
    let uniform = RopeUniform {
        tokens: seq_len as u32,
        seq_len: seq_len as u32,
        ..base_uniform(config, frequencies, positions, [half, half], 1.0)
    };
    let workgroup_size = gpu::workgroup_size(ctx);
    let key = gpu::key("rope", "tables", workgroup_size, &[DType::F32]);
    let pipeline = ctx.pipeline(&key, || source(DType::F32))?;
    let uniform = gpu::uniform(ctx, "rope tables params", &uniform);
    let turns = turns_buffer(ctx, frequencies);
    let placeholder = gpu::storage_empty(ctx, "rope placeholder", 16, wgpu::BufferUsages::empty());
    let bind_group = gpu::bind_group(
        ctx,
        &pipeline,
        "rope tables",
        &[
            &uniform,
            &turns,
            positions.buffer().unwrap_or(&placeholder),
            cos,
            sin,
        ],
    );
    let workgroups = (seq_len * half).div_ceil(workgroup_size as usize) as u64;
    gpu::record_dispatch(
        ctx,
        encoder,
        &pipeline,
        &bind_group,
        "rope tables",
        workgroups,
    )
}
