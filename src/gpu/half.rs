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
use crate::gpu::layout;
use crate::gpu::memory::{copy_flat_at_of, create_buffer, ScratchBuffer};
use crate::gpu::{launch_linear, max_window_elems, u32_of, window, Bind};
use crate::kernels::f16_convert::{F16ConvertParams, F16ConvertSpec};
use crate::kernels::k;
use crate::tensor::{DType, MemoryFormat, Tensor};

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

/// An f32 view of a tensor for the f32 kernels, in contiguous memory order: the tensor's
/// own buffer (contiguous f32 tensors) or an f32 contiguous scratch copy (f16 tensors,
/// converted; channels-last tensors, reordered by [`crate::gpu::layout`]), kept alive until
/// the call is recorded.
pub(crate) struct F32View {
    pub(crate) buffer: wgpu::Buffer,
    /// The view keeps the tensor's channels-last order (see [`input_in`]).
    pub(crate) cl: bool,
    /// The view is the f16 tensor's own words, for a kernel that reads (writes) f16 itself
    /// (see [`input_f16`]).
    pub(crate) f16: bool,
    _scratch: Vec<ScratchBuffer>,
}

impl F32View {
    /// The tensor's own buffer as the view (no copy): in its format order when `cl`, its
    /// f16 words when `f16`.
    fn own(t: &Tensor, cl: bool, f16: bool) -> Self {
        F32View {
            buffer: t.raw().clone(),
            cl,
            f16,
            _scratch: Vec::new(),
        }
    }

    /// A buffer of the library's own (a cached f32 copy) as a contiguous f32 view.
    fn own_buffer(buffer: wgpu::Buffer) -> Self {
        F32View {
            buffer,
            cl: false,
            f16: false,
            _scratch: Vec::new(),
        }
    }

    /// The buffer the f32 kernels bind.
    pub(crate) fn buf(&self) -> &wgpu::Buffer {
        &self.buffer
    }
}

/// The contiguous f32 view of input `t`: its buffer, or scratch filled by `f16_unpack`
/// and/or the format conversion recorded into `enc`.
pub(crate) fn input(ctx: &Context, enc: &mut wgpu::CommandEncoder, t: &Tensor) -> Result<F32View> {
    view(ctx, enc, t, true, false)
}

/// [`input`] keeping a channels-last tensor's order when `keep_cl` (for kernels that read it
/// in place): only f16 is converted then.
pub(crate) fn input_in(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    t: &Tensor,
    keep_cl: bool,
) -> Result<F32View> {
    view(ctx, enc, t, true, keep_cl)
}

/// [`input_in`] of an f16 tensor as its own words when `keep_f16` (for kernels that read
/// f16 themselves; a channels-last one only with `keep_cl`): no conversion at all then.
pub(crate) fn input_native(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    t: &Tensor,
    keep_cl: bool,
    keep_f16: bool,
) -> Result<F32View> {
    let cl = t.storage_format() == MemoryFormat::ChannelsLast;
    if keep_f16 && t.dtype() == DType::F16 && (keep_cl || !cl) {
        return Ok(F32View::own(t, cl, true));
    }
    input_in(ctx, enc, t, keep_cl)
}

/// [`input`] of a parameter (weights, a bias): an f16 or channels-last tensor the library
/// can track (see `Tensor::content_key`) is converted once, in a submission of its own, into
/// an f32 contiguous buffer that the packed-weight cache keeps (its budget, its eviction: a
/// write to the tensor makes a new version); later calls bind that buffer without any
/// conversion. Untrackable tensors, a cache budget of 0 and copies beyond the budget are
/// converted per call as by [`input`].
pub(crate) fn param(ctx: &Context, enc: &mut wgpu::CommandEncoder, t: &Tensor) -> Result<F32View> {
    let cache = &ctx.inner.weights;
    let key = t
        .content_key()
        .filter(|_| needs_copy(t) && cache.budget() > 0);
    let Some(key) = key else {
        return input(ctx, enc, t);
    };
    // The layout slot of an f32 contiguous copy (packed-weight layouts are short lists of
    // sizes; this one cannot be one of them), and the format it was made from.
    let layout = vec![
        u64::MAX,
        (t.storage_format() == MemoryFormat::ChannelsLast) as u64,
    ];
    if let Some(buffer) = cache.get_buffer(&key, &layout) {
        return Ok(F32View::own_buffer(buffer));
    }
    let bytes = DType::F32.storage_bytes(t.numel());
    let buffer = create_buffer(ctx, bytes, "wgconv f32 parameters")?;
    let size = buffer.size();
    let mut own = ctx.encoder("wgconv parameter conversion");
    let v = input(ctx, &mut own, t)?;
    own.copy_buffer_to_buffer(v.buf(), 0, &buffer, 0, bytes);
    ctx.submit_internal(own)?;
    drop(v);
    if !cache.insert_buffer(ctx, &key, layout, &buffer, size) {
        // Not kept: this call's copy, freed when the view drops.
        ctx.inner
            .allocated
            .fetch_sub(size, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(F32View::own_buffer(buffer))
}

/// [`output`] (not loaded) of a contiguous f16 tensor as its own words when `keep_f16` (for
/// kernels that store f16 themselves): [`finish`] has nothing left to do then.
pub(crate) fn output_f16(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    t: &Tensor,
    keep_f16: bool,
) -> Result<F32View> {
    if keep_f16 && t.dtype() == DType::F16 && t.storage_format() == MemoryFormat::Contiguous {
        return Ok(F32View::own(t, false, true));
    }
    output(ctx, enc, t, false)
}

/// The tensor's own buffer as a view without any conversion, for an operand the kernels
/// take from elsewhere (the packed weights of the implicit GEMM: cache or `w_src`); bound
/// only as a placeholder, never read as f32.
pub(crate) fn unconverted(t: &Tensor) -> F32View {
    F32View::own(t, false, false)
}

/// [`output`] keeping a channels-last tensor's order when `keep_cl`.
pub(crate) fn output_in(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    t: &Tensor,
    keep_cl: bool,
) -> Result<F32View> {
    view(ctx, enc, t, false, keep_cl)
}

/// The contiguous f32 view output `t` is computed into: its buffer, or f32 scratch that
/// [`finish`] converts into `t`. With `load`, the scratch starts with `t`'s values (outputs
/// that accumulate).
pub(crate) fn output(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    t: &Tensor,
    load: bool,
) -> Result<F32View> {
    view(ctx, enc, t, load, false)
}

/// Does `t` need an f32 contiguous copy (f16, or not contiguous)?
pub(crate) fn needs_copy(t: &Tensor) -> bool {
    t.dtype() != DType::F32 || t.storage_format() != MemoryFormat::Contiguous
}

fn view(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    t: &Tensor,
    load: bool,
    keep_cl: bool,
) -> Result<F32View> {
    let cl = t.storage_format() == MemoryFormat::ChannelsLast;
    let swap = cl && !keep_cl;
    if t.dtype() == DType::F32 && !swap {
        return Ok(F32View::own(t, cl, false));
    }
    let n = t.numel();
    let bytes = DType::F32.storage_bytes(n);
    let mut scratch = Vec::new();
    // The contiguous f32 values (when loading) before the format conversion.
    let mut f32_src = None;
    if load {
        f32_src = Some(match t.dtype() {
            DType::F16 => {
                let s = unpack_scratch(ctx, enc, t.raw(), n)?;
                let b = s.buffer.clone();
                scratch.push(s);
                b
            }
            _ => t.raw().clone(),
        });
    }
    let buffer = if swap {
        let out = ScratchBuffer::new(ctx, enc, bytes, "wgconv contiguous view")?;
        if let Some(src) = &f32_src {
            let shape = t.shape4("channels-last tensor")?;
            layout::swap(
                ctx,
                enc,
                src,
                &out.buffer,
                shape,
                MemoryFormat::ChannelsLast,
            )?;
        }
        let b = out.buffer.clone();
        scratch.push(out);
        b
    } else if let Some(b) = f32_src.filter(|_| !scratch.is_empty()) {
        b
    } else {
        let out = ScratchBuffer::new(ctx, enc, bytes, "wgconv f16 as f32")?;
        let b = out.buffer.clone();
        scratch.push(out);
        b
    };
    Ok(F32View {
        buffer,
        cl: cl && !swap,
        f16: false,
        _scratch: scratch,
    })
}

/// The contiguous f16 words of f16 tensor `t` for kernels with f16 arithmetic: its own
/// buffer, or for a channels-last tensor a contiguous f16 copy (through f32 scratch,
/// reordered; exact both ways). An output (`load == false`) gets scratch that
/// [`finish_f16`] writes back.
pub(crate) fn f16_contiguous(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    t: &Tensor,
    load: bool,
) -> Result<F32View> {
    if t.storage_format() == MemoryFormat::Contiguous {
        return Ok(F32View::own(t, false, true));
    }
    let n = t.numel();
    let words = ScratchBuffer::new(ctx, enc, DType::F16.storage_bytes(n), "wgconv f16 view")?;
    let mut scratch = Vec::new();
    if load {
        let v = view(ctx, enc, t, true, false)?;
        pack(ctx, enc, &v.buffer, &words.buffer, n)?;
        scratch.extend(v._scratch);
    }
    let buffer = words.buffer.clone();
    scratch.push(words);
    Ok(F32View {
        buffer,
        cl: false,
        f16: true,
        _scratch: scratch,
    })
}

/// Writes the contiguous f16 results of `v` (from [`f16_contiguous`]) into the f16 tensor
/// `t`: nothing when `v` is `t`'s own buffer, else the reorder into `t`'s format.
pub(crate) fn finish_f16(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    v: &F32View,
    t: &Tensor,
) -> Result<()> {
    if v.buffer == *t.raw() {
        return Ok(());
    }
    let n = t.numel();
    let wide = unpack_scratch(ctx, enc, &v.buffer, n)?;
    let f32_view = F32View {
        buffer: wide.buffer.clone(),
        cl: false,
        f16: false,
        _scratch: vec![wide],
    };
    finish(ctx, enc, &f32_view, t)
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
    convert(ctx, enc, src, &s.buffer, n, false)?;
    Ok(s)
}

/// Writes the contiguous f32 results of `v` into the output `t`: nothing for a contiguous
/// f32 output (computed in place), else the format conversion and/or the rounding to f16.
pub(crate) fn finish(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    v: &F32View,
    t: &Tensor,
) -> Result<()> {
    if !needs_copy(t) || v.f16 {
        return Ok(());
    }
    let n = t.numel();
    // A view in the tensor's own order needs at most the rounding.
    let same_order = v.cl == (t.storage_format() == MemoryFormat::ChannelsLast);
    match (t.dtype(), t.storage_format()) {
        (DType::F32, _) if same_order => Ok(()),
        (DType::F16, _) if same_order => pack(ctx, enc, &v.buffer, t.raw(), n),
        (DType::F16, _) => {
            let s = ScratchBuffer::new(ctx, enc, DType::F32.storage_bytes(n), "wgconv format")?;
            let shape = t.shape4("channels-last tensor")?;
            layout::swap(
                ctx,
                enc,
                &v.buffer,
                &s.buffer,
                shape,
                MemoryFormat::Contiguous,
            )?;
            pack(ctx, enc, &s.buffer, t.raw(), n)
        }
        _ => {
            let shape = t.shape4("channels-last tensor")?;
            layout::swap(
                ctx,
                enc,
                &v.buffer,
                t.raw(),
                shape,
                MemoryFormat::Contiguous,
            )
        }
    }
}

/// Rounds `n` f32 values of `src` into the f16 words of `dst`.
pub(crate) fn pack(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    src: &wgpu::Buffer,
    dst: &wgpu::Buffer,
    n: usize,
) -> Result<()> {
    convert(ctx, enc, src, dst, n, true)
}

/// Records the conversion of `n` elements from `src` to `dst` (`pack`: f32 to words; else
/// words to f32), in windows of at most one storage binding: the full words four at a time
/// (`f16_unpack4` / `f16_pack4`, vector accesses), a last odd element and words short of a
/// group of four one at a time.
fn convert(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    src: &wgpu::Buffer,
    dst: &wgpu::Buffer,
    n: usize,
    pack: bool,
) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let n32 = u32_of(n, "f16 tensor elements")?;
    let words = n.div_ceil(2);
    // Each chunk's f32 side (2 elements per word) fits one binding; chunks of whole groups.
    let chunk = (max_window_elems(ctx) / 2).max(1);
    // Vector groups need windows whose offsets are multiples of 4 elements on both sides:
    // binding offsets aligned to 16 bytes and chunks of whole groups.
    let vectors = chunk >= 4
        && ctx
            .limits()
            .min_storage_buffer_offset_alignment
            .is_multiple_of(16);
    let (chunk, vec_words) = if vectors {
        (chunk / 4 * 4, n / 2 / 4 * 4)
    } else {
        (chunk, 0)
    };
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
        let binds = [src_b, dst_b];
        let vh = hi.min(vec_words).max(lo);
        // CPU adapters: the vector part from a verbatim image copy of its source (a copy,
        // then texel loads instead of per-lane storage-buffer loads).
        let img = if ctx.cpu_kernels() && vh > lo {
            let (dtype, buf) = if pack {
                (DType::F32, src)
            } else {
                (DType::F16, src)
            };
            copy_flat_at_of(
                ctx,
                enc,
                (buf, 2 * lo),
                2 * (vh - lo),
                dtype,
                "wgconv f16 conversion",
            )?
        } else {
            None
        };
        if let Some((img, tw)) = &img {
            let mut params = F16ConvertParams {
                n: n32,
                w_lo: u32_of(lo, "f16 tensor words")?,
                w_hi: u32_of(vh, "f16 tensor words")?,
                src_off,
                dst_off,
                tw_shift: tw.trailing_zeros(),
                ..Default::default()
            };
            let total = (vh - lo).div_ceil(4) as u64;
            let spec = F16ConvertSpec::default();
            let set = |p: &mut F16ConvertParams, base| p.base = base;
            let binds = [Bind::Image(&img.view), dst_b];
            if pack {
                launch_linear::<k::F16PackImage>(ctx, enc, &spec, &mut params, set, &binds, total)?;
            } else {
                launch_linear::<k::F16UnpackImage>(
                    ctx,
                    enc,
                    &spec,
                    &mut params,
                    set,
                    &binds,
                    total,
                )?;
            }
        }
        let from_vec = if img.is_some() { vh } else { lo };
        for (from, to, per) in [(from_vec, vh, 4), (vh, hi, 1)] {
            if to <= from {
                continue;
            }
            let mut params = F16ConvertParams {
                n: n32,
                w_lo: u32_of(from, "f16 tensor words")?,
                w_hi: u32_of(to, "f16 tensor words")?,
                src_off,
                dst_off,
                ..Default::default()
            };
            let total = (to - from).div_ceil(per) as u64;
            let spec = F16ConvertSpec::default();
            let set = |p: &mut F16ConvertParams, base| p.base = base;
            match (pack, per) {
                (false, 4) => launch_linear::<k::F16Unpack4>(
                    ctx,
                    enc,
                    &spec,
                    &mut params,
                    set,
                    &binds,
                    total,
                )?,
                (true, 4) => {
                    launch_linear::<k::F16Pack4>(ctx, enc, &spec, &mut params, set, &binds, total)?
                }
                (false, _) => {
                    launch_linear::<k::F16Unpack>(ctx, enc, &spec, &mut params, set, &binds, total)?
                }
                (true, _) => {
                    launch_linear::<k::F16Pack>(ctx, enc, &spec, &mut params, set, &binds, total)?
                }
            }
        }
        lo = hi;
    }
    Ok(())
}
