//! RoPE on every backend: published values, partial rotary, layouts and odd shapes.
// Published values are written with the digits their source prints.
#![allow(clippy::excessive_precision, clippy::approx_constant)]

mod common;

use common::{assert_bits_equal, assert_close, backends, random_vec, Backend, Tolerance};
use posenc::rope::{QkShape, RopeConfig, RopeLayout};
use posenc::{Layout, Positions};

/// Published values are given to 10 significant digits; the result is f32, and the GPU's
/// cos/sin carry a few ulps of their own, so 4 ulps relative.
const PUBLISHED: Tolerance = Tolerance {
    abs: 1e-9,
    rel: 4.0 * f32::EPSILON as f64,
};

/// GPU against the f64 CPU reference for inputs in [-1, 1]: cos/sin within about 2 ulps,
/// then two products and a sum rounded in f32, so a few 1e-7 on values of order 1.
const GPU_VS_CPU: Tolerance = Tolerance {
    abs: 1e-6,
    rel: 1e-6,
};

fn single_head(head_dim: usize) -> QkShape {
    QkShape {
        batch: 1,
        seq_len: 1,
        num_heads: 1,
        num_kv_heads: 0,
        head_dim,
        layout: Layout::Bshd,
    }
}

fn rotate_one(backend: &Backend, config: &RopeConfig, position: u32, x: &[f32]) -> Vec<f32> {
    let frequencies = config
        .frequencies(u64::from(position) + 1)
        .expect("valid config");
    let shape = single_head(config.head_dim);
    backend
        .rope(
            config,
            &frequencies,
            &shape,
            Positions::Ids(&[position]),
            x,
            &[],
        )
        .expect("rope runs")
        .0
}

#[test]
fn rope_half_layout_published_values() {
    // RoPE, head_dim 4, base 10000, position 1: frequencies [1, 0.01], pairs (0, 2), (1, 3).
    let want = [-1.984110649, 1.959900667, 2.462377902, 4.019799668];
    for backend in backends() {
        let got = rotate_one(&backend, &RopeConfig::new(4), 1, &[1.0, 2.0, 3.0, 4.0]);
        assert_close(backend.name(), &got, &want, PUBLISHED);
    }
}

#[test]
fn rope_interleaved_published_values() {
    // Pairs (0, 1), (2, 3).
    let want = [-1.142639664, 1.922075597, 2.959850668, 4.029799502];
    let config = RopeConfig::new(4).with_layout(RopeLayout::Interleaved);
    for backend in backends() {
        let got = rotate_one(&backend, &config, 1, &[1.0, 2.0, 3.0, 4.0]);
        assert_close(backend.name(), &got, &want, PUBLISHED);
    }
}

#[test]
fn rope_position_zero_is_identity() {
    let x = random_vec(11, 64);
    for layout in [RopeLayout::Half, RopeLayout::Interleaved] {
        for backend in backends() {
            let got = rotate_one(&backend, &RopeConfig::new(64).with_layout(layout), 0, &x);
            assert_bits_equal(backend.name(), &got, &x);
        }
    }
}

#[test]
fn rope_partial_rotary_passes_tail_through() {
    // head_dim 8, rotary_dim 4: frequencies use the rotated width ([1, 0.01]).
    let config = RopeConfig::new(8).with_rotary_dim(4);
    let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
    let want = [-1.984110649, 1.959900667, 2.462377902, 4.019799668];
    for backend in backends() {
        let got = rotate_one(&backend, &config, 1, &x);
        assert_close(backend.name(), &got[..4], &want, PUBLISHED);
        assert_bits_equal(backend.name(), &got[4..], &x[4..]);
    }
}

#[test]
fn rope_frequencies_use_rotated_width() {
    let frequencies = RopeConfig::new(8)
        .with_rotary_dim(4)
        .frequencies(1)
        .expect("valid config");
    assert_eq!(frequencies.inv_freq, vec![1.0, 0.01]);
    assert_eq!(frequencies.attention_factor, 1.0);
}

/// Runs one shape on the GPU and the CPU and compares Q and K.
fn compare_backends(
    name: &str,
    config: &RopeConfig,
    shape: &QkShape,
    positions: Positions<'_>,
    seed: u64,
) {
    let Some(ctx) = common::gpu() else { return };
    let (q_len, k_len) = shape.lens().expect("shape fits");
    let (q, k) = (random_vec(seed, q_len), random_vec(seed + 1, k_len));
    let seq_len = positions.len_needed(shape.seq_len);
    let frequencies = config.frequencies(seq_len).expect("valid config");
    let (q_cpu, k_cpu) = Backend::Cpu
        .rope(config, &frequencies, shape, positions, &q, &k)
        .expect("cpu rope");
    let (q_gpu, k_gpu) = Backend::Gpu(ctx)
        .rope(config, &frequencies, shape, positions, &q, &k)
        .expect("gpu rope");
    assert_close(&format!("{name} q"), &q_gpu, &q_cpu, GPU_VS_CPU);
    assert_close(&format!("{name} k"), &k_gpu, &k_cpu, GPU_VS_CPU);
}

#[test]
fn rope_gpu_matches_cpu_on_odd_shapes() {
    let cases = [
        ("head_dim 2", RopeConfig::new(2), 2, 3, 1, 5),
        (
            "head_dim 80 partial",
            RopeConfig::new(80).with_rotary_dim(32),
            1,
            7,
            7,
            9,
        ),
        (
            "llama3 gqa",
            RopeConfig::new(128).with_base(500_000.0),
            1,
            32,
            8,
            3,
        ),
        (
            "12 heads",
            RopeConfig::new(64).with_layout(RopeLayout::Interleaved),
            2,
            12,
            12,
            5,
        ),
        ("one token", RopeConfig::new(64), 1, 4, 2, 1),
        ("1000 tokens", RopeConfig::new(16), 1, 2, 1, 1000),
        ("q only", RopeConfig::new(32), 3, 5, 0, 4),
        ("wide head", RopeConfig::new(640), 1, 2, 1, 3),
    ];
    for (index, (name, config, batch, num_heads, num_kv_heads, seq_len)) in
        cases.into_iter().enumerate()
    {
        for layout in [Layout::Bshd, Layout::Bhsd] {
            let shape = QkShape {
                batch,
                seq_len,
                num_heads,
                num_kv_heads,
                head_dim: config.head_dim,
                layout,
            };
            compare_backends(
                &format!("{name} {layout:?}"),
                &config,
                &shape,
                Positions::Start(17),
                index as u64 * 10,
            );
        }
    }
}

#[test]
fn rope_gpu_matches_cpu_with_explicit_positions() {
    let config = RopeConfig::new(64).with_base(1_000_000.0);
    let shape = QkShape {
        batch: 2,
        seq_len: 5,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 64,
        layout: Layout::Bshd,
    };
    // Shared by both sequences, and one list per sequence (packed or left-padded batches).
    compare_backends(
        "shared ids",
        &config,
        &shape,
        Positions::Ids(&[0, 7, 7, 4_000_000, 3]),
        100,
    );
    let per_sequence = [0, 1, 2, 3, 4, 9, 8, 7, 6, 16_777_215];
    compare_backends(
        "per-sequence ids",
        &config,
        &shape,
        Positions::Ids(&per_sequence),
        200,
    );
}

#[test]
fn rope_tables_gpu_match_cpu() {
    let Some(ctx) = common::gpu() else { return };
    for layout in [RopeLayout::Half, RopeLayout::Interleaved] {
        let config = RopeConfig::new(96).with_rotary_dim(48).with_layout(layout);
        let frequencies = config.frequencies(5000).expect("valid config");
        let positions = Positions::Start(4990);
        let cpu = Backend::Cpu
            .rope_tables(&config, &frequencies, positions, 10)
            .expect("cpu tables");
        let gpu = Backend::Gpu(ctx)
            .rope_tables(&config, &frequencies, positions, 10)
            .expect("gpu tables");
        assert_close("cos", &gpu.cos, &cpu.cos, GPU_VS_CPU);
        assert_close("sin", &gpu.sin, &cpu.sin, GPU_VS_CPU);
    }
}

#[test]
fn rope_empty_inputs_return_empty() {
    let config = RopeConfig::new(8);
    let frequencies = config.frequencies(1).expect("valid config");
    for backend in backends() {
        for (batch, seq_len) in [(0, 4), (2, 0)] {
            let shape = QkShape {
                batch,
                seq_len,
                num_heads: 2,
                num_kv_heads: 1,
                head_dim: 8,
                layout: Layout::Bshd,
            };
            let (q, k) = backend
                .rope(&config, &frequencies, &shape, Positions::Start(0), &[], &[])
                .expect("empty rope");
            assert!(q.is_empty() && k.is_empty(), "{}", backend.name());
        }
    }
}
