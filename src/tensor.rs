//! [`Tensor`]: an f32 array in device memory with a row-major shape.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::context::Context;
use crate::error::{Error, ErrorKind, Result};
use crate::gpu::memory::{ContentKey, DeviceBuffer, NEXT_BUFFER_ID};

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
            bytemuck::pod_collect_to_vec::<u8, f32>(&view)
        };
        staging.unmap();
        Ok(out)
    }
}
