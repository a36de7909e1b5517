//! The storage-image machinery of the implicit-GEMM algorithm (CPU adapters, 8-lane
//! subgroups), shared by its forward, input-gradient and weight-gradient entries: the padded
//! input image, the packed weight panels, their geometry.

use crate::context::Context;
use crate::conv::launch::ConvBuffers;
use crate::error::{Error, Result};
use crate::gemm::job::round4;
use crate::gpu::memory::{
    copy_flat, copy_flat_at_of, flat_fields, flat_image_fits_of, DeviceImage, ImageStaging,
};
use crate::gpu::pipeline::PipelineKey;
use crate::gpu::{i32_of, launch_linear, u32_of, Bind};
use crate::kernels::k;
use crate::kernels::pack_conv_weights::{
    PackWeightsParams, PackWeightsRunsSpec, PackWeightsSpec, ROW_TEXELS,
};
use crate::kernels::pad_image::{PadImageFlatSpec, PadImageNhwcSpec, PadImageParams, PadImageSpec};
use crate::params::{Conv2dProblem, PaddingMode};
use crate::tensor::DType;

/// Lanes per workgroup (one 8-lane subgroup).
pub(crate) const WG: usize = 8;

/// An input image one implicit-GEMM launch filled, handed over to a later launch of the
/// same recording that reads the same tensor: the backward of a 1x1 layer fills dy's image
/// for the input gradient, and the weight gradient reads dy from it instead of packing dy
/// again (one fill pass fewer; see [`ImageShareScope`]).
pub(crate) struct SharedInput {
    /// The image (back to the scratch pool when dropped, after its last reader is recorded).
    pub(crate) img: InputImage,
    pub(crate) geom: InputGeom,
    /// Offset of pixel (0, 0) in a plane: the (left, top) padding.
    pub(crate) origin: [usize; 2],
}

/// What the scope of [`ImageShareScope`] holds.
enum Share {
    /// Wants the input image of a launch reading this buffer.
    Armed(wgpu::Buffer),
    /// Holds it: the tensor's (images, channels, height, width, groups) and the image.
    Filled(wgpu::Buffer, [usize; 5], Box<SharedInput>),
}

thread_local! {
    static SHARE: std::cell::RefCell<Option<Share>> = const { std::cell::RefCell::new(None) };
}

/// While alive, the input image an implicit-GEMM launch fills from `buf` (every image of it
/// at once, as it is: f32, NCHW, zero padding, not sampled) is kept for a later launch of
/// the same recording ([`take_shared_input`]) instead of going back to the scratch pool.
/// `conv2d_backward` opens one over dy around both gradients. Restores the previous scope
/// (dropping an image nobody took) when dropped.
pub(crate) struct ImageShareScope(Option<Share>);

impl ImageShareScope {
    pub(crate) fn enter(buf: &wgpu::Buffer) -> Self {
        ImageShareScope(SHARE.with(|c| c.replace(Some(Share::Armed(buf.clone())))))
    }
}

impl Drop for ImageShareScope {
    fn drop(&mut self) {
        let previous = self.0.take();
        let _unused = SHARE.with(|c| std::mem::replace(&mut *c.borrow_mut(), previous));
    }
}

/// Does an open [`ImageShareScope`] want the input image of a launch reading `buf`?
pub(crate) fn share_wanted(buf: &wgpu::Buffer) -> bool {
    SHARE.with(|c| matches!(&*c.borrow(), Some(Share::Armed(b)) if b == buf))
}

/// Hands the input image filled from `buf` (tensor `dims`: images, channels, height,
/// width, groups) to the open scope that wants it.
pub(crate) fn share_input(buf: &wgpu::Buffer, dims: [usize; 5], shared: SharedInput) {
    SHARE.with(|c| {
        let mut slot = c.borrow_mut();
        if matches!(&*slot, Some(Share::Armed(b)) if b == buf) {
            *slot = Some(Share::Filled(buf.clone(), dims, Box::new(shared)));
        }
    })
}

/// Is an input image of the tensor in `buf` (`dims`) held by the open scope?
pub(crate) fn shared_input_held(buf: &wgpu::Buffer, dims: [usize; 5]) -> bool {
    SHARE.with(|c| matches!(&*c.borrow(), Some(Share::Filled(b, d, _)) if b == buf && *d == dims))
}

/// Takes the input image of the tensor in `buf` (`dims`) from the open scope, if it holds it.
pub(crate) fn take_shared_input(buf: &wgpu::Buffer, dims: [usize; 5]) -> Option<SharedInput> {
    if !shared_input_held(buf, dims) {
        return None;
    }
    SHARE.with(|c| match c.borrow_mut().take() {
        Some(Share::Filled(_, _, shared)) => Some(*shared),
        _ => None,
    })
}
/// Output channels per workgroup of the weight gradient (and of the dy panels).
pub(crate) const COLS: usize = 16;

/// Register tile of the forward kernel: output pixels per lane x output channels per
/// workgroup. Both hold 128 accumulators per lane; 4 x 32 needs 16 texel loads per 8
/// reduction steps instead of 20 and wastes less on small images (tile of 32 pixels),
/// 8 x 16 needs half the subgroup broadcasts and suits few output channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tile {
    P8x16,
    P4x32,
}

impl Tile {
    pub(crate) fn pixels(self) -> usize {
        match self {
            Tile::P8x16 => 8,
            Tile::P4x32 => 4,
        }
    }
    pub(crate) fn cols(self) -> usize {
        match self {
            Tile::P8x16 => 16,
            Tile::P4x32 => 32,
        }
    }
    /// The tile with the least padded work (pixels x channels) for `p`; ties go to 4 x 32
    /// (measured interleaved on lavapipe, b-f forward and dx: 3-15 % faster than 8 x 16).
    pub(crate) fn choose(p: &Conv2dProblem) -> Tile {
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

/// The padded input image of a launch: scratch, or an image of the input-image cache
/// (`crate::icache`), which keeps it for a later call reading the same x in the same layout
/// (the weight gradient after the forward of a training step).
pub(crate) enum InputImage {
    Scratch(DeviceImage),
    Cached(std::sync::Arc<DeviceImage>),
}

impl InputImage {
    pub(crate) fn image(&self) -> &DeviceImage {
        match self {
            InputImage::Scratch(i) => i,
            InputImage::Cached(i) => i,
        }
    }
}

/// The input image of a launch over every image of the tensor `x_key` (sampled at `sub`,
/// geometry `g`), and whether it is already filled. The forward (`reuse` false) fills it,
/// into the input-image cache's image when `x_key` is given (kept once the allocating call's
/// recording is submitted); the weight gradient (`reuse`) takes that image filled out of
/// the cache when it holds it, else scratch to fill. Only a forward fills entries and only
/// the next weight gradient of the same x reads one: a call's cost never depends on the
/// same call having run before (repeated forwards, or repeated gradients, on one input fill
/// it every time).
pub(crate) fn input_image(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    src_p: &Conv2dProblem,
    (sub, g): ([usize; 2], &InputGeom),
    (x_key, reuse): (Option<crate::gpu::memory::ContentKey>, bool),
) -> Result<(InputImage, bool)> {
    let whole = g.chunk >= src_p.n;
    if let Some(key) = x_key.filter(|_| whole) {
        let layout = input_layout(src_p, (sub, g));
        let cache = &ctx.inner.inputs;
        let size = (
            u32_of(g.width, "input image width")?,
            u32_of(g.chunk * g.image_height(), "input image height")?,
        );
        if reuse {
            if let Some(img) = cache.take(&key, &layout) {
                return Ok((InputImage::Cached(img), true));
            }
            // The image an earlier gradient took, if free: a repeated call allocates nothing.
            if let Some(img) = cache.scratch(size) {
                return Ok((InputImage::Cached(img), false));
            }
        } else if let Some(img) = cache.reserve(ctx, enc, (&key, layout), size)? {
            return Ok((InputImage::Cached(img), false));
        }
    }
    Ok((InputImage::Scratch(g.alloc(ctx, enc)?), false))
}

/// The input-image cache's layout key of `src_p`'s input image sampled at `sub` with
/// geometry `g`: everything the image's contents depend on besides x's.
fn input_layout(src_p: &Conv2dProblem, (sub, g): ([usize; 2], &InputGeom)) -> Vec<u64> {
    [
        src_p.n,
        src_p.c,
        src_p.h,
        src_p.w,
        src_p.groups,
        sub[0],
        sub[1],
        src_p.mode.code() as usize,
        g.cb8,
        g.cpr,
        g.wp,
        g.hp,
        g.rows_img,
        g.width,
    ]
    .iter()
    .map(|&v| v as u64)
    .chain(src_p.pad.iter().map(|&v| v as i64 as u64))
    .collect()
}

/// Tells the input-image cache that a weight gradient reads `src_p`'s input image (sampled
/// at `sub`, geometry `g`): later forwards of that layout fill entries. Every weight
/// gradient launch says so, also one running the first-call kernel (no input image).
pub(crate) fn want_input_image(
    ctx: &Context,
    src_p: &Conv2dProblem,
    (sub, g): ([usize; 2], &InputGeom),
) {
    ctx.inner.inputs.want(&input_layout(src_p, (sub, g)));
}

/// Geometry of the padded input image of a problem (see the `pad_image` kernel).
#[derive(Clone, Copy, Debug)]
pub(crate) struct InputGeom {
    /// 8-channel blocks per group.
    pub(crate) cb8: usize,
    /// 4-channel blocks over all groups.
    pub(crate) qb: usize,
    pub(crate) wp: usize,
    pub(crate) hp: usize,
    /// Channel planes per image row, and plane rows per input image.
    pub(crate) cpr: usize,
    pub(crate) rows_img: usize,
    /// Image width; input images per chunk (per image fill).
    pub(crate) width: usize,
    pub(crate) chunk: usize,
}

impl InputGeom {
    pub(crate) fn new(ctx: &Context, p: &Conv2dProblem) -> Option<Self> {
        if !ctx.image_kernels() {
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
        // Rows no wider than the image's staging buffer holds 8 of.
        let max_w = d.min(staging_width(ctx));
        if wp > max_w {
            return None;
        }
        let cpr = (max_w / wp).min(qb).max(1);
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

    /// The leading parameter fields of the image kernels for problem `p` on this input
    /// image: `[ohw, ow, sh, sw, dh, dw, r, s, cb8, cpr, wp, hp, rows_img]`.
    pub(crate) fn fields(&self, p: &Conv2dProblem) -> Result<[u32; 13]> {
        Ok([
            u32_of(p.oh * p.ow, "output pixels")?,
            u32_of(p.ow, "output width")?,
            u32_of(p.stride[0], "stride")?,
            u32_of(p.stride[1], "stride")?,
            u32_of(p.dilation[0], "dilation")?,
            u32_of(p.dilation[1], "dilation")?,
            u32_of(p.r, "kernel height")?,
            u32_of(p.s, "kernel width")?,
            u32_of(self.cb8, "channel blocks")?,
            u32_of(self.cpr, "channel blocks")?,
            u32_of(self.wp, "padded width")?,
            u32_of(self.hp, "padded height")?,
            u32_of(self.rows_img, "channel blocks")?,
        ])
    }

    pub(crate) fn image_height(&self) -> usize {
        self.rows_img * self.hp
    }

    /// The input image for chunks of images.
    pub(crate) fn alloc(
        &self,
        ctx: &Context,
        enc: &mut wgpu::CommandEncoder,
    ) -> Result<DeviceImage> {
        DeviceImage::new(
            ctx,
            enc,
            u32_of(self.width, "input image width")?,
            u32_of(self.chunk * self.image_height(), "input image height")?,
            "wgconv implicit-gemm input",
        )
    }

    /// Does [`InputGeom::fill`] read f16 x itself for every chunk of `p` (`sub` and `x_cl` as
    /// for `fill`)? Where it copies x into an image (CPU adapters, for zero padding at
    /// stride 1 or channels-last x) through an `rgba16float` verbatim copy (the image `_f16`
    /// kernels), when every chunk starts on a texel and fits the texture limit and scratch
    /// budget; elsewhere always (`pad_image_f16` unpacks the words from x's buffer).
    pub(crate) fn reads_f16(
        &self,
        ctx: &Context,
        p: &Conv2dProblem,
        sub: [usize; 2],
        x_cl: bool,
    ) -> bool {
        let chw = p.c * p.h * p.w;
        let fits = |nb: usize| flat_image_fits_of(ctx, 0, nb * chw, DType::F16);
        // Whole texels in every chunk (a copy cannot read past the tensor's words).
        let whole = if self.chunk >= p.n {
            (p.n * chw).is_multiple_of(4)
        } else {
            chw.is_multiple_of(4)
        };
        let copy = copies_x(ctx, p, sub, x_cl);
        !copy || (whole && fits(self.chunk.min(p.n)))
    }

    /// Records the fill of `img` with `nb` images of x starting at element `x_off`: x and
    /// its padding are `p`'s; image pixel (i, j) is p's padded pixel (i * sh, j * sw) for
    /// `sub = [sh, sw]` ([1, 1] but for strided 1x1 problems, see [`sampled_problem`]).
    /// With `x_cl`, x is stored channels-last (NHWC), read in place by `pad_image`; with
    /// `x_f16`, x holds f16 words, read through an `rgba16float` copy (see
    /// [`InputGeom::reads_f16`], which the caller checked).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn fill(
        &self,
        ctx: &Context,
        enc: &mut wgpu::CommandEncoder,
        p: &Conv2dProblem,
        sub: [usize; 2],
        (x, x_off, x_cl, x_f16): (&wgpu::Buffer, usize, bool, bool),
        nb: usize,
        img: &DeviceImage,
    ) -> Result<()> {
        let (c, hw, w) = (p.c, p.h * p.w, p.w);
        let [xsn, xsc, xsh, xsw] = if x_cl {
            [c * hw, 1, w * c, c]
        } else {
            [c * hw, hw, w, 1]
        };
        // One invocation per 8 texels of a row.
        let total = self.width.div_ceil(8) * nb * self.image_height();
        let mut u = PadImageParams {
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
            xsn: u32_of(xsn, "input elements")?,
            xsc: u32_of(xsc, "input elements")?,
            xsh: u32_of(xsh, "input elements")?,
            xsw: u32_of(xsw, "input elements")?,
            ..Default::default()
        };
        let rows = u32_of(nb * self.image_height(), "input image height")?;
        let width = u32_of(self.width, "input image width")?;
        // CPU adapters: read x through a verbatim image copy of the chunk (storage-buffer
        // loads are per-lane loops there; any padding of the chunk's length to whole texels
        // is masked by the kernels): `pad_image_flat` for zero padding at stride 1, and
        // `pad_image_nhwc` for channels-last x (any padding mode and stride, a texel load per
        // 4 channels).
        let copy = copies_x(ctx, p, sub, x_cl);
        let dtype = if x_f16 { DType::F16 } else { DType::F32 };
        let flat = if copy {
            let len = round4(nb * p.c * p.h * p.w);
            copy_flat_at_of(
                ctx,
                enc,
                (x, x_off),
                len,
                dtype,
                "wgconv implicit-gemm raw input",
            )?
        } else {
            None
        };
        if x_f16 && copy && flat.is_none() {
            // `reads_f16` said otherwise: never read f16 words as f32.
            return Err(Error::library_bug(
                "recording the input image of an implicit GEMM",
                "f16 input without an image copy",
            ));
        }
        // The flat kernel's first-call stand-in (one invocation per texel, same image) while
        // it is not compiled (see `crate::tune`).
        let pass = match (&flat, x_cl) {
            (Some(_), true) => Pass::Nhwc,
            (Some(_), false)
                if (x_f16
                    && ctx.stand_in(PipelineKey::of::<k::PadImageFlatF16>(
                        &PadImageFlatSpec::default(),
                    )))
                    || (!x_f16
                        && ctx.stand_in(PipelineKey::of::<k::PadImageFlat>(
                            &PadImageFlatSpec::default(),
                        ))) =>
            {
                Pass::Texel
            }
            (Some(_), false) => Pass::Flat,
            (None, _) => Pass::Buffer,
        };
        let (src, total) = match &flat {
            Some((img, tw)) => {
                u.x_off = 0;
                [u.tw, u.tw_shift, u.texels] = flat_fields(img, *tw)?;
                // pad_image_nhwc as pad_image: one invocation per 8 texels of a row; the flat
                // kernel per 8 pixels of one plane row, its stand-in per texel.
                let total = match pass {
                    Pass::Texel => nb * self.image_height() * self.width,
                    Pass::Flat => nb * self.image_height() * self.cpr * self.wp.div_ceil(8),
                    _ => total,
                };
                u.total = u32_of(total, "input texels")?;
                (Bind::Image(&img.view), total)
            }
            None => (Bind::whole(x), total),
        };
        let staging = ImageStaging::new(ctx, enc, width, rows)?;
        u.dst_row = staging.row;
        staging.fill(ctx, enc, img, (width, rows), |enc, y_lo, y_hi, dst| {
            (u.y_lo, u.y_hi) = (y_lo, y_hi);
            let set = |u: &mut PadImageParams, t0| u.t0 = t0;
            let binds = [src, Bind::whole(dst)];
            let n = total as u64;
            let flat_spec = PadImageFlatSpec::default();
            let nhwc_spec = PadImageNhwcSpec {
                PAD_MODE: p.mode.code(),
                VEC: p.c.is_multiple_of(4) && p.c_per_group().is_multiple_of(4),
                ..Default::default()
            };
            match (pass, x_f16) {
                (Pass::Texel, false) => {
                    launch_linear::<k::PadImageTexel>(ctx, enc, &flat_spec, &mut u, set, &binds, n)
                }
                (Pass::Texel, true) => launch_linear::<k::PadImageTexelF16>(
                    ctx, enc, &flat_spec, &mut u, set, &binds, n,
                ),
                (Pass::Flat, false) => {
                    launch_linear::<k::PadImageFlat>(ctx, enc, &flat_spec, &mut u, set, &binds, n)
                }
                (Pass::Flat, true) => launch_linear::<k::PadImageFlatF16>(
                    ctx, enc, &flat_spec, &mut u, set, &binds, n,
                ),
                (Pass::Nhwc, false) => {
                    launch_linear::<k::PadImageNhwc>(ctx, enc, &nhwc_spec, &mut u, set, &binds, n)
                }
                (Pass::Nhwc, true) => launch_linear::<k::PadImageNhwcF16>(
                    ctx, enc, &nhwc_spec, &mut u, set, &binds, n,
                ),
                (Pass::Buffer, f16) => {
                    let spec = PadImageSpec {
                        PAD_MODE: p.mode.code(),
                        ..Default::default()
                    };
                    if f16 {
                        launch_linear::<k::PadImageF16>(ctx, enc, &spec, &mut u, set, &binds, n)
                    } else {
                        launch_linear::<k::PadImage>(ctx, enc, &spec, &mut u, set, &binds, n)
                    }
                }
            }
        })
    }
}

/// The kernel filling the padded input image (see [`InputGeom::fill`]).
#[derive(Clone, Copy, PartialEq)]
enum Pass {
    /// `pad_image` (`pad_image_f16`): x from its storage buffer (any layout by strides).
    Buffer,
    /// `pad_image_flat`: zero padding at stride 1, x from a verbatim image copy.
    Flat,
    /// `pad_image_texel`: the first-call stand-in of `pad_image_flat`.
    Texel,
    /// `pad_image_nhwc`: channels-last x from a verbatim image copy.
    Nhwc,
}

/// Does the input fill of `p` (sampled at `sub`) read x through a verbatim image copy? On
/// CPU adapters (storage-buffer loads are per-lane loops there): `pad_image_flat` for zero
/// padding at stride 1, `pad_image_nhwc` for channels-last x.
fn copies_x(ctx: &Context, p: &Conv2dProblem, sub: [usize; 2], x_cl: bool) -> bool {
    ctx.cpu_kernels() && (x_cl || (sub == [1, 1] && p.mode == PaddingMode::Zeros))
}

/// The weight packer that runs.
#[derive(Clone, Copy, PartialEq)]
enum Packer {
    /// `pack_conv_weights`: from the weights' buffer.
    Buffer,
    /// `pack_conv_weights_image`: from their verbatim image copy, any layout.
    Image,
    /// `pack_conv_weights_rows` (see [`packs_rows`]).
    Rows,
    /// `pack_conv_weights_runs` (see [`packs_runs`]).
    Runs,
    /// `pack_conv_weights_texel`: the first-call stand-in of `Image` and `Rows`.
    Texel,
}

impl Packer {
    /// The packer's pipeline for `p`.
    fn key(self, p: &Conv2dProblem) -> PipelineKey {
        let spec = PackWeightsSpec {
            FLIP: p.flip,
            ..Default::default()
        };
        match self {
            Packer::Buffer => PipelineKey::of::<k::PackConvWeights>(&spec),
            Packer::Image => PipelineKey::of::<k::PackConvWeightsImage>(&spec),
            Packer::Rows => PipelineKey::of::<k::PackConvWeightsRows>(&spec),
            Packer::Texel => PipelineKey::of::<k::PackConvWeightsTexel>(&spec),
            Packer::Runs => PipelineKey::of::<k::PackConvWeightsRuns>(&PackWeightsRunsSpec {
                FLIP: p.flip,
                RS: (p.r * p.s) as u32,
                ..Default::default()
            }),
        }
    }
}

/// The packer of `p`'s weights (laid out as `wl`) into plan `pl`'s image from their verbatim
/// image copy (CPU adapters): the one choice of [`pack_weights_image`] and of the first
/// call's compile list ([`steady_fill_kernels`]).
fn image_packer(p: &Conv2dProblem, (pl, wl): (&Plan, WeightLayout)) -> Packer {
    if packs_runs(p, wl) {
        Packer::Runs
    } else if packs_rows(p, (pl, wl)) {
        Packer::Rows
    } else {
        Packer::Image
    }
}

/// Can `pack_conv_weights_rows` pack `p`'s weights (laid out as `wl`) into plan `pl`'s image?
/// Forward weights whose rows (an output channel's `C/groups * R * S` weights) are runs of
/// whole texels, panels without padding (channels per group a multiple of 8, output channels
/// per group a multiple of the panel width) each within at most two column blocks.
fn packs_rows(p: &Conv2dProblem, (pl, wl): (&Plan, WeightLayout)) -> bool {
    let (kg, cg, rs) = (p.k_per_group(), p.c_per_group(), p.r * p.s);
    wl.c_stride == rs
        && wl.k_stride == cg * rs
        && wl.g_stride == kg * cg * rs
        && wl.k_stride.is_multiple_of(4)
        && cg.is_multiple_of(8)
        && kg.is_multiple_of(pl.tile.cols())
        && pl.kp == cg * rs
        && pl.kp <= pl.hb
}

/// Texels of 4 output channels that are contiguous, texel-aligned tap runs (the input
/// gradient's view, k_stride == R * S): the run packer, one load per packed texel.
fn packs_runs(p: &Conv2dProblem, wl: WeightLayout) -> bool {
    let rs = p.r * p.s;
    rs <= 9 && wl.k_stride == rs && [wl.g_stride, wl.c_stride].iter().all(|v| v % 4 == 0)
}

/// The weight packer and input filler a steady-state call of the f32, NCHW problem `src_p`
/// runs on a CPU adapter (what a first call that ran neither queues for compilation).
pub(crate) fn steady_fill_kernels(
    ctx: &Context,
    src_p: &Conv2dProblem,
    wl: WeightLayout,
) -> [PipelineKey; 2] {
    let q = sampled_problem(src_p).unwrap_or(*src_p);
    let pack = match plan(ctx, &q) {
        Some(pl) => image_packer(&q, (&pl.for_weights(ctx, &q, wl), wl)),
        None if packs_runs(&q, wl) => Packer::Runs,
        None => Packer::Image,
    };
    [pack.key(src_p), input_fill_kernel(ctx, src_p)]
}

/// The kernel `InputGeom::fill` runs for f32 NCHW x of `src_p`: an image copy and
/// `pad_image_flat`, else `pad_image`.
pub(crate) fn input_fill_kernel(ctx: &Context, src_p: &Conv2dProblem) -> PipelineKey {
    let sub = sampled_problem(src_p).map_or([1, 1], |_| src_p.stride);
    if copies_x(ctx, src_p, sub, false) {
        PipelineKey::of::<k::PadImageFlat>(&PadImageFlatSpec::default())
    } else {
        PipelineKey::of::<k::PadImage>(&PadImageSpec {
            PAD_MODE: src_p.mode.code(),
            ..Default::default()
        })
    }
}

/// A strided 1x1 problem as the stride-1 problem on its sampled pixels (padded pixel
/// (oy * sh, ox * sw) of the input, any padding mode): `None` for other problems.
pub(crate) fn sampled_problem(p: &Conv2dProblem) -> Option<Conv2dProblem> {
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
pub(crate) struct Plan {
    pub(crate) x: InputGeom,
    pub(crate) tile: Tile,
    /// Reduction rows per weight panel, weight image height and width, panels x rows.
    pub(crate) kp: usize,
    pub(crate) hb: usize,
    pub(crate) wwidth: usize,
    pub(crate) rows_total: usize,
}

impl Plan {
    /// The plan with the weight panels side by side (one column block each, as tall as a
    /// panel) instead of stacked down the column blocks of the tallest image, where they fit:
    /// for weights laid out as `wl` whose panel rows are buffer rows (1x1 input gradients),
    /// which then pack by one 2-D copy per group (see `pack_weights_by_copy`) instead of one
    /// per panel. Other layouts keep the tall image (the forward kernel's weight loads are
    /// ~2 % faster there on lavapipe).
    pub(crate) fn for_weights(self, ctx: &Context, p: &Conv2dProblem, wl: WeightLayout) -> Plan {
        let d = ctx.limits().max_texture_dimension_2d as usize;
        let side = (self.rows_total / self.kp.max(1)) * (self.tile.cols() / 4);
        if p.r * p.s == 1
            && wl.k_stride == 1
            && self.kp > 0
            && self.kp <= d
            && side <= d.min(staging_width(ctx))
        {
            Plan {
                hb: self.kp,
                wwidth: side,
                ..self
            }
        } else {
            self
        }
    }
}

/// The widest image (in texels) whose rows an [`ImageStaging`] buffer can hold 8 of within one
/// storage binding (its rows are padded to 16 texels): wider images cannot be filled (only a
/// lowered `maxStorageBufferBindingSize` comes near this).
fn staging_width(ctx: &Context) -> usize {
    let row16 = 16 * DeviceImage::TEXEL;
    let rows16 = ctx.limits().max_storage_buffer_binding_size / (8 * row16);
    usize::try_from(rows16 * 16).unwrap_or(usize::MAX)
}

pub(crate) fn plan(ctx: &Context, p: &Conv2dProblem) -> Option<Plan> {
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
    if wwidth > d.min(staging_width(ctx)) || u32::try_from(p.n * p.k * p.oh * p.ow).is_err() {
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

/// Can the implicit-GEMM convolution run `p` on this context (8-lane subgroups, images
/// within `maxTextureDimension2D`)?
pub(crate) fn runnable(ctx: &Context, p: &Conv2dProblem) -> bool {
    p.oh * p.ow > 0 && plan(ctx, p).is_some()
}

/// The weight image of 1x1 problems whose packed texels are texels of the weight buffer:
/// the input gradient's view (4 consecutive output channels = 4 consecutive floats) with no
/// padding rows or columns and rows of the buffer 256-byte aligned. Then the pack is one
/// buffer-to-texture copy per group (panels side by side, see [`Plan::for_weights`]) or per
/// panel (and column block), no shader pass. `None` otherwise.
fn pack_weights_by_copy(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    bufs: &ConvBuffers,
    (pl, wl): (&Plan, WeightLayout),
    kept: bool,
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
    let wimg = weight_image(ctx, enc, pl, kept)?;
    let (pw, groups_n) = (cols / 4, kg / cols);
    // Row cl of panel (g, tn) is buffer row cl (pitch c_stride) from float g * g_stride + tn * cols.
    let mut copies = Vec::new();
    if pl.hb == cg {
        // Panels side by side, each cg rows tall (see `plan`): the panels of a group are one
        // rectangle of the buffer's rows, copied at once.
        for g in 0..p.groups {
            copies.push((
                (4 * g * wl.g_stride) as u64,
                u32_of(g * groups_n * pw, "weight image width")?,
                0,
                u32_of(cg, "weight image height")?,
                u32_of(groups_n * pw, "weight image width")?,
            ));
        }
    }
    for g in 0..p.groups * usize::from(copies.is_empty()) {
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
                    pw as u32,
                ));
                cl += rows;
            }
        }
    }
    ctx.scoped("copying weights into an image", || {
        for &(off, x0, y0, rows, width) in &copies {
            wimg.copy_rect_from(enc, &bufs.w, (off, pitch as u32), (x0, y0, width, rows));
        }
    })?;
    Ok(Some(wimg))
}

/// The weight image of plan `pl`: from the scratch pool, or with `kept` (the image outlives
/// this recording: the packed-weight cache) a new one, since a pooled image may still have
/// commands of its last user recorded into an encoder submitted after ours.
fn weight_image(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    pl: &Plan,
    kept: bool,
) -> Result<DeviceImage> {
    let (w, h) = (
        u32_of(pl.wwidth, "weight image width")?,
        u32_of(pl.hb, "weight image height")?,
    );
    let label = "wgconv implicit-gemm weights";
    if kept {
        DeviceImage::new_unshared(ctx, enc, w, h, label)
    } else {
        DeviceImage::new(ctx, enc, w, h, label)
    }
}

/// Packs the weights of `p` (laid out as `wl`) into a new weight image of plan `pl` (`kept`:
/// the image outlives the recording, see [`weight_image`]).
pub(crate) fn pack_weights_image(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    bufs: &ConvBuffers,
    (pl, wl): (&Plan, WeightLayout),
    kept: bool,
) -> Result<DeviceImage> {
    if let Some(img) = pack_weights_by_copy(ctx, enc, p, bufs, (pl, wl), kept)? {
        return Ok(img);
    }
    let (kg, cg) = (p.k_per_group(), p.c_per_group());
    let groups_n = kg.div_ceil(pl.tile.cols());
    let wimg = weight_image(ctx, enc, pl, kept)?;
    // One invocation per panel column (pw texels) of an 8-row group.
    let mut wtotal = pl.wwidth / (pl.tile.cols() / 4) * (pl.hb / 8);
    let mut wu = PackWeightsParams {
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
        copy_flat(ctx, enc, &bufs.w, w_len, "wgconv implicit-gemm raw weights")?
    } else {
        None
    };
    let rs = p.r * p.s;
    let (packer, src) = match &raw {
        Some((img, tw)) => {
            wu.tw = *tw;
            wu.tw_shift = tw.trailing_zeros();
            wu.texels = u32_of(w_len / 4, "weight texels")?;
            (image_packer(p, (pl, wl)), Bind::Image(&img.view))
        }
        None => (Packer::Buffer, Bind::whole(&bufs.w)),
    };
    let spec = PackWeightsSpec {
        FLIP: p.flip,
        ..Default::default()
    };
    // The image packers' first-call stand-in (one invocation per texel, same image) while
    // the chosen one is not compiled (see `crate::tune`).
    let stand_in = matches!(packer, Packer::Image | Packer::Rows) && ctx.stand_in(packer.key(p));
    let packer = if stand_in {
        wtotal = pl.wwidth * pl.hb;
        wu.total = u32_of(wtotal, "weight texels")?;
        Packer::Texel
    } else {
        packer
    };
    if matches!(packer, Packer::Rows) {
        // One invocation per (panel, texel column, run of ROW_TEXELS texels of a row).
        let runs = (wl.k_stride / 4).div_ceil(ROW_TEXELS);
        wtotal = pl.rows_total / pl.kp * (pl.tile.cols() / 4) * runs;
        wu.total = u32_of(wtotal, "weight texels")?;
    }
    if matches!(packer, Packer::Runs) {
        // One invocation per (panel, 8-channel block, texel column).
        wtotal = pl.rows_total / pl.kp * (pl.kp / (8 * rs)) * (pl.tile.cols() / 4);
        wu.total = u32_of(wtotal, "weight texels")?;
    }
    let (ww, wh) = (
        u32_of(pl.wwidth, "weight image width")?,
        u32_of(pl.hb, "weight image height")?,
    );
    let staging = ImageStaging::new(ctx, enc, ww, wh)?;
    wu.dst_row = staging.row;
    let runs_spec = PackWeightsRunsSpec {
        FLIP: p.flip,
        RS: rs as u32,
        ..Default::default()
    };
    staging.fill(ctx, enc, &wimg, (ww, wh), |enc, y_lo, y_hi, dst| {
        (wu.y_lo, wu.y_hi) = (y_lo, y_hi);
        let set = |u: &mut PackWeightsParams, t0| u.t0 = t0;
        let binds = [src, Bind::whole(dst)];
        let total = wtotal as u64;
        match packer {
            Packer::Buffer => {
                launch_linear::<k::PackConvWeights>(ctx, enc, &spec, &mut wu, set, &binds, total)
            }
            Packer::Image => launch_linear::<k::PackConvWeightsImage>(
                ctx, enc, &spec, &mut wu, set, &binds, total,
            ),
            Packer::Rows => launch_linear::<k::PackConvWeightsRows>(
                ctx, enc, &spec, &mut wu, set, &binds, total,
            ),
            Packer::Texel => launch_linear::<k::PackConvWeightsTexel>(
                ctx, enc, &spec, &mut wu, set, &binds, total,
            ),
            Packer::Runs => launch_linear::<k::PackConvWeightsRuns>(
                ctx, enc, &runs_spec, &mut wu, set, &binds, total,
            ),
        }
    })?;
    Ok(wimg)
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
