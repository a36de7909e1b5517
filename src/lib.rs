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
//!
//! **Half precision.** Tensors may be f16 ([`DType::F16`]: [`Tensor::from_f16`],
//! [`Tensor::from_f32`] with a dtype, [`Tensor::read_f16`]). Every operation and algorithm runs
//! on f16 operands with f32 arithmetic and accumulation, each result rounded once to f16;
//! [`Context::conv2d_backward_weight_as`] gives an f32 `dw` of f16 inputs (master weights).
//! That needs no `shader-f16`: the lavapipe depthwise and implicit-GEMM paths read f16
//! themselves, other kernels get f32 copies. [`Context::set_precision`] with
//! [`Precision::F16Accumulate`] opts into f16 arithmetic where the device has `shader-f16`
//! (the direct algorithm and the register and tiled GEMMs; see [`Precision`] for what it runs and its
//! error bound, [`cpu::f16_accumulate_tolerance`]).
//!
//! # A quick tour
//!
//! **Forward.** [`Context::conv2d`] takes [`Conv2dParams`]: stride, dilation, groups
//! (depthwise and channel multipliers included), [`Padding`] (symmetric, per side, `Same`,
//! `Valid`) and [`PaddingMode`] (zeros, reflect, replicate, circular). The output shape is
//! validated first ([`Conv2dParams::output_shape`]); invalid input is an [`Error`], never a
//! panic.
//!
//! **Backward.** [`Context::conv2d_backward`] returns `dx`, `dw` and `db` for an upstream
//! gradient `dy` with the same parameters as the forward; [`Context::conv2d_backward_input`],
//! [`Context::conv2d_backward_weight`] and [`Context::conv2d_backward_bias`] compute one each.
//! Every kernel gathers (no atomics): the same inputs give the same bits.
//!
//! ```no_run
//! # use wgconv::*;
//! # fn main() -> Result<()> {
//! # let ctx = Context::new_blocking()?;
//! let p = Conv2dParams::default().with_stride([2, 2]).with_padding(Padding::Symmetric([1, 1]));
//! let x = Tensor::from_slice(&ctx, &vec![0.5; 2 * 4 * 16 * 16], &[2, 4, 16, 16])?;
//! let w = Tensor::from_slice(&ctx, &vec![0.1; 8 * 4 * 3 * 3], &[8, 4, 3, 3])?;
//! let y = ctx.conv2d(&x, &w, None, &p)?; // [2, 8, 8, 8]
//! let dy = Tensor::full(&ctx, y.shape(), 1.0)?;
//! let g = ctx.conv2d_backward(&x, &w, &dy, true, &p, Algorithm::Auto)?;
//! assert_eq!(g.dw.shape(), &[8, 4, 3, 3]);
//! # Ok(()) }
//! ```
//!
//! **Transposed.** [`Context::conv_transpose2d`] with [`ConvTranspose2dParams`]
//! (`output_padding`, dilation, groups; weights `[Cin, Cout/groups, R, S]`) is the input
//! gradient of the matching conv2d, computed by the same kernels.
//!
//! **GEMM.** [`Context::gemm`]: `C = op(A)·op(B)` for any sizes, with [`GemmParams`]
//! (transposes, kernel [`GemmVariant`]); a leading batch dimension gives strided-batched GEMM;
//! [`Context::encode_gemm`] adds a per-column bias and accumulation.
//!
//! **Algorithms.** Each operation ([`Operation`]) has one table of the algorithms that can
//! compute it ([`Algorithm`]: direct, im2col + GEMM, 1x1 GEMM, depthwise, implicit GEMM on
//! storage images, tiled implicit GEMM). [`Algorithm::Auto`] (the default) runs a heuristic's
//! choice the first time it meets an (operation, parameters, shape bucket), compiling only
//! that algorithm's pipelines, and queues the bucket for a background thread of the context
//! that times the entries that can run it; later calls run the fastest (remembered per
//! context, optionally in a file: `WGCONV_TUNE_CACHE`). [`TuningMode`] chooses between that,
//! measuring on the first call, and the heuristic alone ([`Context::set_tuning_mode`],
//! `WGCONV_AUTOTUNE=0`; deterministic bits); [`Context::wait_for_tuning`] waits for the
//! measurements and [`Context::warm_up`] compiles what a list of layers will run before the
//! first call. A forced algorithm runs exactly its own kernels or returns
//! [`ErrorKind::UnsupportedAlgorithm`] with the reason; it never silently runs another.
//! [`Context::check_algorithm`] asks the same question without running anything. Kernels come
//! in two families chosen by the adapter ([`KernelClass`]): register-blocked, barrier-free
//! kernels reading storage images for CPU adapters such as lavapipe, workgroup-memory tiles for
//! GPUs.
//!
//! **Batching.** Every operation has an `encode_*` form recording into a caller's
//! [`wgpu::CommandEncoder`], so a whole network can go out in one submission; with
//! [`Context::from_device`] the library uses a device and queue the application already owns,
//! and [`Tensor::from_buffer`] / [`Tensor::buffer`] share buffers with it.
//!
//! **Limits.** Tensors larger than one storage binding, dispatches beyond
//! `maxComputeWorkgroupsPerDimension` and im2col scratch beyond the context's budget are split
//! automatically (see the README, "Limits and errors"); a single tensor larger than
//! `maxBufferSize` is refused with [`ErrorKind::ExceedsLimit`].
//!
//! **Errors.** One type, [`Error`], whose [`Error::kind`] is an [`ErrorKind`] carrying the
//! parameter, shape or limit at fault; device loss and allocation failures are caught with
//! wgpu error scopes and returned, never panics.
//!
//! **Choosing an adapter.** [`Context::new`] honours `WGPU_BACKEND` (e.g. `vulkan`) and
//! `WGPU_ADAPTER_NAME` (a substring of the adapter name), else takes the highest-performance
//! adapter (discrete > integrated > CPU; Vulkan/Metal/DX12 before GL) and requests its own
//! limits. [`Context::adapter_summary`] says what was picked.
//!
//! **CI without a GPU.** Install Mesa's software Vulkan driver (`apt-get install -y
//! mesa-vulkan-drivers`) and run with `WGPU_BACKEND=vulkan`: lavapipe runs every kernel. With no
//! adapter at all, [`Context::new`] fails with [`ErrorKind::NoAdapter`], whose message gives
//! that install hint; the crate's own GPU tests fail (never skip) in that case.
//!
//! **CPU reference.** [`cpu`] has every operation on host slices, accumulating in `f64`: the
//! oracle of the tests (itself checked against float64 fixtures and by adjoint identities)
//! and a fallback on machines without any adapter.
#![deny(missing_docs)]

mod context;
pub mod conv;
pub mod cpu;
pub mod epilogue;
mod error;
mod gemm;
mod gpu;
mod icache;
mod kernels;
/// `Tensor::{from,to}_array{4,2}`: conversions to and from `ndarray` (feature `ndarray`).
#[cfg(feature = "ndarray")]
mod ndarray_support;
mod params;
mod tensor;
mod tune;
mod wcache;

pub use context::{
    Context, ContextOptions, KernelClass, Limits, LimitsOverride, Precision, DEFAULT_SCRATCH_BUDGET,
};
pub use conv::{Algorithm, Conv2dFusedGradients, Conv2dGradients, Operation};
pub use epilogue::{Activation, Epilogue, Residual};
pub use error::{Error, ErrorKind, Result};
pub use gemm::{GemmParams, GemmVariant};
/// The `half` crate, whose [`f16`](half::f16) is the host type of f16 tensors.
pub use half;
pub use params::{
    conv_output_size, conv_transpose_output_size, numel, Conv2dParams, Conv2dProblem,
    ConvTranspose2dParams, Padding, PaddingMode, Shape4, TransposedProblem,
};
pub use tensor::{DType, MemoryFormat, Tensor};
pub use tune::TuningMode;
pub use wcache::DEFAULT_WEIGHT_CACHE_BUDGET;

/// Development hooks for the repository's tools (`examples/dump_shaders.rs`, the portability
/// checks); not part of the supported API.
#[doc(hidden)]
pub mod dev {
    /// One kernel as the library compiles it.
    #[derive(Clone, Debug)]
    pub struct KernelSource {
        /// The kernel's name.
        pub name: &'static str,
        /// Its WGSL source, with `override` constants, as naga takes it.
        pub wgsl: &'static str,
        /// The same for other WGSL compilers (Tint): with the `enable` directives naga 30
        /// refuses (`enable subgroups;`).
        pub browser_wgsl: &'static str,
        /// The override values of every specialisation the library's tests validate.
        pub specialisations: Vec<Vec<(&'static str, i64)>>,
    }

    /// How `op` runs problem `p` on `ctx` when its tensors exceed one storage binding:
    /// `"whole"`, `"images"` (bands of whole images), `"rows"` (bands of rows of one image),
    /// `"rows+fold"` (input-gradient row bands that fold reflect/replicate padding),
    /// `"windows"` (the direct algorithm's windows only) or `"impossible"`. For tests of the band paths.
    pub fn band_plan(
        ctx: &crate::Context,
        op: crate::Operation,
        p: &crate::Conv2dProblem,
    ) -> &'static str {
        use crate::conv::band::{plan, Plan, Side};
        let side = match op {
            crate::Operation::InputGrad | crate::Operation::Transposed => Side::Inputs,
            _ => Side::Outputs,
        };
        match plan(ctx, p, side) {
            Plan::Whole => "whole",
            Plan::Images { .. } => "images",
            Plan::Rows(b) if b.iter().any(|b| b.fold.is_some()) => "rows+fold",
            Plan::Rows(_) => "rows",
            Plan::Windows(_) => "windows",
            Plan::Impossible(_) => "impossible",
        }
    }

    pub use crate::gpu::pool::PoolStats;

    /// Counters of a context's pools and caches of per-call resources (device allocations,
    /// bind groups created): what the tests of "a layer in a loop allocates nothing" read.
    pub fn pool_stats(ctx: &crate::Context) -> PoolStats {
        ctx.pool_stats()
    }

    /// Whether `ctx`'s kernels may fuse an epilogue into their store (the default) or always
    /// leave it to the elementwise pass (`false`): results are identical (the same f32
    /// operations in the same order); what the benchmark of fused against separate passes
    /// uses.
    pub fn set_fused_epilogues(ctx: &crate::Context, fused: bool) {
        ctx.inner
            .fuse_epilogues
            .store(fused, std::sync::atomic::Ordering::Relaxed);
    }

    /// The names of the kernels `ctx` has compiled a pipeline of (once per kernel, sorted):
    /// what the tests of first-call stand-ins read.
    pub fn compiled_kernels(ctx: &crate::Context) -> Vec<&'static str> {
        ctx.compiled_kernels()
    }

    /// Every pipeline `ctx` has compiled: kernel name and specialisation (override values),
    /// sorted, once each.
    pub fn compiled_pipelines(
        ctx: &crate::Context,
    ) -> Vec<(&'static str, Vec<(&'static str, i64)>)> {
        ctx.compiled_pipelines()
    }

    /// Starts a profile of `ctx`'s dispatches: every compute pass recorded after this (at
    /// most `capacity`) writes GPU timestamps at its start and end. Needs the adapter's
    /// `TIMESTAMP_QUERY` feature.
    pub fn profile_begin(ctx: &crate::Context, capacity: u32) -> crate::Result<()> {
        crate::gpu::profile::begin(ctx, capacity)
    }

    /// Ends the profile started by [`profile_begin`]: `(kernel [specialisation] grid, GPU
    /// nanoseconds)` of each recorded pass, in recording order. Submit every recorded
    /// encoder first.
    pub fn profile_end(ctx: &crate::Context) -> crate::Result<Vec<(String, f64)>> {
        crate::gpu::profile::end(ctx)
    }

    /// Every kernel of the library.
    pub fn kernel_sources() -> Vec<KernelSource> {
        crate::kernels::ALL_KERNELS
            .iter()
            .map(|k| KernelSource {
                name: k.name(),
                wgsl: k.source(),
                browser_wgsl: k.browser_source(),
                specialisations: k.variants(),
            })
            .collect()
    }
}

/// The README's code blocks, compiled as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
