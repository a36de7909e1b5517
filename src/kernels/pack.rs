//! `pack`: packs a (batched) matrix into the K-major, zero-padded layout the GEMM kernels
//! read.

use crate::gpu::wgsl::{hoist_params, params, spec, Elem, ParamStruct, Spec};

params! {
    /// Parameters of `pack`.
    pub(crate) struct PackParams {
        rows: u32, cols: u32, ld_dst: u32, ld_src: u32,
        src_off: u32, dst_off: u32, src_bs: u32, dst_bs: u32,
        batch: u32, total: u32, _p0: u32, _p1: u32,
    }
}

spec! {
    /// Specialisation of `pack`.
    pub(crate) struct PackSpec {
        /// Workgroup size.
        WG: u32 = 64,
        /// Source element (r, col) at `col * ld_src + r` instead of `r * ld_src + col`.
        TRANSPOSE: bool = false,
    }
}

/// The WGSL source of `pack`.
/// Element type and arithmetic `T = elem` (the f16 twin runs `Precision::F16Accumulate`).
pub(crate) fn source(elem: Elem) -> String {
    let src = format!(
        "{}\n{}\n\n{}\n\n{}",
        elem.header(),
        PackParams::wgsl(),
        PackSpec::wgsl(),
        include_str!("pack.wgsl")
    );
    if src.contains("Barrier") {
        src
    } else {
        hoist_params(&src, &PackParams::fields())
    }
}
