//! Masked attention on every backend: published cases, masks, biases and odd shapes.

mod common;

use common::{assert_close, backends, random_vec, Backend, Tolerance};
use posenc::alibi::{Alibi, AlibiBias};
use posenc::attention::{AttentionParams, AttentionShape};
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
        mask: Some(vec![true, true, false, false]),
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
                mask: Some((0..9 * 13).map(|n| n % 3 != 1).collect()),
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
                mask: Some((0..9 * 13).map(|n| n % 7 != 0).collect()),
                q_offset: Some(3),
                scale: None,
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
