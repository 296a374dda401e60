// Masked attention with materialised probabilities: P = softmax(mask(bias(cap(scale QK^T))))
// and O = P V.
//
// One workgroup per query row (batch b, head h, row i). Its invocations stride over the keys:
// pass 1 writes the scores of visible keys into the row of `probs` and finds their maximum
// and count; pass 2 exponentiates and sums; pass 3 normalises. After a storage barrier every
// invocation owns output features d = local, local + WORKGROUP_SIZE, ... and sums P[j] V[j, d]
// over all keys. Visibility is a predicate recomputed per pass, never a -inf score, because
// WGSL lets compilers assume finite math: a row with no visible key is detected by its count
// and written as zeros.

override WORKGROUP_SIZE: u32 = 64u;

// Largest workgroup the reduction arrays hold; the host never asks for more.
const MAX_WORKGROUP: u32 = 256u;

const FLAG_CAUSAL: u32 = 1u;      // hide keys j > p
const FLAG_WINDOW: u32 = 2u;      // hide keys j <= p - window (and j > p)
const FLAG_KEY_LENGTHS: u32 = 4u; // hide keys j >= key_lengths[b]
const FLAG_MASK: u32 = 8u;        // hide keys whose bit in `mask_bits` is 0
const FLAG_ALIBI: u32 = 16u;      // add -slope[h] * (p - j)
const FLAG_SYMMETRIC: u32 = 32u;  // ALiBi uses |p - j|
const FLAG_SOFTCAP: u32 = 64u;    // s = softcap * tanh(s / softcap)

// Mirrors `AttentionUniform` in src/attention/gpu.rs.
struct Params {
    batch: u32,
    heads: u32,
    group: u32,           // query heads per KV head
    q_len: u32,
    kv_len: u32,
    head_dim: u32,
    flags: u32,
    window: u32,
    q_offset: i32,        // position of query row 0
    scale: f32,
    softcap: f32,
    _pad0: u32,
    q_strides: vec4<u32>, // (batch, seq, head, offset) of Q and the output
    kv_strides: vec4<u32>,// (batch, seq, head, offset) of K and V
}

@group(0) @binding(0) var<uniform> params: Params;
// Q in the caller's layout; read.
@group(0) @binding(1) var<storage, read> q: array<f32>;
// K in the caller's layout with KV heads; read.
@group(0) @binding(2) var<storage, read> k: array<f32>;
// V, same layout as K; read.
@group(0) @binding(3) var<storage, read> v: array<f32>;
// Valid key count per sequence; read when FLAG_KEY_LENGTHS is set.
@group(0) @binding(4) var<storage, read> key_lengths: array<u32>;
// Boolean mask [q_len, kv_len] packed 32 per word, bit (i * kv_len + j); read with FLAG_MASK.
@group(0) @binding(5) var<storage, read> mask_bits: array<u32>;
// One ALiBi slope per head; read with FLAG_ALIBI.
@group(0) @binding(6) var<storage, read> slopes: array<f32>;
// Probabilities [batch, heads, q_len, kv_len]; written (and used as scratch for scores).
@group(0) @binding(7) var<storage, read_write> probs: array<f32>;
// Output, same layout as Q; written.
@group(0) @binding(8) var<storage, read_write> out: array<f32>;

var<workgroup> reduce_max: array<f32, MAX_WORKGROUP>;
var<workgroup> reduce_sum: array<f32, MAX_WORKGROUP>;
var<workgroup> reduce_count: array<u32, MAX_WORKGROUP>;

fn has(flag: u32) -> bool {
    return (params.flags & flag) != 0u;
}

fn is_visible(b: u32, i: u32, j: u32) -> bool {
    let position = params.q_offset + i32(i);
    let key = i32(j);
    if has(FLAG_KEY_LENGTHS) && j >= key_lengths[b] {
        return false;
    }
    if (has(FLAG_CAUSAL) || has(FLAG_WINDOW)) && key > position {
        return false;
    }
    if has(FLAG_WINDOW) && key <= position - i32(params.window) {
        return false;
    }
    if has(FLAG_MASK) {
        let bit = i * params.kv_len + j;
        if (mask_bits[bit / 32u] & (1u << (bit % 32u))) == 0u {
            return false;
        }
    }
    return true;
}

fn score(q_base: u32, k_base: u32, h: u32, i: u32, j: u32) -> f32 {
    var dot = 0.0;
    for (var d = 0u; d < params.head_dim; d++) {
        dot += q[q_base + d] * k[k_base + d];
    }
    var s = dot * params.scale;
    if has(FLAG_SOFTCAP) {
        // tanh saturates to +-1 in f32 beyond |x| = 9.1; clamping keeps implementations that
        // form tanh from exp away from inf / inf.
        s = params.softcap * tanh(clamp(s / params.softcap, -10.0, 10.0));
    }
    if has(FLAG_ALIBI) {
        var distance = f32(params.q_offset + i32(i) - i32(j));
        if has(FLAG_SYMMETRIC) {
            distance = abs(distance);
        }
        s -= slopes[h] * distance;
    }
    return s;
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
    let row = workgroup.x + workgroup.y * workgroups.x;
    if row >= params.batch * params.heads * params.q_len {
        return;
    }
    let i = row % params.q_len;
    let h = (row / params.q_len) % params.heads;
    let b = row / (params.q_len * params.heads);
    let kv_head = h / params.group;
    let q_base = params.q_strides.w + b * params.q_strides.x + i * params.q_strides.y + h * params.q_strides.z;
    let kv_base = params.kv_strides.w + b * params.kv_strides.x + kv_head * params.kv_strides.z;
    let probs_base = row * params.kv_len;

    // Pass 1: scores of visible keys, their maximum and count.
    var local_max = -3.4028234e38;
    var local_count = 0u;
    for (var j = local; j < params.kv_len; j += WORKGROUP_SIZE) {
        if is_visible(b, i, j) {
            let s = score(q_base, kv_base + j * params.kv_strides.y, h, i, j);
            probs[probs_base + j] = s;
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
        if is_visible(b, i, j) {
            let e = exp(probs[probs_base + j] - row_max);
            probs[probs_base + j] = e;
            local_sum += e;
        }
    }
    reduce_max[local] = 0.0;
    reduce_sum[local] = local_sum;
    reduce_count[local] = 0u;
    reduce(local);
    // The maximum's own term is exp(0) = 1, so the sum is at least 1 when any key is visible.
    let inverse_sum = select(0.0, 1.0 / reduce_sum[0], visible_count > 0u);

    // Pass 3: normalise; hidden keys get exactly 0.
    for (var j = local; j < params.kv_len; j += WORKGROUP_SIZE) {
        var p = 0.0;
        if is_visible(b, i, j) {
            p = probs[probs_base + j] * inverse_sum;
        }
        probs[probs_base + j] = p;
    }
    // Make every invocation's probabilities visible to the whole workgroup.
    storageBarrier();
    workgroupBarrier();

    // Output: O[d] = sum_j P[j] V[j, d]; hidden keys contribute 0 * V, so skip them.
    for (var d = local; d < params.head_dim; d += WORKGROUP_SIZE) {
        var acc = 0.0;
        for (var j = 0u; j < params.kv_len; j++) {
            let p = probs[probs_base + j];
            if p != 0.0 {
                acc += p * v[kv_base + j * params.kv_strides.y + d];
            }
        }
        out[q_base + d] = acc;
    }
}
