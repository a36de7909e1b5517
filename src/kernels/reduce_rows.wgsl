// Deterministic row sums: out[row] = Σ_{b < batch} Σ_{i < len} src[b * bstride + row * len + i]
// in a fixed order (images, then elements), one invocation per row. Used for the bias
// gradient (rows = output channels, len = Ho*Wo, batch = images) and for summing split-K
// partial results (len = 1, rows = elements, batch = partials).

// Params and overrides are prepended by src/kernels/reduce_rows.rs.
@group(0) @binding(0) var<storage, read> P: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = gid.x + gid.y * nwg.x * WG;
    if (id >= P.total) {
        return;
    }
    var acc = 0.0;
    for (var b = 0u; b < P.batch; b++) {
        if (P.cl_k != 0u) {
            // Channels-last: the pixels of channel id are cl_k apart; in pixel order, four
            // partial sums as below.
            let base = P.src_off + b * P.bstride + id;
            var s = vec4<f32>(0.0);
            var i = 0u;
            for (; i + 4u <= P.len; i += 4u) {
                let o = base + i * P.cl_k;
                s += vec4<f32>(src[o], src[o + P.cl_k], src[o + 2u * P.cl_k], src[o + 3u * P.cl_k]);
            }
            for (; i < P.len; i++) {
                s.x += src[base + i * P.cl_k];
            }
            acc += (s.x + s.y) + (s.z + s.w);
            continue;
        }
        let base = P.src_off + b * P.bstride + id * P.len;
        // Four partial sums, combined in a fixed order: shorter dependency chains.
        var s = vec4<f32>(0.0);
        var i = 0u;
        for (; i + 4u <= P.len; i += 4u) {
            s += vec4<f32>(src[base + i], src[base + i + 1u], src[base + i + 2u], src[base + i + 3u]);
        }
        for (; i < P.len; i++) {
            s.x += src[base + i];
        }
        acc += (s.x + s.y) + (s.z + s.w);
    }
    let o = P.dst_off + id;
    if (ACCUMULATE) {
        acc += dst[o];
    }
    dst[o] = acc;
}
