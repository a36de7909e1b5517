//! [`Precision::F16Accumulate`]: operations on f16 tensors with f16 arithmetic.
//!
//! The f16 twins of the direct algorithm's kernels (`conv2d_direct_f16`, `conv2d_dgrad_f16`,
//! `conv2d_wgrad_f16`, `pad_fold_f16`: the same definitions with `T = f16`, see
//! `gpu::wgsl::Elem`), and for the forward the im2col GEMM's (`im2col_f16` and the GEMM
//! twins; `Auto` picks it on GPUs) read and write the caller's f16 tensors as `array<f16>` and
//! multiply-add in f16; bias, the epilogue and the final store are computed in f32 on the
//! f16 sum. Contiguous operands are bound as they are (no copies, no conversion passes);
//! channels-last ones go through contiguous f16 copies (`half::f16_contiguous`, exact).
//! Only what the caller asked for runs: a forced algorithm other than
//! [`Algorithm::Direct`] is refused, and so are operands beyond one storage binding (typed
//! errors, never an f32 run in their place). The GEMM's twin is in `gemm::job`
//! (`encode_job_f16`).

use crate::context::{Context, Precision};
use crate::conv::forward::direct::encode_whole_f16;
use crate::conv::forward::im2col_gemm;
use crate::conv::input_grad::direct::dgrad_direct_f16;
use crate::conv::input_grad::{fold_padded, needs_fold, DgradArgs};
use crate::conv::launch::{ConvBuffers, FusedEpilogue};
use crate::conv::weight_grad::direct::wgrad_direct_f16;
use crate::conv::Algorithm;
use crate::epilogue::Epilogue;
use crate::error::{Error, ErrorKind, Result};
use crate::gpu::fits;
use crate::gpu::half::{f16_contiguous, finish_f16};
use crate::params::Conv2dProblem;
use crate::tensor::{DType, Tensor};

/// Does an operation on `t`'s element type run with f16 arithmetic on `ctx`?
pub(crate) fn active(ctx: &Context, t: &Tensor) -> bool {
    t.dtype() == DType::F16 && ctx.precision() == Precision::F16Accumulate
}

/// The refusal of a forced algorithm without f16 kernels for this operation.
fn unsupported(algorithm: Algorithm, what: &str) -> Error {
    Error::new(ErrorKind::UnsupportedAlgorithm {
        algorithm: algorithm.name(),
        reason: format!(
            "Precision::F16Accumulate runs {what} (force one of those or Auto, or set \
             Precision::F32Accumulate)"
        ),
    })
}

/// What f16 arithmetic runs on: the direct algorithm (or `Auto`, which picks it), on
/// operands within one storage binding each.
fn check(ctx: &Context, algorithm: Algorithm, operands: &[(&'static str, &Tensor)]) -> Result<()> {
    if !matches!(algorithm, Algorithm::Auto | Algorithm::Direct) {
        return Err(unsupported(
            algorithm,
            "the direct algorithm's f16 kernels only",
        ));
    }
    check_sizes(ctx, operands)
}

/// Every operand within one storage binding.
fn check_sizes(ctx: &Context, operands: &[(&'static str, &Tensor)]) -> Result<()> {
    for &(_, t) in operands {
        if !fits(ctx, t.raw()) {
            return Err(Error::exceeds_limit(
                "maxStorageBufferBindingSize (Precision::F16Accumulate runs tensors within \
                 one binding)",
                t.storage_bytes(),
                ctx.limits().max_storage_buffer_binding_size,
            ));
        }
    }
    Ok(())
}

/// The forward convolution `p` with f16 arithmetic, its epilogue (and residual) applied in
/// the kernel's store.
pub(crate) fn forward(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    (x, w, bias, residual): (&Tensor, &Tensor, Option<&Tensor>, Option<&Tensor>),
    epilogue: &Epilogue,
    y: &Tensor,
    algorithm: Algorithm,
) -> Result<()> {
    let mut ops = vec![("x", x), ("w", w), ("y", y)];
    ops.extend(bias.map(|b| ("bias", b)));
    ops.extend(residual.map(|r| ("residual", r)));
    check_sizes(ctx, &ops)?;
    let im2col = match algorithm {
        Algorithm::Direct => false,
        Algorithm::Im2colGemm if epilogue.is_identity() => {
            if let Err(reason) = im2col_gemm::check(ctx, p) {
                return Err(Error::new(ErrorKind::UnsupportedAlgorithm {
                    algorithm: algorithm.name(),
                    reason: reason.to_string(),
                }));
            }
            true
        }
        // GPUs: the im2col GEMM (its tiled f16 GEMM) where the direct kernel is not the
        // better choice (the f32 heuristic's rule); CPU adapters: the direct kernel.
        Algorithm::Auto => {
            !ctx.cpu_kernels()
                && epilogue.is_identity()
                && p.c_per_group() > 1
                && p.k_per_group() >= 4
                && p.reduction_len() >= 16
                && im2col_gemm::check(ctx, p).is_ok()
        }
        a => {
            return Err(unsupported(
                a,
                "the direct algorithm's f16 kernels, and for the forward without epilogue the \
                 im2col GEMM's",
            ))
        }
    };
    let xv = f16_contiguous(ctx, enc, x, true)?;
    let wv = f16_contiguous(ctx, enc, w, true)?;
    let bv = bias
        .map(|b| f16_contiguous(ctx, enc, b, true))
        .transpose()?;
    let rv = residual
        .map(|r| f16_contiguous(ctx, enc, r, true))
        .transpose()?;
    let yv = f16_contiguous(ctx, enc, y, false)?;
    let fused = (!epilogue.is_identity()).then(|| FusedEpilogue {
        ep: *epilogue,
        r: rv.as_ref().map(|r| r.buf().clone()),
        applied: Default::default(),
    });
    let bufs = ConvBuffers {
        epilogue: fused,
        x_f16: true,
        y_f16: true,
        ..ConvBuffers::new(xv.buf(), wv.buf(), bv.as_ref().map(|b| b.buf()), yv.buf())
    };
    if im2col {
        im2col_gemm::encode_im2col_f16(ctx, enc, p, &bufs)?;
    } else {
        encode_whole_f16(ctx, enc, p, &bufs)?;
    }
    finish_f16(ctx, enc, &yv, y)
}

/// The input gradient of `p` (with `bias`: the transposed convolution) with f16
/// arithmetic: the gather kernel's twin, and with reflect / replicate / circular padding
/// the gradient of the padded input in f16 scratch folded back by `pad_fold_f16`.
pub(crate) fn input_grad(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    (dy, w, bias, dx): (&Tensor, &Tensor, Option<&Tensor>, &Tensor),
    algorithm: Algorithm,
) -> Result<()> {
    let mut ops = vec![("dy", dy), ("w", w), ("dx", dx)];
    ops.extend(bias.map(|b| ("bias", b)));
    check(ctx, algorithm, &ops)?;
    let dyv = f16_contiguous(ctx, enc, dy, true)?;
    let wv = f16_contiguous(ctx, enc, w, true)?;
    let bv = bias
        .map(|b| f16_contiguous(ctx, enc, b, true))
        .transpose()?;
    let dxv = f16_contiguous(ctx, enc, dx, false)?;
    let args = |dy_off: usize, bias: Option<&wgpu::Buffer>, dx: &wgpu::Buffer| DgradArgs {
        dy: dyv.buf().clone(),
        dy_off,
        w: wv.buf().clone(),
        bias: bias.cloned(),
        dx: dx.clone(),
        cl: [false; 2],
        f16: true,
        dx_f16: false,
    };
    if !needs_fold(p) {
        let b = bv.as_ref().map(|b| b.buf());
        dgrad_direct_f16(ctx, enc, p, &args(0, b, dxv.buf()))?;
        return finish_f16(ctx, enc, &dxv, dx);
    }
    // The padded input's gradient in f16 scratch, folded by `pad_fold_f16` (bias only comes
    // with the transposed convolution, which pads with zeros: never here).
    fold_padded(ctx, enc, p, dxv.buf(), true, |enc, sub, dy_off, scratch| {
        dgrad_direct_f16(ctx, enc, sub, &args(dy_off, None, scratch))
    })?;
    finish_f16(ctx, enc, &dxv, dx)
}

/// The weight gradient of `p` with f16 arithmetic (f16 `dw`).
pub(crate) fn weight_grad(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    (x, dy, dw): (&Tensor, &Tensor, &Tensor),
    algorithm: Algorithm,
) -> Result<()> {
    check(ctx, algorithm, &[("x", x), ("dy", dy), ("dw", dw)])?;
    let xv = f16_contiguous(ctx, enc, x, true)?;
    let dyv = f16_contiguous(ctx, enc, dy, true)?;
    let dwv = f16_contiguous(ctx, enc, dw, false)?;
    wgrad_direct_f16(ctx, enc, p, (xv.buf(), dyv.buf(), dwv.buf()))?;
    finish_f16(ctx, enc, &dwv, dw)
}
