//! `pack_conv_weights`, `pack_conv_weights_image` and `pack_conv_weights_runs`: pack
//! convolution weights into the wrapped weight panels of the implicit-GEMM convolution
//! (through a staging buffer). The runs packer's body is hand-written
//! (`pack_conv_weights_runs.wgsl`).

use crate::gpu::wgsl::{hoist_params, params, spec, wln, ParamStruct, Spec, Wgsl};
use crate::kernels::shared::{linear_entry, FLAT_LOAD, IMPLICIT_LAYOUT_DOC};

params! {
    /// Parameters of the weight packers (`pack_conv_weights`, `pack_conv_weights_image`,
    /// `pack_conv_weights_runs`).
    pub(crate) struct PackWeightsParams {
        kg: u32, cg: u32, r: u32, s: u32,
        kp: u32, groups_n: u32, hb: u32, rows_total: u32,
        g_stride: u32, k_stride: u32, c_stride: u32, width: u32,
        total: u32, t0: u32, w_off: u32, pw: u32,
        tw: u32, tw_shift: u32, dst_row: u32, y_lo: u32,
        y_hi: u32,
        /// Texels of the source image copied (`pack_conv_weights_runs` only).
        texels: u32,
        _p1: u32, _p2: u32,
    }
}

spec! {
    /// Specialisation of `pack_conv_weights` and `pack_conv_weights_image`.
    pub(crate) struct PackWeightsSpec {
        WG: u32 = 64,
        /// Rotate the taps (true convolution).
        FLIP: bool = false,
    }
}

spec! {
    /// Specialisation of `pack_conv_weights_runs`.
    pub(crate) struct PackWeightsRunsSpec {
        WG: u32 = 64,
        /// Rotate the taps (true convolution).
        FLIP: bool = false,
        /// Taps of the kernel, R * S (at most 9; equal to `k_stride`).
        RS: u32 = 9 in [1, 2, 3, 4, 5, 6, 7, 8, 9],
    }
}

/// WGSL: from the first of 8 weight-panel rows `l`, whether it is `live`, and its (group
/// `g`, channel block `tn`, first input channel `cl0`, tap `tr`, `ts`), the taps rotated
/// with `FLIP`.
fn panel_row(w: &mut Wgsl) {
    w.line("    let live = l < P.rows_total;");
    w.line("    let pn = min(l, P.rows_total - 1u) / P.kp;");
    w.line("    let step = (min(l, P.rows_total - 1u) - pn * P.kp) / 8u;");
    w.line("    let g = pn / P.groups_n;");
    w.line("    let tn = pn - g * P.groups_n;");
    w.line("    let cs = step % P.s;");
    w.line("    let t2 = step / P.s;");
    w.line("    let cr = t2 % P.r;");
    w.line("    let cl0 = (t2 / P.r) * 8u;");
    w.line("    var tr = cr;");
    w.line("    var ts = cs;");
    w.line("    if (FLIP) {");
    w.line("        tr = P.r - 1u - cr;");
    w.line("        ts = P.s - 1u - cs;");
    w.line("    }");
}

/// The WGSL source of `pack_conv_weights`, reading the weights from their buffer, or with
/// `from_image` of `pack_conv_weights_image`, reading them from a verbatim image copy
/// (`pack_conv_weights(from_image=True)` of the Python generator).
pub(crate) fn source(from_image: bool) -> String {
    let mut w = Wgsl::new();
    w.line("// Output: texel (x, y) of the image, for rows y_lo <= y < y_hi, goes to");
    w.line(
        "// dst[(y - y_lo) * dst_row + x] of a staging buffer that the host copies into the image",
    );
    w.line("// (row ranges keep the staging binding within maxStorageBufferBindingSize); on lavapipe a textureStore");
    w.line(
        "// costs ~2.5x a vec4 storage-buffer store plus the copy (docs/lavapipe-driver-notes.md).",
    );
    w.line("//");
    w.line("// Packs convolution weights into the weight image of conv2d_implicit.wgsl: one");
    w.line("// invocation per texel column of an 8-row group (8 input channels at one tap, four output");
    w.line(
        "// channels), so the index math runs once per 8 texels. Weight (group g, output channel",
    );
    w.line("// col, input channel cl, tap (r, s)) is read from");
    w.line(
        "// w[w_off + g * g_stride + col * k_stride + cl * c_stride + r * S + s], so the forward",
    );
    w.line("// layout [K, C/g, R, S] and its channel-swapped view (input gradient as a forward");
    w.line(
        "// convolution) both pack without a permute pass. Source indices are clamped into range",
    );
    w.line("// and padding zeroed with `select`.");
    if from_image {
        w.line("//");
        w.line("// This variant reads the weights from a read-only storage image holding the weight buffer");
        w.line("// verbatim (flat float i at texel i / 4 of rows of tw texels, channel i % 4), filled by one");
        w.line("// buffer-to-texture copy: on lavapipe a storage-image load costs a fraction of a");
        w.line("// storage-buffer load, which dominates this pass for large weight tensors.");
    }
    w.line("//");
    w.line(IMPLICIT_LAYOUT_DOC);
    w.line("");
    w.line(&PackWeightsParams::wgsl());
    w.line("");
    w.line("@group(0) @binding(0) var<storage, read> P: Params;");
    if from_image {
        w.line("@group(0) @binding(1) var src: texture_storage_2d<rgba32float, read>;");
    } else {
        w.line("@group(0) @binding(1) var<storage, read> wt: array<f32>;");
    }
    w.line("@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;");
    w.line("");
    w.line(&PackWeightsSpec::wgsl());
    w.line("");
    if from_image {
        w.line(FLAT_LOAD);
    }
    w.line("@compute @workgroup_size(WG)");
    w.line("fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {");
    w.line("    // A dispatch covers invocations [t0, total).");
    w.line("    let t = P.t0 + gid.x + gid.y * nwg.x * WG;");
    w.line("    if (t >= P.total) {");
    w.line("        return;");
    w.line("    }");
    w.line(
        "    // One invocation per (8-row group, panel column): pw texel columns (4 * pw output",
    );
    w.line("    // channels) x 8 rows, so the divisions run once per 8 * pw texels.");
    w.line("    let blocks = P.width / P.pw;");
    w.line("    let tb = t % blocks;");
    w.line("    let ty = (t / blocks) * 8u;");
    w.line("    let l = tb * P.hb + ty;");
    panel_row(&mut w);
    w.line("    let base = P.w_off + g * P.g_stride + tr * P.s + ts;");
    w.line("    for (var c4 = 0u; c4 < P.pw; c4++) {");
    w.line("        let tx = tb * P.pw + c4;");
    w.line("        let col0 = (tn * P.pw + c4) * 4u;");
    w.line("        let kl = P.kg - 1u;");
    w.line("        let i0 = min(col0, kl) * P.k_stride;");
    w.line("        let i1 = min(col0 + 1u, kl) * P.k_stride;");
    w.line("        let i2 = min(col0 + 2u, kl) * P.k_stride;");
    w.line("        let i3 = min(col0 + 3u, kl) * P.k_stride;");
    w.line("        let keep = vec4<bool>(col0 < P.kg, col0 + 1u < P.kg, col0 + 2u < P.kg, col0 + 3u < P.kg) & vec4<bool>(live);");
    w.line("        let cl = P.cg - 1u;");
    for j in 0..8 {
        wln!(
            w,
            "        let b{j} = base + min(cl0 + {j}u, cl) * P.c_stride;"
        );
        if from_image {
            wln!(
                w,
                "        let v{j} = vec4<f32>(flat_load(b{j} + i0), flat_load(b{j} + i1), flat_load(b{j} + i2), flat_load(b{j} + i3));"
            );
        } else {
            wln!(
                w,
                "        let v{j} = vec4<f32>(wt[b{j} + i0], wt[b{j} + i1], wt[b{j} + i2], wt[b{j} + i3]);"
            );
        }
        wln!(
            w,
            "        if (ty + {j}u >= P.y_lo && ty + {j}u < P.y_hi) {{"
        );
        wln!(
            w,
            "            dst[(ty + {j}u - P.y_lo) * P.dst_row + tx] = select(vec4<f32>(0.0), v{j}, keep & vec4<bool>(cl0 + {j}u < P.cg));"
        );
        w.line("        }");
    }
    w.line("    }");
    w.line("}");
    hoist_params(&w.finish(), &PackWeightsParams::fields())
}

/// WGSL: the layout documentation, parameters, bindings (the weights' verbatim image copy
/// `src`, the staging buffer `dst`) and specialisation of the packers reading an image.
fn image_packer_head(w: &mut Wgsl) {
    w.line(IMPLICIT_LAYOUT_DOC);
    w.line("");
    w.line(&PackWeightsParams::wgsl());
    w.line("");
    w.line("@group(0) @binding(0) var<storage, read> P: Params;");
    w.line("@group(0) @binding(1) var src: texture_storage_2d<rgba32float, read>;");
    w.line("@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;");
    w.line("");
    w.line(&PackWeightsSpec::wgsl());
    w.line("");
}

/// The WGSL source of `pack_conv_weights_texel`: the first-call stand-in of
/// `pack_conv_weights_image` (same parameters, same image), one invocation per texel, so a
/// fraction of the code to compile (the 8-row kernel is ~200 ms of LLVM on lavapipe without
/// its shader cache); the index math runs per texel instead of per 8.
pub(crate) fn texel_source() -> String {
    let mut w = Wgsl::new();
    w.line("// pack_conv_weights_image with one invocation per texel (x, y) of the weight image (launch");
    w.line(
        "// width * hb invocations): the same values in the same texels, a fraction of the code.",
    );
    w.line("// Texel (x, y) holds output channels 4 * (tn * pw + x % pw) .. + 3 at input channel");
    w.line("// cl0 + y % 8 of the reduction step of panel row l = (x / pw) * hb + y - y % 8.");
    w.line("//");
    image_packer_head(&mut w);
    w.line(FLAT_LOAD);
    linear_entry(&mut w);
    w.line("    let y = t / P.width;");
    w.line("    let x = t - y * P.width;");
    w.line("    if (y < P.y_lo || y >= P.y_hi) {");
    w.line("        return;");
    w.line("    }");
    w.line("    let tb = x / P.pw;");
    w.line("    let c4 = x - tb * P.pw;");
    w.line("    let j = y % 8u;");
    w.line("    let l = tb * P.hb + y - j;");
    panel_row(&mut w);
    w.line("    let col0 = (tn * P.pw + c4) * 4u;");
    w.line("    let kl = P.kg - 1u;");
    w.line("    let b = P.w_off + g * P.g_stride + tr * P.s + ts + min(cl0 + j, P.cg - 1u) * P.c_stride;");
    w.line("    let v = vec4<f32>(flat_load(b + min(col0, kl) * P.k_stride), flat_load(b + min(col0 + 1u, kl) * P.k_stride),");
    w.line("        flat_load(b + min(col0 + 2u, kl) * P.k_stride), flat_load(b + min(col0 + 3u, kl) * P.k_stride));");
    w.line("    let keep = vec4<bool>(col0 < P.kg, col0 + 1u < P.kg, col0 + 2u < P.kg, col0 + 3u < P.kg)");
    w.line("        & vec4<bool>(live && cl0 + j < P.cg);");
    w.line("    dst[(y - P.y_lo) * P.dst_row + x] = select(vec4<f32>(0.0), v, keep);");
    w.line("}");
    hoist_params(&w.finish(), &PackWeightsParams::fields())
}

/// Texels of a weight row each `pack_conv_weights_rows` invocation reads (for each of its 4
/// output channels): as many packed texels as it writes.
pub(crate) const ROW_TEXELS: usize = 2;

/// The WGSL source of `pack_conv_weights_rows`: `pack_conv_weights_image` for forward
/// weights (`[K, C/groups, R, S]`, each output channel's `C/groups * R * S` weights a run of
/// whole texels) whose panels have no padding (channels per group a multiple of 8, output
/// channels per group a multiple of the panel width) and fit one column block of the image.
/// An invocation reads `ROW_TEXELS` texels of the rows of 4 output channels and writes the
/// 4 x 4 transposes: one texel load per packed texel, where `pack_conv_weights_image` loads 4
/// (one per output channel, one float used of each).
pub(crate) fn rows_source() -> String {
    let mut w = Wgsl::new();
    w.line(
        "// pack_conv_weights_image for forward weights whose rows are runs of whole texels and",
    );
    w.line("// whose panels need no padding: one invocation per (panel column c4 of group g and");
    wln!(w, "// channel block tn, run of {ROW_TEXELS} texels of the weight rows); it loads those texels");
    w.line("// of output channels k0..k0+3 (k0 = 4 (tn pw + c4)) and stores, for each of their");
    w.line("// elements e = (input channel c, tap), the texel (k0..k0+3) at panel row");
    w.line("// (c / 8) * 8 R S + tap' * 8 + c % 8 (tap' rotated with FLIP).");
    w.line("//");
    image_packer_head(&mut w);
    linear_entry(&mut w);
    w.line("    let rs = P.r * P.s;");
    w.line("    // Texels per weight row, and runs of them per row.");
    w.line("    let rt = P.k_stride / 4u;");
    wln!(
        w,
        "    let runs = (rt + {}u) / {ROW_TEXELS}u;",
        ROW_TEXELS - 1
    );
    w.line("    let run = t % runs;");
    w.line("    let col = t / runs;");
    w.line("    let c4 = col % P.pw;");
    w.line("    let pn = col / P.pw;");
    w.line("    let g = pn / P.groups_n;");
    w.line("    let tn = pn - g * P.groups_n;");
    w.line("    let k0 = (tn * P.pw + c4) * 4u;");
    w.line("    let row0 = (P.w_off + g * P.g_stride + k0 * P.k_stride) / 4u;");
    w.line("    let krow = P.k_stride / 4u;");
    w.line("    // Image position of the panel's first row: column block q0, row y0 (a panel of kp <= hb");
    w.line("    // rows wraps to the next column block at most once).");
    w.line("    let pbase = pn * P.kp;");
    w.line("    let q0 = pbase / P.hb;");
    w.line("    let y0 = pbase - q0 * P.hb;");
    wln!(w, "    let j0 = run * {ROW_TEXELS}u;");
    w.line("    // Element e0 = 4 j0 of the row: input channel c, tap tp (counters from here on).");
    w.line("    var c = (4u * j0) / rs;");
    w.line("    var tp = 4u * j0 - c * rs;");
    for j in 0..ROW_TEXELS {
        wln!(w, "    let i{j} = min(j0 + {j}u, rt - 1u);");
        for kk in 0..4 {
            wln!(w, "    let s{j}_{kk} = row0 + {kk}u * krow + i{j};");
            wln!(
                w,
                "    let v{j}_{kk} = textureLoad(src, vec2<u32>(s{j}_{kk} & (P.tw - 1u), s{j}_{kk} >> P.tw_shift));"
            );
        }
        for e in 0..4 {
            let comp = ['x', 'y', 'z', 'w'][e];
            wln!(w, "    {{");
            wln!(w, "        var tq = tp;");
            w.line("        if (FLIP) {");
            w.line("            tq = rs - 1u - tp;");
            w.line("        }");
            w.line("        let off = (c >> 3u) * 8u * rs + tq * 8u + (c & 7u);");
            w.line("        let yy = y0 + off;");
            w.line("        let wrap = yy >= P.hb;");
            w.line("        let y = select(yy, yy - P.hb, wrap);");
            w.line("        let x = select(q0, q0 + 1u, wrap) * P.pw + c4;");
            wln!(
                w,
                "        if (j0 + {j}u < rt && y >= P.y_lo && y < P.y_hi) {{"
            );
            wln!(
                w,
                "            dst[(y - P.y_lo) * P.dst_row + x] = vec4<f32>(v{j}_0.{comp}, v{j}_1.{comp}, v{j}_2.{comp}, v{j}_3.{comp});"
            );
            w.line("        }");
            w.line("        tp += 1u;");
            w.line("        let nc = tp == rs;");
            w.line("        tp = select(tp, 0u, nc);");
            w.line("        c = select(c, c + 1u, nc);");
            w.line("    }");
        }
    }
    w.line("}");
    hoist_params(&w.finish(), &PackWeightsParams::fields())
}

/// The WGSL source of `pack_conv_weights_runs` (body in `pack_conv_weights_runs.wgsl`).
pub(crate) fn runs_source() -> String {
    let mut w = Wgsl::new();
    w.line(&PackWeightsParams::wgsl());
    w.line("");
    w.line(&PackWeightsRunsSpec::wgsl());
    w.line("");
    w.line(include_str!("pack_conv_weights_runs.wgsl"));
    let src = w.finish();
    if src.contains("Barrier") {
        src
    } else {
        hoist_params(&src, &PackWeightsParams::fields())
    }
}
