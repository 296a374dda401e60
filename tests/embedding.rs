//! Embedding posenc in an application: a device the application owns, its buffers at
//! element offsets and strides (Q and K inside a fused QKV projection), asynchronous
//! readback, and one context shared by several threads.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{assert_bits_equal, assert_close, random_vec, Tolerance};
use posenc::rope::{self, gpu::HeadsView, gpu::RopeDispatch, QkShape, RopeConfig};
use posenc::{GpuContext, GpuPositions, Layout, Positions, TensorView};
use wgpu::util::DeviceExt;

/// GPU against the f64 CPU reference for values of order 1 (see tests/rope.rs).
const GPU_VS_CPU: Tolerance = Tolerance {
    abs: 1e-6,
    rel: 1e-6,
};

/// A device created with plain wgpu, as an application would, wrapped by posenc.
fn application_context() -> Option<GpuContext> {
    let full = common::gpu()?;
    let info = full.adapter_info().clone();
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    let adapter = adapters
        .into_iter()
        .find(|a| a.get_info().name == info.name && a.get_info().backend == info.backend)?;
    let (device, queue) =
        pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default()))
            .expect("application device");
    Some(GpuContext::from_device(device, queue))
}

#[test]
fn rope_on_fused_qkv_buffer_in_caller_encoder() {
    let Some(ctx) = application_context() else {
        return;
    };
    // A fused projection [tokens, (Hq + 2 Hk) * D] after 5 leading elements: Q, K and V of a
    // token are adjacent, so Q and K are read with a token stride of (Hq + 2 Hk) * D.
    let (tokens, q_heads, kv_heads, head_dim, lead) = (6, 4, 2, 16, 5);
    let row = (q_heads + 2 * kv_heads) * head_dim;
    let original = random_vec(1, lead + tokens * row);
    let buffer = ctx
        .device()
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("qkv"),
            contents: bytemuck::cast_slice(&original),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        });
    let config = RopeConfig::new(head_dim).with_base(500_000.0);
    let frequencies = config.frequencies(100).expect("config");
    let shape = QkShape {
        batch: 1,
        seq_len: tokens,
        num_heads: q_heads,
        num_kv_heads: kv_heads,
        head_dim,
        layout: Layout::Bshd,
    };
    let strides = [tokens * row, row, head_dim];
    let dispatch = RopeDispatch {
        shape,
        positions: GpuPositions::Start(90),
        q: HeadsView {
            view: TensorView::at(&buffer, lead as u64),
            strides: Some(strides),
        },
        k: Some(HeadsView {
            view: TensorView::at(&buffer, (lead + q_heads * head_dim) as u64),
            strides: Some(strides),
        }),
        position_limit: None,
        status: None,
        inverse: false,
    };
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    rope::gpu::record(&ctx, &mut encoder, &config, &frequencies, &dispatch).expect("record");
    ctx.queue().submit([encoder.finish()]);
    let got = ctx.read_f32(&buffer, original.len()).expect("readback");

    // The CPU reference on packed copies of Q and K.
    let mut q = Vec::new();
    let mut k = Vec::new();
    for t in 0..tokens {
        let start = lead + t * row;
        q.extend_from_slice(&original[start..start + q_heads * head_dim]);
        k.extend_from_slice(
            &original[start + q_heads * head_dim..start + (q_heads + kv_heads) * head_dim],
        );
    }
    rope::apply_cpu(
        &config,
        &frequencies,
        &shape,
        Positions::Start(90),
        &mut q,
        &mut k,
    )
    .expect("cpu");
    assert_bits_equal("leading elements", &got[..lead], &original[..lead]);
    for t in 0..tokens {
        let start = lead + t * row;
        let (q_end, k_end) = (
            start + q_heads * head_dim,
            start + (q_heads + kv_heads) * head_dim,
        );
        assert_close(
            "q",
            &got[start..q_end],
            &q[t * q_heads * head_dim..(t + 1) * q_heads * head_dim],
            GPU_VS_CPU,
        );
        assert_close(
            "k",
            &got[q_end..k_end],
            &k[t * kv_heads * head_dim..(t + 1) * kv_heads * head_dim],
            GPU_VS_CPU,
        );
        assert_bits_equal(
            "v untouched",
            &got[k_end..start + row],
            &original[k_end..start + row],
        );
    }
}

#[test]
fn async_readback_completes_while_another_thread_polls() {
    let Some(ctx) = common::gpu() else { return };
    let values = random_vec(2, 37);
    let buffer = ctx
        .device()
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("values"),
            contents: bytemuck::cast_slice(&values),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        });
    let done = Arc::new(AtomicBool::new(false));
    let poller = {
        let (ctx, done) = (ctx.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Acquire) {
                let _ = ctx.device().poll(wgpu::PollType::Poll);
                std::thread::yield_now();
            }
        })
    };
    // An odd offset: the copy starts at the aligned word below and the view is sliced out.
    let got: Vec<f32> =
        pollster::block_on(ctx.read_async(TensorView::at(&buffer, 3), 30)).expect("async read");
    done.store(true, Ordering::Release);
    poller.join().expect("poller thread");
    assert_bits_equal("async", &got, &values[3..33]);
}

#[test]
fn read_rejects_wrong_storage_type() {
    let Some(ctx) = common::gpu() else { return };
    let buffer = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 64,
        usage: wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let result = ctx.read::<half::f16>(TensorView::new(&buffer), 4);
    assert!(
        matches!(result, Err(posenc::Error::InvalidShape { .. })),
        "{result:?}"
    );
}

#[test]
fn one_context_serves_several_threads() {
    let Some(ctx) = common::gpu() else { return };
    let threads: Vec<_> = (0..4u64)
        .map(|seed| {
            let ctx = ctx.clone();
            std::thread::spawn(move || {
                for round in 0..3 {
                    let config = RopeConfig::new(32).with_base(10_000.0 + seed as f64);
                    let frequencies = config.frequencies(64).expect("config");
                    let shape = QkShape {
                        batch: 2,
                        seq_len: 7,
                        num_heads: 4,
                        num_kv_heads: 2,
                        head_dim: 32,
                        layout: Layout::Bhsd,
                    };
                    let (q_len, k_len) = shape.lens().expect("shape");
                    let (q, k) = (
                        random_vec(seed * 10 + round, q_len),
                        random_vec(seed * 10 + round + 5, k_len),
                    );
                    let positions = Positions::Start(seed as u32 * 8);
                    let (q_gpu, k_gpu) =
                        rope::gpu::apply(&ctx, &config, &frequencies, &shape, positions, &q, &k)
                            .expect("gpu");
                    let (mut q_cpu, mut k_cpu) = (q.clone(), k.clone());
                    rope::apply_cpu(
                        &config,
                        &frequencies,
                        &shape,
                        positions,
                        &mut q_cpu,
                        &mut k_cpu,
                    )
                    .expect("cpu");
                    assert_close("q", &q_gpu, &q_cpu, GPU_VS_CPU);
                    assert_close("k", &k_gpu, &k_cpu, GPU_VS_CPU);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("worker thread");
    }
}

#[test]
fn attention_reads_q_k_v_from_fused_qkv_buffer() {
    use posenc::attention::{self, gpu::AttentionBuffers, AttentionParams, AttentionShape};
    let Some(ctx) = common::gpu() else { return };
    // [tokens, (Hq + 2 Hk) * D] with Q, K and V of a token side by side, after 3 leading
    // elements; the output is a separate dense [1, tokens, Hq, D] tensor.
    let (tokens, q_heads, kv_heads, head_dim, lead) = (7, 4, 2, 8, 3);
    let row = (q_heads + 2 * kv_heads) * head_dim;
    let fused = random_vec(3, lead + tokens * row);
    let storage = |label, data: &[f32], usage| {
        ctx.device()
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::cast_slice(data),
                usage: wgpu::BufferUsages::STORAGE | usage,
            })
    };
    let qkv = storage("qkv", &fused, wgpu::BufferUsages::empty());
    let out = storage(
        "out",
        &vec![0.0; tokens * q_heads * head_dim],
        wgpu::BufferUsages::COPY_SRC,
    );
    let lse = storage(
        "lse",
        &vec![0.0; tokens * q_heads],
        wgpu::BufferUsages::COPY_SRC,
    );
    let shape = AttentionShape {
        layout: Layout::Bshd,
        ..AttentionShape::new(1, q_heads, kv_heads, tokens, tokens, head_dim)
    };
    let params = AttentionParams {
        causal: true,
        ..Default::default()
    };
    let strides = Some([tokens * row, row, head_dim]);
    let buffers = AttentionBuffers {
        q: TensorView::at(&qkv, lead as u64),
        k: TensorView::at(&qkv, (lead + q_heads * head_dim) as u64),
        v: TensorView::at(&qkv, (lead + (q_heads + kv_heads) * head_dim) as u64),
        out: TensorView::new(&out),
        lse: &lse,
        probs: None,
        q_strides: strides,
        kv_strides: strides,
        out_strides: None,
    };
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    attention::fused::record(ctx, &mut encoder, &shape, &params, &buffers, None).expect("record");
    ctx.queue().submit([encoder.finish()]);
    let got = ctx
        .read_f32(&out, tokens * q_heads * head_dim)
        .expect("readback");

    // The CPU reference on packed copies in the Bshd layout.
    let slice = |first_head: usize, heads: usize| -> Vec<f32> {
        (0..tokens)
            .flat_map(|t| {
                fused[lead + t * row + first_head * head_dim..][..heads * head_dim].to_vec()
            })
            .collect()
    };
    let (q, k, v) = (
        slice(0, q_heads),
        slice(q_heads, kv_heads),
        slice(q_heads + kv_heads, kv_heads),
    );
    let cpu = attention::attention_cpu(&shape, &params, &q, &k, &v).expect("cpu");
    assert_close(
        "out",
        &got,
        &cpu.out,
        Tolerance {
            abs: 2e-6,
            rel: 1e-5,
        },
    );
}
