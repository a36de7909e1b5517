//! `conv2d_depthwise`: depthwise convolution forward with a register window of the input
//! row, and `conv2d_depthwise_tiled`, its workgroup-memory variant for GPUs (hand-written
//! body in `conv2d_depthwise_tiled.wgsl`). Both take [`DepthwiseParams`] and [`DepthwiseSpec`].

use crate::gpu::wgsl::{
    hoist_params, params, spec, wln, Elem, ParamStruct, Spec, Wgsl, SRC_INDEX, XLOAD,
};
use crate::kernels::shared::ConvShape;

params! {
    /// Parameters of `conv2d_depthwise` and `conv2d_depthwise_tiled`.
    pub(crate) struct DepthwiseParams {
        @embed shape: ConvShape;
        xblocks: u32, total: u32, x_off: u32, y_off: u32,
        yblocks: u32, _p0: u32,
    }
}

spec! {
    /// Specialisation of `conv2d_depthwise` and `conv2d_depthwise_tiled`.
    pub(crate) struct DepthwiseSpec {
        /// Invocations per workgroup (`conv2d_depthwise_tiled`: 64, 8 rows x 8 groups of 4
        /// columns; the host sets no other).
        WG: u32 = 64,
        /// Kernel width (1..=[`DW_MAX_S`]) and column stride (1..=[`DW_MAX_SW`]).
        S: u32 = 3 in [1, 2, 3, 4, 5, 6, 7],
        SW: u32 = 1 in [1, 2],
        PAD_MODE: u32 = 0 in [0, 1, 2, 3],
        HAS_BIAS: bool = false,
        FLIP: bool = false,
    }
}

/// Output columns per invocation.
pub(crate) const DW_TX: usize = 16;
/// Widest kernel.
pub(crate) const DW_MAX_S: usize = 7;
/// Largest column stride.
pub(crate) const DW_MAX_SW: usize = 2;

/// The WGSL source of `conv2d_depthwise`.
pub(crate) fn source() -> String {
    let maxlen = (DW_TX - 1) * DW_MAX_SW + DW_MAX_S;
    let mut w = Wgsl::new();
    w.line(Elem::F32.header());
    w.line(
        "// Depthwise convolution forward (groups == C, any channel multiplier), for kernels up to",
    );
    wln!(
        w,
        "// {DW_MAX_S} wide, column stride SW <= {DW_MAX_SW} and column dilation 1. One invocation computes {DW_TX}"
    );
    w.line(
        "// consecutive outputs of one row of one output channel. For each kernel row it loads the",
    );
    w.line("// input row window once into named registers (TX*SW + S - SW values, resolved through the");
    w.line(
        "// padding mode) and reuses every value for all the taps that read it: about S/SW times",
    );
    w.line("// fewer loads than the general direct kernel, which matters where loads dominate");
    w.line("// (lavapipe). Bias is fused.");
    w.line("");
    w.line(&DepthwiseParams::wgsl());
    w.line("");
    w.line("@group(0) @binding(0) var<storage, read> P: Params;");
    w.line("@group(0) @binding(1) var<storage, read> x: array<f32>;");
    w.line("@group(0) @binding(2) var<storage, read> wt: array<f32>;");
    w.line("@group(0) @binding(3) var<storage, read> bias: array<f32>;");
    w.line("@group(0) @binding(4) var<storage, read_write> y: array<f32>;");
    w.line("");
    w.line(&DepthwiseSpec::wgsl());
    w.line("");
    w.line(SRC_INDEX);
    w.line("");
    w.line(XLOAD);
    w.line("");
    w.line("@compute @workgroup_size(WG)");
    w.line("fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {");
    w.line("    let id = gid.x + gid.y * nwg.x * WG;");
    w.line("    if (id >= P.total) {");
    w.line("        return;");
    w.line("    }");
    w.line("    let xb = id % P.xblocks;");
    w.line("    var t = id / P.xblocks;");
    w.line("    let oy = t % P.oh;");
    w.line("    t = t / P.oh;");
    w.line("    let k = t % P.k;");
    w.line("    let n = t / P.k;");
    w.line("    let c = k / P.kg;");
    wln!(w, "    let ox0 = xb * {DW_TX}u;");
    w.line("    let ix0 = i32(ox0 * SW) - P.pad_left;");
    w.line("    let xplane = P.x_off + (n * P.c + c) * P.h * P.w;");
    w.line("    let wbase = k * P.r * S;");
    for q in 0..DW_TX / 4 {
        wln!(w, "    var acc{q} = vec4<f32>(0.0);");
    }
    w.line("    for (var r = 0u; r < P.r; r++) {");
    w.line("        let sy = src_index(i32(oy * P.sh + r * P.dh) - P.pad_top, i32(P.h));");
    w.line("        if (sy < 0) {");
    w.line("            continue;");
    w.line("        }");
    w.line("        let row = xplane + u32(sy) * P.w;");
    w.line("        let rr = select(r, P.r - 1u - r, FLIP);");
    for i in 0..maxlen {
        // Window element i is used when i < (TX - 1) * SW + S.
        wln!(w, "        var v{i} = 0.0;");
        wln!(w, "        if ({}u * SW + S > {i}u) {{", DW_TX - 1);
        wln!(w, "            v{i} = xload(row, ix0 + {i});");
        w.line("        }");
    }
    for sidx in 0..DW_MAX_S {
        wln!(w, "        if (S > {sidx}u) {{");
        wln!(
            w,
            "            let wv = wt[wbase + rr * S + select({sidx}u, S - 1u - {sidx}u, FLIP)];"
        );
        for q in 0..DW_TX / 4 {
            // Outputs j = 4q..4q+3 read window element j * SW + sidx.
            let window = |sw: usize| -> String {
                let e: Vec<String> = (0..4)
                    .map(|e| format!("v{}", (4 * q + e) * sw + sidx))
                    .collect();
                e.join(", ")
            };
            w.line("            if (SW == 1u) {");
            wln!(
                w,
                "                acc{q} = fma(vec4<f32>(wv), vec4<f32>({}), acc{q});",
                window(1)
            );
            w.line("            } else {");
            wln!(
                w,
                "                acc{q} = fma(vec4<f32>(wv), vec4<f32>({}), acc{q});",
                window(2)
            );
            w.line("            }");
        }
        w.line("        }");
    }
    w.line("    }");
    w.line("    var b = 0.0;");
    w.line("    if (HAS_BIAS) {");
    w.line("        b = bias[k];");
    w.line("    }");
    w.line("    let ybase = P.y_off + ((n * P.k + k) * P.oh + oy) * P.ow;");
    for q in 0..DW_TX / 4 {
        w.line("    for (var e = 0u; e < 4u; e++) {");
        wln!(w, "        let ox = ox0 + {}u + e;", 4 * q);
        w.line("        if (ox < P.ow) {");
        wln!(w, "            y[ybase + ox] = acc{q}[e] + b;");
        w.line("        }");
        w.line("    }");
    }
    w.line("}");
    hoist_params(&w.finish(), &DepthwiseParams::fields())
}

/// The WGSL source of `conv2d_depthwise_tiled` (body in `conv2d_depthwise_tiled.wgsl`).
pub(crate) fn tiled_source() -> String {
    let mut w = Wgsl::new();
    w.line(&DepthwiseParams::wgsl());
    w.line("");
    w.line(&DepthwiseSpec::wgsl());
    w.line("");
    w.line(SRC_INDEX);
    w.line("");
    w.line(include_str!("conv2d_depthwise_tiled.wgsl"));
    let src = w.finish();
    if src.contains("Barrier") {
        src
    } else {
        hoist_params(&src, &DepthwiseParams::fields())
    }
}
