//! `conv2d_dgrad_phase_image`: the input gradient of a strided convolution for CPU-like
//! adapters, one stride-1 correlation per phase, dy and the phase weights read from storage
//! images (the weights are packed by `dgrad_phase_weights`).

use crate::gpu::wgsl::{hoist_params, params, spec, ParamStruct, Spec};

params! {
    /// Parameters of `conv2d_dgrad_phase_image` (one dispatch per phase).
    pub(crate) struct PhaseParams {
        c: u32, h: u32, w: u32, k: u32,
        oh: u32, ow: u32, cg: u32, kg: u32,
        cb: u32, sh: u32, sw: u32, py: u32,
        px: u32, a_n: u32, b_n: u32, bblocks: u32,
        rj: u32, pty: i32, qoff: i32, owq: u32,
        rows_shift: u32, wbase: u32, total: u32, dy_rows_mask: u32,
    }
}

spec! {
    /// Specialisation of `conv2d_dgrad_phase_image`.
    pub(crate) struct PhaseSpec {
        /// Workgroup size.
        WG: u32 = 64,
        /// Sub-kernel width (0..=8).
        SL: u32 = 4 in [1, 2, 3, 4, 5, 6, 7, 8],
        /// The sliding window's offset in its first texel (0..=3): (-PLX) mod 4.
        SHIFT: u32 = 0 in [0, 1, 2, 3],
        /// Add bias[channel] (the transposed convolution).
        HAS_BIAS: bool = false,
    }
}

/// The WGSL source of `conv2d_dgrad_phase_image`.
pub(crate) fn source() -> String {
    let src = format!(
        "{}\n\n{}\n\n{}",
        PhaseParams::wgsl(),
        PhaseSpec::wgsl(),
        include_str!("conv2d_dgrad_phase_image.wgsl")
    );
    if src.contains("Barrier") {
        src
    } else {
        hoist_params(&src, &PhaseParams::fields())
    }
}
