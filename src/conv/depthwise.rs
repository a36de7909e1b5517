//! Depthwise convolution (one input channel per output channel): `shaders/conv2d_depthwise.wgsl`.

use crate::context::Context;
use crate::conv::direct::{i32_of, u32_of};
use crate::error::Result;
use crate::kernels::{dispatch, Bind, Kernel, PipelineKey};
use crate::params::Conv2dProblem;

/// Output columns per invocation (the generator's `DW_TX`).
const TX: usize = 16;

/// Uniforms of `conv2d_depthwise.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct DepthwiseUniforms {
    n: u32,
    c: u32,
    h: u32,
    w: u32,
    k: u32,
    r: u32,
    kg: u32,
    oh: u32,
    ow: u32,
    sh: u32,
    dh: u32,
    pad_top: i32,
    pad_left: i32,
    xblocks: u32,
    total: u32,
    x_off: u32,
    y_off: u32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

/// Can the dedicated kernel run `p`? One input channel per group, kernels up to 7 wide,
/// column stride 1 or 2, column dilation 1 (any rows, padding mode, multiplier, flip).
pub(crate) fn supports(p: &Conv2dProblem) -> bool {
    p.c_per_group() == 1 && p.s <= 7 && p.stride[1] <= 2 && p.dilation[1] == 1
}

pub(crate) fn encode(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    x: &wgpu::Buffer,
    w: &wgpu::Buffer,
    b: Option<&wgpu::Buffer>,
    y: &wgpu::Buffer,
) -> Result<()> {
    encode_at(ctx, enc, p, (x, 0), w, b, (y, 0))
}

/// The input gradient of a stride-1 depthwise convolution without channel multiplier is a
/// depthwise convolution of `dy` with the kernel rotated by 180° and the complementary
/// padding `(R-1)*d - pad` (zero padding, possibly negative): that forward problem, if the
/// dedicated kernel can run it.
pub(crate) fn dgrad_as_forward(p: &Conv2dProblem) -> Option<Conv2dProblem> {
    if p.c_per_group() != 1 || p.k_per_group() != 1 {
        return None;
    }
    p.input_gradient_as_forward(false).filter(supports)
}

/// [`encode`] reading x from element offset `x.1` and writing y from element offset `y.1`.
pub(crate) fn encode_at(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    (x, x_off): (&wgpu::Buffer, usize),
    w: &wgpu::Buffer,
    b: Option<&wgpu::Buffer>,
    (y, y_off): (&wgpu::Buffer, usize),
) -> Result<()> {
    let xblocks = p.ow.div_ceil(TX);
    let total = p.n * p.k * p.oh * xblocks;
    let key = PipelineKey::new(Kernel::Conv2dDepthwise)
        .with("WG", 64)
        .with("S", p.s as u32)
        .with("SW", p.stride[1] as u32)
        .with("PAD_MODE", p.mode.code())
        .with("HAS_BIAS", b.is_some() as u32)
        .with("FLIP", p.flip as u32);
    let u = DepthwiseUniforms {
        n: u32_of(p.n, "images")?,
        c: u32_of(p.c, "channels")?,
        h: u32_of(p.h, "height")?,
        w: u32_of(p.w, "width")?,
        k: u32_of(p.k, "output channels")?,
        r: u32_of(p.r, "kernel height")?,
        kg: u32_of(p.k_per_group(), "channel multiplier")?,
        oh: u32_of(p.oh, "output height")?,
        ow: u32_of(p.ow, "output width")?,
        sh: u32_of(p.stride[0], "stride")?,
        dh: u32_of(p.dilation[0], "dilation")?,
        pad_top: i32_of(p.pad[0], "padding")?,
        pad_left: i32_of(p.pad[2], "padding")?,
        xblocks: u32_of(xblocks, "blocks")?,
        total: u32_of(total, "invocations")?,
        x_off: u32_of(x_off, "elements")?,
        y_off: u32_of(y_off, "elements")?,
        ..Default::default()
    };
    dispatch(
        ctx,
        enc,
        &key,
        bytemuck::bytes_of(&u),
        &[
            Bind::whole(x),
            Bind::whole(w),
            Bind::whole(b.unwrap_or(w)),
            Bind::whole(y),
        ],
        total as u64,
    )
}
