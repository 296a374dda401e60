//! Binding windows: the part of a buffer a dispatch binds, within the device's limits.

use crate::context::GpuContext;
use crate::error::{Error, Result};

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

    /// Returns the index of absolute element `element` within the window, for the shader.
    pub(crate) fn local(&self, element: u64) -> u32 {
        (element - self.first) as u32
    }
}

/// Returns the binding window covering elements `start..end` of `buffer`: the start rounded down to
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

/// Returns the window covering elements `start..end` of an f32 tensor bound as `array<vec4<f32>>`,
/// or `None` when `start` is not a multiple of 4 elements or the buffer cannot supply a
/// size rounded up to 16 bytes.
pub(crate) fn vec4_window<'a>(
    ctx: &GpuContext,
    name: &'static str,
    buffer: &'a wgpu::Buffer,
    start: u64,
    end: u64,
) -> Result<Option<Window<'a>>> {
    let limits = ctx.device().limits();
    let alignment = u64::from(limits.min_storage_buffer_offset_alignment).max(16);
    if !start.is_multiple_of(4) || !alignment.is_multiple_of(16) {
        return Ok(None);
    }
    let offset = start * 4 / alignment * alignment;
    let end_bytes = (end * 4).next_multiple_of(16).max(offset + 16);
    if end_bytes > buffer.size() {
        return Ok(None);
    }
    let size = end_bytes - offset;
    if size > limits.max_storage_buffer_binding_size {
        return Err(Error::Unsupported {
            what: format!(
                "binding {size} bytes of {name} (max_storage_buffer_binding_size is {})",
                limits.max_storage_buffer_binding_size
            ),
            hint:
                "split the call into smaller tensors, or use a device with a larger binding limit"
                    .into(),
        });
    }
    Ok(Some(Window {
        buffer,
        offset,
        size,
        first: offset / 4,
    }))
}

/// Counts how many consecutive rows of `row_bytes`, `stride_bytes` apart, fit in one binding window
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

/// Counts how many consecutive rows of `row_bytes`, `stride_bytes` apart, fit in one binding window
/// that must start at byte `start` (0 when not even one does).
pub(crate) fn rows_fitting(ctx: &GpuContext, start: u64, stride_bytes: u64, row_bytes: u64) -> u64 {
    let limits = ctx.device().limits();
    let alignment = u64::from(limits.min_storage_buffer_offset_alignment).max(4);
    // The window starts at the aligned byte below `start`, and its end is rounded up to 4.
    let lead = start % alignment;
    let tail = if (start + row_bytes).is_multiple_of(4) && stride_bytes.is_multiple_of(4) {
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

/// One dispatch's share of a tensor of contiguous rows split to fit the binding limit.
pub(crate) struct RowChunk<'a> {
    /// First row of the chunk, counted from the tensor's first row.
    pub first_row: u64,
    /// One past the chunk's last row.
    pub end_row: u64,
    /// Absolute element index of the chunk's first element.
    pub first: u64,
    /// The binding window over the chunk's rows.
    pub window: Window<'a>,
}

/// Splits `rows` contiguous rows of `row_len` elements, starting at `view`, into chunks whose
/// windows each fit one binding.
///
/// # Errors
/// [`Error::Unsupported`] naming `row_name` when a single row does not fit.
pub(crate) fn row_chunks<'a>(
    ctx: &GpuContext,
    name: &'static str,
    row_name: &'static str,
    view: &crate::tensor::TensorView<'a>,
    rows: u64,
    row_len: u64,
) -> Result<Vec<RowChunk<'a>>> {
    let (buffer, offset, element_bytes) = (view.buffer, view.offset, view.dtype.size());
    let row_bytes = row_len * element_bytes;
    let mut chunks = Vec::new();
    let mut first_row = 0;
    while first_row < rows {
        let first = offset + first_row * row_len;
        let fitting = rows_fitting(ctx, first * element_bytes, row_bytes, row_bytes);
        if fitting == 0 {
            return Err(row_too_large(ctx, row_name, row_bytes));
        }
        let end_row = (first_row + fitting).min(rows);
        let window = window(
            ctx,
            name,
            buffer,
            first,
            offset + end_row * row_len,
            element_bytes,
        )?;
        chunks.push(RowChunk {
            first_row,
            end_row,
            first,
            window,
        });
        first_row = end_row;
    }
    Ok(chunks)
}

/// Builds the error for a row that does not fit in one binding window.
pub(crate) fn row_too_large(ctx: &GpuContext, name: &'static str, row_bytes: u64) -> Error {
    Error::Unsupported {
        what: format!(
            "a single {name} row of {row_bytes} bytes in one binding (max_storage_buffer_binding_size is {})",
            ctx.device().limits().max_storage_buffer_binding_size
        ),
        hint: "use a device with a larger binding limit".into(),
    }
}
