//! `conv2d_implicit`: implicit-GEMM convolution on storage images for CPU-like adapters with
//! 8-lane subgroups (lavapipe), in two register-block shapes.

use crate::gpu::wgsl::{
    epilogue_store, hoist_params, params, spec, wln, ParamStruct, Spec, Wgsl, ACTIVATION,
};
use crate::kernels::shared::{
    acc4, scalar_subblocks_of, subgroup_entry, workgroup_blocks, IMPLICIT_LAYOUT_DOC, SG,
};

/// Output pixels per invocation of the default shape.
pub(crate) const IC_TM: usize = 8;
/// Output channels per workgroup of the default shape (four texels of a weight-panel row).
pub(crate) const IC_TN: usize = 16;

params! {
    /// Parameters of `conv2d_implicit` (both shapes): output geometry, kernel, input image
    /// layout, then the launch and weight-panel fields, y's pitches and, with `W_FLAT`, the
    /// log2 width of the weights' flat image (`spare1` pads the struct to 16 bytes).
    pub(crate) struct ImplicitParams {
        ohw: u32, ow: u32, sh: u32, sw: u32,
        dh: u32, dw: u32, r: u32, s: u32,
        cb8: u32, cpr: u32, wp: u32, hp: u32,
        rows_img: u32, groups_m: u32, groups_n: u32, groups: u32,
        batch: u32, wg0: u32, kg: u32, k: u32,
        hb: u32, kp: u32, y_off: u32, alpha: f32,
        lo: f32, hi: f32, ysc: u32, ysp: u32,
        ysn: u32, ysr: u32, tw_shift: u32, spare1: u32,
    }
}

spec! {
    /// Specialisation of `conv2d_implicit`.
    pub(crate) struct ImplicitSpec {
        WG: u32 = 8,
        HAS_BIAS: bool = false,
        /// The fused epilogue's activation (`Activation::code`).
        ACT: u32 = 0 in [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        /// The fused epilogue's residual position (`Residual::code`).
        RES: u32 = 0 in [0, 1, 2],
        /// 1x1 layers with channels per group a multiple of 8: the weights are a verbatim
        /// image copy of their `[K, C/groups]` buffer (`copy_flat`) instead of packed panels,
        /// so no packing pass runs (see `W_FLAT` in the source).
        W_FLAT: bool = false,
    }
}

/// Texel-block position (column `qx`, row `qy`) -> image origin of the block and of the next
/// one (which wraps to the next plane row at most once): used for the first channel block
/// and for each next one in the loop. Declares `{pre}w`, `{pre}ox0`, `{pre}oy0`, `{pre}ox1`
/// and `{pre}oy1` with `decl` (`let` or `var`).
fn origins(w: &mut Wgsl, ind: &str, pre: &str, qx: &str, qy: &str, decl: &str) {
    wln!(w, "{ind}let {pre}w = {qx} + 1u >= P.cpr;");
    wln!(w, "{ind}{decl} {pre}ox0 = {qx} * P.wp;");
    wln!(w, "{ind}{decl} {pre}oy0 = (ybase + {qy}) * P.hp;");
    wln!(
        w,
        "{ind}{decl} {pre}ox1 = select({qx} + 1u, {qx} + 1u - P.cpr, {pre}w) * P.wp;"
    );
    wln!(
        w,
        "{ind}{decl} {pre}oy1 = (ybase + select({qy}, {qy} + 1u, {pre}w)) * P.hp;"
    );
}

/// The WGSL source of `conv2d_implicit` with `tm` output pixels per invocation and `tn`
/// output channels per workgroup (a multiple of 4): `(IC_TM, IC_TN)` = (8, 16) is the
/// default kernel, (4, 32) the `_n32` one.
pub(crate) fn source(tm: usize, tn: usize) -> String {
    let mut w = Wgsl::new();
    wln!(w, "// Implicit-GEMM convolution for CPU-like adapters with {SG}-lane subgroups (lavapipe): the");
    w.line(
        "// image GEMM of gemm_image with its pixel-side operand gathered straight from a padded",
    );
    w.line("// input image (pad_image), so no column matrix is written or read. GEMM rows are the");
    w.line("// output pixels of one image, columns the output channels of one group, and the reduction");
    w.line("// runs over 8-channel blocks x kernel taps.");
    w.line("//");
    w.line(IMPLICIT_LAYOUT_DOC);
    w.line("//");
    wln!(w, "// A workgroup (one {SG}-lane subgroup) owns {tm} * WG consecutive output pixels x {tn} output");
    wln!(w, "// channels of one (image, group); each lane owns {tm} pixels (clamped into range for the loads;");
    w.line("// only in-range ones are stored). Per (8-channel block, tap) each lane loads two texels per");
    w.line("// pixel (8 channels) and one k-row of the weight panel (4 texels) that the subgroup shares by");
    wln!(w, "// subgroupBroadcast; the FMAs run in register sub-blocks of {tm} pixels x 1 channel with scalar");
    w.line("// accumulators (the code-shape rules of gemm_image: named accumulators, no guards in");
    w.line("// the loop).");
    w.line(
        "//   y[y_off + n * ysn + (g * kg + col) * ysc + (pixel / ow) * ysr + (pixel % ow) * ysp]",
    );
    w.line("//   (+ bias[g * kg + col]) with (ysn, ysc, ysr, ysp) = (K ohw, ohw, ow, 1) for NCHW outputs,");
    w.line("// (K ohw, 1, ow K, K) for NHWC ones, and the pitches of a bigger image for outputs on every");
    w.line("// sh-th row and sw-th column of one (the input gradient of strided 1x1 layers).");
    w.line("");
    w.line(&ImplicitParams::wgsl());
    w.line("");
    w.line("@group(0) @binding(0) var<storage, read> P: Params;");
    w.line("@group(0) @binding(1) var tx: texture_storage_2d<rgba32float, read>;");
    w.line("@group(0) @binding(2) var tb: texture_storage_2d<rgba32float, read>;");
    w.line("@group(0) @binding(3) var<storage, read> bias: array<f32>;");
    w.line("@group(0) @binding(4) var<storage, read_write> y: array<f32>;");
    w.line("// The residual of the fused epilogue (y's layout; read only when RES != 0).");
    w.line("@group(0) @binding(5) var<storage, read> r: array<f32>;");
    w.line("");
    w.line(&ImplicitSpec::wgsl());
    w.line("");
    w.line(ACTIVATION);
    w.line("");
    store_and_entry(&mut w, "P.ohw");
    wln!(w, "    let m0 = (gm * WG + lid) * {tm}u;");
    wln!(w, "    let n0 = tn * {tn}u;");
    w.line("    // Input-image offsets of this lane's pixels (the last pixel stands in for those past it).");
    w.line("    let last = P.ohw - 1u;");
    for i in 0..tm {
        wln!(w, "    let p{i} = min(m0 + {i}u, last);");
        wln!(w, "    let bx{i} = (p{i} % P.ow) * P.sw;");
        wln!(w, "    let by{i} = (p{i} / P.ow) * P.sh;");
        wln!(
            w,
            "    let o{i} = (p{i} / P.ow) * P.ysr + (p{i} % P.ow) * P.ysp;"
        );
    }
    let tn4 = tn / 4;
    w.line("    // Weight panel of (group, channel block): row 0 at texel (xb, yb).");
    w.line("    let lb = (g * P.groups_n + tn) * P.kp;");
    w.line("    var yb = lb % P.hb;");
    wln!(w, "    var xb = (lb / P.hb) * {tn4}u;");
    w.line("    let qbase = g * P.cb8 * 2u;");
    w.line("    let ybase = n * P.rows_img;");
    for i in 0..tm {
        for n in 0..tn {
            wln!(w, "    var c{i}_{n} = 0.0;");
        }
    }
    w.line("    // One loop over the reduction steps (channel block cb, tap r, tap s; s fastest), with");
    w.line("    // counters instead of nested loops: lavapipe blends every loop-carried value (the 128");
    w.line("    // accumulators) with the loop mask at the end of each iteration of each loop level, and");
    w.line("    // a division is a per-lane loop. Texel blocks q0 = qbase + 2 cb and q1 = q0 + 1 sit at");
    w.line("    // plane column q % cpr, row q / cpr; (ox, oy) is a block's tap (0, 0), (x, y) the current");
    w.line("    // tap's.");
    w.line("    var qx0 = qbase % P.cpr;");
    w.line("    var qy0 = qbase / P.cpr;");
    origins(&mut w, "    ", "", "qx0", "qy0", "var");
    w.line("    var x0 = ox0;");
    w.line("    var x1 = ox1;");
    w.line("    var y0 = oy0;");
    w.line("    var y1 = oy1;");
    w.line("    var ts = 0u;");
    w.line("    var tr = 0u;");
    w.line("    let steps = P.cb8 * P.r * P.s;");
    flat_rows(&mut w, tn4);
    w.line("    for (var t = 0u; t < steps; t++) {");
    w.line("        // Weights: lane sl loads k-row sl of this step (W_FLAT: its output channels'");
    w.line("        // 8 weights of this channel block), shared by subgroupBroadcast.");
    for j in 0..tn4 {
        wln!(w, "        var bl{j}: vec4<f32>;");
    }
    w.line("        if (W_FLAT) {");
    for j in 0..tn4 {
        let (kk, h) = flat_texel(tn4, j);
        wln!(w, "            let f{j} = wr{kk} + 2u * t{h};");
        wln!(
            w,
            "            bl{j} = textureLoad(tb, vec2<u32>(f{j} & (wtw - 1u), f{j} >> P.tw_shift));"
        );
    }
    w.line("        } else {");
    for j in 0..tn4 {
        wln!(
            w,
            "            bl{j} = textureLoad(tb, vec2<u32>(xb + {j}u, yb + sl));"
        );
    }
    w.line("        }");
    wln!(
        w,
        "        // Input: channels 0-3 and 4-7 of the block at this lane's {tm} pixels."
    );
    for i in 0..tm {
        wln!(
            w,
            "        let a{i}_0 = textureLoad(tx, vec2<u32>(x0 + bx{i}, y0 + by{i}));"
        );
        wln!(
            w,
            "        let a{i}_1 = textureLoad(tx, vec2<u32>(x1 + bx{i}, y1 + by{i}));"
        );
    }
    scalar_subblocks_of(
        &mut w,
        "        ",
        (tm, tn),
        |i, k| format!("a{i}_{}.{}", k / 4, ['x', 'y', 'z', 'w'][k % 4]),
        |n, k| {
            let (packed, flat) = (packed_broadcast(n, k), flat_broadcast(tn4, n, k));
            format!("select({packed}, {flat}, W_FLAT)")
        },
    );
    wln!(w, "        yb += {SG}u;");
    w.line("        let eb = yb == P.hb;");
    w.line("        yb = select(yb, 0u, eb);");
    wln!(w, "        xb = select(xb, xb + {tn4}u, eb);");
    next_tap(&mut w);
    w.line("        x0 = select(x0 + P.dw, ox0, es);");
    w.line("        x1 = select(x1 + P.dw, ox1, es);");
    w.line("        y0 = select(y0, y0 + P.dh, es);");
    w.line("        y1 = select(y1, y1 + P.dh, es);");
    w.line("        // Next channel block: q0 + 2 (wraps at most twice: cpr >= 1), q1 = q0 + 1.");
    w.line("        let n1 = qx0 + 2u >= P.cpr;");
    w.line("        let qa = select(qx0 + 2u, qx0 + 2u - P.cpr, n1);");
    w.line("        let qya = select(qy0, qy0 + 1u, n1);");
    w.line("        let n2 = qa >= P.cpr;");
    w.line("        let qn = select(qa, qa - P.cpr, n2);");
    w.line("        let qyn = select(qya, qya + 1u, n2);");
    origins(&mut w, "        ", "n", "qn", "qyn", "let");
    w.line("        qx0 = select(qx0, qn, er);");
    w.line("        qy0 = select(qy0, qyn, er);");
    w.line("        ox0 = select(ox0, nox0, er);");
    w.line("        oy0 = select(oy0, noy0, er);");
    w.line("        ox1 = select(ox1, nox1, er);");
    w.line("        oy1 = select(oy1, noy1, er);");
    w.line("        x0 = select(x0, nox0, er);");
    w.line("        x1 = select(x1, nox1, er);");
    w.line("        y0 = select(y0, noy0, er);");
    w.line("        y1 = select(y1, noy1, er);");
    w.line("    }");
    w.line("    let base = P.y_off + n * P.ysn + g * P.kg * P.ysc;");
    bias_vectors(&mut w, tn4);
    for i in 0..tm {
        for j in 0..tn4 {
            wln!(
                w,
                "    store(live, base, m0 + {i}u, o{i}, n0 + {}u, {}, bv{j});",
                4 * j,
                acc4(i, j)
            );
        }
    }
    w.line("}");
    hoist_params(&w.finish(), &ImplicitParams::fields())
}

/// Lanes per 4-output-channel group of the flat weights (`W_FLAT`): with `tn4` groups per
/// workgroup, lane `sl` holds group `sl % tn4` and, of the 8 channels of a reduction step,
/// those of half `sl / tn4` (`tn4` = 4) or both halves (`tn4` = 8).
fn flat_texel(tn4: usize, j: usize) -> (usize, &'static str) {
    assert!(
        tn4 == 4 || tn4 == 8,
        "W_FLAT needs 16 or 32 channels per workgroup"
    );
    match (tn4, j % 2) {
        // 8 texels per lane: output channel kk = j / 2 of the group, channels 4h..4h+3.
        (8, 0) => (j / 2, ""),
        (8, _) => (j / 2, " + 1u"),
        // 4 texels per lane: output channel kk = j, the lane's half (in `wr`).
        _ => (j, ""),
    }
}

/// WGSL: each lane's flat-weight row offsets `wr0..wr3` (texels; output channel
/// `n0 + 4 * (sl % tn4) + kk`, clamped into the group) and the flat image width `wtw`.
fn flat_rows(w: &mut Wgsl, tn4: usize) {
    w.line(
        "    // W_FLAT: texel offsets of this lane's 4 output channels' weight rows (channels past",
    );
    w.line("    // the group stand in for the last one: never stored), and the flat image width.");
    w.line("    let wtw = 1u << P.tw_shift;");
    wln!(w, "    let wq = n0 + 4u * (sl % {tn4}u);");
    let half = if tn4 == 8 { "0u" } else { "sl / 4u" };
    for kk in 0..4 {
        wln!(
            w,
            "    let wr{kk} = ((g * P.kg + min(wq + {kk}u, P.kg - 1u)) * P.kp) / 4u + {half};"
        );
    }
}

/// The broadcast of column `n`, reduction row `k` of a step from the packed panel: lane `k`'s
/// row texel.
fn packed_broadcast(n: usize, k: usize) -> String {
    let c = ['x', 'y', 'z', 'w'];
    format!("subgroupBroadcast(bl{}.{}, {k}u)", n / 4, c[n % 4])
}

/// The broadcast of column `n`, reduction row `k` from the flat weights (see
/// [`flat_texel`]): the lane holding output channel `n`'s group and channel `k`'s half.
fn flat_broadcast(tn4: usize, n: usize, k: usize) -> String {
    let c = ['x', 'y', 'z', 'w'];
    let (kk, h) = (n % 4, k / 4);
    if tn4 == 8 {
        format!(
            "subgroupBroadcast(bl{}.{}, {}u)",
            kk * 2 + h,
            c[k % 4],
            n / 4
        )
    } else {
        format!(
            "subgroupBroadcast(bl{kk}.{}, {}u)",
            c[k % 4],
            n / 4 + tn4 * h
        )
    }
}

/// Declares `bv0..bv{tn4 - 1}`: the bias of the workgroup's output channels `n0 + 4 j ..
/// n0 + 4 j + 3` of group `g` (zeros without `HAS_BIAS`; channels past the group read its last
/// one, never stored). Loaded once per channel for all of a lane's pixels: a storage-buffer
/// load is a per-lane loop on CPU adapters, and the stores called them per pixel before.
pub(crate) fn bias_vectors(w: &mut Wgsl, tn4: usize) {
    for j in 0..tn4 {
        wln!(w, "    var bv{j} = vec4<f32>(0.0);");
    }
    w.line("    if (HAS_BIAS) {");
    w.line("        let bb = g * P.kg;");
    w.line("        let bl = P.kg - 1u;");
    for j in 0..tn4 {
        let loads: Vec<String> = (0..4)
            .map(|e| format!("bias[bb + min(n0 + {}u, bl)]", 4 * j + e))
            .collect();
        wln!(w, "        bv{j} = vec4<f32>({});", loads.join(", "));
    }
    w.line("    }");
}

/// The `store` function (4 adjacent output channels of one pixel `px` at offset `po`: the
/// bias `b` (see [`bias_vectors`]), the fused epilogue, the store by `P.ysc` from `po`; `ohw`
/// is the WGSL for the pixels of one image) and the
/// entry point's head up to the workgroup's (image, group) `n`, `g`, channel block `tn` and
/// pixel block `gm`: shared by `conv2d_implicit` and `conv2d_implicit_first`.
pub(crate) fn store_and_entry(w: &mut Wgsl, ohw: &str) {
    w.line("fn store(live: bool, base: u32, px: u32, po: u32, col0: u32, v: vec4<f32>, b: vec4<f32>) {");
    wln!(w, "    if (!live || px >= {ohw}) {{");
    w.line("        return;");
    w.line("    }");
    w.line("    for (var e = 0u; e < 4u; e++) {");
    w.line("        let col = col0 + e;");
    w.line("        if (col < P.kg) {");
    w.line("            var out = v[e];");
    w.line("            if (HAS_BIAS) {");
    w.line("                out += b[e];");
    w.line("            }");
    w.line(&epilogue_store(
        "            ",
        "out",
        "base + col * P.ysc + po",
    ));
    w.line("            y[base + col * P.ysc + po] = out;");
    w.line("        }");
    w.line("    }");
    w.line("}");
    w.line("");
    subgroup_entry(w);
    w.line(
        "    // Workgroup -> ((image, group), channel block, pixel block), pixel block fastest.",
    );
    workgroup_blocks(w);
    w.line("    let bc = min(bt, P.batch - 1u);");
    w.line("    let g = bc % P.groups;");
    w.line("    let n = bc / P.groups;");
}

/// The reduction loop's tap counters: `ts`, then `tr` (`es` / `er` say which wrapped; the
/// channel block follows `er`). Shared by `conv2d_implicit` and `conv2d_implicit_first`.
pub(crate) fn next_tap(w: &mut Wgsl) {
    w.line("        // Next tap: s, then r, then the channel block.");
    w.line("        ts += 1u;");
    w.line("        let es = ts == P.s;");
    w.line("        ts = select(ts, 0u, es);");
    w.line("        tr = select(tr, tr + 1u, es);");
    w.line("        let er = tr == P.r;");
    w.line("        tr = select(tr, 0u, er);");
}
