// Weight gradient of a depthwise convolution for CPU-like adapters (lavapipe): the partial
// sums of conv2d_wgrad_depthwise.wgsl (same invocations, bands and partial layout, then
// reduce_rows.wgsl) with x and dy read from read-only rgba32float storage images, which cost
// ~1.4 instructions per float on lavapipe against ~20 for a storage-buffer load.
// Both images are verbatim copies of their buffers, rows_per = 1 << rows_shift tensor rows
// side by side per texture row (so a texture row is a multiple of 256 bytes and one copy fills
// it): texel (row % rows_per) * wq + q of texture row row / rows_per (wq = width / 4) holds
// columns 4q..4q+3 of flat row `row` (x rows: (n * C + c) * H + iy; dy rows:
// (n * K + k) * OH + oy).
// Column stride 1, column dilation 1, zero padding, PAD_LEFT <= 4 and S - PAD_LEFT <= 5, W
// and OW multiples of 4 (the host checks); rows are general. A step handles four output
// columns (one dy texel) with a sliding window of three x texels: two image loads per step
// for 4 * S products.

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
var<private> p_oh: u32;
var<private> p_sh: u32;
var<private> p_dh: u32;
var<private> p_pad_top: i32;
var<private> p_h: u32;
var<private> p_c: u32;
var<private> p_x_rows_shift: u32;
var<private> p_k: u32;
var<private> p_dy_rows_shift: u32;
var<private> p_ow: u32;
@group(0) @binding(1) var tx: texture_storage_2d<rgba32float, read>;
@group(0) @binding(2) var tdy: texture_storage_2d<rgba32float, read>;
@group(0) @binding(3) var<storage, read_write> part: array<f32>;

override WG: u32 = 64u;
// Kernel width (1..=7) and left padding (0..=4).
override S: u32 = 3u;
override PAD_LEFT: u32 = 1u;
override FLIP: bool = false;

fn xload(tx0: u32, ty: u32, q: i32) -> vec4<f32> {
    let wq = p_w / 4u;
    let inside = q >= 0 && q < i32(wq);
    let v = textureLoad(tx, vec2<u32>(tx0 + u32(clamp(q, 0, i32(wq) - 1)), ty));
    return select(vec4<f32>(0.0), v, inside);
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
    p_oh = P.oh;
    p_sh = P.sh;
    p_dh = P.dh;
    p_pad_top = P.pad_top;
    p_h = P.h;
    p_c = P.c;
    p_x_rows_shift = P.x_rows_shift;
    p_k = P.k;
    p_dy_rows_shift = P.dy_rows_shift;
    p_ow = P.ow;
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
    for (var fr = row_lo; fr < row_hi; fr++) {
        let n = fr / p_oh;
        let oy = fr - n * p_oh;
        let iy = i32(oy * p_sh + r * p_dh) - p_pad_top;
        if (iy < 0 || iy >= i32(p_h)) {
            continue;
        }
        let xr = (n * p_c + c) * p_h + u32(iy);
        let xty = xr >> p_x_rows_shift;
        let xtx0 = (xr & ((1u << p_x_rows_shift) - 1u)) * (p_w / 4u);
        let dr = (n * p_k + k) * p_oh + oy;
        let dty = dr >> p_dy_rows_shift;
        let dtx0 = (dr & ((1u << p_dy_rows_shift) - 1u)) * (p_ow / 4u);
        var t0 = xload(xtx0, xty, -1);
        var t1 = xload(xtx0, xty, 0);
        for (var q = 0u; q < p_ow / 4u; q++) {
            let t2 = xload(xtx0, xty, i32(q) + 1);
            let d = textureLoad(tdy, vec2<u32>(dtx0 + q, dty));
            // Input column 4q - PAD_LEFT + s + j is u[4 - PAD_LEFT + s + j].
            let u = array<f32, 12>(t0.x, t0.y, t0.z, t0.w, t1.x, t1.y, t1.z, t1.w, t2.x, t2.y, t2.z, t2.w);
            for (var s = 0u; s < S; s++) {
                let b = 4u - PAD_LEFT + s;
                acc[s] = fma(d, vec4<f32>(u[b], u[b + 1u], u[b + 2u], u[b + 3u]), acc[s]);
            }
            t0 = t1;
            t1 = t2;
        }
    }
    let rr = select(r, p_r - 1u - r, FLIP);
    for (var s = 0u; s < S; s++) {
        let ss = select(s, S - 1u - s, FLIP);
        let a = acc[s];
        part[((k * p_r + rr) * S + ss) * p_nb + band] = (a.x + a.y) + (a.z + a.w);
    }
}
