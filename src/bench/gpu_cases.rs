//! The GPU cases: each builds its buffers once and records its kernel with the op's
//! `record` function.

use std::time::Instant;

use crate::attention::gpu::AttentionBuffers;
use crate::attention::{self, AttentionParams, AttentionShape};
use crate::bench::stats::Summary;
use crate::bench::timer::{self, TimedCase};
use crate::bench::{attention_flops, causal_pairs, BenchOptions, Measurement};
use crate::context::GpuContext;
use crate::error::Result;
use crate::gpu::{self, StatusBuffer};
use crate::learned::{self, LearnedTable};
use crate::rope::gpu::{HeadsView, RopeDispatch};
use crate::rope::{self, QkShape, RopeConfig};
use crate::sinusoidal::{self, Sinusoidal};
use crate::tensor::{DType, GpuPositions, Layout, TensorView};

/// Host `record` calls timed per case to measure the encoding cost.
const RECORD_CALLS: usize = 10;

/// Records one run of a case into an encoder.
type Recorder = Box<dyn FnMut(&mut wgpu::CommandEncoder) -> Result<()>>;

/// A case whose buffers exist: what it moves and how to record it.
pub(crate) struct GpuCase {
    shape: String,
    bytes: u64,
    flops: Option<f64>,
    record: Recorder,
}

/// A case by name and storage type, built only when selected so that one case's buffers
/// exist at a time.
pub(crate) struct GpuCaseSpec {
    pub op: &'static str,
    pub dtype: DType,
    build: Builder,
}

/// Creates a case's buffers in a storage type.
type Builder = fn(&GpuContext, DType) -> Result<GpuCase>;

/// Lists every GPU case in run order: all in f32, then the cases that also run in f16 and
/// bf16.
pub(crate) fn all() -> Vec<GpuCaseSpec> {
    // (op, builder, whether the case also runs in f16 and bf16)
    let cases: [(&'static str, Builder, bool); 7] = [
        ("rope_prefill", rope_prefill, true),
        ("rope_decode", rope_decode, false),
        ("sinusoidal_add", sinusoidal_add, true),
        ("learned_add", learned_add, true),
        ("attention_causal_fused", attention_causal_fused, true),
        (
            "attention_causal_materialized",
            attention_causal_materialized,
            false,
        ),
        ("attention_decode_fused", attention_decode_fused, true),
    ];
    let mut specs = Vec::new();
    for dtype in [DType::F32, DType::F16, DType::Bf16] {
        for &(op, build, half_variants) in &cases {
            if dtype == DType::F32 || half_variants {
                specs.push(GpuCaseSpec { op, dtype, build });
            }
        }
    }
    specs
}

/// Generates `len` values in [-1, 1) with a fixed-seed xorshift generator, which is cheap
/// and gives the same values in every run.
pub(crate) fn pattern(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // The top 24 bits are exact in f32.
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// Returns the bytes of `pattern(len, seed)` stored as `dtype`.
pub(crate) fn pattern_bytes(len: usize, seed: u64, dtype: DType) -> Vec<u8> {
    let values = pattern(len, seed);
    match dtype {
        DType::F32 => bytemuck::cast_slice(&values).to_vec(),
        DType::F16 => {
            let halves: Vec<half::f16> = values.iter().map(|&v| half::f16::from_f32(v)).collect();
            bytemuck::cast_slice(&halves).to_vec()
        }
        DType::Bf16 => {
            let halves: Vec<half::bf16> = values.iter().map(|&v| half::bf16::from_f32(v)).collect();
            bytemuck::cast_slice(&halves).to_vec()
        }
    }
}

fn upload(ctx: &GpuContext, label: &str, len: usize, seed: u64, dtype: DType) -> wgpu::Buffer {
    gpu::storage_init(
        ctx,
        label,
        &pattern_bytes(len, seed, dtype),
        wgpu::BufferUsages::empty(),
    )
}

/// Builds, warms up and times `spec`, and measures the host cost of its `record` call.
pub(crate) fn measure(
    ctx: &GpuContext,
    spec: &GpuCaseSpec,
    options: &BenchOptions,
) -> Result<Measurement> {
    timer::with_error_scopes(ctx, "benchmark case", || {
        let mut case = (spec.build)(ctx, spec.dtype)?;

        let before_first_call = ctx.pipeline_count();
        let timed = timer::time_case(ctx, options, &mut case.record)?;
        let record_us = record_cost(ctx, &mut case.record)?;
        let repeat_call_pipelines = ctx.pipeline_count() - timed.pipelines_after_first_call;
        if repeat_call_pipelines > 0 {
            log::warn!(
                "{} {}: calls after the first compiled {repeat_call_pipelines} pipelines; the pipeline cache missed",
                spec.op,
                spec.dtype.name()
            );
        }

        let mut measurement =
            to_measurement(ctx, spec.op, &case.shape, case.bytes, case.flops, &timed);
        measurement.dtype = spec.dtype.name().to_owned();
        measurement.record_us = Some(record_us);
        measurement.first_call_pipelines =
            Some(timed.pipelines_after_first_call - before_first_call);
        measurement.repeat_call_pipelines = Some(repeat_call_pipelines);
        Ok(measurement)
    })
}

/// Warms up and times a recorder that needs no record-cost measurement (the copy kernels).
pub(crate) fn time_plain(
    ctx: &GpuContext,
    op: &str,
    shape: &str,
    bytes: u64,
    options: &BenchOptions,
    mut record: impl FnMut(&mut wgpu::CommandEncoder) -> Result<()>,
) -> Result<Measurement> {
    let timed = timer::time_case(ctx, options, &mut record)?;
    Ok(to_measurement(ctx, op, shape, bytes, None, &timed))
}

/// Median host time of one `record` call, in microseconds. The encoders are dropped
/// unsubmitted, so no GPU work runs.
fn record_cost(
    ctx: &GpuContext,
    record: &mut impl FnMut(&mut wgpu::CommandEncoder) -> Result<()>,
) -> Result<f64> {
    let mut micros = Vec::with_capacity(RECORD_CALLS);
    for _ in 0..RECORD_CALLS {
        let mut encoder = timer::new_encoder(ctx, "posenc bench record cost");
        let started = Instant::now();
        record(&mut encoder)?;
        micros.push(started.elapsed().as_secs_f64() * 1e6);
    }
    Ok(Summary::of(&micros).median)
}

/// Describes the adapter with its driver, such as
/// `llvmpipe (LLVM 15.0.6, 256 bits) [Vulkan, Cpu] driver llvmpipe, Mesa 22.3.6 (LLVM 15.0.6)`.
pub fn adapter_label(ctx: &GpuContext) -> String {
    let info = ctx.adapter_info();
    let driver: Vec<&str> = [info.driver.as_str(), info.driver_info.as_str()]
        .into_iter()
        .filter(|part| !part.is_empty())
        .collect();
    if driver.is_empty() {
        ctx.describe()
    } else {
        format!("{} driver {}", ctx.describe(), driver.join(", "))
    }
}

fn to_measurement(
    ctx: &GpuContext,
    op: &str,
    shape: &str,
    bytes: u64,
    flops: Option<f64>,
    timed: &TimedCase,
) -> Measurement {
    let times = &timed.times;
    let mut measurement = Measurement::from_times(
        op,
        "gpu",
        shape,
        times.timing,
        &adapter_label(ctx),
        &times.kernel_ms,
        bytes,
        flops,
    );
    measurement.warmup_runs = timed.warmup_runs;
    measurement.wall_median_ms = Some(Summary::of(&times.wall_ms).median);
    measurement
}

/// Llama-3-8B attention heads: 32 query heads, 8 KV heads, head_dim 128, theta 500000.
const LLAMA3_HEADS: usize = 32;
const LLAMA3_KV_HEADS: usize = 8;
const LLAMA3_HEAD_DIM: usize = 128;
const LLAMA3_THETA: f64 = 500_000.0;

/// Llama-3-8B's RoPE over Q and K of `seq_len` tokens in one sequence.
pub(crate) fn llama3_rope(seq_len: usize) -> (RopeConfig, QkShape) {
    let config = RopeConfig::new(LLAMA3_HEAD_DIM).with_base(LLAMA3_THETA);
    let shape = QkShape {
        batch: 1,
        seq_len,
        num_heads: LLAMA3_HEADS,
        num_kv_heads: LLAMA3_KV_HEADS,
        head_dim: LLAMA3_HEAD_DIM,
        layout: Layout::Bshd,
    };
    (config, shape)
}

/// Formats the shape label of a RoPE case, shared with the CPU rows.
pub(crate) fn rope_shape_label(shape: &QkShape, start: u32) -> String {
    let dims = |heads: usize| {
        format!(
            "[{},{},{},{}]",
            shape.batch, shape.seq_len, heads, shape.head_dim
        )
    };
    format!(
        "q{} k{} bshd start {start}",
        dims(shape.num_heads),
        dims(shape.num_kv_heads)
    )
}

/// RoPE on Q and K of a Llama-3-8B prefill of 4096 tokens, in one call.
pub(crate) const PREFILL_TOKENS: usize = 4096;
/// Position of the decoded token: the last of a 32768-token context.
pub(crate) const DECODE_POSITION: u32 = 32_767;

fn rope_case(ctx: &GpuContext, seq_len: usize, start: u32, dtype: DType) -> Result<GpuCase> {
    let (config, shape) = llama3_rope(seq_len);
    let frequencies = config.frequencies(u64::from(start) + seq_len as u64)?;
    let (q_len, k_len) = shape.lens()?;
    let q = upload(ctx, "bench rope q", q_len, 1, dtype);
    let k = upload(ctx, "bench rope k", k_len, 2, dtype);
    let context = ctx.clone();
    Ok(GpuCase {
        shape: rope_shape_label(&shape, start),
        bytes: 2 * dtype.size() * (q_len + k_len) as u64,
        flops: None,
        record: Box::new(move |encoder| {
            let dispatch = RopeDispatch {
                shape,
                positions: GpuPositions::Start(start),
                q: heads(&q, dtype),
                k: Some(heads(&k, dtype)),
                position_limit: None,
                status: None,
                inverse: false,
            };
            rope::gpu::record(&context, encoder, &config, &frequencies, &dispatch)
        }),
    })
}

/// Describes a densely packed tensor of heads at element 0 of `buffer`.
fn heads(buffer: &wgpu::Buffer, dtype: DType) -> HeadsView<'_> {
    HeadsView {
        view: TensorView::new(buffer).with_dtype(dtype),
        strides: None,
    }
}

fn rope_prefill(ctx: &GpuContext, dtype: DType) -> Result<GpuCase> {
    rope_case(ctx, PREFILL_TOKENS, 0, dtype)
}

fn rope_decode(ctx: &GpuContext, dtype: DType) -> Result<GpuCase> {
    rope_case(ctx, 1, DECODE_POSITION, dtype)
}

/// Tokens and width of the embeddings of the add cases.
pub(crate) const EMBEDDING_ROWS: usize = 4096;
pub(crate) const EMBEDDING_DIM: usize = 4096;

fn sinusoidal_add(ctx: &GpuContext, dtype: DType) -> Result<GpuCase> {
    let encoding = Sinusoidal::new(EMBEDDING_DIM);
    let len = EMBEDDING_ROWS * EMBEDDING_DIM;
    let target = upload(ctx, "bench sinusoidal embeddings", len, 3, dtype);
    let context = ctx.clone();
    Ok(GpuCase {
        shape: format!("[{EMBEDDING_ROWS},{EMBEDDING_DIM}]"),
        bytes: 2 * dtype.size() * len as u64,
        flops: None,
        record: Box::new(move |encoder| {
            sinusoidal::gpu::record(
                &context,
                encoder,
                &encoding,
                GpuPositions::Start(0),
                1,
                EMBEDDING_ROWS,
                TensorView::new(&target).with_dtype(dtype),
                true,
            )
        }),
    })
}

fn learned_add(ctx: &GpuContext, dtype: DType) -> Result<GpuCase> {
    let table_shape = LearnedTable::new(EMBEDDING_ROWS, EMBEDDING_DIM);
    let len = EMBEDDING_ROWS * EMBEDDING_DIM;
    let table = upload(ctx, "bench learned table", len, 4, dtype);
    let target = upload(ctx, "bench learned embeddings", len, 5, dtype);
    let status = StatusBuffer::new(ctx);
    let context = ctx.clone();
    Ok(GpuCase {
        shape: format!(
            "[{EMBEDDING_ROWS},{EMBEDDING_DIM}] table [{EMBEDDING_ROWS},{EMBEDDING_DIM}]"
        ),
        // Read the embeddings and the table, write the embeddings.
        bytes: 3 * dtype.size() * len as u64,
        flops: None,
        record: Box::new(move |encoder| {
            learned::gpu::record(
                &context,
                encoder,
                &table_shape,
                TensorView::new(&table).with_dtype(dtype),
                GpuPositions::Start(0),
                1,
                EMBEDDING_ROWS,
                TensorView::new(&target).with_dtype(dtype),
                &status,
            )
        }),
    })
}

/// Causal prefill attention: 8 heads of 64 features over 2048 tokens, layout Bhsd.
pub(crate) fn causal_shape() -> AttentionShape {
    AttentionShape::new(1, 8, 8, 2048, 2048, 64)
}

/// Decoding one token against a 32768-token KV cache with Llama-3-8B's heads.
pub(crate) fn decode_shape() -> AttentionShape {
    AttentionShape::new(1, LLAMA3_HEADS, LLAMA3_KV_HEADS, 1, 32_768, LLAMA3_HEAD_DIM)
}

/// Formats the shape label of an attention case, shared with the CPU rows.
pub(crate) fn attention_shape_label(shape: &AttentionShape) -> String {
    format!(
        "q[{b},{h},{q},{d}] kv[{b},{kv},{k},{d}] bhsd causal",
        b = shape.batch,
        h = shape.num_heads,
        q = shape.q_len,
        kv = shape.num_kv_heads,
        k = shape.kv_len,
        d = shape.head_dim
    )
}

/// Returns the bytes and FLOPs of attention over `shape`: Q, K and V read and the output
/// written in `dtype`, plus the f32 probabilities when they are materialised.
pub(crate) fn attention_work(
    shape: &AttentionShape,
    dtype: DType,
    materialized: bool,
) -> Result<(u64, f64)> {
    let (q_len, kv_len, probs_len) = shape.lens()?;
    let probs = if materialized {
        4 * probs_len as u64
    } else {
        0
    };
    let bytes = dtype.size() * (2 * q_len + 2 * kv_len) as u64 + probs;
    let pairs = causal_pairs(shape.q_len, shape.kv_len) * shape.batch;
    let flops = attention_flops(1, shape.num_heads, shape.head_dim, pairs);
    Ok((bytes, flops))
}

fn attention_case(
    ctx: &GpuContext,
    shape: AttentionShape,
    dtype: DType,
    materialized: bool,
) -> Result<GpuCase> {
    let (q_len, kv_len, probs_len) = shape.lens()?;
    let (bytes, flops) = attention_work(&shape, dtype, materialized)?;

    let q = upload(ctx, "bench attention q", q_len, 6, dtype);
    let k = upload(ctx, "bench attention k", kv_len, 7, dtype);
    let v = upload(ctx, "bench attention v", kv_len, 8, dtype);
    let empty = wgpu::BufferUsages::empty();
    let out_bytes = q_len as u64 * dtype.size();
    let out = gpu::storage_empty(ctx, "bench attention out", out_bytes, empty);
    let rows = shape.batch * shape.num_heads * shape.q_len;
    let lse = gpu::storage_empty(ctx, "bench attention lse", (rows * 4) as u64, empty);
    let probs = materialized
        .then(|| gpu::storage_empty(ctx, "bench attention probs", (probs_len * 4) as u64, empty));

    let params = AttentionParams {
        causal: true,
        ..AttentionParams::default()
    };
    let context = ctx.clone();
    Ok(GpuCase {
        shape: attention_shape_label(&shape),
        bytes,
        flops: Some(flops),
        record: Box::new(move |encoder| {
            let buffers = AttentionBuffers {
                q: TensorView::new(&q).with_dtype(dtype),
                k: TensorView::new(&k).with_dtype(dtype),
                v: TensorView::new(&v).with_dtype(dtype),
                out: TensorView::new(&out).with_dtype(dtype),
                q_strides: None,
                kv_strides: None,
                out_strides: None,
                lse: &lse,
                probs: probs.as_ref().map(TensorView::new),
            };
            if materialized {
                attention::gpu::record(&context, encoder, &shape, &params, &buffers)
            } else {
                attention::fused::record(&context, encoder, &shape, &params, &buffers, None)
            }
        }),
    })
}

fn attention_causal_fused(ctx: &GpuContext, dtype: DType) -> Result<GpuCase> {
    attention_case(ctx, causal_shape(), dtype, false)
}

fn attention_causal_materialized(ctx: &GpuContext, dtype: DType) -> Result<GpuCase> {
    attention_case(ctx, causal_shape(), dtype, true)
}

fn attention_decode_fused(ctx: &GpuContext, dtype: DType) -> Result<GpuCase> {
    attention_case(ctx, decode_shape(), dtype, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_stays_in_unit_range() {
        let values = pattern(10_000, 3);
        assert!(values.iter().all(|v| (-1.0..1.0).contains(v)));
        assert!(values.iter().any(|&v| v < -0.5));
        assert!(values.iter().any(|&v| v > 0.5));
    }

    #[test]
    fn pattern_is_repeatable() {
        assert_eq!(pattern(16, 9), pattern(16, 9));
        assert_ne!(pattern(16, 9), pattern(16, 10));
    }

    #[test]
    fn attention_work_materialized_adds_probs() {
        let shape = causal_shape();
        let (fused_bytes, flops) = attention_work(&shape, DType::F32, false).unwrap();
        let (materialized_bytes, _) = attention_work(&shape, DType::F32, true).unwrap();
        assert_eq!(fused_bytes, 4 * 4 * 8 * 2048 * 64);
        assert_eq!(materialized_bytes - fused_bytes, 4 * 8 * 2048 * 2048);
        assert_eq!(flops, 4.0 * 8.0 * 64.0 * (2048.0 * 2049.0 / 2.0));
    }

    #[test]
    fn decode_work_reads_kv_once() {
        let (bytes, flops) = attention_work(&decode_shape(), DType::F32, false).unwrap();
        assert_eq!(bytes, 4 * (2 * 32 * 128 + 2 * 8 * 32_768 * 128));
        assert_eq!(flops, 4.0 * 32.0 * 128.0 * 32_768.0);
    }

    #[test]
    fn half_storage_halves_attention_bytes() {
        let shape = causal_shape();
        let (f32_bytes, _) = attention_work(&shape, DType::F32, false).unwrap();
        let (f16_bytes, _) = attention_work(&shape, DType::F16, false).unwrap();
        assert_eq!(f16_bytes * 2, f32_bytes);
    }

    #[test]
    fn pattern_bytes_sizes_follow_dtype() {
        assert_eq!(pattern_bytes(6, 1, DType::F32).len(), 24);
        assert_eq!(pattern_bytes(6, 1, DType::F16).len(), 12);
        assert_eq!(pattern_bytes(6, 1, DType::Bf16).len(), 12);
    }

    #[test]
    fn every_case_runs_in_f32() {
        let specs = all();
        let f32_ops: Vec<_> = specs
            .iter()
            .filter(|s| s.dtype == DType::F32)
            .map(|s| s.op)
            .collect();
        assert_eq!(f32_ops.len(), 7);
        assert!(specs.iter().any(|s| s.dtype == DType::Bf16));
    }
}
