//! Benchmarks posenc next to candle-nn's CPU RoPE and burn's wgpu backend, in one process and
//! on one adapter, so that the ratios between them are measured side by side.
//!
//! Usage: `posenc-peers [--json]`. Every row carries posenc's measurement fields plus `peer`.
//! Rows of other libraries are compared with posenc's copy baselines over the same bytes:
//! GPU rows with the faster of posenc's `copy_f32` and `copy_vec4` kernels on posenc's
//! device, CPU rows with `copy_from_slice`.

mod burn_peer;
mod candle_peer;

use std::process::ExitCode;

use posenc::bench::{self, BenchOptions, Measurement};
use posenc::{DType, GpuContext};
use serde::Serialize;

/// Error type of the peer benchmarks; every library's error converts into it.
pub type PeerError = Box<dyn std::error::Error>;

/// One output row: which library ran it, and posenc's measurement fields.
#[derive(Serialize)]
pub struct PeerRow {
    /// The library and version that ran the case, such as `candle-nn 0.11.1`.
    pub peer: String,
    /// The measurement, flattened into the same JSON object.
    #[serde(flatten)]
    pub measurement: Measurement,
}

/// Llama-3-8B's RoPE: 32 query heads, 8 KV heads, head_dim 128, theta 500000.
pub const HEADS: usize = 32;
pub const KV_HEADS: usize = 8;
pub const HEAD_DIM: usize = 128;
pub const THETA: f64 = 500_000.0;
/// Tokens of the prefill case and position of the decode case, as in posenc's benchmark.
pub const PREFILL_TOKENS: usize = 4096;
pub const DECODE_POSITION: usize = 32_767;

/// `len` values in [-1, 1) from a fixed-seed linear congruential generator.
pub fn inputs(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_add(0x2545_F491_4F6C_DD1D);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// RoPE inverse frequencies `theta^(-2i/d)` for `i < d/2`, in f64.
pub fn inverse_frequencies() -> Vec<f64> {
    (0..HEAD_DIM / 2)
        .map(|i| THETA.powf(-2.0 * i as f64 / HEAD_DIM as f64))
        .collect()
}

/// Measures posenc's two GPU copy kernels over `bytes` bytes on `ctx` and returns the
/// faster.
pub fn fastest_gpu_copy(
    ctx: &GpuContext,
    bytes: u64,
    options: &BenchOptions,
) -> Result<Measurement, PeerError> {
    let [scalar, vector] = bench::copy_baseline(ctx, bytes, options)?;
    Ok(if vector.gb_per_s >= scalar.gb_per_s {
        vector
    } else {
        scalar
    })
}

fn main() -> ExitCode {
    let json = std::env::args().skip(1).any(|arg| arg == "--json");
    match run() {
        Ok(rows) => {
            print_rows(&rows, json);
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<Vec<PeerRow>, PeerError> {
    let options = BenchOptions {
        repetitions: 3,
        filters: vec!["rope".into(), "attention_causal".into()],
        dtypes: vec![DType::F32],
        ..BenchOptions::default()
    };
    let ctx = GpuContext::with_request(&options.adapter)?;
    let mut rows = Vec::new();

    eprintln!("posenc on {}", ctx.describe());
    for measurement in bench::run_with_context(Some(&ctx), &options)? {
        rows.push(PeerRow {
            peer: "posenc".to_owned(),
            measurement,
        });
    }
    eprintln!("candle-nn on the CPU");
    rows.extend(candle_peer::run(&options)?);
    eprintln!("burn on wgpu (the first calls compile kernels)");
    rows.extend(burn_peer::run(&ctx, &options)?);
    Ok(rows)
}

fn print_rows(rows: &[PeerRow], json: bool) {
    if json {
        for row in rows {
            match serde_json::to_string(row) {
                Ok(line) => println!("{line}"),
                Err(error) => eprintln!("error: cannot serialise a row: {error}"),
            }
        }
        return;
    }
    let mut peers: Vec<&str> = rows.iter().map(|row| row.peer.as_str()).collect();
    peers.dedup();
    for peer in peers {
        let measurements: Vec<Measurement> = rows
            .iter()
            .filter(|row| row.peer == peer)
            .map(|row| row.measurement.clone())
            .collect();
        println!("## {peer}\n");
        println!("{}", bench::format_table(&measurements));
    }
}
