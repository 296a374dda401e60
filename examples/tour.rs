//! Runs every posenc operation at shapes of real models on the default adapter, checks each
//! GPU result against the CPU reference, and prints a table. Exits non-zero on a mismatch.
//!
//! ```text
//! cargo run --release --example tour
//! ```
//!
//! Without an adapter it runs the CPU path alone and says so.

use std::process::ExitCode;
use std::time::Instant;

use posenc::alibi::{self, Alibi};
use posenc::attention::{self, AttentionParams, AttentionShape};
use posenc::learned::{self, LearnedTable};
use posenc::rope::{self, QkShape, RopeConfig};
use posenc::sinusoidal::{self, Sinusoidal};
use posenc::{GpuContext, Layout, Positions};
use rand::{Rng, SeedableRng};

/// Allowed max |GPU - CPU| per operation, for inputs in [-1, 1]. The CPU reference works in
/// f64; the GPU rounds each step to f32 (about 6e-8 relative per step).
mod tolerance {
    /// cos/sin within a few ulps, then a rotation: two products and a sum.
    pub const ROPE: f64 = 2e-6;
    /// Values of order 1 (or 2 when added), cos/sin within a few ulps.
    pub const SINUSOIDAL: f64 = 1e-6;
    /// One f32 addition on both paths: identical.
    pub const LEARNED: f64 = 0.0;
    /// The GPU rounds the slope to f32 and then the product, half an ulp each; with
    /// |bias| < 512 here that is at most one ulp of 256..512, 2^-15.
    pub const ALIBI: f64 = 3.0517578125e-5;
    /// Dot products of 128 terms and softmax over up to 512 keys, in f32.
    pub const ATTENTION: f64 = 2e-5;
}

struct Row {
    op: &'static str,
    shape: String,
    gpu_ms: Option<f64>,
    cpu_ms: f64,
    max_error: Option<f64>,
    tolerance: f64,
}

fn random(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).abs())
        .fold(0.0, f64::max)
        + if a.len() == b.len() {
            0.0
        } else {
            f64::INFINITY
        }
}

/// Times `f` in milliseconds.
fn timed<T>(f: impl FnOnce() -> posenc::Result<T>) -> posenc::Result<(T, f64)> {
    let start = Instant::now();
    let value = f()?;
    Ok((value, start.elapsed().as_secs_f64() * 1e3))
}

/// Runs the CPU closure, then the GPU closure when there is a context, and compares.
fn run(
    ctx: Option<&GpuContext>,
    op: &'static str,
    shape: String,
    tolerance: f64,
    cpu: impl FnOnce() -> posenc::Result<Vec<f32>>,
    gpu: impl Fn(&GpuContext) -> posenc::Result<Vec<f32>>,
) -> posenc::Result<Row> {
    let (want, cpu_ms) = timed(cpu)?;
    let (gpu_ms, max_error) = match ctx {
        Some(ctx) => {
            // The first call compiles the pipeline; time the second, as an application would
            // see every call after its first.
            gpu(ctx)?;
            let (got, gpu_ms) = timed(|| gpu(ctx))?;
            (Some(gpu_ms), Some(max_abs_diff(&got, &want)))
        }
        None => (None, None),
    };
    Ok(Row {
        op,
        shape,
        gpu_ms,
        cpu_ms,
        max_error,
        tolerance,
    })
}

fn llama3_rope(ctx: Option<&GpuContext>) -> posenc::Result<Row> {
    // Llama-3-8B: 32 query heads, 8 KV heads, head_dim 128, theta 500000; a 2048-token prompt.
    let config = RopeConfig::new(128).with_base(500_000.0);
    let shape = QkShape {
        batch: 1,
        seq_len: 2048,
        num_heads: 32,
        num_kv_heads: 8,
        head_dim: 128,
        layout: Layout::Bshd,
    };
    let (q_len, k_len) = shape.lens()?;
    let (q, k) = (random(1, q_len), random(2, k_len));
    let frequencies = config.frequencies(2048)?;
    let concat = |(mut q, k): (Vec<f32>, Vec<f32>)| {
        q.extend(k);
        q
    };
    run(
        ctx,
        "rope (Q and K)",
        "Llama-3-8B [1, 2048, 32+8, 128]".into(),
        tolerance::ROPE,
        || {
            let (mut q, mut k) = (q.clone(), k.clone());
            rope::apply_cpu(
                &config,
                &frequencies,
                &shape,
                Positions::Start(0),
                &mut q,
                &mut k,
            )?;
            Ok(concat((q, k)))
        },
        |ctx| {
            rope::gpu::apply(
                ctx,
                &config,
                &frequencies,
                &shape,
                Positions::Start(0),
                &q,
                &k,
            )
            .map(concat)
        },
    )
}

fn llama3_attention(ctx: Option<&GpuContext>) -> posenc::Result<Vec<Row>> {
    let shape = AttentionShape::new(1, 32, 8, 512, 512, 128);
    let (q_len, kv_len, _) = shape.lens()?;
    let (q, k, v) = (random(3, q_len), random(4, kv_len), random(5, kv_len));
    let params = AttentionParams {
        causal: true,
        ..Default::default()
    };
    // The fused kernel returns the output and the log-sum-exp of each row.
    let output_and_lse = |result: attention::AttentionOutput| {
        let mut all = result.out;
        all.extend(result.lse);
        all
    };
    let fused = run(
        ctx,
        "attention fused GQA",
        "Llama-3-8B [1, 32/8, 512, 128]".into(),
        tolerance::ATTENTION,
        || attention::attention_cpu(&shape, &params, &q, &k, &v).map(output_and_lse),
        |ctx| {
            attention::fused::attention(ctx, &shape, &params, &q, &k, &v, None).map(output_and_lse)
        },
    )?;

    // The materialising kernel, for inspection, on the first 128 tokens.
    let small = AttentionShape::new(1, 32, 8, 128, 128, 128);
    let (q_len, kv_len, _) = small.lens()?;
    let (q, k, v) = (random(13, q_len), random(14, kv_len), random(15, kv_len));
    let probs_and_output = |result: attention::AttentionOutput| {
        let mut all = result.probs;
        all.extend(result.out);
        all
    };
    let materialised = run(
        ctx,
        "attention probabilities",
        "Llama-3-8B [1, 32/8, 128, 128]".into(),
        tolerance::ATTENTION,
        || attention::attention_cpu(&small, &params, &q, &k, &v).map(probs_and_output),
        |ctx| attention::gpu::attention(ctx, &small, &params, &q, &k, &v).map(probs_and_output),
    )?;
    Ok(vec![fused, materialised])
}

fn bloom_alibi(ctx: Option<&GpuContext>) -> posenc::Result<Vec<Row>> {
    // BLOOM-176B: 112 heads (not a power of two), head_dim 128.
    let alibi = Alibi::new(112);
    let bias = run(
        ctx,
        "alibi bias",
        "BLOOM-176B [112, 512, 512]".into(),
        tolerance::ALIBI,
        || alibi::bias_cpu(&alibi, 512, 512, 0),
        |ctx| alibi::gpu::bias(ctx, &alibi, 512, 512, 0),
    )?;

    let shape = AttentionShape::new(1, 112, 112, 128, 128, 128);
    let (q_len, kv_len, _) = shape.lens()?;
    let (q, k, v) = (random(6, q_len), random(7, kv_len), random(8, kv_len));
    let params = AttentionParams {
        causal: true,
        alibi: Some(alibi),
        ..Default::default()
    };
    let attention = run(
        ctx,
        "attention fused ALiBi",
        "BLOOM-176B [1, 112, 128, 128]".into(),
        tolerance::ATTENTION,
        || attention::attention_cpu(&shape, &params, &q, &k, &v).map(|r| r.out),
        |ctx| attention::fused::attention(ctx, &shape, &params, &q, &k, &v, None).map(|r| r.out),
    )?;
    Ok(vec![bias, attention])
}

fn gpt2_learned(ctx: Option<&GpuContext>) -> posenc::Result<Row> {
    // GPT-2: a trained 1024 x 768 table; a full 1024-token context.
    let table_shape = LearnedTable::new(1024, 768);
    let table = random(9, 1024 * 768);
    let embeddings = random(10, 1024 * 768);
    run(
        ctx,
        "learned add",
        "GPT-2 [1, 1024, 768]".into(),
        tolerance::LEARNED,
        || {
            let mut out = embeddings.clone();
            learned::add_cpu(&table_shape, &table, Positions::Start(0), 1, 1024, &mut out)?;
            Ok(out)
        },
        |ctx| {
            learned::gpu::add(
                ctx,
                &table_shape,
                &table,
                Positions::Start(0),
                1,
                1024,
                &embeddings,
            )
        },
    )
}

fn transformer_sinusoidal(ctx: Option<&GpuContext>) -> posenc::Result<Row> {
    // The original Transformer: d_model 512, added to a batch of 8 sequences of 512 tokens.
    let encoding = Sinusoidal::new(512);
    let embeddings = random(11, 8 * 512 * 512);
    run(
        ctx,
        "sinusoidal add",
        "Transformer [8, 512, 512]".into(),
        tolerance::SINUSOIDAL,
        || {
            let mut out = embeddings.clone();
            sinusoidal::add_cpu(&encoding, Positions::Start(0), 8, 512, &mut out)?;
            Ok(out)
        },
        |ctx| sinusoidal::gpu::add(ctx, &encoding, Positions::Start(0), 8, 512, &embeddings),
    )
}

fn print_table(rows: &[Row], adapter: &str) -> bool {
    println!(
        "{:<24} {:<34} {:<28} {:>10} {:>10} {:>11} {:>4}",
        "operation", "shape", "adapter", "GPU ms*", "CPU ms", "max |err|", "ok"
    );
    let mut all_ok = true;
    for row in rows {
        let ok = row.max_error.is_none_or(|e| e <= row.tolerance);
        all_ok &= ok;
        let gpu_ms = row.gpu_ms.map_or("-".to_string(), |ms| format!("{ms:.1}"));
        let error = row
            .max_error
            .map_or("-".to_string(), |e| format!("{e:.2e}"));
        let verdict = match (row.max_error, ok) {
            (None, _) => "cpu",
            (Some(_), true) => "ok",
            (Some(_), false) => "FAIL",
        };
        println!(
            "{:<24} {:<34} {:<28} {:>10} {:>10.1} {:>11} {:>4}",
            row.op, row.shape, adapter, gpu_ms, row.cpu_ms, error, verdict
        );
    }
    println!("* wall clock of a warm call, including upload and readback");
    all_ok
}

fn main() -> ExitCode {
    env_logger::init();
    let ctx = match GpuContext::new_headless() {
        Ok(ctx) => Some(ctx),
        Err(error) => {
            println!("No GPU adapter ({error}); running the CPU path only, nothing is compared.");
            None
        }
    };
    let adapter = ctx.as_ref().map_or("none (CPU only)".to_string(), |c| {
        let info = c.adapter_info();
        format!(
            "{} {:?}",
            info.name.split(' ').next().unwrap_or(""),
            info.backend
        )
    });
    if let Some(ctx) = &ctx {
        println!("Adapter: {}", ctx.describe());
    }

    let ctx = ctx.as_ref();
    let rows: posenc::Result<Vec<Row>> = (|| {
        let mut rows = vec![llama3_rope(ctx)?];
        rows.extend(llama3_attention(ctx)?);
        rows.extend(bloom_alibi(ctx)?);
        rows.push(gpt2_learned(ctx)?);
        rows.push(transformer_sinusoidal(ctx)?);
        Ok(rows)
    })();
    let rows = match rows {
        Ok(rows) => rows,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    if print_table(&rows, &adapter) {
        ExitCode::SUCCESS
    } else {
        eprintln!("error: a GPU result differs from the CPU reference by more than its tolerance");
        ExitCode::FAILURE
    }
}
