//! [`Tensor`]: an f32 or f16 array in device memory with a row-major shape.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::context::Context;
use crate::error::{Error, ErrorKind, Result};
use crate::gpu::memory::{ContentKey, DeviceBuffer, NEXT_BUFFER_ID};

/// The element type of a [`Tensor`].
///
/// - `F32`: IEEE binary32, one value per 4 bytes (the default of every constructor without
///   a `dtype` argument).
/// - `F16`: IEEE binary16, two values per 32-bit word (element `2i` in the low 16 bits of
///   word `i`, element `2i + 1` in the high 16 bits; an odd-length tensor's last word has a
///   zero high half). Values created from `f32` are rounded to nearest, ties to even, values
///   beyond the f16 range become ±infinity. Every operation on f16 tensors reads the f16
///   values exactly, computes in f32 (f32 accumulation) and rounds each result once to f16
///   (see [`Context::conv2d`](crate::Context::conv2d)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DType {
    /// 32-bit float.
    #[default]
    F32,
    /// 16-bit float (IEEE binary16), stored two per 32-bit word.
    F16,
}

impl DType {
    /// Lowercase name: `f32`, `f16`.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
        }
    }

    /// Parses `f32` / `float32` / `f16` / `float16` / `half`.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "f32" | "float32" => Ok(DType::F32),
            "f16" | "float16" | "half" => Ok(DType::F16),
            _ => Err(Error::invalid_param("dtype", name, "expected f32 or f16")),
        }
    }

    /// Bytes of device memory holding `n` elements: `4n` for f32, `4·ceil(n/2)` for f16
    /// (whole 32-bit words).
    pub fn storage_bytes(self, n: usize) -> u64 {
        match self {
            DType::F32 => n as u64 * 4,
            DType::F16 => (n as u64).div_ceil(2) * 4,
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The memory order of a 4-D [`Tensor`] (PyTorch's `memory_format`). Shapes stay logical
/// (`[N, C, H, W]` for activations, `[K, C/g, R, S]` for weights, `[Cin, Cout/g, R, S]` for
/// transposed-convolution weights); the format says in which order the elements are stored.
///
/// - `Contiguous`: row-major in the logical order: NCHW activations, KCRS weights (the
///   default of every constructor).
/// - `ChannelsLast`: the second axis stored last: NHWC activations (`x[n, c, h, w]` at
///   `((n * H + h) * W + w) * C + c`), KRSC weights (`w[k, c, r, s]` at
///   `((k * R + r) * S + s) * Cg + c`). PyTorch's `torch.channels_last`.
///
/// Every convolution operation and gradient takes either format for each of its 4-D
/// operands, independently; an output allocated by an operation has the format of the
/// operand it mirrors (`y` and `dx` that of `x` / `dy`, `dw` that of `w`). Data given to and
/// read from a tensor ([`Tensor::from_slice`], [`Tensor::read`]) are in memory order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MemoryFormat {
    /// Row-major in the logical order (NCHW, KCRS).
    #[default]
    Contiguous,
    /// Channels stored last (NHWC, KRSC).
    ChannelsLast,
}

impl MemoryFormat {
    /// Lowercase name: `contiguous`, `channels_last`.
    pub fn name(self) -> &'static str {
        match self {
            MemoryFormat::Contiguous => "contiguous",
            MemoryFormat::ChannelsLast => "channels_last",
        }
    }

    /// Parses `contiguous` / `nchw` / `kcrs` and `channels_last` / `nhwc` / `krsc` (the
    /// names of the fixture format's `layout` and `weight_layout` fields).
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "contiguous" | "nchw" | "kcrs" => Ok(MemoryFormat::Contiguous),
            "channels_last" | "nhwc" | "krsc" => Ok(MemoryFormat::ChannelsLast),
            _ => Err(Error::invalid_param(
                "memory format",
                name,
                "expected contiguous (nchw, kcrs) or channels_last (nhwc, krsc)",
            )),
        }
    }

    /// Flat memory index of logical element `[a, b, c, d]` of a 4-D tensor of `shape`.
    pub fn index(self, shape: [usize; 4], [a, b, c, d]: [usize; 4]) -> usize {
        let [_, nb, nc, nd] = shape;
        match self {
            MemoryFormat::Contiguous => ((a * nb + b) * nc + c) * nd + d,
            MemoryFormat::ChannelsLast => ((a * nc + c) * nd + d) * nb + b,
        }
    }

    /// Reorders host data of a 4-D `shape` from format `self` to format `to` (a copy; the
    /// identity when the formats agree).
    ///
    /// # Errors
    /// [`ErrorKind::ShapeMismatch`] when `data.len()` is not the product of `shape`.
    pub fn convert<T: Copy>(
        self,
        data: &[T],
        shape: [usize; 4],
        to: MemoryFormat,
    ) -> Result<Vec<T>> {
        check_data_len(data.len(), shape.iter().product(), &shape)?;
        if self == to {
            return Ok(data.to_vec());
        }
        let mut out = data.to_vec();
        for a in 0..shape[0] {
            for b in 0..shape[1] {
                for c in 0..shape[2] {
                    for d in 0..shape[3] {
                        let i = [a, b, c, d];
                        out[to.index(shape, i)] = data[self.index(shape, i)];
                    }
                }
            }
        }
        Ok(out)
    }
}

impl std::fmt::Display for MemoryFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// f16 values packed two per little-endian 32-bit word (the device layout of [`DType::F16`]).
fn pack_words(v: &[half::f16]) -> Vec<u32> {
    v.chunks(2)
        .map(|p| p[0].to_bits() as u32 | (p.get(1).map_or(0, |h| h.to_bits()) as u32) << 16)
        .collect()
}

/// The first `n` f16 values of packed words.
fn unpack_words(words: &[u32], n: usize) -> Vec<half::f16> {
    words
        .iter()
        .flat_map(|&w| [w as u16, (w >> 16) as u16])
        .take(n)
        .map(half::f16::from_bits)
        .collect()
}

/// A tensor in device memory (NCHW for activations, `[K, C/g, R, S]` for weights,
/// `[M, N]` for matrices), row-major, of element type [`DType::F32`] (the default) or
/// [`DType::F16`].
///
/// Cloning is cheap and shares the buffer. A tensor keeps its [`Context`] alive.
#[derive(Clone)]
pub struct Tensor {
    buf: Arc<DeviceBuffer>,
    shape: Vec<usize>,
    dtype: DType,
    format: MemoryFormat,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tensor")
            .field("shape", &self.shape)
            .field("dtype", &self.dtype)
            .field("format", &self.format)
            .finish()
    }
}

thread_local! {
    /// Inside an allocating call on this thread (see [`OwnRecording`]).
    static OWN_RECORDING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// While alive, the public `encode_*` calls on this thread record into an encoder the
/// library submits itself (an allocating call such as `Context::conv2d` creates one around
/// its recording), so [`caller_records`] marks nothing: the call's results stay cacheable and
/// poolable, and so do its inputs.
pub(crate) struct OwnRecording(bool);

impl OwnRecording {
    pub(crate) fn enter() -> Self {
        crate::icache::enter_level();
        OwnRecording(OWN_RECORDING.with(|c| c.replace(true)))
    }
}

impl Drop for OwnRecording {
    fn drop(&mut self) {
        // The input images this recording filled are cached if it was submitted.
        crate::icache::leave_level();
        OWN_RECORDING.with(|c| c.set(self.0));
    }
}

/// What every public `encode_*` call does first, unless inside an [`OwnRecording`]: the
/// `written` tensors change when (and if) the caller submits, so they are never cached
/// ([`Tensor::mark_volatile`]); those and the `read` ones may be dropped before that, so
/// their buffers never go to the pool ([`Tensor::mark_caller_recorded`]).
pub(crate) fn caller_records(written: &[Option<&Tensor>], read: &[Option<&Tensor>]) {
    if OWN_RECORDING.with(|c| c.get()) {
        return;
    }
    written.iter().flatten().for_each(|t| t.mark_volatile());
    read.iter().flatten().for_each(|t| t.mark_caller_recorded());
}

fn checked_numel(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|n| n.checked_mul(4).is_some())
        .ok_or_else(|| {
            Error::shape_mismatch(
                "tensor shape",
                "an element count that fits in memory",
                format!("{shape:?}"),
            )
        })
}

fn check_data_len(len: usize, n: usize, shape: &[usize]) -> Result<()> {
    if len != n {
        return Err(Error::shape_mismatch(
            "data length",
            format!("{n} (shape {shape:?})"),
            len.to_string(),
        ));
    }
    Ok(())
}

impl Tensor {
    /// Uploads `data` (row-major) as an f32 tensor of `shape`.
    ///
    /// # Errors
    /// [`ErrorKind::ShapeMismatch`] when `data.len()` is not the product of `shape`;
    /// [`ErrorKind::ExceedsLimit`] when the tensor is larger than the device's
    /// `maxBufferSize`.
    pub fn from_slice(ctx: &Context, data: &[f32], shape: &[usize]) -> Result<Self> {
        Self::from_f32(ctx, data, shape, DType::F32)
    }

    /// Uploads `data` (row-major) as a tensor of `shape` and element type `dtype`: as they
    /// are for [`DType::F32`], rounded to nearest (ties to even) for [`DType::F16`] (values
    /// beyond ±65504 become ±infinity, as `half::f16::from_f32` does).
    ///
    /// # Errors
    /// As [`Tensor::from_slice`].
    pub fn from_f32(ctx: &Context, data: &[f32], shape: &[usize], dtype: DType) -> Result<Self> {
        let n = checked_numel(shape)?;
        check_data_len(data.len(), n, shape)?;
        let t = Self::uninit_of(ctx, shape, dtype)?;
        t.upload_f32(data, "uploading a tensor")?;
        Ok(t)
    }

    /// Uploads f16 `data` (row-major) as an f16 tensor of `shape`, bit for bit (no
    /// conversion).
    ///
    /// # Errors
    /// As [`Tensor::from_slice`].
    pub fn from_f16(ctx: &Context, data: &[half::f16], shape: &[usize]) -> Result<Self> {
        let n = checked_numel(shape)?;
        check_data_len(data.len(), n, shape)?;
        let t = Self::uninit_of(ctx, shape, DType::F16)?;
        if n > 0 {
            let words = pack_words(data);
            ctx.scoped("uploading a tensor", || {
                ctx.queue()
                    .write_buffer(&t.buf.buffer, 0, bytemuck::cast_slice(&words));
            })?;
        }
        Ok(t)
    }

    /// Writes `data` (`numel` values) converted to the tensor's element type.
    fn upload_f32(&self, data: &[f32], what: &str) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let ctx = &self.buf.ctx;
        match self.dtype {
            DType::F32 => ctx.scoped(what, || {
                ctx.queue()
                    .write_buffer(&self.buf.buffer, 0, bytemuck::cast_slice(data));
            }),
            DType::F16 => {
                let h: Vec<half::f16> = data.iter().map(|&v| half::f16::from_f32(v)).collect();
                let words = pack_words(&h);
                ctx.scoped(what, || {
                    ctx.queue()
                        .write_buffer(&self.buf.buffer, 0, bytemuck::cast_slice(&words));
                })
            }
        }
    }

    /// An f32 tensor of `shape` filled with zeros.
    pub fn zeros(ctx: &Context, shape: &[usize]) -> Result<Self> {
        Self::zeros_of(ctx, shape, DType::F32)
    }

    /// A tensor of `shape` and element type `dtype` filled with zeros.
    pub fn zeros_of(ctx: &Context, shape: &[usize], dtype: DType) -> Result<Self> {
        // wgpu zero-initialises new buffers.
        Self::uninit_of(ctx, shape, dtype)
    }

    /// An f32 tensor of `shape` filled with `value` (e.g. NaN to poison an output in tests).
    pub fn full(ctx: &Context, shape: &[usize], value: f32) -> Result<Self> {
        Self::full_of(ctx, shape, value, DType::F32)
    }

    /// A tensor of `shape` and element type `dtype` filled with `value` (rounded to f16 as in
    /// [`Tensor::from_f32`] for [`DType::F16`]).
    pub fn full_of(ctx: &Context, shape: &[usize], value: f32, dtype: DType) -> Result<Self> {
        let n = checked_numel(shape)?;
        let word = match dtype {
            DType::F32 => value.to_bits(),
            DType::F16 => {
                let h = half::f16::from_f32(value).to_bits() as u32;
                h | h << 16
            }
        };
        if word == 0 {
            return Self::zeros_of(ctx, shape, dtype);
        }
        let t = Self::uninit_of(ctx, shape, dtype)?;
        // Upload in bounded pieces so filling a huge tensor does not need a huge host copy.
        let words = (dtype.storage_bytes(n) / 4) as usize;
        const CHUNK: usize = 1 << 20;
        let block = vec![word; words.min(CHUNK)];
        let mut done = 0usize;
        while done < words {
            let len = (words - done).min(CHUNK);
            ctx.scoped("filling a tensor", || {
                ctx.queue().write_buffer(
                    &t.buf.buffer,
                    (done * 4) as u64,
                    bytemuck::cast_slice(&block[..len]),
                );
            })?;
            done += len;
        }
        Ok(t)
    }

    /// Allocates a tensor of `dtype` without uploading (contents are zero).
    pub(crate) fn uninit_of(ctx: &Context, shape: &[usize], dtype: DType) -> Result<Self> {
        let n = checked_numel(shape)?;
        let buf = DeviceBuffer::new(ctx, dtype.storage_bytes(n), "wgconv tensor")?;
        Ok(Tensor {
            buf: Arc::new(buf),
            shape: shape.to_vec(),
            dtype,
            format: MemoryFormat::Contiguous,
        })
    }

    /// Wraps a caller's buffer as an f32 tensor (usage must include
    /// `STORAGE | COPY_SRC | COPY_DST`; size at least `4 * numel(shape)`). The buffer is
    /// shared, not copied.
    pub fn from_buffer(ctx: &Context, buffer: wgpu::Buffer, shape: &[usize]) -> Result<Self> {
        Self::from_buffer_of(ctx, buffer, shape, DType::F32)
    }

    /// Wraps a caller's buffer holding elements of `dtype` in that type's device layout (see
    /// [`DType`]; usage must include `STORAGE | COPY_SRC | COPY_DST`; size at least
    /// [`DType::storage_bytes`] of `numel(shape)`). The buffer is shared, not copied.
    pub fn from_buffer_of(
        ctx: &Context,
        buffer: wgpu::Buffer,
        shape: &[usize],
        dtype: DType,
    ) -> Result<Self> {
        let n = checked_numel(shape)?;
        let need = dtype.storage_bytes(n);
        if buffer.size() < need {
            return Err(Error::shape_mismatch(
                "buffer size",
                format!("at least {need} bytes for shape {shape:?}"),
                format!("{} bytes", buffer.size()),
            ));
        }
        let usage = buffer.usage();
        let want = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST;
        if !usage.contains(want) {
            return Err(Error::invalid_param(
                "buffer usage",
                format!("{usage:?}"),
                "needs STORAGE | COPY_SRC | COPY_DST",
            ));
        }
        Ok(Tensor {
            buf: Arc::new(DeviceBuffer {
                buffer,
                ctx: ctx.clone(),
                external: true,
                id: NEXT_BUFFER_ID.fetch_add(1, Ordering::Relaxed),
                version: AtomicU64::new(0),
                volatile: AtomicBool::new(true),
                reusable: AtomicBool::new(false),
            }),
            shape: shape.to_vec(),
            dtype,
            format: MemoryFormat::Contiguous,
        })
    }

    /// The same data under another shape with the same number of elements (shares the
    /// buffer, like PyTorch's `view`).
    ///
    /// # Errors
    /// [`ErrorKind::ShapeMismatch`] when the element counts differ;
    /// [`ErrorKind::InvalidParam`] on a [`MemoryFormat::ChannelsLast`] tensor (whose storage
    /// is not in the logical order: view it with [`Tensor::with_format`] first, or convert it
    /// with [`Tensor::to_format`]).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if self.format != MemoryFormat::Contiguous {
            return Err(Error::invalid_param(
                "reshape",
                format!("{:?} of a {} tensor", shape, self.format),
                "only contiguous tensors can be reshaped (Tensor::with_format or \
                 Tensor::to_format first)",
            ));
        }
        let n = checked_numel(shape)?;
        if n != self.numel() {
            return Err(Error::shape_mismatch(
                "reshape",
                format!("{} elements (shape {:?})", self.numel(), self.shape),
                format!("{n} elements (shape {shape:?})"),
            ));
        }
        Ok(Tensor {
            buf: self.buf.clone(),
            shape: shape.to_vec(),
            dtype: self.dtype,
            format: MemoryFormat::Contiguous,
        })
    }

    /// The memory order of the tensor's elements ([`MemoryFormat::Contiguous`] unless set by
    /// [`Tensor::with_format`], [`Tensor::to_format`] or an operation's output).
    pub fn format(&self) -> MemoryFormat {
        self.format
    }

    /// The memory order the library's kernels see: [`MemoryFormat::Contiguous`] for a
    /// channels-last tensor whose storage order is the contiguous one too (one channel, or
    /// one pixel: `[N, 1, H, W]`, `[N, C, 1, 1]`, 1x1 weights `[K, C, 1, 1]`), so that no path
    /// converts or reorders it; else [`Tensor::format`].
    pub(crate) fn storage_format(&self) -> MemoryFormat {
        match (self.format, self.shape.as_slice()) {
            (MemoryFormat::ChannelsLast, &[_, c, h, w]) if c <= 1 || h * w <= 1 => {
                MemoryFormat::Contiguous
            }
            (f, _) => f,
        }
    }

    /// The same buffer read in memory format `format` (no data move): the storage is taken
    /// to hold the tensor's logical shape in that order. `Tensor::from_slice(ctx, nhwc_data,
    /// &[n, c, h, w])?.with_format(MemoryFormat::ChannelsLast)` uploads NHWC data.
    ///
    /// # Errors
    /// [`ErrorKind::ShapeMismatch`] when `format` is channels-last and the tensor is not 4-D.
    pub fn with_format(&self, format: MemoryFormat) -> Result<Tensor> {
        if format == MemoryFormat::ChannelsLast {
            self.shape4("channels-last tensor")?;
        }
        Ok(Tensor {
            buf: self.buf.clone(),
            shape: self.shape.clone(),
            dtype: self.dtype,
            format,
        })
    }

    /// The tensor converted to memory format `format` on the GPU (a new tensor; `self`
    /// shared when it already has that format).
    ///
    /// # Errors
    /// [`ErrorKind::ShapeMismatch`] when `format` is channels-last and the tensor is not
    /// 4-D; the errors of allocating and submitting.
    pub fn to_format(&self, format: MemoryFormat) -> Result<Tensor> {
        if format == self.format {
            return Ok(self.clone());
        }
        let shape = self.shape4("channels-last tensor")?;
        let ctx = self.context().clone();
        let mut enc = ctx.encoder("wgconv to_format");
        let out = Tensor::output(&ctx, &mut enc, &self.shape, self.dtype, format)?;
        crate::gpu::layout::convert_tensor(&ctx, &mut enc, self, &out, shape)?;
        ctx.submit(enc)?;
        Ok(out)
    }

    /// The output of an allocating call recording into `enc` (which the call submits
    /// itself) and writing every element: a pooled tensor buffer of its size when one is
    /// idle (stale contents), else a new buffer (see `DeviceBuffer::new_in`).
    pub(crate) fn output(
        ctx: &Context,
        enc: &mut wgpu::CommandEncoder,
        shape: &[usize],
        dtype: DType,
        format: MemoryFormat,
    ) -> Result<Tensor> {
        let n = checked_numel(shape)?;
        let buf = DeviceBuffer::new_in(ctx, enc, dtype.storage_bytes(n), "wgconv tensor")?;
        let t = Tensor {
            buf: Arc::new(buf),
            shape: shape.to_vec(),
            dtype,
            format: MemoryFormat::Contiguous,
        };
        if format == MemoryFormat::Contiguous {
            Ok(t)
        } else {
            t.with_format(format)
        }
    }

    /// Overwrites the tensor's contents with `data` (row-major, `numel()` values), converted
    /// to the tensor's element type as in [`Tensor::from_f32`]. Ordered with the work
    /// submitted before and after it on the queue.
    pub fn write(&self, data: &[f32]) -> Result<()> {
        check_data_len(data.len(), self.numel(), &self.shape)?;
        let r = self.upload_f32(data, "writing a tensor");
        // Queue-ordered: work submitted after this call sees the new contents. The version
        // moves after the write is staged, so a cache entry is never older than its label.
        self.buf.version.fetch_add(1, Ordering::AcqRel);
        r
    }

    /// Overwrites an f16 tensor's contents with `data` (row-major, `numel()` values), bit
    /// for bit. Ordered like [`Tensor::write`].
    ///
    /// # Errors
    /// [`ErrorKind::DTypeMismatch`] on an f32 tensor (write f32 data with
    /// [`Tensor::write`]); [`ErrorKind::ShapeMismatch`] when the length differs.
    pub fn write_f16(&self, data: &[half::f16]) -> Result<()> {
        if self.dtype != DType::F16 {
            return Err(Error::dtype_mismatch("write_f16", DType::F16, self.dtype));
        }
        check_data_len(data.len(), self.numel(), &self.shape)?;
        if data.is_empty() {
            return Ok(());
        }
        let ctx = &self.buf.ctx;
        let words = pack_words(data);
        let r = ctx.scoped("writing a tensor", || {
            ctx.queue()
                .write_buffer(&self.buf.buffer, 0, bytemuck::cast_slice(&words));
        });
        self.buf.version.fetch_add(1, Ordering::AcqRel);
        r
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Bytes of device memory holding the elements ([`DType::storage_bytes`] of `numel`).
    pub fn storage_bytes(&self) -> u64 {
        self.dtype.storage_bytes(self.numel())
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    /// The underlying wgpu buffer (its size may exceed [`Tensor::storage_bytes`]; f16 data
    /// in the layout described at [`DType::F16`]).
    ///
    /// The caller may write the buffer by any means after this, so the tensor (and every
    /// clone or reshape sharing the buffer) is excluded from the library's caches of data
    /// derived from tensor contents (packed weights) from then on.
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buf.volatile.store(true, Ordering::Release);
        self.buf.reusable.store(false, Ordering::Release);
        &self.buf.buffer
    }

    /// The buffer, for the library's own bindings (does not mark it volatile).
    pub(crate) fn raw(&self) -> &wgpu::Buffer {
        &self.buf.buffer
    }

    /// Marks the tensor as written by work recorded into a caller's encoder: its contents
    /// change when (and if) the caller submits, which the library cannot order, so it is
    /// never cached nor pooled from then on.
    pub(crate) fn mark_volatile(&self) {
        self.buf.volatile.store(true, Ordering::Release);
        self.buf.reusable.store(false, Ordering::Release);
    }

    /// Marks the tensor as bound into a caller's encoder (read or written): the caller may
    /// drop it before submitting, so its buffer must not go to the pool of tensor buffers,
    /// where a new tensor would take it and the caller's commands would then read or
    /// overwrite the new tensor's data.
    pub(crate) fn mark_caller_recorded(&self) {
        self.buf.reusable.store(false, Ordering::Release);
    }

    /// Identity and content version of the tensor's buffer for caches of derived data, or
    /// `None` when the contents may change without the library knowing (see
    /// [`Tensor::buffer`]).
    pub(crate) fn content_key(&self) -> Option<ContentKey> {
        if self.buf.volatile.load(Ordering::Acquire) {
            return None;
        }
        Some(ContentKey {
            id: self.buf.id,
            version: self.buf.version.load(Ordering::Acquire),
            alive: Arc::downgrade(&self.buf),
        })
    }
    /// The context the tensor lives in.
    pub fn context(&self) -> &Context {
        &self.buf.ctx
    }

    /// The shape as `[N, C, H, W]`, or a shape error naming `what`.
    pub(crate) fn shape4(&self, what: &'static str) -> Result<[usize; 4]> {
        <[usize; 4]>::try_from(self.shape.as_slice())
            .map_err(|_| Error::shape_mismatch(what, "a 4-D shape", format!("{:?}", self.shape)))
    }

    /// Same shape, different context check.
    pub(crate) fn check_ctx(&self, ctx: &Context, what: &'static str) -> Result<()> {
        if !self.buf.ctx.same(ctx) {
            return Err(Error::new(ErrorKind::WrongContext(what)));
        }
        Ok(())
    }

    /// Copies the tensor to the host as f32 values (f16 values converted exactly), blocking
    /// until the GPU work it depends on is done.
    pub fn read(&self) -> Result<Vec<f32>> {
        pollster::block_on(self.read_async())
    }

    /// Copies the tensor to the host as f32 values (f16 values converted exactly). The
    /// returned future resolves once the copy is done. On native backends the device is
    /// polled until then.
    pub async fn read_async(&self) -> Result<Vec<f32>> {
        let words = self.read_words().await?;
        Ok(match self.dtype {
            DType::F32 => bytemuck::cast_vec(words),
            DType::F16 => unpack_words(&words, self.numel())
                .into_iter()
                .map(f32::from)
                .collect(),
        })
    }

    /// Copies an f16 tensor to the host bit for bit, blocking until the GPU work it depends
    /// on is done.
    ///
    /// # Errors
    /// [`ErrorKind::DTypeMismatch`] on an f32 tensor (read it with [`Tensor::read`]).
    pub fn read_f16(&self) -> Result<Vec<half::f16>> {
        pollster::block_on(self.read_f16_async())
    }

    /// The future of [`Tensor::read_f16`].
    pub async fn read_f16_async(&self) -> Result<Vec<half::f16>> {
        if self.dtype != DType::F16 {
            return Err(Error::dtype_mismatch("read_f16", DType::F16, self.dtype));
        }
        let words = self.read_words().await?;
        Ok(unpack_words(&words, self.numel()))
    }

    /// The tensor's storage words (exactly [`Tensor::storage_bytes`], nothing past it).
    async fn read_words(&self) -> Result<Vec<u32>> {
        let ctx = &self.buf.ctx;
        let n = self.numel();
        if n == 0 {
            return Ok(Vec::new());
        }
        let bytes = self.storage_bytes();
        let staging = ctx.scoped("creating a readback buffer", || {
            let staging = ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgconv readback"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let mut enc = ctx
                .device()
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("wgconv readback"),
                });
            enc.copy_buffer_to_buffer(&self.buf.buffer, 0, &staging, 0, bytes);
            ctx.queue().submit([enc.finish()]);
            staging
        })?;
        ctx.inner.pool.count_allocation();
        let (tx, rx) = futures_intrusive::channel::shared::oneshot_channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        ctx.device()
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| {
                Error::new(ErrorKind::BufferMap(format!(
                    "waiting for the readback: {e}"
                )))
            })?;
        match rx.receive().await {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(Error::new(ErrorKind::BufferMap(e.to_string()))),
            None => {
                return Err(Error::new(ErrorKind::BufferMap(
                    "the map callback was dropped".into(),
                )))
            }
        }
        ctx.check_lost("reading a tensor")?;
        let out = {
            let view = staging
                .slice(..)
                .get_mapped_range()
                .map_err(|e| Error::new(ErrorKind::BufferMap(e.to_string())))?;
            bytemuck::pod_collect_to_vec::<u8, u32>(&view)
        };
        staging.unmap();
        Ok(out)
    }
}
