//! Implicit-GEMM convolution on storage images (`Algorithm::ImplicitGemm`).
//!
//! The input of a chunk of images is copied once into a padded rgba32float image
//! (`pad_image.wgsl`: any padding mode, channels of a group padded to 8, 4 per texel) and
//! the weights into the GEMM's wrapped weight panels (`pack_conv_weights.wgsl`); then
//! `conv2d_implicit.wgsl` runs the image GEMM with its pixel-side operand gathered straight
//! from the input image. Compared with im2col + GEMM it writes and reads no column matrix
//! (R*S times the input) and packs nothing per pixel. It is the lavapipe kernel family: on
//! Mesa 22.3 a storage-image load costs ~1.4 instructions per float and a storage-buffer
//! load ~20 (`docs/lavapipe-loads.md`), so every load of the inner loop is an image load.
//! Images are written through staging buffers and copies (`tensor::ImageStaging`).
//!
//! Also here: the weight gradient on the same input image (`conv2d_wgrad_implicit.wgsl`, dy
//! packed into the GEMM's B panels), and the GPU variant `Algorithm::ImplicitGemmTiled`
//! (`conv2d_implicit_tiled.wgsl`: workgroup-memory tiles, input gathered from the buffer).

use crate::context::Context;
use crate::conv::direct::{i32_of, u32_of};
use crate::conv::im2col::ConvBuffers;
use crate::error::{Error, ErrorKind, Result};
use crate::kernels::{dispatch, Bind, Kernel, PipelineKey};
use crate::params::{Conv2dProblem, PaddingMode};
use crate::tensor::DeviceImage;

/// Lanes per workgroup (one 8-lane subgroup).
const WG: usize = 8;
/// Output channels per workgroup of the weight gradient (and of the dy panels).
const COLS: usize = 16;

/// Register tile of the forward kernel: output pixels per lane x output channels per
/// workgroup. Both hold 128 accumulators per lane; 4 x 32 needs 16 texel loads per 8
/// reduction steps instead of 20 and wastes less on small images (tile of 32 pixels),
/// 8 x 16 needs half the subgroup broadcasts and suits few output channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tile {
    P8x16,
    P4x32,
}

impl Tile {
    fn pixels(self) -> usize {
        match self {
            Tile::P8x16 => 8,
            Tile::P4x32 => 4,
        }
    }
    fn cols(self) -> usize {
        match self {
            Tile::P8x16 => 16,
            Tile::P4x32 => 32,
        }
    }
    fn kernel(self) -> Kernel {
        match self {
            Tile::P8x16 => Kernel::Conv2dImplicit,
            Tile::P4x32 => Kernel::Conv2dImplicitN32,
        }
    }
    /// The tile with the least padded work (pixels x channels) for `p`; ties go to 4 x 32
    /// (measured interleaved on lavapipe, b-f forward and dx: 3-15 % faster than 8 x 16).
    fn choose(p: &Conv2dProblem) -> Tile {
        let ohw = p.oh * p.ow;
        let work = |t: Tile| {
            let px = WG * t.pixels();
            ohw.div_ceil(px) * px * p.k_per_group().div_ceil(t.cols()) * t.cols()
        };
        if work(Tile::P8x16) < work(Tile::P4x32) {
            Tile::P8x16
        } else {
            Tile::P4x32
        }
    }
}

/// Uniforms of `pad_image.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct PadImageUniforms {
    c: u32,
    h: u32,
    w: u32,
    cg: u32,
    qg: u32,
    qb: u32,
    cpr: u32,
    rows_img: u32,
    wp: u32,
    hp: u32,
    pad_top: i32,
    pad_left: i32,
    x_off: u32,
    width: u32,
    total: u32,
    t0: u32,
    dst_row: u32,
    y_lo: u32,
    y_hi: u32,
    sh: u32,
    sw: u32,
    tw: u32,
    tw_shift: u32,
    texels: u32,
}

/// Uniforms of `pack_conv_weights.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct PackWeightsUniforms {
    kg: u32,
    cg: u32,
    r: u32,
    s: u32,
    kp: u32,
    groups_n: u32,
    hb: u32,
    rows_total: u32,
    g_stride: u32,
    k_stride: u32,
    c_stride: u32,
    width: u32,
    total: u32,
    t0: u32,
    w_off: u32,
    pw: u32,
    tw: u32,
    tw_shift: u32,
    dst_row: u32,
    y_lo: u32,
    y_hi: u32,
    texels: u32,
    _p1: u32,
    _p2: u32,
}

/// The leading uniform fields shared by `conv2d_implicit*.wgsl` and
/// `conv2d_wgrad_implicit.wgsl`: output geometry, kernel, and the input image layout.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct ImageConvFields {
    ohw: u32,
    ow: u32,
    sh: u32,
    sw: u32,
    dh: u32,
    dw: u32,
    r: u32,
    s: u32,
    cb8: u32,
    cpr: u32,
    wp: u32,
    hp: u32,
    rows_img: u32,
}

/// Uniforms of `conv2d_implicit.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct ImplicitUniforms {
    geom: ImageConvFields,
    groups_m: u32,
    groups_n: u32,
    groups: u32,
    batch: u32,
    wg0: u32,
    kg: u32,
    k: u32,
    hb: u32,
    kp: u32,
    y_off: u32,
    _p0: u32,
}

/// How the weights of a problem are laid out in memory: element (group, output channel,
/// input channel, tap) at `g * g_stride + k * k_stride + c * c_stride + tap`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WeightLayout {
    pub g_stride: usize,
    pub k_stride: usize,
    pub c_stride: usize,
}

impl WeightLayout {
    /// `p`'s weights read by the forward problem that computes its input gradient: output
    /// and input channels swapped within each group.
    pub(crate) fn input_gradient(p: &Conv2dProblem) -> Self {
        let rs = p.r * p.s;
        WeightLayout {
            g_stride: p.k_per_group() * p.c_per_group() * rs,
            k_stride: rs,
            c_stride: p.c_per_group() * rs,
        }
    }

    /// The forward layout `[K, C/groups, R, S]`.
    pub(crate) fn forward(p: &Conv2dProblem) -> Self {
        let rs = p.r * p.s;
        WeightLayout {
            g_stride: p.k_per_group() * p.c_per_group() * rs,
            k_stride: p.c_per_group() * rs,
            c_stride: rs,
        }
    }
}

/// Geometry of the padded input image of a problem (see `shaders/pad_image.wgsl`).
#[derive(Clone, Copy, Debug)]
struct InputGeom {
    /// 8-channel blocks per group.
    cb8: usize,
    /// 4-channel blocks over all groups.
    qb: usize,
    wp: usize,
    hp: usize,
    /// Channel planes per image row, and plane rows per input image.
    cpr: usize,
    rows_img: usize,
    /// Image width; input images per chunk (per image fill).
    width: usize,
    chunk: usize,
}

impl InputGeom {
    fn new(ctx: &Context, p: &Conv2dProblem) -> Option<Self> {
        if !ctx.has_subgroups8() {
            return None;
        }
        let d = ctx.limits().max_texture_dimension_2d as usize;
        let wp = usize::try_from(p.w as isize + p.pad[2] + p.pad[3]).ok()?;
        let hp = usize::try_from(p.h as isize + p.pad[0] + p.pad[1]).ok()?;
        if wp == 0 || hp == 0 || wp > d || p.n == 0 {
            return None;
        }
        let cb8 = p.c_per_group().div_ceil(8);
        let qb = p.groups.checked_mul(cb8 * 2)?;
        let cpr = (d / wp).min(qb).max(1);
        let rows_img = qb.div_ceil(cpr);
        let img_h = rows_img.checked_mul(hp)?;
        if img_h > d {
            return None;
        }
        let width = cpr * wp;
        let per_image = (width * img_h) as u64 * DeviceImage::TEXEL;
        let budget = ctx.scratch_budget().max(4096);
        let chunk = (d / img_h)
            .min((budget / per_image.max(1)) as usize)
            .clamp(1, p.n);
        Some(InputGeom {
            cb8,
            qb,
            wp,
            hp,
            cpr,
            rows_img,
            width,
            chunk,
        })
    }

    /// The uniform fields of problem `p` on this input image.
    fn fields(&self, p: &Conv2dProblem) -> Result<ImageConvFields> {
        Ok(ImageConvFields {
            ohw: u32_of(p.oh * p.ow, "output pixels")?,
            ow: u32_of(p.ow, "output width")?,
            sh: u32_of(p.stride[0], "stride")?,
            sw: u32_of(p.stride[1], "stride")?,
            dh: u32_of(p.dilation[0], "dilation")?,
            dw: u32_of(p.dilation[1], "dilation")?,
            r: u32_of(p.r, "kernel height")?,
            s: u32_of(p.s, "kernel width")?,
            cb8: u32_of(self.cb8, "channel blocks")?,
            cpr: u32_of(self.cpr, "channel blocks")?,
            wp: u32_of(self.wp, "padded width")?,
            hp: u32_of(self.hp, "padded height")?,
            rows_img: u32_of(self.rows_img, "channel blocks")?,
        })
    }

    fn image_height(&self) -> usize {
        self.rows_img * self.hp
    }

    /// The input image for chunks of images.
    fn alloc(&self, ctx: &Context) -> Result<DeviceImage> {
        DeviceImage::new(
            ctx,
            u32_of(self.width, "input image width")?,
            u32_of(self.chunk * self.image_height(), "input image height")?,
            "wgconv implicit-gemm input",
        )
    }

    /// Records the fill of `img` with `nb` images of x starting at element `x_off`: x and
    /// its padding are `p`'s; image pixel (i, j) is p's padded pixel (i * sh, j * sw) for
    /// `sub = [sh, sw]` ([1, 1] but for strided 1x1 problems, see [`sampled_problem`]).
    #[allow(clippy::too_many_arguments)]
    fn fill(
        &self,
        ctx: &Context,
        enc: &mut wgpu::CommandEncoder,
        p: &Conv2dProblem,
        sub: [usize; 2],
        (x, x_off): (&wgpu::Buffer, usize),
        nb: usize,
        img: &DeviceImage,
    ) -> Result<()> {
        // One invocation per 8 texels of a row.
        let total = self.width.div_ceil(8) * nb * self.image_height();
        let mut u = PadImageUniforms {
            c: u32_of(p.c, "channels")?,
            h: u32_of(p.h, "height")?,
            w: u32_of(p.w, "width")?,
            cg: u32_of(p.c_per_group(), "channels per group")?,
            qg: u32_of(self.cb8 * 2, "channel blocks")?,
            qb: u32_of(self.qb, "channel blocks")?,
            cpr: u32_of(self.cpr, "channel blocks")?,
            rows_img: u32_of(self.rows_img, "channel blocks")?,
            wp: u32_of(self.wp, "padded width")?,
            hp: u32_of(self.hp, "padded height")?,
            pad_top: i32_of(p.pad[0], "padding")?,
            pad_left: i32_of(p.pad[2], "padding")?,
            x_off: u32_of(x_off, "input elements")?,
            width: u32_of(self.width, "input image width")?,
            total: u32_of(total, "input texels")?,
            sh: u32_of(sub[0], "stride")?,
            sw: u32_of(sub[1], "stride")?,
            ..Default::default()
        };
        let rows = u32_of(nb * self.image_height(), "input image height")?;
        let width = u32_of(self.width, "input image width")?;
        // CPU adapters, zero padding, stride 1: read x through a verbatim image copy of the
        // chunk (storage-buffer loads are per-lane loops there); any padding of the chunk's
        // length to whole texels is masked by the kernel.
        let flat = if ctx.cpu_kernels() && sub == [1, 1] && p.mode == PaddingMode::Zeros {
            let len = (nb * p.c * p.h * p.w).div_ceil(4) * 4;
            copy_flat_at(ctx, enc, (x, x_off), len, "wgconv implicit-gemm raw input")?
        } else {
            None
        };
        let (key, src, total) = match &flat {
            Some((img, tw)) => {
                u.x_off = 0;
                [u.tw, u.tw_shift, u.texels] = flat_fields(img, *tw)?;
                // One invocation per 8 pixels of one plane row.
                let total = nb * self.image_height() * self.cpr * self.wp.div_ceil(8);
                u.total = u32_of(total, "input texels")?;
                let key = PipelineKey::new(Kernel::PadImageFlat).with("WG", 64);
                (key, Bind::Image(&img.view), total)
            }
            None => {
                let key = PipelineKey::new(Kernel::PadImage)
                    .with("WG", 64)
                    .with("PAD_MODE", p.mode.code());
                (key, Bind::whole(x), total)
            }
        };
        let staging = crate::tensor::ImageStaging::new(ctx, width, rows)?;
        u.dst_row = staging.row;
        staging.fill(ctx, enc, img, (width, rows), |enc, y_lo, y_hi, dst| {
            (u.y_lo, u.y_hi) = (y_lo, y_hi);
            dispatch_linear(
                ctx,
                enc,
                &key,
                &mut u,
                |u, t0| u.t0 = t0,
                &[src, Bind::whole(dst)],
                total as u64,
            )
        })
    }
}

/// A strided 1x1 problem as the stride-1 problem on its sampled pixels (padded pixel
/// (oy * sh, ox * sw) of the input, any padding mode): `None` for other problems.
fn sampled_problem(p: &Conv2dProblem) -> Option<Conv2dProblem> {
    (p.r * p.s == 1 && p.stride != [1, 1]).then_some(Conv2dProblem {
        h: p.oh,
        w: p.ow,
        stride: [1, 1],
        dilation: [1, 1],
        pad: [0; 4],
        mode: PaddingMode::Zeros,
        ..*p
    })
}

/// Image geometry of one forward problem: input image and weight panels.
#[derive(Clone, Copy, Debug)]
struct Plan {
    x: InputGeom,
    tile: Tile,
    /// Reduction rows per weight panel, weight image height and width, panels x rows.
    kp: usize,
    hb: usize,
    wwidth: usize,
    rows_total: usize,
}

fn plan(ctx: &Context, p: &Conv2dProblem) -> Option<Plan> {
    let x = InputGeom::new(ctx, p)?;
    let tile = Tile::choose(p);
    let d = ctx.limits().max_texture_dimension_2d as usize;
    let kp = x.cb8 * 8 * p.r * p.s;
    let rows_total = p
        .groups
        .checked_mul(p.k_per_group().div_ceil(tile.cols()))?
        .checked_mul(kp)?;
    let hb = rows_total.min(d / 8 * 8);
    let wwidth = rows_total.div_ceil(hb) * (tile.cols() / 4);
    if wwidth > d || u32::try_from(p.n * p.k * p.oh * p.ow).is_err() {
        return None;
    }
    Some(Plan {
        x,
        tile,
        kp,
        hb,
        wwidth,
        rows_total,
    })
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

/// Can the implicit-GEMM convolution run `p` on this context (8-lane subgroups, images
/// within `maxTextureDimension2D`)?
pub(crate) fn runnable(ctx: &Context, p: &Conv2dProblem) -> bool {
    p.oh * p.ow > 0 && plan(ctx, p).is_some()
}

fn unsupported(reason: &str) -> Error {
    Error::new(ErrorKind::UnsupportedAlgorithm {
        algorithm: "implicit_gemm",
        reason: reason.into(),
    })
}

/// Texels per row of a flat image copy (16 KiB rows: a multiple of the 256-byte copy pitch;
/// a power of two).
const FLAT_TW: usize = 1024;

/// Copies the first `len` floats of `buf` verbatim into a new image of rows of `tw` texels
/// (float i at texel i / 4, channel i % 4): one buffer-to-texture copy for the full rows and
/// one for the last partial row. `None` when it cannot (`len` not a multiple of 4, or an
/// image beyond `maxTextureDimension2D` or the scratch budget); returns the image and `tw`.
pub(crate) fn copy_flat(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    buf: &wgpu::Buffer,
    len: usize,
    label: &str,
) -> Result<Option<(DeviceImage, u32)>> {
    copy_flat_at(ctx, enc, (buf, 0), len, label)
}

/// Uniform fields `[tw, tw_shift, texels]` of a kernel reading the image of [`copy_flat_at`]
/// (`tw` its width in texels, a power of two).
pub(crate) fn flat_fields(img: &DeviceImage, tw: u32) -> Result<[u32; 3]> {
    let texels = u32_of(img.bytes as usize / 16, "texels of a flat image copy")?;
    Ok([tw, tw.trailing_zeros(), texels])
}

/// [`copy_flat`] of the floats `off..off + len` of `buf` (`off` a multiple of 4).
pub(crate) fn copy_flat_at(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    (buf, off): (&wgpu::Buffer, usize),
    len: usize,
    label: &str,
) -> Result<Option<(DeviceImage, u32)>> {
    let d = ctx.limits().max_texture_dimension_2d as usize;
    let texels = len / 4;
    // A power of two (the pack kernel indexes with shifts), at most the texture limit.
    let tw = FLAT_TW.min(1 << d.max(16).ilog2());
    let rows = texels.div_ceil(tw);
    let bytes = (tw * rows) as u64 * DeviceImage::TEXEL;
    if len == 0
        || !len.is_multiple_of(4)
        || !off.is_multiple_of(4)
        || rows > d
        || bytes > ctx.scratch_budget().max(4096)
        || ((off + len) * 4) as u64 > buf.size()
    {
        return Ok(None);
    }
    let img = DeviceImage::new(ctx, tw as u32, rows as u32, label)?;
    ctx.scoped("copying a buffer into an image", || {
        img.copy_flat_from(enc, buf, (off * 4) as u64, texels)
    })?;
    Ok(Some((img, tw as u32)))
}

/// Records `total` invocations of `key` in dispatches of at most the grid size, setting the
/// uniform field `t0` (via `set`) to each dispatch's first invocation.
fn dispatch_linear<U: bytemuck::Pod>(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    key: &PipelineKey,
    u: &mut U,
    set: impl Fn(&mut U, u32),
    binds: &[Bind<'_>],
    total: u64,
) -> Result<()> {
    let wg = key.workgroup_size() as u64;
    crate::gemm::split_dispatches(ctx, total, wg, |start, count| {
        set(u, start as u32);
        dispatch(ctx, enc, key, bytemuck::bytes_of(u), binds, count)
    })
}

/// The weight image of 1x1 problems whose packed texels are texels of the weight buffer:
/// the input gradient's view (4 consecutive output channels = 4 consecutive floats) with no
/// padding rows or columns and rows of the buffer 256-byte aligned. Then the pack is one
/// buffer-to-texture copy per panel (and column block), no shader pass. `None` otherwise.
fn pack_weights_by_copy(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    bufs: &ConvBuffers<'_>,
    pl: &Plan,
    wl: WeightLayout,
) -> Result<Option<DeviceImage>> {
    let (kg, cg, cols) = (p.k_per_group(), p.c_per_group(), pl.tile.cols());
    let pitch = wl.c_stride * 4;
    if p.r * p.s != 1
        || wl.k_stride != 1
        || !cg.is_multiple_of(8)
        || !kg.is_multiple_of(cols)
        || !pitch.is_multiple_of(256)
        || u32::try_from(pitch).is_err()
    {
        return Ok(None);
    }
    let wimg = DeviceImage::new(
        ctx,
        u32_of(pl.wwidth, "weight image width")?,
        u32_of(pl.hb, "weight image height")?,
        "wgconv implicit-gemm weights",
    )?;
    let (pw, groups_n) = (cols / 4, kg / cols);
    // Row cl of panel (g, tn) is buffer row cl (pitch c_stride) from float g * g_stride + tn * cols.
    let mut copies = Vec::new();
    for g in 0..p.groups {
        for tn in 0..groups_n {
            let mut cl = 0;
            while cl < cg {
                let l = (g * groups_n + tn) * pl.kp + cl;
                let (xb, y) = (l / pl.hb, l % pl.hb);
                let rows = (pl.hb - y).min(cg - cl);
                let off = 4 * (g * wl.g_stride + cl * wl.c_stride + tn * cols);
                copies.push((
                    off as u64,
                    u32_of(xb * pw, "weight image width")?,
                    u32_of(y, "weight image height")?,
                    u32_of(rows, "weight image height")?,
                ));
                cl += rows;
            }
        }
    }
    ctx.scoped("copying weights into an image", || {
        for &(off, x0, y0, rows) in &copies {
            wimg.copy_rect_from(enc, bufs.w, (off, pitch as u32), (x0, y0, pw as u32, rows));
        }
    })?;
    Ok(Some(wimg))
}

/// Packs the weights of `p` (laid out as `wl`) into a new weight image of plan `pl`.
fn pack_weights_image(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    bufs: &ConvBuffers<'_>,
    pl: &Plan,
    wl: WeightLayout,
) -> Result<DeviceImage> {
    if let Some(img) = pack_weights_by_copy(ctx, enc, p, bufs, pl, wl)? {
        return Ok(img);
    }
    let (kg, cg) = (p.k_per_group(), p.c_per_group());
    let groups_n = kg.div_ceil(pl.tile.cols());
    let wimg = DeviceImage::new(
        ctx,
        u32_of(pl.wwidth, "weight image width")?,
        u32_of(pl.hb, "weight image height")?,
        "wgconv implicit-gemm weights",
    )?;
    // One invocation per panel column (pw texels) of an 8-row group.
    let mut wtotal = pl.wwidth / (pl.tile.cols() / 4) * (pl.hb / 8);
    let mut wu = PackWeightsUniforms {
        kg: u32_of(kg, "output channels per group")?,
        cg: u32_of(cg, "channels per group")?,
        r: u32_of(p.r, "kernel height")?,
        s: u32_of(p.s, "kernel width")?,
        kp: u32_of(pl.kp, "reduction length")?,
        groups_n: u32_of(groups_n, "channel blocks")?,
        hb: u32_of(pl.hb, "weight image height")?,
        rows_total: u32_of(pl.rows_total, "weight rows")?,
        g_stride: u32_of(wl.g_stride, "weight stride")?,
        k_stride: u32_of(wl.k_stride, "weight stride")?,
        c_stride: u32_of(wl.c_stride, "weight stride")?,
        width: u32_of(pl.wwidth, "weight image width")?,
        total: u32_of(wtotal, "weight texels")?,
        pw: (pl.tile.cols() / 4) as u32,
        ..Default::default()
    };
    // On CPU adapters read the weights through a verbatim image copy of their buffer (a
    // storage-buffer load costs several times an image load there); else from the buffer.
    let w_len = p.k * cg * p.r * p.s;
    let raw = if ctx.cpu_kernels() {
        copy_flat(ctx, enc, bufs.w, w_len, "wgconv implicit-gemm raw weights")?
    } else {
        None
    };
    let rs = p.r * p.s;
    // Texels of 4 output channels that are contiguous, texel-aligned tap runs (the input
    // gradient's view, k_stride == R * S): the run packer, one load per packed texel.
    let runs =
        rs <= 9 && wl.k_stride == rs && [wl.g_stride, wl.c_stride].iter().all(|v| v % 4 == 0);
    let (kernel, src) = match &raw {
        Some((img, tw)) => {
            wu.tw = *tw;
            wu.tw_shift = tw.trailing_zeros();
            wu.texels = u32_of(w_len / 4, "weight texels")?;
            let k = if runs {
                Kernel::PackConvWeightsRuns
            } else {
                Kernel::PackConvWeightsImage
            };
            (k, Bind::Image(&img.view))
        }
        None => (Kernel::PackConvWeights, Bind::whole(bufs.w)),
    };
    let mut wkey = PipelineKey::new(kernel)
        .with("WG", 64)
        .with("FLIP", p.flip as u32);
    if kernel == Kernel::PackConvWeightsRuns {
        // One invocation per (panel, 8-channel block, texel column).
        wtotal = pl.rows_total / pl.kp * (pl.kp / (8 * rs)) * (pl.tile.cols() / 4);
        wu.total = u32_of(wtotal, "weight texels")?;
        wkey = wkey.with("RS", rs as u32);
    }
    let (ww, wh) = (
        u32_of(pl.wwidth, "weight image width")?,
        u32_of(pl.hb, "weight image height")?,
    );
    let staging = crate::tensor::ImageStaging::new(ctx, ww, wh)?;
    wu.dst_row = staging.row;
    staging.fill(ctx, enc, &wimg, (ww, wh), |enc, y_lo, y_hi, dst| {
        (wu.y_lo, wu.y_hi) = (y_lo, y_hi);
        dispatch_linear(
            ctx,
            enc,
            &wkey,
            &mut wu,
            |u, t0| u.t0 = t0,
            &[src, Bind::whole(dst)],
            wtotal as u64,
        )
    })?;
    Ok(wimg)
}

/// Forward convolution `p` reading x from element `x_base` of `bufs.x`, with weights laid
/// out as `wl`.
pub(crate) fn encode_at(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    src_p: &Conv2dProblem,
    bufs: &ConvBuffers<'_>,
    x_base: usize,
    wl: WeightLayout,
) -> Result<()> {
    // Strided 1x1: the input image holds only the sampled pixels (a quarter of the fill at
    // stride 2) and the kernel runs at stride 1 on it.
    let (sampled, sub) = match sampled_problem(src_p) {
        Some(q) => (q, src_p.stride),
        None => (*src_p, [1, 1]),
    };
    let p = &sampled;
    let Some(pl) = plan(ctx, p) else {
        return Err(unsupported(if ctx.has_subgroups8() {
            "the padded input or the weights exceed max_texture_dimension_2d"
        } else {
            "needs subgroups of 8 lanes (a CPU adapter such as lavapipe)"
        }));
    };
    if p.oh * p.ow == 0 || p.n == 0 || p.k == 0 {
        return Ok(());
    }
    let (kg, cg, ohw) = (p.k_per_group(), p.c_per_group(), p.oh * p.ow);
    let groups_n = kg.div_ceil(pl.tile.cols());
    // Weights: from the packed-weight cache, else packed (in a submission of its own when
    // the result is cached, so the image is filled whatever the caller does with `enc`).
    let layout_key: Vec<u64> = [
        p.k,
        cg,
        p.r,
        p.s,
        p.groups,
        p.flip as usize,
        pl.tile.cols(),
        pl.kp,
        pl.hb,
        pl.wwidth,
        pl.rows_total,
        wl.g_stride,
        wl.k_stride,
        wl.c_stride,
    ]
    .iter()
    .map(|&v| v as u64)
    .collect();
    let cache = &ctx.inner.weights;
    let cached = bufs.w_key.as_ref().and_then(|k| cache.get(k, &layout_key));
    let wview = match cached {
        Some(v) => v,
        None => {
            let own = bufs.w_key.is_some() && cache.budget() > 0;
            let mut own_enc = own.then(|| ctx.encoder("wgconv weight pack"));
            let target = match own_enc.as_mut() {
                Some(e) => e,
                None => &mut *enc,
            };
            let wimg = pack_weights_image(ctx, target, p, bufs, &pl, wl)?;
            if let (Some(penc), Some(k)) = (own_enc, &bufs.w_key) {
                ctx.submit(penc)?;
                cache.insert(ctx, k, layout_key, &wimg.view, wimg.bytes);
            }
            wimg.view.clone()
        }
    };
    // Input image, reused chunk by chunk.
    let ximg = pl.x.alloc(ctx)?;
    let groups_m = ohw.div_ceil(WG * pl.tile.pixels());
    let mut cu = ImplicitUniforms {
        geom: pl.x.fields(p)?,
        groups_m: u32_of(groups_m, "pixel blocks")?,
        groups_n: u32_of(groups_n, "channel blocks")?,
        groups: u32_of(p.groups, "groups")?,
        kg: u32_of(kg, "output channels per group")?,
        k: u32_of(p.k, "output channels")?,
        hb: u32_of(pl.hb, "weight image height")?,
        kp: u32_of(pl.kp, "reduction length")?,
        ..Default::default()
    };
    let ckey = PipelineKey::new(pl.tile.kernel())
        .with("WG", WG as u32)
        .with("HAS_BIAS", bufs.b.is_some() as u32);
    let mut n0 = 0;
    while n0 < p.n {
        let nb = pl.x.chunk.min(p.n - n0);
        let x_off = x_base + n0 * src_p.c * src_p.h * src_p.w;
        pl.x.fill(ctx, enc, src_p, sub, (bufs.x, x_off), nb, &ximg)?;
        let batch = nb * p.groups;
        cu.batch = u32_of(batch, "images x groups")?;
        cu.y_off = u32_of(n0 * p.k * ohw, "output elements")?;
        let groups = groups_m * groups_n * batch;
        dispatch_linear(
            ctx,
            enc,
            &ckey,
            &mut cu,
            |u, wg| u.wg0 = wg / WG as u32,
            &[
                Bind::Image(&ximg.view),
                Bind::Image(&wview),
                Bind::whole(bufs.b.unwrap_or(bufs.w)),
                Bind::whole(bufs.y),
            ],
            (groups * WG) as u64,
        )?;
        n0 += nb;
    }
    Ok(())
}

/// Uniforms of `conv2d_wgrad_implicit.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct WgradImplicitUniforms {
    geom: ImageConvFields,
    groups_m: u32,
    groups_n: u32,
    groups: u32,
    wg0: u32,
    kg: u32,
    cg: u32,
    nimg: u32,
    kpp: u32,
    hdy: u32,
    rb_total: u32,
    n_base: u32,
}

/// Geometry of the weight-gradient launch: the input image and the dy panels (entries
/// (image, group), rows = output channels of the group, K = output pixels).
fn wgrad_plan(ctx: &Context, p: &Conv2dProblem) -> Option<(InputGeom, crate::gemm::ImageGeom)> {
    let x = InputGeom::new(ctx, p)?;
    let ohw = p.oh * p.ow;
    if ohw == 0 || p.k == 0 {
        return None;
    }
    let g = crate::gemm::ImageGeom::new(ctx, p.k_per_group(), ohw, COLS, p.n * p.groups)?;
    let bytes = (g.width * g.h) as u64 * DeviceImage::TEXEL;
    (bytes <= ctx.scratch_budget().max(4096)
        && u32::try_from(p.k * p.c_per_group() * p.r * p.s).is_ok())
    .then_some((x, g))
}

/// Can the implicit-GEMM weight gradient run `p` on this context?
pub(crate) fn wgrad_runnable(ctx: &Context, p: &Conv2dProblem) -> bool {
    wgrad_plan(ctx, p).is_some()
}

/// Weight gradient `dw` (`[K, C/groups, R, S]`) of `p` from `x` and `dy`; the reduction
/// over images and pixels runs in a fixed order (chunks of images accumulate in order).
pub(crate) fn encode_wgrad(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    src_p: &Conv2dProblem,
    x: &wgpu::Buffer,
    dy: &wgpu::Buffer,
    dw: &wgpu::Buffer,
) -> Result<()> {
    // Strided 1x1: an image of the sampled pixels, as in the forward.
    let (sampled, sub) = match sampled_problem(src_p) {
        Some(q) => (q, src_p.stride),
        None => (*src_p, [1, 1]),
    };
    let p = &sampled;
    let Some((xg, dg)) = wgrad_plan(ctx, p) else {
        return Err(unsupported(
            "needs 8-lane subgroups and images within max_texture_dimension_2d",
        ));
    };
    let (kg, ohw) = (p.k_per_group(), p.oh * p.ow);
    let dy_mat = crate::gemm::Mat {
        win: None,
        buf: dy,
        off: 0,
        ld: ohw,
        si: kg * ohw,
        so: p.k * ohw,
    };
    let dyimg = crate::gemm::fill_image(
        ctx,
        enc,
        &dy_mat,
        false,
        kg,
        ohw,
        (p.n, p.groups),
        &dg,
        "wgconv implicit-gemm dy",
    )?;
    let ximg = xg.alloc(ctx)?;
    // 4 channels per lane when that halves the channel padding (1-4 channels modulo 8).
    let c4 = p.c_per_group().div_ceil(4) * 4 < xg.cb8 * 8;
    // 1x1: a lane's 8 channels are adjacent in dw, stored as vec4 (checked after c4, so only
    // channels per group a multiple of 8 get here).
    let v4 = p.r * p.s == 1 && p.c_per_group().is_multiple_of(4) && dw.size().is_multiple_of(16);
    let (kernel, blocks) = if c4 {
        (Kernel::Conv2dWgradImplicitC4, p.c_per_group().div_ceil(4))
    } else if v4 {
        (Kernel::Conv2dWgradImplicitV4, xg.cb8)
    } else {
        (Kernel::Conv2dWgradImplicit, xg.cb8)
    };
    let rb_total = p.r * p.s * blocks;
    let groups_m = rb_total.div_ceil(WG);
    let groups_n = kg.div_ceil(COLS);
    debug_assert_eq!(groups_n, dg.np);
    let mut u = WgradImplicitUniforms {
        geom: xg.fields(p)?,
        groups_m: u32_of(groups_m, "row blocks")?,
        groups_n: u32_of(groups_n, "channel blocks")?,
        groups: u32_of(p.groups, "groups")?,
        kg: u32_of(kg, "output channels per group")?,
        cg: u32_of(p.c_per_group(), "channels per group")?,
        kpp: u32_of(dg.kp, "output pixels")?,
        hdy: u32_of(dg.h, "dy image height")?,
        rb_total: u32_of(rb_total, "row blocks")?,
        ..Default::default()
    };
    let groups = groups_m * groups_n * p.groups;
    let mut n0 = 0;
    while n0 < p.n {
        let nb = xg.chunk.min(p.n - n0);
        let x_off = n0 * src_p.c * src_p.h * src_p.w;
        xg.fill(ctx, enc, src_p, sub, (x, x_off), nb, &ximg)?;
        u.nimg = u32_of(nb, "images")?;
        u.n_base = u32_of(n0, "images")?;
        let key = PipelineKey::new(kernel)
            .with("WG", WG as u32)
            .with("FLIP", p.flip as u32)
            .with("ACCUMULATE", (n0 > 0) as u32);
        dispatch_linear(
            ctx,
            enc,
            &key,
            &mut u,
            |u, wg| u.wg0 = wg / WG as u32,
            &[
                Bind::Image(&ximg.view),
                Bind::Image(&dyimg.view),
                Bind::whole(dw),
            ],
            (groups * WG) as u64,
        )?;
        n0 += nb;
    }
    Ok(())
}

/// Uniforms of `conv2d_implicit_tiled.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct TiledUniforms {
    c: u32,
    h: u32,
    w: u32,
    k: u32,
    cg: u32,
    kg: u32,
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
    x_off: u32,
    crs: u32,
    g_stride: u32,
    k_stride: u32,
    c_stride: u32,
    tiles_m: u32,
    tiles_p: u32,
    batch: u32,
    wg0: u32,
    y_off: u32,
    _p0: u32,
}

/// Output channels and pixels per workgroup tile of the tiled kernel.
const TILE_M: usize = 32;
const TILE_P: usize = 32;

/// Forward convolution `p` with the workgroup-memory implicit GEMM (the GPU variant),
/// reading x from element `x_base` of `bufs.x`, weights laid out as `wl`. Runs on every
/// adapter; images are split into launches of at most 2^20 workgroups.
pub(crate) fn encode_tiled_at(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    bufs: &ConvBuffers<'_>,
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
    let mut u = TiledUniforms {
        c: u32_of(p.c, "channels")?,
        h: u32_of(p.h, "height")?,
        w: u32_of(p.w, "width")?,
        k: u32_of(p.k, "output channels")?,
        cg: u32_of(p.c_per_group(), "channels per group")?,
        kg: u32_of(kg, "output channels per group")?,
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
        crs: u32_of(p.reduction_len(), "reduction length")?,
        g_stride: u32_of(wl.g_stride, "weight stride")?,
        k_stride: u32_of(wl.k_stride, "weight stride")?,
        c_stride: u32_of(wl.c_stride, "weight stride")?,
        tiles_m: u32_of(tiles_m, "tiles")?,
        tiles_p: u32_of(tiles_p, "tiles")?,
        ..Default::default()
    };
    let key = PipelineKey::new(Kernel::Conv2dImplicitTiled)
        .with("WG", 64)
        .with("HAS_BIAS", bufs.b.is_some() as u32)
        .with("PAD_MODE", p.mode.code())
        .with("FLIP", p.flip as u32);
    let mut n0 = 0;
    while n0 < p.n {
        let nb = images.min(p.n - n0);
        u.x_off = u32_of(x_base + n0 * p.c * p.h * p.w, "input elements")?;
        u.y_off = u32_of(n0 * p.k * ohw, "output elements")?;
        u.batch = u32_of(nb * p.groups, "images x groups")?;
        let groups = per_image * nb;
        dispatch_linear(
            ctx,
            enc,
            &key,
            &mut u,
            |u, start| u.wg0 = start / 64,
            &[
                Bind::whole(bufs.x),
                Bind::whole(bufs.w),
                Bind::whole(bufs.b.unwrap_or(bufs.w)),
                Bind::whole(bufs.y),
            ],
            (groups * 64) as u64,
        )?;
        n0 += nb;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::Conv2dParams;

    #[test]
    fn tile_choice_follows_padded_work() {
        let prob = |k: usize, hw: usize| {
            Conv2dParams::default()
                .resolve([1, 16, hw, hw], [k, 16, 1, 1], None)
                .unwrap()
        };
        // Few output channels: 16-wide tiles waste less.
        assert_eq!(Tile::choose(&prob(8, 16)), Tile::P8x16);
        assert_eq!(Tile::choose(&prob(16, 16)), Tile::P8x16);
        // Many channels, 196 pixels: 32-pixel tiles waste less; ties go to 4 x 32.
        assert_eq!(Tile::choose(&prob(256, 14)), Tile::P4x32);
        assert_eq!(Tile::choose(&prob(64, 8)), Tile::P4x32);
    }
}
