//! Sinusoidal encodings on every backend: published values, layouts, frequencies, positions.
// Published values are written with the digits their source prints.
#![allow(clippy::excessive_precision, clippy::approx_constant)]

mod common;

use common::{assert_close, backends, random_vec, Backend, Tolerance};
use posenc::sinusoidal::{Sinusoidal, SinusoidalFrequencies, SinusoidalLayout};
use posenc::Positions;

/// Published values are given to 9 decimals; the GPU's cos/sin add a few f32 ulps.
const PUBLISHED: Tolerance = Tolerance {
    abs: 1e-8,
    rel: 4.0 * f32::EPSILON as f64,
};

/// GPU against the f64 CPU reference: values in [-1, 1] (or [-2, 2] when added to inputs in
/// [-1, 1]) and the GPU's cos/sin within about 2 ulps of 1.
const GPU_VS_CPU: Tolerance = Tolerance {
    abs: 5e-7,
    rel: 0.0,
};

#[test]
fn sinusoidal_dim4_position1_published_values() {
    // w = [1, 0.01].
    let cases = [
        (
            SinusoidalLayout::Interleaved,
            [0.841470985, 0.540302306, 0.009999833, 0.999950000],
        ),
        (
            SinusoidalLayout::Concat,
            [0.841470985, 0.009999833, 0.540302306, 0.999950000],
        ),
    ];
    for (layout, want) in cases {
        for backend in backends() {
            let table = backend
                .sinusoidal_table(
                    &Sinusoidal::new(4).with_layout(layout),
                    Positions::Start(1),
                    1,
                )
                .expect("table");
            assert_close(
                &format!("{} {layout:?}", backend.name()),
                &table,
                &want,
                PUBLISHED,
            );
        }
    }
}

#[test]
fn sinusoidal_tensor2tensor_frequencies() {
    // w_i = base^(-i/(d/2 - 1)): for d = 8, [1, 10000^(-1/3), 10000^(-2/3), 1/10000].
    let encoding = Sinusoidal::new(8).with_frequencies(SinusoidalFrequencies::Tensor2Tensor);
    let frequencies = encoding.frequencies().expect("valid");
    let want = [
        1.0,
        10_000f64.powf(-1.0 / 3.0),
        10_000f64.powf(-2.0 / 3.0),
        1e-4,
    ];
    for (got, want) in frequencies.iter().zip(want) {
        assert!((got - want).abs() <= 1e-15 * want, "{got} vs {want}");
    }
}

#[test]
fn sinusoidal_position_zero_is_sin0_cos1() {
    for backend in backends() {
        let table = backend
            .sinusoidal_table(&Sinusoidal::new(6), Positions::Start(0), 1)
            .expect("table");
        assert_eq!(
            table,
            vec![0.0, 1.0, 0.0, 1.0, 0.0, 1.0],
            "{}",
            backend.name()
        );
    }
}

#[test]
fn sinusoidal_gpu_matches_cpu() {
    let Some(ctx) = common::gpu() else { return };
    let gpu = Backend::Gpu(ctx);
    for layout in [SinusoidalLayout::Interleaved, SinusoidalLayout::Concat] {
        for frequencies in [
            SinusoidalFrequencies::Vaswani,
            SinusoidalFrequencies::Tensor2Tensor,
        ] {
            for (dim, start, seq_len) in [
                (4, 0, 1),
                (512, 0, 300),
                (6, 1_000_000, 17),
                (130, 16_777_000, 215),
            ] {
                let encoding = Sinusoidal::new(dim)
                    .with_layout(layout)
                    .with_frequencies(frequencies);
                let name = format!("{layout:?} {frequencies:?} dim {dim} start {start}");
                let cpu = Backend::Cpu
                    .sinusoidal_table(&encoding, Positions::Start(start), seq_len)
                    .expect("cpu");
                let got = gpu
                    .sinusoidal_table(&encoding, Positions::Start(start), seq_len)
                    .expect("gpu");
                assert_close(&name, &got, &cpu, GPU_VS_CPU);
            }
        }
    }
}

#[test]
fn sinusoidal_add_with_per_sequence_positions() {
    let encoding = Sinusoidal::new(16).with_base(500.0);
    let (batch, seq_len) = (3, 4);
    let embeddings = random_vec(31, batch * seq_len * 16);
    // Left-padded batch: each sequence's own positions.
    let ids = [0, 0, 1, 2, 0, 1, 2, 3, 5, 6, 7, 4_294_967_295];
    let cpu = Backend::Cpu
        .sinusoidal_add(&encoding, Positions::Ids(&ids), batch, seq_len, &embeddings)
        .expect("cpu");
    // The CPU sum is the table row plus the input.
    let row = Backend::Cpu
        .sinusoidal_table(&encoding, Positions::Ids(&[7]), 1)
        .expect("table");
    let expected: Vec<f32> = embeddings[10 * 16..11 * 16]
        .iter()
        .zip(&row)
        .map(|(a, b)| a + b)
        .collect();
    assert_close(
        "cpu row 10",
        &cpu[10 * 16..11 * 16],
        &expected,
        Tolerance {
            abs: 1e-7,
            rel: 0.0,
        },
    );
    if let Some(ctx) = common::gpu() {
        let gpu = Backend::Gpu(ctx)
            .sinusoidal_add(&encoding, Positions::Ids(&ids), batch, seq_len, &embeddings)
            .expect("gpu");
        assert_close("gpu add", &gpu, &cpu, GPU_VS_CPU);
    }
}

#[test]
fn sinusoidal_empty_inputs_return_empty() {
    for backend in backends() {
        let table = backend
            .sinusoidal_table(&Sinusoidal::new(8), Positions::Start(0), 0)
            .expect("empty table");
        assert!(table.is_empty(), "{}", backend.name());
        let sum = backend
            .sinusoidal_add(&Sinusoidal::new(8), Positions::Start(0), 0, 5, &[])
            .expect("empty add");
        assert!(sum.is_empty(), "{}", backend.name());
    }
}
