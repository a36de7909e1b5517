// Input gradient of a convolution, gathered (no atomics): also the transposed convolution.
//
// For the forward y[n,k,oy,ox] = Σ w[k,ci,tap(r,s)] · x[n, g*cg+ci, oy*sh - pt + r*dh, ...]
// with zero padding, every input pixel gathers the outputs that read it:
//   dx[n,c,iy,ix] = Σ_{k in group, r, s : iy + pt - r*dh = oy*sh, ix + pl - s*dw = ox*sw}
//                   w[k, ci, tap(r,s)] · dy[n,k,oy,ox]  (+ bias[c] for conv_transpose2d)
// Stride-aware: an invocation owns CB channels and 4 pixels ix = ph + sw*(j0 + j) of one
// row that share the column phase ph, so every kernel column s either feeds all four
// (consecutive ox) or none; rows and columns of taps that do not divide by the stride are
// skipped before any multiply. Non-zero padding modes run this on the padded extent and
// fold the result back with pad_fold.wgsl.
//
// A launch covers `n` images, dx rows [iy0, iy0 + rows), the channel blocks
// [cb_lo, cb_lo + cbt) (numbered over all groups) and output channels [k_lo, k_lo + k_cnt)
// of each group. Offsets are added with wrapping arithmetic (windows of large tensors).

struct Params {
    n: u32, c: u32, h: u32, w: u32,
    k: u32, r: u32, s: u32, cg: u32,
    kg: u32, oh: u32, ow: u32, sh: u32,
    sw: u32, dh: u32, dw: u32, pad_top: i32,
    pad_left: i32, dy_off: u32, w_off: u32, b_off: u32,
    dx_off: u32, cblocks: u32, xblocks: u32, total: u32,
    k_lo: u32, k_cnt: u32, cb_lo: u32, cbt: u32,
    iy0: u32, rows: u32, _p0: u32, _p1: u32,
}

@group(0) @binding(0) var<storage, read> P: Params;
// Fields of P read once per invocation (see hoist_params in tools/gen_shaders.py).
var<private> p_ow: u32;
var<private> p_total: u32;
var<private> p_xblocks: u32;
var<private> p_sw: u32;
var<private> p_iy0: u32;
var<private> p_rows: u32;
var<private> p_cb_lo: u32;
var<private> p_cbt: u32;
var<private> p_cblocks: u32;
var<private> p_w: u32;
var<private> p_sh: u32;
var<private> p_r: u32;
var<private> p_s: u32;
var<private> p_cg: u32;
var<private> p_pad_top: i32;
var<private> p_dh: u32;
var<private> p_oh: u32;
var<private> p_pad_left: i32;
var<private> p_dw: u32;
var<private> p_k_lo: u32;
var<private> p_k_cnt: u32;
var<private> p_kg: u32;
var<private> p_dy_off: u32;
var<private> p_k: u32;
var<private> p_w_off: u32;
var<private> p_b_off: u32;
var<private> p_dx_off: u32;
var<private> p_c: u32;
var<private> p_h: u32;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;

override WG: u32 = 64u;
// Input channels per invocation: 1, 2, 3 or 4.
override CB: u32 = 4u;
override HAS_BIAS: bool = false;
override FLIP: bool = false;
// Add to dx (second and later chunks of output channels); bias comes with the first.
override ACCUMULATE: bool = false;

fn dy4(base: u32, ox0: i32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    let ow = i32(p_ow);
    for (var j = 0; j < 4; j++) {
        let ox = ox0 + j;
        if (ox >= 0 && ox < ow) {
            v[j] = dy[base + u32(ox)];
        }
    }
    return v;
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    p_ow = P.ow;
    p_total = P.total;
    p_xblocks = P.xblocks;
    p_sw = P.sw;
    p_iy0 = P.iy0;
    p_rows = P.rows;
    p_cb_lo = P.cb_lo;
    p_cbt = P.cbt;
    p_cblocks = P.cblocks;
    p_w = P.w;
    p_sh = P.sh;
    p_r = P.r;
    p_s = P.s;
    p_cg = P.cg;
    p_pad_top = P.pad_top;
    p_dh = P.dh;
    p_oh = P.oh;
    p_pad_left = P.pad_left;
    p_dw = P.dw;
    p_k_lo = P.k_lo;
    p_k_cnt = P.k_cnt;
    p_kg = P.kg;
    p_dy_off = P.dy_off;
    p_k = P.k;
    p_w_off = P.w_off;
    p_b_off = P.b_off;
    p_dx_off = P.dx_off;
    p_c = P.c;
    p_h = P.h;
    let id = gid.x + gid.y * nwg.x * WG;
    if (id >= p_total) {
        return;
    }
    // id -> (x block, column phase, row, channel block, image)
    let xb = id % p_xblocks;
    var t = id / p_xblocks;
    let ph = t % p_sw;
    t = t / p_sw;
    let iy = p_iy0 + t % p_rows;
    t = t / p_rows;
    let cb = p_cb_lo + t % p_cbt;
    let n = t / p_cbt;
    let g = cb / p_cblocks;
    let ci0 = (cb % p_cblocks) * CB;
    let j0 = xb * 4u;
    if (ph + p_sw * j0 >= p_w) {
        return;
    }
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    let rs = p_r * p_s;
    // Clamp channels past the group end to a valid one (their results are not stored).
    let cmax = p_cg - 1u;
    let wc0 = min(ci0, cmax) * rs;
    let wc1 = min(ci0 + 1u, cmax) * rs;
    let wc2 = min(ci0 + 2u, cmax) * rs;
    let wc3 = min(ci0 + 3u, cmax) * rs;
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
            let base = i32(ph) + p_pad_left - i32(s * p_dw);
            // base mod sw and floor(base / sw) on unsigned values only (GLSL leaves signed
            // `%` undefined for negative operands).
            let mag = u32(abs(base));
            let q = mag / p_sw;
            if (mag - q * p_sw != 0u) {
                continue;
            }
            // ox of pixel j: (base + sw * (j0 + j)) / sw, exact.
            let ox0 = select(-i32(q), i32(q), base >= 0) + i32(j0);
            let ss = select(s, p_s - 1u - s, FLIP);
            let tap = rr * p_s + ss;
            for (var kk = p_k_lo; kk < p_k_lo + p_k_cnt; kk++) {
                let k = g * p_kg + kk;
                let v = dy4(p_dy_off + ((n * p_k + k) * p_oh + oy) * p_ow, ox0);
                let wk = p_w_off + k * p_cg * rs + tap;
                acc0 = fma(vec4<f32>(wt[wk + wc0]), v, acc0);
                if (CB > 1u) {
                    acc1 = fma(vec4<f32>(wt[wk + wc1]), v, acc1);
                }
                if (CB > 2u) {
                    acc2 = fma(vec4<f32>(wt[wk + wc2]), v, acc2);
                }
                if (CB > 3u) {
                    acc3 = fma(vec4<f32>(wt[wk + wc3]), v, acc3);
                }
            }
        }
    }
    for (var i = 0u; i < CB; i++) {
        let ci = ci0 + i;
        if (ci >= p_cg) {
            break;
        }
        let c = g * p_cg + ci;
        var a = acc0;
        if (i == 1u) {
            a = acc1;
        } else if (i == 2u) {
            a = acc2;
        } else if (i == 3u) {
            a = acc3;
        }
        var b = 0.0;
        if (HAS_BIAS && !ACCUMULATE) {
            b = bias[p_b_off + c];
        }
        let row = p_dx_off + ((n * p_c + c) * p_h + iy) * p_w;
        for (var j = 0u; j < 4u; j++) {
            let ix = ph + p_sw * (j0 + j);
            if (ix < p_w) {
                var out = a[j] + b;
                if (ACCUMULATE) {
                    out += dx[row + ix];
                }
                dx[row + ix] = out;
            }
        }
    }
}
