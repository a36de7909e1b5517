// Input gradient of a strided convolution for CPU-like adapters (lavapipe), by phases: the
// pixels (py + sh * a, px + sw * b) of dx form phase (py, px), and they receive taps
// r = r0 + sh * j', s = s0 + sw * l' only, from dy rows a + q - j'. So each phase is a
// stride-1 correlation of dy with a sub-kernel of RJ x SL taps (rotated 180°, packed by
// dgrad_phase_weights.wgsl) and no column matrix: one dispatch per phase,
//   dx[n, g*CG + c, py + sh*a, px + sw*b] = bias[c] + Σ_{k < KG, j < RJ, l < SL}
//       dy[n, g*KG + k, a + j - PTY, b + l - PLX] · wp[g, c, k, j, l].
// One invocation computes 8 consecutive b of one phase row for 4 input channels (one
// texel of weights per tap). dy is a verbatim image copy (rows (n * K + k) * OH + oy,
// ROWS_SHIFT: log2 of the dy rows per texture row), read as a sliding window of texels:
// output i, tap l reads window element SHIFT + i + l, where the window starts at texel
// 2 * bb + qoff of the row (SHIFT = (-PLX) mod 4, qoff = (-PLX - SHIFT) / 4; OW a multiple
// of 4, the host checks). Zero padding only (other modes fold the padded gradient).

struct Params {
    c: u32, h: u32, w: u32, k: u32,
    oh: u32, ow: u32, cg: u32, kg: u32,
    cb: u32, sh: u32, sw: u32, py: u32,
    px: u32, a_n: u32, b_n: u32, bblocks: u32,
    rj: u32, pty: i32, qoff: i32, owq: u32,
    rows_shift: u32, wbase: u32, total: u32, dy_rows_mask: u32,
}

@group(0) @binding(0) var<storage, read> P: Params;
// Fields of P read once per invocation (see hoist_params in tools/gen_shaders.py).
var<private> p_owq: u32;
var<private> p_total: u32;
var<private> p_bblocks: u32;
var<private> p_a_n: u32;
var<private> p_cb: u32;
var<private> p_c: u32;
var<private> p_cg: u32;
var<private> p_qoff: i32;
var<private> p_kg: u32;
var<private> p_k: u32;
var<private> p_oh: u32;
var<private> p_wbase: u32;
var<private> p_rj: u32;
var<private> p_pty: i32;
var<private> p_rows_shift: u32;
var<private> p_dy_rows_mask: u32;
var<private> p_py: u32;
var<private> p_sh: u32;
var<private> p_h: u32;
var<private> p_w: u32;
var<private> p_b_n: u32;
var<private> p_px: u32;
var<private> p_sw: u32;
@group(0) @binding(1) var tdy: texture_storage_2d<rgba32float, read>;
@group(0) @binding(2) var tw: texture_storage_2d<rgba32float, read>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;

override WG: u32 = 64u;
// Sub-kernel width (0..=8) and the window's offset in its first texel (0..=3).
override SL: u32 = 4u;
override SHIFT: u32 = 0u;
override HAS_BIAS: bool = false;

// Texels of the sliding window: SHIFT + 8 + SL - 1 columns.
const NT_MAX: u32 = 5u;

fn dload(tx0: u32, ty: u32, q: i32) -> vec4<f32> {
    let inside = q >= 0 && q < i32(p_owq);
    let v = textureLoad(tdy, vec2<u32>(tx0 + u32(clamp(q, 0, i32(p_owq) - 1)), ty));
    return select(vec4<f32>(0.0), v, inside);
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    p_owq = P.owq;
    p_total = P.total;
    p_bblocks = P.bblocks;
    p_a_n = P.a_n;
    p_cb = P.cb;
    p_c = P.c;
    p_cg = P.cg;
    p_qoff = P.qoff;
    p_kg = P.kg;
    p_k = P.k;
    p_oh = P.oh;
    p_wbase = P.wbase;
    p_rj = P.rj;
    p_pty = P.pty;
    p_rows_shift = P.rows_shift;
    p_dy_rows_mask = P.dy_rows_mask;
    p_py = P.py;
    p_sh = P.sh;
    p_h = P.h;
    p_w = P.w;
    p_b_n = P.b_n;
    p_px = P.px;
    p_sw = P.sw;
    // No early return (it would put the whole body under an execution mask on lavapipe):
    // invocations past the end compute the last one's values and skip their stores.
    let id0 = gid.x + gid.y * nwg.x * WG;
    let live = id0 < p_total;
    let id = min(id0, p_total - 1u);
    // id -> (8-column block, phase row, channel block, group, image)
    let bb = id % p_bblocks;
    var t = id / p_bblocks;
    let a = t % p_a_n;
    t = t / p_a_n;
    let cb = t % p_cb;
    t = t / p_cb;
    let g = t % (p_c / p_cg);
    let n = t / (p_c / p_cg);
    let nt = (SHIFT + 8u + SL - 1u + 3u) / 4u;
    let q0 = i32(2u * bb) + p_qoff;
    var acc: array<vec4<f32>, 8>;
    for (var i = 0u; i < 8u; i++) {
        acc[i] = vec4<f32>(0.0);
    }
    // One loop over (output channel k, sub-kernel row j), j fastest, with counters instead of
    // two nested loops: lavapipe merges every loop-carried value with the loop mask at the end
    // of each iteration of each loop level (docs/lavapipe-driver-notes.md section 11). Rows of
    // dy outside the image read a clamped row and are zeroed. The sub-kernel weights of
    // (k, j) are the SL texels at wbase + (((g * cb_n + cb) * kg + k) * rj + j) * SL: step t's.
    var plane = (n * p_k + g * p_kg) * p_oh;
    var j = 0u;
    var wt = p_wbase + (g * p_cb + cb) * p_kg * p_rj * SL;
    let steps = p_kg * p_rj;
    for (var st = 0u; st < steps; st++) {
        let oy = i32(a + j) - p_pty;
        let inside = oy >= 0 && oy < i32(p_oh);
        let dr = plane + u32(clamp(oy, 0, i32(p_oh) - 1));
        let ty = dr >> p_rows_shift;
        let tx0 = (dr & p_dy_rows_mask) * p_owq;
        var u: array<f32, 20>;
        for (var e = 0u; e < NT_MAX; e++) {
            if (e < nt) {
                let v = select(vec4<f32>(0.0), dload(tx0, ty, q0 + i32(e)), inside);
                u[4u * e] = v.x;
                u[4u * e + 1u] = v.y;
                u[4u * e + 2u] = v.z;
                u[4u * e + 3u] = v.w;
            }
        }
        for (var l = 0u; l < SL; l++) {
            let wi = wt + l;
            let wv = textureLoad(tw, vec2<u32>(wi & 1023u, wi >> 10u));
            for (var i = 0u; i < 8u; i++) {
                acc[i] = fma(vec4<f32>(u[SHIFT + i + l]), wv, acc[i]);
            }
        }
        wt += SL;
        j += 1u;
        let ej = j == p_rj;
        j = select(j, 0u, ej);
        plane = select(plane, plane + p_oh, ej);
    }
    let oy = p_py + p_sh * a;
    for (var ci = 0u; ci < 4u; ci++) {
        let c = cb * 4u + ci;
        if (c >= p_cg) {
            break;
        }
        let ch = g * p_cg + c;
        var b = 0.0;
        if (HAS_BIAS) {
            b = bias[ch];
        }
        let row = ((n * p_c + ch) * p_h + oy) * p_w;
        for (var i = 0u; i < 8u; i++) {
            let bx = bb * 8u + i;
            if (live && bx < p_b_n) {
                dx[row + p_px + p_sw * bx] = acc[i][ci] + b;
            }
        }
    }
}
