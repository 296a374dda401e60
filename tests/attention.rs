//! Masked attention on every backend: published cases, masks, biases and odd shapes.
// Published values are written with the digits their source prints.
#![allow(clippy::excessive_precision, clippy::approx_constant)]

mod common;

use common::{assert_close, backends, random_vec, Backend, Tolerance};
use posenc::alibi::{Alibi, AlibiBias};
use posenc::attention::{
    AdditiveMask, AttentionParams, AttentionShape, BoolMask, Segments, NO_KEY_LSE,
};
use posenc::Layout;

/// Published probabilities are given to 10 significant digits; f32 softmax adds a few ulps.
const PUBLISHED: Tolerance = Tolerance {
    abs: 1e-9,
    rel: 1e-6,
};

/// GPU (f32 accumulation) against the f64 CPU reference for inputs in [-1, 1]: dot products
/// of up to 128 terms and softmax sums of up to a few hundred terms, each rounding about
/// 1e-7 per step.
const GPU_VS_CPU: Tolerance = Tolerance {
    abs: 2e-6,
    rel: 1e-5,
};

#[test]
fn attention_boolean_mask_row_without_keys_is_zero() {
    // q = k = v = [[1, 0], [0, 1]], scale 1/sqrt(2); row 0 sees both keys, row 1 none.
    let shape = AttentionShape::new(1, 1, 1, 2, 2, 2);
    let params = AttentionParams {
        mask: Some(BoolMask::shared(vec![true, true, false, false])),
        ..Default::default()
    };
    let identity = [1.0, 0.0, 0.0, 1.0];
    for backend in backends() {
        let result = backend
            .attention(&shape, &params, &identity, &identity, &identity)
            .expect("attention");
        assert_close(
            backend.name(),
            &result.probs[..2],
            &[0.6697615493, 0.3302384507],
            PUBLISHED,
        );
        assert_eq!(&result.probs[2..], &[0.0, 0.0], "{}", backend.name());
        assert_eq!(&result.out[2..], &[0.0, 0.0], "{}", backend.name());
    }
}

#[test]
fn attention_large_score_gap_gives_one_zero() {
    // Scores [151.29, 0]: exp(151.29) overflows f32, so the maximum must be subtracted.
    let shape = AttentionShape::new(1, 1, 1, 1, 2, 1);
    let params = AttentionParams {
        scale: Some(1.0),
        ..Default::default()
    };
    for backend in backends() {
        let result = backend
            .attention(&shape, &params, &[151.29], &[1.0, 0.0], &[2.0, 3.0])
            .expect("attention");
        assert_eq!(result.probs, vec![1.0, 0.0], "{}", backend.name());
        assert_eq!(result.out, vec![2.0], "{}", backend.name());
    }
}

#[test]
fn attention_causal_bottom_right_rows_without_keys() {
    // q_len 5, kv_len 2, bottom-right: rows 0-2 see no key, row 3 sees key 0, row 4 both.
    let shape = AttentionShape::new(1, 1, 1, 5, 2, 4);
    let (q, k, v) = (random_vec(1, 20), random_vec(2, 8), random_vec(3, 8));
    let params = AttentionParams {
        causal: true,
        ..Default::default()
    };
    for backend in backends() {
        let result = backend
            .attention(&shape, &params, &q, &k, &v)
            .expect("attention");
        assert!(
            result.probs[..6].iter().all(|&p| p == 0.0),
            "{}",
            backend.name()
        );
        assert!(
            result.out[..12].iter().all(|&o| o == 0.0),
            "{}",
            backend.name()
        );
        assert_eq!(&result.probs[6..8], &[1.0, 0.0], "{}", backend.name());
        assert_close(
            backend.name(),
            &result.out[12..16],
            &v[..4],
            Tolerance { abs: 0.0, rel: 0.0 },
        );
        assert!(
            result.probs[8] > 0.0 && result.probs[9] > 0.0,
            "{}",
            backend.name()
        );
    }
}

#[test]
fn attention_sliding_window_visible_key_counts() {
    // Window 4, causal, 8 tokens: [1, 2, 3, 4, 4, 4, 4, 4] visible keys per row.
    let shape = AttentionShape::new(1, 1, 1, 8, 8, 4);
    let (q, k, v) = (random_vec(4, 32), random_vec(5, 32), random_vec(6, 32));
    let params = AttentionParams {
        causal: true,
        window: Some(4),
        ..Default::default()
    };
    for backend in backends() {
        let result = backend
            .attention(&shape, &params, &q, &k, &v)
            .expect("attention");
        let counts: Vec<usize> = result
            .probs
            .chunks(8)
            .map(|row| row.iter().filter(|&&p| p > 0.0).count())
            .collect();
        assert_eq!(counts, vec![1, 2, 3, 4, 4, 4, 4, 4], "{}", backend.name());
    }
}

/// Compares GPU and CPU for one configuration on seeded inputs.
fn compare_backends(name: &str, shape: &AttentionShape, params: &AttentionParams, seed: u64) {
    let Some(ctx) = common::gpu() else { return };
    let (q_len, kv_len, _) = shape.lens().expect("shape fits");
    let (q, k, v) = (
        random_vec(seed, q_len),
        random_vec(seed + 1, kv_len),
        random_vec(seed + 2, kv_len),
    );
    let cpu = Backend::Cpu
        .attention(shape, params, &q, &k, &v)
        .expect("cpu attention");
    let gpu = Backend::Gpu(ctx)
        .attention(shape, params, &q, &k, &v)
        .expect("gpu attention");
    assert_close(&format!("{name} probs"), &gpu.probs, &cpu.probs, GPU_VS_CPU);
    assert_close(&format!("{name} out"), &gpu.out, &cpu.out, GPU_VS_CPU);
    assert_close(&format!("{name} lse"), &gpu.lse, &cpu.lse, GPU_VS_CPU);
    for splits in [None, Some(1), Some(3)] {
        let fused = posenc::attention::fused::attention(ctx, shape, params, &q, &k, &v, splits)
            .expect("fused attention");
        assert!(fused.probs.is_empty());
        assert_close(
            &format!("{name} fused {splits:?} out"),
            &fused.out,
            &cpu.out,
            GPU_VS_CPU,
        );
        assert_close(
            &format!("{name} fused {splits:?} lse"),
            &fused.lse,
            &cpu.lse,
            GPU_VS_CPU,
        );
    }
}

#[test]
fn attention_gpu_matches_cpu_for_each_mask() {
    let shape = AttentionShape::new(2, 4, 2, 9, 13, 16);
    let cases = [
        ("plain", AttentionParams::default()),
        (
            "causal",
            AttentionParams {
                causal: true,
                ..Default::default()
            },
        ),
        (
            "top-left causal",
            AttentionParams {
                causal: true,
                q_offset: Some(0),
                ..Default::default()
            },
        ),
        (
            "window",
            AttentionParams {
                causal: true,
                window: Some(3),
                ..Default::default()
            },
        ),
        (
            "key padding",
            AttentionParams {
                key_lengths: Some(vec![13, 4]),
                ..Default::default()
            },
        ),
        (
            "no keys in batch 1",
            AttentionParams {
                key_lengths: Some(vec![5, 0]),
                causal: true,
                ..Default::default()
            },
        ),
        (
            "softcap",
            AttentionParams {
                softcap: Some(2.0),
                scale: Some(3.0),
                ..Default::default()
            },
        ),
        (
            "alibi",
            AttentionParams {
                causal: true,
                alibi: Some(Alibi::new(4)),
                ..Default::default()
            },
        ),
        (
            "alibi symmetric",
            AttentionParams {
                alibi: Some(Alibi {
                    bias: AlibiBias::Symmetric,
                    ..Alibi::new(4)
                }),
                ..Default::default()
            },
        ),
        (
            "mask",
            AttentionParams {
                mask: Some(BoolMask::shared((0..9 * 13).map(|n| n % 3 != 1).collect())),
                ..Default::default()
            },
        ),
        (
            "everything",
            AttentionParams {
                causal: true,
                window: Some(5),
                key_lengths: Some(vec![12, 11]),
                softcap: Some(30.0),
                alibi: Some(Alibi::new(4)),
                mask: Some(BoolMask::shared((0..9 * 13).map(|n| n % 7 != 0).collect())),
                q_offset: Some(3),
                ..Default::default()
            },
        ),
    ];
    for (index, (name, params)) in cases.iter().enumerate() {
        compare_backends(name, &shape, params, 10 * index as u64);
    }
}

#[test]
fn attention_gpu_matches_cpu_on_odd_shapes() {
    let causal = AttentionParams {
        causal: true,
        ..Default::default()
    };
    let shapes = [
        ("mqa decode", AttentionShape::new(1, 8, 1, 1, 300, 64)),
        ("gqa 12 heads", AttentionShape::new(1, 12, 4, 7, 7, 80)),
        ("head_dim 2", AttentionShape::new(3, 2, 2, 5, 6, 2)),
        ("head_dim 128", AttentionShape::new(1, 2, 1, 33, 65, 128)),
        ("q longer than kv", AttentionShape::new(1, 1, 1, 10, 3, 8)),
        (
            "bshd",
            AttentionShape {
                layout: Layout::Bshd,
                ..AttentionShape::new(2, 4, 2, 6, 6, 16)
            },
        ),
    ];
    for (index, (name, shape)) in shapes.iter().enumerate() {
        compare_backends(name, shape, &causal, 100 + 10 * index as u64);
    }
}

#[test]
fn attention_empty_shapes_return_empty() {
    let params = AttentionParams {
        causal: true,
        ..Default::default()
    };
    for backend in backends() {
        for shape in [
            AttentionShape::new(0, 2, 1, 3, 3, 4),
            AttentionShape::new(1, 2, 1, 0, 3, 4),
        ] {
            let result = backend
                .attention(
                    &shape,
                    &params,
                    &[],
                    &vec![0.0; shape.lens().unwrap().1],
                    &vec![0.0; shape.lens().unwrap().1],
                )
                .expect("empty attention");
            assert!(
                result.out.is_empty() && result.probs.is_empty(),
                "{}",
                backend.name()
            );
        }
        // No keys: every row is fully masked.
        let shape = AttentionShape::new(1, 1, 1, 2, 0, 4);
        let result = backend
            .attention(&shape, &params, &[1.0; 8], &[], &[])
            .expect("no keys");
        assert_eq!(result.out, vec![0.0; 8], "{}", backend.name());
    }
}

#[test]
fn attention_gpu_matches_cpu_for_new_masks() {
    let shape = AttentionShape::new(3, 4, 2, 6, 10, 8);
    let plane = 6 * 10;
    let additive: Vec<f32> = (0..3 * plane)
        .map(|n| {
            if n % 5 == 0 {
                f32::NEG_INFINITY
            } else {
                (n % 7) as f32 * 0.25 - 0.5
            }
        })
        .collect();
    let cases = [
        (
            "left padding",
            AttentionParams {
                causal: true,
                key_starts: Some(vec![0, 3, 9]),
                ..Default::default()
            },
        ),
        (
            "offsets per sequence",
            AttentionParams {
                causal: true,
                q_offsets: Some(vec![4, 0, -2]),
                ..Default::default()
            },
        ),
        (
            "segments",
            AttentionParams {
                segments: Some(Segments {
                    q: [0, 0, 1, 1, 1, 2].repeat(3),
                    kv: [0, 0, 0, 0, 0, 1, 1, 1, 1, 2].repeat(3),
                }),
                ..Default::default()
            },
        ),
        (
            "mask per sequence",
            AttentionParams {
                mask: Some(BoolMask {
                    values: (0..3 * plane).map(|n| n % 4 != 3).collect(),
                    batch: 3,
                    heads: 1,
                }),
                ..Default::default()
            },
        ),
        (
            "mask per head",
            AttentionParams {
                mask: Some(BoolMask {
                    values: (0..4 * plane).map(|n| n % 6 != 2).collect(),
                    batch: 1,
                    heads: 4,
                }),
                ..Default::default()
            },
        ),
        (
            "additive",
            AttentionParams {
                additive_mask: Some(AdditiveMask {
                    values: additive.clone(),
                    batch: 3,
                    heads: 1,
                }),
                ..Default::default()
            },
        ),
        (
            "sinks",
            AttentionParams {
                causal: true,
                sinks: Some(vec![0.5, -1.0, 2.0, 0.0]),
                ..Default::default()
            },
        ),
        (
            "sinks without keys",
            AttentionParams {
                key_lengths: Some(vec![10, 0, 4]),
                sinks: Some(vec![0.5, -1.0, 2.0, 0.0]),
                ..Default::default()
            },
        ),
    ];
    for (index, (name, params)) in cases.iter().enumerate() {
        compare_backends(name, &shape, params, 500 + 10 * index as u64);
    }
}

#[test]
fn attention_fully_masked_row_lse_is_sentinel() {
    let shape = AttentionShape::new(1, 1, 1, 2, 3, 4);
    let params = AttentionParams {
        mask: Some(BoolMask::shared(vec![
            true, false, true, false, false, false,
        ])),
        ..Default::default()
    };
    let (q, k, v) = (random_vec(41, 8), random_vec(42, 12), random_vec(43, 12));
    for backend in backends() {
        let result = backend
            .attention(&shape, &params, &q, &k, &v)
            .expect("attention");
        assert_eq!(result.lse[1], NO_KEY_LSE, "{}", backend.name());
        assert!(result.lse[0] > NO_KEY_LSE, "{}", backend.name());
    }
}

#[test]
fn attention_sink_joins_denominator() {
    // One key with score 0 and a sink of logit 0: probability 1/2, output V/2, lse ln 2.
    let shape = AttentionShape::new(1, 1, 1, 1, 1, 2);
    let params = AttentionParams {
        sinks: Some(vec![0.0]),
        ..Default::default()
    };
    for backend in backends() {
        let result = backend
            .attention(&shape, &params, &[0.0, 0.0], &[1.0, 1.0], &[4.0, -2.0])
            .expect("attention");
        assert_close(backend.name(), &result.probs, &[0.5], PUBLISHED);
        assert_close(backend.name(), &result.out, &[2.0, -1.0], PUBLISHED);
        assert_close(
            backend.name(),
            &result.lse,
            &[std::f32::consts::LN_2],
            PUBLISHED,
        );
    }
}

#[test]
fn attention_decode_split_k_matches_cpu() {
    // One query over a long cache: split-K spreads the keys over many workgroups.
    let shape = AttentionShape::new(1, 8, 2, 1, 3000, 64);
    let params = AttentionParams {
        causal: true,
        window: Some(2500),
        ..Default::default()
    };
    assert!(posenc::attention::fused::default_splits(&shape) > 1);
    compare_backends("decode", &shape, &params, 900);
}

#[test]
fn attention_softmax_max_owned_by_other_invocation() {
    // 256 scores, all 0 except index 200 = 10: the maximum sits in another invocation's
    // slice, so a missing barrier would change the result between runs.
    let shape = AttentionShape::new(1, 1, 1, 1, 256, 1);
    let params = AttentionParams {
        scale: Some(1.0),
        ..Default::default()
    };
    let mut k = vec![0.0f32; 256];
    k[200] = 10.0;
    let v: Vec<f32> = (0..256).map(|j| j as f32).collect();
    for backend in backends() {
        let first = backend
            .attention(&shape, &params, &[1.0], &k, &v)
            .expect("attention");
        assert_close(
            backend.name(),
            &first.probs[200..201],
            &[0.9885555106],
            PUBLISHED,
        );
        assert_close(
            backend.name(),
            &first.probs[0..1],
            &[4.488035075e-05],
            PUBLISHED,
        );
        for _ in 0..5 {
            let again = backend
                .attention(&shape, &params, &[1.0], &k, &v)
                .expect("attention");
            common::assert_bits_equal(backend.name(), &again.probs, &first.probs);
        }
    }
    if let Some(ctx) = common::gpu() {
        let first = posenc::attention::fused::attention(ctx, &shape, &params, &[1.0], &k, &v, None)
            .expect("fused");
        for _ in 0..5 {
            let again =
                posenc::attention::fused::attention(ctx, &shape, &params, &[1.0], &k, &v, None)
                    .expect("fused");
            common::assert_bits_equal("fused", &again.out, &first.out);
        }
    }
}

#[test]
fn attention_wide_head_falls_back_to_materialising() {
    compare_backends(
        "head_dim 320",
        &AttentionShape::new(1, 2, 1, 3, 5, 320),
        &AttentionParams {
            causal: true,
            ..Default::default()
        },
        950,
    );
}
