//! Weight gradient, implicit-GEMM algorithm on storage images.

use super::{unwindowed, WgradArgs};
use crate::context::Context;
use crate::conv::forward::implicit_gemm::FIRST_KERNEL_MAX_FLOPS;
use crate::conv::implicit_image::{
    input_fill_kernel, input_image, sampled_problem, shared_input_held, take_shared_input,
    want_input_image, InputGeom, InputImage, COLS, WG,
};
use crate::conv::launch::{conv_shape, scoped_key};
use crate::conv::table::{anywhere, Entry, Reason};
use crate::conv::{refuse, Algorithm};
use crate::error::{Error, Result};
use crate::gemm::image::{fill_image, fill_image_kernel, ImageGeom};
use crate::gemm::job::{round4, Mat};
use crate::gpu::memory::{copy_flat, flat_copy_fits_of, DeviceImage};
use crate::gpu::pipeline::PipelineKey;
use crate::gpu::{fits, launch_linear, u32_of, Bind};
use crate::kernels::conv2d_wgrad_first::{WgradFirstParams, WgradFirstSpec, WFIRST_TK};
use crate::kernels::conv2d_wgrad_implicit::{WgradImplicitParams, WgradImplicitSpec};
use crate::kernels::{k, KernelDef};
use crate::params::{Conv2dProblem, PaddingMode};
use crate::tensor::DType;

/// The weight-gradient entry: runs where the adapter has 8-lane subgroups and the images
/// fit `maxTextureDimension2D` and the scratch budget.
pub(crate) const WEIGHT_GRAD: Entry<Conv2dProblem, WgradArgs> = Entry {
    algorithm: Algorithm::ImplicitGemm,
    check,
    // Measured on lavapipe (the tuner, docs/benchmarks.md): ahead of im2col + GEMM for
    // kernels larger than 1x1 whatever the channels (3 channels 7x7, shape a: 3x; 3 channels
    // 3x3: 3x) and for 1x1 layers from 8 channels (even with im2col at stride 2, shape e).
    prefer: |_, p| p.c_per_group() >= 8 || p.r * p.s > 1,
    tune: anywhere,
    encode: encode_wgrad,
};

const NEEDS: &str = "needs subgroups of exactly 8 lanes (a CPU adapter such as lavapipe) and \
                     images within max_texture_dimension_2d and the scratch budget";

fn check(ctx: &Context, p: &Conv2dProblem) -> Result<(), Reason> {
    unwindowed(ctx, p)?;
    let q = sampled_problem(p).unwrap_or(*p);
    wgrad_plan(ctx, &q).map(|_| ()).ok_or(NEEDS.into())
}

/// Can the launch for `src_p` read dy from the input gradient's input image (the `_v4d`
/// kernel, see `ImageShareScope`): a 1x1 layer (after sampling) whose launch runs the vec4
/// variant.
pub(crate) fn reads_shared_dy(ctx: &Context, src_p: &Conv2dProblem) -> bool {
    let p = sampled_problem(src_p).unwrap_or(*src_p);
    wgrad_plan(ctx, &p).is_some_and(|(xg, _)| {
        p.r * p.s == 1 && variant(&p, &xg, 4 * p.k * p.c_per_group()) == Variant::V4
    })
}

/// Does the input fill read f16 x itself for `src_p` (x channels-last when `x_cl`; see
/// `InputGeom::reads_f16`)? dy is read as f32.
pub(crate) fn reads_f16_x(ctx: &Context, src_p: &Conv2dProblem, x_cl: bool) -> bool {
    let (p, sub) = match sampled_problem(src_p) {
        Some(q) => (q, src_p.stride),
        None => (*src_p, [1, 1]),
    };
    wgrad_plan(ctx, &p).is_some_and(|(xg, _)| xg.reads_f16(ctx, src_p, sub, x_cl))
}

/// Does the launch for `src_p` write an f16 dw itself (the `_v4h` kernel)? 1x1 kernels
/// (after sampling) with a multiple of 8 channels per group, every image in one launch.
pub(crate) fn writes_f16_dw(ctx: &Context, src_p: &Conv2dProblem) -> bool {
    let p = sampled_problem(src_p).unwrap_or(*src_p);
    wgrad_plan(ctx, &p).is_some_and(|(xg, _)| stores_f16(&p, &xg))
}

/// Can the launch of `p` (sampled) with input geometry `xg` store an f16 dw: the vec4
/// variant, every image in one launch (no f32 partial sums to accumulate)?
fn stores_f16(p: &Conv2dProblem, xg: &InputGeom) -> bool {
    variant(p, xg, 2 * p.k * p.c_per_group() * p.r * p.s) == Variant::V4 && xg.chunk >= p.n
}

/// The kernel variant of the launch (see `conv2d_wgrad_implicit::source`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    /// 4 channels per lane.
    C4,
    /// 1x1, vec4 stores.
    V4,
    /// `V4` reading dy from the input gradient's input image ([`take_shared_input`]).
    V4D,
    /// 8 channels per lane, scalar stores.
    Plain,
}

/// The variant for `p` (sampled) with input geometry `xg` and a dw of `dw_bytes`.
fn variant(p: &Conv2dProblem, xg: &InputGeom, dw_bytes: usize) -> Variant {
    // 4 channels per lane when that halves the channel padding (1-4 channels modulo 8).
    if p.c_per_group().div_ceil(4) * 4 < xg.cb8 * 8 {
        return Variant::C4;
    }
    // 1x1: a lane's 8 channels are adjacent in dw, stored as vec4 (checked after c4, so only
    // channels per group a multiple of 8 get here).
    if p.r * p.s == 1 && p.c_per_group().is_multiple_of(4) && dw_bytes.is_multiple_of(16) {
        Variant::V4
    } else {
        Variant::Plain
    }
}

/// Geometry of the weight-gradient launch: the input image and the dy panels (entries
/// (image, group), rows = output channels of the group, K = output pixels).
fn wgrad_plan(ctx: &Context, p: &Conv2dProblem) -> Option<(InputGeom, ImageGeom)> {
    let x = InputGeom::new(ctx, p)?;
    let ohw = p.oh * p.ow;
    if ohw == 0 || p.k == 0 {
        return None;
    }
    let g = ImageGeom::new(ctx, p.k_per_group(), ohw, COLS, p.n * p.groups)?;
    let bytes = (g.width * g.h) as u64 * DeviceImage::TEXEL;
    (bytes <= ctx.scratch_budget().max(4096)
        && u32::try_from(p.k * p.c_per_group() * p.r * p.s).is_ok())
    .then_some((x, g))
}

/// Weight gradient `dw` (`[K, C/groups, R, S]`) of `p` from `x` and `dy`; the reduction
/// over images and pixels runs in a fixed order (chunks of images accumulate in order).
pub(crate) fn encode_wgrad(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    src_p: &Conv2dProblem,
    a: &WgradArgs,
) -> Result<()> {
    let (x, dy, dw) = (&a.x, &a.dy, &a.dw);
    // Strided 1x1: an image of the sampled pixels, as in the forward.
    let (sampled, sub) = match sampled_problem(src_p) {
        Some(q) => (q, src_p.stride),
        None => (*src_p, [1, 1]),
    };
    let p = &sampled;
    let Some((xg, dg)) = wgrad_plan(ctx, p) else {
        return Err(refuse(Algorithm::ImplicitGemm, NEEDS));
    };
    let (kg, ohw) = (p.k_per_group(), p.oh * p.ow);
    // dy as the GEMM's B operand: entry (n, g), row = output channel, k = output pixel;
    // NCHW rows of ohw pixels, or NHWC (channels-last) k-rows of K channels.
    let dy_cl = a.cl[1];
    let dy_mat = Mat {
        win: None,
        buf: dy,
        off: 0,
        ld: if dy_cl { p.k } else { ohw },
        si: if dy_cl { kg } else { kg * ohw },
        so: p.k * ohw,
    };
    let var = variant(p, &xg, 4 * p.k * p.c_per_group() * p.r * p.s);
    // dy from the input gradient's input image when the backward of a 1x1 layer left it
    // (`ImageShareScope`): no dy panels to fill.
    let dy_dims = [p.n, p.k, p.oh, p.ow, p.groups];
    let var = if var == Variant::V4 && !a.dw_f16 && !dy_cl && shared_input_held(dy, dy_dims) {
        Variant::V4D
    } else {
        var
    };
    // The first call of a layer whose steady kernel is not compiled yet: one kernel on
    // image copies of x and dy; the steady kernel and its fills compile in the background.
    // A weight gradient of this layer ran (whichever kernel below): its forwards may keep
    // x's image from now on.
    want_input_image(ctx, src_p, (sub, &xg));
    if first_call_fits(ctx, src_p, a) && ctx.stand_in(steady_key(ctx, p, var, a, false)) {
        first_call(ctx, enc, src_p, a)?;
        let dy_fill = fill_image_kernel(ctx, &dy_mat, dy_cl, kg, ohw, (p.n, p.groups), &dg);
        let later = [dy_fill, Some(input_fill_kernel(ctx, src_p))];
        for key in later.into_iter().flatten() {
            ctx.compile_later(key);
        }
        if xg.chunk < p.n {
            ctx.compile_later(steady_key(ctx, p, var, a, true));
        }
        return Ok(());
    }
    // dy's image: the input gradient's (V4D), else dy packed into panels.
    let (dyimg, shared) = if var == Variant::V4D {
        let Some(d) = take_shared_input(dy, dy_dims) else {
            return Err(Error::library_bug(
                "recording a weight gradient",
                "the shared dy image vanished",
            ));
        };
        (d.img, Some((d.geom, d.origin)))
    } else {
        let img = fill_image(
            ctx,
            enc,
            &dy_mat,
            dy_cl,
            kg,
            ohw,
            (p.n, p.groups),
            &dg,
            "wgconv implicit-gemm dy",
        )?;
        (InputImage::Scratch(img), None)
    };
    // x's image: the forward's from the input-image cache when it holds it (x bound as the
    // caller's tensor, `KeyScope`).
    let (ximg, filled) = input_image(ctx, enc, src_p, (sub, &xg), (scoped_key(x), true))?;
    if a.dw_f16 && !stores_f16(p, &xg) {
        // `writes_f16_dw` said otherwise: never write f32 sums into f16 words.
        return Err(crate::error::Error::library_bug(
            "recording a weight gradient",
            "f16 dw for a launch that writes f32",
        ));
    }
    let c4 = var == Variant::C4;
    let blocks = if c4 {
        p.c_per_group().div_ceil(4)
    } else {
        xg.cb8
    };
    let rb_total = p.r * p.s * blocks;
    let groups_m = rb_total.div_ceil(WG);
    let groups_n = kg.div_ceil(COLS);
    debug_assert_eq!(groups_n, dg.np);
    let [ohw_, ow, sh, sw, dh, dw_, r, s, cb8, cpr, wp, hp, rows_img] = xg.fields(p)?;
    let mut u = WgradImplicitParams {
        ohw: ohw_,
        ow,
        sh,
        sw,
        dh,
        dw: dw_,
        r,
        s,
        cb8,
        cpr,
        wp,
        hp,
        rows_img,
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
    if let Some((dgeom, origin)) = shared {
        u.d_cpr = u32_of(dgeom.cpr, "channel blocks")?;
        u.d_wp = u32_of(dgeom.wp, "padded width")?;
        u.d_hp = u32_of(dgeom.hp, "padded height")?;
        u.d_rows = u32_of(dgeom.rows_img, "channel blocks")?;
        u.d_qg = u32_of(dgeom.cb8 * 2, "channel blocks")?;
        u.d_x0 = u32_of(origin[0], "padding")?;
        u.d_y0 = u32_of(origin[1], "padding")?;
    }
    let groups = groups_m * groups_n * p.groups;
    // The bias gradient from the dy panels the kernel reads (db[g * kg + col]).
    let db = sums_into(ctx, a);
    let mut n0 = 0;
    while n0 < p.n {
        let nb = xg.chunk.min(p.n - n0);
        let x_off = n0 * src_p.c * src_p.h * src_p.w;
        if !filled {
            xg.fill(
                ctx,
                enc,
                src_p,
                sub,
                (x, x_off, a.cl[0], a.x_f16),
                nb,
                ximg.image(),
            )?;
        }
        u.nimg = u32_of(nb, "images")?;
        u.n_base = u32_of(n0, "images")?;
        let spec = WgradImplicitSpec {
            WG: WG as u32,
            FLIP: p.flip,
            ACCUMULATE: n0 > 0,
            DW_CL: a.dw_cl,
            COL_SUMS: db.is_some(),
        };
        let binds = [
            Bind::Image(&ximg.image().view),
            Bind::Image(&dyimg.image().view),
            Bind::whole(dw),
            // The bias gradient, or dw again (not touched without COL_SUMS).
            Bind::whole(db.unwrap_or(dw)),
        ];
        let total = (groups * WG) as u64;
        fn go<K: KernelDef<Params = WgradImplicitParams, Spec = WgradImplicitSpec>>(
            ctx: &Context,
            enc: &mut wgpu::CommandEncoder,
            spec: &WgradImplicitSpec,
            u: &mut WgradImplicitParams,
            binds: &[Bind<'_>],
            total: u64,
        ) -> Result<()> {
            let set = |u: &mut WgradImplicitParams, wg: u32| u.wg0 = wg / WG as u32;
            launch_linear::<K>(ctx, enc, spec, u, set, binds, total)
        }
        match (var, a.dw_f16) {
            (Variant::C4, _) => {
                go::<k::Conv2dWgradImplicitC4>(ctx, enc, &spec, &mut u, &binds, total)?
            }
            (Variant::V4, true) => {
                go::<k::Conv2dWgradImplicitV4H>(ctx, enc, &spec, &mut u, &binds, total)?
            }
            (Variant::V4, false) => {
                go::<k::Conv2dWgradImplicitV4>(ctx, enc, &spec, &mut u, &binds, total)?
            }
            (Variant::V4D, _) => {
                go::<k::Conv2dWgradImplicitV4D>(ctx, enc, &spec, &mut u, &binds, total)?
            }
            (Variant::Plain, _) => {
                go::<k::Conv2dWgradImplicit>(ctx, enc, &spec, &mut u, &binds, total)?
            }
        }
        n0 += nb;
    }
    a.db_done.set(db.is_some());
    Ok(())
}

/// The buffer the launch sums the bias gradient into (`COL_SUMS`), if any.
fn sums_into<'a>(ctx: &Context, a: &'a WgradArgs) -> Option<&'a wgpu::Buffer> {
    a.db.as_ref().filter(|b| fits(ctx, b))
}

/// The pipeline of the steady kernel `var` for `p` (sampled), accumulating into dw when
/// `accumulate` (images after the first chunk).
fn steady_key(
    ctx: &Context,
    p: &Conv2dProblem,
    var: Variant,
    a: &WgradArgs,
    accumulate: bool,
) -> PipelineKey {
    let spec = WgradImplicitSpec {
        WG: WG as u32,
        FLIP: p.flip,
        ACCUMULATE: accumulate,
        DW_CL: a.dw_cl,
        COL_SUMS: sums_into(ctx, a).is_some(),
    };
    match (var, a.dw_f16) {
        (Variant::C4, _) => PipelineKey::of::<k::Conv2dWgradImplicitC4>(&spec),
        (Variant::V4, true) => PipelineKey::of::<k::Conv2dWgradImplicitV4H>(&spec),
        (Variant::V4, false) => PipelineKey::of::<k::Conv2dWgradImplicitV4>(&spec),
        (Variant::V4D, _) => PipelineKey::of::<k::Conv2dWgradImplicitV4D>(&spec),
        (Variant::Plain, _) => PipelineKey::of::<k::Conv2dWgradImplicit>(&spec),
    }
}

/// Can `conv2d_wgrad_first` run `p` (the caller's problem, not sampled) here: a CPU adapter,
/// f32 NCHW x and dy, an f32 KCRS dw, zero padding, at most [`FIRST_KERNEL_MAX_FLOPS`], and
/// both image copies within the limits (checked before anything is recorded).
fn first_call_fits(ctx: &Context, p: &Conv2dProblem, a: &WgradArgs) -> bool {
    let zero_pad = p.mode == PaddingMode::Zeros || p.pad == [0; 4];
    ctx.cpu_kernels()
        && a.cl == [false; 2]
        && !a.f16
        && !a.x_f16
        && !a.dw_f16
        && !a.dw_cl
        && zero_pad
        && p.flops() <= FIRST_KERNEL_MAX_FLOPS
        && u32::try_from(p.c_per_group() * p.r * p.s).is_ok()
        && flat_copy_fits_of(ctx, (&a.x, 0), round4(p.n * p.c * p.h * p.w), DType::F32)
        && flat_copy_fits_of(ctx, (&a.dy, 0), round4(p.n * p.k * p.oh * p.ow), DType::F32)
}

/// Records `conv2d_wgrad_first` for `p` (where [`first_call_fits`]).
fn first_call(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    a: &WgradArgs,
) -> Result<()> {
    let copies = (
        copy_flat(
            ctx,
            enc,
            &a.x,
            round4(p.n * p.c * p.h * p.w),
            "wgconv first-call x",
        )?,
        copy_flat(
            ctx,
            enc,
            &a.dy,
            round4(p.n * p.k * p.oh * p.ow),
            "wgconv first-call dy",
        )?,
    );
    let (Some((ximg, tw)), Some((dimg, dtw))) = copies else {
        return Err(Error::library_bug(
            "recording a first-call weight gradient",
            "an image copy that first_call_fits accepted did not fit",
        ));
    };
    let (kg, crs) = (p.k_per_group(), p.c_per_group() * p.r * p.s);
    let groups_m = crs.div_ceil(WG);
    let groups_n = kg.div_ceil(WFIRST_TK);
    let mut u = WgradFirstParams {
        shape: conv_shape(p)?,
        crs: u32_of(crs, "weight columns")?,
        groups_m: u32_of(groups_m, "column blocks")?,
        groups_n: u32_of(groups_n, "channel blocks")?,
        step_c: u32_of(WG % p.ow.max(1), "output width")?,
        step_r: u32_of(WG / p.ow.max(1), "output width")?,
        tw,
        tw_shift: tw.trailing_zeros(),
        dtw,
        dtw_shift: dtw.trailing_zeros(),
        ..Default::default()
    };
    let spec = WgradFirstSpec {
        WG: WG as u32,
        FLIP: p.flip,
    };
    let binds = [
        Bind::Image(&ximg.view),
        Bind::Image(&dimg.view),
        Bind::whole(&a.dw),
    ];
    let total = (groups_m * groups_n * p.groups * WG) as u64;
    let set = |u: &mut WgradFirstParams, wg: u32| u.wg0 = wg / WG as u32;
    launch_linear::<k::Conv2dWgradFirst>(ctx, enc, &spec, &mut u, set, &binds, total)
}
