//! `col2im`: folds the column-gradient matrix of `im2col` back onto the input, gathered (no
//! atomics).

use crate::gpu::wgsl::{hoist_params, params, spec, ParamStruct, Spec};

params! {
    /// Parameters of `col2im`.
    pub(crate) struct Col2imParams {
        n: u32, c: u32, h: u32, w: u32,
        cg: u32, groups: u32, r: u32, s: u32,
        oh: u32, ow: u32, sh: u32, sw: u32,
        dh: u32, dw: u32, pad_top: i32, pad_left: i32,
        dx_off: u32, p0: u32, np: u32, ldp: u32,
        total: u32, _p0: u32, _p1: u32, _p2: u32,
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
        hoist_params(&src, Col2imParams::FIELDS)
    }
}

/// Test support for the hand-written kernels: [`same_program`] after sorting the parameter
/// loads at the top of `main` (`    p_f = P.f;`) in both sources. Some hand-written files were
/// hoisted once and edited afterwards, so they load the fields in another order than
/// `hoist_params` (order of first use). The loads copy a read-only buffer into distinct
/// private variables, so their order does not change the program.
///
/// [`same_program`]: crate::kernels::shared::same_program
#[cfg(test)]
pub(crate) fn same_program_up_to_load_order(new: &str, old: &str) -> Result<(), String> {
    fn sort_loads(src: &str) -> String {
        let is_load = |l: &str| l.starts_with("    p_") && l.contains(" = P.");
        let mut lines: Vec<&str> = src.lines().collect();
        if let Some(a) = lines.iter().position(|l| is_load(l)) {
            let b = lines[a..]
                .iter()
                .position(|l| !is_load(l))
                .map_or(lines.len(), |e| a + e);
            lines[a..b].sort_unstable();
        }
        lines.join("\n")
    }
    crate::kernels::shared::same_program(&sort_loads(new), &sort_loads(old))
}

#[cfg(test)]
mod tests {
    #[test]
    fn same_program_as_the_hand_written_shader() {
        let old = include_str!("../../shaders/col2im.wgsl");
        // The file loads `sh` and `sw` earlier than their first use.
        super::same_program_up_to_load_order(&super::source(), old).unwrap();
    }
}
