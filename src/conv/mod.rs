//! Convolution operations on the GPU: forward algorithms and their selection.

pub(crate) mod backward;
pub(crate) mod depthwise;
pub(crate) mod direct;
pub(crate) mod im2col;
pub(crate) mod implicit;
pub(crate) mod phase;

use crate::context::Context;
use crate::error::{Error, ErrorKind, Result};
use crate::params::{
    Conv2dParams, Conv2dProblem, ConvTranspose2dParams, Shape4, TransposedProblem,
};
use crate::tensor::Tensor;

/// Which kernel family computes a convolution.
///
/// `Auto` (the default) picks per problem and adapter. A forced algorithm that cannot run
/// a problem returns [`ErrorKind::UnsupportedAlgorithm`]; it never silently runs another
/// algorithm, so a caller (or a test) that forces one knows what ran.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// Choose automatically.
    #[default]
    Auto,
    /// Direct convolution: each invocation accumulates a register block of outputs. For
    /// the input gradient of a strided convolution (and the transposed convolution) on CPU
    /// adapters it runs the phase kernel where it applies (zero padding after the fold,
    /// dilation 1, strides up to 8, output width a multiple of 4): each stride phase of dx is
    /// a stride-1 correlation of dy with a sub-kernel, gathered from an image copy of dy.
    Direct,
    /// Unfold patches into a column matrix (im2col), then one GEMM per group. The column
    /// buffer is bounded by the context's scratch budget (split over images and pixels).
    Im2colGemm,
    /// 1x1 convolution (stride 1, no padding) as a GEMM reading the input in place.
    Gemm1x1,
    /// Depthwise convolution (one input channel per group, any channel multiplier): a
    /// dedicated kernel that loads each input row window once into registers. Kernels up to
    /// 7 wide, column stride 1 or 2, column dilation 1. Gradients: the stride-1 input
    /// gradient (no multiplier) runs the same kernel on `dy` with the kernel rotated; the
    /// weight gradient has its own kernel (per-band partial sums of each tap, then a
    /// fixed-order sum); other input gradients run the direct kernel.
    Depthwise,
    /// Implicit GEMM on storage images: the input is copied once into a padded image and
    /// the GEMM gathers its patches from it (no column matrix). The lavapipe kernel family:
    /// needs 8-lane subgroups, and the padded input of one image and the packed weights
    /// within `maxTextureDimension2D` (see [`Context::can_run_forward`]). Gradients: the
    /// stride-1 input gradient runs as an implicit GEMM of `dy`, the weight gradient has its
    /// own image kernel (same input image, `dy` in GEMM panels); where those cannot run (other
    /// strides, other adapters, texture limits) the im2col / col2im + GEMM kernels run.
    ImplicitGemm,
    /// Implicit GEMM with workgroup-memory tiles, the GPU variant (the tfjs `conv2d_mm` /
    /// ORT im2col-matmul shape): 8x8 invocations own 32 output channels x 32 pixels and stage
    /// weights and gathered input patches in workgroup memory. Runs on every adapter (slowly
    /// on CPU adapters, where it is not autotuned: workgroup memory and barriers are
    /// emulated there). Gradients: the stride-1 input gradient runs this kernel, the others
    /// the im2col / col2im + GEMM kernels.
    ImplicitGemmTiled,
}

impl Algorithm {
    /// Every concrete (non-`Auto`) algorithm.
    pub const ALL: &'static [Algorithm] = &[
        Algorithm::Direct,
        Algorithm::Im2colGemm,
        Algorithm::Gemm1x1,
        Algorithm::Depthwise,
        Algorithm::ImplicitGemm,
        Algorithm::ImplicitGemmTiled,
    ];

    /// Lowercase name (`auto`, `direct`, ...), as used by the conformance runner and benches.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Auto => "auto",
            Algorithm::Direct => "direct",
            Algorithm::Im2colGemm => "im2col_gemm",
            Algorithm::Gemm1x1 => "gemm1x1",
            Algorithm::Depthwise => "depthwise",
            Algorithm::ImplicitGemm => "implicit_gemm",
            Algorithm::ImplicitGemmTiled => "implicit_gemm_tiled",
        }
    }

    /// Parses a name produced by [`Algorithm::name`].
    pub fn from_name(name: &str) -> Result<Self> {
        std::iter::once(Algorithm::Auto)
            .chain(Algorithm::ALL.iter().copied())
            .find(|a| a.name() == name)
            .ok_or_else(|| Error::invalid_param("algorithm", name, "unknown algorithm name"))
    }

    /// Can this algorithm run the forward convolution `p` (on some adapter)? Whether it runs
    /// on a given context's adapter is [`Context::can_run_forward`].
    pub fn supports_forward(self, p: &Conv2dProblem) -> bool {
        match self {
            Algorithm::Auto
            | Algorithm::Direct
            | Algorithm::Im2colGemm
            | Algorithm::ImplicitGemm
            | Algorithm::ImplicitGemmTiled => true,
            Algorithm::Gemm1x1 => im2col::is_pointwise(p),
            Algorithm::Depthwise => depthwise::supports(p),
        }
    }
}

/// The heuristic choice (autotuning off): 1x1 as GEMM; the depthwise kernel; direct for
/// tiny reductions; the image implicit GEMM where it runs (lavapipe) and the channels fill
/// its 8-channel blocks; on GPUs the tiled implicit GEMM; im2col + GEMM otherwise.
fn select_forward(ctx: &Context, p: &Conv2dProblem) -> Algorithm {
    if im2col::is_pointwise(p) {
        Algorithm::Gemm1x1
    } else if depthwise::supports(p) && p.groups > 1 {
        Algorithm::Depthwise
    } else if p.c_per_group() == 1 || p.k_per_group() < 4 || p.reduction_len() < 16 {
        Algorithm::Direct
    } else if p.c_per_group() >= 8
        && p.r * p.s > 1
        && ctx.can_run_forward(Algorithm::ImplicitGemm, p)
    {
        Algorithm::ImplicitGemm
    } else if !ctx.cpu_kernels() {
        // GPUs: the workgroup-memory implicit GEMM (tfjs and ORT default to it too).
        Algorithm::ImplicitGemmTiled
    } else {
        Algorithm::Im2colGemm
    }
}

impl Context {
    /// Can `algorithm` run the forward convolution `p` on this context's adapter? (Auto,
    /// direct and im2col + GEMM always can; the others depend on the problem and, for
    /// [`Algorithm::ImplicitGemm`], on the adapter's subgroups and texture limits.)
    pub fn can_run_forward(&self, algorithm: Algorithm, p: &Conv2dProblem) -> bool {
        algorithm.supports_forward(p)
            && (algorithm != Algorithm::ImplicitGemm || implicit::runnable(self, p))
    }

    /// 2-D convolution (PyTorch `conv2d`, or true convolution with `params.flip`).
    ///
    /// `x`: `[N, C, H, W]`; `w`: `[K, C/groups, R, S]`; `bias`: `[K]`. Returns
    /// `[N, K, Ho, Wo]`. The work is recorded and submitted; reading the result waits for it.
    ///
    /// # Errors
    /// Every invalid parameter or shape gives [`ErrorKind::InvalidParam`] or
    /// [`ErrorKind::ShapeMismatch`] before anything runs.
    pub fn conv2d(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        params: &Conv2dParams,
    ) -> Result<Tensor> {
        self.conv2d_with(x, w, bias, params, Algorithm::Auto)
    }

    /// [`Context::conv2d`] with a chosen algorithm.
    pub fn conv2d_with(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        params: &Conv2dParams,
        algorithm: Algorithm,
    ) -> Result<Tensor> {
        let p = self.conv2d_problem(x, w, bias, params)?;
        let y = Tensor::uninit(self, &p.y_shape())?;
        let mut enc = self.encoder("wgconv conv2d");
        self.encode_conv2d_problem(&mut enc, &p, x, w, bias, &y, algorithm)?;
        self.submit(enc)?;
        Ok(y)
    }

    /// Records a convolution into `encoder` writing into `y` (`[N, K, Ho, Wo]`), without
    /// submitting, so many operations can share one submission.
    #[allow(clippy::too_many_arguments)]
    pub fn encode_conv2d(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        params: &Conv2dParams,
        algorithm: Algorithm,
        y: &Tensor,
    ) -> Result<()> {
        // Written when the caller submits: never cached from now on.
        y.mark_volatile();
        let p = self.conv2d_problem(x, w, bias, params)?;
        y.check_ctx(self, "y")?;
        if y.shape() != p.y_shape() {
            return Err(Error::shape_mismatch(
                "y",
                format!("{:?}", p.y_shape()),
                format!("{:?}", y.shape()),
            ));
        }
        self.encode_conv2d_problem(encoder, &p, x, w, bias, y, algorithm)
    }

    fn conv2d_problem(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        params: &Conv2dParams,
    ) -> Result<Conv2dProblem> {
        x.check_ctx(self, "x")?;
        w.check_ctx(self, "w")?;
        let bias_len = match bias {
            Some(b) => {
                b.check_ctx(self, "bias")?;
                if b.shape().len() != 1 {
                    return Err(Error::shape_mismatch(
                        "bias",
                        "a 1-D shape",
                        format!("{:?}", b.shape()),
                    ));
                }
                Some(b.shape()[0])
            }
            None => None,
        };
        Conv2dProblem::new(x.shape4("x")?, w.shape4("w")?, bias_len, params)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn encode_conv2d_problem(
        &self,
        enc: &mut wgpu::CommandEncoder,
        p: &Conv2dProblem,
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        y: &Tensor,
        algorithm: Algorithm,
    ) -> Result<()> {
        let fit = [Some(x), Some(w), bias, Some(y)]
            .iter()
            .flatten()
            .all(|t| crate::kernels::fits(self, t.raw()));
        let algo = match algorithm {
            Algorithm::Auto if !fit => Algorithm::Direct,
            Algorithm::Auto => self.choose(crate::tune::TunedOp::Forward, p, select_forward(self, p)),
            a if !fit && a != Algorithm::Direct => {
                return Err(Error::new(ErrorKind::UnsupportedAlgorithm {
                    algorithm: a.name(),
                    reason: "tensors larger than one storage binding are split only by the direct algorithm".into(),
                }))
            }
            a if a.supports_forward(p) => a,
            a => {
                return Err(Error::new(ErrorKind::UnsupportedAlgorithm {
                    algorithm: a.name(),
                    reason: "not applicable to this convolution".into(),
                }))
            }
        };
        let bufs = im2col::ConvBuffers {
            x: x.raw(),
            w: w.raw(),
            b: bias.map(|b| b.raw()),
            y: y.raw(),
            w_key: w.content_key(),
        };
        match algo {
            Algorithm::Direct | Algorithm::Auto => {
                direct::encode(self, enc, p, bufs.x, bufs.w, bufs.b, bufs.y)
            }
            Algorithm::Im2colGemm => im2col::encode_im2col(self, enc, p, &bufs),
            Algorithm::Gemm1x1 => im2col::encode_pointwise(self, enc, p, &bufs),
            Algorithm::Depthwise => depthwise::encode(self, enc, p, bufs.x, bufs.w, bufs.b, bufs.y),
            Algorithm::ImplicitGemm => {
                implicit::encode_at(self, enc, p, &bufs, 0, implicit::WeightLayout::forward(p))
            }
            Algorithm::ImplicitGemmTiled => implicit::encode_tiled_at(
                self,
                enc,
                p,
                &bufs,
                0,
                implicit::WeightLayout::forward(p),
            ),
        }
    }

    pub(crate) fn encoder(&self, label: &str) -> wgpu::CommandEncoder {
        self.device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) })
    }

    /// Finishes and submits an encoder filled by `encode_*` calls, inside the library's error
    /// scopes: validation and out-of-memory errors come back as typed errors instead of going
    /// to the device's uncaptured-error handler.
    pub fn submit(&self, enc: wgpu::CommandEncoder) -> Result<()> {
        self.scoped("submitting work", || {
            self.queue().submit([enc.finish()]);
        })
    }
}

/// The three gradients of a convolution, from [`Context::conv2d_backward`].
#[derive(Debug, Clone)]
pub struct Conv2dGradients {
    /// Gradient w.r.t. the input, `[N, C, H, W]`.
    pub dx: Tensor,
    /// Gradient w.r.t. the weight, `[K, C/groups, R, S]`.
    pub dw: Tensor,
    /// Gradient w.r.t. the bias, `[K]` (when asked for).
    pub db: Option<Tensor>,
}

impl Context {
    fn check_dy(&self, p: &Conv2dProblem, dy: &Tensor) -> Result<()> {
        dy.check_ctx(self, "dy")?;
        if dy.shape() != p.y_shape() {
            return Err(Error::shape_mismatch(
                "dy",
                format!("{:?} (the forward output shape)", p.y_shape()),
                format!("{:?}", dy.shape()),
            ));
        }
        Ok(())
    }

    fn check_out(&self, t: &Tensor, what: &'static str, shape: &[usize]) -> Result<()> {
        t.check_ctx(self, what)?;
        if t.shape() != shape {
            return Err(Error::shape_mismatch(
                what,
                format!("{shape:?}"),
                format!("{:?}", t.shape()),
            ));
        }
        Ok(())
    }

    /// Gradient of a conv2d w.r.t. its input: `dx` of shape `x_shape` from `dy`
    /// (`[N, K, Ho, Wo]`) and the weight. Every forward parameter is honoured, including the
    /// padding modes (gradient reaching a padded copy of a pixel is added to that pixel).
    pub fn conv2d_backward_input(
        &self,
        dy: &Tensor,
        w: &Tensor,
        x_shape: Shape4,
        params: &Conv2dParams,
        algorithm: Algorithm,
    ) -> Result<Tensor> {
        let dx = Tensor::uninit(self, &x_shape)?;
        let mut enc = self.encoder("wgconv conv2d_backward_input");
        self.encode_conv2d_backward_input(&mut enc, dy, w, params, algorithm, &dx)?;
        self.submit(enc)?;
        Ok(dx)
    }

    /// Records [`Context::conv2d_backward_input`] into `encoder`, writing `dx` (whose shape
    /// is the forward input shape).
    pub fn encode_conv2d_backward_input(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        dy: &Tensor,
        w: &Tensor,
        params: &Conv2dParams,
        algorithm: Algorithm,
        dx: &Tensor,
    ) -> Result<()> {
        // Written when the caller submits: never cached from now on.
        dx.mark_volatile();
        w.check_ctx(self, "w")?;
        dx.check_ctx(self, "dx")?;
        let p = Conv2dProblem::new(dx.shape4("dx")?, w.shape4("w")?, None, params)?;
        self.check_dy(&p, dy)?;
        backward::encode_dgrad(
            self,
            encoder,
            &p,
            dy.raw(),
            w.raw(),
            None,
            dx.raw(),
            algorithm,
        )
    }

    /// Gradient of a conv2d w.r.t. its weight: `dw` of shape `w_shape` from the input `x`
    /// and `dy`. The reduction over images and pixels runs in a fixed order
    /// (deterministic).
    pub fn conv2d_backward_weight(
        &self,
        x: &Tensor,
        dy: &Tensor,
        w_shape: Shape4,
        params: &Conv2dParams,
        algorithm: Algorithm,
    ) -> Result<Tensor> {
        let dw = Tensor::uninit(self, &w_shape)?;
        let mut enc = self.encoder("wgconv conv2d_backward_weight");
        self.encode_conv2d_backward_weight(&mut enc, x, dy, params, algorithm, &dw)?;
        self.submit(enc)?;
        Ok(dw)
    }

    /// Records [`Context::conv2d_backward_weight`] into `encoder`, writing `dw`.
    pub fn encode_conv2d_backward_weight(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        x: &Tensor,
        dy: &Tensor,
        params: &Conv2dParams,
        algorithm: Algorithm,
        dw: &Tensor,
    ) -> Result<()> {
        // Written when the caller submits: never cached from now on.
        dw.mark_volatile();
        x.check_ctx(self, "x")?;
        dw.check_ctx(self, "dw")?;
        let p = Conv2dProblem::new(x.shape4("x")?, dw.shape4("dw")?, None, params)?;
        self.check_dy(&p, dy)?;
        backward::encode_wgrad(self, encoder, &p, x.raw(), dy.raw(), dw.raw(), algorithm)
    }

    /// Gradient of a conv2d w.r.t. its bias: `db[k] = Σ dy[n, k, :, :]` (`[K]`).
    pub fn conv2d_backward_bias(&self, dy: &Tensor) -> Result<Tensor> {
        let [_, k, _, _] = dy.shape4("dy")?;
        let db = Tensor::uninit(self, &[k])?;
        let mut enc = self.encoder("wgconv conv2d_backward_bias");
        self.encode_conv2d_backward_bias(&mut enc, dy, &db)?;
        self.submit(enc)?;
        Ok(db)
    }

    /// Records [`Context::conv2d_backward_bias`] into `encoder`, writing `db` (`[K]`).
    pub fn encode_conv2d_backward_bias(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        dy: &Tensor,
        db: &Tensor,
    ) -> Result<()> {
        // Written when the caller submits: never cached from now on.
        db.mark_volatile();
        dy.check_ctx(self, "dy")?;
        let shape = dy.shape4("dy")?;
        if shape.contains(&0) {
            return Err(Error::shape_mismatch(
                "dy",
                "every dimension >= 1",
                format!("{shape:?}"),
            ));
        }
        self.check_out(db, "db", &[shape[1]])?;
        backward::encode_bgrad(self, encoder, shape, dy.raw(), db.raw())
    }

    /// All gradients of `y = conv2d(x, w, b)` for an upstream gradient `dy`, in one
    /// submission: `dx`, `dw`, and `db` when `with_bias`.
    pub fn conv2d_backward(
        &self,
        x: &Tensor,
        w: &Tensor,
        dy: &Tensor,
        with_bias: bool,
        params: &Conv2dParams,
        algorithm: Algorithm,
    ) -> Result<Conv2dGradients> {
        x.check_ctx(self, "x")?;
        w.check_ctx(self, "w")?;
        let p = Conv2dProblem::new(x.shape4("x")?, w.shape4("w")?, None, params)?;
        self.check_dy(&p, dy)?;
        let dx = Tensor::uninit(self, &p.x_shape())?;
        let dw = Tensor::uninit(self, &p.w_shape())?;
        let db = if with_bias {
            Some(Tensor::uninit(self, &[p.k])?)
        } else {
            None
        };
        let mut enc = self.encoder("wgconv conv2d_backward");
        backward::encode_dgrad(
            self,
            &mut enc,
            &p,
            dy.raw(),
            w.raw(),
            None,
            dx.raw(),
            algorithm,
        )?;
        backward::encode_wgrad(self, &mut enc, &p, x.raw(), dy.raw(), dw.raw(), algorithm)?;
        if let Some(db) = &db {
            backward::encode_bgrad(self, &mut enc, p.y_shape(), dy.raw(), db.raw())?;
        }
        self.submit(enc)?;
        Ok(Conv2dGradients { dx, dw, db })
    }

    /// Transposed convolution (PyTorch `conv_transpose2d`): `x` `[N, Cin, H, W]`, `w`
    /// `[Cin, Cout/groups, R, S]`, `bias` `[Cout]`; returns `[N, Cout, Ho, Wo]` with
    /// `Ho = (H-1)*sh - 2*ph + dh*(R-1) + oph + 1`. It is the input gradient of the conv2d
    /// with the same parameters, computed by the same gather kernels (no atomics).
    pub fn conv_transpose2d(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        params: &ConvTranspose2dParams,
        algorithm: Algorithm,
    ) -> Result<Tensor> {
        let tp = self.transposed_problem(x, w, bias, params)?;
        let y = Tensor::uninit(self, &tp.y_shape())?;
        let mut enc = self.encoder("wgconv conv_transpose2d");
        self.encode_conv_transpose2d(&mut enc, x, w, bias, params, algorithm, &y)?;
        self.submit(enc)?;
        Ok(y)
    }

    /// Records [`Context::conv_transpose2d`] into `encoder`, writing `y`.
    #[allow(clippy::too_many_arguments)]
    pub fn encode_conv_transpose2d(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        params: &ConvTranspose2dParams,
        algorithm: Algorithm,
        y: &Tensor,
    ) -> Result<()> {
        // Written when the caller submits: never cached from now on.
        y.mark_volatile();
        let tp = self.transposed_problem(x, w, bias, params)?;
        self.check_out(y, "y", &tp.y_shape())?;
        backward::encode_dgrad(
            self,
            encoder,
            &tp.conv,
            x.raw(),
            w.raw(),
            bias.map(|b| b.raw()),
            y.raw(),
            algorithm,
        )
    }

    fn transposed_problem(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        params: &ConvTranspose2dParams,
    ) -> Result<TransposedProblem> {
        x.check_ctx(self, "x")?;
        w.check_ctx(self, "w")?;
        let bias_len = match bias {
            Some(b) => {
                b.check_ctx(self, "bias")?;
                if b.shape().len() != 1 {
                    return Err(Error::shape_mismatch(
                        "bias",
                        "a 1-D shape",
                        format!("{:?}", b.shape()),
                    ));
                }
                Some(b.shape()[0])
            }
            None => None,
        };
        params.resolve(x.shape4("x")?, w.shape4("w")?, bias_len)
    }
}
