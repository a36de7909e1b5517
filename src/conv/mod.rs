//! Convolution operations on the GPU: forward algorithms and their selection.

pub(crate) mod band;
pub(crate) mod bias_grad;
pub(crate) mod epilogue;
pub(crate) mod f16acc;
pub(crate) mod forward;
pub(crate) mod implicit_image;
pub(crate) mod input_grad;
pub(crate) mod launch;
pub(crate) mod table;
pub(crate) mod weight_grad;

pub use table::Operation;

use crate::context::Context;
use crate::conv::implicit_image::ImageShareScope;
use crate::epilogue::{Epilogue, Residual};
use crate::error::{Error, Result};
use crate::gpu::half;
use crate::params::{
    numel, Conv2dParams, Conv2dProblem, ConvTranspose2dParams, Shape4, TransposedProblem,
};
use crate::tensor::{caller_records, DType, MemoryFormat, OwnRecording, Tensor};
use band::Side;
use input_grad::DgradNative;
use launch::{ConvBuffers, KeyScope};
use weight_grad::WgradNative;

/// Which kernel family computes a convolution.
///
/// Each operation ([`Operation`]) has one table of the algorithms that can compute it. `Auto`
/// (the default) picks from that table: the autotuned fastest of the entries that can run the
/// problem once its shape bucket has been measured, else (first calls of a bucket, and with
/// autotuning off) the first entry the heuristic prefers (see
/// [`TuningMode`](crate::TuningMode)). A forced algorithm
/// runs exactly its own entry, or returns [`ErrorKind::UnsupportedAlgorithm`] with the
/// entry's reason when it cannot run the problem on this context: it never silently runs
/// another algorithm, so a caller (or a test) that forces one knows what ran.
/// [`Context::check_algorithm`] asks the same question without running anything.
///
/// [`ErrorKind::UnsupportedAlgorithm`]: crate::ErrorKind::UnsupportedAlgorithm
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// Choose automatically.
    #[default]
    Auto,
    /// Direct convolution: each invocation accumulates a register block of outputs. Runs
    /// every problem of every operation (tensors beyond one storage binding run in bands, as
    /// with every algorithm, see [`Context::check_algorithm`]), and is the only algorithm that
    /// also splits what cannot be banded (weights beyond one binding, circular row padding of
    /// an image beyond one binding) into windows. Input gradient: a gather over `dy` (any stride);
    /// for strided layers on CPU adapters the phase kernel where it applies (zero padding
    /// after the fold, dilation 1, strides up to 8, output width a multiple of 4: each stride
    /// phase of dx is a stride-1 correlation of dy with a sub-kernel, gathered from an image
    /// copy of dy). Weight gradient: a direct reduction over images and pixels. Bias
    /// gradient: row sums of `dy` (from an image copy of `dy` on CPU adapters).
    Direct,
    /// Unfold patches into a column matrix (im2col), then one GEMM per group. The column
    /// buffer is bounded by the context's scratch budget (split over images and pixels).
    /// Input gradient: the same on `dy` with the weights' channel axes swapped (stride 1),
    /// else a GEMM into a column-gradient matrix folded back by `col2im`. Weight gradient: a
    /// GEMM of `dy` with a pixel-major column matrix of `x`.
    Im2colGemm,
    /// 1x1 convolution (stride 1, no padding) as a GEMM reading the input in place. Input
    /// gradient: a GEMM of the weights with `dy` in place. Weight gradient: the GEMM of
    /// `dy` with `x` (through the im2col kernel, whose column matrix is a copy of `x` here).
    Gemm1x1,
    /// Depthwise convolution (one input channel per group, any channel multiplier): a
    /// dedicated kernel that loads each input row window once into registers. Kernels up to
    /// 7 wide, column stride 1 or 2, column dilation 1. Input gradient: only stride 1
    /// without channel multiplier, as the same kernel on `dy` with the kernel rotated.
    /// Weight gradient (one input channel per group, kernels up to 7 wide): its own kernel,
    /// per-band partial sums of each tap, then a fixed-order sum.
    Depthwise,
    /// Implicit GEMM on storage images: the input is copied once into a padded image and
    /// the GEMM gathers its patches from it (no column matrix). The lavapipe kernel family:
    /// needs 8-lane subgroups, and the padded input of one image and the packed weights
    /// within `maxTextureDimension2D` (see [`Context::check_algorithm`]). Input gradient:
    /// the stride-1 input gradient as an implicit GEMM of `dy`, and that of strided 1x1
    /// layers as an implicit GEMM of `dy` scattered onto `dx`; other strides are refused.
    /// Weight gradient: its own image kernel (same input image, `dy` in GEMM panels).
    ImplicitGemm,
    /// Implicit GEMM with workgroup-memory tiles, the GPU variant (the tfjs `conv2d_mm` /
    /// ORT im2col-matmul shape): 8x8 invocations own 32 output channels x 32 pixels and stage
    /// weights and gathered input patches in workgroup memory. Runs on every adapter (slowly
    /// on CPU adapters, where it is not autotuned: workgroup memory and barriers are
    /// emulated there). Input gradient: stride 1 only (the same kernel on `dy`). No weight
    /// gradient of its own: [`Algorithm::Im2colGemm`] is the GEMM for it on GPUs.
    ImplicitGemmTiled,
}

/// The [`ErrorKind::UnsupportedAlgorithm`](crate::ErrorKind::UnsupportedAlgorithm) error of
/// `algorithm` with `reason`.
pub(crate) fn refuse(algorithm: Algorithm, reason: &str) -> Error {
    Error::new(crate::ErrorKind::UnsupportedAlgorithm {
        algorithm: algorithm.name(),
        reason: reason.into(),
    })
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

    /// Can this algorithm run the forward convolution `p` on some adapter? (Whether it runs
    /// on a given context, for any operation, is [`Context::check_algorithm`].)
    pub fn supports_forward(self, p: &Conv2dProblem) -> bool {
        match self {
            Algorithm::Gemm1x1 => forward::gemm1x1::is_pointwise(p),
            Algorithm::Depthwise => forward::depthwise::supports(p),
            _ => true,
        }
    }
}

impl Context {
    /// Can `algorithm` run operation `op` on problem `p` on this context? `Ok(())`, or the
    /// [`ErrorKind::UnsupportedAlgorithm`](crate::ErrorKind::UnsupportedAlgorithm) error a
    /// call forcing it would return, with the reason (the problem, the adapter, or a limit).
    /// `p` is the forward convolution the operation belongs to (for
    /// [`Operation::Transposed`], [`TransposedProblem::conv`]). [`Algorithm::Auto`] always
    /// can. A problem whose tensors exceed one storage binding runs in bands (of whole
    /// images, else of rows with their halo, each an ordinary problem); an algorithm can run
    /// it when it can run every band.
    pub fn check_algorithm(
        &self,
        op: Operation,
        algorithm: Algorithm,
        p: &Conv2dProblem,
    ) -> Result<()> {
        match op {
            Operation::Forward => band::check(self, &forward::TABLE, Side::Outputs, p, algorithm),
            Operation::InputGrad => {
                band::check(self, &input_grad::TABLE, Side::Inputs, p, algorithm)
            }
            Operation::Transposed => {
                band::check(self, &input_grad::TRANSPOSED, Side::Inputs, p, algorithm)
            }
            Operation::WeightGrad => {
                band::check(self, &weight_grad::TABLE, Side::Outputs, p, algorithm)
            }
            Operation::BiasGrad => bias_grad::TABLE.check(self, &p.y_shape(), algorithm),
        }
    }

    /// Can `algorithm` run the forward convolution `p` on this context? (Shorthand for
    /// [`Context::check_algorithm`] with [`Operation::Forward`].)
    pub fn can_run_forward(&self, algorithm: Algorithm, p: &Conv2dProblem) -> bool {
        self.check_algorithm(Operation::Forward, algorithm, p)
            .is_ok()
    }

    /// 2-D convolution (PyTorch `conv2d`, or true convolution with `params.flip`).
    ///
    /// `x`: `[N, C, H, W]`; `w`: `[K, C/groups, R, S]`; `bias`: `[K]`. Returns
    /// `[N, K, Ho, Wo]`. The work is recorded and submitted; reading the result waits for it.
    ///
    /// # Element types
    /// Every operand has the same [`DType`]; the result has it too. On f16 tensors every
    /// operation of the crate (convolutions, transposed convolution, the three gradients,
    /// GEMM; every algorithm, forced or not) reads the f16 values exactly, computes in f32
    /// with f32 accumulation, and rounds each result once to f16 (to nearest even; beyond
    /// ±65504 to ±infinity, as PyTorch does). The lavapipe depthwise and implicit-GEMM
    /// paths read (and the depthwise kernels write) f16 themselves; elsewhere the f16
    /// operands are converted into f32 scratch around the f32 kernels. An f16 operand whose
    /// f32 copy would exceed `maxBufferSize` is refused with
    /// [`ErrorKind::ExceedsLimit`](crate::ErrorKind::ExceedsLimit). With
    /// [`Precision::F16Accumulate`](crate::Precision::F16Accumulate) (opt-in,
    /// [`Context::set_precision`]) the arithmetic is f16 instead: see there for what runs.
    ///
    /// # Errors
    /// Every invalid parameter or shape gives [`ErrorKind::InvalidParam`](crate::ErrorKind::InvalidParam) or
    /// [`ErrorKind::ShapeMismatch`](crate::ErrorKind::ShapeMismatch) before anything runs;
    /// operands of different element types give
    /// [`ErrorKind::DTypeMismatch`](crate::ErrorKind::DTypeMismatch).
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
        let mut enc = self.encoder("wgconv conv2d");
        // The library's own encoder: its tensors are not marked (see `OwnRecording`).
        let _own = OwnRecording::enter();
        let y = Tensor::output(self, &mut enc, &p.y_shape(), x.dtype(), x.format())?;
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
        // Written (read) when the caller submits: never cached (pooled) from now on.
        caller_records(&[Some(y)], &[Some(x), Some(w), bias]);
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

    /// The length of a 1-D bias of this context (`None` without bias).
    fn bias_len(&self, bias: Option<&Tensor>) -> Result<Option<usize>> {
        let Some(b) = bias else {
            return Ok(None);
        };
        b.check_ctx(self, "bias")?;
        match b.shape() {
            &[len] => Ok(Some(len)),
            other => Err(Error::shape_mismatch(
                "bias",
                "a 1-D shape",
                format!("{other:?}"),
            )),
        }
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
        let bias_len = self.bias_len(bias)?;
        half::common_dtype(&[("x", Some(x)), ("w", Some(w)), ("bias", bias)])?;
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
        half::common_dtype(&[
            ("x", Some(x)),
            ("w", Some(w)),
            ("bias", bias),
            ("y", Some(y)),
        ])?;
        // The fused form without epilogue (nothing offered to the kernels, no pass).
        self.encode_conv2d_fused_problem(
            enc,
            p,
            (x, w, bias, None),
            &Epilogue::default(),
            y,
            algorithm,
        )
    }

    /// [`Context::encode_conv2d_problem`] with an epilogue: offered to the kernels (see
    /// [`Context::conv2d_fused`] for which fuse it), else applied by the elementwise pass.
    /// Operands are read through views: f32 tensors are their own, f16 ones are converted
    /// (see `gpu::half`); channels-last ones are read and written in place where the chosen
    /// entry does that (`band::forward_reads_channels_last`), else through contiguous
    /// copies.
    #[allow(clippy::too_many_arguments)]
    fn encode_conv2d_fused_problem(
        &self,
        enc: &mut wgpu::CommandEncoder,
        p: &Conv2dProblem,
        (x, w, bias, residual): (&Tensor, &Tensor, Option<&Tensor>, Option<&Tensor>),
        epilogue: &Epilogue,
        y: &Tensor,
        algorithm: Algorithm,
    ) -> Result<()> {
        if f16acc::active(self, x) {
            return f16acc::forward(self, enc, p, (x, w, bias, residual), epilogue, y, algorithm);
        }
        // Auto resolved once for a whole problem: the views below are made for that kernel.
        let pinned = band::forward_pin(self, p, algorithm);
        let algorithm = pinned.unwrap_or(algorithm);
        // Channels-last operands in place for the implicit GEMM (the residual in y's
        // order), else contiguous views.
        let native = any_channels_last(&[x, y])
            && band::forward_reads_channels_last(self, p, pinned, all_channels_last(&[x, y]))
            && residual.is_none_or(|r| r.storage_format() == y.storage_format());
        let fuse = self
            .inner
            .fuse_epilogues
            .load(std::sync::atomic::Ordering::Relaxed);
        // f16 x (and y) read (written) by the chosen kernel itself, no f32 copies.
        let x_cl = native && x.storage_format() == MemoryFormat::ChannelsLast;
        let (x16, y16) = match pinned {
            Some(a) if x.dtype() == DType::F16 => forward::reads_f16(self, p, a, x_cl),
            _ => (false, false),
        };
        // Native f16 y only with the epilogue in the kernel's store (no f32 copy of y for a
        // pass to work on) and in y's own order.
        let y16 = y16
            && (fuse || epilogue.is_identity())
            && y.storage_format() == MemoryFormat::Contiguous
            && x.storage_format() == MemoryFormat::Contiguous;
        let x16 = x16 && (y16 || pinned != Some(Algorithm::Depthwise));
        let xv = half::input_native(self, enc, x, native, x16)?;
        // f16 / channels-last weights that the implicit GEMM takes from the packed-weight
        // cache, or packs converting them in a submission of its own (`w_src`), need no
        // copy in this call: its buffer is bound only as an unread placeholder then.
        let lazy_w = pinned == Some(Algorithm::ImplicitGemm)
            && half::needs_copy(w)
            && w.content_key().is_some()
            && self.inner.weights.budget() > 0;
        let wv = if lazy_w {
            half::unconverted(w)
        } else {
            half::param(self, enc, w)?
        };
        let bv = bias.map(|b| half::param(self, enc, b)).transpose()?;
        let rv = residual
            .map(|r| half::input_in(self, enc, r, native))
            .transpose()?;
        let yv = if y16 {
            half::output_f16(self, enc, y, true)?
        } else {
            half::output_in(self, enc, y, native)?
        };
        let fused = (fuse && !epilogue.is_identity()).then(|| launch::FusedEpilogue {
            ep: *epilogue,
            r: rv.as_ref().map(|r| r.buf().clone()),
            applied: Default::default(),
        });
        let bufs = ConvBuffers {
            x: xv.buf().clone(),
            w: wv.buf().clone(),
            b: bv.as_ref().map(|b| b.buf().clone()),
            y: yv.buf().clone(),
            w_key: w.content_key(),
            w_src: half::needs_copy(w).then(|| w.clone()),
            epilogue: fused.clone(),
            x_cl: xv.cl,
            y_cl: yv.cl,
            x_f16: xv.f16,
            y_f16: yv.f16,
            y_pitch: None,
        };
        // x as a key of the input-image cache (a later weight gradient reads its image).
        let x_key = KeyScope::enter(x, xv.buf());
        forward::encode(self, enc, p, &bufs, algorithm)?;
        drop(x_key);
        let applied = fused.is_some_and(|f| f.applied.load(std::sync::atomic::Ordering::Relaxed));
        if !applied && yv.f16 && !epilogue.is_identity() {
            // Unreachable (`native16` asks for an entry that fuses every epilogue); never a
            // pass over f16 words as if they were f32.
            return Err(Error::library_bug(
                "recording a forward convolution",
                "an f16-native kernel left its epilogue unapplied",
            ));
        }
        if !applied && !yv.f16 {
            epilogue::encode_forward(
                self,
                enc,
                epilogue,
                yv.buf(),
                rv.as_ref().map(|r| r.buf()),
                numel(y.shape()),
            )?;
        }
        half::finish(self, enc, &yv, y)
    }

    /// Whether the input gradient of `p` (pinned to a concrete algorithm) reads f16 `dy` and
    /// writes f16 `dx` itself: both f16 and contiguous, and the entry's f16 kernel runs it.
    fn input_grad_reads_f16(
        &self,
        p: &Conv2dProblem,
        pinned: Option<Algorithm>,
        dy: &Tensor,
        dx: &Tensor,
    ) -> bool {
        plain_f16(dy)
            && plain_f16(dx)
            && pinned.is_some_and(|a| band::input_grad_reads_f16(self, p, a))
    }

    /// Whether the weight gradient of `p` (pinned to a concrete algorithm) reads f16 `x`
    /// and `dy` itself: both f16 and contiguous, and the entry's f16 kernel runs it.
    fn weight_grad_reads_f16(
        &self,
        p: &Conv2dProblem,
        pinned: Option<Algorithm>,
        x: &Tensor,
        dy: &Tensor,
    ) -> bool {
        plain_f16(x)
            && plain_f16(dy)
            && pinned.is_some_and(|a| band::weight_grad_reads_f16(self, p, a))
    }

    /// Whether the weight gradient of `p` (pinned to a concrete algorithm) reads f16 `x`
    /// alone itself (the implicit GEMM's input fill; channels-last x only when read in place,
    /// `native`).
    fn weight_grad_reads_f16_x(
        &self,
        p: &Conv2dProblem,
        pinned: Option<Algorithm>,
        x: &Tensor,
        native: bool,
    ) -> bool {
        let x_cl = x.storage_format() == MemoryFormat::ChannelsLast;
        x.dtype() == DType::F16
            && (native || !x_cl)
            && pinned.is_some_and(|a| band::weight_grad_reads_f16_x(self, p, a, x_cl))
    }

    /// The view the input gradient of `p` writes `dx` through: the caller's f16 words where
    /// the pinned entry stores f16 itself (`f16`: it reads f16 dy too; or the strided-1x1
    /// scatter's f16 store), else [`half::output_in`] (channels-last kept when `native`).
    fn input_grad_output(
        &self,
        enc: &mut wgpu::CommandEncoder,
        p: &Conv2dProblem,
        pinned: Option<Algorithm>,
        dx: &Tensor,
        f16: bool,
        native: bool,
    ) -> Result<half::F32View> {
        if f16 || (!native && self.input_grad_writes_f16_dx(p, pinned, dx)) {
            half::output_f16(self, enc, dx, true)
        } else {
            half::output_in(self, enc, dx, native)
        }
    }

    /// The view the weight gradient of `p` writes `dw` through: the caller's f16 words where
    /// the pinned entry stores f16 dw from f32 reads (not with `f16`, the depthwise f16
    /// kernel's path), else [`half::output_in`] (channels-last kept where the entry stores
    /// KRSC itself).
    fn weight_grad_output(
        &self,
        enc: &mut wgpu::CommandEncoder,
        p: &Conv2dProblem,
        pinned: Option<Algorithm>,
        dw: &Tensor,
        f16: bool,
    ) -> Result<half::F32View> {
        if !f16 && self.weight_grad_writes_f16_dw(p, pinned, dw) {
            half::output_f16(self, enc, dw, true)
        } else {
            let cl = self.weight_grad_writes_channels_last(p, pinned, dw);
            half::output_in(self, enc, dw, cl)
        }
    }

    /// Whether the input gradient of `p` (pinned to a concrete algorithm) writes an f16 `dx`
    /// itself from f32 `dy` (contiguous; the implicit GEMM's strided-1x1 scatter).
    fn input_grad_writes_f16_dx(
        &self,
        p: &Conv2dProblem,
        pinned: Option<Algorithm>,
        dx: &Tensor,
    ) -> bool {
        plain_f16(dx) && pinned.is_some_and(|a| band::input_grad_writes_f16_dx(self, p, a))
    }

    /// Whether the weight gradient of `p` (pinned to a concrete algorithm) stores a
    /// channels-last `dw` (`[K, R, S, C/groups]`) in that order itself (the implicit GEMM).
    fn weight_grad_writes_channels_last(
        &self,
        p: &Conv2dProblem,
        pinned: Option<Algorithm>,
        dw: &Tensor,
    ) -> bool {
        dw.storage_format() == MemoryFormat::ChannelsLast
            && pinned.is_some_and(|a| band::weight_grad_writes_channels_last(self, p, a))
    }

    /// Whether the weight gradient of `p` (pinned to a concrete algorithm) writes an f16
    /// `dw` itself (contiguous; the implicit GEMM's 1x1 kernel).
    fn weight_grad_writes_f16_dw(
        &self,
        p: &Conv2dProblem,
        pinned: Option<Algorithm>,
        dw: &Tensor,
    ) -> bool {
        plain_f16(dw) && pinned.is_some_and(|a| band::weight_grad_writes_f16_dw(self, p, a))
    }

    pub(crate) fn encoder(&self, label: &str) -> wgpu::CommandEncoder {
        self.device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) })
    }

    /// Finishes and submits an encoder filled by `encode_*` calls, inside the library's error
    /// scopes: validation and out-of-memory errors come back as typed errors instead of going
    /// to the device's uncaptured-error handler.
    pub fn submit(&self, enc: wgpu::CommandEncoder) -> Result<()> {
        self.submit_internal(enc)?;
        // An allocating call's recording went out: the input images it filled may be cached.
        crate::icache::mark_submitted();
        // The end of a call: buckets it queued for background tuning may start.
        self.release_tuning();
        Ok(())
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
        let mut enc = self.encoder("wgconv conv2d_backward_input");
        // The library's own encoder: its tensors are not marked (see `OwnRecording`).
        let _own = OwnRecording::enter();
        let dx = Tensor::output(self, &mut enc, &x_shape, dy.dtype(), dy.format())?;
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
        // Written (read) when the caller submits: never cached (pooled) from now on.
        caller_records(&[Some(dx)], &[Some(dy), Some(w)]);
        w.check_ctx(self, "w")?;
        dx.check_ctx(self, "dx")?;
        let p = Conv2dProblem::new(dx.shape4("dx")?, w.shape4("w")?, None, params)?;
        self.check_dy(&p, dy)?;
        half::common_dtype(&[("dy", Some(dy)), ("w", Some(w)), ("dx", Some(dx))])?;
        if f16acc::active(self, dy) {
            return f16acc::input_grad(self, encoder, &p, (dy, w, None, dx), algorithm);
        }
        // Auto resolved once for a whole problem (see `encode_conv2d_fused_problem`).
        let pinned = band::input_grad_pin(self, &p, algorithm, (false, false));
        let algorithm = pinned.unwrap_or(algorithm);
        let native = any_channels_last(&[dy, dx])
            && band::input_grad_reads_channels_last(self, &p, pinned, all_channels_last(&[dy, dx]));
        let f16 = self.input_grad_reads_f16(&p, pinned, dy, dx);
        let dyv = half::input_native(self, encoder, dy, native, f16)?;
        let wv = half::param(self, encoder, w)?;
        let dxv = self.input_grad_output(encoder, &p, pinned, dx, f16, native)?;
        let _w_key = KeyScope::enter(w, wv.buf());
        input_grad::encode(
            self,
            encoder,
            &p,
            dyv.buf(),
            wv.buf(),
            None,
            dxv.buf(),
            algorithm,
            false,
            DgradNative {
                cl: [dyv.cl, dxv.cl],
                f16,
                dx_f16: dxv.f16 && !f16,
            },
        )?;
        half::finish(self, encoder, &dxv, dx)
    }

    /// Gradient of a conv2d w.r.t. its weight: `dw` of shape `w_shape` from the input `x`
    /// and `dy`. The reduction over images and pixels runs in a fixed order
    /// (deterministic). `dw` has the element type of `x` and `dy`
    /// ([`Context::conv2d_backward_weight_as`] chooses it).
    pub fn conv2d_backward_weight(
        &self,
        x: &Tensor,
        dy: &Tensor,
        w_shape: Shape4,
        params: &Conv2dParams,
        algorithm: Algorithm,
    ) -> Result<Tensor> {
        self.conv2d_backward_weight_as(x, dy, w_shape, params, algorithm, x.dtype())
    }

    /// [`Context::conv2d_backward_weight`] producing `dw` of element type `dw_dtype`: f16
    /// `x` and `dy` with an f32 `dw` is the master-weights pattern of mixed-precision
    /// training (the f32 sums are stored as they are, not rounded to f16).
    ///
    /// # Errors
    /// Those of [`Context::conv2d_backward_weight`]; an f32 `dw` of f16 inputs is the only
    /// mix: f32 inputs with an f16 `dw` give
    /// [`ErrorKind::DTypeMismatch`](crate::ErrorKind::DTypeMismatch).
    pub fn conv2d_backward_weight_as(
        &self,
        x: &Tensor,
        dy: &Tensor,
        w_shape: Shape4,
        params: &Conv2dParams,
        algorithm: Algorithm,
        dw_dtype: DType,
    ) -> Result<Tensor> {
        let mut enc = self.encoder("wgconv conv2d_backward_weight");
        // The library's own encoder: its tensors are not marked (see `OwnRecording`).
        let _own = OwnRecording::enter();
        let dw = Tensor::output(self, &mut enc, &w_shape, dw_dtype, MemoryFormat::Contiguous)?;
        self.encode_conv2d_backward_weight(&mut enc, x, dy, params, algorithm, &dw)?;
        self.submit(enc)?;
        Ok(dw)
    }

    /// Records [`Context::conv2d_backward_weight`] into `encoder`, writing `dw` (of the
    /// inputs' element type, or f32 for f16 inputs: see
    /// [`Context::conv2d_backward_weight_as`]).
    pub fn encode_conv2d_backward_weight(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        x: &Tensor,
        dy: &Tensor,
        params: &Conv2dParams,
        algorithm: Algorithm,
        dw: &Tensor,
    ) -> Result<()> {
        // Written (read) when the caller submits: never cached (pooled) from now on.
        caller_records(&[Some(dw)], &[Some(x), Some(dy)]);
        x.check_ctx(self, "x")?;
        dw.check_ctx(self, "dw")?;
        let p = Conv2dProblem::new(x.shape4("x")?, dw.shape4("dw")?, None, params)?;
        self.check_dy(&p, dy)?;
        let dt = half::common_dtype(&[("x", Some(x)), ("dy", Some(dy))])?;
        if !(dw.dtype() == dt || dw.dtype() == DType::F32) {
            return Err(Error::dtype_mismatch("dw", dt, dw.dtype()));
        }
        // An f32 dw of f16 inputs (master weights) keeps f32 sums.
        if f16acc::active(self, dw) {
            return f16acc::weight_grad(self, encoder, &p, (x, dy, dw), algorithm);
        }
        // Auto resolved once for a whole problem (see `encode_conv2d_fused_problem`).
        let pinned = band::weight_grad_pin(self, &p, algorithm);
        let algorithm = pinned.unwrap_or(algorithm);
        let native = any_channels_last(&[x, dy])
            && band::weight_grad_reads_channels_last(self, &p, pinned, all_channels_last(&[x, dy]));
        let f16 = self.weight_grad_reads_f16(&p, pinned, x, dy);
        // f16 x alone read by the implicit GEMM's input fill.
        let x16 = !f16 && self.weight_grad_reads_f16_x(&p, pinned, x, native);
        let xv = half::input_native(self, encoder, x, native, f16 || x16)?;
        let dyv = half::input_native(self, encoder, dy, native, f16)?;
        let dwv = self.weight_grad_output(encoder, &p, pinned, dw, f16)?;
        weight_grad::encode(
            self,
            encoder,
            &p,
            xv.buf(),
            dyv.buf(),
            dwv.buf(),
            None,
            algorithm,
            WgradNative {
                cl: [xv.cl, dyv.cl],
                f16,
                x_f16: xv.f16 && !f16,
                dw_f16: dwv.f16 && !f16,
                dw_cl: dwv.cl,
            },
        )?;
        half::finish(self, encoder, &dwv, dw)
    }

    /// Gradient of a conv2d w.r.t. its bias: `db[k] = Σ dy[n, k, :, :]` (`[K]`).
    pub fn conv2d_backward_bias(&self, dy: &Tensor) -> Result<Tensor> {
        let [_, k, _, _] = dy.shape4("dy")?;
        let mut enc = self.encoder("wgconv conv2d_backward_bias");
        // The library's own encoder: its tensors are not marked (see `OwnRecording`).
        let _own = OwnRecording::enter();
        let db = Tensor::output(self, &mut enc, &[k], dy.dtype(), MemoryFormat::Contiguous)?;
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
        // Written (read) when the caller submits: never cached (pooled) from now on.
        caller_records(&[Some(db)], &[Some(dy)]);
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
        half::common_dtype(&[("dy", Some(dy)), ("db", Some(db))])?;
        let native = any_channels_last(&[dy]) && bias_grad::reads_channels_last(self, dy.numel());
        let f16 = plain_f16(dy) && bias_grad::reads_f16(self, shape);
        let dyv = half::input_native(self, encoder, dy, native, f16)?;
        let dbv = half::output(self, encoder, db, false)?;
        bias_grad::encode(self, encoder, shape, dyv.buf(), dbv.buf(), dyv.cl, f16)?;
        half::finish(self, encoder, &dbv, db)
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
        let dt = half::common_dtype(&[("x", Some(x)), ("w", Some(w)), ("dy", Some(dy))])?;
        let mut enc = self.encoder("wgconv conv2d_backward");
        // The library's own encoder: its tensors are not marked (see `OwnRecording`).
        let _own = OwnRecording::enter();
        let (dx, dw, db) = self.gradient_outputs(&mut enc, &p, dt, (x, w), with_bias)?;
        self.encode_backward_all(&mut enc, &p, (x, w, dy), (&dx, &dw, db.as_ref()), algorithm)?;
        self.submit(enc)?;
        Ok(Conv2dGradients { dx, dw, db })
    }

    /// The results `dx`, `dw` (in the formats of `x` and `w`) and `db` (when `with_bias`) of
    /// the allocating gradient calls recording into `enc`.
    fn gradient_outputs(
        &self,
        enc: &mut wgpu::CommandEncoder,
        p: &Conv2dProblem,
        dt: DType,
        (x, w): (&Tensor, &Tensor),
        with_bias: bool,
    ) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let dx = Tensor::output(self, enc, &p.x_shape(), dt, x.format())?;
        let dw = Tensor::output(self, enc, &p.w_shape(), dt, w.format())?;
        let contiguous = MemoryFormat::Contiguous;
        let db = with_bias
            .then(|| Tensor::output(self, enc, &[p.k], dt, contiguous))
            .transpose()?;
        Ok((dx, dw, db))
    }

    /// Records `dx`, `dw` and `db` (when given) of the problem `p` from `x`, `w` and `dy`
    /// (any element types and formats the outputs can be computed from: each operand is
    /// read through one contiguous f32 view, `dy`'s shared by the three gradients).
    pub(crate) fn encode_backward_all(
        &self,
        enc: &mut wgpu::CommandEncoder,
        p: &Conv2dProblem,
        (x, w, dy): (&Tensor, &Tensor, &Tensor),
        (dx, dw, db): (&Tensor, &Tensor, Option<&Tensor>),
        algorithm: Algorithm,
    ) -> Result<()> {
        if f16acc::active(self, dy) && f16acc::active(self, dx) {
            // f16 arithmetic for dx and dw; the bias gradient keeps f32 sums (and the f32 dz
            // of `conv2d_backward_fused` keeps f32 arithmetic throughout).
            f16acc::input_grad(self, enc, p, (dy, w, None, dx), algorithm)?;
            f16acc::weight_grad(self, enc, p, (x, dy, dw), algorithm)?;
            if let Some(db) = db {
                self.encode_conv2d_backward_bias(enc, dy, db)?;
            }
            return Ok(());
        }
        // Channels-last operands in place where the chosen entry reads them (the implicit
        // GEMM, the bias row sums); dy gets one view per order the gradients need. The input
        // gradient's algorithm is resolved once (see `encode_conv2d_fused_problem`).
        let dx_pin = band::input_grad_pin(self, p, algorithm, (false, false));
        let dx_algorithm = dx_pin.unwrap_or(algorithm);
        // f16 dy and dx read / written by the input gradient's kernel itself.
        let dx16 = self.input_grad_reads_f16(p, dx_pin, dy, dx);
        let ndx = any_channels_last(&[dy, dx])
            && band::input_grad_reads_channels_last(self, p, dx_pin, all_channels_last(&[dy, dx]));
        let dw_pin = band::weight_grad_pin(self, p, algorithm);
        // A 1x1 layer whose input gradient runs the implicit GEMM: its weight gradient reads
        // dy from the input gradient's input image (`ImageShareScope`) where the implicit
        // GEMM runs it too; `Auto` picks that for strided layers, where the alternative
        // fills dy and x in passes of their own.
        let share_dy = dx_pin == Some(Algorithm::ImplicitGemm)
            && p.r * p.s == 1
            && [x, w, dy, dx, dw]
                .iter()
                .all(|t| t.dtype() == DType::F32 && t.storage_format() == MemoryFormat::Contiguous)
            && weight_grad::implicit_gemm::reads_shared_dy(self, p);
        let dw_pin = match dw_pin {
            Some(Algorithm::Im2colGemm | Algorithm::Gemm1x1)
                if share_dy
                    && algorithm == Algorithm::Auto
                    && p.stride != [1, 1]
                    && self
                        .check_algorithm(Operation::WeightGrad, Algorithm::ImplicitGemm, p)
                        .is_ok() =>
            {
                Some(Algorithm::ImplicitGemm)
            }
            pin => pin,
        };
        let dw_algorithm = dw_pin.unwrap_or(algorithm);
        // f16 x and dy read by the weight gradient's kernel itself.
        let dw16 = self.weight_grad_reads_f16(p, dw_pin, x, dy);
        let ndw = any_channels_last(&[x, dy])
            && band::weight_grad_reads_channels_last(self, p, dw_pin, all_channels_last(&[x, dy]));
        let ndb = any_channels_last(&[dy]) && bias_grad::reads_channels_last(self, dy.numel());
        let mut dy_views: Vec<half::F32View> = Vec::new();
        let mut dy_view = |keep: bool, enc: &mut wgpu::CommandEncoder| -> Result<wgpu::Buffer> {
            let cl = keep && dy.storage_format() == MemoryFormat::ChannelsLast;
            if let Some(v) = dy_views.iter().find(|v| v.cl == cl) {
                return Ok(v.buf().clone());
            }
            let v = half::input_in(self, enc, dy, keep)?;
            let b = v.buf().clone();
            dy_views.push(v);
            Ok(b)
        };
        let dy_dx = if dx16 {
            dy.raw().clone()
        } else {
            dy_view(ndx, enc)?
        };
        let dy_dw = if dw16 {
            dy.raw().clone()
        } else {
            dy_view(ndw, enc)?
        };
        let dy_cl = dy.storage_format() == MemoryFormat::ChannelsLast;
        // f16 x alone read by the implicit GEMM's input fill.
        let dwx16 = !dw16 && self.weight_grad_reads_f16_x(p, dw_pin, x, ndw);
        let xv = half::input_native(self, enc, x, ndw, dw16 || dwx16)?;
        let wv = half::param(self, enc, w)?;
        let dxv = self.input_grad_output(enc, p, dx_pin, dx, dx16, ndx)?;
        let _share = (share_dy && dw_pin == Some(Algorithm::ImplicitGemm))
            .then(|| ImageShareScope::enter(&dy_dx));
        let w_key = KeyScope::enter(w, wv.buf());
        input_grad::encode(
            self,
            enc,
            p,
            &dy_dx,
            wv.buf(),
            None,
            dxv.buf(),
            dx_algorithm,
            false,
            DgradNative {
                cl: [ndx && dy_cl, dxv.cl],
                f16: dx16,
                dx_f16: dxv.f16 && !dx16,
            },
        )?;
        drop(w_key);
        half::finish(self, enc, &dxv, dx)?;
        drop(dxv);
        let dwv = self.weight_grad_output(enc, p, dw_pin, dw, dw16)?;
        // The bias gradient: from the sums of the dy the weight gradient's GEMM reads anyway
        // (its dy panels; f32 dy), else its own pass below.
        let dbv = match db {
            Some(db) => Some(half::output(self, enc, db, false)?),
            None => None,
        };
        // x as a key of the input-image cache (the forward may have filled its image).
        let x_key = KeyScope::enter(x, xv.buf());
        let db_fused = weight_grad::encode(
            self,
            enc,
            p,
            xv.buf(),
            &dy_dw,
            dwv.buf(),
            dbv.as_ref().filter(|_| !dw16).map(|v| v.buf()),
            dw_algorithm,
            WgradNative {
                cl: [xv.cl, ndw && dy_cl],
                f16: dw16,
                x_f16: xv.f16 && !dw16,
                dw_f16: dwv.f16 && !dw16,
                dw_cl: dwv.cl,
            },
        )?;
        drop(x_key);
        half::finish(self, enc, &dwv, dw)?;
        if let (Some(db), Some(dbv)) = (db, dbv) {
            if !db_fused {
                // f16 dy summed by the bias gradient's kernel itself.
                let db16 = plain_f16(dy) && bias_grad::reads_f16(self, p.y_shape());
                let dy_db = if db16 {
                    dy.raw().clone()
                } else {
                    dy_view(ndb, enc)?
                };
                let cl = ndb && dy_cl && !db16;
                bias_grad::encode(self, enc, p.y_shape(), &dy_db, dbv.buf(), cl, db16)?;
            }
            half::finish(self, enc, &dbv, db)?;
        }
        Ok(())
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
        let mut enc = self.encoder("wgconv conv_transpose2d");
        // The library's own encoder: its tensors are not marked (see `OwnRecording`).
        let _own = OwnRecording::enter();
        let y = Tensor::output(self, &mut enc, &tp.y_shape(), x.dtype(), x.format())?;
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
        // Written (read) when the caller submits: never cached (pooled) from now on.
        caller_records(&[Some(y)], &[Some(x), Some(w), bias]);
        let tp = self.transposed_problem(x, w, bias, params)?;
        self.check_out(y, "y", &tp.y_shape())?;
        half::common_dtype(&[
            ("x", Some(x)),
            ("w", Some(w)),
            ("bias", bias),
            ("y", Some(y)),
        ])?;
        if f16acc::active(self, x) {
            return f16acc::input_grad(self, encoder, &tp.conv, (x, w, bias, y), algorithm);
        }
        let yv = self.encode_conv_transpose2d_view(encoder, &tp, (x, w, bias), algorithm, y)?;
        half::finish(self, encoder, &yv, y)
    }

    /// [`Context::encode_conv_transpose2d`] (f32 arithmetic) of the checked problem `tp` up
    /// to its result in the f32 view of `y` it returns, before [`half::finish`] writes it
    /// into `y`.
    fn encode_conv_transpose2d_view(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        tp: &TransposedProblem,
        (x, w, bias): (&Tensor, &Tensor, Option<&Tensor>),
        algorithm: Algorithm,
        y: &Tensor,
    ) -> Result<half::F32View> {
        // Auto resolved once for a whole problem (see `encode_conv2d_fused_problem`).
        let pinned = band::input_grad_pin(self, &tp.conv, algorithm, (true, bias.is_some()));
        let algorithm = pinned.unwrap_or(algorithm);
        let native = any_channels_last(&[x, y])
            && band::input_grad_reads_channels_last(
                self,
                &tp.conv,
                pinned,
                all_channels_last(&[x, y]),
            );
        let xv = half::input_in(self, encoder, x, native)?;
        let wv = half::param(self, encoder, w)?;
        let bv = bias.map(|b| half::param(self, encoder, b)).transpose()?;
        let yv = half::output_in(self, encoder, y, native)?;
        let _w_key = KeyScope::enter(w, wv.buf());
        input_grad::encode(
            self,
            encoder,
            &tp.conv,
            xv.buf(),
            wv.buf(),
            bv.as_ref().map(|b| b.buf()),
            yv.buf(),
            algorithm,
            true,
            DgradNative {
                cl: [xv.cl, yv.cl],
                ..Default::default()
            },
        )?;
        Ok(yv)
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
        let bias_len = self.bias_len(bias)?;
        half::common_dtype(&[("x", Some(x)), ("w", Some(w)), ("bias", bias)])?;
        params.resolve(x.shape4("x")?, w.shape4("w")?, bias_len)
    }
}

/// The gradients through an epilogue, from [`Context::conv2d_backward_fused`].
#[derive(Debug, Clone)]
pub struct Conv2dFusedGradients {
    /// `dx`, `dw` and `db` (when asked for), the gradients of `dz = dy ⊙ act'(z)`.
    pub grads: Conv2dGradients,
    /// The gradient of the residual (`Some` exactly when the epilogue has one): `dz` for
    /// [`Residual::Before`], `dy` for [`Residual::After`].
    pub dr: Option<Tensor>,
}

impl Context {
    /// Checks an epilogue call's residual against the epilogue and the output `y` (`what`
    /// is the output's name): given exactly when the epilogue has one, of `y`'s shape, on
    /// this context, and not `y` itself.
    pub(crate) fn check_residual(
        &self,
        epilogue: &Epilogue,
        residual: Option<&Tensor>,
        y_shape: &[usize],
        y: Option<&Tensor>,
    ) -> Result<()> {
        epilogue.validate()?;
        epilogue.check_residual_given(residual.is_some())?;
        if let Some(r) = residual {
            r.check_ctx(self, "residual")?;
            if r.shape() != y_shape {
                return Err(Error::shape_mismatch(
                    "residual",
                    format!("{y_shape:?} (the output's shape)"),
                    format!("{:?}", r.shape()),
                ));
            }
            if y.is_some_and(|y| y.raw() == r.raw()) {
                return Err(Error::invalid_param(
                    "residual",
                    "the output tensor",
                    "the residual must not be the output tensor itself",
                ));
            }
        }
        Ok(())
    }

    /// 2-D convolution with an epilogue: `y = act(conv2d(x, w) + b + r)`
    /// ([`Residual::Before`]), `act(conv2d(x, w) + b) + r` ([`Residual::After`]) or
    /// `act(conv2d(x, w) + b)` ([`Residual::None`]), see [`Epilogue`].
    ///
    /// `x`, `w`, `bias` and `params` as [`Context::conv2d`]; `residual` (`[N, K, Ho, Wo]`,
    /// the output's shape) is given exactly when the epilogue has one. Every algorithm runs
    /// every epilogue, with the same f32 operations in the same order (`act(conv + b + r)`
    /// or `act(conv + b) + r`), so fused and unfused results are identical:
    ///
    /// | algorithm | epilogue |
    /// |---|---|
    /// | [`Algorithm::Direct`] | fused into the store of `conv2d_direct` |
    /// | [`Algorithm::ImplicitGemm`] | fused into the store of `conv2d_implicit` (both tiles) |
    /// | [`Algorithm::Depthwise`] | fused into `conv2d_depthwise_image` (CPU adapters, when that kernel runs the problem); else the pass |
    /// | [`Algorithm::Gemm1x1`] | fused into the store of the image GEMM (`gemm_image`, 8-lane subgroups) when it runs the GEMM whole; else the pass |
    /// | [`Algorithm::Im2colGemm`], [`Algorithm::ImplicitGemmTiled`] | one extra elementwise pass |
    ///
    /// The pass is one kernel (`epilogue`) over `y` after the algorithm's kernels, reading
    /// and writing `y` once more (and reading `r`). Problems beyond one storage binding (run in
    /// bands or windows) also take the pass, over the whole output.
    ///
    /// # Errors
    /// Those of [`Context::conv2d_with`]; [`ErrorKind::InvalidParam`](crate::ErrorKind::InvalidParam)
    /// for bad activation constants ([`Activation::validate`](crate::Activation::validate))
    /// or a residual given without / missing with a residual position;
    /// [`ErrorKind::ShapeMismatch`](crate::ErrorKind::ShapeMismatch) named `residual` for a
    /// residual of another shape than the output;
    /// [`ErrorKind::DTypeMismatch`](crate::ErrorKind::DTypeMismatch) for operands of
    /// different element types. On f16 tensors the epilogue is computed in f32 on the f32
    /// sum and the result rounded once to f16 (with `Precision::F16Accumulate`, on the f16
    /// result: the direct kernel fuses it, other paths run the pass on an f32 copy).
    #[allow(clippy::too_many_arguments)]
    pub fn conv2d_fused(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        residual: Option<&Tensor>,
        params: &Conv2dParams,
        epilogue: &Epilogue,
        algorithm: Algorithm,
    ) -> Result<Tensor> {
        half::common_dtype(&[
            ("x", Some(x)),
            ("w", Some(w)),
            ("bias", bias),
            ("residual", residual),
        ])?;
        let p = self.conv2d_problem(x, w, bias, params)?;
        self.check_residual(epilogue, residual, &p.y_shape(), None)?;
        let mut enc = self.encoder("wgconv conv2d_fused");
        // The library's own encoder: its tensors are not marked (see `OwnRecording`).
        let _own = OwnRecording::enter();
        let y = Tensor::output(self, &mut enc, &p.y_shape(), x.dtype(), x.format())?;
        self.encode_conv2d_fused_problem(
            &mut enc,
            &p,
            (x, w, bias, residual),
            epilogue,
            &y,
            algorithm,
        )?;
        self.submit(enc)?;
        Ok(y)
    }

    /// Records [`Context::conv2d_fused`] into `encoder`, writing `y` (`[N, K, Ho, Wo]`;
    /// not the residual tensor itself).
    #[allow(clippy::too_many_arguments)]
    pub fn encode_conv2d_fused(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        residual: Option<&Tensor>,
        params: &Conv2dParams,
        epilogue: &Epilogue,
        algorithm: Algorithm,
        y: &Tensor,
    ) -> Result<()> {
        // Written (read) when the caller submits: never cached (pooled) from now on.
        caller_records(&[Some(y)], &[Some(x), Some(w), bias, residual]);
        half::common_dtype(&[
            ("x", Some(x)),
            ("w", Some(w)),
            ("bias", bias),
            ("residual", residual),
            ("y", Some(y)),
        ])?;
        let p = self.conv2d_problem(x, w, bias, params)?;
        self.check_residual(epilogue, residual, &p.y_shape(), Some(y))?;
        self.check_out(y, "y", &p.y_shape())?;
        self.encode_conv2d_fused_problem(
            encoder,
            &p,
            (x, w, bias, residual),
            epilogue,
            y,
            algorithm,
        )
    }

    /// Transposed convolution with an epilogue (as [`Context::conv2d_fused`]): `x`, `w`,
    /// `bias`, `params` as [`Context::conv_transpose2d`], `residual` of the output's shape
    /// `[N, Cout, Ho, Wo]`. The epilogue runs as one extra elementwise pass (kernel
    /// `epilogue`) on every algorithm: the transposed kernels do not fuse it yet.
    ///
    /// # Errors
    /// Those of [`Context::conv_transpose2d`] and of the epilogue (as
    /// [`Context::conv2d_fused`]).
    #[allow(clippy::too_many_arguments)]
    pub fn conv_transpose2d_fused(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        residual: Option<&Tensor>,
        params: &ConvTranspose2dParams,
        epilogue: &Epilogue,
        algorithm: Algorithm,
    ) -> Result<Tensor> {
        half::common_dtype(&[
            ("x", Some(x)),
            ("w", Some(w)),
            ("bias", bias),
            ("residual", residual),
        ])?;
        let tp = self.transposed_problem(x, w, bias, params)?;
        self.check_residual(epilogue, residual, &tp.y_shape(), None)?;
        let mut enc = self.encoder("wgconv conv_transpose2d_fused");
        // The library's own encoder: its tensors are not marked (see `OwnRecording`).
        let _own = OwnRecording::enter();
        let y = Tensor::output(self, &mut enc, &tp.y_shape(), x.dtype(), x.format())?;
        self.encode_conv_transpose2d_fused(
            &mut enc, x, w, bias, residual, params, epilogue, algorithm, &y,
        )?;
        self.submit(enc)?;
        Ok(y)
    }

    /// Records [`Context::conv_transpose2d_fused`] into `encoder`, writing `y`.
    #[allow(clippy::too_many_arguments)]
    pub fn encode_conv_transpose2d_fused(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        x: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        residual: Option<&Tensor>,
        params: &ConvTranspose2dParams,
        epilogue: &Epilogue,
        algorithm: Algorithm,
        y: &Tensor,
    ) -> Result<()> {
        // Written (read) when the caller submits: never cached (pooled) from now on.
        caller_records(&[Some(y)], &[Some(x), Some(w), bias, residual]);
        half::common_dtype(&[
            ("x", Some(x)),
            ("w", Some(w)),
            ("bias", bias),
            ("residual", residual),
            ("y", Some(y)),
        ])?;
        let tp = self.transposed_problem(x, w, bias, params)?;
        self.check_residual(epilogue, residual, &tp.y_shape(), Some(y))?;
        self.check_out(y, "y", &tp.y_shape())?;
        // The epilogue pass is elementwise over y's storage: r in y's order.
        same_format("residual", residual, y.format())?;
        if y.dtype() == DType::F32 {
            self.encode_conv_transpose2d(encoder, x, w, bias, params, algorithm, y)?;
            return epilogue::encode_forward(
                self,
                encoder,
                epilogue,
                y.raw(),
                residual.map(Tensor::raw),
                numel(y.shape()),
            );
        }
        let yv = if f16acc::active(self, x) {
            // f16 arithmetic: the pass on an f32 copy of the f16 result, rounded again.
            self.encode_conv_transpose2d(encoder, x, w, bias, params, algorithm, y)?;
            half::input(self, encoder, y)?
        } else {
            // f16 with f32 arithmetic: the pass on the f32 result, rounded once.
            self.encode_conv_transpose2d_view(encoder, &tp, (x, w, bias), algorithm, y)?
        };
        let rv = residual
            .map(|r| half::input_in(self, encoder, r, yv.cl))
            .transpose()?;
        epilogue::encode_forward(
            self,
            encoder,
            epilogue,
            yv.buf(),
            rv.as_ref().map(|r| r.buf()),
            numel(y.shape()),
        )?;
        half::finish(self, encoder, &yv, y)
    }

    /// Records the gradient through an epilogue's activation, `dz = dy ⊙ act'(z)` (one
    /// elementwise pass, kernel `epilogue_grad`), and the residual's gradient `dr` (`dz` for
    /// [`Residual::Before`], `dy` for [`Residual::After`]: buffer copies). `saved` is the
    /// pre-activation `z` (`conv + b + r` for `Before`, else `conv + b`), or, for an
    /// activation whose derivative is a function of its output
    /// ([`Activation::grad_from_output`](crate::Activation::grad_from_output): relu, clamp,
    /// identity) and no [`Residual::After`], the output `y`. `dz`, `saved` and `dr` have
    /// `dy`'s shape; `dr` is given exactly when the epilogue has a residual.
    ///
    /// # Errors
    /// [`ErrorKind::ShapeMismatch`](crate::ErrorKind::ShapeMismatch) for a tensor of another
    /// shape than `dy`; [`ErrorKind::InvalidParam`](crate::ErrorKind::InvalidParam) for bad
    /// activation constants, a `dr` given without residual or missing with one, or `dz` /
    /// `dr` aliasing an input.
    pub fn encode_epilogue_backward(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        dy: &Tensor,
        saved: &Tensor,
        epilogue: &Epilogue,
        dz: &Tensor,
        dr: Option<&Tensor>,
    ) -> Result<()> {
        // Written (read) when the caller submits: never cached (pooled) from now on.
        caller_records(&[Some(dz), dr], &[Some(dy), Some(saved)]);
        epilogue.validate()?;
        epilogue.check_residual_given(dr.is_some())?;
        half::common_dtype(&[
            ("dy", Some(dy)),
            ("z", Some(saved)),
            ("dz", Some(dz)),
            ("dr", dr),
        ])?;
        dy.check_ctx(self, "dy")?;
        self.check_out(saved, "z", dy.shape())?;
        self.check_out(dz, "dz", dy.shape())?;
        if let Some(dr) = dr {
            self.check_out(dr, "dr", dy.shape())?;
        }
        // One elementwise pass over the storage: every operand in dy's order.
        same_format("z", Some(saved), dy.format())?;
        same_format("dz", Some(dz), dy.format())?;
        same_format("dr", dr, dy.format())?;
        let aliased = std::iter::once(dz)
            .chain(dr)
            .any(|o| o.raw() == dy.raw() || o.raw() == saved.raw())
            || dr.is_some_and(|d| d.raw() == dz.raw());
        if aliased {
            return Err(Error::invalid_param(
                "dz",
                "an input tensor",
                "the outputs dz and dr must be distinct tensors, neither dy nor z",
            ));
        }
        self.encode_epilogue_grad(encoder, dy, saved, epilogue, dz, dr)
    }

    /// The pass of [`Context::encode_epilogue_backward`] on checked operands: the f32
    /// tensors' own buffers, or f32 views of f16 ones (`dz` may be f32 for f16 `dy`: the
    /// f32 `dz` that [`Context::conv2d_backward_fused`] keeps for the gradients).
    fn encode_epilogue_grad(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        dy: &Tensor,
        saved: &Tensor,
        epilogue: &Epilogue,
        dz: &Tensor,
        dr: Option<&Tensor>,
    ) -> Result<()> {
        let n = numel(dy.shape());
        let f32_only = [Some(dy), Some(saved), Some(dz), dr]
            .into_iter()
            .flatten()
            .all(|t| t.dtype() == DType::F32);
        if f32_only {
            epilogue::encode_grad(
                self,
                encoder,
                epilogue,
                dy.raw(),
                saved.raw(),
                dz.raw(),
                numel(dy.shape()),
            )?;
            let bytes = (numel(dy.shape()) * 4) as u64;
            match (epilogue.residual, dr) {
                (Residual::Before, Some(dr)) => {
                    encoder.copy_buffer_to_buffer(dz.raw(), 0, dr.raw(), 0, bytes)
                }
                (Residual::After, Some(dr)) => {
                    encoder.copy_buffer_to_buffer(dy.raw(), 0, dr.raw(), 0, bytes)
                }
                _ => {}
            }
            return Ok(());
        }
        // One elementwise pass over contiguous f32 views, each output written back.
        let dyv = half::input(self, encoder, dy)?;
        let zv = half::input(self, encoder, saved)?;
        let dzv = half::output(self, encoder, dz, false)?;
        epilogue::encode_grad(self, encoder, epilogue, dyv.buf(), zv.buf(), dzv.buf(), n)?;
        let src = match epilogue.residual {
            Residual::Before => Some(dzv.buf().clone()),
            Residual::After => Some(dyv.buf().clone()),
            Residual::None => None,
        };
        half::finish(self, encoder, &dzv, dz)?;
        if let (Some(dr), Some(src)) = (dr, src) {
            let drv = half::output(self, encoder, dr, false)?;
            encoder.copy_buffer_to_buffer(&src, 0, drv.buf(), 0, (n * 4) as u64);
            half::finish(self, encoder, &drv, dr)?;
        }
        Ok(())
    }

    /// All gradients of `y = epilogue(conv2d(x, w, b), r)` for an upstream gradient `dy`, in
    /// one submission: `dz = dy ⊙ act'(z)` by one elementwise pass
    /// ([`Context::encode_epilogue_backward`], `saved` as documented there), then `dx`, `dw`
    /// and `db` (when `with_bias`) of `dz` exactly as [`Context::conv2d_backward`]
    /// (deterministic), and `dr` when the epilogue has a residual.
    ///
    /// # Errors
    /// Those of [`Context::conv2d_backward`] and [`Context::encode_epilogue_backward`].
    #[allow(clippy::too_many_arguments)]
    pub fn conv2d_backward_fused(
        &self,
        x: &Tensor,
        w: &Tensor,
        dy: &Tensor,
        saved: &Tensor,
        epilogue: &Epilogue,
        with_bias: bool,
        params: &Conv2dParams,
        algorithm: Algorithm,
    ) -> Result<Conv2dFusedGradients> {
        x.check_ctx(self, "x")?;
        w.check_ctx(self, "w")?;
        let dt = half::common_dtype(&[
            ("x", Some(x)),
            ("w", Some(w)),
            ("dy", Some(dy)),
            ("z", Some(saved)),
        ])?;
        let p = Conv2dProblem::new(x.shape4("x")?, w.shape4("w")?, None, params)?;
        self.check_dy(&p, dy)?;
        epilogue.validate()?;
        let f = dy.format();
        // dz stays f32 for f16 tensors too (the gradients read the f32 values of dy ⊙ act'(z),
        // rounded once at their own outputs); dr, dx, dw, db have the operands' type.
        let mut enc = self.encoder("wgconv conv2d_backward_fused");
        // The library's own encoder: its tensors are not marked (see `OwnRecording`).
        let _own = OwnRecording::enter();
        let dz = Tensor::output(self, &mut enc, &p.y_shape(), DType::F32, f)?;
        let dr = match epilogue.residual {
            Residual::None => None,
            _ => Some(Tensor::output(self, &mut enc, &p.y_shape(), dt, f)?),
        };
        let (dx, dw, db) = self.gradient_outputs(&mut enc, &p, dt, (x, w), with_bias)?;
        // The checks of `encode_epilogue_backward` (dz, dr are the library's own).
        self.check_out(saved, "z", dy.shape())?;
        same_format("z", Some(saved), f)?;
        epilogue.check_residual_given(dr.is_some())?;
        self.encode_epilogue_grad(&mut enc, dy, saved, epilogue, &dz, dr.as_ref())?;
        self.encode_backward_all(
            &mut enc,
            &p,
            (x, w, &dz),
            (&dx, &dw, db.as_ref()),
            algorithm,
        )?;
        self.submit(enc)?;
        Ok(Conv2dFusedGradients {
            grads: Conv2dGradients { dx, dw, db },
            dr,
        })
    }
}

/// Are all of `tensors` stored channels-last?
fn all_channels_last(tensors: &[&Tensor]) -> bool {
    tensors
        .iter()
        .all(|t| t.storage_format() == MemoryFormat::ChannelsLast)
}

/// An f16 tensor in contiguous order (what the f16 kernels read in place).
fn plain_f16(t: &Tensor) -> bool {
    t.dtype() == DType::F16 && t.storage_format() == MemoryFormat::Contiguous
}

/// Is any of `tensors` stored channels-last?
fn any_channels_last(tensors: &[&Tensor]) -> bool {
    tensors
        .iter()
        .any(|t| t.storage_format() == MemoryFormat::ChannelsLast)
}

/// Elementwise passes read their operands in one memory order: `t` (when given) must have
/// format `f`, else [`ErrorKind::InvalidParam`](crate::ErrorKind::InvalidParam) naming it.
fn same_format(what: &'static str, t: Option<&Tensor>, f: MemoryFormat) -> Result<()> {
    match t {
        Some(t) if t.format() != f => Err(Error::invalid_param(
            what,
            t.format(),
            format!("must have the memory format of the tensor it is combined with ({f})"),
        )),
        _ => Ok(()),
    }
}
