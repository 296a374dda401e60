//! `attention` files: probabilities, output and fully masked rows on the CPU and the GPU.

use serde::Deserialize;

use super::{compare_elements, Check, ComputePath, GoldenFile, Outcome, Quantity, Stop};
use crate::alibi::Alibi;
use crate::attention::{self, AttentionOutput, AttentionParams, AttentionShape};
use crate::context::GpuContext;
use crate::error::{check_len, Error, Result};

/// Largest relative difference between the file's ALiBi slopes and [`Alibi::slopes`] that
/// still counts as the standard slopes. The file's slopes are f64 (or exact powers of two),
/// so any real difference is far larger.
const SLOPES_REL_TOLERANCE: f64 = 1e-7;

/// `params` of an attention file. `gqa_mapping` is a description and is ignored.
#[derive(Deserialize)]
struct Params {
    batch: usize,
    num_heads: usize,
    num_kv_heads: usize,
    q_len: usize,
    kv_len: usize,
    head_dim: usize,
    scale: Option<f64>,
    causal: bool,
    causal_alignment: String,
    window: Option<usize>,
    alibi_slopes: Option<Vec<f64>>,
    key_lengths: Option<Vec<usize>>,
    softcap: Option<f64>,
}

#[derive(Deserialize)]
struct Inputs {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

#[derive(Deserialize)]
struct Outputs {
    probs: Vec<f64>,
    out: Vec<f64>,
    #[serde(default)]
    fully_masked_rows: Option<Vec<Vec<usize>>>,
}

/// An attention file parsed and checked against its shapes.
struct Case {
    shape: AttentionShape,
    params: AttentionParams,
    inputs: Inputs,
    outputs: Outputs,
    /// Per `(batch, query row)`: whether the file lists the row as fully masked.
    masked: Option<Vec<bool>>,
}

/// Computes attention on each path and compares `probs`, `out` and the fully masked rows.
pub(super) fn verify(file: &GoldenFile, gpu: Option<&GpuContext>) -> Outcome<Vec<Check>> {
    let case = parse(file)?;
    let cpu = attention::attention_cpu(
        &case.shape,
        &case.params,
        &case.inputs.q,
        &case.inputs.k,
        &case.inputs.v,
    )?;
    let mut checks = compare_outputs(file, &case, ComputePath::Cpu, &cpu);
    if let Some(ctx) = gpu {
        let output = attention::gpu::attention(
            ctx,
            &case.shape,
            &case.params,
            &case.inputs.q,
            &case.inputs.k,
            &case.inputs.v,
        )?;
        checks.extend(compare_outputs(file, &case, ComputePath::Gpu, &output));
    }
    Ok(checks)
}

fn parse(file: &GoldenFile) -> Outcome<Case> {
    let params: Params = file.section("params", &file.params)?;
    let inputs: Inputs = file.section("inputs", &file.inputs)?;
    let outputs: Outputs = file.section("outputs", &file.outputs)?;
    let shape = AttentionShape::new(
        params.batch,
        params.num_heads,
        params.num_kv_heads,
        params.q_len,
        params.kv_len,
        params.head_dim,
    );
    shape.validate()?;
    if shape.batch == 0 {
        // With batch 0 every length is 0, so no input length bounds q_len or kv_len.
        return Err(Error::shape("params.batch", 0, "batch must be at least 1").into());
    }
    let (q_len, kv_len, probs_len) = shape.lens()?;
    check_len("inputs.q", inputs.q.len(), q_len)?;
    check_len("inputs.k", inputs.k.len(), kv_len)?;
    check_len("inputs.v", inputs.v.len(), kv_len)?;
    check_len("outputs.probs", outputs.probs.len(), probs_len)?;
    check_len("outputs.out", outputs.out.len(), q_len)?;

    let masked = match &outputs.fully_masked_rows {
        Some(rows) => Some(masked_rows(rows, &shape)?),
        None => None,
    };
    Ok(Case {
        params: attention_params(&params)?,
        shape,
        inputs,
        outputs,
        masked,
    })
}

/// Maps the file's masks and biases to [`AttentionParams`].
fn attention_params(params: &Params) -> Outcome<AttentionParams> {
    // The format's only alignment is bottom-right (query row i at position
    // i + kv_len - q_len), which is posenc's default q_offset.
    if params.causal_alignment != "bottom_right" {
        return Err(Stop::Unsupported(format!(
            "causal_alignment {:?} is not bottom_right",
            params.causal_alignment
        )));
    }
    let alibi = match &params.alibi_slopes {
        Some(slopes) => Some(standard_alibi(slopes, params.num_heads)?),
        None => None,
    };
    Ok(AttentionParams {
        scale: params.scale.map(|scale| scale as f32),
        softcap: params.softcap.map(|softcap| softcap as f32),
        causal: params.causal,
        q_offset: None,
        window: params.window,
        key_lengths: params.key_lengths.clone(),
        alibi,
        ..AttentionParams::default()
    })
}

/// posenc's attention takes ALiBi as a head count and computes the standard slopes, so a file
/// with other slopes cannot be reproduced.
fn standard_alibi(slopes: &[f64], num_heads: usize) -> Outcome<Alibi> {
    check_len("params.alibi_slopes", slopes.len(), num_heads)?;
    let alibi = Alibi::new(num_heads);
    let standard = alibi.slopes()?;
    let differs = slopes
        .iter()
        .zip(&standard)
        .position(|(&got, &want)| (got - want).abs() > SLOPES_REL_TOLERANCE * want.abs());
    if let Some(head) = differs {
        return Err(Stop::Unsupported(format!(
            "alibi_slopes[{head}] = {} is not the standard ALiBi slope {} for {num_heads} heads",
            slopes[head], standard[head]
        )));
    }
    Ok(alibi)
}

/// Turns the file's `[batch, query_row]` pairs into one flag per `(batch, query row)`.
fn masked_rows(rows: &[Vec<usize>], shape: &AttentionShape) -> Result<Vec<bool>> {
    let mut masked = vec![false; shape.batch * shape.q_len];
    for row in rows {
        check_len("outputs.fully_masked_rows[..]", row.len(), 2)?;
        let (b, i) = (row[0], row[1]);
        if b >= shape.batch || i >= shape.q_len {
            return Err(Error::shape(
                "outputs.fully_masked_rows",
                if b >= shape.batch { b } else { i },
                format!(
                    "[{b}, {i}] is outside [batch, q_len] = [{}, {}]",
                    shape.batch, shape.q_len
                ),
            ));
        }
        masked[b * shape.q_len + i] = true;
    }
    Ok(masked)
}

fn compare_outputs(
    file: &GoldenFile,
    case: &Case,
    path: ComputePath,
    output: &AttentionOutput,
) -> Vec<Check> {
    let tolerance = &file.tolerance;
    let mut checks = vec![
        compare_elements(
            path,
            Quantity::Probs,
            &output.probs,
            &case.outputs.probs,
            tolerance,
        ),
        compare_elements(
            path,
            Quantity::Out,
            &output.out,
            &case.outputs.out,
            tolerance,
        ),
    ];
    if let Some(masked) = &case.masked {
        checks.push(compare_masked(path, &case.shape, masked, &output.probs));
    }
    checks
}

/// Counts the `(batch, head, query row)` rows whose probabilities are all zero where the file
/// lists the row as fully masked, or not all zero where it does not.
fn compare_masked(
    path: ComputePath,
    shape: &AttentionShape,
    masked: &[bool],
    probs: &[f32],
) -> Check {
    let mut mismatches = 0usize;
    let mut first_mismatch = 0usize;
    // kv_len == 0 leaves no probabilities, and every row is then fully masked.
    let rows = shape.batch * shape.num_heads * shape.q_len;
    for row in 0..rows {
        let (b, i) = (row / (shape.num_heads * shape.q_len), row % shape.q_len);
        let values = probs.get(row * shape.kv_len..(row + 1) * shape.kv_len);
        let all_zero = values.is_some_and(|values| values.iter().all(|&p| p == 0.0));
        if all_zero != masked[b * shape.q_len + i] {
            if mismatches == 0 {
                first_mismatch = row;
            }
            mismatches += 1;
        }
    }
    Check {
        path,
        quantity: Quantity::FullyMaskedRows,
        max_abs_error: mismatches as f64,
        bound: 0.0,
        worst_index: first_mismatch,
        worst_ratio: if mismatches == 0 { 0.0 } else { f64::INFINITY },
        passed: mismatches == 0,
    }
}
