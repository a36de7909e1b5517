//! Forward, im2col + GEMM algorithm: patches unfolded into a bounded column matrix, then
//! one GEMM per group.

use crate::context::Context;
use crate::conv::launch::{fit_one_binding, im2col_params, im2col_spec, ConvBuffers};
use crate::conv::table::{always, anywhere, need, Entry, Reason};
use crate::conv::Algorithm;
use crate::error::Result;
use crate::gemm::job::{encode_job, encode_job_f16, pack, pack_f16, GemmJob, Mat, Packed};
use crate::gemm::GemmVariant;
use crate::gpu::memory::ScratchBuffer;
use crate::gpu::{launch, u32_of, Bind};
use crate::kernels::k;
use crate::params::Conv2dProblem;

/// The forward entry: runs every problem whose tensors fit one binding.
pub(crate) const FORWARD: Entry<Conv2dProblem, ConvBuffers> = Entry {
    algorithm: Algorithm::Im2colGemm,
    check,
    prefer: always,
    tune: anywhere,
    encode: encode_im2col,
};

/// Runs every problem whose tensors, and 4 pixels of its column matrix, fit one storage
/// binding.
pub(crate) fn check(ctx: &Context, p: &Conv2dProblem) -> Result<(), Reason> {
    fit_one_binding(ctx, p)?;
    columns_fit(ctx, p)
}

/// `Ok` when 4 pixel columns (the least a column matrix is split into: its rows are
/// vec4-aligned) of all the reduction rows of `p`'s groups fit one storage binding; only a
/// lowered binding limit comes near this.
pub(crate) fn columns_fit(ctx: &Context, p: &Conv2dProblem) -> Result<(), Reason> {
    let bytes = (p.reduction_len() as u64)
        .saturating_mul(p.groups as u64)
        .saturating_mul(16);
    need(
        bytes <= ctx.limits().max_storage_buffer_binding_size,
        "4 pixels of the column matrix exceed one storage binding",
    )
}

/// Weights `[K, C/g, R, S]` packed once per call as the K-major A operand `[CRS_g, Kg]`
/// of every group.
pub(crate) fn pack_weights(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    w: &wgpu::Buffer,
) -> Result<Packed> {
    pack_weights_of(ctx, enc, p, w, false)
}

/// [`pack_weights`] of f32 weights, or of f16 ones (`f16`).
fn pack_weights_of(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    w: &wgpu::Buffer,
    f16: bool,
) -> Result<Packed> {
    let crs = p.reduction_len();
    let kg = p.k_per_group();
    let wmat = Mat {
        win: None,
        buf: w,
        off: 0,
        ld: crs,
        si: kg * crs,
        so: 0,
    };
    if f16 {
        pack_f16(ctx, enc, &wmat, false, (crs, kg, 1, p.groups))
    } else {
        pack(ctx, enc, &wmat, false, crs, kg, 1, p.groups)
    }
}

/// Row alignment (in floats) of column matrices: 64 when the GEMM runs on storage images,
/// whose K-major operands with 64-float rows are copied into the image instead of packed.
pub(crate) fn col_align(ctx: &Context) -> usize {
    if GemmVariant::Auto.resolve(ctx) == GemmVariant::Image {
        64
    } else {
        4
    }
}

/// im2col + GEMM. The column buffer never exceeds the context's scratch budget nor the
/// storage-binding limit: the work is split over images and ranges of output pixels.
pub(crate) fn encode_im2col(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    bufs: &ConvBuffers,
) -> Result<()> {
    encode_im2col_at(ctx, enc, p, bufs, 0)
}

/// [`encode_im2col`] reading x from element offset `x_base`.
pub(crate) fn encode_im2col_at(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    bufs: &ConvBuffers,
    x_base: usize,
) -> Result<()> {
    encode_im2col_of(ctx, enc, p, bufs, x_base, false)
}

/// The forward im2col GEMM with f16 arithmetic (`Precision::F16Accumulate`): every buffer
/// of `bufs` holds f16 elements within one binding; `im2col_f16` fills f16 columns and the
/// GEMM's f16 twin multiplies them (bias in f32 at its store; no epilogue).
pub(crate) fn encode_im2col_f16(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    bufs: &ConvBuffers,
) -> Result<()> {
    encode_im2col_of(ctx, enc, p, bufs, 0, true)
}

/// [`encode_im2col_at`] of f32 buffers, or of f16 ones with f16 arithmetic (`f16`; the
/// column scratch is sized for f32, twice what f16 columns need).
fn encode_im2col_of(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    bufs: &ConvBuffers,
    x_base: usize,
    f16: bool,
) -> Result<()> {
    let crs = p.reduction_len();
    let (kg, ohw) = (p.k_per_group(), p.oh * p.ow);
    let full_crs = crs * p.groups; // rows of one image's column matrix (all groups)
    let limits = ctx.limits();
    let budget = ctx
        .scratch_budget()
        .max(4096)
        .min(limits.max_storage_buffer_binding_size) as usize; // never beyond one binding
    let row_bytes = full_crs * 4; // one pixel column of one image
                                  // Rows of the column matrix are aligned for the GEMM (64 floats: copied, not packed, into
                                  // the image GEMM's operand) unless one aligned block of pixels exceeds the budget (a
                                  // lowered binding limit): then 4, and the GEMM packs it.
                                  // The f16 GEMMs are the register and tiled kernels: vec4 alignment suffices.
    let align = match if f16 { 4 } else { col_align(ctx) } {
        a if row_bytes * a <= budget => a,
        _ => 4,
    };
    // Column blocks hold whole multiples of `align` pixels (rows are padded to it), so the
    // padded block, not the pixel count, must fit the budget.
    let per_image = row_bytes * ohw.div_ceil(align) * align;
    let (images, np) = if per_image <= budget {
        ((budget / per_image).clamp(1, p.n), ohw)
    } else {
        (
            1,
            ((budget / row_bytes) / align * align).max(align).min(ohw),
        )
    };
    let ldp = np.div_ceil(align) * align;
    let col_bytes = (images * full_crs * ldp * 4) as u64;
    let col = ScratchBuffer::new(ctx, enc, col_bytes, "wgconv im2col columns")?;
    // Orientation: output channels as GEMM rows (weights packed once), or pixels as rows
    // when a group has few output channels (a short M side starves the row tiles).
    let pixel_major = kg < 64;
    let wp = if pixel_major {
        None
    } else {
        Some(pack_weights_of(ctx, enc, p, &bufs.w, f16)?)
    };
    let spec = im2col_spec(p, false);
    let mut u = im2col_params(p)?;
    let x_img = p.c * p.h * p.w;
    let y_img = p.k * ohw;
    let mut n0 = 0;
    while n0 < p.n {
        let nb = images.min(p.n - n0);
        let mut p0 = 0;
        while p0 < ohw {
            let cnt = np.min(ohw - p0);
            let ld = cnt.div_ceil(align) * align;
            // im2col: one invocation per 8 elements of a row.
            let total = nb * full_crs * ld.div_ceil(8);
            u.shape.n = u32_of(nb, "images")?;
            u.x_off = u32_of(x_base + n0 * x_img, "input elements")?;
            u.p0 = u32_of(p0, "pixels")?;
            u.np = u32_of(cnt, "pixels")?;
            u.ldp = u32_of(ld, "pixels")?;
            u.total = u32_of(total, "column elements")?;
            let binds = [Bind::whole(&bufs.x), Bind::whole(&col.buffer)];
            if f16 {
                launch::<k::Im2colF16>(ctx, enc, &spec, &u, &binds, total as u64)?;
            } else {
                launch::<k::Im2col>(ctx, enc, &spec, &u, &binds, total as u64)?;
            }
            let col_mat = Mat {
                win: None,
                buf: &col.buffer,
                off: 0,
                ld,
                si: crs * ld,
                so: full_crs * ld,
            };
            let y_mat = |ld, si| Mat {
                win: None,
                buf: &bufs.y,
                off: n0 * y_img + p0,
                ld,
                si,
                so: y_img,
            };
            let job = if pixel_major {
                // C[m = pixel, n = k_out] = Σ_q col[q, pixel] · w[k_out, q]: the pixels give
                // the GEMM its long M side (few output channels per group).
                GemmJob {
                    m: cnt,
                    n: kg,
                    k: crs,
                    batch_outer: nb,
                    batch_inner: p.groups,
                    a: col_mat,
                    a_km: true,
                    b: Mat {
                        win: None,
                        buf: &bufs.w,
                        off: 0,
                        ld: crs,
                        si: kg * crs,
                        so: 0,
                    },
                    b_kn: false,
                    c: y_mat(1, kg * ohw),
                    c_col_stride: ohw,
                    bias: bufs.b.as_ref().map(|b| (b, 0, kg, 2)),
                    accumulate: false,
                    epilogue: None,
                }
            } else {
                GemmJob {
                    m: kg,
                    n: cnt,
                    k: crs,
                    batch_outer: nb,
                    batch_inner: p.groups,
                    a: wp.as_ref().map_or(col_mat, |w| w.mat()),
                    a_km: true,
                    b: col_mat,
                    b_kn: true,
                    c: y_mat(ohw, kg * ohw),
                    bias: bufs.b.as_ref().map(|b| (b, 0, kg, 1)),
                    c_col_stride: 1,
                    accumulate: false,
                    epilogue: None,
                }
            };
            if f16 {
                let v = if ctx.cpu_kernels() {
                    GemmVariant::Register
                } else {
                    GemmVariant::Tiled
                };
                encode_job_f16(ctx, enc, &job, v)?;
            } else {
                encode_job(ctx, enc, &job, GemmVariant::Auto)?;
            }
            p0 += cnt;
        }
        n0 += nb;
    }
    Ok(())
}
