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

struct Params {
    n: u32, c: u32, h: u32, w: u32,
    cg: u32, groups: u32, r: u32, s: u32,
    oh: u32, ow: u32, sh: u32, sw: u32,
    dh: u32, dw: u32, pad_top: i32, pad_left: i32,
    x_off: u32, p0: u32, np: u32, ldp: u32,
    total: u32, ldq: u32, _p1: u32, _p2: u32,
}

@group(0) @binding(0) var<storage, read> P: Params;
// Fields of P read once per invocation (see hoist_params in tools/gen_shaders.py).
var<private> p_sh: u32;
var<private> p_dh: u32;
var<private> p_pad_top: i32;
var<private> p_h: u32;
var<private> p_sw: u32;
var<private> p_dw: u32;
var<private> p_pad_left: i32;
var<private> p_w: u32;
var<private> p_c: u32;
var<private> p_cg: u32;
var<private> p_x_off: u32;
var<private> p_total: u32;
var<private> p_r: u32;
var<private> p_s: u32;
var<private> p_ldq: u32;
var<private> p_np: u32;
var<private> p_groups: u32;
var<private> p_p0: u32;
var<private> p_ow: u32;
var<private> p_ldp: u32;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> col: array<f32>;

override WG: u32 = 64u;
override PAD_MODE: u32 = 0u;
override FLIP: bool = false;
override TRANSPOSED: bool = false;

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

fn sample(img: u32, g: u32, ci: u32, r: u32, s: u32, oy: u32, ox: u32) -> f32 {
    let sy = src_index(i32(oy * p_sh + r * p_dh) - p_pad_top, i32(p_h));
    let sx = src_index(i32(ox * p_sw + s * p_dw) - p_pad_left, i32(p_w));
    var v = 0.0;
    if (sy >= 0 && sx >= 0) {
        let plane = img * p_c + g * p_cg + ci;
        v = x[p_x_off + (plane * p_h + u32(sy)) * p_w + u32(sx)];
    }
    return v;
}

// One invocation writes 8 consecutive elements of a row of `col` (pixels, or weight
// indices when TRANSPOSED), stepping the decomposed coordinates instead of dividing for
// every element. `total` counts invocations.
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    p_sh = P.sh;
    p_dh = P.dh;
    p_pad_top = P.pad_top;
    p_h = P.h;
    p_sw = P.sw;
    p_dw = P.dw;
    p_pad_left = P.pad_left;
    p_w = P.w;
    p_c = P.c;
    p_cg = P.cg;
    p_x_off = P.x_off;
    p_total = P.total;
    p_r = P.r;
    p_s = P.s;
    p_ldq = P.ldq;
    p_np = P.np;
    p_groups = P.groups;
    p_p0 = P.p0;
    p_ow = P.ow;
    p_ldp = P.ldp;
    let id = gid.x + gid.y * nwg.x * WG;
    if (id >= p_total) {
        return;
    }
    let rs = p_r * p_s;
    let crs = p_cg * rs;
    if (TRANSPOSED) {
        let blocks = (p_ldq + 7u) / 8u;
        let q0 = (id % blocks) * 8u;
        var t = id / blocks;
        let pp = t % p_np;
        t = t / p_np;
        let g = t % p_groups;
        let img = t / p_groups;
        let p = p_p0 + pp;
        let oy = p / p_ow;
        let ox = p % p_ow;
        var ci = q0 / rs;
        var rr = (q0 % rs) / p_s;
        var ss = q0 % p_s;
        let base = ((img * p_groups + g) * p_np + pp) * p_ldq;
        for (var j = 0u; j < 8u; j++) {
            let q = q0 + j;
            if (q >= p_ldq) {
                break;
            }
            var v = 0.0;
            if (q < crs) {
                let r = select(rr, p_r - 1u - rr, FLIP);
                let s = select(ss, p_s - 1u - ss, FLIP);
                v = sample(img, g, ci, r, s, oy, ox);
            }
            col[base + q] = v;
            ss += 1u;
            if (ss == p_s) {
                ss = 0u;
                rr += 1u;
                if (rr == p_r) {
                    rr = 0u;
                    ci += 1u;
                }
            }
        }
    } else {
        let blocks = (p_ldp + 7u) / 8u;
        let pp0 = (id % blocks) * 8u;
        var t = id / blocks;
        let q = t % crs;
        t = t / crs;
        let g = t % p_groups;
        let img = t / p_groups;
        let ci = q / rs;
        let rr = (q % rs) / p_s;
        let ss = q % p_s;
        let r = select(rr, p_r - 1u - rr, FLIP);
        let s = select(ss, p_s - 1u - ss, FLIP);
        let p = p_p0 + pp0;
        var oy = p / p_ow;
        var ox = p % p_ow;
        let base = ((img * p_groups + g) * crs + q) * p_ldp;
        for (var j = 0u; j < 8u; j++) {
            let pp = pp0 + j;
            if (pp >= p_ldp) {
                break;
            }
            var v = 0.0;
            if (pp < p_np) {
                v = sample(img, g, ci, r, s, oy, ox);
            }
            col[base + pp] = v;
            ox += 1u;
            if (ox == p_ow) {
                ox = 0u;
                oy += 1u;
            }
        }
    }
}
