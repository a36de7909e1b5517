//! Direct convolution: `shaders/conv2d_direct.wgsl` launcher.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::{dispatch, Bind, Kernel, PipelineKey};
use crate::params::Conv2dProblem;

/// Uniforms of `conv2d_direct.wgsl` (same field order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct DirectUniforms {
    n: u32,
    c: u32,
    h: u32,
    w: u32,
    k: u32,
    r: u32,
    s: u32,
    cg: u32,
    kg: u32,
    oh: u32,
    ow: u32,
    sh: u32,
    sw: u32,
    dh: u32,
    dw: u32,
    pad_top: i32,
    pad_left: i32,
    x_off: u32,
    w_off: u32,
    b_off: u32,
    y_off: u32,
    oy0: u32,
    rows: u32,
    kblocks: u32,
    kbt: u32,
    pblocks: u32,
    total: u32,
    _pad: u32,
}

/// Register block of one invocation: (output channels, output columns).
fn block(p: &Conv2dProblem) -> (u32, u32) {
    let kg = p.k_per_group();
    if kg == 1 {
        (1, 8)
    } else if kg <= 2 {
        (2, 8)
    } else {
        (4, 4)
    }
}

pub(crate) fn u32_of(v: usize, what: &'static str) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::exceeds_limit(what, v as u64, u32::MAX as u64))
}

pub(crate) fn i32_of(v: isize, what: &'static str) -> Result<i32> {
    i32::try_from(v)
        .map_err(|_| Error::exceeds_limit(what, v.unsigned_abs() as u64, i32::MAX as u64))
}

/// Records the direct forward convolution of `p` into `enc`.
pub(crate) fn encode(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    x: &wgpu::Buffer,
    w: &wgpu::Buffer,
    b: Option<&wgpu::Buffer>,
    y: &wgpu::Buffer,
) -> Result<()> {
    let (kb, pb) = block(p);
    let key = PipelineKey::new(Kernel::Conv2dDirect)
        .with("WG", 64)
        .with("KB", kb)
        .with("PB", pb)
        .with("PAD_MODE", p.mode.code())
        .with("HAS_BIAS", p.has_bias as u32)
        .with("FLIP", p.flip as u32);
    let kg = p.k_per_group();
    let kblocks = kg.div_ceil(kb as usize);
    let pblocks = p.ow.div_ceil(pb as usize);
    let per_row = p.groups * kblocks * pblocks;
    let limits = ctx.limits();
    let dim = limits.max_compute_workgroups_per_dimension as u64;
    // Invocations of one dispatch: bounded by the 2-D grid and by 32-bit invocation ids.
    let max_inv = (dim * dim * 64).min(1 << 31);
    // One launch = one image x a band of rows small enough for one dispatch.
    let rows_per_launch = ((max_inv / per_row as u64).max(1) as usize).min(p.oh);
    let x_img = p.c * p.h * p.w;
    let y_img = p.k * p.oh * p.ow;
    let b = b.unwrap_or(w);
    let mut u = DirectUniforms {
        n: 1,
        c: u32_of(p.c, "channels")?,
        h: u32_of(p.h, "height")?,
        w: u32_of(p.w, "width")?,
        k: u32_of(p.k, "output channels")?,
        r: u32_of(p.r, "kernel height")?,
        s: u32_of(p.s, "kernel width")?,
        cg: u32_of(p.c_per_group(), "channels per group")?,
        kg: u32_of(kg, "output channels per group")?,
        oh: u32_of(p.oh, "output height")?,
        ow: u32_of(p.ow, "output width")?,
        sh: u32_of(p.stride[0], "stride")?,
        sw: u32_of(p.stride[1], "stride")?,
        dh: u32_of(p.dilation[0], "dilation")?,
        dw: u32_of(p.dilation[1], "dilation")?,
        pad_top: i32_of(p.pad[0], "padding")?,
        pad_left: i32_of(p.pad[2], "padding")?,
        kblocks: u32_of(kblocks, "blocks")?,
        kbt: u32_of(p.groups * kblocks, "blocks")?,
        pblocks: u32_of(pblocks, "blocks")?,
        ..Default::default()
    };
    // Whole batch in one launch when it fits, else image by image.
    let whole = (p.n * per_row * p.oh) as u64 <= max_inv;
    let (images, step) = if whole { (p.n, p.n) } else { (p.n, 1) };
    let mut n0 = 0;
    while n0 < images {
        let nb = step.min(images - n0);
        let mut oy0 = 0;
        while oy0 < p.oh {
            let rows = if whole {
                p.oh
            } else {
                rows_per_launch.min(p.oh - oy0)
            };
            let total = nb * per_row * rows;
            u.n = nb as u32;
            u.x_off = u32_of(n0 * x_img, "input elements")?;
            u.y_off = u32_of(n0 * y_img, "output elements")?;
            u.oy0 = oy0 as u32;
            u.rows = rows as u32;
            u.total = u32_of(total, "invocations")?;
            dispatch(
                ctx,
                enc,
                &key,
                bytemuck::bytes_of(&u),
                &[
                    Bind::whole(x),
                    Bind::whole(w),
                    Bind::whole(b),
                    Bind::whole(y),
                ],
                total as u64,
            )?;
            oy0 += rows;
        }
        n0 += nb;
    }
    Ok(())
}
