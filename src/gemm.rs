//! General matrix multiply: `C = op(A)·op(B) (+ bias) (+ C)`, single or strided-batched.
//!
//! The public entry points are [`Context::gemm`] and [`Context::encode_gemm`]; the
//! convolution algorithms reuse the same internal launcher ([`GemmJob`]).

use crate::context::Context;
use crate::conv::direct::u32_of;
use crate::error::{Error, Result};
use crate::kernels::{dispatch, fits, max_window_elems, window, Bind, Kernel, PipelineKey};
use crate::tensor::{DeviceBuffer, Tensor};

/// Which GEMM kernel runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GemmVariant {
    /// Chosen per adapter: `Register` on CPU adapters, `Tiled` on GPUs.
    #[default]
    Auto,
    /// Large per-invocation register blocks, vec4 loads, no workgroup memory (fast on
    /// CPU-like adapters such as lavapipe).
    Register,
    /// Workgroup-memory tiles shared by a 16x16 workgroup (fast on GPUs).
    Tiled,
    /// Register blocks whose operand loads are shared through subgroup broadcasts; needs
    /// the `SUBGROUP` feature and 8-lane subgroups (lavapipe). Where unavailable it runs as
    /// `Register`.
    Subgroup,
}

impl GemmVariant {
    /// Every concrete variant.
    pub const ALL: &'static [GemmVariant] = &[
        GemmVariant::Register,
        GemmVariant::Tiled,
        GemmVariant::Subgroup,
    ];

    /// Lowercase name (`auto`, `register`, `tiled`).
    pub fn name(self) -> &'static str {
        match self {
            GemmVariant::Auto => "auto",
            GemmVariant::Register => "register",
            GemmVariant::Tiled => "tiled",
            GemmVariant::Subgroup => "subgroup",
        }
    }

    pub(crate) fn resolve(self, ctx: &Context) -> GemmVariant {
        match self {
            GemmVariant::Auto if ctx.is_cpu_adapter() && ctx.has_subgroups8() => {
                GemmVariant::Subgroup
            }
            GemmVariant::Auto if ctx.is_cpu_adapter() => GemmVariant::Register,
            GemmVariant::Auto => GemmVariant::Tiled,
            GemmVariant::Subgroup if !ctx.has_subgroups8() => GemmVariant::Register,
            v => v,
        }
    }
}

/// Options of [`Context::gemm`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GemmParams {
    /// `A` is stored `[K, M]` (use `Aᵀ`).
    pub transpose_a: bool,
    /// `B` is stored `[N, K]` (use `Bᵀ`).
    pub transpose_b: bool,
    /// Kernel choice.
    pub variant: GemmVariant,
}

impl GemmParams {
    /// Sets `transpose_a`.
    pub fn with_transpose_a(mut self, t: bool) -> Self {
        self.transpose_a = t;
        self
    }
    /// Sets `transpose_b`.
    pub fn with_transpose_b(mut self, t: bool) -> Self {
        self.transpose_b = t;
        self
    }
    /// Sets the kernel variant.
    pub fn with_variant(mut self, v: GemmVariant) -> Self {
        self.variant = v;
        self
    }
}

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
}

/// Uniforms of `gemm_reg.wgsl` / `gemm_tiled.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct GemmUniforms {
    m: u32,
    n: u32,
    k: u32,
    lda: u32,
    ldb: u32,
    ldc: u32,
    a_off: u32,
    b_off: u32,
    c_off: u32,
    bias_off: u32,
    tiles_m: u32,
    tiles_n: u32,
    batch_inner: u32,
    batch: u32,
    a_si: u32,
    a_so: u32,
    b_si: u32,
    b_so: u32,
    c_si: u32,
    c_so: u32,
    bias_si: u32,
    total: u32,
    ldc_n: u32,
    _p1: u32,
}

/// Uniforms of `pack.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct PackUniforms {
    rows: u32,
    cols: u32,
    ld_dst: u32,
    ld_src: u32,
    src_off: u32,
    dst_off: u32,
    src_bs: u32,
    dst_bs: u32,
    batch: u32,
    total: u32,
    _p0: u32,
    _p1: u32,
}

fn round4(v: usize) -> usize {
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
    pub buf: DeviceBuffer,
    pub ld: usize,
    pub si: usize,
    pub so: usize,
}

impl<'a> Mat<'a> {
    /// The binding of this operand and the offset (relative to the binding) of `off`.
    fn bind(&self, ctx: &Context) -> Result<(Bind<'a>, u32)> {
        match self.win {
            None => Ok((Bind::whole(self.buf), u32_of(self.off, "gemm offset")?)),
            Some((lo, hi)) => {
                let (b, w) = window(ctx, self.buf, lo, hi)?;
                Ok((b, w.wrapping_add(u32_of(self.off, "gemm offset")?)))
            }
        }
    }

    fn fits(&self, ctx: &Context) -> bool {
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
    let ld = round4(cols);
    let per = k * ld;
    let outers = if mat.so == 0 { 1 } else { outer };
    let inners = if mat.si == 0 { 1 } else { inner };
    let bytes = (outers * inners * per * 4) as u64;
    let dst = DeviceBuffer::new(ctx, bytes, "wgconv packed operand")?;
    let key = PipelineKey::new(Kernel::Pack)
        .with("WG", 64)
        .with("TRANSPOSE", (!k_major) as u32);
    let (src, src_base) = mat.bind(ctx)?;
    for o in 0..outers {
        let total = inners * per;
        let u = PackUniforms {
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
        dispatch(
            ctx,
            enc,
            &key,
            bytemuck::bytes_of(&u),
            &[src, Bind::whole(&dst.buffer)],
            total as u64,
        )?;
    }
    Ok(Packed {
        buf: dst,
        ld,
        si: if inners == 1 { 0 } else { per },
        so: if outers == 1 { 0 } else { inners * per },
    })
}

/// Records a (batched) GEMM.
pub(crate) fn encode_job(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    job: &GemmJob<'_>,
    variant: GemmVariant,
) -> Result<()> {
    let bias_fits = job.bias.is_none_or(|(b, ..)| fits(ctx, b));
    // Packed copies (operands not vec4-ready) must fit one binding too.
    let maxw = max_window_elems(ctx);
    let batches = |mat: &Mat<'_>| {
        (if mat.so == 0 { 1 } else { job.batch_outer })
            * (if mat.si == 0 { 1 } else { job.batch_inner })
    };
    let a_packed = !vec4_ready(&job.a, job.a_km) && batches(&job.a) * job.k * round4(job.m) > maxw;
    let b_packed = !vec4_ready(&job.b, job.b_kn) && batches(&job.b) * job.k * round4(job.n) > maxw;
    if !(job.a.fits(ctx) && job.b.fits(ctx) && job.c.fits(ctx) && bias_fits) || a_packed || b_packed
    {
        return encode_chunked(ctx, enc, job, variant);
    }
    let variant = variant.resolve(ctx);
    let (m, n, k) = (job.m, job.n, job.k);
    let (outer, inner) = (job.batch_outer, job.batch_inner);
    // A as [K, M] and B as [K, N], both vec4-aligned; pack when they are not.
    let a_pack;
    let a = if vec4_ready(&job.a, job.a_km) {
        job.a
    } else {
        a_pack = pack(ctx, enc, &job.a, job.a_km, k, m, outer, inner)?;
        a_pack.mat()
    };
    // The register kernel reads B with uniform scalar loads in either layout; the tiled
    // kernel needs it K-major and vec4-aligned like A.
    let b_pack;
    let (b, b_kn) = if variant == GemmVariant::Register || vec4_ready(&job.b, job.b_kn) {
        (job.b, job.b_kn)
    } else {
        b_pack = pack(ctx, enc, &job.b, job.b_kn, k, n, outer, inner)?;
        (b_pack.mat(), true)
    };
    let (kernel, tm, tn, wg) = match variant {
        GemmVariant::Tiled => (Kernel::GemmTiled, 64usize, 64usize, 256u32),
        GemmVariant::Subgroup => {
            let env = |k: &str, d: usize| {
                std::env::var(k)
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(d)
            };
            (
                Kernel::GemmSg,
                env("WGCONV_TM", 4),
                env("WGCONV_TN", 32),
                env("WGCONV_WG", 8) as u32,
            )
        }
        _ => {
            let env = |k: &str, d: usize| {
                std::env::var(k)
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(d)
            };
            (
                Kernel::GemmReg,
                env("WGCONV_TM", 8),
                env("WGCONV_TN", 16),
                env("WGCONV_WG", 8) as u32,
            )
        }
    };
    let (bias_buf, bias_off, bias_si, bias_mode) = match job.bias {
        Some((buf, off, si, mode)) => (buf, off, si, mode),
        None => (a.buf, 0, 0, 0), // unused placeholder (read-only binding)
    };
    let tiles_m = m.div_ceil(tm);
    let tiles_n = n.div_ceil(tn);
    let batch = outer * inner;
    let key = PipelineKey::new(kernel)
        .with("WG", wg)
        .with("TM", tm as u32)
        .with("TN", tn as u32)
        .with("BIAS_MODE", bias_mode)
        .with("ACCUMULATE", job.accumulate as u32);
    let key = if variant == GemmVariant::Register {
        key.with("B_KN", b_kn as u32)
    } else {
        key
    };
    // Both kernels: one workgroup per (batch, column tile, group of row tiles).
    let total = match variant {
        GemmVariant::Tiled => tiles_m * tiles_n * batch * wg as usize,
        _ => tiles_m.div_ceil(wg as usize) * tiles_n * batch * wg as usize,
    };
    let (a_bind, a_off) = a.bind(ctx)?;
    let (b_bind, b_off) = b.bind(ctx)?;
    let (c_bind, c_off) = job.c.bind(ctx)?;
    let u = GemmUniforms {
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
    dispatch(
        ctx,
        enc,
        &key,
        bytemuck::bytes_of(&u),
        &[a_bind, b_bind, Bind::whole(bias_buf), c_bind],
        total as u64,
    )
}

/// A GEMM whose operands do not fit one storage binding: every batch entry is split into
/// chunks of rows (M), columns (N) and reduction (K) whose operand windows fit; K-chunks after
/// the first accumulate into C, in order (deterministic). Bias comes with the first K-chunk.
fn encode_chunked(
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
    let (mut mc, mut nc, mut kc) = (job.m, job.n, job.k);
    loop {
        let (sa, sb, sc) = span(mc, nc, kc);
        // Chunks may be packed into K-major vec4 copies: those must fit as well.
        let (pa, pb) = (kc * round4(mc), kc * round4(nc));
        if sa <= maxw && sb <= maxw && sc <= maxw && pa <= maxw && pb <= maxw {
            break;
        }
        if (mc, nc, kc) == (1, 1, 1) {
            return Err(Error::exceeds_limit(
                "max_storage_buffer_binding_size (gemm operand)",
                (sa.max(sb).max(sc) * 4) as u64,
                (maxw * 4) as u64,
            ));
        }
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
                        };
                        encode_job(ctx, enc, &part, variant)?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Shapes of a (possibly batched) public GEMM call: `(batch, m, k, n)`, with per-operand
/// batch strides (0 when the operand is 2-D and broadcast over the batch).
pub(crate) fn gemm_dims(
    a: &[usize],
    b: &[usize],
    p: &GemmParams,
) -> Result<(usize, usize, usize, usize, bool, bool)> {
    let split = |s: &[usize], what: &'static str| -> Result<(Option<usize>, usize, usize)> {
        match *s {
            [r, c] => Ok((None, r, c)),
            [bt, r, c] => Ok((Some(bt), r, c)),
            _ => Err(Error::shape_mismatch(
                what,
                "a 2-D [rows, cols] or 3-D [batch, rows, cols] shape",
                format!("{s:?}"),
            )),
        }
    };
    let (ba, ar, ac) = split(a, "a")?;
    let (bb, br, bc) = split(b, "b")?;
    let (m, ka) = if p.transpose_a { (ac, ar) } else { (ar, ac) };
    let (kb, n) = if p.transpose_b { (bc, br) } else { (br, bc) };
    if ka != kb {
        return Err(Error::shape_mismatch(
            "gemm inner dimension",
            format!("op(a) = [{m}, {ka}] and op(b) = [{kb}, {n}] to share K"),
            format!("K = {ka} vs {kb}"),
        ));
    }
    let batch = match (ba, bb) {
        (Some(x), Some(y)) if x != y => {
            return Err(Error::shape_mismatch(
                "gemm batch",
                format!("{x}"),
                format!("{y}"),
            ));
        }
        (Some(x), _) | (_, Some(x)) => x,
        (None, None) => 1,
    };
    if m == 0 || n == 0 || ka == 0 || batch == 0 {
        return Err(Error::shape_mismatch(
            "gemm",
            "every dimension >= 1",
            format!("a {a:?}, b {b:?}"),
        ));
    }
    Ok((batch, m, ka, n, ba.is_some(), bb.is_some()))
}

impl Context {
    /// Matrix product `C = op(A)·op(B)` where `op` transposes when asked.
    ///
    /// `a`: `[M, K]` (`[K, M]` with `transpose_a`), `b`: `[K, N]` (`[N, K]` with
    /// `transpose_b`); either may carry a leading batch dimension (`[B, .., ..]`, strided
    /// batched GEMM; a 2-D operand is shared by every batch). Returns `[M, N]` or `[B, M, N]`.
    ///
    /// # Errors
    /// [`ErrorKind::ShapeMismatch`](crate::ErrorKind::ShapeMismatch) when the inner
    /// dimensions or batch sizes differ or a shape is not 2-D/3-D.
    pub fn gemm(&self, a: &Tensor, b: &Tensor, params: &GemmParams) -> Result<Tensor> {
        let (batch, m, _, n, ba, bb) = gemm_dims(a.shape(), b.shape(), params)?;
        let shape = if ba || bb {
            vec![batch, m, n]
        } else {
            vec![m, n]
        };
        let c = Tensor::uninit(self, &shape)?;
        let mut enc = self.encoder("wgconv gemm");
        self.encode_gemm(&mut enc, a, b, None, &c, false, params)?;
        self.submit(enc)?;
        Ok(c)
    }

    /// Records `C = op(A)·op(B) (+ bias[n]) (+ C if accumulate)` into `encoder`. `bias` has
    /// length `N` (added to every row, as in a linear layer); `c` must have the result shape.
    #[allow(clippy::too_many_arguments)]
    pub fn encode_gemm(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        a: &Tensor,
        b: &Tensor,
        bias: Option<&Tensor>,
        c: &Tensor,
        accumulate: bool,
        params: &GemmParams,
    ) -> Result<()> {
        a.check_ctx(self, "a")?;
        b.check_ctx(self, "b")?;
        c.check_ctx(self, "c")?;
        let (batch, m, k, n, ba, bb) = gemm_dims(a.shape(), b.shape(), params)?;
        let want: Vec<usize> = if ba || bb {
            vec![batch, m, n]
        } else {
            vec![m, n]
        };
        if c.shape() != want {
            return Err(Error::shape_mismatch(
                "c",
                format!("{want:?}"),
                format!("{:?}", c.shape()),
            ));
        }
        if let Some(bias) = bias {
            bias.check_ctx(self, "bias")?;
            if bias.shape() != [n] {
                return Err(Error::shape_mismatch(
                    "bias",
                    format!("[{n}]"),
                    format!("{:?}", bias.shape()),
                ));
            }
        }
        let a_ld = if params.transpose_a { m } else { k };
        let b_ld = if params.transpose_b { k } else { n };
        let job = GemmJob {
            m,
            n,
            k,
            batch_outer: 1,
            batch_inner: batch,
            a: Mat {
                win: None,
                buf: a.buffer(),
                off: 0,
                ld: a_ld,
                so: 0,
                si: if ba { m * k } else { 0 },
            },
            a_km: params.transpose_a,
            b: Mat {
                win: None,
                buf: b.buffer(),
                off: 0,
                ld: b_ld,
                so: 0,
                si: if bb { k * n } else { 0 },
            },
            b_kn: !params.transpose_b,
            c: Mat {
                win: None,
                buf: c.buffer(),
                off: 0,
                ld: n,
                so: 0,
                si: m * n,
            },
            c_col_stride: 1,
            bias: bias.map(|t| (t.buffer(), 0, 0, 2)),
            accumulate,
        };
        encode_job(self, encoder, &job, params.variant)
    }
}
