// Packs convolution weights into the weight image of conv2d_implicit.wgsl (the same output
// as pack_conv_weights_image.wgsl) when the four output channels of a texel are consecutive
// runs of the kernel taps in the weight buffer: the channel-swapped view of the input
// gradient as a forward convolution (k_stride == R * S). Then the 4 * R * S floats of
// (reduction channel cl, output channels col0..col0+3, every tap) are one contiguous,
// texel-aligned run: R * S texels of the verbatim weight image hold R * S packed texels,
// transposed here in registers. One texel load per packed texel instead of four
// single-channel loads, each with its own index math, in the generic packer; on lavapipe
// the input-gradient weight pack of shape d goes from ~5 ms to ~3 ms.
// (A forward-layout variant, four runs of 4 * R * S floats per invocation, was slower than
// the generic packer: its 36-texel register block spills.)
//
// Preconditions checked by the host (src/conv/implicit.rs): k_stride == RS <= 9; w_off,
// g_stride and c_stride multiples of 4; hb a multiple of 8. RS is an override constant, so
// the tap loops unroll and register indices are static.
//
// One invocation per (panel pn, 8-channel block cb, texel column cq of the panel): the 8 x RS
// texels of rows L = pn * kp + (cb * RS + tap) * 8 + j, j = 0..7, at texel
// x = (L / hb) * pw + cq, y = L % hb, written to dst[(y - y_lo) * dst_row + x] for rows
// y_lo <= y < y_hi (the staging buffer that the host copies into the image). Taps are
// rotated for true convolution (FLIP); output channels >= kg and reduction channels >= cg
// are written as 0. Loads are clamped to the image's last copied texel (`texels`).
//
// Layouts: see conv2d_implicit.wgsl; the source image holds float i of the weight buffer at
// texel i / 4 of rows of tw texels (tw a power of two), channel i % 4.

struct Params {
    kg: u32, cg: u32, r: u32, s: u32,
    kp: u32, groups_n: u32, hb: u32, rows_total: u32,
    g_stride: u32, k_stride: u32, c_stride: u32, width: u32,
    total: u32, t0: u32, w_off: u32, pw: u32,
    tw: u32, tw_shift: u32, dst_row: u32, y_lo: u32,
    y_hi: u32, texels: u32, _p1: u32, _p2: u32,
}

@group(0) @binding(0) var<storage, read> P: Params;
// Fields of P read once per invocation (see hoist_params in tools/gen_shaders.py).
var<private> p_texels: u32;
var<private> p_tw: u32;
var<private> p_tw_shift: u32;
var<private> p_t0: u32;
var<private> p_total: u32;
var<private> p_pw: u32;
var<private> p_kp: u32;
var<private> p_groups_n: u32;
var<private> p_kg: u32;
var<private> p_hb: u32;
var<private> p_cg: u32;
var<private> p_w_off: u32;
var<private> p_g_stride: u32;
var<private> p_c_stride: u32;
var<private> p_y_lo: u32;
var<private> p_y_hi: u32;
var<private> p_dst_row: u32;
@group(0) @binding(1) var src: texture_storage_2d<rgba32float, read>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;

override WG: u32 = 64u;
override FLIP: bool = false;
override RS: u32 = 9u;

fn texel(i: u32) -> vec4<f32> {
    let c = min(i, p_texels - 1u);
    return textureLoad(src, vec2<u32>(c & (p_tw - 1u), c >> p_tw_shift));
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    p_texels = P.texels;
    p_tw = P.tw;
    p_tw_shift = P.tw_shift;
    p_t0 = P.t0;
    p_total = P.total;
    p_pw = P.pw;
    p_kp = P.kp;
    p_groups_n = P.groups_n;
    p_kg = P.kg;
    p_hb = P.hb;
    p_cg = P.cg;
    p_w_off = P.w_off;
    p_g_stride = P.g_stride;
    p_c_stride = P.c_stride;
    p_y_lo = P.y_lo;
    p_y_hi = P.y_hi;
    p_dst_row = P.dst_row;
    // A dispatch covers invocations [t0, total).
    let t = p_t0 + gid.x + gid.y * nwg.x * WG;
    if (t >= p_total) {
        return;
    }
    // pw (texel columns per panel) is a power of two.
    let pws = countTrailingZeros(p_pw);
    let cq = t & (p_pw - 1u);
    let rest = t >> pws;
    let cb8 = p_kp / (8u * RS);
    let pn = rest / cb8;
    let cb = rest - pn * cb8;
    let g = pn / p_groups_n;
    let tn = pn - g * p_groups_n;
    let col0 = (tn * p_pw + cq) * 4u;
    let keep = vec4<bool>(col0 < p_kg, col0 + 1u < p_kg, col0 + 2u < p_kg, col0 + 3u < p_kg);
    let lbase = pn * p_kp + cb * RS * 8u;
    let xb0 = lbase / p_hb;
    let yb0 = lbase - xb0 * p_hb;
    for (var j = 0u; j < 8u; j++) {
        let cl = cb * 8u + j;
        let kj = keep & vec4<bool>(cl < p_cg);
        let f0 = p_w_off + g * p_g_stride + min(cl, p_cg - 1u) * p_c_stride + col0 * RS;
        let tb = f0 >> 2u;
        var run: array<vec4<f32>, 9>;
        for (var i = 0u; i < RS; i++) {
            run[i] = texel(tb + i);
        }
        var xb = xb0;
        var yb = yb0;
        for (var ti = 0u; ti < RS; ti++) {
            var st = ti;
            if (FLIP) {
                st = RS - 1u - ti;
            }
            let f1 = RS + st;
            let f2 = 2u * RS + st;
            let f3 = 3u * RS + st;
            let v = vec4<f32>(run[st / 4u][st % 4u], run[f1 / 4u][f1 % 4u], run[f2 / 4u][f2 % 4u], run[f3 / 4u][f3 % 4u]);
            let y = yb + j;
            if (y >= p_y_lo && y < p_y_hi) {
                dst[(y - p_y_lo) * p_dst_row + xb * p_pw + cq] = select(vec4<f32>(0.0), v, kj);
            }
            yb += 8u;
            if (yb >= p_hb) {
                yb -= p_hb;
                xb += 1u;
            }
        }
    }
}
