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

// Params and overrides are prepended by src/kernels/conv2d_dgrad.rs.
@group(0) @binding(0) var<storage, read> P: Params;
@group(0) @binding(1) var<storage, read> dy: array<T>;
@group(0) @binding(2) var<storage, read> wt: array<T>;
@group(0) @binding(3) var<storage, read> bias: array<T>;
@group(0) @binding(4) var<storage, read_write> dx: array<T>;

fn dy4(base: u32, ox0: i32) -> vec4<T> {
    var v = vec4<T>(0.0);
    let ow = i32(P.ow);
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
    let id = gid.x + gid.y * nwg.x * WG;
    if (id >= P.total) {
        return;
    }
    // id -> (x block, column phase, row, channel block, image)
    let xb = id % P.xblocks;
    var t = id / P.xblocks;
    let ph = t % P.sw;
    t = t / P.sw;
    let iy = P.iy0 + t % P.rows;
    t = t / P.rows;
    let cb = P.cb_lo + t % P.cbt;
    let n = t / P.cbt;
    let g = cb / P.cblocks;
    let ci0 = (cb % P.cblocks) * CB;
    let j0 = xb * 4u;
    if (ph + P.sw * j0 >= P.w) {
        return;
    }
    var acc0 = vec4<T>(0.0);
    var acc1 = vec4<T>(0.0);
    var acc2 = vec4<T>(0.0);
    var acc3 = vec4<T>(0.0);
    let rs = P.r * P.s;
    // Clamp channels past the group end to a valid one (their results are not stored).
    let cmax = P.cg - 1u;
    let wc0 = min(ci0, cmax) * rs;
    let wc1 = min(ci0 + 1u, cmax) * rs;
    let wc2 = min(ci0 + 2u, cmax) * rs;
    let wc3 = min(ci0 + 3u, cmax) * rs;
    for (var r = 0u; r < P.r; r++) {
        let ty = i32(iy) + P.pad_top - i32(r * P.dh);
        if (ty < 0 || u32(ty) % P.sh != 0u) {
            continue;
        }
        let oy = u32(ty) / P.sh;
        if (oy >= P.oh) {
            continue;
        }
        let rr = select(r, P.r - 1u - r, FLIP);
        for (var s = 0u; s < P.s; s++) {
            let base = i32(ph) + P.pad_left - i32(s * P.dw);
            // base mod sw and floor(base / sw) on unsigned values only (GLSL leaves signed
            // `%` undefined for negative operands).
            let mag = u32(abs(base));
            let q = mag / P.sw;
            if (mag - q * P.sw != 0u) {
                continue;
            }
            // ox of pixel j: (base + sw * (j0 + j)) / sw, exact.
            let ox0 = select(-i32(q), i32(q), base >= 0) + i32(j0);
            let ss = select(s, P.s - 1u - s, FLIP);
            let tap = rr * P.s + ss;
            for (var kk = P.k_lo; kk < P.k_lo + P.k_cnt; kk++) {
                let k = g * P.kg + kk;
                let v = dy4(P.dy_off + ((n * P.k + k) * P.oh + oy) * P.ow, ox0);
                let wk = P.w_off + k * P.cg * rs + tap;
                acc0 = fma(vec4<T>(wt[wk + wc0]), v, acc0);
                if (CB > 1u) {
                    acc1 = fma(vec4<T>(wt[wk + wc1]), v, acc1);
                }
                if (CB > 2u) {
                    acc2 = fma(vec4<T>(wt[wk + wc2]), v, acc2);
                }
                if (CB > 3u) {
                    acc3 = fma(vec4<T>(wt[wk + wc3]), v, acc3);
                }
            }
        }
    }
    for (var i = 0u; i < CB; i++) {
        let ci = ci0 + i;
        if (ci >= P.cg) {
            break;
        }
        let c = g * P.cg + ci;
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
            b = f32(bias[P.b_off + c]);
        }
        let row = P.dx_off + ((n * P.c + c) * P.h + iy) * P.w;
        for (var j = 0u; j < 4u; j++) {
            let ix = ph + P.sw * (j0 + j);
            if (ix < P.w) {
                var out = f32(a[j]) + b;
                if (ACCUMULATE) {
                    out += f32(dx[row + ix]);
                }
                dx[row + ix] = T(out);
            }
        }
    }
}
