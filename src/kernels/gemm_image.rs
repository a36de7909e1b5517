//! `gemm_image`: GEMM for CPU-like adapters with 8-lane subgroups (lavapipe), operands read
//! from packed read-only storage images (`source(false)`), or A from an image and B straight
//! from a storage buffer (`source(true)`, the former `gemm_image_sb`).

use super::gemm_reg::gemm_store;
use crate::gpu::wgsl::{
    hoist_params, params, spec, wln, Elem, ParamStruct, Spec, Wgsl, ACTIVATION,
};
use crate::kernels::shared::{
    acc4, acc4_rows, col_sums, scalar_subblocks, subgroup_entry, workgroup_blocks, PANELS_DOC, SG,
};

/// Rows of C per invocation (two texels of an A panel row).
pub(crate) const IMG_TM: usize = 8;
/// Columns of C per workgroup (four texels of a B panel row).
pub(crate) const IMG_TN: usize = 16;
// Register sub-blocks: all IMG_TM rows x one column, over the 8 k-steps of a broadcast group,
// with one scalar accumulator per (row, column). Each broadcast value then serves IMG_TM FMAs
// in registers and is never spilled; vec4 accumulators over 4 columns made LLVM compute each
// broadcast once, spill it and reload it for every row (driver notes section 12).

params! {
    /// Parameters of `gemm_image` (both variants; `b_off`, `ldb`, `b_si`, `b_so` and `k` are
    /// read by the buffer-B variant only, the B panel fields by the image-B variant only).
    pub(crate) struct GemmImageParams {
        m: u32, n: u32, kp: u32, ldc: u32,
        ldc_n: u32, c_off: u32, c_si: u32, c_so: u32,
        groups_m: u32, groups_n: u32, batch_inner: u32, batch: u32,
        ha: u32, hb: u32, a_pi: u32, a_po: u32,
        b_pi: u32, b_po: u32, bias_off: u32, bias_si: u32,
        wg0: u32, a_pn: u32, b_pn: u32, k_lo: u32,
        k_len: u32, k: u32, b_off: u32, ldb: u32,
        b_si: u32, b_so: u32, alpha: f32, lo: f32,
        hi: f32, sum_off: u32, sum_si: u32, _p2: u32,
    }
}

spec! {
    /// Specialisation of `gemm_image` (both variants).
    pub(crate) struct GemmImageSpec {
        /// Lanes per workgroup; A panels are 8 * WG rows wide (the packer uses the same value).
        WG: u32 = 8,
        /// 0: no bias, 1: `bias[bias_off + bi * bias_si + m]` per row, 2: `... + n` per column.
        BIAS_MODE: u32 = 0 in [0, 1, 2],
        /// Add to the existing contents of C.
        ACCUMULATE: bool = false,
        /// The fused epilogue's activation (`Activation::code`), in the last k-block.
        ACT: u32 = 0 in [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        /// The fused epilogue's residual position (`Residual::code`).
        RES: u32 = 0 in [0, 1, 2],
        /// Also write the column sums of B over the reduction, `sums[sum_off + bi * sum_si
        /// + n]` (added to them with `ACCUMULATE`): the bias gradient of a weight-gradient
        /// GEMM whose B is dy. B from an image, one outer batch entry.
        COL_SUMS: bool = false,
    }
}

/// The store of the `gemm_image_c4` twins: `v` holds C[m, n..n + 4] (`cols` false:
/// `gemm_image_c4`, `ldc_n = 1`) or C[m..m + 4, n] (`cols`: `gemm_image_c4t`, `ldc = 1`),
/// four consecutive floats of C either way (the host checks the alignment), so the bounds
/// check of the first covers all four. (One orientation per kernel: with both behind an
/// override, lavapipe's NIR inlined both sets of stores before folding the choice, and the
/// pipeline took ~0.8 s to create.)
fn store4(cols: bool) -> String {
    let along = if cols { 1 } else { 2 };
    format!(
        "fn store(live: bool, c_base: u32, m: u32, n: u32, v: vec4<f32>, bi: u32) {{
    if (!live || m >= P.m || n >= P.n) {{
        return;
    }}
    var out = v;
    // The bias of the rows (BIAS_MODE 1) or the columns (2): four values along v, or one.
    if (BIAS_MODE != 0u) {{
        let bb = P.bias_off + bi * P.bias_si + select(n, m, BIAS_MODE == 1u);
        if (BIAS_MODE == {along}u) {{
            out += vec4<f32>(bias[bb], bias[bb + 1u], bias[bb + 2u], bias[bb + 3u]);
        }} else {{
            out += vec4<f32>(bias[bb]);
        }}
    }}
    let ci = c_base + m * P.ldc + n * P.ldc_n;
    let q = ci / 4u;
    if (ACCUMULATE) {{
        out += c[q];
    }}
    if (ACT != 0u || RES != 0u) {{
        // A loop, not four inlined epilogues: each would be inlined at every store before
        // the override folds it away (pipeline creation time on lavapipe).
        for (var e = 0u; e < 4u; e++) {{
            var rv = 0.0;
            if (RES != 0u) {{
                rv = r[ci + e];
            }}
            out[e] = epilogue(out[e], rv, P.alpha, P.lo, P.hi);
        }}
    }}
    c[q] = out;
}}"
    )
}

/// The WGSL source of `gemm_image`: B from a packed storage image, or with `b_buffer` from
/// a K-major storage buffer (`gemm_image(b_buffer=True)` of the Python generator). `c4`
/// (B from an image): 0 one float of C per store; 1 four columns of a row
/// (`gemm_image_c4`), 2 four rows of a column (`gemm_image_c4t`), C bound as vec4s.
pub(crate) fn source(b_buffer: bool, c4: u32) -> String {
    debug_assert!(c4 == 0 || !b_buffer);
    let (tm, tn) = (IMG_TM, IMG_TN);
    let mut w = Wgsl::new();
    // `T` of the shared store (`gemm_reg::gemm_store`).
    w.line(Elem::F32.header());
    wln!(
        w,
        "// GEMM for CPU-like adapters with {SG}-lane subgroups (lavapipe): C = A·B (+ bias) (+ C),"
    );
    if b_buffer {
        w.line(
            "// A read from a packed read-only storage image (written by pack_image or copied),",
        );
        w.line("// B straight from a storage buffer, K-major: B[k, n] at b[b_off + bo * b_so + bi * b_si");
        w.line("// + k * ldb + n] (ldb and offsets multiples of 4). Same as gemm_image otherwise: this");
        w.line("// variant saves packing B (a pass over B) for ~15 % slower B loads, which pays when B is");
        w.line("// large next to the work on it (few rows of C, e.g. im2col columns).");
    } else {
        w.line(
            "// both operands read from packed read-only storage images (written by pack_image).",
        );
    }
    w.line("//");
    w.line("// Why images: on lavapipe (Mesa 22.3) a storage-buffer load costs a per-lane loop of about");
    w.line(
        "// 20 instructions per component, while `textureLoad` on a read-only rgba32float storage",
    );
    w.line(
        "// image is inlined as one 16-byte load per lane plus a transpose (~1.4 instructions per",
    );
    w.line("// float). Measured at 1024^3: 62 GFLOP/s for this kernel vs ~20 for the former");
    w.line("// storage-buffer subgroup GEMM (gemm_sg).");
    w.line("//");
    w.line(PANELS_DOC);
    w.line("//");
    wln!(
        w,
        "// A workgroup of WG lanes (WG = one {SG}-lane subgroup) owns {tm} * WG rows x {tn} columns of C"
    );
    wln!(
        w,
        "// of one batch entry; each lane owns {tm} rows. Per group of 8 k-steps each lane loads one"
    );
    w.line("// k-row of the B panel (4 texels) that the subgroup shares by `subgroupBroadcast`, and its");
    wln!(
        w,
        "// own {tm} rows for the 8 k-steps (16 texels). The FMAs run in register sub-blocks of"
    );
    wln!(
        w,
        "// {tm} rows x 1 column over the 8 k-steps, with scalar accumulators: each broadcast value"
    );
    wln!(
        w,
        "// feeds {tm} FMAs from a register, and the {tm} accumulators stay in registers between"
    );
    w.line("// updates (docs/lavapipe-driver-notes.md sections 10 and 12).");
    w.line("// Measured code-shape rules (lavapipe): named accumulators, broadcasts next to their use,");
    w.line("// no guards and no early return in the kernel body (both turn into execution masks),");
    w.line("// `select` for the panel wrap. Workgroups past the last one only skip their stores.");
    w.line("//   C[m, n] at c[c_off + bo * c_so + bi * c_si + m * ldc + n * ldc_n]");
    w.line("//   batch entry bt = bo * batch_inner + bi; row block gm of it is A panel");
    w.line("//   bo * a_po + bi * a_pi + gm * a_pn (0 strides: operand shared), likewise B. With");
    w.line("//   a_pn = 1 that is the wrapped-panel order above; with a_pn = E (entries), a_pi = 1 and");
    w.line(
        "//   H = E * KP it is the plain K-major layout: texel (r / 4, e * KP + k), which the host",
    );
    w.line(
        "//   fills with buffer-to-texture copies when the operand is stored K-major with rows of",
    );
    w.line("//   a multiple of 64 floats (no pack kernel).");
    w.line(
        "// A dispatch covers the k-rows [k_lo, k_lo + k_len) of the panels (multiples of 8): long",
    );
    w.line("// reductions run as several dispatches that accumulate into C.");
    w.line(
        "// Bias (BIAS_MODE 1: bias[bias_off + bi * bias_si + m], 2: ... + n) and ACCUMULATE as in",
    );
    w.line("// the other GEMM kernels.");
    w.line("");
    w.line(&GemmImageParams::wgsl());
    w.line("");
    w.line("@group(0) @binding(0) var<storage, read> P: Params;");
    w.line("@group(0) @binding(1) var ta: texture_storage_2d<rgba32float, read>;");
    if b_buffer {
        w.line("@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;");
    } else {
        w.line("@group(0) @binding(2) var tb: texture_storage_2d<rgba32float, read>;");
    }
    w.line("@group(0) @binding(3) var<storage, read> bias: array<f32>;");
    if c4 != 0 {
        w.line(
            "// C as vec4s: on lavapipe a vec4 store costs about what a scalar one does, and the",
        );
        w.line("// stores are a fixed cost per workgroup that short reductions feel (driver notes");
        w.line("// section 14).");
        w.line("@group(0) @binding(4) var<storage, read_write> c: array<vec4<f32>>;");
    } else {
        w.line("@group(0) @binding(4) var<storage, read_write> c: array<f32>;");
    }
    w.line("// The residual of the fused epilogue (C's layout; read only when RES != 0).");
    w.line("@group(0) @binding(5) var<storage, read> r: array<f32>;");
    if !b_buffer {
        w.line("// The column sums of B (COL_SUMS; any buffer otherwise: not touched then).");
        w.line("@group(0) @binding(6) var<storage, read_write> sums: array<f32>;");
    }
    w.line("");
    w.line(&GemmImageSpec::wgsl());
    w.line("");
    w.line(ACTIVATION);
    w.line("");
    if c4 != 0 {
        w.line(&store4(c4 == 2));
    } else {
        w.line(&gemm_store(true, true));
    }
    w.line("");
    subgroup_entry(&mut w);
    w.line(
        "    // Workgroup -> (batch entry, column block, row block), row block fastest. A launch",
    );
    w.line("    // larger than one dispatch is split into dispatches starting at workgroup wg0.");
    workgroup_blocks(&mut w);
    w.line("    let bo = bt / P.batch_inner;");
    w.line("    let bi = bt % P.batch_inner;");
    wln!(w, "    let m0 = (gm * WG + lid) * {tm}u;");
    wln!(w, "    let n0 = tn * {tn}u;");
    w.line(
        "    // Image position of k-row 0 of this workgroup's A and B panels (uniform but for the",
    );
    w.line("    // lane's texel column in A).");
    wln!(w, "    let wa = WG * {}u;", tm / 4);
    w.line("    let la = (bo * P.a_po + bi * P.a_pi + gm * P.a_pn) * P.kp + P.k_lo;");
    w.line("    var ya = la % P.ha;");
    wln!(w, "    var xa = (la / P.ha) * wa + lid * {}u;", tm / 4);
    if b_buffer {
        w.line("    let ldb4 = P.ldb / 4u;");
        w.line("    let b_base = (P.b_off + bo * P.b_so + bi * P.b_si) / 4u;");
        w.line("    let nq = n0 / 4u;");
        for j in 0..tn / 4 {
            wln!(w, "    let bj{j} = min(nq + {j}u, ldb4 - 1u);");
        }
        w.line("    // This lane's k-row of B: k_lo + k0 + sl (rows past K read as 0, clamped in memory).");
        w.line("    var kb = P.k_lo + sl;");
    } else {
        w.line("    let lb = (bo * P.b_po + bi * P.b_pi + tn * P.b_pn) * P.kp + P.k_lo;");
        w.line("    var yb = lb % P.hb;");
        wln!(w, "    var xb = (lb / P.hb) * {}u;", tn / 4);
    }
    for r in 0..tm {
        for n in 0..tn {
            wln!(w, "    var c{r}_{n} = 0.0;");
        }
    }
    // The column sums of B (COL_SUMS; image B only): per lane, then per subgroup.
    let sums = col_sums(
        tn,
        "        ",
        "live && gm == 0u",
        "P.sum_off + bi * P.sum_si + n0",
        "n0",
        "P.n",
    );
    if !b_buffer {
        w.line(&sums.decl);
    }
    wln!(w, "    for (var k0 = 0u; k0 < P.k_len; k0 += {SG}u) {{");
    w.line("        // B: lane sl loads k-row k0 + sl of the panel, shared below by subgroupBroadcast.");
    if b_buffer {
        w.line("        let brow = b_base + min(kb, P.k - 1u) * ldb4;");
        w.line("        let bk = kb < P.k;");
        for j in 0..tn / 4 {
            wln!(
                w,
                "        let bl{j} = select(vec4<f32>(0.0), b[brow + bj{j}], bk);"
            );
        }
    } else {
        for j in 0..tn / 4 {
            wln!(
                w,
                "        let bl{j} = textureLoad(tb, vec2<u32>(xb + {j}u, yb + sl));"
            );
        }
        w.line(&sums.add);
    }
    wln!(w, "        // A: this lane's {tm} rows for the 8 k-steps.");
    for s in 0..SG {
        for i in 0..tm / 4 {
            wln!(
                w,
                "        let a{i}_{s} = textureLoad(ta, vec2<u32>(xa + {i}u, ya + {s}u));"
            );
        }
    }
    wln!(
        w,
        "        // Register sub-blocks of {tm} rows x 1 column, each over the 8 k-steps."
    );
    scalar_subblocks(&mut w, "        ", tm, tn, |r, k| {
        format!("a{}_{k}.{}", r / 4, ['x', 'y', 'z', 'w'][r % 4])
    });
    w.line("        // Next 8 k-rows; a panel wraps to the next column block at the image height.");
    wln!(w, "        ya += {SG}u;");
    w.line("        let ea = ya == P.ha;");
    w.line("        ya = select(ya, 0u, ea);");
    w.line("        xa = select(xa, xa + wa, ea);");
    if b_buffer {
        wln!(w, "        kb += {SG}u;");
    } else {
        wln!(w, "        yb += {SG}u;");
        w.line("        let eb = yb == P.hb;");
        w.line("        yb = select(yb, 0u, eb);");
        wln!(w, "        xb = select(xb, xb + {}u, eb);", tn / 4);
    }
    w.line("    }");
    if !b_buffer {
        w.line(&sums.store);
    }
    w.line("    let c_base = P.c_off + bo * P.c_so + bi * P.c_si;");
    let rows = |w: &mut Wgsl, ind: &str| {
        for r in 0..tm {
            for j in 0..tn / 4 {
                wln!(
                    w,
                    "{ind}store(live, c_base, m0 + {r}u, n0 + {}u, {}, bi);",
                    4 * j,
                    acc4(r, j)
                );
            }
        }
    };
    if c4 == 2 {
        for i in 0..tm / 4 {
            for n in 0..tn {
                wln!(
                    w,
                    "    store(live, c_base, m0 + {}u, n0 + {n}u, {}, bi);",
                    4 * i,
                    acc4_rows(4 * i, n)
                );
            }
        }
    } else {
        rows(&mut w, "    ");
    }
    w.line("}");
    hoist_params(&w.finish(), &GemmImageParams::fields())
}
