//! Weight gradient, depthwise algorithm: per-band partial sums of every tap, then a
//! fixed-order sum.

use super::{unwindowed, WgradArgs};
use crate::context::Context;
use crate::conv::forward::depthwise::{image_geom, supports};
use crate::conv::launch::conv_shape;
use crate::conv::table::{anywhere, need, Entry, Reason};
use crate::conv::Algorithm;
use crate::error::{Error, Result};
use crate::gpu::memory::{
    copy_flat_at, flat_image_fits, flat_rows_geom_of, flat_rows_image, FlatRows, ScratchBuffer,
};
use crate::gpu::{launch, launch_linear, u32_of, Bind};
use crate::kernels::conv2d_wgrad_depthwise::{
    WgradDepthwiseImageSpec, WgradDepthwiseParams, WgradDepthwiseSpec,
};
use crate::kernels::conv2d_wgrad_depthwise_nhwc::{
    WgradDepthwiseNhwcParams, WgradDepthwiseNhwcSpec, WDN_MAX,
};
use crate::kernels::k;
use crate::kernels::reduce_rows::{ReduceParams, ReduceSpec};
use crate::params::Conv2dProblem;
use crate::tensor::DType;

/// The weight-gradient entry: one input channel per group, kernels up to 7 wide.
pub(crate) const WEIGHT_GRAD: Entry<Conv2dProblem, WgradArgs> = Entry {
    algorithm: Algorithm::Depthwise,
    check,
    prefer: |_, p| p.groups > 1 && supports(p),
    tune: anywhere,
    encode: wgrad_depthwise,
};

fn check(ctx: &Context, p: &Conv2dProblem) -> Result<(), Reason> {
    unwindowed(ctx, p)?;
    need(
        wgrad_depthwise_supports(p),
        "needs one input channel per group and a kernel at most 7 wide",
    )
}

/// The image copies of x and dy for `conv2d_wgrad_depthwise_image` (`_f16`: `rgba16float`
/// copies of f16 x and dy), when the image kernel runs `p`.
fn wgrad_image_geoms_of(
    ctx: &Context,
    p: &Conv2dProblem,
    dtype: DType,
) -> Option<(FlatRows, FlatRows)> {
    // The forward image kernel's conditions, then x's rows in `dtype`.
    image_geom(ctx, p, 0, 0)?;
    let xg = flat_rows_geom_of(ctx, p.n.checked_mul(p.c)?.checked_mul(p.h)?, p.w, dtype)?;
    let dyg = flat_rows_geom_of(ctx, p.n.checked_mul(p.k)?.checked_mul(p.oh)?, p.ow, dtype)?;
    Some((xg, dyg))
}

/// Does the depthwise weight gradient read f16 x and dy itself for `p` (contiguous; the
/// image kernel on `rgba16float` copies, `conv2d_wgrad_depthwise_image_f16`)?
pub(crate) fn reads_f16(ctx: &Context, p: &Conv2dProblem) -> bool {
    wgrad_depthwise_supports(p) && wgrad_image_geoms_of(ctx, p, DType::F16).is_some()
}

/// Can `conv2d_wgrad_depthwise` compute the weight gradient of `p` (one input channel
/// per group, kernels up to 7 wide)?
pub(crate) fn wgrad_depthwise_supports(p: &Conv2dProblem) -> bool {
    p.c_per_group() == 1 && (1..=7).contains(&p.s)
}

/// Does `conv2d_wgrad_depthwise_nhwc` compute the weight gradient of `p` from channels-last
/// x and dy? CPU adapters, one input channel per group without multiplier, channels a
/// multiple of 4, kernels up to 3 x 3, column stride and dilation 1, x and dy within flat
/// image copies and the per-row partials within one binding.
pub(crate) fn nhwc_runs(ctx: &Context, p: &Conv2dProblem) -> bool {
    let partials = (p.n * p.oh * p.c * p.r * p.s * 4) as u64;
    ctx.cpu_kernels()
        && p.c_per_group() == 1
        && p.k_per_group() == 1
        && p.c.is_multiple_of(4)
        && p.r <= WDN_MAX
        && p.s <= WDN_MAX
        && p.stride[1] == 1
        && p.dilation[1] == 1
        && p.n * p.oh * p.ow > 0
        && flat_image_fits(ctx, 0, p.n * p.c * p.h * p.w)
        && flat_image_fits(ctx, 0, p.n * p.k * p.oh * p.ow)
        && partials <= ctx.limits().max_storage_buffer_binding_size
        && u32::try_from(p.n * p.oh * p.c / 4).is_ok()
}

/// The depthwise weight gradient of channels-last x and dy (only where [`nhwc_runs`]):
/// per-row partials of every tap (`conv2d_wgrad_depthwise_nhwc`), then their sum in row
/// order (`reduce_rows`, deterministic) into dw (`[C, 1, R, S]`).
fn wgrad_nhwc(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    a: &WgradArgs,
) -> Result<()> {
    let refuse_nhwc = || {
        crate::conv::refuse(
            Algorithm::Depthwise,
            "channels-last tensors need 4k channels, kernels up to 3x3 at column stride and \
             dilation 1, and tensors within image copies",
        )
    };
    if !nhwc_runs(ctx, p) {
        return Err(refuse_nhwc());
    }
    let xlen = p.n * p.c * p.h * p.w;
    let dylen = p.n * p.k * p.oh * p.ow;
    let (Some((ximg, tw)), Some((dyimg, dtw))) = (
        copy_flat_at(ctx, enc, (&a.x, 0), xlen, "wgconv depthwise nhwc x")?,
        copy_flat_at(ctx, enc, (&a.dy, 0), dylen, "wgconv depthwise nhwc dy")?,
    ) else {
        return Err(refuse_nhwc());
    };
    let rows = p.n * p.oh;
    let rs = p.r * p.s;
    let partial = ScratchBuffer::new(
        ctx,
        enc,
        (rows * p.c * rs * 4) as u64,
        "wgconv depthwise nhwc partials",
    )?;
    let total = rows * (p.c / 4);
    let spec = WgradDepthwiseNhwcSpec {
        WG: 64,
        R: p.r as u32,
        S: p.s as u32,
        PAD_MODE: p.mode.code(),
        FLIP: p.flip,
    };
    let mut u = WgradDepthwiseNhwcParams {
        shape: conv_shape(p)?,
        total: u32_of(total, "invocations")?,
        tw,
        tw_shift: tw.trailing_zeros(),
        dtw,
        dtw_shift: dtw.trailing_zeros(),
        ..Default::default()
    };
    launch_linear::<k::Conv2dWgradDepthwiseNhwc>(
        ctx,
        enc,
        &spec,
        &mut u,
        |u, t0| u.t0 = t0,
        &[
            Bind::Image(&ximg.view),
            Bind::Image(&dyimg.view),
            Bind::whole(&partial.buffer),
        ],
        total as u64,
    )?;
    // dw[c * RS + tap] = sum over rows of partial[(row * C + c) * RS + tap].
    sum_partials(ctx, enc, (&partial.buffer, rows, true), &a.dw, p.c * rs)
}

/// `dw[t] = Σ_j part[..]` over the `len` partial sums of each of the `taps` weights, in
/// order (deterministic, `reduce_rows`): partial j of weight t at `j * taps + t` when
/// `interleaved` (one row of partials per output row), else at `t * len + j` (bands).
fn sum_partials(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    (part, len, interleaved): (&wgpu::Buffer, usize, bool),
    dw: &wgpu::Buffer,
    taps: usize,
) -> Result<()> {
    let ru = ReduceParams {
        rows: u32_of(taps, "weights")?,
        len: u32_of(len, "partial sums")?,
        batch: 1,
        bstride: 0,
        total: u32_of(taps, "weights")?,
        cl_k: if interleaved {
            u32_of(taps, "weights")?
        } else {
            0
        },
        ..Default::default()
    };
    launch::<k::ReduceRows>(
        ctx,
        enc,
        &ReduceSpec::default(),
        &ru,
        &[Bind::whole(part), Bind::whole(dw)],
        taps as u64,
    )
}

/// Invocations the depthwise weight gradient aims for (bands of dy rows per (k, r)).
const WGRAD_DW_INVOCATIONS: usize = 4096;

/// Depthwise weight gradient: per-band partial sums of every tap, then their sum in band
/// order (deterministic).
fn wgrad_depthwise(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    a: &WgradArgs,
) -> Result<()> {
    if a.cl != [false; 2] {
        // Channels-last x and dy (see `band::weight_grad_reads_channels_last`).
        return wgrad_nhwc(ctx, enc, p, a);
    }
    let dtype = if a.f16 { DType::F16 } else { DType::F32 };
    let (x, dy, dw) = (&a.x, &a.dy, &a.dw);
    let rs = p.r * p.s;
    let taps = p.k * rs;
    if taps == 0 {
        return Ok(());
    }
    let nr = p.n * p.oh;
    if nr * p.ow == 0 {
        // No output pixels: the gradient is zero.
        enc.clear_buffer(dw, 0, Some((taps * 4) as u64));
        return Ok(());
    }
    // The partials (one `dw` per band) within one storage binding (`dw` itself fits one).
    let max_bands = (ctx.limits().max_storage_buffer_binding_size / (taps * 4) as u64)
        .clamp(1, nr as u64) as usize;
    let want = WGRAD_DW_INVOCATIONS
        .div_ceil(p.k * p.r)
        .clamp(1, nr)
        .min(max_bands);
    let rb = nr.div_ceil(want);
    let nb = nr.div_ceil(rb);
    let part = ScratchBuffer::new(
        ctx,
        enc,
        (taps * nb * 4) as u64,
        "wgconv depthwise weight-gradient partials",
    )?;
    let total = p.k * p.r * nb;
    let mut u = WgradDepthwiseParams {
        shape: conv_shape(p)?,
        nr: u32_of(nr, "output rows")?,
        rb: u32_of(rb, "rows per band")?,
        nb: u32_of(nb, "bands")?,
        total: u32_of(total, "invocations")?,
        ..Default::default()
    };
    let pbind = Bind::whole(&part.buffer);
    let geoms = wgrad_image_geoms_of(ctx, p, dtype);
    if a.f16 && geoms.is_none() {
        // `reads_f16` said otherwise: never read f16 words as f32.
        return Err(Error::library_bug(
            "recording a depthwise weight gradient",
            "f16 operands without the f16 image kernel",
        ));
    }
    if let Some((xg, dyg)) = geoms {
        // CPU adapters: x and dy read from image copies.
        let ximg = flat_rows_image(
            ctx,
            enc,
            (x, 0),
            p.n * p.c * p.h * p.w / 4,
            xg,
            "wgconv depthwise weight-gradient x",
        )?;
        let dyimg = flat_rows_image(
            ctx,
            enc,
            (dy, 0),
            p.n * p.k * p.oh * p.ow / 4,
            dyg,
            "wgconv depthwise weight-gradient dy",
        )?;
        u.x_rows_shift = xg.rows_per.trailing_zeros();
        u.dy_rows_shift = dyg.rows_per.trailing_zeros();
        let spec = WgradDepthwiseImageSpec {
            S: p.s as u32,
            PAD_LEFT: p.pad[2] as u32,
            FLIP: p.flip,
            ..Default::default()
        };
        let binds = [Bind::Image(&ximg.view), Bind::Image(&dyimg.view), pbind];
        if a.f16 {
            launch::<k::Conv2dWgradDepthwiseImageF16>(ctx, enc, &spec, &u, &binds, total as u64)?;
        } else {
            launch::<k::Conv2dWgradDepthwiseImage>(ctx, enc, &spec, &u, &binds, total as u64)?;
        }
    } else {
        let spec = WgradDepthwiseSpec {
            S: p.s as u32,
            COLS1: p.stride[1] == 1 && p.dilation[1] == 1,
            PAD_MODE: p.mode.code(),
            FLIP: p.flip,
            ..Default::default()
        };
        launch::<k::Conv2dWgradDepthwise>(
            ctx,
            enc,
            &spec,
            &u,
            &[Bind::whole(x), Bind::whole(dy), pbind],
            total as u64,
        )?;
    }
    sum_partials(ctx, enc, (&part.buffer, nb, false), dw, taps)
}
