//! Golden tests. posenc recomputes every file in tests/data/golden (outputs of transformers,
//! PyTorch and the ALiBi authors' code) on the host, the CPU and the GPU. Files mutated into
//! invalid or unsupported ones must give a typed error or outcome, not a panic.

mod common;

use std::path::{Path, PathBuf};

use posenc::golden::{self, ComputePath, GoldenFile, Quantity, Verification};
use posenc::Error;
use serde_json::Value;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden")
}

/// Loads the golden files of one kind, in name order. Panics when the folder is missing or
/// contains no file of that kind, so the tests cannot pass without their inputs.
fn files_of_kind(kind: &str) -> Vec<GoldenFile> {
    let dir = golden_dir();
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read the golden folder {}: {e}", dir.display()));
    let mut paths: Vec<PathBuf> = entries
        .map(|entry| entry.expect("golden folder entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    paths.sort();
    let files: Vec<GoldenFile> = paths
        .iter()
        .map(|path| golden::load(path).unwrap_or_else(|e| panic!("{e}")))
        .filter(|file| file.kind == kind)
        .collect();
    assert!(
        !files.is_empty(),
        "no golden file of kind {kind:?} in {}",
        dir.display()
    );
    files
}

/// Verifies every file of `kind` on the host and CPU, and on the GPU when one is available,
/// and asserts that each check passes.
fn verify_kind(kind: &str, has_gpu_path: bool) {
    let ctx = common::gpu();
    for file in files_of_kind(kind) {
        let checks = match golden::verify(&file, ctx) {
            Ok(Verification::Checked(checks)) => checks,
            Ok(Verification::Unsupported { reason }) => {
                panic!("{}: unsupported: {reason}", file.name)
            }
            Err(e) => panic!("{}: {e}", file.name),
        };
        assert!(!checks.is_empty(), "{}: no checks", file.name);
        if has_gpu_path {
            let gpu_checks = checks.iter().filter(|c| c.path == ComputePath::Gpu).count();
            assert_eq!(
                gpu_checks > 0,
                ctx.is_some(),
                "{}: GPU checks present iff a GPU is available",
                file.name
            );
        }
        for check in &checks {
            assert!(
                check.passed,
                "{} {} {}: max error {:e}, element {} is {}x its bound",
                file.name,
                check.path,
                check.quantity,
                check.max_abs_error,
                check.worst_index,
                check.worst_ratio
            );
        }
    }
}

#[test]
fn rope_files_pass() {
    verify_kind("rope", true);
}

#[test]
fn alibi_slopes_files_pass() {
    verify_kind("alibi_slopes", false);
}

#[test]
fn sinusoidal_files_pass() {
    verify_kind("sinusoidal", true);
}

#[test]
fn attention_files_pass() {
    verify_kind("attention", true);
}

#[test]
fn rope_file_covers_every_quantity() {
    let path = golden_dir().join("rope_yarn_qwen_f4_orig32768_d128.json");
    let file = golden::load(path).expect("load");
    let Ok(Verification::Checked(checks)) = golden::verify(&file, None) else {
        panic!("rope file not checked");
    };
    let have = |path, quantity| {
        checks
            .iter()
            .any(|c| c.path == path && c.quantity == quantity)
    };
    assert!(have(ComputePath::Host, Quantity::InvFreq));
    assert!(have(ComputePath::Host, Quantity::AttentionScaling));
    assert!(have(ComputePath::Cpu, Quantity::Cos));
    assert!(have(ComputePath::Cpu, Quantity::Sin));
    assert!(have(ComputePath::Cpu, Quantity::Y));
}

// Mutated files: each is one golden file with one change, verified on the CPU path.

const ROPE: &str = "rope_partial_neox_0.25_d64.json";
const ATTENTION: &str = "attn_decode_q1_kv16_mqa_window6.json";

fn load_json(name: &str) -> Value {
    let path = golden_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("golden file is JSON")
}

/// Parses and verifies `value` on the CPU path, naming it mutated.json in messages.
fn verify_value(value: &Value) -> posenc::Result<Verification> {
    let file = golden::parse(&value.to_string(), "mutated.json")?;
    golden::verify(&file, None)
}

fn mutated(name: &str, mutate: impl FnOnce(&mut Value)) -> posenc::Result<Verification> {
    let mut value = load_json(name);
    mutate(&mut value);
    verify_value(&value)
}

fn assert_unsupported(outcome: posenc::Result<Verification>, expected_words: &str) {
    match outcome {
        Ok(Verification::Unsupported { reason }) => assert!(
            reason.contains(expected_words),
            "reason {reason:?} does not mention {expected_words:?}"
        ),
        other => panic!("expected Unsupported, got {other:?}"),
    }
}

fn assert_length_mismatch(outcome: posenc::Result<Verification>, expected_name: &str) {
    match outcome {
        Err(Error::LengthMismatch { name, .. }) => assert_eq!(name, expected_name),
        other => panic!("expected LengthMismatch for {expected_name}, got {other:?}"),
    }
}

fn assert_config_error(outcome: posenc::Result<Verification>, expected_words: &str) {
    match outcome {
        Err(Error::Config { message, .. }) => assert!(
            message.contains(expected_words),
            "message {message:?} does not mention {expected_words:?}"
        ),
        other => panic!("expected a Config error, got {other:?}"),
    }
}

fn assert_invalid_shape(outcome: posenc::Result<Verification>, expected_name: &str) {
    match outcome {
        Err(Error::InvalidShape { name, .. }) => assert_eq!(name, expected_name),
        other => panic!("expected InvalidShape for {expected_name}, got {other:?}"),
    }
}

#[test]
fn mutated_unknown_kind_is_unsupported() {
    let outcome = mutated(ROPE, |v| v["kind"] = "xpos".into());
    assert_unsupported(outcome, "xpos");
}

#[test]
fn mutated_unknown_scaling_is_unsupported() {
    let outcome = mutated(ROPE, |v| {
        v["params"]["scaling"]["type"] = "ntk_by_parts".into()
    });
    assert_unsupported(outcome, "ntk_by_parts");
}

#[test]
fn mutated_rope_layout_is_unsupported() {
    let outcome = mutated(ROPE, |v| v["params"]["layout"] = "glm".into());
    assert_unsupported(outcome, "glm");
}

#[test]
fn mutated_alibi_slopes_are_unsupported() {
    let outcome = mutated("attn_alibi_h8_causal.json", |v| {
        v["params"]["alibi_slopes"][3] = 0.3.into();
    });
    assert_unsupported(outcome, "alibi_slopes[3]");
}

#[test]
fn mutated_alignment_is_unsupported() {
    let outcome = mutated(ATTENTION, |v| {
        v["params"]["causal_alignment"] = "top_left".into()
    });
    assert_unsupported(outcome, "top_left");
}

#[test]
fn mutated_x_length_is_rejected() {
    let outcome = mutated(ROPE, |v| {
        v["inputs"]["x"].as_array_mut().expect("x").pop();
    });
    assert_length_mismatch(outcome, "inputs.x");
}

#[test]
fn mutated_cos_length_is_rejected() {
    let outcome = mutated(ROPE, |v| {
        v["outputs"]["cos"].as_array_mut().expect("cos").truncate(3);
    });
    assert_length_mismatch(outcome, "outputs.cos");
}

#[test]
fn mutated_abs_per_position_is_rejected() {
    let outcome = mutated(ROPE, |v| {
        v["tolerance"]["abs_per_position"]
            .as_array_mut()
            .expect("abs_per_position")
            .pop();
    });
    assert_length_mismatch(outcome, "tolerance.abs_per_position");
}

#[test]
fn mutated_attention_q_length_is_rejected() {
    let outcome = mutated(ATTENTION, |v| v["params"]["head_dim"] = 8.into());
    assert_length_mismatch(outcome, "inputs.q");
}

#[test]
fn mutated_negative_head_dim_is_rejected() {
    let outcome = mutated(ROPE, |v| v["params"]["head_dim"] = (-64).into());
    assert_config_error(outcome, "-64");
}

#[test]
fn mutated_missing_base_is_rejected() {
    let outcome = mutated(ROPE, |v| {
        v["params"].as_object_mut().expect("params").remove("base");
    });
    assert_config_error(outcome, "missing field `base`");
}

#[test]
fn mutated_missing_factor_is_rejected() {
    let outcome = mutated("rope_linear_f4_d128.json", |v| {
        let scaling = v["params"]["scaling"].as_object_mut().expect("scaling");
        scaling.remove("factor");
    });
    assert_config_error(outcome, "params.scaling.factor");
}

#[test]
fn mutated_missing_outputs_is_rejected() {
    let outcome = mutated(ROPE, |v| {
        v.as_object_mut().expect("file").remove("outputs");
    });
    assert_config_error(outcome, "missing field `outputs`");
}

#[test]
fn mutated_rotary_dim_is_rejected() {
    let outcome = mutated(ROPE, |v| v["params"]["rotary_dim"] = 66.into());
    assert_invalid_shape(outcome, "rotary_dim");
}

#[test]
fn mutated_shape_is_rejected() {
    let outcome = mutated(ROPE, |v| v["inputs"]["shape"][0] = 6.into());
    assert_invalid_shape(outcome, "inputs.shape[0]");
}

#[test]
fn mutated_masked_row_is_rejected() {
    let outcome = mutated(ATTENTION, |v| {
        v["outputs"]["fully_masked_rows"] = serde_json::json!([[0, 5]]);
    });
    assert_invalid_shape(outcome, "outputs.fully_masked_rows");
}

#[test]
fn mutated_position_past_u32_is_rejected() {
    let outcome = mutated(ROPE, |v| v["inputs"]["positions"][6] = (1u64 << 32).into());
    assert!(
        matches!(outcome, Err(Error::PositionOutOfRange { position, .. }) if position == 1 << 32),
        "got {outcome:?}"
    );
}

#[test]
fn mutated_tolerance_is_rejected() {
    let outcome = mutated(ROPE, |v| v["tolerance"]["rel"] = (-1.0).into());
    assert!(
        matches!(
            outcome,
            Err(Error::InvalidParameter {
                name: "tolerance.rel",
                ..
            })
        ),
        "got {outcome:?}"
    );
}

#[test]
fn mutated_zero_alibi_heads_is_rejected() {
    let outcome = mutated("alibi_slopes_h8.json", |v| {
        v["params"]["num_heads"] = 0.into();
        v["outputs"]["slopes"] = serde_json::json!([]);
    });
    assert_invalid_shape(outcome, "num_heads");
}

#[test]
fn invalid_json_is_rejected() {
    let outcome = golden::parse("{\"kind\": \"rope\",", "broken.json");
    assert!(
        matches!(&outcome, Err(Error::Config { path, .. }) if path == "broken.json"),
        "got {outcome:?}"
    );
}

#[test]
fn mutated_expected_cos_fails() {
    let outcome = mutated(ROPE, |v| {
        let cos = &mut v["outputs"]["cos"][20];
        *cos = (cos.as_f64().expect("cos value") + 0.01).into();
    });
    let Ok(Verification::Checked(checks)) = outcome else {
        panic!("expected checks, got {outcome:?}");
    };
    let failed: Vec<_> = checks.iter().filter(|c| !c.passed).collect();
    assert_eq!(failed.len(), 1, "only cpu cos fails: {failed:?}");
    assert_eq!(failed[0].quantity, Quantity::Cos);
    assert_eq!(failed[0].worst_index, 20);
}

#[test]
fn mutated_expected_masked_rows_fail() {
    let outcome = mutated("attn_fully_masked_rows.json", |v| {
        v["outputs"]["fully_masked_rows"] = serde_json::json!([]);
    });
    let Ok(Verification::Checked(checks)) = outcome else {
        panic!("expected checks, got {outcome:?}");
    };
    let masked = checks
        .iter()
        .find(|c| c.quantity == Quantity::FullyMaskedRows)
        .expect("fully_masked_rows check");
    assert!(!masked.passed);
    // 6 query rows of batch 1, for each of 2 heads.
    assert_eq!(masked.max_abs_error, 12.0);
}

#[test]
fn mutated_zero_batch_is_rejected() {
    let outcome = mutated(ATTENTION, |v| v["params"]["batch"] = 0.into());
    assert_invalid_shape(outcome, "params.batch");
}

#[test]
fn mutated_empty_positions_are_rejected() {
    let outcome = mutated("sinusoidal_interleaved_d64.json", |v| {
        v["inputs"]["positions"] = serde_json::json!([]);
        v["outputs"]["pe"] = serde_json::json!([]);
        v["params"]["dim"] = (1u64 << 30).into();
    });
    assert_invalid_shape(outcome, "inputs.positions");
}

#[test]
fn mutated_huge_heads_are_rejected() {
    let outcome = mutated("alibi_slopes_h8.json", |v| {
        v["params"]["num_heads"] = (1u64 << 60).into();
    });
    assert_length_mismatch(outcome, "outputs.slopes");
}
