//! `conv2d_direct`: direct 2-D convolution, forward, with register blocks of output channels
//! by output columns (any padding mode, groups, stride and dilation).

use crate::gpu::wgsl::{
    epilogue_store, hoist_params, params, spec, wln, Elem, ParamStruct, Spec, Wgsl, ACTIVATION,
    SRC_INDEX, XLOAD,
};
use crate::kernels::shared::ConvShape;

params! {
    /// Parameters of `conv2d_direct`.
    pub(crate) struct DirectParams {
        @embed shape: ConvShape;
        x_off: u32, w_off: u32, b_off: u32, y_off: u32,
        oy0: u32, rows: u32, kblocks: u32, kbt: u32,
        pblocks: u32, total: u32, c_lo: u32, c_cnt: u32,
        kb_lo: u32, alpha: f32, lo: f32, hi: f32,
        _p0: u32, _p1: u32,
    }
}

spec! {
    /// Specialisation of `conv2d_direct`.
    pub(crate) struct DirectSpec {
        WG: u32 = 64,
        /// Output channels per invocation, 1..=[`DIRECT_MAX_KB`].
        KB: u32 = 4 in [1, 2, 4, 8],
        /// Output columns per invocation: 4 or 8.
        PB: u32 = 4 in [4, 8],
        /// 0 zeros, 1 reflect, 2 replicate, 3 circular.
        PAD_MODE: u32 = 0 in [0, 1, 2, 3],
        HAS_BIAS: bool = false,
        /// True convolution: read the kernel rotated by 180 degrees.
        FLIP: bool = false,
        /// Add to y instead of writing it (second and later input-channel chunks).
        ACCUMULATE: bool = false,
        /// The fused epilogue's activation (`Activation::code`; never with ACCUMULATE).
        ACT: u32 = 0 in [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        /// The fused epilogue's residual position (`Residual::code`).
        RES: u32 = 0 in [0, 1, 2],
    }
}

/// Most output channels per invocation (named accumulators written out).
pub(crate) const DIRECT_MAX_KB: usize = 8;

/// The WGSL source of `conv2d_direct` with element type `elem` (its f16 twin multiplies and
/// adds in f16; bias, accumulation into y and the epilogue are applied in f32 and rounded
/// once at the store).
pub(crate) fn source(elem: Elem) -> String {
    let mut w = Wgsl::new();
    w.line(elem.header());
    w.line("// Direct 2-D convolution, forward (PyTorch semantics: cross-correlation, or true");
    w.line("// convolution when FLIP is set).");
    w.line("//");
    w.line(
        "// x [N, C, H, W], w [K, C/groups, R, S], bias [K], y [N, K, OH, OW], all T row-major.",
    );
    w.line(
        "// One invocation computes a register block of KB output channels (of one group) by PB",
    );
    w.line("// (4 or 8) consecutive output columns of one output row, in named vec4 accumulators.");
    w.line("// Bias is fused. Padding modes are resolved by index mapping: nothing is padded in memory.");
    w.line("//");
    w.line("// A launch covers `n` images, output rows [oy0, oy0 + rows), the k-blocks");
    w.line("// [kb_lo, kb_lo + kbt) (numbered over all groups) and input channels [c_lo, c_lo + c_cnt)");
    w.line("// of each group; with ACCUMULATE it adds its partial sums to y (bias comes with the first");
    w.line("// channel chunk). Element offsets (x_off, y_off, ...) are added with wrapping arithmetic,");
    w.line("// so a launch may bind a window of a large tensor and keep computing global indices.");
    w.line("");
    w.line(&DirectParams::wgsl());
    w.line("");
    w.line("@group(0) @binding(0) var<storage, read> P: Params;");
    w.line("@group(0) @binding(1) var<storage, read> x: array<T>;");
    w.line("@group(0) @binding(2) var<storage, read> wt: array<T>;");
    w.line("@group(0) @binding(3) var<storage, read> bias: array<T>;");
    w.line("@group(0) @binding(4) var<storage, read_write> y: array<T>;");
    w.line("// The residual of the fused epilogue (y's layout; read only when RES != 0).");
    w.line("@group(0) @binding(5) var<storage, read> r: array<T>;");
    w.line("");
    w.line(&DirectSpec::wgsl());
    w.line("");
    w.line(ACTIVATION);
    w.line("");
    w.line(SRC_INDEX);
    w.line("");
    w.line(XLOAD);
    w.line("");
    w.line("fn store(n: u32, k: u32, klast: u32, oy: u32, ox0: u32, v: vec4<T>) {");
    w.line("    if (k > klast) {");
    w.line("        return;");
    w.line("    }");
    w.line("    var b = 0.0;");
    w.line("    if (HAS_BIAS && !ACCUMULATE) {");
    w.line("        b = f32(bias[P.b_off + k]);");
    w.line("    }");
    w.line("    let base = P.y_off + ((n * P.k + k) * P.oh + oy) * P.ow;");
    w.line("    for (var j = 0u; j < 4u; j++) {");
    w.line("        let ox = ox0 + j;");
    w.line("        if (ox < P.ow) {");
    w.line("            var out = f32(v[j]) + b;");
    w.line("            if (ACCUMULATE) {");
    w.line("                out += f32(y[base + ox]);");
    w.line("            }");
    w.line(&epilogue_store("            ", "out", "base + ox"));
    w.line("            y[base + ox] = T(out);");
    w.line("        }");
    w.line("    }");
    w.line("}");
    w.line("");
    w.line("@compute @workgroup_size(WG)");
    w.line("fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {");
    w.line("    let id = gid.x + gid.y * nwg.x * WG;");
    w.line("    if (id >= P.total) {");
    w.line("        return;");
    w.line("    }");
    w.line("    let pb = id % P.pblocks;");
    w.line("    var t = id / P.pblocks;");
    w.line("    let oy = P.oy0 + t % P.rows;");
    w.line("    t = t / P.rows;");
    w.line("    let kbi = P.kb_lo + t % P.kbt;");
    w.line("    let n = t / P.kbt;");
    w.line("    let g = kbi / P.kblocks;");
    w.line("    let k0 = g * P.kg + (kbi % P.kblocks) * KB;");
    w.line("    let klast = (g + 1u) * P.kg - 1u;");
    w.line("    let ox0 = pb * PB;");
    w.line("    let cbase = g * P.cg;");
    w.line("    let iy0 = i32(oy * P.sh) - P.pad_top;");
    w.line("    let ix0 = i32(ox0 * P.sw) - P.pad_left;");
    w.line("    let hw = P.h * P.w;");
    w.line("    let rs = P.r * P.s;");
    for i in 0..DIRECT_MAX_KB {
        wln!(
            w,
            "    let wk{i} = P.w_off + min(k0 + {i}u, klast) * P.cg * rs;"
        );
    }
    for i in 0..DIRECT_MAX_KB {
        wln!(w, "    var a{i} = vec4<T>(0.0);");
        wln!(w, "    var b{i} = vec4<T>(0.0);");
    }
    w.line("    let c_end = P.c_lo + P.c_cnt;");
    w.line("    for (var ci = P.c_lo; ci < c_end; ci++) {");
    w.line("        let xplane = P.x_off + (n * P.c + cbase + ci) * hw;");
    w.line("        let wc = ci * rs;");
    w.line("        for (var r = 0u; r < P.r; r++) {");
    w.line("            let sy = src_index(iy0 + i32(r * P.dh), i32(P.h));");
    w.line("            if (sy < 0) {");
    w.line("                continue;");
    w.line("            }");
    w.line("            let xrow = xplane + u32(sy) * P.w;");
    w.line("            let rr = select(r, P.r - 1u - r, FLIP);");
    w.line("            for (var s = 0u; s < P.s; s++) {");
    w.line("                let ss = select(s, P.s - 1u - s, FLIP);");
    w.line("                let tap = wc + rr * P.s + ss;");
    w.line("                let xs = ix0 + i32(s * P.dw);");
    w.line("                let sw = i32(P.sw);");
    w.line("                let xa = vec4<T>(xload(xrow, xs), xload(xrow, xs + sw), xload(xrow, xs + 2 * sw), xload(xrow, xs + 3 * sw));");
    w.line("                var xb = vec4<T>(0.0);");
    w.line("                if (PB > 4u) {");
    w.line("                    xb = vec4<T>(xload(xrow, xs + 4 * sw), xload(xrow, xs + 5 * sw), xload(xrow, xs + 6 * sw), xload(xrow, xs + 7 * sw));");
    w.line("                }");
    for i in 0..DIRECT_MAX_KB {
        wln!(w, "                if (KB > {i}u) {{");
        wln!(w, "                    let wv = vec4<T>(wt[wk{i} + tap]);");
        wln!(w, "                    a{i} = fma(wv, xa, a{i});");
        w.line("                    if (PB > 4u) {");
        wln!(w, "                        b{i} = fma(wv, xb, b{i});");
        w.line("                    }");
        w.line("                }");
    }
    w.line("            }");
    w.line("        }");
    w.line("    }");
    for i in 0..DIRECT_MAX_KB {
        wln!(w, "    if (KB > {i}u) {{");
        wln!(w, "        store(n, k0 + {i}u, klast, oy, ox0, a{i});");
        w.line("        if (PB > 4u) {");
        wln!(
            w,
            "            store(n, k0 + {i}u, klast, oy, ox0 + 4u, b{i});"
        );
        w.line("        }");
        w.line("    }");
    }
    w.line("}");
    hoist_params(&w.finish(), &DirectParams::fields())
}
