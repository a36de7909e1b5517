// Swaps the first two axes of a grouped weight within each group:
//   dst[g][c][k][rs] = src[g][k][c][rs]   (src [K, C/groups, R*S], dst [C, K/groups, R*S])
// so that the input gradient of a stride-1 convolution can run as a forward convolution of
// dy with these weights (kernel rotated via FLIP, complementary padding).

// Params and overrides are prepended by src/kernels/permute_kc.rs.
@group(0) @binding(0) var<storage, read> P: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = gid.x + gid.y * nwg.x * WG;
    if (id >= P.total) {
        return;
    }
    // id indexes dst: ((g * cg + c) * kg + k) * rs + t
    let t = id % P.rs;
    var q = id / P.rs;
    let k = q % P.kg;
    q = q / P.kg;
    let c = q % P.cg;
    let g = q / P.cg;
    dst[id] = src[((g * P.kg + k) * P.cg + c) * P.rs + t];
}
