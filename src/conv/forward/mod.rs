//! Forward convolution: the algorithm table.
//!
//! | entry | runs | heuristic picks it when |
//! |---|---|---|
//! | [`gemm1x1`] | a GEMM on the input in place (1x1, stride 1, no padding) | always when it runs |
//! | [`depthwise`] | the depthwise kernel (one input channel per group) | groups > 1 |
//! | [`direct`] | the register-blocked direct kernel; windows over large tensors | tiny reductions, few output channels, tensors beyond one binding |
//! | [`implicit_gemm`] | the implicit GEMM on storage images (8-lane subgroups) | >= 8 channels per group, or a reduction (C/g·R·S) >= 32 |
//! | [`implicit_gemm_tiled`] | the workgroup-memory implicit GEMM | GPUs |
//! | [`im2col_gemm`] | im2col into bounded scratch, then a GEMM | otherwise |

pub(crate) mod depthwise;
pub(crate) mod direct;
pub(crate) mod gemm1x1;
pub(crate) mod im2col_gemm;
pub(crate) mod implicit_gemm;
pub(crate) mod implicit_gemm_tiled;

use crate::context::Context;
use crate::conv::launch::ConvBuffers;
use crate::conv::table::{Operation, Table};
use crate::conv::Algorithm;
use crate::error::Result;
use crate::params::Conv2dProblem;

/// The forward table, in the heuristic's order of preference.
pub(crate) static TABLE: Table<Conv2dProblem, ConvBuffers> = Table {
    op: Operation::Forward,
    entries: &[
        gemm1x1::FORWARD,
        depthwise::FORWARD,
        direct::FORWARD,
        implicit_gemm::FORWARD,
        implicit_gemm_tiled::FORWARD,
        im2col_gemm::FORWARD,
    ],
};

/// Records the forward convolution `p` with `algorithm` (`Auto`: the autotuned or
/// heuristic choice); tensors beyond one binding run in bands (`conv::band`).
pub(crate) fn encode(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    bufs: &ConvBuffers,
    algorithm: Algorithm,
) -> Result<()> {
    crate::conv::band::forward(ctx, enc, p, bufs, algorithm)
}

/// Which f16 operands the forward entry of (concrete) `algorithm` reads / writes itself for
/// the whole problem `p`: `(x, y)`. The depthwise image kernel takes both (contiguous);
/// the implicit GEMM reads x (`x_cl`: channels-last, in place) and stores f32 y. Every other
/// entry gets f32 views.
pub(crate) fn reads_f16(
    ctx: &Context,
    p: &Conv2dProblem,
    algorithm: Algorithm,
    x_cl: bool,
) -> (bool, bool) {
    match algorithm {
        Algorithm::Depthwise => {
            let both = !x_cl && depthwise::reads_f16(ctx, p);
            (both, both)
        }
        Algorithm::ImplicitGemm => (implicit_gemm::reads_f16_x(ctx, p, x_cl), false),
        _ => (false, false),
    }
}
