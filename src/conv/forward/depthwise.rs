//! Forward, depthwise algorithm: `conv2d_depthwise` (register row windows), its image
//! variant on CPU adapters and its workgroup-memory tile on GPUs.

use crate::context::Context;
use crate::conv::launch::conv_shape;
use crate::conv::launch::{fit_one_binding, ConvBuffers};
use crate::conv::table::{anywhere, need, Entry, Reason};
use crate::conv::Algorithm;
use crate::error::{Error, Result};
use crate::gpu::memory::{
    copy_flat_at, flat_image_fits, flat_rows_geom_of, flat_rows_image, FlatRows, ScratchBuffer,
};
use crate::gpu::{i32_of, launch, launch_linear, u32_of, Bind};
use crate::kernels::conv2d_depthwise::{DepthwiseParams, DepthwiseSpec, DW_TX};
use crate::kernels::conv2d_depthwise_image::{DepthwiseImageParams, DepthwiseImageSpec};
use crate::kernels::conv2d_depthwise_nhwc::{
    DepthwiseNhwcParams, DepthwiseNhwcSpec, DWN_PX, DWN_SEQ_MAX,
};
use crate::kernels::k;
use crate::params::{Conv2dProblem, PaddingMode};
use crate::tensor::DType;

/// The forward entry: one input channel per group, kernels up to 7 wide, column stride 1
/// or 2, column dilation 1.
pub(crate) const FORWARD: Entry<Conv2dProblem, ConvBuffers> = Entry {
    algorithm: Algorithm::Depthwise,
    check,
    prefer: |_, p| p.groups > 1,
    tune: anywhere,
    encode: encode_fused,
};

/// The forward entry's launcher: the image variant (CPU adapters) fuses the epilogue of
/// `bufs` into its store; the buffer and workgroup-memory variants leave it to the caller's
/// elementwise pass.
fn encode_fused(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    b: &ConvBuffers,
) -> Result<()> {
    // f16 x and y are read and written by the f16 image kernel itself (`reads_f16`).
    let f16 = b.x_f16 || b.y_f16;
    if f16 && !(b.x_f16 && b.y_f16) {
        return Err(f16_misuse());
    }
    if b.x_cl || b.y_cl {
        // Channels-last x and y (see `nhwc_runs`); the epilogue is the caller's pass.
        return encode_nhwc(ctx, enc, p, (&b.x, 0), &b.w, b.b.as_ref(), (&b.y, 0));
    }
    let dtype = if f16 { DType::F16 } else { DType::F32 };
    let geom = image_geom_of(ctx, p, 0, 0, dtype);
    if f16 && geom.is_none() {
        return Err(f16_misuse());
    }
    if let Some(geom) = geom {
        encode_image(
            ctx,
            enc,
            p,
            (&b.x, 0),
            &b.w,
            b.b.as_ref(),
            (&b.y, 0),
            geom,
            Some(b),
        )?;
        b.mark_epilogue_applied();
        return Ok(());
    }
    encode_at(ctx, enc, p, (&b.x, 0), &b.w, b.b.as_ref(), (&b.y, 0))
}

fn check(ctx: &Context, p: &Conv2dProblem) -> Result<(), Reason> {
    fit_one_binding(ctx, p)?;
    need(
        supports(p),
        "needs one input channel per group, a kernel at most 7 wide, column stride 1 \
             or 2 and column dilation 1",
    )
}

/// Geometry of the input image of `conv2d_depthwise_image`: `rows_per` input rows per
/// texture row (so a texture row is a multiple of 256 bytes and one copy fills it), width
/// and height in texels. `None` when the image kernel does not apply: it is the lavapipe
/// variant (CPU adapters), for column stride and dilation 1, zero padding with
/// `pad_left <= 4` and `S - pad_left <= 5`, W, OW and both offsets multiples of 4, and an
/// image within the texture limit and the scratch budget.
pub(crate) fn image_geom(
    ctx: &Context,
    p: &Conv2dProblem,
    x_off: usize,
    y_off: usize,
) -> Option<FlatRows> {
    image_geom_of(ctx, p, x_off, y_off, DType::F32)
}

/// Does the image variant read f16 x and write f16 y itself (`conv2d_depthwise_image_f16`,
/// an `rgba16float` copy of x) for `p`?
pub(crate) fn reads_f16(ctx: &Context, p: &Conv2dProblem) -> bool {
    image_geom_of(ctx, p, 0, 0, DType::F16).is_some()
}

/// [`image_geom`] of an input of `dtype` values.
fn image_geom_of(
    ctx: &Context,
    p: &Conv2dProblem,
    x_off: usize,
    y_off: usize,
    dtype: DType,
) -> Option<FlatRows> {
    let pl = p.pad[2];
    let fits_window = (0..=4).contains(&pl) && p.s as isize - pl <= 5;
    if !(ctx.cpu_kernels()
        && p.r <= 7
        && p.stride[1] == 1
        && p.dilation[1] == 1
        && p.mode == PaddingMode::Zeros
        && fits_window
        && p.w.is_multiple_of(4)
        && p.ow.is_multiple_of(4)
        && x_off.is_multiple_of(4)
        && y_off.is_multiple_of(4)
        && p.n * p.k * p.oh * p.ow > 0)
    {
        return None;
    }
    flat_rows_geom_of(ctx, p.n.checked_mul(p.c)?.checked_mul(p.h)?, p.w, dtype)
}

/// Can the dedicated kernel run `p`? One input channel per group, kernels up to 7 wide,
/// column stride 1 or 2, column dilation 1 (any rows, padding mode, multiplier, flip).
pub(crate) fn supports(p: &Conv2dProblem) -> bool {
    p.c_per_group() == 1 && p.s <= 7 && p.stride[1] <= 2 && p.dilation[1] == 1
}

/// Does `conv2d_depthwise_nhwc` run `p` (channels-last x and y)? CPU adapters, one input
/// channel per group without multiplier, channels a multiple of 4, kernels up to 7 x 7,
/// and x within a flat image copy.
pub(crate) fn nhwc_runs(ctx: &Context, p: &Conv2dProblem) -> bool {
    ctx.cpu_kernels()
        && p.c_per_group() == 1
        && p.k_per_group() == 1
        && p.c.is_multiple_of(4)
        && p.r <= 7
        && p.s <= 7
        && p.n * p.oh * p.ow > 0
        && flat_image_fits(ctx, 0, p.n * p.c * p.h * p.w)
}

/// The depthwise convolution `p` of channels-last x (from element `x.1`, a multiple of 4)
/// into channels-last y (from element `y.1`, a multiple of 4) with `conv2d_depthwise_nhwc`
/// (only where [`nhwc_runs`]): x copied into a flat image, the weights repacked `[R·S, C]`.
pub(crate) fn encode_nhwc(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    (x, x_off): (&wgpu::Buffer, usize),
    w: &wgpu::Buffer,
    b: Option<&wgpu::Buffer>,
    (y, y_off): (&wgpu::Buffer, usize),
) -> Result<()> {
    let refuse_nhwc = || {
        crate::conv::refuse(
            Algorithm::Depthwise,
            "channels-last tensors need 4k channels, kernels up to 7x7 and an input within \
             one image copy",
        )
    };
    if !nhwc_runs(ctx, p) || !y_off.is_multiple_of(4) {
        return Err(refuse_nhwc());
    }
    let len = p.n * p.c * p.h * p.w;
    let Some((img, tw)) = copy_flat_at(ctx, enc, (x, x_off), len, "wgconv depthwise nhwc x")?
    else {
        return Err(refuse_nhwc());
    };
    // [C, 1, R, S] -> [R * S, C]: the channels of a tap adjacent (one vec4 per 4 channels).
    let wt = ScratchBuffer::new(
        ctx,
        enc,
        (p.c * p.r * p.s * 4) as u64,
        "wgconv depthwise nhwc w",
    )?;
    crate::gpu::layout::swap(
        ctx,
        enc,
        w,
        &wt.buffer,
        [1, p.c, p.r, p.s],
        crate::tensor::MemoryFormat::Contiguous,
    )?;
    let seq = p.r <= DWN_SEQ_MAX && p.s <= DWN_SEQ_MAX && p.stride[1] == 1 && p.dilation[1] == 1;
    let xblocks = p.ow.div_ceil(DWN_PX);
    let total = if seq {
        p.n * p.oh * (p.c / 4)
    } else {
        p.n * p.oh * xblocks * (p.c / 4)
    };
    let spec = DepthwiseNhwcSpec {
        WG: 64,
        R: p.r as u32,
        S: p.s as u32,
        PAD_MODE: p.mode.code(),
        HAS_BIAS: b.is_some(),
        FLIP: p.flip,
        WIN: p.stride[1] == 1 && p.dilation[1] == 1,
        SEQ: seq,
    };
    let mut u = DepthwiseNhwcParams {
        shape: conv_shape(p)?,
        xblocks: u32_of(xblocks, "blocks")?,
        total: u32_of(total, "invocations")?,
        tw,
        tw_shift: tw.trailing_zeros(),
        y_off4: u32_of(y_off / 4, "elements")?,
        ..Default::default()
    };
    launch_linear::<k::Conv2dDepthwiseNhwc>(
        ctx,
        enc,
        &spec,
        &mut u,
        |u, t0| u.t0 = t0,
        &[
            Bind::Image(&img.view),
            Bind::whole(&wt.buffer),
            Bind::whole(b.unwrap_or(w)),
            Bind::whole(y),
        ],
        total as u64,
    )
}

/// Output tile of `conv2d_depthwise_tiled`: rows, columns, and the most input rows it
/// stages (its `TILE_OY`, `TILE_OX`, `TILE_ROWS`).
const TILED_OY: usize = 8;
const TILED_OX: usize = 32;
const TILED_ROWS: usize = 32;

/// The depthwise forward convolution `p` reading x from element offset `x.1` and writing y
/// from element offset `y.1`.
pub(crate) fn encode_at(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    (x, x_off): (&wgpu::Buffer, usize),
    w: &wgpu::Buffer,
    b: Option<&wgpu::Buffer>,
    (y, y_off): (&wgpu::Buffer, usize),
) -> Result<()> {
    if let Some(geom) = image_geom(ctx, p, x_off, y_off) {
        return encode_image(ctx, enc, p, (x, x_off), w, b, (y, y_off), geom, None);
    }
    // GPUs: the workgroup-memory tile, when its staged window fits.
    let tiled =
        !ctx.cpu_kernels() && (TILED_OY - 1) * p.stride[0] + (p.r - 1) * p.dilation[0] < TILED_ROWS;
    let (xblocks, yblocks, total) = if tiled {
        let (xb, yb) = (p.ow.div_ceil(TILED_OX), p.oh.div_ceil(TILED_OY));
        (xb, yb, p.n * p.k * yb * xb * 64)
    } else {
        let xb = p.ow.div_ceil(DW_TX);
        (xb, 0, p.n * p.k * p.oh * xb)
    };
    let spec = DepthwiseSpec {
        WG: 64,
        S: p.s as u32,
        SW: p.stride[1] as u32,
        PAD_MODE: p.mode.code(),
        HAS_BIAS: b.is_some(),
        FLIP: p.flip,
    };
    let u = DepthwiseParams {
        shape: conv_shape(p)?,
        xblocks: u32_of(xblocks, "blocks")?,
        total: u32_of(total, "invocations")?,
        x_off: u32_of(x_off, "elements")?,
        y_off: u32_of(y_off, "elements")?,
        yblocks: u32_of(yblocks, "blocks")?,
        ..Default::default()
    };
    let binds = [
        Bind::whole(x),
        Bind::whole(w),
        Bind::whole(b.unwrap_or(w)),
        Bind::whole(y),
    ];
    if tiled {
        launch::<k::Conv2dDepthwiseTiled>(ctx, enc, &spec, &u, &binds, total as u64)
    } else {
        launch::<k::Conv2dDepthwise>(ctx, enc, &spec, &u, &binds, total as u64)
    }
}

fn f16_misuse() -> Error {
    Error::library_bug(
        "recording a depthwise convolution",
        "f16 buffers for a problem the f16 image kernel cannot run",
    )
}

/// `p` on f16 x (from element `x_off`, which must be 0) and f16 y with the f16 image kernel
/// (see [`reads_f16`], which the caller checked); no epilogue.
pub(crate) fn encode_f16(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    (x, x_off): (&wgpu::Buffer, usize),
    w: &wgpu::Buffer,
    b: Option<&wgpu::Buffer>,
    y: &wgpu::Buffer,
) -> Result<()> {
    let geom = image_geom_of(ctx, p, x_off, 0, DType::F16)
        .filter(|_| x_off == 0)
        .ok_or_else(f16_misuse)?;
    encode_image(ctx, enc, p, (x, 0), w, b, (y, 0), geom, None)
}

/// The image variant: x copied into a storage image (one buffer-to-texture copy, plus one
/// for a last partial texture row), then `conv2d_depthwise_image`.
#[allow(clippy::too_many_arguments)]
fn encode_image(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    (x, x_off): (&wgpu::Buffer, usize),
    w: &wgpu::Buffer,
    b: Option<&wgpu::Buffer>,
    (y, y_off): (&wgpu::Buffer, usize),
    geom: FlatRows,
    fused: Option<&ConvBuffers>,
) -> Result<()> {
    // rows_per input rows per texture row: the input is a contiguous run of texels.
    let img = flat_rows_image(
        ctx,
        enc,
        (x, x_off),
        p.n * p.c * p.h * p.w / 4,
        geom,
        "wgconv depthwise input",
    )?;
    // Four output rows per invocation where input rows can be shared (row stride and
    // dilation 1) and the weights, accumulators and window fit the registers.
    let rows = if p.stride[0] == 1 && p.dilation[0] == 1 && p.r * p.s <= 25 {
        4
    } else {
        1
    };
    let xblocks = p.ow.div_ceil(DW_TX);
    let oyblocks = p.oh.div_ceil(rows);
    let total = p.n * p.k * oyblocks * xblocks;
    let spec = DepthwiseImageSpec {
        WG: 64,
        R: p.r as u32,
        S: p.s as u32,
        PAD_LEFT: p.pad[2] as u32,
        ROWS: rows as u32,
        HAS_BIAS: b.is_some(),
        FLIP: p.flip,
        ACT: fused.map_or(0, |f| f.ep_codes().0),
        RES: fused.map_or(0, |f| f.ep_codes().1),
    };
    let (alpha, lo, hi) = fused.map_or((0.0, 0.0, 0.0), ConvBuffers::ep_constants);
    let mut u = DepthwiseImageParams {
        alpha,
        lo,
        hi,
        n: u32_of(p.n, "images")?,
        c: u32_of(p.c, "channels")?,
        h: u32_of(p.h, "height")?,
        k: u32_of(p.k, "output channels")?,
        kg: u32_of(p.k_per_group(), "channel multiplier")?,
        oh: u32_of(p.oh, "output height")?,
        ow: u32_of(p.ow, "output width")?,
        sh: u32_of(p.stride[0], "stride")?,
        dh: u32_of(p.dilation[0], "dilation")?,
        pad_top: i32_of(p.pad[0], "padding")?,
        xblocks: u32_of(xblocks, "blocks")?,
        oyblocks: u32_of(oyblocks, "row blocks")?,
        total: u32_of(total, "invocations")?,
        wq: u32_of(p.w / 4, "width")?,
        rows_shift: geom.rows_per.trailing_zeros(),
        y_off4: u32_of(y_off / 4, "elements")?,
        ..Default::default()
    };
    // The residual, else any buffer of at least one vec4 (declared, never read): x (W is a
    // multiple of 4), or for f16 x of 4 values (8 bytes) a 16-byte scratch.
    let unused = match fused
        .and_then(|f| f.epilogue.as_ref())
        .and_then(|e| e.r.as_ref())
    {
        None if x.size() < 16 => Some(ScratchBuffer::new(ctx, enc, 16, "wgconv unused binding")?),
        _ => None,
    };
    let r = unused.as_ref().map_or(x, |s| &s.buffer);
    let binds = [
        Bind::Image(&img.view),
        Bind::whole(w),
        Bind::whole(b.unwrap_or(w)),
        Bind::whole(y),
        Bind::whole(fused.map_or(r, |f| f.r_or(r))),
    ];
    let set = |u: &mut DepthwiseImageParams, t0| u.t0 = t0;
    match geom.dtype {
        DType::F16 => launch_linear::<k::Conv2dDepthwiseImageF16>(
            ctx,
            enc,
            &spec,
            &mut u,
            set,
            &binds,
            total as u64,
        ),
        DType::F32 => launch_linear::<k::Conv2dDepthwiseImage>(
            ctx,
            enc,
            &spec,
            &mut u,
            set,
            &binds,
            total as u64,
        ),
    }
}
