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
