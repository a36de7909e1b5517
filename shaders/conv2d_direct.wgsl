// Direct 2-D convolution, forward (PyTorch semantics: cross-correlation, or true
// convolution when FLIP is set).
//
// x [N, C, H, W], w [K, C/groups, R, S], bias [K], y [N, K, OH, OW], all f32 row-major.
// One invocation computes a register block of KB output channels (of one group) by PB
// consecutive output columns of one output row. Bias is fused. Padding modes are resolved
// by index mapping: nothing is padded in memory.
//
// A launch covers `n` images starting at element offsets x_off / y_off of the bound
// ranges and output rows [oy0, oy0 + rows), so the host can split large problems.

struct Params {
    n: u32, c: u32, h: u32, w: u32,
    k: u32, r: u32, s: u32, cg: u32,
    kg: u32, oh: u32, ow: u32, sh: u32,
    sw: u32, dh: u32, dw: u32, pad_top: i32,
    pad_left: i32, x_off: u32, w_off: u32, b_off: u32,
    y_off: u32, oy0: u32, rows: u32, kblocks: u32,
    kbt: u32, pblocks: u32, total: u32, _pad: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

// Workgroup size (1-D).
override WG: u32 = 64u;
// Output channels per invocation, 1..=8.
override KB: u32 = 4u;
// Output columns per invocation, 1..=8.
override PB: u32 = 4u;
// 0 zeros, 1 reflect, 2 replicate, 3 circular.
override PAD_MODE: u32 = 0u;
override HAS_BIAS: bool = false;
// True convolution: read the kernel rotated by 180 degrees.
override FLIP: bool = false;

// Maps a coordinate of the padded input to the coordinate it reads, -1 for a zero.
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
            return ((i % size) + size) % size;
        }
        default: {
            return -1;
        }
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = gid.x + gid.y * nwg.x * WG;
    if (id >= P.total) {
        return;
    }
    let pb = id % P.pblocks;
    var t = id / P.pblocks;
    let oy = P.oy0 + t % P.rows;
    t = t / P.rows;
    let kbt = t % P.kbt;
    let n = t / P.kbt;
    let g = kbt / P.kblocks;
    let k0 = g * P.kg + (kbt % P.kblocks) * KB;
    let kend = (g + 1u) * P.kg;
    let ox0 = pb * PB;
    let cbase = g * P.cg;

    var acc: array<f32, 64>;
    for (var i = 0u; i < KB * PB; i++) {
        acc[i] = 0.0;
    }
    let iy0 = i32(oy * P.sh) - P.pad_top;
    let ix0 = i32(ox0 * P.sw) - P.pad_left;
    let hw = P.h * P.w;
    for (var ci = 0u; ci < P.cg; ci++) {
        let xplane = P.x_off + (n * P.c + cbase + ci) * hw;
        for (var r = 0u; r < P.r; r++) {
            let sy = src_index(iy0 + i32(r * P.dh), i32(P.h));
            if (sy < 0) {
                continue;
            }
            let xrow = xplane + u32(sy) * P.w;
            let rr = select(r, P.r - 1u - r, FLIP);
            for (var s = 0u; s < P.s; s++) {
                let ss = select(s, P.s - 1u - s, FLIP);
                var xv: array<f32, 8>;
                for (var j = 0u; j < PB; j++) {
                    let sx = src_index(ix0 + i32(j * P.sw + s * P.dw), i32(P.w));
                    xv[j] = select(0.0, x[xrow + u32(max(sx, 0))], sx >= 0);
                }
                for (var i = 0u; i < KB; i++) {
                    let kk = min(k0 + i, kend - 1u);
                    let wv = wt[P.w_off + ((kk * P.cg + ci) * P.r + rr) * P.s + ss];
                    for (var j = 0u; j < PB; j++) {
                        acc[i * PB + j] = fma(wv, xv[j], acc[i * PB + j]);
                    }
                }
            }
        }
    }
    for (var i = 0u; i < KB; i++) {
        let kk = k0 + i;
        if (kk >= kend) {
            break;
        }
        var bv = 0.0;
        if (HAS_BIAS) {
            bv = bias[P.b_off + kk];
        }
        let ybase = P.y_off + ((n * P.k + kk) * P.oh + oy) * P.ow;
        for (var j = 0u; j < PB; j++) {
            let ox = ox0 + j;
            if (ox < P.ow) {
                y[ybase + ox] = acc[i * PB + j] + bv;
            }
        }
    }
}
