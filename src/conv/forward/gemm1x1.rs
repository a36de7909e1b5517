//! Forward, 1x1 algorithm: a GEMM reading the input in place.

use super::im2col_gemm::pack_weights;
use crate::context::Context;
use crate::conv::launch::{fit_one_binding, ConvBuffers};
use crate::conv::table::{always, anywhere, need, Entry, Reason};
use crate::conv::Algorithm;
use crate::error::Result;
use crate::gemm::auto_for_b;
use crate::gemm::job::{encode_job_fused, GemmJob, Mat};
use crate::params::Conv2dProblem;

/// The forward entry: 1x1 convolutions with stride 1 and no padding.
pub(crate) const FORWARD: Entry<Conv2dProblem, ConvBuffers> = Entry {
    algorithm: Algorithm::Gemm1x1,
    check,
    prefer: always,
    tune: anywhere,
    encode,
};

/// Runs `p` when it is a 1x1 convolution with stride 1 and no padding whose tensors fit
/// one binding.
pub(crate) fn check(ctx: &Context, p: &Conv2dProblem) -> Result<(), Reason> {
    fit_one_binding(ctx, p)?;
    need(
        is_pointwise(p),
        "needs a 1x1 kernel, stride 1 and no padding",
    )
}

/// Is this convolution a plain GEMM on the input (1x1 kernel, stride 1, no padding)?
pub(crate) fn is_pointwise(p: &Conv2dProblem) -> bool {
    p.r == 1 && p.s == 1 && p.stride == [1, 1] && p.pad == [0, 0, 0, 0]
}

/// 1x1 convolution: `y[n, k, :] = W_g · x[n, group(k), :]`, reading x in place.
fn encode(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    bufs: &ConvBuffers,
) -> Result<()> {
    let (cg, kg, hw) = (p.c_per_group(), p.k_per_group(), p.h * p.w);
    let wp = pack_weights(ctx, enc, p, &bufs.w)?;
    // The vec4 kernels need rows of x aligned to 4 floats (see `auto_for_b`).
    let variant = auto_for_b(ctx, hw % 4 == 0);
    let job = GemmJob {
        m: kg,
        n: hw,
        k: cg,
        batch_outer: p.n,
        batch_inner: p.groups,
        a: wp.mat(),
        a_km: true,
        b: Mat {
            win: None,
            buf: &bufs.x,
            off: 0,
            ld: hw,
            si: cg * hw,
            so: p.c * hw,
        },
        b_kn: true,
        c: Mat {
            win: None,
            buf: &bufs.y,
            off: 0,
            ld: hw,
            si: kg * hw,
            so: p.k * hw,
        },
        c_col_stride: 1,
        bias: bufs.b.as_ref().map(|b| (b, 0, kg, 1)),
        accumulate: false,
        epilogue: bufs.epilogue.as_ref().map(|e| (e.ep, e.r.as_ref())),
    };
    // The image GEMM fuses the epilogue where it can; else the caller's pass applies it.
    if encode_job_fused(ctx, enc, &job, variant)? {
        bufs.mark_epilogue_applied();
    }
    Ok(())
}
