//! M-RoPE, axial 2-D RoPE, the RoPE gradient and shifts of cached keys, on every backend.
//!
//! Expected values of the exact cases are cos and sin of the angles derived in each test,
//! computed with Python's `math.cos`/`math.sin` and written to 10 decimal places.

mod common;

use common::{assert_bits_equal, assert_close, backends, random_vec, Backend, Tolerance};
use half::{bf16, f16};
use posenc::rope::multi_axis::{self, AxisOrder};
use posenc::rope::shift::shift_cpu;
use posenc::rope::{
    self, AxialFrequencies, AxisPositions, CacheRegion, MultiAxisRope, QkShape, RopeConfig,
    RopeFrequencies, RopeLayout, RopeScaling, Yarn,
};
use posenc::{DType, Element, Error, GpuContext, Layout, Positions};

/// Expected values written to 10 decimal places (an error up to 5e-11), results in f32, and
/// the GPU's cos/sin within a few ulps: 4 f32 ulps relative plus 1e-9.
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

/// Two rotations in a row, each rounded to f32 (and on the GPU each with its own cos/sin
/// error), against one: twice the single-rotation error.
const TWO_ROTATIONS: Tolerance = Tolerance {
    abs: 2e-6,
    rel: 2e-6,
};

/// Returns the tolerance for results stored as `dtype`. f16 and bf16 round to half an ulp
/// (2^-11 or 2^-8 relative) on top of the f32 arithmetic, and the absolute part covers
/// values rounded near zero.
fn storage_tolerance(dtype: DType) -> Tolerance {
    match dtype {
        DType::F16 => Tolerance {
            abs: 2e-3,
            rel: 4.9e-4,
        },
        DType::Bf16 => Tolerance {
            abs: 1.6e-2,
            rel: 3.9e-3,
        },
        DType::F32 => GPU_VS_CPU,
    }
}

/// Rounds expected values, written in f64 to their 10 decimals, to the f32 of the results.
fn rounded(values: &[f64]) -> Vec<f32> {
    values.iter().map(|&v| v as f32).collect()
}

fn q_only(batch: usize, seq_len: usize, num_heads: usize, head_dim: usize) -> QkShape {
    QkShape {
        batch,
        seq_len,
        num_heads,
        num_kv_heads: 0,
        head_dim,
        layout: Layout::Bshd,
    }
}

fn axes_on(
    backend: &Backend,
    multi: &MultiAxisRope,
    frequencies: &RopeFrequencies,
    shape: &QkShape,
    positions: AxisPositions<'_>,
    q: &[f32],
    k: &[f32],
) -> posenc::Result<(Vec<f32>, Vec<f32>)> {
    match backend {
        Backend::Cpu => {
            let (mut q, mut k) = (q.to_vec(), k.to_vec());
            multi_axis::apply_cpu(multi, frequencies, shape, positions, &mut q, &mut k)?;
            Ok((q, k))
        }
        Backend::Gpu(ctx) => rope::gpu::apply_axes(ctx, multi, frequencies, shape, positions, q, k),
    }
}

fn axes_backward_on(
    backend: &Backend,
    multi: &MultiAxisRope,
    frequencies: &RopeFrequencies,
    shape: &QkShape,
    positions: AxisPositions<'_>,
    dq: &[f32],
    dk: &[f32],
) -> posenc::Result<(Vec<f32>, Vec<f32>)> {
    match backend {
        Backend::Cpu => {
            let (mut dq, mut dk) = (dq.to_vec(), dk.to_vec());
            multi_axis::apply_backward_cpu(multi, frequencies, shape, positions, &mut dq, &mut dk)?;
            Ok((dq, dk))
        }
        Backend::Gpu(ctx) => {
            rope::gpu::apply_axes_backward(ctx, multi, frequencies, shape, positions, dq, dk)
        }
    }
}

fn backward_on(
    backend: &Backend,
    config: &RopeConfig,
    frequencies: &RopeFrequencies,
    shape: &QkShape,
    positions: Positions<'_>,
    dq: &[f32],
    dk: &[f32],
) -> posenc::Result<(Vec<f32>, Vec<f32>)> {
    match backend {
        Backend::Cpu => {
            let (mut dq, mut dk) = (dq.to_vec(), dk.to_vec());
            rope::apply_backward_cpu(config, frequencies, shape, positions, &mut dq, &mut dk)?;
            Ok((dq, dk))
        }
        Backend::Gpu(ctx) => {
            rope::gpu::apply_backward(ctx, config, frequencies, shape, positions, dq, dk)
        }
    }
}

fn shift_on(
    backend: &Backend,
    config: &RopeConfig,
    frequencies: &RopeFrequencies,
    region: &CacheRegion,
    delta: i64,
    data: &[f32],
) -> posenc::Result<Vec<f32>> {
    match backend {
        Backend::Cpu => {
            let mut data = data.to_vec();
            shift_cpu(config, frequencies, region, delta, &mut data)?;
            Ok(data)
        }
        Backend::Gpu(ctx) => rope::gpu::shift(ctx, config, frequencies, region, delta, data),
    }
}

/// `[1, 1, 1, 1, 0, 0, 0, 0]`: in the half layout every pair is (1, 0), so the output is
/// `[cos θ_0..cos θ_3, sin θ_0..sin θ_3]`.
const HALF_PROBE: [f32; 8] = [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0];

fn rotate_probe(backend: &Backend, multi: &MultiAxisRope, ids: &[u32], x: &[f32]) -> Vec<f32> {
    let frequencies = multi.frequencies(16).expect("valid multi-axis config");
    let shape = q_only(1, 1, 1, multi.config.head_dim);
    axes_on(
        backend,
        multi,
        &frequencies,
        &shape,
        AxisPositions::token_major(ids),
        x,
        &[],
    )
    .expect("multi-axis rope runs")
    .0
}

// ---------------------------------------------------------------------------------------
// M-RoPE

#[test]
fn mrope_sections_pick_axes() {
    // head_dim 8, base 10000: inv_freq = 10000^(-2i/8) = [1, 0.1, 0.01, 0.001]. Sections
    // [2, 1, 1]: pairs 0, 1 take t = 1, pair 2 takes h = 2, pair 3 takes w = 3, so the
    // angles are [1 * 1, 1 * 0.1, 2 * 0.01, 3 * 0.001] = [1, 0.1, 0.02, 0.003].
    let want: [f64; 8] = [
        0.5403023059,
        0.9950041653,
        0.9998000067,
        0.9999955000,
        0.8414709848,
        0.0998334166,
        0.0199986667,
        0.0029999955,
    ];
    let multi = MultiAxisRope::mrope(RopeConfig::new(8), [2, 1, 1]);
    for backend in backends() {
        let got = rotate_probe(&backend, &multi, &[1, 2, 3], &HALF_PROBE);
        assert_close(backend.name(), &got, &rounded(&want), PUBLISHED);
    }
}

#[test]
fn mrope_text_tokens_equal_plain_rope() {
    // Qwen2-VL's text model: head_dim 128, rope_theta 1e6, mrope_section [16, 24, 24]. A
    // text token has t = h = w = its position, which is plain RoPE, bit for bit.
    let config = RopeConfig::new(128).with_base(1_000_000.0);
    let multi = MultiAxisRope::mrope(config.clone(), [16, 24, 24]);
    let shape = QkShape {
        batch: 2,
        seq_len: 5,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 128,
        layout: Layout::Bshd,
    };
    let positions = [0, 1, 2, 3, 4, 70, 71, 72, 4_000, 4_000_000];
    let ids: Vec<u32> = positions.iter().flat_map(|&p| [p, p, p]).collect();
    let (q_len, k_len) = shape.lens().expect("shape");
    let (q, k) = (random_vec(1, q_len), random_vec(2, k_len));
    let frequencies = config.frequencies(4_000_001).expect("config");
    for backend in backends() {
        let (q_plain, k_plain) = backend
            .rope(
                &config,
                &frequencies,
                &shape,
                Positions::Ids(&positions),
                &q,
                &k,
            )
            .expect("plain rope");
        let (q_multi, k_multi) = axes_on(
            &backend,
            &multi,
            &frequencies,
            &shape,
            AxisPositions::token_major(&ids),
            &q,
            &k,
        )
        .expect("m-rope");
        assert_bits_equal(&format!("{} q", backend.name()), &q_multi, &q_plain);
        assert_bits_equal(&format!("{} k", backend.name()), &k_multi, &k_plain);
    }
}

#[test]
fn mrope_id_orders_and_sharing_agree() {
    // The same ids as [batch, seq, 3], as [3, batch, seq] (transformers' position_ids), and
    // a list of [seq, 3] shared by both sequences, written out for both.
    let multi = MultiAxisRope::mrope(RopeConfig::new(16), [2, 3, 3]);
    let shape = q_only(2, 3, 2, 16);
    let shared: [[u32; 3]; 3] = [[5, 5, 5], [6, 9, 11], [6, 10, 12]];
    let token_major: Vec<u32> = [shared, shared]
        .iter()
        .flatten()
        .flatten()
        .copied()
        .collect();
    let mut axis_major = Vec::new();
    for axis in 0..3 {
        for _sequence in 0..2 {
            axis_major.extend(shared.iter().map(|ids| ids[axis]));
        }
    }
    let shared_ids: Vec<u32> = shared.iter().flatten().copied().collect();

    let q = random_vec(3, 2 * 3 * 2 * 16);
    let frequencies = multi.frequencies(13).expect("config");
    for backend in backends() {
        let run = |positions| {
            axes_on(&backend, &multi, &frequencies, &shape, positions, &q, &[])
                .expect("m-rope")
                .0
        };
        let reference = run(AxisPositions::token_major(&token_major));
        let name = backend.name();

        let axis_major_result = run(AxisPositions::axis_major(&axis_major));
        assert_bits_equal(
            &format!("{name} axis-major"),
            &axis_major_result,
            &reference,
        );
        let shared_result = run(AxisPositions::token_major(&shared_ids));
        assert_bits_equal(&format!("{name} shared"), &shared_result, &reference);
    }
}

/// Runs one multi-axis case on the GPU and the CPU and compares Q and K.
fn compare_axes(name: &str, multi: &MultiAxisRope, shape: &QkShape, ids: &[u32], seed: u64) {
    let Some(ctx) = common::gpu() else { return };
    let (q_len, k_len) = shape.lens().expect("shape fits");
    let (q, k) = (random_vec(seed, q_len), random_vec(seed + 1, k_len));
    let largest = ids.iter().copied().max().unwrap_or(0);
    let frequencies = multi
        .frequencies(u64::from(largest) + 1)
        .expect("valid config");
    for order in [AxisOrder::TokenMajor, AxisOrder::AxisMajor] {
        let positions = AxisPositions { ids, order };
        let (q_cpu, k_cpu) = axes_on(&Backend::Cpu, multi, &frequencies, shape, positions, &q, &k)
            .expect("cpu multi-axis rope");
        let (q_gpu, k_gpu) = axes_on(
            &Backend::Gpu(ctx),
            multi,
            &frequencies,
            shape,
            positions,
            &q,
            &k,
        )
        .expect("gpu multi-axis rope");
        assert_close(&format!("{name} {order:?} q"), &q_gpu, &q_cpu, GPU_VS_CPU);
        assert_close(&format!("{name} {order:?} k"), &k_gpu, &k_cpu, GPU_VS_CPU);
    }
}

/// `axes * batch * seq_len` ids from a fixed seed, below `limit`.
fn random_ids(seed: u64, count: usize, limit: u32) -> Vec<u32> {
    random_vec(seed, count)
        .iter()
        .map(|&v| ((f64::from(v) + 1.0) * 0.5 * f64::from(limit)) as u32 % limit)
        .collect()
}

#[test]
fn mrope_gpu_matches_cpu_on_shapes() {
    let qwen2_vl = RopeConfig::new(128).with_base(1_000_000.0);
    let cases = [
        // (name, config, section, batch, seq_len, num_heads, num_kv_heads)
        ("qwen2-vl gqa", qwen2_vl, [16, 24, 24], 2, 9, 4, 2),
        (
            "wide head",
            RopeConfig::new(640),
            [64, 128, 128],
            1,
            3,
            2,
            1,
        ),
        (
            "partial rotary",
            RopeConfig::new(80).with_rotary_dim(64),
            [8, 12, 12],
            2,
            4,
            3,
            3,
        ),
        (
            "interleaved",
            RopeConfig::new(32).with_layout(RopeLayout::Interleaved),
            [4, 6, 6],
            1,
            7,
            2,
            1,
        ),
        ("empty section", RopeConfig::new(16), [8, 0, 0], 1, 4, 1, 1),
        ("one token", RopeConfig::new(64), [10, 11, 11], 1, 1, 8, 8),
    ];
    for (index, (name, config, section, batch, seq_len, num_heads, num_kv_heads)) in
        cases.into_iter().enumerate()
    {
        let multi = MultiAxisRope::mrope(config.clone(), section);
        for layout in [Layout::Bshd, Layout::Bhsd] {
            let shape = QkShape {
                batch,
                seq_len,
                num_heads,
                num_kv_heads,
                head_dim: config.head_dim,
                layout,
            };
            let seed = index as u64 * 10;
            let ids = random_ids(seed + 7, 3 * batch * seq_len, 10_000_000);
            compare_axes(&format!("{name} {layout:?}"), &multi, &shape, &ids, seed);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Axial 2-D RoPE

#[test]
fn axial_per_axis_rows_then_columns() {
    // head_dim 8: rotary_dim / 4 = 2 pairs per axis, each axis with the 4-feature ladder
    // 10000^(-2j/4) = [1, 0.01]. (row, column) = (2, 3): pairs 0, 1 take the row,
    // [2 * 1, 2 * 0.01]; pairs 2, 3 the column, [3 * 1, 3 * 0.01].
    let want: [f64; 8] = [
        -0.4161468365,
        0.9998000067,
        -0.9899924966,
        0.9995500337,
        0.9092974268,
        0.0199986667,
        0.1411200081,
        0.0299955002,
    ];
    let multi = MultiAxisRope::axial(RopeConfig::new(8), AxialFrequencies::PerAxis);
    for backend in backends() {
        let got = rotate_probe(&backend, &multi, &[2, 3], &HALF_PROBE);
        assert_close(backend.name(), &got, &rounded(&want), PUBLISHED);
    }
}

#[test]
fn axial_alternating_pixtral_frequencies() {
    // Pixtral: the 8-feature ladder [1, 0.1, 0.01, 0.001], even entries [1, 0.01] to the
    // row and odd entries [0.1, 0.001] to the column. (row, column) = (2, 3) gives the
    // angles [2, 0.02, 0.3, 0.003].
    let want: [f64; 8] = [
        -0.4161468365,
        0.9998000067,
        0.9553364891,
        0.9999955000,
        0.9092974268,
        0.0199986667,
        0.2955202067,
        0.0029999955,
    ];
    let multi = MultiAxisRope::axial(RopeConfig::new(8), AxialFrequencies::Alternating);
    for backend in backends() {
        let got = rotate_probe(&backend, &multi, &[2, 3], &HALF_PROBE);
        assert_close(backend.name(), &got, &rounded(&want), PUBLISHED);
    }
}

#[test]
fn axial_interleaved_in_rope_vit_order() {
    // RoPE-ViT's axial variant: interleaved pairs (0, 1), (2, 3), (4, 5), (6, 7) and the
    // column first, so the ids are (column, row) = (3, 2). Probe [1, 0] per pair gives
    // [cos, sin] of the angles [3 * 1, 3 * 0.01, 2 * 1, 2 * 0.01].
    let want: [f64; 8] = [
        -0.9899924966,
        0.1411200081,
        0.9995500337,
        0.0299955002,
        -0.4161468365,
        0.9092974268,
        0.9998000067,
        0.0199986667,
    ];
    let config = RopeConfig::new(8).with_layout(RopeLayout::Interleaved);
    let multi = MultiAxisRope::axial(config, AxialFrequencies::PerAxis);
    let probe = [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0];
    for backend in backends() {
        let got = rotate_probe(&backend, &multi, &[3, 2], &probe);
        assert_close(backend.name(), &got, &rounded(&want), PUBLISHED);
    }
}

#[test]
fn axial_frequencies_per_pair() {
    // rotary_dim 8, base 10000. Per axis: the 4-feature ladder [1, 0.01] twice.
    // Alternating: the 8-feature ladder [1, 0.1, 0.01, 0.001] as [even..., odd...].
    let close = Tolerance {
        abs: 0.0,
        rel: 4.0 * f64::EPSILON,
    };
    let per_axis = MultiAxisRope::axial(RopeConfig::new(8), AxialFrequencies::PerAxis)
        .frequencies(1)
        .expect("config");
    let got: Vec<f32> = per_axis.inv_freq.iter().map(|&w| w as f32).collect();
    assert_close("per axis", &got, &[1.0, 0.01, 1.0, 0.01], close);
    let alternating = MultiAxisRope::axial(RopeConfig::new(8), AxialFrequencies::Alternating)
        .frequencies(1)
        .expect("config");
    let got: Vec<f32> = alternating.inv_freq.iter().map(|&w| w as f32).collect();
    assert_close("alternating", &got, &[1.0, 0.01, 0.1, 0.001], close);
    assert_eq!(alternating.attention_factor, 1.0);
}

#[test]
fn axial_gpu_matches_cpu_on_grids() {
    // Qwen2-VL's vision encoder (head_dim 80, 16 heads) and Pixtral's (head_dim 64), on a
    // 7 x 9 patch grid, ids (row, column) in raster order.
    let grid: Vec<u32> = (0..7u32)
        .flat_map(|r| (0..9u32).flat_map(move |c| [r, c]))
        .collect();
    let two_images: Vec<u32> = [grid.as_slice(), &grid].concat();
    let cases = [
        ("qwen2-vl vision", 80, AxialFrequencies::PerAxis, 16, 1),
        ("pixtral", 64, AxialFrequencies::Alternating, 4, 2),
        ("wide", 1024, AxialFrequencies::PerAxis, 1, 1),
    ];
    for (index, (name, head_dim, frequencies, num_heads, batch)) in cases.into_iter().enumerate() {
        let multi = MultiAxisRope::axial(RopeConfig::new(head_dim), frequencies);
        let shape = QkShape {
            batch,
            seq_len: 63,
            num_heads,
            num_kv_heads: num_heads,
            head_dim,
            layout: Layout::Bhsd,
        };
        let ids = if batch == 2 { &two_images } else { &grid };
        compare_axes(name, &multi, &shape, ids, 100 + index as u64);
    }
}

// ---------------------------------------------------------------------------------------
// Backward

#[test]
fn backward_undoes_forward_with_unit_factor() {
    let shape = QkShape {
        batch: 2,
        seq_len: 6,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 64,
        layout: Layout::Bshd,
    };
    let (q_len, k_len) = shape.lens().expect("shape");
    let (q, k) = (random_vec(20, q_len), random_vec(21, k_len));
    for layout in [RopeLayout::Half, RopeLayout::Interleaved] {
        let config = RopeConfig::new(64).with_rotary_dim(48).with_layout(layout);
        let frequencies = config.frequencies(100_006).expect("config");
        let positions = Positions::Start(100_000);
        for backend in backends() {
            let (q_rot, k_rot) = backend
                .rope(&config, &frequencies, &shape, positions, &q, &k)
                .expect("forward");
            let (q_back, k_back) = backward_on(
                &backend,
                &config,
                &frequencies,
                &shape,
                positions,
                &q_rot,
                &k_rot,
            )
            .expect("backward");
            let name = format!("{} {layout:?}", backend.name());
            assert_close(&format!("{name} q"), &q_back, &q, TWO_ROTATIONS);
            assert_close(&format!("{name} k"), &k_back, &k, TWO_ROTATIONS);
        }
    }
}

#[test]
fn backward_is_forward_transpose() {
    // f(x) = RoPE(x) is linear, so its Jacobian's column j is f(e_j), measured here by
    // running the forward pass on each basis vector. The backward pass applied to a
    // gradient g must equal J^T g. YaRN with factor 4 sets the attention factor to
    // 0.1 ln 4 + 1 = 1.1386, so a backward that divided by it instead (an inverse, not a
    // transpose) would fail. head_dim 6 with rotary_dim 4 also covers the pass-through.
    let config = RopeConfig::new(6)
        .with_rotary_dim(4)
        .with_scaling(RopeScaling::Yarn(Yarn::new(4.0, 16)));
    let frequencies = config.frequencies(8).expect("config");
    assert!((frequencies.attention_factor - 1.138629436).abs() < 1e-9);
    let shape = q_only(1, 1, 1, 6);
    let positions = Positions::Ids(&[7]);
    let gradient = [0.3f32, -0.7, 0.2, 0.9, -0.4, 0.6];
    for backend in backends() {
        let columns: Vec<Vec<f32>> = (0..6)
            .map(|j| {
                let mut basis = [0.0f32; 6];
                basis[j] = 1.0;
                backend
                    .rope(&config, &frequencies, &shape, positions, &basis, &[])
                    .expect("forward")
                    .0
            })
            .collect();
        // (J^T g)_j = sum_i J[i][j] g_i = column j . g, in f64.
        let want: Vec<f32> = columns
            .iter()
            .map(|column| {
                let dot: f64 = column
                    .iter()
                    .zip(&gradient)
                    .map(|(&c, &g)| f64::from(c) * f64::from(g))
                    .sum();
                dot as f32
            })
            .collect();
        let (got, _) = backward_on(
            &backend,
            &config,
            &frequencies,
            &shape,
            positions,
            &gradient,
            &[],
        )
        .expect("backward");
        assert_close(
            &format!("{} J^T g", backend.name()),
            &got,
            &want,
            TWO_ROTATIONS,
        );

        // Forward then backward scales the rotated features by attention_factor^2.
        let (forward, _) = backend
            .rope(&config, &frequencies, &shape, positions, &gradient, &[])
            .expect("forward");
        let (round_trip, _) = backward_on(
            &backend,
            &config,
            &frequencies,
            &shape,
            positions,
            &forward,
            &[],
        )
        .expect("backward");
        let factor = frequencies.attention_factor * frequencies.attention_factor;
        let scaled: Vec<f32> = gradient
            .iter()
            .enumerate()
            .map(|(i, &g)| {
                if i < 4 {
                    (f64::from(g) * factor) as f32
                } else {
                    g
                }
            })
            .collect();
        assert_close(
            &format!("{} af^2", backend.name()),
            &round_trip,
            &scaled,
            TWO_ROTATIONS,
        );
    }
}

#[test]
fn backward_gpu_matches_cpu() {
    let Some(ctx) = common::gpu() else { return };
    let config = RopeConfig::new(128).with_base(500_000.0);
    let shape = QkShape {
        batch: 1,
        seq_len: 7,
        num_heads: 8,
        num_kv_heads: 2,
        head_dim: 128,
        layout: Layout::Bhsd,
    };
    let (q_len, k_len) = shape.lens().expect("shape");
    let (dq, dk) = (random_vec(30, q_len), random_vec(31, k_len));
    let frequencies = config.frequencies(3_000_000).expect("config");
    let ids = [0, 1, 2, 99, 65_536, 1_000_000, 2_999_999];
    let positions = Positions::Ids(&ids);

    let (q_cpu, k_cpu) = backward_on(
        &Backend::Cpu,
        &config,
        &frequencies,
        &shape,
        positions,
        &dq,
        &dk,
    )
    .expect("cpu backward");
    let (q_gpu, k_gpu) = backward_on(
        &Backend::Gpu(ctx),
        &config,
        &frequencies,
        &shape,
        positions,
        &dq,
        &dk,
    )
    .expect("gpu backward");
    assert_close("dq", &q_gpu, &q_cpu, GPU_VS_CPU);
    assert_close("dk", &k_gpu, &k_cpu, GPU_VS_CPU);
}

#[test]
fn backward_multi_axis_undoes_forward() {
    let multi = MultiAxisRope::mrope(RopeConfig::new(64), [8, 12, 12]);
    let shape = QkShape {
        batch: 1,
        seq_len: 4,
        num_heads: 2,
        num_kv_heads: 1,
        head_dim: 64,
        layout: Layout::Bshd,
    };
    let ids = [3, 3, 3, 4, 10, 20, 4, 11, 20, 900, 901, 902];
    let positions = AxisPositions::token_major(&ids);
    let frequencies = multi.frequencies(903).expect("config");
    let (q_len, k_len) = shape.lens().expect("shape");
    let (q, k) = (random_vec(40, q_len), random_vec(41, k_len));
    for backend in backends() {
        let (q_rot, k_rot) =
            axes_on(&backend, &multi, &frequencies, &shape, positions, &q, &k).expect("forward");
        let (q_back, k_back) = axes_backward_on(
            &backend,
            &multi,
            &frequencies,
            &shape,
            positions,
            &q_rot,
            &k_rot,
        )
        .expect("backward");
        assert_close(&format!("{} q", backend.name()), &q_back, &q, TWO_ROTATIONS);
        assert_close(&format!("{} k", backend.name()), &k_back, &k, TWO_ROTATIONS);
    }
}

// ---------------------------------------------------------------------------------------
// Shift

/// `true` for the first `features` elements of every head of `region`.
fn region_mask(len: usize, region: &CacheRegion, features: usize) -> Vec<bool> {
    let mut mask = vec![false; len];
    for b in 0..region.batch {
        for t in 0..region.seq_len {
            for h in 0..region.num_heads {
                let start = region.offset
                    + b * region.strides[0]
                    + t * region.strides[1]
                    + h * region.strides[2];
                mask[start..start + features].fill(true);
            }
        }
    }
    mask
}

/// Asserts that every element outside the region is bit-identical to `original`.
fn assert_outside_untouched<T: Element>(what: &str, got: &[T], original: &[T], mask: &[bool]) {
    assert_eq!(got.len(), original.len(), "{what}: length");
    for (index, ((g, o), &inside)) in got.iter().zip(original).zip(mask).enumerate() {
        if !inside {
            assert_eq!(
                bytemuck::bytes_of(g),
                bytemuck::bytes_of(o),
                "{what}[{index}] outside the region changed"
            );
        }
    }
}

/// Returns the length of a K cache of 3 layers x 24 tokens x 2 KV heads x head_dim 64, and
/// the region of layer 1, tokens 5..17.
fn layer_slice() -> (usize, CacheRegion) {
    let (layers, max_tokens, heads, head_dim) = (3, 24, 2, 64);
    let token_stride = heads * head_dim;
    let layer_stride = max_tokens * token_stride;
    let region = CacheRegion::dense(1, 12, heads, head_dim, Layout::Bshd)
        .with_offset(layer_stride + 5 * token_stride)
        .with_strides([layer_stride, token_stride, head_dim]);
    (layers * layer_stride, region)
}

#[test]
fn shift_by_minus_three() {
    // head_dim 2, base 10000: inv_freq = [1]. Key (1, 0) shifted by -3 rotates by -3
    // radians: (cos 3, -sin 3).
    let config = RopeConfig::new(2);
    let frequencies = config.frequencies(1).expect("config");
    let region = CacheRegion::dense(1, 1, 1, 2, Layout::Bshd);
    let want: [f64; 2] = [-0.9899924966, -0.1411200081];
    for backend in backends() {
        let got =
            shift_on(&backend, &config, &frequencies, &region, -3, &[1.0, 0.0]).expect("shift");
        assert_close(backend.name(), &got, &rounded(&want), PUBLISHED);
    }
}

#[test]
fn shift_negative_gpu_matches_f64() {
    // A negative delta must be as exact as a positive one on the GPU: the f64 CPU rotation
    // by -3 and by -1_000_003 is the reference for Llama 3's frequencies.
    let Some(ctx) = common::gpu() else { return };
    let config = RopeConfig::new(128).with_base(500_000.0);
    let frequencies = config.frequencies(1).expect("config");
    let (len, region) = layer_slice();
    let region = CacheRegion {
        head_dim: 128,
        num_heads: 1,
        ..region
    };
    let data = random_vec(50, len);
    for delta in [-3, 3, -1_000_003, -(u32::MAX as i64)] {
        let cpu = shift_on(&Backend::Cpu, &config, &frequencies, &region, delta, &data)
            .expect("cpu shift");
        let gpu = shift_on(
            &Backend::Gpu(ctx),
            &config,
            &frequencies,
            &region,
            delta,
            &data,
        )
        .expect("gpu shift");
        assert_close(&format!("delta {delta}"), &gpu, &cpu, GPU_VS_CPU);
    }
}

#[test]
fn shift_five_then_three_equals_eight() {
    let config = RopeConfig::new(64).with_base(10_000.0);
    let frequencies = config.frequencies(1).expect("config");
    let (len, region) = layer_slice();
    let data = random_vec(60, len);
    let mask = region_mask(len, &region, region.head_dim);
    for backend in backends() {
        let name = backend.name();
        let by_five = shift_on(&backend, &config, &frequencies, &region, 5, &data).expect("shift");
        let by_eight_in_two =
            shift_on(&backend, &config, &frequencies, &region, 3, &by_five).expect("shift");
        let by_eight = shift_on(&backend, &config, &frequencies, &region, 8, &data).expect("shift");
        assert_close(
            &format!("{name} 5 + 3"),
            &by_eight_in_two,
            &by_eight,
            TWO_ROTATIONS,
        );
        assert_outside_untouched(&format!("{name} 5 + 3"), &by_eight_in_two, &data, &mask);
        assert_outside_untouched(&format!("{name} 8"), &by_eight, &data, &mask);

        // And back: -8 returns the cache to where it was.
        let back =
            shift_on(&backend, &config, &frequencies, &region, -8, &by_eight).expect("shift");
        assert_close(&format!("{name} 8 - 8"), &back, &data, TWO_ROTATIONS);
        assert_outside_untouched(&format!("{name} 8 - 8"), &back, &data, &mask);
    }
}

#[test]
fn shift_after_rope_equals_rope_at_new_position() {
    // Keys rotated at positions 1000.. and shifted by -250 equal keys rotated at 750..;
    // in the Bhsd layout, whose head stride exceeds its token stride.
    let config = RopeConfig::new(32).with_layout(RopeLayout::Interleaved);
    let shape = QkShape {
        batch: 2,
        seq_len: 5,
        num_heads: 3,
        num_kv_heads: 0,
        head_dim: 32,
        layout: Layout::Bhsd,
    };
    let region = CacheRegion::dense(2, 5, 3, 32, Layout::Bhsd);
    let keys = random_vec(70, shape.lens().expect("shape").0);
    let frequencies = config.frequencies(1005).expect("config");
    for backend in backends() {
        let (at_1000, _) = backend
            .rope(
                &config,
                &frequencies,
                &shape,
                Positions::Start(1000),
                &keys,
                &[],
            )
            .expect("rope");
        let (at_750, _) = backend
            .rope(
                &config,
                &frequencies,
                &shape,
                Positions::Start(750),
                &keys,
                &[],
            )
            .expect("rope");
        let shifted =
            shift_on(&backend, &config, &frequencies, &region, -250, &at_1000).expect("shift");
        assert_close(backend.name(), &shifted, &at_750, TWO_ROTATIONS);
    }
}

#[test]
fn shift_skips_attention_factor() {
    // YaRN's attention factor 1.1386 is already in cached keys, so a shift is a pure
    // rotation: it equals plain RoPE with attention factor 1 at position delta.
    let config = RopeConfig::new(16).with_scaling(RopeScaling::Yarn(Yarn::new(4.0, 16)));
    let frequencies = config.frequencies(64).expect("config");
    assert!(frequencies.attention_factor > 1.1);
    let unscaled = RopeFrequencies {
        attention_factor: 1.0,
        ..frequencies.clone()
    };
    let region = CacheRegion::dense(1, 2, 1, 16, Layout::Bshd);
    let keys = random_vec(80, 32);
    for backend in backends() {
        let shifted = shift_on(&backend, &config, &frequencies, &region, 41, &keys).expect("shift");
        let (want, _) = backend
            .rope(
                &config,
                &unscaled,
                &q_only(1, 2, 1, 16),
                Positions::Ids(&[41, 41]),
                &keys,
                &[],
            )
            .expect("rope");
        assert_close(backend.name(), &shifted, &want, GPU_VS_CPU);
    }
}

#[test]
fn shift_by_zero_is_identity() {
    let config = RopeConfig::new(64);
    let frequencies = config.frequencies(1).expect("config");
    let (len, region) = layer_slice();
    let data = random_vec(90, len);
    for backend in backends() {
        let got = shift_on(&backend, &config, &frequencies, &region, 0, &data).expect("shift");
        assert_bits_equal(backend.name(), &got, &data);
    }
}

fn check_shift_storage<T: Element>(ctx: &'static GpuContext) {
    // head_dim 6 with rotary_dim 4, at an odd offset with 2 elements of padding between
    // tokens: in bf16 (two per 32-bit word) heads start mid-word, so the neighbours that
    // share a word with a rotated element must come back bit for bit.
    let config = RopeConfig::new(6).with_rotary_dim(4).with_base(100.0);
    let frequencies = config.frequencies(1).expect("config");
    let region = CacheRegion::dense(1, 3, 2, 6, Layout::Bshd)
        .with_offset(3)
        .with_strides([0, 14, 6]);
    let len = 3 + 2 * 14 + 12 + 5;
    let data: Vec<T> = random_vec(100, len)
        .iter()
        .map(|&v| T::from_f32(v))
        .collect();
    let gpu = rope::gpu::shift(ctx, &config, &frequencies, &region, -7, &data).expect("gpu shift");
    let mut cpu: Vec<f32> = data.iter().map(|v| v.to_f32()).collect();
    shift_cpu(&config, &frequencies, &region, -7, &mut cpu).expect("cpu shift");
    let name = T::DTYPE.name();
    let widened: Vec<f32> = gpu.iter().map(|v| v.to_f32()).collect();
    assert_close(name, &widened, &cpu, storage_tolerance(T::DTYPE));
    // The pass-through features 4 and 5 of each head must come back bit for bit too.
    let rotated = region_mask(len, &region, 4);
    assert_outside_untouched(name, &gpu, &data, &rotated);
}

#[test]
fn shift_f16_and_bf16_storage() {
    let Some(ctx) = common::gpu() else { return };
    check_shift_storage::<bf16>(ctx);
    check_shift_storage::<f32>(ctx);
    if ctx.supports_f16() {
        check_shift_storage::<f16>(ctx);
    }
}

#[test]
fn extras_bf16_and_f16_match_cpu() {
    let Some(ctx) = common::gpu() else { return };
    let multi = MultiAxisRope::mrope(RopeConfig::new(64).with_base(1_000_000.0), [8, 12, 12]);
    let shape = QkShape {
        batch: 2,
        seq_len: 3,
        num_heads: 2,
        num_kv_heads: 1,
        head_dim: 64,
        layout: Layout::Bshd,
    };
    let ids = random_ids(110, 18, 5000);
    let positions = AxisPositions::token_major(&ids);
    let frequencies = multi.frequencies(5000).expect("config");
    let (q_len, k_len) = shape.lens().expect("shape");
    check_storage::<bf16>(ctx, &multi, &frequencies, &shape, positions, [q_len, k_len]);
    if ctx.supports_f16() {
        check_storage::<f16>(ctx, &multi, &frequencies, &shape, positions, [q_len, k_len]);
    }
}

fn check_storage<T: Element>(
    ctx: &GpuContext,
    multi: &MultiAxisRope,
    frequencies: &RopeFrequencies,
    shape: &QkShape,
    positions: AxisPositions<'_>,
    [q_len, k_len]: [usize; 2],
) {
    let rounded = |seed, n| -> Vec<T> {
        random_vec(seed, n)
            .iter()
            .map(|&v| T::from_f32(v))
            .collect()
    };
    let widened = |values: &[T]| -> Vec<f32> { values.iter().map(|v| v.to_f32()).collect() };
    let (q, k) = (rounded(120, q_len), rounded(121, k_len));
    let name = T::DTYPE.name();
    let tolerance = storage_tolerance(T::DTYPE);

    let (q_gpu, k_gpu) =
        rope::gpu::apply_axes(ctx, multi, frequencies, shape, positions, &q, &k).expect("gpu");
    let (mut q_cpu, mut k_cpu) = (widened(&q), widened(&k));
    multi_axis::apply_cpu(multi, frequencies, shape, positions, &mut q_cpu, &mut k_cpu)
        .expect("cpu");
    assert_close(
        &format!("{name} axes q"),
        &widened(&q_gpu),
        &q_cpu,
        tolerance,
    );
    assert_close(
        &format!("{name} axes k"),
        &widened(&k_gpu),
        &k_cpu,
        tolerance,
    );

    let config = &multi.config;
    let plain = Positions::Start(40);
    let (q_gpu, k_gpu) = rope::gpu::apply_backward(ctx, config, frequencies, shape, plain, &q, &k)
        .expect("gpu backward");
    let (mut q_cpu, mut k_cpu) = (widened(&q), widened(&k));
    rope::apply_backward_cpu(config, frequencies, shape, plain, &mut q_cpu, &mut k_cpu)
        .expect("cpu backward");
    assert_close(
        &format!("{name} backward q"),
        &widened(&q_gpu),
        &q_cpu,
        tolerance,
    );
    assert_close(
        &format!("{name} backward k"),
        &widened(&k_gpu),
        &k_cpu,
        tolerance,
    );
}

// ---------------------------------------------------------------------------------------
// Recording over caller buffers

fn buffer_init(ctx: &GpuContext, label: &str, contents: &[u8]) -> wgpu::Buffer {
    wgpu::util::DeviceExt::create_buffer_init(
        ctx.device(),
        &wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        },
    )
}

#[test]
fn record_axes_counts_ids_past_limit() {
    // Three tokens with ids at element offset 2 of a buffer. Token 1 has a height id 9, at or
    // past the limit 5, so it is counted and left unrotated while the others rotate.
    let Some(ctx) = common::gpu() else { return };
    let multi = MultiAxisRope::mrope(RopeConfig::new(8), [2, 1, 1]);
    let frequencies = multi.frequencies(5).expect("config");
    let shape = q_only(1, 3, 1, 8);
    let ids = [77, 77, 1, 1, 1, 2, 9, 2, 3, 3, 3];
    let q = random_vec(130, 24);
    let id_buffer = buffer_init(ctx, "ids", bytemuck::cast_slice(&ids));
    let q_buffer = buffer_init(ctx, "q", bytemuck::cast_slice(&q));
    let status = posenc::StatusBuffer::new(ctx);
    let dispatch = rope::gpu::AxesDispatch {
        shape,
        positions: rope::gpu::GpuAxisPositions {
            ids: posenc::TensorView::at(&id_buffer, 2),
            order: AxisOrder::TokenMajor,
            per_sequence: true,
        },
        q: rope::gpu::HeadsView::new(&q_buffer),
        k: None,
        position_limit: Some(5),
        status: Some(&status),
        inverse: false,
    };
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    rope::gpu::record_axes(ctx, &mut encoder, &multi, &frequencies, &dispatch).expect("record");
    ctx.queue().submit([encoder.finish()]);
    let got = ctx.read_f32(&q_buffer, 24).expect("readback");
    assert_eq!(status.read(ctx).expect("status"), 1);

    let mut want = q.clone();
    let in_range = [1, 1, 1, 2, 2, 2, 3, 3, 3];
    multi_axis::apply_cpu(
        &multi,
        &frequencies,
        &shape,
        AxisPositions::token_major(&in_range),
        &mut want,
        &mut [],
    )
    .expect("cpu");
    assert_close("token 0", &got[..8], &want[..8], GPU_VS_CPU);
    assert_bits_equal("token 1", &got[8..16], &q[8..16]);
    assert_close("token 2", &got[16..], &want[16..], GPU_VS_CPU);
}

#[test]
fn record_shift_in_place_in_shared_cache() {
    // The cache buffer also contains other layers, and record_shift rotates only the slice.
    let Some(ctx) = common::gpu() else { return };
    let config = RopeConfig::new(64);
    let frequencies = config.frequencies(1).expect("config");
    let (len, region) = layer_slice();
    let data = random_vec(140, len);
    let buffer = buffer_init(ctx, "cache", bytemuck::cast_slice(&data));
    let dispatch = rope::gpu::ShiftDispatch {
        region,
        buffer: &buffer,
        dtype: DType::F32,
        delta: -3,
    };
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    rope::gpu::record_shift(ctx, &mut encoder, &config, &frequencies, &dispatch).expect("record");
    ctx.queue().submit([encoder.finish()]);
    let got = ctx.read_f32(&buffer, len).expect("readback");
    let mut want = data.clone();
    shift_cpu(&config, &frequencies, &region, -3, &mut want).expect("cpu");
    assert_close("shifted cache", &got, &want, GPU_VS_CPU);
    let mask = region_mask(len, &region, region.head_dim);
    assert_outside_untouched("shifted cache", &got, &data, &mask);
}

// ---------------------------------------------------------------------------------------
// Typed errors

#[test]
fn mrope_rejects_wrong_section_sum() {
    // [16, 24, 16] counts 56 pairs, but head_dim 128 has 64.
    let multi = MultiAxisRope::mrope(RopeConfig::new(128), [16, 24, 16]);
    let result = multi.frequencies(1);
    assert!(
        matches!(
            result,
            Err(Error::InvalidShape {
                name: "mrope_section",
                value: 56,
                ..
            })
        ),
        "{result:?}"
    );
    let shape = q_only(1, 1, 1, 128);
    let frequencies = RopeConfig::new(128).frequencies(1).expect("config");
    for backend in backends() {
        let result = axes_on(
            &backend,
            &multi,
            &frequencies,
            &shape,
            AxisPositions::token_major(&[0, 0, 0]),
            &[0.0; 128],
            &[],
        );
        assert!(
            matches!(
                result,
                Err(Error::InvalidShape {
                    name: "mrope_section",
                    ..
                })
            ),
            "{}: {result:?}",
            backend.name()
        );
    }
}

#[test]
fn axial_rejects_rotary_dim_6() {
    let multi = MultiAxisRope::axial(RopeConfig::new(6), AxialFrequencies::PerAxis);
    let result = multi.validate();
    assert!(
        matches!(
            result,
            Err(Error::InvalidShape {
                name: "rotary_dim",
                value: 6,
                ..
            })
        ),
        "{result:?}"
    );
}

#[test]
fn multi_axis_rejects_odd_rotary_dim() {
    let multi = MultiAxisRope::mrope(RopeConfig::new(8).with_rotary_dim(5), [1, 1, 0]);
    let result = multi.validate();
    assert!(
        matches!(
            result,
            Err(Error::InvalidShape {
                name: "rotary_dim",
                value: 5,
                ..
            })
        ),
        "{result:?}"
    );
}

#[test]
fn axes_reject_wrong_id_count() {
    // batch 2, seq_len 3, M-RoPE: 18 ids (per sequence) or 9 (shared), not 6.
    let multi = MultiAxisRope::mrope(RopeConfig::new(8), [2, 1, 1]);
    let frequencies = multi.frequencies(1).expect("config");
    let shape = q_only(2, 3, 1, 8);
    for backend in backends() {
        let result = axes_on(
            &backend,
            &multi,
            &frequencies,
            &shape,
            AxisPositions::token_major(&[0; 6]),
            &[0.0; 48],
            &[],
        );
        assert!(
            matches!(
                result,
                Err(Error::LengthMismatch {
                    name: "positions",
                    expected: 18,
                    actual: 6
                })
            ),
            "{}: {result:?}",
            backend.name()
        );
    }
}

#[test]
fn gpu_axes_reject_short_id_buffer() {
    let Some(ctx) = common::gpu() else { return };
    let multi = MultiAxisRope::axial(RopeConfig::new(8), AxialFrequencies::PerAxis);
    let frequencies = multi.frequencies(1).expect("config");
    let ids = buffer_init(ctx, "ids", bytemuck::cast_slice(&[0u32; 4]));
    let q = buffer_init(ctx, "q", bytemuck::cast_slice(&[0.0f32; 24]));
    let dispatch = rope::gpu::AxesDispatch {
        shape: q_only(1, 3, 1, 8),
        positions: rope::gpu::GpuAxisPositions {
            ids: posenc::TensorView::new(&ids),
            order: AxisOrder::AxisMajor,
            per_sequence: true,
        },
        q: rope::gpu::HeadsView::new(&q),
        k: None,
        position_limit: None,
        status: None,
        inverse: false,
    };
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    let result = rope::gpu::record_axes(ctx, &mut encoder, &multi, &frequencies, &dispatch);
    assert!(
        matches!(
            result,
            Err(Error::BufferTooSmall {
                name: "positions",
                end: 6,
                capacity: 4,
                ..
            })
        ),
        "{result:?}"
    );
}

#[test]
fn shift_rejects_invalid_arguments() {
    let config = RopeConfig::new(4);
    let frequencies = config.frequencies(1).expect("config");
    let region = CacheRegion::dense(1, 2, 1, 4, Layout::Bshd);
    for backend in backends() {
        let name = backend.name();
        let data = [0.0f32; 8];

        let result = shift_on(&backend, &config, &frequencies, &region, 1 << 32, &data);
        assert!(
            matches!(result, Err(Error::InvalidParameter { name: "delta", .. })),
            "{name}: {result:?}"
        );

        let past_end = region.with_offset(1);
        let result = shift_on(&backend, &config, &frequencies, &past_end, 1, &data);
        assert!(
            matches!(
                result,
                Err(Error::BufferTooSmall {
                    name: "k",
                    end: 9,
                    capacity: 8,
                    ..
                })
            ),
            "{name}: {result:?}"
        );

        // A token stride of 2 makes token 1's head overlap token 0's.
        let overlapping = region.with_strides([8, 2, 4]);
        let result = shift_on(&backend, &config, &frequencies, &overlapping, 1, &data);
        assert!(
            matches!(
                result,
                Err(Error::InvalidShape {
                    name: "k",
                    value: 2,
                    ..
                })
            ),
            "{name}: {result:?}"
        );

        let wrong_head = CacheRegion::dense(1, 1, 1, 8, Layout::Bshd);
        let result = shift_on(&backend, &config, &frequencies, &wrong_head, 1, &data);
        assert!(
            matches!(
                result,
                Err(Error::InvalidShape {
                    name: "head_dim",
                    value: 8,
                    ..
                })
            ),
            "{name}: {result:?}"
        );
    }
}
