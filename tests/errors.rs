//! Every host-side check returns a typed error that names the offending value, on both paths.

mod common;

use common::{backends, Backend};
use posenc::alibi::Alibi;
use posenc::attention::{AttentionParams, AttentionShape};
use posenc::learned::LearnedTable;
use posenc::rope::{QkShape, RopeConfig, RopeFrequencies};
use posenc::sinusoidal::{Sinusoidal, SinusoidalFrequencies};
use posenc::{Error, Layout, Positions};

/// Asserts that `result` failed and that the message mentions every fragment.
fn assert_error<T: std::fmt::Debug>(
    case: &str,
    result: posenc::Result<T>,
    fragments: &[&str],
) -> Error {
    let error = result.expect_err(case);
    let message = error.to_string();
    for fragment in fragments {
        assert!(
            message.contains(fragment),
            "{case}: {message:?} lacks {fragment:?}"
        );
    }
    error
}

#[test]
fn sinusoidal_invalid_parameters() {
    for backend in backends() {
        let table =
            |encoding: Sinusoidal| backend.sinusoidal_table(&encoding, Positions::Start(0), 2);
        let error = assert_error("odd dim", table(Sinusoidal::new(5)), &["dim = 5", "even"]);
        assert!(matches!(
            error,
            Error::InvalidShape {
                name: "dim",
                value: 5,
                ..
            }
        ));
        assert_error("zero dim", table(Sinusoidal::new(0)), &["dim = 0"]);
        let t2t = Sinusoidal::new(2).with_frequencies(SinusoidalFrequencies::Tensor2Tensor);
        assert_error("t2t dim 2", table(t2t), &["dim = 2", "at least 4"]);
        for base in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let error = assert_error(
                "bad base",
                table(Sinusoidal::new(4).with_base(base)),
                &["base"],
            );
            assert!(matches!(
                error,
                Error::InvalidParameter { name: "base", .. }
            ));
        }
        let wrong_len =
            backend.sinusoidal_add(&Sinusoidal::new(4), Positions::Start(0), 2, 3, &[0.0; 23]);
        let error = assert_error("embeddings length", wrong_len, &["embeddings", "23", "24"]);
        assert!(matches!(
            error,
            Error::LengthMismatch {
                expected: 24,
                actual: 23,
                ..
            }
        ));
        let ids = backend.sinusoidal_table(&Sinusoidal::new(4), Positions::Ids(&[1, 2]), 3);
        assert_error("ids length", ids, &["positions", "2"]);
        let overflow = backend.sinusoidal_table(&Sinusoidal::new(4), Positions::Start(u32::MAX), 2);
        assert!(
            matches!(overflow, Err(Error::PositionOutOfRange { .. })),
            "{}",
            backend.name()
        );
    }
}

#[test]
fn learned_invalid_shapes() {
    for backend in backends() {
        let add = |shape: LearnedTable, table: &[f32], embeddings: &[f32]| {
            backend.learned_add(&shape, table, Positions::Start(0), 1, 2, embeddings)
        };
        assert_error(
            "zero dim",
            add(LearnedTable::new(4, 0), &[], &[]),
            &["dim = 0"],
        );
        assert_error(
            "table length",
            add(LearnedTable::new(4, 2), &[0.0; 7], &[0.0; 4]),
            &["table", "7", "8"],
        );
        assert_error(
            "embeddings length",
            add(LearnedTable::new(4, 2), &[0.0; 8], &[0.0; 5]),
            &["embeddings", "5", "4"],
        );
    }
}

fn rope(
    backend: &Backend,
    config: &RopeConfig,
    shape: &QkShape,
    q: &[f32],
    k: &[f32],
) -> posenc::Result<(Vec<f32>, Vec<f32>)> {
    let frequencies = config.frequencies(16)?;
    backend.rope(config, &frequencies, shape, Positions::Start(0), q, k)
}

#[test]
fn rope_invalid_config_and_shapes() {
    let shape = |head_dim| QkShape {
        batch: 1,
        seq_len: 2,
        num_heads: 1,
        num_kv_heads: 1,
        head_dim,
        layout: Layout::Bshd,
    };
    for backend in backends() {
        let run = |config: RopeConfig, shape: QkShape, q: usize, k: usize| {
            rope(&backend, &config, &shape, &vec![0.0; q], &vec![0.0; k])
        };
        let error = assert_error(
            "odd rotary",
            run(RopeConfig::new(8).with_rotary_dim(3), shape(8), 16, 16),
            &["rotary_dim = 3", "even"],
        );
        assert!(matches!(
            error,
            Error::InvalidShape {
                name: "rotary_dim",
                value: 3,
                ..
            }
        ));
        assert_error(
            "rotary past head",
            run(RopeConfig::new(8).with_rotary_dim(10), shape(8), 16, 16),
            &["rotary_dim = 10", "head_dim = 8"],
        );
        assert_error(
            "zero head",
            run(RopeConfig::new(0), shape(0), 0, 0),
            &["head_dim = 0"],
        );
        for base in [0.0, f64::NAN, -10.0] {
            assert_error(
                "bad base",
                run(RopeConfig::new(8).with_base(base), shape(8), 16, 16),
                &["base"],
            );
        }
        assert_error(
            "head_dim mismatch",
            run(RopeConfig::new(8), shape(16), 32, 32),
            &["head_dim = 16", "head_dim = 8"],
        );
        assert_error(
            "q length",
            run(RopeConfig::new(8), shape(8), 15, 16),
            &["q has 15", "16"],
        );
        assert_error(
            "k length",
            run(RopeConfig::new(8), shape(8), 16, 17),
            &["k has 17", "16"],
        );

        let config = RopeConfig::new(8);
        let short = RopeFrequencies {
            inv_freq: vec![1.0; 3],
            attention_factor: 1.0,
        };
        let result = backend.rope(
            &config,
            &short,
            &shape(8),
            Positions::Start(0),
            &[0.0; 16],
            &[0.0; 16],
        );
        assert_error("inv_freq length", result, &["inv_freq", "3", "4"]);
        let nan = RopeFrequencies {
            inv_freq: vec![f64::NAN; 4],
            attention_factor: 1.0,
        };
        let result = backend.rope(
            &config,
            &nan,
            &shape(8),
            Positions::Start(0),
            &[0.0; 16],
            &[0.0; 16],
        );
        assert_error("inv_freq NaN", result, &["inv_freq"]);
        let frequencies = config.frequencies(4).expect("valid");
        let result = backend.rope(
            &config,
            &frequencies,
            &shape(8),
            Positions::Ids(&[0, 1, 2]),
            &[0.0; 16],
            &[0.0; 16],
        );
        assert_error("positions length", result, &["positions has 3"]);
    }
}

#[test]
fn alibi_invalid_parameters() {
    for backend in backends() {
        assert_error(
            "zero heads",
            backend.alibi_bias(&Alibi::new(0), 2, 2, 0),
            &["num_heads = 0"],
        );
        for max_bias in [0.0, -8.0, f64::NAN] {
            let alibi = Alibi {
                max_bias,
                ..Alibi::new(4)
            };
            assert_error(
                "max_bias",
                backend.alibi_bias(&alibi, 2, 2, 0),
                &["max_bias"],
            );
        }
    }
}

#[test]
fn attention_invalid_shapes_and_params() {
    let base = AttentionShape::new(2, 4, 2, 3, 5, 8);
    let cases: Vec<(&str, AttentionShape, AttentionParams, Vec<&str>)> = vec![
        (
            "zero heads",
            AttentionShape {
                num_heads: 0,
                ..base
            },
            AttentionParams::default(),
            vec!["num_heads = 0"],
        ),
        (
            "kv heads not dividing",
            AttentionShape {
                num_kv_heads: 3,
                ..base
            },
            AttentionParams::default(),
            vec!["num_kv_heads = 3", "divide num_heads = 4"],
        ),
        (
            "zero kv heads",
            AttentionShape {
                num_kv_heads: 0,
                ..base
            },
            AttentionParams::default(),
            vec!["num_kv_heads = 0"],
        ),
        (
            "zero head_dim",
            AttentionShape {
                head_dim: 0,
                ..base
            },
            AttentionParams::default(),
            vec!["head_dim = 0"],
        ),
        (
            "scale NaN",
            base,
            AttentionParams {
                scale: Some(f32::NAN),
                ..Default::default()
            },
            vec!["scale"],
        ),
        (
            "softcap 0",
            base,
            AttentionParams {
                softcap: Some(0.0),
                ..Default::default()
            },
            vec!["softcap = 0"],
        ),
        (
            "window 0",
            base,
            AttentionParams {
                window: Some(0),
                ..Default::default()
            },
            vec!["window = 0"],
        ),
        (
            "key_lengths count",
            base,
            AttentionParams {
                key_lengths: Some(vec![5]),
                ..Default::default()
            },
            vec!["key_lengths has 1", "2"],
        ),
        (
            "key_lengths past kv",
            base,
            AttentionParams {
                key_lengths: Some(vec![5, 6]),
                ..Default::default()
            },
            vec!["key_lengths = 6", "kv_len = 5"],
        ),
        (
            "mask length",
            base,
            AttentionParams {
                mask: Some(posenc::attention::BoolMask::shared(vec![true; 14])),
                ..Default::default()
            },
            vec!["mask has 14", "15"],
        ),
        (
            "alibi heads",
            base,
            AttentionParams {
                alibi: Some(Alibi::new(3)),
                ..Default::default()
            },
            vec!["alibi.num_heads = 3", "num_heads = 4"],
        ),
        (
            "q_offset past i32",
            base,
            AttentionParams {
                q_offset: Some(1 << 40),
                ..Default::default()
            },
            vec!["q_offset"],
        ),
    ];
    for backend in backends() {
        for (case, shape, params, fragments) in &cases {
            let (q, kv) = match shape.lens() {
                Ok((q, kv, _)) => (q, kv),
                Err(_) => (0, 0),
            };
            let result =
                backend.attention(shape, params, &vec![0.0; q], &vec![0.0; kv], &vec![0.0; kv]);
            assert_error(&format!("{} {case}", backend.name()), result, fragments);
        }
        let result = backend.attention(
            &base,
            &AttentionParams::default(),
            &[0.0; 3],
            &[0.0; 160],
            &[0.0; 160],
        );
        assert_error("q length", result, &["q has 3", "192"]);
        let result = backend.attention(
            &base,
            &AttentionParams::default(),
            &[0.0; 192],
            &[0.0; 160],
            &[0.0; 159],
        );
        assert_error("v length", result, &["v has 159", "160"]);
    }
}

#[test]
fn gpu_views_past_their_buffer_are_rejected() {
    let Some(ctx) = common::gpu() else { return };
    let buffer = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("small"),
        size: 64,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    // 16 floats fit; 4 rows of 4 from element 1 reach element 17.
    let target = posenc::TensorView::at(&buffer, 1);
    let result = posenc::sinusoidal::gpu::record(
        ctx,
        &mut encoder,
        &Sinusoidal::new(4),
        posenc::GpuPositions::Start(0),
        1,
        4,
        target,
        false,
    );
    let error = assert_error(
        "view past buffer",
        result,
        &["target", "1..17", "16 elements"],
    );
    assert!(matches!(
        error,
        Error::BufferTooSmall {
            offset: 1,
            end: 17,
            capacity: 16,
            ..
        }
    ));
}
