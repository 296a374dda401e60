//! How a graphics application embeds posenc: it owns the wgpu device, renders with it, and
//! records posenc's attention kernel into the same command encoder as its render pass.
//!
//! ```text
//! cargo run --release --example embed [OUT.png]
//! ```
//!
//! The application creates its own device and buffers for Q, K and V. It records posenc's
//! materialising attention kernel (causal, sliding window and ALiBi) into its encoder, then
//! a render pass whose fragment shader reads the probabilities straight from posenc's output
//! buffer. The pass draws the four heads' maps into an offscreen texture, saved as a PNG.

use std::process::ExitCode;

use posenc::alibi::Alibi;
use posenc::attention::gpu::{record, AttentionBuffers};
use posenc::attention::{AttentionParams, AttentionShape};
use posenc::wgpu;
use posenc::wgpu::util::DeviceExt;
use posenc::{GpuContext, TensorView};
use rand::{Rng, SeedableRng};

/// Heads drawn side by side in a 2 x 2 grid, each as a SEQ x SEQ map scaled up by ZOOM.
const HEADS: u32 = 4;
const SEQ: u32 = 48;
const HEAD_DIM: u32 = 32;
const ZOOM: u32 = 4;
const SIZE: u32 = 2 * SEQ * ZOOM;

/// Draws the probabilities: pixel (x, y) shows head (x / half, y / half), query row y and
/// key x within it, through a perceptual colour ramp (dark blue to yellow).
const DRAW_WGSL: &str = "
struct Grid { seq: u32, size: u32 }
@group(0) @binding(0) var<uniform> grid: Grid;
@group(0) @binding(1) var<storage, read> probs: array<f32>;

@vertex
fn vertex(@builtin(vertex_index) index: u32) -> @builtin(position) vec4<f32> {
    // One triangle covering the whole target.
    let x = f32((index << 1u) & 2u) * 2.0 - 1.0;
    let y = f32(index & 2u) * 2.0 - 1.0;
    return vec4<f32>(x, y, 0.0, 1.0);
}

@fragment
fn fragment(@builtin(position) pixel: vec4<f32>) -> @location(0) vec4<f32> {
    let half = grid.size / 2u;
    let x = u32(pixel.x);
    let y = u32(pixel.y);
    let head = (y / half) * 2u + x / half;
    let row = (y % half) * grid.seq / half;
    let key = (x % half) * grid.seq / half;
    let p = probs[(head * grid.seq + row) * grid.seq + key];
    // A square root spreads the small probabilities of long rows over the ramp.
    let t = sqrt(clamp(p, 0.0, 1.0));
    let low = vec3<f32>(0.27, 0.00, 0.33);
    let mid = vec3<f32>(0.13, 0.57, 0.55);
    let high = vec3<f32>(0.99, 0.91, 0.14);
    let colour = select(mix(mid, high, (t - 0.5) * 2.0), mix(low, mid, t * 2.0), t < 0.5);
    return vec4<f32>(colour, 1.0);
}
";

/// Creates the application's own device with plain wgpu.
fn application_device() -> Result<(wgpu::Device, wgpu::Queue), String> {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter =
        pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
            .map_err(|e| format!("no GPU adapter: {e}"))?;
    pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default()))
        .map_err(|e| format!("device request failed: {e}"))
}

fn random_buffer(device: &wgpu::Device, label: &str, seed: u64, len: u32) -> wgpu::Buffer {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let values: Vec<f32> = (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some(label),
        contents: bytemuck::cast_slice(&values),
        usage: wgpu::BufferUsages::STORAGE,
    })
}

fn draw_pipeline(device: &wgpu::Device) -> wgpu::RenderPipeline {
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("draw probabilities"),
        source: wgpu::ShaderSource::Wgsl(DRAW_WGSL.into()),
    });
    device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
        label: Some("draw probabilities"),
        layout: None,
        vertex: wgpu::VertexState {
            module: &module,
            entry_point: Some("vertex"),
            compilation_options: Default::default(),
            buffers: &[],
        },
        primitive: wgpu::PrimitiveState::default(),
        depth_stencil: None,
        multisample: wgpu::MultisampleState::default(),
        fragment: Some(wgpu::FragmentState {
            module: &module,
            entry_point: Some("fragment"),
            compilation_options: Default::default(),
            targets: &[Some(wgpu::ColorTargetState {
                format: wgpu::TextureFormat::Rgba8Unorm,
                blend: None,
                write_mask: wgpu::ColorWrites::ALL,
            })],
        }),
        multiview_mask: None,
        cache: None,
    })
}

fn run(out_path: &str) -> Result<(), String> {
    let (device, queue) = application_device()?;
    let ctx = GpuContext::from_device(device.clone(), queue.clone());
    println!("Adapter: {}", ctx.describe());

    // The application's buffers: Q, K, V in [batch, heads, seq, head_dim] and posenc's outputs.
    let shape = AttentionShape::new(
        1,
        HEADS as usize,
        HEADS as usize,
        SEQ as usize,
        SEQ as usize,
        HEAD_DIM as usize,
    );
    let elements = HEADS * SEQ * HEAD_DIM;
    let (q, k, v) = (
        random_buffer(&device, "q", 1, elements),
        random_buffer(&device, "k", 2, elements),
        random_buffer(&device, "v", 3, elements),
    );
    let storage = |label, bytes: u32| {
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: u64::from(bytes),
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        })
    };
    let out = storage("out", elements * 4);
    let lse = storage("lse", HEADS * SEQ * 4);
    let probs = storage("probs", HEADS * SEQ * SEQ * 4);
    let params = AttentionParams {
        causal: true,
        window: Some(32),
        alibi: Some(Alibi::new(HEADS as usize)),
        ..Default::default()
    };

    let target = device.create_texture(&wgpu::TextureDescriptor {
        label: Some("attention map"),
        size: wgpu::Extent3d {
            width: SIZE,
            height: SIZE,
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba8Unorm,
        usage: wgpu::TextureUsages::RENDER_ATTACHMENT | wgpu::TextureUsages::COPY_SRC,
        view_formats: &[],
    });
    let pipeline = draw_pipeline(&device);
    let grid = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("grid"),
        contents: bytemuck::cast_slice(&[SEQ, SIZE]),
        usage: wgpu::BufferUsages::UNIFORM,
    });
    let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("draw probabilities"),
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[
            wgpu::BindGroupEntry {
                binding: 0,
                resource: grid.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 1,
                resource: probs.as_entire_binding(),
            },
        ],
    });
    // Rows of the copy must be 256-byte aligned: SIZE * 4 bytes is a multiple of 256.
    let readback = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("pixels"),
        size: u64::from(SIZE * SIZE * 4),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });

    // One encoder: posenc's compute pass, then the application's render pass and copy.
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
        label: Some("frame"),
    });
    let buffers = AttentionBuffers {
        q: TensorView::new(&q),
        k: TensorView::new(&k),
        v: TensorView::new(&v),
        out: TensorView::new(&out),
        lse: &lse,
        probs: Some(TensorView::new(&probs)),
        q_strides: None,
        kv_strides: None,
        out_strides: None,
    };
    record(&ctx, &mut encoder, &shape, &params, &buffers).map_err(|e| e.to_string())?;
    {
        let view = target.create_view(&wgpu::TextureViewDescriptor::default());
        let mut pass = encoder.begin_render_pass(&wgpu::RenderPassDescriptor {
            label: Some("draw probabilities"),
            color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                view: &view,
                depth_slice: None,
                resolve_target: None,
                ops: wgpu::Operations {
                    load: wgpu::LoadOp::Clear(wgpu::Color::BLACK),
                    store: wgpu::StoreOp::Store,
                },
            })],
            depth_stencil_attachment: None,
            timestamp_writes: None,
            occlusion_query_set: None,
            multiview_mask: None,
        });
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.draw(0..3, 0..1);
    }
    encoder.copy_texture_to_buffer(
        wgpu::TexelCopyTextureInfo {
            texture: &target,
            mip_level: 0,
            origin: wgpu::Origin3d::ZERO,
            aspect: wgpu::TextureAspect::All,
        },
        wgpu::TexelCopyBufferInfo {
            buffer: &readback,
            layout: wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(SIZE * 4),
                rows_per_image: Some(SIZE),
            },
        },
        wgpu::Extent3d {
            width: SIZE,
            height: SIZE,
            depth_or_array_layers: 1,
        },
    );
    queue.submit([encoder.finish()]);

    let pixels = map_pixels(&device, &readback)?;
    save_png(out_path, &pixels)?;
    println!("Saved {SIZE} x {SIZE} attention map of {HEADS} heads (causal, window 32, ALiBi) to {out_path}");
    Ok(())
}

/// Maps the readback buffer and copies the pixels out.
fn map_pixels(device: &wgpu::Device, readback: &wgpu::Buffer) -> Result<Vec<u8>, String> {
    let (sender, receiver) = std::sync::mpsc::channel();
    readback
        .slice(..)
        .map_async(wgpu::MapMode::Read, move |result| {
            let _ = sender.send(result);
        });
    device
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| format!("device poll failed: {e}"))?;
    receiver
        .recv()
        .map_err(|e| format!("map callback dropped: {e}"))?
        .map_err(|e| format!("map failed: {e}"))?;
    let pixels = readback
        .slice(..)
        .get_mapped_range()
        .map_err(|e| format!("mapped range failed: {e}"))?
        .to_vec();
    readback.unmap();
    Ok(pixels)
}

fn save_png(path: &str, rgba: &[u8]) -> Result<(), String> {
    let file = std::fs::File::create(path).map_err(|e| format!("cannot create {path}: {e}"))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), SIZE, SIZE);
    encoder.set_color(png::ColorType::Rgba);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder
        .write_header()
        .map_err(|e| format!("cannot write {path}: {e}"))?;
    writer
        .write_image_data(rgba)
        .map_err(|e| format!("cannot write {path}: {e}"))
}

fn main() -> ExitCode {
    let out_path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "embed.png".to_string());
    match run(&out_path) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
