//! im2col + GEMM convolution, and 1x1 convolution as a GEMM on the input in place.

use crate::context::Context;
use crate::conv::direct::{i32_of, u32_of};
use crate::error::{Error, Result};
use crate::gemm::{auto_for_b, encode_job, pack, GemmJob, GemmVariant, Mat};
use crate::kernels::{dispatch, Bind, Kernel, PipelineKey};
use crate::params::Conv2dProblem;
use crate::tensor::DeviceBuffer;

/// Uniforms of `im2col.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Im2colUniforms {
    pub(crate) n: u32,
    pub(crate) c: u32,
    pub(crate) h: u32,
    pub(crate) w: u32,
    pub(crate) cg: u32,
    pub(crate) groups: u32,
    pub(crate) r: u32,
    pub(crate) s: u32,
    pub(crate) oh: u32,
    pub(crate) ow: u32,
    pub(crate) sh: u32,
    pub(crate) sw: u32,
    pub(crate) dh: u32,
    pub(crate) dw: u32,
    pub(crate) pad_top: i32,
    pub(crate) pad_left: i32,
    pub(crate) x_off: u32,
    pub(crate) p0: u32,
    pub(crate) np: u32,
    pub(crate) ldp: u32,
    pub(crate) total: u32,
    pub(crate) ldq: u32,
    pub(crate) _p1: u32,
    pub(crate) _p2: u32,
}

impl Im2colUniforms {
    /// The problem's shape fields; the launch fields (`n`, offsets, pixel range, `total`) are
    /// set per launch.
    pub(crate) fn for_problem(p: &Conv2dProblem) -> Result<Self> {
        Ok(Im2colUniforms {
            n: 1,
            c: u32_of(p.c, "channels")?,
            h: u32_of(p.h, "height")?,
            w: u32_of(p.w, "width")?,
            cg: u32_of(p.c_per_group(), "channels per group")?,
            groups: u32_of(p.groups, "groups")?,
            r: u32_of(p.r, "kernel height")?,
            s: u32_of(p.s, "kernel width")?,
            oh: u32_of(p.oh, "output height")?,
            ow: u32_of(p.ow, "output width")?,
            sh: u32_of(p.stride[0], "stride")?,
            sw: u32_of(p.stride[1], "stride")?,
            dh: u32_of(p.dilation[0], "dilation")?,
            dw: u32_of(p.dilation[1], "dilation")?,
            pad_top: i32_of(p.pad[0], "padding")?,
            pad_left: i32_of(p.pad[2], "padding")?,
            ..Default::default()
        })
    }
}

/// Buffers of one convolution call.
pub(crate) struct ConvBuffers<'a> {
    pub x: &'a wgpu::Buffer,
    pub w: &'a wgpu::Buffer,
    pub b: Option<&'a wgpu::Buffer>,
    pub y: &'a wgpu::Buffer,
    /// Identity and version of the weights when the caller's weight tensor may be cached
    /// (see `wcache`); `None` packs every call.
    pub w_key: Option<crate::tensor::ContentKey>,
}

/// Weights `[K, C/g, R, S]` packed once per call as the K-major A operand `[CRS_g, Kg]`
/// of every group.
fn pack_weights(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    w: &wgpu::Buffer,
) -> Result<crate::gemm::Packed> {
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
    pack(ctx, enc, &wmat, false, crs, kg, 1, p.groups)
}

pub(crate) fn im2col_key(p: &Conv2dProblem, transposed: bool) -> PipelineKey {
    PipelineKey::new(Kernel::Im2col)
        .with("WG", 64)
        .with("PAD_MODE", p.mode.code())
        .with("FLIP", p.flip as u32)
        .with("TRANSPOSED", transposed as u32)
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

/// Is this convolution a plain GEMM on the input (1x1 kernel, stride 1, no padding)?
pub(crate) fn is_pointwise(p: &Conv2dProblem) -> bool {
    p.r == 1 && p.s == 1 && p.stride == [1, 1] && p.pad == [0, 0, 0, 0]
}

/// 1x1 convolution: `y[n, k, :] = W_g · x[n, group(k), :]`, reading x in place.
pub(crate) fn encode_pointwise(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    bufs: &ConvBuffers<'_>,
) -> Result<()> {
    if !is_pointwise(p) {
        return Err(Error::new(crate::ErrorKind::UnsupportedAlgorithm {
            algorithm: "gemm1x1",
            reason: "needs a 1x1 kernel, stride 1 and no padding".into(),
        }));
    }
    let (cg, kg, hw) = (p.c_per_group(), p.k_per_group(), p.h * p.w);
    let wp = pack_weights(ctx, enc, p, bufs.w)?;
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
            buf: bufs.x,
            off: 0,
            ld: hw,
            si: cg * hw,
            so: p.c * hw,
        },
        b_kn: true,
        c: Mat {
            win: None,
            buf: bufs.y,
            off: 0,
            ld: hw,
            si: kg * hw,
            so: p.k * hw,
        },
        c_col_stride: 1,
        bias: bufs.b.map(|b| (b, 0, kg, 1)),
        accumulate: false,
    };
    encode_job(ctx, enc, &job, variant)
}

/// im2col + GEMM. The column buffer never exceeds the context's scratch budget nor the
/// storage-binding limit: the work is split over images and ranges of output pixels.
pub(crate) fn encode_im2col(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    bufs: &ConvBuffers<'_>,
) -> Result<()> {
    encode_im2col_at(ctx, enc, p, bufs, 0)
}

/// [`encode_im2col`] reading x from element offset `x_base`.
pub(crate) fn encode_im2col_at(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    bufs: &ConvBuffers<'_>,
    x_base: usize,
) -> Result<()> {
    let crs = p.reduction_len();
    let (kg, ohw) = (p.k_per_group(), p.oh * p.ow);
    let full_crs = crs * p.groups; // rows of one image's column matrix (all groups)
    let limits = ctx.limits();
    let budget = ctx
        .scratch_budget()
        .min(limits.max_storage_buffer_binding_size)
        .max(4096) as usize;
    let row_bytes = full_crs * 4; // one pixel column of one image
    let per_image = row_bytes * ohw.div_ceil(4) * 4;
    let (images, np) = if per_image <= budget {
        ((budget / per_image).clamp(1, p.n), ohw)
    } else {
        (1, ((budget / row_bytes) / 4 * 4).max(4).min(ohw))
    };
    let align = col_align(ctx);
    let ldp = np.div_ceil(align) * align;
    let col_bytes = (images * full_crs * ldp * 4) as u64;
    let col = DeviceBuffer::new(ctx, col_bytes, "wgconv im2col columns")?;
    // Orientation: output channels as GEMM rows (weights packed once), or pixels as rows
    // when a group has few output channels (a short M side starves the row tiles).
    let pixel_major = kg < 64;
    let wp = if pixel_major {
        None
    } else {
        Some(pack_weights(ctx, enc, p, bufs.w)?)
    };
    let key = im2col_key(p, false);
    let mut u = Im2colUniforms::for_problem(p)?;
    let x_img = p.c * p.h * p.w;
    let y_img = p.k * ohw;
    let mut n0 = 0;
    while n0 < p.n {
        let nb = images.min(p.n - n0);
        let mut p0 = 0;
        while p0 < ohw {
            let cnt = np.min(ohw - p0);
            let ld = cnt.div_ceil(align) * align;
            // im2col.wgsl: one invocation per 8 elements of a row.
            let total = nb * full_crs * ld.div_ceil(8);
            u.n = u32_of(nb, "images")?;
            u.x_off = u32_of(x_base + n0 * x_img, "input elements")?;
            u.p0 = u32_of(p0, "pixels")?;
            u.np = u32_of(cnt, "pixels")?;
            u.ldp = u32_of(ld, "pixels")?;
            u.total = u32_of(total, "column elements")?;
            dispatch(
                ctx,
                enc,
                &key,
                bytemuck::bytes_of(&u),
                &[Bind::whole(bufs.x), Bind::whole(&col.buffer)],
                total as u64,
            )?;
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
                buf: bufs.y,
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
                        buf: bufs.w,
                        off: 0,
                        ld: crs,
                        si: kg * crs,
                        so: 0,
                    },
                    b_kn: false,
                    c: y_mat(1, kg * ohw),
                    c_col_stride: ohw,
                    bias: bufs.b.map(|b| (b, 0, kg, 2)),
                    accumulate: false,
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
                    bias: bufs.b.map(|b| (b, 0, kg, 1)),
                    c_col_stride: 1,
                    accumulate: false,
                }
            };
            encode_job(ctx, enc, &job, GemmVariant::Auto)?;
            p0 += cnt;
        }
        n0 += nb;
    }
    Ok(())
}
