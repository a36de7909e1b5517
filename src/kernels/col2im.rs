//! `col2im`: folds the column-gradient matrix of `im2col` back onto the input, gathered (no
//! atomics).

use crate::gpu::wgsl::{hoist_params, params, spec, ParamStruct, Spec};
use crate::kernels::shared::ConvShape;

params! {
    /// Parameters of `col2im`.
    pub(crate) struct Col2imParams {
        @embed shape: ConvShape;
        dx_off: u32, p0: u32, np: u32, ldp: u32,
        total: u32, _p0: u32,
    }
}

spec! {
    /// Specialisation of `col2im`.
    pub(crate) struct Col2imSpec {
        /// Workgroup size (one invocation per element of dx).
        WG: u32 = 64,
        /// True convolution: the column rows hold the rotated taps (as `im2col` wrote them).
        FLIP: bool = false,
        /// Add to dx (for the second and later pixel ranges of an image).
        ACCUMULATE: bool = false,
        /// Add bias[c] (conv_transpose2d; first pixel range only).
        HAS_BIAS: bool = false,
    }
}

/// The WGSL source of `col2im`.
pub(crate) fn source() -> String {
    let src = format!(
        "{}\n\n{}\n\n{}",
        Col2imParams::wgsl(),
        Col2imSpec::wgsl(),
        include_str!("col2im.wgsl")
    );
    if src.contains("Barrier") {
        src
    } else {
        hoist_params(&src, &Col2imParams::fields())
    }
}
