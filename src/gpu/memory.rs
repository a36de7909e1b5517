//! Device memory the library allocates: tensor buffers (accounted in
//! `Context::allocated_bytes`), scratch buffers and storage images (from the context's pool,
//! see `gpu::pool`), staging for images filled by kernels, and verbatim image copies of
//! buffers.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Weak;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::gpu::u32_of;
use crate::tensor::DType;

/// A device buffer whose size is accounted in [`Context::allocated_bytes`].
pub(crate) struct DeviceBuffer {
    pub(crate) buffer: wgpu::Buffer,
    pub(crate) ctx: Context,
    /// Wrapped from the caller: not counted, never destroyed by us.
    pub(crate) external: bool,
    /// Identity and content version for caches derived from the contents (packed weights):
    /// `version` changes with every write the library orders ([`Tensor::write`]); `volatile`
    /// marks buffers that may change behind the library's back (caller-owned buffers, buffers
    /// handed out by [`Tensor::buffer`], outputs recorded into a caller's encoder), which are
    /// never cached.
    pub(crate) id: u64,
    pub(crate) version: AtomicU64,
    pub(crate) volatile: AtomicBool,
    /// An output of an allocating call whose every use so far was recorded by the library
    /// into encoders it submits itself: when the last tensor sharing the buffer drops, the
    /// buffer goes back to the context's pool of tensor buffers instead of being destroyed
    /// (see `gpu::pool`). Cleared for good by [`Tensor::buffer`] and by every `encode_*`
    /// call binding the tensor.
    pub(crate) reusable: AtomicBool,
}

/// Source of [`DeviceBuffer`] identities.
pub(crate) static NEXT_BUFFER_ID: AtomicU64 = AtomicU64::new(1);

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
        // (Wrapped caller buffers and volatile ones are never reusable.)
        if self.reusable.load(Ordering::Acquire) {
            // Still counted in `allocated_bytes`, now as pooled.
            self.ctx
                .inner
                .pool
                .put_output(&self.ctx, self.buffer.clone());
            return;
        }
        // Cached bind groups would keep the buffer alive.
        self.ctx.inner.pool.forget_buffer(&self.buffer);
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

    /// Allocates a storage buffer of `bytes` (rounded up to 4, at least 4), zero-filled.
    pub(crate) fn new(ctx: &Context, bytes: u64, label: &str) -> Result<Self> {
        let buffer = create_buffer(ctx, bytes, label)?;
        Ok(Self::wrap(ctx, buffer, false))
    }

    /// A storage buffer of `bytes` (rounded up to 4, at least 4) for an output that the
    /// commands recorded into `enc` write in full: a pooled tensor buffer, whose stale
    /// contents those commands overwrite (filled with NaN by a command recorded into `enc`
    /// under `WGCONV_POISON_SCRATCH=1`), or a new one (zeros).
    ///
    /// Every operation writes every element of its outputs: the `encode_*` calls take
    /// caller-owned outputs of any contents, and their tests poison them with NaN.
    pub(crate) fn new_in(
        ctx: &Context,
        enc: &mut wgpu::CommandEncoder,
        bytes: u64,
        label: &str,
    ) -> Result<Self> {
        let size = storage_size(bytes);
        let Some(buffer) = ctx.inner.pool.take_output(size) else {
            return Ok(Self::wrap(ctx, create_buffer(ctx, size, label)?, true));
        };
        // Wrapped first: an error below returns the buffer to the pool.
        let b = Self::wrap(ctx, buffer, true);
        poison(ctx, enc, &b.buffer, size)?;
        Ok(b)
    }

    /// `reusable`: an output of an allocating call, whose buffer may return to the pool
    /// (tensors the caller creates are freed when dropped, as before the pool existed).
    fn wrap(ctx: &Context, buffer: wgpu::Buffer, reusable: bool) -> Self {
        DeviceBuffer {
            buffer,
            ctx: ctx.clone(),
            external: false,
            id: NEXT_BUFFER_ID.fetch_add(1, Ordering::Relaxed),
            version: AtomicU64::new(0),
            volatile: AtomicBool::new(false),
            reusable: AtomicBool::new(reusable),
        }
    }
}

/// `bytes` rounded up to a whole number of 4-byte words, at least one: the size of every
/// storage buffer the library creates.
fn storage_size(bytes: u64) -> u64 {
    bytes.max(4).div_ceil(4) * 4
}

/// Creates a storage buffer of `bytes` (rounded up to 4, at least 4), counted in
/// `allocated_bytes` (the caller subtracts it when it is destroyed). New buffers read as zeros.
pub(crate) fn create_buffer(ctx: &Context, bytes: u64, label: &str) -> Result<wgpu::Buffer> {
    let size = storage_size(bytes);
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
    ctx.inner.pool.count_allocation();
    ctx.inner.allocated.fetch_add(size, Ordering::Relaxed);
    Ok(buffer)
}

/// A scratch storage buffer from the context's pool (see `gpu::pool`): returns to the pool
/// when dropped, which launchers do once the commands using it are recorded. Its contents
/// are undefined unless made with [`ScratchBuffer::zeroed`].
pub(crate) struct ScratchBuffer {
    pub(crate) buffer: wgpu::Buffer,
    ctx: Context,
}

impl Drop for ScratchBuffer {
    fn drop(&mut self) {
        self.ctx
            .inner
            .pool
            .put_buffer(&self.ctx, self.buffer.clone());
    }
}

impl ScratchBuffer {
    /// A scratch buffer of `bytes` (rounded up to 4, at least 4) whose contents the caller
    /// writes before reading (filled with NaN under `WGCONV_POISON_SCRATCH=1`).
    pub(crate) fn new(
        ctx: &Context,
        enc: &mut wgpu::CommandEncoder,
        bytes: u64,
        label: &str,
    ) -> Result<Self> {
        let size = storage_size(bytes);
        let buffer = match ctx.inner.pool.take_buffer(size) {
            Some(b) => b,
            None => create_buffer(ctx, size, label)?,
        };
        let s = ScratchBuffer {
            buffer,
            ctx: ctx.clone(),
        };
        poison(ctx, enc, &s.buffer, size)?;
        Ok(s)
    }

    /// A scratch buffer of `bytes` reading as zeros (cleared by a command recorded into
    /// `enc`, before the caller's commands).
    pub(crate) fn zeroed(
        ctx: &Context,
        enc: &mut wgpu::CommandEncoder,
        bytes: u64,
        label: &str,
    ) -> Result<Self> {
        let size = storage_size(bytes);
        let buffer = match ctx.inner.pool.take_buffer(size) {
            Some(b) => b,
            None => create_buffer(ctx, size, label)?,
        };
        let s = ScratchBuffer {
            buffer,
            ctx: ctx.clone(),
        };
        ctx.scoped("clearing scratch", || enc.clear_buffer(&s.buffer, 0, None))?;
        Ok(s)
    }
}

/// Under `WGCONV_POISON_SCRATCH=1`, records filling the `size` bytes of `buffer` with NaN.
fn poison(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    buffer: &wgpu::Buffer,
    size: u64,
) -> Result<()> {
    if !ctx.inner.pool.poison() {
        return Ok(());
    }
    let nan = nan_buffer(ctx, size)?;
    ctx.scoped("poisoning scratch", || {
        enc.copy_buffer_to_buffer(&nan, 0, buffer, 0, size)
    })
}

/// A new buffer of `size` bytes (a multiple of 4) filled with NaN, for
/// `WGCONV_POISON_SCRATCH` (never pooled: nothing writes it after its upload, which lands
/// before any submission).
fn nan_buffer(ctx: &Context, size: u64) -> Result<wgpu::Buffer> {
    // A NaN as f32 whose halves are f16 NaNs too (poisons rgba16float images as well).
    let words = vec![0x7fc0_7fc0u32; (size / 4) as usize];
    ctx.scoped("poisoning scratch", || {
        let b = ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgconv scratch poison"),
            size,
            usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        ctx.queue()
            .write_buffer(&b, 0, bytemuck::cast_slice(&words));
        b
    })
}

/// Staging storage buffer for kernels that fill a [`DeviceImage`]: texel `(x, y)` of rows
/// `y_lo <= y < y_hi` at vec4 `(y - y_lo) * row + x` (`row` a multiple of 16 texels, so rows
/// are 256-byte aligned for the copy). On lavapipe a `textureStore` costs ~2.5x a vec4
/// storage-buffer store plus the copy. The buffer holds at most as many rows as fit one
/// storage binding; taller images are filled in row ranges (`fill`).
pub(crate) struct ImageStaging {
    pub(crate) buf: ScratchBuffer,
    /// Texels per staging row.
    pub(crate) row: u32,
    /// Image rows per range (a multiple of 8 unless the image is shorter).
    chunk: u32,
}

impl ImageStaging {
    /// Staging for an image of `rows` rows of `width` texels (the fill kernels write every
    /// texel the copies read).
    pub(crate) fn new(
        ctx: &Context,
        enc: &mut wgpu::CommandEncoder,
        width: u32,
        rows: u32,
    ) -> Result<Self> {
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
        let buf = ScratchBuffer::new(ctx, enc, row_bytes * chunk as u64, "wgconv image staging")?;
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

/// A 2-D `rgba32float` (or, for f16 data, `rgba16float`) storage image (scratch of the image kernels) from the context's pool
/// (see `gpu::pool`): returns to the pool when dropped, unless [`DeviceImage::retain`]ed by
/// a cache. Its contents are undefined: what a kernel reads, the launcher writes first.
pub(crate) struct DeviceImage {
    pub(crate) view: wgpu::TextureView,
    pub(crate) texture: wgpu::Texture,
    pub(crate) bytes: u64,
    ctx: Context,
    retained: AtomicBool,
}

impl Drop for DeviceImage {
    fn drop(&mut self) {
        let pool = &self.ctx.inner.pool;
        if self.retained.load(Ordering::Relaxed) {
            // Its owner (the packed-weight cache) accounts for it from now on.
            self.ctx
                .inner
                .allocated
                .fetch_sub(self.bytes, Ordering::Relaxed);
        } else {
            pool.put_image(
                &self.ctx,
                self.texture.clone(),
                self.view.clone(),
                self.bytes,
            );
        }
    }
}

impl DeviceImage {
    /// Bytes per texel of `rgba32float`.
    pub(crate) const TEXEL: u64 = 16;

    /// The texture format holding four values of `dtype` per texel.
    pub(crate) fn format_of(dtype: DType) -> wgpu::TextureFormat {
        match dtype {
            DType::F32 => wgpu::TextureFormat::Rgba32Float,
            DType::F16 => wgpu::TextureFormat::Rgba16Float,
        }
    }

    /// Bytes per texel of this image (16, or 8 for `rgba16float`).
    pub(crate) fn texel(&self) -> u64 {
        match self.texture.format() {
            wgpu::TextureFormat::Rgba16Float => 8,
            _ => Self::TEXEL,
        }
    }

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
        let row_bytes = width as u64 * self.texel();
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

    /// Keeps the image out of the pool when dropped: a cache holds its view from now on (and
    /// counts its bytes).
    pub(crate) fn retain(&self) {
        self.retained.store(true, Ordering::Relaxed);
    }

    /// A `width` x `height` image usable as a read-only storage binding and as a copy
    /// destination, from the pool or new; contents undefined (NaN under
    /// `WGCONV_POISON_SCRATCH=1`, filled by a copy recorded into `enc`).
    pub(crate) fn new(
        ctx: &Context,
        enc: &mut wgpu::CommandEncoder,
        width: u32,
        height: u32,
        label: &str,
    ) -> Result<Self> {
        Self::new_of(ctx, enc, width, height, DType::F32, label)
    }

    /// [`DeviceImage::new`] of four `dtype` values per texel ([`DeviceImage::format_of`]).
    pub(crate) fn new_of(
        ctx: &Context,
        enc: &mut wgpu::CommandEncoder,
        width: u32,
        height: u32,
        dtype: DType,
        label: &str,
    ) -> Result<Self> {
        Self::check_size(ctx, width, height)?;
        let (width, height) = (width.max(1), height.max(1));
        let format = Self::format_of(dtype);
        let img = match ctx.inner.pool.take_image(width, height, format) {
            Some((texture, view, bytes)) => DeviceImage {
                view,
                texture,
                bytes,
                ctx: ctx.clone(),
                retained: AtomicBool::new(false),
            },
            None => Self::create(ctx, width, height, format, label)?,
        };
        img.poison(ctx, enc)?;
        Ok(img)
    }

    /// [`DeviceImage::new`] for an image whose contents must outlive the recording that
    /// fills it (a cache entry filled in a submission of its own): a new image, never one
    /// from the pool, whose last user may have commands recorded into an encoder that is
    /// submitted later and would overwrite it.
    pub(crate) fn new_unshared(
        ctx: &Context,
        enc: &mut wgpu::CommandEncoder,
        width: u32,
        height: u32,
        label: &str,
    ) -> Result<Self> {
        Self::check_size(ctx, width, height)?;
        let img = Self::create(
            ctx,
            width.max(1),
            height.max(1),
            wgpu::TextureFormat::Rgba32Float,
            label,
        )?;
        img.poison(ctx, enc)?;
        Ok(img)
    }

    fn check_size(ctx: &Context, width: u32, height: u32) -> Result<()> {
        let max = ctx.limits().max_texture_dimension_2d;
        if width.max(height) > max {
            return Err(Error::exceeds_limit(
                "max_texture_dimension_2d",
                width.max(height) as u64,
                max as u64,
            ));
        }
        Ok(())
    }

    /// Under `WGCONV_POISON_SCRATCH=1`, records filling the image with NaN.
    fn poison(&self, ctx: &Context, enc: &mut wgpu::CommandEncoder) -> Result<()> {
        if !ctx.inner.pool.poison() {
            return Ok(());
        }
        let (width, height) = (self.texture.width(), self.texture.height());
        let pitch = (width as u64 * self.texel()).div_ceil(256) * 256;
        let nan = nan_buffer(ctx, pitch * height as u64)?;
        ctx.scoped("poisoning scratch", || {
            self.copy_rect_from(enc, &nan, (0, pitch as u32), (0, 0, width, height))
        })
    }

    fn create(
        ctx: &Context,
        width: u32,
        height: u32,
        format: wgpu::TextureFormat,
        label: &str,
    ) -> Result<Self> {
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
                format,
                usage: wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::COPY_DST,
                view_formats: &[],
            })
        })?;
        let view = texture.create_view(&Default::default());
        let bytes = width as u64
            * height as u64
            * format.block_copy_size(None).map_or(Self::TEXEL, u64::from);
        ctx.inner.pool.count_allocation();
        ctx.inner.allocated.fetch_add(bytes, Ordering::Relaxed);
        Ok(DeviceImage {
            view,
            texture,
            bytes,
            ctx: ctx.clone(),
            retained: AtomicBool::new(false),
        })
    }
}

/// Geometry of a verbatim image copy of `rows` tensor rows of `row_len` floats (`row_len` a
/// multiple of 4): `rows_per` rows side by side per texture row (so a texture row is a
/// multiple of 256 bytes and one copy fills the image), width and height in texels. Texel
/// `(row % rows_per) * row_len / 4 + q` of texture row `row / rows_per` holds columns
/// `4q..4q+3` of `row`. `None` beyond `maxTextureDimension2D` or the scratch budget.
pub(crate) fn flat_rows_geom(ctx: &Context, rows: usize, row_len: usize) -> Option<FlatRows> {
    flat_rows_geom_of(ctx, rows, row_len, DType::F32)
}

/// [`flat_rows_geom`] of rows of `dtype` values (an `rgba16float` image for f16).
pub(crate) fn flat_rows_geom_of(
    ctx: &Context,
    rows: usize,
    row_len: usize,
    dtype: DType,
) -> Option<FlatRows> {
    if row_len == 0 || !row_len.is_multiple_of(4) || rows == 0 {
        return None;
    }
    let elem = dtype.storage_bytes(2) as usize / 2;
    let d = ctx.limits().max_texture_dimension_2d as usize;
    let rows_per = 256 / gcd(row_len * elem, 256);
    let width = rows_per * row_len / 4;
    let height = rows.div_ceil(rows_per);
    let bytes = (width * height * 4 * elem) as u64;
    (width <= d && height <= d && bytes <= ctx.scratch_budget().max(4096)).then_some(FlatRows {
        rows_per,
        width,
        height,
        dtype,
    })
}

/// A verbatim image copy of tensor rows: see [`flat_rows_geom`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct FlatRows {
    /// Tensor rows per texture row.
    pub rows_per: usize,
    /// Image width and height in texels.
    pub width: usize,
    pub height: usize,
    /// The element type of the rows (and the image format).
    pub dtype: DType,
}

/// The image of [`flat_rows_geom`] `g` filled with `texels` texels of `buf`
/// from element `off` (one buffer-to-texture copy, plus one for a last partial texture row).
pub(crate) fn flat_rows_image(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    (buf, off): (&wgpu::Buffer, usize),
    texels: usize,
    g: FlatRows,
    label: &str,
) -> Result<DeviceImage> {
    let img = DeviceImage::new_of(
        ctx,
        enc,
        u32_of(g.width, "image width")?,
        u32_of(g.height, "image height")?,
        g.dtype,
        label,
    )?;
    let elem = g.dtype.storage_bytes(2) / 2;
    ctx.scoped("copying a tensor into an image", || {
        img.copy_flat_from(enc, buf, off as u64 * elem, texels)
    })?;
    Ok(img)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Texels per row of a flat image copy (16 KiB rows: a multiple of the 256-byte copy pitch;
/// a power of two).
const FLAT_TW: usize = 1024;

/// Copies the first `len` floats of `buf` verbatim into a new image of rows of `tw` texels
/// (float i at texel i / 4, channel i % 4; `tw` from [`flat_width`]): one buffer-to-texture
/// copy when `tw` divides the texel count, else one for the full rows and one for the last
/// partial row. `None` when it cannot (`len` not a multiple of 4, or an image beyond
/// `maxTextureDimension2D` or the scratch budget); returns the image and `tw`.
pub(crate) fn copy_flat(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    buf: &wgpu::Buffer,
    len: usize,
    label: &str,
) -> Result<Option<(DeviceImage, u32)>> {
    copy_flat_at(ctx, enc, (buf, 0), len, label)
}

/// Uniform fields `[tw, tw_shift, texels]` of a kernel reading the image of [`copy_flat_at`]
/// (`tw` its width in texels, a power of two).
pub(crate) fn flat_fields(img: &DeviceImage, tw: u32) -> Result<[u32; 3]> {
    let texels = u32_of(
        (img.bytes / img.texel()) as usize,
        "texels of a flat image copy",
    )?;
    Ok([tw, tw.trailing_zeros(), texels])
}

/// [`copy_flat`] of the floats `off..off + len` of `buf` (`off` a multiple of 4).
/// Texels per row of a flat image copy: a power of two (kernels index with shifts), at most
/// the texture limit.
fn flat_tw(ctx: &Context) -> usize {
    let d = ctx.limits().max_texture_dimension_2d as usize;
    FLAT_TW.min(1 << d.max(16).ilog2())
}

/// The width of the verbatim image copy of `texels` texels of `dtype`: the widest power of
/// two up to [`flat_tw`] that divides `texels`, when its rows are whole 256-byte copy
/// pitches and fit the texture limit: then one
/// buffer-to-texture copy fills the image, where rows of [`flat_tw`] texels need a second
/// copy for the last partial row (on lavapipe every copy command costs ~10 us on the queue
/// thread; driver notes section 15). Else [`flat_tw`].
fn flat_width(ctx: &Context, texels: usize, dtype: DType) -> usize {
    let tw = flat_tw(ctx);
    let d = ctx.limits().max_texture_dimension_2d as usize;
    let min = (256 / dtype.storage_bytes(4) as usize).max(1);
    let even = (1usize << texels.trailing_zeros().min(tw.trailing_zeros())).min(tw);
    if texels.is_multiple_of(tw) || even < min || texels / even > d {
        tw
    } else {
        even
    }
}

/// Can [`copy_flat_at`] copy `len` floats from element `off` (of a buffer holding them) into
/// an image: whole texels, within the texture limit and the scratch budget?
pub(crate) fn flat_image_fits(ctx: &Context, off: usize, len: usize) -> bool {
    flat_image_fits_of(ctx, off, len, DType::F32)
}

/// [`flat_image_fits`] for `dtype` values (an `rgba16float` image for f16).
pub(crate) fn flat_image_fits_of(ctx: &Context, off: usize, len: usize, dtype: DType) -> bool {
    let d = ctx.limits().max_texture_dimension_2d as usize;
    let tw = flat_tw(ctx);
    let rows = (len / 4).div_ceil(tw);
    let bytes = (tw * rows) as u64 * dtype.storage_bytes(4);
    len > 0
        && len.is_multiple_of(4)
        && off.is_multiple_of(4)
        && rows <= d
        && bytes <= ctx.scratch_budget().max(4096)
}

/// Can [`copy_flat_at_of`] copy `len` `dtype` values of `buf` from element `off`: the image
/// fits ([`flat_image_fits_of`]) and the range lies within the buffer?
pub(crate) fn flat_copy_fits_of(
    ctx: &Context,
    (buf, off): (&wgpu::Buffer, usize),
    len: usize,
    dtype: DType,
) -> bool {
    let elem = dtype.storage_bytes(2) / 2;
    flat_image_fits_of(ctx, off, len, dtype) && (off + len) as u64 * elem <= buf.size()
}

pub(crate) fn copy_flat_at(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    (buf, off): (&wgpu::Buffer, usize),
    len: usize,
    label: &str,
) -> Result<Option<(DeviceImage, u32)>> {
    copy_flat_at_of(ctx, enc, (buf, off), len, DType::F32, label)
}

/// [`copy_flat_at`] of `dtype` values (f16: an `rgba16float` image, read as f32 by the
/// texel loads).
pub(crate) fn copy_flat_at_of(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    (buf, off): (&wgpu::Buffer, usize),
    len: usize,
    dtype: DType,
    label: &str,
) -> Result<Option<(DeviceImage, u32)>> {
    copy_flat_in(ctx, enc, (buf, off), len, dtype, label, true)
}

/// [`copy_flat`] into rows of exactly [`flat_tw`] texels (1024 but for tiny texture limits),
/// for a kernel that indexes the image with that width as a constant.
pub(crate) fn copy_flat_wide(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    buf: &wgpu::Buffer,
    len: usize,
    label: &str,
) -> Result<Option<(DeviceImage, u32)>> {
    copy_flat_in(ctx, enc, (buf, 0), len, DType::F32, label, false)
}

/// [`copy_flat_at_of`], its width chosen by [`flat_width`] when `fit`, else [`flat_tw`].
fn copy_flat_in(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    (buf, off): (&wgpu::Buffer, usize),
    len: usize,
    dtype: DType,
    label: &str,
    fit: bool,
) -> Result<Option<(DeviceImage, u32)>> {
    if !flat_copy_fits_of(ctx, (buf, off), len, dtype) {
        return Ok(None);
    }
    let elem = dtype.storage_bytes(2) / 2;
    let texels = len / 4;
    let tw = if fit {
        flat_width(ctx, texels, dtype)
    } else {
        flat_tw(ctx)
    };
    let rows = texels.div_ceil(tw);
    let img = DeviceImage::new_of(ctx, enc, tw as u32, rows as u32, dtype, label)?;
    ctx.scoped("copying a buffer into an image", || {
        img.copy_flat_from(enc, buf, off as u64 * elem, texels)
    })?;
    Ok(Some((img, tw as u32)))
}
