//! `conv2d_depthwise_image`: depthwise convolution forward for CPU-like adapters, reading the
//! input from a read-only storage image (one or several output rows per invocation).

use crate::gpu::wgsl::{
    epilogue_store4, hoist_params, params, spec, wln, ParamStruct, Spec, Wgsl, ACTIVATION,
};
use crate::kernels::conv2d_depthwise::{DW_MAX_S, DW_TX};
use crate::kernels::f16_convert::F32_TO_F16_4;

params! {
    /// Parameters of `conv2d_depthwise_image`.
    pub(crate) struct DepthwiseImageParams {
        n: u32, c: u32, h: u32, k: u32,
        kg: u32, oh: u32, ow: u32, sh: u32,
        dh: u32, pad_top: i32, xblocks: u32, oyblocks: u32,
        total: u32, wq: u32, rows_shift: u32, y_off4: u32,
        t0: u32, alpha: f32, lo: f32, hi: f32,
    }
}

spec! {
    /// Specialisation of `conv2d_depthwise_image`.
    pub(crate) struct DepthwiseImageSpec {
        WG: u32 = 64,
        /// Kernel height (1..=[`DWI_MAX_R`]), width (1..=[`DW_MAX_S`]) and left padding (0..=4).
        R: u32 = 3 in [1, 2, 3, 4, 5, 6, 7],
        S: u32 = 3 in [1, 2, 3, 4, 5, 6, 7],
        PAD_LEFT: u32 = 1 in [0, 1, 2, 3, 4],
        /// Output rows per invocation: 1 or [`DWI_ROWS`].
        ROWS: u32 = 1 in [1, 4],
        HAS_BIAS: bool = false,
        FLIP: bool = false,
        /// The fused epilogue's activation (`Activation::code`).
        ACT: u32 = 0 in [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        /// The fused epilogue's residual position (`Residual::code`).
        RES: u32 = 0 in [0, 1, 2],
    }
}

/// Texels of the input-row window (16 outputs + halo of up to 4 on each side).
pub(crate) const DWI_TEX: usize = 6;
/// Output rows per invocation of the multi-row path (stride 1, dilation 1 rows).
pub(crate) const DWI_ROWS: usize = 4;
/// Tallest kernel.
pub(crate) const DWI_MAX_R: usize = 7;

/// Loads input row `iy` (an `i32` expression) as the window `v0..` of named registers; leaves
/// the `if` of the row's bounds check open.
fn load_row(w: &mut Wgsl, ind: &str, iy: &str) {
    wln!(w, "{ind}let iy = {iy};");
    wln!(w, "{ind}if (iy >= 0 && iy < i32(P.h)) {{");
    wln!(w, "{ind}    let fr = plane * P.h + u32(iy);");
    wln!(w, "{ind}    let ty = fr >> P.rows_shift;");
    wln!(w, "{ind}    let tx0 = (fr & rmask) * P.wq;");
    for j in 0..DWI_TEX {
        wln!(
            w,
            "{ind}    let t{j} = tload(tx0, ty, q0 + {});",
            j as i32 - 1
        );
    }
    wln!(
        w,
        "{ind}    // Window element i (input column 16 * xb - PAD_LEFT + i) is u[4 - PAD_LEFT + i]."
    );
    window(w, &format!("{ind}    "));
}

/// The window `v{i}` selected from the texel lanes `u = t0.x, t0.y, ..` by PAD_LEFT.
fn window(w: &mut Wgsl, ind: &str) {
    let u: Vec<String> = (0..DWI_TEX)
        .flat_map(|j| ['x', 'y', 'z', 'w'].map(|c| format!("t{j}.{c}")))
        .collect();
    let nwin = DW_TX + DW_MAX_S - 1;
    for i in 0..nwin {
        let opts: Vec<String> = (0..5)
            .map(|pl| {
                (4 + i)
                    .checked_sub(pl)
                    .and_then(|idx| u.get(idx))
                    .cloned()
                    .unwrap_or_else(|| "0.0".to_string())
            })
            .collect();
        let mut expr = opts[4].clone();
        for pl in (0..4).rev() {
            expr = format!("select({expr}, {}, PAD_LEFT == {pl}u)", opts[pl]);
        }
        wln!(w, "{ind}let v{i} = {expr};");
    }
}

/// The FMAs of kernel row `r` into the accumulators of output row `j`.
fn fmas(w: &mut Wgsl, ind: &str, j: usize, r: usize) {
    for sidx in 0..DW_MAX_S {
        wln!(w, "{ind}if (S > {sidx}u) {{");
        for q in 0..DW_TX / 4 {
            let e1: Vec<String> = (0..4).map(|e| format!("v{}", 4 * q + e + sidx)).collect();
            wln!(
                w,
                "{ind}    acc{j}_{q} = fma(vec4<f32>(w{r}_{sidx}), vec4<f32>({}), acc{j}_{q});",
                e1.join(", ")
            );
        }
        wln!(w, "{ind}}}");
    }
}

/// The WGSL source of `conv2d_depthwise_image`, or with `f16` of `conv2d_depthwise_image_f16`:
/// f16 x read from an `rgba16float` image (the texel load converts, exactly) and f16 y
/// stored as packed halves (`vec2<u32>` per 4 outputs, rounded to nearest even by
/// `f32_to_f16_4`); arithmetic in f32 either way.
pub(crate) fn source(f16: bool) -> String {
    let mut w = Wgsl::new();
    w.line(
        "// Depthwise convolution forward for CPU-like adapters (lavapipe): conv2d_depthwise.wgsl",
    );
    w.line(
        "// with the input read from a read-only rgba32float storage image instead of the buffer.",
    );
    w.line("// The host copies x into the image with one buffer-to-texture copy (a memcpy, no kernel):");
    w.line("// texel (q, ty) of row block ty holds input columns 4q..4q+3 of flat row");
    w.line("// fr = ty * rows_per + q / wq (fr = plane * H + row, wq = W / 4 texels per row), rows_per");
    w.line("// (a power of two, 1 << rows_shift) rows side by side so a texture row is a multiple of 256");
    w.line("// bytes. A storage-image load is ~1.4 instructions per float on lavapipe against ~20 for a");
    w.line(
        "// storage-buffer load (and a storage-buffer store costs as much: the outputs are most of",
    );
    w.line("// the time).");
    wln!(
        w,
        "// One invocation computes 16 consecutive outputs of ROWS (1 or {DWI_ROWS}) rows of one output"
    );
    w.line(
        "// channel from six texels per input row (the 16 columns plus a halo of 4 on each side),",
    );
    w.line("// with the R x S weights held in registers. ROWS = 1 takes any row stride and dilation; with");
    wln!(
        w,
        "// ROWS = {DWI_ROWS} (row stride 1, row dilation 1) each of the ROWS + R - 1 input rows is"
    );
    w.line(
        "// loaded once and feeds every output row it belongs to. Column stride 1, column dilation",
    );
    w.line("// 1, zero padding, PAD_LEFT <= 4 and S - PAD_LEFT <= 5, W and OW multiples of 4 (the host");
    w.line("// checks). Outputs are stored as vec4.");
    w.line("");
    w.line(&DepthwiseImageParams::wgsl());
    w.line("");
    w.line("@group(0) @binding(0) var<storage, read> P: Params;");
    if f16 {
        w.line("// f16 variant: x as rgba16float texels, y as 4 halves per vec2<u32>.");
        w.line("@group(0) @binding(1) var tx: texture_storage_2d<rgba16float, read>;");
    } else {
        w.line("@group(0) @binding(1) var tx: texture_storage_2d<rgba32float, read>;");
    }
    w.line("@group(0) @binding(2) var<storage, read> wt: array<f32>;");
    w.line("@group(0) @binding(3) var<storage, read> bias: array<f32>;");
    if f16 {
        w.line("@group(0) @binding(4) var<storage, read_write> y: array<vec2<u32>>;");
    } else {
        w.line("@group(0) @binding(4) var<storage, read_write> y: array<vec4<f32>>;");
    }
    w.line("// The residual of the fused epilogue (y's layout; read only when RES != 0).");
    w.line("@group(0) @binding(5) var<storage, read> r: array<vec4<f32>>;");
    w.line("");
    w.line(&DepthwiseImageSpec::wgsl());
    w.line("");
    w.line(ACTIVATION);
    w.line("");
    if f16 {
        w.line(F32_TO_F16_4);
    }
    w.line("fn tload(tx0: u32, ty: u32, q: i32) -> vec4<f32> {");
    w.line("    let inside = q >= 0 && q < i32(P.wq);");
    w.line("    let v = textureLoad(tx, vec2<u32>(tx0 + u32(clamp(q, 0, i32(P.wq) - 1)), ty));");
    w.line("    return select(vec4<f32>(0.0), v, inside);");
    w.line("}");
    w.line("");
    w.line("@compute @workgroup_size(WG)");
    w.line("fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {");
    w.line("    let id = P.t0 + gid.x + gid.y * nwg.x * WG;");
    w.line("    if (id >= P.total) {");
    w.line("        return;");
    w.line("    }");
    w.line("    let xb = id % P.xblocks;");
    w.line("    var t = id / P.xblocks;");
    w.line("    let oyb = t % P.oyblocks;");
    w.line("    t = t / P.oyblocks;");
    w.line("    let k = t % P.k;");
    w.line("    let n = t / P.k;");
    w.line("    let c = k / P.kg;");
    w.line("    let oy0 = oyb * ROWS;");
    wln!(w, "    let q0 = i32(xb * {}u);", DW_TX / 4);
    w.line("    let plane = n * P.c + c;");
    w.line("    let wbase = k * R * S;");
    w.line("    let rmask = (1u << P.rows_shift) - 1u;");
    w.line("    // The weights, rotated for true convolution.");
    for r in 0..DWI_MAX_R {
        for sidx in 0..DW_MAX_S {
            wln!(w, "    var w{r}_{sidx} = 0.0;");
            wln!(w, "    if (R > {r}u && S > {sidx}u) {{");
            wln!(
                w,
                "        w{r}_{sidx} = wt[wbase + select({r}u, R - 1u - {r}u, FLIP) * S + select({sidx}u, S - 1u - {sidx}u, FLIP)];"
            );
            w.line("    }");
        }
    }
    for j in 0..DWI_ROWS {
        for q in 0..DW_TX / 4 {
            wln!(w, "    var acc{j}_{q} = vec4<f32>(0.0);");
        }
    }
    w.line("    if (ROWS == 1u) {");
    w.line("        // Any row stride and dilation: kernel row r reads input row oy * sh + r * dh - pad_top.");
    for r in 0..DWI_MAX_R {
        wln!(w, "        if (R > {r}u) {{");
        load_row(
            &mut w,
            "            ",
            &format!("i32(oy0 * P.sh + {r}u * P.dh) - P.pad_top"),
        );
        fmas(&mut w, "                ", 0, r);
        w.line("            }");
        w.line("        }");
    }
    w.line("    } else {");
    w.line("        // Row stride and dilation 1: input row oy0 - pad_top + i feeds output row oy0 + j with");
    w.line("        // kernel row i - j.");
    for i in 0..DWI_ROWS + DWI_MAX_R - 1 {
        wln!(w, "        if (ROWS + R - 1u > {i}u) {{");
        load_row(
            &mut w,
            "            ",
            &format!("i32(oy0 + {i}u) - P.pad_top"),
        );
        for j in 0..DWI_ROWS {
            // Kernel row r = i - j, when it exists.
            if let Some(r) = i.checked_sub(j).filter(|&r| r < DWI_MAX_R) {
                wln!(w, "                if (ROWS > {j}u && R > {r}u) {{");
                fmas(&mut w, "                    ", j, r);
                w.line("                }");
            }
        }
        w.line("            }");
        w.line("        }");
    }
    w.line("    }");
    w.line("    var b = 0.0;");
    w.line("    if (HAS_BIAS) {");
    w.line("        b = bias[k];");
    w.line("    }");
    wln!(w, "    let o0 = xb * {}u;", DW_TX / 4);
    for j in 0..DWI_ROWS {
        wln!(w, "    if (ROWS > {j}u && oy0 + {j}u < P.oh) {{");
        wln!(
            w,
            "        let ybase = P.y_off4 + ((n * P.k + k) * P.oh + oy0 + {j}u) * (P.ow / 4u);"
        );
        for q in 0..DW_TX / 4 {
            wln!(w, "        if ((o0 + {q}u) * 4u < P.ow) {{");
            wln!(w, "            var o = acc{j}_{q} + vec4<f32>(b);");
            w.line(&epilogue_store4(
                "            ",
                "o",
                &format!("ybase + o0 + {q}u"),
            ));
            if f16 {
                w.line("            let hb = f32_to_f16_4(o);");
                wln!(
                    w,
                    "            y[ybase + o0 + {q}u] = vec2<u32>(hb.x | (hb.y << 16u), hb.z | (hb.w << 16u));"
                );
            } else {
                wln!(w, "            y[ybase + o0 + {q}u] = o;");
            }
            w.line("        }");
        }
        w.line("    }");
    }
    w.line("}");
    hoist_params(&w.finish(), &DepthwiseImageParams::fields())
}
