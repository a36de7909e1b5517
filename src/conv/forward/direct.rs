//! Forward, direct algorithm: `conv2d_direct` (register-blocked), and windows over
//! tensors larger than one storage binding.

use crate::context::Context;
use crate::conv::launch::conv_shape;
use crate::conv::launch::{fit_one_binding, ConvBuffers};
use crate::conv::table::{anywhere, runs_all, Entry};
use crate::conv::Algorithm;
use crate::error::Result;
use crate::gpu::{fits, launch, max_window_elems, u32_of, window, Bind};
use crate::kernels::conv2d_direct::{DirectParams, DirectSpec};
use crate::kernels::{k, KernelDef};
use crate::params::Conv2dProblem;

/// The forward entry: runs every problem; the heuristic picks it for tiny reductions, few
/// output channels per group, and tensors larger than one storage binding.
pub(crate) const FORWARD: Entry<Conv2dProblem, ConvBuffers> = Entry {
    algorithm: Algorithm::Direct,
    check: runs_all,
    prefer,
    tune: anywhere,
    encode: encode_fused,
};

/// The forward entry's launcher: [`encode`] with the epilogue of `bufs` fused into the store
/// (except on windows, which accumulate: the caller's elementwise pass applies it then).
fn encode_fused(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    bufs: &ConvBuffers,
) -> Result<()> {
    let (x, w, y) = (&bufs.x, &bufs.w, &bufs.y);
    if !(fits(ctx, x) && fits(ctx, y) && fits(ctx, w)) {
        return encode_windowed(ctx, enc, p, x, w, bufs.b.as_ref(), y);
    }
    encode_whole(ctx, enc, p, bufs)?;
    bufs.mark_epilogue_applied();
    Ok(())
}

fn prefer(ctx: &Context, p: &Conv2dProblem) -> bool {
    p.c_per_group() == 1
        || p.k_per_group() < 4
        || p.reduction_len() < 16
        || fit_one_binding(ctx, p).is_err()
}

/// Register block of one invocation: (output channels, output columns).
fn block(p: &Conv2dProblem) -> (usize, usize) {
    let kg = p.k_per_group();
    if kg == 1 {
        (1, 8)
    } else if kg <= 2 {
        (2, 8)
    } else if kg <= 4 {
        (4, 4)
    } else {
        (8, 4)
    }
}

fn spec(p: &Conv2dProblem, kb: usize, pb: usize, accumulate: bool) -> DirectSpec {
    DirectSpec {
        WG: 64,
        KB: kb as u32,
        PB: pb as u32,
        PAD_MODE: p.mode.code(),
        HAS_BIAS: p.has_bias,
        FLIP: p.flip,
        ACCUMULATE: accumulate,
        ..Default::default()
    }
}

fn base_params(p: &Conv2dProblem, kb: usize, pb: usize) -> Result<DirectParams> {
    let kg = p.k_per_group();
    let kblocks = kg.div_ceil(kb);
    Ok(DirectParams {
        shape: conv_shape(p)?,
        kblocks: u32_of(kblocks, "blocks")?,
        kbt: u32_of(p.groups * kblocks, "blocks")?,
        pblocks: u32_of(p.ow.div_ceil(pb), "blocks")?,
        c_lo: 0,
        c_cnt: u32_of(p.c_per_group(), "channels per group")?,
        kb_lo: 0,
        ..Default::default()
    })
}

/// Invocations one dispatch may cover: bounded by the 2-D grid and by 32-bit invocation ids.
fn max_invocations(ctx: &Context) -> usize {
    let dim = ctx.limits().max_compute_workgroups_per_dimension as u64;
    (dim * dim * 64).min(1 << 31) as usize
}

/// Records the direct forward convolution of `p` into `enc`. When a tensor is larger than
/// one storage binding, the work is split into windows (see [`encode_windowed`]).
pub(crate) fn encode(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    x: &wgpu::Buffer,
    w: &wgpu::Buffer,
    b: Option<&wgpu::Buffer>,
    y: &wgpu::Buffer,
) -> Result<()> {
    if !(fits(ctx, x) && fits(ctx, y) && fits(ctx, w)) {
        return encode_windowed(ctx, enc, p, x, w, b, y);
    }
    encode_whole(ctx, enc, p, &ConvBuffers::new(x, w, b, y))
}

/// [`encode`] of tensors within one binding each, with the epilogue of `bufs` (if any).
fn encode_whole(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    bufs: &ConvBuffers,
) -> Result<()> {
    encode_whole_as::<k::Conv2dDirect>(ctx, enc, p, bufs)
}

/// [`encode_whole`] with the f16 twin of the kernel (`Precision::F16Accumulate`: every
/// operand of `bufs` is an f16 tensor's own buffer); applies the epilogue of `bufs`.
pub(crate) fn encode_whole_f16(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    bufs: &ConvBuffers,
) -> Result<()> {
    encode_whole_as::<k::Conv2dDirectF16>(ctx, enc, p, bufs)?;
    bufs.mark_epilogue_applied();
    Ok(())
}

/// [`encode_whole`] with kernel `K` (`conv2d_direct` or its f16 twin).
fn encode_whole_as<K: KernelDef<Params = DirectParams, Spec = DirectSpec>>(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    bufs: &ConvBuffers,
) -> Result<()> {
    let (x, w, b, y) = (&bufs.x, &bufs.w, bufs.b.as_ref(), &bufs.y);
    let (kb, pb) = block(p);
    let (act, res) = bufs.ep_codes();
    let spec = DirectSpec {
        ACT: act,
        RES: res,
        ..spec(p, kb, pb, false)
    };
    let mut u = base_params(p, kb, pb)?;
    (u.alpha, u.lo, u.hi) = bufs.ep_constants();
    let r = bufs.r_or(w);
    let per_row = (u.kbt * u.pblocks) as usize;
    let max_inv = max_invocations(ctx);
    // One launch = as many images as fit one dispatch, else one image x a band of rows.
    let whole = p.n * per_row * p.oh <= max_inv;
    let rows_per_launch = (max_inv / per_row.max(1)).clamp(1, p.oh);
    let step = if whole { p.n } else { 1 };
    let (x_img, y_img) = (p.c * p.h * p.w, p.k * p.oh * p.ow);
    let b = b.unwrap_or(w);
    let mut n0 = 0;
    while n0 < p.n {
        let nb = step.min(p.n - n0);
        let mut oy0 = 0;
        while oy0 < p.oh {
            let rows = if whole {
                p.oh
            } else {
                rows_per_launch.min(p.oh - oy0)
            };
            let total = nb * per_row * rows;
            u.shape.n = u32_of(nb, "images")?;
            u.x_off = u32_of(n0 * x_img, "input elements")?;
            u.y_off = u32_of(n0 * y_img, "output elements")?;
            u.oy0 = u32_of(oy0, "rows")?;
            u.rows = u32_of(rows, "rows")?;
            u.total = u32_of(total, "invocations")?;
            launch::<K>(
                ctx,
                enc,
                &spec,
                &u,
                &[
                    Bind::whole(x),
                    Bind::whole(w),
                    Bind::whole(b),
                    Bind::whole(y),
                    Bind::whole(r),
                ],
                total as u64,
            )?;
            oy0 += rows;
        }
        n0 += nb;
    }
    Ok(())
}

/// Range `[min, max]` of input rows (after the padding mode's mapping) read by output rows
/// `[oy0, oy1)`; `None` when every read is a zero.
pub(crate) fn source_rows(p: &Conv2dProblem, oy0: usize, oy1: usize) -> Option<(usize, usize)> {
    let lo = (oy0 * p.stride[0]) as isize - p.pad[0];
    let hi = ((oy1 - 1) * p.stride[0] + (p.r - 1) * p.dilation[0]) as isize - p.pad[0];
    let (mut a, mut b) = (usize::MAX, 0usize);
    // Only the rows outside [0, h) need mapping; the inside is contiguous.
    let inside = (lo.max(0), hi.min(p.h as isize - 1));
    if inside.0 <= inside.1 {
        a = inside.0 as usize;
        b = inside.1 as usize;
    }
    for i in (lo..lo.max(0).min(hi + 1)).chain((p.h as isize).max(lo)..=hi) {
        if let Some(s) = p.mode.source_index(i, p.h) {
            a = a.min(s);
            b = b.max(s);
        }
    }
    (a <= b).then_some((a, b))
}

/// Large tensors: one output channel per launch, input channels in chunks whose planes fit a
/// binding (partial sums accumulated into y in a fixed order), and bands of output rows when
/// a single plane does not fit. Every tensor is bound through a window.
fn encode_windowed(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    x: &wgpu::Buffer,
    w: &wgpu::Buffer,
    b: Option<&wgpu::Buffer>,
    y: &wgpu::Buffer,
) -> Result<()> {
    let maxw = max_window_elems(ctx);
    let pb = 8;
    let mut u = base_params(p, 1, pb)?;
    let (cg, kg) = (p.c_per_group(), p.k_per_group());
    let (hw, ohw) = (p.h * p.w, p.oh * p.ow);
    let max_inv = max_invocations(ctx);
    // Output rows per band: the y band and the x band of one plane must each fit.
    let mut rows =
        p.oh.min((maxw / p.ow.max(1)).max(1))
            .min((max_inv / p.ow.div_ceil(pb)).max(1));
    loop {
        let x_rows = (rows - 1) * p.stride[0] + (p.r - 1) * p.dilation[0] + 1;
        if x_rows * p.w <= maxw || rows == 1 {
            break;
        }
        rows = (rows / 2).max(1);
    }
    let rs = p.r * p.s;
    for n in 0..p.n {
        for k in 0..p.k {
            let g = k / kg;
            let bias_bind = match b {
                Some(b) => {
                    let (bb, off) = window(ctx, b, k, k + 1)?;
                    u.b_off = off;
                    bb
                }
                None => window(ctx, w, 0, 1)?.0,
            };
            let mut oy0 = 0;
            while oy0 < p.oh {
                let oy1 = (oy0 + rows).min(p.oh);
                let y_lo = (n * p.k + k) * ohw + oy0 * p.ow;
                let (ybind, y_win) = window(ctx, y, y_lo, y_lo + (oy1 - oy0) * p.ow)?;
                // Input-channel chunks of the band: (x window, weight window, channels); one
                // empty chunk when every read is zero padding (the launch still writes the
                // bias, or zeros).
                let chunks: Vec<[(usize, usize); 3]> = match source_rows(p, oy0, oy1) {
                    None => vec![[(0, 1), (0, 1), (0, 0)]],
                    Some((r0, r1)) => {
                        let band = (r1 - r0 + 1) * p.w;
                        // Input planes per chunk so that the window fits ...
                        let per = if band >= maxw {
                            1
                        } else {
                            1 + (maxw - band) / hw
                        };
                        // ... and whose weights (R*S per input channel) fit too.
                        let per = per.min((maxw / rs).max(1));
                        (0..cg)
                            .step_by(per)
                            .map(|c0| {
                                let c1 = (c0 + per).min(cg);
                                let plane0 = n * p.c + g * cg + c0;
                                let lo = plane0 * hw + r0 * p.w;
                                let hi = (plane0 + (c1 - c0 - 1)) * hw + (r1 + 1) * p.w;
                                [(lo, hi), ((k * cg + c0) * rs, (k * cg + c1) * rs), (c0, c1)]
                            })
                            .collect()
                    }
                };
                for [(xlo, xhi), (wlo, whi), channels] in chunks {
                    let (xbind, x_win) = window(ctx, x, xlo, xhi)?;
                    let (wbind, w_win) = window(ctx, w, wlo, whi)?;
                    u.w_off = w_win;
                    let binds = [xbind, wbind, bias_bind, ybind];
                    launch_band(
                        ctx,
                        enc,
                        p,
                        &mut u,
                        binds,
                        (x_win, y_win),
                        n,
                        k,
                        channels,
                        (oy0, oy1),
                        pb,
                    )?;
                }
                oy0 = oy1;
            }
        }
    }
    Ok(())
}

/// One launch of the windowed path: output channel `k` of image `n`, input channels
/// `[c0, c1)` of its group (accumulating after the first chunk), output rows `[oy0, oy1)`.
/// `wins` are the window offsets of x and y; the kernel addresses image 0, so image `n` is
/// reached by adding its element offset.
#[allow(clippy::too_many_arguments)]
fn launch_band(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    u: &mut DirectParams,
    binds: [Bind<'_>; 4],
    wins: (u32, u32),
    n: usize,
    k: usize,
    (c0, c1): (usize, usize),
    (oy0, oy1): (usize, usize),
    pb: usize,
) -> Result<()> {
    let (x_img, y_img) = (p.c * p.h * p.w, p.k * p.oh * p.ow);
    u.shape.n = 1;
    u.x_off = wins.0.wrapping_add(u32_of(n * x_img, "input elements")?);
    u.y_off = wins.1.wrapping_add(u32_of(n * y_img, "output elements")?);
    u.kb_lo = u32_of(k, "channel")?;
    u.kbt = 1;
    u.c_lo = u32_of(c0, "channel")?;
    u.c_cnt = u32_of(c1 - c0, "channels")?;
    u.oy0 = u32_of(oy0, "rows")?;
    u.rows = u32_of(oy1 - oy0, "rows")?;
    let total = (oy1 - oy0) * p.ow.div_ceil(pb);
    u.total = u32_of(total, "invocations")?;
    let spec = spec(p, 1, pb, c0 > 0);
    // No epilogue here: the residual binding is a dummy, never read.
    let binds = [binds[0], binds[1], binds[2], binds[3], binds[1]];
    launch::<k::Conv2dDirect>(ctx, enc, &spec, u, &binds, total as u64)
}
