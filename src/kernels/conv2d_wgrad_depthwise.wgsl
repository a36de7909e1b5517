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

// Params, overrides and src_index are prepended by src/kernels/conv2d_wgrad_depthwise.rs.
@group(0) @binding(0) var<storage, read> P: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> part: array<f32>;

// x at column ix of the row starting at `row` (0 in the zero padding).
fn xval(row: u32, ix: i32) -> f32 {
    let sx = src_index(ix, i32(P.w));
    return select(0.0, x[row + u32(max(sx, 0))], sx >= 0);
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = gid.x + gid.y * nwg.x * WG;
    if (id >= P.total) {
        return;
    }
    let band = id % P.nb;
    let t = id / P.nb;
    let r = t % P.r;
    let k = t / P.r;
    let c = k / P.kg;
    var acc: array<vec4<f32>, 7>;
    for (var s = 0u; s < 7u; s++) {
        acc[s] = vec4<f32>(0.0);
    }
    let row_lo = band * P.rb;
    let row_hi = min(row_lo + P.rb, P.nr);
    let last = P.ow - 1u;
    for (var fr = row_lo; fr < row_hi; fr++) {
        let n = fr / P.oh;
        let oy = fr - n * P.oh;
        let sy = src_index(i32(oy * P.sh + r * P.dh) - P.pad_top, i32(P.h));
        if (sy < 0) {
            continue;
        }
        let xrow = ((n * P.c + c) * P.h + u32(sy)) * P.w;
        let dyrow = ((n * P.k + k) * P.oh + oy) * P.ow;
        for (var ox = 0u; ox < P.ow; ox += 4u) {
            let d = vec4<f32>(
                dy[dyrow + ox],
                select(0.0, dy[dyrow + min(ox + 1u, last)], ox + 1u < P.ow),
                select(0.0, dy[dyrow + min(ox + 2u, last)], ox + 2u < P.ow),
                select(0.0, dy[dyrow + min(ox + 3u, last)], ox + 3u < P.ow),
            );
            let ix0 = i32(ox * P.sw) - P.pad_left;
            if (COLS1) {
                var u: array<f32, 10>;
                for (var i = 0u; i < S + 3u; i++) {
                    u[i] = xval(xrow, ix0 + i32(i));
                }
                for (var s = 0u; s < S; s++) {
                    acc[s] = fma(d, vec4<f32>(u[s], u[s + 1u], u[s + 2u], u[s + 3u]), acc[s]);
                }
            } else {
                let sw = i32(P.sw);
                for (var s = 0u; s < S; s++) {
                    let ix = ix0 + i32(s * P.dw);
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
    let rr = select(r, P.r - 1u - r, FLIP);
    for (var s = 0u; s < S; s++) {
        let ss = select(s, S - 1u - s, FLIP);
        let a = acc[s];
        part[((k * P.r + rr) * S + ss) * P.nb + band] = (a.x + a.y) + (a.z + a.w);
    }
}
