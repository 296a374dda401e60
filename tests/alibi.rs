//! ALiBi slopes and bias on every backend.
// Published values are written with the digits their source prints.
#![allow(clippy::excessive_precision, clippy::approx_constant)]

mod common;

use common::{assert_close, backends, Backend, Tolerance};
use posenc::alibi::{Alibi, AlibiBias};

/// Slopes are powers of two computed in f64; published values have 10 significant digits.
const PUBLISHED: f64 = 1e-9;

fn assert_slopes(num_heads: usize, want: &[f64]) {
    let got = Alibi::new(num_heads).slopes().expect("valid head count");
    assert_eq!(got.len(), want.len());
    for (h, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= PUBLISHED * w, "head {h}: {g} vs {w}");
    }
}

#[test]
fn alibi_slopes_12_heads_published() {
    assert_slopes(
        12,
        &[
            0.5,
            0.25,
            0.125,
            0.0625,
            0.03125,
            0.015625,
            0.0078125,
            0.00390625,
            0.7071067812,
            0.3535533906,
            0.1767766953,
            0.08838834765,
        ],
    );
}

#[test]
fn alibi_slopes_6_heads_published() {
    assert_slopes(6, &[0.25, 0.0625, 0.015625, 0.00390625, 0.5, 0.125]);
}

#[test]
fn alibi_slopes_power_of_two_follow_paper() {
    // 2^(-8(h+1)/n) for n = 8: 1/2, 1/4, ..., 1/256.
    let want: Vec<f64> = (1..=8).map(|h| 0.5f64.powi(h)).collect();
    assert_slopes(8, &want);
    assert_slopes(1, &[2f64.powi(-8)]);
}

#[test]
fn alibi_max_bias_sets_the_base() {
    // ggml's m0 = 2^(-max_bias / n): with max_bias 4 and 4 heads, 2^-1 .. 2^-4.
    let alibi = Alibi {
        max_bias: 4.0,
        ..Alibi::new(4)
    };
    assert_eq!(
        alibi.slopes().expect("valid"),
        vec![0.5, 0.25, 0.125, 0.0625]
    );
}

#[test]
fn alibi_bias_matrix_values() {
    // Head 0 of 2 has slope 2^-4; query position 3 (q_offset 2, row 1), keys 0..4.
    let alibi = Alibi::new(2);
    for backend in backends() {
        let bias = backend.alibi_bias(&alibi, 2, 5, 2).expect("bias");
        let row = &bias[5..10];
        assert_close(
            backend.name(),
            row,
            &[-0.1875, -0.125, -0.0625, 0.0, 0.0625],
            Tolerance { abs: 0.0, rel: 0.0 },
        );
        let symmetric = backend
            .alibi_bias(
                &Alibi {
                    bias: AlibiBias::Symmetric,
                    ..alibi
                },
                2,
                5,
                2,
            )
            .expect("bias");
        assert_close(
            backend.name(),
            &symmetric[5..10],
            &[-0.1875, -0.125, -0.0625, 0.0, -0.0625],
            Tolerance { abs: 0.0, rel: 0.0 },
        );
    }
}

#[test]
fn alibi_bias_gpu_matches_cpu() {
    let Some(ctx) = common::gpu() else { return };
    for (heads, q_len, kv_len, q_offset) in [(12, 7, 9, 2), (5, 1, 300, 299), (3, 10, 4, -6)] {
        for bias in [AlibiBias::Causal, AlibiBias::Symmetric] {
            let alibi = Alibi {
                bias,
                ..Alibi::new(heads)
            };
            let cpu = Backend::Cpu
                .alibi_bias(&alibi, q_len, kv_len, q_offset)
                .expect("cpu");
            let gpu = Backend::Gpu(ctx)
                .alibi_bias(&alibi, q_len, kv_len, q_offset)
                .expect("gpu");
            // One f32 product of an exact distance and the f32 slope on both paths.
            assert_close(
                &format!("{heads} heads {bias:?}"),
                &gpu,
                &cpu,
                Tolerance {
                    abs: 0.0,
                    rel: f32::EPSILON as f64,
                },
            );
        }
    }
}
