//! GEMM jobs on storage buffers: operand descriptions, packing, the register and tiled
//! kernels.

use super::image::{encode_image_job, image_chunk_fits, image_plan, IMG_PANEL_A, IMG_PANEL_B};
use crate::context::Context;
use crate::epilogue::Epilogue;
use crate::error::{Error, Result};
use crate::gemm::GemmVariant;
use crate::gpu::memory::ScratchBuffer;
use crate::gpu::{fits, launch, max_window_elems, u32_of, window, Bind};
use crate::kernels::gemm_reg::{GemmParams, GemmRegSpec};
use crate::kernels::gemm_tiled::GemmTiledSpec;
use crate::kernels::k;
use crate::kernels::pack::{PackParams, PackSpec};

/// A matrix operand inside a buffer: element offset, leading dimension and batch strides
/// (outer, inner) in elements.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mat<'a> {
    /// Element range `[lo, hi)` to bind instead of the whole buffer (for buffers larger than
    /// one storage binding); `off` stays a global element offset inside it.
    pub win: Option<(usize, usize)>,
    pub buf: &'a wgpu::Buffer,
    pub off: usize,
    pub ld: usize,
    pub so: usize,
    pub si: usize,
}

/// One (batched) GEMM on device buffers: `C[m, n] = Σ_k A[m, k]·B[k, n]`.
/// `a_km`: A stored `a[k*ld + m]` (else `a[m*ld + k]`); `b_kn`: B stored `b[k*ld + n]`
/// (else `b[n*ld + k]`). The batch index is `outer * batch_inner + inner`.
pub(crate) struct GemmJob<'a> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub batch_outer: usize,
    pub batch_inner: usize,
    pub a: Mat<'a>,
    pub a_km: bool,
    pub b: Mat<'a>,
    pub b_kn: bool,
    pub c: Mat<'a>,
    /// Element stride between columns of C (1: row-major C; `c.ld` is the row stride).
    pub c_col_stride: usize,
    /// `(buffer, element offset, inner-batch stride, mode)`: mode 1 per row, 2 per column.
    pub bias: Option<(&'a wgpu::Buffer, usize, usize, u32)>,
    pub accumulate: bool,
    /// An epilogue and its residual (C's layout, indexed like C), applied by the image
    /// kernel's store: only through [`encode_job_fused`], which strips it where the kernel
    /// cannot apply it (then the caller runs the elementwise pass).
    pub epilogue: Option<(Epilogue, Option<&'a wgpu::Buffer>)>,
}

/// [`encode_job`] fusing `job.epilogue` into the image kernel's store when the job runs as
/// whole image launches (the image variant, operands and residual within one binding, C
/// bound whole, no accumulation, images within the limits for one batch entry: no chunks
/// and no split reductions but the image kernel's own k-blocks, whose last dispatch applies
/// it). Returns whether it did; otherwise the job runs without the epilogue.
pub(crate) fn encode_job_fused(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    job: &GemmJob<'_>,
    variant: GemmVariant,
) -> Result<bool> {
    let bias_fits = job.bias.is_none_or(|(b, ..)| fits(ctx, b));
    let fuse = job
        .epilogue
        .is_some_and(|(_, r)| r.is_none_or(|r| fits(ctx, r)))
        && variant.resolve(ctx) == GemmVariant::Image
        && !job.accumulate
        && job.c.win.is_none()
        && job.a.fits(ctx)
        && job.b.fits(ctx)
        && job.c.fits(ctx)
        && bias_fits
        && image_plan(ctx, job, 1, 1).is_some();
    if fuse {
        encode_image_job(ctx, enc, job)?;
        return Ok(true);
    }
    let plain = GemmJob {
        epilogue: None,
        ..*job
    };
    encode_job(ctx, enc, &plain, variant)?;
    Ok(false)
}

pub(crate) fn round4(v: usize) -> usize {
    v.div_ceil(4) * 4
}

/// Can `mat` be read directly as a K-major vec4 operand?
pub(crate) fn vec4_ready(mat: &Mat<'_>, k_major: bool) -> bool {
    k_major
        && mat.ld.is_multiple_of(4)
        && mat.off.is_multiple_of(4)
        && mat.so.is_multiple_of(4)
        && mat.si.is_multiple_of(4)
}

/// An operand packed into a zero-padded K-major buffer (see [`pack`]).
pub(crate) struct Packed {
    pub buf: ScratchBuffer,
    pub ld: usize,
    pub si: usize,
    pub so: usize,
}

impl<'a> Mat<'a> {
    /// The binding of this operand and the offset (relative to the binding) of `off`.
    pub(crate) fn bind(&self, ctx: &Context) -> Result<(Bind<'a>, u32)> {
        match self.win {
            None => Ok((Bind::whole(self.buf), u32_of(self.off, "gemm offset")?)),
            Some((lo, hi)) => {
                let (b, w) = window(ctx, self.buf, lo, hi)?;
                Ok((b, w.wrapping_add(u32_of(self.off, "gemm offset")?)))
            }
        }
    }

    pub(crate) fn fits(&self, ctx: &Context) -> bool {
        self.win.is_some() || fits(ctx, self.buf)
    }
}

impl Packed {
    pub fn mat(&self) -> Mat<'_> {
        Mat {
            win: None,
            buf: &self.buf.buffer,
            off: 0,
            ld: self.ld,
            si: self.si,
            so: self.so,
        }
    }
}

/// Packs operand `mat` (logical `[K, cols]`, stored K-major when `k_major`, else
/// `[cols, K]`) into a new zero-padded K-major buffer whose rows are vec4-aligned. An operand
/// shared by every outer (or inner) batch (stride 0) is packed once.
#[allow(clippy::too_many_arguments)]
pub(crate) fn pack(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    mat: &Mat<'_>,
    k_major: bool,
    k: usize,
    cols: usize,
    outer: usize,
    inner: usize,
) -> Result<Packed> {
    pack_as(ctx, enc, mat, k_major, (k, cols, outer, inner), false)
}

/// [`pack`] of f16 elements (the `pack_f16` twin).
pub(crate) fn pack_f16(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    mat: &Mat<'_>,
    k_major: bool,
    dims: (usize, usize, usize, usize),
) -> Result<Packed> {
    pack_as(ctx, enc, mat, k_major, dims, true)
}

/// [`pack`] of f32 elements, or of f16 ones (`f16`: the `pack_f16` twin; the scratch is
/// sized for f32, twice what it needs).
fn pack_as(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    mat: &Mat<'_>,
    k_major: bool,
    (k, cols, outer, inner): (usize, usize, usize, usize),
    f16: bool,
) -> Result<Packed> {
    let ld = round4(cols);
    let per = k * ld;
    let outers = if mat.so == 0 { 1 } else { outer };
    let inners = if mat.si == 0 { 1 } else { inner };
    let bytes = (outers * inners * per * 4) as u64;
    let dst = ScratchBuffer::new(ctx, enc, bytes, "wgconv packed operand")?;
    let spec = PackSpec {
        TRANSPOSE: !k_major,
        ..Default::default()
    };
    let (src, src_base) = mat.bind(ctx)?;
    for o in 0..outers {
        let total = inners * per;
        let u = PackParams {
            rows: u32_of(k, "gemm k")?,
            cols: u32_of(cols, "gemm columns")?,
            ld_dst: u32_of(ld, "gemm leading dimension")?,
            ld_src: u32_of(mat.ld, "gemm leading dimension")?,
            src_off: src_base.wrapping_add(u32_of(o * mat.so, "gemm offset")?),
            dst_off: u32_of(o * inners * per, "gemm offset")?,
            src_bs: u32_of(mat.si, "gemm batch stride")?,
            dst_bs: u32_of(per, "gemm batch stride")?,
            batch: u32_of(inners, "gemm batch")?,
            total: u32_of(total, "gemm packed elements")?,
            ..Default::default()
        };
        let binds = [src, Bind::whole(&dst.buffer)];
        if f16 {
            launch::<k::PackF16>(ctx, enc, &spec, &u, &binds, total as u64)?;
        } else {
            launch::<k::Pack>(ctx, enc, &spec, &u, &binds, total as u64)?;
        }
    }
    Ok(Packed {
        buf: dst,
        ld,
        si: if inners == 1 { 0 } else { per },
        so: if outers == 1 { 0 } else { inners * per },
    })
}

/// `(TM, TN, WG)` of the register kernel: rows per invocation, columns per workgroup, lanes.
/// Measured on lavapipe (1024^3, row-major B): 16x16 15.4 GFLOP/s, 16x16 with WG 64 13.2,
/// 16x8 10.2, 8x16 (the previous choice) 9.9; at 256^3 (cpu-equivalent) 16x16 13.5 vs
/// 8x16 10.6.
const REG_TILE: (usize, usize, u32) = (16, 16, 8);

/// Records a (batched) GEMM.
pub(crate) fn encode_job(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    job: &GemmJob<'_>,
    variant: GemmVariant,
) -> Result<()> {
    let variant = variant.resolve(ctx);
    let bias_fits = job.bias.is_none_or(|(b, ..)| fits(ctx, b));
    let operands_fit = job.a.fits(ctx) && job.b.fits(ctx) && job.c.fits(ctx) && bias_fits;
    if variant == GemmVariant::Image {
        return if operands_fit {
            encode_image_job(ctx, enc, job)
        } else {
            encode_chunked(ctx, enc, job, variant)
        };
    }
    // Packed copies (operands not vec4-ready) must fit one binding too.
    let maxw = max_window_elems(ctx);
    let batches = |mat: &Mat<'_>| {
        (if mat.so == 0 { 1 } else { job.batch_outer })
            * (if mat.si == 0 { 1 } else { job.batch_inner })
    };
    let a_packed = !vec4_ready(&job.a, job.a_km) && batches(&job.a) * job.k * round4(job.m) > maxw;
    let b_packed = !vec4_ready(&job.b, job.b_kn) && batches(&job.b) * job.k * round4(job.n) > maxw;
    if !operands_fit || a_packed || b_packed {
        return encode_chunked(ctx, enc, job, variant);
    }
    encode_buffers(ctx, enc, job, variant, false)
}

/// Records a (batched) GEMM of f16 operands with f16 arithmetic (`Precision::F16Accumulate`):
/// the f16 twin of the register kernel (`variant` Register) or of the tiled one (Tiled);
/// every buffer of `job` holds f16 elements and fits one storage binding (there are no
/// chunks of f16 operands); bias and accumulation into C are added in f32 at the store.
pub(crate) fn encode_job_f16(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    job: &GemmJob<'_>,
    variant: GemmVariant,
) -> Result<()> {
    let bias_fits = job.bias.is_none_or(|(b, ..)| fits(ctx, b));
    let whole = [&job.a, &job.b, &job.c]
        .iter()
        .all(|m| m.win.is_none() && m.fits(ctx));
    if !(whole && bias_fits) {
        let max = ctx.limits().max_storage_buffer_binding_size;
        let size = [job.a.buf, job.b.buf, job.c.buf]
            .iter()
            .map(|b| b.size())
            .max()
            .unwrap_or(0);
        return Err(Error::exceeds_limit(
            "maxStorageBufferBindingSize (f16 arithmetic runs operands within one binding)",
            size,
            max,
        ));
    }
    encode_buffers(ctx, enc, job, variant, true)
}

/// The register or tiled kernel (`f16`: their f16 twins) on operands within
/// one binding each, packing A (and B for the tiled kernel) where not vec4-ready.
fn encode_buffers(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    job: &GemmJob<'_>,
    variant: GemmVariant,
    f16: bool,
) -> Result<()> {
    let (m, n, k) = (job.m, job.n, job.k);
    let (outer, inner) = (job.batch_outer, job.batch_inner);
    // A as [K, M] and B as [K, N], both vec4-aligned; pack when they are not.
    let a_pack;
    let a = if vec4_ready(&job.a, job.a_km) {
        job.a
    } else {
        a_pack = pack_as(ctx, enc, &job.a, job.a_km, (k, m, outer, inner), f16)?;
        a_pack.mat()
    };
    // The register kernel reads B with uniform scalar loads in either layout; the tiled
    // kernel needs it K-major and vec4-aligned like A.
    let b_pack;
    let (b, b_kn) = if variant == GemmVariant::Register || vec4_ready(&job.b, job.b_kn) {
        (job.b, job.b_kn)
    } else {
        b_pack = pack_as(ctx, enc, &job.b, job.b_kn, (k, n, outer, inner), f16)?;
        (b_pack.mat(), true)
    };
    // Tile shapes (rows per invocation, columns per workgroup, lanes), measured on lavapipe
    // at 1024³ (see the kernel modules for the block limits of each kernel).
    let tiled = variant == GemmVariant::Tiled;
    let (tm, tn, wg) = if tiled {
        (64usize, 64usize, 256u32)
    } else {
        REG_TILE
    };
    let (bias_buf, bias_off, bias_si, bias_mode) = match job.bias {
        Some((buf, off, si, mode)) => (Some(buf), off, si, mode),
        None => (None, 0, 0, 0),
    };
    let tiles_m = m.div_ceil(tm);
    let tiles_n = n.div_ceil(tn);
    let batch = outer * inner;
    // Both kernels: one workgroup per (batch, column tile, group of row tiles).
    let total = if tiled {
        tiles_m * tiles_n * batch * wg as usize
    } else {
        tiles_m.div_ceil(wg as usize) * tiles_n * batch * wg as usize
    };
    let (a_bind, a_off) = a.bind(ctx)?;
    let (b_bind, b_off) = b.bind(ctx)?;
    let (c_bind, c_off) = job.c.bind(ctx)?;
    // Without bias the (unused) bias binding repeats A's, which is known to fit.
    let bias_bind = bias_buf.map_or(a_bind, Bind::whole);
    let u = GemmParams {
        m: u32_of(m, "gemm m")?,
        n: u32_of(n, "gemm n")?,
        k: u32_of(k, "gemm k")?,
        lda: u32_of(a.ld, "gemm lda")?,
        ldb: u32_of(b.ld, "gemm ldb")?,
        ldc: u32_of(job.c.ld, "gemm ldc")?,
        a_off,
        b_off,
        c_off,
        bias_off: u32_of(bias_off, "gemm offset")?,
        tiles_m: u32_of(tiles_m, "gemm tiles")?,
        tiles_n: u32_of(tiles_n, "gemm tiles")?,
        batch_inner: u32_of(inner, "gemm batch")?,
        batch: u32_of(batch, "gemm batch")?,
        a_si: u32_of(a.si, "gemm stride")?,
        a_so: u32_of(a.so, "gemm stride")?,
        b_si: u32_of(b.si, "gemm stride")?,
        b_so: u32_of(b.so, "gemm stride")?,
        c_si: u32_of(job.c.si, "gemm stride")?,
        c_so: u32_of(job.c.so, "gemm stride")?,
        bias_si: u32_of(bias_si, "gemm stride")?,
        total: u32_of(total, "gemm invocations")?,
        ldc_n: u32_of(job.c_col_stride, "gemm ldc")?,
        ..Default::default()
    };
    let binds = [a_bind, b_bind, bias_bind, c_bind];
    if tiled {
        let spec = GemmTiledSpec {
            BIAS_MODE: bias_mode,
            ACCUMULATE: job.accumulate,
            ..Default::default()
        };
        if f16 {
            launch::<k::GemmTiledF16>(ctx, enc, &spec, &u, &binds, total as u64)
        } else {
            launch::<k::GemmTiled>(ctx, enc, &spec, &u, &binds, total as u64)
        }
    } else {
        let spec = GemmRegSpec {
            WG: wg,
            TM: tm as u32,
            TN: tn as u32,
            B_KN: b_kn,
            BIAS_MODE: bias_mode,
            ACCUMULATE: job.accumulate,
        };
        if f16 {
            launch::<k::GemmRegF16>(ctx, enc, &spec, &u, &binds, total as u64)
        } else {
            launch::<k::GemmReg>(ctx, enc, &spec, &u, &binds, total as u64)
        }
    }
}

/// A GEMM whose operands do not fit one storage binding: every batch entry is split into
/// chunks of rows (M), columns (N) and reduction (K) whose operand windows fit; K-chunks after
/// the first accumulate into C, in order (deterministic). Bias comes with the first K-chunk.
pub(crate) fn encode_chunked(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    job: &GemmJob<'_>,
    variant: GemmVariant,
) -> Result<()> {
    let maxw = max_window_elems(ctx);
    let (a, b, c) = (&job.a, &job.b, &job.c);
    let span = |mc: usize, nc: usize, kc: usize| {
        let sa = if job.a_km {
            (kc - 1) * a.ld + mc
        } else {
            (mc - 1) * a.ld + kc
        };
        let sb = if job.b_kn {
            (kc - 1) * b.ld + nc
        } else {
            (nc - 1) * b.ld + kc
        };
        let sc = (mc - 1) * c.ld + (nc - 1) * job.c_col_stride + 1;
        (sa, sb, sc)
    };
    // The image kernel packs every chunk into images (texture limits, scratch budget)
    // instead of vec4 buffers.
    let image = variant.resolve(ctx) == GemmVariant::Image;
    let (mut mc, mut nc, mut kc) = (job.m, job.n, job.k);
    loop {
        let (sa, sb, sc) = span(mc, nc, kc);
        // Chunks may be packed into K-major vec4 copies: those must fit as well.
        let (pa, pb) = if image {
            (0, 0)
        } else {
            (kc * round4(mc), kc * round4(nc))
        };
        let bind_ok = sa <= maxw && sb <= maxw && sc <= maxw && pa <= maxw && pb <= maxw;
        let image_ok = !image || image_chunk_fits(ctx, mc, nc, kc);
        if bind_ok && image_ok {
            break;
        }
        if (mc, nc, kc) == (1, 1, 1) && bind_ok {
            // Only the images do not fit (a budget below the smallest panels).
            return Err(Error::exceeds_limit(
                "scratch_budget (smallest gemm image chunk)",
                ctx.scratch_budget().max(4096) + 1,
                ctx.scratch_budget().max(4096),
            ));
        }
        if (mc, nc, kc) == (1, 1, 1) {
            return Err(Error::exceeds_limit(
                "max_storage_buffer_binding_size (gemm operand)",
                (sa.max(sb).max(sc) * 4) as u64,
                (maxw * 4) as u64,
            ));
        }
        if !bind_ok {
            if sa > maxw || pa > maxw {
                if (job.a_km && kc > 1) || mc == 1 {
                    kc = kc.div_ceil(2)
                } else {
                    mc = mc.div_ceil(2)
                }
            } else if sb > maxw || pb > maxw {
                if (job.b_kn && kc > 1) || nc == 1 {
                    kc = kc.div_ceil(2)
                } else {
                    nc = nc.div_ceil(2)
                }
            } else if mc > 1 {
                mc = mc.div_ceil(2)
            } else {
                nc = nc.div_ceil(2)
            }
        } else {
            // Images too large: halve the largest of K, M and N, in whole panels (8 k-rows,
            // 64 rows of A, 16 columns of B: less would not shrink the images). Squarish
            // chunks keep the re-packing of operands shared between chunks low.
            let halve = |v: usize, unit: usize| v.div_ceil(unit).div_ceil(2) * unit;
            let dims = [(kc, 8), (mc, IMG_PANEL_A), (nc, IMG_PANEL_B)];
            let pick = (0..3)
                .filter(|&i| dims[i].0 > dims[i].1)
                .max_by_key(|&i| (dims[i].0, std::cmp::Reverse(i)));
            match pick {
                Some(0) => kc = halve(kc, 8),
                Some(1) => mc = halve(mc, IMG_PANEL_A),
                Some(_) => nc = halve(nc, IMG_PANEL_B),
                // Unreachable with a budget of at least 4 KiB and 16-texel images.
                None if kc > 1 => kc = kc.div_ceil(2),
                None if mc > 1 => mc = mc.div_ceil(2),
                None => nc = nc.div_ceil(2),
            }
        }
    }
    for bo in 0..job.batch_outer {
        for bi in 0..job.batch_inner {
            let (a0, b0, c0) = (
                a.off + bo * a.so + bi * a.si,
                b.off + bo * b.so + bi * b.si,
                c.off + bo * c.so + bi * c.si,
            );
            for m0 in (0..job.m).step_by(mc) {
                let mm = mc.min(job.m - m0);
                for n0 in (0..job.n).step_by(nc) {
                    let nn = nc.min(job.n - n0);
                    for k0 in (0..job.k).step_by(kc) {
                        let kk = kc.min(job.k - k0);
                        let (sa, sb, sc) = span(mm, nn, kk);
                        let ao = a0
                            + if job.a_km {
                                k0 * a.ld + m0
                            } else {
                                m0 * a.ld + k0
                            };
                        let bo_ = b0
                            + if job.b_kn {
                                k0 * b.ld + n0
                            } else {
                                n0 * b.ld + k0
                            };
                        let co = c0 + m0 * c.ld + n0 * job.c_col_stride;
                        let sub = |buf, off, ld, s| Mat {
                            win: Some((off, off + s)),
                            buf,
                            off,
                            ld,
                            so: 0,
                            si: 0,
                        };
                        let first = k0 == 0;
                        let bias = if first {
                            job.bias.map(|(buf, off, si, mode)| {
                                (
                                    buf,
                                    off + bi * si + if mode == 1 { m0 } else { n0 },
                                    0,
                                    mode,
                                )
                            })
                        } else {
                            None
                        };
                        let part = GemmJob {
                            m: mm,
                            n: nn,
                            k: kk,
                            batch_outer: 1,
                            batch_inner: 1,
                            a: sub(a.buf, ao, a.ld, sa),
                            a_km: job.a_km,
                            b: sub(b.buf, bo_, b.ld, sb),
                            b_kn: job.b_kn,
                            c: sub(c.buf, co, c.ld, sc),
                            c_col_stride: job.c_col_stride,
                            bias,
                            accumulate: job.accumulate || !first,
                            epilogue: None,
                        };
                        encode_job(ctx, enc, &part, variant)?;
                    }
                }
            }
        }
    }
    Ok(())
}
