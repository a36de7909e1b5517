// col2im, gathered (no atomics): folds the column-gradient matrix of im2col back onto the
// input. For one launch of `n` images and output pixels [p0, p0 + np):
//   dx[n,c,iy,ix] (+)= Σ_{r,s : iy + pt - r*dh = oy*sh, ix + pl - s*dw = ox*sw,
//                          p = oy*ow + ox in [p0, p0+np)} dcol[(img*G + g)*crs + q][p - p0]
// with q = (ci*R + rr)*S + ss and (rr, ss) = tap(r, s), the layout written by im2col.wgsl
// (row stride ldp). Zero-padding semantics; other modes fold with pad_fold.wgsl.
// ACCUMULATE adds to dx (for the second and later pixel ranges of an image).

struct Params {
    n: u32, c: u32, h: u32, w: u32,
    cg: u32, groups: u32, r: u32, s: u32,
    oh: u32, ow: u32, sh: u32, sw: u32,
    dh: u32, dw: u32, pad_top: i32, pad_left: i32,
    dx_off: u32, p0: u32, np: u32, ldp: u32,
    total: u32, _p0: u32, _p1: u32, _p2: u32,
}

@group(0) @binding(0) var<storage, read> P: Params;
// Fields of P read once per invocation (see hoist_params in tools/gen_shaders.py).
var<private> p_total: u32;
var<private> p_w: u32;
var<private> p_h: u32;
var<private> p_c: u32;
var<private> p_cg: u32;
var<private> p_r: u32;
var<private> p_s: u32;
var<private> p_sh: u32;
var<private> p_sw: u32;
var<private> p_p0: u32;
var<private> p_np: u32;
var<private> p_groups: u32;
var<private> p_pad_top: i32;
var<private> p_dh: u32;
var<private> p_oh: u32;
var<private> p_pad_left: i32;
var<private> p_dw: u32;
var<private> p_ow: u32;
var<private> p_ldp: u32;
var<private> p_dx_off: u32;
@group(0) @binding(1) var<storage, read> dcol: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;

override WG: u32 = 64u;
override FLIP: bool = false;
override ACCUMULATE: bool = false;
// Add bias[c] (conv_transpose2d; first pixel range only).
override HAS_BIAS: bool = false;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    p_total = P.total;
    p_w = P.w;
    p_h = P.h;
    p_c = P.c;
    p_cg = P.cg;
    p_r = P.r;
    p_s = P.s;
    p_sh = P.sh;
    p_sw = P.sw;
    p_p0 = P.p0;
    p_np = P.np;
    p_groups = P.groups;
    p_pad_top = P.pad_top;
    p_dh = P.dh;
    p_oh = P.oh;
    p_pad_left = P.pad_left;
    p_dw = P.dw;
    p_ow = P.ow;
    p_ldp = P.ldp;
    p_dx_off = P.dx_off;
    let id = gid.x + gid.y * nwg.x * WG;
    if (id >= p_total) {
        return;
    }
    let ix = id % p_w;
    var t = id / p_w;
    let iy = t % p_h;
    t = t / p_h;
    let c = t % p_c;
    let img = t / p_c;
    let g = c / p_cg;
    let ci = c % p_cg;
    let crs = p_cg * p_r * p_s;
    let p_end = p_p0 + p_np;
    let plane = (img * p_groups + g) * crs;
    var acc = 0.0;
    for (var r = 0u; r < p_r; r++) {
        let ty = i32(iy) + p_pad_top - i32(r * p_dh);
        if (ty < 0 || u32(ty) % p_sh != 0u) {
            continue;
        }
        let oy = u32(ty) / p_sh;
        if (oy >= p_oh) {
            continue;
        }
        let rr = select(r, p_r - 1u - r, FLIP);
        for (var s = 0u; s < p_s; s++) {
            let tx = i32(ix) + p_pad_left - i32(s * p_dw);
            if (tx < 0 || u32(tx) % p_sw != 0u) {
                continue;
            }
            let ox = u32(tx) / p_sw;
            if (ox >= p_ow) {
                continue;
            }
            let p = oy * p_ow + ox;
            if (p < p_p0 || p >= p_end) {
                continue;
            }
            let ss = select(s, p_s - 1u - s, FLIP);
            let q = (ci * p_r + rr) * p_s + ss;
            acc += dcol[(plane + q) * p_ldp + (p - p_p0)];
        }
    }
    let o = p_dx_off + id;
    if (ACCUMULATE) {
        acc += dx[o];
    }
    if (HAS_BIAS) {
        acc += bias[c];
    }
    dx[o] = acc;
}
