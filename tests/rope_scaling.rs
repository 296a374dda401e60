//! Tests of the RoPE scaling methods on the CPU path (`rope::apply_cpu`, `rope::tables_cpu`)
//! and the GPU path (`rope::gpu::apply`, `rope::gpu::tables`).
//!
//! Expected frequencies are published values or the formulas of transformers 5.x
//! `modeling_rope_utils` evaluated independently in f64 (the literals below were computed
//! with Python's `math` module), never outputs of the code under test. The GPU checks compare
//! against f64 evaluations of `attention_factor * (cos, sin)(p * inv_freq)`.
//!
//! The sweep of every position below 2^24 is `#[ignore]`d to keep CI short (it reads back
//! 256 MiB of tables); run it with `cargo test --release --test rope_scaling -- --ignored`.

mod common;

use std::ops::Range;
use std::path::PathBuf;

use common::Tolerance;
use posenc::config::RopeSettings;
use posenc::rope::{
    self, Llama3, LongRope, QkShape, RopeConfig, RopeFrequencies, RopeLayout, RopeScaling, Yarn,
};
use posenc::{Error, GpuContext, Layout, Positions};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Frequencies against an independent f64 evaluation of the same formula: both sides round
/// a handful of f64 operations (pow, division, a ramp), so agreement to 1e-12 relative.
const FREQUENCY_REL: f64 = 1e-12;

/// Frequencies against literals printed with 11 significant digits: half a unit in the
/// last printed digit is at most 5e-11 relative.
const LITERAL_REL: f64 = 1e-10;

/// GPU cos and sin against f64, per unit of the pair's norm and of the attention factor.
/// The GPU reduces each angle exactly in fixed point and evaluates a polynomial in f32, so
/// cos and sin are within a few f32 ulps (about 2.4e-7). A rotation adds two products and a
/// sum rounded in f32. 2e-6 leaves close to a factor 10 over those errors while still
/// catching an f32 angle, which is off by up to 1 radian near position 2^24.
const PAIR_REL: f64 = 2e-6;

/// GPU rotation against the CPU rotation for inputs in [-1, 1]: the CPU rounds an f64
/// result once (half an ulp), the GPU carries the few-ulp errors above, so a few 1e-7 on
/// values of order 1. Scaled by the attention factor where it exceeds 1.
const GPU_VS_CPU: Tolerance = Tolerance {
    abs: 1e-6,
    rel: 1e-6,
};

/// The positions of the exact-angle check: small, mid-range, and the last position below
/// 2^17, 2^20 and 2^24.
const EXACT_ANGLE_POSITIONS: [u32; 6] = [0, 1, 48_039, 131_071, 1_048_575, 16_777_215];

/// Positions below 2^24 are the range the precision checks promise.
const POSITION_LIMIT: u32 = 1 << 24;

fn assert_rel(what: &str, got: f64, want: f64, rel: f64) {
    let bound = rel * want.abs();
    assert!(
        (got - want).abs() <= bound,
        "{what}: got {got:.15e}, want {want:.15e}, |diff| {:.3e} > {bound:.3e}",
        (got - want).abs()
    );
}

/// `base^(-2i/dim)` for `i < dim/2`: plain RoPE frequencies (Su et al., RoFormer).
fn plain_inv_freq(base: f64, dim: usize) -> Vec<f64> {
    (0..dim / 2)
        .map(|i| base.powf(-(2.0 * i as f64) / dim as f64))
        .collect()
}

/// Asserts `got[i]` against `want[i] / divisor` for every pair `i` in `pairs`.
fn assert_pairs_rel(
    what: &str,
    got: &[f64],
    want: &[f64],
    divisor: f64,
    pairs: Range<usize>,
    rel: f64,
) {
    let values = got[pairs.clone()].iter().zip(&want[pairs.clone()]);
    for (i, (&g, &w)) in pairs.zip(values) {
        assert_rel(&format!("{what} pair {i}"), g, w / divisor, rel);
    }
}

fn frequencies(config: &RopeConfig, seq_len: u64) -> RopeFrequencies {
    config
        .frequencies(seq_len)
        .unwrap_or_else(|e| panic!("{:?} at seq_len {seq_len}: {e}", config.scaling))
}

// ---------------------------------------------------------------- dynamic NTK

/// d = 8, base 10000, factor 2, trained length 16.
fn dynamic_config() -> RopeConfig {
    RopeConfig::new(8).with_scaling(RopeScaling::Dynamic {
        factor: 2.0,
        max_position_embeddings: 16,
    })
}

#[test]
fn dynamic_ntk_trained_length_unscaled() {
    for seq_len in [1, 8, 16] {
        let got = frequencies(&dynamic_config(), seq_len);
        for (i, (&g, w)) in got.inv_freq.iter().zip([1.0, 0.1, 0.01, 0.001]).enumerate() {
            assert_rel(&format!("seq_len {seq_len} pair {i}"), g, w, FREQUENCY_REL);
        }
        assert_eq!(got.attention_factor, 1.0);
    }
}

#[test]
fn dynamic_ntk_base_grows_past_trained() {
    // base * (factor * L / L_train - (factor - 1))^(d / (d - 2)): 10000 * 2^(4/3) at 24 and
    // 10000 * 3^(4/3) at 32.
    for (seq_len, base) in [(24, 25_198.420998), (32, 43_267.487109)] {
        let got = frequencies(&dynamic_config(), seq_len);
        let want = plain_inv_freq(base, 8);
        // The bases are given to 6 decimals, 4e-11 relative.
        let what = format!("seq_len {seq_len}");
        assert_pairs_rel(&what, &got.inv_freq, &want, 1.0, 0..4, LITERAL_REL);
    }
    let at_24 = frequencies(&dynamic_config(), 24);
    assert_rel(
        "pair 1 at 24",
        at_24.inv_freq[1],
        7.937005259841e-2,
        LITERAL_REL,
    );
}

#[test]
fn dynamic_ntk_forgets_previous_length() {
    let config = dynamic_config();
    let first = frequencies(&config, 8);
    let long = frequencies(&config, 32);
    let again = frequencies(&config, 8);
    assert_ne!(first.inv_freq, long.inv_freq);
    assert_eq!(
        first, again,
        "a call at length 8 after 32 gives the original frequencies"
    );
}

#[test]
fn dynamic_ntk_rejects_rotary_dim_2() {
    let config = RopeConfig::new(2).with_scaling(RopeScaling::Dynamic {
        factor: 2.0,
        max_position_embeddings: 16,
    });
    match config.frequencies(32) {
        Err(Error::InvalidShape { name, value, .. }) => {
            assert_eq!(name, "rotary_dim");
            assert_eq!(value, 2);
        }
        other => panic!("expected InvalidShape for rotary_dim, got {other:?}"),
    }
}

// ---------------------------------------------------------------- YaRN

/// gpt-oss: d = 64, base 150000, factor 32, original 4096, beta_fast 32, beta_slow 1.
fn gpt_oss_yarn(truncate: bool) -> Yarn {
    let mut yarn = Yarn::new(32.0, 4096);
    yarn.truncate = truncate;
    yarn
}

fn gpt_oss_config(truncate: bool) -> RopeConfig {
    RopeConfig::new(64)
        .with_base(150_000.0)
        .with_scaling(RopeScaling::Yarn(gpt_oss_yarn(truncate)))
}

#[test]
fn yarn_ramp_bounds_gpt_oss() {
    let (low, high) = gpt_oss_yarn(false).ramp_bounds(150_000.0, 64);
    assert_rel(
        "low without truncation",
        low,
        8.092779115512402,
        FREQUENCY_REL,
    );
    assert_rel(
        "high without truncation",
        high,
        17.39802450158856,
        FREQUENCY_REL,
    );

    let (low, high) = gpt_oss_yarn(true).ramp_bounds(150_000.0, 64);
    assert_eq!(low, 8.0, "floor of the low bound");
    assert_eq!(high, 18.0, "ceil of the high bound");
}

#[test]
fn yarn_truncation_moves_pair_12() {
    let exact = frequencies(&gpt_oss_config(false), 1);
    let truncated = frequencies(&gpt_oss_config(true), 1);
    assert_rel(
        "pair 12, truncate false",
        exact.inv_freq[12],
        6.7949594897e-3,
        LITERAL_REL,
    );
    assert_rel(
        "pair 12, truncated",
        truncated.inv_freq[12],
        7.0157139105e-3,
        LITERAL_REL,
    );

    // Below the ramp pairs keep their frequency, above it they are divided by the factor.
    let plain = plain_inv_freq(150_000.0, 64);
    for (what, got) in [("truncate false", &exact), ("truncated", &truncated)] {
        assert_pairs_rel(what, &got.inv_freq, &plain, 1.0, 0..8, FREQUENCY_REL);
        assert_pairs_rel(what, &got.inv_freq, &plain, 32.0, 18..32, FREQUENCY_REL);
    }
}

#[test]
fn yarn_attention_factor_gpt_oss() {
    // 0.1 ln 32 + 1
    let got = frequencies(&gpt_oss_config(false), 1).attention_factor;
    assert!((got - 1.3465735903).abs() < 1e-10, "attention factor {got}");
}

#[test]
fn yarn_null_factor_from_config() {
    let text = r#"{
        "head_dim": 64, "rope_theta": 150000, "max_position_embeddings": 131072,
        "rope_scaling": {"rope_type": "yarn", "factor": null, "beta_fast": 32.0,
            "beta_slow": 1.0, "original_max_position_embeddings": 4096, "truncate": false}
    }"#;
    let settings = RopeSettings::from_json_str(text, None).expect("config loads");
    let RopeScaling::Yarn(yarn) = &settings.rope.scaling else {
        panic!("expected YaRN, got {:?}", settings.rope.scaling);
    };
    assert_eq!(yarn.factor, 32.0, "131072 / 4096");
    assert_eq!(
        frequencies(&settings.rope, 1),
        frequencies(&gpt_oss_config(false), 1)
    );
}

// ---------------------------------------------------------------- LongRoPE

/// Phi-3.5-mini-instruct: head_dim 96, base 10000, L0 4096, L 131072, and its factor lists
/// from the golden LongRoPE case.
fn phi35_config() -> RopeConfig {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/golden/rope_longrope_phi35mini_long_seq131072.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let value: serde_json::Value = serde_json::from_str(&text).expect("golden JSON");
    let list = |name: &str| -> Vec<f64> {
        let items = value["params"]["scaling"][name].as_array();
        let items = items.unwrap_or_else(|| panic!("golden file has no {name}"));
        items
            .iter()
            .map(|x| x.as_f64().expect("a number"))
            .collect()
    };
    RopeConfig::new(96).with_scaling(RopeScaling::LongRope(LongRope {
        short_factor: list("short_factor"),
        long_factor: list("long_factor"),
        original_max_position_embeddings: 4096,
        max_position_embeddings: 131_072,
        attention_factor: None,
    }))
}

fn phi35_factors(config: &RopeConfig) -> (&[f64], &[f64]) {
    match &config.scaling {
        RopeScaling::LongRope(long_rope) => (&long_rope.short_factor, &long_rope.long_factor),
        other => panic!("expected LongRoPE, got {other:?}"),
    }
}

fn assert_divided(what: &str, got: &[f64], factors: &[f64]) {
    let plain = plain_inv_freq(10_000.0, 96);
    assert_eq!(got.len(), 48, "{what}: pairs");
    for i in 0..48 {
        let want = plain[i] / factors[i];
        assert_rel(&format!("{what} pair {i}"), got[i], want, FREQUENCY_REL);
    }
}

#[test]
fn longrope_short_factors_through_original() {
    let config = phi35_config();
    let (short, long) = phi35_factors(&config);
    assert_ne!(short, long);
    for seq_len in [1, 4095, 4096] {
        let got = frequencies(&config, seq_len);
        assert_divided(&format!("seq_len {seq_len}"), &got.inv_freq, short);
    }
}

#[test]
fn longrope_long_factors_after_original() {
    let config = phi35_config();
    let (_, long) = phi35_factors(&config);
    for seq_len in [4097, 131_072, 1 << 24] {
        let got = frequencies(&config, seq_len);
        assert_divided(&format!("seq_len {seq_len}"), &got.inv_freq, long);
    }
}

#[test]
fn longrope_attention_factor_phi35() {
    // sqrt(1 + ln(131072 / 4096) / ln 4096), for short and long factors alike.
    for seq_len in [4096, 4097] {
        let got = frequencies(&phi35_config(), seq_len).attention_factor;
        assert!(
            (got - 1.1902380714).abs() < 1e-10,
            "seq_len {seq_len}: {got}"
        );
    }
}

#[test]
fn longrope_original_length_both_paths() {
    // The last token of a 4096-token sequence sits at position 4095 and uses short factors.
    let config = phi35_config();
    let frequencies = frequencies(&config, 4096);
    let shape = QkShape {
        batch: 1,
        seq_len: 4096,
        num_heads: 1,
        num_kv_heads: 1,
        head_dim: 96,
        layout: Layout::Bshd,
    };
    let (q_len, k_len) = shape.lens().expect("shape");
    let q = common::random_vec(40, q_len);
    let k = common::random_vec(41, k_len);
    let (mut q_cpu, mut k_cpu) = (q.clone(), k.clone());
    rope::apply_cpu(
        &config,
        &frequencies,
        &shape,
        Positions::Start(0),
        &mut q_cpu,
        &mut k_cpu,
    )
    .expect("CPU at seq_len = original");

    let Some(ctx) = common::gpu() else { return };
    let (q_gpu, k_gpu) = rope::gpu::apply(
        ctx,
        &config,
        &frequencies,
        &shape,
        Positions::Start(0),
        &q,
        &k,
    )
    .expect("GPU at seq_len = original");
    let tolerance = scaled(GPU_VS_CPU, frequencies.attention_factor);
    common::assert_close("longrope q", &q_gpu, &q_cpu, tolerance);
    common::assert_close("longrope k", &k_gpu, &k_cpu, tolerance);
}

// ---------------------------------------------------------------- Llama 3

/// head_dim 64, base 500000, low 1, high 4, original 8192.
fn llama3_config(factor: f64) -> RopeConfig {
    RopeConfig::new(64)
        .with_base(500_000.0)
        .with_scaling(RopeScaling::Llama3(Llama3 {
            factor,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        }))
}

/// Pairs 0-14 have wavelengths below 8192 / 4 and keep their frequency, 15-17 are smoothed,
/// and 18-31 have wavelengths above 8192 and are divided by the factor.
fn assert_llama3_bands(got: &RopeFrequencies, factor: f64, pair_15: f64) {
    let plain = plain_inv_freq(500_000.0, 64);
    assert_pairs_rel("kept", &got.inv_freq, &plain, 1.0, 0..15, FREQUENCY_REL);
    assert_rel("smoothed pair 15", got.inv_freq[15], pair_15, LITERAL_REL);
    let smoothed = got.inv_freq[15..18].iter().zip(&plain[15..18]);
    for (i, (&w, &unscaled)) in (15..18).zip(smoothed) {
        assert!(
            w > unscaled / factor && w < unscaled,
            "pair {i}: {w} is not between {} and {unscaled}",
            unscaled / factor
        );
    }
    assert_pairs_rel(
        "divided",
        &got.inv_freq,
        &plain,
        factor,
        18..32,
        FREQUENCY_REL,
    );
    assert_eq!(got.attention_factor, 1.0);
}

#[test]
fn llama3_bands_factor_32() {
    let got = frequencies(&llama3_config(32.0), 1);
    assert_llama3_bands(&got, 32.0, 1.2905479282e-3);
}

#[test]
fn llama3_factor_8_from_config() {
    let text = r#"{
        "head_dim": 64, "rope_theta": 500000.0,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    }"#;
    let settings = RopeSettings::from_json_str(text, None).expect("config loads");
    assert_eq!(settings.rope, llama3_config(8.0));
    let got = frequencies(&settings.rope, 1);
    assert_llama3_bands(&got, 8.0, 1.3718935678e-3);
}

// ---------------------------------------------------------------- invalid parameters

fn expect_parameter_error(what: &str, config: RopeConfig, parameter: &str) {
    match config.frequencies(100) {
        Err(Error::InvalidParameter { name, .. }) => assert_eq!(name, parameter, "{what}"),
        other => panic!("{what}: expected InvalidParameter for {parameter}, got {other:?}"),
    }
}

#[test]
fn invalid_factors_name_parameter() {
    let linear = |factor| RopeConfig::new(64).with_scaling(RopeScaling::Linear { factor });
    expect_parameter_error("linear factor 0", linear(0.0), "factor");
    expect_parameter_error("linear factor NaN", linear(f64::NAN), "factor");
    expect_parameter_error("linear factor -2", linear(-2.0), "factor");

    let dynamic = RopeConfig::new(64).with_scaling(RopeScaling::Dynamic {
        factor: 0.0,
        max_position_embeddings: 16,
    });
    expect_parameter_error("dynamic factor 0", dynamic, "factor");

    let yarn = |factor| {
        RopeConfig::new(64)
            .with_base(150_000.0)
            .with_scaling(RopeScaling::Yarn(Yarn::new(factor, 4096)))
    };
    expect_parameter_error("yarn factor 0", yarn(0.0), "factor");
    expect_parameter_error("yarn factor NaN", yarn(f64::NAN), "factor");

    let mut llama3 = llama3_config(8.0);
    llama3.scaling = RopeScaling::Llama3(Llama3 {
        factor: f64::NAN,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 8192,
    });
    expect_parameter_error("llama3 factor NaN", llama3, "factor");
}

#[test]
fn llama3_high_not_above_low() {
    for high in [1.0, 0.5] {
        let mut config = llama3_config(8.0);
        config.scaling = RopeScaling::Llama3(Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: high,
            original_max_position_embeddings: 8192,
        });
        expect_parameter_error(&format!("high {high}"), config, "high_freq_factor");
    }
}

#[test]
fn longrope_wrong_list_length() {
    for (short_len, long_len, name, wrong) in
        [(47, 48, "short_factor", 47), (48, 49, "long_factor", 49)]
    {
        let mut config = phi35_config();
        if let RopeScaling::LongRope(long_rope) = &mut config.scaling {
            long_rope.short_factor.resize(short_len, 1.0);
            long_rope.long_factor.resize(long_len, 1.0);
        }
        match config.frequencies(10) {
            Err(Error::LengthMismatch {
                name: got,
                expected,
                actual,
            }) => {
                assert_eq!(got, name);
                assert_eq!(expected, 48);
                assert_eq!(actual, wrong);
            }
            other => panic!("{name}: expected LengthMismatch, got {other:?}"),
        }
    }
}

// ---------------------------------------------------------------- GPU against CPU and f64

/// One configuration per scaling method, with the sequence length its frequencies are
/// computed for (it picks the dynamic base and the LongRoPE factor list).
fn methods() -> Vec<(&'static str, RopeConfig, u64)> {
    let dynamic = RopeConfig::new(64).with_scaling(RopeScaling::Dynamic {
        factor: 2.0,
        max_position_embeddings: 4096,
    });
    let mut deepseek = Yarn::new(40.0, 4096);
    deepseek.mscale = Some(1.0);
    deepseek.mscale_all_dim = Some(0.707);
    let qwen = RopeConfig::new(128)
        .with_base(1_000_000.0)
        .with_scaling(RopeScaling::Yarn(Yarn::new(4.0, 32_768)));
    vec![
        ("none", RopeConfig::new(64), 1),
        (
            "linear",
            RopeConfig::new(64).with_scaling(RopeScaling::Linear { factor: 4.0 }),
            1,
        ),
        ("dynamic", dynamic, 1 << 24),
        ("yarn gpt-oss", gpt_oss_config(false), 1),
        ("yarn qwen", qwen, 1),
        (
            "yarn mscale interleaved",
            RopeConfig::new(64)
                .with_layout(RopeLayout::Interleaved)
                .with_scaling(RopeScaling::Yarn(deepseek)),
            1,
        ),
        ("llama3", llama3_config(32.0), 1),
        ("longrope short", phi35_config(), 4096),
        ("longrope long", phi35_config(), 1 << 24),
        (
            "partial rotary linear",
            RopeConfig::new(80)
                .with_rotary_dim(32)
                .with_scaling(RopeScaling::Linear { factor: 2.0 }),
            1,
        ),
    ]
}

fn scaled(tolerance: Tolerance, attention_factor: f64) -> Tolerance {
    Tolerance {
        abs: tolerance.abs * attention_factor.max(1.0),
        rel: tolerance.rel,
    }
}

#[test]
fn gpu_apply_matches_cpu_each_method() {
    let Some(ctx) = common::gpu() else { return };
    for (seed, (name, config, seq_len)) in methods().into_iter().enumerate() {
        let frequencies = frequencies(&config, seq_len);
        let layout = if seed % 2 == 0 {
            Layout::Bshd
        } else {
            Layout::Bhsd
        };
        let shape = QkShape {
            batch: 2,
            seq_len: 33,
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: config.head_dim,
            layout,
        };
        let (q_len, k_len) = shape.lens().expect("shape");
        let q = common::random_vec(100 + seed as u64, q_len);
        let k = common::random_vec(200 + seed as u64, k_len);
        // Late positions, where an f32 angle would be far off.
        let positions = Positions::Start(POSITION_LIMIT - 40);

        let (mut q_cpu, mut k_cpu) = (q.clone(), k.clone());
        rope::apply_cpu(
            &config,
            &frequencies,
            &shape,
            positions,
            &mut q_cpu,
            &mut k_cpu,
        )
        .unwrap_or_else(|e| panic!("{name}: CPU: {e}"));
        let (q_gpu, k_gpu) =
            rope::gpu::apply(ctx, &config, &frequencies, &shape, positions, &q, &k)
                .unwrap_or_else(|e| panic!("{name}: GPU: {e}"));
        let tolerance = scaled(GPU_VS_CPU, frequencies.attention_factor);
        common::assert_close(&format!("{name} q"), &q_gpu, &q_cpu, tolerance);
        common::assert_close(&format!("{name} k"), &k_gpu, &k_cpu, tolerance);
    }
}

#[test]
fn gpu_tables_match_cpu_each_method() {
    let Some(ctx) = common::gpu() else { return };
    for (name, config, seq_len) in methods() {
        let frequencies = frequencies(&config, seq_len);
        let positions = Positions::Start(POSITION_LIMIT - 20);
        let cpu = rope::tables_cpu(&config, &frequencies, positions, 20)
            .unwrap_or_else(|e| panic!("{name}: CPU: {e}"));
        let gpu = rope::gpu::tables(ctx, &config, &frequencies, positions, 20)
            .unwrap_or_else(|e| panic!("{name}: GPU: {e}"));
        let tolerance = scaled(GPU_VS_CPU, frequencies.attention_factor);
        common::assert_close(&format!("{name} cos"), &gpu.cos, &cpu.cos, tolerance);
        common::assert_close(&format!("{name} sin"), &gpu.sin, &cpu.sin, tolerance);
    }
}

/// Asserts that a cos/sin table `[positions, rotary_dim]` contains
/// `attention_factor * (cos, sin)(p * inv_freq)` within `PAIR_REL * attention_factor`.
fn assert_tables_exact(
    what: &str,
    config: &RopeConfig,
    frequencies: &RopeFrequencies,
    positions: &[u32],
    cos: &[f32],
    sin: &[f32],
) {
    let factor = frequencies.attention_factor;
    let bound = PAIR_REL * factor;
    let half = config.rotary_dim / 2;
    for (t, &position) in positions.iter().enumerate() {
        for (i, &w) in frequencies.inv_freq.iter().enumerate() {
            let (s, c) = (f64::from(position) * w).sin_cos();
            // Both columns of a pair hold the same value, in either layout.
            let columns = match config.layout {
                RopeLayout::Half => [i, i + half],
                RopeLayout::Interleaved => [2 * i, 2 * i + 1],
            };
            for column in columns {
                let index = t * config.rotary_dim + column;
                let (got_c, got_s) = (f64::from(cos[index]), f64::from(sin[index]));
                assert!(
                    (got_c - c * factor).abs() <= bound && (got_s - s * factor).abs() <= bound,
                    "{what}: position {position} pair {i}: got ({got_c}, {got_s}), want \
                     ({}, {}), bound {bound:e}",
                    c * factor,
                    s * factor
                );
            }
        }
    }
}

/// Asserts that `rotated` is `input` rotated per pair by `p * inv_freq` and scaled by the
/// attention factor, within `PAIR_REL` times the pair's norm and the factor. One head is
/// `head_dim` contiguous features; features past `rotary_dim` must be unchanged.
fn assert_rotated_exact(
    what: &str,
    config: &RopeConfig,
    frequencies: &RopeFrequencies,
    head_positions: &[u32],
    input: &[f32],
    rotated: &[f32],
) {
    let factor = frequencies.attention_factor;
    let heads = input
        .chunks(config.head_dim)
        .zip(rotated.chunks(config.head_dim));
    for ((head, (x, y)), &position) in heads.enumerate().zip(head_positions) {
        for (i, &w) in frequencies.inv_freq.iter().enumerate() {
            let (a, b) = match config.layout {
                RopeLayout::Half => (i, i + config.rotary_dim / 2),
                RopeLayout::Interleaved => (2 * i, 2 * i + 1),
            };
            let (s, c) = (f64::from(position) * w).sin_cos();
            let (x_a, x_b) = (f64::from(x[a]), f64::from(x[b]));
            let want_a = (x_a * c - x_b * s) * factor;
            let want_b = (x_b * c + x_a * s) * factor;
            let bound = PAIR_REL * x_a.hypot(x_b) * factor;
            let (got_a, got_b) = (f64::from(y[a]), f64::from(y[b]));
            assert!(
                (got_a - want_a).abs() <= bound && (got_b - want_b).abs() <= bound,
                "{what}: head {head} position {position} pair {i}: got ({got_a}, {got_b}), \
                 want ({want_a}, {want_b}), bound {bound:e}"
            );
        }
        assert_eq!(
            x[config.rotary_dim..],
            y[config.rotary_dim..],
            "{what}: head {head}: features past rotary_dim must pass through"
        );
    }
}

#[test]
fn exact_angle_known_value_131071() {
    // cos and sin of 131071 radians, to 12 digits (Python math.cos / math.sin in f64).
    let (s, c) = 131_071f64.sin_cos();
    assert!((c - -0.817983499388).abs() < 1e-12, "cos {c}");
    assert!((s - -0.575241683755).abs() < 1e-12, "sin {s}");
}

#[test]
fn gpu_exact_angles_pair_0() {
    let Some(ctx) = common::gpu() else { return };
    // Pair 0 has inv_freq 1 for any base, so the angle is the position in radians.
    for head_dim in [2, 64] {
        let config = RopeConfig::new(head_dim);
        let frequencies = frequencies(&config, 1);
        assert_eq!(frequencies.inv_freq[0], 1.0);
        let positions = Positions::Ids(&EXACT_ANGLE_POSITIONS);
        let tables = rope::gpu::tables(ctx, &config, &frequencies, positions, 6).expect("tables");
        let what = format!("head_dim {head_dim}");
        assert_tables_exact(
            &what,
            &config,
            &frequencies,
            &EXACT_ANGLE_POSITIONS,
            &tables.cos,
            &tables.sin,
        );

        // Position 131071 is row 3; column 0 is pair 0.
        let row = 3 * config.rotary_dim;
        let (got_c, got_s) = (f64::from(tables.cos[row]), f64::from(tables.sin[row]));
        assert!(
            (got_c - -0.817983499388).abs() <= PAIR_REL,
            "{what}: cos(131071) {got_c}"
        );
        assert!(
            (got_s - -0.575241683755).abs() <= PAIR_REL,
            "{what}: sin(131071) {got_s}"
        );
    }
}

/// `count` positions below 2^24 from `rng`, with the first and last position of the range.
fn sample_positions(rng: &mut ChaCha8Rng, count: usize) -> Vec<u32> {
    let mut positions = vec![0, POSITION_LIMIT - 1];
    positions.extend((2..count).map(|_| rng.random_range(0..POSITION_LIMIT)));
    positions
}

fn check_random_positions(
    ctx: &GpuContext,
    seed: u64,
    name: &str,
    config: &RopeConfig,
    seq_len: u64,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let frequencies = frequencies(config, seq_len);
    let positions = sample_positions(&mut rng, 48);

    let tables = rope::gpu::tables(
        ctx,
        config,
        &frequencies,
        Positions::Ids(&positions),
        positions.len(),
    )
    .unwrap_or_else(|e| panic!("{name}: tables: {e}"));
    let what = format!("{name} tables");
    assert_tables_exact(
        &what,
        config,
        &frequencies,
        &positions,
        &tables.cos,
        &tables.sin,
    );

    // Bshd with one batch: heads of one token are adjacent, so head h of token t is chunk
    // t * heads + h.
    let shape = QkShape {
        batch: 1,
        seq_len: positions.len(),
        num_heads: 3,
        num_kv_heads: 1,
        head_dim: config.head_dim,
        layout: Layout::Bshd,
    };
    let (q_len, k_len) = shape.lens().expect("shape");
    let q: Vec<f32> = (0..q_len).map(|_| rng.random_range(-2.0f32..2.0)).collect();
    let k: Vec<f32> = (0..k_len).map(|_| rng.random_range(-2.0f32..2.0)).collect();
    let (q_gpu, k_gpu) = rope::gpu::apply(
        ctx,
        config,
        &frequencies,
        &shape,
        Positions::Ids(&positions),
        &q,
        &k,
    )
    .unwrap_or_else(|e| panic!("{name}: apply: {e}"));
    let per_head = |heads: usize| -> Vec<u32> {
        positions
            .iter()
            .flat_map(|&p| std::iter::repeat_n(p, heads))
            .collect()
    };
    let (q_positions, k_positions) = (per_head(3), per_head(1));
    let what = format!("{name} q");
    assert_rotated_exact(&what, config, &frequencies, &q_positions, &q, &q_gpu);
    let what = format!("{name} k");
    assert_rotated_exact(&what, config, &frequencies, &k_positions, &k, &k_gpu);
}

#[test]
fn gpu_random_positions_match_f64() {
    let Some(ctx) = common::gpu() else { return };
    for (seed, (name, config, seq_len)) in methods().into_iter().enumerate() {
        check_random_positions(ctx, 300 + seed as u64, name, &config, seq_len);
    }
}

#[test]
#[ignore = "sweeps 2^24 positions; run with cargo test --release -- --ignored"]
fn gpu_sweep_every_position_pair_0() {
    let Some(ctx) = common::gpu() else { return };
    let config = RopeConfig::new(2);
    let frequencies = frequencies(&config, 1);
    // 2^20 positions per dispatch keeps each table at 8 MiB.
    const CHUNK: u32 = 1 << 20;
    let mut overall = 0.0f64;
    for start in (0..POSITION_LIMIT).step_by(CHUNK as usize) {
        let tables = rope::gpu::tables(
            ctx,
            &config,
            &frequencies,
            Positions::Start(start),
            CHUNK as usize,
        )
        .unwrap_or_else(|e| panic!("chunk at {start}: {e}"));
        let mut worst = (0.0f64, 0u32);
        // Each row contains pair 0 twice, in columns 0 and 1 (rotary_dim 2).
        let rows = tables.cos.chunks_exact(2).zip(tables.sin.chunks_exact(2));
        for (offset, (cos_row, sin_row)) in rows.enumerate() {
            let position = start + offset as u32;
            let (want_s, want_c) = f64::from(position).sin_cos();
            for (&c, &s) in cos_row.iter().zip(sin_row) {
                let error = (f64::from(c) - want_c)
                    .abs()
                    .max((f64::from(s) - want_s).abs());
                if error > worst.0 {
                    worst = (error, position);
                }
            }
        }
        assert!(
            worst.0 <= PAIR_REL,
            "chunk at {start}: position {} is off by {:e}",
            worst.1,
            worst.0
        );
        overall = overall.max(worst.0);
    }
    eprintln!("largest cos/sin error over positions 0..2^24: {overall:e}");
}
