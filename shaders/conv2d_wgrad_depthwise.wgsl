// Weight gradient of a depthwise convolution (one input channel per group, any channel
// multiplier kg), in two deterministic steps:
//   1. this kernel: one invocation per (output channel k, kernel row r, band of dy rows) sums
//      dy[n,k,oy,ox] · xpad[n, k / kg, oy*sh - pt + r*dh, ox*sw - pl + s*dw] over the rows of
//      its band (rows numbered n * OH + oy) for every kernel column s, four output columns
//      at a time (one vec4 accumulator per s), and writes one partial per tap:
//        part[((k * R + r') * S + s') * NB + band]     (r', s' flipped when FLIP)
//   2. reduce_rows.wgsl sums the NB partials of each tap in band order into dw[K, 1, R, S].
// The direct weight-gradient kernel gives a depthwise layer only K * R invocations (each
// summing every pixel); the bands make it N * OH / RB times wider.
// COLS1 (column stride 1, column dilation 1): the 4 + S - 1 input columns of a step are
// loaded once and shared by the S taps; else each (column, tap) is loaded on its own.
// xpad reads x through the padding mode's index mapping (as the forward kernels do).

struct Params {
    n: u32, c: u32, h: u32, w: u32,
    k: u32, kg: u32, r: u32, oh: u32,
    ow: u32, sh: u32, sw: u32, dh: u32,
    dw: u32, pad_top: i32, pad_left: i32, nr: u32,
    rb: u32, nb: u32, total: u32, x_rows_shift: u32,
    dy_rows_shift: u32, _p0: u32, _p1: u32, _p2: u32,
}

@group(0) @binding(0) var<storage, read> P: Params;
// Fields of P read once per invocation (see hoist_params in tools/gen_shaders.py).
var<private> p_w: u32;
var<private> p_total: u32;
var<private> p_nb: u32;
var<private> p_r: u32;
var<private> p_kg: u32;
var<private> p_rb: u32;
var<private> p_nr: u32;
var<private> p_ow: u32;
var<private> p_oh: u32;
var<private> p_sh: u32;
var<private> p_dh: u32;
var<private> p_pad_top: i32;
var<private> p_h: u32;
var<private> p_c: u32;
var<private> p_k: u32;
var<private> p_sw: u32;
var<private> p_pad_left: i32;
var<private> p_dw: u32;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> part: array<f32>;

override WG: u32 = 64u;
// Kernel width, 1..=7.
override S: u32 = 3u;
override COLS1: bool = true;
override PAD_MODE: u32 = 0u;
override FLIP: bool = false;

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

// x at column ix of the row starting at `row` (0 in the zero padding).
fn xval(row: u32, ix: i32) -> f32 {
    let sx = src_index(ix, i32(p_w));
    return select(0.0, x[row + u32(max(sx, 0))], sx >= 0);
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    p_w = P.w;
    p_total = P.total;
    p_nb = P.nb;
    p_r = P.r;
    p_kg = P.kg;
    p_rb = P.rb;
    p_nr = P.nr;
    p_ow = P.ow;
    p_oh = P.oh;
    p_sh = P.sh;
    p_dh = P.dh;
    p_pad_top = P.pad_top;
    p_h = P.h;
    p_c = P.c;
    p_k = P.k;
    p_sw = P.sw;
    p_pad_left = P.pad_left;
    p_dw = P.dw;
    let id = gid.x + gid.y * nwg.x * WG;
    if (id >= p_total) {
        return;
    }
    let band = id % p_nb;
    let t = id / p_nb;
    let r = t % p_r;
    let k = t / p_r;
    let c = k / p_kg;
    var acc: array<vec4<f32>, 7>;
    for (var s = 0u; s < 7u; s++) {
        acc[s] = vec4<f32>(0.0);
    }
    let row_lo = band * p_rb;
    let row_hi = min(row_lo + p_rb, p_nr);
    let last = p_ow - 1u;
    for (var fr = row_lo; fr < row_hi; fr++) {
        let n = fr / p_oh;
        let oy = fr - n * p_oh;
        let sy = src_index(i32(oy * p_sh + r * p_dh) - p_pad_top, i32(p_h));
        if (sy < 0) {
            continue;
        }
        let xrow = ((n * p_c + c) * p_h + u32(sy)) * p_w;
        let dyrow = ((n * p_k + k) * p_oh + oy) * p_ow;
        for (var ox = 0u; ox < p_ow; ox += 4u) {
            let d = vec4<f32>(
                dy[dyrow + ox],
                select(0.0, dy[dyrow + min(ox + 1u, last)], ox + 1u < p_ow),
                select(0.0, dy[dyrow + min(ox + 2u, last)], ox + 2u < p_ow),
                select(0.0, dy[dyrow + min(ox + 3u, last)], ox + 3u < p_ow),
            );
            let ix0 = i32(ox * p_sw) - p_pad_left;
            if (COLS1) {
                var u: array<f32, 10>;
                for (var i = 0u; i < S + 3u; i++) {
                    u[i] = xval(xrow, ix0 + i32(i));
                }
                for (var s = 0u; s < S; s++) {
                    acc[s] = fma(d, vec4<f32>(u[s], u[s + 1u], u[s + 2u], u[s + 3u]), acc[s]);
                }
            } else {
                let sw = i32(p_sw);
                for (var s = 0u; s < S; s++) {
                    let ix = ix0 + i32(s * p_dw);
                    let v = vec4<f32>(
                        xval(xrow, ix),
                        xval(xrow, ix + sw),
                        xval(xrow, ix + 2 * sw),
                        xval(xrow, ix + 3 * sw),
                    );
                    acc[s] = fma(d, v, acc[s]);
                }
            }
        }
    }
    let rr = select(r, p_r - 1u - r, FLIP);
    for (var s = 0u; s < S; s++) {
        let ss = select(s, S - 1u - s, FLIP);
        let a = acc[s];
        part[((k * p_r + rr) * S + ss) * p_nb + band] = (a.x + a.y) + (a.z + a.w);
    }
}
