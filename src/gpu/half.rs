//! f16 tensors on the f32 kernels: every operation on [`DType::F16`] tensors converts its
//! f16 operands into f32 scratch (`f16_unpack`, exact), runs the f32 kernels of the chosen
//! algorithm on that scratch (f32 arithmetic, f32 accumulation), and rounds each result once
//! into the f16 output (`f16_pack`, round to nearest even, overflow to ±infinity).
//!
//! The f32 copies are scratch from the context's pool (returned once the call is
//! recorded), each as large as the f32 tensor would be: an f16 operand whose f32 copy
//! exceeds the device's `maxBufferSize` is refused with
//! [`ErrorKind::ExceedsLimit`](crate::ErrorKind::ExceedsLimit) (`max_buffer_size`). Copies
//! beyond one storage binding are converted in windows, and the f32 kernels then run them in
//! bands like any large f32 tensor.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::gpu::memory::ScratchBuffer;
use crate::gpu::{launch_linear, max_window_elems, u32_of, window};
use crate::kernels::f16_convert::{F16ConvertParams, F16ConvertSpec};
use crate::kernels::k;
use crate::tensor::{DType, Tensor};

/// The common element type of `tensors` (named operands; `None` entries are skipped), or a
/// [`DTypeMismatch`](crate::ErrorKind::DTypeMismatch) naming the first operand that differs
/// from the first one.
pub(crate) fn common_dtype(tensors: &[(&'static str, Option<&Tensor>)]) -> Result<DType> {
    let mut it = tensors
        .iter()
        .filter_map(|(n, t)| t.map(|t| (*n, t.dtype())));
    let Some((_, first)) = it.next() else {
        return Ok(DType::F32);
    };
    for (name, d) in it {
        if d != first {
            return Err(Error::dtype_mismatch(name, first, d));
        }
    }
    Ok(first)
}

/// An f32 view of a tensor for the f32 kernels: the tensor's own buffer (f32 tensors) or an
/// f32 scratch copy (f16 tensors), kept alive until the call is recorded.
pub(crate) struct F32View {
    pub(crate) buffer: wgpu::Buffer,
    _scratch: Option<ScratchBuffer>,
}

impl F32View {
    /// The buffer the f32 kernels bind.
    pub(crate) fn buf(&self) -> &wgpu::Buffer {
        &self.buffer
    }
}

/// The f32 view of input `t`: its buffer, or (f16) an f32 scratch copy filled by
/// `f16_unpack` recorded into `enc`.
pub(crate) fn input(ctx: &Context, enc: &mut wgpu::CommandEncoder, t: &Tensor) -> Result<F32View> {
    view(ctx, enc, t, true)
}

/// The f32 view output `t` is computed into: its buffer, or (f16) f32 scratch that
/// [`finish`] rounds into `t`. With `load`, the scratch starts with `t`'s values (outputs
/// that accumulate).
pub(crate) fn output(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    t: &Tensor,
    load: bool,
) -> Result<F32View> {
    view(ctx, enc, t, load)
}

fn view(ctx: &Context, enc: &mut wgpu::CommandEncoder, t: &Tensor, load: bool) -> Result<F32View> {
    match t.dtype() {
        DType::F32 => Ok(F32View {
            buffer: t.raw().clone(),
            _scratch: None,
        }),
        DType::F16 => {
            let n = t.numel();
            let s = if load {
                unpack_scratch(ctx, enc, t.raw(), n)?
            } else {
                ScratchBuffer::new(ctx, enc, DType::F32.storage_bytes(n), "wgconv f16 as f32")?
            };
            Ok(F32View {
                buffer: s.buffer.clone(),
                _scratch: Some(s),
            })
        }
    }
}

/// f32 scratch holding the `n` f16 values of `src` (packed words), converted by commands
/// recorded into `enc`.
pub(crate) fn unpack_scratch(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    src: &wgpu::Buffer,
    n: usize,
) -> Result<ScratchBuffer> {
    let s = ScratchBuffer::new(ctx, enc, DType::F32.storage_bytes(n), "wgconv f16 as f32")?;
    convert::<k::F16Unpack>(ctx, enc, src, &s.buffer, n)?;
    Ok(s)
}

/// Rounds the f32 results of `v` into the f16 output `t` (nothing for f32 outputs, which
/// were computed in place).
pub(crate) fn finish(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    v: &F32View,
    t: &Tensor,
) -> Result<()> {
    match t.dtype() {
        DType::F32 => Ok(()),
        DType::F16 => convert::<k::F16Pack>(ctx, enc, &v.buffer, t.raw(), t.numel()),
    }
}

/// Records the conversion of `n` elements from `src` to `dst` (`K` = unpack: words to f32;
/// pack: f32 to words), in windows of at most one storage binding.
fn convert<K>(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    src: &wgpu::Buffer,
    dst: &wgpu::Buffer,
    n: usize,
) -> Result<()>
where
    K: crate::kernels::KernelDef<Params = F16ConvertParams, Spec = F16ConvertSpec>,
{
    if n == 0 {
        return Ok(());
    }
    let pack = K::KERNEL == crate::kernels::Kernel::F16Pack;
    let n32 = u32_of(n, "f16 tensor elements")?;
    let words = n.div_ceil(2);
    // Each chunk's f32 side (2 elements per word) fits one binding.
    let chunk = (max_window_elems(ctx) / 2).max(1);
    let mut lo = 0usize;
    while lo < words {
        let hi = (lo + chunk).min(words);
        let (f_lo, f_hi) = (2 * lo, (2 * hi).min(n));
        let (wb, w_off) = window(ctx, if pack { dst } else { src }, lo, hi)?;
        let (fb, f_off) = window(ctx, if pack { src } else { dst }, f_lo, f_hi)?;
        let (src_b, src_off, dst_b, dst_off) = if pack {
            (fb, f_off, wb, w_off)
        } else {
            (wb, w_off, fb, f_off)
        };
        let mut params = F16ConvertParams {
            n: n32,
            w_lo: u32_of(lo, "f16 tensor words")?,
            w_hi: u32_of(hi, "f16 tensor words")?,
            src_off,
            dst_off,
            ..Default::default()
        };
        launch_linear::<K>(
            ctx,
            enc,
            &F16ConvertSpec::default(),
            &mut params,
            |p, base| p.base = base,
            &[src_b, dst_b],
            (hi - lo) as u64,
        )?;
        lo = hi;
    }
    Ok(())
}
