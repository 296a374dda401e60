//! Non-finite inputs: NaN or infinity in Q, K, V, embeddings or a learned table changes only
//! the output elements that read it, on every operation, and masks never turn finite inputs
//! into NaN. What the affected elements contain is unspecified on the GPU, because WGSL lets
//! compilers assume finite math. The crate docs list what lavapipe and llvmpipe GL give.

mod common;

use common::{assert_close, random_vec, Tolerance};
use half::{bf16, f16};
use posenc::alibi::Alibi;
use posenc::attention::{AdditiveMask, AttentionParams, AttentionShape, BoolMask};
use posenc::learned::LearnedTable;
use posenc::rope::{QkShape, RopeConfig, RopeLayout};
use posenc::sinusoidal::Sinusoidal;
use posenc::{DType, Element, GpuContext, Layout, Positions};

/// Sinusoidal GPU against the f64 CPU reference, as in tests/sinusoidal.rs.
const SINUSOIDAL: Tolerance = Tolerance {
    abs: 5e-7,
    rel: 0.0,
};

/// RoPE GPU against the f64 CPU reference, as in tests/rope.rs.
const ROPE: Tolerance = Tolerance {
    abs: 1e-6,
    rel: 1e-6,
};

/// Attention GPU against the f64 CPU reference for inputs in [-1, 1], as in
/// tests/attention.rs.
const ATTENTION: Tolerance = Tolerance {
    abs: 2e-6,
    rel: 1e-5,
};

/// The non-finite values placed into inputs.
const POISONS: [f32; 3] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY];

/// Asserts that `got` and `want` agree within `tolerance` everywhere except at the indices
/// where `touched` is true, and that every untouched element of `got` is finite.
fn assert_untouched_close(
    what: &str,
    got: &[f32],
    want: &[f32],
    touched: impl Fn(usize) -> bool,
    tolerance: Tolerance,
) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut checked = 0;
    for (index, (&g, &w)) in got.iter().zip(want).enumerate() {
        if touched(index) {
            continue;
        }
        let bound = tolerance.abs + tolerance.rel * f64::from(w).abs();
        assert!(
            g.is_finite() && (f64::from(g) - f64::from(w)).abs() <= bound,
            "{what}[{index}] is not touched by the non-finite input: got {g}, want {w}"
        );
        checked += 1;
    }
    assert!(
        checked > 0,
        "{what}: every element was touched, so nothing was checked"
    );
}

#[test]
fn sinusoidal_non_finite_embedding_stays_in_its_element() {
    let Some(ctx) = common::gpu() else { return };
    let encoding = Sinusoidal::new(16);
    let (batch, seq_len) = (2, 5);
    for (n, poison) in POISONS.into_iter().enumerate() {
        let mut embeddings = random_vec(10 + n as u64, batch * seq_len * 16);
        let poisoned = [3, 77, 159];
        for &index in &poisoned {
            embeddings[index] = poison;
        }
        let got = posenc::sinusoidal::gpu::add(
            ctx,
            &encoding,
            Positions::Start(9),
            batch,
            seq_len,
            &embeddings,
        )
        .expect("gpu add");
        let mut want = embeddings.clone();
        posenc::sinusoidal::add_cpu(&encoding, Positions::Start(9), batch, seq_len, &mut want)
            .expect("cpu add");
        assert_untouched_close(
            &format!("{poison} sinusoidal"),
            &got,
            &want,
            |i| poisoned.contains(&i),
            SINUSOIDAL,
        );
    }
}

#[test]
fn learned_non_finite_input_stays_in_its_element() {
    let Some(ctx) = common::gpu() else { return };
    let shape = LearnedTable::new(6, 4);
    let ids = [0u32, 5, 2, 5, 1, 3];
    let (batch, seq_len) = (2, 3);
    for (n, poison) in POISONS.into_iter().enumerate() {
        // A poisoned table element reaches only the tokens at that position; a poisoned
        // embedding only its own element.
        let mut table = random_vec(20 + n as u64, 24);
        table[5 * 4 + 2] = poison;
        let mut embeddings = random_vec(30 + n as u64, batch * seq_len * 4);
        embeddings[17] = poison;
        let got = posenc::learned::gpu::add(
            ctx,
            &shape,
            &table,
            Positions::Ids(&ids),
            batch,
            seq_len,
            &embeddings,
        )
        .expect("gpu learned");
        let mut want = embeddings.clone();
        posenc::learned::add_cpu(
            &shape,
            &table,
            Positions::Ids(&ids),
            batch,
            seq_len,
            &mut want,
        )
        .expect("cpu learned");
        let touched = |index: usize| index == 17 || (ids[index / 4] == 5 && index % 4 == 2);
        // One f32 addition per element on both paths.
        let exact = Tolerance { abs: 0.0, rel: 0.0 };
        assert_untouched_close(&format!("{poison} learned"), &got, &want, touched, exact);
    }
}

#[test]
fn rope_non_finite_feature_stays_in_its_head() {
    let Some(ctx) = common::gpu() else { return };
    for layout in [RopeLayout::Half, RopeLayout::Interleaved] {
        let config = RopeConfig::new(8).with_rotary_dim(6).with_layout(layout);
        let shape = QkShape {
            batch: 2,
            seq_len: 3,
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 8,
            layout: Layout::Bhsd,
        };
        let frequencies = config.frequencies(3).expect("config");
        let (q_len, k_len) = shape.lens().expect("shape");
        for (n, poison) in POISONS.into_iter().enumerate() {
            let mut q = random_vec(40 + n as u64, q_len);
            let mut k = random_vec(50 + n as u64, k_len);
            // A rotated feature of one Q head and a pass-through feature of one K head.
            q[8 * 5 + 1] = poison;
            k[8 * 3 + 7] = poison;
            let (q_got, k_got) = posenc::rope::gpu::apply(
                ctx,
                &config,
                &frequencies,
                &shape,
                Positions::Start(0),
                &q,
                &k,
            )
            .expect("gpu rope");
            let (mut q_want, mut k_want) = (q.clone(), k.clone());
            posenc::rope::apply_cpu(
                &config,
                &frequencies,
                &shape,
                Positions::Start(0),
                &mut q_want,
                &mut k_want,
            )
            .expect("cpu rope");
            let name = format!("{poison} {layout:?}");
            assert_untouched_close(&format!("{name} q"), &q_got, &q_want, |i| i / 8 == 5, ROPE);
            // The pass-through feature is copied and touches nothing else.
            assert_untouched_close(
                &format!("{name} k"),
                &k_got,
                &k_want,
                |i| i == 8 * 3 + 7,
                ROPE,
            );
        }
    }
}

/// Returns the probabilities of a run with zero scores: there every visible key has a
/// probability above 0, so they show which rows `(b, h, i)` read which keys.
fn visible_keys(shape: &AttentionShape, params: &AttentionParams) -> Vec<f32> {
    let (q_len, kv_len, _) = shape.lens().expect("shape");
    posenc::attention::attention_cpu(
        shape,
        params,
        &vec![0.0; q_len],
        &vec![0.0; kv_len],
        &vec![0.0; kv_len],
    )
    .expect("visibility")
    .probs
}

/// Places `poison` into Q, K or V at one row and checks that only the rows reading it
/// differ from the CPU reference, on both GPU kernels.
fn check_attention_poison(ctx: &GpuContext, tensor: char, poison: f32) {
    // Bshd, 2 sequences, 4 query heads over 2 KV heads, 5 queries over 7 keys, head_dim 6.
    let shape = AttentionShape {
        layout: Layout::Bshd,
        ..AttentionShape::new(2, 4, 2, 5, 7, 6)
    };
    let params = AttentionParams {
        causal: true,
        key_lengths: Some(vec![7, 6]),
        window: Some(4),
        mask: Some(BoolMask::shared((0..35).map(|n| n % 9 != 4).collect())),
        ..Default::default()
    };
    let (q_len, kv_len, _) = shape.lens().expect("shape");
    let (mut q, mut k, mut v) = (
        random_vec(60, q_len),
        random_vec(61, kv_len),
        random_vec(62, kv_len),
    );
    // Bshd strides: batch 5*4*6 (Q) and 7*2*6 (K, V), seq 4*6 and 2*6, head 6.
    let (b, kv_head, j, h, i) = (1, 1, 3, 1, 2);
    let probs = visible_keys(&shape, &params);
    let touched_row = |row: usize| -> bool {
        let (rb, rh, ri) = (row / (4 * 5), (row / 5) % 4, row % 5);
        match tensor {
            'q' => (rb, rh, ri) == (b, h, i),
            _ => rb == b && rh / 2 == kv_head && probs[row * 7 + j] > 0.0,
        }
    };
    match tensor {
        'q' => q[b * 120 + i * 24 + h * 6 + 2] = poison,
        'k' => k[b * 84 + j * 12 + kv_head * 6 + 4] = poison,
        _ => v[b * 84 + j * 12 + kv_head * 6 + 1] = poison,
    }
    assert!(
        (0..40).any(touched_row),
        "the poisoned {tensor} row must be read by some row"
    );

    let want = posenc::attention::attention_cpu(&shape, &params, &q, &k, &v).expect("cpu");
    // Output element (b, i, h, d) in Bshd belongs to row (b, h, i).
    let out_row = |index: usize| {
        let (ob, oi, oh) = (index / 120, (index / 24) % 5, (index / 6) % 4);
        (ob * 4 + oh) * 5 + oi
    };
    let name = format!("{poison} in {tensor}");
    let materialised =
        posenc::attention::gpu::attention(ctx, &shape, &params, &q, &k, &v).expect("gpu");
    assert_untouched_close(
        &format!("{name} probs"),
        &materialised.probs,
        &want.probs,
        |n| touched_row(n / 7),
        ATTENTION,
    );
    assert_untouched_close(
        &format!("{name} out"),
        &materialised.out,
        &want.out,
        |n| touched_row(out_row(n)),
        ATTENTION,
    );
    assert_untouched_close(
        &format!("{name} lse"),
        &materialised.lse,
        &want.lse,
        touched_row,
        ATTENTION,
    );
    for splits in [Some(1), Some(3)] {
        let fused = posenc::attention::fused::attention(ctx, &shape, &params, &q, &k, &v, splits)
            .expect("fused");
        assert_untouched_close(
            &format!("{name} fused {splits:?} out"),
            &fused.out,
            &want.out,
            |n| touched_row(out_row(n)),
            ATTENTION,
        );
        assert_untouched_close(
            &format!("{name} fused {splits:?} lse"),
            &fused.lse,
            &want.lse,
            touched_row,
            ATTENTION,
        );
    }
}

#[test]
fn attention_non_finite_input_stays_in_rows_reading_it() {
    let Some(ctx) = common::gpu() else { return };
    for tensor in ['q', 'k', 'v'] {
        for poison in POISONS {
            check_attention_poison(ctx, tensor, poison);
        }
    }
}

#[test]
fn attention_non_finite_in_hidden_keys_changes_nothing() {
    // Keys past key_lengths and keys that every row's mask hides are never read: NaN there
    // must leave the whole result equal to the clean one.
    let Some(ctx) = common::gpu() else { return };
    let shape = AttentionShape::new(1, 2, 1, 3, 70, 4);
    let params = AttentionParams {
        key_lengths: Some(vec![66]),
        mask: Some(BoolMask::shared((0..210).map(|n| n % 70 != 10).collect())),
        ..Default::default()
    };
    let (q_len, kv_len, _) = shape.lens().expect("shape");
    let q = random_vec(70, q_len);
    let (clean_k, clean_v) = (random_vec(71, kv_len), random_vec(72, kv_len));
    let want =
        posenc::attention::attention_cpu(&shape, &params, &q, &clean_k, &clean_v).expect("cpu");
    for poison in POISONS {
        let (mut k, mut v) = (clean_k.clone(), clean_v.clone());
        for key in [10, 66, 69] {
            k[key * 4..key * 4 + 4].fill(poison);
            v[key * 4..key * 4 + 4].fill(poison);
        }
        let got = posenc::attention::gpu::attention(ctx, &shape, &params, &q, &k, &v).expect("gpu");
        assert_close(
            &format!("{poison} probs"),
            &got.probs,
            &want.probs,
            ATTENTION,
        );
        assert_close(&format!("{poison} out"), &got.out, &want.out, ATTENTION);
        for splits in [None, Some(2)] {
            let fused =
                posenc::attention::fused::attention(ctx, &shape, &params, &q, &k, &v, splits)
                    .expect("fused");
            assert_close(
                &format!("{poison} fused out"),
                &fused.out,
                &want.out,
                ATTENTION,
            );
            assert_close(
                &format!("{poison} fused lse"),
                &fused.lse,
                &want.lse,
                ATTENTION,
            );
        }
    }
}

/// One kernel's results widened to f32: `(name, probs, out, lse)`; `probs` is empty from the
/// fused kernel.
type KernelOutput = (String, Vec<f32>, Vec<f32>, Vec<f32>);

/// Runs both kernels on `T` storage and returns every output widened to f32:
/// `(name, probs, out, lse)`.
fn all_outputs<T: Element>(
    ctx: &GpuContext,
    shape: &AttentionShape,
    params: &AttentionParams,
    (q, k, v): (&[f32], &[f32], &[f32]),
) -> Vec<KernelOutput> {
    let store = |values: &[f32]| values.iter().map(|&x| T::from_f32(x)).collect::<Vec<T>>();
    let widen = |values: &[T]| values.iter().map(|x| x.to_f32()).collect::<Vec<f32>>();
    let (q, k, v) = (store(q), store(k), store(v));
    let name = T::DTYPE.name();
    let materialised =
        posenc::attention::gpu::attention(ctx, shape, params, &q, &k, &v).expect("gpu");
    let mut outputs = vec![(
        format!("{name} materialising"),
        materialised.probs,
        widen(&materialised.out),
        materialised.lse,
    )];
    for splits in [Some(1), Some(3)] {
        let fused = posenc::attention::fused::attention(ctx, shape, params, &q, &k, &v, splits)
            .expect("fused");
        outputs.push((
            format!("{name} fused {splits:?}"),
            Vec::new(),
            widen(&fused.out),
            fused.lse,
        ));
    }
    outputs
}

#[test]
fn very_negative_additive_masks_stay_finite() {
    let Some(ctx) = common::gpu() else { return };
    let shape = AttentionShape::new(2, 2, 1, 4, 70, 8);
    let (q_len, kv_len, _) = shape.lens().expect("shape");
    let inputs = (
        random_vec(80, q_len),
        random_vec(81, kv_len),
        random_vec(82, kv_len),
    );
    let mut dtypes = vec![DType::F32, DType::Bf16];
    if ctx.supports_f16() {
        dtypes.push(DType::F16);
    }
    for value in [-65504.0, -1e30, f32::MIN, f32::NEG_INFINITY] {
        // Row 0 of every plane has only `value` entries, row 1 a mix with 0, row 2 `value`
        // and -inf, row 3 nothing but -inf.
        let plane: Vec<f32> = (0..4 * 70)
            .map(|n| match (n / 70, n % 70) {
                (0, _) => value,
                (1, j) if j % 2 == 0 => value,
                (1, _) => 0.0,
                (2, j) if j % 3 == 0 => f32::NEG_INFINITY,
                (2, _) => value,
                _ => f32::NEG_INFINITY,
            })
            .collect();
        let masks = [
            AttentionParams {
                additive_mask: Some(AdditiveMask {
                    values: plane.clone(),
                    batch: 1,
                    heads: 1,
                }),
                ..Default::default()
            },
            AttentionParams {
                additive_mask: Some(AdditiveMask {
                    values: plane.clone(),
                    batch: 1,
                    heads: 1,
                }),
                alibi: Some(Alibi::new(2)),
                softcap: Some(20.0),
                causal: true,
                q_offset: Some(66),
                ..Default::default()
            },
            AttentionParams {
                additive_mask: Some(AdditiveMask {
                    values: plane.clone(),
                    batch: 1,
                    heads: 1,
                }),
                sinks: Some(vec![0.0, -3.0]),
                ..Default::default()
            },
        ];
        for params in &masks {
            let want =
                posenc::attention::attention_cpu(&shape, params, &inputs.0, &inputs.1, &inputs.2)
                    .expect("cpu");
            // With value = -inf, only row 1 (its 0 entries) has visible keys.
            let rows_without_keys: Vec<usize> = (0..16)
                .filter(|row| row % 4 == 3 || (value == f32::NEG_INFINITY && row % 4 != 1))
                .collect();
            let mut outputs = Vec::new();
            for &dtype in &dtypes {
                let views = (&inputs.0[..], &inputs.1[..], &inputs.2[..]);
                outputs.extend(match dtype {
                    DType::F32 => all_outputs::<f32>(ctx, &shape, params, views),
                    DType::F16 => all_outputs::<f16>(ctx, &shape, params, views),
                    DType::Bf16 => all_outputs::<bf16>(ctx, &shape, params, views),
                });
            }
            for (name, probs, out, lse) in outputs {
                let name = format!("additive {value} {name} sinks {:?}", params.sinks.is_some());
                let finite = |values: &[f32]| values.iter().all(|x| x.is_finite());
                assert!(finite(&probs), "{name}: non-finite probabilities");
                assert!(finite(&out), "{name}: non-finite output");
                assert!(finite(&lse), "{name}: non-finite lse");
                for row in 0..16 {
                    let row_probs = probs.get(row * 70..(row + 1) * 70).unwrap_or(&[]);
                    let sum: f32 = row_probs.iter().sum();
                    if rows_without_keys.contains(&row) {
                        assert!(
                            row_probs.iter().all(|&p| p == 0.0),
                            "{name}: row {row} has no key"
                        );
                        assert_eq!(
                            &out[row * 8..row * 8 + 8],
                            &[0.0; 8],
                            "{name}: row {row} output"
                        );
                    } else if !row_probs.is_empty() && params.sinks.is_none() {
                        // Each visible key has a probability, and together they sum to 1.
                        assert!((sum - 1.0).abs() < 1e-5, "{name}: row {row} sums to {sum}");
                    }
                }
                // Where both precisions lose the key's score next to the mask (|value| of
                // 1e30 and more), the GPU matches the CPU; -65504 leaves f32 scores 2^-24 *
                // 65504 = 0.004 apart from the f64 ones, so only finiteness is asserted there.
                if value != -65504.0 && name.starts_with("f32") {
                    assert_close(&format!("{name} out"), &out, &want.out, ATTENTION);
                }
            }
        }
    }
}

#[test]
fn attention_cpu_nan_row_is_nan() {
    // Found while documenting non-finite inputs: the CPU reference took the row maximum
    // with f64::max, which drops NaN, so a query row of NaN came back as a row without
    // visible keys (zero output, sentinel lse) instead of NaN.
    let shape = AttentionShape::new(1, 1, 1, 2, 3, 2);
    let q = [f32::NAN, 0.5, 0.25, 0.5];
    let (k, v) = ([0.25f32; 6], [0.75f32; 6]);
    let result = posenc::attention::attention_cpu(&shape, &AttentionParams::default(), &q, &k, &v)
        .expect("cpu");
    assert!(
        result.out[..2].iter().all(|x| x.is_nan()),
        "{:?}",
        result.out
    );
    assert!(result.lse[0].is_nan(), "{:?}", result.lse);
    assert!(
        result.probs[..3].iter().all(|x| x.is_nan()),
        "{:?}",
        result.probs
    );
    // The other row is untouched.
    assert!(result.out[2..].iter().all(|x| x.is_finite()));
}
