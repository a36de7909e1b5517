//! `swap_axes`: the memory-format conversion of 4-D tensors (NCHW ⇄ NHWC, KCRS ⇄ KRSC).
//!
//! Both directions are one transpose of the last two axes of a `[E, A, B]` array:
//! `dst[e][j][i] = src[e][i][j]`. NCHW → NHWC is `[N, C, H·W]` → `[N, H·W, C]`, NHWC → NCHW
//! is `[N, H·W, C]` → `[N, C, H·W]` (the same for weights, with `R·S` for `H·W`). A launch
//! covers entries `e0 .. e0 + ne`, rows `a0 .. a0 + na` and columns `b0 .. b0 + nb` (a tile,
//! so a tensor past one storage binding is converted in windows); invocations run in `dst`
//! order (`i` fastest), so the writes are contiguous.

use crate::gpu::wgsl::{hoist_params, params, spec, wln, ParamStruct, Spec, Wgsl};

params! {
    /// Parameters of `swap_axes`: the tile of `[E, A, B]` (global element indices, rebased
    /// into the bound windows by `src_off` / `dst_off`, see `gpu::window`), and the first
    /// invocation of the dispatch (`base`).
    pub(crate) struct SwapAxesParams {
        a: u32, b: u32, e0: u32, ne: u32,
        a0: u32, na: u32, b0: u32, nb: u32,
        src_off: u32, dst_off: u32, base: u32, total: u32,
        tw_shift: u32, _p0: u32, _p1: u32, _p2: u32,
    }
}

spec! {
    /// Specialisation of `swap_axes`.
    pub(crate) struct SwapAxesSpec {
        /// Workgroup size.
        WG: u32 = 64,
    }
}

const BODY: &str = "
@group(0) @binding(0) var<storage, read> P: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = P.base + gid.x + gid.y * nwg.x * WG;
    if (id >= P.total) {
        return;
    }
    // id = (e * nb + j) * na + i, dst order.
    let i = id % P.na;
    let q = id / P.na;
    let j = q % P.nb;
    let e = P.e0 + q / P.nb;
    let entry = e * P.a * P.b;
    let a = P.a0 + i;
    let b = P.b0 + j;
    dst[entry + b * P.a + a + P.dst_off] = src[entry + a * P.b + b + P.src_off];
}
";

const BODY4: &str = "
@group(0) @binding(0) var<storage, read> P: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<u32>>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = P.base + gid.x + gid.y * nwg.x * WG;
    if (id >= P.total) {
        return;
    }
    // One 4 x 4 tile per invocation: 4 vec4 loads of 4 consecutive source words, a
    // transpose in registers, 4 vec4 stores (A, B, a0, b0 and the window offsets are
    // multiples of 4; on lavapipe each storage access is a per-lane loop, so 8 vector
    // accesses per 16 words instead of 32 scalar ones). id = (e * nb/4 + tj) * na/4 + ti.
    let ti = P.na / 4u;
    let tj = P.nb / 4u;
    let t_i = id % ti;
    let q = id / ti;
    let t_j = q % tj;
    let e = P.e0 + q / tj;
    let entry = e * P.a * P.b;
    let a = P.a0 + t_i * 4u;
    let b = P.b0 + t_j * 4u;
    let s = (entry + a * P.b + b + P.src_off) / 4u;
    let sb = P.b / 4u;
    let r0 = src[s];
    let r1 = src[s + sb];
    let r2 = src[s + 2u * sb];
    let r3 = src[s + 3u * sb];
    let d = (entry + b * P.a + a + P.dst_off) / 4u;
    let da = P.a / 4u;
    dst[d] = vec4<u32>(r0.x, r1.x, r2.x, r3.x);
    dst[d + da] = vec4<u32>(r0.y, r1.y, r2.y, r3.y);
    dst[d + 2u * da] = vec4<u32>(r0.z, r1.z, r2.z, r3.z);
    dst[d + 3u * da] = vec4<u32>(r0.w, r1.w, r2.w, r3.w);
}
";

/// The WGSL source of `swap_axes4`: [`source`] for `A` and `B` multiples of 4, in 4 x 4
/// tiles of vector accesses. With `image`, `swap_axes4_image`: the source words are read
/// from a verbatim `rgba32float` image copy of the whole tensor (texel `t` holds words
/// `4t..4t + 4`, rows of `1 << tw_shift` texels), for CPU adapters, where a texel load costs
/// a fraction of a per-lane storage-buffer load; the texels are bit-cast, never converted.
pub(crate) fn source4(image: bool) -> String {
    let body = if image {
        BODY4
            .replace(
                "var<storage, read> src: array<vec4<u32>>;",
                "var src: texture_storage_2d<rgba32float, read>;",
            )
            .replace(
                "    let r0 = src[s];
    let r1 = src[s + sb];
    let r2 = src[s + 2u * sb];
    let r3 = src[s + 3u * sb];",
                "    let r0 = texel(s);
    let r1 = texel(s + sb);
    let r2 = texel(s + 2u * sb);
    let r3 = texel(s + 3u * sb);",
            )
            + "
fn texel(t: u32) -> vec4<u32> {
    let m = (1u << P.tw_shift) - 1u;
    return bitcast<vec4<u32>>(textureLoad(src, vec2<u32>(t & m, t >> P.tw_shift)));
}
"
    } else {
        BODY4.to_string()
    };
    let src = format!(
        "{}\n\n{}\n{}",
        SwapAxesParams::wgsl(),
        SwapAxesSpec::wgsl(),
        body
    );
    hoist_params(&src, &SwapAxesParams::fields())
}

/// The WGSL source of `swap_axes` (32-bit words: f32 values, or f32 views of f16 tensors).
pub(crate) fn source() -> String {
    let src = format!(
        "{}\n\n{}\n{}",
        SwapAxesParams::wgsl(),
        SwapAxesSpec::wgsl(),
        BODY
    );
    hoist_params(&src, &SwapAxesParams::fields())
}

/// Largest short axis of `swap_axes_small`.
pub(crate) const SMALL_MAX: usize = 16;

spec! {
    /// Specialisation of `swap_axes_small`.
    pub(crate) struct SwapSmallSpec {
        WG: u32 = 64,
        /// The short axis (1..=16 elements: RGB images, the taps of kernels up to 4x4).
        N: u32 = 3 in [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16],
        /// `true`: the rows axis `A` is the short one (to channels-last: `[E, N, B]` to
        /// `[E, B, N]`); `false`: the columns axis `B` is (from channels-last).
        ROWS_SHORT: bool = true,
    }
}

/// The WGSL source of `swap_axes_small`: [`source`] for whole entries where one axis has 1–16
/// elements ([`SMALL_MAX`]) and the other is a multiple of 4 (e.g. RGB images: NCHW ⇄ NHWC
/// with 3 channels; 3x3 weights: KCRS ⇄ KRSC with 9 taps). Invocation (entry, block of 4 along the long axis): N vector loads and N
/// vector stores of the 4N consecutive words on the channels-last side, instead of 8N scalar
/// accesses.
pub(crate) fn small_source() -> String {
    let mut w = Wgsl::new();
    w.line(&SwapAxesParams::wgsl());
    w.line("");
    w.line(&SwapSmallSpec::wgsl());
    w.line("");
    w.line("@group(0) @binding(0) var<storage, read> P: Params;");
    w.line("@group(0) @binding(1) var<storage, read> src: array<vec4<u32>>;");
    w.line("@group(0) @binding(2) var<storage, read_write> dst: array<vec4<u32>>;");
    w.line("");
    w.line("@compute @workgroup_size(WG)");
    w.line("fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {");
    w.line("    let id = P.base + gid.x + gid.y * nwg.x * WG;");
    w.line("    if (id >= P.total) {");
    w.line("        return;");
    w.line("    }");
    w.line("    // The long axis in blocks of 4: L / 4 blocks per entry.");
    w.line("    let long = select(P.a, P.b, ROWS_SHORT);");
    w.line("    let blocks = long / 4u;");
    w.line("    let q = id % blocks;");
    w.line("    let e = P.e0 + id / blocks;");
    w.line("    // Word indices (windows rebased by the wrapping offsets), then vector indices.");
    w.line("    let entry = e * P.a * P.b;");
    w.line("    let sbase = entry + P.src_off;");
    w.line("    let dbase = entry + P.dst_off;");
    let lanes = ['x', 'y', 'z', 'w'];
    for n in 1..=SMALL_MAX {
        wln!(w, "    if (N == {n}u) {{");
        // Short rows: src rows i (n of them) give 4 columns each; dst is 4n consecutive
        // words: word k = (column k / n, row k % n).
        w.line("        if (ROWS_SHORT) {");
        for i in 0..n {
            wln!(
                w,
                "            let r{i} = src[(sbase + {i}u * P.b + 4u * q) / 4u];"
            );
        }
        for v in 0..n {
            let comps: Vec<String> = (0..4)
                .map(|c| {
                    let k = 4 * v + c;
                    format!("r{}.{}", k % n, lanes[k / n])
                })
                .collect();
            wln!(
                w,
                "            dst[(dbase + 4u * q * {n}u) / 4u + {v}u] = vec4<u32>({});",
                comps.join(", ")
            );
        }
        w.line("        } else {");
        // Short columns: src is 4n consecutive words (4 rows of n); dst rows j (n of them)
        // get 4 words each: row j, words i = 0..3 are src word i * n + j.
        for v in 0..n {
            wln!(
                w,
                "            let s{v} = src[(sbase + 4u * q * {n}u) / 4u + {v}u];"
            );
        }
        for j in 0..n {
            let comps: Vec<String> = (0..4)
                .map(|i| {
                    let k = i * n + j;
                    format!("s{}.{}", k / 4, lanes[k % 4])
                })
                .collect();
            wln!(
                w,
                "            dst[(dbase + {j}u * P.a + 4u * q) / 4u] = vec4<u32>({});",
                comps.join(", ")
            );
        }
        w.line("        }");
        w.line("    }");
    }
    w.line("}");
    hoist_params(&w.finish(), &SwapAxesParams::fields())
}
