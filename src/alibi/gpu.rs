//! GPU path of the ALiBi bias (`shaders/alibi.wgsl`).

use crate::alibi::{Alibi, AlibiBias};
use crate::context::GpuContext;
use crate::error::{checked_product, Error, Result};
use crate::gpu::{self, TensorBinding};
use crate::tensor::{DType, Element, TensorView};

/// Mirrors `Params` in `shaders/alibi.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct AlibiUniform {
    heads: u32,
    q_len: u32,
    kv_len: u32,
    q_offset: i32,
    symmetric: u32,
    accumulate: u32,
    out_offset: u32,
    row_base: u32,
    rows: u32,
    _pad: [u32; 3],
}

/// The kernel with the declaration of its output for `dtype`.
pub(crate) fn source(dtype: DType) -> String {
    let tensors = [TensorBinding {
        name: "out",
        binding: 2,
        dtype,
        writable: true,
    }];
    [
        gpu::tensor_declarations(&tensors).as_str(),
        include_str!("../../shaders/alibi.wgsl"),
    ]
    .concat()
}

/// Records the bias `[num_heads, q_len, kv_len]` into `target` (written, or added when
/// `accumulate`); query row `i` has position `q_offset + i`.
///
/// # Errors
/// Invalid ALiBi settings, a target too small, positions outside i32, or a binding past
/// the device limit.
#[allow(clippy::too_many_arguments)]
pub fn record(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    alibi: &Alibi,
    q_len: usize,
    kv_len: usize,
    q_offset: i64,
    target: TensorView<'_>,
    accumulate: bool,
) -> Result<()> {
    let slopes: Vec<f32> = alibi.slopes()?.into_iter().map(|s| s as f32).collect();
    let elements = checked_product("bias", &[alibi.num_heads, q_len, kv_len])? as u64;
    gpu::require_dtype(ctx, target.dtype)?;
    gpu::check_view(
        "target",
        target.buffer,
        target.offset,
        elements,
        target.dtype.size(),
    )?;
    // Distances are formed in i32 in the shader.
    let q_offset_i32 = i32::try_from(q_offset)
        .map_err(|_| Error::shape("q_offset", q_offset, "must fit in i32"))?;
    let last_query = q_offset + q_len as i64;
    if last_query > i64::from(i32::MAX) || kv_len > i32::MAX as usize {
        return Err(Error::shape(
            "kv_len",
            kv_len,
            "positions must stay below 2^31",
        ));
    }
    if elements == 0 {
        return Ok(());
    }

    let workgroup_size = gpu::workgroup_size(ctx);
    let pipeline = ctx.pipeline(
        &gpu::key("alibi", "main", workgroup_size, &[target.dtype]),
        || source(target.dtype),
    )?;
    let slopes = gpu::storage_init(
        ctx,
        "alibi slopes",
        bytemuck::cast_slice(&slopes),
        wgpu::BufferUsages::empty(),
    );

    // Rows of kv_len biases are split so that each dispatch binds a window within the
    // binding limit.
    let kv = kv_len as u64;
    let rows = (alibi.num_heads * q_len) as u64;
    for chunk in gpu::row_chunks(ctx, "target", "bias", &target, rows, kv)? {
        let gpu::RowChunk {
            first_row,
            end_row,
            first,
            window,
        } = chunk;
        let uniform = AlibiUniform {
            heads: alibi.num_heads as u32,
            q_len: q_len as u32,
            kv_len: kv_len as u32,
            q_offset: q_offset_i32,
            symmetric: u32::from(alibi.bias == AlibiBias::Symmetric),
            accumulate: u32::from(accumulate),
            out_offset: window.local(first),
            row_base: first_row as u32,
            rows: (end_row - first_row) as u32,
            _pad: [0; 3],
        };
        let uniform = gpu::uniform(ctx, "alibi params", &uniform);
        let resources = vec![
            (0, uniform.as_entire_binding()),
            (1, slopes.as_entire_binding()),
            (2, window.resource()),
        ];
        let bind_group = gpu::bind_group_at(ctx, &pipeline, "alibi", resources);
        let invocations = (end_row - first_row) * kv;
        gpu::record_dispatch(
            ctx,
            encoder,
            &pipeline,
            &bind_group,
            "alibi",
            invocations.div_ceil(u64::from(workgroup_size)),
        )?;
    }
    Ok(())
}

/// Computes the bias tensor `[num_heads, q_len, kv_len]` on the GPU.
///
/// # Errors
/// As for [`record`], and [`Error::Gpu`] if wgpu fails.
pub fn bias<T: Element>(
    ctx: &GpuContext,
    alibi: &Alibi,
    q_len: usize,
    kv_len: usize,
    q_offset: i64,
) -> Result<Vec<T>> {
    alibi.slopes()?;
    gpu::require_dtype(ctx, T::DTYPE)?;
    let len = checked_product("bias", &[alibi.num_heads, q_len, kv_len])?;
    if len == 0 {
        return Ok(Vec::new());
    }
    let target = gpu::storage_empty(
        ctx,
        "alibi bias",
        len as u64 * T::DTYPE.size(),
        wgpu::BufferUsages::COPY_SRC,
    );
    gpu::submit_scoped(ctx, "alibi", |encoder| {
        record(
            ctx,
            encoder,
            alibi,
            q_len,
            kv_len,
            q_offset,
            TensorView::new(&target).with_dtype(T::DTYPE),
            false,
        )
    })?;
    gpu::read_elements(ctx, &target, len)
}
