//! # wgconv
//!
//! PyTorch-compatible 2-D convolution on any WebGPU adapter (Vulkan, Metal, DX12, GL; Mesa
//! lavapipe on machines without a GPU), through `wgpu` and WGSL compute shaders, with a CPU
//! reference ([`cpu`]) that every GPU result is tested against.
//!
//! ```no_run
//! use wgconv::{Context, Conv2dParams, Padding, Tensor};
//!
//! # fn main() -> wgconv::Result<()> {
//! let ctx = Context::new_blocking()?;
//! let x = Tensor::from_slice(&ctx, &vec![1.0; 1 * 3 * 32 * 32], &[1, 3, 32, 32])?;
//! let w = Tensor::from_slice(&ctx, &vec![0.1; 8 * 3 * 3 * 3], &[8, 3, 3, 3])?;
//! let b = Tensor::from_slice(&ctx, &[0.5; 8], &[8])?;
//! let params = Conv2dParams::default().with_padding(Padding::Symmetric([1, 1]));
//! let y = ctx.conv2d(&x, &w, Some(&b), &params)?;
//! assert_eq!(y.shape(), &[1, 8, 32, 32]);
//! let values: Vec<f32> = y.read()?;
//! # let _ = values; Ok(()) }
//! ```
//!
//! Semantics are PyTorch's: tensors are NCHW `f32`, weights `[K, C/groups, R, S]`, bias
//! `[K]`; "convolution" is cross-correlation unless [`Conv2dParams::flip`] asks for true
//! convolution.
#![deny(missing_docs)]

mod context;
pub mod conv;
pub mod cpu;
mod error;
mod gemm;
mod kernels;
/// `Tensor::{from,to}_array{4,2}`: conversions to and from `ndarray` (feature `ndarray`).
#[cfg(feature = "ndarray")]
mod ndarray_support;
mod params;
mod tensor;

pub use context::{Context, ContextOptions, Limits, LimitsOverride, DEFAULT_SCRATCH_BUDGET};
pub use conv::{Algorithm, Conv2dGradients};
pub use error::{Error, ErrorKind, Result};
pub use gemm::{GemmParams, GemmVariant};
pub use kernels::{Kernel, ALL_KERNELS};
pub use params::{
    conv_output_size, conv_transpose_output_size, numel, Conv2dParams, Conv2dProblem,
    ConvTranspose2dParams, Padding, PaddingMode, Shape4, TransposedProblem,
};
pub use tensor::Tensor;

/// The README's code blocks, compiled as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
