//! CPU reference implementations: plain loops with explicit index math and `f64`
//! accumulation, rounded once to `f32`.
//!
//! These are **the reference** every GPU kernel is tested against (and which is itself
//! checked against fixtures computed in float64 by an independent framework). They are
//! written for clarity, not speed; they also serve as a fallback on machines without any
//! WebGPU adapter.

mod gemm;
mod half;
pub use gemm::gemm;
pub use half::*;

use crate::error::{Error, Result};
use crate::params::{numel, Conv2dParams, Conv2dProblem, Shape4};

/// Fails with a typed [`ErrorKind::OutOfMemory`](crate::ErrorKind::OutOfMemory) instead of
/// aborting when `elems` values of 8 bytes (the f64 accumulators) cannot be allocated.
pub(crate) fn ensure_alloc(elems: usize, what: &str) -> Result<()> {
    let mut probe: Vec<f64> = Vec::new();
    probe.try_reserve_exact(elems).map_err(|_| {
        Error::new(crate::ErrorKind::OutOfMemory(format!(
            "allocating the CPU result of {what} ({elems} elements)"
        )))
    })
}

fn check_len(what: &'static str, data: &[f32], shape: &[usize]) -> Result<()> {
    let n = numel(shape);
    if data.len() != n {
        return Err(Error::shape_mismatch(
            what,
            format!("{n} elements (shape {shape:?})"),
            format!("{} elements", data.len()),
        ));
    }
    Ok(())
}

/// Forward convolution on host slices (PyTorch `conv2d`; true convolution with `flip`).
///
/// `x`: `[N, C, H, W]`, `w`: `[K, C/groups, R, S]`, `bias`: `[K]`. Returns the output and its
/// shape `[N, K, Ho, Wo]`.
///
/// # Errors
/// The same validation as the GPU path, plus slice lengths that do not match the shapes.
pub fn conv2d(
    x: &[f32],
    x_shape: Shape4,
    w: &[f32],
    w_shape: Shape4,
    bias: Option<&[f32]>,
    params: &Conv2dParams,
) -> Result<(Vec<f32>, Shape4)> {
    let p = Conv2dProblem::new(x_shape, w_shape, bias.map(|b| b.len()), params)?;
    check_len("x", x, &x_shape)?;
    check_len("w", w, &w_shape)?;
    ensure_alloc(numel(&p.y_shape()), "conv2d")?;
    Ok((conv2d_problem(&p, x, w, bias), p.y_shape()))
}

/// Forward convolution of a resolved problem (slices must have the problem's sizes).
pub fn conv2d_problem(p: &Conv2dProblem, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    conv2d_f64(p, x, w, bias)
        .into_iter()
        .map(|v| v as f32)
        .collect()
}

/// Unrounded forward convolution (f64 sums).
pub(crate) fn conv2d_f64(
    p: &Conv2dProblem,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f64> {
    let (cg, kg) = (p.c_per_group(), p.k_per_group());
    let mut y = vec![0f64; numel(&p.y_shape())];
    for n in 0..p.n {
        for k in 0..p.k {
            let g = k / kg;
            for oy in 0..p.oh {
                for ox in 0..p.ow {
                    let mut acc = bias.map_or(0.0, |b| b[k] as f64);
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
                                let wv = w[((k * cg + ci) * p.r + rr) * p.s + ss] as f64;
                                acc += xv * wv;
                            }
                        }
                    }
                    y[((n * p.k + k) * p.oh + oy) * p.ow + ox] = acc;
                }
            }
        }
    }
    y
}

/// Σ|x|·|w| (+|b|) per output: the scale of the rounding error of each output, used by
/// tests to set tolerances proportional to what is being summed.
pub fn conv2d_abs_scale(p: &Conv2dProblem, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let ax: Vec<f32> = x.iter().map(|v| v.abs()).collect();
    let aw: Vec<f32> = w.iter().map(|v| v.abs()).collect();
    let ab: Option<Vec<f32>> = bias.map(|b| b.iter().map(|v| v.abs()).collect());
    conv2d_problem(p, &ax, &aw, ab.as_deref())
}

mod epilogue;
mod grad;
pub use epilogue::*;
pub use grad::*;
