//! `gemm_reg`: GEMM with per-invocation register blocks, no workgroup memory (CPU adapters
//! without 8-lane subgroups), and the parameters it shares with `gemm_tiled`.

use crate::gpu::wgsl::{
    epilogue_store, hoist_params, params, spec, wln, Elem, ParamStruct, Spec, Wgsl,
};

params! {
    /// Parameters of `gemm_reg` and `gemm_tiled`.
    pub(crate) struct GemmParams {
        m: u32, n: u32, k: u32, lda: u32,
        ldb: u32, ldc: u32, a_off: u32, b_off: u32,
        c_off: u32, bias_off: u32, tiles_m: u32, tiles_n: u32,
        batch_inner: u32, batch: u32, a_si: u32, a_so: u32,
        b_si: u32, b_so: u32, c_si: u32, c_so: u32,
        bias_si: u32, total: u32, ldc_n: u32, _p1: u32,
    }
}

spec! {
    /// Specialisation of `gemm_reg`.
    pub(crate) struct GemmRegSpec {
        WG: u32 = 8,
        /// Rows of C per invocation: a multiple of 4, at most [`MAX_TM`].
        TM: u32 = 8 in [8, 16],
        /// Columns of C per workgroup: a multiple of 4, at most `4 * MAX_TN4`.
        TN: u32 = 16 in [16],
        /// B stored K-major (`b[k * ldb + n]`); otherwise N-major (`b[n * ldb + k]`).
        B_KN: bool = true,
        /// 0: no bias, 1: `bias[m]` per row, 2: `bias[n]` per column.
        BIAS_MODE: u32 = 0 in [0, 1, 2],
        /// Add to the existing contents of C.
        ACCUMULATE: bool = false,
    }
}

/// Rows per invocation (one A gather of a vec4 per 4 rows).
pub(crate) const MAX_TM: usize = 16;
/// vec4 columns per invocation (uniform B loads).
pub(crate) const MAX_TN4: usize = 4;

/// The GEMM store epilogue (bias, accumulation, bounds) of `gemm_reg` and the image GEMMs;
/// with `live`, a flag that workgroups past the last one pass as `false` (they run the whole
/// body and only skip the stores).
pub(crate) fn gemm_store(live: bool, epilogue: bool) -> String {
    let ep = if epilogue {
        format!("\n{}", epilogue_store("            ", "out", "ci"))
    } else {
        String::new()
    };
    let (args, guard) = if live {
        ("live: bool, ", "!live || ")
    } else {
        ("", "")
    };
    format!(
        "fn store({args}c_base: u32, m: u32, n0: u32, v: vec4<T>, bi: u32) {{
    if ({guard}m >= P.m) {{
        return;
    }}
    var row_bias = 0.0;
    if (BIAS_MODE == 1u) {{
        row_bias = f32(bias[P.bias_off + bi * P.bias_si + m]);
    }}
    for (var e = 0u; e < 4u; e++) {{
        let n = n0 + e;
        if (n < P.n) {{
            var out = f32(v[e]) + row_bias;
            if (BIAS_MODE == 2u) {{
                out += f32(bias[P.bias_off + bi * P.bias_si + n]);
            }}
            let ci = c_base + m * P.ldc + n * P.ldc_n;
            if (ACCUMULATE) {{
                out += f32(c[ci]);
            }}{ep}
            c[ci] = T(out);
        }}
    }}
}}"
    )
}

/// The WGSL source of `gemm_reg`, element type and arithmetic `T = elem` (the f16 twin runs
/// `Precision::F16Accumulate`; bias, accumulation into C and rounding in f32 at the store).
pub(crate) fn source(elem: Elem) -> String {
    let mut w = Wgsl::new();
    w.line(elem.header());
    w.line("// GEMM for CPU-like adapters (lavapipe, SwiftShader, WARP): C = A·B (+ bias) (+ C).");
    w.line("//");
    w.line(
        "// No workgroup memory, no barriers. A workgroup owns TN columns of C, chosen from the",
    );
    w.line(
        "// workgroup id only, so every B load is uniform across the workgroup (on a SIMD CPU: one",
    );
    w.line(
        "// scalar load broadcast to all lanes, no gather); each invocation owns TM rows, read as",
    );
    w.line("// vec4 gathers of A. Operand layouts:");
    w.line("//   A is K-major: A[k, m] at a[k * lda + m]   (lda % 4 == 0, offsets % 4 == 0)");
    w.line("//   B: B[k, n] at b[k * ldb + n] (B_KN) or b[n * ldb + k]; any ldb and offset");
    w.line("//   C[m, n] at c[m * ldc + n * ldc_n] (row-major when ldc_n == 1)");
    w.line(
        "// Row and column guards compare `override` constants directly (never through a `let`),",
    );
    w.line(
        "// so they fold away per specialization. Loads past the matrix edge are clamped to valid",
    );
    w.line("// memory and only feed outputs that are never stored. Batches are two-level");
    w.line("// (outer x inner) with element strides per operand. A dispatch has");
    w.line(
        "// batch * tiles_n * ceil(tiles_m / WG) workgroups (tiles_m = number of TM-row tiles).",
    );
    w.line("");
    w.line(&GemmParams::wgsl());
    w.line("");
    w.line("@group(0) @binding(0) var<storage, read> P: Params;");
    w.line("@group(0) @binding(1) var<storage, read> a: array<vec4<T>>;");
    w.line("@group(0) @binding(2) var<storage, read> b: array<T>;");
    w.line("@group(0) @binding(3) var<storage, read> bias: array<T>;");
    w.line("@group(0) @binding(4) var<storage, read_write> c: array<T>;");
    w.line("");
    w.line(&GemmRegSpec::wgsl());
    w.line("");
    w.line(&gemm_store(false, false));
    w.line("");
    w.line("@compute @workgroup_size(WG)");
    w.line("fn main(");
    w.line("    @builtin(workgroup_id) wid: vec3<u32>,");
    w.line("    @builtin(num_workgroups) nwg: vec3<u32>,");
    w.line("    @builtin(local_invocation_index) lid: u32,");
    w.line(") {");
    w.line("    // Workgroup -> (batch, column tile, group of row tiles); lane -> row tile.");
    w.line("    let groups_m = (P.tiles_m + WG - 1u) / WG;");
    w.line("    let wg = wid.x + wid.y * nwg.x;");
    w.line("    if (wg >= P.batch * P.tiles_n * groups_m) {");
    w.line("        return;");
    w.line("    }");
    w.line("    let gm = wg % groups_m;");
    w.line("    let t = wg / groups_m;");
    w.line("    let tn = t % P.tiles_n;");
    w.line("    let bt = t / P.tiles_n;");
    w.line("    let bo = bt / P.batch_inner;");
    w.line("    let bi = bt % P.batch_inner;");
    w.line("    let m0 = (gm * WG + lid) * TM;");
    w.line("    let n0 = tn * TN;");
    w.line("    let lda4 = P.lda / 4u;");
    w.line("    let a_base = (P.a_off + bo * P.a_so + bi * P.a_si) / 4u;");
    w.line("    let b_base = P.b_off + bo * P.b_so + bi * P.b_si;");
    w.line("    let mq = m0 / 4u;");
    w.line("    // B: step along k and offset of each column (uniform).");
    w.line("    var b_step = 1u;");
    w.line("    var b_col = P.ldb;");
    w.line("    if (B_KN) {");
    w.line("        b_step = P.ldb;");
    w.line("        b_col = 1u;");
    w.line("    }");
    for i in 0..MAX_TM / 4 {
        wln!(w, "    let ai{i} = min(mq + {i}u, lda4 - 1u);");
    }
    for j in 0..4 * MAX_TN4 {
        wln!(w, "    let bn{j} = min(n0 + {j}u, P.n - 1u) * b_col;");
    }
    for r in 0..MAX_TM {
        for j in 0..MAX_TN4 {
            wln!(w, "    var c{r}_{j} = vec4<T>(0.0);");
        }
    }
    w.line("    var arow = a_base;");
    w.line("    var brow = b_base;");
    w.line("    for (var kk = 0u; kk < P.k; kk++) {");
    for j in 0..MAX_TN4 {
        let j4 = 4 * j;
        wln!(w, "        var b{j} = vec4<T>(0.0);");
        wln!(w, "        if (TN > {j4}u) {{");
        wln!(
            w,
            "            b{j} = vec4<T>(b[brow + bn{j4}], b[brow + bn{}], b[brow + bn{}], b[brow + bn{}]);",
            j4 + 1,
            j4 + 2,
            j4 + 3
        );
        w.line("        }");
    }
    for i in 0..MAX_TM / 4 {
        wln!(w, "        if (TM > {}u) {{", 4 * i);
        wln!(w, "            let a{i} = a[arow + ai{i}];");
        for (e, ch) in ['x', 'y', 'z', 'w'].iter().enumerate() {
            let r = 4 * i + e;
            wln!(w, "            let s{r} = vec4<T>(a{i}.{ch});");
            for j in 0..MAX_TN4 {
                wln!(w, "            if (TN > {}u) {{", 4 * j);
                wln!(w, "                c{r}_{j} = fma(s{r}, b{j}, c{r}_{j});");
                w.line("            }");
            }
        }
        w.line("        }");
    }
    w.line("        arow += lda4;");
    w.line("        brow += b_step;");
    w.line("    }");
    w.line("    let c_base = P.c_off + bo * P.c_so + bi * P.c_si;");
    for r in 0..MAX_TM {
        for j in 0..MAX_TN4 {
            wln!(w, "    if (TM > {r}u && TN > {}u) {{", 4 * j);
            wln!(
                w,
                "        store(c_base, m0 + {r}u, n0 + {}u, c{r}_{j}, bi);",
                4 * j
            );
            w.line("    }");
        }
    }
    w.line("}");
    hoist_params(&w.finish(), &GemmParams::fields())
}
