//! Input gradient (and transposed convolution): the algorithm table, the padding-mode fold
//! and the windowed path for tensors larger than one binding.
//!
//! Every entry computes the gradient of a zero-padded problem (its *core*): with reflect,
//! replicate or circular padding, the gradient of the explicitly padded input is computed in
//! bounded scratch and folded back onto `dx` by `pad_fold` (the adjoint of the padding).
//! Entries check the caller's problem (through its core) and encode the core.
//!
//! | entry | runs | heuristic picks it when |
//! |---|---|---|
//! | [`gemm1x1`] | a GEMM of the weights with `dy` in place | always when it runs |
//! | [`depthwise`] | the depthwise forward kernel on `dy`, kernel rotated (stride 1, no multiplier) | always when it runs |
//! | [`direct`] | the gather kernel (phase kernel for strided layers on CPU adapters); windows over large tensors | tiny reductions; strided layers with few channels on CPU adapters; tensors beyond one binding |
//! | [`implicit_gemm`] | the implicit GEMM on `dy` (stride 1), or on `dy` + a scatter (strided 1x1) | >= 8 output channels per group |
//! | [`implicit_gemm_tiled`] | the workgroup-memory implicit GEMM on `dy` (stride 1) | never (timed by the tuner on GPUs) |
//! | [`im2col_gemm`] | im2col GEMM on `dy` (stride 1), else a GEMM + `col2im` | otherwise |

pub(crate) mod depthwise;
pub(crate) mod direct;
pub(crate) mod gemm1x1;
pub(crate) mod im2col_gemm;
pub(crate) mod implicit_gemm;
pub(crate) mod implicit_gemm_tiled;
pub(crate) mod phase;

use crate::context::Context;
use crate::conv::table::{Entry, Operation, Reason, Table};
use crate::conv::Algorithm;
use crate::error::Result;
use crate::gpu::memory::ScratchBuffer;
use crate::gpu::{launch, max_window_elems, u32_of, Bind};
use crate::kernels::pad_fold::{PadFoldParams, PadFoldSpec};
use crate::kernels::{k, KernelDef};
use crate::params::{numel, Conv2dProblem, PaddingMode};
use crate::tensor::DType;

/// The buffers an entry reads and writes: `dy` from element `dy_off`, `dx` from element 0.
pub(crate) struct DgradArgs {
    pub dy: wgpu::Buffer,
    pub dy_off: usize,
    pub w: wgpu::Buffer,
    pub bias: Option<wgpu::Buffer>,
    pub dx: wgpu::Buffer,
    /// (dy, dx) stored channels-last: only for the implicit GEMM's forward path (see
    /// `band::input_grad_reads_channels_last`).
    pub cl: [bool; 2],
    /// dy and dx are the caller's f16 tensors (packed words): only for the depthwise entry's
    /// f16 image kernel (see `band::input_grad_reads_f16`).
    pub f16: bool,
    /// dx alone is the caller's f16 tensor: only for the implicit GEMM's strided-1x1 scatter,
    /// which stores f16 itself (see `band::input_grad_writes_f16_dx`).
    pub dx_f16: bool,
}

/// What an input-gradient call reads and writes in the caller's own layout and element type
/// instead of contiguous f32 views (each flag only where the `band::input_grad_*` query for
/// it holds; all false: contiguous f32 buffers).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct DgradNative {
    /// (dy, dx) stored channels-last (see `band::input_grad_reads_channels_last`).
    pub cl: [bool; 2],
    /// dy and dx are f16 words (see `band::input_grad_reads_f16`).
    pub f16: bool,
    /// dx alone is f16 words (see `band::input_grad_writes_f16_dx`).
    pub dx_f16: bool,
}

/// The input-gradient table, in the heuristic's order of preference.
pub(crate) static TABLE: Table<Conv2dProblem, DgradArgs> = Table {
    op: Operation::InputGrad,
    entries: ENTRIES,
};

/// The transposed convolution: the same entries, with a bias.
pub(crate) static TRANSPOSED: Table<Conv2dProblem, DgradArgs> = Table {
    op: Operation::Transposed,
    entries: ENTRIES,
};

const ENTRIES: &[Entry<Conv2dProblem, DgradArgs>] = &[
    gemm1x1::INPUT_GRAD,
    depthwise::INPUT_GRAD,
    direct::INPUT_GRAD,
    implicit_gemm::INPUT_GRAD,
    implicit_gemm_tiled::INPUT_GRAD,
    im2col_gemm::INPUT_GRAD,
];

/// Does the problem read padded positions through a non-zero padding mode?
pub(crate) fn needs_fold(p: &Conv2dProblem) -> bool {
    p.mode != PaddingMode::Zeros && p.pad.iter().any(|&v| v > 0)
}

/// The same convolution on the explicitly padded input (zero padding of 0): its input
/// gradient is the gradient of the padded tensor, which `pad_fold` folds back.
pub(crate) fn padded_problem(p: &Conv2dProblem) -> Conv2dProblem {
    Conv2dProblem {
        h: p.h + (p.pad[0] + p.pad[1]) as usize,
        w: p.w + (p.pad[2] + p.pad[3]) as usize,
        pad: [0; 4],
        mode: PaddingMode::Zeros,
        ..*p
    }
}

/// The zero-padded problem the entries compute: `p` itself, or with a non-zero padding
/// mode the same convolution on the explicitly padded input.
pub(crate) fn core(p: &Conv2dProblem) -> Conv2dProblem {
    if needs_fold(p) {
        padded_problem(p)
    } else {
        *p
    }
}

/// Is the work split into windows (only the direct entry does that)? When a tensor, or the
/// padded gradient of one image, exceeds one storage binding.
pub(crate) fn windowed(ctx: &Context, p: &Conv2dProblem) -> bool {
    let max = ctx.limits().max_storage_buffer_binding_size;
    let pp = padded_problem(p);
    let padded_image = if needs_fold(p) { p.c * pp.h * pp.w } else { 0 };
    [p.x_shape(), p.w_shape(), p.y_shape()]
        .iter()
        .any(|s| numel(s) as u64 * 4 > max)
        || padded_image > max_window_elems(ctx)
}

/// The rule of every entry but the direct one: no windows.
pub(crate) fn unwindowed(ctx: &Context, p: &Conv2dProblem) -> Result<(), Reason> {
    if windowed(ctx, p) {
        return Err(
            "a tensor (or the padded gradient of one image) exceeds one storage \
                    binding; only the direct algorithm splits it into windows"
                .into(),
        );
    }
    Ok(())
}

/// Input gradient `dx` (`[N, C, H, W]`) of the forward `p` from `dy` (`[N, K, Ho, Wo]`);
/// with `bias` (length C) this is the transposed convolution of `dy` (`transposed` names the
/// operation in errors). Tensors beyond one binding run in bands (`conv::band`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    dy: &wgpu::Buffer,
    w: &wgpu::Buffer,
    bias: Option<&wgpu::Buffer>,
    dx: &wgpu::Buffer,
    algorithm: Algorithm,
    transposed: bool,
    native: DgradNative,
) -> Result<()> {
    crate::conv::band::input_grad(
        ctx,
        enc,
        p,
        (dy, w, bias, dx),
        algorithm,
        transposed,
        native,
    )
}

/// Records the input gradient of `p`, whose tensors fit one binding each, with `entry`:
/// its core directly, or with a non-zero padding mode the gradient of the padded input in
/// bounded scratch folded back onto `dx`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode_whole(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    entry: &Entry<Conv2dProblem, DgradArgs>,
    dy: &wgpu::Buffer,
    w: &wgpu::Buffer,
    bias: Option<&wgpu::Buffer>,
    dx: &wgpu::Buffer,
    native: DgradNative,
) -> Result<()> {
    let DgradNative { cl, f16, dx_f16 } = native;
    let args = |dy_off: usize, bias: Option<&wgpu::Buffer>, dx: &wgpu::Buffer| DgradArgs {
        dy: dy.clone(),
        dy_off,
        w: w.clone(),
        bias: bias.cloned(),
        dx: dx.clone(),
        cl: [false; 2],
        f16: false,
        dx_f16: false,
    };
    if (f16 && (needs_fold(p) || entry.algorithm != Algorithm::Depthwise))
        || (dx_f16 && (needs_fold(p) || entry.algorithm != Algorithm::ImplicitGemm))
    {
        // `band::input_grad_reads_f16` / `input_grad_writes_f16_dx` said otherwise: never
        // read f16 words as f32 or write f32 values into f16 words.
        return Err(crate::error::Error::library_bug(
            "recording an input gradient",
            "f16 operands for an entry that reads or writes f32",
        ));
    }
    if !needs_fold(p) {
        return (entry.encode)(
            ctx,
            enc,
            p,
            &DgradArgs {
                cl,
                f16,
                dx_f16,
                ..args(0, bias, dx)
            },
        );
    }
    // The bias only comes with the transposed convolution, which never meets a padding
    // mode (conv_transpose2d pads with zeros).
    fold_padded(ctx, enc, p, dx, false, |enc, sub, dy_off, scratch| {
        (entry.encode)(ctx, enc, sub, &args(dy_off, None, scratch))
    })
}

/// The input gradient of `p` (reflect / replicate / circular padding) onto `dx`: `grad`
/// records the gradient of the explicitly padded input for a chunk of images (the padded
/// problem `sub` of those images, dy from element `dy_off`) into bounded scratch, which
/// `pad_fold` (`pad_fold_f16` for f16 elements, `f16`) folds back onto `dx`.
pub(crate) fn fold_padded(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    dx: &wgpu::Buffer,
    f16: bool,
    mut grad: impl FnMut(&mut wgpu::CommandEncoder, &Conv2dProblem, usize, &wgpu::Buffer) -> Result<()>,
) -> Result<()> {
    let dtype = if f16 { DType::F16 } else { DType::F32 };
    let pp = padded_problem(p);
    let per_image = dtype.storage_bytes(p.c * pp.h * pp.w).next_multiple_of(4);
    let budget = ctx
        .scratch_budget()
        .min(ctx.limits().max_storage_buffer_binding_size);
    let images = ((budget / per_image.max(1)) as usize).clamp(1, p.n);
    let scratch = ScratchBuffer::new(
        ctx,
        enc,
        dtype.storage_bytes(images * p.c * pp.h * pp.w),
        "wgconv padded input gradient",
    )?;
    let mut n0 = 0;
    while n0 < p.n {
        let nb = images.min(p.n - n0);
        let sub = Conv2dProblem { n: nb, ..pp };
        grad(enc, &sub, n0 * p.k * p.oh * p.ow, &scratch.buffer)?;
        let total = nb * p.c * p.h * p.w;
        let dst_off = u32_of(n0 * p.c * p.h * p.w, "elements")?;
        let fold = (nb * p.c, total, dst_off);
        let (src, dst) = (Bind::whole(&scratch.buffer), Bind::whole(dx));
        if f16 {
            pad_fold_as::<k::PadFoldF16>(ctx, enc, p, fold, src, dst)?;
        } else {
            pad_fold(ctx, enc, p, fold, src, dst)?;
        }
        n0 += nb;
    }
    Ok(())
}

/// Records `pad_fold`: `planes` planes of the gradient of the explicitly padded `p` (in
/// `src`) folded onto dx (`dst`, from element `dst_off`), `total` elements in all.
pub(crate) fn pad_fold(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    fold: (usize, usize, u32),
    src: Bind<'_>,
    dst: Bind<'_>,
) -> Result<()> {
    pad_fold_as::<k::PadFold>(ctx, enc, p, fold, src, dst)
}

/// [`pad_fold`] with kernel `K` (`pad_fold`, or `pad_fold_f16` on f16 buffers).
fn pad_fold_as<K: KernelDef<Params = PadFoldParams, Spec = PadFoldSpec>>(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    (planes, total, dst_off): (usize, usize, u32),
    src: Bind<'_>,
    dst: Bind<'_>,
) -> Result<()> {
    let pp = padded_problem(p);
    let u = PadFoldParams {
        planes: u32_of(planes, "planes")?,
        h: u32_of(p.h, "height")?,
        w: u32_of(p.w, "width")?,
        hp: u32_of(pp.h, "height")?,
        wp: u32_of(pp.w, "width")?,
        top: u32_of(p.pad[0] as usize, "padding")?,
        left: u32_of(p.pad[2] as usize, "padding")?,
        bottom: u32_of(p.pad[1] as usize, "padding")?,
        right: u32_of(p.pad[3] as usize, "padding")?,
        total: u32_of(total, "elements")?,
        dst_off,
        _p1: 0,
    };
    let spec = PadFoldSpec {
        PAD_MODE: p.mode.code(),
        ..Default::default()
    };
    launch::<K>(ctx, enc, &spec, &u, &[src, dst], total as u64)
}
