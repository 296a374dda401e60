//! The posenc command-line tool: verify golden files and list GPU adapters.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use posenc::golden::{self, Check, ComputePath, Verification};
use posenc::GpuContext;

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
}

fn main() -> ExitCode {
    env_logger::init();
    let cli = Cli::parse();
    match cli.command {
        Command::Verify { paths, cpu_only } => verify(&paths, cpu_only),
        Command::Info => info(),
    }
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
        println!("GPU not checked: --cpu-only was given");
        (None, true)
    } else {
        gpu_context()
    };

    let mut summary = Summary::default();
    for file in &files {
        verify_file(file, ctx.as_ref(), &mut summary);
    }
    let noun = if files.len() == 1 { "file" } else { "files" };
    println!(
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
            println!("GPU: {}", ctx.describe());
            (Some(ctx), false)
        }
        Err(error) => {
            println!("GPU not checked: {error}");
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
                    println!("{}", path_line(&name, compute_path, &of_path));
                }
            }
            if checks.iter().all(|check| check.passed) {
                summary.passed += 1;
            } else {
                summary.failed += 1;
            }
        }
        Ok(Verification::Unsupported { reason }) => {
            println!("{name}  UNSUPPORTED: {reason}");
            summary.unsupported += 1;
        }
        Err(error) => {
            println!("{name}  INVALID: {error}");
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
        println!("no default adapter: GpuContext::new_headless found none of these usable");
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

    println!("{}{marker}", info.name);
    println!("  backend: {:?}", info.backend);
    println!("  device type: {:?}", info.device_type);
    let driver = [info.driver.as_str(), info.driver_info.as_str()]
        .into_iter()
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    println!("  driver: {driver}");

    println!(
        "  max_storage_buffer_binding_size: {} bytes",
        limits.max_storage_buffer_binding_size
    );
    println!(
        "  max_compute_workgroups_per_dimension: {}",
        limits.max_compute_workgroups_per_dimension
    );
    println!(
        "  max_compute_invocations_per_workgroup: {}",
        limits.max_compute_invocations_per_workgroup
    );
    println!(
        "  SHADER_F16: {}",
        features.contains(wgpu::Features::SHADER_F16)
    );
    println!(
        "  TIMESTAMP_QUERY: {}",
        features.contains(wgpu::Features::TIMESTAMP_QUERY)
    );
}
