//! Weight gradient, im2col + GEMM algorithm: a pixel-major column matrix per chunk and a GEMM
//! accumulating into `dw` in a fixed order.

use super::{unwindowed, WgradArgs};
use crate::context::Context;
use crate::conv::forward::gemm1x1::is_pointwise;
use crate::conv::forward::im2col_gemm::col_align;
use crate::conv::launch::{im2col_params, im2col_spec};
use crate::conv::table::{always, anywhere, need, never, Entry, Reason};
use crate::conv::Algorithm;
use crate::error::Result;
use crate::gemm::image::encode_image_sums;
use crate::gemm::job::{encode_job, GemmJob, Mat};
use crate::gemm::GemmVariant;
use crate::gpu::memory::ScratchBuffer;
use crate::gpu::{launch, u32_of, Bind};
use crate::kernels::k;
use crate::kernels::reduce_rows::{ReduceParams, ReduceSpec};
use crate::params::Conv2dProblem;

/// The weight-gradient entry: runs every problem whose tensors fit one binding.
pub(crate) const WEIGHT_GRAD: Entry<Conv2dProblem, WgradArgs> = Entry {
    algorithm: Algorithm::Im2colGemm,
    check,
    prefer: always,
    tune: anywhere,
    encode: wgrad_gemm,
};

/// The 1x1 weight-gradient entry: the same GEMM (the column matrix of a 1x1 stride-1
/// convolution is `x` itself); never timed apart from [`WEIGHT_GRAD`].
pub(crate) const WEIGHT_GRAD_1X1: Entry<Conv2dProblem, WgradArgs> = Entry {
    algorithm: Algorithm::Gemm1x1,
    check: check_1x1,
    prefer: never,
    tune: |_| false,
    encode: wgrad_gemm,
};

/// Tensors within one binding, and one pixel row of the column matrix too.
fn check(ctx: &Context, p: &Conv2dProblem) -> Result<(), Reason> {
    unwindowed(ctx, p)?;
    let align = col_align(ctx);
    let pix_bytes = p.groups * p.reduction_len().div_ceil(align) * align * 4;
    need(
        pix_bytes as u64 <= ctx.limits().max_storage_buffer_binding_size,
        "one pixel row of the column matrix exceeds one storage binding",
    )
}

fn check_1x1(ctx: &Context, p: &Conv2dProblem) -> Result<(), Reason> {
    check(ctx, p)?;
    need(
        is_pointwise(p),
        "needs a 1x1 kernel, stride 1 and no padding",
    )
}

/// `dwᵀ[q, k] = Σ_p colᵀ[p, q] · dy[k, p]`: a pixel-major im2col per image and pixel
/// range, and one GEMM each that accumulates into dw in a fixed order.
fn wgrad_gemm(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    a: &WgradArgs,
) -> Result<()> {
    let (x, dy, dw) = (&a.x, &a.dy, &a.dw);
    let crs = p.reduction_len();
    let (kg, ohw) = (p.k_per_group(), p.oh * p.ow);
    let align = col_align(ctx);
    let ldq = crs.div_ceil(align) * align;
    let budget = ctx
        .scratch_budget()
        .max(4096)
        .min(ctx.limits().max_storage_buffer_binding_size) as usize; // never beyond one binding
    let pix_bytes = p.groups * ldq * 4; // one pixel row of colT, all groups
    let np = (budget / pix_bytes).max(1).min(ohw);
    let spec = im2col_spec(p, true);
    let mut u = im2col_params(p)?;
    u.ldq = u32_of(ldq, "columns")?;
    let x_img = p.c * p.h * p.w;
    let y_img = p.k * ohw;
    // One step: the pixel-major columns of images [n0, n0 + nb), pixels [p0, p0 + cnt) into
    // `col`, then `dst[img] (+)= colT · dy` for each image (a batched GEMM; `dst_so` apart).
    let mut step = |enc: &mut wgpu::CommandEncoder,
                    n0: usize,
                    nb: usize,
                    (p0, cnt): (usize, usize),
                    col: &wgpu::Buffer,
                    (dst, dst_so): (&wgpu::Buffer, usize),
                    accumulate: bool,
                    sums: bool|
     -> Result<bool> {
        let total = nb * p.groups * cnt * ldq.div_ceil(8); // invocations, 8 elements each
        u.shape.n = u32_of(nb, "images")?;
        u.x_off = u32_of(n0 * x_img, "input elements")?;
        u.p0 = u32_of(p0, "pixels")?;
        u.np = u32_of(cnt, "pixels")?;
        u.ldp = u.np;
        u.total = u32_of(total, "column elements")?;
        let binds = [Bind::whole(x), Bind::whole(col)];
        launch::<k::Im2col>(ctx, enc, &spec, &u, &binds, total as u64)?;
        let job = GemmJob {
            m: crs,
            n: kg,
            k: cnt,
            batch_outer: nb,
            batch_inner: p.groups,
            // A[m = q, k = p] = colT[p, q]: K-major, vec4-aligned (ldq).
            a: Mat {
                win: None,
                buf: col,
                off: 0,
                ld: ldq,
                si: cnt * ldq,
                so: p.groups * cnt * ldq,
            },
            a_km: true,
            // B[k = p, n = k_out] = dy[k_out, p]: N-major.
            b: Mat {
                win: None,
                buf: dy,
                off: n0 * y_img + p0,
                ld: ohw,
                si: kg * ohw,
                so: y_img,
            },
            b_kn: false,
            // C[m = q, n = k_out] = dst[k_out, q].
            c: Mat {
                win: None,
                buf: dst,
                off: 0,
                ld: 1,
                si: kg * crs,
                so: dst_so,
            },
            c_col_stride: crs,
            bias: None,
            accumulate,
            epilogue: None,
        };
        // The bias gradient: the column sums of B = dy, per group (db[g * kg + k_out]).
        if let (true, Some(db)) = (sums, &a.db) {
            if let Some(done) = encode_image_sums(ctx, enc, &job, (db, 0, kg), GemmVariant::Auto)? {
                return Ok(done);
            }
        }
        encode_job(ctx, enc, &job, GemmVariant::Auto)?;
        Ok(false)
    };
    // Several whole images per launch when their columns and partial results fit: one
    // batched GEMM writes one partial dw per image, then a fixed-order sum (deterministic).
    let dw_len = p.k * crs;
    let per_image = p.groups * ohw * ldq + dw_len;
    let images = if p.n > 1 {
        (budget / 4 / per_image).min(p.n)
    } else {
        0
    };
    if images >= 2 {
        let col_all = ScratchBuffer::new(
            ctx,
            enc,
            (images * p.groups * ohw * ldq * 4) as u64,
            "wgconv im2col (pixel-major)",
        )?;
        let partial = ScratchBuffer::new(
            ctx,
            enc,
            (images * dw_len * 4) as u64,
            "wgconv partial weight gradients",
        )?;
        let mut n0 = 0;
        while n0 < p.n {
            let nb = images.min(p.n - n0);
            let parts = (&partial.buffer, dw_len);
            step(enc, n0, nb, (0, ohw), &col_all.buffer, parts, false, false)?;
            let rspec = ReduceSpec {
                ACCUMULATE: n0 > 0,
                ..Default::default()
            };
            let r = ReduceParams {
                rows: u32_of(dw_len, "weights")?,
                len: 1,
                batch: u32_of(nb, "images")?,
                bstride: u32_of(dw_len, "weights")?,
                total: u32_of(dw_len, "weights")?,
                ..Default::default()
            };
            let binds = [Bind::whole(&partial.buffer), Bind::whole(dw)];
            launch::<k::ReduceRows>(ctx, enc, &rspec, &r, &binds, dw_len as u64)?;
            n0 += nb;
        }
        return Ok(());
    }
    // Else image by image, in ranges of pixels, accumulating into dw in order.
    let col = ScratchBuffer::new(
        ctx,
        enc,
        (np * pix_bytes) as u64,
        "wgconv im2col (pixel-major)",
    )?;
    // The bias gradient with every step's GEMM while each one can (a step that cannot
    // leaves partial sums, which the separate pass then overwrites).
    let mut first = true;
    let mut sums = a.db.is_some() && a.cl == [false; 2];
    for n in 0..p.n {
        let mut p0 = 0;
        while p0 < ohw {
            let cnt = np.min(ohw - p0);
            sums = step(enc, n, 1, (p0, cnt), &col.buffer, (dw, 0), !first, sums)?;
            first = false;
            p0 += cnt;
        }
    }
    a.db_done.set(sums);
    Ok(())
}
