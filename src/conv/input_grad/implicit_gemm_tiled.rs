//! Input gradient, tiled implicit-GEMM algorithm (the GPU variant): stride-1 problems as
//! the workgroup-memory implicit GEMM on `dy` with the kernel rotated.

use super::{core, unwindowed, DgradArgs};
use crate::context::Context;
use crate::conv::forward::implicit_gemm_tiled::encode_tiled_at;
use crate::conv::implicit_image::WeightLayout;
use crate::conv::launch::ConvBuffers;
use crate::conv::table::{gpus_only, never, Entry, Reason};
use crate::conv::{refuse, Algorithm};
use crate::error::Result;
use crate::params::Conv2dProblem;

/// The input-gradient entry: stride 1 only. The heuristic never picks it (im2col + GEMM is
/// the measured default); the tuner times it on GPUs.
pub(crate) const INPUT_GRAD: Entry<Conv2dProblem, DgradArgs> = Entry {
    algorithm: Algorithm::ImplicitGemmTiled,
    check,
    prefer: never,
    tune: gpus_only,
    encode,
};

const NEEDS: &str = "needs stride 1 (its input gradient is then a convolution of dy)";

fn check(ctx: &Context, p: &Conv2dProblem) -> Result<(), Reason> {
    unwindowed(ctx, p)?;
    core(p)
        .input_gradient_as_forward(false)
        .map(|_| ())
        .ok_or(NEEDS.into())
}

fn encode(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    a: &DgradArgs,
) -> Result<()> {
    let q = p
        .input_gradient_as_forward(a.bias.is_some())
        .ok_or_else(|| refuse(Algorithm::ImplicitGemmTiled, NEEDS))?;
    let bufs = ConvBuffers::new(&a.dy, &a.w, a.bias.as_ref(), &a.dx);
    encode_tiled_at(
        ctx,
        enc,
        &q,
        &bufs,
        a.dy_off,
        WeightLayout::input_gradient(p),
    )
}
