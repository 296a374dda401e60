//! Positions for the kernels: uniform fields, uploaded ids and the out-of-range counter.

use super::{check_view, read_u32, storage_init, window, Window};
use crate::context::GpuContext;
use crate::error::{Error, Result};

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
