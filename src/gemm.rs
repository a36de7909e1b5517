//! General matrix multiply: `C = op(A)·op(B) (+ bias) (+ C)`, single or strided-batched.
//!
//! The public entry points are [`Context::gemm`] and [`Context::encode_gemm`]; the
//! convolution algorithms reuse the same internal launcher ([`GemmJob`]).

use crate::context::Context;
use crate::conv::direct::u32_of;
use crate::error::{Error, Result};
use crate::kernels::{dispatch, fits, max_window_elems, window, Bind, Kernel, PipelineKey};
use crate::tensor::{DeviceBuffer, DeviceImage, Tensor};

/// Which GEMM kernel runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GemmVariant {
    /// Chosen per adapter: `Image` on CPU adapters with 8-lane subgroups (lavapipe),
    /// `Register` on other CPU adapters, `Tiled` on GPUs.
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
    /// Operands read from read-only `rgba32float` storage images with `textureLoad`, B shared
    /// through subgroup broadcasts: the fastest kernel on lavapipe, whose storage-image loads
    /// are far cheaper than storage-buffer loads (1024³ on 2 quiet cores: ~48 GFLOP/s vs ~20
    /// for `Subgroup`, operand packing included). An operand gets into its image by a buffer-to-texture copy
    /// when it is stored K-major with rows of a multiple of 64 floats, else by a pack kernel;
    /// a vec4-aligned K-major B is read straight from its buffer when M <= 1024 (packing it
    /// would cost more). Needs the `SUBGROUP` feature and 8-lane subgroups; where unavailable
    /// it runs as `Register`. The images are scratch memory, counted in
    /// [`Context::allocated_bytes`] while an operation is recorded and kept within the
    /// context's scratch budget and `maxTextureDimension2D`: larger problems are split (over
    /// batch entries, then rows, columns or K, accumulating).
    Image,
}

impl GemmVariant {
    /// Every concrete variant.
    pub const ALL: &'static [GemmVariant] = &[
        GemmVariant::Register,
        GemmVariant::Tiled,
        GemmVariant::Subgroup,
        GemmVariant::Image,
    ];

    /// Lowercase name (`auto`, `register`, `tiled`, `subgroup`, `image`).
    pub fn name(self) -> &'static str {
        match self {
            GemmVariant::Auto => "auto",
            GemmVariant::Register => "register",
            GemmVariant::Tiled => "tiled",
            GemmVariant::Subgroup => "subgroup",
            GemmVariant::Image => "image",
        }
    }

    pub(crate) fn resolve(self, ctx: &Context) -> GemmVariant {
        match self {
            GemmVariant::Auto if ctx.cpu_kernels() && ctx.has_subgroups8() => GemmVariant::Image,
            GemmVariant::Auto if ctx.cpu_kernels() => GemmVariant::Register,
            GemmVariant::Auto => GemmVariant::Tiled,
            GemmVariant::Subgroup | GemmVariant::Image if !ctx.has_subgroups8() => {
                GemmVariant::Register
            }
            v => v,
        }
    }
}

/// The kernel for an internal GEMM whose B may not be vec4-aligned (`b_vec4` false): `Auto`
/// when B is aligned or `Auto` resolves to the image kernel (which takes any layout), else
/// `Register` (reads B at any alignment, so B is never copied).
pub(crate) fn auto_for_b(ctx: &Context, b_vec4: bool) -> GemmVariant {
    if b_vec4 || GemmVariant::Auto.resolve(ctx) == GemmVariant::Image {
        GemmVariant::Auto
    } else {
        GemmVariant::Register
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

/// Uniforms of `gemm_image.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct GemmImageUniforms {
    m: u32,
    n: u32,
    kp: u32,
    ldc: u32,
    ldc_n: u32,
    c_off: u32,
    c_si: u32,
    c_so: u32,
    groups_m: u32,
    groups_n: u32,
    batch_inner: u32,
    batch: u32,
    ha: u32,
    hb: u32,
    a_pi: u32,
    a_po: u32,
    b_pi: u32,
    b_po: u32,
    bias_off: u32,
    bias_si: u32,
    wg0: u32,
    a_pn: u32,
    b_pn: u32,
    k_lo: u32,
    k_len: u32,
    k: u32,
    b_off: u32,
    ldb: u32,
    b_si: u32,
    b_so: u32,
    _p0: u32,
    _p1: u32,
}

/// Uniforms of `pack_image.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct PackImageUniforms {
    r: u32,
    k: u32,
    kp: u32,
    rs: u32,
    ks: u32,
    off: u32,
    w: u32,
    h: u32,
    np: u32,
    inners: u32,
    so: u32,
    si: u32,
    total: u32,
    t0: u32,
    w_shift: u32,
    dst_row: u32,
    y_lo: u32,
    y_hi: u32,
    tw: u32,
    tw_shift: u32,
    texels: u32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
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

/// `(TM, TN, WG)` of the subgroup kernel: rows per lane, columns per subgroup, lanes.
/// Measured on lavapipe (Mesa 22.3, 1024^3, interleaved, quiet): 4x24 22.8 / 21.4 GFLOP/s,
/// 4x28 22.3, 8x32 20.7 / 21.8, 8x24 21.8, 4x32 (the previous choice) 18.7 / 19.1; at 512^3
/// 4x24 26.5 vs 4x32 19.7.
const SG_TILE: (usize, usize, u32) = (4, 24, 8);
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
    // Tile shapes (rows per invocation, columns per workgroup, lanes), measured on lavapipe
    // at 1024³ (see `tools/gen_shaders.py` for the block limits of each kernel).
    let (kernel, tm, tn, wg) = match variant {
        GemmVariant::Tiled => (Kernel::GemmTiled, 64usize, 64usize, 256u32),
        GemmVariant::Subgroup => (Kernel::GemmSg, SG_TILE.0, SG_TILE.1, SG_TILE.2),
        _ => (Kernel::GemmReg, REG_TILE.0, REG_TILE.1, REG_TILE.2),
    };
    let (bias_buf, bias_off, bias_si, bias_mode) = match job.bias {
        Some((buf, off, si, mode)) => (Some(buf), off, si, mode),
        None => (None, 0, 0, 0),
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
    // Without bias the (unused) bias binding repeats A's, which is known to fit.
    let bias_bind = bias_buf.map_or(a_bind, Bind::whole);
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
        &[a_bind, b_bind, bias_bind, c_bind],
        total as u64,
    )
}

/// Lanes of a `gemm_image.wgsl` workgroup (one 8-lane subgroup; 8, 16, 32, 64 measured alike).
const IMG_WG: usize = 8;
/// Rows of an A panel of the image GEMM: 8 rows per lane.
const IMG_PANEL_A: usize = 8 * IMG_WG;
/// Columns of a B panel of the image GEMM: one workgroup's columns.
const IMG_PANEL_B: usize = 16;
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
/// `shaders/gemm_image.wgsl`): wrapped panels filled by `pack_image.wgsl`, or the plain
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
/// B likewise, or (`None`) straight from its buffer with `gemm_image_sb.wgsl` when it is
/// K-major and vec4-aligned but not copyable and few rows of C share it (packing it would cost
/// more than the slower buffer loads). `None` unless the images fit the texture limits and
/// together the scratch budget.
fn image_plan(
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
fn image_chunk_fits(ctx: &Context, mc: usize, nc: usize, kc: usize) -> bool {
    let fits = |rows, panel| ImageGeom::new(ctx, rows, kc, panel, 1);
    match (fits(mc, IMG_PANEL_A), fits(nc, IMG_PANEL_B)) {
        (Some(a), Some(b)) => a.bytes() + b.bytes() <= ctx.scratch_budget().max(4096),
        _ => false,
    }
}

/// The batch entries `[o0, o0 + oc)` x `[i0, i0 + ic)` of `job` as a job of their own.
fn batch_range<'a>(
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
fn encode_image_job(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    job: &GemmJob<'_>,
) -> Result<()> {
    let (outer, inner) = (job.batch_outer, job.batch_inner);
    let plan = |oc: usize, ic: usize| image_plan(ctx, job, oc, ic);
    if let Some(geom) = plan(outer, inner) {
        return encode_image(ctx, enc, job, geom);
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
            )?;
        }
    } else {
        let g = largest(inner, &|g| plan(1, g).is_some());
        for o in 0..outer {
            for i0 in (0..inner).step_by(g) {
                let ic = g.min(inner - i0);
                let sub = batch_range(job, (o, 1), (i0, ic));
                encode_image(ctx, enc, &sub, image_plan(ctx, &sub, 1, ic).expect("fits"))?;
            }
        }
    }
    Ok(())
}

/// Records `total` linear work items of `per_group` items per workgroup as dispatches of at
/// most the device's workgroup-grid size each; `record(start, count)` records one dispatch of
/// `count` items starting at item `start`.
pub(crate) fn split_dispatches(
    ctx: &Context,
    total: u64,
    per_group: u64,
    mut record: impl FnMut(u64, u64) -> Result<()>,
) -> Result<()> {
    let dim = ctx.limits().max_compute_workgroups_per_dimension.max(1) as u64;
    let groups = (dim * dim).min(u32::MAX as u64 / per_group);
    let step = groups * per_group;
    let mut start = 0;
    while start < total {
        let count = step.min(total - start);
        record(start, count)?;
        start += count;
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
        u32_of(g.width, "gemm image width")?,
        u32_of(g.h, "gemm image height")?,
        label,
    )?;
    if g.copy {
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
    let mut u = PackImageUniforms {
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
    // CPU adapters, k-contiguous operand: read it through a verbatim image copy of the
    // elements it spans (storage-buffer loads are per-lane loops there).
    let flat = if ctx.cpu_kernels() && ks == 1 && mat.win.is_none() && rows > 0 && k > 0 {
        let last = mat.off
            + (outers - 1) * mat.so
            + (inners - 1) * mat.si
            + (rows - 1) * rs
            + (k - 1) * ks;
        let lo = mat.off / 4 * 4;
        let len = (last + 1 - lo).div_ceil(4) * 4;
        crate::conv::implicit::copy_flat_at(ctx, enc, (mat.buf, lo), len, label)?
            .map(|(img, tw)| (img, tw, lo))
    } else {
        None
    };
    let (key, src) = match &flat {
        Some((img, tw, lo)) => {
            u.off = u32_of(mat.off - lo, "gemm offset")?;
            [u.tw, u.tw_shift, u.texels] = crate::conv::implicit::flat_fields(img, *tw)?;
            (
                PipelineKey::new(Kernel::PackImageFlat).with("WG", 64),
                Bind::Image(&img.view),
            )
        }
        None => (PipelineKey::new(Kernel::PackImage).with("WG", 64), src),
    };
    let staging = crate::tensor::ImageStaging::new(ctx, width, height)?;
    u.dst_row = staging.row;
    staging.fill(ctx, enc, &img, (width, height), |enc, y_lo, y_hi, dst| {
        (u.y_lo, u.y_hi) = (y_lo, y_hi);
        split_dispatches(ctx, total as u64, 64, |start, count| {
            u.t0 = start as u32;
            dispatch(
                ctx,
                enc,
                &key,
                bytemuck::bytes_of(&u),
                &[src, Bind::whole(dst)],
                count,
            )
        })
    })?;
    Ok(img)
}

/// One image GEMM launch: packs A and B into images of geometry `ga`, `gb` and runs
/// `gemm_image.wgsl` over every batch entry.
fn encode_image(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    job: &GemmJob<'_>,
    (ga, gb): (ImageGeom, Option<ImageGeom>),
) -> Result<()> {
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
    let mut u = GemmImageUniforms {
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
        ..Default::default()
    };
    let kernel = if ib.is_some() {
        Kernel::GemmImage
    } else {
        Kernel::GemmImageSb
    };
    let groups = groups_m * groups_n * batch;
    u32_of(groups, "gemm workgroups")?;
    let wg = IMG_WG as u64;
    // Long reductions run as dispatches over blocks of k-rows that accumulate into C (bias
    // with the first): the panels of one block stay in cache.
    for k_lo in (0..ga.kp).step_by(IMG_K_BLOCK) {
        let first = k_lo == 0;
        u.k_lo = k_lo as u32;
        u.k_len = IMG_K_BLOCK.min(ga.kp - k_lo) as u32;
        let key = PipelineKey::new(kernel)
            .with("WG", IMG_WG as u32)
            .with("BIAS_MODE", if first { bias_mode } else { 0 })
            .with("ACCUMULATE", (job.accumulate || !first) as u32);
        split_dispatches(ctx, groups as u64 * wg, wg, |start, count| {
            u.wg0 = (start / wg) as u32;
            dispatch(
                ctx,
                enc,
                &key,
                bytemuck::bytes_of(&u),
                &[Bind::Image(&ia.view), b_bind, bias_bind, c_bind],
                count,
            )
        })?;
    }
    Ok(())
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
        // Written when the caller submits: never cached from now on.
        c.mark_volatile();
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
                buf: a.raw(),
                off: 0,
                ld: a_ld,
                so: 0,
                si: if ba { m * k } else { 0 },
            },
            a_km: params.transpose_a,
            b: Mat {
                win: None,
                buf: b.raw(),
                off: 0,
                ld: b_ld,
                so: 0,
                si: if bb { k * n } else { 0 },
            },
            b_kn: !params.transpose_b,
            c: Mat {
                win: None,
                buf: c.raw(),
                off: 0,
                ld: n,
                so: 0,
                si: m * n,
            },
            c_col_stride: 1,
            bias: bias.map(|t| (t.raw(), 0, 0, 2)),
            accumulate,
        };
        encode_job(self, encoder, &job, params.variant)
    }
}
