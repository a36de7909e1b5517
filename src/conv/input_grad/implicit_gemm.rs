//! Input gradient, implicit-GEMM algorithm: the forward implicit GEMM on `dy` (stride 1), or
//! for strided 1x1 layers on `dy` followed by a scatter.

use super::{core, unwindowed, DgradArgs};
use crate::context::Context;
use crate::conv::forward::implicit_gemm::encode_at;
use crate::conv::implicit_image::{runnable, WeightLayout};
use crate::conv::launch::ConvBuffers;
use crate::conv::table::{anywhere, Entry, Reason};
use crate::conv::{refuse, Algorithm};
use crate::error::Result;
use crate::gpu::memory::ScratchBuffer;
use crate::gpu::{launch_linear, u32_of, Bind};
use crate::kernels::k;
use crate::kernels::scatter_strided::{ScatterParams, ScatterSpec};
use crate::params::{Conv2dProblem, PaddingMode};

/// The input-gradient entry: stride-1 problems as the implicit GEMM on `dy`, strided 1x1
/// problems as the implicit GEMM on `dy` followed by a scatter.
pub(crate) const INPUT_GRAD: Entry<Conv2dProblem, DgradArgs> = Entry {
    algorithm: Algorithm::ImplicitGemm,
    check,
    prefer,
    tune: anywhere,
    encode,
};

fn check(ctx: &Context, p: &Conv2dProblem) -> Result<(), Reason> {
    unwindowed(ctx, p)?;
    let q = core(p);
    if strided_pointwise_as_forward(ctx, &q).is_some() || dgrad_as_forward(ctx, &q, false).is_some()
    {
        Ok(())
    } else if !ctx.image_kernels() {
        Err(ctx.image_kernels_reason().into())
    } else {
        Err(
            "needs stride 1 (or a 1x1 kernel with any stride) and images within \
             max_texture_dimension_2d and the scratch budget"
                .into(),
        )
    }
}

/// Preferred with at least 8 output channels per group (the GEMM's reduction) for strided
/// 1x1 layers and for kernels larger than 1x1.
pub(crate) fn prefer(ctx: &Context, p: &Conv2dProblem) -> bool {
    let q = core(p);
    p.k_per_group() >= 8
        && (strided_pointwise_as_forward(ctx, &q).is_some()
            || (p.r * p.s > 1 && dgrad_as_forward(ctx, &q, false).is_some()))
}

fn encode(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    a: &DgradArgs,
) -> Result<()> {
    if a.dx_f16 && !writes_f16_dx(ctx, p) {
        // `writes_f16_dx` said otherwise: never write f32 values into f16 words.
        return Err(crate::error::Error::library_bug(
            "recording an input gradient",
            "f16 dx for a launch that writes f32",
        ));
    }
    if let Some(q) = strided_pointwise_as_forward(ctx, p) {
        // Channels-last only with both dy and dx (`runs_as_forward`).
        debug_assert!(a.cl == [false; 2] || a.cl == [true; 2]);
        return dgrad_strided_pointwise(ctx, enc, p, &q, a);
    }
    let (q, layout) = dgrad_as_forward(ctx, p, a.bias.is_some())
        .ok_or_else(|| refuse(Algorithm::ImplicitGemm, "the input gradient does not fit"))?;
    // dy and dx are the forward's x and y: channels-last ones read / written in place.
    let bufs = ConvBuffers {
        x_cl: a.cl[0],
        y_cl: a.cl[1],
        ..ConvBuffers::new(&a.dy, &a.w, a.bias.as_ref(), &a.dx)
    };
    encode_at(ctx, enc, &q, &bufs, a.dy_off, layout)
}

/// Does the strided-1x1 path write an f16 dx itself (the `scatter_strided_h` kernel:
/// contiguous rows of even width, two halves per word)?
pub(crate) fn writes_f16_dx(ctx: &Context, p: &Conv2dProblem) -> bool {
    p.w.is_multiple_of(2) && strided_pointwise_as_forward(ctx, p).is_some()
}

/// Does the implicit GEMM read channels-last dy and write channels-last dx in place for the
/// input gradient of `p` (zero padding)? As a forward convolution of dy always; through the
/// strided-1x1 scatter when both are channels-last (`both`: the sampled pixels' gradient
/// is then channels-last too).
pub(crate) fn runs_as_forward(ctx: &Context, p: &Conv2dProblem, both: bool) -> bool {
    both || strided_pointwise_as_forward(ctx, p).is_none()
}

/// The input gradient of stride-1 `p` as the forward problem the implicit GEMM runs on `dy`
/// (`None` when it is not a stride-1 zero-padded problem or the images do not fit), with the
/// layout in which that problem reads `p`'s weights: its output channel i (p's input channel)
/// and input channel j (p's output channel) of group g are w[g * kg + j, i, r, s].
pub(crate) fn dgrad_as_forward(
    ctx: &Context,
    p: &Conv2dProblem,
    has_bias: bool,
) -> Option<(Conv2dProblem, WeightLayout)> {
    let q = p
        .input_gradient_as_forward(has_bias)
        .filter(|q| runnable(ctx, q))?;
    Some((q, WeightLayout::input_gradient(p)))
}

/// For a strided 1x1 zero-padded `p` (top/left padding >= 0): the 1x1 stride-1 forward
/// problem on dy, with p's input channels as its output channels, whose output `G` (the
/// gradient of the sampled pixels) `scatter_strided` spreads onto dx; `None` otherwise
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
    (fits && runnable(ctx, &q)).then_some(q)
}

/// Input gradient of strided 1x1 `p` through the forward problem `q`
/// ([`strided_pointwise_as_forward`]) into scratch, scattered onto dx (plus the bias).
fn dgrad_strided_pointwise(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    q: &Conv2dProblem,
    a: &DgradArgs,
) -> Result<()> {
    let (dy, dy_off, w, bias, dx) = (&a.dy, a.dy_off, &a.w, a.bias.as_ref(), &a.dx);
    if bias.is_none() && a.cl == [false; 2] && !a.dx_f16 && p.pad == [0; 4] {
        // NCHW f32 dx without bias or padding: the kernel writes the sampled pixels' gradient
        // in place (every sh-th row, every sw-th column) after dx is cleared, instead of
        // through scratch and the scatter pass (one dispatch fewer, ~4x fewer stores).
        let bytes = (p.n * p.c * p.h * p.w * 4) as u64;
        ctx.scoped("clearing the input gradient", || {
            enc.clear_buffer(dx, 0, Some(bytes))
        })?;
        let bufs = ConvBuffers {
            y_pitch: Some([p.c * p.h * p.w, p.h * p.w, p.stride[0] * p.w, p.stride[1]]),
            ..ConvBuffers::new(dy, w, None, dx)
        };
        return encode_at(ctx, enc, q, &bufs, dy_off, WeightLayout::input_gradient(p));
    }
    let g = ScratchBuffer::new(
        ctx,
        enc,
        (q.n * q.k * q.oh * q.ow * 4) as u64,
        "wgconv sampled-pixel input gradient",
    )?;
    let nhwc = a.cl == [true; 2];
    debug_assert!(!(nhwc && a.dx_f16));
    let bufs = ConvBuffers {
        x_cl: nhwc,
        y_cl: nhwc,
        ..ConvBuffers::new(dy, w, None, &g.buffer)
    };
    encode_at(ctx, enc, q, &bufs, dy_off, WeightLayout::input_gradient(p))?;
    // Rows of dx (NCHW), or pixels x 16-channel chunks (NHWC).
    let rows = if nhwc {
        p.n * p.h * p.w * p.c.div_ceil(16)
    } else {
        p.n * p.c * p.h
    };
    let mut u = ScatterParams {
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
    let spec = ScatterSpec {
        HAS_BIAS: bias.is_some(),
        NHWC: nhwc,
        ..Default::default()
    };
    let binds = [
        Bind::whole(&g.buffer),
        Bind::whole(bias.unwrap_or(&g.buffer)),
        Bind::whole(dx),
    ];
    let set = |u: &mut ScatterParams, t0| u.t0 = t0;
    if a.dx_f16 {
        launch_linear::<k::ScatterStridedH>(ctx, enc, &spec, &mut u, set, &binds, rows as u64)
    } else {
        launch_linear::<k::ScatterStrided>(ctx, enc, &spec, &mut u, set, &binds, rows as u64)
    }
}
