//! The data behind `posenc plot`: every plot's GPU data against its CPU data, and the CPU
//! data against the formulas, written out here in f64.
#![cfg(feature = "cli")]

mod common;

use std::f64::consts::PI;

use common::{assert_close, gpu, Tolerance};
use posenc::alibi::{Alibi, AlibiBias};
use posenc::attention::{AttentionParams, AttentionShape, Segments};
use posenc::plot::{
    AlibiPlot, AttentionPlot, Backend, PlotError, RopeCase, RopeComparison, RopeDecayPlot,
    RopeFrequencyPlot, SinusoidalPlot,
};
use posenc::rope::{Llama3, LongRope, RopeConfig, RopeScaling, Yarn};
use posenc::sinusoidal::{Sinusoidal, SinusoidalLayout};

/// A sine or cosine rounded to f32: half an ulp of 1.
const F32_TRIG: Tolerance = Tolerance {
    abs: 1e-7,
    rel: 0.0,
};

/// GPU sines and cosines (exact angle reduction, then polynomials within a few f32 ulps)
/// against the CPU's, for values of order 1.
const GPU_TRIG: Tolerance = Tolerance {
    abs: 1e-6,
    rel: 0.0,
};

/// RoFormer's bound sums up to 64 partial sums of rotated f32 unit pairs, each off by a few
/// 1e-7 on the GPU; the bound is about 1 to 32.
const GPU_BOUND: Tolerance = Tolerance {
    abs: 1e-5,
    rel: 1e-6,
};

/// GPU attention (f32 accumulation) against the f64 CPU reference: scores of order 1 from
/// 32-term dot products and softmax sums of up to 24 terms.
const GPU_PROBS: Tolerance = Tolerance {
    abs: 2e-6,
    rel: 1e-5,
};

/// A measured wavelength against `2π / inv_freq`: the angle near 3 rad is read from f32
/// cos and sin (about 1e-7 relative) at a 2^-32-turn resolution on the GPU.
const WAVELENGTH_REL: f64 = 1e-6;

fn comparison() -> RopeFrequencyPlot {
    let phi = RopeConfig::new(96).with_scaling(RopeScaling::LongRope(LongRope {
        short_factor: (0..48).map(|i| 1.0 + i as f64 / 48.0).collect(),
        long_factor: (0..48).map(|i| 1.0 + i as f64).collect(),
        original_max_position_embeddings: 4096,
        max_position_embeddings: 131_072,
        attention_factor: None,
    }));
    RopeFrequencyPlot::comparison(&RopeComparison {
        config: RopeConfig::new(128).with_base(500_000.0),
        factor: 8.0,
        original_max_position_embeddings: 8192,
        seq_len: 65_536,
        longrope: Some(("test LongRoPE".to_owned(), phi)),
    })
}

#[test]
fn sinusoidal_cpu_data_matches_formula() {
    for layout in [SinusoidalLayout::Interleaved, SinusoidalLayout::Concat] {
        let plot = SinusoidalPlot {
            encoding: Sinusoidal::new(16).with_layout(layout),
            positions: 50,
        };
        let table = plot.data(Backend::Cpu).unwrap();
        let mut expected = vec![0.0f32; 50 * 16];
        for p in 0..50 {
            for i in 0..8 {
                let angle = p as f64 * 10_000f64.powf(-((2 * i) as f64) / 16.0);
                let (sin_col, cos_col) = match layout {
                    SinusoidalLayout::Interleaved => (2 * i, 2 * i + 1),
                    SinusoidalLayout::Concat => (i, 8 + i),
                };
                expected[p * 16 + sin_col] = angle.sin() as f32;
                expected[p * 16 + cos_col] = angle.cos() as f32;
            }
        }
        assert_close(&format!("{layout:?}"), &table, &expected, F32_TRIG);
    }
}

#[test]
fn sinusoidal_gpu_data_matches_cpu() {
    let Some(ctx) = gpu() else { return };
    for layout in [SinusoidalLayout::Interleaved, SinusoidalLayout::Concat] {
        let plot = SinusoidalPlot {
            encoding: Sinusoidal::new(64).with_layout(layout),
            positions: 300,
        };
        let cpu = plot.data(Backend::Cpu).unwrap();
        let gpu = plot.data(Backend::Gpu(ctx)).unwrap();
        assert_close(&format!("{layout:?}"), &gpu, &cpu, GPU_TRIG);
    }
}

#[test]
fn rope_frequencies_draw_every_method() {
    let plot = comparison();
    let types: Vec<&str> = plot
        .cases
        .iter()
        .map(|case| case.config.scaling.rope_type())
        .collect();
    assert_eq!(
        types,
        ["default", "linear", "dynamic", "yarn", "llama3", "longrope"]
    );
    assert!(plot.note.is_none());
    assert!(plot.cases[5].label.contains("test LongRoPE"));
    assert!(plot.cases[5].label.contains("long factors"));
}

#[test]
fn rope_frequencies_without_longrope_say_so() {
    let plot = RopeFrequencyPlot::comparison(&RopeComparison {
        config: RopeConfig::new(64),
        factor: 4.0,
        original_max_position_embeddings: 2048,
        seq_len: 8192,
        longrope: None,
    });
    assert_eq!(plot.cases.len(), 5);
    let note = plot
        .note
        .expect("a legend note for the missing LongRoPE curve");
    assert!(note.contains("LongRoPE"), "{note}");
}

#[test]
fn rope_frequencies_keep_config_parameters() {
    let own = Llama3 {
        factor: 32.0,
        low_freq_factor: 2.0,
        high_freq_factor: 8.0,
        original_max_position_embeddings: 8192,
    };
    let plot = RopeFrequencyPlot::comparison(&RopeComparison {
        config: RopeConfig::new(64).with_scaling(RopeScaling::Llama3(own.clone())),
        factor: 32.0,
        original_max_position_embeddings: 8192,
        seq_len: 262_144,
        longrope: None,
    });
    assert_eq!(plot.cases[4].config.scaling, RopeScaling::Llama3(own));
}

#[test]
fn rope_frequencies_measure_inv_freq() {
    let plot = comparison();
    let mut backends = vec![("cpu", Backend::Cpu)];
    if let Some(ctx) = gpu() {
        backends.push(("gpu", Backend::Gpu(ctx)));
    }
    for (name, backend) in backends {
        let data = plot.data(backend).unwrap();
        for (case, curve) in plot.cases.iter().zip(&data) {
            let frequencies = case.config.frequencies(case.seq_len).unwrap();
            assert_eq!(curve.per_pair.len(), frequencies.inv_freq.len());
            assert_eq!(curve.attention_factor, frequencies.attention_factor);
            for (pair, (&measured, &w)) in
                curve.per_pair.iter().zip(&frequencies.inv_freq).enumerate()
            {
                let expected = 2.0 * PI / w;
                assert!(
                    (measured - expected).abs() <= WAVELENGTH_REL * expected,
                    "{name} {}: pair {pair} measured {measured}, expected {expected}",
                    case.label
                );
            }
        }
    }
}

#[test]
fn rope_frequencies_reject_turns_above_pi() {
    let config = RopeConfig::new(8).with_scaling(RopeScaling::Linear { factor: 0.25 });
    let error = RopeFrequencyPlot {
        cases: vec![RopeCase {
            label: "linear 0.25".to_owned(),
            config,
            seq_len: 1,
        }],
        title: String::new(),
        reference_lengths: Vec::new(),
        note: None,
    }
    .data(Backend::Cpu)
    .unwrap_err();
    assert!(matches!(error, PlotError::Invalid(_)), "{error}");
    assert!(error.to_string().contains("pair 0"), "{error}");
}

/// RoFormer's bound written out: `(1/(d/2)) Σ_{j=1..d/2} |Σ_{k<j} e^(i r θ_k)|`.
fn bound_formula(inv_freq: &[f64], distance: f64) -> f64 {
    let (mut real, mut imaginary, mut total) = (0.0f64, 0.0f64, 0.0f64);
    for &w in inv_freq {
        real += (distance * w).cos();
        imaginary += (distance * w).sin();
        total += real.hypot(imaginary);
    }
    total / inv_freq.len() as f64
}

#[test]
fn rope_decay_cpu_data_matches_formula() {
    let config = RopeConfig::new(32);
    let plot = RopeDecayPlot::new(&config, 500, 101);
    assert_eq!(plot.cases.len(), 1);
    assert_eq!(plot.distances.len(), 101);
    assert_eq!(plot.distances[0], 0);
    assert_eq!(plot.distances[100], 500);

    let data = plot.data(Backend::Cpu).unwrap();
    let inv_freq = config.frequencies(501).unwrap().inv_freq;
    let expected: Vec<f32> = plot
        .distances
        .iter()
        .map(|&r| bound_formula(&inv_freq, f64::from(r)) as f32)
        .collect();
    let got: Vec<f32> = data[0].iter().map(|&b| b as f32).collect();
    // 16 partial sums of f32-rounded unit pairs: 16 x 1e-7 at most.
    let tolerance = Tolerance {
        abs: 2e-6,
        rel: 1e-7,
    };
    assert_close("bound", &got, &expected, tolerance);
    assert!((data[0][0] - 8.5).abs() < 1e-9, "B(0) = (d/2 + 1)/2");
}

#[test]
fn rope_decay_divides_out_attention_factor() {
    let yarn = RopeConfig::new(32).with_scaling(RopeScaling::Yarn(Yarn::new(4.0, 64)));
    let plot = RopeDecayPlot::new(&yarn, 200, 201);
    assert_eq!(
        plot.cases.len(),
        2,
        "a scaled config adds the unscaled curve"
    );
    let data = plot.data(Backend::Cpu).unwrap();
    let inv_freq = yarn.frequencies(201).unwrap().inv_freq;
    for (&r, &bound) in plot.distances.iter().zip(&data[0]) {
        let expected = bound_formula(&inv_freq, f64::from(r));
        assert!(
            (bound - expected).abs() < 2e-6,
            "r {r}: {bound} vs {expected}"
        );
    }
}

#[test]
fn rope_decay_gpu_data_matches_cpu() {
    let Some(ctx) = gpu() else { return };
    let configs = [
        RopeConfig::new(128),
        RopeConfig::new(128)
            .with_base(500_000.0)
            .with_scaling(RopeScaling::Yarn(Yarn::new(8.0, 512))),
        RopeConfig::new(64).with_scaling(RopeScaling::Llama3(Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 256,
        })),
    ];
    for config in configs {
        let plot = RopeDecayPlot::new(&config, 4000, 400);
        let cpu = plot.data(Backend::Cpu).unwrap();
        let gpu = plot.data(Backend::Gpu(ctx)).unwrap();
        for (case, (gpu, cpu)) in plot.cases.iter().zip(gpu.iter().zip(&cpu)) {
            let gpu: Vec<f32> = gpu.iter().map(|&b| b as f32).collect();
            let cpu: Vec<f32> = cpu.iter().map(|&b| b as f32).collect();
            assert_close(&case.label, &gpu, &cpu, GPU_BOUND);
        }
    }
}

#[test]
fn alibi_data_matches_bias_on_both_paths() {
    for bias in [AlibiBias::Causal, AlibiBias::Symmetric] {
        let alibi = Alibi {
            bias,
            ..Alibi::new(12)
        };
        let plot = AlibiPlot { alibi, len: 20 };
        let cpu = plot.data(Backend::Cpu).unwrap();
        let slopes = alibi.slopes().unwrap();
        assert_eq!(cpu.slopes, slopes);
        for (h, slope) in slopes.iter().enumerate() {
            for i in 0..20 {
                for j in 0..20 {
                    let distance = i as f64 - j as f64;
                    let distance = match bias {
                        AlibiBias::Causal => distance,
                        AlibiBias::Symmetric => distance.abs(),
                    };
                    let expected = (-slope * distance) as f32;
                    assert_eq!(
                        cpu.bias[(h * 20 + i) * 20 + j],
                        expected,
                        "{bias:?} [{h}, {i}, {j}]"
                    );
                }
            }
        }
        if let Some(ctx) = gpu() {
            let gpu = plot.data(Backend::Gpu(ctx)).unwrap();
            let exact_f32 = Tolerance {
                abs: 0.0,
                rel: f32::EPSILON as f64,
            };
            assert_close(&format!("{bias:?}"), &gpu.bias, &cpu.bias, exact_f32);
        }
    }
}

fn masked_attention() -> AttentionPlot {
    let segments: Vec<u32> = [0u32; 10].into_iter().chain([1u32; 14]).collect();
    AttentionPlot {
        shape: AttentionShape::new(2, 3, 3, 24, 24, 32),
        params: AttentionParams {
            causal: true,
            window: Some(6),
            key_lengths: Some(vec![24, 17]),
            segments: Some(Segments {
                q: segments.repeat(2),
                kv: segments.repeat(2),
            }),
            alibi: Some(Alibi::new(3)),
            ..AttentionParams::default()
        },
        seed: 7,
    }
}

#[test]
fn attention_cpu_data_follows_masks() {
    let plot = masked_attention();
    let map = plot.data(Backend::Cpu).unwrap();
    assert_eq!(map.probs.len(), 2 * 3 * 24 * 24);
    for (row, (probs, visible)) in map.probs.chunks(24).zip(map.visible.chunks(24)).enumerate() {
        let (b, i) = (row / (3 * 24), row % 24);
        for j in 0..24 {
            let in_segment = (i < 10) == (j < 10);
            let expected = j <= i && j + 6 > i && j < [24, 17][b] && in_segment;
            assert_eq!(visible[j], expected, "row {row} key {j}");
            if !expected {
                assert_eq!(probs[j], 0.0, "hidden key {j} of row {row}");
            }
        }
        let sum: f32 = probs.iter().sum();
        let any_visible = visible.iter().any(|&v| v);
        let expected_sum = if any_visible { 1.0 } else { 0.0 };
        assert!((sum - expected_sum).abs() < 1e-5, "row {row} sums to {sum}");
    }
}

#[test]
fn attention_gpu_data_matches_cpu() {
    let Some(ctx) = gpu() else { return };
    let plot = masked_attention();
    let cpu = plot.data(Backend::Cpu).unwrap();
    let gpu = plot.data(Backend::Gpu(ctx)).unwrap();
    assert_eq!(gpu.visible, cpu.visible);
    assert_close("probs", &gpu.probs, &cpu.probs, GPU_PROBS);
}

#[test]
fn attention_inputs_follow_seed() {
    let plot = masked_attention();
    let [q, k, v] = plot.inputs().unwrap();
    assert_eq!(q.len(), 2 * 3 * 24 * 32);
    assert_eq!(k.len(), q.len());
    assert!(v.iter().all(|&x| x == 0.0));
    assert_eq!(plot.inputs().unwrap()[0], q, "same seed, same Q");
    let other = AttentionPlot { seed: 8, ..plot };
    assert_ne!(other.inputs().unwrap()[0], q, "another seed, another Q");

    // Standard normal entries: mean near 0 and variance near 1 over 4608 draws.
    let mean = q.iter().map(|&x| f64::from(x)).sum::<f64>() / q.len() as f64;
    let variance = q
        .iter()
        .map(|&x| (f64::from(x) - mean).powi(2))
        .sum::<f64>()
        / q.len() as f64;
    assert!(mean.abs() < 0.1, "mean {mean}");
    assert!((variance - 1.0).abs() < 0.1, "variance {variance}");
}
