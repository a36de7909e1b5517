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
// Preconditions checked by the launcher: k_stride == RS <= 9; w_off, g_stride and c_stride
// multiples of 4; hb a multiple of 8. RS is an override constant, so the tap loops unroll and
// register indices are static.
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

@group(0) @binding(0) var<storage, read> P: Params;
@group(0) @binding(1) var src: texture_storage_2d<rgba32float, read>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;

// `struct Params` and the override constants WG, FLIP and RS are declared by
// `pack_conv_weights::runs_source` (`PackWeightsParams`, `PackWeightsRunsSpec`).

fn texel(i: u32) -> vec4<f32> {
    let c = min(i, P.texels - 1u);
    return textureLoad(src, vec2<u32>(c & (P.tw - 1u), c >> P.tw_shift));
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    // A dispatch covers invocations [t0, total).
    let t = P.t0 + gid.x + gid.y * nwg.x * WG;
    if (t >= P.total) {
        return;
    }
    // pw (texel columns per panel) is a power of two.
    let pws = countTrailingZeros(P.pw);
    let cq = t & (P.pw - 1u);
    let rest = t >> pws;
    let cb8 = P.kp / (8u * RS);
    let pn = rest / cb8;
    let cb = rest - pn * cb8;
    let g = pn / P.groups_n;
    let tn = pn - g * P.groups_n;
    let col0 = (tn * P.pw + cq) * 4u;
    let keep = vec4<bool>(col0 < P.kg, col0 + 1u < P.kg, col0 + 2u < P.kg, col0 + 3u < P.kg);
    let lbase = pn * P.kp + cb * RS * 8u;
    let xb0 = lbase / P.hb;
    let yb0 = lbase - xb0 * P.hb;
    for (var j = 0u; j < 8u; j++) {
        let cl = cb * 8u + j;
        let kj = keep & vec4<bool>(cl < P.cg);
        let f0 = P.w_off + g * P.g_stride + min(cl, P.cg - 1u) * P.c_stride + col0 * RS;
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
            if (y >= P.y_lo && y < P.y_hi) {
                dst[(y - P.y_lo) * P.dst_row + xb * P.pw + cq] = select(vec4<f32>(0.0), v, kj);
            }
            yb += 8u;
            if (yb >= P.hb) {
                yb -= P.hb;
                xb += 1u;
            }
        }
    }
}
