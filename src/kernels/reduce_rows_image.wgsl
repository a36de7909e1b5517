// Bias gradient for CPU-like adapters: out[row] = Σ_{b < batch} Σ_{i < len}
// src[b * bstride + row * len + i], like reduce_rows.wgsl, with src read from a verbatim
// image copy of the buffer (float f at texel f / 4 = (t % tw, t / tw), see the launcher's
// copy_flat). On lavapipe a storage-buffer load is a per-lane loop for every float,
// a textureLoad one 16-byte load per lane for four (docs/lavapipe-loads.md): the bias
// gradient of a 32 x 112 x 112 gradient took 3 ms through the buffer, as long as the input
// and weight gradients together. One invocation per row, in a fixed order (images, then
// texels; four partial sums combined at the end): deterministic. Texels that straddle a row
// boundary are masked per float.

// Params and overrides are prepended by src/kernels/reduce_rows_image.rs.
@group(0) @binding(0) var<storage, read> P: Params;
@group(0) @binding(1) var src: texture_storage_2d<rgba32float, read>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    // No early return (an execution mask over the whole body on lavapipe): invocations past
    // the end repeat the last row and skip the store.
    let id0 = gid.x + gid.y * nwg.x * WG;
    let live = id0 < P.total;
    let id = min(id0, P.total - 1u);
    let tw_mask = (1u << P.tw_shift) - 1u;
    if (P.cl_k != 0u) {
        // Channels-last: texel id of each pixel's cl_k / 4 texels, in pixel order.
        let c4n = P.cl_k / 4u;
        var a = vec4<f32>(0.0);
        for (var b = 0u; b < P.batch; b++) {
            let t0 = b * (P.bstride / 4u) + id;
            for (var i = 0u; i < P.len; i++) {
                let t = t0 + i * c4n;
                a += textureLoad(src, vec2<u32>(t & tw_mask, t >> P.tw_shift));
            }
        }
        if (live) {
            dst[4u * id] = a.x;
            dst[4u * id + 1u] = a.y;
            dst[4u * id + 2u] = a.z;
            dst[4u * id + 3u] = a.w;
        }
        return;
    }
    var s = vec4<f32>(0.0);
    for (var b = 0u; b < P.batch; b++) {
        let lo = b * P.bstride + id * P.len;
        let hi = lo + P.len;
        let t_end = (hi + 3u) / 4u;
        for (var t = lo / 4u; t < t_end; t++) {
            let v = textureLoad(src, vec2<u32>(t & tw_mask, t >> P.tw_shift));
            let f = vec4<u32>(4u * t) + vec4<u32>(0u, 1u, 2u, 3u);
            s += select(vec4<f32>(0.0), v, (f >= vec4<u32>(lo)) & (f < vec4<u32>(hi)));
        }
    }
    if (live) {
        dst[id] = (s.x + s.y) + (s.z + s.w);
    }
}
