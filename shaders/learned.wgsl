// Learned absolute position embedding: out[row, :] += table[position(row), :].
//
// One invocation per output element. Positions come from a start or from a u32 buffer the
// host could not check; a position at or past `max_positions` leaves its row unwritten and
// is counted once (by the row's column-0 invocation) in `status`.

override WORKGROUP_SIZE: u32 = 64u;

// Mirrors `LearnedUniform` in src/learned/gpu.rs.
struct Params {
    rows: u32,             // batch * seq_len
    seq_len: u32,
    dim: u32,
    max_positions: u32,    // rows in `table`
    start: u32,            // first position when use_ids == 0
    use_ids: u32,          // 1 = read positions from `ids`
    ids_batch_stride: u32, // ids per sequence, 0 when all sequences share one list
    ids_offset: u32,
    table_offset: u32,     // element offset of table row 0
    out_offset: u32,       // element offset of output row 0
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// The position table [max_positions, dim], row-major; read.
@group(0) @binding(1) var<storage, read> table: array<f32>;
// Position ids, one u32 per token; read only when params.use_ids == 1.
@group(0) @binding(2) var<storage, read> ids: array<u32>;
// Embeddings [rows, dim]; read and written in place.
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
// status[0] counts positions out of range; incremented atomically.
@group(0) @binding(4) var<storage, read_write> status: array<atomic<u32>>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let index = (workgroup.x + workgroup.y * workgroups.x) * WORKGROUP_SIZE + local;
    if index >= params.rows * params.dim {
        return;
    }
    let row = index / params.dim;
    let column = index % params.dim;
    let batch = row / params.seq_len;
    let token = row % params.seq_len;

    var position = params.start + token;
    if params.use_ids == 1u {
        position = ids[params.ids_offset + batch * params.ids_batch_stride + token];
    }
    if position >= params.max_positions {
        if column == 0u {
            atomicAdd(&status[0], 1u);
        }
        return;
    }
    out[params.out_offset + index] += table[params.table_offset + position * params.dim + column];
}
