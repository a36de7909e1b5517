//! Convolution gradients (input, weight, bias) and the transposed convolution.
//!
//! Every kernel here is a gather with a fixed summation order: no atomics, so the same
//! inputs give the same bits on every run.

use crate::context::Context;
use crate::conv::direct::{i32_of, u32_of};
use crate::conv::im2col::{im2col_key, is_pointwise, Im2colUniforms};
use crate::conv::Algorithm;
use crate::error::{Error, ErrorKind, Result};
use crate::gemm::{auto_for_b, encode_job, pack, GemmJob, GemmVariant, Mat};
use crate::kernels::{dispatch, fits, max_window_elems, window, Bind, Kernel, PipelineKey};
use crate::params::{Conv2dProblem, PaddingMode};
use crate::tensor::DeviceBuffer;
use crate::tune::TunedOp;

/// Uniforms of `conv2d_dgrad.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct DgradUniforms {
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
    dy_off: u32,
    w_off: u32,
    b_off: u32,
    dx_off: u32,
    cblocks: u32,
    xblocks: u32,
    total: u32,
    k_lo: u32,
    k_cnt: u32,
    cb_lo: u32,
    cbt: u32,
    iy0: u32,
    rows: u32,
    _p0: u32,
    _p1: u32,
}

/// Uniforms of `col2im.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Col2imUniforms {
    n: u32,
    c: u32,
    h: u32,
    w: u32,
    cg: u32,
    groups: u32,
    r: u32,
    s: u32,
    oh: u32,
    ow: u32,
    sh: u32,
    sw: u32,
    dh: u32,
    dw: u32,
    pad_top: i32,
    pad_left: i32,
    dx_off: u32,
    p0: u32,
    np: u32,
    ldp: u32,
    total: u32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

/// Uniforms of `pad_fold.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct PadFoldUniforms {
    planes: u32,
    h: u32,
    w: u32,
    hp: u32,
    wp: u32,
    top: u32,
    left: u32,
    bottom: u32,
    right: u32,
    total: u32,
    dst_off: u32,
    _p1: u32,
}

/// Uniforms of `scatter_strided.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct ScatterUniforms {
    planes: u32,
    h: u32,
    w: u32,
    oh: u32,
    ow: u32,
    sh: u32,
    sw: u32,
    top: u32,
    left: u32,
    c: u32,
    total: u32,
    t0: u32,
}

/// Uniforms of `conv2d_wgrad.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct WgradUniforms {
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
    kblocks: u32,
    sblocks: u32,
    total: u32,
    x_off: u32,
    dy_off: u32,
    dw_off: u32,
    kb_lo: u32,
    kbt: u32,
    c_lo: u32,
    c_cnt: u32,
    oy0: u32,
    oy_cnt: u32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

/// Uniforms of `reduce_rows.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct ReduceUniforms {
    rows: u32,
    len: u32,
    batch: u32,
    bstride: u32,
    total: u32,
    src_off: u32,
    dst_off: u32,
    _p2: u32,
}

/// Uniforms of `reduce_rows_image.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct ReduceImageUniforms {
    rows: u32,
    len: u32,
    batch: u32,
    bstride: u32,
    total: u32,
    tw_shift: u32,
    _p0: u32,
    _p1: u32,
}

/// Uniforms of `conv2d_wgrad_depthwise.wgsl` and `conv2d_wgrad_depthwise_image.wgsl` (the
/// image kernel also reads `x_rows_shift` / `dy_rows_shift`: log2 of the tensor rows per
/// texture row of its two images).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct WgradDepthwiseUniforms {
    n: u32,
    c: u32,
    h: u32,
    w: u32,
    k: u32,
    kg: u32,
    r: u32,
    oh: u32,
    ow: u32,
    sh: u32,
    sw: u32,
    dh: u32,
    dw: u32,
    pad_top: i32,
    pad_left: i32,
    nr: u32,
    rb: u32,
    nb: u32,
    total: u32,
    x_rows_shift: u32,
    dy_rows_shift: u32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

/// Uniforms of `permute_kc.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct PermuteUniforms {
    groups: u32,
    kg: u32,
    cg: u32,
    rs: u32,
    total: u32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

/// Runs the stride-1 input gradient through the forward im2col + GEMM path.
#[allow(clippy::too_many_arguments)]
fn dgrad_as_forward(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    q: &Conv2dProblem,
    p: &Conv2dProblem,
    dy: &wgpu::Buffer,
    dy_off: usize,
    w: &wgpu::Buffer,
    bias: Option<&wgpu::Buffer>,
    dx: &wgpu::Buffer,
) -> Result<()> {
    let rs = p.r * p.s;
    let len = p.k * p.c_per_group() * rs;
    let wt = DeviceBuffer::new(ctx, (len * 4) as u64, "wgconv permuted weights")?;
    let key = PipelineKey::new(Kernel::PermuteKc).with("WG", 64);
    let u = PermuteUniforms {
        groups: u32_of(p.groups, "groups")?,
        kg: u32_of(p.k_per_group(), "channels")?,
        cg: u32_of(p.c_per_group(), "channels")?,
        rs: u32_of(rs, "taps")?,
        total: u32_of(len, "weights")?,
        ..Default::default()
    };
    dispatch(
        ctx,
        enc,
        &key,
        bytemuck::bytes_of(&u),
        &[Bind::whole(w), Bind::whole(&wt.buffer)],
        len as u64,
    )?;
    let bufs = crate::conv::im2col::ConvBuffers {
        x: dy,
        w: &wt.buffer,
        b: bias,
        y: dx,
        w_key: None,
    };
    crate::conv::im2col::encode_im2col_at(ctx, enc, q, &bufs, dy_off)
}

fn unsupported(algo: Algorithm, reason: &str) -> Error {
    Error::new(ErrorKind::UnsupportedAlgorithm {
        algorithm: algo.name(),
        reason: reason.into(),
    })
}

/// Does the problem read padded positions through a non-zero padding mode?
fn needs_fold(p: &Conv2dProblem) -> bool {
    p.mode != PaddingMode::Zeros && p.pad.iter().any(|&v| v > 0)
}

/// The same convolution on the explicitly padded input (zero padding of 0): its input
/// gradient is the gradient of the padded tensor, which `pad_fold` folds back.
fn padded_problem(p: &Conv2dProblem) -> Conv2dProblem {
    Conv2dProblem {
        h: p.h + (p.pad[0] + p.pad[1]) as usize,
        w: p.w + (p.pad[2] + p.pad[3]) as usize,
        pad: [0; 4],
        mode: PaddingMode::Zeros,
        ..*p
    }
}

/// For a strided 1x1 zero-padded `p` (top/left padding >= 0): the 1x1 stride-1 forward
/// problem on dy, with p's input channels as its output channels, whose output `G` (the
/// gradient of the sampled pixels) `scatter_strided.wgsl` spreads onto dx; `None` otherwise
/// or when the implicit GEMM cannot run it.
pub(crate) fn strided_pointwise_as_forward(
    ctx: &Context,
    p: &Conv2dProblem,
) -> Option<Conv2dProblem> {
    if p.r * p.s != 1
        || p.stride == [1, 1]
        || p.mode != PaddingMode::Zeros
        || p.pad[0] < 0
        || p.pad[2] < 0
    {
        return None;
    }
    let q = Conv2dProblem {
        c: p.k,
        h: p.oh,
        w: p.ow,
        k: p.c,
        stride: [1, 1],
        dilation: [1, 1],
        pad: [0; 4],
        flip: false,
        has_bias: false,
        ..*p
    };
    let scratch = (q.n * q.k * q.oh * q.ow * 4) as u64;
    let fits = scratch
        <= ctx
            .limits()
            .max_storage_buffer_binding_size
            .min(ctx.scratch_budget());
    (fits && crate::conv::implicit::runnable(ctx, &q)).then_some(q)
}

/// Can the implicit GEMM run the input gradient of `p` (as a forward convolution, or as a
/// strided 1x1 one plus a scatter)?
pub(crate) fn dgrad_implicit_runnable(ctx: &Context, p: &Conv2dProblem) -> bool {
    crate::conv::implicit::dgrad_as_forward(ctx, p, false).is_some()
        || strided_pointwise_as_forward(ctx, &padded_problem(p)).is_some()
}

/// Input gradient of strided 1x1 `p` through the forward problem `q`
/// ([`strided_pointwise_as_forward`]) into scratch, scattered onto dx (plus the bias).
#[allow(clippy::too_many_arguments)]
fn dgrad_strided_pointwise(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    q: &Conv2dProblem,
    dy: &wgpu::Buffer,
    dy_off: usize,
    w: &wgpu::Buffer,
    bias: Option<&wgpu::Buffer>,
    dx: &wgpu::Buffer,
) -> Result<()> {
    let g = DeviceBuffer::new(
        ctx,
        (q.n * q.k * q.oh * q.ow * 4) as u64,
        "wgconv sampled-pixel input gradient",
    )?;
    let bufs = crate::conv::im2col::ConvBuffers {
        x: dy,
        w,
        b: None,
        y: &g.buffer,
        w_key: None,
    };
    crate::conv::implicit::encode_at(
        ctx,
        enc,
        q,
        &bufs,
        dy_off,
        crate::conv::implicit::WeightLayout::input_gradient(p),
    )?;
    let rows = p.n * p.c * p.h;
    let u = ScatterUniforms {
        planes: u32_of(p.n * p.c, "planes")?,
        h: u32_of(p.h, "height")?,
        w: u32_of(p.w, "width")?,
        oh: u32_of(p.oh, "output height")?,
        ow: u32_of(p.ow, "output width")?,
        sh: u32_of(p.stride[0], "stride")?,
        sw: u32_of(p.stride[1], "stride")?,
        top: u32_of(p.pad[0] as usize, "padding")?,
        left: u32_of(p.pad[2] as usize, "padding")?,
        c: u32_of(p.c, "channels")?,
        total: u32_of(rows, "rows")?,
        t0: 0,
    };
    let key = PipelineKey::new(Kernel::ScatterStrided)
        .with("WG", 64)
        .with("HAS_BIAS", bias.is_some() as u32);
    let wg = key.workgroup_size() as u64;
    let mut u = u;
    crate::gemm::split_dispatches(ctx, rows as u64, wg, |start, count| {
        u.t0 = u32_of(start as usize, "rows")?;
        dispatch(
            ctx,
            enc,
            &key,
            bytemuck::bytes_of(&u),
            &[
                Bind::whole(&g.buffer),
                Bind::whole(bias.unwrap_or(&g.buffer)),
                Bind::whole(dx),
            ],
            count,
        )
    })
}

/// Auto choice for the input gradient / transposed convolution.
pub(crate) fn select_dgrad(ctx: &Context, p: &Conv2dProblem) -> Algorithm {
    if is_pointwise(p) {
        Algorithm::Gemm1x1
    } else if crate::conv::depthwise::dgrad_as_forward(p).is_some() {
        Algorithm::Depthwise
    } else if p.k_per_group() < 4 || p.reduction_len() < 16 {
        Algorithm::Direct
    } else if p.k_per_group() >= 8
        && strided_pointwise_as_forward(ctx, &padded_problem(p)).is_some()
    {
        // Strided 1x1 (a downsampling shortcut): the implicit GEMM on dy plus a scatter.
        Algorithm::ImplicitGemm
    } else if p.stride != [1, 1]
        && p.c_per_group() <= 16
        && crate::conv::phase::supports(ctx, &padded_problem(p))
    {
        // Strided, few input channels (a network's first layers), CPU adapters: the phase
        // kernel (no column matrix).
        Algorithm::Direct
    } else if p.k_per_group() >= 8
        && p.r * p.s > 1
        && crate::conv::implicit::dgrad_as_forward(ctx, p, false).is_some()
    {
        Algorithm::ImplicitGemm
    } else {
        Algorithm::Im2colGemm
    }
}

/// Auto choice for the weight gradient.
pub(crate) fn select_wgrad(ctx: &Context, p: &Conv2dProblem) -> Algorithm {
    if p.groups > 1 && wgrad_depthwise_supports(p) && crate::conv::depthwise::supports(p) {
        Algorithm::Depthwise
    } else if p.c_per_group() == 1 || p.k_per_group() < 4 {
        Algorithm::Direct
    } else if p.c_per_group() >= 8 && p.r * p.s > 1 && crate::conv::implicit::wgrad_runnable(ctx, p)
    {
        Algorithm::ImplicitGemm
    } else {
        Algorithm::Im2colGemm
    }
}

/// Input gradient `dx` (`[N, C, H, W]`) of the forward `p` from `dy` (`[N, K, Ho, Wo]`);
/// with `bias` (length C) this is the transposed convolution of `dy`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode_dgrad(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    dy: &wgpu::Buffer,
    w: &wgpu::Buffer,
    bias: Option<&wgpu::Buffer>,
    dx: &wgpu::Buffer,
    algo: Algorithm,
) -> Result<()> {
    // Split plane by plane when a tensor, or the padded gradient of one image, exceeds a
    // storage binding.
    let pp = padded_problem(p);
    let padded_image = if needs_fold(p) { p.c * pp.h * pp.w } else { 0 };
    let windowed =
        !(fits(ctx, dy) && fits(ctx, dx) && fits(ctx, w)) || padded_image > max_window_elems(ctx);
    let algo = match algo {
        Algorithm::Auto if windowed => Algorithm::Direct,
        Algorithm::Auto => ctx.choose(TunedOp::BackwardInput, p, select_dgrad(ctx, p)),
        Algorithm::Gemm1x1 if !is_pointwise(p) => {
            return Err(unsupported(
                algo,
                "needs a 1x1 kernel, stride 1 and no padding",
            ))
        }
        a => a,
    };
    if windowed {
        if algo != Algorithm::Direct {
            return Err(unsupported(
                algo,
                "tensors larger than one storage binding are split only by the direct algorithm",
            ));
        }
        return dgrad_windowed(ctx, enc, p, dy, w, bias, dx);
    }
    if !needs_fold(p) {
        return dgrad_zero_padded_at(ctx, enc, p, dy, 0, w, bias, dx, algo);
    }
    // Gradient of the padded input in bounded scratch (image by image if needed), folded
    // back onto dx.
    let per_image = (p.c * pp.h * pp.w * 4) as u64;
    let budget = ctx
        .scratch_budget()
        .min(ctx.limits().max_storage_buffer_binding_size);
    let images = ((budget / per_image.max(1)) as usize).clamp(1, p.n);
    let scratch = DeviceBuffer::new(
        ctx,
        per_image * images as u64,
        "wgconv padded input gradient",
    )?;
    let key = PipelineKey::new(Kernel::PadFold)
        .with("WG", 64)
        .with("PAD_MODE", p.mode.code());
    let mut n0 = 0;
    while n0 < p.n {
        let nb = images.min(p.n - n0);
        let sub = Conv2dProblem { n: nb, ..pp };
        let dy_off = n0 * p.k * p.oh * p.ow;
        dgrad_zero_padded_at(ctx, enc, &sub, dy, dy_off, w, None, &scratch.buffer, algo)?;
        let total = nb * p.c * p.h * p.w;
        let u = PadFoldUniforms {
            planes: u32_of(nb * p.c, "planes")?,
            h: u32_of(p.h, "height")?,
            w: u32_of(p.w, "width")?,
            hp: u32_of(pp.h, "height")?,
            wp: u32_of(pp.w, "width")?,
            top: u32_of(p.pad[0] as usize, "padding")?,
            left: u32_of(p.pad[2] as usize, "padding")?,
            bottom: u32_of(p.pad[1] as usize, "padding")?,
            right: u32_of(p.pad[3] as usize, "padding")?,
            total: u32_of(total, "elements")?,
            dst_off: u32_of(n0 * p.c * p.h * p.w, "elements")?,
            _p1: 0,
        };
        dispatch(
            ctx,
            enc,
            &key,
            bytemuck::bytes_of(&u),
            &[Bind::whole(&scratch.buffer), Bind::whole(dx)],
            total as u64,
        )?;
        n0 += nb;
    }
    Ok(())
}

/// Zero-padding input gradient of `p` (its `n` images), reading dy from element `dy_off`
/// and writing dx from element 0.
#[allow(clippy::too_many_arguments)]
fn dgrad_zero_padded_at(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    dy: &wgpu::Buffer,
    dy_off: usize,
    w: &wgpu::Buffer,
    bias: Option<&wgpu::Buffer>,
    dx: &wgpu::Buffer,
    algo: Algorithm,
) -> Result<()> {
    if matches!(algo, Algorithm::Depthwise) {
        if let Some(q) = crate::conv::depthwise::dgrad_as_forward(p) {
            let q = Conv2dProblem {
                has_bias: bias.is_some(),
                ..q
            };
            return crate::conv::depthwise::encode_at(ctx, enc, &q, (dy, dy_off), w, bias, (dx, 0));
        }
    }
    if algo == Algorithm::ImplicitGemm {
        if let Some(q) = strided_pointwise_as_forward(ctx, p) {
            return dgrad_strided_pointwise(ctx, enc, p, &q, dy, dy_off, w, bias, dx);
        }
    }
    let implicit = match algo {
        Algorithm::ImplicitGemm => crate::conv::implicit::dgrad_as_forward(ctx, p, bias.is_some()),
        Algorithm::ImplicitGemmTiled => p
            .input_gradient_as_forward(bias.is_some())
            .map(|q| (q, crate::conv::implicit::WeightLayout::input_gradient(p))),
        _ => None,
    };
    if let Some((q, layout)) = implicit {
        let bufs = crate::conv::im2col::ConvBuffers {
            x: dy,
            w,
            b: bias,
            y: dx,
            w_key: None,
        };
        return if algo == Algorithm::ImplicitGemm {
            crate::conv::implicit::encode_at(ctx, enc, &q, &bufs, dy_off, layout)
        } else {
            crate::conv::implicit::encode_tiled_at(ctx, enc, &q, &bufs, dy_off, layout)
        };
    }
    match algo {
        Algorithm::Gemm1x1 => dgrad_pointwise(ctx, enc, p, dy, dy_off, w, bias, dx),
        Algorithm::Im2colGemm | Algorithm::ImplicitGemm | Algorithm::ImplicitGemmTiled => {
            match p.input_gradient_as_forward(bias.is_some()) {
                Some(q) => dgrad_as_forward(ctx, enc, &q, p, dy, dy_off, w, bias, dx),
                None => dgrad_col2im(ctx, enc, p, dy, dy_off, w, bias, dx),
            }
        }
        Algorithm::Direct if p.stride != [1, 1] && crate::conv::phase::supports(ctx, p) => {
            crate::conv::phase::encode(ctx, enc, p, dy, dy_off, w, bias, dx)
        }
        _ => dgrad_direct(ctx, enc, p, dy, dy_off, w, bias, dx),
    }
}

fn dgrad_key(p: &Conv2dProblem, cb: usize, bias: bool, accumulate: bool) -> PipelineKey {
    PipelineKey::new(Kernel::Conv2dDgrad)
        .with("WG", 64)
        .with("CB", cb as u32)
        .with("HAS_BIAS", bias as u32)
        .with("FLIP", p.flip as u32)
        .with("ACCUMULATE", accumulate as u32)
}

fn dgrad_uniforms(p: &Conv2dProblem, cb: usize) -> Result<DgradUniforms> {
    let cg = p.c_per_group();
    let cblocks = cg.div_ceil(cb);
    Ok(DgradUniforms {
        n: 1,
        c: u32_of(p.c, "channels")?,
        h: u32_of(p.h, "height")?,
        w: u32_of(p.w, "width")?,
        k: u32_of(p.k, "output channels")?,
        r: u32_of(p.r, "kernel height")?,
        s: u32_of(p.s, "kernel width")?,
        cg: u32_of(cg, "channels per group")?,
        kg: u32_of(p.k_per_group(), "output channels per group")?,
        oh: u32_of(p.oh, "output height")?,
        ow: u32_of(p.ow, "output width")?,
        sh: u32_of(p.stride[0], "stride")?,
        sw: u32_of(p.stride[1], "stride")?,
        dh: u32_of(p.dilation[0], "dilation")?,
        dw: u32_of(p.dilation[1], "dilation")?,
        pad_top: i32_of(p.pad[0], "padding")?,
        pad_left: i32_of(p.pad[2], "padding")?,
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

#[allow(clippy::too_many_arguments)]
fn dgrad_direct(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    dy: &wgpu::Buffer,
    dy_off: usize,
    w: &wgpu::Buffer,
    bias: Option<&wgpu::Buffer>,
    dx: &wgpu::Buffer,
) -> Result<()> {
    let cb = p.c_per_group().min(4);
    let key = dgrad_key(p, cb, bias.is_some(), false);
    let mut u = dgrad_uniforms(p, cb)?;
    let per_image = (u.cbt * u.rows * u.sw * u.xblocks) as usize;
    let limit = 1usize << 30;
    let images_per_launch = (limit / per_image.max(1)).clamp(1, p.n);
    let mut n0 = 0;
    while n0 < p.n {
        let nb = images_per_launch.min(p.n - n0);
        let total = nb * per_image;
        u.n = u32_of(nb, "images")?;
        u.dy_off = u32_of(dy_off + n0 * p.k * p.oh * p.ow, "elements")?;
        u.dx_off = u32_of(n0 * p.c * p.h * p.w, "elements")?;
        u.total = u32_of(total, "invocations")?;
        dispatch(
            ctx,
            enc,
            &key,
            bytemuck::bytes_of(&u),
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
    let mut u = dgrad_uniforms(p, 1)?;
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
        let key = dgrad_key(p, 1, bias.is_some(), k0 > 0);
        dispatch(
            ctx,
            enc,
            &key,
            bytemuck::bytes_of(&u),
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
fn dgrad_windowed(
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
        let scratch = DeviceBuffer::new(ctx, (plane * 4) as u64, "wgconv padded plane gradient")?;
        let key = PipelineKey::new(Kernel::PadFold)
            .with("WG", 64)
            .with("PAD_MODE", p.mode.code());
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
                let u = PadFoldUniforms {
                    planes: 1,
                    h: u32_of(p.h, "height")?,
                    w: u32_of(p.w, "width")?,
                    hp: u32_of(pp.h, "height")?,
                    wp: u32_of(pp.w, "width")?,
                    top: u32_of(p.pad[0] as usize, "padding")?,
                    left: u32_of(p.pad[2] as usize, "padding")?,
                    bottom: u32_of(p.pad[1] as usize, "padding")?,
                    right: u32_of(p.pad[3] as usize, "padding")?,
                    total: u32_of(hw, "elements")?,
                    dst_off: dst_off.wrapping_add(lo as u32),
                    _p1: 0,
                };
                dispatch(
                    ctx,
                    enc,
                    &key,
                    bytemuck::bytes_of(&u),
                    &[Bind::whole(&scratch.buffer), dst],
                    hw as u64,
                )?;
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

/// 1x1, stride 1, no padding: `dx[n, g] = W_gᵀ · dy[n, g]`, one GEMM.
#[allow(clippy::too_many_arguments)]
fn dgrad_pointwise(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    dy: &wgpu::Buffer,
    dy_off: usize,
    w: &wgpu::Buffer,
    bias: Option<&wgpu::Buffer>,
    dx: &wgpu::Buffer,
) -> Result<()> {
    let (cg, kg, hw) = (p.c_per_group(), p.k_per_group(), p.h * p.w);
    let variant = auto_for_b(ctx, hw % 4 == 0 && dy_off.is_multiple_of(4));
    let job = GemmJob {
        m: cg,
        n: hw,
        k: kg,
        batch_outer: p.n,
        batch_inner: p.groups,
        // A[m = c, k] = w[k, c]: K-major with leading dimension cg.
        a: Mat {
            win: None,
            buf: w,
            off: 0,
            ld: cg,
            si: kg * cg,
            so: 0,
        },
        a_km: true,
        b: Mat {
            win: None,
            buf: dy,
            off: dy_off,
            ld: hw,
            si: kg * hw,
            so: p.k * hw,
        },
        b_kn: true,
        c: Mat {
            win: None,
            buf: dx,
            off: 0,
            ld: hw,
            si: cg * hw,
            so: p.c * hw,
        },
        c_col_stride: 1,
        bias: bias.map(|b| (b, 0, cg, 1)),
        accumulate: false,
    };
    encode_job(ctx, enc, &job, variant)
}

/// GEMM into a column-gradient matrix, then a gathered col2im; split over images and
/// output-pixel ranges within the scratch budget.
#[allow(clippy::too_many_arguments)]
fn dgrad_col2im(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    dy: &wgpu::Buffer,
    dy_off: usize,
    w: &wgpu::Buffer,
    bias: Option<&wgpu::Buffer>,
    dx: &wgpu::Buffer,
) -> Result<()> {
    let crs = p.reduction_len();
    let (kg, ohw) = (p.k_per_group(), p.oh * p.ow);
    let full_crs = crs * p.groups;
    let budget = ctx
        .scratch_budget()
        .min(ctx.limits().max_storage_buffer_binding_size)
        .max(4096) as usize;
    let row_bytes = full_crs * 4;
    let per_image = row_bytes * ohw.div_ceil(4) * 4;
    let (images, np) = if per_image <= budget {
        ((budget / per_image).clamp(1, p.n), ohw)
    } else {
        (1, ((budget / row_bytes) / 4 * 4).max(4).min(ohw))
    };
    let ldp = np.div_ceil(4) * 4;
    let dcol = DeviceBuffer::new(
        ctx,
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
    let a = if crate::gemm::vec4_ready(&wmat, true) {
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
            };
            let variant = auto_for_b(ctx, ohw % 4 == 0 && off.is_multiple_of(4));
            encode_job(ctx, enc, &job, variant)?;
            let first = p0 == 0;
            let key = PipelineKey::new(Kernel::Col2im)
                .with("WG", 64)
                .with("FLIP", p.flip as u32)
                .with("ACCUMULATE", !first as u32)
                .with("HAS_BIAS", (first && bias.is_some()) as u32);
            let total = nb * x_img;
            let u = Col2imUniforms {
                n: u32_of(nb, "images")?,
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
                dx_off: u32_of(n0 * x_img, "elements")?,
                p0: u32_of(p0, "pixels")?,
                np: u32_of(cnt, "pixels")?,
                ldp: u32_of(ld, "pixels")?,
                total: u32_of(total, "elements")?,
                ..Default::default()
            };
            dispatch(
                ctx,
                enc,
                &key,
                bytemuck::bytes_of(&u),
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

/// Weight gradient `dw` (`[K, C/g, R, S]`) from `x` and `dy`.
pub(crate) fn encode_wgrad(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    x: &wgpu::Buffer,
    dy: &wgpu::Buffer,
    dw: &wgpu::Buffer,
    algo: Algorithm,
) -> Result<()> {
    let fits_all = fits(ctx, x) && fits(ctx, dy) && fits(ctx, dw);
    match algo {
        Algorithm::Auto if !fits_all => wgrad_direct(ctx, enc, p, x, dy, dw),
        Algorithm::Auto => {
            let algo = ctx.choose(TunedOp::BackwardWeight, p, select_wgrad(ctx, p));
            encode_wgrad(ctx, enc, p, x, dy, dw, algo)
        }
        a if !fits_all && a != Algorithm::Direct => Err(unsupported(
            a,
            "tensors larger than one storage binding are split only by the direct algorithm",
        )),
        Algorithm::Gemm1x1 if !is_pointwise(p) => Err(unsupported(
            algo,
            "needs a 1x1 kernel, stride 1 and no padding",
        )),
        Algorithm::ImplicitGemm if crate::conv::implicit::wgrad_runnable(ctx, p) => {
            crate::conv::implicit::encode_wgrad(ctx, enc, p, x, dy, dw)
        }
        Algorithm::Depthwise if wgrad_depthwise_supports(p) => {
            wgrad_depthwise(ctx, enc, p, x, dy, dw)
        }
        Algorithm::Gemm1x1
        | Algorithm::Im2colGemm
        | Algorithm::ImplicitGemm
        | Algorithm::ImplicitGemmTiled => wgrad_gemm(ctx, enc, p, x, dy, dw),
        _ => wgrad_direct(ctx, enc, p, x, dy, dw),
    }
}

/// Can `conv2d_wgrad_depthwise.wgsl` compute the weight gradient of `p` (one input channel
/// per group, kernels up to 7 wide)?
pub(crate) fn wgrad_depthwise_supports(p: &Conv2dProblem) -> bool {
    p.c_per_group() == 1 && (1..=7).contains(&p.s)
}

/// Invocations the depthwise weight gradient aims for (bands of dy rows per (k, r)).
const WGRAD_DW_INVOCATIONS: usize = 4096;

/// Depthwise weight gradient: per-band partial sums of every tap, then their sum in band
/// order (deterministic).
fn wgrad_depthwise(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    x: &wgpu::Buffer,
    dy: &wgpu::Buffer,
    dw: &wgpu::Buffer,
) -> Result<()> {
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
    let want = WGRAD_DW_INVOCATIONS.div_ceil(p.k * p.r).clamp(1, nr);
    let rb = nr.div_ceil(want);
    let nb = nr.div_ceil(rb);
    let part = DeviceBuffer::new(
        ctx,
        (taps * nb * 4) as u64,
        "wgconv depthwise weight-gradient partials",
    )?;
    let total = p.k * p.r * nb;
    let mut u = WgradDepthwiseUniforms {
        n: u32_of(p.n, "images")?,
        c: u32_of(p.c, "channels")?,
        h: u32_of(p.h, "height")?,
        w: u32_of(p.w, "width")?,
        k: u32_of(p.k, "output channels")?,
        kg: u32_of(p.k_per_group(), "channel multiplier")?,
        r: u32_of(p.r, "kernel height")?,
        oh: u32_of(p.oh, "output height")?,
        ow: u32_of(p.ow, "output width")?,
        sh: u32_of(p.stride[0], "stride")?,
        sw: u32_of(p.stride[1], "stride")?,
        dh: u32_of(p.dilation[0], "dilation")?,
        dw: u32_of(p.dilation[1], "dilation")?,
        pad_top: i32_of(p.pad[0], "padding")?,
        pad_left: i32_of(p.pad[2], "padding")?,
        nr: u32_of(nr, "output rows")?,
        rb: u32_of(rb, "rows per band")?,
        nb: u32_of(nb, "bands")?,
        total: u32_of(total, "invocations")?,
        ..Default::default()
    };
    let pbind = Bind::whole(&part.buffer);
    if let Some((xg, dyg)) = crate::conv::depthwise::wgrad_image_geoms(ctx, p) {
        // CPU adapters: x and dy read from image copies.
        let ximg = crate::conv::depthwise::flat_rows_image(
            ctx,
            enc,
            (x, 0),
            p.n * p.c * p.h * p.w / 4,
            xg,
            "wgconv depthwise weight-gradient x",
        )?;
        let dyimg = crate::conv::depthwise::flat_rows_image(
            ctx,
            enc,
            (dy, 0),
            p.n * p.k * p.oh * p.ow / 4,
            dyg,
            "wgconv depthwise weight-gradient dy",
        )?;
        u.x_rows_shift = xg.rows_per.trailing_zeros();
        u.dy_rows_shift = dyg.rows_per.trailing_zeros();
        let key = PipelineKey::new(Kernel::Conv2dWgradDepthwiseImage)
            .with("WG", 64)
            .with("S", p.s as u32)
            .with("PAD_LEFT", p.pad[2] as u32)
            .with("FLIP", p.flip as u32);
        dispatch(
            ctx,
            enc,
            &key,
            bytemuck::bytes_of(&u),
            &[Bind::Image(&ximg.view), Bind::Image(&dyimg.view), pbind],
            total as u64,
        )?;
    } else {
        let key = PipelineKey::new(Kernel::Conv2dWgradDepthwise)
            .with("WG", 64)
            .with("S", p.s as u32)
            .with("COLS1", (p.stride[1] == 1 && p.dilation[1] == 1) as u32)
            .with("PAD_MODE", p.mode.code())
            .with("FLIP", p.flip as u32);
        dispatch(
            ctx,
            enc,
            &key,
            bytemuck::bytes_of(&u),
            &[Bind::whole(x), Bind::whole(dy), pbind],
            total as u64,
        )?;
    }
    let ru = ReduceUniforms {
        rows: u32_of(taps, "weights")?,
        len: u32_of(nb, "bands")?,
        batch: 1,
        bstride: 0,
        total: u32_of(taps, "weights")?,
        ..Default::default()
    };
    dispatch(
        ctx,
        enc,
        &PipelineKey::new(Kernel::ReduceRows)
            .with("WG", 64)
            .with("ACCUMULATE", 0),
        bytemuck::bytes_of(&ru),
        &[Bind::whole(&part.buffer), Bind::whole(dw)],
        taps as u64,
    )
}

fn wgrad_key(p: &Conv2dProblem, kb: usize, accumulate: bool) -> PipelineKey {
    PipelineKey::new(Kernel::Conv2dWgrad)
        .with("WG", 64)
        .with("KB", kb as u32)
        .with("PAD_MODE", p.mode.code())
        .with("FLIP", p.flip as u32)
        .with("ACCUMULATE", accumulate as u32)
}

fn wgrad_uniforms(p: &Conv2dProblem, kb: usize) -> Result<WgradUniforms> {
    let kg = p.k_per_group();
    let kblocks = kg.div_ceil(kb);
    Ok(WgradUniforms {
        n: u32_of(p.n, "images")?,
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
    x: &wgpu::Buffer,
    dy: &wgpu::Buffer,
    dw: &wgpu::Buffer,
) -> Result<()> {
    if !(fits(ctx, x) && fits(ctx, dy) && fits(ctx, dw)) {
        return wgrad_windowed(ctx, enc, p, x, dy, dw);
    }
    let kb = p.k_per_group().min(4);
    let mut u = wgrad_uniforms(p, kb)?;
    let total = (u.sblocks * u.r * u.c_cnt * u.kbt) as usize;
    u.total = u32_of(total, "invocations")?;
    dispatch(
        ctx,
        enc,
        &wgrad_key(p, kb, false),
        bytemuck::bytes_of(&u),
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
    x: &wgpu::Buffer,
    dy: &wgpu::Buffer,
    dw: &wgpu::Buffer,
) -> Result<()> {
    let maxw = max_window_elems(ctx);
    let (cg, kg, hw, ohw, rs) = (
        p.c_per_group(),
        p.k_per_group(),
        p.h * p.w,
        p.oh * p.ow,
        p.r * p.s,
    );
    let mut u = wgrad_uniforms(p, 1)?;
    u.n = 1;
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
                    let (xb, x_off) = match crate::conv::direct::source_rows(p, oy0, oy1) {
                        Some((r0, r1)) => {
                            window(ctx, x, plane * hw + r0 * p.w, plane * hw + (r1 + 1) * p.w)?
                        }
                        None => window(ctx, x, 0, 1)?,
                    };
                    u.x_off = x_off.wrapping_add(u32_of(n * p.c * hw, "elements")?);
                    u.dy_off = dy_off.wrapping_add(u32_of(n * p.k * ohw, "elements")?);
                    u.oy0 = u32_of(oy0, "rows")?;
                    u.oy_cnt = u32_of(oy1 - oy0, "rows")?;
                    dispatch(
                        ctx,
                        enc,
                        &wgrad_key(p, 1, !first),
                        bytemuck::bytes_of(&u),
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

/// `dwᵀ[q, k] = Σ_p colᵀ[p, q] · dy[k, p]`: a pixel-major im2col per image and pixel
/// range, and one GEMM each that accumulates into dw in a fixed order.
fn wgrad_gemm(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    x: &wgpu::Buffer,
    dy: &wgpu::Buffer,
    dw: &wgpu::Buffer,
) -> Result<()> {
    let crs = p.reduction_len();
    let (kg, ohw) = (p.k_per_group(), p.oh * p.ow);
    let align = crate::conv::im2col::col_align(ctx);
    let ldq = crs.div_ceil(align) * align;
    let budget = ctx
        .scratch_budget()
        .min(ctx.limits().max_storage_buffer_binding_size)
        .max(4096) as usize;
    let pix_bytes = p.groups * ldq * 4; // one pixel row of colT, all groups
    let np = (budget / pix_bytes).max(1).min(ohw);
    let col = DeviceBuffer::new(ctx, (np * pix_bytes) as u64, "wgconv im2col (pixel-major)")?;
    let key = im2col_key(p, true);
    let mut u = Im2colUniforms::for_problem(p)?;
    u.ldq = u32_of(ldq, "columns")?;
    let x_img = p.c * p.h * p.w;
    let y_img = p.k * ohw;
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
        let col_all = DeviceBuffer::new(
            ctx,
            (images * p.groups * ohw * ldq * 4) as u64,
            "wgconv im2col (pixel-major)",
        )?;
        let partial = DeviceBuffer::new(
            ctx,
            (images * dw_len * 4) as u64,
            "wgconv partial weight gradients",
        )?;
        let mut n0 = 0;
        while n0 < p.n {
            let nb = images.min(p.n - n0);
            let total = nb * p.groups * ohw * ldq.div_ceil(8);
            u.n = u32_of(nb, "images")?;
            u.x_off = u32_of(n0 * x_img, "input elements")?;
            u.p0 = 0;
            u.np = u32_of(ohw, "pixels")?;
            u.ldp = u.np;
            u.total = u32_of(total, "column elements")?;
            dispatch(
                ctx,
                enc,
                &key,
                bytemuck::bytes_of(&u),
                &[Bind::whole(x), Bind::whole(&col_all.buffer)],
                total as u64,
            )?;
            let job = GemmJob {
                m: crs,
                n: kg,
                k: ohw,
                batch_outer: nb,
                batch_inner: p.groups,
                a: Mat {
                    win: None,
                    buf: &col_all.buffer,
                    off: 0,
                    ld: ldq,
                    si: ohw * ldq,
                    so: p.groups * ohw * ldq,
                },
                a_km: true,
                b: Mat {
                    win: None,
                    buf: dy,
                    off: n0 * y_img,
                    ld: ohw,
                    si: kg * ohw,
                    so: y_img,
                },
                b_kn: false,
                c: Mat {
                    win: None,
                    buf: &partial.buffer,
                    off: 0,
                    ld: 1,
                    si: kg * crs,
                    so: dw_len,
                },
                c_col_stride: crs,
                bias: None,
                accumulate: false,
            };
            encode_job(ctx, enc, &job, GemmVariant::Auto)?;
            let key = PipelineKey::new(Kernel::ReduceRows)
                .with("WG", 64)
                .with("ACCUMULATE", (n0 > 0) as u32);
            let r = ReduceUniforms {
                rows: u32_of(dw_len, "weights")?,
                len: 1,
                batch: u32_of(nb, "images")?,
                bstride: u32_of(dw_len, "weights")?,
                total: u32_of(dw_len, "weights")?,
                ..Default::default()
            };
            dispatch(
                ctx,
                enc,
                &key,
                bytemuck::bytes_of(&r),
                &[Bind::whole(&partial.buffer), Bind::whole(dw)],
                dw_len as u64,
            )?;
            n0 += nb;
        }
        return Ok(());
    }
    let mut first = true;
    for n in 0..p.n {
        let mut p0 = 0;
        while p0 < ohw {
            let cnt = np.min(ohw - p0);
            let total = p.groups * cnt * ldq.div_ceil(8); // invocations, 8 elements each
            u.x_off = u32_of(n * x_img, "input elements")?;
            u.p0 = u32_of(p0, "pixels")?;
            u.np = u32_of(cnt, "pixels")?;
            u.ldp = u.np;
            u.total = u32_of(total, "column elements")?;
            dispatch(
                ctx,
                enc,
                &key,
                bytemuck::bytes_of(&u),
                &[Bind::whole(x), Bind::whole(&col.buffer)],
                total as u64,
            )?;
            let job = GemmJob {
                m: crs,
                n: kg,
                k: cnt,
                batch_outer: 1,
                batch_inner: p.groups,
                // A[m = q, k = p] = colT[p, q]: K-major, vec4-aligned (ldq).
                a: Mat {
                    win: None,
                    buf: &col.buffer,
                    off: 0,
                    ld: ldq,
                    si: cnt * ldq,
                    so: 0,
                },
                a_km: true,
                // B[k = p, n = k_out] = dy[k_out, p]: N-major.
                b: Mat {
                    win: None,
                    buf: dy,
                    off: n * y_img + p0,
                    ld: ohw,
                    si: kg * ohw,
                    so: 0,
                },
                b_kn: false,
                // C[m = q, n = k_out] = dw[k_out, q].
                c: Mat {
                    win: None,
                    buf: dw,
                    off: 0,
                    ld: 1,
                    si: kg * crs,
                    so: 0,
                },
                c_col_stride: crs,
                bias: None,
                accumulate: !first,
            };
            encode_job(ctx, enc, &job, GemmVariant::Auto)?;
            first = false;
            p0 += cnt;
        }
    }
    Ok(())
}

/// Bias gradient `db[k] = Σ_{n, oy, ox} dy[n, k, oy, ox]`, deterministic.
pub(crate) fn encode_bgrad(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    dy_shape: [usize; 4],
    dy: &wgpu::Buffer,
    db: &wgpu::Buffer,
) -> Result<()> {
    let [n, k, oh, ow] = dy_shape;
    let ohw = oh * ow;
    let key = |acc: bool| {
        PipelineKey::new(Kernel::ReduceRows)
            .with("WG", 64)
            .with("ACCUMULATE", acc as u32)
    };
    // CPU adapters: sum a verbatim image copy of dy (a texel load per four floats instead of
    // a per-lane loop per float), one subgroup-sized workgroup per 8 channels so that few
    // channels still spread over the compute threads.
    if ctx.cpu_kernels() && fits(ctx, db) {
        let len = n * k * ohw;
        if let Some((img, tw)) =
            crate::conv::implicit::copy_flat(ctx, enc, dy, len, "wgconv bias-gradient dy image")?
        {
            let u = ReduceImageUniforms {
                rows: u32_of(k, "channels")?,
                len: u32_of(ohw, "pixels")?,
                batch: u32_of(n, "images")?,
                bstride: u32_of(k * ohw, "elements")?,
                total: u32_of(k, "channels")?,
                tw_shift: tw.trailing_zeros(),
                ..Default::default()
            };
            return dispatch(
                ctx,
                enc,
                &PipelineKey::new(Kernel::ReduceRowsImage).with("WG", 8),
                bytemuck::bytes_of(&u),
                &[Bind::Image(&img.view), Bind::whole(db)],
                k as u64,
            );
        }
    }
    if fits(ctx, dy) && fits(ctx, db) {
        let u = ReduceUniforms {
            rows: u32_of(k, "channels")?,
            len: u32_of(ohw, "pixels")?,
            batch: u32_of(n, "images")?,
            bstride: u32_of(k * ohw, "elements")?,
            total: u32_of(k, "channels")?,
            ..Default::default()
        };
        return dispatch(
            ctx,
            enc,
            &key(false),
            bytemuck::bytes_of(&u),
            &[Bind::whole(dy), Bind::whole(db)],
            k as u64,
        );
    }
    // Large dy: one channel plane (or a piece of it) per launch, added in order.
    let maxw = max_window_elems(ctx);
    for kk in 0..k {
        let (dbb, db_off) = window(ctx, db, kk, kk + 1)?;
        let mut first = true;
        for img in 0..n {
            let mut p0 = 0;
            while p0 < ohw {
                let cnt = maxw.min(ohw - p0);
                let lo = (img * k + kk) * ohw + p0;
                let (src, src_off) = window(ctx, dy, lo, lo + cnt)?;
                let u = ReduceUniforms {
                    rows: 1,
                    len: u32_of(cnt, "pixels")?,
                    batch: 1,
                    bstride: 0,
                    total: 1,
                    src_off: src_off.wrapping_add(lo as u32),
                    dst_off: db_off.wrapping_add(kk as u32),
                    _p2: 0,
                };
                dispatch(
                    ctx,
                    enc,
                    &key(!first),
                    bytemuck::bytes_of(&u),
                    &[src, dbb],
                    1,
                )?;
                first = false;
                p0 += cnt;
            }
        }
    }
    Ok(())
}
