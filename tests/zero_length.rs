//! Zero-length work (no tokens, no keys, no sequences, no heads where a shape allows none)
//! returns empty results on every operation and path, with no wgpu error and no panic.

mod common;

use common::backends;
use half::{bf16, f16};
use posenc::alibi::Alibi;
use posenc::attention::{
    AdditiveMask, AttentionParams, AttentionShape, BoolMask, Segments, NO_KEY_LSE,
};
use posenc::learned::LearnedTable;
use posenc::rope::{QkShape, RopeConfig};
use posenc::sinusoidal::{Sinusoidal, SinusoidalFrequencies, SinusoidalLayout};
use posenc::{DType, Element, GpuContext, GpuPositions, Layout, Positions, TensorView};

#[test]
fn sinusoidal_no_tokens_is_empty() {
    let encodings = [
        Sinusoidal::new(8),
        Sinusoidal::new(6)
            .with_layout(SinusoidalLayout::Concat)
            .with_frequencies(SinusoidalFrequencies::Tensor2Tensor),
    ];
    for backend in backends() {
        let name = backend.name();
        for encoding in &encodings {
            for positions in [
                Positions::Start(0),
                Positions::Start(u32::MAX),
                Positions::Ids(&[]),
            ] {
                let table = backend.sinusoidal_table(encoding, positions, 0);
                assert_eq!(table.expect(name), Vec::<f32>::new(), "{name} table");
            }
            for (batch, seq_len) in [(0, 5), (3, 0), (0, 0)] {
                let sum =
                    backend.sinusoidal_add(encoding, Positions::Start(7), batch, seq_len, &[]);
                assert_eq!(
                    sum.expect(name),
                    Vec::<f32>::new(),
                    "{name} add {batch}x{seq_len}"
                );
            }
            // Five ids per sequence and no sequences.
            let sum = backend.sinusoidal_add(encoding, Positions::Ids(&[1, 2, 3, 4, 5]), 0, 5, &[]);
            assert_eq!(sum.expect(name), Vec::<f32>::new(), "{name} add with ids");
        }
    }
}

#[test]
fn learned_no_tokens_is_empty() {
    let shape = LearnedTable::new(4, 3);
    let table = vec![1.0f32; 12];
    for backend in backends() {
        let name = backend.name();
        for (batch, seq_len) in [(0, 2), (2, 0)] {
            let sum = backend.learned_add(&shape, &table, Positions::Start(0), batch, seq_len, &[]);
            assert_eq!(
                sum.expect(name),
                Vec::<f32>::new(),
                "{name} {batch}x{seq_len}"
            );
        }
        // A table without rows is valid as long as no token needs one.
        let empty_table = LearnedTable::new(0, 3);
        let sum = backend.learned_add(&empty_table, &[], Positions::Ids(&[]), 4, 0, &[]);
        assert_eq!(sum.expect(name), Vec::<f32>::new(), "{name} empty table");
    }
}

#[test]
fn rope_no_tokens_or_heads_is_empty() {
    let config = RopeConfig::new(8).with_rotary_dim(4);
    let frequencies = config.frequencies(1).expect("config");
    let shape = QkShape {
        batch: 2,
        seq_len: 3,
        num_heads: 2,
        num_kv_heads: 1,
        head_dim: 8,
        layout: Layout::Bhsd,
    };
    let cases = [
        QkShape { batch: 0, ..shape },
        QkShape {
            seq_len: 0,
            ..shape
        },
        QkShape {
            num_heads: 0,
            num_kv_heads: 0,
            ..shape
        },
    ];
    for backend in backends() {
        let name = backend.name();
        for case in &cases {
            let rotated = backend.rope(&config, &frequencies, case, Positions::Start(0), &[], &[]);
            let (q, k) = rotated.unwrap_or_else(|e| panic!("{name} {case:?}: {e}"));
            assert!(q.is_empty(), "{name} {case:?}");
            assert!(k.is_empty(), "{name} {case:?}");
        }
        // K only: no query heads, one KV head.
        let k_only = QkShape {
            num_heads: 0,
            ..shape
        };
        let k = common::random_vec(1, 2 * 3 * 8);
        let (q_out, k_out) = backend
            .rope(&config, &frequencies, &k_only, Positions::Start(0), &[], &k)
            .expect(name);
        assert!(q_out.is_empty(), "{name} k only");
        assert_eq!(k_out.len(), k.len(), "{name} k only");
        let tables = backend
            .rope_tables(&config, &frequencies, Positions::Ids(&[]), 0)
            .expect(name);
        assert!(
            tables.cos.is_empty() && tables.sin.is_empty(),
            "{name} tables"
        );
    }
}

#[test]
fn alibi_no_queries_or_keys_is_empty() {
    for backend in backends() {
        let name = backend.name();
        for (q_len, kv_len, q_offset) in [
            (0, 5, 0),
            (4, 0, -4),
            (0, 0, 0),
            (0, 3, i64::from(i32::MAX)),
        ] {
            let bias = backend.alibi_bias(&Alibi::new(3), q_len, kv_len, q_offset);
            assert_eq!(
                bias.expect(name),
                Vec::<f32>::new(),
                "{name} {q_len}x{kv_len}"
            );
        }
    }
}

/// Builds every mask and bias at once, sized for `shape` (which may have zero-length
/// dimensions).
fn every_mask(shape: &AttentionShape) -> AttentionParams {
    let plane = shape.q_len * shape.kv_len;
    AttentionParams {
        causal: true,
        window: Some(2),
        q_offsets: Some(vec![1; shape.batch]),
        key_lengths: Some(vec![shape.kv_len; shape.batch]),
        key_starts: Some(vec![0; shape.batch]),
        segments: Some(Segments {
            q: vec![0; shape.batch * shape.q_len],
            kv: vec![0; shape.batch * shape.kv_len],
        }),
        mask: Some(BoolMask {
            values: vec![true; plane],
            batch: 1,
            heads: 1,
        }),
        additive_mask: Some(AdditiveMask {
            values: vec![0.0; shape.batch * plane],
            batch: shape.batch,
            heads: 1,
        }),
        alibi: Some(Alibi::new(shape.num_heads)),
        softcap: Some(5.0),
        sinks: Some(vec![0.5; shape.num_heads]),
        ..Default::default()
    }
}

/// Runs materialising and fused attention on `T` storage, returning `(out, lse)` of each.
fn gpu_attention<T: Element>(
    ctx: &GpuContext,
    shape: &AttentionShape,
    params: &AttentionParams,
    q: &[f32],
    kv: &[f32],
) -> Vec<(Vec<f32>, Vec<f32>)> {
    let convert = |values: &[f32]| values.iter().map(|&v| T::from_f32(v)).collect::<Vec<T>>();
    let (q, kv) = (convert(q), convert(kv));
    let widen = |values: Vec<T>| values.iter().map(|v| v.to_f32()).collect::<Vec<f32>>();
    let mut results = Vec::new();
    let materialised = posenc::attention::gpu::attention(ctx, shape, params, &q, &kv, &kv)
        .unwrap_or_else(|e| panic!("{} materialising {shape:?}: {e}", T::DTYPE.name()));
    results.push((widen(materialised.out), materialised.lse));
    for splits in [None, Some(1), Some(4)] {
        let fused = posenc::attention::fused::attention(ctx, shape, params, &q, &kv, &kv, splits)
            .unwrap_or_else(|e| panic!("{} fused {splits:?} {shape:?}: {e}", T::DTYPE.name()));
        assert!(fused.probs.is_empty());
        results.push((widen(fused.out), fused.lse));
    }
    results
}

#[test]
fn attention_empty_dimensions_return_empty() {
    let shapes = [
        AttentionShape::new(0, 2, 1, 3, 4, 8),
        AttentionShape::new(2, 2, 1, 0, 4, 8),
        AttentionShape::new(0, 4, 2, 0, 0, 300),
        AttentionShape {
            layout: Layout::Bshd,
            ..AttentionShape::new(2, 4, 2, 0, 0, 3)
        },
    ];
    for shape in &shapes {
        let (q_len, kv_len, probs_len) = shape.lens().expect("shape");
        assert_eq!((q_len, probs_len), (0, 0), "{shape:?}");
        let kv = vec![0.5f32; kv_len];
        for params in [AttentionParams::default(), every_mask(shape)] {
            for backend in backends() {
                let result = backend
                    .attention(shape, &params, &[], &kv, &kv)
                    .unwrap_or_else(|e| panic!("{} {shape:?}: {e}", backend.name()));
                assert!(result.out.is_empty(), "{} out", backend.name());
                assert!(result.probs.is_empty(), "{} probs", backend.name());
                assert!(result.lse.is_empty(), "{} lse", backend.name());
            }
            let Some(ctx) = common::gpu() else { continue };
            let mut results = gpu_attention::<f32>(ctx, shape, &params, &[], &kv);
            results.extend(gpu_attention::<bf16>(ctx, shape, &params, &[], &kv));
            if ctx.supports_f16() {
                results.extend(gpu_attention::<f16>(ctx, shape, &params, &[], &kv));
            }
            for (out, lse) in results {
                assert!(out.is_empty(), "{shape:?}");
                assert!(lse.is_empty(), "{shape:?}");
            }
        }
    }
}

#[test]
fn attention_no_keys_gives_zero_rows() {
    // Queries but no keys: every row is fully masked, so the output is zero and the lse is
    // the sentinel (or the sink logit when the head has a sink).
    let shape = AttentionShape::new(2, 2, 1, 3, 0, 5);
    let q = common::random_vec(2, shape.lens().expect("shape").0);
    let sinks = AttentionParams {
        sinks: Some(vec![0.25, -2.0]),
        ..Default::default()
    };
    for params in [AttentionParams::default(), every_mask(&shape), sinks] {
        let want_lse: Vec<f32> = (0..12)
            .map(|row| match &params.sinks {
                Some(sinks) => sinks[(row / 3) % 2],
                None => NO_KEY_LSE,
            })
            .collect();
        for backend in backends() {
            let result = backend
                .attention(&shape, &params, &q, &[], &[])
                .unwrap_or_else(|e| panic!("{}: {e}", backend.name()));
            assert_eq!(result.out, vec![0.0; q.len()], "{} out", backend.name());
            assert!(result.probs.is_empty(), "{} probs", backend.name());
            assert_eq!(result.lse, want_lse, "{} lse", backend.name());
        }
        let Some(ctx) = common::gpu() else { continue };
        let mut results = gpu_attention::<f32>(ctx, &shape, &params, &q, &[]);
        results.extend(gpu_attention::<bf16>(ctx, &shape, &params, &q, &[]));
        if ctx.supports_f16() {
            results.extend(gpu_attention::<f16>(ctx, &shape, &params, &q, &[]));
        }
        for (out, lse) in results {
            assert_eq!(out, vec![0.0; q.len()], "gpu out");
            assert_eq!(lse, want_lse, "gpu lse");
        }
    }
}

#[test]
fn typed_gpu_empty_results_for_every_dtype() {
    let Some(ctx) = common::gpu() else { return };
    fn check<T: Element + std::fmt::Debug>(ctx: &GpuContext) {
        let name = T::DTYPE.name();
        let table =
            posenc::sinusoidal::gpu::table::<T>(ctx, &Sinusoidal::new(4), Positions::Start(3), 0);
        assert!(table.expect(name).is_empty(), "{name} sinusoidal");
        let bias = posenc::alibi::gpu::bias::<T>(ctx, &Alibi::new(2), 0, 9, 0);
        assert!(bias.expect(name).is_empty(), "{name} alibi");
        let shape = LearnedTable::new(2, 2);
        let table = vec![T::from_f32(1.0); 4];
        let sum =
            posenc::learned::gpu::add::<T>(ctx, &shape, &table, Positions::Start(0), 0, 2, &[]);
        assert!(sum.expect(name).is_empty(), "{name} learned");
        let config = RopeConfig::new(4);
        let frequencies = config.frequencies(0).expect("config");
        let rope_shape = QkShape {
            batch: 1,
            seq_len: 0,
            num_heads: 1,
            num_kv_heads: 1,
            head_dim: 4,
            layout: Layout::Bshd,
        };
        let (q, k) = posenc::rope::gpu::apply::<T>(
            ctx,
            &config,
            &frequencies,
            &rope_shape,
            Positions::Start(0),
            &[],
            &[],
        )
        .expect(name);
        assert!(q.is_empty(), "{name} rope");
        assert!(k.is_empty(), "{name} rope");
    }
    check::<f32>(ctx);
    check::<bf16>(ctx);
    if ctx.supports_f16() {
        check::<f16>(ctx);
    }
}

/// Creates a 16-byte storage buffer, the smallest that a caller would bind.
fn small_buffer(ctx: &GpuContext) -> wgpu::Buffer {
    ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("small"),
        size: 16,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    })
}

#[test]
fn record_zero_elements_records_nothing() {
    let Some(ctx) = common::gpu() else { return };
    let buffer = small_buffer(ctx);
    let other = small_buffer(ctx);
    let lse = small_buffer(ctx);
    let probs = small_buffer(ctx);
    let status = posenc::StatusBuffer::new(ctx);
    let device = ctx.device();
    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let mut encoder = device.create_command_encoder(&Default::default());

    posenc::sinusoidal::gpu::record(
        ctx,
        &mut encoder,
        &Sinusoidal::new(4),
        GpuPositions::Start(0),
        0,
        9,
        TensorView::new(&buffer),
        true,
    )
    .expect("sinusoidal");
    posenc::learned::gpu::record(
        ctx,
        &mut encoder,
        &LearnedTable::new(1, 4),
        TensorView::new(&other),
        GpuPositions::Start(0),
        3,
        0,
        TensorView::new(&buffer),
        &status,
    )
    .expect("learned");
    posenc::alibi::gpu::record(
        ctx,
        &mut encoder,
        &Alibi::new(4),
        0,
        3,
        0,
        TensorView::new(&buffer),
        false,
    )
    .expect("alibi");
    let config = RopeConfig::new(4);
    let frequencies = config.frequencies(1).expect("config");
    let dispatch = posenc::rope::gpu::RopeDispatch {
        shape: QkShape {
            batch: 0,
            seq_len: 4,
            num_heads: 2,
            num_kv_heads: 1,
            head_dim: 4,
            layout: Layout::Bshd,
        },
        positions: GpuPositions::Start(0),
        q: posenc::rope::gpu::HeadsView::new(&buffer),
        k: Some(posenc::rope::gpu::HeadsView::new(&other)),
        position_limit: None,
        status: None,
        inverse: false,
    };
    posenc::rope::gpu::record(ctx, &mut encoder, &config, &frequencies, &dispatch).expect("rope");
    let shape = AttentionShape::new(3, 2, 1, 0, 4, 4);
    let (q_buffer, kv_buffer) = (small_buffer(ctx), small_buffer(ctx));
    let attention_buffers = posenc::attention::gpu::AttentionBuffers {
        q: TensorView::new(&q_buffer),
        k: TensorView::new(&kv_buffer),
        v: TensorView::new(&kv_buffer),
        out: TensorView::new(&buffer),
        lse: &lse,
        probs: Some(TensorView::new(&probs).with_dtype(DType::F32)),
        q_strides: None,
        kv_strides: None,
        out_strides: None,
    };
    // K and V need 3 * 4 * 4 = 48 floats, which the 16-byte buffer lacks: a zero-length
    // query does not excuse K and V views that do not fit.
    let error = posenc::attention::gpu::record(
        ctx,
        &mut encoder,
        &shape,
        &AttentionParams::default(),
        &attention_buffers,
    )
    .expect_err("k past its buffer");
    assert!(
        matches!(error, posenc::Error::BufferTooSmall { name: "k", .. }),
        "{error:?}"
    );
    let no_keys = AttentionShape { kv_len: 0, ..shape };
    posenc::attention::gpu::record(
        ctx,
        &mut encoder,
        &no_keys,
        &AttentionParams::default(),
        &attention_buffers,
    )
    .expect("attention");
    posenc::attention::fused::record(
        ctx,
        &mut encoder,
        &no_keys,
        &AttentionParams::default(),
        &attention_buffers,
        Some(3),
    )
    .expect("fused attention");

    ctx.queue().submit([encoder.finish()]);
    let error = pollster::block_on(scope.pop());
    assert!(error.is_none(), "wgpu error: {error:?}");
}

#[test]
fn attention_huge_batch_without_rows_is_empty() {
    // No query rows and no keys, however many sequences: nothing may be allocated or looped
    // over per sequence.
    let shapes = [
        AttentionShape::new(1 << 40, 1, 1, 0, 0, 1),
        AttentionShape::new(1, 1 << 40, 1, 0, 0, 4),
        AttentionShape::new(usize::MAX, 1, 1, 0, 0, 1),
    ];
    for shape in &shapes {
        for backend in backends() {
            let result = backend
                .attention(shape, &AttentionParams::default(), &[], &[], &[])
                .unwrap_or_else(|e| panic!("{} {shape:?}: {e}", backend.name()));
            assert!(
                result.out.is_empty() && result.lse.is_empty(),
                "{}",
                backend.name()
            );
        }
        let Some(ctx) = common::gpu() else { continue };
        let fused = posenc::attention::fused::attention::<f32>(
            ctx,
            shape,
            &AttentionParams::default(),
            &[],
            &[],
            &[],
            None,
        )
        .unwrap_or_else(|e| panic!("fused {shape:?}: {e}"));
        assert!(fused.out.is_empty());
        assert!(fused.lse.is_empty());
    }
}
