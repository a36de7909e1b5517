//! `conv2d_dgrad`: the input gradient of a convolution (also the transposed convolution),
//! gathered (no atomics) and stride-aware.

use crate::gpu::wgsl::{hoist_params, params, spec, ParamStruct, Spec};

params! {
    /// Parameters of `conv2d_dgrad`.
    pub(crate) struct DgradParams {
        n: u32, c: u32, h: u32, w: u32,
        k: u32, r: u32, s: u32, cg: u32,
        kg: u32, oh: u32, ow: u32, sh: u32,
        sw: u32, dh: u32, dw: u32, pad_top: i32,
        pad_left: i32, dy_off: u32, w_off: u32, b_off: u32,
        dx_off: u32, cblocks: u32, xblocks: u32, total: u32,
        k_lo: u32, k_cnt: u32, cb_lo: u32, cbt: u32,
        iy0: u32, rows: u32, _p0: u32, _p1: u32,
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
pub(crate) fn source() -> String {
    let src = format!(
        "{}\n\n{}\n\n{}",
        DgradParams::wgsl(),
        DgradSpec::wgsl(),
        include_str!("conv2d_dgrad.wgsl")
    );
    if src.contains("Barrier") {
        src
    } else {
        hoist_params(&src, DgradParams::FIELDS)
    }
}
