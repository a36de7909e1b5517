//! Input gradient, depthwise algorithm: the depthwise forward kernel on `dy` with the
//! kernel rotated.

use super::{core, unwindowed, DgradArgs};
use crate::context::Context;
use crate::conv::forward::depthwise::{encode_at, supports};
use crate::conv::table::{always, anywhere, Entry, Reason};
use crate::conv::{refuse, Algorithm};
use crate::error::Result;
use crate::params::Conv2dProblem;

/// The input-gradient entry: stride-1 depthwise convolutions without channel multiplier,
/// as the depthwise forward kernel on `dy` with the kernel rotated.
pub(crate) const INPUT_GRAD: Entry<Conv2dProblem, DgradArgs> = Entry {
    algorithm: Algorithm::Depthwise,
    check,
    prefer: always,
    tune: anywhere,
    encode,
};

const NEEDS: &str = "needs a depthwise convolution without channel multiplier, stride 1, \
                     and a kernel the depthwise kernel runs (up to 7 wide, column dilation 1)";

fn check(ctx: &Context, p: &Conv2dProblem) -> Result<(), Reason> {
    unwindowed(ctx, p)?;
    dgrad_as_forward(&core(p)).map(|_| ()).ok_or(NEEDS.into())
}

fn encode(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    a: &DgradArgs,
) -> Result<()> {
    let q = dgrad_as_forward(p).ok_or_else(|| refuse(Algorithm::Depthwise, NEEDS))?;
    let q = Conv2dProblem {
        has_bias: a.bias.is_some(),
        ..q
    };
    if a.f16 {
        // f16 dy and dx (see `band::input_grad_reads_f16`): the f16 image kernel.
        return crate::conv::forward::depthwise::encode_f16(
            ctx,
            enc,
            &q,
            (&a.dy, a.dy_off),
            &a.w,
            a.bias.as_ref(),
            &a.dx,
        );
    }
    if a.cl != [false; 2] {
        // Channels-last dy and dx (see `band::input_grad_reads_channels_last`).
        return crate::conv::forward::depthwise::encode_nhwc(
            ctx,
            enc,
            &q,
            (&a.dy, a.dy_off),
            &a.w,
            a.bias.as_ref(),
            (&a.dx, 0),
        );
    }
    encode_at(
        ctx,
        enc,
        &q,
        (&a.dy, a.dy_off),
        &a.w,
        a.bias.as_ref(),
        (&a.dx, 0),
    )
}

/// The input gradient of a stride-1 depthwise convolution without channel multiplier is a
/// depthwise convolution of `dy` with the kernel rotated by 180° and the complementary
/// padding `(R-1)*d - pad` (zero padding, possibly negative): that forward problem, if the
/// dedicated kernel can run it.
pub(crate) fn dgrad_as_forward(p: &Conv2dProblem) -> Option<Conv2dProblem> {
    if p.c_per_group() != 1 || p.k_per_group() != 1 {
        return None;
    }
    p.input_gradient_as_forward(false).filter(supports)
}
