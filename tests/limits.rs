//! Work past the device's limits is split, not rejected. A device created with artificially
//! low limits (wgpu grants a device lower limits than its adapter's) makes every operation
//! split tiny inputs: 1 KiB storage bindings, 7 workgroups per grid dimension and 32
//! invocations per workgroup. Results must equal the CPU path.

mod common;

use std::sync::OnceLock;

use common::{assert_close, random_vec, Tolerance};
use half::bf16;
use posenc::alibi::{self, Alibi};
use posenc::attention::{self, AttentionParams, AttentionShape};
use posenc::learned::{self, LearnedTable};
use posenc::rope::{self, QkShape, RopeConfig};
use posenc::sinusoidal::{self, Sinusoidal};
use posenc::{AdapterRequest, Element, Error, GpuContext, Layout, Positions};

/// Same tolerances as the unrestricted tests: splitting changes which dispatch computes an
/// element, not how.
const ROPE: Tolerance = Tolerance {
    abs: 1e-6,
    rel: 1e-6,
};
const ENCODING: Tolerance = Tolerance {
    abs: 5e-7,
    rel: 0.0,
};
const ATTENTION: Tolerance = Tolerance {
    abs: 2e-6,
    rel: 1e-5,
};
const BF16: Tolerance = Tolerance {
    abs: 1.6e-2,
    rel: 3.9e-3,
};

const BINDING_BYTES: u32 = 1024;

/// A context on the default adapter with tiny limits, or `None` when there is no adapter.
fn low_limits() -> Option<&'static GpuContext> {
    static CONTEXT: OnceLock<Option<GpuContext>> = OnceLock::new();
    CONTEXT
        .get_or_init(|| {
            let full = common::gpu()?;
            let adapter_limits = full.device().limits();
            let limits = wgpu::Limits {
                max_storage_buffer_binding_size: BINDING_BYTES.into(),
                max_compute_workgroups_per_dimension: 7,
                max_compute_invocations_per_workgroup: 32,
                max_compute_workgroup_size_x: 32,
                min_storage_buffer_offset_alignment: adapter_limits
                    .min_storage_buffer_offset_alignment,
                ..wgpu::Limits::default()
            };
            let request = AdapterRequest {
                limits: Some(limits),
                ..Default::default()
            };
            Some(
                GpuContext::with_request(&request)
                    .expect("a device with lower limits than the adapter's"),
            )
        })
        .as_ref()
}

#[test]
fn limits_are_applied() {
    let Some(ctx) = low_limits() else { return };
    let limits = ctx.device().limits();
    assert_eq!(
        limits.max_storage_buffer_binding_size,
        u64::from(BINDING_BYTES)
    );
    assert_eq!(limits.max_compute_workgroups_per_dimension, 7);
    assert_eq!(limits.max_compute_invocations_per_workgroup, 32);
}

#[test]
fn sinusoidal_splits_rows() {
    let Some(ctx) = low_limits() else { return };
    // [3, 5, 40] f32 is 2400 bytes, and 300 invocations need 10 workgroups of 32.
    let encoding = Sinusoidal::new(40);
    let embeddings = random_vec(1, 3 * 5 * 40);
    let gpu =
        sinusoidal::gpu::add(ctx, &encoding, Positions::Start(3), 3, 5, &embeddings).expect("gpu");
    let mut cpu = embeddings.clone();
    sinusoidal::add_cpu(&encoding, Positions::Start(3), 3, 5, &mut cpu).expect("cpu");
    assert_close("sinusoidal f32", &gpu, &cpu, ENCODING);

    let rounded: Vec<bf16> = embeddings.iter().map(|&v| bf16::from_f32(v)).collect();
    let gpu: Vec<bf16> = sinusoidal::gpu::add(
        ctx,
        &encoding,
        Positions::Ids(&[0, 9, 2, 7, 1]),
        3,
        5,
        &rounded,
    )
    .expect("gpu bf16");
    let mut cpu: Vec<f32> = rounded.iter().map(|v| v.to_f32()).collect();
    sinusoidal::add_cpu(&encoding, Positions::Ids(&[0, 9, 2, 7, 1]), 3, 5, &mut cpu).expect("cpu");
    let gpu: Vec<f32> = gpu.iter().map(|v| Element::to_f32(*v)).collect();
    assert_close("sinusoidal bf16", &gpu, &cpu, BF16);
}

#[test]
fn learned_splits_rows_and_binds_table_rows() {
    let Some(ctx) = low_limits() else { return };
    // A 50 x 40 table (8000 bytes) is bound only in the rows a start position reads.
    let shape = LearnedTable::new(50, 40);
    let table = random_vec(2, 50 * 40);
    let embeddings = random_vec(3, 2 * 4 * 40);
    let gpu = learned::gpu::add(ctx, &shape, &table, Positions::Start(40), 2, 4, &embeddings)
        .expect("gpu");
    let mut cpu = embeddings.clone();
    learned::add_cpu(&shape, &table, Positions::Start(40), 2, 4, &mut cpu).expect("cpu");
    assert_close(
        "learned start",
        &gpu,
        &cpu,
        Tolerance { abs: 0.0, rel: 0.0 },
    );

    // Ids select any row, so the whole table must fit: 6 x 40 f32 is 960 bytes.
    let shape = LearnedTable::new(6, 40);
    let table = random_vec(4, 6 * 40);
    let ids = [5, 0, 3, 3];
    let gpu = learned::gpu::add(ctx, &shape, &table, Positions::Ids(&ids), 2, 4, &embeddings)
        .expect("gpu ids");
    let mut cpu = embeddings.clone();
    learned::add_cpu(&shape, &table, Positions::Ids(&ids), 2, 4, &mut cpu).expect("cpu ids");
    assert_close("learned ids", &gpu, &cpu, Tolerance { abs: 0.0, rel: 0.0 });
}

#[test]
fn learned_table_past_binding_with_ids_is_unsupported() {
    let Some(ctx) = low_limits() else { return };
    let shape = LearnedTable::new(50, 40);
    let result = learned::gpu::add(
        ctx,
        &shape,
        &random_vec(5, 2000),
        Positions::Ids(&[1, 2]),
        1,
        2,
        &[0.0; 80],
    );
    assert!(
        matches!(result, Err(Error::Unsupported { .. })),
        "{result:?}"
    );
}

#[test]
fn alibi_splits_rows() {
    let Some(ctx) = low_limits() else { return };
    let alibi = Alibi::new(6);
    let gpu = alibi::gpu::bias::<f32>(ctx, &alibi, 7, 9, 2).expect("gpu");
    let cpu = alibi::bias_cpu(&alibi, 7, 9, 2).expect("cpu");
    assert_close(
        "alibi",
        &gpu,
        &cpu,
        Tolerance {
            abs: 0.0,
            rel: f32::EPSILON as f64,
        },
    );
}

fn compare_rope(
    name: &str,
    ctx: &GpuContext,
    config: &RopeConfig,
    shape: QkShape,
    positions: Positions<'_>,
) {
    let (q_len, k_len) = shape.lens().expect("shape");
    let (q, k) = (random_vec(6, q_len), random_vec(7, k_len));
    let frequencies = config
        .frequencies(positions.len_needed(shape.seq_len))
        .expect("config");
    let (q_gpu, k_gpu) =
        rope::gpu::apply(ctx, config, &frequencies, &shape, positions, &q, &k).expect("gpu rope");
    let (mut q_cpu, mut k_cpu) = (q.clone(), k.clone());
    rope::apply_cpu(
        config,
        &frequencies,
        &shape,
        positions,
        &mut q_cpu,
        &mut k_cpu,
    )
    .expect("cpu rope");
    assert_close(&format!("{name} q"), &q_gpu, &q_cpu, ROPE);
    assert_close(&format!("{name} k"), &k_gpu, &k_cpu, ROPE);
}

#[test]
fn rope_splits_tokens_and_heads() {
    let Some(ctx) = low_limits() else { return };
    let config = RopeConfig::new(16);
    for layout in [Layout::Bshd, Layout::Bhsd] {
        // Q is 3456 bytes: split by tokens (Bshd) or by sequences and heads (Bhsd).
        let shape = QkShape {
            batch: 2,
            seq_len: 9,
            num_heads: 3,
            num_kv_heads: 1,
            head_dim: 16,
            layout,
        };
        compare_rope(
            &format!("{layout:?}"),
            ctx,
            &config,
            shape,
            Positions::Start(5),
        );
        let ids: Vec<u32> = (0..18).map(|i| i * 7 % 23).collect();
        compare_rope(
            &format!("{layout:?} ids"),
            ctx,
            &config,
            shape,
            Positions::Ids(&ids),
        );
    }
    // One token of 8 heads x 64 features is 2048 bytes: split by heads.
    let wide = RopeConfig::new(64).with_rotary_dim(32);
    let shape = QkShape {
        batch: 1,
        seq_len: 3,
        num_heads: 8,
        num_kv_heads: 2,
        head_dim: 64,
        layout: Layout::Bshd,
    };
    compare_rope("wide heads", ctx, &wide, shape, Positions::Start(0));
}

#[test]
fn rope_head_past_binding_is_unsupported() {
    let Some(ctx) = low_limits() else { return };
    let config = RopeConfig::new(512);
    let frequencies = config.frequencies(1).expect("config");
    let shape = QkShape {
        batch: 1,
        seq_len: 1,
        num_heads: 1,
        num_kv_heads: 0,
        head_dim: 512,
        layout: Layout::Bshd,
    };
    let result = rope::gpu::apply(
        ctx,
        &config,
        &frequencies,
        &shape,
        Positions::Start(0),
        &[0.0f32; 512],
        &[],
    );
    assert!(
        matches!(result, Err(Error::Unsupported { .. })),
        "{result:?}"
    );
}

#[test]
fn attention_splits_probability_rows() {
    let Some(ctx) = low_limits() else { return };
    // Probabilities [1, 2, 12, 20] f32 are 1920 bytes; Q, K and V fit one binding each.
    let shape = AttentionShape::new(1, 2, 1, 12, 20, 8);
    let (q_len, kv_len, _) = shape.lens().expect("shape");
    let (q, k, v) = (
        random_vec(8, q_len),
        random_vec(9, kv_len),
        random_vec(10, kv_len),
    );
    let params = AttentionParams {
        causal: true,
        window: Some(9),
        ..Default::default()
    };
    let cpu = attention::attention_cpu(&shape, &params, &q, &k, &v).expect("cpu");
    let gpu = attention::gpu::attention(ctx, &shape, &params, &q, &k, &v).expect("gpu");
    assert_close("probs", &gpu.probs, &cpu.probs, ATTENTION);
    assert_close("out", &gpu.out, &cpu.out, ATTENTION);
    assert_close("lse", &gpu.lse, &cpu.lse, ATTENTION);
    // The fused kernel needs 64 invocations per workgroup, so it falls back here.
    let fused = attention::fused::attention(ctx, &shape, &params, &q, &k, &v, None).expect("fused");
    assert_close("fused out", &fused.out, &cpu.out, ATTENTION);
    assert_close("fused lse", &fused.lse, &cpu.lse, ATTENTION);
}

#[test]
fn attention_probability_row_past_binding_is_unsupported() {
    let Some(ctx) = low_limits() else { return };
    // One row of 300 f32 probabilities is 1200 bytes.
    let shape = AttentionShape::new(1, 1, 1, 1, 300, 1);
    let result = attention::gpu::attention(
        ctx,
        &shape,
        &AttentionParams::default(),
        &[1.0f32],
        &[0.5; 300],
        &[0.5; 300],
    );
    assert!(
        matches!(result, Err(Error::Unsupported { .. })),
        "{result:?}"
    );
}

#[test]
fn probabilities_of_exactly_the_binding_limit_fit() {
    let Some(ctx) = low_limits() else { return };
    // [1, 1, 16, 16] f32 is exactly 1024 bytes: one window, one dispatch.
    let shape = AttentionShape::new(1, 1, 1, 16, 16, 2);
    let (q, k, v) = (random_vec(11, 32), random_vec(12, 32), random_vec(13, 32));
    let cpu =
        attention::attention_cpu(&shape, &AttentionParams::default(), &q, &k, &v).expect("cpu");
    let gpu = attention::gpu::attention(ctx, &shape, &AttentionParams::default(), &q, &k, &v)
        .expect("gpu");
    assert_close("probs", &gpu.probs, &cpu.probs, ATTENTION);
}
