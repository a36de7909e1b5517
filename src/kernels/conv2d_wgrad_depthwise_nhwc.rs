//! `conv2d_wgrad_depthwise_nhwc`: per-row partial weight gradients of a depthwise
//! convolution (no channel multiplier, kernels up to 3 x 3, column stride and dilation 1) of
//! channels-last x and dy, for CPU-like adapters; `reduce_rows` then sums the rows' partials
//! in order (deterministic).

use crate::gpu::wgsl::{hoist_params, params, spec, wln, ParamStruct, Spec, Wgsl, SRC_INDEX};
use crate::kernels::shared::{ConvShape, NHWC_LOAD};

params! {
    /// Parameters of `conv2d_wgrad_depthwise_nhwc`: the convolution's shape, the launch, the
    /// flat images of x and dy (texels per row, a power of two, and its log2).
    pub(crate) struct WgradDepthwiseNhwcParams {
        @embed shape: ConvShape;
        total: u32, t0: u32, tw: u32, tw_shift: u32,
        dtw: u32, dtw_shift: u32,
    }
}

spec! {
    /// Specialisation of `conv2d_wgrad_depthwise_nhwc`.
    pub(crate) struct WgradDepthwiseNhwcSpec {
        WG: u32 = 64,
        /// Kernel height and width (1..=3).
        R: u32 = 3 in [1, 2, 3],
        S: u32 = 3 in [1, 2, 3],
        PAD_MODE: u32 = 0 in [0, 1, 2, 3],
        FLIP: bool = false,
    }
}

/// Largest kernel side.
pub(crate) const WDN_MAX: usize = 3;

/// The WGSL source of `conv2d_wgrad_depthwise_nhwc`.
pub(crate) fn source() -> String {
    let m = WDN_MAX;
    let mut w = Wgsl::new();
    w.line(
        "// Weight gradient of a depthwise convolution of channels-last tensors (groups = C = K):",
    );
    w.line(
        "// invocation (image n, output row oy, 4 channels), channels fastest. Along the row it",
    );
    w.line("// keeps, per kernel row r, a window of the S x texels the output pixel's taps read");
    w.line(
        "// (column stride and dilation 1: one new texel per row and pixel), multiplies them by",
    );
    w.line(
        "// the pixel's dy texel and accumulates every tap for the 4 channels. The row's sums go",
    );
    w.line("// to partial[(n * Ho + oy) * C + c][tap] (tap = r * S + s, flipped for true");
    w.line("// convolution); reduce_rows adds the rows in order. x [N, H, W, C] and dy");
    w.line("// [N, Ho, Wo, C] are read-only storage images holding them verbatim.");
    w.line("");
    w.line(&WgradDepthwiseNhwcParams::wgsl());
    w.line("");
    w.line("@group(0) @binding(0) var<storage, read> P: Params;");
    w.line("@group(0) @binding(1) var tx: texture_storage_2d<rgba32float, read>;");
    w.line("@group(0) @binding(2) var tdy: texture_storage_2d<rgba32float, read>;");
    w.line("@group(0) @binding(3) var<storage, read_write> partial: array<f32>;");
    w.line("");
    w.line(&WgradDepthwiseNhwcSpec::wgsl());
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
    w.line("    let q = id / c4n;");
    w.line("    let oy = q % P.oh;");
    w.line("    let n = q / P.oh;");
    for r in 0..m {
        // Input row of kernel row r (image row index n * H + iy, or -1).
        wln!(w, "    var row{r} = -1;");
        wln!(w, "    if (R > {r}u) {{");
        wln!(
            w,
            "        let iy = src_index(i32(oy * P.sh + {r}u * P.dh) - P.pad_top, i32(P.h));"
        );
        wln!(
            w,
            "        row{r} = select(-1, i32(n * P.h) + iy, iy >= 0);"
        );
        w.line("    }");
        for s in 0..m {
            wln!(w, "    var a{r}_{s} = vec4<f32>(0.0);");
        }
    }
    w.line(
        "    // Window of the first pixel: columns -pad_left .. -pad_left + S - 2 (the last one is",
    );
    w.line("    // loaded at the top of each step).");
    for r in 0..m {
        for s in 0..m {
            wln!(w, "    var t{r}_{s} = vec4<f32>(0.0);");
        }
        for s in 0..m - 1 {
            wln!(w, "    if (R > {r}u && S > {}u) {{", s + 1);
            wln!(
                w,
                "        t{r}_{} = rload(row{r}, src_index({s} - P.pad_left, i32(P.w)), c4n, cq);",
                s + 1
            );
            w.line("    }");
        }
    }
    w.line("    let dy0 = ((n * P.oh + oy) * P.ow) * c4n + cq;");
    w.line("    for (var ox = 0u; ox < P.ow; ox++) {");
    w.line("        let dt = dy0 + ox * c4n;");
    w.line("        let d = textureLoad(tdy, vec2<u32>(dt & (P.dtw - 1u), dt >> P.dtw_shift));");
    w.line("        let col = src_index(i32(ox) + i32(S) - 1 - P.pad_left, i32(P.w));");
    for r in 0..m {
        wln!(w, "        if (R > {r}u) {{");
        // Shift the window left and load the new last column (index S - 1).
        for s in 0..m - 1 {
            wln!(w, "            t{r}_{s} = t{r}_{};", s + 1);
        }
        for s in 0..m {
            wln!(w, "            if (S == {}u) {{", s + 1);
            wln!(w, "                t{r}_{s} = rload(row{r}, col, c4n, cq);");
            w.line("            }");
        }
        for s in 0..m {
            // Window slot of tap s: the slots hold columns ox - pad .. ox - pad + S - 1 at
            // indices 0..S-1 once shifted (slot j = tap j).
            wln!(w, "            a{r}_{s} = fma(t{r}_{s}, d, a{r}_{s});");
        }
        w.line("        }");
    }
    w.line("    }");
    w.line("    let rs = R * S;");
    w.line("    let prow = ((n * P.oh + oy) * P.c + cq * 4u) * rs;");
    for r in 0..m {
        for s in 0..m {
            wln!(w, "    if (R > {r}u && S > {s}u) {{");
            wln!(
                w,
                "        let tap = select({r}u * S + {s}u, (R - 1u - {r}u) * S + (S - 1u - {s}u), FLIP);"
            );
            for e in 0..4 {
                let lane = ['x', 'y', 'z', 'w'][e];
                wln!(
                    w,
                    "        partial[prow + {e}u * rs + tap] = a{r}_{s}.{lane};"
                );
            }
            w.line("    }");
        }
    }
    w.line("}");
    hoist_params(&w.finish(), &WgradDepthwiseNhwcParams::fields())
}
