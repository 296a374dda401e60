// Rotary position embedding applied in place to Q and K, and the cos/sin tables.
//
// `apply`: one workgroup per token (batch b, index t). Its invocations first compute
// attention_factor * (cos, sin) of every rotated pair for the token's position into
// workgroup memory (exact angles, see angle.wgsl), then rotate that token's pairs in every
// Q and K head, so each angle is computed once per token instead of once per head.
// `tables`: one invocation per (token, pair) writes cos and sin in transformers' arrangement.
// Requires angle.wgsl, prepended by the host.

override WORKGROUP_SIZE: u32 = 64u;

// Pairs whose (cos, sin) fit in workgroup memory; wider heads compute per element.
const CACHED_PAIRS: u32 = 256u;

// Mirrors `RopeUniform` in src/rope/gpu.rs.
struct Params {
    tokens: u32,           // batch * seq_len
    seq_len: u32,
    half_rotary: u32,      // rotated pairs per head, rotary_dim / 2
    rotary_dim: u32,
    pairing: u32,          // 0 = half (i, i + r/2), 1 = interleaved (2i, 2i + 1)
    q_heads: u32,
    k_heads: u32,          // 0 when only Q is rotated
    attention_factor: f32, // multiplies cos and sin
    direction: f32,        // 1 rotates by +angle, -1 by -angle (the gradient)
    start: u32,            // first position when use_ids == 0
    use_ids: u32,          // 1 = read positions from `ids`
    ids_batch_stride: u32, // ids per sequence, 0 when all sequences share one list
    ids_offset: u32,
    position_limit: u32,   // positions >= limit are out of range when has_limit == 1
    has_limit: u32,
    q_offset: u32,         // element offset and strides of Q (batch, seq, head)
    q_batch_stride: u32,
    q_seq_stride: u32,
    q_head_stride: u32,
    k_offset: u32,         // element offset and strides of K (batch, seq, head)
    k_batch_stride: u32,
    k_seq_stride: u32,
    k_head_stride: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// Inverse frequencies as 64-bit fixed-point turns (high, low), one per pair; read.
@group(0) @binding(1) var<storage, read> turns: array<vec2<u32>>;
// Position ids, one u32 per token; read only when params.use_ids == 1.
@group(0) @binding(2) var<storage, read> ids: array<u32>;
// `apply`: Q, rotated in place. `tables`: the cos table [tokens, rotary_dim], written.
@group(0) @binding(3) var<storage, read_write> q: array<f32>;
// `apply`: K, rotated in place. `tables`: the sin table [tokens, rotary_dim], written.
@group(0) @binding(4) var<storage, read_write> k: array<f32>;
// status[0] counts tokens whose position is out of range; incremented atomically.
@group(0) @binding(5) var<storage, read_write> status: array<atomic<u32>>;

var<workgroup> cached: array<vec2<f32>, CACHED_PAIRS>;

fn token_position(token_index: u32) -> u32 {
    let batch = token_index / params.seq_len;
    let token = token_index % params.seq_len;
    if params.use_ids == 1u {
        return ids[params.ids_offset + batch * params.ids_batch_stride + token];
    }
    return params.start + token;
}

fn scaled_cos_sin(position: u32, pair: u32) -> vec2<f32> {
    let cs = cos_sin(position, turns[pair]) * params.attention_factor;
    return vec2<f32>(cs.x, cs.y * params.direction);
}

// Feature indices of a pair within a head.
fn pair_columns(pair: u32) -> vec2<u32> {
    if params.pairing == 1u {
        return vec2<u32>(2u * pair, 2u * pair + 1u);
    }
    return vec2<u32>(pair, pair + params.half_rotary);
}

fn rotate(x: vec2<f32>, cs: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(x.x * cs.x - x.y * cs.y, x.y * cs.x + x.x * cs.y);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn apply(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let token_index = workgroup.x + workgroup.y * workgroups.x;
    if token_index >= params.tokens {
        return;
    }
    let position = token_position(token_index);
    if params.has_limit == 1u && position >= params.position_limit {
        if local == 0u {
            atomicAdd(&status[0], 1u);
        }
        return;
    }

    let use_cache = params.half_rotary <= CACHED_PAIRS;
    if use_cache {
        for (var pair = local; pair < params.half_rotary; pair += WORKGROUP_SIZE) {
            cached[pair] = scaled_cos_sin(position, pair);
        }
    }
    workgroupBarrier();

    let batch = token_index / params.seq_len;
    let token = token_index % params.seq_len;
    let q_base = params.q_offset + batch * params.q_batch_stride + token * params.q_seq_stride;
    let k_base = params.k_offset + batch * params.k_batch_stride + token * params.k_seq_stride;
    let total = (params.q_heads + params.k_heads) * params.half_rotary;
    for (var index = local; index < total; index += WORKGROUP_SIZE) {
        let head = index / params.half_rotary;
        let pair = index % params.half_rotary;
        var cs: vec2<f32>;
        if use_cache {
            cs = cached[pair];
        } else {
            cs = scaled_cos_sin(position, pair);
        }
        let columns = pair_columns(pair);
        if head < params.q_heads {
            let a = q_base + head * params.q_head_stride + columns.x;
            let b = q_base + head * params.q_head_stride + columns.y;
            let y = rotate(vec2<f32>(q[a], q[b]), cs);
            q[a] = y.x;
            q[b] = y.y;
        } else {
            let kv_head = head - params.q_heads;
            let a = k_base + kv_head * params.k_head_stride + columns.x;
            let b = k_base + kv_head * params.k_head_stride + columns.y;
            let y = rotate(vec2<f32>(k[a], k[b]), cs);
            k[a] = y.x;
            k[b] = y.y;
        }
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn tables(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let index = (workgroup.x + workgroup.y * workgroups.x) * WORKGROUP_SIZE + local;
    if index >= params.tokens * params.half_rotary {
        return;
    }
    let token_index = index / params.half_rotary;
    let pair = index % params.half_rotary;
    let cs = scaled_cos_sin(token_position(token_index), pair);
    let columns = pair_columns(pair);
    let row = token_index * params.rotary_dim;
    q[row + columns.x] = cs.x;
    q[row + columns.y] = cs.x;
    k[row + columns.x] = cs.y;
    k[row + columns.y] = cs.y;
}
