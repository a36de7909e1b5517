//! CPU reference of the epilogues (`crate::Epilogue`): forward with the activation applied
//! in `f64` to the unrounded `conv + b (+ r)`, and the backward pass through the epilogue.

use super::check_len;
use super::grad::{conv2d_grad, conv_transpose2d_f64, Conv2dGrads};
use crate::epilogue::{Epilogue, Residual};
use crate::error::{Error, Result};
use crate::gemm::GemmParams;
use crate::params::{numel, Conv2dParams, Conv2dProblem, ConvTranspose2dParams, Shape4};

/// Validates the epilogue and the residual slice (given exactly when the epilogue adds one,
/// of `len` elements).
fn check_residual(epilogue: &Epilogue, residual: Option<&[f32]>, len: usize) -> Result<()> {
    epilogue.validate()?;
    epilogue.check_residual_given(residual.is_some())?;
    if let Some(r) = residual {
        if r.len() != len {
            return Err(Error::shape_mismatch(
                "residual",
                format!("{len} elements (the output's)"),
                format!("{} elements", r.len()),
            ));
        }
    }
    Ok(())
}

/// `v` rounded once to f32.
fn round32(v: Vec<f64>) -> Vec<f32> {
    v.into_iter().map(|v| v as f32).collect()
}

/// `epilogue` applied to unrounded `v` with `residual`, unrounded.
fn finish_f64(v: Vec<f64>, residual: Option<&[f32]>, epilogue: &Epilogue) -> Vec<f64> {
    v.into_iter()
        .enumerate()
        .map(|(i, v)| {
            let r = residual.map_or(0.0, |r| r[i] as f64);
            epilogue.apply(v, r)
        })
        .collect()
}

/// [`conv2d`](super::conv2d) followed by `epilogue`: `y = act(conv + b + r)`
/// ([`Residual::Before`]), `act(conv + b) + r` ([`Residual::After`]) or `act(conv + b)`.
/// `residual` (the output's shape `[N, K, Ho, Wo]`) is given exactly when the epilogue adds
/// one. Everything in `f64`, rounded once.
///
/// # Errors
/// Those of [`conv2d`](super::conv2d); [`ErrorKind::InvalidParam`](crate::ErrorKind::InvalidParam)
/// for bad activation constants or a residual given / missing against the epilogue;
/// [`ErrorKind::ShapeMismatch`](crate::ErrorKind::ShapeMismatch) named `residual` for a
/// residual of another length than the output.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_fused(
    x: &[f32],
    x_shape: Shape4,
    w: &[f32],
    w_shape: Shape4,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    params: &Conv2dParams,
    epilogue: &Epilogue,
) -> Result<(Vec<f32>, Shape4)> {
    let (y, shape) = conv2d_fused_f64(x, x_shape, w, w_shape, bias, residual, params, epilogue)?;
    Ok((round32(y), shape))
}

/// [`conv2d_fused`], unrounded.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv2d_fused_f64(
    x: &[f32],
    x_shape: Shape4,
    w: &[f32],
    w_shape: Shape4,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    params: &Conv2dParams,
    epilogue: &Epilogue,
) -> Result<(Vec<f64>, Shape4)> {
    let p = Conv2dProblem::new(x_shape, w_shape, bias.map(|b| b.len()), params)?;
    check_len("x", x, &x_shape)?;
    check_len("w", w, &w_shape)?;
    check_residual(epilogue, residual, numel(&p.y_shape()))?;
    super::ensure_alloc(numel(&p.y_shape()), "conv2d")?;
    let v = super::conv2d_f64(&p, x, w, bias);
    Ok((finish_f64(v, residual, epilogue), p.y_shape()))
}

/// [`conv_transpose2d`](super::conv_transpose2d) followed by `epilogue` (as
/// [`conv2d_fused`]).
///
/// # Errors
/// Those of [`conv_transpose2d`](super::conv_transpose2d) and of the epilogue (as
/// [`conv2d_fused`]).
#[allow(clippy::too_many_arguments)]
pub fn conv_transpose2d_fused(
    x: &[f32],
    x_shape: Shape4,
    w: &[f32],
    w_shape: Shape4,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    params: &ConvTranspose2dParams,
    epilogue: &Epilogue,
) -> Result<(Vec<f32>, Shape4)> {
    let (y, shape) =
        conv_transpose2d_fused_f64(x, x_shape, w, w_shape, bias, residual, params, epilogue)?;
    Ok((round32(y), shape))
}

/// [`conv_transpose2d_fused`], unrounded.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_transpose2d_fused_f64(
    x: &[f32],
    x_shape: Shape4,
    w: &[f32],
    w_shape: Shape4,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    params: &ConvTranspose2dParams,
    epilogue: &Epilogue,
) -> Result<(Vec<f64>, Shape4)> {
    let tp = params.resolve(x_shape, w_shape, bias.map(<[f32]>::len))?;
    check_len("x", x, &x_shape)?;
    check_len("w", w, &w_shape)?;
    check_residual(epilogue, residual, numel(&tp.y_shape()))?;
    super::ensure_alloc(numel(&tp.y_shape()), "conv_transpose2d")?;
    let v = conv_transpose2d_f64(&tp, x, w, bias);
    Ok((finish_f64(v, residual, epilogue), tp.y_shape()))
}

/// [`gemm`](super::gemm) plus a bias of length `N` added to every row, then `epilogue`:
/// `c = act(a·b + bias + r)` ([`Residual::Before`]), `act(a·b + bias) + r`
/// ([`Residual::After`]); `residual` has the result's shape.
///
/// # Errors
/// Those of [`gemm`](super::gemm); a bias of another length than `N`; those of the epilogue
/// (as [`conv2d_fused`]).
#[allow(clippy::too_many_arguments)]
pub fn gemm_fused(
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    params: &GemmParams,
    epilogue: &Epilogue,
) -> Result<(Vec<f32>, Vec<usize>)> {
    let (c, shape) = gemm_fused_f64(a, a_shape, b, b_shape, bias, residual, params, epilogue)?;
    Ok((round32(c), shape))
}

/// [`gemm_fused`], unrounded.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_fused_f64(
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    params: &GemmParams,
    epilogue: &Epilogue,
) -> Result<(Vec<f64>, Vec<usize>)> {
    let (mut c, shape) = super::gemm::gemm_f64(a, a_shape, b, b_shape, params)?;
    let n = shape.last().copied().unwrap_or(1);
    if let Some(bias) = bias {
        if bias.len() != n {
            return Err(Error::shape_mismatch(
                "bias",
                format!("[{n}]"),
                format!("{} elements", bias.len()),
            ));
        }
        for (i, v) in c.iter_mut().enumerate() {
            *v += bias[i % n] as f64;
        }
    }
    check_residual(epilogue, residual, c.len())?;
    Ok((finish_f64(c, residual, epilogue), shape))
}

/// The gradient through the epilogue: from `dy` (gradient of the epilogue's output) and the
/// saved pre-activation `z` (`conv + b + r` for [`Residual::Before`], else `conv + b`),
/// `dz = dy ⊙ act'(z)` (the gradient reaching `conv + b`) and the residual's gradient `dr`
/// (`dz` for `Before`, `dy` for `After`, `None` without residual). For relu, clamp and
/// identity without [`Residual::After`], `z` may be the output `y` instead
/// ([`Activation::grad_from_output`](crate::Activation::grad_from_output)).
///
/// # Errors
/// [`ErrorKind::ShapeMismatch`](crate::ErrorKind::ShapeMismatch) named `z` when `z` and `dy`
/// differ in length; bad activation constants.
pub fn epilogue_backward(
    dy: &[f32],
    z: &[f32],
    epilogue: &Epilogue,
) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
    epilogue.validate()?;
    if z.len() != dy.len() {
        return Err(Error::shape_mismatch(
            "z",
            format!("{} elements (dy's)", dy.len()),
            format!("{} elements", z.len()),
        ));
    }
    let act = epilogue.activation;
    let dz: Vec<f32> = dy
        .iter()
        .zip(z)
        .map(|(&d, &z)| (d as f64 * act.derivative(z as f64)) as f32)
        .collect();
    let dr = match epilogue.residual {
        Residual::None => None,
        Residual::Before => Some(dz.clone()),
        Residual::After => Some(dy.to_vec()),
    };
    Ok((dz, dr))
}

/// Gradients of `L = Σ epilogue(conv2d(x, w, b) [, r]) · dy` returned by
/// [`conv2d_grad_fused`].
#[derive(Clone, Debug, PartialEq)]
pub struct Conv2dFusedGrads {
    /// `dx`, `dw`, `db` (of `dz`, the gradient reaching `conv + b`).
    pub grads: Conv2dGrads,
    /// The residual's gradient (`Some` exactly when the epilogue has a residual).
    pub dr: Option<Vec<f32>>,
}

/// Gradients through the epilogue: [`epilogue_backward`] (`dz = dy ⊙ act'(z)`), then
/// [`conv2d_grad`] of `dz`. `z` is the saved pre-activation, the output's shape.
///
/// # Errors
/// Those of [`conv2d_grad`] and [`epilogue_backward`].
#[allow(clippy::too_many_arguments)]
pub fn conv2d_grad_fused(
    x: &[f32],
    x_shape: Shape4,
    w: &[f32],
    w_shape: Shape4,
    dy: &[f32],
    dy_shape: Shape4,
    z: &[f32],
    with_bias: bool,
    params: &Conv2dParams,
    epilogue: &Epilogue,
) -> Result<Conv2dFusedGrads> {
    check_len("dy", dy, &dy_shape)?;
    let (dz, dr) = epilogue_backward(dy, z, epilogue)?;
    let grads = conv2d_grad(x, x_shape, w, w_shape, &dz, dy_shape, with_bias, params)?;
    Ok(Conv2dFusedGrads { grads, dr })
}
