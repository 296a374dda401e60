//! GPU path of RoPE (`shaders/rope.wgsl`).

use crate::angle::turns_table;
use crate::context::GpuContext;
use crate::error::{check_len, checked_product, Error, Result};
use crate::gpu::{self, PositionBinding, StatusBuffer, TensorBinding, UploadedPositions};
use crate::rope::{
    check_frequencies, check_shape, QkShape, RopeConfig, RopeFrequencies, RopeLayout, RopeTables,
};
use crate::tensor::{DType, Element, GpuPositions, Positions, TensorView};

/// Mirrors `Params` in `shaders/rope.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct RopeUniform {
    tokens: u32,
    seq_len: u32,
    half_rotary: u32,
    rotary_dim: u32,
    pairing: u32,
    q_heads: u32,
    k_heads: u32,
    attention_factor: f32,
    direction: f32,
    start: u32,
    use_ids: u32,
    ids_batch_stride: u32,
    ids_offset: u32,
    position_limit: u32,
    has_limit: u32,
    q_offset: u32,
    q_batch_stride: u32,
    q_seq_stride: u32,
    q_head_stride: u32,
    k_offset: u32,
    k_batch_stride: u32,
    k_seq_stride: u32,
    k_head_stride: u32,
    _pad: u32,
}

/// The kernel with the angle helpers it calls and the declarations of Q and K for `dtype`.
pub(crate) fn source(dtype: DType) -> String {
    let tensors = [
        TensorBinding { name: "q", binding: 3, dtype, writable: true },
        TensorBinding { name: "k", binding: 4, dtype, writable: true },
    ];
    [
        gpu::tensor_declarations(&tensors).as_str(),
        include_str!("../../shaders/angle.wgsl"),
        include_str!("../../shaders/rope.wgsl"),
    ]
    .concat()
}

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
    /// Rotate by the negative angle: the gradient of RoPE with respect to its input.
    pub inverse: bool,
}

/// Validates a heads view and returns `(offset, strides)` for the shader.
fn heads_layout(
    name: &'static str,
    heads_view: &HeadsView<'_>,
    shape: &QkShape,
    heads: usize,
) -> Result<(u32, [u32; 3])> {
    let strides = heads_view
        .strides
        .unwrap_or_else(|| shape.layout.strides(shape.seq_len, heads, shape.head_dim));
    let count = checked_product(name, &[shape.batch, shape.seq_len, heads, shape.head_dim])?;
    if count == 0 {
        return Ok((0, [0; 3]));
    }
    // The element past the last one any invocation touches.
    let extent = [
        (shape.batch, strides[0]),
        (shape.seq_len, strides[1]),
        (heads, strides[2]),
    ]
    .iter()
    .try_fold(shape.head_dim, |acc, &(n, stride)| {
        (n - 1).checked_mul(stride).and_then(|v| v.checked_add(acc))
    })
    .ok_or_else(|| Error::shape(name, i64::MAX, "the strides overflow usize"))?;
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

/// Records RoPE on Q and K in the caller's buffers into `encoder`; nothing is submitted.
///
/// # Errors
/// Invalid config, frequencies or shape; views that do not fit their buffers; a position
/// buffer with a limit but no status buffer; bindings past the device limit.
pub fn record(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    config: &RopeConfig,
    frequencies: &RopeFrequencies,
    dispatch: &RopeDispatch<'_>,
) -> Result<()> {
    // WebGPU forbids binding one buffer read-write twice in a dispatch, so Q and K that share
    // a buffer (a fused QKV projection) are rotated by one dispatch each.
    if let Some(k) = dispatch
        .k
        .filter(|k| k.view.buffer == dispatch.q.view.buffer && dispatch.shape.num_kv_heads > 0)
    {
        let q_only = RopeDispatch {
            k: None,
            shape: QkShape {
                num_kv_heads: 0,
                ..dispatch.shape
            },
            ..*dispatch
        };
        let k_only = RopeDispatch {
            q: k,
            k: None,
            shape: QkShape {
                num_heads: dispatch.shape.num_kv_heads,
                num_kv_heads: 0,
                ..dispatch.shape
            },
            ..*dispatch
        };
        record(ctx, encoder, config, frequencies, &q_only)?;
        return record(ctx, encoder, config, frequencies, &k_only);
    }

    let shape = &dispatch.shape;
    check_shape(config, shape)?;
    check_frequencies(config, frequencies)?;
    let tokens = checked_product("tokens", &[shape.batch, shape.seq_len])?;
    let dtype = match (&dispatch.k, shape.num_kv_heads) {
        (Some(k), heads) if heads > 0 => gpu::common_dtype(&[("q", dispatch.q.view.dtype), ("k", k.view.dtype)])?,
        _ => dispatch.q.view.dtype,
    };
    gpu::require_dtype(ctx, dtype)?;
    let (q_offset, q_strides) = heads_layout("q", &dispatch.q, shape, shape.num_heads)?;
    let (k_offset, k_strides, k_buffer) = match (&dispatch.k, shape.num_kv_heads) {
        (_, 0) => (0, [0; 3], None),
        (Some(k), heads) => {
            let (offset, strides) = heads_layout("k", k, shape, heads)?;
            (offset, strides, Some(k.view.buffer))
        }
        (None, heads) => {
            return Err(Error::shape(
                "num_kv_heads",
                heads,
                "no K view was given; pass one or set num_kv_heads to 0",
            ))
        }
    };
    gpu::check_binding(ctx, "q", dispatch.q.view.buffer.size())?;
    if let Some(k) = k_buffer {
        gpu::check_binding(ctx, "k", k.size())?;
    }
    let PositionBinding {
        start,
        use_ids,
        ids_batch_stride,
        ids_offset,
        buffer: ids,
    } = gpu::position_binding(dispatch.positions, shape.batch, shape.seq_len)?;
    let has_limit = use_ids == 1 && dispatch.position_limit.is_some();
    if has_limit && dispatch.status.is_none() {
        return Err(Error::shape("status", 0, "a position limit on GPU positions needs a StatusBuffer to report positions out of range"));
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

    let uniform = RopeUniform {
        tokens: tokens as u32,
        seq_len: shape.seq_len as u32,
        half_rotary: (config.rotary_dim / 2) as u32,
        rotary_dim: config.rotary_dim as u32,
        pairing: layout_code(config.layout),
        q_heads: shape.num_heads as u32,
        k_heads: shape.num_kv_heads as u32,
        attention_factor: frequencies.attention_factor as f32,
        direction: if dispatch.inverse { -1.0 } else { 1.0 },
        start,
        use_ids,
        ids_batch_stride,
        ids_offset,
        position_limit: dispatch.position_limit.unwrap_or(u32::MAX),
        has_limit: u32::from(has_limit),
        q_offset,
        q_batch_stride: q_strides[0],
        q_seq_stride: q_strides[1],
        q_head_stride: q_strides[2],
        k_offset,
        k_batch_stride: k_strides[0],
        k_seq_stride: k_strides[1],
        k_head_stride: k_strides[2],
        _pad: 0,
    };
    let pipeline = ctx.pipeline(&gpu::key("rope", "apply", gpu::WORKGROUP_SIZE, &[dtype]), || source(dtype))?;
    let uniform = gpu::uniform(ctx, "rope params", &uniform);
    let turns = turns_buffer(ctx, frequencies);
    // A buffer bound read-write may not be bound again in the same dispatch, so the unused
    // id and K bindings get one placeholder each.
    let ids_placeholder = gpu::storage_empty(ctx, "rope no ids", 16, wgpu::BufferUsages::empty());
    let k_placeholder = gpu::storage_empty(ctx, "rope no k", 16, wgpu::BufferUsages::empty());
    let own_status;
    let status = match dispatch.status {
        Some(status) => status.buffer(),
        None => {
            own_status =
                gpu::storage_empty(ctx, "rope unused status", 16, wgpu::BufferUsages::empty());
            &own_status
        }
    };
    let bind_group = gpu::bind_group(
        ctx,
        &pipeline,
        "rope apply",
        &[
            &uniform,
            &turns,
            ids.unwrap_or(&ids_placeholder),
            dispatch.q.view.buffer,
            k_buffer.unwrap_or(&k_placeholder),
            status,
        ],
    );
    gpu::record_dispatch(
        ctx,
        encoder,
        &pipeline,
        &bind_group,
        "rope apply",
        tokens as u64,
    )
}

fn layout_code(layout: RopeLayout) -> u32 {
    match layout {
        RopeLayout::Half => 0,
        RopeLayout::Interleaved => 1,
    }
}

/// Rotates copies of `q` and `k` on the GPU and returns them `(q, k)`.
///
/// # Errors
/// As for [`crate::rope::apply_cpu`], and [`Error::Gpu`] if wgpu fails.
pub fn apply<T: Element>(
    ctx: &GpuContext,
    config: &RopeConfig,
    frequencies: &RopeFrequencies,
    shape: &QkShape,
    positions: Positions<'_>,
    q: &[T],
    k: &[T],
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
    let dispatch = RopeDispatch {
        shape: *shape,
        positions: uploaded.as_gpu(),
        q: HeadsView { view: TensorView::new(&q_buffer).with_dtype(T::DTYPE), strides: None },
        k: Some(HeadsView { view: TensorView::new(&k_buffer).with_dtype(T::DTYPE), strides: None }),
        position_limit: None,
        status: None,
        inverse: false,
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
/// Invalid config or positions, and [`Error::Gpu`] if wgpu fails.
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
    let PositionBinding {
        start,
        use_ids,
        ids_batch_stride,
        ids_offset,
        buffer: ids,
    } = gpu::position_binding(uploaded.as_gpu(), 1, seq_len)?;
    let uniform = RopeUniform {
        tokens: seq_len as u32,
        seq_len: seq_len as u32,
        half_rotary: (config.rotary_dim / 2) as u32,
        rotary_dim: config.rotary_dim as u32,
        pairing: layout_code(config.layout),
        attention_factor: frequencies.attention_factor as f32,
        direction: 1.0,
        start,
        use_ids,
        ids_batch_stride,
        ids_offset,
        ..RopeUniform::default()
    };
    let pipeline = ctx.pipeline(&gpu::key("rope", "tables", gpu::WORKGROUP_SIZE, &[DType::F32]), || source(DType::F32))?;
    let uniform = gpu::uniform(ctx, "rope tables params", &uniform);
    let turns = turns_buffer(ctx, frequencies);
    let placeholder = gpu::storage_empty(ctx, "rope placeholder", 16, wgpu::BufferUsages::empty());
    let usage = wgpu::BufferUsages::COPY_SRC;
    let cos = gpu::storage_empty(ctx, "rope cos", (len * 4) as u64, usage);
    let sin = gpu::storage_empty(ctx, "rope sin", (len * 4) as u64, usage);
    let bind_group = gpu::bind_group(
        ctx,
        &pipeline,
        "rope tables",
        &[&uniform, &turns, ids.unwrap_or(&placeholder), &cos, &sin],
    );
    let workgroups =
        (seq_len * config.rotary_dim / 2).div_ceil(gpu::WORKGROUP_SIZE as usize) as u64;
    gpu::submit_scoped(ctx, "rope tables", |encoder| {
        gpu::record_dispatch(
            ctx,
            encoder,
            &pipeline,
            &bind_group,
            "rope tables",
            workgroups,
        )
    })?;
    Ok(RopeTables {
        cos: gpu::read_f32(ctx, &cos, len)?,
        sin: gpu::read_f32(ctx, &sin, len)?,
    })
}
