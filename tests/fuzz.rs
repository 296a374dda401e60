//! Fuzzing of the two readers of untrusted JSON: the golden-file reader (`golden::parse` and
//! `golden::verify`) and the config loader. The documents are random or mutated, with huge,
//! negative and wrongly typed values and with shape claims far larger than the arrays that
//! come with them. Each must give `Ok` or a typed error, never a panic, a hang or an
//! allocation sized by a claim. tests/config.rs fuzzes the config loader's keys; here it gets structurally
//! odd text.

mod common;

use std::path::PathBuf;

use posenc::config::RopeSettings;
use posenc::golden::{self, Verification};
use posenc::Error;
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Map, Value};

/// Documents per fuzz test: `POSENC_PROPTEST_CASES` when set, else `default`.
fn case_count(default: u32) -> u32 {
    match std::env::var("POSENC_PROPTEST_CASES") {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("POSENC_PROPTEST_CASES={text:?} is not a count")),
        Err(_) => default,
    }
}

/// proptest settings: a fixed seed unless `PROPTEST_RNG_SEED` is set, and no regression
/// files, because failures become plain tests in this file.
fn config(default_cases: u32) -> ProptestConfig {
    let defaults = ProptestConfig::default();
    let rng_seed = match defaults.rng_seed {
        RngSeed::Random => RngSeed::Fixed(0xf022_5eed),
        fixed => fixed,
    };
    ProptestConfig {
        cases: case_count(default_cases),
        failure_persistence: None,
        rng_seed,
        ..defaults
    }
}

/// Every key that golden files use, and a few they do not.
const GOLDEN_KEYS: &[&str] = &[
    "kind",
    "tolerance",
    "abs",
    "rel",
    "abs_per_position",
    "params",
    "inputs",
    "outputs",
    "head_dim",
    "rotary_dim",
    "base",
    "layout",
    "scaling",
    "type",
    "factor",
    "original_max_position_embeddings",
    "beta_fast",
    "beta_slow",
    "mscale",
    "mscale_all_dim",
    "attention_factor",
    "truncate",
    "low_freq_factor",
    "high_freq_factor",
    "short_factor",
    "long_factor",
    "max_position_embeddings",
    "seq_len",
    "positions",
    "shape",
    "x",
    "inv_freq",
    "attention_scaling",
    "cos",
    "sin",
    "y",
    "num_heads",
    "slopes",
    "dim",
    "variant",
    "pe",
    "batch",
    "num_kv_heads",
    "q_len",
    "kv_len",
    "scale",
    "causal",
    "causal_alignment",
    "window",
    "alibi_slopes",
    "key_lengths",
    "softcap",
    "q",
    "k",
    "v",
    "probs",
    "out",
    "fully_masked_rows",
    "notes",
    "unknown",
];

/// The strings that golden files use as values, and a few wrong ones.
const GOLDEN_STRINGS: &[&str] = &[
    "rope",
    "alibi_slopes",
    "sinusoidal",
    "attention",
    "half",
    "interleaved",
    "concat",
    "vaswani",
    "tensor2tensor",
    "none",
    "default",
    "linear",
    "dynamic",
    "yarn",
    "llama3",
    "longrope",
    "bottom_right",
    "top_left",
    "",
    "NaN",
    "-1",
    "1e999",
];

/// Numbers at the edges: huge, negative, tiny, integer limits and powers of two.
fn edge_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(0)),
        Just(json!(1)),
        Just(json!(-1)),
        Just(json!(u64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(1e308)),
        Just(json!(-1e308)),
        Just(json!(5e-324)),
        (0u32..64).prop_map(|k| json!(1u64 << k)),
        (-4.0f64..4.0).prop_map(|x| json!(x)),
        (0u64..300).prop_map(|n| json!(n)),
    ]
}

fn json_leaf(strings: &'static [&'static str]) -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        edge_number(),
        proptest::sample::select(strings).prop_map(Value::from),
    ]
    .boxed()
}

/// Random JSON values up to depth 4 whose object keys come from `keys`.
fn json_value(
    keys: &'static [&'static str],
    strings: &'static [&'static str],
) -> BoxedStrategy<Value> {
    json_leaf(strings)
        .prop_recursive(4, 96, 8, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                proptest::collection::vec((proptest::sample::select(keys), inner), 0..8).prop_map(
                    |entries| {
                        let map: Map<String, Value> = entries
                            .into_iter()
                            .map(|(k, v)| (k.to_string(), v))
                            .collect();
                        Value::Object(map)
                    }
                ),
            ]
        })
        .boxed()
}

/// Generates golden-shaped documents: the five sections present, each filled at random.
fn golden_document() -> impl Strategy<Value = Value> {
    let section = || json_value(GOLDEN_KEYS, GOLDEN_STRINGS);
    (
        proptest::sample::select(&["rope", "alibi_slopes", "sinusoidal", "attention", "other"][..]),
        section(),
        section(),
        section(),
        section(),
    )
        .prop_map(|(kind, tolerance, params, inputs, outputs)| {
            json!({
                "kind": kind,
                "tolerance": tolerance,
                "params": params,
                "inputs": inputs,
                "outputs": outputs,
            })
        })
}

/// Parses and verifies `text` on the CPU, or on the GPU as well when `gpu` is given. Only
/// `Ok` and the typed errors that the golden reader documents may come back.
fn check_golden(text: &str, gpu: Option<&posenc::GpuContext>) -> Result<(), String> {
    let file = match golden::parse(text, "fuzz.json") {
        Ok(file) => file,
        Err(Error::Config { .. } | Error::InvalidParameter { .. }) => return Ok(()),
        Err(other) => return Err(format!("parse: unexpected error {other:?}")),
    };
    match golden::verify(&file, gpu) {
        Ok(Verification::Checked(_) | Verification::Unsupported { .. }) => Ok(()),
        Err(
            Error::Config { .. }
            | Error::LengthMismatch { .. }
            | Error::InvalidShape { .. }
            | Error::InvalidParameter { .. }
            | Error::PositionOutOfRange { .. },
        ) => Ok(()),
        Err(other) => Err(format!("verify: unexpected error {other:?}")),
    }
}

proptest! {
    #![proptest_config(config(1500))]

    #[test]
    fn golden_random_documents_give_typed_results(document in golden_document()) {
        let text = document.to_string();
        if let Err(message) = check_golden(&text, None) {
            return Err(TestCaseError::fail(format!("{message}\n{text}")));
        }
    }

    #[test]
    fn config_random_documents_give_typed_results(
        document in json_value(CONFIG_KEYS, CONFIG_STRINGS),
        layer_type in proptest::option::of(proptest::sample::select(&["full_attention", "sliding_attention", "other"][..])),
    ) {
        let text = document.to_string();
        match RopeSettings::from_json_str(&text, layer_type) {
            Ok(settings) => {
                prop_assert!(settings.rope.frequencies(1).is_ok(), "{text}");
            }
            Err(Error::Config { .. }) => {}
            Err(other) => return Err(TestCaseError::fail(format!("unexpected error {other:?}\n{text}"))),
        }
    }
}

/// Keys the config loader reads, nested under the sections it looks in.
const CONFIG_KEYS: &[&str] = &[
    "head_dim",
    "hidden_size",
    "num_attention_heads",
    "num_key_value_heads",
    "max_position_embeddings",
    "original_max_position_embeddings",
    "rope_theta",
    "rotary_emb_base",
    "rotary_pct",
    "partial_rotary_factor",
    "qk_rope_head_dim",
    "rope_interleave",
    "rope_local_base_freq",
    "layer_types",
    "text_config",
    "rope_scaling",
    "rope_parameters",
    "rope_type",
    "type",
    "factor",
    "low_freq_factor",
    "high_freq_factor",
    "beta_fast",
    "beta_slow",
    "mscale",
    "mscale_all_dim",
    "attention_factor",
    "truncate",
    "short_factor",
    "long_factor",
    "full_attention",
    "sliding_attention",
];

const CONFIG_STRINGS: &[&str] = &[
    "default",
    "linear",
    "dynamic",
    "yarn",
    "llama3",
    "longrope",
    "su",
    "full_attention",
    "sliding_attention",
    "",
    "NaN",
    "1e9",
];

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden")
}

/// Reads every golden file of the repository as JSON, with its name.
fn golden_files() -> Vec<(String, Value)> {
    let mut files: Vec<(String, Value)> = std::fs::read_dir(golden_dir())
        .expect("tests/data/golden")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("golden file");
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            (name, serde_json::from_str(&text).expect("golden JSON"))
        })
        .collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(
        files.len() >= 30,
        "expected the golden files, found {}",
        files.len()
    );
    files
}

/// Shape fields of the golden format: a claim in any of them sizes arrays.
const SHAPE_KEYS: &[&str] = &[
    "batch",
    "num_heads",
    "num_kv_heads",
    "q_len",
    "kv_len",
    "head_dim",
    "rotary_dim",
    "dim",
    "seq_len",
    "window",
    "max_position_embeddings",
    "original_max_position_embeddings",
];

fn edge_value(rng: &mut ChaCha8Rng) -> Value {
    match rng.random_range(0..14) {
        0 => json!(0),
        1 => json!(-1),
        2 => json!(1u64 << 31),
        3 => json!(1u64 << 32),
        4 => json!(1u64 << 40),
        5 => json!(1u64 << 62),
        6 => json!(u64::MAX),
        7 => json!(1e300),
        8 => json!(-1e300),
        9 => json!("8"),
        10 => Value::Null,
        11 => json!([]),
        12 => json!({}),
        _ => json!(rng.random_range(0..10)),
    }
}

/// Applies one random change somewhere in `value`: a shape claim, a leaf replaced by an
/// edge value, a removed key, or an array truncated, emptied or extended.
fn mutate(rng: &mut ChaCha8Rng, value: &mut Value) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            let shape_keys: Vec<String> = map
                .keys()
                .filter(|k| SHAPE_KEYS.contains(&k.as_str()))
                .cloned()
                .collect();
            if !shape_keys.is_empty() && rng.random_bool(0.3) {
                let key = &shape_keys[rng.random_range(0..shape_keys.len())];
                map.insert(key.clone(), edge_value(rng));
                return;
            }
            let index = rng.random_range(0..map.len());
            let key = map.keys().nth(index).cloned().expect("index in range");
            match rng.random_range(0..10) {
                0 => {
                    map.remove(&key);
                }
                1 => {
                    map.insert(key, edge_value(rng));
                }
                _ => mutate(rng, map.get_mut(&key).expect("key")),
            }
        }
        Value::Array(items) if !items.is_empty() => match rng.random_range(0..8) {
            0 => items.truncate(rng.random_range(0..items.len())),
            1 => items.clear(),
            2 => {
                let extra = items[0].clone();
                items.push(extra);
            }
            3 => {
                // The inputs.shape of a rope file: claim a huge tensor with few values.
                if let Some(first) = items.first_mut() {
                    *first = edge_value(rng);
                }
            }
            _ => {
                let index = rng.random_range(0..items.len());
                mutate(rng, &mut items[index]);
            }
        },
        other => *other = edge_value(rng),
    }
}

#[test]
fn golden_mutated_files_give_typed_results() {
    let files = golden_files();
    let rounds = case_count(3000) as usize;
    let mut rng = ChaCha8Rng::seed_from_u64(0x0090_1de7);
    let (mut checked, mut rejected) = (0, 0);
    for round in 0..rounds {
        let (name, original) = &files[round % files.len()];
        let mut document = original.clone();
        for _ in 0..rng.random_range(1..4) {
            mutate(&mut rng, &mut document);
        }
        let text = document.to_string();
        if let Err(message) = check_golden(&text, None) {
            panic!("round {round}, {name} mutated: {message}");
        }
        match golden::parse(&text, name).and_then(|file| golden::verify(&file, None)) {
            Ok(_) => checked += 1,
            Err(_) => rejected += 1,
        }
    }
    // Both outcomes must be reached, or the mutations test nothing.
    assert!(
        checked > 0 && rejected > 0,
        "{checked} checked, {rejected} rejected"
    );
}

#[test]
fn golden_mutated_files_on_gpu_give_typed_results() {
    let Some(ctx) = common::gpu() else { return };
    let files = golden_files();
    let mut rng = ChaCha8Rng::seed_from_u64(0x06b0_5eed);
    for round in 0..case_count(300) as usize {
        let (name, original) = &files[round % files.len()];
        let mut document = original.clone();
        mutate(&mut rng, &mut document);
        if let Err(message) = check_golden(&document.to_string(), Some(ctx)) {
            panic!("round {round}, {name} mutated: {message}");
        }
    }
}

#[test]
fn golden_damaged_text_gives_typed_results() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x0da4_a9ed);
    let texts: Vec<String> = golden_files()
        .into_iter()
        .filter(|(_, value)| value.to_string().len() < 60_000)
        .map(|(_, value)| value.to_string())
        .collect();
    for round in 0..case_count(2000) as usize {
        let mut bytes = texts[round % texts.len()].clone().into_bytes();
        for _ in 0..rng.random_range(1..4) {
            if bytes.is_empty() {
                break;
            }
            let index = rng.random_range(0..bytes.len());
            match rng.random_range(0..3) {
                0 => bytes.truncate(index),
                1 => bytes[index] = b"{}[],:\"-0.e9 nul"[rng.random_range(0..16)],
                _ => {
                    bytes.remove(index);
                }
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        if let Err(message) = check_golden(&text, None) {
            panic!("round {round}: {message}");
        }
    }
}

/// Builds a rope golden file with no positions that claims `heads` heads of `head_dim`
/// features.
fn rope_claim(heads: u64, head_dim: u64) -> String {
    json!({
        "kind": "rope",
        "tolerance": {"abs": 1e-6, "rel": 0.0},
        "params": {
            "head_dim": head_dim, "rotary_dim": 2, "base": 10000.0, "layout": "half",
            "scaling": {"type": "none"}
        },
        "inputs": {"positions": [], "shape": [0, heads, head_dim], "x": []},
        "outputs": {"inv_freq": [1.0], "attention_scaling": 1.0, "cos": [], "sin": [], "y": []}
    })
    .to_string()
}

#[test]
fn golden_huge_shape_claims_without_data() {
    // Claims whose product overflows usize, or which would size an allocation, with no
    // arrays to back them: rejected or verified with empty outputs, never allocated.
    let attention = |batch: u64, heads: u64, q_len: u64, kv_len: u64, head_dim: u64| {
        json!({
            "kind": "attention",
            "tolerance": {"abs": 1e-6, "rel": 0.0},
            "params": {
                "batch": batch, "num_heads": heads, "num_kv_heads": 1, "q_len": q_len,
                "kv_len": kv_len, "head_dim": head_dim, "scale": null, "causal": true,
                "causal_alignment": "bottom_right", "window": null, "alibi_slopes": null,
                "key_lengths": null, "softcap": null
            },
            "inputs": {"q": [], "k": [], "v": []},
            "outputs": {"probs": [], "out": []}
        })
        .to_string()
    };
    let cases = [
        ("rope heads times head_dim past usize", rope_claim(1 << 40, 1 << 40)),
        ("rope head_dim past u32", rope_claim(1, 1 << 33)),
        ("attention 2^40 empty sequences", attention(1 << 40, 1, 0, 0, 1)),
        ("attention 2^40 heads", attention(1, 1 << 40, 0, 0, 4)),
        ("attention product past usize", attention(1 << 40, 1 << 40, 0, 1 << 40, 1)),
        ("attention kv_len without keys", attention(1, 1, 3, 1 << 40, 1)),
        (
            "sinusoidal dim without table",
            json!({
                "kind": "sinusoidal",
                "tolerance": {"abs": 1e-6, "rel": 0.0},
                "params": {"dim": 1u64 << 40, "base": 10000.0, "layout": "concat", "variant": "vaswani"},
                "inputs": {"positions": [0]},
                "outputs": {"pe": []}
            })
            .to_string(),
        ),
        (
            "alibi heads without slopes",
            json!({
                "kind": "alibi_slopes",
                "tolerance": {"abs": 0.0, "rel": 0.0},
                "params": {"num_heads": 1u64 << 62},
                "inputs": {},
                "outputs": {"slopes": []}
            })
            .to_string(),
        ),
    ];
    for (case, text) in &cases {
        if let Err(message) = check_golden(text, None) {
            panic!("{case}: {message}");
        }
        if let Some(ctx) = common::gpu() {
            if let Err(message) = check_golden(text, Some(ctx)) {
                panic!("{case} on the GPU: {message}");
            }
        }
    }
}

#[test]
fn config_structurally_odd_text_is_rejected() {
    let deep_array = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_object = format!(
        "{}1{}",
        "{\"text_config\":".repeat(10_000),
        "}".repeat(10_000)
    );
    let long_factors = format!(
        "{{\"head_dim\": 64, \"rope_scaling\": {{\"type\": \"longrope\", \"short_factor\": [{}], \"long_factor\": [1.0]}}}}",
        vec!["1.0"; 200_000].join(",")
    );
    let texts = [
        ("deep array", deep_array.as_str()),
        ("deep object", deep_object.as_str()),
        ("number past f64", "{\"head_dim\": 1e999}"),
        (
            "integer past u64",
            "{\"head_dim\": 99999999999999999999999999}",
        ),
        ("negative head_dim", "{\"head_dim\": -64}"),
        ("fractional head_dim", "{\"head_dim\": 64.5}"),
        ("string head_dim", "{\"head_dim\": \"64\"}"),
        (
            "huge head_dim",
            "{\"head_dim\": 4294967296, \"rope_theta\": 10000}",
        ),
        ("long factor list", long_factors.as_str()),
        ("not an object", "[1, 2, 3]"),
        ("empty", ""),
        ("nul bytes", "{\"head_dim\u{0}\": 64}"),
    ];
    for (case, text) in texts {
        match RopeSettings::from_json_str(text, None) {
            Err(Error::Config { .. }) => {}
            other => panic!("{case}: expected Error::Config, got {other:?}"),
        }
    }
}

#[test]
fn golden_structurally_odd_text_is_rejected() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    for (case, text) in [
        ("deep array", deep.as_str()),
        (
            "number past f64",
            "{\"kind\": \"rope\", \"tolerance\": {\"abs\": 1e999, \"rel\": 0}}",
        ),
        ("empty", ""),
        ("not an object", "\"rope\""),
    ] {
        match golden::parse(text, "odd.json") {
            Err(Error::Config { .. }) => {}
            other => panic!("{case}: expected Error::Config, got {other:?}"),
        }
    }
}

#[test]
fn golden_rope_claim_overflowing_row_width() {
    // Found by golden_huge_shape_claims_without_data with overflow checks on: a rope file
    // without positions claiming 2^40 heads of 2^40 features overflowed the row width
    // heads * head_dim (a panic in debug builds, a wrapped width in release builds).
    let file = golden::parse(&rope_claim(1 << 40, 1 << 40), "claim.json").expect("parse");
    let verification = golden::verify(&file, None).expect("verify");
    assert!(verification.passed(), "{verification:?}");
}
