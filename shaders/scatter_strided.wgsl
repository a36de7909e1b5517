// Input gradient of a strided 1x1 convolution from the gradient G of its sampled pixels:
// dx[plane, iy, ix] = G[plane, oy, ox] where iy + top = oy * sh and ix + left = ox * sw
// (0 <= oy < oh, 0 <= ox < ow), else 0; plus bias[plane % c] everywhere with HAS_BIAS (the
// transposed convolution). G is the 1x1 stride-1 forward convolution of dy with the
// channel-swapped weights (the implicit GEMM), so no column matrix is written.
// One invocation per row of dx: the divisions run once per row, the columns step a phase
// counter. Every element of dx is written.

struct Params {
    planes: u32, h: u32, w: u32, oh: u32,
    ow: u32, sh: u32, sw: u32, top: u32,
    left: u32, c: u32, total: u32, t0: u32,
}

@group(0) @binding(0) var<storage, read> P: Params;
// Fields of P read once per invocation (see hoist_params in tools/gen_shaders.py).
var<private> p_t0: u32;
var<private> p_total: u32;
var<private> p_h: u32;
var<private> p_c: u32;
var<private> p_top: u32;
var<private> p_sh: u32;
var<private> p_oh: u32;
var<private> p_ow: u32;
var<private> p_w: u32;
var<private> p_left: u32;
var<private> p_sw: u32;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

override WG: u32 = 64u;
override HAS_BIAS: bool = false;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    p_t0 = P.t0;
    p_total = P.total;
    p_h = P.h;
    p_c = P.c;
    p_top = P.top;
    p_sh = P.sh;
    p_oh = P.oh;
    p_ow = P.ow;
    p_w = P.w;
    p_left = P.left;
    p_sw = P.sw;
    // A dispatch covers rows [t0, total).
    let t = p_t0 + gid.x + gid.y * nwg.x * WG;
    if (t >= p_total) {
        return;
    }
    let plane = t / p_h;
    let iy = t - plane * p_h;
    var b = 0.0;
    if (HAS_BIAS) {
        b = bias[plane % p_c];
    }
    let ty = iy + p_top;
    let oy = ty / p_sh;
    let row_ok = ty - oy * p_sh == 0u && oy < p_oh;
    let sbase = (plane * p_oh + min(oy, p_oh - 1u)) * p_ow;
    let dbase = t * p_w;
    var ox = p_left / p_sw;
    var ph = p_left - ox * p_sw;
    for (var ix = 0u; ix < p_w; ix++) {
        var v = b;
        if (row_ok && ph == 0u && ox < p_ow) {
            v += src[sbase + ox];
        }
        dst[dbase + ix] = v;
        ph += 1u;
        if (ph == p_sw) {
            ph = 0u;
            ox += 1u;
        }
    }
}
