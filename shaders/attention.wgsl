// Attention with materialised probabilities, for inspection and pictures:
// P = softmax(masked, biased, capped scale * Q K^T) and O = P V, plus the log-sum-exp.
//
// One workgroup per query row (batch b, head h, row i). Its invocations stride over the keys:
// pass 1 writes the scores of visible keys into the row of `probs` and finds their maximum
// and count; pass 2 exponentiates and sums; pass 3 normalises and zeroes hidden keys. After a
// storage barrier each invocation owns output features d = local, local + WORKGROUP_SIZE, ...
// Requires attention_common.wgsl, prepended by the host.

override WORKGROUP_SIZE: u32 = 64u;

// True when `probs` has a narrower storage type than f32: the scores are then recomputed in
// passes 2 and 3 instead of being kept in `probs`, so only final probabilities are rounded.
override RECOMPUTE_SCORES: bool = false;

// Largest workgroup the reduction arrays hold; the host never asks for more.
const MAX_WORKGROUP: u32 = 256u;

// Tensors, accessed through load_NAME / store_NAME that the host generates for their
// storage types: binding 2 `q` (the caller's layout, read), 3 `k` (KV heads, read), 4 `v`
// (same layout and offset as K, read), 5 `probs` ([batch, heads, q_len, kv_len], written;
// scores are kept there in between), 6 `out` (same layout and offset as Q, written).
// Log-sum-exp per row [batch, heads, q_len]; written.
@group(0) @binding(7) var<storage, read_write> lse: array<f32>;

var<workgroup> reduce_max: array<f32, MAX_WORKGROUP>;
var<workgroup> reduce_sum: array<f32, MAX_WORKGROUP>;
var<workgroup> reduce_count: array<u32, MAX_WORKGROUP>;

fn dot_row(q_base: u32, k_base: u32) -> f32 {
    var dot = 0.0;
    for (var d = 0u; d < params.head_dim; d++) {
        dot += load_q(q_base + d) * load_k(k_base + d);
    }
    return dot;
}

// The score of key j: kept in `probs` by pass 1, or recomputed.
fn score_at(probs_base: u32, q_base: u32, kv_base: u32, b: u32, h: u32, i: u32, j: u32) -> f32 {
    if RECOMPUTE_SCORES {
        return finish_score(dot_row(q_base, kv_base + j * params.kv_strides.y), b, h, i, j);
    }
    return load_probs(probs_base + j);
}

// Tree reduction over the workgroup: max and sum of floats, sum of counts.
fn reduce(local: u32) {
    for (var stride = WORKGROUP_SIZE / 2u; stride > 0u; stride /= 2u) {
        workgroupBarrier();
        if local < stride {
            reduce_max[local] = max(reduce_max[local], reduce_max[local + stride]);
            reduce_sum[local] += reduce_sum[local + stride];
            reduce_count[local] += reduce_count[local + stride];
        }
    }
    workgroupBarrier();
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let row = params.row_base + linear_workgroup(workgroup, workgroups);
    if row >= params.batch * params.heads * params.q_len {
        return;
    }
    let i = row % params.q_len;
    let h = (row / params.q_len) % params.heads;
    let b = row / (params.q_len * params.heads);
    let kv_head = h / params.group;
    let q_base = params.q_strides.w + b * params.q_strides.x + i * params.q_strides.y + h * params.q_strides.z;
    let kv_base = params.kv_strides.w + b * params.kv_strides.x + kv_head * params.kv_strides.z;
    let v_base = params.v_offset + b * params.kv_strides.x + kv_head * params.kv_strides.z;
    let out_base = out_index(b, h, i);
    let probs_base = params.probs_local + (row - params.row_base) * params.kv_len;

    // Pass 1: scores of visible keys, their maximum and count. The sink joins the maximum.
    var local_max = -3.4028234e38;
    if has(FLAG_SINKS) {
        local_max = sink_logit(h);
    }
    var local_count = 0u;
    for (var j = local; j < params.kv_len; j += WORKGROUP_SIZE) {
        if is_visible(b, h, i, j) {
            let s = finish_score(dot_row(q_base, kv_base + j * params.kv_strides.y), b, h, i, j);
            if !RECOMPUTE_SCORES {
                store_probs(probs_base + j, s);
            }
            local_max = max(local_max, s);
            local_count += 1u;
        }
    }
    reduce_max[local] = local_max;
    reduce_sum[local] = 0.0;
    reduce_count[local] = local_count;
    reduce(local);
    let row_max = reduce_max[0];
    let visible_count = reduce_count[0];
    // Every invocation must read the results before any overwrites slot 0 below.
    workgroupBarrier();

    // Pass 2: exponentials and their sum.
    var local_sum = 0.0;
    for (var j = local; j < params.kv_len; j += WORKGROUP_SIZE) {
        if is_visible(b, h, i, j) {
            let e = exp(score_at(probs_base, q_base, kv_base, b, h, i, j) - row_max);
            if !RECOMPUTE_SCORES {
                store_probs(probs_base + j, e);
            }
            local_sum += e;
        }
    }
    reduce_max[local] = 0.0;
    reduce_sum[local] = local_sum;
    reduce_count[local] = 0u;
    reduce(local);
    var denominator = reduce_sum[0];
    if has(FLAG_SINKS) {
        denominator += exp(sink_logit(h) - row_max);
    }
    // The row maximum contributes exp(0) = 1, so the denominator is at least 1 whenever a
    // key is visible or a sink is set.
    let any_term = visible_count > 0u || has(FLAG_SINKS);
    let inverse = select(0.0, 1.0 / denominator, any_term);
    if local == 0u {
        lse[row] = select(-3.4028234e38, row_max + log(denominator), any_term);
    }

    // Pass 3: normalise; hidden keys get exactly 0.
    for (var j = local; j < params.kv_len; j += WORKGROUP_SIZE) {
        var p = 0.0;
        if is_visible(b, h, i, j) {
            if RECOMPUTE_SCORES {
                p = exp(score_at(probs_base, q_base, kv_base, b, h, i, j) - row_max) * inverse;
            } else {
                p = load_probs(probs_base + j) * inverse;
            }
        }
        store_probs(probs_base + j, p);
    }
    // Make every invocation's probabilities visible to the whole workgroup.
    storageBarrier();
    workgroupBarrier();

    // Output: O[d] = sum_j P[j] V[j, d]. Hidden keys have P = 0 and are skipped, so
    // non-finite values in hidden rows of V cannot reach the output.
    for (var d = local; d < params.head_dim; d += WORKGROUP_SIZE) {
        var acc = 0.0;
        for (var j = 0u; j < params.kv_len; j++) {
            let p = load_probs(probs_base + j);
            if p != 0.0 {
                acc += p * load_v(v_base + j * params.kv_strides.y + d);
            }
        }
        store_out(out_base + d, acc);
    }
}
