// Weight gradient of a convolution, direct: each invocation owns KB output channels x 4
// kernel columns (s0 .. s0+3) of one (input channel, kernel row) and sums over every image
// and output pixel in a fixed order (deterministic):
//   dw[k, ci, tap(r, s)] = Σ_{n, oy, ox} dy[n,k,oy,ox] · xpad[n, g*cg+ci, oy*sh - pt + r*dh, ox*sw - pl + s*dw]
// xpad reads x through the padding mode's index mapping, as in the forward kernel.
// A launch covers `n` images, output rows [oy0, oy0 + oy_cnt), k-blocks [kb_lo, kb_lo + kbt)
// (numbered over all groups) and input channels [c_lo, c_lo + c_cnt) of each group. Offsets
// are added with wrapping arithmetic (windows of large tensors).

// Params, overrides and src_index are prepended by src/kernels/conv2d_wgrad.rs.
@group(0) @binding(0) var<storage, read> P: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read> dy: array<T>;
@group(0) @binding(3) var<storage, read_write> dw: array<T>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = gid.x + gid.y * nwg.x * WG;
    if (id >= P.total) {
        return;
    }
    // id -> (s block, kernel row, input channel in group, k block (all groups))
    let sb = id % P.sblocks;
    var t = id / P.sblocks;
    let r = t % P.r;
    t = t / P.r;
    let ci = P.c_lo + t % P.c_cnt;
    let kbt = P.kb_lo + t / P.c_cnt;
    let g = kbt / P.kblocks;
    let k0 = g * P.kg + (kbt % P.kblocks) * KB;
    let kend = (g + 1u) * P.kg;
    let s0 = sb * 4u;
    let c = g * P.cg + ci;
    let kk1 = min(k0 + 1u, kend - 1u);
    let kk2 = min(k0 + 2u, kend - 1u);
    let kk3 = min(k0 + 3u, kend - 1u);
    var acc0 = vec4<T>(0.0);
    var acc1 = vec4<T>(0.0);
    var acc2 = vec4<T>(0.0);
    var acc3 = vec4<T>(0.0);
    let ohw = P.oh * P.ow;
    for (var n = 0u; n < P.n; n++) {
        let xplane = P.x_off + (n * P.c + c) * P.h * P.w;
        let dyn = P.dy_off + n * P.k * ohw;
        for (var oy = P.oy0; oy < P.oy0 + P.oy_cnt; oy++) {
            let sy = src_index(i32(oy * P.sh + r * P.dh) - P.pad_top, i32(P.h));
            if (sy < 0) {
                continue;
            }
            let xrow = xplane + u32(sy) * P.w;
            for (var ox = 0u; ox < P.ow; ox++) {
                var xv = vec4<T>(0.0);
                let ix0 = i32(ox * P.sw) - P.pad_left;
                for (var j = 0u; j < 4u; j++) {
                    let s = min(s0 + j, P.s - 1u);
                    let sx = src_index(ix0 + i32(s * P.dw), i32(P.w));
                    if (sx >= 0) {
                        xv[j] = x[xrow + u32(sx)];
                    }
                }
                let p = dyn + oy * P.ow + ox;
                acc0 = fma(vec4<T>(dy[p + k0 * ohw]), xv, acc0);
                if (KB > 1u) {
                    acc1 = fma(vec4<T>(dy[p + kk1 * ohw]), xv, acc1);
                }
                if (KB > 2u) {
                    acc2 = fma(vec4<T>(dy[p + kk2 * ohw]), xv, acc2);
                }
                if (KB > 3u) {
                    acc3 = fma(vec4<T>(dy[p + kk3 * ohw]), xv, acc3);
                }
            }
        }
    }
    let rr = select(r, P.r - 1u - r, FLIP);
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
            if (s < P.s) {
                let ss = select(s, P.s - 1u - s, FLIP);
                let o = P.dw_off + ((k * P.cg + ci) * P.r + rr) * P.s + ss;
                var v = a[j];
                if (ACCUMULATE) {
                    v += dw[o];
                }
                dw[o] = v;
            }
        }
    }
}
