//! CPU reference for the gradients of conv2d and for the transposed convolution.
//!
//! Every function here is the exact adjoint of [`conv2d_problem`](super::conv2d_problem)'s
//! index mapping: the forward reads `xpad[iy', ix']` through
//! [`PaddingMode::source_index`](crate::PaddingMode::source_index), so the gradient that reaches
//! a padded copy of a pixel (reflect, replicate, circular) is added to that pixel, and input
//! rows/columns that the forward never reads (e.g. skipped by a stride larger than the dilated
//! kernel) get exactly 0. With `flip`, kernel tap `(r, s)` uses weight `tap(r, s)`, so its
//! weight gradient goes to that rotated position.
//!
//! Sums are accumulated in `f64` and rounded once to `f32`. These maps are linear, so the
//! rounding-error scale of each output element is obtained by calling the same function on the
//! absolute values of its inputs (this is what the tests do).

use super::check_len;
use crate::error::{Error, Result};
use crate::params::{
    numel, Conv2dParams, Conv2dProblem, ConvTranspose2dParams, Shape4, TransposedProblem,
};

/// Gradients of `L = Σ conv2d(x, w, b) · dy` returned by [`conv2d_grad`].
#[derive(Clone, Debug, PartialEq)]
pub struct Conv2dGrads {
    /// `∂L/∂x`, shape `[N, C, H, W]` (the input's).
    pub dx: Vec<f32>,
    /// `∂L/∂w`, shape `[K, C/groups, R, S]` (the weight's).
    pub dw: Vec<f32>,
    /// `∂L/∂b`, shape `[K]`; `Some` exactly when the gradients were asked `with_bias`.
    pub db: Option<Vec<f32>>,
}

fn assert_len(what: &str, data: &[f32], shape: Shape4) {
    assert_eq!(
        data.len(),
        numel(&shape),
        "{what}: slice length does not match shape {shape:?}"
    );
}

fn round(v: Vec<f64>) -> Vec<f32> {
    v.into_iter().map(|a| a as f32).collect()
}

/// Unrounded input gradient (the scatter of `dy · w` through the forward index mapping).
pub(crate) fn backward_input_f64(p: &Conv2dProblem, dy: &[f32], w: &[f32]) -> Vec<f64> {
    assert_len("dy", dy, p.y_shape());
    assert_len("w", w, p.w_shape());
    let (cg, kg) = (p.c_per_group(), p.k_per_group());
    let mut dx = vec![0f64; numel(&p.x_shape())];
    for n in 0..p.n {
        for k in 0..p.k {
            let g = k / kg;
            for oy in 0..p.oh {
                for ox in 0..p.ow {
                    let d = dy[((n * p.k + k) * p.oh + oy) * p.ow + ox] as f64;
                    for ci in 0..cg {
                        let c = g * cg + ci;
                        for r in 0..p.r {
                            let Some(iy) = p.mode.source_index(p.in_row(oy, r), p.h) else {
                                continue;
                            };
                            for s in 0..p.s {
                                let Some(ix) = p.mode.source_index(p.in_col(ox, s), p.w) else {
                                    continue;
                                };
                                let (rr, ss) = p.tap(r, s);
                                let wv = w[((k * cg + ci) * p.r + rr) * p.s + ss] as f64;
                                dx[((n * p.c + c) * p.h + iy) * p.w + ix] += wv * d;
                            }
                        }
                    }
                }
            }
        }
    }
    dx
}

/// Input gradient of the forward convolution `p`: `dx = ∂(Σ conv2d(x, w) · dy)/∂x`.
///
/// `dy`: `[N, K, Ho, Wo]` (`p.y_shape()`), `w`: `[K, C/groups, R, S]` (`p.w_shape()`). Returns
/// `dx` of shape `[N, C, H, W]` (`p.x_shape()`). Handles every forward parameter (stride,
/// per-side padding incl. negative bottom/right, dilation, groups, flip, padding modes).
///
/// # Panics
/// If a slice length does not match the problem's shape.
pub fn conv2d_backward_input(p: &Conv2dProblem, dy: &[f32], w: &[f32]) -> Vec<f32> {
    round(backward_input_f64(p, dy, w))
}

/// Weight gradient of the forward convolution `p`: `dw = ∂(Σ conv2d(x, w) · dy)/∂w`.
///
/// `x`: `[N, C, H, W]` (`p.x_shape()`), `dy`: `[N, K, Ho, Wo]` (`p.y_shape()`). Returns `dw`
/// of shape `[K, C/groups, R, S]` (`p.w_shape()`). With `flip`, the product read at kernel tap
/// `(r, s)` is accumulated into `dw[k, c, R-1-r, S-1-s]`.
///
/// # Panics
/// If a slice length does not match the problem's shape.
pub fn conv2d_backward_weight(p: &Conv2dProblem, x: &[f32], dy: &[f32]) -> Vec<f32> {
    round(backward_weight_f64(p, x, dy))
}

/// Unrounded weight gradient.
pub(crate) fn backward_weight_f64(p: &Conv2dProblem, x: &[f32], dy: &[f32]) -> Vec<f64> {
    assert_len("x", x, p.x_shape());
    assert_len("dy", dy, p.y_shape());
    let (cg, kg) = (p.c_per_group(), p.k_per_group());
    let mut dw = vec![0f64; numel(&p.w_shape())];
    for n in 0..p.n {
        for k in 0..p.k {
            let g = k / kg;
            for oy in 0..p.oh {
                for ox in 0..p.ow {
                    let d = dy[((n * p.k + k) * p.oh + oy) * p.ow + ox] as f64;
                    for ci in 0..cg {
                        let c = g * cg + ci;
                        for r in 0..p.r {
                            let Some(iy) = p.mode.source_index(p.in_row(oy, r), p.h) else {
                                continue;
                            };
                            for s in 0..p.s {
                                let Some(ix) = p.mode.source_index(p.in_col(ox, s), p.w) else {
                                    continue;
                                };
                                let (rr, ss) = p.tap(r, s);
                                let xv = x[((n * p.c + c) * p.h + iy) * p.w + ix] as f64;
                                dw[((k * cg + ci) * p.r + rr) * p.s + ss] += xv * d;
                            }
                        }
                    }
                }
            }
        }
    }
    dw
}

/// Bias gradient of the forward convolution `p`: `db[k] = Σ_{n, oy, ox} dy[n, k, oy, ox]`.
///
/// `dy`: `[N, K, Ho, Wo]` (`p.y_shape()`). Returns `db` of shape `[K]` (whether or not
/// `p.has_bias`).
///
/// # Panics
/// If the length of `dy` does not match the problem's output shape.
pub fn conv2d_backward_bias(p: &Conv2dProblem, dy: &[f32]) -> Vec<f32> {
    round(backward_bias_f64(p, dy))
}

/// Unrounded bias gradient.
pub(crate) fn backward_bias_f64(p: &Conv2dProblem, dy: &[f32]) -> Vec<f64> {
    assert_len("dy", dy, p.y_shape());
    let mut db = vec![0f64; p.k];
    let plane = p.oh * p.ow;
    for (i, &d) in dy.iter().enumerate() {
        db[(i / plane) % p.k] += d as f64;
    }
    db
}

/// Gradients of `L = Σ conv2d(x, w, b) · dy` with respect to `x`, `w` and (when `with_bias`)
/// `b`, on host slices. The bias values themselves do not influence any gradient, so only
/// whether there is one is needed.
///
/// `x`: `[N, C, H, W]`, `w`: `[K, C/groups, R, S]`, `dy`: `[N, K, Ho, Wo]` (the forward's
/// output shape). Returns `dx` `[N, C, H, W]`, `dw` `[K, C/groups, R, S]`, `db` `[K]`.
///
/// # Errors
/// Every error of the forward [`Conv2dProblem::new`]; a
/// [`ShapeMismatch`](crate::ErrorKind::ShapeMismatch) named `dy` when `dy_shape` is not the
/// forward's output shape; and named `x` / `w` / `dy` when a slice length does not match its
/// shape.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_grad(
    x: &[f32],
    x_shape: Shape4,
    w: &[f32],
    w_shape: Shape4,
    dy: &[f32],
    dy_shape: Shape4,
    with_bias: bool,
    params: &Conv2dParams,
) -> Result<Conv2dGrads> {
    let p = Conv2dProblem::new(x_shape, w_shape, with_bias.then_some(w_shape[0]), params)?;
    if dy_shape != p.y_shape() {
        return Err(Error::shape_mismatch(
            "dy",
            format!("{:?} (the forward output shape)", p.y_shape()),
            format!("{dy_shape:?}"),
        ));
    }
    check_len("x", x, &x_shape)?;
    check_len("w", w, &w_shape)?;
    check_len("dy", dy, &dy_shape)?;
    super::ensure_alloc(numel(&x_shape).max(numel(&w_shape)), "conv2d_grad")?;
    Ok(Conv2dGrads {
        dx: conv2d_backward_input(&p, dy, w),
        dw: conv2d_backward_weight(&p, x, dy),
        db: with_bias.then(|| conv2d_backward_bias(&p, dy)),
    })
}

/// Transposed convolution on host slices (PyTorch `conv_transpose2d`, zero padding).
///
/// `x`: `[N, Cin, H, W]`, `w`: `[Cin, Cout/groups, R, S]`, `bias`: `[Cout]`. Returns the output
/// and its shape `[N, Cout, Ho, Wo]`, `Ho = (H-1)*sh - 2*ph + dh*(R-1) + oph + 1`.
///
/// # Errors
/// Every error of [`ConvTranspose2dParams::resolve`], plus a
/// [`ShapeMismatch`](crate::ErrorKind::ShapeMismatch) named `x` / `w` when a slice length does
/// not match its shape.
pub fn conv_transpose2d(
    x: &[f32],
    x_shape: Shape4,
    w: &[f32],
    w_shape: Shape4,
    bias: Option<&[f32]>,
    params: &ConvTranspose2dParams,
) -> Result<(Vec<f32>, Shape4)> {
    let tp = params.resolve(x_shape, w_shape, bias.map(<[f32]>::len))?;
    check_len("x", x, &x_shape)?;
    check_len("w", w, &w_shape)?;
    super::ensure_alloc(numel(&tp.y_shape()), "conv_transpose2d")?;
    Ok((conv_transpose2d_problem(&tp, x, w, bias), tp.y_shape()))
}

/// Transposed convolution of a resolved problem: the input gradient of `tp.conv` applied to
/// `x` (in the role of `dy`), plus `bias[co]` on every element of output channel `co`
/// (including rows/columns that receive no input). Accumulated in `f64`, rounded once.
///
/// `x`: `tp.x_shape()`, `w`: `tp.w_shape()`, `bias`: `[Cout]` (pass it exactly when
/// `tp.has_bias`). Returns the output, shape `tp.y_shape()`.
///
/// # Panics
/// If a slice length does not match the problem's shape.
pub fn conv_transpose2d_problem(
    tp: &TransposedProblem,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    round(conv_transpose2d_f64(tp, x, w, bias))
}

/// [`conv_transpose2d_problem`] unrounded.
pub(crate) fn conv_transpose2d_f64(
    tp: &TransposedProblem,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f64> {
    let p = &tp.conv;
    let mut y = backward_input_f64(p, x, w);
    if let Some(b) = bias {
        assert_eq!(b.len(), p.c, "bias: length does not match Cout = {}", p.c);
        let plane = p.h * p.w;
        for (i, v) in y.iter_mut().enumerate() {
            *v += b[(i / plane) % p.c] as f64;
        }
    }
    y
}
