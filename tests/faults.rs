//! Faults during an operation: a lost device, wgpu validation errors and misused caller
//! buffers come back as `Err`, never as a panic, a hang or a silently wrong result.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use posenc::alibi::Alibi;
use posenc::attention::{AttentionParams, AttentionShape};
use posenc::learned::LearnedTable;
use posenc::rope::{QkShape, RopeConfig};
use posenc::sinusoidal::Sinusoidal;
use posenc::{AdapterRequest, Error, GpuContext, GpuPositions, Layout, Positions, TensorView};

/// Maximum time one operation on a lost device may take before the test calls it a hang.
/// A healthy call on lavapipe takes milliseconds; a pipeline compile takes under a second.
const HANG_LIMIT: Duration = Duration::from_secs(60);

/// A fresh context of its own (the shared one must survive), or `None` when the test runs
/// without an adapter.
fn own_context(request: &AdapterRequest) -> Option<GpuContext> {
    common::gpu()?;
    Some(GpuContext::with_request(request).expect("a second context on the same adapter"))
}

/// Runs `operation` on another thread and fails the test if it has not returned within
/// [`HANG_LIMIT`] or if it panicked.
fn without_hang<T: Send + 'static>(
    what: &str,
    operation: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(operation());
    });
    match receiver.recv_timeout(HANG_LIMIT) {
        Ok(value) => value,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: no result after {HANG_LIMIT:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: the operation panicked"),
    }
}

/// Runs every convenience operation once and reduces each result to `Ok(())` or its error.
fn run_every_operation(ctx: &GpuContext) -> Vec<(&'static str, posenc::Result<()>)> {
    let rope = RopeConfig::new(8);
    let frequencies = rope.frequencies(4).expect("rope config");
    let rope_shape = QkShape {
        batch: 1,
        seq_len: 4,
        num_heads: 2,
        num_kv_heads: 1,
        head_dim: 8,
        layout: Layout::Bshd,
    };
    let shape = AttentionShape::new(1, 2, 1, 3, 5, 8);
    let params = AttentionParams {
        causal: true,
        ..Default::default()
    };
    let (q, kv) = (vec![0.5f32; 48], vec![0.25f32; 40]);
    let learned = LearnedTable::new(8, 4);
    let table = vec![1.0f32; 32];
    vec![
        (
            "sinusoidal table",
            posenc::sinusoidal::gpu::table::<f32>(ctx, &Sinusoidal::new(8), Positions::Start(0), 4)
                .map(drop),
        ),
        (
            "sinusoidal add",
            posenc::sinusoidal::gpu::add(
                ctx,
                &Sinusoidal::new(8),
                Positions::Start(0),
                1,
                4,
                &[0.0f32; 32],
            )
            .map(drop),
        ),
        (
            "learned add",
            posenc::learned::gpu::add(
                ctx,
                &learned,
                &table,
                Positions::Start(0),
                2,
                2,
                &[0.0f32; 16],
            )
            .map(drop),
        ),
        (
            "rope apply",
            posenc::rope::gpu::apply(
                ctx,
                &rope,
                &frequencies,
                &rope_shape,
                Positions::Start(0),
                &[1.0f32; 64],
                &[1.0f32; 32],
            )
            .map(drop),
        ),
        (
            "rope tables",
            posenc::rope::gpu::tables(ctx, &rope, &frequencies, Positions::Start(0), 4).map(drop),
        ),
        (
            "alibi bias",
            posenc::alibi::gpu::bias::<f32>(ctx, &Alibi::new(4), 3, 5, 2).map(drop),
        ),
        (
            "attention",
            posenc::attention::gpu::attention(ctx, &shape, &params, &q, &kv, &kv).map(drop),
        ),
        (
            "fused attention",
            posenc::attention::fused::attention(ctx, &shape, &params, &q, &kv, &kv, Some(2))
                .map(drop),
        ),
    ]
}

#[test]
fn device_destroyed_operations_return_errors() {
    let Some(ctx) = own_context(&AdapterRequest::default()) else {
        return;
    };
    // Compile every pipeline first, so the calls below fail on the lost device and not
    // earlier.
    for (name, result) in run_every_operation(&ctx) {
        assert!(result.is_ok(), "{name} before destroy: {result:?}");
    }

    ctx.device().destroy();
    let lost = ctx.clone();
    let results = without_hang("operations on a destroyed device", move || {
        run_every_operation(&lost)
    });
    for (name, result) in results {
        let error = result.expect_err(name);
        assert!(
            matches!(error, Error::Gpu { .. }),
            "{name} on a destroyed device: {error:?}"
        );
    }
    let lost = ctx.clone();
    let read = without_hang("status read on a destroyed device", move || {
        posenc::StatusBuffer::new(&lost).read(&lost)
    });
    assert!(
        matches!(read, Err(Error::Gpu { .. })),
        "status read: {read:?}"
    );
    drop(ctx);

    let Some(fresh) = own_context(&AdapterRequest::default()) else {
        return;
    };
    for (name, result) in run_every_operation(&fresh) {
        assert!(result.is_ok(), "{name} on a new context: {result:?}");
    }
}

#[test]
fn device_destroyed_between_record_and_read() {
    let Some(ctx) = own_context(&AdapterRequest::default()) else {
        return;
    };
    let buffer = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("target"),
        size: 64,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    posenc::sinusoidal::gpu::record(
        &ctx,
        &mut encoder,
        &Sinusoidal::new(4),
        GpuPositions::Start(0),
        1,
        4,
        TensorView::new(&buffer),
        false,
    )
    .expect("record");
    ctx.queue().submit([encoder.finish()]);
    ctx.device().destroy();
    let lost = ctx.clone();
    let read = without_hang("read_f32 on a destroyed device", move || {
        lost.read_f32(&buffer, 16)
    });
    assert!(matches!(read, Err(Error::Gpu { .. })), "read_f32: {read:?}");
}

/// Limits that every adapter meets, with one limit lowered below what a kernel needs.
fn lowered(change: impl FnOnce(&mut wgpu::Limits)) -> Option<GpuContext> {
    let adapter_limits = common::gpu()?.device().limits();
    let mut limits = adapter_limits;
    change(&mut limits);
    own_context(&AdapterRequest {
        limits: Some(limits),
        ..Default::default()
    })
}

#[test]
fn pipeline_past_device_limits_is_gpu_error() {
    // Both attention kernels bind 7 storage buffers; RoPE binds 5 and the other kernels
    // fewer, so they still work on the same context, before and after the failures.
    let Some(ctx) = lowered(|limits| limits.max_storage_buffers_per_shader_stage = 5) else {
        return;
    };
    let results = without_hang("pipelines past the storage-buffer limit", move || {
        let results = run_every_operation(&ctx);
        let after = posenc::sinusoidal::gpu::table::<f32>(
            &ctx,
            &Sinusoidal::new(8),
            Positions::Start(0),
            4,
        );
        (results, after)
    });
    for (name, result) in &results.0 {
        if name.contains("attention") {
            let error = result.as_ref().expect_err(name);
            assert!(
                matches!(
                    error,
                    Error::Gpu {
                        during: "pipeline creation",
                        ..
                    }
                ),
                "{name}: {error:?}"
            );
            assert!(error.to_string().contains("pipeline creation"), "{error}");
        } else {
            assert!(result.is_ok(), "{name}: {result:?}");
        }
    }
    assert!(
        results.1.is_ok(),
        "sinusoidal after a failed pipeline: {:?}",
        results.1
    );
}

fn buffer(ctx: &GpuContext, label: &str, size: u64, usage: wgpu::BufferUsages) -> wgpu::Buffer {
    ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size,
        usage,
        mapped_at_creation: false,
    })
}

/// Records with `record` inside a validation scope, submits, and returns the recording's
/// result with any wgpu error that reached the device.
fn record_scoped(
    ctx: &GpuContext,
    record: impl FnOnce(&mut wgpu::CommandEncoder) -> posenc::Result<()>,
) -> (posenc::Result<()>, Option<wgpu::Error>) {
    let scope = ctx.device().push_error_scope(wgpu::ErrorFilter::Validation);
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    let result = record(&mut encoder);
    ctx.queue().submit([encoder.finish()]);
    (result, pollster::block_on(scope.pop()))
}

fn assert_invalid_buffer(
    case: &str,
    (result, wgpu_error): (posenc::Result<()>, Option<wgpu::Error>),
    fragments: &[&str],
) {
    let error = result.expect_err(case);
    assert!(
        matches!(error, Error::InvalidBuffer { .. }),
        "{case}: {error:?}"
    );
    let message = error.to_string();
    for fragment in fragments {
        assert!(
            message.contains(fragment),
            "{case}: {message:?} lacks {fragment:?}"
        );
    }
    assert!(
        wgpu_error.is_none(),
        "{case}: nothing may reach wgpu: {wgpu_error:?}"
    );
}

#[test]
fn record_buffer_without_storage_usage_is_error() {
    let Some(ctx) = common::gpu() else { return };
    let copy_only = buffer(
        ctx,
        "copy only",
        256,
        wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
    );
    let result = record_scoped(ctx, |encoder| {
        posenc::sinusoidal::gpu::record(
            ctx,
            encoder,
            &Sinusoidal::new(4),
            GpuPositions::Start(0),
            1,
            4,
            TensorView::new(&copy_only),
            false,
        )
    });
    assert_invalid_buffer("sinusoidal target", result, &["target", "STORAGE"]);
    let result = record_scoped(ctx, |encoder| {
        posenc::alibi::gpu::record(
            ctx,
            encoder,
            &Alibi::new(2),
            2,
            2,
            0,
            TensorView::new(&copy_only),
            false,
        )
    });
    assert_invalid_buffer("alibi target", result, &["target", "STORAGE"]);

    // Reading back needs COPY_SRC.
    let storage_only = buffer(ctx, "storage only", 64, wgpu::BufferUsages::STORAGE);
    let error = ctx
        .read_f32(&storage_only, 4)
        .expect_err("read without COPY_SRC");
    assert!(
        matches!(error, Error::InvalidBuffer { name: "view", .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("COPY_SRC"), "{error}");
}

#[test]
fn record_written_buffer_bound_twice_is_error() {
    let Some(ctx) = common::gpu() else { return };
    let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
    let shared = buffer(ctx, "shared", 1024, usage);
    let other = buffer(ctx, "other", 1024, usage);
    let status = posenc::StatusBuffer::new(ctx);

    // Sinusoidal: the position ids live in the target buffer.
    let result = record_scoped(ctx, |encoder| {
        let positions = GpuPositions::Buffer {
            ids: TensorView::at(&shared, 200),
            per_sequence: false,
        };
        posenc::sinusoidal::gpu::record(
            ctx,
            encoder,
            &Sinusoidal::new(4),
            positions,
            1,
            4,
            TensorView::new(&shared),
            false,
        )
    });
    assert_invalid_buffer("sinusoidal ids in target", result, &["positions", "target"]);

    // Learned: the table lives in the target buffer.
    let result = record_scoped(ctx, |encoder| {
        posenc::learned::gpu::record(
            ctx,
            encoder,
            &LearnedTable::new(4, 4),
            TensorView::at(&shared, 100),
            GpuPositions::Start(0),
            1,
            2,
            TensorView::new(&shared),
            &status,
        )
    });
    assert_invalid_buffer("learned table in target", result, &["table", "target"]);

    // Attention: the output written over Q (in place), and the lse in the output buffer.
    let shape = AttentionShape::new(1, 1, 1, 2, 2, 4);
    let probs = buffer(ctx, "probs", 64, usage);
    let lse = buffer(ctx, "lse", 64, usage);
    let in_place = posenc::attention::gpu::AttentionBuffers {
        q: TensorView::new(&shared),
        k: TensorView::new(&other),
        v: TensorView::new(&other),
        out: TensorView::new(&shared),
        lse: &lse,
        probs: Some(TensorView::new(&probs)),
        q_strides: None,
        kv_strides: None,
        out_strides: None,
    };
    let result = record_scoped(ctx, |encoder| {
        posenc::attention::gpu::record(ctx, encoder, &shape, &AttentionParams::default(), &in_place)
    });
    assert_invalid_buffer("attention out over q", result, &["out", "q"]);
    let result = record_scoped(ctx, |encoder| {
        posenc::attention::fused::record(
            ctx,
            encoder,
            &shape,
            &AttentionParams::default(),
            &in_place,
            None,
        )
    });
    assert_invalid_buffer("fused out over q", result, &["out", "q"]);
    let lse_in_out = posenc::attention::gpu::AttentionBuffers {
        q: TensorView::new(&other),
        k: TensorView::new(&other),
        v: TensorView::new(&other),
        out: TensorView::new(&shared),
        lse: &shared,
        probs: Some(TensorView::new(&probs)),
        q_strides: None,
        kv_strides: None,
        out_strides: None,
    };
    let result = record_scoped(ctx, |encoder| {
        posenc::attention::gpu::record(
            ctx,
            encoder,
            &shape,
            &AttentionParams::default(),
            &lse_in_out,
        )
    });
    assert_invalid_buffer("attention lse in out", result, &["lse", "out"]);

    // Q, K and V may share one read-only buffer.
    let qkv = posenc::attention::gpu::AttentionBuffers {
        q: TensorView::new(&other),
        k: TensorView::new(&other),
        v: TensorView::new(&other),
        out: TensorView::new(&shared),
        lse: &lse,
        probs: Some(TensorView::new(&probs)),
        q_strides: None,
        kv_strides: None,
        out_strides: None,
    };
    let (result, wgpu_error) = record_scoped(ctx, |encoder| {
        posenc::attention::gpu::record(ctx, encoder, &shape, &AttentionParams::default(), &qkv)
    });
    assert!(
        result.is_ok() && wgpu_error.is_none(),
        "{result:?} {wgpu_error:?}"
    );
}
