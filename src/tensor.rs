//! [`Tensor`]: an f32 array in device memory with a row-major shape.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use crate::context::Context;
use crate::error::{Error, ErrorKind, Result};

/// A device buffer whose size is accounted in [`Context::allocated_bytes`].
pub(crate) struct DeviceBuffer {
    pub(crate) buffer: wgpu::Buffer,
    ctx: Context,
    /// Wrapped from the caller: not counted, never destroyed by us.
    external: bool,
    /// Identity and content version for caches derived from the contents (packed weights):
    /// `version` changes with every write the library orders ([`Tensor::write`]); `volatile`
    /// marks buffers that may change behind the library's back (caller-owned buffers, buffers
    /// handed out by [`Tensor::buffer`], outputs recorded into a caller's encoder), which are
    /// never cached.
    id: u64,
    version: AtomicU64,
    volatile: AtomicBool,
}

/// Source of [`DeviceBuffer`] identities.
static NEXT_BUFFER_ID: AtomicU64 = AtomicU64::new(1);

/// What a cache of data derived from a tensor's contents keys on: see
/// [`Tensor::content_key`].
#[derive(Clone)]
pub(crate) struct ContentKey {
    pub id: u64,
    pub version: u64,
    /// Dead once every tensor sharing the buffer is dropped.
    pub alive: Weak<DeviceBuffer>,
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        if !self.external {
            self.ctx
                .inner
                .allocated
                .fetch_sub(self.buffer.size(), Ordering::Relaxed);
        }
    }
}

impl DeviceBuffer {
    /// Whether the contents may change without the library knowing (see [`ContentKey`]).
    pub(crate) fn is_volatile(&self) -> bool {
        self.volatile.load(Ordering::Acquire)
    }

    /// Allocates a storage buffer of `bytes` (rounded up to 4, at least 4).
    pub(crate) fn new(ctx: &Context, bytes: u64, label: &str) -> Result<Self> {
        let size = bytes.max(4).div_ceil(4) * 4;
        let max = ctx.limits().max_buffer_size;
        if size > max {
            return Err(Error::exceeds_limit("max_buffer_size", size, max));
        }
        let buffer = ctx.scoped("allocating a buffer", || {
            ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })?;
        ctx.inner.allocated.fetch_add(size, Ordering::Relaxed);
        Ok(DeviceBuffer {
            buffer,
            ctx: ctx.clone(),
            external: false,
            id: NEXT_BUFFER_ID.fetch_add(1, Ordering::Relaxed),
            version: AtomicU64::new(0),
            volatile: AtomicBool::new(false),
        })
    }
}

/// Staging storage buffer for kernels that fill a [`DeviceImage`]: texel `(x, y)` of rows
/// `y_lo <= y < y_hi` at vec4 `(y - y_lo) * row + x` (`row` a multiple of 16 texels, so rows
/// are 256-byte aligned for the copy). On lavapipe a `textureStore` costs ~2.5x a vec4
/// storage-buffer store plus the copy. The buffer holds at most as many rows as fit one
/// storage binding; taller images are filled in row ranges (`fill`).
pub(crate) struct ImageStaging {
    pub(crate) buf: DeviceBuffer,
    /// Texels per staging row.
    pub(crate) row: u32,
    /// Image rows per range (a multiple of 8 unless the image is shorter).
    chunk: u32,
}

impl ImageStaging {
    /// Staging for an image of `rows` rows of `width` texels.
    pub(crate) fn new(ctx: &Context, width: u32, rows: u32) -> Result<Self> {
        let row = width.max(1).div_ceil(16) * 16;
        let row_bytes = row as u64 * DeviceImage::TEXEL;
        let max = ctx.limits().max_storage_buffer_binding_size;
        let fit = (max / row_bytes).min(u32::MAX as u64) as u32;
        let chunk = if fit >= rows.max(1) {
            rows.max(1)
        } else {
            fit / 8 * 8
        };
        if chunk == 0 {
            return Err(Error::exceeds_limit(
                "max_storage_buffer_binding_size (image staging rows)",
                8 * row_bytes,
                max,
            ));
        }
        let buf = DeviceBuffer::new(ctx, row_bytes * chunk as u64, "wgconv image staging")?;
        Ok(ImageStaging { buf, row, chunk })
    }

    /// Fills rows `[0, rows)` (`width` texels each) of `img`: for each row range
    /// `[y_lo, y_hi)`, `record(encoder, y_lo, y_hi, staging)` records the kernel writing it,
    /// then the range is copied into the image.
    pub(crate) fn fill(
        &self,
        ctx: &Context,
        enc: &mut wgpu::CommandEncoder,
        img: &DeviceImage,
        (width, rows): (u32, u32),
        mut record: impl FnMut(&mut wgpu::CommandEncoder, u32, u32, &wgpu::Buffer) -> Result<()>,
    ) -> Result<()> {
        let mut y_lo = 0;
        while y_lo < rows {
            let y_hi = (y_lo + self.chunk).min(rows);
            record(enc, y_lo, y_hi, &self.buf.buffer)?;
            self.copy_to(ctx, enc, img, (y_lo, width, y_hi - y_lo))?;
            y_lo = y_hi;
        }
        Ok(())
    }

    /// Records the copy of staging rows `[0, rows)` into rows `[y0, y0 + rows)` of `img`.
    fn copy_to(
        &self,
        ctx: &Context,
        enc: &mut wgpu::CommandEncoder,
        img: &DeviceImage,
        rows: (u32, u32, u32),
    ) -> Result<()> {
        ctx.scoped("copying a staged image", || {
            img.copy_rows_from(
                enc,
                &self.buf.buffer,
                (0, self.row * DeviceImage::TEXEL as u32),
                rows,
            )
        })
    }
}

/// A 2-D `rgba32float` storage image (scratch of the image GEMM) whose size is accounted in
/// [`Context::allocated_bytes`], like [`DeviceBuffer`].
pub(crate) struct DeviceImage {
    pub(crate) view: wgpu::TextureView,
    pub(crate) texture: wgpu::Texture,
    pub(crate) bytes: u64,
    ctx: Context,
}

impl Drop for DeviceImage {
    fn drop(&mut self) {
        self.ctx
            .inner
            .allocated
            .fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl DeviceImage {
    /// Bytes per texel of `rgba32float`.
    pub(crate) const TEXEL: u64 = 16;

    /// Records one copy of `rows` rows of `width` texels from `buf` (starting at byte
    /// `offset`, rows `bytes_per_row` apart: a multiple of 256 when `rows > 1`) into image
    /// rows `y0..y0 + rows`. The caller wraps it in an error scope.
    pub(crate) fn copy_rows_from(
        &self,
        enc: &mut wgpu::CommandEncoder,
        buf: &wgpu::Buffer,
        (offset, bytes_per_row): (u64, u32),
        (y0, width, rows): (u32, u32, u32),
    ) {
        self.copy_rect_from(enc, buf, (offset, bytes_per_row), (0, y0, width, rows));
    }

    /// [`DeviceImage::copy_rows_from`] into the rectangle of `width` x `rows` texels at
    /// texel `(x0, y0)`.
    pub(crate) fn copy_rect_from(
        &self,
        enc: &mut wgpu::CommandEncoder,
        buf: &wgpu::Buffer,
        (offset, bytes_per_row): (u64, u32),
        (x0, y0, width, rows): (u32, u32, u32, u32),
    ) {
        if rows == 0 || width == 0 {
            return;
        }
        enc.copy_buffer_to_texture(
            wgpu::TexelCopyBufferInfo {
                buffer: buf,
                layout: wgpu::TexelCopyBufferLayout {
                    offset,
                    bytes_per_row: (rows > 1).then_some(bytes_per_row),
                    rows_per_image: None,
                },
            },
            wgpu::TexelCopyTextureInfo {
                texture: &self.texture,
                mip_level: 0,
                origin: wgpu::Origin3d { x: x0, y: y0, z: 0 },
                aspect: wgpu::TextureAspect::All,
            },
            wgpu::Extent3d {
                width,
                height: rows,
                depth_or_array_layers: 1,
            },
        );
    }

    /// Records the copy of `texels` contiguous texels of `buf` (from byte `offset`) into the
    /// image row after row (the image width times 16 bytes must be a multiple of 256): one
    /// copy for the full rows and one for the last partial row. The caller wraps it in an
    /// error scope.
    pub(crate) fn copy_flat_from(
        &self,
        enc: &mut wgpu::CommandEncoder,
        buf: &wgpu::Buffer,
        offset: u64,
        texels: usize,
    ) {
        let width = self.texture.width() as usize;
        let row_bytes = width as u64 * Self::TEXEL;
        let (full, rem) = (texels / width, texels % width);
        self.copy_rows_from(
            enc,
            buf,
            (offset, row_bytes as u32),
            (0, width as u32, full as u32),
        );
        self.copy_rows_from(
            enc,
            buf,
            (offset + full as u64 * row_bytes, row_bytes as u32),
            (full as u32, rem as u32, 1),
        );
    }

    /// Allocates a `width` x `height` image usable as a read-only or write-only storage
    /// binding and as a copy destination.
    pub(crate) fn new(ctx: &Context, width: u32, height: u32, label: &str) -> Result<Self> {
        let max = ctx.limits().max_texture_dimension_2d;
        if width.max(height) > max {
            return Err(Error::exceeds_limit(
                "max_texture_dimension_2d",
                width.max(height) as u64,
                max as u64,
            ));
        }
        let (width, height) = (width.max(1), height.max(1));
        let texture = ctx.scoped("allocating a storage image", || {
            ctx.device().create_texture(&wgpu::TextureDescriptor {
                label: Some(label),
                size: wgpu::Extent3d {
                    width,
                    height,
                    depth_or_array_layers: 1,
                },
                mip_level_count: 1,
                sample_count: 1,
                dimension: wgpu::TextureDimension::D2,
                format: wgpu::TextureFormat::Rgba32Float,
                usage: wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::COPY_DST,
                view_formats: &[],
            })
        })?;
        let view = texture.create_view(&Default::default());
        let bytes = width as u64 * height as u64 * Self::TEXEL;
        ctx.inner.allocated.fetch_add(bytes, Ordering::Relaxed);
        Ok(DeviceImage {
            view,
            texture,
            bytes,
            ctx: ctx.clone(),
        })
    }
}

/// An f32 tensor in device memory (NCHW for activations, `[K, C/g, R, S]` for weights,
/// `[M, N]` for matrices), row-major.
///
/// Cloning is cheap and shares the buffer. A tensor keeps its [`Context`] alive.
#[derive(Clone)]
pub struct Tensor {
    buf: Arc<DeviceBuffer>,
    shape: Vec<usize>,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tensor")
            .field("shape", &self.shape)
            .finish()
    }
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

impl Tensor {
    /// Uploads `data` (row-major) as a tensor of `shape`.
    ///
    /// # Errors
    /// [`ErrorKind::ShapeMismatch`] when `data.len()` is not the product of `shape`;
    /// [`ErrorKind::ExceedsLimit`] when the tensor is larger than the device's
    /// `maxBufferSize`.
    pub fn from_slice(ctx: &Context, data: &[f32], shape: &[usize]) -> Result<Self> {
        let n = checked_numel(shape)?;
        if data.len() != n {
            return Err(Error::shape_mismatch(
                "data length",
                format!("{n} (shape {shape:?})"),
                data.len().to_string(),
            ));
        }
        let t = Self::uninit(ctx, shape)?;
        if n > 0 {
            ctx.scoped("uploading a tensor", || {
                ctx.queue()
                    .write_buffer(&t.buf.buffer, 0, bytemuck::cast_slice(data));
            })?;
        }
        Ok(t)
    }

    /// A tensor of `shape` filled with zeros.
    pub fn zeros(ctx: &Context, shape: &[usize]) -> Result<Self> {
        // wgpu zero-initialises new buffers.
        Self::uninit(ctx, shape)
    }

    /// A tensor of `shape` filled with `value` (e.g. NaN to poison an output in tests).
    pub fn full(ctx: &Context, shape: &[usize], value: f32) -> Result<Self> {
        let n = checked_numel(shape)?;
        if value.to_bits() == 0 {
            return Self::zeros(ctx, shape);
        }
        let t = Self::uninit(ctx, shape)?;
        // Upload in bounded pieces so filling a huge tensor does not need a huge host copy.
        const CHUNK: usize = 1 << 20;
        let block = vec![value; n.min(CHUNK)];
        let mut done = 0usize;
        while done < n {
            let len = (n - done).min(CHUNK);
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

    /// Allocates without uploading (contents are zero).
    pub(crate) fn uninit(ctx: &Context, shape: &[usize]) -> Result<Self> {
        let n = checked_numel(shape)?;
        let buf = DeviceBuffer::new(ctx, (n as u64) * 4, "wgconv tensor")?;
        Ok(Tensor {
            buf: Arc::new(buf),
            shape: shape.to_vec(),
        })
    }

    /// Wraps a caller's buffer (usage must include `STORAGE | COPY_SRC | COPY_DST`; size at
    /// least `4 * numel(shape)`). The buffer is shared, not copied.
    pub fn from_buffer(ctx: &Context, buffer: wgpu::Buffer, shape: &[usize]) -> Result<Self> {
        let n = checked_numel(shape)?;
        let need = (n as u64) * 4;
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
            }),
            shape: shape.to_vec(),
        })
    }

    /// The same data under another shape with the same number of elements (shares the
    /// buffer, like PyTorch's `view`).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
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
        })
    }

    /// Overwrites the tensor's contents with `data` (row-major, `numel()` values). Ordered
    /// with the work submitted before and after it on the queue.
    pub fn write(&self, data: &[f32]) -> Result<()> {
        if data.len() != self.numel() {
            return Err(Error::shape_mismatch(
                "data length",
                format!("{} (shape {:?})", self.numel(), self.shape),
                data.len().to_string(),
            ));
        }
        if data.is_empty() {
            return Ok(());
        }
        let ctx = &self.buf.ctx;
        let r = ctx.scoped("writing a tensor", || {
            ctx.queue()
                .write_buffer(&self.buf.buffer, 0, bytemuck::cast_slice(data));
        });
        // Queue-ordered: work submitted after this call sees the new contents. The version
        // moves after the write is staged, so a cache entry is never older than its label.
        self.buf.version.fetch_add(1, Ordering::AcqRel);
        r
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    /// The underlying wgpu buffer (its size may exceed `4 * numel`).
    ///
    /// The caller may write the buffer by any means after this, so the tensor (and every
    /// clone or reshape sharing the buffer) is excluded from the library's caches of data
    /// derived from tensor contents (packed weights) from then on.
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buf.volatile.store(true, Ordering::Release);
        &self.buf.buffer
    }

    /// The buffer, for the library's own bindings (does not mark it volatile).
    pub(crate) fn raw(&self) -> &wgpu::Buffer {
        &self.buf.buffer
    }

    /// Marks the tensor as written by work recorded into a caller's encoder: its contents
    /// change when (and if) the caller submits, which the library cannot order, so it is
    /// never cached from then on.
    pub(crate) fn mark_volatile(&self) {
        self.buf.volatile.store(true, Ordering::Release);
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

    /// Copies the tensor to the host, blocking until the GPU work it depends on is done.
    pub fn read(&self) -> Result<Vec<f32>> {
        pollster::block_on(self.read_async())
    }

    /// Copies the tensor to the host. The returned future resolves once the copy is done.
    /// On native backends the device is polled until then.
    pub async fn read_async(&self) -> Result<Vec<f32>> {
        let ctx = &self.buf.ctx;
        let n = self.numel();
        if n == 0 {
            return Ok(Vec::new());
        }
        let bytes = (n as u64) * 4;
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
            bytemuck::pod_collect_to_vec::<u8, f32>(&view)
        };
        staging.unmap();
        Ok(out)
    }
}
