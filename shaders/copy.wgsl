// Plain buffer copies, the bandwidth baseline that the benchmark compares every kernel with.
//
// `copy_f32` moves one f32 per invocation and `copy_vec4` one vec4<f32> (16 bytes) per
// invocation. Vector loads and stores change the achieved bandwidth a great deal on some
// adapters (about 2.7x on lavapipe), so the benchmark times both and takes the faster.
// Workgroups form a 2-D grid because a large copy needs more than the 65,535 workgroups one
// dimension allows. Invocation `workgroup_id.x + workgroup_id.y * num_workgroups.x` (times
// WORKGROUP_SIZE, plus the local index) copies element `i`, and ids at or past `params.count`
// do nothing.

override WORKGROUP_SIZE: u32 = 64u;

// Mirrors `CopyUniform` in src/bench/copy.rs.
struct Params {
    count: u32, // elements to copy: f32 values for copy_f32, vec4 values for copy_vec4
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// Source, read as f32 values.
@group(0) @binding(1) var<storage, read> source_f32: array<f32>;
// Destination, written as f32 values.
@group(0) @binding(2) var<storage, read_write> destination_f32: array<f32>;
// The same source, read as vec4<f32> values.
@group(0) @binding(3) var<storage, read> source_vec4: array<vec4<f32>>;
// The same destination, written as vec4<f32> values.
@group(0) @binding(4) var<storage, read_write> destination_vec4: array<vec4<f32>>;

fn element_index(workgroup: vec3<u32>, workgroups: vec3<u32>, local: u32) -> u32 {
    return (workgroup.x + workgroup.y * workgroups.x) * WORKGROUP_SIZE + local;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn copy_f32(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let i = element_index(workgroup, workgroups, local);
    if i < params.count {
        destination_f32[i] = source_f32[i];
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn copy_vec4(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(num_workgroups) workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let i = element_index(workgroup, workgroups, local);
    if i < params.count {
        destination_vec4[i] = source_vec4[i];
    }
}
