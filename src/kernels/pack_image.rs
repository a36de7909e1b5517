//! `pack_image`: packs a (batched) matrix operand into the wrapped panels of an rgba32float
//! image for `gemm_image`, read from a storage buffer (`source(false)`) or, for k-contiguous
//! operands on CPU adapters, from an image holding the buffer verbatim (`source(true)`, the
//! former `pack_image_flat`).

use crate::gpu::wgsl::{hoist_params, params, spec, wln, ParamStruct, Spec, Wgsl};
use crate::kernels::shared::PANELS_DOC;

/// k-rows per pack invocation (one 8-k group: never straddles an image column).
pub(crate) const PACK_KS: usize = 8;

params! {
    /// Parameters of `pack_image` (both variants).
    pub(crate) struct PackImageParams {
        r: u32, k: u32, kp: u32, rs: u32,
        ks: u32, off: u32, w: u32, h: u32,
        np: u32, inners: u32, so: u32, si: u32,
        total: u32, t0: u32, w_shift: u32, dst_row: u32,
        y_lo: u32, y_hi: u32,
        /// Width of the verbatim source image of the flat variant (a power of two).
        tw: u32,
        /// `log2(tw)`.
        tw_shift: u32,
        /// Texels of the verbatim source image of the flat variant.
        texels: u32, _p0: u32, _p1: u32, _p2: u32,
    }
}

spec! {
    /// Specialisation of `pack_image` (both variants).
    pub(crate) struct PackImageSpec {
        /// Lanes per workgroup.
        WG: u32 = 64,
    }
}

// The flat variant reads the PACK_KS k of a row as one `run8`.
const _: () = assert!(PACK_KS == 8);

/// The flat variant's reads from the verbatim source image: `texel` (clamped into the image)
/// and `run8`, the 8 floats of one operand row's k group.
pub(crate) const RUN8: &str = "fn texel(i: i32) -> vec4<f32> {
    let c = u32(clamp(i, 0, i32(P.texels) - 1));
    return textureLoad(src, vec2<u32>(c & (P.tw - 1u), c >> P.tw_shift));
}

// The 8 floats starting at float f of the verbatim image (any alignment: 3 texel loads and
// select chains on the run's offset, no per-lane loops; loads clamped into the image).
fn run8(f: i32) -> array<f32, 8> {
    let t = f >> 2u;
    let o = f & 3;
    let a = texel(t);
    let b = texel(t + 1);
    let c = texel(t + 2);
    let v = array<f32, 12>(a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w, c.x, c.y, c.z, c.w);
    var r: array<f32, 8>;
    r[0] = select(select(select(v[0], v[1], o == 1), v[2], o == 2), v[3], o == 3);
    r[1] = select(select(select(v[1], v[2], o == 1), v[3], o == 2), v[4], o == 3);
    r[2] = select(select(select(v[2], v[3], o == 1), v[4], o == 2), v[5], o == 3);
    r[3] = select(select(select(v[3], v[4], o == 1), v[5], o == 2), v[6], o == 3);
    r[4] = select(select(select(v[4], v[5], o == 1), v[6], o == 2), v[7], o == 3);
    r[5] = select(select(select(v[5], v[6], o == 1), v[7], o == 2), v[8], o == 3);
    r[6] = select(select(select(v[6], v[7], o == 1), v[8], o == 2), v[9], o == 3);
    r[7] = select(select(select(v[7], v[8], o == 1), v[9], o == 2), v[10], o == 3);
    return r;
}
";

/// The WGSL source of `pack_image`: the operand read from a storage buffer, or with `flat`
/// from a read-only image holding the buffer verbatim (`pack_image(flat=True)` of the
/// Python generator; k-contiguous operands only, `ks == 1`).
pub(crate) fn source(flat: bool) -> String {
    variant(if flat { Src::Flat } else { Src::Buffer })
}

/// The WGSL source of `pack_image_rows`: `pack_image` for row-contiguous operands (`rs ==
/// 1`: 4 consecutive rows of one k are 4 consecutive floats, e.g. a channels-last dy whose
/// rows are channels) with `ks`, the offset and the batch strides multiples of 4, read from
/// a verbatim image copy: one aligned texel per 4 rows and k.
pub(crate) fn rows_source() -> String {
    variant(Src::Rows)
}

/// Where `pack_image` reads its operand.
#[derive(Clone, Copy, PartialEq)]
enum Src {
    /// A storage buffer.
    Buffer,
    /// A verbatim image copy, k-contiguous operand (runs of 8 k).
    Flat,
    /// A verbatim image copy, row-contiguous operand (a texel per 4 rows).
    Rows,
}

fn variant(src: Src) -> String {
    let flat = src != Src::Buffer;
    let ks = PACK_KS;
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
    w.line("// Packs a (batched) matrix operand into an rgba32float storage image of wrapped panels for");
    w.line(
        "// gemm_image. Operand element (r, k) of batch entry (bo, bi), r < R (rows of C for A,",
    );
    w.line("// columns of C for B), k < K, is read from");
    w.line("//   src[off + bo * so + bi * si + r * rs + k * ks]");
    w.line("// so any transpose, leading dimension and batch stride works; entry b = bo * inners + bi.");
    w.line("//");
    w.line(PANELS_DOC);
    w.line("// Here the panel width is 4 * w rows (w texels per panel row, a power of two: 1 << w_shift).");
    w.line("//");
    wln!(
        w,
        "// One invocation per texel column x of one {ks}-k group of one panel: {ks} texel stores."
    );
    w.line("// Integer division is scalarized on SIMD CPUs (about as costly as the loads), so the");
    wln!(
        w,
        "// index math is done once per {ks} texels. Branch-free: source indices are clamped into"
    );
    w.line("// range and the padding zeroed with `select` (an `if` around a load becomes a lane mask).");
    if flat {
        w.line("//");
        w.line(
            "// Variant for CPU adapters and k-contiguous operands (ks == 1): src is a read-only",
        );
        w.line("// storage image holding the operand's buffer verbatim (see `run8` below), and");
        w.line(
            "// the 8 k of one operand row are one run of floats read as 3 texels, instead of 8",
        );
        w.line("// single-float storage-buffer loads (a per-lane loop each on lavapipe).");
    }
    w.line("");
    w.line(&PackImageParams::wgsl());
    w.line("");
    w.line("@group(0) @binding(0) var<storage, read> P: Params;");
    if flat {
        w.line("@group(0) @binding(1) var src: texture_storage_2d<rgba32float, read>;");
    } else {
        w.line("@group(0) @binding(1) var<storage, read> src: array<f32>;");
    }
    w.line("@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;");
    w.line("");
    w.line(&PackImageSpec::wgsl());
    w.line("");
    if src == Src::Flat {
        w.line(RUN8);
    }
    w.line("@compute @workgroup_size(WG)");
    w.line("fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {");
    wln!(
        w,
        "    // t = (panel of all entries * KP/{ks} + k group) * w + x; a dispatch covers [t0, total)."
    );
    w.line("    let t = P.t0 + gid.x + gid.y * nwg.x * WG;");
    w.line("    if (t >= P.total) {");
    w.line("        return;");
    w.line("    }");
    w.line("    let x = t & (P.w - 1u);");
    w.line("    let q = t >> P.w_shift;");
    wln!(w, "    let groups = P.kp / {ks}u;");
    w.line("    let pg = q / groups;");
    wln!(w, "    let k0 = (q - pg * groups) * {ks}u;");
    w.line("    let bt = pg / P.np;");
    w.line("    let pnl = pg - bt * P.np;");
    w.line("    let bo = bt / P.inners;");
    w.line("    let bi = bt - bo * P.inners;");
    w.line("    let l0 = pg * P.kp + k0;");
    w.line("    let tc = l0 / P.h;");
    w.line("    let tx = tc * P.w + x;");
    w.line("    let ty = l0 - tc * P.h;");
    w.line("    let r0 = (pnl * P.w + x) * 4u;");
    w.line("    let base = P.off + bo * P.so + bi * P.si;");
    w.line("    let rl = P.r - 1u;");
    w.line("    let i0 = min(r0, rl) * P.rs;");
    w.line("    let i1 = min(r0 + 1u, rl) * P.rs;");
    w.line("    let i2 = min(r0 + 2u, rl) * P.rs;");
    w.line("    let i3 = min(r0 + 3u, rl) * P.rs;");
    w.line("    let keep = vec4<bool>(r0 < P.r, r0 + 1u < P.r, r0 + 2u < P.r, r0 + 3u < P.r);");
    w.line("    let kl = P.k - 1u;");
    if src == Src::Flat {
        for e in 0..4 {
            wln!(w, "    let run{e} = run8(i32(base + i{e} + k0));");
        }
    }
    if src == Src::Rows {
        // Rows r0..r0+3 (clamped to the last whole group of 4, masked by keep).
        w.line("    let rt = base + min(r0, rl & ~3u);");
    }
    for s in 0..ks {
        if src == Src::Rows {
            wln!(w, "    let t{s} = (rt + min(k0 + {s}u, kl) * P.ks) / 4u;");
            wln!(
                w,
                "    let v{s} = textureLoad(src, vec2<u32>(t{s} & (P.tw - 1u), t{s} >> P.tw_shift));"
            );
        } else if flat {
            wln!(
                w,
                "    let v{s} = vec4<f32>(run0[{s}], run1[{s}], run2[{s}], run3[{s}]);"
            );
        } else {
            wln!(w, "    let kb{s} = base + min(k0 + {s}u, kl) * P.ks;");
            wln!(
                w,
                "    let v{s} = vec4<f32>(src[kb{s} + i0], src[kb{s} + i1], src[kb{s} + i2], src[kb{s} + i3]);"
            );
        }
        wln!(w, "    if (ty + {s}u >= P.y_lo && ty + {s}u < P.y_hi) {{");
        wln!(
            w,
            "        dst[(ty + {s}u - P.y_lo) * P.dst_row + tx] = select(vec4<f32>(0.0), v{s}, keep & vec4<bool>(k0 + {s}u < P.k));"
        );
        w.line("    }");
    }
    w.line("}");
    hoist_params(&w.finish(), &PackImageParams::fields())
}
