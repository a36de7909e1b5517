//! Weight gradient, direct algorithm: `conv2d_wgrad`, windows over large tensors.

use super::WgradArgs;
use crate::context::Context;
use crate::conv::forward::direct::source_rows;
use crate::conv::launch::conv_shape;
use crate::conv::launch::fit_one_binding;
use crate::conv::table::{anywhere, runs_all, Entry};
use crate::conv::Algorithm;
use crate::error::Result;
use crate::gpu::{fits, launch, max_window_elems, u32_of, window, Bind};
use crate::kernels::conv2d_wgrad::{WgradParams, WgradSpec};
use crate::kernels::{k, KernelDef};
use crate::params::Conv2dProblem;

/// The weight-gradient entry: runs every problem (windows over large tensors); the
/// heuristic picks it for one input channel or few output channels per group.
pub(crate) const WEIGHT_GRAD: Entry<Conv2dProblem, WgradArgs> = Entry {
    algorithm: Algorithm::Direct,
    check: runs_all,
    prefer: |ctx, p| {
        p.c_per_group() == 1 || p.k_per_group() < 4 || fit_one_binding(ctx, p).is_err()
    },
    tune: anywhere,
    encode: wgrad_direct,
};

fn wgrad_spec(p: &Conv2dProblem, kb: usize, accumulate: bool) -> WgradSpec {
    WgradSpec {
        WG: 64,
        KB: kb as u32,
        PAD_MODE: p.mode.code(),
        FLIP: p.flip,
        ACCUMULATE: accumulate,
    }
}

fn wgrad_params(p: &Conv2dProblem, kb: usize) -> Result<WgradParams> {
    let kg = p.k_per_group();
    let kblocks = kg.div_ceil(kb);
    Ok(WgradParams {
        shape: conv_shape(p)?,
        kblocks: u32_of(kblocks, "blocks")?,
        sblocks: u32_of(p.s.div_ceil(4), "blocks")?,
        kb_lo: 0,
        kbt: u32_of(kblocks * p.groups, "blocks")?,
        c_lo: 0,
        c_cnt: u32_of(p.c_per_group(), "channels per group")?,
        oy0: 0,
        oy_cnt: u32_of(p.oh, "output height")?,
        ..Default::default()
    })
}

fn wgrad_direct(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    a: &WgradArgs,
) -> Result<()> {
    let (x, dy, dw) = (&a.x, &a.dy, &a.dw);
    if !(fits(ctx, x) && fits(ctx, dy) && fits(ctx, dw)) {
        return wgrad_windowed(ctx, enc, p, a);
    }
    wgrad_whole::<k::Conv2dWgrad>(ctx, enc, p, (x, dy, dw))
}

/// The weight-gradient kernel's f16 twin (`Precision::F16Accumulate`): `x`, `dy` and `dw`
/// f16 tensors within one binding each.
pub(crate) fn wgrad_direct_f16(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    bufs: (&wgpu::Buffer, &wgpu::Buffer, &wgpu::Buffer),
) -> Result<()> {
    wgrad_whole::<k::Conv2dWgradF16>(ctx, enc, p, bufs)
}

/// The weight gradient of tensors within one binding each, with kernel `K`
/// (`conv2d_wgrad` or its f16 twin).
fn wgrad_whole<K: KernelDef<Params = WgradParams, Spec = WgradSpec>>(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    (x, dy, dw): (&wgpu::Buffer, &wgpu::Buffer, &wgpu::Buffer),
) -> Result<()> {
    let kb = p.k_per_group().min(4);
    let mut u = wgrad_params(p, kb)?;
    let total = (u.sblocks * u.shape.r * u.c_cnt * u.kbt) as usize;
    u.total = u32_of(total, "invocations")?;
    launch::<K>(
        ctx,
        enc,
        &wgrad_spec(p, kb, false),
        &u,
        &[Bind::whole(x), Bind::whole(dy), Bind::whole(dw)],
        total as u64,
    )
}

/// Weight gradient when a tensor is larger than one storage binding: per image, output
/// channel, input channel and band of output rows, each bound through a window, summed
/// into dw in a fixed order.
fn wgrad_windowed(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    a: &WgradArgs,
) -> Result<()> {
    let (x, dy, dw) = (&a.x, &a.dy, &a.dw);
    let maxw = max_window_elems(ctx);
    let (cg, kg, hw, ohw, rs) = (
        p.c_per_group(),
        p.k_per_group(),
        p.h * p.w,
        p.oh * p.ow,
        p.r * p.s,
    );
    let mut u = wgrad_params(p, 1)?;
    u.shape.n = 1;
    u.kbt = 1;
    u.c_cnt = 1;
    let total = p.s.div_ceil(4) * p.r;
    u.total = u32_of(total, "invocations")?;
    // Output-row bands whose dy rows and x rows each fit one window.
    let mut rows = p.oh.min((maxw / p.ow.max(1)).max(1));
    loop {
        let x_rows = (rows - 1) * p.stride[0] + (p.r - 1) * p.dilation[0] + 1;
        if x_rows * p.w <= maxw || rows == 1 {
            break;
        }
        rows = (rows / 2).max(1);
    }
    for k in 0..p.k {
        let g = k / kg;
        for ci in 0..cg {
            let dw_lo = (k * cg + ci) * rs;
            let (dwb, dw_off) = window(ctx, dw, dw_lo, dw_lo + rs)?;
            u.dw_off = dw_off;
            u.kb_lo = u32_of(k, "channel")?;
            u.c_lo = u32_of(ci, "channel")?;
            let mut first = true;
            for n in 0..p.n {
                let mut oy0 = 0;
                while oy0 < p.oh {
                    let oy1 = (oy0 + rows).min(p.oh);
                    let y_lo = (n * p.k + k) * ohw + oy0 * p.ow;
                    let (dyb, dy_off) = window(ctx, dy, y_lo, y_lo + (oy1 - oy0) * p.ow)?;
                    let plane = n * p.c + g * cg + ci;
                    let (xb, x_off) = match source_rows(p, oy0, oy1) {
                        Some((r0, r1)) => {
                            window(ctx, x, plane * hw + r0 * p.w, plane * hw + (r1 + 1) * p.w)?
                        }
                        None => window(ctx, x, 0, 1)?,
                    };
                    u.x_off = x_off.wrapping_add(u32_of(n * p.c * hw, "elements")?);
                    u.dy_off = dy_off.wrapping_add(u32_of(n * p.k * ohw, "elements")?);
                    u.oy0 = u32_of(oy0, "rows")?;
                    u.oy_cnt = u32_of(oy1 - oy0, "rows")?;
                    launch::<k::Conv2dWgrad>(
                        ctx,
                        enc,
                        &wgrad_spec(p, 1, !first),
                        &u,
                        &[xb, dyb, dwb],
                        total as u64,
                    )?;
                    first = false;
                    oy0 = oy1;
                }
            }
        }
    }
    Ok(())
}
