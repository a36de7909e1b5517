//! `dgrad_phase_weights`: packs the rotated sub-kernel of one phase of
//! `conv2d_dgrad_phase_image` as vec4 texels over 4 input channels.

use crate::gpu::wgsl::{hoist_params, params, spec, ParamStruct, Spec};

params! {
    /// Parameters of `dgrad_phase_weights`.
    pub(crate) struct PhaseWeightsParams {
        kg: u32, cg: u32, cb: u32, groups: u32,
        r: u32, s: u32, rj: u32, sl: u32,
        r0: u32, s0: u32, sh: u32, sw: u32,
        base: u32, total: u32, _p0: u32, _p1: u32,
    }
}

spec! {
    /// Specialisation of `dgrad_phase_weights`.
    pub(crate) struct PhaseWeightsSpec {
        /// Workgroup size.
        WG: u32 = 64,
        /// The forward is a true convolution: r and s are mirrored.
        FLIP: bool = false,
    }
}

/// The WGSL source of `dgrad_phase_weights`.
pub(crate) fn source() -> String {
    let src = format!(
        "{}\n\n{}\n\n{}",
        PhaseWeightsParams::wgsl(),
        PhaseWeightsSpec::wgsl(),
        include_str!("dgrad_phase_weights.wgsl")
    );
    if src.contains("Barrier") {
        src
    } else {
        hoist_params(&src, &PhaseWeightsParams::fields())
    }
}
