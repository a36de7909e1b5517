//! Generator pieces shared by several kernels: the subgroup FMA sub-blocks of the image
//! GEMM family and the layout documentation written into their sources.

use crate::gpu::wgsl::{params, wln, Wgsl};

/// Subgroup size the subgroup kernels are written for (lavapipe: 8).
pub(crate) const SG: usize = 8;

/// Emits the FMAs of one 8-k broadcast group: for each column n (four per texel `bl{n / 4}`
/// of B) one sub-block over the SG k-steps, where the broadcast of k-step k feeds the scalar
/// accumulators `c{r}_{n}` of all `rows` rows from a register; `a_of(r, k)` is row r's
/// operand at k-step k (`docs/lavapipe-driver-notes.md` section 12).
pub(crate) fn scalar_subblocks(
    w: &mut Wgsl,
    ind: &str,
    rows: usize,
    cols: usize,
    a_of: impl Fn(usize, usize) -> String,
) {
    scalar_subblocks_of(w, ind, (rows, cols), a_of, |n, k| {
        let lane = ['x', 'y', 'z', 'w'][n % 4];
        format!("subgroupBroadcast(bl{}.{lane}, {k}u)", n / 4)
    });
}

/// [`scalar_subblocks`] with the broadcast of column `n`, k-step `k` given by `b_of` (a
/// WGSL expression) instead of lane `k`'s row texel `bl{n / 4}`.
pub(crate) fn scalar_subblocks_of(
    w: &mut Wgsl,
    ind: &str,
    (rows, cols): (usize, usize),
    a_of: impl Fn(usize, usize) -> String,
    b_of: impl Fn(usize, usize) -> String,
) {
    for n in 0..cols {
        wln!(w, "{ind}{{");
        for k in 0..SG {
            wln!(w, "{ind}    let b{k} = {};", b_of(n, k));
            for r in 0..rows {
                wln!(
                    w,
                    "{ind}    c{r}_{n} = fma({}, b{k}, c{r}_{n});",
                    a_of(r, k)
                );
            }
        }
        wln!(w, "{ind}}}");
    }
}

/// The scalar accumulators of row r, columns 4j..4j+3, as one vec4 (for the stores).
pub(crate) fn acc4(r: usize, j: usize) -> String {
    let c: Vec<String> = (0..4).map(|e| format!("c{r}_{}", 4 * j + e)).collect();
    format!("vec4<f32>({})", c.join(", "))
}

/// WGSL: the accumulators of rows `r0..r0 + 4` of column `n` as one `vec4<f32>` (stores of
/// four adjacent rows: C's columns or dw's channels contiguous).
pub(crate) fn acc4_rows(r0: usize, n: usize) -> String {
    let c: Vec<String> = (0..4).map(|e| format!("c{}_{n}", r0 + e)).collect();
    format!("vec4<f32>({})", c.join(", "))
}

/// Layout of the wrapped GEMM operand panels in storage images.
pub(crate) const PANELS_DOC: &str =
    "// Wrapped panels. An operand with R rows (M for A, N for B) and K columns is cut into panels
// of PW consecutive rows (PW = 8 * WG = 64 for A, 16 for B); K is padded to KP = ceil(K/8) * 8.
// Row k of panel p of batch entry b is panel row L = (b * NP + p) * KP + k (NP panels per
// entry), stored in the image (height H, a multiple of 8) at texel
//   x = (L / H) * PW/4 + (r % PW) / 4,   y = L % H,   channel r % 4.
// So 8 consecutive k of a panel never straddle a column block, and one image holds any
// number of batch entries. Padding (r >= R or k >= K) is 0.";

/// Layouts of the implicit-GEMM convolution's input image and weight panels.
pub(crate) const IMPLICIT_LAYOUT_DOC: &str =
    "// Layouts (see the implicit-GEMM launchers, which size them):
// - Input image: the input of a chunk of images, padded (any padding mode, also negative
//   padding) to Hp x Wp planes, channels of each group padded to a multiple of 8 and packed
//   4 per texel: block q (channels 4q..4q+3 of all groups, q = g * QG + local block) of image
//   n is the plane at texel origin ((q % cpr) * Wp, (n * rows_img + q / cpr) * Hp).
// - Weight image: for group g and output-channel block tn (TC channels: 16 for the 8 x 16
//   tile and the weight gradient's panels, 32 for the 4 x 32 tile), panel
//   pn = g * groups_n + tn holds the reduction rows k' = ((cb * R + r) * S + s) * 8 + j
//   (input channel cb * 8 + j of the group, tap (r, s)); row L = pn * KP + k' sits at texel
//   x = (L / HB) * TC / 4 + col / 4, y = L % HB, channel col % 4 (the GEMM's wrapped B
//   panels).
//   Taps are rotated there for true convolution; padding rows/columns are 0.";

params! {
    /// The shape fields of a convolution, shared by the parameter structs of the kernels
    /// that index a convolution's tensors (`direct`, `dgrad`, `wgrad`, `im2col`, `col2im`,
    /// `implicit_tiled`, the depthwise kernels), filled once per problem by the launchers
    /// (`conv::launch::conv_shape`).
    pub(crate) struct ConvShape {
        n: u32, c: u32, h: u32, w: u32,
        k: u32, groups: u32, cg: u32, kg: u32,
        r: u32, s: u32, oh: u32, ow: u32,
        sh: u32, sw: u32, dh: u32, dw: u32,
        pad_top: i32, pad_left: i32,
    }
}

/// WGSL: loads from a read-only storage image `tx` holding a channels-last tensor verbatim
/// (float i at texel i / 4 of rows of `P.tw` texels, a power of two; channels a multiple of
/// 4): `xload(t)` is texel t, `rload(row, col, c4n, cq)` the 4 channels from `4 * cq` of
/// pixel `col` of image row `row` (`n * H + iy`), 0 where row or col is -1 (padding). The
/// loaders of the channels-last depthwise kernels.
pub(crate) const NHWC_LOAD: &str = "fn xload(t: u32) -> vec4<f32> {
    return textureLoad(tx, vec2<u32>(t & (P.tw - 1u), t >> P.tw_shift));
}
fn rload(row: i32, col: i32, c4n: u32, cq: u32) -> vec4<f32> {
    if (row < 0 || col < 0) {
        return vec4<f32>(0.0);
    }
    return xload((u32(row) * P.w + u32(col)) * c4n + cq);
}
";

/// WGSL: float `i` of a read-only storage image `src` holding a buffer verbatim (float i at
/// texel i / 4 of rows of `P.tw` texels, a power of two: shifts, not per-lane division loops;
/// channel i % 4). The loader of the kernels that read a buffer through its image copy.
pub(crate) const FLAT_LOAD: &str = "fn flat_load(i: u32) -> f32 {
    let t = i / 4u;
    let v = textureLoad(src, vec2<u32>(t & (P.tw - 1u), t >> P.tw_shift));
    return v[i % 4u];
}
";

/// WGSL: the head of the entry point `main` of a one-subgroup workgroup (`WG` lanes), up to
/// its opening brace: workgroup id `wid` and count `nwg`, lane `lid` and subgroup lane `sl`.
pub(crate) fn subgroup_entry(w: &mut Wgsl) {
    w.line("@compute @workgroup_size(WG)");
    w.line("fn main(");
    w.line("    @builtin(workgroup_id) wid: vec3<u32>,");
    w.line("    @builtin(num_workgroups) nwg: vec3<u32>,");
    w.line("    @builtin(local_invocation_index) lid: u32,");
    w.line("    @builtin(subgroup_invocation_id) sl: u32,");
    w.line(") {");
}

/// WGSL: `fn {name}(i: u32) -> f32`, float i of the verbatim image copy `tex` of a buffer
/// (texel i / 4 of rows of `P.{tw}` texels, a power of two, `P.{shift}` its log2).
pub(crate) fn flat_loader(w: &mut Wgsl, name: &str, tex: &str, tw: &str, shift: &str) {
    wln!(w, "fn {name}(i: u32) -> f32 {{");
    w.line("    let t = i / 4u;");
    wln!(
        w,
        "    return textureLoad({tex}, vec2<u32>(t & (P.{tw} - 1u), t >> P.{shift}))[i % 4u];"
    );
    w.line("}");
}

/// WGSL: the launch's workgroup `wg` (dispatches of a split launch start at `P.wg0`) as row
/// block `gm` (fastest), column block `tn` and batch entry `bt` (`live`: within `P.batch`),
/// from `P.groups_m` and `P.groups_n`.
pub(crate) fn workgroup_blocks(w: &mut Wgsl) {
    w.line("    let wg = P.wg0 + wid.x + wid.y * nwg.x;");
    w.line("    let gm = wg % P.groups_m;");
    w.line("    let t = wg / P.groups_m;");
    w.line("    let tn = t % P.groups_n;");
    w.line("    let bt = t / P.groups_n;");
    w.line("    let live = bt < P.batch;");
}

/// WGSL: the head of a linear launch's entry point `main` (`WG` invocations per workgroup, 2-D
/// grids for large launches), up to invocation `t` of `[P.t0, P.total)`; the invocations past
/// `P.total` return.
pub(crate) fn linear_entry(w: &mut Wgsl) {
    w.line("@compute @workgroup_size(WG)");
    w.line("fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {");
    w.line("    let t = P.t0 + gid.x + gid.y * nwg.x * WG;");
    w.line("    if (t >= P.total) {");
    w.line("        return;");
    w.line("    }");
}

/// WGSL of the column sums of a GEMM's B operand (`COL_SUMS`, the bias gradient of the
/// weight gradients), in three pieces for the kernel to place: `decl` declares a lane's
/// partial sums `s0..` of `cols` columns (a multiple of 4), `add` adds this k-step's row of
/// B, the texels `bl0..` (rows past K are 0 in the panels), and `store` sums the subgroup's
/// lanes and lets lane 0 of the workgroups where `owner` holds write (or with `ACCUMULATE`
/// add) column `col0 + c` of `sums[base + c]` for `col0 + c < limit`. `ind`: the
/// indentation of `add`.
pub(crate) struct ColSums {
    pub decl: String,
    pub add: String,
    pub store: String,
}

pub(crate) fn col_sums(
    cols: usize,
    ind: &str,
    owner: &str,
    base: &str,
    col0: &str,
    limit: &str,
) -> ColSums {
    let mut decl = Wgsl::new();
    decl.line("    // COL_SUMS: this lane's k-rows of B summed (rows past K are 0 in the panels).");
    for j in 0..cols / 4 {
        wln!(decl, "    var s{j} = vec4<f32>(0.0);");
    }
    let mut add = Wgsl::new();
    wln!(add, "{ind}if (COL_SUMS) {{");
    for j in 0..cols / 4 {
        wln!(add, "{ind}    s{j} += bl{j};");
    }
    wln!(add, "{ind}}}");
    let mut st = Wgsl::new();
    st.line("    if (COL_SUMS) {");
    st.line(
        "        // The subgroup's rows together; lane 0 of the owning workgroups writes them.",
    );
    for j in 0..cols / 4 {
        wln!(st, "        let t{j} = subgroupAdd(s{j});");
    }
    wln!(st, "        if ({owner} && sl == 0u) {{");
    wln!(st, "            let sb = {base};");
    for j in 0..cols / 4 {
        for (e, c) in ['x', 'y', 'z', 'w'].iter().enumerate() {
            let col = 4 * j + e;
            wln!(st, "            if ({col0} + {col}u < {limit}) {{");
            wln!(st, "                var v = t{j}.{c};");
            st.line("                if (ACCUMULATE) {");
            wln!(st, "                    v += sums[sb + {col}u];");
            st.line("                }");
            wln!(st, "                sums[sb + {col}u] = v;");
            st.line("            }");
        }
    }
    st.line("        }");
    st.line("    }");
    let text = |w: Wgsl| w.finish().trim_end().to_string();
    ColSums {
        decl: text(decl),
        add: text(add),
        store: text(st),
    }
}
