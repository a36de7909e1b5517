// Depthwise convolution forward for GPUs (groups == C, any channel multiplier; kernels up
// to 7 wide, column stride SW <= 2, column dilation 1, as conv2d_depthwise.wgsl), with a
// workgroup-memory tile: a workgroup of 64 invocations computes 8 rows x 32 columns of one
// output plane (n, k). It first stages the input window of the tile (rows
// (8 - 1) * sh + (R - 1) * dh + 1, columns 31 * SW + S, resolved through the padding mode)
// in workgroup memory with coalesced loads, then every invocation computes 4 consecutive
// outputs of one row from it: each input value is read from memory once per tile instead of
// R * S / (SW * sh) times. The host uses it only when the window fits TILE_ROWS rows. Bias is
// fused. Same uniforms as conv2d_depthwise.wgsl (xblocks: column tiles; total: invocations).
// On CPU adapters barriers and workgroup memory are emulated and slow: they run the
// register-window kernels instead.

@group(0) @binding(0) var<storage, read> P: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

// `struct Params`, the override constants WG, S, SW, PAD_MODE, HAS_BIAS and FLIP and
// `src_index` are declared by `conv2d_depthwise::tiled_source` (`DepthwiseParams`,
// `DepthwiseSpec`). Here WG (invocations per workgroup) must be 64: 8 rows x 8 groups of 4
// columns; the host sets no other.

const TILE_OY: u32 = 8u;
const TILE_OX: u32 = 32u;
// Largest staged window: TILE_ROWS rows of TILE_COLS = 31 * 2 + 7 columns.
const TILE_ROWS: u32 = 32u;
const TILE_COLS: u32 = 69u;

var<workgroup> tile: array<f32, 2208>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // Workgroup -> (column tile, row tile, output channel, image); workgroups past the last
    // one (a 2-D split of a large launch) compute the last tile and skip their stores.
    let groups = P.total / WG;
    let wg0 = wid.x + wid.y * nwg.x;
    let live = wg0 < groups;
    let wg = min(wg0, groups - 1u);
    let xt = wg % P.xblocks;
    var t = wg / P.xblocks;
    let yt = t % P.yblocks;
    t = t / P.yblocks;
    let k = t % P.k;
    let n = t / P.k;
    let c = k / P.kg;
    let oy0 = yt * TILE_OY;
    let ox0 = xt * TILE_OX;
    let iy0 = i32(oy0 * P.sh) - P.pad_top;
    let ix0 = i32(ox0 * SW) - P.pad_left;
    let rows = (TILE_OY - 1u) * P.sh + (P.r - 1u) * P.dh + 1u;
    let cols = (TILE_OX - 1u) * SW + S;
    let xplane = P.x_off + (n * P.c + c) * P.h * P.w;
    for (var i = lid; i < rows * cols; i += WG) {
        let ty = i / cols;
        let tx = i - ty * cols;
        let sy = src_index(iy0 + i32(ty), i32(P.h));
        let sx = src_index(ix0 + i32(tx), i32(P.w));
        var v = 0.0;
        if (sy >= 0 && sx >= 0) {
            v = x[xplane + u32(sy) * P.w + u32(sx)];
        }
        tile[ty * TILE_COLS + tx] = v;
    }
    workgroupBarrier();
    // This invocation: output row oy0 + ry, columns ox0 + 4 * cx .. + 3.
    let ry = lid / 8u;
    let cx = lid % 8u;
    var acc = vec4<f32>(0.0);
    let wbase = k * P.r * S;
    for (var r = 0u; r < P.r; r++) {
        let trow = (ry * P.sh + r * P.dh) * TILE_COLS + cx * 4u * SW;
        var wr = r;
        if (FLIP) {
            wr = P.r - 1u - r;
        }
        for (var s = 0u; s < S; s++) {
            var ws = s;
            if (FLIP) {
                ws = S - 1u - s;
            }
            let wv = wt[wbase + wr * S + ws];
            let b = trow + s;
            acc += wv * vec4<f32>(tile[b], tile[b + SW], tile[b + 2u * SW], tile[b + 3u * SW]);
        }
    }
    var bv = 0.0;
    if (HAS_BIAS) {
        bv = bias[k];
    }
    let oy = oy0 + ry;
    let yrow = P.y_off + ((n * P.k + k) * P.oh + oy) * P.ow;
    for (var j = 0u; j < 4u; j++) {
        let ox = ox0 + cx * 4u + j;
        if (live && oy < P.oh && ox < P.ow) {
            y[yrow + ox] = acc[j] + bv;
        }
    }
}
