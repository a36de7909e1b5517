//! `conv2d_depthwise_nhwc`: depthwise convolution (one input channel per group, no channel
//! multiplier) of channels-last tensors for CPU-like adapters: x read from a verbatim image
//! copy (one texel = 4 consecutive channels of a pixel), weights repacked as `[R·S, C]`,
//! y stored as vec4 (4 channels of a pixel).

use crate::gpu::wgsl::{hoist_params, params, spec, wln, ParamStruct, Spec, Wgsl, SRC_INDEX};
use crate::kernels::shared::{ConvShape, NHWC_LOAD};

params! {
    /// Parameters of `conv2d_depthwise_nhwc`: the convolution's shape, the launch, the flat
    /// image of x (texels per row, a power of two, and its log2).
    pub(crate) struct DepthwiseNhwcParams {
        @embed shape: ConvShape;
        xblocks: u32, total: u32, t0: u32, tw: u32,
        tw_shift: u32, y_off4: u32,
    }
}

spec! {
    /// Specialisation of `conv2d_depthwise_nhwc`.
    pub(crate) struct DepthwiseNhwcSpec {
        WG: u32 = 64,
        /// Kernel height and width (1..=7).
        R: u32 = 3 in [1, 2, 3, 4, 5, 6, 7],
        S: u32 = 3 in [1, 2, 3, 4, 5, 6, 7],
        PAD_MODE: u32 = 0 in [0, 1, 2, 3],
        HAS_BIAS: bool = false,
        FLIP: bool = false,
        /// Column stride and dilation 1: the taps of a row slide over one window of
        /// `DWN_PX + S - 1` texels (loaded once) instead of a texel load per tap and pixel.
        WIN: bool = true,
        /// Kernels up to 3 x 3 at column stride and dilation 1: one invocation per output
        /// row (and 4 channels) walks the row with the weights in registers and a sliding
        /// window of S texels per kernel row (one texel load per kernel row and pixel).
        SEQ: bool = false,
    }
}

/// Largest kernel side of the row-walking path (`SEQ`).
pub(crate) const DWN_SEQ_MAX: usize = 3;

/// Output pixels (along a row) per invocation.
pub(crate) const DWN_PX: usize = 8;
/// Widest kernel.
const MAX_S: usize = 7;

/// The WGSL source of `conv2d_depthwise_nhwc`.
pub(crate) fn source() -> String {
    let mut w = Wgsl::new();
    w.line("// Depthwise convolution of channels-last tensors (groups = C = K): invocation");
    w.line("// (n, oy, block of 4 output pixels of the row, 4 channels), channels fastest so the");
    w.line(
        "// lanes of a subgroup read adjacent texels. x [N, H, W, C] is a read-only storage image",
    );
    w.line(
        "// holding x verbatim (float i at texel i / 4 of rows of tw texels, C a multiple of 4);",
    );
    w.line(
        "// wt [R * S, C] the weights of tap (r, s) for 4 channels as one vec4; y [N, Ho, Wo, C]",
    );
    w.line("// stored as vec4. Padding by PAD_MODE (src_index), any stride and dilation.");
    w.line("");
    w.line(&DepthwiseNhwcParams::wgsl());
    w.line("");
    w.line("@group(0) @binding(0) var<storage, read> P: Params;");
    w.line("@group(0) @binding(1) var tx: texture_storage_2d<rgba32float, read>;");
    w.line("@group(0) @binding(2) var<storage, read> wt: array<vec4<f32>>;");
    w.line("@group(0) @binding(3) var<storage, read> bias: array<f32>;");
    w.line("@group(0) @binding(4) var<storage, read_write> y: array<vec4<f32>>;");
    w.line("");
    w.line(&DepthwiseNhwcSpec::wgsl());
    w.line("");
    w.line(SRC_INDEX);
    w.line(NHWC_LOAD);
    w.line("");
    w.line("@compute @workgroup_size(WG)");
    w.line("fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {");
    w.line("    let id = P.t0 + gid.x + gid.y * nwg.x * WG;");
    w.line("    if (id >= P.total) {");
    w.line("        return;");
    w.line("    }");
    w.line("    let c4n = P.c / 4u;");
    w.line("    let cq = id % c4n;");
    w.line("    if (SEQ) {");
    seq_body(&mut w);
    w.line("        return;");
    w.line("    }");
    w.line("    var q = id / c4n;");
    w.line("    let xb = q % P.xblocks;");
    w.line("    q = q / P.xblocks;");
    w.line("    let oy = q % P.oh;");
    w.line("    let n = q / P.oh;");
    wln!(w, "    let ox0 = xb * {DWN_PX}u;");
    for j in 0..DWN_PX {
        wln!(w, "    var a{j} = vec4<f32>(0.0);");
    }
    w.line("    for (var r = 0u; r < R; r++) {");
    w.line("        let iy = src_index(i32(oy * P.sh + r * P.dh) - P.pad_top, i32(P.h));");
    w.line("        if (iy < 0) {");
    w.line("            continue;");
    w.line("        }");
    w.line("        let row = (n * P.h + u32(iy)) * P.w;");
    w.line("        let rr = select(r, R - 1u - r, FLIP);");
    w.line("        let ix0 = i32(ox0 * P.sw) - P.pad_left;");
    w.line("        if (WIN) {");
    w.line("            // The row's window, then each tap's weights against its slice of it (the");
    w.line("            // guards on S fold away once S is specialised).");
    for m in 0..DWN_PX + MAX_S - 1 {
        wln!(w, "            var t{m} = vec4<f32>(0.0);");
        let guard = if m + 1 > DWN_PX {
            format!("S > {}u", m + 1 - DWN_PX)
        } else {
            "true".into()
        };
        wln!(w, "            if ({guard}) {{");
        wln!(w, "                let i = src_index(ix0 + {m}, i32(P.w));");
        w.line("                if (i >= 0) {");
        wln!(
            w,
            "                    t{m} = xload((row + u32(i)) * c4n + cq);"
        );
        w.line("                }");
        w.line("            }");
    }
    for sidx in 0..MAX_S {
        wln!(w, "            if (S > {sidx}u) {{");
        wln!(w, "                let wv = wt[(rr * S + select({sidx}u, S - 1u - {sidx}u, FLIP)) * c4n + cq];");
        for j in 0..DWN_PX {
            wln!(w, "                a{j} = fma(t{}, wv, a{j});", j + sidx);
        }
        w.line("            }");
    }
    w.line("        } else {");
    w.line("            for (var s = 0u; s < S; s++) {");
    w.line("                let wv = wt[(rr * S + select(s, S - 1u - s, FLIP)) * c4n + cq];");
    w.line("                let ixs = ix0 + i32(s * P.dw);");
    for j in 0..DWN_PX {
        wln!(
            w,
            "                let i{j} = src_index(ixs + {j} * i32(P.sw), i32(P.w));"
        );
        wln!(w, "                if (i{j} >= 0) {{");
        wln!(
            w,
            "                    a{j} = fma(xload((row + u32(i{j})) * c4n + cq), wv, a{j});"
        );
        w.line("                }");
    }
    w.line("            }");
    w.line("        }");
    w.line("    }");
    bias4(&mut w, "    ");
    w.line("    let out0 = P.y_off4 + ((n * P.oh + oy) * P.ow + ox0) * c4n + cq;");
    for j in 0..DWN_PX {
        wln!(w, "    if (ox0 + {j}u < P.ow) {{");
        wln!(w, "        y[out0 + {j}u * c4n] = a{j} + b4;");
        w.line("    }");
    }
    w.line("}");
    hoist_params(&w.finish(), &DepthwiseNhwcParams::fields())
}

/// `b4`: the bias of channels `4cq..4cq+3` (zero without `HAS_BIAS`).
fn bias4(w: &mut Wgsl, ind: &str) {
    wln!(w, "{ind}var b4 = vec4<f32>(0.0);");
    wln!(w, "{ind}if (HAS_BIAS) {{");
    wln!(w, "{ind}    let c0 = cq * 4u;");
    wln!(
        w,
        "{ind}    b4 = vec4<f32>(bias[c0], bias[c0 + 1u], bias[c0 + 2u], bias[c0 + 3u]);"
    );
    wln!(w, "{ind}}}");
}

/// The `SEQ` path: invocation (n, oy, 4 channels) walks output row oy.
fn seq_body(w: &mut Wgsl) {
    let m = DWN_SEQ_MAX;
    w.line("        let q = id / c4n;");
    w.line("        let oy = q % P.oh;");
    w.line("        let n = q / P.oh;");
    for r in 0..m {
        wln!(w, "        var row{r} = -1;");
        for s in 0..m {
            wln!(w, "        var w{r}_{s} = vec4<f32>(0.0);");
            wln!(w, "        var t{r}_{s} = vec4<f32>(0.0);");
        }
        wln!(w, "        if (R > {r}u) {{");
        wln!(
            w,
            "            let iy = src_index(i32(oy * P.sh + {r}u * P.dh) - P.pad_top, i32(P.h));"
        );
        wln!(
            w,
            "            row{r} = select(-1, i32(n * P.h) + iy, iy >= 0);"
        );
        wln!(w, "            let rr = select({r}u, R - 1u - {r}u, FLIP);");
        for s in 0..m {
            wln!(w, "            if (S > {s}u) {{");
            wln!(
                w,
                "                w{r}_{s} = wt[(rr * S + select({s}u, S - 1u - {s}u, FLIP)) * c4n + cq];"
            );
            w.line("            }");
        }
        for s in 0..m - 1 {
            wln!(w, "            if (S > {}u) {{", s + 1);
            wln!(
                w,
                "                t{r}_{} = rload(row{r}, src_index({s} - P.pad_left, i32(P.w)), c4n, cq);",
                s + 1
            );
            w.line("            }");
        }
        w.line("        }");
    }
    bias4(w, "        ");
    w.line("        let out0 = P.y_off4 + (n * P.oh + oy) * P.ow * c4n + cq;");
    w.line("        for (var ox = 0u; ox < P.ow; ox++) {");
    w.line("            let col = src_index(i32(ox) + i32(S) - 1 - P.pad_left, i32(P.w));");
    w.line("            var a = b4;");
    for r in 0..m {
        wln!(w, "            if (R > {r}u) {{");
        for s in 0..m - 1 {
            wln!(w, "                t{r}_{s} = t{r}_{};", s + 1);
        }
        for s in 0..m {
            wln!(w, "                if (S == {}u) {{", s + 1);
            wln!(
                w,
                "                    t{r}_{s} = rload(row{r}, col, c4n, cq);"
            );
            w.line("                }");
        }
        for s in 0..m {
            wln!(w, "                a = fma(t{r}_{s}, w{r}_{s}, a);");
        }
        w.line("            }");
    }
    w.line("            y[out0 + ox * c4n] = a;");
    w.line("        }");
}
