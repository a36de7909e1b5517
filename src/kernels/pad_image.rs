//! `pad_image` and `pad_image_flat`: copy the input of the implicit-GEMM convolution into its
//! padded input image (through a staging buffer).

use crate::gpu::wgsl::{hoist_params, params, spec, wln, ParamStruct, Spec, Wgsl, SRC_INDEX};
use crate::kernels::pack_image::RUN8;
use crate::kernels::shared::{linear_entry, FLAT_LOAD, IMPLICIT_LAYOUT_DOC};

params! {
    /// Parameters of `pad_image` and `pad_image_flat`.
    pub(crate) struct PadImageParams {
        c: u32, h: u32, w: u32, cg: u32,
        qg: u32, qb: u32, cpr: u32, rows_img: u32,
        wp: u32, hp: u32, pad_top: i32, pad_left: i32,
        x_off: u32, width: u32, total: u32, t0: u32,
        dst_row: u32, y_lo: u32, y_hi: u32, sh: u32,
        sw: u32,
        /// Source image of `pad_image_flat` (unused by `pad_image`): texels per row (a power of
        /// two), its log2, and the texels copied.
        tw: u32, tw_shift: u32, texels: u32,
        /// Element strides of x (`pad_image` only): image, channel, row, column; NCHW
        /// `(C·H·W, H·W, W, 1)`, NHWC `(H·W·C, 1, W·C, C)`.
        xsn: u32, xsc: u32, xsh: u32, xsw: u32,
    }
}

spec! {
    /// Specialisation of `pad_image`.
    pub(crate) struct PadImageSpec {
        WG: u32 = 64,
        /// 0 zeros, 1 reflect, 2 replicate, 3 circular.
        PAD_MODE: u32 = 0 in [0, 1, 2, 3],
    }
}

spec! {
    /// Specialisation of `pad_image_nhwc`.
    pub(crate) struct PadImageNhwcSpec {
        WG: u32 = 64,
        /// 0 zeros, 1 reflect, 2 replicate, 3 circular.
        PAD_MODE: u32 = 0 in [0, 1, 2, 3],
        /// Channels and channels per group multiples of 4: a texel is 4 consecutive floats,
        /// one aligned texel of the flat image.
        VEC: bool = true,
    }
}

spec! {
    /// Specialisation of `pad_image_flat` (zero padding only).
    pub(crate) struct PadImageFlatSpec {
        WG: u32 = 64,
    }
}

/// The WGSL source of `pad_image` (any padding mode and stride, reading x from its buffer),
/// or with `flat` of `pad_image_flat` (zero padding at stride 1, reading x from a verbatim
/// image copy; `pad_image_flat()` of the Python generator).
pub(crate) fn source(flat: bool) -> String {
    if flat {
        flat_source(false)
    } else {
        buffer_source(false)
    }
}

/// `pad_image_f16`: `pad_image` reading f16 x (two per `u32` word, `unpack2x16float`: no
/// `shader-f16` needed) from its storage buffer.
pub(crate) fn buffer_f16_source() -> String {
    buffer_source(true)
}

/// The declaration of the verbatim image copy the image-reading variants take x from:
/// `rgba32float`, or `rgba16float` for f16 x (`f16`: the `_f16` kernels; the texel loads
/// return f32, exactly).
fn src_decl(f16: bool) -> &'static str {
    if f16 {
        "@group(0) @binding(1) var src: texture_storage_2d<rgba16float, read>;"
    } else {
        "@group(0) @binding(1) var src: texture_storage_2d<rgba32float, read>;"
    }
}

/// `pad_image_flat_f16`: `pad_image_flat` reading f16 x from an `rgba16float` copy.
pub(crate) fn flat_f16_source() -> String {
    flat_source(true)
}

/// `pad_image`: any padding mode and stride, reading x from its storage buffer (f32, or
/// f16 words when `f16`).
fn buffer_source(f16: bool) -> String {
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
    w.line(
        "// Copies the input x [N, C, H, W] (NCHW or NHWC: the strides xs*) of a chunk of images into the padded input image of",
    );
    w.line("// conv2d_implicit.wgsl (one invocation per texel; padding by PAD_MODE, 0 beyond the");
    w.line(
        "// channels of a group). Image pixel (ihp, iwp) reads padded pixel (ihp * sh, iwp * sw):",
    );
    w.line("// sh = sw = 1 but for strided 1x1 convolutions, whose image holds only the sampled");
    w.line("// pixels (the convolution then runs at stride 1 on it).");
    w.line("//");
    w.line(IMPLICIT_LAYOUT_DOC);
    w.line("");
    w.line(&PadImageParams::wgsl());
    w.line("");
    w.line("@group(0) @binding(0) var<storage, read> P: Params;");
    if f16 {
        w.line("// x: f16 values, two per word (element i in half i & 1 of word i >> 1).");
        w.line("@group(0) @binding(1) var<storage, read> x: array<u32>;");
    } else {
        w.line("@group(0) @binding(1) var<storage, read> x: array<f32>;");
    }
    w.line("@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;");
    w.line("");
    w.line(&PadImageSpec::wgsl());
    w.line("");
    w.line(SRC_INDEX);
    w.line("");
    if f16 {
        w.line("fn xv(i: u32) -> f32 {");
        w.line("    let h = unpack2x16float(x[i >> 1u]);");
        w.line("    return select(h.x, h.y, (i & 1u) == 1u);");
        w.line("}");
    } else {
        w.line("fn xv(i: u32) -> f32 {");
        w.line("    return x[i];");
        w.line("}");
    }
    w.line("");
    texel_walk(
        &mut w,
        "let base = P.x_off + n * P.xsn + (g * P.cg + cl0) * P.xsc + u32(ih) * P.xsh + u32(iw) * P.xsw;
for (var e = 0u; e < 4u; e++) {
    if (cl0 + e < P.cg) {
        v[e] = xv(base + e * P.xsc);
    }
}",
    );
    hoist_params(&w.finish(), &PadImageParams::fields())
}

/// The entry point of `pad_image` and `pad_image_nhwc`: one invocation per 8 consecutive
/// texels of an image row (the divisions run once per 8 texels: integer division is a
/// per-lane loop on SIMD CPUs), walking texel (ty, tx) = image n, channel block q (group g,
/// channels cl0.. of the group), padded row ihp / column iwp, source row ih / column iw
/// (`src_index`); `load` (WGSL) fills `v` from x where ih, iw >= 0 and q < qb.
fn texel_walk(w: &mut Wgsl, load: &str) {
    linear_entry(w);
    w.line("    let xgroups = (P.width + 7u) / 8u;");
    w.line("    let ty = t / xgroups;");
    w.line("    let tx0 = (t - ty * xgroups) * 8u;");
    w.line("    let prow = ty / P.hp;");
    w.line("    let ihp = ty - prow * P.hp;");
    w.line("    let n = prow / P.rows_img;");
    w.line("    var pc = tx0 / P.wp;");
    w.line("    var iwp = tx0 - pc * P.wp;");
    w.line("    var q = (prow - n * P.rows_img) * P.cpr + pc;");
    w.line("    var g = q / P.qg;");
    w.line("    var cl0 = (q - g * P.qg) * 4u;");
    w.line("    let ih = src_index(i32(ihp * P.sh) - P.pad_top, i32(P.h));");
    w.line("    for (var e8 = 0u; e8 < 8u; e8++) {");
    w.line("        let tx = tx0 + e8;");
    w.line("        if (tx >= P.width) {");
    w.line("            break;");
    w.line("        }");
    w.line("        let iw = src_index(i32(iwp * P.sw) - P.pad_left, i32(P.w));");
    w.line("        var v = vec4<f32>(0.0);");
    w.line("        if (ih >= 0 && iw >= 0 && q < P.qb) {");
    for l in load.lines() {
        wln!(w, "            {l}");
    }
    w.line("        }");
    w.line("        if (ty >= P.y_lo && ty < P.y_hi) {");
    w.line("            dst[(ty - P.y_lo) * P.dst_row + tx] = v;");
    w.line("        }");
    w.line("        // Next texel: the next padded column, or the next channel block's plane.");
    w.line("        iwp += 1u;");
    w.line("        if (iwp == P.wp) {");
    w.line("            iwp = 0u;");
    w.line("            q += 1u;");
    w.line("            cl0 += 4u;");
    w.line("            if (cl0 == P.qg * 4u) {");
    w.line("                cl0 = 0u;");
    w.line("                g += 1u;");
    w.line("            }");
    w.line("        }");
    w.line("    }");
    w.line("}");
}

/// The WGSL source of `pad_image_texel`: the first-call stand-in of `pad_image_flat` (same
/// parameters, same image), one invocation per texel with 4 single-float loads, so a
/// fraction of the code to compile.
pub(crate) fn texel_source(f16: bool) -> String {
    let mut w = Wgsl::new();
    w.line("// pad_image_flat with one invocation per texel (x, y) of the padded image (launch width *");
    w.line("// rows invocations): the same values in the same texels, a fraction of the code.");
    w.line("//");
    w.line(IMPLICIT_LAYOUT_DOC);
    w.line("");
    w.line(&PadImageParams::wgsl());
    w.line("");
    w.line("@group(0) @binding(0) var<storage, read> P: Params;");
    w.line(src_decl(f16));
    w.line("@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;");
    w.line("");
    w.line(&PadImageFlatSpec::wgsl());
    w.line("");
    w.line(FLAT_LOAD);
    linear_entry(&mut w);
    w.line("    let y = t / P.width;");
    w.line("    let x = t - y * P.width;");
    w.line("    if (y < P.y_lo || y >= P.y_hi) {");
    w.line("        return;");
    w.line("    }");
    w.line("    let prow = y / P.hp;");
    w.line("    let ihp = y - prow * P.hp;");
    w.line("    let n = prow / P.rows_img;");
    w.line("    let pc = x / P.wp;");
    w.line("    let iwp = x - pc * P.wp;");
    w.line("    let q = (prow - n * P.rows_img) * P.cpr + pc;");
    w.line("    let g = q / P.qg;");
    w.line("    let cl0 = (q - g * P.qg) * 4u;");
    w.line("    let ih = i32(ihp) - P.pad_top;");
    w.line("    let iw = i32(iwp) - P.pad_left;");
    w.line("    var v = vec4<f32>(0.0);");
    w.line("    if (ih >= 0 && ih < i32(P.h) && iw >= 0 && iw < i32(P.w) && q < P.qb) {");
    w.line("        let base = P.x_off + ((n * P.c + g * P.cg + cl0) * P.h + u32(ih)) * P.w + u32(iw);");
    w.line("        let plane = P.h * P.w;");
    w.line("        for (var e = 0u; e < 4u; e++) {");
    w.line("            if (cl0 + e < P.cg) {");
    w.line("                v[e] = flat_load(base + e * plane);");
    w.line("            }");
    w.line("        }");
    w.line("    }");
    w.line("    dst[(y - P.y_lo) * P.dst_row + x] = v;");
    w.line("}");
    hoist_params(&w.finish(), &PadImageParams::fields())
}

/// The WGSL source of `pad_image_nhwc`: `pad_image` for a channels-last (NHWC) x read from
/// a verbatim image copy (any padding mode and stride). The 4 channels of a texel of the
/// padded image are 4 consecutive floats of x: with `VEC` (channels and channels per group
/// multiples of 4) one texel load of the copy, else 4 single-float loads of it.
pub(crate) fn nhwc_source(f16: bool) -> String {
    let mut w = Wgsl::new();
    w.line("// Output: texel (x, y) of the image, for rows y_lo <= y < y_hi, goes to");
    w.line(
        "// dst[(y - y_lo) * dst_row + x] of a staging buffer that the host copies into the image.",
    );
    w.line("//");
    w.line(
        "// pad_image.wgsl for a channels-last input x [N, H, W, C], read from a read-only storage",
    );
    w.line(
        "// image holding x verbatim (float i at texel i / 4 of rows of tw texels, channel i % 4):",
    );
    w.line(
        "// texel (n, ih, iw, channels 4j..4j+3) is one texel of the copy when C and the channels",
    );
    w.line("// per group are multiples of 4 (VEC). One invocation per 8 consecutive texels of an");
    w.line("// image row, as pad_image.");
    w.line("//");
    w.line(IMPLICIT_LAYOUT_DOC);
    w.line("");
    w.line(&PadImageParams::wgsl());
    w.line("");
    w.line("@group(0) @binding(0) var<storage, read> P: Params;");
    w.line(src_decl(f16));
    w.line("@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;");
    w.line("");
    w.line(&PadImageNhwcSpec::wgsl());
    w.line("");
    w.line(SRC_INDEX);
    w.line(FLAT_LOAD);
    texel_walk(
        &mut w,
        "let base = ((n * P.h + u32(ih)) * P.w + u32(iw)) * P.c + g * P.cg + cl0;
if (VEC) {
    let t4 = base / 4u;
    v = textureLoad(src, vec2<u32>(t4 & (P.tw - 1u), t4 >> P.tw_shift));
} else {
    for (var e = 0u; e < 4u; e++) {
        if (cl0 + e < P.cg) {
            v[e] = flat_load(base + e);
        }
    }
}",
    );
    hoist_params(&w.finish(), &PadImageParams::fields())
}

/// `pad_image` for zero padding at stride 1, reading x from a verbatim image copy: 8
/// consecutive pixels of one channel are one unaligned run of floats (3 texel loads),
/// instead of 8 single-float storage-buffer loads.
fn flat_source(f16: bool) -> String {
    let mut w = Wgsl::new();
    w.line("// Output: texel (x, y) of the image, for rows y_lo <= y < y_hi, goes to");
    w.line(
        "// dst[(y - y_lo) * dst_row + x] of a staging buffer that the host copies into the image.",
    );
    w.line("//");
    w.line("// pad_image.wgsl for zero padding (sh = sw = 1) on CPU adapters, reading x from a");
    w.line("// read-only storage image holding x verbatim (float i at texel i / 4 of rows of tw");
    w.line("// texels, channel i % 4; tw a power of two; `texels` copied), filled by one");
    w.line(
        "// buffer-to-texture copy. One invocation per 8 consecutive pixels of one channel-block",
    );
    w.line("// plane row: for each of its 4 channels the 8 source floats are one run, read as 3");
    w.line("// texels and aligned by the run's offset (select chains, no per-lane loops), instead");
    w.line("// of 32 single-float storage-buffer loads (on lavapipe a storage-buffer access is a");
    w.line("// per-lane loop of ~20 instructions per float). Pixels outside x (the zero padding),");
    w.line("// channels beyond the group and rows outside x are masked to 0 (their loads are");
    w.line("// clamped into the image).");
    w.line("//");
    w.line(IMPLICIT_LAYOUT_DOC);
    w.line("");
    w.line(&PadImageParams::wgsl());
    w.line("");
    w.line("@group(0) @binding(0) var<storage, read> P: Params;");
    w.line(src_decl(f16));
    w.line("@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;");
    w.line("");
    w.line(&PadImageFlatSpec::wgsl());
    w.line("");
    w.line(RUN8);
    linear_entry(&mut w);
    w.line("    // t = (image row ty, plane pc of that row, 8-pixel block b of the plane row).");
    w.line("    let bpw = (P.wp + 7u) / 8u;");
    w.line("    let per_row = P.cpr * bpw;");
    w.line("    let ty = t / per_row;");
    w.line("    let rem = t - ty * per_row;");
    w.line("    let pc = rem / bpw;");
    w.line("    let iwp0 = (rem - pc * bpw) * 8u;");
    w.line("    let prow = ty / P.hp;");
    w.line("    let ihp = ty - prow * P.hp;");
    w.line("    let n = prow / P.rows_img;");
    w.line("    let q = (prow - n * P.rows_img) * P.cpr + pc;");
    w.line("    let g = q / P.qg;");
    w.line("    let cl0 = (q - g * P.qg) * 4u;");
    w.line("    let ih = i32(ihp) - P.pad_top;");
    w.line("    let row_ok = ih >= 0 && ih < i32(P.h) && q < P.qb;");
    w.line("    let ihc = u32(clamp(ih, 0, i32(P.h) - 1));");
    w.line("    let iw0 = i32(iwp0) - P.pad_left;");
    w.line("    let cmax = P.cg - 1u;");
    w.line("    let gbase = n * P.c + g * P.cg;");
    for e in 0..4 {
        wln!(
            w,
            "    let r{e} = run8(i32(P.x_off + ((gbase + min(cl0 + {e}u, cmax)) * P.h + ihc) * P.w) + iw0);"
        );
    }
    w.line("    let chan = vec4<bool>(cl0 < P.cg, cl0 + 1u < P.cg, cl0 + 2u < P.cg, cl0 + 3u < P.cg) & vec4<bool>(row_ok);");
    w.line("    let live = ty >= P.y_lo && ty < P.y_hi;");
    w.line("    let out0 = (ty - P.y_lo) * P.dst_row + pc * P.wp + iwp0;");
    for i in 0..8 {
        wln!(w, "    if (live && iwp0 + {i}u < P.wp) {{");
        wln!(w, "        let iw = iw0 + {i};");
        w.line("        let keep = chan & vec4<bool>(iw >= 0 && iw < i32(P.w));");
        wln!(
            w,
            "        dst[out0 + {i}u] = select(vec4<f32>(0.0), vec4<f32>(r0[{i}], r1[{i}], r2[{i}], r3[{i}]), keep);"
        );
        w.line("    }");
    }
    w.line("}");
    hoist_params(&w.finish(), &PadImageParams::fields())
}
