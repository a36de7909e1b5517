//! The image GEMM (CPU adapters with 8-lane subgroups): operands in wrapped panels of
//! storage images.

use super::job::{encode_chunked, round4, vec4_ready, GemmJob, Mat};
use crate::context::Context;
use crate::error::Result;
use crate::gemm::GemmVariant;
use crate::gpu::memory::{
    copy_flat_at, flat_copy_fits_of, flat_fields, DeviceImage, ImageStaging, ScratchBuffer,
};
use crate::gpu::pipeline::PipelineKey;
use crate::gpu::{fits, launch_linear, u32_of, Bind};
use crate::kernels::gemm_image::{GemmImageParams, GemmImageSpec};
use crate::kernels::k;
use crate::kernels::pack_image::{PackImageParams, PackImageSpec};
use crate::tensor::DType;

/// Lanes of a `gemm_image` workgroup (one 8-lane subgroup; 8, 16, 32, 64 measured alike).
const IMG_WG: usize = 8;
/// Rows of an A panel of the image GEMM: 8 rows per lane.
pub(crate) const IMG_PANEL_A: usize = 8 * IMG_WG;
/// Columns of a B panel of the image GEMM: one workgroup's columns.
pub(crate) const IMG_PANEL_B: usize = 16;
/// Largest M for which the image GEMM reads a vec4-ready (not copyable) B straight from its
/// buffer instead of packing it. Measured on lavapipe (B row-major, cpu-equivalent GFLOP/s,
/// packed vs buffer): M = 64 (x3140x576) 16.4 vs 42.1, 128 17.0 vs 37.1, 256 20.5 vs 23.5,
/// 512 29.9 vs 29.9, 1024 36.7 vs 36.1, 2048 47.9 vs 45.5.
const IMG_B_BUFFER_MAX_M: usize = 1024;
/// k-rows per dispatch of the image GEMM (longer reductions accumulate over several
/// dispatches). On lavapipe 2048^3 ran 3-7 % faster in blocks of 1024 than in one pass
/// (512 and 2048 alike, within noise); shorter reductions are one dispatch.
const IMG_K_BLOCK: usize = 1024;

/// Geometry of one operand image of the image GEMM: `entries` batch entries of an operand
/// with `rows` rows (M or N) and K padded to `kp`, in panels of `4 * w` rows (see
/// kernel `gemm_image`): wrapped panels filled by `pack_image`, or the plain
/// K-major layout filled by buffer-to-texture copies (`copy`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ImageGeom {
    /// Panels per batch entry.
    pub(crate) np: usize,
    /// K rounded up to 8.
    pub(crate) kp: usize,
    /// Texels per panel row.
    w: usize,
    /// Image height (a multiple of 8).
    pub(crate) h: usize,
    /// Image width (a multiple of `w`).
    pub(crate) width: usize,
    /// Plain layout (texel `(r / 4, entry * kp + k)`), filled by copies.
    copy: bool,
}

impl ImageGeom {
    /// Wrapped panels; `None` when the image would exceed `maxTextureDimension2D`.
    pub(crate) fn new(
        ctx: &Context,
        rows: usize,
        k: usize,
        panel: usize,
        entries: usize,
    ) -> Option<Self> {
        let d = ctx.limits().max_texture_dimension_2d as usize;
        let kp = k.div_ceil(8) * 8;
        let np = rows.div_ceil(panel);
        let w = panel / 4;
        let total = entries.checked_mul(np)?.checked_mul(kp)?;
        let h = total.min(d / 8 * 8);
        let width = total.div_ceil(h).checked_mul(w)?;
        (width <= d).then_some(ImageGeom {
            np,
            kp,
            w,
            h,
            width,
            copy: false,
        })
    }

    /// The plain layout when operand `mat` (`rows` x `k`, `entries` = (outer, inner) distinct
    /// batch entries) can be copied into it verbatim: stored K-major, rows of a multiple of 64
    /// floats (256-byte copy rows), 16-byte aligned offsets, every read inside the buffer,
    /// and the image within `maxTextureDimension2D`. Columns `rows..` of the panels are copied
    /// from the row padding and only reach outputs that are never stored.
    fn plain(
        ctx: &Context,
        mat: &Mat<'_>,
        k_major: bool,
        (rows, k): (usize, usize),
        panel: usize,
        (outers, inners): (usize, usize),
    ) -> Option<Self> {
        let d = ctx.limits().max_texture_dimension_2d as usize;
        let kp = k.div_ceil(8) * 8;
        let np = rows.div_ceil(panel);
        let w = panel / 4;
        let aligned = mat.ld.is_multiple_of(64)
            && mat.off.is_multiple_of(4)
            && mat.so.is_multiple_of(4)
            && mat.si.is_multiple_of(4);
        if !(k_major && aligned && np * panel <= mat.ld) {
            return None;
        }
        let last = mat.off + (outers - 1) * mat.so + (inners - 1) * mat.si + k * mat.ld;
        let h = (outers * inners).checked_mul(kp)?;
        let width = np * w;
        (last as u64 * 4 <= mat.buf.size() && h <= d && width <= d).then_some(ImageGeom {
            np,
            kp,
            w,
            h,
            width,
            copy: true,
        })
    }

    fn bytes(&self) -> u64 {
        (self.width * self.h) as u64 * DeviceImage::TEXEL
    }

    /// Panel-index strides `(outer entry, inner entry, panel)` of an operand with
    /// `(outers, inners)` distinct entries (0 for a shared level).
    fn strides(&self, (outers, inners): (usize, usize)) -> (usize, usize, usize) {
        let (entry, panel) = if self.copy {
            (1, outers * inners)
        } else {
            (self.np, 1)
        };
        (
            if outers == 1 { 0 } else { inners * entry },
            if inners == 1 { 0 } else { entry },
            panel,
        )
    }
}

/// Distinct batch entries of an operand (stride 0: shared) among `outer` x `inner`.
fn entries(mat: &Mat<'_>, outer: usize, inner: usize) -> (usize, usize) {
    (
        if mat.so == 0 { 1 } else { outer },
        if mat.si == 0 { 1 } else { inner },
    )
}

/// Where the image GEMM reads its operands from for `job` restricted to `oc` x `ic` batch
/// entries: A from an image (the plain layout, copied, where possible, else wrapped panels);
/// B likewise, or (`None`) straight from its buffer with `gemm_image_sb` when it is
/// K-major and vec4-aligned but not copyable and few rows of C share it (packing it would cost
/// more than the slower buffer loads). `None` unless the images fit the texture limits and
/// together the scratch budget.
pub(crate) fn image_plan(
    ctx: &Context,
    job: &GemmJob<'_>,
    oc: usize,
    ic: usize,
) -> Option<(ImageGeom, Option<ImageGeom>)> {
    let geom = |mat: &Mat<'_>, k_major: bool, rows: usize, panel: usize| {
        let e = entries(mat, oc, ic);
        ImageGeom::plain(ctx, mat, k_major, (rows, job.k), panel, e)
            .or_else(|| ImageGeom::new(ctx, rows, job.k, panel, e.0 * e.1))
    };
    let ga = geom(&job.a, job.a_km, job.m, IMG_PANEL_A)?;
    let b_direct = job.m <= IMG_B_BUFFER_MAX_M && vec4_ready(&job.b, job.b_kn);
    let gb = match geom(&job.b, job.b_kn, job.n, IMG_PANEL_B) {
        Some(g) if g.copy || !b_direct => Some(g),
        _ if b_direct => None,
        _ => return None,
    };
    // (A packed image passes through a staging buffer of its size while it is filled: a
    // transient peak of at most one more image, see `ContextOptions::scratch_budget`.)
    let bytes = ga.bytes() + gb.map_or(0, |g| g.bytes());
    (bytes <= ctx.scratch_budget().max(4096)).then_some((ga, gb))
}

/// Can chunks of `mc` x `nc` x `kc` of one batch entry run as one image GEMM (in wrapped
/// panels, which are never smaller than the plain layout)?
pub(crate) fn image_chunk_fits(ctx: &Context, mc: usize, nc: usize, kc: usize) -> bool {
    let fits = |rows, panel| ImageGeom::new(ctx, rows, kc, panel, 1);
    match (fits(mc, IMG_PANEL_A), fits(nc, IMG_PANEL_B)) {
        (Some(a), Some(b)) => a.bytes() + b.bytes() <= ctx.scratch_budget().max(4096),
        _ => false,
    }
}

/// The batch entries `[o0, o0 + oc)` x `[i0, i0 + ic)` of `job` as a job of their own.
pub(crate) fn batch_range<'a>(
    job: &GemmJob<'a>,
    (o0, oc): (usize, usize),
    (i0, ic): (usize, usize),
) -> GemmJob<'a> {
    let shift = |mat: &Mat<'a>| Mat {
        off: mat.off + o0 * mat.so + i0 * mat.si,
        ..*mat
    };
    GemmJob {
        batch_outer: oc,
        batch_inner: ic,
        a: shift(&job.a),
        b: shift(&job.b),
        c: shift(&job.c),
        bias: job
            .bias
            .map(|(buf, off, si, mode)| (buf, off + i0 * si, si, mode)),
        ..*job
    }
}

/// Image GEMM of a job whose operands fit their bindings: one launch when its images fit
/// (texture limits, scratch budget), else groups of batch entries, else chunks of one entry.
pub(crate) fn encode_image_job(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    job: &GemmJob<'_>,
) -> Result<()> {
    let (outer, inner) = (job.batch_outer, job.batch_inner);
    let plan = |oc: usize, ic: usize| image_plan(ctx, job, oc, ic);
    if let Some(geom) = plan(outer, inner) {
        encode_image(ctx, enc, job, geom, None)?;
        return Ok(());
    }
    if plan(1, 1).is_none() {
        return encode_chunked(ctx, enc, job, GemmVariant::Image);
    }
    // Largest count (halving from `all`) whose images fit.
    let largest = |all: usize, fits: &dyn Fn(usize) -> bool| {
        let mut g = all;
        while g > 1 && !fits(g) {
            g = g.div_ceil(2);
        }
        g
    };
    if plan(1, inner).is_some() {
        let g = largest(outer, &|g| plan(g, inner).is_some());
        for o0 in (0..outer).step_by(g) {
            let oc = g.min(outer - o0);
            let sub = batch_range(job, (o0, oc), (0, inner));
            encode_image(
                ctx,
                enc,
                &sub,
                image_plan(ctx, &sub, oc, inner).expect("fits"),
                None,
            )?;
        }
    } else {
        let g = largest(inner, &|g| plan(1, g).is_some());
        for o in 0..outer {
            for i0 in (0..inner).step_by(g) {
                let ic = g.min(inner - i0);
                let sub = batch_range(job, (o, 1), (i0, ic));
                let geom = image_plan(ctx, &sub, 1, ic).expect("fits");
                encode_image(ctx, enc, &sub, geom, None)?;
            }
        }
    }
    Ok(())
}

/// Fills a new image of geometry `g` with operand `mat` (element `(r, k)` of batch entry
/// `(bo, bi)` at `off + bo*so + bi*si + r*rs + k*ks`): one buffer-to-texture copy per entry
/// for the plain layout, else the pack kernel.
#[allow(clippy::too_many_arguments)]
pub(crate) fn fill_image(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    mat: &Mat<'_>,
    k_major: bool,
    rows: usize,
    k: usize,
    (outers, inners): (usize, usize),
    g: &ImageGeom,
    label: &str,
) -> Result<DeviceImage> {
    let img = DeviceImage::new(
        ctx,
        enc,
        u32_of(g.width, "gemm image width")?,
        u32_of(g.h, "gemm image height")?,
        label,
    )?;
    if g.copy {
        // The k-rows k..kp of each entry, which the kernel reads, are zeros (the image comes
        // from the scratch pool with any contents).
        let pad = (g.kp - k) as u32;
        let pitch = (g.width as u64 * DeviceImage::TEXEL).div_ceil(256) * 256;
        let zeros = if pad > 0 {
            Some(ScratchBuffer::zeroed(
                ctx,
                enc,
                pitch * pad as u64,
                "wgconv zeros",
            )?)
        } else {
            None
        };
        ctx.scoped("copying a gemm operand", || {
            for o in 0..outers {
                for i in 0..inners {
                    let e = o * inners + i;
                    img.copy_rows_from(
                        enc,
                        mat.buf,
                        (
                            ((mat.off + o * mat.so + i * mat.si) * 4) as u64,
                            (mat.ld * 4) as u32,
                        ),
                        ((e * g.kp) as u32, g.width as u32, k as u32),
                    );
                    if let Some(z) = &zeros {
                        img.copy_rows_from(
                            enc,
                            &z.buffer,
                            (0, pitch as u32),
                            ((e * g.kp + k) as u32, g.width as u32, pad),
                        );
                    }
                }
            }
        })?;
        return Ok(img);
    }
    let (rs, ks) = if k_major { (1, mat.ld) } else { (mat.ld, 1) };
    let (src, off) = mat.bind(ctx)?;
    // One invocation per texel column of an 8-k group.
    let total = outers * inners * g.np * (g.kp / 8) * g.w;
    debug_assert!(g.w.is_power_of_two());
    let mut u = PackImageParams {
        r: u32_of(rows, "gemm rows")?,
        k: u32_of(k, "gemm k")?,
        kp: u32_of(g.kp, "gemm k")?,
        rs: u32_of(rs, "gemm leading dimension")?,
        ks: u32_of(ks, "gemm leading dimension")?,
        off,
        w: g.w as u32,
        h: u32_of(g.h, "gemm image height")?,
        np: u32_of(g.np, "gemm panels")?,
        inners: u32_of(inners, "gemm batch")?,
        so: u32_of(mat.so, "gemm batch stride")?,
        si: u32_of(mat.si, "gemm batch stride")?,
        total: u32_of(total, "gemm image texels")?,
        w_shift: g.w.trailing_zeros(),
        ..Default::default()
    };
    let (width, height) = (
        u32_of(g.width, "gemm image width")?,
        u32_of(g.h, "gemm image height")?,
    );
    let flat = match flat_span(ctx, mat, k_major, rows, k, (outers, inners)) {
        Some((lo, len)) => {
            copy_flat_at(ctx, enc, (mat.buf, lo), len, label)?.map(|(img, tw)| (img, tw, lo))
        }
        None => None,
    };
    let src = match &flat {
        Some((img, tw, lo)) => {
            u.off = u32_of(mat.off - lo, "gemm offset")?;
            [u.tw, u.tw_shift, u.texels] = flat_fields(img, *tw)?;
            Bind::Image(&img.view)
        }
        None => src,
    };
    let staging = ImageStaging::new(ctx, enc, width, height)?;
    u.dst_row = staging.row;
    let spec = PackImageSpec::default();
    staging.fill(ctx, enc, &img, (width, height), |enc, y_lo, y_hi, dst| {
        (u.y_lo, u.y_hi) = (y_lo, y_hi);
        let set = |u: &mut PackImageParams, t0| u.t0 = t0;
        let binds = [src, Bind::whole(dst)];
        if flat.is_some() && ks != 1 {
            launch_linear::<k::PackImageRows>(ctx, enc, &spec, &mut u, set, &binds, total as u64)
        } else if flat.is_some() {
            launch_linear::<k::PackImageFlat>(ctx, enc, &spec, &mut u, set, &binds, total as u64)
        } else {
            launch_linear::<k::PackImage>(ctx, enc, &spec, &mut u, set, &binds, total as u64)
        }
    })?;
    Ok(img)
}

/// The floats `lo..lo + len` of `mat`'s buffer that [`fill_image`] reads through a verbatim
/// image copy, or `None` when it reads the buffer: CPU adapters (storage-buffer loads are
/// per-lane loops there), a k-contiguous operand or a row-contiguous one (rs == 1) with every
/// texel aligned (a texel per 4 rows and k), no window, and a copy within the image limits.
fn flat_span(
    ctx: &Context,
    mat: &Mat<'_>,
    k_major: bool,
    rows: usize,
    k: usize,
    (outers, inners): (usize, usize),
) -> Option<(usize, usize)> {
    let (rs, ks) = if k_major { (1, mat.ld) } else { (mat.ld, 1) };
    let rows4 = rs == 1
        && ks.is_multiple_of(4)
        && mat.off.is_multiple_of(4)
        && mat.so.is_multiple_of(4)
        && mat.si.is_multiple_of(4);
    if !(ctx.cpu_kernels() && (ks == 1 || rows4) && mat.win.is_none() && rows > 0 && k > 0) {
        return None;
    }
    let last =
        mat.off + (outers - 1) * mat.so + (inners - 1) * mat.si + (rows - 1) * rs + (k - 1) * ks;
    let lo = mat.off / 4 * 4;
    let len = round4(last + 1 - lo);
    flat_copy_fits_of(ctx, (mat.buf, lo), len, DType::F32).then_some((lo, len))
}

/// The kernel [`fill_image`] runs for its arguments (`None`: copies only), for the
/// first-call kernels that queue the steady fills' compilation.
pub(crate) fn fill_image_kernel(
    ctx: &Context,
    mat: &Mat<'_>,
    k_major: bool,
    rows: usize,
    k: usize,
    entries: (usize, usize),
    g: &ImageGeom,
) -> Option<PipelineKey> {
    if g.copy {
        return None;
    }
    let spec = PackImageSpec::default();
    Some(match flat_span(ctx, mat, k_major, rows, k, entries) {
        Some(_) if k_major && mat.ld != 1 => PipelineKey::of::<k::PackImageRows>(&spec),
        Some(_) => PipelineKey::of::<k::PackImageFlat>(&spec),
        None => PipelineKey::of::<k::PackImage>(&spec),
    })
}

/// Where [`encode_image_sums`] writes the column sums of B: `buf[off + bi * si + n]` for
/// inner batch entry `bi` and column `n`.
pub(crate) type ColSums<'a> = (&'a wgpu::Buffer, usize, usize);

/// [`encode_image_job`] that also writes (or with `job.accumulate` adds) the column sums of
/// B over the reduction into `sums` (the bias gradient of a weight-gradient GEMM whose B is
/// dy), when the job runs as one whole image launch with B from an image and one outer
/// batch entry. `None`: nothing recorded (the caller runs the job, and the sums apart);
/// `Some(done)`: the job is recorded, with the sums when `done` (without them while their
/// pipeline compiles in the background, as a first call's stand-in).
pub(crate) fn encode_image_sums(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    job: &GemmJob<'_>,
    sums: ColSums<'_>,
    variant: GemmVariant,
) -> Result<Option<bool>> {
    let whole = job.a.fits(ctx) && job.b.fits(ctx) && job.c.fits(ctx);
    let bias_fits = job.bias.is_none_or(|(b, ..)| fits(ctx, b));
    if variant.resolve(ctx) != GemmVariant::Image
        || job.batch_outer != 1
        || !(whole && bias_fits && fits(ctx, sums.0))
    {
        return Ok(None);
    }
    match image_plan(ctx, job, 1, job.batch_inner) {
        Some(geom @ (_, Some(_))) => Ok(Some(encode_image(ctx, enc, job, geom, Some(sums))?)),
        _ => Ok(None),
    }
}

/// One image GEMM launch: packs A and B into images of geometry `ga`, `gb` and runs
/// `gemm_image` over every batch entry, writing the column sums of B into `sums` too (B
/// from an image, one outer batch entry) unless their pipeline is not compiled yet and
/// compiles in the background (`Context::stand_in`): returns whether it wrote them.
fn encode_image(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    job: &GemmJob<'_>,
    (ga, gb): (ImageGeom, Option<ImageGeom>),
    sums: Option<ColSums<'_>>,
) -> Result<bool> {
    debug_assert!(sums.is_none() || gb.is_some() && job.batch_outer == 1);
    let (m, n, k) = (job.m, job.n, job.k);
    let (outer, inner) = (job.batch_outer, job.batch_inner);
    let ea = entries(&job.a, outer, inner);
    let eb = entries(&job.b, outer, inner);
    let ia = fill_image(
        ctx,
        enc,
        &job.a,
        job.a_km,
        m,
        k,
        ea,
        &ga,
        "wgconv gemm image A",
    )?;
    let ib = match &gb {
        Some(g) => Some(fill_image(
            ctx,
            enc,
            &job.b,
            job.b_kn,
            n,
            k,
            eb,
            g,
            "wgconv gemm image B",
        )?),
        None => None,
    };
    let (a_po, a_pi, a_pn) = ga.strides(ea);
    let (b_po, b_pi, b_pn) = gb.map_or((0, 0, 0), |g| g.strides(eb));
    let (b_bind, b_off) = match &ib {
        Some(img) => (Bind::Image(&img.view), 0),
        None => job.b.bind(ctx)?,
    };
    let (c_bind, c_off) = job.c.bind(ctx)?;
    let (bias_bind, bias_off, bias_si, bias_mode) = match job.bias {
        Some((buf, off, si, mode)) => (Bind::whole(buf), off, si, mode),
        // Unused; A's source binding is read-only and known to fit.
        None => (job.a.bind(ctx)?.0, 0, 0, 0),
    };
    let (groups_m, groups_n) = (m.div_ceil(IMG_PANEL_A), n.div_ceil(IMG_PANEL_B));
    let batch = outer * inner;
    let mut u = GemmImageParams {
        m: u32_of(m, "gemm m")?,
        n: u32_of(n, "gemm n")?,
        kp: u32_of(ga.kp, "gemm k")?,
        ldc: u32_of(job.c.ld, "gemm ldc")?,
        ldc_n: u32_of(job.c_col_stride, "gemm ldc")?,
        c_off,
        c_si: u32_of(job.c.si, "gemm stride")?,
        c_so: u32_of(job.c.so, "gemm stride")?,
        groups_m: u32_of(groups_m, "gemm tiles")?,
        groups_n: u32_of(groups_n, "gemm tiles")?,
        batch_inner: u32_of(inner, "gemm batch")?,
        batch: u32_of(batch, "gemm batch")?,
        ha: u32_of(ga.h, "gemm image height")?,
        hb: u32_of(gb.map_or(0, |g| g.h), "gemm image height")?,
        a_pi: u32_of(a_pi, "gemm panels")?,
        a_po: u32_of(a_po, "gemm panels")?,
        b_pi: u32_of(b_pi, "gemm panels")?,
        b_po: u32_of(b_po, "gemm panels")?,
        bias_off: u32_of(bias_off, "gemm offset")?,
        bias_si: u32_of(bias_si, "gemm stride")?,
        a_pn: u32_of(a_pn, "gemm panels")?,
        b_pn: u32_of(b_pn, "gemm panels")?,
        k: u32_of(k, "gemm k")?,
        b_off,
        ldb: u32_of(job.b.ld, "gemm ldb")?,
        b_si: u32_of(job.b.si, "gemm stride")?,
        b_so: u32_of(job.b.so, "gemm stride")?,
        sum_off: u32_of(sums.map_or(0, |s| s.1), "bias-gradient offset")?,
        sum_si: u32_of(sums.map_or(0, |s| s.2), "bias-gradient stride")?,
        ..Default::default()
    };
    let groups = groups_m * groups_n * batch;
    u32_of(groups, "gemm workgroups")?;
    let wg = IMG_WG as u64;
    // Long reductions run as dispatches over blocks of k-rows that accumulate into C (bias
    // with the first): the panels of one block stay in cache.
    // The epilogue (only from `encode_job_fused`: C bound whole, the residual indexed like
    // it) with the last k-block, once C holds the whole sum.
    let (act, res) = job
        .epilogue
        .map_or((0, 0), |(ep, _)| (ep.activation.code(), ep.residual.code()));
    (u.alpha, u.lo, u.hi) = job
        .epilogue
        .map_or((0.0, 0.0, 0.0), |(ep, _)| ep.activation.constants());
    let r_bind = match job.epilogue {
        Some((_, Some(r))) => Bind::whole(r),
        _ => bias_bind,
    };
    let c4 = c4_mode(&u, batch);
    let spec_at = |k_lo: usize, sums: bool| {
        let (first, last) = (k_lo == 0, k_lo + IMG_K_BLOCK >= ga.kp);
        GemmImageSpec {
            WG: IMG_WG as u32,
            BIAS_MODE: if first { bias_mode } else { 0 },
            ACCUMULATE: job.accumulate || !first,
            ACT: if last { act } else { 0 },
            RES: if last { res } else { 0 },
            COL_SUMS: sums,
        }
    };
    let sums = sums.filter(|_| {
        let spec = spec_at(0, true);
        let key = match c4 {
            1 => PipelineKey::of::<k::GemmImageC4>(&spec),
            2 => PipelineKey::of::<k::GemmImageC4t>(&spec),
            _ => PipelineKey::of::<k::GemmImage>(&spec),
        };
        !ctx.stand_in(key)
    });
    // The image-B kernels' last binding: the sums, or C again (not touched without
    // COL_SUMS); `gemm_image_sb` has no such binding.
    let sums_bind = sums.map_or(c_bind, |s| Bind::whole(s.0));
    let all = [
        Bind::Image(&ia.view),
        b_bind,
        bias_bind,
        c_bind,
        r_bind,
        sums_bind,
    ];
    let binds = if ib.is_some() { &all[..] } else { &all[..5] };
    let total = groups as u64 * wg;
    for k_lo in (0..ga.kp).step_by(IMG_K_BLOCK) {
        u.k_lo = k_lo as u32;
        u.k_len = IMG_K_BLOCK.min(ga.kp - k_lo) as u32;
        let spec = spec_at(k_lo, sums.is_some());
        let set = |u: &mut GemmImageParams, start: u32| u.wg0 = start / wg as u32;
        match (ib.is_some(), c4) {
            (false, _) => {
                launch_linear::<k::GemmImageSb>(ctx, enc, &spec, &mut u, set, binds, total)?
            }
            (true, 1) => {
                launch_linear::<k::GemmImageC4>(ctx, enc, &spec, &mut u, set, binds, total)?
            }
            (true, 2) => {
                launch_linear::<k::GemmImageC4t>(ctx, enc, &spec, &mut u, set, binds, total)?
            }
            (true, _) => launch_linear::<k::GemmImage>(ctx, enc, &spec, &mut u, set, binds, total)?,
        }
    }
    Ok(sums.is_some())
}

/// How the image GEMM can store the C of `u`: 1 (`gemm_image_c4`) when C's rows are
/// contiguous runs of whole vec4s (`ldc_n = 1`), 2 (`gemm_image_c4t`) when its columns are
/// (`ldc = 1`), else 0 (`gemm_image`, one float per store). Every element offset the kernel forms must be a
/// multiple of 4, and N (or M) too, so that a vec4 is either whole inside C or past its edge.
fn c4_mode(u: &GemmImageParams, batch: usize) -> u32 {
    let aligned = |v: u32| v.is_multiple_of(4);
    let offsets = aligned(u.c_off) && (batch == 1 || aligned(u.c_si) && aligned(u.c_so));
    if !offsets {
        0
    } else if u.ldc_n == 1 && aligned(u.ldc) && aligned(u.n) {
        1
    } else if u.ldc == 1 && aligned(u.ldc_n) && aligned(u.m) {
        2
    } else {
        0
    }
}
