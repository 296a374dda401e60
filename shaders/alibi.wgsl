// ALiBi bias tensor [heads, q_len, kv_len]: bias = -slope[h] * (p - j), or * |p - j|.
//
// One invocation per element. Query row i has position q_offset + i, key j has position j.
// The distance is formed in i32 and converted once, so it is exact below 2^24.

override WORKGROUP_SIZE: u32 = 64u;

// Mirrors `AlibiUniform` in src/alibi/gpu.rs.
struct Params {
    heads: u32,
    q_len: u32,
    kv_len: u32,
    q_offset: i32,
    symmetric: u32,   // 1 = -slope * |p - j|
    accumulate: u32,  // 1 = add to the existing values
    out_offset: u32,  // element offset of element [0, 0, 0]
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// One slope per head; read.
@group(0) @binding(1) var<storage, read> slopes: array<f32>;
// The bias [heads, q_len, kv_len] from params.out_offset; written or accumulated.
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let index = (workgroup.x + workgroup.y * workgroups.x) * WORKGROUP_SIZE + local;
    let per_head = params.q_len * params.kv_len;
    if index >= params.heads * per_head {
        return;
    }
    let head = index / per_head;
    let i = (index % per_head) / params.kv_len;
    let j = index % params.kv_len;

    var distance = f32(params.q_offset + i32(i) - i32(j));
    if params.symmetric == 1u {
        distance = abs(distance);
    }
    let value = -slopes[head] * distance;
    if params.accumulate == 1u {
        out[params.out_offset + index] += value;
    } else {
        out[params.out_offset + index] = value;
    }
}
