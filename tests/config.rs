//! Tests of the `config.json` loader: public model configs, invalid configs, and random or
//! mutated documents.
//!
//! The expected values are the public config values themselves (see each file's `_source`)
//! and the rules transformers applies to them. None is taken from the loader.

use std::path::PathBuf;

use posenc::config::RopeSettings;
use posenc::rope::{Llama3, RopeConfig, RopeLayout, RopeScaling, Yarn};
use posenc::Error;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

fn config_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/configs")
        .join(name)
}

fn load(name: &str, layer_type: Option<&str>) -> RopeSettings {
    RopeSettings::from_path(config_path(name), layer_type)
        .unwrap_or_else(|e| panic!("{name} should load: {e}"))
}

fn read_json(name: &str) -> Value {
    let text = std::fs::read_to_string(config_path(name))
        .unwrap_or_else(|e| panic!("test data {name} is missing: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("test data {name} is invalid: {e}"))
}

/// Returns the message of an `Error::Config`, and fails the test on any other result.
fn config_message(what: &str, result: posenc::Result<RopeSettings>) -> String {
    match result {
        Err(Error::Config { message, .. }) => message,
        Err(other) => panic!("{what}: expected Error::Config, got {other:?}"),
        Ok(settings) => panic!("{what}: expected an error, got {settings:?}"),
    }
}

fn yarn(settings: &RopeSettings) -> &Yarn {
    match &settings.rope.scaling {
        RopeScaling::Yarn(yarn) => yarn,
        other => panic!("expected YaRN, got {other:?}"),
    }
}

#[test]
fn llama31_8b_llama3_factor_8() {
    let settings = load("llama-3.1-8b.json", None);
    let expected = RopeConfig::new(128)
        .with_base(500_000.0)
        .with_scaling(RopeScaling::Llama3(Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        }));
    assert_eq!(settings.rope, expected);
    assert_eq!(settings.max_position_embeddings, Some(131_072));
    assert_eq!(settings.num_attention_heads, Some(32));
    assert_eq!(settings.num_key_value_heads, Some(8));
    assert_eq!(settings.softmax_scale_multiplier, 1.0);
}

#[test]
fn llama32_1b_llama3_factor_32() {
    let settings = load("llama-3.2-1b.json", None);
    let expected = RopeConfig::new(64)
        .with_base(500_000.0)
        .with_scaling(RopeScaling::Llama3(Llama3 {
            factor: 32.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        }));
    assert_eq!(settings.rope, expected);
}

#[test]
fn qwen25_yarn_factor_4() {
    let settings = load("qwen2.5-7b-instruct-yarn.json", None);
    assert_eq!(settings.rope.head_dim, 128, "3584 / 28");
    assert_eq!(settings.rope.rotary_dim, 128);
    assert_eq!(settings.rope.base, 1_000_000.0);
    assert_eq!(settings.rope.layout, RopeLayout::Half);
    // The explicit factor wins over max_position_embeddings / original (32768 / 32768).
    let mut expected = Yarn::new(4.0, 32_768);
    expected.truncate = true;
    assert_eq!(yarn(&settings), &expected);
    assert_eq!(settings.num_key_value_heads, Some(4));
}

#[test]
fn phi35_longrope_factor_lists() {
    let settings = load("phi-3.5-mini-instruct.json", None);
    let golden = read_golden_longrope();
    assert_eq!(settings.rope.head_dim, 96, "3072 / 32");
    assert_eq!(settings.rope.rotary_dim, 96);
    assert_eq!(settings.rope.base, 10_000.0);
    let RopeScaling::LongRope(long_rope) = &settings.rope.scaling else {
        panic!("expected LongRoPE, got {:?}", settings.rope.scaling);
    };
    assert_eq!(long_rope.short_factor, golden.0);
    assert_eq!(long_rope.long_factor, golden.1);
    assert_eq!(
        long_rope.original_max_position_embeddings, 4096,
        "top level"
    );
    assert_eq!(long_rope.max_position_embeddings, 131_072);
    assert_eq!(long_rope.attention_factor, None);
    // sqrt(1 + ln 32 / ln 4096), the LongRoPE default (transformers 5.x).
    let frequencies = settings.rope.frequencies(4096).expect("frequencies");
    assert!((frequencies.attention_factor - 1.1902380714).abs() < 1e-10);
}

/// Reads the Phi-3.5 short and long factor lists from the golden LongRoPE case.
fn read_golden_longrope() -> (Vec<f64>, Vec<f64>) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/golden/rope_longrope_phi35mini_long_seq131072.json");
    let text = std::fs::read_to_string(&path).expect("golden LongRoPE file");
    let value: Value = serde_json::from_str(&text).expect("golden LongRoPE JSON");
    let list = |name: &str| -> Vec<f64> {
        value["params"]["scaling"][name]
            .as_array()
            .unwrap_or_else(|| panic!("golden {name}"))
            .iter()
            .map(|x| x.as_f64().expect("number"))
            .collect()
    };
    (list("short_factor"), list("long_factor"))
}

#[test]
fn deepseek_v3_rope_head_dim_and_mscale() {
    let settings = load("deepseek-v3.json", None);
    // RoPE rotates the separate qk_rope_head_dim-wide part, not hidden_size / heads = 56.
    assert_eq!(settings.rope.head_dim, 64);
    assert_eq!(settings.rope.rotary_dim, 64);
    assert_eq!(settings.rope.base, 10_000.0);
    // DeepseekV3Config's rope_interleave defaults to true: pairs (2i, 2i + 1).
    assert_eq!(settings.rope.layout, RopeLayout::Interleaved);
    let yarn = yarn(&settings);
    assert_eq!(yarn.factor, 40.0);
    assert_eq!(yarn.original_max_position_embeddings, 4096);
    assert_eq!((yarn.beta_fast, yarn.beta_slow), (32.0, 1.0));
    assert_eq!(yarn.mscale, Some(1.0));
    assert_eq!(yarn.mscale_all_dim, Some(1.0));
    assert!(yarn.truncate);
    // mscale / mscale_all_dim = 1, and the softmax scale takes (0.1 ln 40 + 1)^2, the value
    // in the golden DeepSeek-V3 case.
    assert_eq!(yarn.resolved_attention_factor(), 1.0);
    assert!((settings.softmax_scale_multiplier - 1.8738542070926265).abs() < 1e-12);
    assert_eq!(settings.max_position_embeddings, Some(163_840));
}

#[test]
fn deepseek_rope_interleave_false_is_half() {
    let mut config = read_json("deepseek-v3.json");
    config["rope_interleave"] = json!(false);
    let settings = RopeSettings::from_json_value(&config, None).expect("loads");
    assert_eq!(settings.rope.layout, RopeLayout::Half);
}

#[test]
fn gpt_oss_yarn_without_truncation() {
    let settings = load("gpt-oss-20b.json", None);
    assert_eq!(settings.rope.head_dim, 64, "head_dim, not 2880 / 64");
    assert_eq!(settings.rope.base, 150_000.0);
    let mut expected = Yarn::new(32.0, 4096);
    expected.truncate = false;
    assert_eq!(yarn(&settings), &expected);
}

#[test]
fn yarn_null_factor_uses_length_ratio() {
    let mut config = read_json("gpt-oss-20b.json");
    config["rope_scaling"]["factor"] = Value::Null;
    let settings = RopeSettings::from_json_value(&config, None).expect("loads");
    assert_eq!(yarn(&settings).factor, 32.0, "131072 / 4096");

    config["rope_scaling"]
        .as_object_mut()
        .expect("object")
        .remove("factor");
    let settings = RopeSettings::from_json_value(&config, None).expect("loads");
    assert_eq!(yarn(&settings).factor, 32.0, "a missing factor too");
}

#[test]
fn gpt_neox_20b_rotary_pct() {
    let settings = load("gpt-neox-20b.json", None);
    assert_eq!(settings.rope.head_dim, 96, "6144 / 64");
    assert_eq!(settings.rope.rotary_dim, 24, "96 * 0.25");
    assert_eq!(settings.rope.base, 10_000.0, "rotary_emb_base");
    assert_eq!(settings.rope.scaling, RopeScaling::None);
}

#[test]
fn phi2_partial_rotary_factor() {
    let settings = load("phi-2.json", None);
    assert_eq!(settings.rope.head_dim, 80, "2560 / 32");
    assert_eq!(settings.rope.rotary_dim, 32, "int(80 * 0.4)");
    assert_eq!(settings.rope.base, 10_000.0);
    assert_eq!(
        settings.num_key_value_heads,
        Some(32),
        "defaults to the heads"
    );
}

#[test]
fn mistral_7b_v02_theta_1e6() {
    let settings = load("mistral-7b-instruct-v0.2.json", None);
    assert_eq!(settings.rope, RopeConfig::new(128).with_base(1_000_000.0));
    assert_eq!(settings.max_position_embeddings, Some(32_768));
}

#[test]
fn gemma3_v5_layer_types() {
    let full = load("gemma-3-4b-style-v5.json", Some("full_attention"));
    let expected = RopeConfig::new(256)
        .with_base(1_000_000.0)
        .with_scaling(RopeScaling::Linear { factor: 8.0 });
    assert_eq!(full.rope, expected);
    assert_eq!(full.layer_type.as_deref(), Some("full_attention"));

    let sliding = load("gemma-3-4b-style-v5.json", Some("sliding_attention"));
    assert_eq!(sliding.rope, RopeConfig::new(256).with_base(10_000.0));
}

#[test]
fn gemma3_v5_layer_type_required() {
    let path = config_path("gemma-3-4b-style-v5.json");
    let message = config_message("no layer type", RopeSettings::from_path(&path, None));
    assert!(message.contains("`rope_parameters`"), "{message}");
    assert!(
        message.contains("full_attention, sliding_attention"),
        "{message}"
    );

    let message = config_message(
        "unknown layer type",
        RopeSettings::from_path(&path, Some("chunked_attention")),
    );
    assert!(message.contains("chunked_attention"), "{message}");
    assert!(
        message.contains("full_attention, sliding_attention"),
        "{message}"
    );
}

#[test]
fn gemma3_v4_local_base_for_sliding() {
    // transformers 4.x Gemma 3: rope_scaling applies to full-attention layers, and
    // sliding-window layers use rope_local_base_freq without scaling.
    let config = json!({
        "text_config": {
            "head_dim": 256,
            "rope_theta": 1_000_000.0,
            "rope_local_base_freq": 10_000.0,
            "rope_scaling": {"rope_type": "linear", "factor": 8.0},
        }
    });
    let full = RopeSettings::from_json_value(&config, Some("full_attention")).expect("full");
    assert_eq!(full.rope.base, 1_000_000.0);
    assert_eq!(full.rope.scaling, RopeScaling::Linear { factor: 8.0 });

    let sliding = RopeSettings::from_json_value(&config, Some("sliding_attention")).expect("sw");
    assert_eq!(sliding.rope.base, 10_000.0);
    assert_eq!(sliding.rope.scaling, RopeScaling::None);
}

#[test]
fn v5_flat_rope_parameters() {
    // transformers 5.x keeps rope_theta and partial_rotary_factor inside rope_parameters.
    let config = json!({
        "head_dim": 256,
        "rope_theta": 5.0,
        "rope_parameters": {"rope_theta": 10_000_000.0, "partial_rotary_factor": 0.25},
    });
    let settings = RopeSettings::from_json_value(&config, None).expect("loads");
    assert_eq!(settings.rope.rotary_dim, 64);
    assert_eq!(settings.rope.base, 10_000_000.0, "rope_parameters wins");
    assert_eq!(
        settings.rope.scaling,
        RopeScaling::None,
        "rope_type defaults"
    );
}

#[test]
fn longrope_old_name_su() {
    let mut config = read_json("phi-3.5-mini-instruct.json");
    config["rope_scaling"]["type"] = json!("su");
    let settings = RopeSettings::from_json_value(&config, None).expect("loads");
    assert_eq!(settings.rope.scaling.rope_type(), "longrope");
}

#[test]
fn rope_type_wins_over_type() {
    let config = json!({
        "head_dim": 64,
        "max_position_embeddings": 4096,
        "rope_scaling": {"rope_type": "dynamic", "type": "linear", "factor": 2.0},
    });
    let settings = RopeSettings::from_json_value(&config, None).expect("loads");
    assert_eq!(
        settings.rope.scaling,
        RopeScaling::Dynamic {
            factor: 2.0,
            max_position_embeddings: 4096
        }
    );
}

#[test]
fn missing_file_names_path() {
    let path = config_path("no-such-model.json");
    match RopeSettings::from_path(&path, None) {
        Err(Error::Config { path: got, message }) => {
            assert!(got.ends_with("no-such-model.json"), "{got}");
            assert!(message.contains("failed to read"), "{message}");
        }
        other => panic!("expected Error::Config, got {other:?}"),
    }
}

/// An invalid config and the key its error message must name.
struct BadConfig {
    name: &'static str,
    text: String,
    layer_type: Option<&'static str>,
    key: &'static str,
}

fn bad(name: &'static str, config: Value, key: &'static str) -> BadConfig {
    BadConfig {
        name,
        text: config.to_string(),
        layer_type: None,
        key,
    }
}

/// Builds a minimal valid Llama-style config with the given `rope_scaling`.
fn with_scaling(scaling: Value) -> Value {
    json!({
        "hidden_size": 4096,
        "num_attention_heads": 32,
        "max_position_embeddings": 131072,
        "rope_theta": 500000.0,
        "rope_scaling": scaling,
    })
}

fn bad_configs() -> Vec<BadConfig> {
    let llama3 = |drop: &str| {
        let mut scaling = json!({
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192,
        });
        scaling.as_object_mut().expect("object").remove(drop);
        with_scaling(scaling)
    };
    let longrope = |short: Value, long: Value| {
        let mut config = with_scaling(json!({
            "type": "longrope", "short_factor": short, "long_factor": long,
        }));
        config["original_max_position_embeddings"] = json!(4096);
        config["hidden_size"] = json!(256);
        config["num_attention_heads"] = json!(32);
        config
    };
    let four_pairs = json!([1.0, 1.0, 1.0, 1.0]);
    let mut missing_original = longrope(four_pairs.clone(), four_pairs.clone());
    missing_original
        .as_object_mut()
        .expect("object")
        .remove("original_max_position_embeddings");
    let mut no_max = with_scaling(json!({"rope_type": "dynamic", "factor": 2.0}));
    no_max
        .as_object_mut()
        .expect("object")
        .remove("max_position_embeddings");
    let mut yarn_no_max = with_scaling(json!({
        "rope_type": "yarn", "factor": null, "original_max_position_embeddings": 4096,
    }));
    yarn_no_max
        .as_object_mut()
        .expect("object")
        .remove("max_position_embeddings");

    vec![
        bad(
            "linear without factor",
            with_scaling(json!({"rope_type": "linear"})),
            "`rope_scaling.factor`",
        ),
        bad(
            "unknown rope_type",
            with_scaling(json!({"rope_type": "ntk-by-parts", "factor": 2.0})),
            "`rope_scaling.rope_type`",
        ),
        bad(
            "unknown old type",
            with_scaling(json!({"type": "xpos", "factor": 2.0})),
            "`rope_scaling.type`",
        ),
        bad(
            "v4 block without type",
            with_scaling(json!({"factor": 2.0})),
            "`rope_scaling.rope_type`",
        ),
        bad(
            "rope_type not a string",
            with_scaling(json!({"rope_type": 3})),
            "`rope_scaling.rope_type`",
        ),
        bad(
            "llama3 without low_freq_factor",
            llama3("low_freq_factor"),
            "`rope_scaling.low_freq_factor`",
        ),
        bad(
            "llama3 without high_freq_factor",
            llama3("high_freq_factor"),
            "`rope_scaling.high_freq_factor`",
        ),
        bad(
            "llama3 without original length",
            llama3("original_max_position_embeddings"),
            "`rope_scaling.original_max_position_embeddings`",
        ),
        bad(
            "dynamic without max length",
            no_max,
            "`max_position_embeddings`",
        ),
        bad(
            "yarn null factor without max length",
            yarn_no_max,
            "`max_position_embeddings`",
        ),
        bad(
            "longrope without short_factor",
            with_scaling(json!({"type": "longrope", "long_factor": [1.0]})),
            "`rope_scaling.short_factor`",
        ),
        bad(
            "longrope without original length",
            missing_original,
            "`rope_scaling.original_max_position_embeddings`",
        ),
        bad(
            "longrope list too short",
            longrope(four_pairs.clone(), json!([1.0, 1.0])),
            "long_factor",
        ),
        bad(
            "longrope string factor",
            longrope(json!([1.0, 1.0, 1.0, "2"]), four_pairs.clone()),
            "`rope_scaling.short_factor[3]`",
        ),
        bad(
            "longrope factors not a list",
            longrope(json!({"0": 1.0}), four_pairs),
            "`rope_scaling.short_factor`",
        ),
        bad(
            "linear factor 0",
            with_scaling(json!({"rope_type": "linear", "factor": 0.0})),
            "factor",
        ),
        bad(
            "llama3 high <= low",
            with_scaling(json!({
                "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192,
            })),
            "high_freq_factor",
        ),
        bad(
            "yarn negative beta_fast",
            with_scaling(json!({"rope_type": "yarn", "factor": 4.0, "beta_fast": -32.0})),
            "beta_fast",
        ),
        bad(
            "yarn truncate not a bool",
            with_scaling(json!({"rope_type": "yarn", "factor": 4.0, "truncate": "no"})),
            "`rope_scaling.truncate`",
        ),
        bad(
            "yarn original length 0",
            with_scaling(json!({
                "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 0,
            })),
            "`rope_scaling.original_max_position_embeddings`",
        ),
        bad(
            "rope_scaling is an array",
            with_scaling(json!([{"rope_type": "linear"}])),
            "`rope_scaling` must be an object",
        ),
        bad("no head size", json!({"rope_theta": 10000.0}), "`head_dim`"),
        bad(
            "hidden size without heads",
            json!({"hidden_size": 4096}),
            "`num_attention_heads`",
        ),
        bad(
            "hidden size not a multiple",
            json!({"hidden_size": 4000, "num_attention_heads": 48}),
            "`hidden_size`",
        ),
        bad(
            "zero heads",
            json!({"hidden_size": 4096, "num_attention_heads": 0}),
            "`num_attention_heads`",
        ),
        bad("negative head_dim", json!({"head_dim": -64}), "`head_dim`"),
        bad(
            "fractional head_dim",
            json!({"head_dim": 64.5}),
            "`head_dim`",
        ),
        bad("string head_dim", json!({"head_dim": "64"}), "`head_dim`"),
        bad("huge head_dim", json!({"head_dim": 1e15}), "`head_dim`"),
        bad("head_dim 1", json!({"head_dim": 1}), "`head_dim`"),
        bad(
            "negative rope_theta",
            json!({"head_dim": 64, "rope_theta": -10000.0}),
            "`rope_theta`",
        ),
        bad(
            "zero rope_theta",
            json!({"head_dim": 64, "rope_theta": 0}),
            "`rope_theta`",
        ),
        bad(
            "string rope_theta",
            json!({"head_dim": 64, "rope_theta": "1e4"}),
            "`rope_theta`",
        ),
        bad(
            "partial factor above 1",
            json!({"head_dim": 64, "partial_rotary_factor": 1.5}),
            "`partial_rotary_factor`",
        ),
        bad(
            "partial factor to zero width",
            json!({"head_dim": 64, "partial_rotary_factor": 0.01}),
            "`partial_rotary_factor`",
        ),
        bad(
            "partial factor to odd width",
            json!({"head_dim": 64, "rotary_pct": 0.3}),
            "`rotary_pct`",
        ),
        bad(
            "dynamic on two features",
            json!({
                "head_dim": 64, "partial_rotary_factor": 0.04, "max_position_embeddings": 2048,
                "rope_scaling": {"type": "dynamic", "factor": 2.0},
            }),
            "rotary_dim",
        ),
        bad(
            "negative kv heads",
            json!({"head_dim": 64, "num_key_value_heads": -8}),
            "`num_key_value_heads`",
        ),
        bad(
            "qk_rope_head_dim 0",
            json!({"qk_rope_head_dim": 0}),
            "`qk_rope_head_dim`",
        ),
        bad(
            "text_config not an object",
            json!({"text_config": [1, 2]}),
            "`text_config`",
        ),
        bad("root is an array", json!([{"head_dim": 64}]), "JSON object"),
        BadConfig {
            name: "invalid JSON",
            text: "{\"head_dim\": 64,".to_owned(),
            layer_type: None,
            key: "invalid JSON",
        },
        BadConfig {
            name: "number past f64",
            text: "{\"head_dim\": 64, \"rope_theta\": 1e400}".to_owned(),
            layer_type: None,
            key: "invalid JSON",
        },
        BadConfig {
            name: "layer type not in layer_types",
            text: json!({"head_dim": 64, "layer_types": ["full_attention", "sliding_attention"]})
                .to_string(),
            layer_type: Some("linear_attention"),
            key: "`layer_types`",
        },
        BadConfig {
            name: "layer entry not an object",
            text: json!({
                "head_dim": 64,
                "rope_parameters": {"full_attention": {"rope_theta": 1e4}, "sliding_attention": 3},
            })
            .to_string(),
            layer_type: Some("sliding_attention"),
            key: "`rope_parameters.sliding_attention`",
        },
    ]
}

#[test]
fn bad_configs_name_the_key() {
    for case in bad_configs() {
        let result = RopeSettings::from_json_str(&case.text, case.layer_type);
        let message = config_message(case.name, result);
        assert!(
            message.contains(case.key),
            "{}: the message should name {}, got: {message}",
            case.name,
            case.key
        );
    }
}

/// Keys the random documents draw from: every key the loader reads, and a few others.
const KEYS: &[&str] = &[
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
    "vocab_size",
];

const STRINGS: &[&str] = &[
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

fn random_number(rng: &mut ChaCha8Rng) -> Value {
    match rng.random_range(0..12) {
        0 => json!(0),
        1 => json!(-1),
        2 => json!(u64::MAX),
        3 => json!(i64::MIN),
        4 => json!(1e308),
        5 => json!(-1e308),
        6 => json!(f64::MIN_POSITIVE / 1e10),
        7 => json!(rng.random_range(-4.0..4.0)),
        8 => json!(rng.random_range(0..300)),
        9 => json!(2u64.pow(rng.random_range(0..64))),
        10 => json!([1.0, 2.0, 4.0, 0.5][rng.random_range(0..4)]),
        _ => json!(rng.random_range(0.0..2.0e6)),
    }
}

fn random_value(rng: &mut ChaCha8Rng, depth: u32) -> Value {
    let kinds = if depth == 0 { 4 } else { 7 };
    match rng.random_range(0..kinds) {
        0 => Value::Null,
        1 => json!(rng.random_bool(0.5)),
        2 => random_number(rng),
        3 => json!(STRINGS[rng.random_range(0..STRINGS.len())]),
        4 => {
            let len = rng.random_range(0..70);
            if rng.random_bool(0.7) {
                Value::Array((0..len).map(|_| random_number(rng)).collect())
            } else {
                Value::Array((0..len % 5).map(|_| random_value(rng, depth - 1)).collect())
            }
        }
        _ => random_object(rng, depth - 1),
    }
}

fn random_object(rng: &mut ChaCha8Rng, depth: u32) -> Value {
    let mut map = serde_json::Map::new();
    for _ in 0..rng.random_range(0..10) {
        let key = KEYS[rng.random_range(0..KEYS.len())];
        map.insert(key.to_owned(), random_value(rng, depth));
    }
    Value::Object(map)
}

/// Replaces, removes or adds one entry somewhere inside `value`.
fn mutate(rng: &mut ChaCha8Rng, value: &mut Value) {
    let descend = rng.random_bool(0.6);
    match value {
        Value::Object(map) if !map.is_empty() => {
            let index = rng.random_range(0..map.len());
            let key = map.keys().nth(index).cloned().expect("index in range");
            match rng.random_range(0..4) {
                _ if descend => mutate(rng, map.get_mut(&key).expect("key")),
                0 => {
                    map.remove(&key);
                }
                1 => {
                    let extra = KEYS[rng.random_range(0..KEYS.len())];
                    map.insert(extra.to_owned(), random_value(rng, 2));
                }
                _ => {
                    map.insert(key, random_value(rng, 2));
                }
            }
        }
        Value::Array(items) if !items.is_empty() && descend => {
            let index = rng.random_range(0..items.len());
            mutate(rng, &mut items[index]);
        }
        Value::Array(items) if !items.is_empty() && rng.random_bool(0.5) => {
            items.truncate(rng.random_range(0..items.len()));
        }
        other => *other = random_value(rng, 2),
    }
}

fn random_layer_type(rng: &mut ChaCha8Rng) -> Option<&'static str> {
    [
        None,
        Some("full_attention"),
        Some("sliding_attention"),
        Some("other"),
    ][rng.random_range(0..4)]
}

/// Counts of outcomes, so the test shows that both kinds of input were reached.
#[derive(Default)]
struct Outcomes {
    ok: usize,
    err: usize,
}

impl Outcomes {
    fn record(&mut self, what: &str, result: posenc::Result<RopeSettings>) {
        match result {
            Ok(settings) => {
                // Every loaded config computes frequencies, as the loader promises.
                if let Err(e) = settings.rope.frequencies(1) {
                    panic!("{what}: loaded {settings:?} but frequencies failed: {e}");
                }
                self.ok += 1;
            }
            Err(Error::Config { .. }) => self.err += 1,
            Err(other) => panic!("{what}: expected Error::Config, got {other:?}"),
        }
    }
}

const CONFIG_FILES: &[&str] = &[
    "llama-3.1-8b.json",
    "llama-3.2-1b.json",
    "qwen2.5-7b-instruct-yarn.json",
    "phi-3.5-mini-instruct.json",
    "deepseek-v3.json",
    "gpt-oss-20b.json",
    "gpt-neox-20b.json",
    "phi-2.json",
    "mistral-7b-instruct-v0.2.json",
    "gemma-3-4b-style-v5.json",
];

#[test]
fn fuzz_random_documents_never_panic() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed_c0f1);
    let mut outcomes = Outcomes::default();
    for round in 0..4000 {
        let document = random_object(&mut rng, 3);
        let layer_type = random_layer_type(&mut rng);
        let result = RopeSettings::from_json_value(&document, layer_type);
        outcomes.record(&format!("round {round}: {document}"), result);
    }
    assert!(outcomes.err > 0, "no random document was rejected");
}

#[test]
fn fuzz_mutated_configs_never_panic() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x0d0c_5eed);
    let originals: Vec<Value> = CONFIG_FILES.iter().map(|name| read_json(name)).collect();
    let mut outcomes = Outcomes::default();
    for round in 0..6000 {
        let mut document = originals[round % originals.len()].clone();
        for _ in 0..rng.random_range(1..4) {
            mutate(&mut rng, &mut document);
        }
        let layer_type = random_layer_type(&mut rng);
        let result = RopeSettings::from_json_value(&document, layer_type);
        outcomes.record(&format!("round {round}: {document}"), result);
    }
    assert!(outcomes.ok > 0, "no mutated config loaded");
    assert!(outcomes.err > 0, "no mutated config was rejected");
}

#[test]
fn fuzz_damaged_text_never_panics() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x7e47);
    let texts: Vec<String> = CONFIG_FILES
        .iter()
        .map(|name| std::fs::read_to_string(config_path(name)).expect("test data"))
        .collect();
    let mut outcomes = Outcomes::default();
    for round in 0..3000 {
        let mut bytes = texts[round % texts.len()].clone().into_bytes();
        for _ in 0..rng.random_range(1..4) {
            let index = rng.random_range(0..bytes.len());
            match rng.random_range(0..3) {
                0 => bytes.truncate(index),
                1 => bytes[index] = b"{}[],:\"-0.e9 nul"[rng.random_range(0..16)],
                _ => {
                    bytes.remove(index);
                }
            }
            if bytes.is_empty() {
                break;
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        let result = RopeSettings::from_json_str(&text, random_layer_type(&mut rng));
        outcomes.record(&format!("round {round}: {text}"), result);
    }
    assert!(outcomes.err > 0, "no damaged text was rejected");
}
