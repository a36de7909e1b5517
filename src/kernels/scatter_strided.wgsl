// Input gradient of a strided 1x1 convolution from the gradient G of its sampled pixels:
// dx[plane, iy, ix] = G[plane, oy, ox] where iy + top = oy * sh and ix + left = ox * sw
// (0 <= oy < oh, 0 <= ox < ow), else 0; plus bias[plane % c] everywhere with HAS_BIAS (the
// transposed convolution). G is the 1x1 stride-1 forward convolution of dy with the
// channel-swapped weights (the implicit GEMM), so no column matrix is written.
// One invocation per row of dx: the divisions run once per row, the columns step a phase
// counter. Every element of dx is written.

// Params and overrides are prepended by src/kernels/scatter_strided.rs.
@group(0) @binding(0) var<storage, read> P: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    // A dispatch covers rows [t0, total).
    let t = P.t0 + gid.x + gid.y * nwg.x * WG;
    if (t >= P.total) {
        return;
    }
    if (NHWC) {
        // dst [N, H, W, C] from src [N, Ho, Wo, C]: invocation (pixel, 16 channels), the
        // pixel's divisions once per 16 elements.
        let chunks = (P.c + 15u) / 16u;
        let ch = t % chunks;
        let pix = t / chunks;
        let ix = pix % P.w;
        let q = pix / P.w;
        let iy = q % P.h;
        let n = q / P.h;
        let ty = iy + P.top;
        let tx = ix + P.left;
        let oy = ty / P.sh;
        let ox = tx / P.sw;
        let ok = ty - oy * P.sh == 0u && oy < P.oh && tx - ox * P.sw == 0u && ox < P.ow;
        let sbase = ((n * P.oh + min(oy, P.oh - 1u)) * P.ow + min(ox, P.ow - 1u)) * P.c;
        let dbase = pix * P.c;
        let c1 = min(ch * 16u + 16u, P.c);
        for (var c = ch * 16u; c < c1; c++) {
            var v = 0.0;
            if (HAS_BIAS) {
                v = bias[c];
            }
            if (ok) {
                v += src[sbase + c];
            }
            dst[dbase + c] = v;
        }
        return;
    }
    let plane = t / P.h;
    let iy = t - plane * P.h;
    var b = 0.0;
    if (HAS_BIAS) {
        b = bias[plane % P.c];
    }
    let ty = iy + P.top;
    let oy = ty / P.sh;
    let row_ok = ty - oy * P.sh == 0u && oy < P.oh;
    let sbase = (plane * P.oh + min(oy, P.oh - 1u)) * P.ow;
    // NCHW rows.
    let dbase = t * P.w;
    var ox = P.left / P.sw;
    var ph = P.left - ox * P.sw;
    for (var ix = 0u; ix < P.w; ix++) {
        var v = b;
        if (row_ok && ph == 0u && ox < P.ow) {
            v += src[sbase + ox];
        }
        dst[dbase + ix] = v;
        ph += 1u;
        if (ph == P.sw) {
            ph = 0u;
            ox += 1u;
        }
    }
}
