//! burn's wgpu backend on the Vulkan adapter of the `Cpu` kind (lavapipe on the benchmark
//! machine): `burn::nn::RotaryEncoding` on Q and K, and causal attention written as
//! matmul, mask, softmax and matmul.

use burn::nn::RotaryEncodingConfig;
use burn::tensor::activation::softmax;
use burn::tensor::wgpu::WgpuBackend;
use burn::tensor::{Bool, Device, DeviceKind, Tensor, TensorData};
use posenc::bench::{self, causal_pairs, BenchOptions, Measurement, Timing};
use posenc::GpuContext;

use crate::{
    fastest_gpu_copy, inputs, PeerError, PeerRow, DECODE_POSITION, HEADS, HEAD_DIM, KV_HEADS,
    PREFILL_TOKENS, THETA,
};

const PEER: &str = "burn 0.22.1 (wgpu)";

/// The causal attention case of posenc's benchmark: 8 heads of 64 features, 2048 tokens.
const ATTENTION_HEADS: usize = 8;
const ATTENTION_TOKENS: usize = 2048;
const ATTENTION_HEAD_DIM: usize = 64;

/// Creates burn's device and times its RoPE and attention; copies are measured on `ctx`.
pub fn run(ctx: &GpuContext, options: &BenchOptions) -> Result<Vec<PeerRow>, PeerError> {
    let (device, setup) = Device::wgpu_options()
        .device_kind(DeviceKind::Cpu)
        .graphics_api(WgpuBackend::Vulkan)
        .init_with_setup()
        .map_err(|e| format!("burn's wgpu device: {e:?}"))?;
    let info = setup.adapter.get_info();
    let adapter = format!(
        "{} [{:?}, {:?}] driver {}, {}",
        info.name, info.backend, info.device_type, info.driver, info.driver_info
    );
    eprintln!("burn on {adapter}");

    let mut rows = Vec::new();
    for (case, seq_len, start) in [
        ("rope_prefill", PREFILL_TOKENS, 0),
        ("rope_decode", 1, DECODE_POSITION),
    ] {
        let mut measurement = rope(&device, &adapter, case, seq_len, start, options)?;
        measurement.compare_with_copy(&fastest_gpu_copy(ctx, measurement.bytes, options)?);
        rows.push(PeerRow {
            peer: PEER.to_owned(),
            measurement,
        });
    }
    let mut measurement = attention(&device, &adapter, options)?;
    measurement.compare_with_copy(&fastest_gpu_copy(ctx, measurement.bytes, options)?);
    rows.push(PeerRow {
        peer: PEER.to_owned(),
        measurement,
    });
    Ok(rows)
}

fn tensor4(values: Vec<f32>, dims: [usize; 4], device: &Device) -> Tensor<4> {
    Tensor::<4>::from_data(TensorData::new(values, dims), device)
}

/// Waits for the device; burn reports failed kernels here.
fn sync(device: &Device) -> Result<(), PeerError> {
    device
        .sync()
        .map_err(|e| format!("burn device sync: {e:?}").into())
}

/// `RotaryEncoding` pairs adjacent features (the interleaved layout), on Q and K in
/// `[batch, heads, seq, head_dim]`.
fn rope(
    device: &Device,
    adapter: &str,
    case: &str,
    seq_len: usize,
    start: usize,
    options: &BenchOptions,
) -> Result<Measurement, PeerError> {
    let encoding = RotaryEncodingConfig::new(start + seq_len, HEAD_DIM)
        .with_theta(THETA as f32)
        .init(device);
    let q = tensor4(
        inputs(HEADS * seq_len * HEAD_DIM, 1),
        [1, HEADS, seq_len, HEAD_DIM],
        device,
    );
    let k = tensor4(
        inputs(KV_HEADS * seq_len * HEAD_DIM, 2),
        [1, KV_HEADS, seq_len, HEAD_DIM],
        device,
    );
    sync(device)?;

    let timed = bench::time_wall(options, || -> Result<(), PeerError> {
        let q_out = encoding.apply(q.clone(), start);
        let k_out = encoding.apply(k.clone(), start);
        // The outputs stay alive until the device is idle, so no backend can skip them.
        sync(device)?;
        drop((q_out, k_out));
        Ok(())
    })?;
    let shape = format!(
        "q[1,{HEADS},{seq_len},{HEAD_DIM}] k[1,{KV_HEADS},{seq_len},{HEAD_DIM}] bhsd start {start} interleaved"
    );
    let bytes = 2 * 4 * ((HEADS + KV_HEADS) * seq_len * HEAD_DIM) as u64;
    let mut measurement = Measurement::from_times(
        case,
        "gpu",
        &shape,
        Timing::Wall,
        adapter,
        &timed.times_ms,
        bytes,
        None,
    );
    measurement.warmup_runs = timed.warmup_runs;
    Ok(measurement)
}

/// `softmax(mask(Q K^T * scale)) V` with the full score matrix, as a model written in burn
/// would compute it without a fused kernel.
fn attention(
    device: &Device,
    adapter: &str,
    options: &BenchOptions,
) -> Result<Measurement, PeerError> {
    let (heads, n, d) = (ATTENTION_HEADS, ATTENTION_TOKENS, ATTENTION_HEAD_DIM);
    let dims = [1, heads, n, d];
    let q = tensor4(inputs(heads * n * d, 6), dims, device);
    let k = tensor4(inputs(heads * n * d, 7), dims, device);
    let v = tensor4(inputs(heads * n * d, 8), dims, device);
    // `tril_mask` with offset 0 is true above the diagonal: the keys after each query.
    let future: Tensor<4, Bool> = Tensor::<2, Bool>::tril_mask([n, n], 0, device)
        .unsqueeze::<4>()
        .expand([1, heads, n, n]);
    let scale = 1.0 / (d as f64).sqrt();
    sync(device)?;

    let timed = bench::time_wall(options, || -> Result<(), PeerError> {
        let scores = q
            .clone()
            .matmul(k.clone().swap_dims(2, 3))
            .mul_scalar(scale);
        let scores = scores.mask_fill(future.clone(), f32::NEG_INFINITY);
        let out = softmax(scores, 3).matmul(v.clone());
        sync(device)?;
        drop(out);
        Ok(())
    })?;
    let shape = format!("q[1,{heads},{n},{d}] kv[1,{heads},{n},{d}] bhsd causal");
    // The same bytes and FLOPs as posenc's fused case, so the rates compare the useful work:
    // burn also writes and reads the full score matrix and multiplies the masked half.
    let bytes = 4 * 4 * (heads * n * d) as u64;
    let flops = bench::attention_flops(1, heads, d, causal_pairs(n, n));
    let mut measurement = Measurement::from_times(
        "attention_causal",
        "gpu",
        &shape,
        Timing::Wall,
        adapter,
        &timed.times_ms,
        bytes,
        Some(flops),
    );
    measurement.warmup_runs = timed.warmup_runs;
    Ok(measurement)
}
