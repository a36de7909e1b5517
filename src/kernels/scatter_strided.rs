//! `scatter_strided`: the input gradient of a strided 1x1 convolution, scattered from the
//! gradient of its sampled pixels.

use crate::gpu::wgsl::{hoist_params, params, spec, ParamStruct, Spec};

params! {
    /// Parameters of `scatter_strided`.
    pub(crate) struct ScatterParams {
        planes: u32, h: u32, w: u32, oh: u32,
        ow: u32, sh: u32, sw: u32, top: u32,
        left: u32, c: u32, total: u32, t0: u32,
    }
}

spec! {
    /// Specialisation of `scatter_strided`.
    pub(crate) struct ScatterSpec {
        /// Workgroup size.
        WG: u32 = 64,
        /// Add bias[plane % c] to every element (the transposed convolution).
        HAS_BIAS: bool = false,
        /// Channels-last source and destination: one invocation per pixel of dst and 16
        /// channels (`total` = pixels x ceil(C / 16)).
        NHWC: bool = false,
    }
}

/// The WGSL source of `scatter_strided`.
pub(crate) fn source() -> String {
    let src = format!(
        "{}\n\n{}\n\n{}",
        ScatterParams::wgsl(),
        ScatterSpec::wgsl(),
        include_str!("scatter_strided.wgsl")
    );
    if src.contains("Barrier") {
        src
    } else {
        hoist_params(&src, &ScatterParams::fields())
    }
}
