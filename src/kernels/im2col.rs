//! `im2col`: unfolds the input patches of a convolution into the column matrix of the GEMM
//! (K-major, or pixel-major for the weight gradient).

use crate::gpu::wgsl::{hoist_params, params, spec, Elem, ParamStruct, Spec, SRC_INDEX};
use crate::kernels::shared::ConvShape;

params! {
    /// Parameters of `im2col`.
    pub(crate) struct Im2colParams {
        @embed shape: ConvShape;
        x_off: u32, p0: u32, np: u32, ldp: u32,
        total: u32, ldq: u32,
    }
}

spec! {
    /// Specialisation of `im2col`.
    pub(crate) struct Im2colSpec {
        /// Workgroup size.
        WG: u32 = 64,
        /// Padding mode of x: 0 zeros, 1 reflect, 2 replicate, 3 circular (`src_index`).
        PAD_MODE: u32 = 0 in [0, 1, 2, 3],
        /// True convolution: row q reads kernel tap (R-1-rr, S-1-ss), so the weights are used
        /// as stored.
        FLIP: bool = false,
        /// Pixel-major layout, for the weight gradient.
        TRANSPOSED: bool = false,
    }
}

/// The WGSL source of `im2col`, element type `T = elem` (the f16 twin feeds the f16 GEMMs
/// of `Precision::F16Accumulate`).
pub(crate) fn source(elem: Elem) -> String {
    let src = format!(
        "{}\n{}\n\n{}\n\n{}\n\n{}",
        elem.header(),
        Im2colParams::wgsl(),
        Im2colSpec::wgsl(),
        SRC_INDEX,
        include_str!("im2col.wgsl")
    );
    if src.contains("Barrier") {
        src
    } else {
        hoist_params(&src, &Im2colParams::fields())
    }
}
