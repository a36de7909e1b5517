//! `conv2d_dgrad`: the input gradient of a convolution (also the transposed convolution),
//! gathered (no atomics) and stride-aware.

use crate::gpu::wgsl::{hoist_params, params, spec, Elem, ParamStruct, Spec};
use crate::kernels::shared::ConvShape;

params! {
    /// Parameters of `conv2d_dgrad`.
    pub(crate) struct DgradParams {
        @embed shape: ConvShape;
        dy_off: u32, w_off: u32, b_off: u32, dx_off: u32,
        cblocks: u32, xblocks: u32, total: u32, k_lo: u32,
        k_cnt: u32, cb_lo: u32, cbt: u32, iy0: u32,
        rows: u32, _p0: u32,
    }
}

spec! {
    /// Specialisation of `conv2d_dgrad`.
    pub(crate) struct DgradSpec {
        /// Workgroup size.
        WG: u32 = 64,
        /// Input channels per invocation: 1, 2, 3 or 4.
        CB: u32 = 4 in [1, 2, 3, 4],
        /// Add bias[b_off + c] (the transposed convolution; with the first chunk only).
        HAS_BIAS: bool = false,
        /// True convolution: the kernel taps are rotated by 180°.
        FLIP: bool = false,
        /// Add to dx (second and later chunks of output channels); bias comes with the first.
        ACCUMULATE: bool = false,
    }
}

/// The WGSL source of `conv2d_dgrad`.
/// Element type and arithmetic `T = elem` (the f16 twin runs `Precision::F16Accumulate`).
pub(crate) fn source(elem: Elem) -> String {
    let src = format!(
        "{}\n{}\n\n{}\n\n{}",
        elem.header(),
        DgradParams::wgsl(),
        DgradSpec::wgsl(),
        include_str!("conv2d_dgrad.wgsl")
    );
    if src.contains("Barrier") {
        src
    } else {
        hoist_params(&src, &DgradParams::fields())
    }
}
