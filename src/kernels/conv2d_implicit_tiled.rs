//! `conv2d_implicit_tiled`: implicit-GEMM convolution for GPUs with workgroup-memory tiles,
//! gathering the input patches from the tensor with the padding mode.

use crate::gpu::wgsl::{params, spec, wln, ParamStruct, Spec, Wgsl, SRC_INDEX};
use crate::kernels::shared::ConvShape;

/// Output channels per workgroup tile.
pub(crate) const TT_M: usize = 32;
/// Output pixels per workgroup tile.
pub(crate) const TT_P: usize = 32;
/// Reduction rows per workgroup-memory stage.
pub(crate) const TT_K: usize = 16;

params! {
    /// Parameters of `conv2d_implicit_tiled`.
    pub(crate) struct TiledParams {
        @embed shape: ConvShape;
        x_off: u32, crs: u32, g_stride: u32, k_stride: u32,
        c_stride: u32, tiles_m: u32, tiles_p: u32, batch: u32,
        wg0: u32, y_off: u32,
    }
}

spec! {
    /// Specialisation of `conv2d_implicit_tiled`.
    pub(crate) struct TiledSpec {
        /// Fixed at 64 (8 x 8); an override so every kernel has one.
        WG: u32 = 64,
        HAS_BIAS: bool = false,
        PAD_MODE: u32 = 0 in [0, 1, 2, 3],
        FLIP: bool = false,
    }
}

/// The WGSL source of `conv2d_implicit_tiled`.
pub(crate) fn source() -> String {
    let mut w = Wgsl::new();
    w.line(
        "// Implicit-GEMM convolution for GPUs: workgroup-memory tiles (the tfjs conv2d_mm / ORT",
    );
    w.line("// im2col-matmul shape). A workgroup of 8 x 8 invocations owns a tile of");
    wln!(
        w,
        "// {TT_M} output channels x {TT_P} output pixels of one (image, group); each invocation"
    );
    w.line("// accumulates 4 channels x 4 pixels. Per stage the workgroup stages");
    wln!(w, "// {TT_M} x {TT_K} weights and the {TT_K} x {TT_P} input patch values (gathered from x with the");
    w.line("// padding mode: no column matrix) in workgroup memory, then every invocation runs");
    wln!(w, "// {TT_K} rank-1 updates from there. Reduction order k = (c * R + r) * S + s, the weights'");
    w.line("// own order, so weight loads are contiguous.");
    w.line("// Weight (group g, output channel m, input channel c, tap t) is read from");
    w.line("//   w[g * g_stride + m * k_stride + c * c_stride + t]");
    w.line("// (the forward layout, or its channel-swapped view for the input gradient); taps are");
    w.line("// rotated for true convolution (FLIP).");
    w.line("//   y[y_off + (n * K + g * kg + m) * ohw + pixel] (+ bias[g * kg + m])");
    w.line("");
    w.line(&TiledParams::wgsl());
    w.line("");
    w.line("@group(0) @binding(0) var<storage, read> P: Params;");
    w.line("@group(0) @binding(1) var<storage, read> x: array<f32>;");
    w.line("@group(0) @binding(2) var<storage, read> wt: array<f32>;");
    w.line("@group(0) @binding(3) var<storage, read> bias: array<f32>;");
    w.line("@group(0) @binding(4) var<storage, read_write> y: array<f32>;");
    w.line("");
    w.line(&TiledSpec::wgsl());
    w.line("");
    wln!(w, "var<workgroup> wa: array<array<f32, {TT_M}>, {TT_K}>;");
    wln!(w, "var<workgroup> xb: array<array<f32, {TT_P}>, {TT_K}>;");
    w.line("");
    w.line(SRC_INDEX);
    w.line("");
    w.line("@compute @workgroup_size(64)");
    w.line("fn main(");
    w.line("    @builtin(workgroup_id) wid: vec3<u32>,");
    w.line("    @builtin(num_workgroups) nwg: vec3<u32>,");
    w.line("    @builtin(local_invocation_index) lid: u32,");
    w.line(") {");
    w.line("    let wg = P.wg0 + wid.x + wid.y * nwg.x;");
    w.line("    let tp = wg % P.tiles_p;");
    w.line("    let t = wg / P.tiles_p;");
    w.line("    let tm = t % P.tiles_m;");
    w.line("    let bt = t / P.tiles_m;");
    w.line("    let live = bt < P.batch;");
    w.line("    let bc = min(bt, P.batch - 1u);");
    w.line("    let g = bc % P.groups;");
    w.line("    let n = bc / P.groups;");
    w.line("    let tx = lid % 8u;");
    w.line("    let ty = lid / 8u;");
    wln!(w, "    let m0 = tm * {TT_M}u;");
    wln!(w, "    let p0 = tp * {TT_P}u;");
    w.line("    let ohw = P.oh * P.ow;");
    w.line("    let rs = P.r * P.s;");
    w.line("    let x_img = P.x_off + (n * P.c + g * P.cg) * P.h * P.w;");
    w.line("    let w_grp = g * P.g_stride;");
    w.line("    var acc0 = vec4<f32>(0.0);");
    w.line("    var acc1 = vec4<f32>(0.0);");
    w.line("    var acc2 = vec4<f32>(0.0);");
    w.line("    var acc3 = vec4<f32>(0.0);");
    wln!(w, "    for (var k0 = 0u; k0 < P.crs; k0 += {TT_K}u) {{");
    let n_a = TT_M * TT_K / 64;
    let n_b = TT_K * TT_P / 64;
    wln!(w, "        // Stage weights: {n_a} per invocation.");
    wln!(w, "        for (var e = 0u; e < {n_a}u; e++) {{");
    w.line("            let idx = lid + 64u * e;");
    wln!(w, "            let mm = idx / {TT_K}u;");
    wln!(w, "            let kk = idx % {TT_K}u;");
    w.line("            let kq = k0 + kk;");
    w.line("            let m = m0 + mm;");
    w.line("            var v = 0.0;");
    w.line("            if (kq < P.crs && m < P.kg) {");
    w.line("                let ci = kq / rs;");
    w.line("                var tap = kq - ci * rs;");
    w.line("                if (FLIP) {");
    w.line("                    tap = rs - 1u - tap;");
    w.line("                }");
    w.line("                v = wt[w_grp + m * P.k_stride + ci * P.c_stride + tap];");
    w.line("            }");
    w.line("            wa[kk][mm] = v;");
    w.line("        }");
    wln!(
        w,
        "        // Stage the input patch values: {n_b} per invocation."
    );
    wln!(w, "        for (var e = 0u; e < {n_b}u; e++) {{");
    w.line("            let idx = lid + 64u * e;");
    wln!(w, "            let kk = idx / {TT_P}u;");
    wln!(w, "            let pp = idx % {TT_P}u;");
    w.line("            let kq = k0 + kk;");
    w.line("            let px = p0 + pp;");
    w.line("            var v = 0.0;");
    w.line("            if (kq < P.crs && px < ohw) {");
    w.line("                let ci = kq / rs;");
    w.line("                let tap = kq - ci * rs;");
    w.line("                let rr = tap / P.s;");
    w.line("                let ss = tap - rr * P.s;");
    w.line("                let oy = px / P.ow;");
    w.line("                let ox = px - oy * P.ow;");
    w.line("                let iy = src_index(i32(oy * P.sh + rr * P.dh) - P.pad_top, i32(P.h));");
    w.line(
        "                let ix = src_index(i32(ox * P.sw + ss * P.dw) - P.pad_left, i32(P.w));",
    );
    w.line("                if (iy >= 0 && ix >= 0) {");
    w.line("                    v = x[x_img + (ci * P.h + u32(iy)) * P.w + u32(ix)];");
    w.line("                }");
    w.line("            }");
    w.line("            xb[kk][pp] = v;");
    w.line("        }");
    w.line("        workgroupBarrier();");
    wln!(w, "        for (var kk = 0u; kk < {TT_K}u; kk++) {{");
    w.line("            let a = vec4<f32>(wa[kk][ty * 4u], wa[kk][ty * 4u + 1u], wa[kk][ty * 4u + 2u], wa[kk][ty * 4u + 3u]);");
    w.line("            let b = vec4<f32>(xb[kk][tx * 4u], xb[kk][tx * 4u + 1u], xb[kk][tx * 4u + 2u], xb[kk][tx * 4u + 3u]);");
    w.line("            acc0 = fma(vec4<f32>(a.x), b, acc0);");
    w.line("            acc1 = fma(vec4<f32>(a.y), b, acc1);");
    w.line("            acc2 = fma(vec4<f32>(a.z), b, acc2);");
    w.line("            acc3 = fma(vec4<f32>(a.w), b, acc3);");
    w.line("        }");
    w.line("        workgroupBarrier();");
    w.line("    }");
    w.line("    if (!live) {");
    w.line("        return;");
    w.line("    }");
    w.line("    let accs = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);");
    w.line("    for (var i = 0u; i < 4u; i++) {");
    w.line("        let m = m0 + ty * 4u + i;");
    w.line("        if (m < P.kg) {");
    w.line("            var b0 = 0.0;");
    w.line("            if (HAS_BIAS) {");
    w.line("                b0 = bias[g * P.kg + m];");
    w.line("            }");
    w.line("            let row = P.y_off + (n * P.k + g * P.kg + m) * ohw;");
    w.line("            for (var e = 0u; e < 4u; e++) {");
    w.line("                let px = p0 + tx * 4u + e;");
    w.line("                if (px < ohw) {");
    w.line("                    y[row + px] = accs[i][e] + b0;");
    w.line("                }");
    w.line("            }");
    w.line("        }");
    w.line("    }");
    w.line("}");
    // Barriers: the parameters stay in the storage buffer (no `hoist_params`).
    w.finish()
}
