//! General matrix multiply: `C = op(A)·op(B) (+ bias) (+ C)`, single or strided-batched.
//!
//! The public entry points are [`Context::gemm`] and [`Context::encode_gemm`]; the
//! convolution algorithms reuse the same internal launcher ([`GemmJob`]).

pub(crate) mod image;
pub(crate) mod job;

use crate::context::Context;
use crate::epilogue::Epilogue;
use crate::error::{Error, ErrorKind, Result};
use crate::gpu::half;
use crate::tensor::{caller_records, MemoryFormat, OwnRecording, Tensor};
use job::{encode_job_fused, GemmJob, Mat};

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
    /// Operands read from read-only `rgba32float` storage images with `textureLoad`, B shared
    /// through subgroup broadcasts: the fastest kernel on lavapipe, whose storage-image loads
    /// are far cheaper than storage-buffer loads (1024³ on 2 quiet cores: ~48 GFLOP/s vs ~15
    /// for `Register`, operand packing included). An operand gets into its image by a
    /// buffer-to-texture copy
    /// when it is stored K-major with rows of a multiple of 64 floats, else by a pack kernel;
    /// a vec4-aligned K-major B is read straight from its buffer when M <= 1024 (packing it
    /// would cost more). Needs the `SUBGROUP` feature and 8-lane subgroups: where the adapter
    /// lacks them, a forced `Image` returns
    /// [`ErrorKind::UnsupportedAlgorithm`](crate::ErrorKind::UnsupportedAlgorithm). The
    /// images are scratch memory, counted in
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
        GemmVariant::Image,
    ];

    /// Lowercase name (`auto`, `register`, `tiled`, `image`).
    pub fn name(self) -> &'static str {
        match self {
            GemmVariant::Auto => "auto",
            GemmVariant::Register => "register",
            GemmVariant::Tiled => "tiled",
            GemmVariant::Image => "image",
        }
    }

    /// The variant `self` runs on `ctx`: `Auto` resolved per adapter, the others as they are
    /// (callers check them first with [`Context::check_gemm_variant`]).
    pub(crate) fn resolve(self, ctx: &Context) -> GemmVariant {
        match self {
            GemmVariant::Auto if ctx.cpu_kernels() && ctx.image_kernels() => GemmVariant::Image,
            GemmVariant::Auto if ctx.cpu_kernels() => GemmVariant::Register,
            GemmVariant::Auto => GemmVariant::Tiled,
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
    /// Can GEMM variant `variant` run on this context? `Ok(())`, or the
    /// [`ErrorKind::UnsupportedAlgorithm`](crate::ErrorKind::UnsupportedAlgorithm) error a
    /// call forcing it returns (`Image` needs 8-lane subgroups and bindings that can stage its
    /// images; `Auto`, `Register` and
    /// `Tiled` run everywhere).
    pub fn check_gemm_variant(&self, variant: GemmVariant) -> Result<()> {
        if variant == GemmVariant::Image && !self.image_kernels() {
            return Err(Error::new(ErrorKind::UnsupportedAlgorithm {
                algorithm: variant.name(),
                reason: self.image_kernels_reason().into(),
            }));
        }
        Ok(())
    }

    /// Matrix product `C = op(A)·op(B)` where `op` transposes when asked.
    ///
    /// `a`: `[M, K]` (`[K, M]` with `transpose_a`), `b`: `[K, N]` (`[N, K]` with
    /// `transpose_b`); either may carry a leading batch dimension (`[B, .., ..]`, strided
    /// batched GEMM; a 2-D operand is shared by every batch). Returns `[M, N]` or `[B, M, N]`.
    ///
    /// f16 operands give an f16 result, computed with f32 arithmetic and accumulation and
    /// rounded once (see [`Context::conv2d`] for the element types).
    ///
    /// # Errors
    /// [`ErrorKind::ShapeMismatch`](crate::ErrorKind::ShapeMismatch) when the inner
    /// dimensions or batch sizes differ or a shape is not 2-D/3-D;
    /// [`ErrorKind::DTypeMismatch`](crate::ErrorKind::DTypeMismatch) when the operands'
    /// element types differ.
    pub fn gemm(&self, a: &Tensor, b: &Tensor, params: &GemmParams) -> Result<Tensor> {
        let (batch, m, _, n, ba, bb) = gemm_dims(a.shape(), b.shape(), params)?;
        let shape = if ba || bb {
            vec![batch, m, n]
        } else {
            vec![m, n]
        };
        crate::gpu::half::common_dtype(&[("a", Some(a)), ("b", Some(b))])?;
        let mut enc = self.encoder("wgconv gemm");
        // The library's own encoder: its tensors are not marked (see `OwnRecording`).
        let _own = OwnRecording::enter();
        let c = Tensor::output(self, &mut enc, &shape, a.dtype(), MemoryFormat::Contiguous)?;
        self.encode_gemm_job(&mut enc, (a, b, None, &c), false, params, None)?;
        self.submit(enc)?;
        Ok(c)
    }

    /// Records `C = op(A)·op(B) (+ bias[n]) (+ C if accumulate)` into `encoder`. `bias` has
    /// length `N` (added to every row, as in a linear layer); `c` must have the result shape.
    /// Every operand has the same element type (f16: see [`Context::gemm`]; with
    /// `accumulate`, the f16 `C` is read exactly and the sum rounded once).
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
        // Written (read) when the caller submits: never cached (pooled) from now on.
        caller_records(&[Some(c)], &[Some(a), Some(b), bias]);
        self.encode_gemm_job(encoder, (a, b, bias, c), accumulate, params, None)
    }

    /// [`Context::encode_gemm`] offering `epilogue` (and its residual) to the image kernel;
    /// whether it applied it.
    fn encode_gemm_job(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        (a, b, bias, c): (&Tensor, &Tensor, Option<&Tensor>, &Tensor),
        accumulate: bool,
        params: &GemmParams,
        epilogue: Option<(&Epilogue, Option<&Tensor>)>,
    ) -> Result<()> {
        self.check_gemm_variant(params.variant)?;
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
        half::common_dtype(&[
            ("a", Some(a)),
            ("b", Some(b)),
            ("bias", bias),
            ("c", Some(c)),
        ])?;
        if crate::conv::f16acc::active(self, a) {
            // f16 arithmetic (`Precision::F16Accumulate`): a GEMM kernel's f16 twin on
            // the tensors' own f16 buffers.
            // The register or tiled kernel's f16 twin (Auto: tiled on GPUs, else register).
            let variant = match params.variant {
                GemmVariant::Auto if !self.cpu_kernels() => GemmVariant::Tiled,
                GemmVariant::Auto => GemmVariant::Register,
                v @ (GemmVariant::Register | GemmVariant::Tiled) => v,
                v => {
                    return Err(Error::new(crate::error::ErrorKind::UnsupportedAlgorithm {
                        algorithm: v.name(),
                        reason: "Precision::F16Accumulate runs the f16 kernels of the \
                                 register and tiled GEMMs only (or set \
                                 Precision::F32Accumulate)"
                            .into(),
                    }))
                }
            };
            let job = gemm_job(
                (m, n, k, batch, ba, bb),
                params,
                (a.raw(), b.raw(), bias.map(Tensor::raw), c.raw()),
                accumulate,
                None,
            );
            crate::gemm::job::encode_job_f16(self, encoder, &job, variant)?;
            // The epilogue: one pass on an f32 copy of the f16 result, rounded again.
            if let Some((ep, r)) = epilogue.filter(|(ep, _)| !ep.is_identity()) {
                let cv = half::input(self, encoder, c)?;
                let rv = r.map(|r| half::input(self, encoder, r)).transpose()?;
                let rb = rv.as_ref().map(|r| r.buf());
                let n = crate::params::numel(c.shape());
                crate::conv::epilogue::encode_forward(self, encoder, ep, cv.buf(), rb, n)?;
                half::finish(self, encoder, &cv, c)?;
            }
            return Ok(());
        }
        let av = half::input(self, encoder, a)?;
        let bv = half::input(self, encoder, b)?;
        let biasv = bias.map(|t| half::input(self, encoder, t)).transpose()?;
        let cv = half::output(self, encoder, c, accumulate)?;
        let epilogue = epilogue.filter(|(ep, _)| !ep.is_identity());
        let rv = epilogue
            .and_then(|(_, r)| r)
            .map(|r| half::input(self, encoder, r))
            .transpose()?;
        let fuse = self
            .inner
            .fuse_epilogues
            .load(std::sync::atomic::Ordering::Relaxed);
        let offered = epilogue
            .filter(|_| fuse)
            .map(|(ep, _)| (*ep, rv.as_ref().map(|r| r.buf())));
        let job = gemm_job(
            (m, n, k, batch, ba, bb),
            params,
            (
                av.buf(),
                bv.buf(),
                biasv.as_ref().map(|t| t.buf()),
                cv.buf(),
            ),
            accumulate,
            offered,
        );
        let applied = encode_job_fused(self, encoder, &job, params.variant)?;
        if let Some((ep, _)) = epilogue.filter(|_| !applied) {
            let rb = rv.as_ref().map(|r| r.buf());
            let n = crate::params::numel(c.shape());
            crate::conv::epilogue::encode_forward(self, encoder, ep, cv.buf(), rb, n)?;
        }
        half::finish(self, encoder, &cv, c)
    }
}

impl Context {
    /// Matrix product with a bias and an epilogue: `C = act(op(A)·op(B) + bias + r)`
    /// ([`Residual::Before`](crate::Residual::Before)), `act(op(A)·op(B) + bias) + r`
    /// ([`Residual::After`](crate::Residual::After)) or `act(op(A)·op(B) + bias)`. Shapes as
    /// [`Context::gemm`]; `bias` has length `N` (added to every row); `residual` has the
    /// result's shape and is given exactly when the epilogue has one. The image kernel
    /// ([`GemmVariant::Image`], the choice of `Auto` on lavapipe) applies the epilogue in its
    /// store when it runs the product whole (no chunks beyond its scratch and texture
    /// limits); otherwise (other variants, chunked products) it runs as one extra
    /// elementwise pass after the GEMM (kernel `epilogue`). The results are identical.
    ///
    /// # Errors
    /// Those of [`Context::encode_gemm`] and of the epilogue (as
    /// [`Context::conv2d_fused`]).
    pub fn gemm_fused(
        &self,
        a: &Tensor,
        b: &Tensor,
        bias: Option<&Tensor>,
        residual: Option<&Tensor>,
        params: &GemmParams,
        epilogue: &Epilogue,
    ) -> Result<Tensor> {
        let (batch, m, _, n, ba, bb) = gemm_dims(a.shape(), b.shape(), params)?;
        let shape = if ba || bb {
            vec![batch, m, n]
        } else {
            vec![m, n]
        };
        self.check_residual(epilogue, residual, &shape, None)?;
        half::common_dtype(&[("a", Some(a)), ("b", Some(b))])?;
        let mut enc = self.encoder("wgconv gemm_fused");
        // The library's own encoder: its tensors are not marked (see `OwnRecording`).
        let _own = OwnRecording::enter();
        let c = Tensor::output(self, &mut enc, &shape, a.dtype(), MemoryFormat::Contiguous)?;
        self.encode_gemm_fused(&mut enc, a, b, bias, residual, &c, params, epilogue)?;
        self.submit(enc)?;
        Ok(c)
    }

    /// Records [`Context::gemm_fused`] into `encoder`, writing `c` (not the residual tensor
    /// itself).
    #[allow(clippy::too_many_arguments)]
    pub fn encode_gemm_fused(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        a: &Tensor,
        b: &Tensor,
        bias: Option<&Tensor>,
        residual: Option<&Tensor>,
        c: &Tensor,
        params: &GemmParams,
        epilogue: &Epilogue,
    ) -> Result<()> {
        // Written (read) when the caller submits: never cached (pooled) from now on.
        caller_records(&[Some(c)], &[Some(a), Some(b), bias, residual]);
        self.check_residual(epilogue, residual, c.shape(), Some(c))?;
        half::common_dtype(&[
            ("a", Some(a)),
            ("b", Some(b)),
            ("bias", bias),
            ("residual", residual),
            ("c", Some(c)),
        ])?;
        self.encode_gemm_job(
            encoder,
            (a, b, bias, c),
            false,
            params,
            Some((epilogue, residual)),
        )
    }
}

/// The job of `C = op(A)·op(B) (+ bias) (+ C)` on contiguous operands in `(a, b, bias, c)`:
/// dims `(m, n, k, batch, A batched, B batched)` of `gemm_dims`.
fn gemm_job<'a>(
    (m, n, k, batch, ba, bb): (usize, usize, usize, usize, bool, bool),
    params: &GemmParams,
    (a, b, bias, c): (
        &'a wgpu::Buffer,
        &'a wgpu::Buffer,
        Option<&'a wgpu::Buffer>,
        &'a wgpu::Buffer,
    ),
    accumulate: bool,
    epilogue: Option<(Epilogue, Option<&'a wgpu::Buffer>)>,
) -> GemmJob<'a> {
    let a_ld = if params.transpose_a { m } else { k };
    let b_ld = if params.transpose_b { k } else { n };
    GemmJob {
        m,
        n,
        k,
        batch_outer: 1,
        batch_inner: batch,
        a: Mat {
            win: None,
            buf: a,
            off: 0,
            ld: a_ld,
            so: 0,
            si: if ba { m * k } else { 0 },
        },
        a_km: params.transpose_a,
        b: Mat {
            win: None,
            buf: b,
            off: 0,
            ld: b_ld,
            so: 0,
            si: if bb { k * n } else { 0 },
        },
        b_kn: !params.transpose_b,
        c: Mat {
            win: None,
            buf: c,
            off: 0,
            ld: n,
            so: 0,
            si: m * n,
        },
        c_col_stride: 1,
        bias: bias.map(|t| (t, 0, 0, 2)),
        accumulate,
        epilogue,
    }
}
