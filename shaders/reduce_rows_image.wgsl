// Bias gradient for CPU-like adapters: out[row] = Σ_{b < batch} Σ_{i < len}
// src[b * bstride + row * len + i], like reduce_rows.wgsl, with src read from a verbatim
// image copy of the buffer (float f at texel f / 4 = (t % tw, t / tw), see copy_flat in
// src/conv/implicit.rs). On lavapipe a storage-buffer load is a per-lane loop for every float,
// a textureLoad one 16-byte load per lane for four (docs/lavapipe-loads.md): the bias
// gradient of a 32 x 112 x 112 gradient took 3 ms through the buffer, as long as the input
// and weight gradients together. One invocation per row, in a fixed order (images, then
// texels; four partial sums combined at the end): deterministic. Texels that straddle a row
// boundary are masked per float.

struct Params {
    rows: u32, len: u32, batch: u32, bstride: u32,
    total: u32, tw_shift: u32, _p0: u32, _p1: u32,
}

@group(0) @binding(0) var<storage, read> P: Params;
// Fields of P read once per invocation (see hoist_params in tools/gen_shaders.py).
var<private> p_total: u32;
var<private> p_batch: u32;
var<private> p_bstride: u32;
var<private> p_len: u32;
var<private> p_tw_shift: u32;
@group(0) @binding(1) var src: texture_storage_2d<rgba32float, read>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

override WG: u32 = 8u;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    p_total = P.total;
    p_batch = P.batch;
    p_bstride = P.bstride;
    p_len = P.len;
    p_tw_shift = P.tw_shift;
    // No early return (an execution mask over the whole body on lavapipe): invocations past
    // the end repeat the last row and skip the store.
    let id0 = gid.x + gid.y * nwg.x * WG;
    let live = id0 < p_total;
    let id = min(id0, p_total - 1u);
    let tw_mask = (1u << p_tw_shift) - 1u;
    var s = vec4<f32>(0.0);
    for (var b = 0u; b < p_batch; b++) {
        let lo = b * p_bstride + id * p_len;
        let hi = lo + p_len;
        let t_end = (hi + 3u) / 4u;
        for (var t = lo / 4u; t < t_end; t++) {
            let v = textureLoad(src, vec2<u32>(t & tw_mask, t >> p_tw_shift));
            let f = vec4<u32>(4u * t) + vec4<u32>(0u, 1u, 2u, 3u);
            s += select(vec4<f32>(0.0), v, f >= vec4<u32>(lo) & f < vec4<u32>(hi));
        }
    }
    if (live) {
        dst[id] = (s.x + s.y) + (s.z + s.w);
    }
}
