// im2col: unfolds the input patches of a convolution into a K-major column matrix, the
// B operand of the GEMM `y[k, p] = Σ_q w[k, q] · col[q, p]`.
//
// A launch covers `n` images (from element offset x_off of x) and output pixels
// [p0, p0 + np), all groups. Layout, with q = (ci * R + rr) * S + ss the weight index
// within a group and p' = p - p0:
//   col[((img * groups + g) * cg * R * S + q) * ldp + p']   (ldp % 4 == 0, zero for p' >= np)
// Row q holds the input sample that multiplies w[k, ci, rr, ss]: for true convolution
// (FLIP) that is kernel tap (R-1-rr, S-1-ss), so the weights are used as stored. Padding
// modes are resolved by index mapping. `total` counts invocations (8 elements each).
//
// With TRANSPOSED the layout is pixel-major, for the weight gradient:
//   col[((img * groups + g) * np + p') * ldq + q]            (ldq % 4 == 0, zero for q >= cg*R*S)

// Params, overrides and src_index are prepended by src/kernels/im2col.rs.
@group(0) @binding(0) var<storage, read> P: Params;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read_write> col: array<T>;

fn sample(img: u32, g: u32, ci: u32, r: u32, s: u32, oy: u32, ox: u32) -> T {
    let sy = src_index(i32(oy * P.sh + r * P.dh) - P.pad_top, i32(P.h));
    let sx = src_index(i32(ox * P.sw + s * P.dw) - P.pad_left, i32(P.w));
    var v = T(0.0);
    if (sy >= 0 && sx >= 0) {
        let plane = img * P.c + g * P.cg + ci;
        v = x[P.x_off + (plane * P.h + u32(sy)) * P.w + u32(sx)];
    }
    return v;
}

// One invocation writes 8 consecutive elements of a row of `col` (pixels, or weight
// indices when TRANSPOSED), stepping the decomposed coordinates instead of dividing for
// every element. `total` counts invocations.
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = gid.x + gid.y * nwg.x * WG;
    if (id >= P.total) {
        return;
    }
    let rs = P.r * P.s;
    let crs = P.cg * rs;
    if (TRANSPOSED) {
        let blocks = (P.ldq + 7u) / 8u;
        let q0 = (id % blocks) * 8u;
        var t = id / blocks;
        let pp = t % P.np;
        t = t / P.np;
        let g = t % P.groups;
        let img = t / P.groups;
        let p = P.p0 + pp;
        let oy = p / P.ow;
        let ox = p % P.ow;
        var ci = q0 / rs;
        var rr = (q0 % rs) / P.s;
        var ss = q0 % P.s;
        let base = ((img * P.groups + g) * P.np + pp) * P.ldq;
        for (var j = 0u; j < 8u; j++) {
            let q = q0 + j;
            if (q >= P.ldq) {
                break;
            }
            var v = T(0.0);
            if (q < crs) {
                let r = select(rr, P.r - 1u - rr, FLIP);
                let s = select(ss, P.s - 1u - ss, FLIP);
                v = sample(img, g, ci, r, s, oy, ox);
            }
            col[base + q] = v;
            ss += 1u;
            if (ss == P.s) {
                ss = 0u;
                rr += 1u;
                if (rr == P.r) {
                    rr = 0u;
                    ci += 1u;
                }
            }
        }
    } else {
        let blocks = (P.ldp + 7u) / 8u;
        let pp0 = (id % blocks) * 8u;
        var t = id / blocks;
        let q = t % crs;
        t = t / crs;
        let g = t % P.groups;
        let img = t / P.groups;
        let ci = q / rs;
        let rr = (q % rs) / P.s;
        let ss = q % P.s;
        let r = select(rr, P.r - 1u - rr, FLIP);
        let s = select(ss, P.s - 1u - ss, FLIP);
        let p = P.p0 + pp0;
        var oy = p / P.ow;
        var ox = p % P.ow;
        let base = ((img * P.groups + g) * crs + q) * P.ldp;
        for (var j = 0u; j < 8u; j++) {
            let pp = pp0 + j;
            if (pp >= P.ldp) {
                break;
            }
            var v = T(0.0);
            if (pp < P.np) {
                v = sample(img, g, ci, r, s, oy, ox);
            }
            col[base + pp] = v;
            ox += 1u;
            if (ox == P.ow) {
                ox = 0u;
                oy += 1u;
            }
        }
    }
}
