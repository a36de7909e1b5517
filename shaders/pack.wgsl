// Packs a (batched) matrix into the K-major, zero-padded layout the GEMM kernels read:
//   dst[b][r][col] for r < rows, col < ld_dst (ld_dst % 4 == 0), zero for col >= cols;
//   source element (r, col) is src[src_off + b*src_bs + r*ld_src + col] (TRANSPOSE = false)
//   or src[src_off + b*src_bs + col*ld_src + r] (TRANSPOSE = true).

struct Params {
    rows: u32, cols: u32, ld_dst: u32, ld_src: u32,
    src_off: u32, dst_off: u32, src_bs: u32, dst_bs: u32,
    batch: u32, total: u32, _p0: u32, _p1: u32,
}

@group(0) @binding(0) var<storage, read> P: Params;
// Fields of P read once per invocation (see hoist_params in tools/gen_shaders.py).
var<private> p_total: u32;
var<private> p_ld_dst: u32;
var<private> p_rows: u32;
var<private> p_cols: u32;
var<private> p_src_off: u32;
var<private> p_src_bs: u32;
var<private> p_ld_src: u32;
var<private> p_dst_off: u32;
var<private> p_dst_bs: u32;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

override WG: u32 = 64u;
override TRANSPOSE: bool = false;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    p_total = P.total;
    p_ld_dst = P.ld_dst;
    p_rows = P.rows;
    p_cols = P.cols;
    p_src_off = P.src_off;
    p_src_bs = P.src_bs;
    p_ld_src = P.ld_src;
    p_dst_off = P.dst_off;
    p_dst_bs = P.dst_bs;
    let id = gid.x + gid.y * nwg.x * WG;
    if (id >= p_total) {
        return;
    }
    let col = id % p_ld_dst;
    let t = id / p_ld_dst;
    let r = t % p_rows;
    let bt = t / p_rows;
    var v = 0.0;
    if (col < p_cols) {
        let base = p_src_off + bt * p_src_bs;
        if (TRANSPOSE) {
            v = src[base + col * p_ld_src + r];
        } else {
            v = src[base + r * p_ld_src + col];
        }
    }
    dst[p_dst_off + bt * p_dst_bs + r * p_ld_dst + col] = v;
}
