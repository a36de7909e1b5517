// Weight gradient of a convolution, direct: each invocation owns KB output channels x 4
// kernel columns (s0 .. s0+3) of one (input channel, kernel row) and sums over every image
// and output pixel in a fixed order (deterministic):
//   dw[k, ci, tap(r, s)] = Σ_{n, oy, ox} dy[n,k,oy,ox] · xpad[n, g*cg+ci, oy*sh - pt + r*dh, ox*sw - pl + s*dw]
// xpad reads x through the padding mode's index mapping, as in the forward kernel.
// A launch covers `n` images, output rows [oy0, oy0 + oy_cnt), k-blocks [kb_lo, kb_lo + kbt)
// (numbered over all groups) and input channels [c_lo, c_lo + c_cnt) of each group. Offsets
// are added with wrapping arithmetic (windows of large tensors).

struct Params {
    n: u32, c: u32, h: u32, w: u32,
    k: u32, r: u32, s: u32, cg: u32,
    kg: u32, oh: u32, ow: u32, sh: u32,
    sw: u32, dh: u32, dw: u32, pad_top: i32,
    pad_left: i32, kblocks: u32, sblocks: u32, total: u32,
    x_off: u32, dy_off: u32, dw_off: u32, kb_lo: u32,
    kbt: u32, c_lo: u32, c_cnt: u32, oy0: u32,
    oy_cnt: u32, _p0: u32, _p1: u32, _p2: u32,
}

@group(0) @binding(0) var<storage, read> P: Params;
// Fields of P read once per invocation (see hoist_params in tools/gen_shaders.py).
var<private> p_total: u32;
var<private> p_sblocks: u32;
var<private> p_r: u32;
var<private> p_c_lo: u32;
var<private> p_c_cnt: u32;
var<private> p_kb_lo: u32;
var<private> p_kblocks: u32;
var<private> p_kg: u32;
var<private> p_cg: u32;
var<private> p_oh: u32;
var<private> p_ow: u32;
var<private> p_n: u32;
var<private> p_x_off: u32;
var<private> p_c: u32;
var<private> p_h: u32;
var<private> p_w: u32;
var<private> p_dy_off: u32;
var<private> p_k: u32;
var<private> p_oy0: u32;
var<private> p_oy_cnt: u32;
var<private> p_sh: u32;
var<private> p_dh: u32;
var<private> p_pad_top: i32;
var<private> p_sw: u32;
var<private> p_pad_left: i32;
var<private> p_s: u32;
var<private> p_dw: u32;
var<private> p_dw_off: u32;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> dw: array<f32>;

override WG: u32 = 64u;
// Output channels per invocation: 1..4.
override KB: u32 = 4u;
override PAD_MODE: u32 = 0u;
override FLIP: bool = false;
// Add to dw (second and later images / row bands / windows).
override ACCUMULATE: bool = false;

fn src_index(i: i32, size: i32) -> i32 {
    if (i >= 0 && i < size) {
        return i;
    }
    switch PAD_MODE {
        case 1u: {
            // reflect (pad < size): one mirror suffices
            var j = -i;
            if (i >= size) {
                j = 2 * (size - 1) - i;
            }
            return select(-1, j, j >= 0 && j < size);
        }
        case 2u: {
            return clamp(i, 0, size - 1);
        }
        case 3u: {
            // circular (pad <= size): one wrap suffices. No signed `%`: GLSL leaves it
            // undefined for negative operands. Clamped so that coordinates of outputs that
            // are never stored still read inside the tensor.
            return clamp(select(i - size, i + size, i < 0), 0, size - 1);
        }
        default: {
            return -1;
        }
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    p_total = P.total;
    p_sblocks = P.sblocks;
    p_r = P.r;
    p_c_lo = P.c_lo;
    p_c_cnt = P.c_cnt;
    p_kb_lo = P.kb_lo;
    p_kblocks = P.kblocks;
    p_kg = P.kg;
    p_cg = P.cg;
    p_oh = P.oh;
    p_ow = P.ow;
    p_n = P.n;
    p_x_off = P.x_off;
    p_c = P.c;
    p_h = P.h;
    p_w = P.w;
    p_dy_off = P.dy_off;
    p_k = P.k;
    p_oy0 = P.oy0;
    p_oy_cnt = P.oy_cnt;
    p_sh = P.sh;
    p_dh = P.dh;
    p_pad_top = P.pad_top;
    p_sw = P.sw;
    p_pad_left = P.pad_left;
    p_s = P.s;
    p_dw = P.dw;
    p_dw_off = P.dw_off;
    let id = gid.x + gid.y * nwg.x * WG;
    if (id >= p_total) {
        return;
    }
    // id -> (s block, kernel row, input channel in group, k block (all groups))
    let sb = id % p_sblocks;
    var t = id / p_sblocks;
    let r = t % p_r;
    t = t / p_r;
    let ci = p_c_lo + t % p_c_cnt;
    let kbt = p_kb_lo + t / p_c_cnt;
    let g = kbt / p_kblocks;
    let k0 = g * p_kg + (kbt % p_kblocks) * KB;
    let kend = (g + 1u) * p_kg;
    let s0 = sb * 4u;
    let c = g * p_cg + ci;
    let kk1 = min(k0 + 1u, kend - 1u);
    let kk2 = min(k0 + 2u, kend - 1u);
    let kk3 = min(k0 + 3u, kend - 1u);
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    let ohw = p_oh * p_ow;
    for (var n = 0u; n < p_n; n++) {
        let xplane = p_x_off + (n * p_c + c) * p_h * p_w;
        let dyn = p_dy_off + n * p_k * ohw;
        for (var oy = p_oy0; oy < p_oy0 + p_oy_cnt; oy++) {
            let sy = src_index(i32(oy * p_sh + r * p_dh) - p_pad_top, i32(p_h));
            if (sy < 0) {
                continue;
            }
            let xrow = xplane + u32(sy) * p_w;
            for (var ox = 0u; ox < p_ow; ox++) {
                var xv = vec4<f32>(0.0);
                let ix0 = i32(ox * p_sw) - p_pad_left;
                for (var j = 0u; j < 4u; j++) {
                    let s = min(s0 + j, p_s - 1u);
                    let sx = src_index(ix0 + i32(s * p_dw), i32(p_w));
                    if (sx >= 0) {
                        xv[j] = x[xrow + u32(sx)];
                    }
                }
                let p = dyn + oy * p_ow + ox;
                acc0 = fma(vec4<f32>(dy[p + k0 * ohw]), xv, acc0);
                if (KB > 1u) {
                    acc1 = fma(vec4<f32>(dy[p + kk1 * ohw]), xv, acc1);
                }
                if (KB > 2u) {
                    acc2 = fma(vec4<f32>(dy[p + kk2 * ohw]), xv, acc2);
                }
                if (KB > 3u) {
                    acc3 = fma(vec4<f32>(dy[p + kk3 * ohw]), xv, acc3);
                }
            }
        }
    }
    let rr = select(r, p_r - 1u - r, FLIP);
    for (var i = 0u; i < KB; i++) {
        let k = k0 + i;
        if (k >= kend) {
            break;
        }
        var a = acc0;
        if (i == 1u) {
            a = acc1;
        } else if (i == 2u) {
            a = acc2;
        } else if (i == 3u) {
            a = acc3;
        }
        for (var j = 0u; j < 4u; j++) {
            let s = s0 + j;
            if (s < p_s) {
                let ss = select(s, p_s - 1u - s, FLIP);
                let o = p_dw_off + ((k * p_cg + ci) * p_r + rr) * p_s + ss;
                var v = a[j];
                if (ACCUMULATE) {
                    v += dw[o];
                }
                dw[o] = v;
            }
        }
    }
}
