// Fused attention in one pass (FlashAttention-2 style forward, Dao 2023): tiles of keys
// stream through workgroup memory with an online softmax, so the [q_len, kv_len] score
// matrix is never written. Outputs O and the log-sum-exp per row.
//
// Work mapping: a workgroup owns BLOCK_ROWS query rows of one (sequence, KV head). The rows
// of a block enumerate (query head in the KV head's group, query index), so with GQA/MQA the
// heads that share K and V also share every K/V tile read. Key tiles have BLOCK_KEYS keys,
// one per invocation for the score phase; features are staged CHUNK at a time so workgroup
// memory stays under WebGPU's 16 KiB minimum. With num_splits > 1 (split-K, for decoding a
// few rows over a long cache), each workgroup covers a slice of the key tiles and writes its
// unnormalised partial state; the `merge` entry point combines the slices.
// Requires attention_common.wgsl, prepended by the host.

const BLOCK_ROWS: u32 = 8u;
const BLOCK_KEYS: u32 = 64u;            // also the workgroup size
const CHUNK: u32 = 32u;                 // features of Q, K or V staged at a time
const MAX_HEAD_DIM: u32 = 256u;
const COLUMNS: u32 = 32u;               // output features per invocation, MAX_HEAD_DIM / 8
const LOWEST: f32 = -3.4028234e38;      // finite stand-in for -inf

// Tensors, accessed through load_NAME / store_NAME that the host generates for their
// storage type: binding 2 `q` (the caller's layout, read), 3 `k` (KV heads, read), 4 `v`
// (same layout and offset as K, read), 5 `out` (same layout and offset as Q, written).
// Log-sum-exp per row [batch, heads, q_len]; written.
@group(0) @binding(6) var<storage, read_write> lse: array<f32>;
// Split-K partial states [rows, num_splits, head_dim + 2] = (max, sum, unnormalised O);
// written by `main` and read by `merge` when num_splits > 1.
@group(0) @binding(7) var<storage, read_write> partials: array<f32>;

var<workgroup> q_chunk: array<f32, 256>;        // [BLOCK_ROWS, CHUNK]
var<workgroup> kv_chunk: array<f32, 2048>;      // [BLOCK_KEYS, CHUNK], K then V
var<workgroup> p_tile: array<f32, 512>;         // [BLOCK_ROWS, BLOCK_KEYS] scores, then P
var<workgroup> visible_bits: array<u32, 64>;    // bit r: key visible to row r
var<workgroup> row_max: array<f32, 8>;
var<workgroup> row_sum: array<f32, 8>;
var<workgroup> row_alpha: array<f32, 8>;        // rescale factor of this tile
var<workgroup> row_any: array<u32, 8>;          // 1 once a visible key was seen

struct Block {
    b: u32,
    kv_head: u32,
    first_row: u32,  // first row of the block in the (group, query) enumeration
    rows: u32,       // group * q_len
    split: u32,
}

fn block_of(index: u32) -> Block {
    let blocks = (params.group * params.q_len + BLOCK_ROWS - 1u) / BLOCK_ROWS;
    let split = index % params.num_splits;
    let rest = index / params.num_splits;
    let pair = rest / blocks;
    return Block(pair / params.kv_heads, pair % params.kv_heads, (rest % blocks) * BLOCK_ROWS, params.group * params.q_len, split);
}

fn row_head(block: Block, r: u32) -> u32 {
    return block.kv_head * params.group + (block.first_row + r) / params.q_len;
}

fn row_query(block: Block, r: u32) -> u32 {
    return (block.first_row + r) % params.q_len;
}

fn q_index(block: Block, r: u32) -> u32 {
    let s = params.q_strides;
    return s.w + block.b * s.x + row_query(block, r) * s.y + row_head(block, r) * s.z;
}

// The keys [x, y) that any row of the block may see, before per-row masks.
fn key_bounds(block: Block) -> vec2<u32> {
    var lo = key_start(block.b);
    var hi = key_end(block.b);
    if has(FLAG_CAUSAL) || has(FLAG_WINDOW) {
        var first = params.q_len;
        var last = 0u;
        for (var r = 0u; r < BLOCK_ROWS; r++) {
            if block.first_row + r < block.rows {
                first = min(first, row_query(block, r));
                last = max(last, row_query(block, r));
            }
        }
        hi = min(hi, u32(max(query_position(block.b, last) + 1, 0)));
        if has(FLAG_WINDOW) {
            lo = max(lo, u32(max(query_position(block.b, first) - i32(params.window) + 1, 0)));
        }
    }
    return vec2<u32>(lo, max(lo, hi));
}

// Stages features [feature0, feature0 + CHUNK) of BLOCK_KEYS rows of K or V, zero past the end.
fn stage_keys(from_v: bool, block: Block, tile_start: u32, end: u32, feature0: u32, local: u32) {
    let first = select(params.kv_strides.w, params.v_offset, from_v);
    let base = first + block.b * params.kv_strides.x + block.kv_head * params.kv_strides.z;
    for (var e = local; e < BLOCK_KEYS * CHUNK; e += BLOCK_KEYS) {
        let key = tile_start + e / CHUNK;
        let feature = feature0 + e % CHUNK;
        var value = 0.0;
        if key < end && feature < params.head_dim {
            let index = base + key * params.kv_strides.y + feature;
            if from_v {
                value = load_v(index);
            } else {
                value = load_k(index);
            }
        }
        kv_chunk[e] = value;
    }
}

fn stage_queries(block: Block, feature0: u32, local: u32) {
    for (var e = local; e < BLOCK_ROWS * CHUNK; e += BLOCK_KEYS) {
        let r = e / CHUNK;
        let feature = feature0 + e % CHUNK;
        var value = 0.0;
        if block.first_row + r < block.rows && feature < params.head_dim {
            value = load_q(q_index(block, r) + feature);
        }
        q_chunk[e] = value;
    }
}

// One row's online-softmax update over the current tile (run by invocation r).
fn update_row(r: u32) {
    var tile_max = LOWEST;
    var count = 0u;
    for (var key = 0u; key < BLOCK_KEYS; key++) {
        if (visible_bits[key] & (1u << r)) != 0u {
            tile_max = max(tile_max, p_tile[r * BLOCK_KEYS + key]);
            count += 1u;
        }
    }
    if count == 0u {
        for (var key = 0u; key < BLOCK_KEYS; key++) {
            p_tile[r * BLOCK_KEYS + key] = 0.0;
        }
        row_alpha[r] = 1.0;
        return;
    }
    var new_max = tile_max;
    var alpha = 0.0;
    if row_any[r] == 1u {
        new_max = max(row_max[r], tile_max);
        alpha = exp(row_max[r] - new_max);
    }
    var sum = 0.0;
    for (var key = 0u; key < BLOCK_KEYS; key++) {
        var p = 0.0;
        if (visible_bits[key] & (1u << r)) != 0u {
            p = exp(p_tile[r * BLOCK_KEYS + key] - new_max);
        }
        p_tile[r * BLOCK_KEYS + key] = p;
        sum += p;
    }
    row_max[r] = new_max;
    row_sum[r] = row_sum[r] * alpha + sum;
    row_alpha[r] = alpha;
    row_any[r] = 1u;
}

// Joins the sink (if any) and returns (factor for the unnormalised O, log-sum-exp).
fn normalisation(h: u32, maximum: f32, sum: f32, any: bool) -> vec2<f32> {
    if has(FLAG_SINKS) {
        let sink = sink_logit(h);
        var joined = sink;
        var kept = 0.0;
        if any {
            joined = max(maximum, sink);
            kept = exp(maximum - joined);
        }
        let total = sum * kept + exp(sink - joined);
        return vec2<f32>(kept / total, joined + log(total));
    }
    if any {
        return vec2<f32>(1.0 / sum, maximum + log(sum));
    }
    return vec2<f32>(0.0, LOWEST);
}

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let blocks = (params.group * params.q_len + BLOCK_ROWS - 1u) / BLOCK_ROWS;
    let index = linear_workgroup(workgroup, workgroups);
    if index >= params.batch * params.kv_heads * blocks * params.num_splits {
        return;
    }
    let block = block_of(index);
    let bounds = key_bounds(block);
    let tiles = (bounds.y - bounds.x + BLOCK_KEYS - 1u) / BLOCK_KEYS;
    let tiles_per_split = (tiles + params.num_splits - 1u) / params.num_splits;
    let first_tile = min(block.split * tiles_per_split, tiles);
    let last_tile = min(first_tile + tiles_per_split, tiles);

    if local < BLOCK_ROWS {
        row_max[local] = LOWEST;
        row_sum[local] = 0.0;
        row_any[local] = 0u;
    }
    var acc: array<f32, COLUMNS>;
    let my_row = local / 8u;
    let my_column = local % 8u;

    for (var tile = first_tile; tile < last_tile; tile++) {
        let tile_start = bounds.x + tile * BLOCK_KEYS;
        let key = tile_start + local;

        // Scores: this invocation's key against every row of the block.
        var dots: array<f32, BLOCK_ROWS>;
        for (var feature0 = 0u; feature0 < params.head_dim; feature0 += CHUNK) {
            stage_queries(block, feature0, local);
            stage_keys(false, block, tile_start, bounds.y, feature0, local);
            workgroupBarrier();
            for (var c = 0u; c < CHUNK; c++) {
                let kc = kv_chunk[local * CHUNK + c];
                for (var r = 0u; r < BLOCK_ROWS; r++) {
                    dots[r] += q_chunk[r * CHUNK + c] * kc;
                }
            }
            workgroupBarrier();
        }
        var bits = 0u;
        for (var r = 0u; r < BLOCK_ROWS; r++) {
            if block.first_row + r < block.rows && key < bounds.y {
                let h = row_head(block, r);
                let i = row_query(block, r);
                if is_visible(block.b, h, i, key) {
                    p_tile[r * BLOCK_KEYS + local] = finish_score(dots[r], block.b, h, i, key);
                    bits |= 1u << r;
                }
            }
        }
        visible_bits[local] = bits;
        workgroupBarrier();

        if local < BLOCK_ROWS {
            update_row(local);
        }
        workgroupBarrier();

        // O += P V for this invocation's row and columns my_column + 8u, u < 4, per chunk.
        let alpha = row_alpha[my_row];
        for (var c = 0u; c < COLUMNS; c++) {
            acc[c] *= alpha;
        }
        for (var feature0 = 0u; feature0 < params.head_dim; feature0 += CHUNK) {
            stage_keys(true, block, tile_start, bounds.y, feature0, local);
            workgroupBarrier();
            for (var u = 0u; u < 4u; u++) {
                let column = my_column + 8u * u;
                var sum = 0.0;
                for (var kk = 0u; kk < BLOCK_KEYS; kk++) {
                    let p = p_tile[my_row * BLOCK_KEYS + kk];
                    // P = 0 for hidden keys: skip them so non-finite V cannot leak in.
                    sum += select(0.0, p * kv_chunk[kk * CHUNK + column], p != 0.0);
                }
                acc[(feature0 / CHUNK) * 4u + u] += sum;
            }
            workgroupBarrier();
        }
    }
    workgroupBarrier();

    if block.first_row + my_row >= block.rows {
        return;
    }
    let h = row_head(block, my_row);
    let i = row_query(block, my_row);
    let row = (block.b * params.heads + h) * params.q_len + i;
    let any = row_any[my_row] == 1u;
    if params.num_splits == 1u {
        let norm = normalisation(h, row_max[my_row], row_sum[my_row], any);
        let base = out_index(block.b, h, i);
        for (var c = 0u; c < COLUMNS; c++) {
            let feature = (c / 4u) * CHUNK + my_column + 8u * (c % 4u);
            if feature < params.head_dim {
                store_out(base + feature, acc[c] * norm.x);
            }
        }
        if my_column == 0u {
            lse[row] = norm.y;
        }
        return;
    }
    let stride = params.head_dim + 2u;
    let base = (row * params.num_splits + block.split) * stride;
    if my_column == 0u {
        partials[base] = select(LOWEST, row_max[my_row], any);
        partials[base + 1u] = select(0.0, row_sum[my_row], any);
    }
    for (var c = 0u; c < COLUMNS; c++) {
        let feature = (c / 4u) * CHUNK + my_column + 8u * (c % 4u);
        if feature < params.head_dim {
            partials[base + 2u + feature] = acc[c];
        }
    }
}

// Combines the split-K partial states of one row: rescales each slice to the common maximum.
@compute @workgroup_size(64)
fn merge(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let row = linear_workgroup(workgroup, workgroups);
    if row >= params.batch * params.heads * params.q_len {
        return;
    }
    let i = row % params.q_len;
    let h = (row / params.q_len) % params.heads;
    let b = row / (params.q_len * params.heads);
    let stride = params.head_dim + 2u;
    let first = row * params.num_splits * stride;

    var maximum = LOWEST;
    var any = false;
    for (var s = 0u; s < params.num_splits; s++) {
        if partials[first + s * stride + 1u] > 0.0 {
            maximum = max(maximum, partials[first + s * stride]);
            any = true;
        }
    }
    var sum = 0.0;
    for (var s = 0u; s < params.num_splits; s++) {
        let slice_sum = partials[first + s * stride + 1u];
        if slice_sum > 0.0 {
            sum += slice_sum * exp(partials[first + s * stride] - maximum);
        }
    }
    let norm = normalisation(h, maximum, sum, any);
    let base = out_index(b, h, i);
    for (var d = local; d < params.head_dim; d += 64u) {
        var acc = 0.0;
        for (var s = 0u; s < params.num_splits; s++) {
            let slice = first + s * stride;
            if partials[slice + 1u] > 0.0 {
                acc += partials[slice + 2u + d] * exp(partials[slice] - maximum);
            }
        }
        store_out(base + d, acc * norm.x);
    }
    if local == 0u {
        lse[row] = norm.y;
    }
}
