//! `rope` files: frequencies on the host, then cos/sin tables and rotated vectors on the CPU
//! and the GPU.

use serde::Deserialize;

use super::{
    compare_frequencies, compare_rows, positions_u32, Check, ComputePath, GoldenFile, Outcome,
    Quantity, Stop,
};
use crate::context::GpuContext;
use crate::error::{check_len, checked_product, Error, Result};
use crate::rope::{
    self, Llama3, LongRope, QkShape, RopeConfig, RopeFrequencies, RopeLayout, RopeScaling, Yarn,
};
use crate::tensor::{Layout, Positions};

/// `params` of a rope file. `partial_rotary_factor` and `softmax_scale_multiplier` describe
/// the model and are ignored: `rotary_dim` already gives the number of rotated features, and the
/// softmax multiplier does not enter cos, sin or y.
#[derive(Deserialize)]
struct Params {
    head_dim: usize,
    rotary_dim: usize,
    base: f64,
    layout: String,
    scaling: Scaling,
    max_position_embeddings: Option<u64>,
    seq_len: Option<u64>,
}

/// `params.scaling`: the type and the Hugging Face `rope_scaling` fields that it uses.
#[derive(Deserialize)]
struct Scaling {
    #[serde(rename = "type")]
    kind: String,
    factor: Option<f64>,
    original_max_position_embeddings: Option<u64>,
    beta_fast: Option<f64>,
    beta_slow: Option<f64>,
    mscale: Option<f64>,
    mscale_all_dim: Option<f64>,
    attention_factor: Option<f64>,
    truncate: Option<bool>,
    low_freq_factor: Option<f64>,
    high_freq_factor: Option<f64>,
    short_factor: Option<Vec<f64>>,
    long_factor: Option<Vec<f64>>,
}

#[derive(Deserialize)]
struct Inputs {
    positions: Vec<u64>,
    shape: Vec<usize>,
    x: Vec<f32>,
}

#[derive(Deserialize)]
struct Outputs {
    inv_freq: Vec<f64>,
    attention_scaling: f64,
    cos: Vec<f64>,
    sin: Vec<f64>,
    y: Vec<f64>,
}

/// A rope file parsed and checked against its shapes.
struct Case {
    config: RopeConfig,
    frequencies: RopeFrequencies,
    ids: Vec<u32>,
    shape: QkShape,
    x: Vec<f32>,
    outputs: Outputs,
}

/// Checks the host frequencies, then the tables and `y` on the CPU and on the GPU.
pub(super) fn verify(file: &GoldenFile, gpu: Option<&GpuContext>) -> Outcome<Vec<Check>> {
    let case = parse(file)?;
    let mut checks = vec![
        compare_frequencies(
            Quantity::InvFreq,
            &case.frequencies.inv_freq,
            &case.outputs.inv_freq,
        ),
        compare_frequencies(
            Quantity::AttentionScaling,
            &[case.frequencies.attention_factor],
            &[case.outputs.attention_scaling],
        ),
    ];
    checks.extend(check_cpu(file, &case)?);
    if let Some(ctx) = gpu {
        checks.extend(check_gpu(file, &case, ctx)?);
    }
    Ok(checks)
}

fn parse(file: &GoldenFile) -> Outcome<Case> {
    let params: Params = file.section("params", &file.params)?;
    let inputs: Inputs = file.section("inputs", &file.inputs)?;
    let outputs: Outputs = file.section("outputs", &file.outputs)?;
    let config = config(file, &params)?;
    config.validate()?;
    let ids = positions_u32(&inputs.positions)?;
    let shape = shape(&inputs, &ids, config.head_dim)?;
    check_len("inputs.x", inputs.x.len(), shape.lens()?.0)?;

    let table_len = checked_product("cos", &[ids.len(), config.rotary_dim])?;
    check_len(
        "outputs.inv_freq",
        outputs.inv_freq.len(),
        config.rotary_dim / 2,
    )?;
    check_len("outputs.cos", outputs.cos.len(), table_len)?;
    check_len("outputs.sin", outputs.sin.len(), table_len)?;
    check_len("outputs.y", outputs.y.len(), inputs.x.len())?;
    file.tolerance.check_positions(ids.len())?;

    // The format defines seq_len as max(positions) + 1, so it can be derived when absent.
    let seq_len = params.seq_len.unwrap_or_else(|| {
        inputs
            .positions
            .iter()
            .max()
            .map_or(0, |&p| p.saturating_add(1))
    });
    let frequencies = config.frequencies(seq_len)?;
    Ok(Case {
        config,
        frequencies,
        ids,
        shape,
        x: inputs.x,
        outputs,
    })
}

/// Builds the Q shape of `x` `[num_positions, num_heads, head_dim]`: one sequence of
/// `num_positions` tokens in the `Bshd` layout, rotated as Q with no K.
fn shape(inputs: &Inputs, ids: &[u32], head_dim: usize) -> Result<QkShape> {
    check_len("inputs.shape", inputs.shape.len(), 3)?;
    let [tokens, num_heads, width] = [inputs.shape[0], inputs.shape[1], inputs.shape[2]];
    if tokens != ids.len() {
        return Err(Error::shape(
            "inputs.shape[0]",
            tokens,
            format!("must equal the number of positions, {}", ids.len()),
        ));
    }
    if width != head_dim {
        return Err(Error::shape(
            "inputs.shape[2]",
            width,
            format!("must equal params.head_dim = {head_dim}"),
        ));
    }
    Ok(QkShape {
        batch: 1,
        seq_len: tokens,
        num_heads,
        num_kv_heads: 0,
        head_dim,
        layout: Layout::Bshd,
    })
}

fn config(file: &GoldenFile, params: &Params) -> Outcome<RopeConfig> {
    let layout = match params.layout.as_str() {
        "half" => RopeLayout::Half,
        "interleaved" => RopeLayout::Interleaved,
        other => {
            return Err(Stop::Unsupported(format!(
                "rope layout {other:?} is not one of half, interleaved"
            )))
        }
    };
    Ok(RopeConfig::new(params.head_dim)
        .with_rotary_dim(params.rotary_dim)
        .with_base(params.base)
        .with_layout(layout)
        .with_scaling(scaling(file, params)?))
}

/// Maps `params.scaling` to [`RopeScaling`]. Absent optional fields take transformers'
/// defaults, as the format specifies.
fn scaling(file: &GoldenFile, params: &Params) -> Outcome<RopeScaling> {
    let scaling = &params.scaling;
    let kind = scaling.kind.as_str();
    let need = |value: Option<f64>, field: &str| {
        value.ok_or_else(|| file.missing(&format!("params.scaling.{field}"), &needed_by(kind)))
    };
    Ok(match kind {
        "none" | "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: need(scaling.factor, "factor")?,
        },
        "dynamic" => RopeScaling::Dynamic {
            factor: need(scaling.factor, "factor")?,
            // transformers' dynamic NTK takes the config's max_position_embeddings as the
            // trained length.
            max_position_embeddings: max_positions(file, params)?,
        },
        "yarn" => RopeScaling::Yarn(yarn(file, params)?),
        "llama3" => RopeScaling::Llama3(Llama3 {
            factor: need(scaling.factor, "factor")?,
            low_freq_factor: need(scaling.low_freq_factor, "low_freq_factor")?,
            high_freq_factor: need(scaling.high_freq_factor, "high_freq_factor")?,
            original_max_position_embeddings: original_max_positions(file, scaling)?,
        }),
        "longrope" => RopeScaling::LongRope(long_rope(file, params)?),
        other => {
            return Err(Stop::Unsupported(format!(
                "rope scaling type {other:?} is not one of none, linear, dynamic, yarn, llama3, longrope"
            )))
        }
    })
}

fn needed_by(kind: &str) -> String {
    format!("{kind} scaling needs it")
}

fn max_positions(file: &GoldenFile, params: &Params) -> Result<u64> {
    params.max_position_embeddings.ok_or_else(|| {
        file.missing(
            "params.max_position_embeddings",
            &needed_by(&params.scaling.kind),
        )
    })
}

fn original_max_positions(file: &GoldenFile, scaling: &Scaling) -> Result<u64> {
    scaling.original_max_position_embeddings.ok_or_else(|| {
        file.missing(
            "params.scaling.original_max_position_embeddings",
            &needed_by(&scaling.kind),
        )
    })
}

/// YaRN as transformers 5.x reads it: without `original_max_position_embeddings` the trained
/// length is `max_position_embeddings`, and without `factor` the factor is
/// `max_position_embeddings / original_max_position_embeddings`.
fn yarn(file: &GoldenFile, params: &Params) -> Result<Yarn> {
    let scaling = &params.scaling;
    let original = match scaling.original_max_position_embeddings {
        Some(original) => original,
        None => max_positions(file, params)?,
    };
    let factor = match scaling.factor {
        Some(factor) => factor,
        None => max_positions(file, params)? as f64 / original as f64,
    };
    let defaults = Yarn::new(factor, original);
    Ok(Yarn {
        beta_fast: scaling.beta_fast.unwrap_or(defaults.beta_fast),
        beta_slow: scaling.beta_slow.unwrap_or(defaults.beta_slow),
        mscale: scaling.mscale,
        mscale_all_dim: scaling.mscale_all_dim,
        attention_factor: scaling.attention_factor,
        truncate: scaling.truncate.unwrap_or(defaults.truncate),
        ..defaults
    })
}

/// LongRoPE: the scale `s` is `max_position_embeddings / original_max_position_embeddings`
/// (from the top-level params and the scaling block), as in transformers' Phi-3.
fn long_rope(file: &GoldenFile, params: &Params) -> Outcome<LongRope> {
    let scaling = &params.scaling;
    let factors = |value: &Option<Vec<f64>>, field: &str| {
        value
            .clone()
            .ok_or_else(|| file.missing(&format!("params.scaling.{field}"), &needed_by("longrope")))
    };
    let long_rope = LongRope {
        short_factor: factors(&scaling.short_factor, "short_factor")?,
        long_factor: factors(&scaling.long_factor, "long_factor")?,
        original_max_position_embeddings: original_max_positions(file, scaling)?,
        max_position_embeddings: max_positions(file, params)?,
        attention_factor: scaling.attention_factor,
    };
    if let Some(factor) = scaling.factor {
        // posenc derives s from the two lengths, so it cannot express a different factor.
        if (factor - long_rope.scale()).abs() > 1e-12 * factor.abs() {
            return Err(Stop::Unsupported(format!(
                "longrope factor {factor} differs from max_position_embeddings / original_max_position_embeddings = {}",
                long_rope.scale()
            )));
        }
    }
    Ok(long_rope)
}

/// Checks `cos`, `sin` and `y` computed by the CPU reference.
fn check_cpu(file: &GoldenFile, case: &Case) -> Result<Vec<Check>> {
    let positions = Positions::Ids(&case.ids);
    let tables = rope::tables_cpu(&case.config, &case.frequencies, positions, case.ids.len())?;
    let mut y = case.x.clone();
    let mut no_k = Vec::new();
    rope::apply_cpu(
        &case.config,
        &case.frequencies,
        &case.shape,
        positions,
        &mut y,
        &mut no_k,
    )?;
    Ok(compare_outputs(
        file,
        case,
        ComputePath::Cpu,
        &tables.cos,
        &tables.sin,
        &y,
    ))
}

/// Checks `cos`, `sin` and `y` computed by the compute shaders.
fn check_gpu(file: &GoldenFile, case: &Case, ctx: &GpuContext) -> Result<Vec<Check>> {
    let positions = Positions::Ids(&case.ids);
    let tables = rope::gpu::tables(
        ctx,
        &case.config,
        &case.frequencies,
        positions,
        case.ids.len(),
    )?;
    let (y, _) = rope::gpu::apply(
        ctx,
        &case.config,
        &case.frequencies,
        &case.shape,
        positions,
        &case.x,
        &[],
    )?;
    Ok(compare_outputs(
        file,
        case,
        ComputePath::Gpu,
        &tables.cos,
        &tables.sin,
        &y,
    ))
}

fn compare_outputs(
    file: &GoldenFile,
    case: &Case,
    path: ComputePath,
    cos: &[f32],
    sin: &[f32],
    y: &[f32],
) -> Vec<Check> {
    let tolerance = &file.tolerance;
    let rotary_dim = case.config.rotary_dim;
    // Saturating: a file without positions may claim any head count and size, since no
    // row of `y` then exists to check the claim against.
    let y_row = case.shape.num_heads.saturating_mul(case.shape.head_dim);
    let expected = &case.outputs;
    vec![
        compare_rows(
            path,
            Quantity::Cos,
            cos,
            &expected.cos,
            rotary_dim,
            tolerance,
        ),
        compare_rows(
            path,
            Quantity::Sin,
            sin,
            &expected.sin,
            rotary_dim,
            tolerance,
        ),
        compare_rows(path, Quantity::Y, y, &expected.y, y_row, tolerance),
    ]
}
