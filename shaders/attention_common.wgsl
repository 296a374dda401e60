// Parameters, mask rules and score biases shared by the attention kernels (attention.wgsl
// and flash_attention.wgsl, each compiled with this file prepended).
//
// Visibility is a predicate, never a -inf score: WGSL lets compilers assume finite math, so
// the kernels count visible keys instead of testing for infinities.

const FLAG_CAUSAL: u32 = 1u;      // hide keys j > p
const FLAG_WINDOW: u32 = 2u;      // also hide keys j <= p - window
const FLAG_SEGMENTS: u32 = 4u;    // hide keys of another segment
const FLAG_MASK: u32 = 8u;        // hide keys whose boolean-mask bit is 0
const FLAG_ADDITIVE: u32 = 16u;   // add the additive mask; hide its -inf entries
const FLAG_ALIBI: u32 = 32u;      // add -slope[h] * (p - j)
const FLAG_SYMMETRIC: u32 = 64u;  // ALiBi uses |p - j|
const FLAG_SOFTCAP: u32 = 128u;   // s = softcap * tanh(s / softcap)
const FLAG_SINKS: u32 = 256u;     // a per-head logit joins the softmax denominator

// Mirrors `AttentionUniform` in src/attention/pack.rs.
struct Params {
    batch: u32,
    heads: u32,
    kv_heads: u32,
    group: u32,                 // query heads per KV head
    q_len: u32,
    kv_len: u32,
    head_dim: u32,
    flags: u32,
    window: u32,
    scale: f32,
    softcap: f32,
    num_splits: u32,            // key ranges per row block (split-K), flash kernel only
    q_strides: vec4<u32>,       // (batch, seq, head, offset) of Q
    kv_strides: vec4<u32>,      // (batch, seq, head, offset of K) of K and V
    off_ranges: u32,            // aux: [start, end) of valid keys per sequence
    off_q_offsets: u32,         // aux: position of query row 0 per sequence (i32 bits)
    off_q_segments: u32,        // aux: segment id per query row [batch, q_len]
    off_kv_segments: u32,       // aux: segment id per key [batch, kv_len]
    off_mask: u32,              // aux: boolean mask bits, 32 per word
    mask_batch_stride: u32,     // element strides of the boolean mask (0 = broadcast)
    mask_head_stride: u32,
    off_additive: u32,          // aux: additive mask values (f32 bits)
    off_additive_bits: u32,     // aux: additive mask visibility bits
    additive_batch_stride: u32, // element strides of the additive mask (0 = broadcast)
    additive_head_stride: u32,
    off_slopes: u32,            // aux: ALiBi slope per head (f32 bits)
    off_sinks: u32,             // aux: sink logit per head (f32 bits)
    row_base: u32,              // materialising kernel: first row of this dispatch
    probs_local: u32,           // materialising kernel: element of row_base's probabilities
    v_offset: u32,              // element offset of V; V shares K's strides
    out_strides: vec4<u32>,     // (batch, seq, head, offset) of the output
}

@group(0) @binding(0) var<uniform> params: Params;
// Per-sequence, per-head and per-element tables at the offsets above; read.
@group(0) @binding(1) var<storage, read> aux: array<u32>;

fn has(flag: u32) -> bool {
    return (params.flags & flag) != 0u;
}

fn bit_at(word_offset: u32, bit: u32) -> bool {
    return (aux[word_offset + bit / 32u] & (1u << (bit % 32u))) != 0u;
}

fn query_position(b: u32, i: u32) -> i32 {
    return bitcast<i32>(aux[params.off_q_offsets + b]) + i32(i);
}

fn key_start(b: u32) -> u32 {
    return aux[params.off_ranges + 2u * b];
}

fn key_end(b: u32) -> u32 {
    return aux[params.off_ranges + 2u * b + 1u];
}

// Whether key j is visible to query row i of head h in sequence b.
fn is_visible(b: u32, h: u32, i: u32, j: u32) -> bool {
    if j < key_start(b) || j >= key_end(b) {
        return false;
    }
    let position = query_position(b, i);
    let key = i32(j);
    if (has(FLAG_CAUSAL) || has(FLAG_WINDOW)) && key > position {
        return false;
    }
    if has(FLAG_WINDOW) && key <= position - i32(params.window) {
        return false;
    }
    if has(FLAG_SEGMENTS) && aux[params.off_q_segments + b * params.q_len + i] != aux[params.off_kv_segments + b * params.kv_len + j] {
        return false;
    }
    let plane = i * params.kv_len + j;
    if has(FLAG_MASK) && !bit_at(params.off_mask, b * params.mask_batch_stride + h * params.mask_head_stride + plane) {
        return false;
    }
    if has(FLAG_ADDITIVE) && !bit_at(params.off_additive_bits, b * params.additive_batch_stride + h * params.additive_head_stride + plane) {
        return false;
    }
    return true;
}

// tanh(x) with a small relative error near 0. Built-in tanh may be formed from exp and keep
// only an absolute error of about 1e-7 there (lavapipe and llvmpipe GL do), which a softcap
// c multiplies back up: 3e-6 in the score for c = 50. Below |x| = 0.25 the Taylor series to
// x^9 is within 1e-8 relative. tanh saturates to +-1 in f32 beyond |x| = 9.1; clamping
// keeps implementations that form tanh from exp away from inf / inf.
fn softcap_tanh(x: f32) -> f32 {
    if abs(x) < 0.25 {
        let x2 = x * x;
        return x * (1.0 + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 + x2 * (-17.0 / 315.0 + x2 * (62.0 / 2835.0)))));
    }
    return tanh(clamp(x, -10.0, 10.0));
}

// Turns a raw dot product into the score: scale, softcap, ALiBi, additive mask.
fn finish_score(dot: f32, b: u32, h: u32, i: u32, j: u32) -> f32 {
    var s = dot * params.scale;
    if has(FLAG_SOFTCAP) {
        s = params.softcap * softcap_tanh(s / params.softcap);
    }
    if has(FLAG_ALIBI) {
        var distance = f32(query_position(b, i) - i32(j));
        if has(FLAG_SYMMETRIC) {
            distance = abs(distance);
        }
        s -= bitcast<f32>(aux[params.off_slopes + h]) * distance;
    }
    if has(FLAG_ADDITIVE) {
        s += bitcast<f32>(aux[params.off_additive + b * params.additive_batch_stride + h * params.additive_head_stride + i * params.kv_len + j]);
    }
    return s;
}

fn out_index(b: u32, h: u32, i: u32) -> u32 {
    let s = params.out_strides;
    return s.w + b * s.x + i * s.y + h * s.z;
}

fn sink_logit(h: u32) -> f32 {
    return bitcast<f32>(aux[params.off_sinks + h]);
}

// Linear workgroup index on the 2-D dispatch grid.
fn linear_workgroup(workgroup: vec3<u32>, workgroups: vec3<u32>) -> u32 {
    return workgroup.x + workgroup.y * workgroups.x;
}
