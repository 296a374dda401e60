//! Timing of recorded GPU work: timestamp queries where the device has them, wall clock
//! otherwise.

use std::time::Instant;

use crate::bench::{BenchOptions, Timing};
use crate::context::GpuContext;
use crate::error::{Error, Result};
use crate::gpu;

/// Run times of one case.
pub(crate) struct GpuTimes {
    /// Kernel time per run in milliseconds: from timestamps when `timing` is
    /// [`Timing::Timestamp`], else equal to `wall_ms`.
    pub kernel_ms: Vec<f64>,
    /// Submit-to-idle wall-clock time per run, in milliseconds.
    pub wall_ms: Vec<f64>,
    pub timing: Timing,
}

/// Runs `body` inside validation and out-of-memory error scopes and turns a wgpu error
/// raised meanwhile into [`Error::Gpu`].
pub(crate) fn with_error_scopes<T>(
    ctx: &GpuContext,
    during: &'static str,
    body: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let device = ctx.device();
    let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let value = body();
    let validation_error = pollster::block_on(validation.pop());
    let oom_error = pollster::block_on(oom.pop());
    let value = value?;
    match validation_error.or(oom_error) {
        Some(error) => Err(Error::Gpu {
            during,
            message: error.to_string(),
        }),
        None => Ok(value),
    }
}

/// Submits `encoder` and blocks until the device is idle.
pub(crate) fn submit_and_wait(ctx: &GpuContext, encoder: wgpu::CommandEncoder) -> Result<()> {
    ctx.queue().submit([encoder.finish()]);
    wait_idle(ctx)
}

fn wait_idle(ctx: &GpuContext) -> Result<()> {
    ctx.device()
        .poll(wgpu::PollType::wait_indefinitely())
        .map(|_| ())
        .map_err(|e| Error::Gpu {
            during: "device poll",
            message: e.to_string(),
        })
}

pub(crate) fn new_encoder(ctx: &GpuContext, label: &str) -> wgpu::CommandEncoder {
    ctx.device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) })
}

/// Records an empty compute pass that writes the given timestamps. The device needs only
/// `TIMESTAMP_QUERY` for this, whereas `CommandEncoder::write_timestamp` would need
/// `TIMESTAMP_QUERY_INSIDE_ENCODERS`, which the context does not request.
fn mark(
    encoder: &mut wgpu::CommandEncoder,
    query_set: &wgpu::QuerySet,
    beginning: Option<u32>,
    end: Option<u32>,
) {
    let _pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some("posenc bench timestamp"),
        timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
            query_set,
            beginning_of_pass_write_index: beginning,
            end_of_pass_write_index: end,
        }),
    });
}

/// The runs of one case and what preceded them.
pub(crate) struct TimedCase {
    pub times: GpuTimes,
    /// Untimed runs before the timed ones.
    pub warmup_runs: usize,
    /// The context's pipeline count after the first call of `record`.
    pub pipelines_after_first_call: usize,
}

/// Times a case: the first run, then either nothing more or warm-up and timed runs.
///
/// The first call of `record` compiles the case's pipelines on the host, before its commands
/// are submitted, so neither its timestamps nor its submit-to-idle time include compilation.
/// When that first run alone takes longer than `options.max_case_seconds` it is the only
/// sample, because a lavapipe attention run can take tens of seconds. Otherwise it counts as
/// warm-up, `options.warmup - 1` more untimed runs follow, and then up to
/// `options.repetitions` timed runs.
pub(crate) fn time_case(
    ctx: &GpuContext,
    options: &BenchOptions,
    record: &mut impl FnMut(&mut wgpu::CommandEncoder) -> Result<()>,
) -> Result<TimedCase> {
    let first = time_runs(ctx, 1, f64::INFINITY, &mut *record)?;
    let pipelines_after_first_call = ctx.pipeline_count();
    if first.wall_ms.iter().sum::<f64>() / 1e3 > options.max_case_seconds {
        return Ok(TimedCase {
            times: first,
            warmup_runs: 0,
            pipelines_after_first_call,
        });
    }

    for _ in 1..options.warmup {
        let mut encoder = new_encoder(ctx, "posenc bench warm-up");
        record(&mut encoder)?;
        submit_and_wait(ctx, encoder)?;
    }
    Ok(TimedCase {
        times: time_runs(ctx, options.repetitions, options.max_case_seconds, record)?,
        warmup_runs: options.warmup.max(1),
        pipelines_after_first_call,
    })
}

/// Times up to `runs` runs of `record`, each in its own encoder and submission, and stops
/// early once the runs have taken `max_seconds` of wall-clock time (at least one run).
pub(crate) fn time_runs(
    ctx: &GpuContext,
    runs: usize,
    max_seconds: f64,
    mut record: impl FnMut(&mut wgpu::CommandEncoder) -> Result<()>,
) -> Result<GpuTimes> {
    let runs = runs.max(1);
    let timestamps = ctx
        .device()
        .features()
        .contains(wgpu::Features::TIMESTAMP_QUERY);
    let query_set = timestamps.then(|| {
        ctx.device().create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("posenc bench timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count: 2 * runs as u32,
        })
    });

    let mut wall_ms = Vec::with_capacity(runs);
    let started = Instant::now();
    for run in 0..runs as u32 {
        let mut encoder = new_encoder(ctx, "posenc bench run");
        if let Some(query_set) = &query_set {
            mark(&mut encoder, query_set, Some(2 * run), None);
        }
        record(&mut encoder)?;
        if let Some(query_set) = &query_set {
            mark(&mut encoder, query_set, None, Some(2 * run + 1));
        }
        let commands = encoder.finish();

        let submitted = Instant::now();
        ctx.queue().submit([commands]);
        wait_idle(ctx)?;
        wall_ms.push(submitted.elapsed().as_secs_f64() * 1e3);
        if started.elapsed().as_secs_f64() > max_seconds {
            break;
        }
    }

    let kernel_ms = match &query_set {
        Some(query_set) => read_intervals(ctx, query_set, wall_ms.len())?,
        None => None,
    };
    Ok(match kernel_ms {
        Some(kernel_ms) => GpuTimes {
            kernel_ms,
            wall_ms,
            timing: Timing::Timestamp,
        },
        None => GpuTimes {
            kernel_ms: wall_ms.clone(),
            wall_ms,
            timing: Timing::Wall,
        },
    })
}

/// Reads the first `runs` (start, end) timestamp pairs as milliseconds. Returns `None` when
/// an interval is not positive, as from a driver that writes zeros or a counter that wrapped.
fn read_intervals(
    ctx: &GpuContext,
    query_set: &wgpu::QuerySet,
    runs: usize,
) -> Result<Option<Vec<f64>>> {
    let bytes = (2 * runs * std::mem::size_of::<u64>()) as u64;
    let resolved = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("posenc bench timestamps resolved"),
        size: bytes,
        usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let mut encoder = new_encoder(ctx, "posenc bench resolve");
    encoder.resolve_query_set(query_set, 0..2 * runs as u32, &resolved, 0);
    submit_and_wait(ctx, encoder)?;
    // Each timestamp is a little-endian u64, read back as two u32 words.
    let words = gpu::read_u32(ctx, &resolved, 4 * runs)?;
    let ticks: Vec<u64> = words
        .chunks_exact(2)
        .map(|word| u64::from(word[0]) | u64::from(word[1]) << 32)
        .collect();

    let nanoseconds_per_tick = f64::from(ctx.queue().get_timestamp_period());
    let intervals: Vec<f64> = ticks
        .chunks_exact(2)
        .map(|pair| pair[1].wrapping_sub(pair[0]) as i64 as f64 * nanoseconds_per_tick / 1e6)
        .collect();
    if intervals.iter().any(|&ms| ms <= 0.0) {
        log::warn!("GPU timestamps gave a non-positive interval; using wall-clock time");
        return Ok(None);
    }
    Ok(Some(intervals))
}
