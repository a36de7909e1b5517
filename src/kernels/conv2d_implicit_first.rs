//! `conv2d_implicit_first`: the first-call kernel of the lavapipe implicit GEMM. It reads x
//! and the weights through verbatim image copies of their buffers, so a first call runs one
//! kernel instead of three (weight packing, input padding, the GEMM): on lavapipe each
//! kernel costs at least ~30 ms of LLVM at its first dispatch.

use crate::gpu::wgsl::{hoist_params, params, spec, wln, ParamStruct, Spec, Wgsl, ACTIVATION};
use crate::kernels::conv2d_implicit::{bias_vectors, next_tap, store_and_entry};
use crate::kernels::shared::{acc4, flat_loader, scalar_subblocks, ConvShape, SG};

/// Output channels per lane (one pixel per lane).
pub(crate) const FIRST_TN: usize = 8;

params! {
    /// Parameters of `conv2d_implicit_first`.
    pub(crate) struct ImplicitFirstParams {
        @embed shape: ConvShape;
        x_off: u32, w_off: u32, g_stride: u32, k_stride: u32,
        c_stride: u32, cb8: u32, groups_m: u32, groups_n: u32,
        batch: u32, wg0: u32, y_off: u32, ysc: u32,
        ysp: u32, tw: u32, tw_shift: u32, wtw: u32,
        wtw_shift: u32, alpha: f32, lo: f32, hi: f32,
        _p0: u32, _p1: u32,
    }
}

spec! {
    /// Specialisation of `conv2d_implicit_first`.
    pub(crate) struct ImplicitFirstSpec {
        WG: u32 = 8,
        HAS_BIAS: bool = false,
        /// True convolution: read the kernel rotated by 180 degrees.
        FLIP: bool = false,
        /// The fused epilogue's activation (`Activation::code`).
        ACT: u32 = 0 in [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        /// The fused epilogue's residual position (`Residual::code`).
        RES: u32 = 0 in [0, 1, 2],
    }
}

/// The WGSL source of `conv2d_implicit_first`.
pub(crate) fn source() -> String {
    let tn = FIRST_TN;
    let mut w = Wgsl::new();
    wln!(
        w,
        "// First-call kernel of conv2d_implicit (lavapipe, {SG}-lane subgroups): the same sums in"
    );
    w.line("// the same order as conv2d_implicit and its stand-ins (bit-identical results), with x and");
    w.line("// the weights read through verbatim image copies of their buffers (float i at texel i / 4");
    w.line(
        "// of rows of tw texels, a power of two) instead of the padded input image and the packed",
    );
    w.line(
        "// weight panels, so that no packing or padding kernel runs before it. Zero padding only.",
    );
    w.line("//");
    wln!(w, "// A workgroup (one subgroup) owns WG consecutive output pixels x {tn} output channels of one");
    w.line("// (image, group); each lane one pixel. Per reduction step (8-channel block cb, tap r, tap s;");
    w.line("// s fastest) a lane loads the 8 channels of its pixel's tap and the weights of input");
    wln!(
        w,
        "// channel 8 cb + lane for the {tn} output channels, shared by subgroupBroadcast."
    );
    w.line(
        "//   y[y_off + n * K * ohw + (g * kg + col) * ysc + pixel * ysp] (+ bias[g * kg + col])",
    );
    w.line("");
    w.line(&ImplicitFirstParams::wgsl());
    w.line("");
    w.line("@group(0) @binding(0) var<storage, read> P: Params;");
    w.line("@group(0) @binding(1) var tx: texture_storage_2d<rgba32float, read>;");
    w.line("@group(0) @binding(2) var tw: texture_storage_2d<rgba32float, read>;");
    w.line("@group(0) @binding(3) var<storage, read> bias: array<f32>;");
    w.line("@group(0) @binding(4) var<storage, read_write> y: array<f32>;");
    w.line("// The residual of the fused epilogue (y's layout; read only when RES != 0).");
    w.line("@group(0) @binding(5) var<storage, read> r: array<f32>;");
    w.line("");
    w.line(&ImplicitFirstSpec::wgsl());
    w.line("");
    w.line(ACTIVATION);
    w.line("");
    flat_loader(&mut w, "xl", "tx", "tw", "tw_shift");
    w.line("");
    flat_loader(&mut w, "wl", "tw", "wtw", "wtw_shift");
    w.line("");
    store_and_entry(&mut w, "P.oh * P.ow");
    w.line("    let ohw = P.oh * P.ow;");
    w.line("    let m0 = gm * WG + lid;");
    wln!(w, "    let n0 = tn * {tn}u;");
    w.line(
        "    // This lane's pixel (the last one stands in for those past it) and its tap (0, 0).",
    );
    w.line("    let p0 = min(m0, ohw - 1u);");
    w.line("    let iy0 = i32((p0 / P.ow) * P.sh) - P.pad_top;");
    w.line("    let ix0 = i32((p0 % P.ow) * P.sw) - P.pad_left;");
    w.line("    let plane = P.h * P.w;");
    w.line("    let xb = P.x_off + (n * P.c + g * P.cg) * plane;");
    w.line("    let wb = P.w_off + g * P.g_stride;");
    w.line("    let kl = P.kg - 1u;");
    for n in 0..tn {
        wln!(w, "    var c0_{n} = 0.0;");
    }
    w.line("    var cb = 0u;");
    w.line("    var tr = 0u;");
    w.line("    var ts = 0u;");
    w.line("    let steps = P.cb8 * P.r * P.s;");
    w.line("    for (var t = 0u; t < steps; t++) {");
    w.line("        // Weights: lane sl holds input channel 8 cb + sl of this tap (rotated with FLIP).");
    w.line("        let ci = cb * 8u + sl;");
    w.line("        var wr = tr;");
    w.line("        var ws = ts;");
    w.line("        if (FLIP) {");
    w.line("            wr = P.r - 1u - tr;");
    w.line("            ws = P.s - 1u - ts;");
    w.line("        }");
    w.line("        let wrow = wb + min(ci, P.cg - 1u) * P.c_stride + wr * P.s + ws;");
    for j in 0..tn / 4 {
        let loads: Vec<String> = (0..4)
            .map(|e| format!("wl(wrow + min(n0 + {}u, kl) * P.k_stride)", 4 * j + e))
            .collect();
        let keep: Vec<String> = (0..4)
            .map(|e| format!("n0 + {}u < P.kg", 4 * j + e))
            .collect();
        wln!(
            w,
            "        let bl{j} = select(vec4<f32>(0.0), vec4<f32>({}), vec4<bool>({}) & vec4<bool>(ci < P.cg));",
            loads.join(", "),
            keep.join(", ")
        );
    }
    w.line("        // Input: the 8 channels of the block at this lane's tap (0 in the padding).");
    w.line("        let iy = iy0 + i32(tr * P.dh);");
    w.line("        let ix = ix0 + i32(ts * P.dw);");
    w.line("        let inside = iy >= 0 && iy < i32(P.h) && ix >= 0 && ix < i32(P.w);");
    w.line("        let xi = xb + cb * 8u * plane + u32(max(iy, 0)) * P.w + u32(max(ix, 0));");
    for k in 0..SG {
        wln!(
            w,
            "        let a{k} = select(0.0, xl(xi + {k}u * plane), inside && cb * 8u + {k}u < P.cg);"
        );
    }
    scalar_subblocks(&mut w, "        ", 1, tn, |_, k| format!("a{k}"));
    next_tap(&mut w);
    w.line("        cb = select(cb, cb + 1u, er);");
    w.line("    }");
    w.line("    let base = P.y_off + n * P.k * ohw + g * P.kg * P.ysc;");
    bias_vectors(&mut w, tn / 4);
    for j in 0..tn / 4 {
        wln!(
            w,
            "    store(live, base, m0, m0 * P.ysp, n0 + {}u, {}, bv{j});",
            4 * j,
            acc4(0, j)
        );
    }
    w.line("}");
    hoist_params(&w.finish(), &ImplicitFirstParams::fields())
}
