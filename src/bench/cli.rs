//! The `posenc bench` subcommand: its options and its output.

use std::io::Write;
use std::process::ExitCode;

use crate::bench::{self, BenchOptions};
use crate::tensor::DType;

/// Options of `posenc bench`. The GPU is the default wgpu adapter (`WGPU_BACKEND`,
/// `WGPU_ADAPTER_NAME` and `WGPU_POWER_PREF` select it).
#[derive(Clone, Debug, clap::Args)]
pub struct BenchArgs {
    /// Print one JSON object per measurement and line instead of a Markdown table.
    #[arg(long)]
    pub json: bool,
    /// Benchmark only the CPU functions, without creating a GPU device.
    #[arg(long, conflicts_with = "gpu")]
    pub cpu: bool,
    /// Benchmark only the GPU kernels.
    #[arg(long)]
    pub gpu: bool,
    /// Run only the cases whose name contains this substring (repeatable), such as `rope`,
    /// `add` or `attention_decode`.
    #[arg(long = "filter", value_name = "SUBSTRING")]
    pub filters: Vec<String>,
    /// Storage types of the GPU cases that have variants, comma-separated (f32, f16, bf16).
    /// CPU cases run only when f32 is listed.
    #[arg(long = "dtype", value_name = "DTYPES", value_delimiter = ',', value_parser = parse_dtype, default_value = "f32")]
    pub dtypes: Vec<DType>,
    /// Timed runs per case.
    #[arg(long, default_value_t = 5)]
    pub repetitions: usize,
    /// Untimed runs per case before the timed ones.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Seconds after which a case stops repeating; a GPU case whose first run takes longer
    /// is timed from that run alone.
    #[arg(long, default_value_t = 3.0, value_name = "SECONDS")]
    pub max_case_seconds: f64,
    /// Draw no progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

impl BenchArgs {
    /// Returns the benchmark options that these arguments select.
    pub fn options(&self) -> BenchOptions {
        BenchOptions {
            repetitions: self.repetitions,
            warmup: self.warmup,
            max_case_seconds: self.max_case_seconds,
            gpu: !self.cpu,
            cpu: !self.gpu,
            filters: self.filters.clone(),
            dtypes: self.dtypes.clone(),
            progress: !self.no_progress,
            ..BenchOptions::default()
        }
    }
}

fn parse_dtype(name: &str) -> Result<DType, String> {
    [DType::F32, DType::F16, DType::Bf16]
        .into_iter()
        .find(|dtype| dtype.name() == name)
        .ok_or_else(|| format!("unknown dtype {name:?}; use f32, f16 or bf16"))
}

/// Runs `posenc bench` and prints its results to stdout. Returns failure, after printing the
/// error, when a case fails or no GPU device can be created (use `--cpu` to skip the GPU).
pub fn run_cli(args: &BenchArgs) -> ExitCode {
    let measurements = match bench::run(&args.options()) {
        Ok(measurements) => measurements,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        bench::write_json_lines(&measurements, &mut out)
    } else {
        bench::write_table(&measurements, &mut out)
    };
    match written.and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: cannot write the results: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    #[test]
    fn args_default_to_f32_on_both_backends() {
        let options = Cli::parse_from(["posenc"]).bench.options();
        assert!(options.gpu);
        assert!(options.cpu);
        assert_eq!(options.dtypes, [DType::F32]);
        assert_eq!(options.repetitions, 5);
    }

    #[test]
    fn args_dtype_list_splits_on_commas() {
        let cli = Cli::parse_from(["posenc", "--dtype", "f32,f16,bf16"]);
        assert_eq!(cli.bench.dtypes, [DType::F32, DType::F16, DType::Bf16]);
    }

    #[test]
    fn args_cpu_only_with_filters() {
        let cli = Cli::parse_from(["posenc", "--cpu", "--filter", "rope", "--dtype", "f32"]);
        let options = cli.bench.options();
        assert!(!options.gpu);
        assert!(options.cpu);
        assert_eq!(options.filters, ["rope"]);
        assert_eq!(options.dtypes, [DType::F32]);
    }

    #[test]
    fn args_reject_unknown_dtype() {
        assert!(Cli::try_parse_from(["posenc", "--dtype", "f64"]).is_err());
    }

    #[test]
    fn args_reject_cpu_with_gpu() {
        assert!(Cli::try_parse_from(["posenc", "--cpu", "--gpu"]).is_err());
    }
}
