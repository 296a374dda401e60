//! The CPU cases: the crate's CPU functions on the shapes of the GPU cases.
//!
//! posenc's CPU path is a single-threaded reference that computes in f64, so these rows show
//! what the reference costs, not what a tuned CPU kernel reaches.

use std::time::Instant;

use crate::attention::{attention_cpu, AttentionParams, AttentionShape};
use crate::bench::gpu_cases::{
    attention_shape_label, attention_work, causal_shape, decode_shape, llama3_rope, pattern,
    rope_shape_label, DECODE_POSITION, EMBEDDING_DIM, EMBEDDING_ROWS, PREFILL_TOKENS,
};
use crate::bench::{BenchOptions, Measurement, Timing, WallTimes};
use crate::error::Result;
use crate::learned::{self, LearnedTable};
use crate::rope;
use crate::sinusoidal::{self, Sinusoidal};
use crate::tensor::{DType, Positions};

/// The label of every CPU row's adapter field.
pub(crate) const CPU_ADAPTER: &str = "cpu (posenc CPU functions, 1 thread)";

/// One run of a case.
type Runner = Box<dyn FnMut() -> Result<()>>;

/// A case whose inputs exist.
pub(crate) struct CpuCase {
    shape: String,
    bytes: u64,
    flops: Option<f64>,
    run: Runner,
}

/// A case by name, built only when selected.
pub(crate) struct CpuCaseSpec {
    pub op: &'static str,
    build: fn() -> Result<CpuCase>,
}

/// Lists every CPU case in run order.
pub(crate) fn all() -> Vec<CpuCaseSpec> {
    vec![
        CpuCaseSpec {
            op: "rope_prefill",
            build: || rope_case(PREFILL_TOKENS, 0),
        },
        CpuCaseSpec {
            op: "rope_decode",
            build: || rope_case(1, DECODE_POSITION),
        },
        CpuCaseSpec {
            op: "sinusoidal_add",
            build: sinusoidal_add,
        },
        CpuCaseSpec {
            op: "learned_add",
            build: learned_add,
        },
        CpuCaseSpec {
            op: "attention_causal_reference",
            build: || attention_case(causal_shape()),
        },
        CpuCaseSpec {
            op: "attention_decode_reference",
            build: || attention_case(decode_shape()),
        },
    ]
}

/// Builds, warms up and times `spec`, and compares it with `copy_from_slice` over the same
/// bytes.
pub(crate) fn measure(spec: &CpuCaseSpec, options: &BenchOptions) -> Result<Measurement> {
    let mut case = (spec.build)()?;
    let timed = time_runs(options, &mut case.run)?;
    let mut measurement = Measurement::from_times(
        spec.op,
        "cpu",
        &case.shape,
        Timing::Wall,
        CPU_ADAPTER,
        &timed.times_ms,
        case.bytes,
        case.flops,
    );
    measurement.warmup_runs = timed.warmup_runs;
    measurement.compare_with_copy(&memcpy(case.bytes, options)?);
    Ok(measurement)
}

/// Warms up, then times up to `options.repetitions` runs. Warm-up and timed runs share the
/// `max_case_seconds` budget, and at least one run is always timed.
pub(crate) fn time_runs<E>(
    options: &BenchOptions,
    mut run: impl FnMut() -> std::result::Result<(), E>,
) -> std::result::Result<WallTimes, E> {
    let started = Instant::now();
    let mut warmup_runs = 0;
    while warmup_runs < options.warmup {
        run()?;
        warmup_runs += 1;
        if started.elapsed().as_secs_f64() > options.max_case_seconds {
            break;
        }
    }
    let mut times = Vec::with_capacity(options.repetitions);
    for _ in 0..options.repetitions.max(1) {
        let run_started = Instant::now();
        run()?;
        times.push(run_started.elapsed().as_secs_f64() * 1e3);
        if started.elapsed().as_secs_f64() > options.max_case_seconds {
            break;
        }
    }
    Ok(WallTimes {
        warmup_runs,
        times_ms: times,
    })
}

/// `copy_from_slice` between two f32 buffers moving `bytes` bytes: half read, half written.
pub(crate) fn memcpy(bytes: u64, options: &BenchOptions) -> Result<Measurement> {
    let len = (bytes / 8).max(1) as usize;
    let source = pattern(len, 11);
    let mut destination = vec![0.0f32; len];
    let timed = time_runs(options, || {
        destination.copy_from_slice(&source);
        std::hint::black_box(&mut destination);
        Ok(())
    })?;
    Ok(Measurement::from_times(
        "memcpy",
        "cpu",
        &format!("{} bytes", len * 4),
        Timing::Wall,
        CPU_ADAPTER,
        &timed.times_ms,
        8 * len as u64,
        None,
    ))
}

fn rope_case(seq_len: usize, start: u32) -> Result<CpuCase> {
    let (config, shape) = llama3_rope(seq_len);
    let frequencies = config.frequencies(u64::from(start) + seq_len as u64)?;
    let (q_len, k_len) = shape.lens()?;
    let mut q = pattern(q_len, 1);
    let mut k = pattern(k_len, 2);
    Ok(CpuCase {
        shape: rope_shape_label(&shape, start),
        bytes: 2 * 4 * (q_len + k_len) as u64,
        flops: None,
        run: Box::new(move || {
            rope::apply_cpu(
                &config,
                &frequencies,
                &shape,
                Positions::Start(start),
                &mut q,
                &mut k,
            )
        }),
    })
}

fn sinusoidal_add() -> Result<CpuCase> {
    let encoding = Sinusoidal::new(EMBEDDING_DIM);
    let len = EMBEDDING_ROWS * EMBEDDING_DIM;
    let mut embeddings = pattern(len, 3);
    Ok(CpuCase {
        shape: format!("[{EMBEDDING_ROWS},{EMBEDDING_DIM}]"),
        bytes: 2 * 4 * len as u64,
        flops: None,
        run: Box::new(move || {
            sinusoidal::add_cpu(
                &encoding,
                Positions::Start(0),
                1,
                EMBEDDING_ROWS,
                &mut embeddings,
            )
        }),
    })
}

fn learned_add() -> Result<CpuCase> {
    let table_shape = LearnedTable::new(EMBEDDING_ROWS, EMBEDDING_DIM);
    let len = EMBEDDING_ROWS * EMBEDDING_DIM;
    let table = pattern(len, 4);
    let mut embeddings = pattern(len, 5);
    Ok(CpuCase {
        shape: format!(
            "[{EMBEDDING_ROWS},{EMBEDDING_DIM}] table [{EMBEDDING_ROWS},{EMBEDDING_DIM}]"
        ),
        bytes: 3 * 4 * len as u64,
        flops: None,
        run: Box::new(move || {
            learned::add_cpu(
                &table_shape,
                &table,
                Positions::Start(0),
                1,
                EMBEDDING_ROWS,
                &mut embeddings,
            )
        }),
    })
}

/// Builds an attention case. The CPU reference always materialises the probabilities, so
/// its bytes include them.
fn attention_case(shape: AttentionShape) -> Result<CpuCase> {
    let (q_len, kv_len, _) = shape.lens()?;
    let (bytes, flops) = attention_work(&shape, DType::F32, true)?;
    let q = pattern(q_len, 6);
    let k = pattern(kv_len, 7);
    let v = pattern(kv_len, 8);
    let params = AttentionParams {
        causal: true,
        ..AttentionParams::default()
    };
    Ok(CpuCase {
        shape: attention_shape_label(&shape),
        bytes,
        flops: Some(flops),
        run: Box::new(move || {
            let output = attention_cpu(&shape, &params, &q, &k, &v)?;
            std::hint::black_box(output);
            Ok(())
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_runs_stops_at_budget() {
        let options = BenchOptions {
            repetitions: 100,
            warmup: 0,
            max_case_seconds: 0.0,
            ..BenchOptions::default()
        };
        let timed = time_runs(&options, || Ok::<(), ()>(())).unwrap();
        assert_eq!(timed.times_ms.len(), 1);
    }

    #[test]
    fn time_runs_makes_requested_repetitions() {
        let options = BenchOptions {
            repetitions: 4,
            warmup: 1,
            max_case_seconds: 60.0,
            ..BenchOptions::default()
        };
        let timed = time_runs(&options, || Ok::<(), ()>(())).unwrap();
        assert_eq!(timed.warmup_runs, 1);
        assert_eq!(timed.times_ms.len(), 4);
    }

    #[test]
    fn memcpy_moves_requested_bytes() {
        let options = BenchOptions {
            repetitions: 1,
            warmup: 0,
            ..BenchOptions::default()
        };
        let row = memcpy(1 << 20, &options).unwrap();
        assert_eq!(row.bytes, 1 << 20);
        assert!(row.gb_per_s > 0.0);
    }
}
