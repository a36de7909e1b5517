//! Input gradient, direct algorithm: the gather kernel `conv2d_dgrad` (any stride), windows
//! over large tensors; on CPU adapters strided layers run the phase kernel ([`super::phase`]).

use super::implicit_gemm::strided_pointwise_as_forward;
use super::{core, needs_fold, pad_fold, padded_problem, phase, windowed, DgradArgs};
use crate::context::Context;
use crate::conv::launch::conv_shape;
use crate::conv::table::{anywhere, runs_all, Entry};
use crate::conv::Algorithm;
use crate::error::Result;
use crate::gpu::memory::ScratchBuffer;
use crate::gpu::{launch, max_window_elems, u32_of, window, Bind};
use crate::kernels::conv2d_dgrad::{DgradParams, DgradSpec};
use crate::kernels::{k, KernelDef};
use crate::params::Conv2dProblem;

/// The input-gradient entry: runs every problem (the phase kernel for strided layers on
/// CPU adapters where it applies, else the gather kernel; windows over large tensors).
pub(crate) const INPUT_GRAD: Entry<Conv2dProblem, DgradArgs> = Entry {
    algorithm: Algorithm::Direct,
    check: runs_all,
    prefer,
    tune: anywhere,
    encode,
};

/// Preferred for tiny reductions, windowed problems, and strided layers with few input
/// channels (a network's first layers) where the phase kernel runs, unless the strided 1x1
/// implicit GEMM does (downsampling shortcuts).
fn prefer(ctx: &Context, p: &Conv2dProblem) -> bool {
    let q = core(p);
    let phase = p.stride != [1, 1] && p.c_per_group() <= 16 && phase::supports(ctx, &q);
    let shortcut = p.k_per_group() >= 8 && strided_pointwise_as_forward(ctx, &q).is_some();
    p.k_per_group() < 4 || p.reduction_len() < 16 || windowed(ctx, p) || (phase && !shortcut)
}

fn encode(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    a: &DgradArgs,
) -> Result<()> {
    if p.stride != [1, 1] && phase::supports(ctx, p) {
        phase::encode(ctx, enc, p, a)
    } else {
        dgrad_direct(ctx, enc, p, a)
    }
}

fn dgrad_spec(p: &Conv2dProblem, cb: usize, bias: bool, accumulate: bool) -> DgradSpec {
    DgradSpec {
        WG: 64,
        CB: cb as u32,
        HAS_BIAS: bias,
        FLIP: p.flip,
        ACCUMULATE: accumulate,
    }
}

fn dgrad_params(p: &Conv2dProblem, cb: usize) -> Result<DgradParams> {
    let cg = p.c_per_group();
    let cblocks = cg.div_ceil(cb);
    Ok(DgradParams {
        shape: conv_shape(p)?,
        cblocks: u32_of(cblocks, "blocks")?,
        xblocks: u32_of(p.w.div_ceil(p.stride[1]).div_ceil(4), "blocks")?,
        k_lo: 0,
        k_cnt: u32_of(p.k_per_group(), "output channels per group")?,
        cb_lo: 0,
        cbt: u32_of(cblocks * p.groups, "blocks")?,
        iy0: 0,
        rows: u32_of(p.h, "height")?,
        ..Default::default()
    })
}

fn dgrad_direct(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    a: &DgradArgs,
) -> Result<()> {
    dgrad_direct_as::<k::Conv2dDgrad>(ctx, enc, p, a)
}

/// The gather kernel's f16 twin (`Precision::F16Accumulate`) on the zero-padded problem
/// `p`, every buffer of `a` an f16 tensor (or f16 scratch), whole.
pub(crate) fn dgrad_direct_f16(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    a: &DgradArgs,
) -> Result<()> {
    dgrad_direct_as::<k::Conv2dDgradF16>(ctx, enc, p, a)
}

/// [`dgrad_direct`] with kernel `K` (`conv2d_dgrad` or its f16 twin).
fn dgrad_direct_as<K: KernelDef<Params = DgradParams, Spec = DgradSpec>>(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    a: &DgradArgs,
) -> Result<()> {
    let (dy, dy_off, w, bias, dx) = (&a.dy, a.dy_off, &a.w, a.bias.as_ref(), &a.dx);
    let cb = p.c_per_group().min(4);
    let spec = dgrad_spec(p, cb, bias.is_some(), false);
    let mut u = dgrad_params(p, cb)?;
    let per_image = (u.cbt * u.rows * u.shape.sw * u.xblocks) as usize;
    let limit = 1usize << 30;
    let images_per_launch = (limit / per_image.max(1)).clamp(1, p.n);
    let mut n0 = 0;
    while n0 < p.n {
        let nb = images_per_launch.min(p.n - n0);
        let total = nb * per_image;
        u.shape.n = u32_of(nb, "images")?;
        u.dy_off = u32_of(dy_off + n0 * p.k * p.oh * p.ow, "elements")?;
        u.dx_off = u32_of(n0 * p.c * p.h * p.w, "elements")?;
        u.total = u32_of(total, "invocations")?;
        launch::<K>(
            ctx,
            enc,
            &spec,
            &u,
            &[
                Bind::whole(dy),
                Bind::whole(w),
                Bind::whole(bias.unwrap_or(w)),
                Bind::whole(dx),
            ],
            total as u64,
        )?;
        n0 += nb;
    }
    Ok(())
}

/// Output rows `[lo, hi]` of `dy` that feed input rows `[iy0, iy1)` (zero padding).
fn dy_rows(p: &Conv2dProblem, iy0: usize, iy1: usize) -> Option<(usize, usize)> {
    let sh = p.stride[0] as isize;
    let lo = iy0 as isize + p.pad[0] - ((p.r - 1) * p.dilation[0]) as isize;
    let lo = if lo <= 0 { 0 } else { (lo + sh - 1) / sh };
    let hi = (iy1 as isize - 1 + p.pad[0]).div_euclid(sh);
    let hi = hi.min(p.oh as isize - 1);
    (hi >= 0 && lo <= hi).then_some((lo as usize, hi as usize))
}

/// Windowed input gradient of one input plane `(n, c)`, rows `[iy0, iy1)`: output channels
/// in chunks whose dy windows fit a binding, accumulated in order. `dx_bind` / `dx_off`
/// address the target (dx itself, or a padded scratch plane): `dx_off` plus the global
/// index of an element of `p` is its index in the binding.
#[allow(clippy::too_many_arguments)]
fn dgrad_plane(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    dy: &wgpu::Buffer,
    w: &wgpu::Buffer,
    bias: Option<&wgpu::Buffer>,
    dx_bind: Bind<'_>,
    dx_off: u32,
    (n, c): (usize, usize),
    (iy0, iy1): (usize, usize),
) -> Result<()> {
    let maxw = max_window_elems(ctx);
    let (cg, kg, ohw) = (p.c_per_group(), p.k_per_group(), p.oh * p.ow);
    let g = c / cg;
    let mut u = dgrad_params(p, 1)?;
    u.cb_lo = u32_of(c, "channel")?;
    u.cbt = 1;
    u.iy0 = u32_of(iy0, "rows")?;
    u.rows = u32_of(iy1 - iy0, "rows")?;
    // The kernel addresses image 0; image n is reached through the offsets.
    u.dx_off = dx_off.wrapping_add(u32_of(n * p.c * p.h * p.w, "elements")?);
    let total = (iy1 - iy0) * p.stride[1] * p.w.div_ceil(p.stride[1]).div_ceil(4);
    u.total = u32_of(total, "invocations")?;
    let bias_bind = match bias {
        Some(b) => {
            let (bb, off) = window(ctx, b, c, c + 1)?;
            u.b_off = off;
            bb
        }
        None => window(ctx, w, 0, 1)?.0,
    };
    let rows = dy_rows(p, iy0, iy1);
    let band = rows.map_or(0, |(a, b)| (b - a + 1) * p.ow);
    let rs = p.r * p.s;
    let ci = c % cg;
    // Output channels per chunk: their dy rows and their weights must each fit a window.
    let per = if band >= maxw {
        1
    } else {
        1 + (maxw - band) / ohw.max(1)
    };
    let per = per.min(1 + maxw.saturating_sub(rs) / (cg * rs));
    let mut k0 = 0;
    loop {
        let k1 = if rows.is_some() {
            (k0 + per).min(kg)
        } else {
            k0
        };
        let (dy_bind, off) = match rows {
            Some((a, b)) => {
                let plane0 = n * p.k + g * kg + k0;
                window(
                    ctx,
                    dy,
                    plane0 * ohw + a * p.ow,
                    (plane0 + (k1 - k0 - 1)) * ohw + (b + 1) * p.ow,
                )?
            }
            None => window(ctx, dy, 0, 1)?,
        };
        u.dy_off = off.wrapping_add(u32_of(n * p.k * ohw, "elements")?);
        u.k_lo = u32_of(k0, "channel")?;
        u.k_cnt = u32_of(k1 - k0, "channels")?;
        let wk = g * kg + k0;
        let (w_bind, w_off) = if k1 > k0 {
            window(
                ctx,
                w,
                (wk * cg + ci) * rs,
                ((wk + (k1 - k0 - 1)) * cg + ci + 1) * rs,
            )?
        } else {
            window(ctx, w, 0, 1)?
        };
        u.w_off = w_off;
        let spec = dgrad_spec(p, 1, bias.is_some(), k0 > 0);
        launch::<k::Conv2dDgrad>(
            ctx,
            enc,
            &spec,
            &u,
            &[dy_bind, w_bind, bias_bind, dx_bind],
            total as u64,
        )?;
        k0 = k1;
        if k0 >= kg || rows.is_none() {
            break;
        }
    }
    Ok(())
}

/// Input gradient when a tensor is larger than one storage binding: plane by plane, in row
/// bands, with a padded scratch plane folded back for non-zero padding modes.
#[allow(clippy::too_many_arguments)]
pub(crate) fn dgrad_windowed(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    dy: &wgpu::Buffer,
    w: &wgpu::Buffer,
    bias: Option<&wgpu::Buffer>,
    dx: &wgpu::Buffer,
) -> Result<()> {
    let maxw = max_window_elems(ctx);
    let hw = p.h * p.w;
    if needs_fold(p) {
        let pp = padded_problem(p);
        let plane = pp.h * pp.w;
        let scratch =
            ScratchBuffer::new(ctx, enc, (plane * 4) as u64, "wgconv padded plane gradient")?;
        for n in 0..p.n {
            for c in 0..p.c {
                let global = (n * p.c + c) * plane;
                let off = 0u32.wrapping_sub(global as u32);
                dgrad_plane(
                    ctx,
                    enc,
                    &pp,
                    dy,
                    w,
                    None,
                    Bind::whole(&scratch.buffer),
                    off,
                    (n, c),
                    (0, pp.h),
                )?;
                let lo = (n * p.c + c) * hw;
                let (dst, dst_off) = window(ctx, dx, lo, lo + hw)?;
                let fold = (1, hw, dst_off.wrapping_add(lo as u32));
                pad_fold(ctx, enc, p, fold, Bind::whole(&scratch.buffer), dst)?;
            }
        }
        return Ok(());
    }
    let rows = (maxw / p.w.max(1)).clamp(1, p.h);
    for n in 0..p.n {
        for c in 0..p.c {
            let mut iy0 = 0;
            while iy0 < p.h {
                let iy1 = (iy0 + rows).min(p.h);
                let lo = (n * p.c + c) * hw + iy0 * p.w;
                let (dxb, off) = window(ctx, dx, lo, lo + (iy1 - iy0) * p.w)?;
                dgrad_plane(ctx, enc, p, dy, w, bias, dxb, off, (n, c), (iy0, iy1))?;
                iy0 = iy1;
            }
        }
    }
    Ok(())
}
