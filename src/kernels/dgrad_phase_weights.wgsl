// Weights of one phase of conv2d_dgrad_phase_image.wgsl, as vec4 texels over 4 input
// channels, written to a staging buffer that is copied verbatim into an image.
// Phase (py, px) of the input gradient of a stride (sh, sw) convolution reads kernel rows
// r0 + sh * (RJ - 1 - j) and columns s0 + sw * (SL - 1 - l) (the taps that land on it,
// rotated by 180°, so the phase is a correlation of dy). Texel
//   base + (((g * CB + cb) * KG + k) * RJ + j) * SL + l
// holds w[g * KG + k, cb * 4 + i, r, s] for i < 4 (0 past the group's channels; r and s
// mirrored when FLIP, the forward being a true convolution).

// Params and overrides are prepended by src/kernels/dgrad_phase_weights.rs.
@group(0) @binding(0) var<storage, read> P: Params;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = gid.x + gid.y * nwg.x * WG;
    if (id >= P.total) {
        return;
    }
    let l = id % P.sl;
    var t = id / P.sl;
    let j = t % P.rj;
    t = t / P.rj;
    let k = t % P.kg;
    t = t / P.kg;
    let cb = t % P.cb;
    let g = t / P.cb;
    var r = P.r0 + P.sh * (P.rj - 1u - j);
    var s = P.s0 + P.sw * (P.sl - 1u - l);
    if (FLIP) {
        r = P.r - 1u - r;
        s = P.s - 1u - s;
    }
    var v = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        let c = cb * 4u + i;
        if (c < P.cg) {
            v[i] = w[(((g * P.kg + k) * P.cg + c) * P.r + r) * P.s + s];
        }
    }
    dst[P.base + id] = v;
}
