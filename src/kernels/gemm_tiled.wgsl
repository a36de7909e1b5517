// GEMM for GPUs: C = A·B (+ bias) (+ C) with workgroup-memory tiles.
//
// Same operand layouts and uniforms as gemm_reg (A and B K-major, vec4 along m / n;
// C row-major). A 16x16 workgroup computes a 64x64 tile of C, each invocation a 4x4 block;
// per step, 16 rows of K of both operands are staged in workgroup memory (one vec4 load per
// invocation and operand) and shared by the whole workgroup.

// Params (GemmParams of src/kernels/gemm_reg.rs) and overrides are prepended by
// src/kernels/gemm_tiled.rs.
@group(0) @binding(0) var<storage, read> P: Params;
@group(0) @binding(1) var<storage, read> a: array<vec4<T>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<T>>;
@group(0) @binding(3) var<storage, read> bias: array<T>;
@group(0) @binding(4) var<storage, read_write> c: array<T>;

// The tiling fixes WG = 256 (16x16 invocations), TM = TN = 64 (the tile) and the K step.
const KT: u32 = 16u;
var<workgroup> As: array<vec4<T>, 256>; // [KT][16] vec4 = 16 x 64 floats
var<workgroup> Bs: array<vec4<T>, 256>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let tile = wid.x + wid.y * nwg.x;
    let tiles = P.tiles_m * P.tiles_n * P.batch;
    if (tile >= tiles) {
        return; // whole workgroup: uniform
    }
    let tn = tile % P.tiles_n;
    let t = tile / P.tiles_n;
    let tm = t % P.tiles_m;
    let bt = t / P.tiles_m;
    let bo = bt / P.batch_inner;
    let bi = bt % P.batch_inner;
    let tx = lid % 16u; // column block (4 columns)
    let ty = lid / 16u; // row block (4 rows)
    let lda4 = P.lda / 4u;
    let ldb4 = P.ldb / 4u;
    let a_base = (P.a_off + bo * P.a_so + bi * P.a_si) / 4u;
    let b_base = (P.b_off + bo * P.b_so + bi * P.b_si) / 4u;
    // Loader coordinates: row lk of the K step, vec4 column lc.
    let lk = lid / 16u;
    let lc = lid % 16u;
    let a_col = min(tm * 16u + lc, lda4 - 1u);
    let b_col = min(tn * 16u + lc, ldb4 - 1u);

    var acc: array<vec4<T>, 4>;
    for (var i = 0u; i < 4u; i++) {
        acc[i] = vec4<T>(0.0);
    }
    for (var k0 = 0u; k0 < P.k; k0 += KT) {
        let kr = k0 + lk;
        var av = vec4<T>(0.0);
        var bv = vec4<T>(0.0);
        if (kr < P.k) {
            av = a[a_base + kr * lda4 + a_col];
            bv = b[b_base + kr * ldb4 + b_col];
        }
        As[lk * 16u + lc] = av;
        Bs[lk * 16u + lc] = bv;
        workgroupBarrier();
        for (var kk = 0u; kk < KT; kk++) {
            let a4 = As[kk * 16u + ty];
            let b4 = Bs[kk * 16u + tx];
            acc[0] = fma(vec4<T>(a4.x), b4, acc[0]);
            acc[1] = fma(vec4<T>(a4.y), b4, acc[1]);
            acc[2] = fma(vec4<T>(a4.z), b4, acc[2]);
            acc[3] = fma(vec4<T>(a4.w), b4, acc[3]);
        }
        workgroupBarrier();
    }

    let c_base = P.c_off + bo * P.c_so + bi * P.c_si;
    for (var i = 0u; i < 4u; i++) {
        let m = tm * 64u + ty * 4u + i;
        if (m >= P.m) {
            break;
        }
        var row_bias = 0.0;
        if (BIAS_MODE == 1u) {
            row_bias = f32(bias[P.bias_off + bi * P.bias_si + m]);
        }
        for (var e = 0u; e < 4u; e++) {
            let n = tn * 64u + tx * 4u + e;
            if (n < P.n) {
                var out = f32(acc[i][e]) + row_bias;
                if (BIAS_MODE == 2u) {
                    out += f32(bias[P.bias_off + bi * P.bias_si + n]);
                }
                let ci = c_base + m * P.ldc + n * P.ldc_n;
                if (ACCUMULATE) {
                    out += f32(c[ci]);
                }
                c[ci] = T(out);
            }
        }
    }
}
