//! Input gradient, 1x1 algorithm: a GEMM of the weights with `dy` in place.

use super::{core, unwindowed, DgradArgs};
use crate::context::Context;
use crate::conv::forward::gemm1x1::is_pointwise;
use crate::conv::table::{always, anywhere, need, Entry, Reason};
use crate::conv::Algorithm;
use crate::error::Result;
use crate::gemm::auto_for_b;
use crate::gemm::job::{encode_job, GemmJob, Mat};
use crate::params::Conv2dProblem;

/// The input-gradient entry: 1x1 kernels with stride 1 (after the padding fold).
pub(crate) const INPUT_GRAD: Entry<Conv2dProblem, DgradArgs> = Entry {
    algorithm: Algorithm::Gemm1x1,
    check,
    prefer: always,
    tune: anywhere,
    encode: dgrad_pointwise,
};

fn check(ctx: &Context, p: &Conv2dProblem) -> Result<(), Reason> {
    unwindowed(ctx, p)?;
    need(is_pointwise(&core(p)), "needs a 1x1 kernel and stride 1")
}

/// 1x1, stride 1, no padding: `dx[n, g] = W_gᵀ · dy[n, g]`, one GEMM.
fn dgrad_pointwise(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    a: &DgradArgs,
) -> Result<()> {
    let (dy, dy_off, w, bias, dx) = (&a.dy, a.dy_off, &a.w, a.bias.as_ref(), &a.dx);
    let (cg, kg, hw) = (p.c_per_group(), p.k_per_group(), p.h * p.w);
    let variant = auto_for_b(ctx, hw % 4 == 0 && dy_off.is_multiple_of(4));
    let job = GemmJob {
        m: cg,
        n: hw,
        k: kg,
        batch_outer: p.n,
        batch_inner: p.groups,
        // A[m = c, k] = w[k, c]: K-major with leading dimension cg.
        a: Mat {
            win: None,
            buf: w,
            off: 0,
            ld: cg,
            si: kg * cg,
            so: 0,
        },
        a_km: true,
        b: Mat {
            win: None,
            buf: dy,
            off: dy_off,
            ld: hw,
            si: kg * hw,
            so: p.k * hw,
        },
        b_kn: true,
        c: Mat {
            win: None,
            buf: dx,
            off: 0,
            ld: hw,
            si: cg * hw,
            so: p.c * hw,
        },
        c_col_stride: 1,
        bias: bias.map(|b| (b, 0, cg, 1)),
        accumulate: false,
        epilogue: None,
    };
    encode_job(ctx, enc, &job, variant)
}
