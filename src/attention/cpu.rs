//! CPU reference of attention: every sum in f64.

use crate::alibi;
use crate::attention::{
    check_inputs, mask_index, resolve, visible, AttentionOutput, AttentionParams, AttentionShape,
    Resolved, NO_KEY_LSE,
};
use crate::error::Result;

/// The score of one visible (row, key) pair: scale, softcap, ALiBi, additive mask.
#[allow(clippy::too_many_arguments)]
fn score(
    params: &AttentionParams,
    resolved: &Resolved,
    shape: &AttentionShape,
    q_row: &[f32],
    k_row: &[f32],
    b: usize,
    h: usize,
    i: usize,
    j: usize,
) -> f64 {
    let dot: f64 = q_row
        .iter()
        .zip(k_row)
        .map(|(&a, &b)| f64::from(a) * f64::from(b))
        .sum();
    let mut s = dot * resolved.scale;
    if let Some(cap) = params.softcap {
        let cap = f64::from(cap);
        s = cap * (s / cap).tanh();
    }
    if let (Some(slopes), Some(alibi)) = (&resolved.slopes, &params.alibi) {
        s += alibi::bias(
            slopes[h],
            alibi.bias,
            resolved.q_offsets[b] + i as i64,
            j as i64,
        );
    }
    if let Some(mask) = &params.additive_mask {
        s += f64::from(mask.values[mask_index(mask.batch, mask.heads, shape, b, h, i, j)]);
    }
    s
}

/// Computes attention on the CPU, every sum in f64, returning probabilities, output and
/// log-sum-exp.
///
/// # Errors
/// [`crate::Error::InvalidShape`] / [`crate::Error::InvalidParameter`] /
/// [`crate::Error::LengthMismatch`] naming the first invalid shape, parameter or input.
pub fn attention_cpu(
    shape: &AttentionShape,
    params: &AttentionParams,
    q: &[f32],
    k: &[f32],
    v: &[f32],
) -> Result<AttentionOutput> {
    let resolved = resolve(shape, params)?;
    check_inputs(shape, q.len(), k.len(), v.len())?;
    let (q_total, _, probs_total) = shape.lens()?;
    let mut output = AttentionOutput {
        probs: vec![0.0; probs_total],
        out: vec![0.0; q_total],
        lse: vec![NO_KEY_LSE; shape.batch * shape.num_heads * shape.q_len],
    };
    if q_total == 0 {
        // No query rows: the per-sequence tables of `resolved` are empty, and looping over
        // a huge batch of empty sequences would only take time.
        return Ok(output);
    }
    for b in 0..shape.batch {
        for h in 0..shape.num_heads {
            for i in 0..shape.q_len {
                row(params, &resolved, shape, (b, h, i), (q, k, v), &mut output);
            }
        }
    }
    Ok(output)
}

type Inputs<'a> = (&'a [f32], &'a [f32], &'a [f32]);

/// Returns the larger of `a` and `b`, or NaN when either is NaN. `f64::max` drops NaN, which would
/// turn a row of NaN scores into a row without visible keys (zeros) instead of a NaN row.
fn max_keeping_nan(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// Computes one query row into `output`.
fn row(
    params: &AttentionParams,
    resolved: &Resolved,
    shape: &AttentionShape,
    (b, h, i): (usize, usize, usize),
    (q, k, v): Inputs<'_>,
    output: &mut AttentionOutput,
) {
    let kv_head = h / (shape.num_heads / shape.num_kv_heads);
    let q_strides = shape
        .layout
        .strides(shape.q_len, shape.num_heads, shape.head_dim);
    let kv_strides = shape
        .layout
        .strides(shape.kv_len, shape.num_kv_heads, shape.head_dim);
    let q_start = b * q_strides[0] + i * q_strides[1] + h * q_strides[2];
    let kv_row = |j: usize| b * kv_strides[0] + j * kv_strides[1] + kv_head * kv_strides[2];
    let q_row = &q[q_start..][..shape.head_dim];

    let scores: Vec<Option<f64>> = (0..shape.kv_len)
        .map(|j| {
            visible(params, resolved, shape, b, h, i, j).then(|| {
                score(
                    params,
                    resolved,
                    shape,
                    q_row,
                    &k[kv_row(j)..][..shape.head_dim],
                    b,
                    h,
                    i,
                    j,
                )
            })
        })
        .collect();
    let sink = params.sinks.as_ref().map(|sinks| f64::from(sinks[h]));
    let max = scores
        .iter()
        .flatten()
        .chain(sink.iter())
        .copied()
        .fold(f64::NEG_INFINITY, max_keeping_nan);
    if max == f64::NEG_INFINITY {
        // No visible key and no sink: probabilities, output and lse keep their defaults.
        return;
    }

    let denominator: f64 = scores
        .iter()
        .flatten()
        .chain(sink.iter())
        .map(|s| (s - max).exp())
        .sum();
    let row_index = (b * shape.num_heads + h) * shape.q_len + i;
    output.lse[row_index] = (max + denominator.ln()) as f32;
    let probs_row = &mut output.probs[row_index * shape.kv_len..][..shape.kv_len];
    let mut acc = vec![0.0f64; shape.head_dim];
    for (j, (score, p_out)) in scores.iter().zip(probs_row.iter_mut()).enumerate() {
        let Some(s) = score else { continue };
        let p = (s - max).exp() / denominator;
        *p_out = p as f32;
        for (a, &x) in acc.iter_mut().zip(&v[kv_row(j)..][..shape.head_dim]) {
            *a += p * f64::from(x);
        }
    }
    for (o, a) in output.out[q_start..][..shape.head_dim].iter_mut().zip(acc) {
        *o = a as f32;
    }
}
