//! `conv2d_wgrad_implicit`: the weight gradient as an implicit GEMM on storage images for
//! CPU-like adapters with 8-lane subgroups (lavapipe), in three variants.

use crate::gpu::wgsl::{hoist_params, params, spec, wln, ParamStruct, Spec, Wgsl};
use crate::kernels::conv2d_implicit::IC_TN;
use crate::kernels::f16_convert::F32_TO_F16_4;
use crate::kernels::shared::{
    acc4, acc4_rows, col_sums, scalar_subblocks, subgroup_entry, IMPLICIT_LAYOUT_DOC, SG,
};

params! {
    /// Parameters of `conv2d_wgrad_implicit` (all variants): output geometry, kernel, input
    /// image layout, then the launch and dy-panel fields.
    pub(crate) struct WgradImplicitParams {
        ohw: u32, ow: u32, sh: u32, sw: u32,
        dh: u32, dw: u32, r: u32, s: u32,
        cb8: u32, cpr: u32, wp: u32, hp: u32,
        rows_img: u32, groups_m: u32, groups_n: u32, groups: u32,
        wg0: u32, kg: u32, cg: u32, nimg: u32,
        kpp: u32, hdy: u32, rb_total: u32, n_base: u32,
        /// dy read from the input image of the input gradient's implicit GEMM (the `_v4d`
        /// kernel, see `source`): its blocks per row, plane width and height, block rows per
        /// image, blocks per group, and the offset of pixel (0, 0) in a plane (its padding).
        d_cpr: u32, d_wp: u32, d_hp: u32, d_rows: u32,
        d_qg: u32, d_x0: u32, d_y0: u32, _d0: u32,
    }
}

spec! {
    /// Specialisation of `conv2d_wgrad_implicit`.
    pub(crate) struct WgradImplicitSpec {
        WG: u32 = 8,
        FLIP: bool = false,
        ACCUMULATE: bool = false,
        /// dw stored channels-last (`[K, R, S, C/groups]`, PyTorch's channels_last weights)
        /// instead of `[K, C/groups, R, S]` (the scalar-store variants; 1x1 kernels store the
        /// same order either way).
        DW_CL: bool = false,
        /// Also write the bias gradient, the sums of dy over the images and pixels of the
        /// launch, `sums[g * kg + col]` (added to them with `ACCUMULATE`).
        COL_SUMS: bool = false,
    }
}

/// The WGSL source of `conv2d_wgrad_implicit`. `cw`: input channels per lane (8, or 4 for
/// few channels per group: the `_c4` kernel). `v4`: 1x1 kernels with a multiple of 4
/// channels per group, whose 8 channels per lane are adjacent in dw: stored as vec4 (one
/// per-lane store loop per 4 floats instead of per float; the `_v4` kernel, with `cw` 8).
/// `f16_out` (with `v4` only): dw is an f16 tensor (`array<vec2<u32>>`, 4 halves per store,
/// rounded to nearest even by `f32_to_f16_4`), written once by a launch over every image
/// (`ACCUMULATE` is never set: f16 partial sums would round twice); the `_v4h` kernel.
///
/// `dy_img` (with `v4` only, f32 dw): dy is read from the padded input image the input
/// gradient's implicit GEMM filled from the same dy (input-image layout, 4 output channels
/// of one pixel per texel; `d_*` fields) instead of the B panels of `pack_image`: the
/// backward of a strided 1x1 layer fills dy once for both gradients (the `_v4d` kernel).
pub(crate) fn source(cw: usize, v4: bool, f16_out: bool, dy_img: bool) -> String {
    debug_assert!(v4 || !f16_out);
    debug_assert!(!dy_img || (v4 && !f16_out));
    let nq = cw / 4;
    let xyzw = ['x', 'y', 'z', 'w'];
    let mut w = Wgsl::new();
    wln!(w, "// Weight gradient as an implicit GEMM for CPU-like adapters with {SG}-lane subgroups (lavapipe):");
    w.line("//   dw[g*kg + col, c, r, s] = sum over images n and output pixels p of");
    w.line("//       dy[n, g*kg + col, p] * xpad[n, g*cg + c, p*stride + (r, s)*dilation]");
    wln!(w, "// GEMM rows are (tap, {cw}-channel block) pairs ({cw} rows each, one pair per lane, so few");
    w.line(
        "// channels waste nothing), columns the output channels of one group (16 per workgroup),",
    );
    w.line(
        "// and the reduction runs over the output pixels of every image. The x-side operand is",
    );
    w.line("// gathered straight from the padded input image of pad_image; dy is packed into");
    w.line("// the GEMM's wrapped B panels by pack_image (entry (n, g), K = output pixels).");
    if dy_img {
        w.line(
            "// This is the variant reading dy instead from the input image the input gradient's",
        );
        w.line("// implicit GEMM filled from it (same layout as tx: block q = 4 output channels of one");
        w.line(
            "// pixel, plane origin ((q % d_cpr) * d_wp, (n * d_rows + q / d_cpr) * d_hp), pixel",
        );
        w.line("// (0, 0) at (d_x0, d_y0)); pixels past the last read 0.");
    }
    wln!(w, "// Per 8 output pixels each lane loads {nq} texel(s) (its {cw} channels) per pixel and one");
    w.line(
        "// pixel row of the dy panel (4 texels) that the subgroup shares by subgroupBroadcast.",
    );
    if cw == 4 {
        w.line("// This is the 4-channel variant (groups of 1-4 channels modulo 8: half the padding of");
        w.line("// the 8-channel kernel, e.g. an RGB input layer).");
    }
    if v4 {
        w.line("// This is the 1x1 variant (channels per group a multiple of 4): dw[k, c] is contiguous in");
        w.line(
            "// c, so each lane stores its 8 channels of a column as two vec4 (per-lane stores are",
        );
        w.line("// loops over the lanes on lavapipe, whatever their width).");
    }
    if f16_out {
        w.line("// f16 dw: the four halves of a store as one vec2<u32> (no conversion pass).");
    }
    w.line("//");
    w.line(IMPLICIT_LAYOUT_DOC);
    w.line("");
    w.line(&WgradImplicitParams::wgsl());
    w.line("");
    w.line("@group(0) @binding(0) var<storage, read> P: Params;");
    w.line("@group(0) @binding(1) var tx: texture_storage_2d<rgba32float, read>;");
    w.line("@group(0) @binding(2) var tdy: texture_storage_2d<rgba32float, read>;");
    wln!(
        w,
        "@group(0) @binding(3) var<storage, read_write> dw: array<{}>;",
        match (v4, f16_out) {
            (true, true) => "vec2<u32>",
            (true, false) => "vec4<f32>",
            _ => "f32",
        }
    );
    w.line("// The bias gradient (COL_SUMS; any buffer otherwise: not touched then).");
    w.line("@group(0) @binding(4) var<storage, read_write> sums: array<f32>;");
    if f16_out {
        w.line(F32_TO_F16_4);
    }
    w.line("");
    w.line(&WgradImplicitSpec::wgsl());
    w.line("");
    if v4 {
        w.line(
            "// Channels c..c+3 of column col (c a multiple of 4, cg too: all four exist or none).",
        );
        w.line("fn store4(live: bool, g: u32, c: u32, col: u32, v: vec4<f32>) {");
        w.line("    if (!live || c >= P.cg || col >= P.kg) {");
        w.line("        return;");
        w.line("    }");
        w.line("    let i = ((g * P.kg + col) * P.cg + c) / 4u;");
        if f16_out {
            w.line("    let h = f32_to_f16_4(v);");
            w.line("    dw[i] = vec2<u32>(h.x | (h.y << 16u), h.z | (h.w << 16u));");
        } else {
            w.line("    var out = v;");
            w.line("    if (ACCUMULATE) {");
            w.line("        out += dw[i];");
            w.line("    }");
            w.line("    dw[i] = out;");
        }
        w.line("}");
        w.line("");
    } else {
        w.line("fn store(live: bool, g: u32, c: u32, col0: u32, tap: u32, v: vec4<f32>) {");
        w.line("    if (!live || c >= P.cg) {");
        w.line("        return;");
        w.line("    }");
        w.line("    let rs = P.r * P.s;");
        w.line("    for (var e = 0u; e < 4u; e++) {");
        w.line("        let col = col0 + e;");
        w.line("        if (col < P.kg) {");
        w.line("            let k = g * P.kg + col;");
        w.line("            let i = select((k * P.cg + c) * rs + tap, (k * rs + tap) * P.cg + c, DW_CL);");
        w.line("            var out = v[e];");
        w.line("            if (ACCUMULATE) {");
        w.line("                out += dw[i];");
        w.line("            }");
        w.line("            dw[i] = out;");
        w.line("        }");
        w.line("    }");
        w.line("}");
        w.line("");
    }
    subgroup_entry(&mut w);
    w.line("    // Workgroup -> (group, column block, row-block group), row blocks fastest.");
    w.line("    let wg = P.wg0 + wid.x + wid.y * nwg.x;");
    w.line("    let gm = wg % P.groups_m;");
    w.line("    let t = wg / P.groups_m;");
    w.line("    let tn = t % P.groups_n;");
    w.line("    let gt = t / P.groups_n;");
    w.line("    let g = min(gt, P.groups - 1u);");
    w.line("    let rb = gm * WG + lid;");
    w.line("    let live = gt < P.groups && rb < P.rb_total;");
    w.line("    let rbc = min(rb, P.rb_total - 1u);");
    if cw == 8 {
        w.line("    let tap = rbc / P.cb8;");
        w.line("    let cb = rbc - tap * P.cb8;");
    } else {
        w.line("    // 4-channel blocks per tap.");
        w.line("    let cbt = (P.cg + 3u) / 4u;");
        w.line("    let tap = rbc / cbt;");
        w.line("    let cb = rbc - tap * cbt;");
    }
    w.line("    let r = tap / P.s;");
    w.line("    let s = tap - r * P.s;");
    wln!(w, "    let q0 = g * P.cb8 * 2u + cb * {nq}u;");
    if nq == 2 {
        w.line("    let q1 = q0 + 1u;");
    }
    w.line("    let ox0 = (q0 % P.cpr) * P.wp + s * P.dw;");
    w.line("    let oy0 = (q0 / P.cpr) * P.hp + r * P.dh;");
    if nq == 2 {
        w.line("    let ox1 = (q1 % P.cpr) * P.wp + s * P.dw;");
        w.line("    let oy1 = (q1 / P.cpr) * P.hp + r * P.dh;");
    }
    w.line("    let last = P.ohw - 1u;");
    w.line("    // Output pixel k0 + sl of this lane as (column, row) counters advanced by 8 pixels per");
    w.line(
        "    // step (integer division is a per-lane loop on SIMD CPUs); pixels past the last read",
    );
    w.line("    // the last one's input (their dy is 0).");
    w.line("    let step_c = 8u % P.ow;");
    w.line("    let step_r = 8u / P.ow;");
    w.line("    let last_x = (last % P.ow) * P.sw;");
    w.line("    let last_y = (last / P.ow) * P.sh;");
    w.line("    let pc0 = sl % P.ow;");
    w.line("    let pr0 = sl / P.ow;");
    if dy_img {
        w.line("    let last_c = last % P.ow;");
        w.line("    let last_r = last / P.ow;");
        wln!(
            w,
            "    // dy blocks of this workgroup's {IC_TN} output channels."
        );
        wln!(w, "    let dqg = g * P.d_qg + tn * {}u;", IC_TN / 4);
    }
    for i in 0..cw {
        for n in 0..IC_TN {
            wln!(w, "    var c{i}_{n} = 0.0;");
        }
    }
    // The bias gradient (COL_SUMS): the column sums of the dy panels, per lane, then per
    // subgroup.
    let sums = col_sums(
        IC_TN,
        "            ",
        "gt < P.groups && gm == 0u",
        "g * P.kg + col0",
        "col0",
        "P.kg",
    );
    w.line(&sums.decl);
    w.line("    for (var n = 0u; n < P.nimg; n++) {");
    w.line("        let yn = n * P.rows_img * P.hp;");
    w.line("        let y0 = oy0 + yn;");
    if nq == 2 {
        w.line("        let y1 = oy1 + yn;");
    }
    if dy_img {
        w.line("        let dyn_ = (P.n_base + n) * P.d_rows;");
        for j in 0..IC_TN / 4 {
            wln!(w, "        let dq{j} = dqg + {j}u;");
            wln!(
                w,
                "        let dox{j} = (dq{j} % P.d_cpr) * P.d_wp + P.d_x0;"
            );
            wln!(
                w,
                "        let doy{j} = (dyn_ + dq{j} / P.d_cpr) * P.d_hp + P.d_y0;"
            );
        }
    } else {
        w.line("        let lb = (((P.n_base + n) * P.groups + g) * P.groups_n + tn) * P.kpp;");
        w.line("        var yb = lb % P.hdy;");
        wln!(w, "        var xb = (lb / P.hdy) * {}u;", IC_TN / 4);
    }
    w.line("        var pc = pc0;");
    w.line("        var pr = pr0;");
    wln!(w, "        for (var k0 = 0u; k0 < P.kpp; k0 += {SG}u) {{");
    w.line("            let live_px = k0 + sl <= last;");
    if dy_img {
        w.line("            // dy: lane sl loads output pixel k0 + sl (16 output channels), 0 past the last");
        w.line(
            "            // pixel (blocks past the group feed only columns that are never stored).",
        );
        w.line("            let dpc = select(last_c, pc, live_px);");
        w.line("            let dpr = select(last_r, pr, live_px);");
        for j in 0..IC_TN / 4 {
            wln!(
                w,
                "            let bl{j} = select(vec4<f32>(0.0), textureLoad(tdy, vec2<u32>(dox{j} + dpc, doy{j} + dpr)), live_px);"
            );
        }
    } else {
        w.line(
            "            // dy: lane sl loads output pixel k0 + sl of the panel (16 output channels).",
        );
        for j in 0..IC_TN / 4 {
            wln!(
                w,
                "            let bl{j} = textureLoad(tdy, vec2<u32>(xb + {j}u, yb + sl));"
            );
        }
    }
    w.line(&sums.add);
    wln!(w, "            // x: this lane's {cw} channels at the 8 pixels; lane sl holds pixel k0 + sl and");
    w.line("            // the subgroup shares the coordinates.");
    w.line("            let pxl = select(last_x, pc * P.sw, live_px);");
    w.line("            let pyl = select(last_y, pr * P.sh, live_px);");
    w.line("            pc += step_c;");
    w.line("            pr += step_r;");
    w.line("            let wc = pc >= P.ow;");
    w.line("            pc = select(pc, pc - P.ow, wc);");
    w.line("            pr = select(pr, pr + 1u, wc);");
    for k in 0..SG {
        wln!(w, "            let px{k} = subgroupBroadcast(pxl, {k}u);");
        wln!(w, "            let py{k} = subgroupBroadcast(pyl, {k}u);");
        wln!(
            w,
            "            let a{k}_0 = textureLoad(tx, vec2<u32>(ox0 + px{k}, y0 + py{k}));"
        );
        if nq == 2 {
            wln!(
                w,
                "            let a{k}_1 = textureLoad(tx, vec2<u32>(ox1 + px{k}, y1 + py{k}));"
            );
        }
    }
    scalar_subblocks(&mut w, "            ", cw, IC_TN, |i, k| {
        format!("a{k}_{}.{}", i / 4, xyzw[i % 4])
    });
    if !dy_img {
        wln!(w, "            yb += {SG}u;");
        w.line("            let eb = yb == P.hdy;");
        w.line("            yb = select(yb, 0u, eb);");
        wln!(w, "            xb = select(xb, xb + {}u, eb);", IC_TN / 4);
    }
    w.line("        }");
    w.line("    }");
    wln!(w, "    let col0 = tn * {IC_TN}u;");
    w.line(&sums.store);
    w.line("    var wr = r;");
    w.line("    var ws = s;");
    w.line("    if (FLIP) {");
    w.line("        wr = P.r - 1u - r;");
    w.line("        ws = P.s - 1u - s;");
    w.line("    }");
    w.line("    let wtap = wr * P.s + ws;");
    if v4 {
        w.line("    _ = wtap;");
        for h in 0..cw / 4 {
            for j in 0..IC_TN / 4 {
                for e in 0..4 {
                    let col = 4 * j + e;
                    wln!(
                        w,
                        "    store4(live, g, cb * {cw}u + {}u, col0 + {col}u, {});",
                        4 * h,
                        acc4_rows(4 * h, col)
                    );
                }
            }
        }
    } else {
        for i in 0..cw {
            for j in 0..IC_TN / 4 {
                wln!(
                    w,
                    "    store(live, g, cb * {cw}u + {i}u, col0 + {}u, wtap, {});",
                    4 * j,
                    acc4(i, j)
                );
            }
        }
    }
    w.line("}");
    hoist_params(&w.finish(), &WgradImplicitParams::fields())
}
