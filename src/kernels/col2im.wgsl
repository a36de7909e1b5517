// col2im, gathered (no atomics): folds the column-gradient matrix of im2col back onto the
// input. For one launch of `n` images and output pixels [p0, p0 + np):
//   dx[n,c,iy,ix] (+)= Σ_{r,s : iy + pt - r*dh = oy*sh, ix + pl - s*dw = ox*sw,
//                          p = oy*ow + ox in [p0, p0+np)} dcol[(img*G + g)*crs + q][p - p0]
// with q = (ci*R + rr)*S + ss and (rr, ss) = tap(r, s), the layout written by im2col.wgsl
// (row stride ldp). Zero-padding semantics; other modes fold with pad_fold.wgsl.
// ACCUMULATE adds to dx (for the second and later pixel ranges of an image).

// Params and overrides are prepended by src/kernels/col2im.rs.
@group(0) @binding(0) var<storage, read> P: Params;
@group(0) @binding(1) var<storage, read> dcol: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = gid.x + gid.y * nwg.x * WG;
    if (id >= P.total) {
        return;
    }
    let ix = id % P.w;
    var t = id / P.w;
    let iy = t % P.h;
    t = t / P.h;
    let c = t % P.c;
    let img = t / P.c;
    let g = c / P.cg;
    let ci = c % P.cg;
    let crs = P.cg * P.r * P.s;
    let p_end = P.p0 + P.np;
    let plane = (img * P.groups + g) * crs;
    var acc = 0.0;
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
            let tx = i32(ix) + P.pad_left - i32(s * P.dw);
            if (tx < 0 || u32(tx) % P.sw != 0u) {
                continue;
            }
            let ox = u32(tx) / P.sw;
            if (ox >= P.ow) {
                continue;
            }
            let p = oy * P.ow + ox;
            if (p < P.p0 || p >= p_end) {
                continue;
            }
            let ss = select(s, P.s - 1u - s, FLIP);
            let q = (ci * P.r + rr) * P.s + ss;
            acc += dcol[(plane + q) * P.ldp + (p - P.p0)];
        }
    }
    let o = P.dx_off + id;
    if (ACCUMULATE) {
        acc += dx[o];
    }
    if (HAS_BIAS) {
        acc += bias[c];
    }
    dx[o] = acc;
}
