//! Shifting cached keys by a signed position delta on the GPU; the math is in
//! [`crate::rope::shift`].

use super::kernel::{self, KernelCall, PositionSource};
use super::HeadsView;
use crate::context::GpuContext;
use crate::error::{Error, Result};
use crate::gpu;
use crate::rope::shift::{check_shift, CacheRegion};
use crate::rope::{RopeConfig, RopeFrequencies};
use crate::tensor::{DType, Element, TensorView};

/// One shift of cached keys in a caller's buffer.
#[derive(Clone, Copy, Debug)]
pub struct ShiftDispatch<'a> {
    /// Placement of the keys in `buffer`, counted in elements of `dtype`.
    pub region: CacheRegion,
    /// The buffer holding the cache; it needs `STORAGE` usage.
    pub buffer: &'a wgpu::Buffer,
    /// Storage type of the cache.
    pub dtype: DType,
    /// Positions to move the keys by; negative moves them back.
    pub delta: i64,
}

/// Records a shift of the keys in `dispatch.region` by `dispatch.delta` positions into
/// `encoder`: each pair rotates by `delta * inv_freq[i]`, with no attention factor. Only
/// the features of the region's heads are written; a delta of 0 records nothing.
///
/// The kernel rotates by the angle of `|delta|` and negates sin for a negative delta, so a
/// negative shift is as exact as a positive one.
///
/// # Errors
/// As for [`crate::rope::shift::shift_cpu`] with the buffer in place of the slice, and
/// [`Error::Unsupported`] for f16 without `SHADER_F16`.
pub fn record_shift(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    config: &RopeConfig,
    frequencies: &RopeFrequencies,
    dispatch: &ShiftDispatch<'_>,
) -> Result<()> {
    let region = &dispatch.region;
    let magnitude = check_shift(config, frequencies, region, dispatch.delta)?;
    gpu::require_dtype(ctx, dispatch.dtype)?;
    let Some(end) = region.end()? else {
        return Ok(());
    };
    gpu::check_view(
        "k",
        dispatch.buffer,
        region.offset as u64,
        (end - region.offset) as u64,
        dispatch.dtype.size(),
    )?;
    if dispatch.delta == 0 {
        return Ok(());
    }

    let half = config.rotary_dim / 2;
    let call = KernelCall {
        shape: region.qk_shape(),
        positions: PositionSource::Arithmetic {
            start: magnitude,
            step: 0,
        },
        axis_starts: [half, half],
        q: HeadsView {
            view: TensorView::at(dispatch.buffer, region.offset as u64).with_dtype(dispatch.dtype),
            strides: Some(region.strides),
        },
        k: None,
        position_limit: None,
        status: None,
        direction: if dispatch.delta < 0 { -1.0 } else { 1.0 },
    };
    let unscaled = RopeFrequencies {
        inv_freq: frequencies.inv_freq.clone(),
        attention_factor: 1.0,
    };
    kernel::record_kernel(ctx, encoder, config, &unscaled, &call)
}

/// Shifts the keys in `region` of a copy of `data` by `delta` positions on the GPU and
/// returns the whole copy. Elements outside the region's heads come back bit for bit.
///
/// # Errors
/// As for [`record_shift`], [`Error::BufferTooSmall`] when the region reaches past `data`,
/// and [`Error::Gpu`] if wgpu fails.
pub fn shift<T: Element>(
    ctx: &GpuContext,
    config: &RopeConfig,
    frequencies: &RopeFrequencies,
    region: &CacheRegion,
    delta: i64,
    data: &[T],
) -> Result<Vec<T>> {
    gpu::require_dtype(ctx, T::DTYPE)?;
    check_shift(config, frequencies, region, delta)?;
    match region.end()? {
        Some(end) if end > data.len() => {
            return Err(Error::BufferTooSmall {
                name: "k",
                offset: region.offset as u64,
                end: end as u64,
                capacity: data.len() as u64,
            })
        }
        None => return Ok(data.to_vec()),
        Some(_) if delta == 0 => return Ok(data.to_vec()),
        Some(_) => {}
    }

    let buffer = gpu::storage_init(
        ctx,
        "rope shifted cache",
        bytemuck::cast_slice(data),
        wgpu::BufferUsages::COPY_SRC,
    );
    let dispatch = ShiftDispatch {
        region: *region,
        buffer: &buffer,
        dtype: T::DTYPE,
        delta,
    };
    gpu::submit_scoped(ctx, "rope shift", |encoder| {
        record_shift(ctx, encoder, config, frequencies, &dispatch)
    })?;
    gpu::read_elements(ctx, &buffer, data.len())
}
