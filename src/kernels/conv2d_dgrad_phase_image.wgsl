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

// Params and overrides are prepended by src/kernels/conv2d_dgrad_phase_image.rs.
@group(0) @binding(0) var<storage, read> P: Params;
@group(0) @binding(1) var tdy: texture_storage_2d<rgba32float, read>;
@group(0) @binding(2) var tw: texture_storage_2d<rgba32float, read>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;

// Texels of the sliding window: SHIFT + 8 + SL - 1 columns.
const NT_MAX: u32 = 5u;

fn dload(tx0: u32, ty: u32, q: i32) -> vec4<f32> {
    let inside = q >= 0 && q < i32(P.owq);
    let v = textureLoad(tdy, vec2<u32>(tx0 + u32(clamp(q, 0, i32(P.owq) - 1)), ty));
    return select(vec4<f32>(0.0), v, inside);
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    // No early return (it would put the whole body under an execution mask on lavapipe):
    // invocations past the end compute the last one's values and skip their stores.
    let id0 = gid.x + gid.y * nwg.x * WG;
    let live = id0 < P.total;
    let id = min(id0, P.total - 1u);
    // id -> (8-column block, phase row, channel block, group, image)
    let bb = id % P.bblocks;
    var t = id / P.bblocks;
    let a = t % P.a_n;
    t = t / P.a_n;
    let cb = t % P.cb;
    t = t / P.cb;
    let g = t % (P.c / P.cg);
    let n = t / (P.c / P.cg);
    let nt = (SHIFT + 8u + SL - 1u + 3u) / 4u;
    let q0 = i32(2u * bb) + P.qoff;
    var acc: array<vec4<f32>, 8>;
    for (var i = 0u; i < 8u; i++) {
        acc[i] = vec4<f32>(0.0);
    }
    // One loop over (output channel k, sub-kernel row j), j fastest, with counters instead of
    // two nested loops: lavapipe merges every loop-carried value with the loop mask at the end
    // of each iteration of each loop level (docs/lavapipe-driver-notes.md section 11). Rows of
    // dy outside the image read a clamped row and are zeroed. The sub-kernel weights of
    // (k, j) are the SL texels at wbase + (((g * cb_n + cb) * kg + k) * rj + j) * SL: step t's.
    var plane = (n * P.k + g * P.kg) * P.oh;
    var j = 0u;
    var wt = P.wbase + (g * P.cb + cb) * P.kg * P.rj * SL;
    let steps = P.kg * P.rj;
    for (var st = 0u; st < steps; st++) {
        let oy = i32(a + j) - P.pty;
        let inside = oy >= 0 && oy < i32(P.oh);
        let dr = plane + u32(clamp(oy, 0, i32(P.oh) - 1));
        let ty = dr >> P.rows_shift;
        let tx0 = (dr & P.dy_rows_mask) * P.owq;
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
        let ej = j == P.rj;
        j = select(j, 0u, ej);
        plane = select(plane, plane + P.oh, ej);
    }
    let oy = P.py + P.sh * a;
    for (var ci = 0u; ci < 4u; ci++) {
        let c = cb * 4u + ci;
        if (c >= P.cg) {
            break;
        }
        let ch = g * P.cg + c;
        var b = 0.0;
        if (HAS_BIAS) {
            b = bias[ch];
        }
        let row = ((n * P.c + ch) * P.h + oy) * P.w;
        for (var i = 0u; i < 8u; i++) {
            let bx = bb * 8u + i;
            if (live && bx < P.b_n) {
                dx[row + P.px + P.sw * bx] = acc[i][ci] + b;
            }
        }
    }
}
