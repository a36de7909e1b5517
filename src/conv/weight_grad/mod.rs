//! Weight gradient: the algorithm table.
//!
//! | entry | runs | heuristic picks it when |
//! |---|---|---|
//! | [`depthwise`] | per-band partial sums of each tap, then a fixed-order sum | depthwise layers the forward depthwise kernel runs |
//! | [`direct`] | a direct reduction over images and pixels; windows over large tensors | one input or few output channels per group, tensors beyond one binding |
//! | [`implicit_gemm`] | the image GEMM of `dy` panels with the padded input image | >= 8 channels per group, or kernels larger than 1x1 |
//! | [`im2col_gemm`] (`gemm1x1` too) | a GEMM of `dy` with a pixel-major column matrix of `x` | otherwise |
//!
//! Every entry reduces in a fixed order: the same inputs give the same bits.

pub(crate) mod depthwise;
pub(crate) mod direct;
pub(crate) mod im2col_gemm;
pub(crate) mod implicit_gemm;

use crate::context::Context;
use crate::conv::launch::fit_one_binding;
use crate::conv::table::{Operation, Reason, Table};
use crate::conv::Algorithm;
use crate::error::Result;
use crate::params::Conv2dProblem;

/// The buffers of a weight-gradient call.
pub(crate) struct WgradArgs {
    pub x: wgpu::Buffer,
    pub dy: wgpu::Buffer,
    pub dw: wgpu::Buffer,
    /// (x, dy) stored channels-last: only for the implicit GEMM (see
    /// `band::weight_grad_reads_channels_last`).
    pub cl: [bool; 2],
    /// x and dy are the caller's f16 tensors (packed words): only for the depthwise entry's
    /// f16 image kernel (see `band::weight_grad_reads_f16`).
    pub f16: bool,
    /// x alone is the caller's f16 tensor: only for the implicit GEMM, whose input fill
    /// reads it (see `band::weight_grad_reads_f16_x`).
    pub x_f16: bool,
    /// dw is the caller's f16 tensor (packed words), written by the implicit GEMM's 1x1
    /// kernel itself (see `band::weight_grad_writes_f16_dw`).
    pub dw_f16: bool,
    /// dw is stored channels-last (`[K, R, S, C/groups]`), written in that order by the
    /// implicit GEMM's kernel itself (see `band::weight_grad_writes_channels_last`).
    pub dw_cl: bool,
    /// The bias gradient (`[K]`, f32) to write alongside dw where the entry's kernel can sum
    /// the dy it reads anyway (the GEMMs' dy panels); the entry sets `db_done` when it did.
    pub db: Option<wgpu::Buffer>,
    /// Set by an entry that wrote `db`.
    pub db_done: std::cell::Cell<bool>,
}

/// What a weight-gradient call reads and writes in the caller's own layout and element type
/// instead of contiguous f32 views (each flag only where the `band::weight_grad_*` query for
/// it holds; all false: contiguous f32 buffers).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct WgradNative {
    /// (x, dy) stored channels-last (see `band::weight_grad_reads_channels_last`).
    pub cl: [bool; 2],
    /// x and dy are f16 words (see `band::weight_grad_reads_f16`).
    pub f16: bool,
    /// x alone is f16 words (see `band::weight_grad_reads_f16_x`).
    pub x_f16: bool,
    /// dw is f16 words (see `band::weight_grad_writes_f16_dw`).
    pub dw_f16: bool,
    /// dw is stored channels-last (see `band::weight_grad_writes_channels_last`).
    pub dw_cl: bool,
}

/// The weight-gradient table, in the heuristic's order of preference.
pub(crate) static TABLE: Table<Conv2dProblem, WgradArgs> = Table {
    op: Operation::WeightGrad,
    entries: &[
        depthwise::WEIGHT_GRAD,
        direct::WEIGHT_GRAD,
        implicit_gemm::WEIGHT_GRAD,
        im2col_gemm::WEIGHT_GRAD_1X1,
        im2col_gemm::WEIGHT_GRAD,
    ],
};

/// The rule of every entry but the direct one: tensors within one storage binding.
pub(crate) fn unwindowed(ctx: &Context, p: &Conv2dProblem) -> Result<(), Reason> {
    fit_one_binding(ctx, p)
}

/// Weight gradient `dw` (`[K, C/g, R, S]`) of the forward `p` from `x` and `dy`; tensors
/// beyond one binding run in bands (`conv::band`). With `db` (f32 `[K]`), the entry may
/// write the bias gradient too: returns whether it did (else the caller runs it apart).
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    x: &wgpu::Buffer,
    dy: &wgpu::Buffer,
    dw: &wgpu::Buffer,
    db: Option<&wgpu::Buffer>,
    algorithm: Algorithm,
    native: WgradNative,
) -> Result<bool> {
    crate::conv::band::weight_grad(ctx, enc, p, (x, dy, dw, db), algorithm, native)
}
