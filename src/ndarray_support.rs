//! Conversions between [`Tensor`] and [`ndarray`] arrays (cargo feature `ndarray`).
//!
//! `Array4` for activations (`[N, C, H, W]`) and weights (`[K, C/groups, R, S]`), `Array2`
//! for matrices (GEMM operands). Arrays of any memory layout are accepted (transposed,
//! sliced, negative strides): they are copied into row-major order first.

use ndarray::{Array, ArrayBase, Data, Dimension, Ix2, Ix4};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Uploads an array of any layout as a row-major tensor of the same shape.
fn upload<S, D>(ctx: &Context, array: &ArrayBase<S, D>) -> Result<Tensor>
where
    S: Data<Elem = f32>,
    D: Dimension,
{
    let standard = array.as_standard_layout();
    match standard.as_slice() {
        Some(data) => Tensor::from_slice(ctx, data, array.shape()),
        // A standard-layout array is always contiguous; this is only a fallback.
        None => {
            let data: Vec<f32> = array.iter().copied().collect();
            Tensor::from_slice(ctx, &data, array.shape())
        }
    }
}

/// The tensor's shape as a fixed-rank index, or a shape error naming the expected rank.
fn shape_of<const R: usize>(t: &Tensor) -> Result<[usize; R]> {
    <[usize; R]>::try_from(t.shape()).map_err(|_| {
        Error::shape_mismatch(
            "tensor rank",
            format!("a {R}-D tensor"),
            format!("{}-D shape {:?}", t.shape().len(), t.shape()),
        )
    })
}

fn download<D: Dimension>(t: &Tensor, shape: D) -> Result<Array<f32, D>> {
    let data = t.read()?;
    let got = data.len();
    Array::from_shape_vec(shape, data).map_err(|e| {
        Error::shape_mismatch(
            "tensor data",
            format!("{} elements for shape {:?}", t.numel(), t.shape()),
            format!("{got} elements ({e})"),
        )
    })
}

impl Tensor {
    /// Uploads a 4-D array (`[N, C, H, W]` activations or `[K, C/groups, R, S]` weights).
    ///
    /// Any memory layout is accepted (e.g. an NHWC array viewed as NCHW with
    /// `permuted_axes([0, 3, 1, 2])`, a slice with steps, negative strides): the array is
    /// copied into standard (row-major) order first when it is not already in it.
    ///
    /// ```no_run
    /// # fn main() -> wgconv::Result<()> {
    /// use ndarray::Array4;
    /// use wgconv::{Context, Conv2dParams, Tensor};
    /// let ctx = Context::new_blocking()?;
    /// let x = Tensor::from_array4(&ctx, &Array4::<f32>::ones((1, 3, 8, 8)))?;
    /// let w = Tensor::from_array4(&ctx, &Array4::<f32>::ones((4, 3, 3, 3)))?;
    /// let y = ctx.conv2d(&x, &w, None, &Conv2dParams::default())?.to_array4()?;
    /// assert_eq!(y.dim(), (1, 4, 6, 6));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::ExceedsLimit`](crate::ErrorKind::ExceedsLimit) when the tensor is larger
    /// than the device allows, and the other errors of [`Tensor::from_slice`].
    pub fn from_array4<S>(ctx: &Context, array: &ArrayBase<S, Ix4>) -> Result<Self>
    where
        S: Data<Elem = f32>,
    {
        upload(ctx, array)
    }

    /// Copies a 4-D tensor into an `Array4` (standard layout, logical `[N, C, H, W]` order
    /// whatever the tensor's [`MemoryFormat`](crate::MemoryFormat)), blocking until the GPU
    /// work it depends on is done (as [`Tensor::read`]).
    ///
    /// # Errors
    /// [`ErrorKind::ShapeMismatch`](crate::ErrorKind::ShapeMismatch) (`what` =
    /// `"tensor rank"`) when the tensor is not 4-D; the errors of [`Tensor::read`].
    pub fn to_array4(&self) -> Result<ndarray::Array4<f32>> {
        let [n, c, h, w] = shape_of::<4>(self)?;
        if self.storage_format() != crate::MemoryFormat::Contiguous {
            return self.to_format(crate::MemoryFormat::Contiguous)?.to_array4();
        }
        download(self, Ix4(n, c, h, w))
    }

    /// Uploads a matrix (a [`Context::gemm`] operand), any memory layout (e.g. the
    /// transposed view `a.t()`), as a row-major `[rows, cols]` tensor.
    ///
    /// # Errors
    /// As [`Tensor::from_array4`].
    pub fn from_array2<S>(ctx: &Context, array: &ArrayBase<S, Ix2>) -> Result<Self>
    where
        S: Data<Elem = f32>,
    {
        upload(ctx, array)
    }

    /// Copies a 2-D tensor (e.g. a [`Context::gemm`] result) into an `Array2`, blocking.
    ///
    /// # Errors
    /// [`ErrorKind::ShapeMismatch`](crate::ErrorKind::ShapeMismatch) (`what` =
    /// `"tensor rank"`) when the tensor is not 2-D; the errors of [`Tensor::read`].
    pub fn to_array2(&self) -> Result<ndarray::Array2<f32>> {
        let [rows, cols] = shape_of::<2>(self)?;
        download(self, Ix2(rows, cols))
    }
}
