// Swaps the first two axes of a grouped weight within each group:
//   dst[g][c][k][rs] = src[g][k][c][rs]   (src [K, C/groups, R*S], dst [C, K/groups, R*S])
// so that the input gradient of a stride-1 convolution can run as a forward convolution of
// dy with these weights (kernel rotated via FLIP, complementary padding).

struct Params {
    groups: u32, kg: u32, cg: u32, rs: u32,
    total: u32, _p0: u32, _p1: u32, _p2: u32,
}

@group(0) @binding(0) var<storage, read> P: Params;
// Fields of P read once per invocation (see hoist_params in tools/gen_shaders.py).
var<private> p_total: u32;
var<private> p_rs: u32;
var<private> p_kg: u32;
var<private> p_cg: u32;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

override WG: u32 = 64u;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    p_total = P.total;
    p_rs = P.rs;
    p_kg = P.kg;
    p_cg = P.cg;
    let id = gid.x + gid.y * nwg.x * WG;
    if (id >= p_total) {
        return;
    }
    // id indexes dst: ((g * cg + c) * kg + k) * rs + t
    let t = id % p_rs;
    var q = id / p_rs;
    let k = q % p_kg;
    q = q / p_kg;
    let c = q % p_cg;
    let g = q / p_cg;
    dst[id] = src[((g * p_kg + k) * p_cg + c) * p_rs + t];
}
