//! Property tests: random configurations and shapes for every operation, GPU against the CPU
//! reference, in f32 and in f16/bf16 storage.
//!
//! Each property runs 1000 cases (500 for f16/bf16 storage) from a fixed seed: the file
//! took 10 to 40 seconds with lavapipe on a shared two-core machine. Set
//! `POSENC_PROPTEST_CASES=N` for a longer run of N cases per property, and
//! `PROPTEST_RNG_SEED=S` to draw other cases. A failing case is printed after shrinking, and
//! every case found so far is kept as a plain test at the end of this file.

mod common;

use common::{assert_bits_equal, assert_close, random_vec, Tolerance};
use half::{bf16, f16};
use posenc::alibi::{Alibi, AlibiBias};
use posenc::attention::{AdditiveMask, AttentionParams, AttentionShape, BoolMask, Segments};
use posenc::learned::LearnedTable;
use posenc::rope::{Llama3, QkShape, RopeConfig, RopeLayout, RopeScaling, Yarn};
use posenc::sinusoidal::{Sinusoidal, SinusoidalFrequencies, SinusoidalLayout};
use posenc::{DType, Element, GpuContext, Layout, Positions};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Sinusoidal GPU against the f64 CPU reference, as in tests/sinusoidal.rs: values in
/// [-2, 2] and the GPU's cos/sin within about 2 ulps of 1.
const SINUSOIDAL: Tolerance = Tolerance {
    abs: 5e-7,
    rel: 0.0,
};

/// RoPE GPU against the f64 CPU reference, as in tests/rope.rs: cos/sin within about 2 ulps,
/// then two products and a sum rounded in f32.
const ROPE: Tolerance = Tolerance {
    abs: 1e-6,
    rel: 1e-6,
};

/// ALiBi, as in tests/alibi.rs: the GPU rounds the f32 slope times an exact distance once,
/// the CPU rounds the f64 product once, so they differ by at most one f32 ulp.
const ALIBI: Tolerance = Tolerance {
    abs: 0.0,
    rel: f32::EPSILON as f64,
};

/// Attention GPU (f32 accumulation) against the f64 CPU reference, as in
/// tests/attention.rs: scores of order 1 (the scale keeps `q . k * scale` near the inputs'
/// range for every head_dim here), each rounding about 1e-7 per step.
const ATTENTION: Tolerance = Tolerance {
    abs: 2e-6,
    rel: 1e-5,
};

/// Extra absolute error of attention per unit of the largest |score| in a case. Each f32
/// score is rounded to 2^-24 of its size about four times: the last additions of the dot
/// product, the scale, the softcap, the ALiBi bias and the mask. An absolute score error
/// moves the probabilities by that relative amount and the lse by that amount.
const SCORE_ROUNDING: f64 = 4.0 * (f32::EPSILON as f64 / 2.0);

/// Storing a result in f16 or bf16 rounds it to half an ulp (2^-11 and 2^-8 relative) on top
/// of the f32 arithmetic. The absolute part covers values rounded near zero and, for
/// attention, the rounding of each input. The same bounds as tests/dtypes.rs.
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

/// Cases per property: `POSENC_PROPTEST_CASES` when set, else `default`.
fn case_count(default: u32) -> u32 {
    match std::env::var("POSENC_PROPTEST_CASES") {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("POSENC_PROPTEST_CASES={text:?} is not a count")),
        Err(_) => default,
    }
}

/// proptest settings: a fixed seed unless `PROPTEST_RNG_SEED` is set, and no regression
/// files, because failures become plain tests in this file.
fn config(default_cases: u32) -> ProptestConfig {
    let defaults = ProptestConfig::default();
    let rng_seed = match defaults.rng_seed {
        RngSeed::Random => RngSeed::Fixed(0x0005_eed0_bea5),
        fixed => fixed,
    };
    ProptestConfig {
        cases: case_count(default_cases),
        failure_persistence: None,
        max_shrink_iters: 512,
        rng_seed,
        ..defaults
    }
}

/// How a case gives its positions; turned into [`Positions`] by [`PositionSpec::ids`].
#[derive(Clone, Debug)]
enum PositionSpec {
    Start(u32),
    /// `seq_len` ids shared by every sequence.
    Shared(Vec<u32>),
    /// `batch * seq_len` ids.
    PerSequence(Vec<u32>),
}

impl PositionSpec {
    fn positions(&self) -> Positions<'_> {
        match self {
            PositionSpec::Start(start) => Positions::Start(*start),
            PositionSpec::Shared(ids) | PositionSpec::PerSequence(ids) => Positions::Ids(ids),
        }
    }
}

/// Generates a position below `limit`: mostly small, sometimes anywhere in the range,
/// sometimes at its top end.
fn position_below(limit: u64) -> impl Strategy<Value = u32> {
    let top = (limit - 1).min(u64::from(u32::MAX)) as u32;
    prop_oneof![
        4 => 0..=top.min(64),
        2 => 0..=top,
        1 => (top - top.min(16))..=top,
    ]
}

/// Positions for `batch` sequences of `seq_len` tokens, every one below `limit`.
fn positions(batch: usize, seq_len: usize, limit: u64) -> BoxedStrategy<PositionSpec> {
    let count = seq_len as u64;
    let start = if count > limit {
        Just(PositionSpec::Start(0)).boxed()
    } else {
        let last_start = (limit - count).min(u64::from(u32::MAX)) + 1;
        position_below(last_start)
            .prop_map(PositionSpec::Start)
            .boxed()
    };
    if limit == 0 {
        return start;
    }
    prop_oneof![
        start,
        proptest::collection::vec(position_below(limit), seq_len).prop_map(PositionSpec::Shared),
        proptest::collection::vec(position_below(limit), batch * seq_len)
            .prop_map(PositionSpec::PerSequence),
    ]
    .boxed()
}

fn round_trip<T: Element>(values: &[f32]) -> (Vec<T>, Vec<f32>) {
    let stored: Vec<T> = values.iter().map(|&v| T::from_f32(v)).collect();
    let widened = stored.iter().map(|v| v.to_f32()).collect();
    (stored, widened)
}

fn widen<T: Element>(values: &[T]) -> Vec<f32> {
    values.iter().map(|v| v.to_f32()).collect()
}

/// Returns the CPU result as `T` storage keeps it: f16 stores saturate at +-65504
/// (documented in posenc's tensor declarations), where a plain conversion gives infinity.
fn saturated<T: Element>(mut values: Vec<f32>) -> Vec<f32> {
    if T::DTYPE == DType::F16 {
        for value in &mut values {
            *value = value.clamp(-65504.0, 65504.0);
        }
    }
    values
}

/// Returns the storage types the adapter has besides f32: bf16 always, f16 with
/// `SHADER_F16`.
fn half_dtypes(ctx: &GpuContext) -> Vec<DType> {
    let mut dtypes = vec![DType::Bf16];
    if ctx.supports_f16() {
        dtypes.push(DType::F16);
    }
    dtypes
}

/// Runs `check::<T>` for the storage type `dtype`.
macro_rules! with_dtype {
    ($dtype:expr, $check:ident ( $($arg:expr),* )) => {
        match $dtype {
            DType::F32 => $check::<f32>($($arg),*),
            DType::F16 => $check::<f16>($($arg),*),
            DType::Bf16 => $check::<bf16>($($arg),*),
        }
    };
}

// ---------------------------------------------------------------------------------------
// Sinusoidal

#[derive(Clone, Debug)]
struct SinusoidalCase {
    encoding: Sinusoidal,
    batch: usize,
    seq_len: usize,
    positions: PositionSpec,
    /// `None` computes the table; `Some(seed)` adds to random embeddings.
    embeddings_seed: Option<u64>,
}

fn sinusoidal_case() -> impl Strategy<Value = SinusoidalCase> {
    let encoding = (
        1usize..=40,
        prop_oneof![Just(10_000.0), 2.0f64..1e6],
        prop_oneof![
            Just(SinusoidalLayout::Interleaved),
            Just(SinusoidalLayout::Concat)
        ],
        prop_oneof![
            Just(SinusoidalFrequencies::Vaswani),
            Just(SinusoidalFrequencies::Tensor2Tensor)
        ],
    )
        .prop_map(|(half, base, layout, frequencies)| {
            // Tensor2Tensor needs dim >= 4.
            let dim = if frequencies == SinusoidalFrequencies::Tensor2Tensor {
                2 * half.max(2)
            } else {
                2 * half
            };
            Sinusoidal::new(dim)
                .with_base(base)
                .with_layout(layout)
                .with_frequencies(frequencies)
        });
    (encoding, 0usize..=3, 0usize..=6, any::<bool>())
        .prop_flat_map(|(encoding, batch, seq_len, table)| {
            // The table has one sequence.
            let batch = if table { 1 } else { batch };
            (
                Just(encoding),
                Just(batch),
                Just(seq_len),
                positions(batch, seq_len, 1 << 32),
                if table {
                    Just(None).boxed()
                } else {
                    any::<u64>().prop_map(Some).boxed()
                },
            )
        })
        .prop_map(
            |(encoding, batch, seq_len, positions, embeddings_seed)| SinusoidalCase {
                encoding,
                batch,
                seq_len,
                positions,
                embeddings_seed,
            },
        )
}

fn check_sinusoidal<T: Element>(ctx: &GpuContext, case: &SinusoidalCase) {
    let positions = case.positions.positions();
    let name = T::DTYPE.name();
    let (got, want) = match case.embeddings_seed {
        None => {
            let got: Vec<T> =
                posenc::sinusoidal::gpu::table(ctx, &case.encoding, positions, case.seq_len)
                    .expect("gpu table");
            let want = posenc::sinusoidal::table_cpu(&case.encoding, positions, case.seq_len)
                .expect("cpu table");
            (widen(&got), want)
        }
        Some(seed) => {
            let len = case.batch * case.seq_len * case.encoding.dim;
            let (stored, mut want) = round_trip::<T>(&random_vec(seed, len));
            let got = posenc::sinusoidal::gpu::add(
                ctx,
                &case.encoding,
                positions,
                case.batch,
                case.seq_len,
                &stored,
            )
            .expect("gpu add");
            posenc::sinusoidal::add_cpu(
                &case.encoding,
                positions,
                case.batch,
                case.seq_len,
                &mut want,
            )
            .expect("cpu add");
            (widen(&got), want)
        }
    };
    let tolerance = match T::DTYPE {
        DType::F32 => SINUSOIDAL,
        dtype => storage_tolerance(dtype),
    };
    assert_close(&format!("{name} sinusoidal"), &got, &want, tolerance);
}

// ---------------------------------------------------------------------------------------
// Learned

#[derive(Clone, Debug)]
struct LearnedCase {
    shape: LearnedTable,
    batch: usize,
    seq_len: usize,
    positions: PositionSpec,
    seed: u64,
}

fn learned_case() -> impl Strategy<Value = LearnedCase> {
    (1usize..=24, 1usize..=40, 0usize..=3, 0usize..=6)
        .prop_flat_map(|(max_positions, dim, batch, seq_len)| {
            (
                Just(LearnedTable::new(max_positions, dim)),
                Just(batch),
                Just(seq_len),
                positions(batch, seq_len, max_positions as u64),
                any::<u64>(),
            )
        })
        .prop_filter(
            "a start position range must fit the table",
            |(shape, _, seq_len, spec, _)| {
                !matches!(spec, PositionSpec::Start(_)) || *seq_len <= shape.max_positions
            },
        )
        .prop_map(|(shape, batch, seq_len, positions, seed)| LearnedCase {
            shape,
            batch,
            seq_len,
            positions,
            seed,
        })
}

fn check_learned<T: Element>(ctx: &GpuContext, case: &LearnedCase) {
    let shape = &case.shape;
    let (table, table_f32) =
        round_trip::<T>(&random_vec(case.seed, shape.max_positions * shape.dim));
    let len = case.batch * case.seq_len * shape.dim;
    let (embeddings, mut want) = round_trip::<T>(&random_vec(case.seed ^ 1, len));
    let positions = case.positions.positions();
    let got = posenc::learned::gpu::add(
        ctx,
        shape,
        &table,
        positions,
        case.batch,
        case.seq_len,
        &embeddings,
    )
    .expect("gpu learned");
    posenc::learned::add_cpu(
        shape,
        &table_f32,
        positions,
        case.batch,
        case.seq_len,
        &mut want,
    )
    .expect("cpu learned");
    match T::DTYPE {
        // One f32 addition per element on both paths.
        DType::F32 => assert_bits_equal("f32 learned", &widen(&got), &want),
        dtype => assert_close(
            &format!("{} learned", dtype.name()),
            &widen(&got),
            &want,
            storage_tolerance(dtype),
        ),
    }
}

// ---------------------------------------------------------------------------------------
// RoPE

#[derive(Clone, Debug)]
struct RopeCase {
    config: RopeConfig,
    shape: QkShape,
    positions: PositionSpec,
    seed: u64,
}

fn rope_scaling() -> impl Strategy<Value = RopeScaling> {
    prop_oneof![
        3 => Just(RopeScaling::None),
        1 => (1.0f64..8.0).prop_map(|factor| RopeScaling::Linear { factor }),
        1 => (1.0f64..8.0, 1u64..64).prop_map(|(factor, max_position_embeddings)| {
            RopeScaling::Dynamic { factor, max_position_embeddings }
        }),
        1 => (1.0f64..40.0, 16u64..8192).prop_map(|(factor, original)| {
            RopeScaling::Yarn(Yarn::new(factor, original))
        }),
        1 => (1.0f64..32.0, 256u64..8192).prop_map(|(factor, original)| {
            RopeScaling::Llama3(Llama3 {
                factor,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: original,
            })
        }),
    ]
}

fn rope_case() -> impl Strategy<Value = RopeCase> {
    let dims = (1usize..=32, 1usize..=32, 0usize..=1).prop_map(|(pairs, rotary_pairs, odd)| {
        // head_dim may be odd when the rotation is partial.
        let rotary_dim = 2 * rotary_pairs.min(pairs);
        let head_dim = 2 * pairs + if rotary_dim < 2 * pairs { odd } else { 0 };
        (head_dim, rotary_dim)
    });
    let config = (
        dims,
        prop_oneof![Just(10_000.0), Just(500_000.0), 2.0f64..1e7],
        prop_oneof![Just(RopeLayout::Half), Just(RopeLayout::Interleaved)],
        rope_scaling(),
    )
        .prop_map(|((head_dim, rotary_dim), base, layout, scaling)| {
            // Dynamic NTK raises the base to d / (d - 2), so it needs rotary_dim >= 4.
            let scaling = match scaling {
                RopeScaling::Dynamic { .. } if rotary_dim < 4 => RopeScaling::None,
                scaling => scaling,
            };
            RopeConfig::new(head_dim)
                .with_rotary_dim(rotary_dim)
                .with_base(base)
                .with_layout(layout)
                .with_scaling(scaling)
        });
    let shape = (
        0usize..=3,
        0usize..=5,
        0usize..=4,
        0usize..=4,
        any::<bool>(),
    );
    (config, shape)
        .prop_flat_map(
            |(config, (batch, seq_len, num_heads, num_kv_heads, bhsd))| {
                let shape = QkShape {
                    batch,
                    seq_len,
                    num_heads,
                    num_kv_heads: num_kv_heads.min(num_heads.max(2)),
                    head_dim: config.head_dim,
                    layout: if bhsd { Layout::Bhsd } else { Layout::Bshd },
                };
                (
                    Just(config),
                    Just(shape),
                    positions(batch, seq_len, 1 << 32),
                    any::<u64>(),
                )
            },
        )
        .prop_map(|(config, shape, positions, seed)| RopeCase {
            config,
            shape,
            positions,
            seed,
        })
}

fn check_rope<T: Element>(ctx: &GpuContext, case: &RopeCase) {
    let shape = &case.shape;
    let positions = case.positions.positions();
    let frequencies = case
        .config
        .frequencies(positions.len_needed(shape.seq_len))
        .expect("frequencies");
    let (q_len, k_len) = shape.lens().expect("shape");
    let (q, mut q_want) = round_trip::<T>(&random_vec(case.seed, q_len));
    let (k, mut k_want) = round_trip::<T>(&random_vec(case.seed ^ 1, k_len));
    let (q_got, k_got) =
        posenc::rope::gpu::apply(ctx, &case.config, &frequencies, shape, positions, &q, &k)
            .expect("gpu rope");
    posenc::rope::apply_cpu(
        &case.config,
        &frequencies,
        shape,
        positions,
        &mut q_want,
        &mut k_want,
    )
    .expect("cpu rope");
    let tolerance = match T::DTYPE {
        DType::F32 => ROPE,
        dtype => storage_tolerance(dtype),
    };
    // A large YaRN or Llama 3 attention factor scales the outputs, and with them the bound.
    let factor = frequencies.attention_factor.max(1.0);
    let tolerance = Tolerance {
        abs: tolerance.abs * factor,
        ..tolerance
    };
    let name = T::DTYPE.name();
    assert_close(
        &format!("{name} rope q"),
        &widen(&q_got),
        &q_want,
        tolerance,
    );
    assert_close(
        &format!("{name} rope k"),
        &widen(&k_got),
        &k_want,
        tolerance,
    );

    // The tables take one sequence's positions.
    if T::DTYPE == DType::F32 && !matches!(case.positions, PositionSpec::PerSequence(_)) {
        let got =
            posenc::rope::gpu::tables(ctx, &case.config, &frequencies, positions, shape.seq_len)
                .expect("gpu tables");
        let want = posenc::rope::tables_cpu(&case.config, &frequencies, positions, shape.seq_len)
            .expect("cpu tables");
        assert_close("rope cos", &got.cos, &want.cos, tolerance);
        assert_close("rope sin", &got.sin, &want.sin, tolerance);
    }
}

// ---------------------------------------------------------------------------------------
// ALiBi

#[derive(Clone, Debug)]
struct AlibiCase {
    alibi: Alibi,
    q_len: usize,
    kv_len: usize,
    q_offset: i64,
}

fn alibi_case() -> impl Strategy<Value = AlibiCase> {
    (
        1usize..=40,
        prop_oneof![Just(8.0), 0.25f64..16.0],
        any::<bool>(),
        0usize..=8,
        0usize..=12,
        prop_oneof![3 => -30i64..30, 1 => -(1i64 << 20)..(1 << 20)],
    )
        .prop_map(
            |(num_heads, max_bias, symmetric, q_len, kv_len, q_offset)| AlibiCase {
                alibi: Alibi {
                    num_heads,
                    max_bias,
                    bias: if symmetric {
                        AlibiBias::Symmetric
                    } else {
                        AlibiBias::Causal
                    },
                },
                q_len,
                kv_len,
                q_offset,
            },
        )
}

fn check_alibi<T: Element>(ctx: &GpuContext, case: &AlibiCase) {
    let got: Vec<T> =
        posenc::alibi::gpu::bias(ctx, &case.alibi, case.q_len, case.kv_len, case.q_offset)
            .expect("gpu alibi");
    let want = posenc::alibi::bias_cpu(&case.alibi, case.q_len, case.kv_len, case.q_offset)
        .expect("cpu alibi");
    let want = saturated::<T>(want);
    let tolerance = match T::DTYPE {
        DType::F32 => ALIBI,
        dtype => storage_tolerance(dtype),
    };
    assert_close(
        &format!("{} alibi", T::DTYPE.name()),
        &widen(&got),
        &want,
        tolerance,
    );
}

// ---------------------------------------------------------------------------------------
// Attention

/// Masks and biases of an attention case, as seeds and switches; [`MaskSpec::params`] fills
/// in the values for a shape.
#[derive(Clone, Debug, Default)]
struct MaskSpec {
    causal: bool,
    q_offset: Option<i64>,
    q_offsets_seed: Option<u64>,
    window: Option<usize>,
    key_lengths_seed: Option<u64>,
    key_starts_seed: Option<u64>,
    /// Seed and number of segments.
    segments: Option<(u64, u32)>,
    /// Seed, broadcast over batch, broadcast over heads, fraction of visible entries.
    mask: Option<(u64, bool, bool, f64)>,
    /// Seed, broadcast over batch, broadcast over heads, fraction of -inf entries.
    additive: Option<(u64, bool, bool, f64)>,
    /// max_bias and whether the bias is symmetric.
    alibi: Option<(f64, bool)>,
    softcap: Option<f32>,
    /// Multiplies the default scale `1/sqrt(head_dim)`.
    scale_factor: Option<f32>,
    sinks_seed: Option<u64>,
}

impl MaskSpec {
    fn params(&self, shape: &AttentionShape) -> AttentionParams {
        let rng = |seed: u64| ChaCha8Rng::seed_from_u64(seed);
        let (batch, heads) = (shape.batch, shape.num_heads);
        let plane = shape.q_len * shape.kv_len;
        let kv_len = shape.kv_len;
        AttentionParams {
            scale: self
                .scale_factor
                .map(|factor| factor / (shape.head_dim as f32).sqrt()),
            softcap: self.softcap,
            causal: self.causal,
            q_offset: self.q_offset,
            q_offsets: self.q_offsets_seed.map(|seed| {
                let mut rng = rng(seed);
                (0..batch)
                    .map(|_| rng.random_range(-12..=kv_len as i64 + 3))
                    .collect()
            }),
            window: self.window,
            key_lengths: self.key_lengths_seed.map(|seed| {
                let mut rng = rng(seed);
                (0..batch).map(|_| rng.random_range(0..=kv_len)).collect()
            }),
            key_starts: self.key_starts_seed.map(|seed| {
                let mut rng = rng(seed);
                (0..batch)
                    .map(|_| rng.random_range(0..=kv_len / 2))
                    .collect()
            }),
            segments: self.segments.map(|(seed, count)| {
                let mut rng = rng(seed);
                let mut ids =
                    |n: usize| -> Vec<u32> { (0..n).map(|_| rng.random_range(0..count)).collect() };
                Segments {
                    q: ids(batch * shape.q_len),
                    kv: ids(batch * kv_len),
                }
            }),
            mask: self.mask.map(|(seed, one_batch, one_head, density)| {
                let mut rng = rng(seed);
                let (mask_batch, mask_heads) = broadcast(batch, heads, one_batch, one_head);
                BoolMask {
                    values: (0..mask_batch * mask_heads * plane)
                        .map(|_| rng.random_bool(density))
                        .collect(),
                    batch: mask_batch,
                    heads: mask_heads,
                }
            }),
            additive_mask: self.additive.map(|(seed, one_batch, one_head, hidden)| {
                let mut rng = rng(seed);
                let (mask_batch, mask_heads) = broadcast(batch, heads, one_batch, one_head);
                AdditiveMask {
                    values: (0..mask_batch * mask_heads * plane)
                        .map(|_| {
                            if rng.random_bool(hidden) {
                                f32::NEG_INFINITY
                            } else {
                                rng.random_range(-4.0f32..4.0)
                            }
                        })
                        .collect(),
                    batch: mask_batch,
                    heads: mask_heads,
                }
            }),
            alibi: self.alibi.map(|(max_bias, symmetric)| Alibi {
                num_heads: heads,
                max_bias,
                bias: if symmetric {
                    AlibiBias::Symmetric
                } else {
                    AlibiBias::Causal
                },
            }),
            sinks: self.sinks_seed.map(|seed| {
                let mut rng = rng(seed);
                (0..heads).map(|_| rng.random_range(-3.0f32..3.0)).collect()
            }),
        }
    }
}

/// Mask dimensions: 1 where broadcast (or where the shape's dimension is 0, which a mask
/// cannot have as a broadcast dimension of 1 would be as valid), else the shape's.
fn broadcast(batch: usize, heads: usize, one_batch: bool, one_head: bool) -> (usize, usize) {
    (
        if one_batch { 1 } else { batch },
        if one_head { 1 } else { heads },
    )
}

fn mask_spec() -> impl Strategy<Value = MaskSpec> {
    let positional = (
        any::<bool>(),
        proptest::option::weighted(0.3, -12i64..12),
        proptest::option::weighted(0.2, any::<u64>()),
        proptest::option::weighted(0.25, 1usize..12),
        proptest::option::weighted(0.25, any::<u64>()),
        proptest::option::weighted(0.2, any::<u64>()),
        proptest::option::weighted(0.2, (any::<u64>(), 1u32..4)),
    );
    let values = (
        proptest::option::weighted(
            0.25,
            (any::<u64>(), any::<bool>(), any::<bool>(), 0.3f64..1.0),
        ),
        proptest::option::weighted(
            0.25,
            (any::<u64>(), any::<bool>(), any::<bool>(), 0.0f64..0.5),
        ),
        proptest::option::weighted(0.25, (prop_oneof![Just(8.0), 0.5f64..16.0], any::<bool>())),
        proptest::option::weighted(0.2, 0.5f32..50.0),
        proptest::option::weighted(0.3, 0.25f32..2.0),
        proptest::option::weighted(0.2, any::<u64>()),
    );
    (positional, values).prop_map(
        |(
            (causal, q_offset, q_offsets_seed, window, key_lengths_seed, key_starts_seed, segments),
            (mask, additive, alibi, softcap, scale_factor, sinks_seed),
        )| MaskSpec {
            causal,
            q_offset,
            q_offsets_seed,
            window,
            key_lengths_seed,
            key_starts_seed,
            segments,
            mask,
            additive,
            alibi,
            softcap,
            scale_factor,
            sinks_seed,
        },
    )
}

/// Head sizes: the powers of two that models use, odd ones, and the fused kernel's limit.
const HEAD_DIMS: [usize; 16] = [
    1, 2, 3, 5, 8, 16, 24, 31, 32, 33, 64, 80, 100, 128, 255, 256,
];

#[derive(Clone, Debug)]
struct AttentionCase {
    shape: AttentionShape,
    masks: MaskSpec,
    /// Split-K factor of the fused kernel; `None` takes the default.
    splits: Option<usize>,
    seed: u64,
}

fn attention_case() -> impl Strategy<Value = AttentionCase> {
    let shape = (
        prop_oneof![1 => Just(0usize), 8 => 1usize..=3],
        1usize..=3,
        1usize..=3,
        0usize..=9,
        prop_oneof![3 => 0usize..=20, 1 => 0usize..=140],
        proptest::sample::select(HEAD_DIMS.to_vec()),
        any::<bool>(),
    )
        .prop_map(
            |(batch, kv_heads, group, q_len, kv_len, head_dim, bshd)| AttentionShape {
                layout: if bshd { Layout::Bshd } else { Layout::Bhsd },
                ..AttentionShape::new(batch, kv_heads * group, kv_heads, q_len, kv_len, head_dim)
            },
        );
    (
        shape,
        mask_spec(),
        proptest::option::weighted(0.6, 1usize..=6),
        any::<u64>(),
    )
        .prop_map(|(shape, masks, splits, seed)| AttentionCase {
            shape,
            masks,
            splits,
            seed,
        })
}

/// Returns an upper bound of |score| in a case: |q| |k| times the scale (Cauchy-Schwarz),
/// capped by the softcap, plus the largest ALiBi bias and the largest finite mask entry.
fn score_bound(shape: &AttentionShape, params: &AttentionParams, q: &[f32], k: &[f32]) -> f64 {
    let max_norm = |values: &[f32]| {
        values
            .chunks(shape.head_dim.max(1))
            .map(|row| {
                row.iter()
                    .map(|&x| f64::from(x) * f64::from(x))
                    .sum::<f64>()
                    .sqrt()
            })
            .fold(0.0, f64::max)
    };
    let scale = params
        .scale
        .map_or(1.0 / (shape.head_dim as f64).sqrt(), f64::from);
    let mut dot = max_norm(q) * max_norm(k) * scale.abs();
    if let Some(cap) = params.softcap {
        dot = dot.min(f64::from(cap));
    }
    let alibi = params.alibi.as_ref().map_or(0.0, |alibi| {
        let slope = alibi
            .slopes()
            .expect("slopes")
            .into_iter()
            .fold(0.0, f64::max);
        let offsets = params
            .q_offsets
            .clone()
            .unwrap_or_else(|| vec![params.q_offset.unwrap_or(shape.default_q_offset())]);
        let distance = offsets
            .iter()
            .map(|&offset| {
                let first = offset;
                let last = offset + shape.q_len as i64 - 1;
                (first - (shape.kv_len as i64 - 1)).abs().max(last.abs())
            })
            .max()
            .unwrap_or(0);
        slope * distance as f64
    });
    let additive = params.additive_mask.as_ref().map_or(0.0, |mask| {
        mask.values
            .iter()
            .filter(|v| v.is_finite())
            .fold(0.0f64, |acc, &v| acc.max(f64::from(v.abs())))
    });
    dot + alibi + additive
}

fn check_attention<T: Element>(ctx: &GpuContext, case: &AttentionCase) {
    let shape = &case.shape;
    let params = case.masks.params(shape);
    let (q_len, kv_len, _) = shape.lens().expect("shape");
    let (q, q_f32) = round_trip::<T>(&random_vec(case.seed, q_len));
    let (k, k_f32) = round_trip::<T>(&random_vec(case.seed ^ 1, kv_len));
    let (v, v_f32) = round_trip::<T>(&random_vec(case.seed ^ 2, kv_len));
    let want = posenc::attention::attention_cpu(shape, &params, &q_f32, &k_f32, &v_f32)
        .expect("cpu attention");
    let name = T::DTYPE.name();
    let scores = SCORE_ROUNDING * score_bound(shape, &params, &q_f32, &k_f32);
    let f32_tolerance = Tolerance {
        abs: ATTENTION.abs + scores,
        ..ATTENTION
    };
    let out_tolerance = match T::DTYPE {
        DType::F32 => f32_tolerance,
        dtype => storage_tolerance(dtype),
    };

    let materialised =
        posenc::attention::gpu::attention(ctx, shape, &params, &q, &k, &v).expect("gpu attention");
    assert_close(
        &format!("{name} probs"),
        &materialised.probs,
        &want.probs,
        f32_tolerance,
    );
    assert_close(
        &format!("{name} out"),
        &widen(&materialised.out),
        &want.out,
        out_tolerance,
    );
    assert_close(
        &format!("{name} lse"),
        &materialised.lse,
        &want.lse,
        f32_tolerance,
    );

    let fused = posenc::attention::fused::attention(ctx, shape, &params, &q, &k, &v, case.splits)
        .expect("fused attention");
    assert!(fused.probs.is_empty(), "fused probs");
    assert_close(
        &format!("{name} fused out"),
        &widen(&fused.out),
        &want.out,
        out_tolerance,
    );
    assert_close(
        &format!("{name} fused lse"),
        &fused.lse,
        &want.lse,
        f32_tolerance,
    );
}

// ---------------------------------------------------------------------------------------
// The properties. Without an adapter each returns at once (common::gpu prints why, and
// fails instead under POSENC_REQUIRE_GPU=1).

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn sinusoidal_gpu_matches_cpu(case in sinusoidal_case()) {
        let Some(ctx) = common::gpu() else { return Ok(()) };
        check_sinusoidal::<f32>(ctx, &case);
    }

    #[test]
    fn learned_gpu_matches_cpu(case in learned_case()) {
        let Some(ctx) = common::gpu() else { return Ok(()) };
        check_learned::<f32>(ctx, &case);
    }

    #[test]
    fn rope_gpu_matches_cpu(case in rope_case()) {
        let Some(ctx) = common::gpu() else { return Ok(()) };
        check_rope::<f32>(ctx, &case);
    }

    #[test]
    fn alibi_gpu_matches_cpu(case in alibi_case()) {
        let Some(ctx) = common::gpu() else { return Ok(()) };
        check_alibi::<f32>(ctx, &case);
    }

    #[test]
    fn attention_gpu_matches_cpu(case in attention_case()) {
        let Some(ctx) = common::gpu() else { return Ok(()) };
        check_attention::<f32>(ctx, &case);
    }
}

proptest! {
    #![proptest_config(config(500))]

    #[test]
    fn half_storage_sinusoidal_matches_cpu(case in sinusoidal_case(), pick in any::<prop::sample::Index>()) {
        let Some(ctx) = common::gpu() else { return Ok(()) };
        let dtypes = half_dtypes(ctx);
        with_dtype!(dtypes[pick.index(dtypes.len())], check_sinusoidal(ctx, &case));
    }

    #[test]
    fn half_storage_learned_matches_cpu(case in learned_case(), pick in any::<prop::sample::Index>()) {
        let Some(ctx) = common::gpu() else { return Ok(()) };
        let dtypes = half_dtypes(ctx);
        with_dtype!(dtypes[pick.index(dtypes.len())], check_learned(ctx, &case));
    }

    #[test]
    fn half_storage_rope_matches_cpu(case in rope_case(), pick in any::<prop::sample::Index>()) {
        let Some(ctx) = common::gpu() else { return Ok(()) };
        let dtypes = half_dtypes(ctx);
        with_dtype!(dtypes[pick.index(dtypes.len())], check_rope(ctx, &case));
    }

    #[test]
    fn half_storage_alibi_matches_cpu(case in alibi_case(), pick in any::<prop::sample::Index>()) {
        let Some(ctx) = common::gpu() else { return Ok(()) };
        let dtypes = half_dtypes(ctx);
        with_dtype!(dtypes[pick.index(dtypes.len())], check_alibi(ctx, &case));
    }

    #[test]
    fn half_storage_attention_matches_cpu(case in attention_case(), pick in any::<prop::sample::Index>()) {
        let Some(ctx) = common::gpu() else { return Ok(()) };
        let dtypes = half_dtypes(ctx);
        with_dtype!(dtypes[pick.index(dtypes.len())], check_attention(ctx, &case));
    }
}

// ---------------------------------------------------------------------------------------
// Cases that the properties found, kept as plain tests.

#[test]
fn attention_large_softcap_one_key() {
    // Found by attention_gpu_matches_cpu: with softcap 49.7 and one key per row, the GPU's
    // lse was 3.1e-6 off a value of 0.041.
    let Some(ctx) = common::gpu() else { return };
    let case = AttentionCase {
        shape: AttentionShape::new(1, 2, 2, 6, 1, 8),
        masks: MaskSpec {
            softcap: Some(49.70984),
            ..Default::default()
        },
        splits: None,
        seed: 4536023236788564084,
    };
    check_attention::<f32>(ctx, &case);
}

#[test]
fn attention_alibi_large_biases_case() {
    // Found by attention_gpu_matches_cpu: ALiBi biases near -60 left the fused output 2.05e-6
    // off, just past the bound for scores of order 1. The f32 score keeps 2^-24 of its size,
    // so the bound now grows with the largest score (SCORE_ROUNDING).
    let Some(ctx) = common::gpu() else { return };
    let case = AttentionCase {
        shape: AttentionShape::new(1, 9, 3, 3, 113, 256),
        masks: MaskSpec {
            q_offsets_seed: Some(12222448384021456932),
            alibi: Some((8.0, false)),
            softcap: Some(37.17428),
            ..Default::default()
        },
        splits: None,
        seed: 9962013352730205768,
    };
    check_attention::<f32>(ctx, &case);
}

#[test]
fn sinusoidal_near_last_position_case() {
    // Found by sinusoidal_gpu_matches_cpu: near position 2^32 the GPU was 5.4e-7 off. Its
    // fixed-point turns came from the f64 quotient w / 2pi, which is off by up to 2^-53 of
    // itself, and the position multiplies that to 5e-7 radians.
    let Some(ctx) = common::gpu() else { return };
    let case = SinusoidalCase {
        encoding: Sinusoidal::new(80),
        batch: 2,
        seq_len: 6,
        positions: PositionSpec::Start(4294967274),
        embeddings_seed: Some(0),
    };
    check_sinusoidal::<f32>(ctx, &case);
}

#[test]
fn sinusoidal_last_position_exact_values() {
    // sin and cos of 4294967295 * w for w = 1 and w = 10000^(-1/40) (as f64), evaluated with
    // 300-bit arithmetic in mpmath 1.3.0. Both paths were up to 4.9e-7 off before the angles
    // were reduced from the exact product.
    let want = [
        0.496_677_191_753_288_2,
        -0.867_935_347_357_202_3,
        -0.254_908_329_356_015_95,
        -0.966_965_223_586_104_4,
    ];
    // One rounding to f32 plus the GPU polynomial's few ulps.
    let tolerance = Tolerance {
        abs: 2e-7,
        rel: 0.0,
    };
    for backend in common::backends() {
        let table = backend
            .sinusoidal_table(&Sinusoidal::new(80), Positions::Start(u32::MAX), 1)
            .expect("table");
        assert_close(
            backend.name(),
            &table[..4],
            &want.map(|w| w as f32),
            tolerance,
        );
    }
}
