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

// Params and overrides are prepended by src/kernels/conv2d_wgrad_depthwise.rs.
@group(0) @binding(0) var<storage, read> P: Params;
@group(0) @binding(1) var tx: texture_storage_2d<rgba32float, read>;
@group(0) @binding(2) var tdy: texture_storage_2d<rgba32float, read>;
@group(0) @binding(3) var<storage, read_write> part: array<f32>;

fn xload(tx0: u32, ty: u32, q: i32) -> vec4<f32> {
    let wq = P.w / 4u;
    let inside = q >= 0 && q < i32(wq);
    let v = textureLoad(tx, vec2<u32>(tx0 + u32(clamp(q, 0, i32(wq) - 1)), ty));
    return select(vec4<f32>(0.0), v, inside);
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
    for (var fr = row_lo; fr < row_hi; fr++) {
        let n = fr / P.oh;
        let oy = fr - n * P.oh;
        let iy = i32(oy * P.sh + r * P.dh) - P.pad_top;
        if (iy < 0 || iy >= i32(P.h)) {
            continue;
        }
        let xr = (n * P.c + c) * P.h + u32(iy);
        let xty = xr >> P.x_rows_shift;
        let xtx0 = (xr & ((1u << P.x_rows_shift) - 1u)) * (P.w / 4u);
        let dr = (n * P.k + k) * P.oh + oy;
        let dty = dr >> P.dy_rows_shift;
        let dtx0 = (dr & ((1u << P.dy_rows_shift) - 1u)) * (P.ow / 4u);
        var t0 = xload(xtx0, xty, -1);
        var t1 = xload(xtx0, xty, 0);
        for (var q = 0u; q < P.ow / 4u; q++) {
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
    let rr = select(r, P.r - 1u - r, FLIP);
    for (var s = 0u; s < S; s++) {
        let ss = select(s, S - 1u - s, FLIP);
        let a = acc[s];
        part[((k * P.r + rr) * S + ss) * P.nb + band] = (a.x + a.y) + (a.z + a.w);
    }
}
