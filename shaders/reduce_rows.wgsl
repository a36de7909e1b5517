// Deterministic row sums: out[row] = Σ_{b < batch} Σ_{i < len} src[b * bstride + row * len + i]
// in a fixed order (images, then elements), one invocation per row. Used for the bias
// gradient (rows = output channels, len = Ho*Wo, batch = images) and for summing split-K
// partial results (len = 1, rows = elements, batch = partials).

struct Params {
    rows: u32, len: u32, batch: u32, bstride: u32,
    total: u32, src_off: u32, dst_off: u32, _p2: u32,
}

@group(0) @binding(0) var<storage, read> P: Params;
// Fields of P read once per invocation (see hoist_params in tools/gen_shaders.py).
var<private> p_total: u32;
var<private> p_batch: u32;
var<private> p_src_off: u32;
var<private> p_bstride: u32;
var<private> p_len: u32;
var<private> p_dst_off: u32;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

override WG: u32 = 64u;
// Add to dst (windows of a large source processed one after another).
override ACCUMULATE: bool = false;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    p_total = P.total;
    p_batch = P.batch;
    p_src_off = P.src_off;
    p_bstride = P.bstride;
    p_len = P.len;
    p_dst_off = P.dst_off;
    let id = gid.x + gid.y * nwg.x * WG;
    if (id >= p_total) {
        return;
    }
    var acc = 0.0;
    for (var b = 0u; b < p_batch; b++) {
        let base = p_src_off + b * p_bstride + id * p_len;
        // Four partial sums, combined in a fixed order: shorter dependency chains.
        var s = vec4<f32>(0.0);
        var i = 0u;
        for (; i + 4u <= p_len; i += 4u) {
            s += vec4<f32>(src[base + i], src[base + i + 1u], src[base + i + 2u], src[base + i + 3u]);
        }
        for (; i < p_len; i++) {
            s.x += src[base + i];
        }
        acc += (s.x + s.y) + (s.z + s.w);
    }
    let o = p_dst_off + id;
    if (ACCUMULATE) {
        acc += dst[o];
    }
    dst[o] = acc;
}
