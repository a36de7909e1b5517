//! `conv2d_wgrad_first`: the first-call kernel of the lavapipe weight gradient. It reads x
//! and dy through verbatim image copies of their buffers, so a first call runs one kernel
//! instead of three (dy panel packing, the input image fill, `conv2d_wgrad_implicit`, whose
//! LLVM compilation alone takes ~0.4–0.5 s on lavapipe).

use crate::gpu::wgsl::{hoist_params, params, spec, wln, ParamStruct, Spec, Wgsl};
use crate::kernels::shared::{flat_loader, subgroup_entry, ConvShape, SG};

/// Output channels per lane (one weight column (c, r, s) per lane): 8 compiles in ~143 ms of
/// LLVM on lavapipe, 16 in ~203 ms (the first call is mostly compilation).
pub(crate) const WFIRST_TK: usize = 8;

params! {
    /// Parameters of `conv2d_wgrad_first`.
    pub(crate) struct WgradFirstParams {
        @embed shape: ConvShape;
        x_off: u32, crs: u32, groups_m: u32, groups_n: u32,
        wg0: u32, step_c: u32, step_r: u32, tw: u32,
        tw_shift: u32, dtw: u32, dtw_shift: u32, _p0: u32,
        _p1: u32, _p2: u32,
    }
}

spec! {
    /// Specialisation of `conv2d_wgrad_first`.
    pub(crate) struct WgradFirstSpec {
        WG: u32 = 8,
        /// True convolution: the gradient of the kernel rotated by 180 degrees.
        FLIP: bool = false,
    }
}

/// The WGSL source of `conv2d_wgrad_first`.
pub(crate) fn source() -> String {
    let tk = WFIRST_TK;
    let mut w = Wgsl::new();
    wln!(
        w,
        "// First-call kernel of the weight gradient (lavapipe, {SG}-lane subgroups): x and dy read"
    );
    w.line(
        "// through verbatim image copies of their buffers (float i at texel i / 4 of rows of tw /",
    );
    w.line(
        "// dtw texels, powers of two), so no packing or fill kernel runs before it. Zero padding.",
    );
    w.line("//");
    wln!(w, "// A workgroup (one subgroup) owns WG weight columns j = (c, r, s) x {tk} output channels of");
    w.line("// one group; each lane one column. Per block of 8 output pixels (images in order, pixels in");
    w.line("// order) lane l loads dy of pixel l of the block for its channels and decodes the pixel's");
    w.line(
        "// (oy, ox), both shared by subgroupBroadcast; each lane loads x at its own tap of every",
    );
    w.line("// pixel of the block. Sums in f32 in pixel order; the steady kernel sums in another order");
    w.line("// (results agree within the conformance tolerance, not bit for bit).");
    w.line("//   dw[(g * kg + k) * crs + j'] with j' = j, or (c, R-1-r, S-1-s) under FLIP");
    w.line("");
    w.line(&WgradFirstParams::wgsl());
    w.line("");
    w.line("@group(0) @binding(0) var<storage, read> P: Params;");
    w.line("@group(0) @binding(1) var tx: texture_storage_2d<rgba32float, read>;");
    w.line("@group(0) @binding(2) var tdy: texture_storage_2d<rgba32float, read>;");
    w.line("@group(0) @binding(3) var<storage, read_write> dw: array<f32>;");
    w.line("");
    w.line(&WgradFirstSpec::wgsl());
    w.line("");
    flat_loader(&mut w, "xl", "tx", "tw", "tw_shift");
    w.line("");
    flat_loader(&mut w, "dl", "tdy", "dtw", "dtw_shift");
    w.line("");
    subgroup_entry(&mut w);
    w.line("    // Workgroup -> (group, channel block, column block), column block fastest.");
    w.line("    let wg = P.wg0 + wid.x + wid.y * nwg.x;");
    w.line("    let gm = wg % P.groups_m;");
    w.line("    let t = wg / P.groups_m;");
    w.line("    let tn = t % P.groups_n;");
    w.line("    let g = min(t / P.groups_n, P.groups - 1u);");
    w.line("    let live = t / P.groups_n < P.groups;");
    w.line("    // This lane's column (the last one stands in for those past it) and its tap.");
    w.line("    let j = gm * WG + lid;");
    w.line("    let jc = min(j, P.crs - 1u);");
    w.line("    let rs = P.r * P.s;");
    w.line("    let c = jc / rs;");
    w.line("    let tap = jc - c * rs;");
    w.line("    let r = tap / P.s;");
    w.line("    let s = tap - r * P.s;");
    w.line("    let dr = i32(r * P.dh) - P.pad_top;");
    w.line("    let ds = i32(s * P.dw) - P.pad_left;");
    w.line("    let plane = P.h * P.w;");
    w.line("    let ohw = P.oh * P.ow;");
    w.line("    let xc = P.x_off + (g * P.cg + c) * plane;");
    wln!(w, "    let k0 = tn * {tk}u;");
    w.line("    let kl = P.kg - 1u;");
    w.line("    // dy rows of this lane's channels (clamped; masked at the store).");
    for t in 0..tk {
        wln!(w, "    let d{t} = (g * P.kg + min(k0 + {t}u, kl)) * ohw;");
    }
    for t in 0..tk {
        wln!(w, "    var c{t} = 0.0;");
    }
    w.line("    for (var n = 0u; n < P.n; n++) {");
    w.line("        let xn = xc + n * P.c * plane;");
    w.line("        let dn = n * P.k * ohw;");
    w.line("        // Pixel sl of each block of 8, advanced by counters (a division is a per-lane loop).");
    w.line("        var ox = sl % P.ow;");
    w.line("        var oy = sl / P.ow;");
    w.line("        for (var p0 = 0u; p0 < ohw; p0 += 8u) {");
    w.line("            let p = p0 + sl;");
    w.line("            let lp = p < ohw;");
    w.line("            let pc = min(p, ohw - 1u);");
    for t in 0..tk {
        wln!(
            w,
            "            let e{t} = select(0.0, dl(dn + d{t} + pc), lp);"
        );
    }
    w.line("            let iy0 = select(-1000000, i32(oy * P.sh), lp);");
    w.line("            let ix0 = i32(ox * P.sw);");
    w.line("            ox += P.step_c;");
    w.line("            oy += P.step_r;");
    w.line("            let wc = ox >= P.ow;");
    w.line("            ox = select(ox, ox - P.ow, wc);");
    w.line("            oy = select(oy, oy + 1u, wc);");
    for i in 0..SG {
        wln!(w, "            {{");
        wln!(
            w,
            "                let iy = subgroupBroadcast(iy0, {i}u) + dr;"
        );
        wln!(
            w,
            "                let ix = subgroupBroadcast(ix0, {i}u) + ds;"
        );
        w.line(
            "                let inside = iy >= 0 && iy < i32(P.h) && ix >= 0 && ix < i32(P.w);",
        );
        w.line("                let a = select(0.0, xl(xn + u32(max(iy, 0)) * P.w + u32(max(ix, 0))), inside);");
        for t in 0..tk {
            wln!(
                w,
                "                c{t} = fma(subgroupBroadcast(e{t}, {i}u), a, c{t});"
            );
        }
        wln!(w, "            }}");
    }
    w.line("        }");
    w.line("    }");
    w.line("    if (!live || j >= P.crs) {");
    w.line("        return;");
    w.line("    }");
    w.line("    var js = j;");
    w.line("    if (FLIP) {");
    w.line("        js = c * rs + (P.r - 1u - r) * P.s + (P.s - 1u - s);");
    w.line("    }");
    for t in 0..tk {
        wln!(w, "    if (k0 + {t}u < P.kg) {{");
        wln!(w, "        dw[(g * P.kg + k0 + {t}u) * P.crs + js] = c{t};");
        wln!(w, "    }}");
    }
    w.line("}");
    hoist_params(&w.finish(), &WgradFirstParams::fields())
}
