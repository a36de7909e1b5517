//! Forward, implicit-GEMM algorithm on storage images (the lavapipe kernel family).

use crate::context::Context;
use crate::conv::implicit_image::{
    input_image, pack_weights_image, plan, runnable, sampled_problem, share_input, share_wanted,
    steady_fill_kernels, SharedInput, Tile, WeightLayout, WG,
};
use crate::conv::launch::conv_shape;
use crate::conv::launch::{fit_one_binding, scoped_key, ConvBuffers};
use crate::conv::table::{anywhere, Entry, Reason};
use crate::conv::{refuse, Algorithm};
use crate::error::Result;
use crate::gemm::job::round4;
use crate::gpu::half;
use crate::gpu::memory::{copy_flat, copy_flat_at, flat_copy_fits_of};
use crate::gpu::pipeline::PipelineKey;
use crate::gpu::{launch_linear, u32_of, Bind};
use crate::kernels::conv2d_implicit::{ImplicitParams, ImplicitSpec};
use crate::kernels::conv2d_implicit_first::{ImplicitFirstParams, ImplicitFirstSpec, FIRST_TN};
use crate::kernels::k;
use crate::params::{Conv2dProblem, PaddingMode};
use crate::tensor::DType;

/// The forward entry: runs where the adapter has 8-lane subgroups and the padded input and
/// packed weights fit `maxTextureDimension2D`.
pub(crate) const FORWARD: Entry<Conv2dProblem, ConvBuffers> = Entry {
    algorithm: Algorithm::ImplicitGemm,
    check,
    // Measured on lavapipe (the tuner, docs/benchmarks.md): ahead of im2col + GEMM from 8
    // channels per group, strided and padded 1x1 layers included (shape e: 3x), and for
    // fewer channels from a reduction of about 32 (3 channels 7x7, shape a: 2.2x; 4 channels
    // 3x3: 2x), behind it below (3 channels 3x3: 0.8x).
    prefer: |_, p| p.c_per_group() >= 8 || p.reduction_len() >= 32,
    tune: anywhere,
    encode: |ctx, enc, p, b| encode_at(ctx, enc, p, b, 0, WeightLayout::forward(p)),
};

/// Why the implicit GEMM cannot run `p` here, if it cannot.
/// Does the forward kernel read f16 x itself for `p` (x channels-last when `x_cl`): the
/// input image filled from an `rgba16float` copy (`InputGeom::reads_f16`)? The output is
/// stored as f32 (the caller rounds it).
pub(crate) fn reads_f16_x(ctx: &Context, src_p: &Conv2dProblem, x_cl: bool) -> bool {
    let (p, sub) = match sampled_problem(src_p) {
        Some(q) => (q, src_p.stride),
        None => (*src_p, [1, 1]),
    };
    plan(ctx, &p).is_some_and(|pl| pl.x.reads_f16(ctx, src_p, sub, x_cl))
}

pub(crate) fn check(ctx: &Context, p: &Conv2dProblem) -> Result<(), Reason> {
    fit_one_binding(ctx, p)?;
    let q = sampled_problem(p).unwrap_or(*p);
    if runnable(ctx, &q) {
        Ok(())
    } else {
        Err(why_not(ctx).into())
    }
}

fn why_not(ctx: &Context) -> &'static str {
    if ctx.image_kernels() {
        "the padded input or the packed weights exceed max_texture_dimension_2d"
    } else {
        ctx.image_kernels_reason()
    }
}

/// Forward convolution `p` reading x from element `x_base` of `&bufs.x`, with weights laid
/// out as `wl`.
pub(crate) fn encode_at(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    src_p: &Conv2dProblem,
    bufs: &ConvBuffers,
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
    let Some(pl) = plan(ctx, p).map(|pl| pl.for_weights(ctx, p, wl)) else {
        return Err(refuse(Algorithm::ImplicitGemm, why_not(ctx)));
    };
    if p.oh * p.ow == 0 || p.n == 0 || p.k == 0 {
        return Ok(());
    }
    let (kg, cg, ohw) = (p.k_per_group(), p.c_per_group(), p.oh * p.ow);
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
        // The caller's weight format: a channels-last view of the same buffer is other
        // weights.
        bufs.w_src
            .as_ref()
            .is_some_and(|t| t.storage_format() == crate::tensor::MemoryFormat::ChannelsLast)
            as usize,
    ]
    .iter()
    .map(|&v| v as u64)
    .collect();
    let cache = &ctx.inner.weights;
    // The weights' cache key: the forward's own, or that of the caller's weights an input
    // gradient or transposed convolution binds as they are (`KeyScope`).
    let w_key = (bufs.w_key.clone()).or_else(|| scoped_key(&bufs.w));
    let cached = w_key.as_ref().and_then(|k| cache.get(k, &layout_key));
    // Weights that changed since they were cached (a training loop writing them every step)
    // are not cached again: caching pays only for weights that calls keep.
    let changing = cached.is_none()
        && (w_key.as_ref()).is_some_and(|k| cache.holds_other_version(k, &layout_key));
    // 1x1 layers read their weights' verbatim copy unless they are cached, or seen for the
    // first time (then packed and cached as before, for calls that keep them).
    let w_flat = cached.is_none()
        && reads_flat_weights(ctx, p, bufs, wl)
        && (w_key.is_none() || cache.budget() == 0 || changing);
    let (act, res) = bufs.ep_codes();
    let spec = ImplicitSpec {
        WG: WG as u32,
        HAS_BIAS: bufs.b.is_some(),
        ACT: act,
        RES: res,
        W_FLAT: w_flat,
    };
    // The tile's kernel, or its first-call stand-in (1 pixel per lane, same weight panels,
    // same sums in the same order) while the tile's kernel is not compiled yet. A kernel
    // not compiled yet compiles on another thread while the weight packing and input
    // padding below compile theirs.
    let kernel = match pl.tile {
        Tile::P8x16 => PipelineKey::of::<k::Conv2dImplicit>(&spec),
        Tile::P4x32 => PipelineKey::of::<k::Conv2dImplicitN32>(&spec),
    };
    let stand_in = ctx.stand_in(kernel.clone());
    // A first call that can read x and w through image copies runs one kernel, not three
    // (contiguous outputs only).
    if stand_in && bufs.y_pitch.is_none() && first_call(ctx, enc, src_p, bufs, x_base, wl)? {
        bufs.mark_epilogue_applied();
        return Ok(());
    }
    ctx.compile_ahead(match (pl.tile, stand_in) {
        (_, false) => kernel,
        (Tile::P8x16, true) => PipelineKey::of::<k::Conv2dImplicitP1x16>(&spec),
        (Tile::P4x32, true) => PipelineKey::of::<k::Conv2dImplicitP1x32>(&spec),
    });
    let groups_n = kg.div_ceil(pl.tile.cols());
    let mut w_shift = 0;
    // A packed image not cached goes back to the scratch pool when `_wimg` drops, after the
    // last command binding it is recorded.
    let (wview, _wimg) = match cached {
        Some(v) => (v, None),
        // 1x1 layers: the weights' verbatim image copy (one copy; nothing to pack or cache).
        None if w_flat => {
            let len = p.k * cg;
            let Some((img, tw)) = copy_flat(ctx, enc, &bufs.w, len, "wgconv flat weights")? else {
                return Err(crate::error::Error::library_bug(
                    "recording an implicit-GEMM convolution",
                    "a flat weight copy that reads_flat_weights accepted did not fit",
                ));
            };
            w_shift = tw.trailing_zeros();
            (img.view.clone(), Some(img))
        }
        None => {
            // Changing weights pack into scratch in the call's own encoder (no submission of
            // their own, no allocation); others into a new image cached after its own
            // submission.
            let own = w_key.is_some() && cache.budget() > 0 && !changing;
            let mut own_enc = own.then(|| ctx.encoder("wgconv weight pack"));
            // f16 weights packed in a submission of their own are converted there (the
            // call's f32 copy is filled by `enc`, submitted later). The scratch goes back to
            // the pool after that submission, which runs before anything recorded later.
            // Changing ones are converted in `enc`: the call may have bound only a
            // placeholder for them, expecting the cache (`lazy_w` in `conv2d`).
            let w32 = match (&bufs.w_src, own_enc.as_mut()) {
                (Some(t), Some(penc)) => Some(half::input(ctx, penc, t)?),
                (Some(t), None) if changing => Some(half::input(ctx, enc, t)?),
                _ => None,
            };
            let converted;
            let src = match &w32 {
                Some(s) => {
                    converted = ConvBuffers {
                        w: s.buf().clone(),
                        ..bufs.clone()
                    };
                    &converted
                }
                None => bufs,
            };
            let target = match own_enc.as_mut() {
                Some(e) => e,
                None => &mut *enc,
            };
            let wimg = pack_weights_image(ctx, target, p, src, (&pl, wl), own)?;
            if let (Some(penc), Some(k)) = (own_enc, &w_key) {
                ctx.submit_internal(penc)?;
                cache.insert(ctx, k, layout_key, &wimg);
            }
            drop(w32);
            (wimg.view.clone(), Some(wimg))
        }
    };
    // Input image, reused chunk by chunk; the input-image cache's when x is the caller's
    // tensor (`KeyScope`): the weight gradient of the same x reads it then.
    let x_key = (x_base == 0).then(|| scoped_key(&bufs.x)).flatten();
    let (ximg, filled) = input_image(ctx, enc, src_p, (sub, &pl.x), (x_key, false))?;
    let pixels = if stand_in { 1 } else { pl.tile.pixels() };
    let groups_m = ohw.div_ceil(WG * pixels);
    let [ohw_, ow, sh, sw, dh, dw, r, s, cb8, cpr, wp, hp, rows_img] = pl.x.fields(p)?;
    let [ysn, ysc, ysr, ysp] = bufs.y_pitch.unwrap_or(own_y_pitch(p, bufs.y_cl));
    let mut cu = ImplicitParams {
        ohw: ohw_,
        ow,
        sh,
        sw,
        dh,
        dw,
        r,
        s,
        cb8,
        cpr,
        wp,
        hp,
        rows_img,
        groups_m: u32_of(groups_m, "pixel blocks")?,
        groups_n: u32_of(groups_n, "channel blocks")?,
        groups: u32_of(p.groups, "groups")?,
        kg: u32_of(kg, "output channels per group")?,
        k: u32_of(p.k, "output channels")?,
        hb: u32_of(pl.hb, "weight image height")?,
        kp: u32_of(pl.kp, "reduction length")?,
        tw_shift: w_shift,
        ysn: u32_of(ysn, "output elements")?,
        ysc: u32_of(ysc, "output elements")?,
        ysr: u32_of(ysr, "output elements")?,
        ysp: u32_of(ysp, "output elements")?,
        ..Default::default()
    };
    (cu.alpha, cu.lo, cu.hi) = bufs.ep_constants();
    let mut n0 = 0;
    while n0 < p.n {
        let nb = pl.x.chunk.min(p.n - n0);
        let x_off = x_base + n0 * src_p.c * src_p.h * src_p.w;
        let xs = (&bufs.x, x_off, bufs.x_cl, bufs.x_f16);
        if !filled {
            pl.x.fill(ctx, enc, src_p, sub, xs, nb, ximg.image())?;
        }
        let batch = nb * p.groups;
        cu.batch = u32_of(batch, "images x groups")?;
        cu.y_off = u32_of(n0 * ysn, "output elements")?;
        let groups = groups_m * groups_n * batch;
        let set = |u: &mut ImplicitParams, wg: u32| u.wg0 = wg / WG as u32;
        let binds = [
            Bind::Image(&ximg.image().view),
            Bind::Image(&wview),
            Bind::whole(bufs.b.as_ref().unwrap_or(&bufs.w)),
            Bind::whole(&bufs.y),
            Bind::whole(bufs.r_or(&bufs.w)),
        ];
        let total = (groups * WG) as u64;
        let (c, u) = (&mut cu, &binds);
        match (pl.tile, stand_in) {
            (Tile::P8x16, false) => {
                launch_linear::<k::Conv2dImplicit>(ctx, enc, &spec, c, set, u, total)?
            }
            (Tile::P4x32, false) => {
                launch_linear::<k::Conv2dImplicitN32>(ctx, enc, &spec, c, set, u, total)?
            }
            (Tile::P8x16, true) => {
                launch_linear::<k::Conv2dImplicitP1x16>(ctx, enc, &spec, c, set, u, total)?
            }
            (Tile::P4x32, true) => {
                launch_linear::<k::Conv2dImplicitP1x32>(ctx, enc, &spec, c, set, u, total)?
            }
        }
        n0 += nb;
    }
    // The backward of a 1x1 layer: the weight gradient reads dy from this image (the input
    // gradient's input) when it holds every image of dy as it is.
    if share_wanted(&bufs.x)
        && x_base == 0
        && pl.x.chunk >= p.n
        && sub == [1, 1]
        && !(bufs.x_cl || bufs.x_f16)
        && p.mode == PaddingMode::Zeros
        && p.pad[0] >= 0
        && p.pad[2] >= 0
    {
        let dims = [p.n, p.c, p.h, p.w, p.groups];
        let origin = [p.pad[2] as usize, p.pad[0] as usize];
        let shared = SharedInput {
            img: ximg,
            geom: pl.x,
            origin,
        };
        share_input(&bufs.x, dims, shared);
    }
    // The store applied the epilogue (fused).
    bufs.mark_epilogue_applied();
    Ok(())
}

/// Does the kernel read `p`'s weights (laid out as `wl`) from a verbatim image copy of their
/// buffer (`W_FLAT`) instead of packed panels? On CPU adapters for 1x1 layers in the forward
/// layout with channels per group a multiple of 8 (a reduction step's 8 channels are two
/// texels of a weight row) and f32 weights used as they are: the copy replaces the packing
/// pass (~0.3 ms for 512 x 256 weights on lavapipe, every call of a training loop whose
/// weights change) at the same kernel cost.
fn reads_flat_weights(
    ctx: &Context,
    p: &Conv2dProblem,
    bufs: &ConvBuffers,
    wl: WeightLayout,
) -> bool {
    let (kg, cg) = (p.k_per_group(), p.c_per_group());
    ctx.cpu_kernels()
        && p.r * p.s == 1
        && cg.is_multiple_of(8)
        && wl.c_stride == 1
        && wl.k_stride == cg
        && wl.g_stride == kg * cg
        && bufs.w_src.is_none()
        && flat_copy_fits_of(ctx, (&bufs.w, 0), p.k * cg, DType::F32)
}

/// y's image, channel, row and column pitches (elements) for `p`'s own output: NCHW
/// (K ohw, ohw, ow, 1), channels-last (K ohw, 1, ow K, K).
fn own_y_pitch(p: &Conv2dProblem, y_cl: bool) -> [usize; 4] {
    let ohw = p.oh * p.ow;
    if y_cl {
        [p.k * ohw, 1, p.ow * p.k, p.k]
    } else {
        [p.k * ohw, ohw, p.ow, 1]
    }
}

/// The largest layer the first-call kernel runs. It saves ~150 ms of driver compilation
/// when Mesa's shader cache is cold (one kernel instead of three), but runs at less than half
/// the speed of the 1-pixel stand-ins (lavapipe, 2 cores: ~7 GFLOP/s against ~18; the steady
/// kernel ~40): with a warm shader cache (little to save) a 0.46 GFLOP layer's first call
/// lost ~50 ms, a 3.7 GFLOP one ~350 ms (docs/benchmarks.md, 2026-12-07).
pub(crate) const FIRST_KERNEL_MAX_FLOPS: f64 = 0.3e9;

/// The first call of a layer whose implicit-GEMM kernel is not compiled yet (see
/// `crate::tune`): `conv2d_implicit_first` alone, reading x and the weights through
/// verbatim image copies, where it can (CPU adapters, f32 NCHW x, f32 KCRS weights, zero
/// padding, copies within the image limits) and where it pays (up to
/// [`FIRST_KERNEL_MAX_FLOPS`]). The same sums in the same order as the steady kernel.
/// `false` (nothing recorded) where it cannot.
fn first_call(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    bufs: &ConvBuffers,
    x_base: usize,
    wl: WeightLayout,
) -> Result<bool> {
    let zero_pad = p.mode == PaddingMode::Zeros || p.pad == [0; 4];
    if !ctx.cpu_kernels()
        || bufs.x_cl
        || bufs.x_f16
        || bufs.y_f16
        // f16 or channels-last weights: `w` may be an unconverted placeholder (the pack
        // converts them from `w_src`).
        || bufs.w_src.is_some()
        || !zero_pad
        || p.flops() > FIRST_KERNEL_MAX_FLOPS
    {
        return Ok(false);
    }
    let (kg, cg, ohw) = (p.k_per_group(), p.c_per_group(), p.oh * p.ow);
    let [_, ysc, _, ysp] = own_y_pitch(p, bufs.y_cl);
    let x_len = round4(p.n * p.c * p.h * p.w);
    let w_len = round4(p.k * cg * p.r * p.s);
    // Both copies possible before either is recorded.
    if !flat_copy_fits_of(ctx, (&bufs.x, x_base), x_len, DType::F32)
        || !flat_copy_fits_of(ctx, (&bufs.w, 0), w_len, DType::F32)
    {
        return Ok(false);
    }
    let Some((ximg, tw)) = copy_flat_at(ctx, enc, (&bufs.x, x_base), x_len, "wgconv first-call x")?
    else {
        return Ok(false);
    };
    let Some((wimg, wtw)) = copy_flat(ctx, enc, &bufs.w, w_len, "wgconv first-call weights")?
    else {
        return Ok(false);
    };
    let (act, res) = bufs.ep_codes();
    let spec = ImplicitFirstSpec {
        WG: WG as u32,
        HAS_BIAS: bufs.b.is_some(),
        FLIP: p.flip,
        ACT: act,
        RES: res,
    };
    let groups_m = ohw.div_ceil(WG);
    let groups_n = kg.div_ceil(FIRST_TN);
    let batch = p.n * p.groups;
    let mut u = ImplicitFirstParams {
        shape: conv_shape(p)?,
        g_stride: u32_of(wl.g_stride, "weight stride")?,
        k_stride: u32_of(wl.k_stride, "weight stride")?,
        c_stride: u32_of(wl.c_stride, "weight stride")?,
        cb8: u32_of(cg.div_ceil(8), "channel blocks")?,
        groups_m: u32_of(groups_m, "pixel blocks")?,
        groups_n: u32_of(groups_n, "channel blocks")?,
        batch: u32_of(batch, "images x groups")?,
        ysc: u32_of(ysc, "output elements")?,
        ysp: u32_of(ysp, "output elements")?,
        tw,
        tw_shift: tw.trailing_zeros(),
        wtw,
        wtw_shift: wtw.trailing_zeros(),
        ..Default::default()
    };
    (u.alpha, u.lo, u.hi) = bufs.ep_constants();
    let binds = [
        Bind::Image(&ximg.view),
        Bind::Image(&wimg.view),
        Bind::whole(bufs.b.as_ref().unwrap_or(&bufs.w)),
        Bind::whole(&bufs.y),
        Bind::whole(bufs.r_or(&bufs.w)),
    ];
    let set = |u: &mut ImplicitFirstParams, wg: u32| u.wg0 = wg / WG as u32;
    let total = (groups_m * groups_n * batch * WG) as u64;
    launch_linear::<k::Conv2dImplicitFirst>(ctx, enc, &spec, &mut u, set, &binds, total)?;
    // The steady call also packs the weights and fills the input image.
    for key in steady_fill_kernels(ctx, p, wl) {
        ctx.compile_later(key);
    }
    Ok(true)
}
