//! Shared test helpers: the GPU context, seeded inputs and tolerance checks.
#![allow(dead_code)]

use std::sync::OnceLock;

use posenc::GpuContext;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The GPU context for GPU tests, or `None` with a printed reason.
///
/// Panics when no adapter is found and `POSENC_REQUIRE_GPU=1`, so CI cannot pass by skipping.
pub fn gpu() -> Option<&'static GpuContext> {
    static CONTEXT: OnceLock<Result<GpuContext, String>> = OnceLock::new();
    let context = CONTEXT.get_or_init(|| {
        let context = GpuContext::new_headless().map_err(|e| e.to_string());
        if let Ok(ctx) = &context {
            report(&format!("GPU checks run on {}", ctx.describe()));
        }
        context
    });
    match context {
        Ok(ctx) => Some(ctx),
        Err(reason) if std::env::var("POSENC_REQUIRE_GPU").as_deref() == Ok("1") => {
            panic!("POSENC_REQUIRE_GPU=1 but no GPU adapter is available: {reason}")
        }
        Err(reason) => {
            report(&format!("skipping GPU check: {reason}"));
            None
        }
    }
}

/// Writes a line to the real stderr: the test harness captures `eprintln!`, and a skipped
/// GPU check must be visible without `--nocapture`.
fn report(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// `n` values uniform in [-1, 1) from a fixed seed.
pub fn random_vec(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// A tolerance `abs + rel * |expected|`.
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    pub abs: f64,
    pub rel: f64,
}

/// Asserts `|got - want| <= abs + rel * |want|` element-wise, naming the first failure.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tolerance: Tolerance) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (index, (&g, &w)) in got.iter().zip(want).enumerate() {
        let (g, w) = (f64::from(g), f64::from(w));
        let bound = tolerance.abs + tolerance.rel * w.abs();
        assert!(
            (g - w).abs() <= bound && g.is_finite(),
            "{what}[{index}]: got {g}, want {w}, |diff| {} > {bound}",
            (g - w).abs()
        );
    }
}

/// Asserts two slices are bit-identical.
pub fn assert_bits_equal(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (index, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(
            g.to_bits(),
            w.to_bits(),
            "{what}[{index}]: got {g}, want {w}"
        );
    }
}

use posenc::alibi::Alibi;
use posenc::attention::{AttentionOutput, AttentionParams, AttentionShape};
use posenc::learned::LearnedTable;
use posenc::rope::{QkShape, RopeConfig, RopeFrequencies, RopeTables};
use posenc::sinusoidal::Sinusoidal;
use posenc::Positions;

/// Where an operation runs: one test body checks every backend available.
#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Cpu,
    Gpu(&'static GpuContext),
}

/// The CPU, plus the GPU when an adapter exists (see [`gpu`]).
pub fn backends() -> Vec<Backend> {
    let mut all = vec![Backend::Cpu];
    if let Some(ctx) = gpu() {
        all.push(Backend::Gpu(ctx));
    }
    all
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::Gpu(_) => "gpu",
        }
    }

    pub fn rope(
        &self,
        config: &RopeConfig,
        frequencies: &RopeFrequencies,
        shape: &QkShape,
        positions: Positions<'_>,
        q: &[f32],
        k: &[f32],
    ) -> posenc::Result<(Vec<f32>, Vec<f32>)> {
        match self {
            Backend::Cpu => {
                let (mut q, mut k) = (q.to_vec(), k.to_vec());
                posenc::rope::apply_cpu(config, frequencies, shape, positions, &mut q, &mut k)?;
                Ok((q, k))
            }
            Backend::Gpu(ctx) => {
                posenc::rope::gpu::apply(ctx, config, frequencies, shape, positions, q, k)
            }
        }
    }

    pub fn rope_tables(
        &self,
        config: &RopeConfig,
        frequencies: &RopeFrequencies,
        positions: Positions<'_>,
        seq_len: usize,
    ) -> posenc::Result<RopeTables> {
        match self {
            Backend::Cpu => posenc::rope::tables_cpu(config, frequencies, positions, seq_len),
            Backend::Gpu(ctx) => {
                posenc::rope::gpu::tables(ctx, config, frequencies, positions, seq_len)
            }
        }
    }

    pub fn sinusoidal_table(
        &self,
        encoding: &Sinusoidal,
        positions: Positions<'_>,
        seq_len: usize,
    ) -> posenc::Result<Vec<f32>> {
        match self {
            Backend::Cpu => posenc::sinusoidal::table_cpu(encoding, positions, seq_len),
            Backend::Gpu(ctx) => posenc::sinusoidal::gpu::table(ctx, encoding, positions, seq_len),
        }
    }

    pub fn sinusoidal_add(
        &self,
        encoding: &Sinusoidal,
        positions: Positions<'_>,
        batch: usize,
        seq_len: usize,
        embeddings: &[f32],
    ) -> posenc::Result<Vec<f32>> {
        match self {
            Backend::Cpu => {
                let mut out = embeddings.to_vec();
                posenc::sinusoidal::add_cpu(encoding, positions, batch, seq_len, &mut out)?;
                Ok(out)
            }
            Backend::Gpu(ctx) => {
                posenc::sinusoidal::gpu::add(ctx, encoding, positions, batch, seq_len, embeddings)
            }
        }
    }

    pub fn learned_add(
        &self,
        shape: &LearnedTable,
        table: &[f32],
        positions: Positions<'_>,
        batch: usize,
        seq_len: usize,
        embeddings: &[f32],
    ) -> posenc::Result<Vec<f32>> {
        match self {
            Backend::Cpu => {
                let mut out = embeddings.to_vec();
                posenc::learned::add_cpu(shape, table, positions, batch, seq_len, &mut out)?;
                Ok(out)
            }
            Backend::Gpu(ctx) => {
                posenc::learned::gpu::add(ctx, shape, table, positions, batch, seq_len, embeddings)
            }
        }
    }

    pub fn alibi_bias(
        &self,
        alibi: &Alibi,
        q_len: usize,
        kv_len: usize,
        q_offset: i64,
    ) -> posenc::Result<Vec<f32>> {
        match self {
            Backend::Cpu => posenc::alibi::bias_cpu(alibi, q_len, kv_len, q_offset),
            Backend::Gpu(ctx) => posenc::alibi::gpu::bias(ctx, alibi, q_len, kv_len, q_offset),
        }
    }

    pub fn attention(
        &self,
        shape: &AttentionShape,
        params: &AttentionParams,
        q: &[f32],
        k: &[f32],
        v: &[f32],
    ) -> posenc::Result<AttentionOutput> {
        match self {
            Backend::Cpu => posenc::attention::attention_cpu(shape, params, q, k, v),
            Backend::Gpu(ctx) => posenc::attention::gpu::attention(ctx, shape, params, q, k, v),
        }
    }
}
