//! The f16 reference: the same loops as the f32 reference on f16 inputs, taken exactly (every
//! f16 value is an f64), with f64 sums rounded **once** to f16 (to nearest even; beyond the
//! f16 range to ±infinity): the correctly rounded f16 result, which every f16 computation
//! approximates.
//!
//! # Tolerance of an f16 result computed with f32 accumulation
//! A GPU result is `fl16(s̃)` where `s̃` is the f32 sum of the same `L` products (exact in
//! f32: two f16 significands multiply into 22 bits), and the reference is `fl16(s)`, `s` the
//! exact sum. With `u = 2⁻²⁴` the f32 unit roundoff, `|s̃ − s| ≤ γ_L · Σ|terms|`,
//! `γ_L = L·u / (1 − L·u)`, and rounding both to f16 adds at most one f16 ulp of the result,
//! `ulp16(v) ≤ 2⁻¹⁰·|v|` (normal) or `2⁻²⁴` (subnormal). So
//!
//! `|got − want| ≤ 2⁻¹⁰·|want| + 2⁻²⁴ + γ_L · Σ|terms|`
//!
//! ([`f16_tolerance`]), `Σ|terms|` being the same linear map applied to `|inputs|` (the
//! fixtures' `abs_scale`). Results with every value and partial sum an integer within ±2048
//! are exact in both, hence bit-identical.

use ::half::f16;

use super::epilogue::{
    conv2d_fused_f64, conv_transpose2d_fused_f64, epilogue_backward, gemm_fused_f64,
};
use super::gemm::gemm_f64;
use super::grad::{
    backward_bias_f64, backward_input_f64, backward_weight_f64, conv_transpose2d_f64,
};
use super::{check_len, conv2d_f64, ensure_alloc};
use crate::epilogue::Epilogue;
use crate::error::{Error, Result};
use crate::gemm::GemmParams;
use crate::params::{numel, Conv2dParams, Conv2dProblem, ConvTranspose2dParams, Shape4};

fn widen(v: &[f16]) -> Vec<f32> {
    v.iter().map(|&h| f32::from(h)).collect()
}

fn round16(v: Vec<f64>) -> Vec<f16> {
    v.into_iter().map(f16::from_f64).collect()
}

/// [`f16_tolerance`]'s bound for one element: `want` the reference, `abs_scale` the sum of
/// the absolute values of its terms, `len` the number of terms summed (reduction length).
pub fn f16_tolerance(want: f64, abs_scale: f64, len: usize) -> f64 {
    let lu = len as f64 * 2f64.powi(-24);
    let gamma = if lu < 1.0 {
        lu / (1.0 - lu)
    } else {
        f64::INFINITY
    };
    2f64.powi(-10) * want.abs() + 2f64.powi(-24) + gamma * abs_scale
}

/// The bound of [`Precision::F16Accumulate`](crate::Precision::F16Accumulate) for one
/// element (f16 multiply-adds): `want` the f64 reference, `abs_scale` the sum of the
/// absolute values of its terms, `len` the number of multiply-adds and additions on the way
/// to it (the reduction length; with reflect / replicate / circular padding, the input
/// gradient adds up to 9 folded partial sums). Each f16 operation rounds with unit roundoff
/// `u = 2^-11`, so the sum is within `γ(len) · abs_scale` (`γ(n) = n·u / (1 - n·u)`,
/// Higham's bound for recursive summation), plus `2^-24` per operation for results that
/// fall into f16's subnormal range, plus the final rounding of the result (`2^-10 |want|`).
/// Infinite from `len = 2048` on (`n·u >= 1`): an f16 sum that long has no useful bound,
/// which is why f32 accumulation is the default.
pub fn f16_accumulate_tolerance(want: f64, abs_scale: f64, len: usize) -> f64 {
    let lu = len as f64 * 2f64.powi(-11);
    if lu >= 1.0 {
        return f64::INFINITY;
    }
    2f64.powi(-10) * want.abs() + len as f64 * 2f64.powi(-24) + lu / (1.0 - lu) * abs_scale
}

/// [`conv2d`](super::conv2d) on f16 slices: f64 sums of the exact inputs, rounded once to
/// f16.
///
/// # Errors
/// Those of [`conv2d`](super::conv2d).
pub fn conv2d_f16(
    x: &[f16],
    x_shape: Shape4,
    w: &[f16],
    w_shape: Shape4,
    bias: Option<&[f16]>,
    params: &Conv2dParams,
) -> Result<(Vec<f16>, Shape4)> {
    let p = Conv2dProblem::new(x_shape, w_shape, bias.map(<[f16]>::len), params)?;
    let (x, w, b) = (widen(x), widen(w), bias.map(widen));
    check_len("x", &x, &x_shape)?;
    check_len("w", &w, &w_shape)?;
    ensure_alloc(numel(&p.y_shape()), "conv2d")?;
    Ok((round16(conv2d_f64(&p, &x, &w, b.as_deref())), p.y_shape()))
}

/// [`conv_transpose2d`](super::conv_transpose2d) on f16 slices, rounded once to f16.
///
/// # Errors
/// Those of [`conv_transpose2d`](super::conv_transpose2d).
pub fn conv_transpose2d_f16(
    x: &[f16],
    x_shape: Shape4,
    w: &[f16],
    w_shape: Shape4,
    bias: Option<&[f16]>,
    params: &ConvTranspose2dParams,
) -> Result<(Vec<f16>, Shape4)> {
    let tp = params.resolve(x_shape, w_shape, bias.map(<[f16]>::len))?;
    let (x, w, b) = (widen(x), widen(w), bias.map(widen));
    check_len("x", &x, &x_shape)?;
    check_len("w", &w, &w_shape)?;
    ensure_alloc(numel(&tp.y_shape()), "conv_transpose2d")?;
    Ok((
        round16(conv_transpose2d_f64(&tp, &x, &w, b.as_deref())),
        tp.y_shape(),
    ))
}

/// Gradients on f16 slices ([`conv2d_grad_f16`]), each rounded once to f16.
#[derive(Clone, Debug, PartialEq)]
pub struct Conv2dGradsF16 {
    /// `∂L/∂x`, shape `[N, C, H, W]`.
    pub dx: Vec<f16>,
    /// `∂L/∂w`, shape `[K, C/groups, R, S]`.
    pub dw: Vec<f16>,
    /// `∂L/∂b`, shape `[K]`, when asked for.
    pub db: Option<Vec<f16>>,
}

/// [`conv2d_grad`](super::conv2d_grad) on f16 slices, each gradient rounded once to f16.
/// (The f32 `dw` of f16 inputs, [`Context::conv2d_backward_weight_as`]'s master weights, is
/// [`conv2d_backward_weight`](super::conv2d_backward_weight) of the widened inputs.)
///
/// [`Context::conv2d_backward_weight_as`]: crate::Context::conv2d_backward_weight_as
///
/// # Errors
/// Those of [`conv2d_grad`](super::conv2d_grad).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_grad_f16(
    x: &[f16],
    x_shape: Shape4,
    w: &[f16],
    w_shape: Shape4,
    dy: &[f16],
    dy_shape: Shape4,
    with_bias: bool,
    params: &Conv2dParams,
) -> Result<Conv2dGradsF16> {
    // The identity epilogue: dz = dy, exactly (any z of dy's length).
    let (grads, _) = conv2d_grad_fused_f16(
        x,
        x_shape,
        w,
        w_shape,
        dy,
        dy_shape,
        dy,
        with_bias,
        params,
        &Epilogue::default(),
    )?;
    Ok(grads)
}

/// [`gemm`](super::gemm) on f16 slices, rounded once to f16.
///
/// # Errors
/// Those of [`gemm`](super::gemm).
pub fn gemm_f16(
    a: &[f16],
    a_shape: &[usize],
    b: &[f16],
    b_shape: &[usize],
    params: &GemmParams,
) -> Result<(Vec<f16>, Vec<usize>)> {
    let (c, shape) = gemm_f64(&widen(a), a_shape, &widen(b), b_shape, params)?;
    Ok((round16(c), shape))
}

/// [`conv2d_fused`](super::conv2d_fused) on f16 slices: f64 throughout (the epilogue on the
/// unrounded `conv + b (+ r)`), rounded once to f16.
///
/// # Errors
/// Those of [`conv2d_fused`](super::conv2d_fused).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_fused_f16(
    x: &[f16],
    x_shape: Shape4,
    w: &[f16],
    w_shape: Shape4,
    bias: Option<&[f16]>,
    residual: Option<&[f16]>,
    params: &Conv2dParams,
    epilogue: &Epilogue,
) -> Result<(Vec<f16>, Shape4)> {
    let (b, r) = (bias.map(widen), residual.map(widen));
    let (x, w) = (widen(x), widen(w));
    let (y, shape) = conv2d_fused_f64(
        &x,
        x_shape,
        &w,
        w_shape,
        b.as_deref(),
        r.as_deref(),
        params,
        epilogue,
    )?;
    Ok((round16(y), shape))
}

/// [`conv_transpose2d_fused`](super::conv_transpose2d_fused) on f16 slices, rounded once to
/// f16.
///
/// # Errors
/// Those of [`conv_transpose2d_fused`](super::conv_transpose2d_fused).
#[allow(clippy::too_many_arguments)]
pub fn conv_transpose2d_fused_f16(
    x: &[f16],
    x_shape: Shape4,
    w: &[f16],
    w_shape: Shape4,
    bias: Option<&[f16]>,
    residual: Option<&[f16]>,
    params: &ConvTranspose2dParams,
    epilogue: &Epilogue,
) -> Result<(Vec<f16>, Shape4)> {
    let (b, r) = (bias.map(widen), residual.map(widen));
    let (x, w) = (widen(x), widen(w));
    let (y, shape) = conv_transpose2d_fused_f64(
        &x,
        x_shape,
        &w,
        w_shape,
        b.as_deref(),
        r.as_deref(),
        params,
        epilogue,
    )?;
    Ok((round16(y), shape))
}

/// [`gemm_fused`](super::gemm_fused) on f16 slices, rounded once to f16.
///
/// # Errors
/// Those of [`gemm_fused`](super::gemm_fused).
#[allow(clippy::too_many_arguments)]
pub fn gemm_fused_f16(
    a: &[f16],
    a_shape: &[usize],
    b: &[f16],
    b_shape: &[usize],
    bias: Option<&[f16]>,
    residual: Option<&[f16]>,
    params: &GemmParams,
    epilogue: &Epilogue,
) -> Result<(Vec<f16>, Vec<usize>)> {
    let (bias, r) = (bias.map(widen), residual.map(widen));
    let (c, shape) = gemm_fused_f64(
        &widen(a),
        a_shape,
        &widen(b),
        b_shape,
        bias.as_deref(),
        r.as_deref(),
        params,
        epilogue,
    )?;
    Ok((round16(c), shape))
}

/// [`conv2d_grad_fused`](super::conv2d_grad_fused) on f16 slices: `dz = dy ⊙ act'(z)` kept
/// in f32 (as the library keeps it), the gradients of `dz` in f64, every output rounded once
/// to f16 (`dr` too).
///
/// # Errors
/// Those of [`conv2d_grad_fused`](super::conv2d_grad_fused).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_grad_fused_f16(
    x: &[f16],
    x_shape: Shape4,
    w: &[f16],
    w_shape: Shape4,
    dy: &[f16],
    dy_shape: Shape4,
    z: &[f16],
    with_bias: bool,
    params: &Conv2dParams,
    epilogue: &Epilogue,
) -> Result<(Conv2dGradsF16, Option<Vec<f16>>)> {
    let p = Conv2dProblem::new(x_shape, w_shape, with_bias.then_some(w_shape[0]), params)?;
    if dy_shape != p.y_shape() {
        return Err(Error::shape_mismatch(
            "dy",
            format!("{:?} (the forward output shape)", p.y_shape()),
            format!("{dy_shape:?}"),
        ));
    }
    let (x, w, dy, z) = (widen(x), widen(w), widen(dy), widen(z));
    check_len("x", &x, &x_shape)?;
    check_len("w", &w, &w_shape)?;
    check_len("dy", &dy, &dy_shape)?;
    let (dz, dr) = epilogue_backward(&dy, &z, epilogue)?;
    ensure_alloc(numel(&x_shape).max(numel(&w_shape)), "conv2d_grad")?;
    let grads = Conv2dGradsF16 {
        dx: round16(backward_input_f64(&p, &dz, &w)),
        dw: round16(backward_weight_f64(&p, &x, &dz)),
        db: with_bias.then(|| round16(backward_bias_f64(&p, &dz))),
    };
    let dr = dr.map(|d| d.into_iter().map(f16::from_f32).collect());
    Ok((grads, dr))
}
