//! Depthwise convolution (one input channel per output channel): `shaders/conv2d_depthwise.wgsl`.

use crate::context::Context;
use crate::conv::direct::{i32_of, u32_of};
use crate::error::Result;
use crate::kernels::{dispatch, Bind, Kernel, PipelineKey};
use crate::params::{Conv2dProblem, PaddingMode};
use crate::tensor::DeviceImage;

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
    /// Row tiles of `conv2d_depthwise_tiled.wgsl` (unused by the other kernel).
    yblocks: u32,
    _p1: u32,
    _p2: u32,
}

/// Uniforms of `conv2d_depthwise_image.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct DepthwiseImageUniforms {
    n: u32,
    c: u32,
    h: u32,
    k: u32,
    kg: u32,
    oh: u32,
    ow: u32,
    sh: u32,
    dh: u32,
    pad_top: i32,
    xblocks: u32,
    oyblocks: u32,
    total: u32,
    wq: u32,
    rows_shift: u32,
    y_off4: u32,
    t0: u32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

/// Geometry of the input image of `conv2d_depthwise_image.wgsl`: `rows_per` input rows per
/// texture row (so a texture row is a multiple of 256 bytes and one copy fills it), width
/// and height in texels. `None` when the image kernel does not apply: it is the lavapipe
/// variant (CPU adapters), for column stride and dilation 1, zero padding with
/// `pad_left <= 4` and `S - pad_left <= 5`, W, OW and both offsets multiples of 4, and an
/// image within the texture limit and the scratch budget.
fn image_geom(ctx: &Context, p: &Conv2dProblem, x_off: usize, y_off: usize) -> Option<FlatRows> {
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
    flat_rows_geom(ctx, p.n.checked_mul(p.c)?.checked_mul(p.h)?, p.w)
}

/// Geometries of the x and dy images of
/// `conv2d_wgrad_depthwise_image.wgsl` (the conditions of the forward image kernel: same
/// window over the x row), or `None`.
pub(crate) fn wgrad_image_geoms(ctx: &Context, p: &Conv2dProblem) -> Option<(FlatRows, FlatRows)> {
    let xg = image_geom(ctx, p, 0, 0)?;
    let dyg = flat_rows_geom(ctx, p.n.checked_mul(p.k)?.checked_mul(p.oh)?, p.ow)?;
    Some((xg, dyg))
}

/// Geometry of a verbatim image copy of `rows` tensor rows of `row_len` floats (`row_len` a
/// multiple of 4): `rows_per` rows side by side per texture row (so a texture row is a
/// multiple of 256 bytes and one copy fills the image), width and height in texels. Texel
/// `(row % rows_per) * row_len / 4 + q` of texture row `row / rows_per` holds columns
/// `4q..4q+3` of `row`. `None` beyond `maxTextureDimension2D` or the scratch budget.
pub(crate) fn flat_rows_geom(ctx: &Context, rows: usize, row_len: usize) -> Option<FlatRows> {
    if row_len == 0 || !row_len.is_multiple_of(4) || rows == 0 {
        return None;
    }
    let d = ctx.limits().max_texture_dimension_2d as usize;
    let rows_per = 256 / gcd(row_len * 4, 256);
    let width = rows_per * row_len / 4;
    let height = rows.div_ceil(rows_per);
    let bytes = (width * height) as u64 * DeviceImage::TEXEL;
    (width <= d && height <= d && bytes <= ctx.scratch_budget().max(4096)).then_some(FlatRows {
        rows_per,
        width,
        height,
    })
}

/// A verbatim image copy of tensor rows: see [`flat_rows_geom`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct FlatRows {
    /// Tensor rows per texture row.
    pub rows_per: usize,
    /// Image width and height in texels.
    pub width: usize,
    pub height: usize,
}

/// The image of [`flat_rows_geom`] `g` filled with `texels` texels of `buf`
/// from element `off` (one buffer-to-texture copy, plus one for a last partial texture row).
pub(crate) fn flat_rows_image(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    (buf, off): (&wgpu::Buffer, usize),
    texels: usize,
    g: FlatRows,
    label: &str,
) -> Result<DeviceImage> {
    let img = DeviceImage::new(
        ctx,
        u32_of(g.width, "image width")?,
        u32_of(g.height, "image height")?,
        label,
    )?;
    ctx.scoped("copying a tensor into an image", || {
        img.copy_flat_from(enc, buf, (off * 4) as u64, texels)
    })?;
    Ok(img)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
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

/// Output tile of `conv2d_depthwise_tiled.wgsl`: rows, columns, and the most input rows it
/// stages (its `TILE_OY`, `TILE_OX`, `TILE_ROWS`).
const TILED_OY: usize = 8;
const TILED_OX: usize = 32;
const TILED_ROWS: usize = 32;

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
    if let Some(geom) = image_geom(ctx, p, x_off, y_off) {
        return encode_image(ctx, enc, p, (x, x_off), w, b, (y, y_off), geom);
    }
    // GPUs: the workgroup-memory tile, when its staged window fits.
    let tiled =
        !ctx.cpu_kernels() && (TILED_OY - 1) * p.stride[0] + (p.r - 1) * p.dilation[0] < TILED_ROWS;
    let (xblocks, yblocks, total, kernel) = if tiled {
        let (xb, yb) = (p.ow.div_ceil(TILED_OX), p.oh.div_ceil(TILED_OY));
        (
            xb,
            yb,
            p.n * p.k * yb * xb * 64,
            Kernel::Conv2dDepthwiseTiled,
        )
    } else {
        let xb = p.ow.div_ceil(TX);
        (xb, 0, p.n * p.k * p.oh * xb, Kernel::Conv2dDepthwise)
    };
    let key = PipelineKey::new(kernel)
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
        yblocks: u32_of(yblocks, "blocks")?,
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

/// The image variant: x copied into a storage image (one buffer-to-texture copy, plus one
/// for a last partial texture row), then `conv2d_depthwise_image.wgsl`.
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
    let xblocks = p.ow.div_ceil(TX);
    let oyblocks = p.oh.div_ceil(rows);
    let total = p.n * p.k * oyblocks * xblocks;
    let key = PipelineKey::new(Kernel::Conv2dDepthwiseImage)
        .with("WG", 64)
        .with("R", p.r as u32)
        .with("S", p.s as u32)
        .with("PAD_LEFT", p.pad[2] as u32)
        .with("ROWS", rows as u32)
        .with("HAS_BIAS", b.is_some() as u32)
        .with("FLIP", p.flip as u32);
    let mut u = DepthwiseImageUniforms {
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
    crate::gemm::split_dispatches(ctx, total as u64, 64, |start, count| {
        u.t0 = start as u32;
        dispatch(
            ctx,
            enc,
            &key,
            bytemuck::bytes_of(&u),
            &[
                Bind::Image(&img.view),
                Bind::whole(w),
                Bind::whole(b.unwrap_or(w)),
                Bind::whole(y),
            ],
            count,
        )
    })
}
