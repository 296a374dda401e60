//! The `posenc` binary: every plot kind writes a valid PNG and SVG, bad options fail with one
//! line, and output into a closed pipe ends quietly.
#![cfg(feature = "cli")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_posenc");
const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// A fresh folder under the system's temporary folder, removed when dropped.
struct TempFolder(PathBuf);

impl TempFolder {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("posenc-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempFolder(path)
    }

    fn file(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for TempFolder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/configs")
        .join(name)
        .display()
        .to_string()
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_success(args: &[&str], output: &Output) {
    assert!(
        output.status.success(),
        "posenc {} failed with {}: {}",
        args.join(" "),
        output.status,
        text(&output.stderr)
    );
}

fn assert_png(path: &str) {
    let bytes = std::fs::read(path).unwrap();
    assert!(bytes.len() > 1000, "{path} has only {} bytes", bytes.len());
    assert_eq!(&bytes[..8], PNG_SIGNATURE, "{path} lacks the PNG signature");
}

fn assert_svg(path: &str) {
    let svg = std::fs::read_to_string(path).unwrap();
    assert!(
        svg.trim_start().starts_with("<svg"),
        "{path} does not start with <svg"
    );
    assert!(
        svg.trim_end().ends_with("</svg>"),
        "{path} does not end with </svg>"
    );
    assert!(svg.contains("<text"), "{path} has no text elements");
}

/// Small settings of each plot, computed on the CPU reference to keep the test quick (the
/// data tests in tests/plot.rs check the GPU path).
fn plot_cases() -> Vec<(&'static str, Vec<String>)> {
    let owned = |args: &[&str]| args.iter().map(|arg| arg.to_string()).collect();
    vec![
        (
            "sinusoidal",
            owned(&["--dim", "32", "--positions", "40", "--layout", "concat"]),
        ),
        ("rope-frequencies", owned(&[])),
        (
            "rope-frequencies",
            vec!["--config".into(), config("llama-3.1-8b.json")],
        ),
        (
            "rope-frequencies",
            vec!["--config".into(), config("phi-3.5-mini-instruct.json")],
        ),
        (
            "rope-decay",
            owned(&["--scaling", "yarn", "--max-distance", "300"]),
        ),
        (
            "rope-decay",
            vec!["--config".into(), config("qwen2.5-7b-instruct-yarn.json")],
        ),
        (
            "alibi",
            owned(&["--heads", "6", "--len", "12", "--symmetric"]),
        ),
        (
            "attention",
            owned(&[
                "--seq",
                "16",
                "--causal",
                "--window",
                "4",
                "--key-lengths",
                "16,9",
                "--segments",
                "6,10",
                "--heads",
                "2",
                "--alibi",
            ]),
        ),
    ]
}

#[test]
fn plot_writes_png_and_svg_for_every_kind() {
    let folder = TempFolder::new("plot-kinds");
    for (index, (kind, extra)) in plot_cases().into_iter().enumerate() {
        for extension in ["png", "svg"] {
            let out = folder.file(&format!("{index}-{kind}.{extension}"));
            let mut args = vec!["plot", kind, "--cpu", "--out", &out];
            args.extend(extra.iter().map(String::as_str));
            let output = run(&args);
            assert_success(&args, &output);
            assert!(
                text(&output.stdout).starts_with(&format!("wrote {out}")),
                "stdout: {}",
                text(&output.stdout)
            );
            match extension {
                "png" => assert_png(&out),
                _ => assert_svg(&out),
            }
        }
    }
}

#[test]
fn plot_runs_on_the_default_adapter() {
    // The GPU when an adapter exists, otherwise the CPU after a note on stderr.
    let folder = TempFolder::new("plot-gpu");
    let out = folder.file("alibi.png");
    let args = ["plot", "alibi", "--heads", "4", "--len", "8", "--out", &out];
    let output = run(&args);
    assert_success(&args, &output);
    assert_png(&out);
}

#[test]
fn plot_falls_back_to_cpu_without_adapter() {
    let folder = TempFolder::new("plot-fallback");
    let out = folder.file("sinusoidal.png");
    // No Linux machine has a Metal adapter, so wgpu finds none.
    let output = Command::new(BIN)
        .args([
            "plot",
            "sinusoidal",
            "--dim",
            "16",
            "--positions",
            "16",
            "--out",
            &out,
        ])
        .env("WGPU_BACKEND", "metal")
        .env_remove("WGPU_ADAPTER_NAME")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("computing on the CPU reference instead"),
        "stderr: {stderr}"
    );
    assert!(text(&output.stdout).contains("computed on the CPU reference"));
    assert_png(&out);
}

#[test]
fn plot_errors_are_one_line() {
    let folder = TempFolder::new("plot-errors");
    let png = folder.file("x.png");
    let missing_folder = folder.file("no-such-folder/x.png");
    let llama = config("llama-3.1-8b.json");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["plot", "sinusoidal", "--out", "x.jpg"],
            "must be .png or .svg",
        ),
        (
            vec!["plot", "sinusoidal", "--out", &png, "--dim", "7"],
            "invalid value '7' for '--dim",
        ),
        (
            vec!["plot", "sinusoidal", "--out", &png, "--base", "0"],
            "invalid value '0' for '--base",
        ),
        (
            vec![
                "plot",
                "sinusoidal",
                "--out",
                &png,
                "--dim",
                "4096",
                "--positions",
                "65536",
            ],
            "lower --positions or --dim",
        ),
        (vec!["plot", "sinusoidal"], "--out"),
        (
            vec!["plot", "alibi", "--out", &missing_folder],
            "does not exist",
        ),
        (
            vec!["plot", "alibi", "--out", &png, "--heads", "65"],
            "--heads 65",
        ),
        (
            vec![
                "plot",
                "rope-frequencies",
                "--out",
                &png,
                "--config",
                "no-such-config.json",
            ],
            "no-such-config.json",
        ),
        (
            vec![
                "plot",
                "rope-frequencies",
                "--out",
                &png,
                "--longrope-config",
                &llama,
            ],
            "not longrope",
        ),
        (
            vec![
                "plot",
                "rope-frequencies",
                "--out",
                &png,
                "--config",
                &llama,
                "--base",
                "5",
            ],
            "cannot be used with",
        ),
        (
            vec!["plot", "rope-frequencies", "--out", &png, "--factor", "0.5"],
            "at least 1",
        ),
        (
            vec!["plot", "rope-decay", "--out", &png, "--points", "1"],
            "from 2 to 65536",
        ),
        (
            vec![
                "plot",
                "rope-decay",
                "--out",
                &png,
                "--layer-type",
                "full_attention",
            ],
            "--config",
        ),
        (
            vec!["plot", "attention", "--out", &png, "--window", "0"],
            "invalid value '0' for '--window",
        ),
        (
            vec!["plot", "attention", "--out", &png, "--segments", "8,8"],
            "sum to 16 but --seq is 32",
        ),
        (
            vec!["plot", "attention", "--out", &png, "--key-lengths", "40"],
            "--key-lengths value 40",
        ),
        (vec!["plot", "nonsense"], "nonsense"),
    ];
    for (args, expected) in cases {
        let output = run(&args);
        let stderr = text(&output.stderr);
        let command = format!("posenc {}", args.join(" "));
        assert!(!output.status.success(), "{command} succeeded");
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{command}: stderr {stderr:?}"
        );
        assert!(stderr.starts_with("error:"), "{command}: stderr {stderr:?}");
        assert!(
            stderr.contains(expected),
            "{command}: {stderr:?} lacks {expected:?}"
        );
        assert!(!stderr.contains("panicked"), "{command}: {stderr}");
        assert!(!Path::new(&png).exists(), "{command} wrote {png}");
    }
}

#[test]
fn plot_help_states_units_and_definitions() {
    let output = run(&["plot", "rope-decay", "--help"]);
    assert!(output.status.success());
    let help = text(&output.stdout);
    assert!(help.contains("B(r) = (1/(d/2))"), "{help}");
    assert!(help.contains("<POSITIONS>"), "{help}");
    assert!(help.contains("<TOKENS>"), "{help}");

    let output = run(&["plot", "--help"]);
    let help = text(&output.stdout);
    for kind in [
        "sinusoidal",
        "rope-frequencies",
        "rope-decay",
        "alibi",
        "attention",
    ] {
        assert!(help.contains(kind), "plot --help lacks {kind}: {help}");
    }
}

#[test]
fn verify_into_closed_pipe_exits_quietly() {
    let (reader, writer) = std::io::pipe().unwrap();
    // With the read end closed, the first line that verify prints meets a closed pipe.
    drop(reader);
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden");
    let output = Command::new(BIN)
        .args(["verify", "--cpu-only"])
        .arg(golden)
        .stdout(writer)
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    assert!(
        output.status.success(),
        "status {}: {stderr}",
        output.status
    );
}
