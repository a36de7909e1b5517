//! Forward, tiled implicit-GEMM algorithm: workgroup-memory tiles (the GPU variant).

use crate::context::Context;
use crate::conv::implicit_image::WeightLayout;
use crate::conv::launch::{conv_shape, fit_one_binding, ConvBuffers};
use crate::conv::table::{gpus_only, Entry};
use crate::conv::Algorithm;
use crate::error::Result;
use crate::gpu::{launch_linear, u32_of, Bind};
use crate::kernels::conv2d_implicit_tiled::{TiledParams, TiledSpec};
use crate::kernels::k;
use crate::params::Conv2dProblem;

/// The forward entry: runs every problem whose tensors fit one binding; the heuristic picks
/// it on GPUs, the tuner times it only there (barriers are emulated on CPU adapters).
pub(crate) const FORWARD: Entry<Conv2dProblem, ConvBuffers> = Entry {
    algorithm: Algorithm::ImplicitGemmTiled,
    check: fit_one_binding,
    prefer: |ctx, _| !ctx.cpu_kernels(),
    tune: gpus_only,
    encode: |ctx, enc, p, b| encode_tiled_at(ctx, enc, p, b, 0, WeightLayout::forward(p)),
};

/// Output channels and pixels per workgroup tile of the tiled kernel.
const TILE_M: usize = 32;
const TILE_P: usize = 32;

/// Forward convolution `p` with the workgroup-memory implicit GEMM (the GPU variant),
/// reading x from element `x_base` of `&bufs.x`, weights laid out as `wl`. Runs on every
/// adapter; images are split into launches of at most 2^20 workgroups.
pub(crate) fn encode_tiled_at(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    bufs: &ConvBuffers,
    x_base: usize,
    wl: WeightLayout,
) -> Result<()> {
    let (kg, ohw) = (p.k_per_group(), p.oh * p.ow);
    if ohw == 0 || p.n == 0 || p.k == 0 {
        return Ok(());
    }
    let tiles_m = kg.div_ceil(TILE_M);
    let tiles_p = ohw.div_ceil(TILE_P);
    let per_image = tiles_m * tiles_p * p.groups;
    let images = ((1usize << 20) / per_image.max(1)).clamp(1, p.n);
    let mut u = TiledParams {
        shape: conv_shape(p)?,
        crs: u32_of(p.reduction_len(), "reduction length")?,
        g_stride: u32_of(wl.g_stride, "weight stride")?,
        k_stride: u32_of(wl.k_stride, "weight stride")?,
        c_stride: u32_of(wl.c_stride, "weight stride")?,
        tiles_m: u32_of(tiles_m, "tiles")?,
        tiles_p: u32_of(tiles_p, "tiles")?,
        ..Default::default()
    };
    let spec = TiledSpec {
        WG: 64,
        HAS_BIAS: bufs.b.is_some(),
        PAD_MODE: p.mode.code(),
        FLIP: p.flip,
    };
    let mut n0 = 0;
    while n0 < p.n {
        let nb = images.min(p.n - n0);
        u.x_off = u32_of(x_base + n0 * p.c * p.h * p.w, "input elements")?;
        u.y_off = u32_of(n0 * p.k * ohw, "output elements")?;
        u.batch = u32_of(nb * p.groups, "images x groups")?;
        let groups = per_image * nb;
        launch_linear::<k::Conv2dImplicitTiled>(
            ctx,
            enc,
            &spec,
            &mut u,
            |u, start| u.wg0 = start / 64,
            &[
                Bind::whole(&bufs.x),
                Bind::whole(&bufs.w),
                Bind::whole(bufs.b.as_ref().unwrap_or(&bufs.w)),
                Bind::whole(&bufs.y),
            ],
            (groups * 64) as u64,
        )?;
        n0 += nb;
    }
    Ok(())
}
