//! `conv2d_wgrad`: the weight gradient of a convolution, direct and deterministic.

use crate::gpu::wgsl::{hoist_params, params, spec, Elem, ParamStruct, Spec, SRC_INDEX};
use crate::kernels::shared::ConvShape;

params! {
    /// Parameters of `conv2d_wgrad`.
    pub(crate) struct WgradParams {
        @embed shape: ConvShape;
        kblocks: u32, sblocks: u32, total: u32, x_off: u32,
        dy_off: u32, dw_off: u32, kb_lo: u32, kbt: u32,
        c_lo: u32, c_cnt: u32, oy0: u32, oy_cnt: u32,
        _p0: u32, _p1: u32,
    }
}

spec! {
    /// Specialisation of `conv2d_wgrad`.
    pub(crate) struct WgradSpec {
        /// Workgroup size.
        WG: u32 = 64,
        /// Output channels per invocation: 1..4.
        KB: u32 = 4 in [1, 2, 3, 4],
        /// Padding mode of x: 0 zeros, 1 reflect, 2 replicate, 3 circular (`src_index`).
        PAD_MODE: u32 = 0 in [0, 1, 2, 3],
        /// True convolution: the gradient is stored at the rotated taps.
        FLIP: bool = false,
        /// Add to dw (second and later images / row bands / windows).
        ACCUMULATE: bool = false,
    }
}

/// The WGSL source of `conv2d_wgrad`.
/// Element type and arithmetic `T = elem` (the f16 twin runs `Precision::F16Accumulate`).
pub(crate) fn source(elem: Elem) -> String {
    let src = format!(
        "{}\n{}\n\n{}\n\n{}\n\n{}",
        elem.header(),
        WgradParams::wgsl(),
        WgradSpec::wgsl(),
        SRC_INDEX,
        include_str!("conv2d_wgrad.wgsl")
    );
    if src.contains("Barrier") {
        src
    } else {
        hoist_params(&src, &WgradParams::fields())
    }
}
