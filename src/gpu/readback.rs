//! Copying results back to the host: blocking and asynchronous.

use super::{check_extent, check_usage, submit_scoped};
use crate::context::GpuContext;
use crate::error::{Error, Result};
use crate::tensor::{Element, TensorView};

/// A copy into a mappable staging buffer that has been submitted and asked to map.
struct PendingRead {
    staging: wgpu::Buffer,
    /// Bytes to skip at the start of the staging buffer (copies start 4-byte aligned).
    skip: usize,
    bytes: usize,
    mapped: futures::channel::oneshot::Receiver<Result<(), wgpu::BufferAsyncError>>,
}

/// Submits a copy of `bytes` bytes from byte `start` of `buffer` and requests the mapping.
fn start_read(
    ctx: &GpuContext,
    buffer: &wgpu::Buffer,
    start: u64,
    bytes: u64,
) -> Result<PendingRead> {
    // copy_buffer_to_buffer needs 4-byte aligned offsets and sizes.
    let aligned_start = start / wgpu::COPY_BUFFER_ALIGNMENT * wgpu::COPY_BUFFER_ALIGNMENT;
    let size = (start + bytes - aligned_start).next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT);
    let staging = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("posenc readback"),
        size,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    submit_scoped(ctx, "readback copy", |encoder| {
        encoder.copy_buffer_to_buffer(buffer, aligned_start, &staging, 0, size);
        Ok(())
    })?;

    let (sender, mapped) = futures::channel::oneshot::channel();
    staging
        .slice(..)
        .map_async(wgpu::MapMode::Read, move |result| {
            // A failed send only means the reader was dropped and nobody waits any more.
            let _ = sender.send(result);
        });
    Ok(PendingRead {
        staging,
        skip: (start - aligned_start) as usize,
        bytes: bytes as usize,
        mapped,
    })
}

impl PendingRead {
    /// Waits for the mapping and copies the bytes out.
    async fn finish(self) -> Result<Vec<u8>> {
        let mapped = self.mapped.await.map_err(|_| Error::Gpu {
            during: "readback",
            message: "the map callback was dropped before it ran (device lost?)".into(),
        })?;
        mapped.map_err(|e| Error::Gpu {
            during: "readback map",
            message: e.to_string(),
        })?;
        let view = self
            .staging
            .slice(..)
            .get_mapped_range()
            .map_err(|e| Error::Gpu {
                during: "readback view",
                message: e.to_string(),
            })?;
        let out = view[self.skip..self.skip + self.bytes].to_vec();
        drop(view);
        self.staging.unmap();
        Ok(out)
    }
}

/// Copies `bytes` bytes from byte `start` of `buffer` to the host, waiting for submitted
/// work and the mapping.
fn read_range(ctx: &GpuContext, buffer: &wgpu::Buffer, start: u64, bytes: u64) -> Result<Vec<u8>> {
    if bytes == 0 {
        return Ok(Vec::new());
    }
    let pending = start_read(ctx, buffer, start, bytes)?;
    ctx.device()
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| Error::Gpu {
            during: "device poll",
            message: e.to_string(),
        })?;
    pollster::block_on(pending.finish())
}

/// Reads `len` f32 values from the start of `buffer`.
pub(crate) fn read_f32(ctx: &GpuContext, buffer: &wgpu::Buffer, len: usize) -> Result<Vec<f32>> {
    read_elements(ctx, buffer, len)
}

/// Reads `len` u32 values from the start of `buffer`.
pub(crate) fn read_u32(ctx: &GpuContext, buffer: &wgpu::Buffer, len: usize) -> Result<Vec<u32>> {
    let bytes = read_range(ctx, buffer, 0, (len * 4) as u64)?;
    Ok(bytemuck::pod_collect_to_vec(&bytes))
}

/// Reads `len` elements of type `T` from the start of `buffer`.
pub(crate) fn read_elements<T: Element>(
    ctx: &GpuContext,
    buffer: &wgpu::Buffer,
    len: usize,
) -> Result<Vec<T>> {
    let bytes = read_range(ctx, buffer, 0, (len * std::mem::size_of::<T>()) as u64)?;
    Ok(bytemuck::pod_collect_to_vec(&bytes))
}

fn check_read<T: Element>(view: &TensorView<'_>, len: usize) -> Result<()> {
    if view.dtype != T::DTYPE {
        return Err(Error::shape(
            "view",
            0,
            format!(
                "the view holds {} but {} was requested; read it as its own type",
                view.dtype.name(),
                T::DTYPE.name()
            ),
        ));
    }
    check_usage(
        "view",
        view.buffer,
        wgpu::BufferUsages::COPY_SRC,
        "COPY_SRC",
    )?;
    check_extent(
        "view",
        view.buffer,
        view.offset,
        len as u64,
        view.dtype.size(),
    )
}

impl GpuContext {
    /// Copies the first `len` f32 values of `buffer` (which needs `COPY_SRC`) to the host,
    /// waiting for submitted work to finish.
    ///
    /// # Errors
    /// [`Error::InvalidBuffer`] without `COPY_SRC` usage, [`Error::BufferTooSmall`] when the
    /// buffer has fewer values, [`Error::Gpu`] when the copy or the mapping fails.
    pub fn read_f32(&self, buffer: &wgpu::Buffer, len: usize) -> Result<Vec<f32>> {
        self.read(TensorView::new(buffer), len)
    }

    /// Copies `len` elements of `view` (its buffer needs `COPY_SRC`) to the host, blocking
    /// until submitted work and the mapping finish.
    ///
    /// # Errors
    /// A view whose storage type is not `T` or that reaches past its buffer,
    /// [`Error::InvalidBuffer`] for a buffer without `COPY_SRC` usage, and [`Error::Gpu`]
    /// when the copy or the mapping fails.
    pub fn read<T: Element>(&self, view: TensorView<'_>, len: usize) -> Result<Vec<T>> {
        check_read::<T>(&view, len)?;
        let bytes = read_range(
            self,
            view.buffer,
            view.offset * view.dtype.size(),
            len as u64 * view.dtype.size(),
        )?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Copies `len` elements of `view` to the host asynchronously: the copy is submitted at
    /// once, and the future resolves when the mapping completes.
    ///
    /// On native backends wgpu runs mapping callbacks inside `Device::poll`, so something
    /// must poll the device (an event loop calling `ctx.device().poll(wgpu::PollType::Poll)`,
    /// or another thread) while the future is awaited; [`GpuContext::read`] polls itself.
    ///
    /// # Errors
    /// As for [`GpuContext::read`].
    pub async fn read_async<T: Element>(&self, view: TensorView<'_>, len: usize) -> Result<Vec<T>> {
        check_read::<T>(&view, len)?;
        if len == 0 {
            return Ok(Vec::new());
        }
        let pending = start_read(
            self,
            view.buffer,
            view.offset * view.dtype.size(),
            len as u64 * view.dtype.size(),
        )?;
        let bytes = pending.finish().await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }
}
