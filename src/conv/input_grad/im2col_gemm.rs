//! Input gradient, im2col + GEMM algorithm: the forward im2col GEMM on `dy` with permuted
//! weights (stride 1), else a GEMM into a column-gradient matrix folded back by `col2im`.

use super::{core, unwindowed, DgradArgs};
use crate::context::Context;
use crate::conv::forward::im2col_gemm::{columns_fit, encode_im2col_at};
use crate::conv::launch::conv_shape;
use crate::conv::launch::ConvBuffers;
use crate::conv::table::{always, anywhere, Entry, Reason};
use crate::conv::Algorithm;
use crate::error::Result;
use crate::gemm::auto_for_b;
use crate::gemm::job::{encode_job, pack, vec4_ready, GemmJob, Mat};
use crate::gpu::memory::ScratchBuffer;
use crate::gpu::{launch, u32_of, Bind};
use crate::kernels::col2im::{Col2imParams, Col2imSpec};
use crate::kernels::k;
use crate::kernels::permute_kc::{PermuteParams, PermuteSpec};
use crate::params::Conv2dProblem;

/// The input-gradient entry: runs every problem whose tensors fit one binding.
pub(crate) const INPUT_GRAD: Entry<Conv2dProblem, DgradArgs> = Entry {
    algorithm: Algorithm::Im2colGemm,
    check,
    prefer: always,
    tune: anywhere,
    encode,
};

fn check(ctx: &Context, p: &Conv2dProblem) -> Result<(), Reason> {
    unwindowed(ctx, p)?;
    // The column matrix: of `dy` for the forward on it, else the column gradient (of the
    // zero-padded problem the entry computes).
    let q = core(p);
    columns_fit(ctx, &q.input_gradient_as_forward(false).unwrap_or(q))
}

/// Stride 1: the forward im2col + GEMM on `dy`; other strides: a GEMM into a column
/// gradient, folded back by `col2im`.
fn encode(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    a: &DgradArgs,
) -> Result<()> {
    match p.input_gradient_as_forward(a.bias.is_some()) {
        Some(q) => dgrad_as_forward(ctx, enc, &q, p, a),
        None => dgrad_col2im(ctx, enc, p, a),
    }
}

/// Runs the stride-1 input gradient through the forward im2col + GEMM path.
fn dgrad_as_forward(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    q: &Conv2dProblem,
    p: &Conv2dProblem,
    a: &DgradArgs,
) -> Result<()> {
    let (dy, dy_off, w, bias, dx) = (&a.dy, a.dy_off, &a.w, a.bias.as_ref(), &a.dx);
    let rs = p.r * p.s;
    let len = p.k * p.c_per_group() * rs;
    let wt = ScratchBuffer::new(ctx, enc, (len * 4) as u64, "wgconv permuted weights")?;
    let u = PermuteParams {
        groups: u32_of(p.groups, "groups")?,
        kg: u32_of(p.k_per_group(), "channels")?,
        cg: u32_of(p.c_per_group(), "channels")?,
        rs: u32_of(rs, "taps")?,
        total: u32_of(len, "weights")?,
        ..Default::default()
    };
    launch::<k::PermuteKc>(
        ctx,
        enc,
        &PermuteSpec::default(),
        &u,
        &[Bind::whole(w), Bind::whole(&wt.buffer)],
        len as u64,
    )?;
    let bufs = ConvBuffers::new(dy, &wt.buffer, bias, dx);
    encode_im2col_at(ctx, enc, q, &bufs, dy_off)
}

/// GEMM into a column-gradient matrix, then a gathered col2im; split over images and
/// output-pixel ranges within the scratch budget.
fn dgrad_col2im(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    a: &DgradArgs,
) -> Result<()> {
    let (dy, dy_off, w, bias, dx) = (&a.dy, a.dy_off, &a.w, a.bias.as_ref(), &a.dx);
    let crs = p.reduction_len();
    let (kg, ohw) = (p.k_per_group(), p.oh * p.ow);
    let full_crs = crs * p.groups;
    let budget = ctx
        .scratch_budget()
        .max(4096)
        .min(ctx.limits().max_storage_buffer_binding_size) as usize; // never beyond one binding
    let row_bytes = full_crs * 4;
    let per_image = row_bytes * ohw.div_ceil(4) * 4;
    let (images, np) = if per_image <= budget {
        ((budget / per_image).clamp(1, p.n), ohw)
    } else {
        (1, ((budget / row_bytes) / 4 * 4).max(4).min(ohw))
    };
    let ldp = np.div_ceil(4) * 4;
    let dcol = ScratchBuffer::new(
        ctx,
        enc,
        (images * full_crs * ldp * 4) as u64,
        "wgconv column gradient",
    )?;
    // A[m = q, k] = w[k, q]: K-major (leading dimension crs); packed once if unaligned.
    let wmat = Mat {
        win: None,
        buf: w,
        off: 0,
        ld: crs,
        si: kg * crs,
        so: 0,
    };
    let wpack;
    let a = if vec4_ready(&wmat, true) {
        wmat
    } else {
        wpack = pack(ctx, enc, &wmat, true, kg, crs, 1, p.groups)?;
        wpack.mat()
    };
    let y_img = p.k * ohw;
    let x_img = p.c * p.h * p.w;
    let mut n0 = 0;
    while n0 < p.n {
        let nb = images.min(p.n - n0);
        let mut p0 = 0;
        while p0 < ohw {
            let cnt = np.min(ohw - p0);
            let ld = cnt.div_ceil(4) * 4;
            let off = dy_off + n0 * y_img + p0;
            let job = GemmJob {
                m: crs,
                n: cnt,
                k: kg,
                batch_outer: nb,
                batch_inner: p.groups,
                a,
                a_km: true,
                b: Mat {
                    win: None,
                    buf: dy,
                    off,
                    ld: ohw,
                    si: kg * ohw,
                    so: y_img,
                },
                b_kn: true,
                c: Mat {
                    win: None,
                    buf: &dcol.buffer,
                    off: 0,
                    ld,
                    si: crs * ld,
                    so: full_crs * ld,
                },
                c_col_stride: 1,
                bias: None,
                accumulate: false,
                epilogue: None,
            };
            let variant = auto_for_b(ctx, ohw % 4 == 0 && off.is_multiple_of(4));
            encode_job(ctx, enc, &job, variant)?;
            let first = p0 == 0;
            let spec = Col2imSpec {
                FLIP: p.flip,
                ACCUMULATE: !first,
                HAS_BIAS: first && bias.is_some(),
                ..Default::default()
            };
            let total = nb * x_img;
            let mut u = Col2imParams {
                shape: conv_shape(p)?,
                dx_off: u32_of(n0 * x_img, "elements")?,
                p0: u32_of(p0, "pixels")?,
                np: u32_of(cnt, "pixels")?,
                ldp: u32_of(ld, "pixels")?,
                total: u32_of(total, "elements")?,
                ..Default::default()
            };
            u.shape.n = u32_of(nb, "images")?;
            launch::<k::Col2im>(
                ctx,
                enc,
                &spec,
                &u,
                &[
                    Bind::whole(&dcol.buffer),
                    Bind::whole(bias.unwrap_or(w)),
                    Bind::whole(dx),
                ],
                total as u64,
            )?;
            p0 += cnt;
        }
        n0 += nb;
    }
    Ok(())
}
