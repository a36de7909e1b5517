// Weights of one phase of conv2d_dgrad_phase_image.wgsl, as vec4 texels over 4 input
// channels, written to a staging buffer that is copied verbatim into an image.
// Phase (py, px) of the input gradient of a stride (sh, sw) convolution reads kernel rows
// r0 + sh * (RJ - 1 - j) and columns s0 + sw * (SL - 1 - l) (the taps that land on it,
// rotated by 180°, so the phase is a correlation of dy). Texel
//   base + (((g * CB + cb) * KG + k) * RJ + j) * SL + l
// holds w[g * KG + k, cb * 4 + i, r, s] for i < 4 (0 past the group's channels; r and s
// mirrored when FLIP, the forward being a true convolution).

struct Params {
    kg: u32, cg: u32, cb: u32, groups: u32,
    r: u32, s: u32, rj: u32, sl: u32,
    r0: u32, s0: u32, sh: u32, sw: u32,
    base: u32, total: u32, _p0: u32, _p1: u32,
}

@group(0) @binding(0) var<storage, read> P: Params;
// Fields of P read once per invocation (see hoist_params in tools/gen_shaders.py).
var<private> p_total: u32;
var<private> p_sl: u32;
var<private> p_rj: u32;
var<private> p_kg: u32;
var<private> p_cb: u32;
var<private> p_r0: u32;
var<private> p_sh: u32;
var<private> p_s0: u32;
var<private> p_sw: u32;
var<private> p_r: u32;
var<private> p_s: u32;
var<private> p_cg: u32;
var<private> p_base: u32;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;

override WG: u32 = 64u;
override FLIP: bool = false;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    p_total = P.total;
    p_sl = P.sl;
    p_rj = P.rj;
    p_kg = P.kg;
    p_cb = P.cb;
    p_r0 = P.r0;
    p_sh = P.sh;
    p_s0 = P.s0;
    p_sw = P.sw;
    p_r = P.r;
    p_s = P.s;
    p_cg = P.cg;
    p_base = P.base;
    let id = gid.x + gid.y * nwg.x * WG;
    if (id >= p_total) {
        return;
    }
    let l = id % p_sl;
    var t = id / p_sl;
    let j = t % p_rj;
    t = t / p_rj;
    let k = t % p_kg;
    t = t / p_kg;
    let cb = t % p_cb;
    let g = t / p_cb;
    var r = p_r0 + p_sh * (p_rj - 1u - j);
    var s = p_s0 + p_sw * (p_sl - 1u - l);
    if (FLIP) {
        r = p_r - 1u - r;
        s = p_s - 1u - s;
    }
    var v = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        let c = cb * 4u + i;
        if (c < p_cg) {
            v[i] = w[(((g * p_kg + k) * p_cg + c) * p_r + r) * p_s + s];
        }
    }
    dst[p_base + id] = v;
}
