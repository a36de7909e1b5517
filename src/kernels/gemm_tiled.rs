//! `gemm_tiled`: GEMM for GPUs with workgroup-memory tiles (parameters: [`GemmParams`]).

use super::gemm_reg::GemmParams;
use crate::gpu::wgsl::{hoist_params, spec, Elem, ParamStruct, Spec};

spec! {
    /// Specialisation of `gemm_tiled`. WG, TM and TN are fixed by the tiling (16x16
    /// invocations, 64x64 tile, K step 16); the kernel does not read TM and TN.
    pub(crate) struct GemmTiledSpec {
        /// Invocations per workgroup: 256 (16x16).
        WG: u32 = 256,
        /// Rows of C per workgroup: 64.
        TM: u32 = 64,
        /// Columns of C per workgroup: 64.
        TN: u32 = 64,
        /// 0: no bias, 1: `bias[m]` per row, 2: `bias[n]` per column.
        BIAS_MODE: u32 = 0 in [0, 1, 2],
        /// Add to the existing contents of C.
        ACCUMULATE: bool = false,
    }
}

/// The WGSL source of `gemm_tiled`, element type and arithmetic `T = elem` (the f16 twin
/// runs `Precision::F16Accumulate`; bias, accumulation into C and rounding in f32).
pub(crate) fn source(elem: Elem) -> String {
    let src = format!(
        "{}\n{}\n\n{}\n\n{}",
        elem.header(),
        GemmParams::wgsl(),
        GemmTiledSpec::wgsl(),
        include_str!("gemm_tiled.wgsl")
    );
    // Never hoisted: the kernel has workgroup barriers.
    if src.contains("Barrier") {
        src
    } else {
        hoist_params(&src, &GemmParams::fields())
    }
}
