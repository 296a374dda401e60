// Sinusoidal position encoding: writes PE[p, :] or adds it to a [rows, dim] tensor.
//
// One invocation per (row, frequency) pair writes the sine and the cosine of that frequency.
// Workgroups are laid out on a 2-D grid (see `linear_workgroup`) to stay within the
// per-dimension dispatch limit. Requires angle.wgsl, prepended by the host.

override WORKGROUP_SIZE: u32 = 64u;

// Mirrors `SinusoidalUniform` in src/sinusoidal/gpu.rs.
struct Params {
    rows: u32,             // batch * seq_len
    seq_len: u32,
    half_dim: u32,         // number of frequencies, dim / 2
    column_order: u32,          // 0 = interleaved (sin, cos pairs), 1 = concat (sines, then cosines)
    accumulate: u32,       // 0 = write the table, 1 = add it to the existing values
    start: u32,            // first position when use_ids == 0
    use_ids: u32,          // 1 = read positions from `ids`
    ids_batch_stride: u32, // ids per sequence, 0 when all sequences share one list
    ids_offset: u32,       // element offset of the first id
    out_offset: u32,       // element offset of row 0 in `out`
    row_stride: u32,       // elements from one row of `out` to the next
    row_base: u32,         // index of this dispatch's first row in the whole tensor
}

@group(0) @binding(0) var<uniform> params: Params;
// Frequencies as 64-bit fixed-point turns (high, low), one per frequency; read.
@group(0) @binding(1) var<storage, read> turns: array<vec2<u32>>;
// Position ids, one u32 per token; read only when params.use_ids == 1.
@group(0) @binding(2) var<storage, read> ids: array<u32>;
// Binding 3, `out`: rows [rows, row_stride] from params.out_offset, written or accumulated
// through load_out / store_out, which the host generates for the storage type.

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let index = (workgroup.x + workgroup.y * workgroups.x) * WORKGROUP_SIZE + local;
    if index >= params.rows * params.half_dim {
        return;
    }
    let local_row = index / params.half_dim;
    let i = index % params.half_dim;
    let row = params.row_base + local_row;
    let batch = row / params.seq_len;
    let token = row % params.seq_len;

    var position = params.start + token;
    if params.use_ids == 1u {
        position = ids[params.ids_offset + batch * params.ids_batch_stride + token];
    }
    let cs = cos_sin(position, turns[i]);

    var sin_col = 2u * i;
    var cos_col = 2u * i + 1u;
    if params.column_order == 1u {
        sin_col = i;
        cos_col = params.half_dim + i;
    }
    let base = params.out_offset + local_row * params.row_stride;
    var sin_value = cs.y;
    var cos_value = cs.x;
    if params.accumulate == 1u {
        sin_value += load_out(base + sin_col);
        cos_value += load_out(base + cos_col);
    }
    store_out(base + sin_col, sin_value);
    store_out(base + cos_col, cos_value);
}
