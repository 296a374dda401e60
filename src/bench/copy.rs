//! The copy kernels of `shaders/copy.wgsl`: the bandwidth baseline of the GPU rows.

use crate::bench::{gpu_cases, timer, BenchOptions, Measurement};
use crate::context::{GpuContext, PipelineKey};
use crate::error::Result;
use crate::gpu;
use crate::tensor::DType;

const SOURCE: &str = include_str!("../../shaders/copy.wgsl");

/// Invocations per workgroup; the element-wise kernels of the crate use the same.
const WORKGROUP_SIZE: u32 = gpu::WORKGROUP_SIZE;

/// Mirrors `Params` in `shaders/copy.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct CopyUniform {
    count: u32,
    _pad: [u32; 3],
}

/// One entry point of the copy shader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CopyKernel {
    /// One f32 per invocation.
    Scalar,
    /// One vec4<f32> per invocation.
    Vector,
}

impl CopyKernel {
    fn entry_point(self) -> &'static str {
        match self {
            CopyKernel::Scalar => "copy_f32",
            CopyKernel::Vector => "copy_vec4",
        }
    }

    fn element_bytes(self) -> u64 {
        match self {
            CopyKernel::Scalar => 4,
            CopyKernel::Vector => 16,
        }
    }
}

/// A copy between two buffers, split into chunks that each fit one storage binding, with
/// every bind group created up front so that recording costs almost nothing.
struct CopyPlan {
    pipeline: wgpu::ComputePipeline,
    /// Bind group and workgroup grid of each chunk.
    chunks: Vec<(wgpu::BindGroup, (u32, u32))>,
}

impl CopyPlan {
    fn new(
        ctx: &GpuContext,
        kernel: CopyKernel,
        source: &wgpu::Buffer,
        destination: &wgpu::Buffer,
        bytes: u64,
    ) -> Result<Self> {
        let key = PipelineKey {
            shader: "copy",
            entry_point: kernel.entry_point(),
            constants: vec![("WORKGROUP_SIZE", f64::from(WORKGROUP_SIZE).to_bits())],
            dtypes: vec![DType::F32],
        };
        let pipeline = ctx.pipeline(&key, || SOURCE.to_owned())?;
        let (first_binding, second_binding) = match kernel {
            CopyKernel::Scalar => (1, 2),
            CopyKernel::Vector => (3, 4),
        };

        let mut chunks = Vec::new();
        let chunk_bytes = max_chunk_bytes(ctx);
        let mut offset = 0;
        while offset < bytes {
            let size = chunk_bytes.min(bytes - offset);
            let count = size / kernel.element_bytes();
            let uniform = gpu::uniform(
                ctx,
                "copy params",
                &CopyUniform {
                    count: count as u32,
                    _pad: [0; 3],
                },
            );
            let range = |buffer| {
                wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer,
                    offset,
                    size: wgpu::BufferSize::new(size),
                })
            };
            let bind_group = ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(kernel.entry_point()),
                layout: &pipeline.get_bind_group_layout(0),
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: uniform.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: first_binding,
                        resource: range(source),
                    },
                    wgpu::BindGroupEntry {
                        binding: second_binding,
                        resource: range(destination),
                    },
                ],
            });
            let grid = gpu::grid(ctx, count.div_ceil(u64::from(WORKGROUP_SIZE)))?;
            chunks.push((bind_group, grid));
            offset += size;
        }
        Ok(Self { pipeline, chunks })
    }

    fn record(&self, encoder: &mut wgpu::CommandEncoder) {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("copy"),
            timestamp_writes: None,
        });
        pass.set_pipeline(&self.pipeline);
        for (bind_group, (x, y)) in &self.chunks {
            pass.set_bind_group(0, bind_group, &[]);
            pass.dispatch_workgroups(*x, *y, 1);
        }
    }
}

/// Returns the largest chunk that one binding may hold: a multiple of 16 bytes (one vec4)
/// and of the storage offset alignment, within the storage binding limit, and at most
/// 2^31 bytes so that the f32 element count fits u32.
fn max_chunk_bytes(ctx: &GpuContext) -> u64 {
    let limits = ctx.device().limits();
    let alignment = u64::from(limits.min_storage_buffer_offset_alignment).max(16);
    let limit = limits.max_storage_buffer_binding_size.min(1 << 31);
    (limit / alignment * alignment).max(alignment)
}

/// Measures `copy_f32` and `copy_vec4` moving `bytes` bytes: half read, half written, each
/// half rounded up to a whole vec4.
pub(crate) fn measure_both(
    ctx: &GpuContext,
    bytes: u64,
    options: &BenchOptions,
) -> Result<[Measurement; 2]> {
    let copy_bytes = (bytes / 2).max(16).next_multiple_of(16);
    timer::with_error_scopes(ctx, "copy benchmark", || {
        let usage = wgpu::BufferUsages::STORAGE;
        let source = gpu::storage_init(
            ctx,
            "copy source",
            bytemuck::cast_slice(&gpu_cases::pattern((copy_bytes / 4) as usize, 7)),
            wgpu::BufferUsages::empty(),
        );
        let destination = ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("copy destination"),
            size: copy_bytes,
            usage,
            mapped_at_creation: false,
        });
        let measure = |kernel: CopyKernel| -> Result<Measurement> {
            let plan = CopyPlan::new(ctx, kernel, &source, &destination, copy_bytes)?;
            gpu_cases::time_plain(
                ctx,
                kernel.entry_point(),
                &format!("{copy_bytes} bytes"),
                2 * copy_bytes,
                options,
                |encoder| {
                    plan.record(encoder);
                    Ok(())
                },
            )
        };
        Ok([measure(CopyKernel::Scalar)?, measure(CopyKernel::Vector)?])
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn copy_shader_validates() {
        let module = naga::front::wgsl::parse_str(super::SOURCE).expect("copy.wgsl parses");
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::empty(),
        )
        .validate(&module)
        .expect("copy.wgsl validates");
        let entry_points: Vec<_> = module
            .entry_points
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(entry_points, ["copy_f32", "copy_vec4"]);
    }
}
