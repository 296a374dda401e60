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

// The checks below complete the inventory: every `Error` that src/ constructs on a path a
// caller can reach without a buffer of more than 2^32 elements has a test asserting its
// variant and message.

#[test]
fn encodings_past_u32_indexing() {
    let error = assert_error(
        "sinusoidal dim",
        Sinusoidal::new(1 << 32).validate(),
        &["dim = 4294967296", "below 2^32"],
    );
    assert!(matches!(error, Error::InvalidShape { name: "dim", .. }));
    let error = assert_error(
        "learned table",
        LearnedTable::new(1 << 31, 4).validate(0),
        &["max_positions = 2147483648", "below 2^32"],
    );
    assert!(matches!(
        error,
        Error::InvalidShape {
            name: "max_positions",
            ..
        }
    ));
}

#[test]
fn alibi_gpu_positions_past_i32() {
    let Some(ctx) = common::gpu() else { return };
    let alibi = Alibi::new(2);
    let error = assert_error(
        "q_offset",
        posenc::alibi::gpu::bias::<f32>(ctx, &alibi, 1, 1, 1 << 40),
        &["q_offset = 1099511627776", "i32"],
    );
    assert!(matches!(
        error,
        Error::InvalidShape {
            name: "q_offset",
            ..
        }
    ));
    let error = assert_error(
        "last query",
        posenc::alibi::gpu::bias::<f32>(ctx, &alibi, 2, 1, i64::from(i32::MAX)),
        &["kv_len", "below 2^31"],
    );
    assert!(matches!(error, Error::InvalidShape { name: "kv_len", .. }));
}

#[test]
fn attention_invalid_masks_and_biases() {
    use posenc::attention::{AdditiveMask, BoolMask, Segments};
    let shape = AttentionShape::new(2, 4, 2, 3, 5, 8);
    let plane = 15;
    let additive = |value: f32| {
        let mut values = vec![0.0; plane];
        values[7] = value;
        Some(AdditiveMask {
            values,
            batch: 1,
            heads: 1,
        })
    };
    let cases: Vec<(&str, AttentionParams, Vec<&str>)> = vec![
        (
            "additive NaN",
            AttentionParams {
                additive_mask: additive(f32::NAN),
                ..Default::default()
            },
            vec!["additive_mask = NaN", "entry 7", "-inf"],
        ),
        (
            "additive +inf",
            AttentionParams {
                additive_mask: additive(f32::INFINITY),
                ..Default::default()
            },
            vec!["additive_mask = inf", "entry 7"],
        ),
        (
            "sinks count",
            AttentionParams {
                sinks: Some(vec![0.0; 3]),
                ..Default::default()
            },
            vec!["sinks has 3", "4"],
        ),
        (
            "sink NaN",
            AttentionParams {
                sinks: Some(vec![0.0, f32::NAN, 0.0, 0.0]),
                ..Default::default()
            },
            vec!["sinks = NaN", "finite"],
        ),
        (
            "key_starts count",
            AttentionParams {
                key_starts: Some(vec![0; 3]),
                ..Default::default()
            },
            vec!["key_starts has 3", "2"],
        ),
        (
            "key_starts past kv",
            AttentionParams {
                key_starts: Some(vec![0, 6]),
                ..Default::default()
            },
            vec!["key_starts = 6", "kv_len = 5"],
        ),
        (
            "mask batch",
            AttentionParams {
                mask: Some(BoolMask {
                    values: vec![true; 3 * plane],
                    batch: 3,
                    heads: 1,
                }),
                ..Default::default()
            },
            vec!["mask = 3", "batch dimension", "batch = 2"],
        ),
        (
            "additive heads",
            AttentionParams {
                additive_mask: Some(AdditiveMask {
                    values: vec![0.0; 2 * plane],
                    batch: 1,
                    heads: 2,
                }),
                ..Default::default()
            },
            vec!["additive_mask = 2", "head dimension", "num_heads = 4"],
        ),
        (
            "segments q",
            AttentionParams {
                segments: Some(Segments {
                    q: vec![0; 5],
                    kv: vec![0; 10],
                }),
                ..Default::default()
            },
            vec!["segments.q has 5", "6"],
        ),
        (
            "segments kv",
            AttentionParams {
                segments: Some(Segments {
                    q: vec![0; 6],
                    kv: vec![0; 9],
                }),
                ..Default::default()
            },
            vec!["segments.kv has 9", "10"],
        ),
        (
            "q_offsets count",
            AttentionParams {
                q_offsets: Some(vec![0]),
                ..Default::default()
            },
            vec!["q_offsets has 1", "2"],
        ),
        (
            "q_offsets past 2^30",
            AttentionParams {
                q_offsets: Some(vec![0, -(1 << 31)]),
                ..Default::default()
            },
            vec!["q_offset = -2147483648", "2^30"],
        ),
        (
            "softcap NaN",
            AttentionParams {
                softcap: Some(f32::NAN),
                ..Default::default()
            },
            vec!["softcap = NaN"],
        ),
        (
            "softcap negative",
            AttentionParams {
                softcap: Some(-1.0),
                ..Default::default()
            },
            vec!["softcap = -1", "greater than 0"],
        ),
        (
            "scale infinite",
            AttentionParams {
                scale: Some(f32::INFINITY),
                ..Default::default()
            },
            vec!["scale = inf", "finite"],
        ),
        (
            "alibi max_bias",
            AttentionParams {
                alibi: Some(Alibi {
                    max_bias: 0.0,
                    ..Alibi::new(4)
                }),
                ..Default::default()
            },
            vec!["max_bias = 0"],
        ),
    ];
    let (q, kv) = (vec![0.0; 192], vec![0.0; 160]);
    for backend in backends() {
        for (case, params, fragments) in &cases {
            let result = backend.attention(&shape, params, &q, &kv, &kv);
            assert_error(&format!("{} {case}", backend.name()), result, fragments);
        }
    }
    let Some(ctx) = common::gpu() else { return };
    for (case, params, fragments) in &cases {
        let result = posenc::attention::fused::attention(ctx, &shape, params, &q, &kv, &kv, None);
        assert_error(&format!("fused {case}"), result, fragments);
    }
}

fn storage_buffer(ctx: &posenc::GpuContext, bytes: u64) -> wgpu::Buffer {
    ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("storage"),
        size: bytes,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    })
}

#[test]
fn attention_record_invalid_views() {
    use posenc::attention::gpu::AttentionBuffers;
    use posenc::{DType, TensorView};
    let Some(ctx) = common::gpu() else { return };
    let shape = AttentionShape::new(1, 1, 1, 2, 3, 4);
    let (q, k, v, out, lse, probs) = (
        storage_buffer(ctx, 256),
        storage_buffer(ctx, 256),
        storage_buffer(ctx, 256),
        storage_buffer(ctx, 256),
        storage_buffer(ctx, 256),
        storage_buffer(ctx, 256),
    );
    let base = AttentionBuffers {
        q: TensorView::new(&q),
        k: TensorView::new(&k),
        v: TensorView::new(&v),
        out: TensorView::new(&out),
        lse: &lse,
        probs: Some(TensorView::new(&probs)),
        q_strides: None,
        kv_strides: None,
        out_strides: None,
    };
    let params = AttentionParams::default();
    let record = |buffers: &AttentionBuffers<'_>| {
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        posenc::attention::gpu::record(ctx, &mut encoder, &shape, &params, buffers)
    };
    let fused = |buffers: &AttentionBuffers<'_>, splits: Option<usize>| {
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        posenc::attention::fused::record(ctx, &mut encoder, &shape, &params, buffers, splits)
    };

    // V [1, 1, 3, 4] from element 60 of a 64-element buffer reaches element 72.
    let error = assert_error(
        "v past its buffer",
        record(&AttentionBuffers {
            v: TensorView::at(&v, 60),
            ..base
        }),
        &["v", "60..72", "64 elements"],
    );
    assert!(matches!(error, Error::BufferTooSmall { name: "v", .. }));
    // Output rows 2 elements apart would overlap the 4 features of each row.
    let error = assert_error(
        "overlapping output strides",
        record(&AttentionBuffers {
            out_strides: Some([8, 2, 8]),
            ..base
        }),
        &["out", "overlap"],
    );
    assert!(matches!(error, Error::InvalidShape { name: "out", .. }));
    assert_error(
        "no probabilities",
        record(&AttentionBuffers {
            probs: None,
            ..base
        }),
        &["probs", "probabilities view"],
    );
    let error = assert_error(
        "mixed storage types",
        record(&AttentionBuffers {
            k: TensorView::new(&k).with_dtype(DType::Bf16),
            ..base
        }),
        &["k is bf16 but q is f32", "one storage type"],
    );
    assert!(matches!(error, Error::InvalidShape { name: "k", .. }));
    let error = assert_error(
        "zero splits",
        fused(&base, Some(0)),
        &["num_splits = 0", "at least 1"],
    );
    assert!(matches!(
        error,
        Error::InvalidShape {
            name: "num_splits",
            ..
        }
    ));

    // A batch of 2^32 empty sequences needs no memory but does not fit the kernel's u32.
    let huge = AttentionShape {
        batch: 1 << 32,
        q_len: 0,
        kv_len: 0,
        ..shape
    };
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    let result = posenc::attention::gpu::record(ctx, &mut encoder, &huge, &params, &base);
    assert_error(
        "batch past u32",
        result,
        &["batch = 4294967296", "below 2^32"],
    );
}

#[test]
fn gpu_positions_and_record_checks() {
    use posenc::rope::gpu::{HeadsView, RopeDispatch};
    use posenc::{GpuPositions, StatusBuffer, TensorView};
    let Some(ctx) = common::gpu() else { return };
    let buffer = storage_buffer(ctx, 1024);
    let ids = storage_buffer(ctx, 64);
    let mut encoder = ctx.device().create_command_encoder(&Default::default());

    // A start position range past u32.
    let result = posenc::sinusoidal::gpu::record(
        ctx,
        &mut encoder,
        &Sinusoidal::new(4),
        GpuPositions::Start(u32::MAX),
        1,
        2,
        TensorView::new(&buffer),
        false,
    );
    let error = assert_error(
        "start past u32",
        result,
        &["position 4294967296", "below 4294967296"],
    );
    assert!(matches!(error, Error::PositionOutOfRange { index: 1, .. }));

    let config = RopeConfig::new(4);
    let frequencies = config.frequencies(2).expect("config");
    let shape = QkShape {
        batch: 1,
        seq_len: 2,
        num_heads: 1,
        num_kv_heads: 1,
        head_dim: 4,
        layout: Layout::Bshd,
    };
    let dispatch = RopeDispatch {
        shape,
        positions: GpuPositions::Start(0),
        q: HeadsView::new(&buffer),
        k: None,
        position_limit: None,
        status: None,
        inverse: false,
    };
    let result = posenc::rope::gpu::record(ctx, &mut encoder, &config, &frequencies, &dispatch);
    assert_error("rope without K", result, &["num_kv_heads = 1", "no K view"]);

    let limited = RopeDispatch {
        shape: QkShape {
            num_kv_heads: 0,
            ..shape
        },
        positions: GpuPositions::Buffer {
            ids: TensorView::new(&ids),
            per_sequence: false,
        },
        position_limit: Some(8),
        ..dispatch
    };
    let result = posenc::rope::gpu::record(ctx, &mut encoder, &config, &frequencies, &limited);
    assert_error("limit without status", result, &["status", "StatusBuffer"]);
    let status = StatusBuffer::new(ctx);
    let with_status = RopeDispatch {
        status: Some(&status),
        ..limited
    };
    posenc::rope::gpu::record(ctx, &mut encoder, &config, &frequencies, &with_status)
        .expect("with status");

    let overflowing = RopeDispatch {
        shape: QkShape {
            batch: 2,
            num_kv_heads: 0,
            ..shape
        },
        q: HeadsView {
            view: TensorView::new(&buffer),
            strides: Some([usize::MAX, 4, 4]),
        },
        ..dispatch
    };
    let result = posenc::rope::gpu::record(ctx, &mut encoder, &config, &frequencies, &overflowing);
    assert_error("strides overflow", result, &["q", "strides overflow"]);
}

#[test]
fn adapter_and_device_requests() {
    use posenc::{AdapterRequest, GpuContext};
    let error = assert_error(
        "adapter name",
        GpuContext::with_request(&AdapterRequest {
            name: Some("no adapter has this name".into()),
            ..Default::default()
        }),
        &["no adapter name contains", "no adapter has this name"],
    );
    assert!(matches!(error, Error::NoAdapter(_)));

    let Some(ctx) = common::gpu() else { return };
    // More bind groups than the adapter has: the device request fails.
    let mut limits = ctx.device().limits();
    limits.max_bind_groups += 1_000;
    let error = assert_error(
        "limits past the adapter",
        GpuContext::with_request(&AdapterRequest {
            limits: Some(limits),
            ..Default::default()
        }),
        &["request_device"],
    );
    assert!(matches!(
        error,
        Error::Gpu {
            during: "request_device",
            ..
        }
    ));
}

#[test]
fn bindings_past_device_limit_are_unsupported() {
    use posenc::{AdapterRequest, GpuContext};
    let Some(shared) = common::gpu() else { return };
    let mut limits = shared.device().limits();
    limits.max_storage_buffer_binding_size = 256;
    let ctx = GpuContext::with_request(&AdapterRequest {
        limits: Some(limits),
        ..Default::default()
    })
    .expect("a context with a small binding limit");
    // Rows are split across bindings, but one row of 128 floats (512 bytes) cannot be.
    let result =
        posenc::sinusoidal::gpu::table::<f32>(&ctx, &Sinusoidal::new(128), Positions::Start(0), 2);
    let error = assert_error(
        "row past the binding limit",
        result,
        &["512 bytes", "max_storage_buffer_binding_size is 256"],
    );
    assert!(matches!(error, Error::Unsupported { .. }));
    // Rows within the limit are split across dispatches on the same context.
    let table =
        posenc::sinusoidal::gpu::table::<f32>(&ctx, &Sinusoidal::new(8), Positions::Start(0), 32)
            .expect("split rows");
    assert_eq!(table.len(), 256);

    // Attention binds Q whole: 2 rows of 64 floats are 512 bytes.
    let shape = AttentionShape::new(1, 1, 1, 2, 1, 64);
    let result = posenc::attention::fused::attention(
        &ctx,
        &shape,
        &AttentionParams::default(),
        &[0.0f32; 128],
        &[0.0f32; 64],
        &[0.0f32; 64],
        None,
    );
    let error = assert_error(
        "attention q past the binding limit",
        result,
        &[
            "binding 512 bytes of q",
            "max_storage_buffer_binding_size is 256",
        ],
    );
    assert!(matches!(error, Error::Unsupported { .. }));
}

#[test]
fn read_with_wrong_type_is_error() {
    let Some(ctx) = common::gpu() else { return };
    let buffer = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("f32 values"),
        size: 64,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let result = ctx.read::<half::bf16>(posenc::TensorView::new(&buffer), 4);
    let error = assert_error(
        "bf16 read of an f32 view",
        result,
        &["view holds f32 but bf16 was requested"],
    );
    assert!(matches!(error, Error::InvalidShape { name: "view", .. }));
    let error = assert_error(
        "read past the buffer",
        ctx.read::<f32>(posenc::TensorView::at(&buffer, 10), 8),
        &["view", "10..18", "16 elements"],
    );
    assert!(matches!(error, Error::BufferTooSmall { .. }));
}

#[test]
fn review_cases_are_rejected_or_agree() {
    use posenc::attention::{attention_cpu, AttentionParams, AttentionShape};
    use posenc::rope::RopeConfig;
    // q_offset = i64::MIN must not wrap past the range check.
    let shape = AttentionShape::new(1, 2, 1, 3, 4, 8);
    let (q, kv) = (vec![0.1f32; 48], vec![0.2f32; 32]);
    let params = AttentionParams {
        causal: true,
        q_offset: Some(i64::MIN),
        ..Default::default()
    };
    let error = attention_cpu(&shape, &params, &q, &kv, &kv).expect_err("i64::MIN offset");
    assert!(error.to_string().contains("q_offset"), "{error}");

    // A window wider than every distance hides nothing beyond the causal bound.
    let wide = AttentionParams {
        window: Some(usize::MAX),
        ..Default::default()
    };
    let causal = AttentionParams {
        causal: true,
        ..Default::default()
    };
    let (q, k, v) = (
        common::random_vec(1, 48),
        common::random_vec(2, 32),
        common::random_vec(3, 32),
    );
    let got = attention_cpu(&shape, &wide, &q, &k, &v).expect("wide window");
    let want = attention_cpu(&shape, &causal, &q, &k, &v).expect("causal");
    assert_eq!(got, want);

    // A base far below 1 gives frequencies with no defined angle.
    let error = RopeConfig::new(8)
        .with_base(1e-300)
        .frequencies(1)
        .and_then(|f| {
            let shape = posenc::rope::QkShape {
                batch: 1,
                seq_len: 1,
                num_heads: 1,
                num_kv_heads: 0,
                head_dim: 8,
                layout: posenc::Layout::Bshd,
            };
            posenc::rope::apply_cpu(
                &RopeConfig::new(8).with_base(1e-300),
                &f,
                &shape,
                posenc::Positions::Start(0),
                &mut [0.0; 8],
                &mut [],
            )
        });
    assert!(
        matches!(
            error,
            Err(Error::InvalidParameter {
                name: "inv_freq",
                ..
            })
        ),
        "{error:?}"
    );
}
