//! f16 and bf16 storage for every GPU operation, against the CPU reference run on the same
//! (already rounded) inputs. f16 needs `SHADER_F16`, which lavapipe has and GL lacks; bf16
//! works everywhere.
// Published values are written with the digits their source prints.
#![allow(clippy::excessive_precision, clippy::approx_constant)]

mod common;

use common::{assert_close, random_vec, Tolerance};
use half::{bf16, f16};
use posenc::alibi::{self, Alibi};
use posenc::attention::{self, AttentionParams, AttentionShape};
use posenc::learned::{self, LearnedTable};
use posenc::rope::{self, QkShape, RopeConfig};
use posenc::sinusoidal::{self, Sinusoidal};
use posenc::{DType, Element, GpuContext, Layout, Positions};

/// Storing a result rounds it to half an ulp: 2^-11 relative for f16, 2^-8 for bf16, on
/// top of the f32 arithmetic (1e-6 for the values of order 1 here). The absolute part
/// covers values rounded near zero and, for attention, the rounding of each input.
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
        DType::F32 => Tolerance {
            abs: 1e-6,
            rel: 1e-6,
        },
    }
}

fn rounded<T: Element>(values: &[f32]) -> Vec<T> {
    values.iter().map(|&v| T::from_f32(v)).collect()
}

fn widened<T: Element>(values: &[T]) -> Vec<f32> {
    values.iter().map(|v| v.to_f32()).collect()
}

/// The GPU context when it can store `T`, or `None` with the reason printed.
fn context_for<T: Element>() -> Option<&'static GpuContext> {
    let ctx = common::gpu()?;
    if T::DTYPE == DType::F16 && !ctx.supports_f16() {
        let line = format!("skipping f16 check: {} lacks SHADER_F16", ctx.describe());
        std::io::Write::write_all(&mut std::io::stderr(), format!("{line}\n").as_bytes()).ok();
        return None;
    }
    Some(ctx)
}

fn check_rope<T: Element>() {
    let Some(ctx) = context_for::<T>() else {
        return;
    };
    let config = RopeConfig::new(64).with_base(500_000.0).with_rotary_dim(48);
    let shape = QkShape {
        batch: 2,
        seq_len: 7,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 64,
        layout: Layout::Bshd,
    };
    let (q_len, k_len) = shape.lens().expect("shape");
    let (q, k) = (
        rounded::<T>(&random_vec(1, q_len)),
        rounded::<T>(&random_vec(2, k_len)),
    );
    let frequencies = config.frequencies(100_007).expect("config");
    let positions = Positions::Start(100_000);
    let (q_gpu, k_gpu) =
        rope::gpu::apply(ctx, &config, &frequencies, &shape, positions, &q, &k).expect("gpu rope");
    let (mut q_cpu, mut k_cpu) = (widened(&q), widened(&k));
    rope::apply_cpu(
        &config,
        &frequencies,
        &shape,
        positions,
        &mut q_cpu,
        &mut k_cpu,
    )
    .expect("cpu rope");
    let name = T::DTYPE.name();
    assert_close(
        &format!("{name} q"),
        &widened(&q_gpu),
        &q_cpu,
        storage_tolerance(T::DTYPE),
    );
    assert_close(
        &format!("{name} k"),
        &widened(&k_gpu),
        &k_cpu,
        storage_tolerance(T::DTYPE),
    );
    // The pass-through features are copied bit for bit.
    for (got, want) in q_gpu.chunks(64).zip(q.chunks(64)) {
        assert_eq!(
            bytemuck::cast_slice::<T, u8>(&got[48..]),
            bytemuck::cast_slice::<T, u8>(&want[48..]),
            "{name} tail"
        );
    }
}

fn check_additive<T: Element>() {
    let Some(ctx) = context_for::<T>() else {
        return;
    };
    let name = T::DTYPE.name();
    let embeddings = rounded::<T>(&random_vec(3, 3 * 5 * 10));
    let encoding = Sinusoidal::new(10);
    let gpu = sinusoidal::gpu::add(ctx, &encoding, Positions::Start(9), 3, 5, &embeddings)
        .expect("gpu sinusoidal");
    let mut cpu = widened(&embeddings);
    sinusoidal::add_cpu(&encoding, Positions::Start(9), 3, 5, &mut cpu).expect("cpu sinusoidal");
    assert_close(
        &format!("{name} sinusoidal"),
        &widened(&gpu),
        &cpu,
        storage_tolerance(T::DTYPE),
    );

    let shape = LearnedTable::new(16, 10);
    let table = rounded::<T>(&random_vec(4, 160));
    let gpu = learned::gpu::add(
        ctx,
        &shape,
        &table,
        Positions::Ids(&[3, 15, 0, 7, 7]),
        3,
        5,
        &embeddings,
    )
    .expect("gpu learned");
    let mut cpu = widened(&embeddings);
    learned::add_cpu(
        &shape,
        &widened(&table),
        Positions::Ids(&[3, 15, 0, 7, 7]),
        3,
        5,
        &mut cpu,
    )
    .expect("cpu learned");
    assert_close(
        &format!("{name} learned"),
        &widened(&gpu),
        &cpu,
        storage_tolerance(T::DTYPE),
    );

    let alibi = Alibi::new(5);
    let gpu: Vec<T> = alibi::gpu::bias(ctx, &alibi, 3, 7, 4).expect("gpu alibi");
    let cpu = alibi::bias_cpu(&alibi, 3, 7, 4).expect("cpu alibi");
    assert_close(
        &format!("{name} alibi"),
        &widened(&gpu),
        &cpu,
        storage_tolerance(T::DTYPE),
    );
}

fn check_attention<T: Element>() {
    let Some(ctx) = context_for::<T>() else {
        return;
    };
    let name = T::DTYPE.name();
    let shape = AttentionShape::new(2, 4, 2, 5, 9, 16);
    let (q_len, kv_len, _) = shape.lens().expect("shape");
    let (q, k, v) = (
        rounded::<T>(&random_vec(5, q_len)),
        rounded::<T>(&random_vec(6, kv_len)),
        rounded::<T>(&random_vec(7, kv_len)),
    );
    let params = AttentionParams {
        causal: true,
        softcap: Some(5.0),
        ..Default::default()
    };
    let cpu = attention::attention_cpu(&shape, &params, &widened(&q), &widened(&k), &widened(&v))
        .expect("cpu attention");
    let tolerance = storage_tolerance(T::DTYPE);
    let materialised =
        attention::gpu::attention(ctx, &shape, &params, &q, &k, &v).expect("gpu attention");
    assert_close(
        &format!("{name} probs"),
        &materialised.probs,
        &cpu.probs,
        Tolerance {
            abs: 1e-6,
            rel: 1e-5,
        },
    );
    assert_close(
        &format!("{name} out"),
        &widened(&materialised.out),
        &cpu.out,
        tolerance,
    );
    let fused = attention::fused::attention(ctx, &shape, &params, &q, &k, &v, Some(2))
        .expect("fused attention");
    assert_close(
        &format!("{name} fused out"),
        &widened(&fused.out),
        &cpu.out,
        tolerance,
    );
    assert_close(
        &format!("{name} fused lse"),
        &fused.lse,
        &cpu.lse,
        Tolerance {
            abs: 1e-5,
            rel: 1e-6,
        },
    );
}

#[test]
fn rope_f16_and_bf16_match_cpu() {
    check_rope::<f16>();
    check_rope::<bf16>();
}

#[test]
fn additive_encodings_f16_and_bf16_match_cpu() {
    check_additive::<f16>();
    check_additive::<bf16>();
}

#[test]
fn attention_f16_and_bf16_match_cpu() {
    check_attention::<f16>();
    check_attention::<bf16>();
}

#[test]
fn attention_f16_scores_12_and_0() {
    // q = [12], k = [[1], [0]], scale 1: scores [12, 0]. f32 softmax gives
    // [0.9999938558, 6.144174602e-06]; stored as f16 they round to 1.0 and 6.139e-06.
    let Some(ctx) = context_for::<f16>() else {
        return;
    };
    let shape = AttentionShape::new(1, 1, 1, 1, 2, 1);
    let params = AttentionParams {
        scale: Some(1.0),
        ..Default::default()
    };
    let (q, k, v) = (
        rounded::<f16>(&[12.0]),
        rounded::<f16>(&[1.0, 0.0]),
        rounded::<f16>(&[1.0, 0.0]),
    );
    let result =
        attention::gpu::attention(ctx, &shape, &params, &q, &k, &v).expect("f16 attention");
    assert_close(
        "f32 probs",
        &result.probs,
        &[0.9999938558, 6.144174602e-06],
        Tolerance {
            abs: 1e-12,
            rel: 1e-6,
        },
    );

    // The same through the recording API with f16 probabilities.
    let device = ctx.device();
    let make = |label, data: &[f16]| {
        wgpu::util::DeviceExt::create_buffer_init(
            device,
            &wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::cast_slice(data),
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            },
        )
    };
    let (q_buffer, k_buffer, v_buffer) = (make("q", &q), make("k", &k), make("v", &v));
    let out = make("out", &[f16::ZERO, f16::ZERO]);
    let probs = make("probs", &[f16::ZERO, f16::ZERO]);
    let lse = make("lse", &[f16::ZERO, f16::ZERO]);
    let view = |buffer| posenc::TensorView::new(buffer).with_dtype(DType::F16);
    let buffers = attention::gpu::AttentionBuffers {
        q: view(&q_buffer),
        k: view(&k_buffer),
        v: view(&v_buffer),
        out: view(&out),
        lse: &lse,
        probs: Some(view(&probs)),
        q_strides: None,
        kv_strides: None,
        out_strides: None,
    };
    let mut encoder = device.create_command_encoder(&Default::default());
    attention::gpu::record(ctx, &mut encoder, &shape, &params, &buffers).expect("record");
    ctx.queue().submit([encoder.finish()]);
    let bits = ctx.read_f32(&probs, 1).expect("readback")[0].to_bits();
    let stored = [
        f16::from_bits(bits as u16).to_f32(),
        f16::from_bits((bits >> 16) as u16).to_f32(),
    ];
    assert_eq!(stored[0], 1.0);
    assert_close(
        "f16 probs",
        &stored[1..],
        &[6.139e-06],
        Tolerance {
            abs: 0.0,
            rel: 1e-3,
        },
    );
}

#[test]
fn f16_without_shader_f16_is_unsupported() {
    let Some(ctx) = common::gpu() else { return };
    if ctx.supports_f16() {
        return;
    }
    let result = sinusoidal::gpu::table::<f16>(ctx, &Sinusoidal::new(4), Positions::Start(0), 2);
    assert!(
        matches!(result, Err(posenc::Error::Unsupported { .. })),
        "{result:?}"
    );
}
