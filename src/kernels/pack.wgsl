// Packs a (batched) matrix into the K-major, zero-padded layout the GEMM kernels read:
//   dst[b][r][col] for r < rows, col < ld_dst (ld_dst % 4 == 0), zero for col >= cols;
//   source element (r, col) is src[src_off + b*src_bs + r*ld_src + col] (TRANSPOSE = false)
//   or src[src_off + b*src_bs + col*ld_src + r] (TRANSPOSE = true).

// Params and overrides are prepended by src/kernels/pack.rs.
@group(0) @binding(0) var<storage, read> P: Params;
@group(0) @binding(1) var<storage, read> src: array<T>;
@group(0) @binding(2) var<storage, read_write> dst: array<T>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = gid.x + gid.y * nwg.x * WG;
    if (id >= P.total) {
        return;
    }
    let col = id % P.ld_dst;
    let t = id / P.ld_dst;
    let r = t % P.rows;
    let bt = t / P.rows;
    var v = T(0.0);
    if (col < P.cols) {
        let base = P.src_off + bt * P.src_bs;
        if (TRANSPOSE) {
            v = src[base + col * P.ld_src + r];
        } else {
            v = src[base + r * P.ld_src + col];
        }
    }
    dst[P.dst_off + bt * P.dst_bs + r * P.ld_dst + col] = v;
}
