//! The posenc command-line tool: verify golden files, list GPU adapters and draw plots.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use posenc::golden::{self, Check, ComputePath, Verification};
use posenc::plot::cli::PlotArgs;
use posenc::plot::Backend;
use posenc::GpuContext;

/// Prints a line to stdout like `println!`, but exits quietly when stdout is a closed pipe
/// (as in `posenc verify ... | head`), where `println!` would panic.
macro_rules! outln {
    ($($arg:tt)*) => {
        write_stdout_line(format_args!($($arg)*))
    };
}

/// Writes one line to stdout. A closed pipe ends the process with status 0, as the reader
/// has stopped reading; any other write error ends it with status 1.
fn write_stdout_line(line: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = writeln!(stdout, "{line}") {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: failed to write to stdout: {error}");
        std::process::exit(1);
    }
}

/// Transformer positional encodings and masked attention on wgpu, with a CPU reference.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Recompute golden test vectors with posenc and compare them with the stored outputs.
    ///
    /// Prints one line per file and path (host, cpu, gpu) and a summary, and exits with status
    /// 1 when any file fails, is unsupported or is invalid. The GPU is the default wgpu
    /// adapter (WGPU_BACKEND, WGPU_ADAPTER_NAME and WGPU_POWER_PREF select it). Without an
    /// adapter, or with --cpu-only, only the host and CPU paths are checked, and the exit
    /// status is then 1 when POSENC_REQUIRE_GPU=1.
    Verify {
        /// Golden files (*.json), or folders whose *.json files are verified in name order.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Check only the host and CPU paths and create no GPU device.
        #[arg(long)]
        cpu_only: bool,
    },
    /// List every adapter wgpu finds, with its driver, limits and features.
    Info,
    /// Draw an encoding, a RoPE scaling comparison, ALiBi biases or attention maps to a PNG
    /// or SVG file.
    ///
    /// Data is computed on the default wgpu adapter, or on the CPU reference with --cpu or
    /// when no adapter is found (with a note on stderr).
    Plot(PlotArgs),
    /// Time every operation on the GPU and the CPU, each against a copy of the same bytes.
    ///
    /// Prints a Markdown table, or one JSON object per measurement with --json. BENCHMARKS.md
    /// describes the method and records a run.
    Bench(posenc::bench::BenchArgs),
}

fn main() -> ExitCode {
    env_logger::init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return argument_error(&error),
    };
    match cli.command {
        Command::Verify { paths, cpu_only } => verify(&paths, cpu_only),
        Command::Info => info(),
        Command::Plot(args) => plot(&args),
        Command::Bench(args) => posenc::bench::run_cli(&args),
    }
}

/// Prints help or the version, or an argument error on stderr as one line, and returns
/// clap's exit status (0 for help and the version, 2 for an error).
fn argument_error(error: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;

    let status = ExitCode::from(error.exit_code() as u8);
    // Help and version text, and the help printed for a missing subcommand, keep their lines.
    let whole = matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    if whole {
        // A closed pipe (`posenc --help | head`) loses the rest of the text, which is fine.
        let _ = error.print();
    } else {
        eprintln!("{}", one_line(error));
    }
    status
}

/// Joins clap's message into one line, without the usage block.
fn one_line(error: &clap::Error) -> String {
    use clap::error::ErrorKind;

    let rendered = error.render().to_string();
    let mut parts: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("Usage:"))
        .collect();

    // A bad value's message already states what is expected, so the pointer to --help goes.
    let value_error = matches!(
        error.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    );
    if value_error && parts.len() > 1 {
        parts.retain(|line| !line.starts_with("For more information"));
    }
    let mut line = String::new();
    for part in parts {
        if !line.is_empty() {
            // Each of clap's lines is a sentence or a list item; keep them apart.
            if !line.ends_with(['.', ':', ';', ',']) {
                line.push('.');
            }
            line.push(' ');
        }
        line.push_str(part);
    }
    line
}

/// File counts by outcome.
#[derive(Default)]
struct Summary {
    passed: usize,
    failed: usize,
    unsupported: usize,
    invalid: usize,
}

fn verify(paths: &[PathBuf], cpu_only: bool) -> ExitCode {
    let files = match golden_files(paths) {
        Ok(files) => files,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::FAILURE;
        }
    };
    let (ctx, gpu_missing) = if cpu_only {
        outln!("GPU not checked: --cpu-only was given");
        (None, true)
    } else {
        gpu_context()
    };

    let mut summary = Summary::default();
    for file in &files {
        verify_file(file, ctx.as_ref(), &mut summary);
    }
    let noun = if files.len() == 1 { "file" } else { "files" };
    outln!(
        "{} {noun}: {} passed, {} failed, {} unsupported, {} invalid",
        files.len(),
        summary.passed,
        summary.failed,
        summary.unsupported,
        summary.invalid
    );

    let require_gpu = std::env::var("POSENC_REQUIRE_GPU").as_deref() == Ok("1");
    if gpu_missing && require_gpu {
        eprintln!("error: POSENC_REQUIRE_GPU=1 but the GPU path was not checked; install a GPU driver and drop --cpu-only, or unset POSENC_REQUIRE_GPU");
        return ExitCode::FAILURE;
    }
    if summary.failed + summary.unsupported + summary.invalid > 0 {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Creates the GPU context, or returns `None` and `true` after printing why the GPU is not
/// checked.
fn gpu_context() -> (Option<GpuContext>, bool) {
    match GpuContext::new_headless() {
        Ok(ctx) => {
            outln!("GPU: {}", ctx.describe());
            (Some(ctx), false)
        }
        Err(error) => {
            outln!("GPU not checked: {error}");
            (None, true)
        }
    }
}

/// Expands folders to their `*.json` files in name order and keeps files as given.
fn golden_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for path in paths {
        if !path.is_dir() {
            files.push(path.clone());
            continue;
        }
        let entries = std::fs::read_dir(path)
            .map_err(|e| format!("cannot read folder {}: {e}", path.display()))?;
        let mut found: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|file| file.extension().is_some_and(|ext| ext == "json"))
            .collect();
        if found.is_empty() {
            return Err(format!(
                "folder {} contains no *.json files; pass a folder of golden files",
                path.display()
            ));
        }
        found.sort();
        files.extend(found);
    }
    Ok(files)
}

fn verify_file(path: &Path, ctx: Option<&GpuContext>, summary: &mut Summary) {
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let outcome = golden::load(path).and_then(|file| golden::verify(&file, ctx));
    match outcome {
        Ok(Verification::Checked(checks)) => {
            for compute_path in [ComputePath::Host, ComputePath::Cpu, ComputePath::Gpu] {
                let of_path: Vec<&Check> =
                    checks.iter().filter(|c| c.path == compute_path).collect();
                if !of_path.is_empty() {
                    outln!("{}", path_line(&name, compute_path, &of_path));
                }
            }
            if checks.iter().all(|check| check.passed) {
                summary.passed += 1;
            } else {
                summary.failed += 1;
            }
        }
        Ok(Verification::Unsupported { reason }) => {
            outln!("{name}  UNSUPPORTED: {reason}");
            summary.unsupported += 1;
        }
        Err(error) => {
            outln!("{name}  INVALID: {error}");
            summary.invalid += 1;
        }
    }
}

/// Formats one line: file, path, then each quantity's largest error and that element's
/// bound, then the verdict. A failed quantity also names its element furthest past the bound.
fn path_line(name: &str, path: ComputePath, checks: &[&Check]) -> String {
    let mut line = format!("{name}  {path:<4}");
    for check in checks {
        line.push_str(&format!(
            "  {} max_err {:.2e} bound {:.2e}",
            check.quantity, check.max_abs_error, check.bound
        ));
        if !check.passed {
            line.push_str(&format!(
                " FAIL at [{}], {:.3}x its bound",
                check.worst_index, check.worst_ratio
            ));
        }
    }
    let passed = checks.iter().all(|check| check.passed);
    line.push_str(if passed { "  PASS" } else { "  FAIL" });
    line
}

fn info() -> ExitCode {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    if adapters.is_empty() {
        eprintln!("error: wgpu found no adapter; install a Vulkan driver (on Debian: apt-get install mesa-vulkan-drivers libvulkan1) or set WGPU_BACKEND=gl");
        return ExitCode::FAILURE;
    }
    // The default is the adapter that `verify` uses, chosen as GpuContext::new_headless does.
    let default = GpuContext::new_headless()
        .ok()
        .map(|ctx| ctx.adapter_info().clone());
    for adapter in &adapters {
        print_adapter(adapter, default.as_ref());
    }
    if default.is_none() {
        outln!("no default adapter: GpuContext::new_headless found none of these usable");
    }
    ExitCode::SUCCESS
}

fn print_adapter(adapter: &wgpu::Adapter, default: Option<&wgpu::AdapterInfo>) {
    let info = adapter.get_info();
    let limits = adapter.limits();
    let features = adapter.features();
    let marker = if default == Some(&info) {
        " (default)"
    } else {
        ""
    };

    outln!("{}{marker}", info.name);
    outln!("  backend: {:?}", info.backend);
    outln!("  device type: {:?}", info.device_type);
    let driver = [info.driver.as_str(), info.driver_info.as_str()]
        .into_iter()
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    outln!("  driver: {driver}");

    outln!(
        "  max_storage_buffer_binding_size: {} bytes",
        limits.max_storage_buffer_binding_size
    );
    outln!(
        "  max_compute_workgroups_per_dimension: {}",
        limits.max_compute_workgroups_per_dimension
    );
    outln!(
        "  max_compute_invocations_per_workgroup: {}",
        limits.max_compute_invocations_per_workgroup
    );
    outln!(
        "  SHADER_F16: {}",
        features.contains(wgpu::Features::SHADER_F16)
    );
    outln!(
        "  TIMESTAMP_QUERY: {}",
        features.contains(wgpu::Features::TIMESTAMP_QUERY)
    );
}

fn plot(args: &PlotArgs) -> ExitCode {
    // Options and config files are checked before a GPU device is created.
    let job = match args.job() {
        Ok(job) => job,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let ctx = if job.cpu {
        None
    } else {
        match GpuContext::new_headless() {
            Ok(ctx) => Some(ctx),
            Err(error) => {
                eprintln!("note: {error}; computing on the CPU reference instead");
                None
            }
        }
    };
    let backend = ctx.as_ref().map_or(Backend::Cpu, Backend::Gpu);
    match job.run(backend) {
        Ok(()) => {
            outln!(
                "wrote {} (computed on {})",
                job.out.display(),
                backend.describe()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
