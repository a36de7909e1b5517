//! `pad_fold`: the adjoint of reflect / replicate / circular padding (folds the gradient of
//! a padded input back onto the input).

use crate::gpu::wgsl::{hoist_params, params, spec, Elem, ParamStruct, Spec};

params! {
    /// Parameters of `pad_fold`.
    pub(crate) struct PadFoldParams {
        planes: u32, h: u32, w: u32, hp: u32,
        wp: u32, top: u32, left: u32, bottom: u32,
        right: u32, total: u32, dst_off: u32, _p1: u32,
    }
}

spec! {
    /// Specialisation of `pad_fold`.
    pub(crate) struct PadFoldSpec {
        /// Workgroup size.
        WG: u32 = 64,
        /// 1 reflect, 2 replicate, 3 circular.
        PAD_MODE: u32 = 1 in [1, 2, 3],
    }
}

/// The WGSL source of `pad_fold`.
/// Element type and arithmetic `T = elem` (the f16 twin runs `Precision::F16Accumulate`).
pub(crate) fn source(elem: Elem) -> String {
    let src = format!(
        "{}\n{}\n\n{}\n\n{}",
        elem.header(),
        PadFoldParams::wgsl(),
        PadFoldSpec::wgsl(),
        include_str!("pad_fold.wgsl")
    );
    if src.contains("Barrier") {
        src
    } else {
        hoist_params(&src, &PadFoldParams::fields())
    }
}
