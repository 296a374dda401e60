//! Output of the measurements: a Markdown table, JSON lines and the progress bar.

use std::io::{self, Write};

use crate::bench::Measurement;

/// Formats `measurements` as a Markdown table, one row per measurement.
pub fn format_table(measurements: &[Measurement]) -> String {
    let mut table = String::from(
        "| op | backend | dtype | shape | timing | runs | median ms | min-max ms | GB/s | GFLOP/s | copy GB/s | ratio_to_copy | record µs | pipelines first/repeat |\n\
         |---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for m in measurements {
        let timing = match m.timing {
            crate::bench::Timing::Timestamp => "timestamp",
            crate::bench::Timing::Wall => "wall",
        };
        let copy = match (&m.copy_gb_per_s, &m.copy_kernel) {
            (Some(gb_per_s), Some(kernel)) => format!("{gb_per_s:.2} ({kernel})"),
            _ => String::new(),
        };
        let pipelines = match (m.first_call_pipelines, m.repeat_call_pipelines) {
            (Some(first), Some(repeat)) => format!("{first}/{repeat}"),
            _ => String::new(),
        };
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} | {}+{} | {} | {}-{} | {:.2} | {} | {} | {} | {} | {} |\n",
            m.op,
            m.backend,
            m.dtype,
            m.shape,
            timing,
            m.warmup_runs,
            m.repetitions,
            format_ms(m.median_ms),
            format_ms(m.min_ms),
            format_ms(m.max_ms),
            m.gb_per_s,
            optional(m.gflop_per_s, 2),
            copy,
            optional(m.ratio_to_copy, 2),
            optional(m.record_us, 0),
            pipelines,
        ));
    }
    table
}

fn format_ms(ms: f64) -> String {
    if ms < 1.0 {
        format!("{ms:.3}")
    } else {
        format!("{ms:.1}")
    }
}

fn optional(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(String::new, |v| format!("{v:.decimals$}"))
}

/// Writes the adapters measured and the table of [`format_table`] to `out`.
///
/// # Errors
/// Any error of `out`.
pub fn write_table(measurements: &[Measurement], out: &mut impl Write) -> io::Result<()> {
    let mut adapters: Vec<&str> = measurements.iter().map(|m| m.adapter.as_str()).collect();
    adapters.dedup();
    for adapter in adapters {
        writeln!(out, "adapter: {adapter}")?;
    }
    writeln!(out)?;
    out.write_all(format_table(measurements).as_bytes())
}

/// Writes one JSON object per measurement and line to `out`.
///
/// # Errors
/// Any error of `out`, or a failed serialisation (which the fields of [`Measurement`],
/// numbers, strings and options, do not cause).
pub fn write_json_lines(measurements: &[Measurement], out: &mut impl Write) -> io::Result<()> {
    for m in measurements {
        serde_json::to_writer(&mut *out, m)?;
        writeln!(out)?;
    }
    Ok(())
}

/// A progress bar over the cases on stderr; hidden when disabled.
pub(crate) struct Progress {
    bar: indicatif::ProgressBar,
}

impl Progress {
    pub(crate) fn new(enabled: bool, cases: usize) -> Self {
        let bar = if enabled {
            indicatif::ProgressBar::new(cases as u64)
        } else {
            indicatif::ProgressBar::hidden()
        };
        // The template is a constant that parses; a failure would only lose the styling.
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed} {msg}")
        {
            bar.set_style(style);
        }
        Self { bar }
    }

    pub(crate) fn start(&self, op: &str, backend: &str) {
        self.bar.set_message(format!("{op} ({backend})"));
    }

    pub(crate) fn finish_one(&self) {
        self.bar.inc(1);
    }

    pub(crate) fn clear(&self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::Timing;

    fn sample() -> Measurement {
        let mut m = Measurement::from_times(
            "rope_prefill",
            "gpu",
            "q[1,4096,32,128]",
            Timing::Timestamp,
            "llvmpipe",
            &[2.0, 4.0, 3.0],
            3_000_000,
            None,
        );
        let copy = Measurement::from_times(
            "copy_vec4",
            "gpu",
            "1500000 bytes",
            Timing::Timestamp,
            "llvmpipe",
            &[1.5],
            3_000_000,
            None,
        );
        m.compare_with_copy(&copy);
        m
    }

    #[test]
    fn json_line_has_required_fields() {
        let mut out = Vec::new();
        write_json_lines(&[sample()], &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1);
        let value: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        for field in [
            "op",
            "backend",
            "shape",
            "dtype",
            "median_ms",
            "gb_per_s",
            "gflop_per_s",
            "ratio_to_copy",
            "timing",
            "adapter",
        ] {
            assert!(value.get(field).is_some(), "missing {field}");
        }
        assert_eq!(value["timing"], "timestamp");
        assert_eq!(value["ratio_to_copy"], 0.5);
    }

    #[test]
    fn table_has_header_and_row() {
        let table = format_table(&[sample()]);
        assert_eq!(table.lines().count(), 3);
        assert!(table
            .lines()
            .nth(2)
            .unwrap()
            .starts_with("| rope_prefill | gpu | f32 |"));
    }
}
