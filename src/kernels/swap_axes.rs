//! `swap_axes`: the memory-format conversion of 4-D tensors (NCHW ⇄ NHWC, KCRS ⇄ KRSC).
//!
//! Both directions are one transpose of the last two axes of a `[E, A, B]` array:
//! `dst[e][j][i] = src[e][i][j]`. NCHW → NHWC is `[N, C, H·W]` → `[N, H·W, C]`, NHWC → NCHW
//! is `[N, H·W, C]` → `[N, C, H·W]` (the same for weights, with `R·S` for `H·W`). A launch
//! covers entries `e0 .. e0 + ne`, rows `a0 .. a0 + na` and columns `b0 .. b0 + nb` (a tile,
//! so a tensor past one storage binding is converted in windows); invocations run in `dst`
//! order (`i` fastest), so the writes are contiguous.

use crate::gpu::wgsl::{hoist_params, params, spec, ParamStruct, Spec};

params! {
    /// Parameters of `swap_axes`: the tile of `[E, A, B]` (global element indices, rebased
    /// into the bound windows by `src_off` / `dst_off`, see `gpu::window`), and the first
    /// invocation of the dispatch (`base`).
    pub(crate) struct SwapAxesParams {
        a: u32, b: u32, e0: u32, ne: u32,
        a0: u32, na: u32, b0: u32, nb: u32,
        src_off: u32, dst_off: u32, base: u32, total: u32,
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
/// tiles of vector accesses.
pub(crate) fn source4() -> String {
    let src = format!(
        "{}\n\n{}\n{}",
        SwapAxesParams::wgsl(),
        SwapAxesSpec::wgsl(),
        BODY4
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
