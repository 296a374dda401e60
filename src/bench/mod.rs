//! Benchmarks of every operation on the GPU and the CPU, each compared with a plain copy
//! over the same number of bytes.
//!
//! [`run`] times the shapes of a Llama-3-8B prefill and decode step, a 4096 x 4096
//! embedding and a causal attention block, and returns one [`Measurement`] per operation and
//! backend. GPU kernels are recorded with their `record` function into an encoder of their
//! own, so uploads and readbacks are never timed. Where the device has
//! `wgpu::Features::TIMESTAMP_QUERY`, GPU time comes from timestamps written by an empty
//! compute pass before and after the kernel. Otherwise it is the wall-clock time from submit
//! until `Device::poll` returns.
//!
//! Conventions:
//! - Bytes moved count the reads and writes of the main tensors once each. RoPE reads and
//!   writes Q and K. An add reads and writes the embeddings, and the learned add also reads
//!   the table. Attention reads Q, K and V and writes the output, and the materialising
//!   kernel also writes the probabilities. Uniforms, frequency tables, log-sum-exp and
//!   split-K partials are not counted. GB/s is 10^9 bytes per second.
//! - Attention FLOPs are `4 * batch * num_heads * head_dim * visible`, where `visible` counts
//!   the (query, key) pairs the mask lets through: two multiply-adds per feature for `q . k`
//!   and for `P V`. A causal square mask lets `n (n + 1) / 2` pairs through, which is the
//!   usual halving of `n^2` plus the diagonal. Softmax is not counted.
//! - `ratio_to_copy` divides an operation's GB/s by the GB/s of a copy that moves the same
//!   bytes, measured in the same run: the faster of the `copy_f32` and `copy_vec4` kernels of
//!   `shaders/copy.wgsl` on the GPU, and `copy_from_slice` on the CPU.

mod cli;
mod copy;
mod cpu;
mod gpu_cases;
mod report;
mod stats;
mod timer;

use std::collections::HashMap;

use serde::Serialize;

use crate::context::{AdapterRequest, GpuContext};
use crate::error::Result;
use crate::tensor::DType;

pub use cli::{run_cli, BenchArgs};
pub use gpu_cases::adapter_label;
pub use report::{format_table, write_json_lines, write_table};

/// Options of a benchmark run: the cases, the backends and the number of runs.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Timed runs per case, after the warm-up; the median is reported.
    pub repetitions: usize,
    /// Untimed runs before the timed ones. The first GPU run is always made and compiles
    /// the pipelines, so it counts as warm-up even when this is 0 (for the exception, see
    /// `max_case_seconds`).
    pub warmup: usize,
    /// Stop repeating a case once its runs have taken this many seconds (at least one timed
    /// run is always made). A GPU case whose first run alone takes longer is timed from that
    /// run only, without warm-up.
    pub max_case_seconds: f64,
    /// Benchmark the GPU kernels.
    pub gpu: bool,
    /// Benchmark the CPU functions.
    pub cpu: bool,
    /// Run only the cases whose op name contains one of these substrings; empty runs all.
    pub filters: Vec<String>,
    /// Storage types of the GPU cases that have variants (RoPE prefill, the adds and fused
    /// attention). Every case runs in f32 when F32 is listed, and the CPU cases run only
    /// then because the CPU functions take f32 alone. f16 cases are skipped on adapters
    /// without `SHADER_F16`. The default is F32 alone, which keeps a lavapipe run under a
    /// minute; the f16 and bf16 variants add about 40 s there.
    pub dtypes: Vec<DType>,
    /// Draw a progress bar on stderr (hidden when stderr is not a terminal).
    pub progress: bool,
    /// The adapter to benchmark.
    pub adapter: AdapterRequest,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            repetitions: 5,
            warmup: 1,
            max_case_seconds: 3.0,
            gpu: true,
            cpu: true,
            filters: Vec::new(),
            dtypes: vec![DType::F32],
            progress: true,
            adapter: AdapterRequest::default(),
        }
    }
}

impl BenchOptions {
    /// Returns whether the case named `op` passes the filters.
    pub fn selects(&self, op: &str) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| op.contains(f.as_str()))
    }
}

/// The clock behind a measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Timing {
    /// GPU timestamps written before and after the kernel.
    Timestamp,
    /// Wall-clock time: submit until the device is idle on the GPU, the call on the CPU.
    Wall,
}

/// The result of one benchmark case, serialised as one JSON object by
/// [`write_json_lines`].
#[derive(Clone, Debug, Serialize)]
pub struct Measurement {
    /// Operation and case, such as `rope_prefill` or `attention_causal_fused`.
    pub op: String,
    /// `gpu` or `cpu`.
    pub backend: String,
    /// Tensor shapes and layout, such as `q[1,4096,32,128] k[1,4096,8,128] bshd`.
    pub shape: String,
    /// Element type of the tensors.
    pub dtype: String,
    /// The clock behind the times.
    pub timing: Timing,
    /// The GPU adapter and its driver, or a description of the CPU path.
    pub adapter: String,
    /// Untimed runs before the timed ones. On a GPU row, 0 means that the first run took
    /// longer than `max_case_seconds` and is the only sample. Its pipelines were compiled on
    /// the host before its commands were submitted, so its time excludes compilation.
    pub warmup_runs: usize,
    /// Timed runs behind the statistics.
    pub repetitions: usize,
    /// Median time of one run, in milliseconds.
    pub median_ms: f64,
    /// Fastest run, in milliseconds.
    pub min_ms: f64,
    /// Slowest run, in milliseconds.
    pub max_ms: f64,
    /// Median wall-clock time from submit until the device is idle, in milliseconds (GPU
    /// rows only). It adds the submit and wait overhead to the kernel time.
    pub wall_median_ms: Option<f64>,
    /// Bytes read and written by one run (see the module docs for what is counted).
    pub bytes: u64,
    /// `bytes / median`, in 10^9 bytes per second.
    pub gb_per_s: f64,
    /// FLOPs of one run (attention only).
    pub flops: Option<f64>,
    /// `flops / median`, in 10^9 per second (attention only).
    pub gflop_per_s: Option<f64>,
    /// GB/s of the copy this row is compared with (absent on copy rows themselves).
    pub copy_gb_per_s: Option<f64>,
    /// The copy that was faster: `copy_f32`, `copy_vec4` or `memcpy`.
    pub copy_kernel: Option<String>,
    /// `gb_per_s / copy_gb_per_s`.
    pub ratio_to_copy: Option<f64>,
    /// Median host time of one `record` call after warm-up, in microseconds: validation,
    /// uniform and bind-group creation, and encoding, without GPU work (GPU rows only).
    pub record_us: Option<f64>,
    /// Pipelines compiled by the first call (GPU rows only).
    pub first_call_pipelines: Option<usize>,
    /// Pipelines compiled by the calls after the first; 0 means the pipeline cache worked
    /// (GPU rows only).
    pub repeat_call_pipelines: Option<usize>,
}

impl Measurement {
    /// Creates the measurement of `op` from run times in milliseconds, `bytes` moved and
    /// optional `flops`. The copy comparison and the GPU-only fields are left empty.
    ///
    /// Used by posenc's own cases and by comparison benchmarks that time other libraries.
    #[allow(clippy::too_many_arguments)]
    pub fn from_times(
        op: &str,
        backend: &str,
        shape: &str,
        timing: Timing,
        adapter: &str,
        times_ms: &[f64],
        bytes: u64,
        flops: Option<f64>,
    ) -> Self {
        let summary = stats::Summary::of(times_ms);
        let seconds = summary.median / 1e3;
        Self {
            op: op.to_owned(),
            backend: backend.to_owned(),
            shape: shape.to_owned(),
            dtype: "f32".to_owned(),
            timing,
            adapter: adapter.to_owned(),
            warmup_runs: 0,
            repetitions: times_ms.len(),
            median_ms: summary.median,
            min_ms: summary.min,
            max_ms: summary.max,
            wall_median_ms: None,
            bytes,
            gb_per_s: bytes as f64 / seconds / 1e9,
            flops,
            gflop_per_s: flops.map(|f| f / seconds / 1e9),
            copy_gb_per_s: None,
            copy_kernel: None,
            ratio_to_copy: None,
            record_us: None,
            first_call_pipelines: None,
            repeat_call_pipelines: None,
        }
    }

    /// Sets the copy comparison from the copy measurement that moved the same bytes.
    pub fn compare_with_copy(&mut self, copy: &Measurement) {
        self.copy_gb_per_s = Some(copy.gb_per_s);
        self.copy_kernel = Some(copy.op.clone());
        self.ratio_to_copy = Some(self.gb_per_s / copy.gb_per_s);
    }
}

/// Attention FLOPs by the convention of the module docs: `4 * batch * num_heads * head_dim`
/// per visible (query, key) pair.
pub fn attention_flops(
    batch: usize,
    num_heads: usize,
    head_dim: usize,
    visible_pairs: usize,
) -> f64 {
    4.0 * batch as f64 * num_heads as f64 * head_dim as f64 * visible_pairs as f64
}

/// Counts the visible (query, key) pairs of one head under a causal mask with bottom-right
/// alignment, where query row `i` may attend to keys `0..=kv_len - q_len + i`.
pub fn causal_pairs(q_len: usize, kv_len: usize) -> usize {
    (0..q_len)
        .map(|i| (kv_len + i + 1).saturating_sub(q_len).min(kv_len))
        .sum()
}

/// Runs every selected case and returns its measurements in run order. Each GPU operation
/// row follows the copy rows it is compared with, and the CPU rows come last.
///
/// # Errors
/// [`crate::Error::NoAdapter`] or [`crate::Error::Gpu`] when the GPU is requested but no
/// device can be created, and any error of an operation or of wgpu during a case.
pub fn run(options: &BenchOptions) -> Result<Vec<Measurement>> {
    let ctx = if options.gpu {
        Some(GpuContext::with_request(&options.adapter)?)
    } else {
        None
    };
    run_with_context(ctx.as_ref(), options)
}

/// Runs the cases like [`run`], on a context the caller created (`None` runs only the CPU
/// cases).
///
/// # Errors
/// As for [`run`].
pub fn run_with_context(
    ctx: Option<&GpuContext>,
    options: &BenchOptions,
) -> Result<Vec<Measurement>> {
    let gpu_cases: Vec<_> = match ctx {
        Some(ctx) if options.gpu => gpu_cases::all()
            .into_iter()
            .filter(|case| options.selects(case.op) && options.dtypes.contains(&case.dtype))
            .filter(|case| {
                let supported = case.dtype != DType::F16 || ctx.supports_f16();
                if !supported {
                    log::info!("skipping {} f16: the adapter has no SHADER_F16", case.op);
                }
                supported
            })
            .collect(),
        _ => Vec::new(),
    };
    let cpu_cases: Vec<_> = if options.cpu && options.dtypes.contains(&DType::F32) {
        cpu::all()
            .into_iter()
            .filter(|case| options.selects(case.op))
            .collect()
    } else {
        Vec::new()
    };
    let progress = report::Progress::new(options.progress, gpu_cases.len() + cpu_cases.len());
    let mut measurements = Vec::new();

    if let Some(ctx) = ctx {
        let mut copies = CopyCache::default();
        for case in &gpu_cases {
            progress.start(case.op, case.dtype.name());
            let mut measurement = gpu_cases::measure(ctx, case, options)?;
            let copy = copies.get(ctx, measurement.bytes, options, &mut measurements)?;
            measurement.compare_with_copy(&copy);
            measurements.push(measurement);
            progress.finish_one();
        }
    }
    for case in &cpu_cases {
        progress.start(case.op, "cpu");
        measurements.push(cpu::measure(case, options)?);
        progress.finish_one();
    }
    progress.clear();
    Ok(measurements)
}

/// The GPU copy baseline for each byte count, measured once per run.
#[derive(Default)]
struct CopyCache {
    fastest: HashMap<u64, Measurement>,
}

impl CopyCache {
    /// Returns the faster copy of `bytes` moved. On first use it measures both copy kernels
    /// and appends their rows to `rows`.
    fn get(
        &mut self,
        ctx: &GpuContext,
        bytes: u64,
        options: &BenchOptions,
        rows: &mut Vec<Measurement>,
    ) -> Result<Measurement> {
        if let Some(copy) = self.fastest.get(&bytes) {
            return Ok(copy.clone());
        }
        let [scalar, vector] = copy::measure_both(ctx, bytes, options)?;
        let fastest = if vector.gb_per_s >= scalar.gb_per_s {
            vector.clone()
        } else {
            scalar.clone()
        };
        rows.push(scalar);
        rows.push(vector);
        self.fastest.insert(bytes, fastest.clone());
        Ok(fastest)
    }
}

/// Measures the copy kernels `copy_f32` and `copy_vec4` moving `bytes` bytes (half read,
/// half written) on `ctx`, so another benchmark can compare itself with the same baseline.
///
/// # Errors
/// [`crate::Error::Gpu`] when wgpu fails.
pub fn copy_baseline(
    ctx: &GpuContext,
    bytes: u64,
    options: &BenchOptions,
) -> Result<[Measurement; 2]> {
    copy::measure_both(ctx, bytes, options)
}

/// Measures `copy_from_slice` moving `bytes` bytes (half read, half written) on the CPU, the
/// baseline of the CPU rows.
///
/// # Errors
/// None in practice; the signature matches the other baselines.
pub fn memcpy_baseline(bytes: u64, options: &BenchOptions) -> Result<Measurement> {
    cpu::memcpy(bytes, options)
}

/// Wall-clock run times of a case, as [`time_wall`] measures them.
#[derive(Clone, Debug, PartialEq)]
pub struct WallTimes {
    /// Untimed runs made before the timed ones.
    pub warmup_runs: usize,
    /// Time of each timed run, in milliseconds.
    pub times_ms: Vec<f64>,
}

/// Times `run` as the CPU cases are timed.
///
/// `options.warmup` untimed runs come first, then up to `options.repetitions` timed runs.
/// Runs stop once warm-up and timed runs together pass `options.max_case_seconds`, but at
/// least one run is always timed.
///
/// # Errors
/// The first error of `run`.
pub fn time_wall<E>(
    options: &BenchOptions,
    run: impl FnMut() -> std::result::Result<(), E>,
) -> std::result::Result<WallTimes, E> {
    cpu::time_runs(options, run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causal_pairs_square_is_triangle() {
        assert_eq!(causal_pairs(4, 4), 10);
        assert_eq!(causal_pairs(2048, 2048), 2048 * 2049 / 2);
    }

    #[test]
    fn causal_pairs_decode_sees_every_key() {
        assert_eq!(causal_pairs(1, 32768), 32768);
    }

    #[test]
    fn causal_pairs_longer_queries_hide_first_rows() {
        // q_offset = kv_len - q_len = -2, so rows 0 and 1 have no visible key, row 2 has
        // key 0 and row 3 has keys 0 and 1.
        assert_eq!(causal_pairs(4, 2), 1 + 2);
    }

    #[test]
    fn attention_flops_counts_four_per_feature() {
        assert_eq!(attention_flops(1, 8, 64, 10), 4.0 * 8.0 * 64.0 * 10.0);
    }

    #[test]
    fn measurement_rates_use_the_median() {
        let m = Measurement::from_times(
            "x",
            "cpu",
            "s",
            Timing::Wall,
            "cpu",
            &[3.0, 1.0, 2.0],
            2_000_000,
            Some(4e6),
        );
        assert_eq!(m.median_ms, 2.0);
        assert_eq!(m.min_ms, 1.0);
        assert_eq!(m.max_ms, 3.0);
        assert!((m.gb_per_s - 1.0).abs() < 1e-12);
        assert!((m.gflop_per_s.unwrap() - 2.0).abs() < 1e-12);
    }

    /// Creates the default context, or returns `None` after saying why the check is skipped.
    fn gpu_or_skip(check: &str) -> Option<GpuContext> {
        match GpuContext::new_headless() {
            Ok(ctx) => Some(ctx),
            Err(error) if std::env::var("POSENC_REQUIRE_GPU").as_deref() == Ok("1") => {
                panic!("POSENC_REQUIRE_GPU=1 but no GPU adapter is available: {error}")
            }
            Err(error) => {
                eprintln!("skipping {check}: {error}");
                None
            }
        }
    }

    /// Runs the smallest case on both backends: one copy pair, the GPU row and the CPU row.
    /// Skips without an adapter unless `POSENC_REQUIRE_GPU=1`.
    #[test]
    fn run_rope_decode_on_every_backend() {
        let Some(ctx) = gpu_or_skip("the GPU benchmark check") else {
            return;
        };
        let options = BenchOptions {
            repetitions: 2,
            filters: vec!["rope_decode".into()],
            progress: false,
            ..BenchOptions::default()
        };
        let rows = run_with_context(Some(&ctx), &options).unwrap();
        let ops: Vec<(&str, &str)> = rows
            .iter()
            .map(|m| (m.op.as_str(), m.backend.as_str()))
            .collect();
        assert_eq!(
            ops,
            [
                ("copy_f32", "gpu"),
                ("copy_vec4", "gpu"),
                ("rope_decode", "gpu"),
                ("rope_decode", "cpu")
            ]
        );

        let gpu_row = &rows[2];
        assert_eq!(gpu_row.repeat_call_pipelines, Some(0));
        assert!(gpu_row.median_ms > 0.0);
        assert!(gpu_row.ratio_to_copy.is_some());
        let expected_timing = if ctx
            .device()
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY)
        {
            Timing::Timestamp
        } else {
            Timing::Wall
        };
        assert_eq!(gpu_row.timing, expected_timing);
        assert_eq!(rows[3].copy_kernel.as_deref(), Some("memcpy"));
    }

    /// With no time budget, the first run is the only sample and nothing warms up.
    #[test]
    fn run_slow_first_run_is_only_sample() {
        let Some(ctx) = gpu_or_skip("the first-run benchmark check") else {
            return;
        };
        let options = BenchOptions {
            repetitions: 5,
            warmup: 3,
            max_case_seconds: 0.0,
            filters: vec!["rope_decode".into()],
            cpu: false,
            progress: false,
            ..BenchOptions::default()
        };
        let rows = run_with_context(Some(&ctx), &options).unwrap();
        let gpu_row = &rows[2];
        assert_eq!(gpu_row.op, "rope_decode");
        assert_eq!(gpu_row.warmup_runs, 0);
        assert_eq!(gpu_row.repetitions, 1);
        assert_eq!(gpu_row.repeat_call_pipelines, Some(0));
    }

    /// A device without `TIMESTAMP_QUERY` falls back to wall-clock time.
    #[test]
    fn run_without_timestamps_uses_wall_clock() {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = match pollster::block_on(
            instance.request_adapter(&wgpu::RequestAdapterOptions::default()),
        ) {
            Ok(adapter) => adapter,
            Err(error) => {
                eprintln!("skipping the wall-clock benchmark check: {error}");
                return;
            }
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            required_limits: adapter.limits(),
            ..wgpu::DeviceDescriptor::default()
        }))
        .unwrap();
        let ctx = GpuContext::from_device(device, queue);
        let options = BenchOptions {
            repetitions: 2,
            filters: vec!["rope_decode".into()],
            cpu: false,
            progress: false,
            ..BenchOptions::default()
        };
        let rows = run_with_context(Some(&ctx), &options).unwrap();
        assert_eq!(rows.len(), 3);
        assert!(rows.iter().all(|m| m.timing == Timing::Wall));
        assert_eq!(rows[2].wall_median_ms, Some(rows[2].median_ms));
    }

    #[test]
    fn filters_match_substrings() {
        let options = BenchOptions {
            filters: vec!["rope".into()],
            ..BenchOptions::default()
        };
        assert!(options.selects("rope_decode"));
        assert!(!options.selects("learned_add"));
        assert!(BenchOptions::default().selects("learned_add"));
    }
}
