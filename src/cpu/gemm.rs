//! GEMM reference.

use crate::error::{Error, Result};
use crate::gemm::{gemm_dims, GemmParams};

/// `C = op(A)·op(B)` on host slices, `f64` accumulation; shapes and batching exactly as
/// [`Context::gemm`](crate::Context::gemm). Returns `C` and its shape.
///
/// # Errors
/// Mismatched inner dimensions or batch sizes, shapes that are not 2-D/3-D, or slice
/// lengths that do not match their shapes.
pub fn gemm(
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
    params: &GemmParams,
) -> Result<(Vec<f32>, Vec<usize>)> {
    let (c, shape) = gemm_f64(a, a_shape, b, b_shape, params)?;
    Ok((c.into_iter().map(|v| v as f32).collect(), shape))
}

/// [`gemm`] unrounded.
pub(crate) fn gemm_f64(
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
    params: &GemmParams,
) -> Result<(Vec<f64>, Vec<usize>)> {
    let (batch, m, k, n, ba, bb) = gemm_dims(a_shape, b_shape, params)?;
    for (what, data, shape) in [("a", a, a_shape), ("b", b, b_shape)] {
        let want: usize = shape.iter().product();
        if data.len() != want {
            return Err(Error::shape_mismatch(
                what,
                format!("{want} elements (shape {shape:?})"),
                format!("{} elements", data.len()),
            ));
        }
    }
    let len = batch
        .checked_mul(m)
        .and_then(|v| v.checked_mul(n))
        .ok_or_else(|| {
            Error::shape_mismatch(
                "gemm",
                "a result that fits in memory",
                format!("{batch} x {m} x {n}"),
            )
        })?;
    super::ensure_alloc(len, "gemm")?;
    let mut c = vec![0f64; len];
    for bt in 0..batch {
        let a0 = if ba { bt * m * k } else { 0 };
        let b0 = if bb { bt * k * n } else { 0 };
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0f64;
                for kk in 0..k {
                    let av = if params.transpose_a {
                        a[a0 + kk * m + i]
                    } else {
                        a[a0 + i * k + kk]
                    };
                    let bv = if params.transpose_b {
                        b[b0 + j * k + kk]
                    } else {
                        b[b0 + kk * n + j]
                    };
                    acc += av as f64 * bv as f64;
                }
                c[bt * m * n + i * n + j] = acc;
            }
        }
    }
    let shape = if ba || bb {
        vec![batch, m, n]
    } else {
        vec![m, n]
    };
    Ok((c, shape))
}
