//! `permute_kc`: swaps the first two axes of a grouped weight within each group.

use crate::gpu::wgsl::{hoist_params, params, spec, ParamStruct, Spec};

params! {
    /// Parameters of `permute_kc`.
    pub(crate) struct PermuteParams {
        groups: u32, kg: u32, cg: u32, rs: u32,
        total: u32, _p0: u32, _p1: u32, _p2: u32,
    }
}

spec! {
    /// Specialisation of `permute_kc`.
    pub(crate) struct PermuteSpec {
        /// Workgroup size.
        WG: u32 = 64,
    }
}

/// The WGSL source of `permute_kc`.
pub(crate) fn source() -> String {
    let src = format!(
        "{}\n\n{}\n\n{}",
        PermuteParams::wgsl(),
        PermuteSpec::wgsl(),
        include_str!("permute_kc.wgsl")
    );
    if src.contains("Barrier") {
        src
    } else {
        hoist_params(&src, &PermuteParams::fields())
    }
}
