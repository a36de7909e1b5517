//! Reuse of the per-call device resources, so that a layer called again and again allocates
//! nothing per call: idle scratch buffers and images (im2col columns, staging buffers, the
//! operand images of the image kernels), the parameter buffers of the dispatches and their
//! bind groups.
//!
//! - **Scratch** ([`ScratchBuffer`](super::memory::ScratchBuffer),
//!   [`DeviceImage`](super::memory::DeviceImage)) returns here when its guard drops, which
//!   launchers do once the commands using it are recorded, before they are submitted.
//!   Reusing it in another recording is safe because every operation writes its scratch
//!   before reading it, within the commands of one encoder: wgpu keeps every resource a
//!   recorded command uses alive and the queue runs command buffers one after another, so
//!   whatever order the recordings are submitted in (another thread's, or a caller's encoder
//!   submitted later), no operation sees another's data. The rule has one consequence:
//!   contents that must outlive the recording that fills them (the packed-weight cache,
//!   filled in a submission of its own) go into a new resource
//!   (`DeviceImage::new_unshared`), never a pooled one, whose last user may have commands in
//!   an encoder submitted after the fill that would overwrite it. Scratch comes back with
//!   undefined contents: a launcher that reads parts it does not write asks for zeros
//!   (`ScratchBuffer::zeroed`). Idle scratch is matched by exact size and kept, least
//!   recently used first out, within the scratch budget.
//! - **Tensor buffers**: the buffer of a dropped result of an allocating call that only the
//!   library's own submitted work touched (never bound into a caller's encoder by an
//!   `encode_*` call nor handed out by `Tensor::buffer`), at most half the budget, waits here for
//!   the next tensor of the same size an allocating call makes, as PyTorch's caching
//!   allocator does: a layer in a loop then allocates no output either. The call's commands
//!   overwrite every element (as every `encode_*` call does with a caller's output of any
//!   contents), so the stale contents never show; `tests/tensor_pool.rs` poisons reused
//!   buffers to check it. Kept apart from scratch: a scratch buffer's last user may be a
//!   caller's encoder not yet submitted, which would overwrite a tensor made from it. A
//!   result the library uses internally must not be dropped before its encoder is submitted
//!   (or must be marked, `Tensor::mark_caller_recorded`). Same budget and eviction as
//!   scratch.
//! - **Parameters**: one small buffer per distinct parameter struct (bytes), written once and
//!   never changed, so sharing it between dispatches, threads and submissions is safe.
//! - **Bind groups**: keyed by kernel, parameter buffer and the identity, offset and size of
//!   every bound range or image. A bind group keeps its resources alive, so entries go when
//!   one of their resources is released (a tensor dropped, scratch evicted, a packed weight
//!   image evicted) besides the least recently used beyond a fixed count.
//!
//! Every buffer and texture counts in [`Context::allocated_bytes`] from its creation to its
//! destruction, idle or not; [`Context::pooled_bytes`] is the idle part (idle scratch, idle
//! tensor buffers and parameter buffers) and [`Context::release_scratch`] frees it.
//!
//! `WGCONV_POISON_SCRATCH=1` (read when a context is created; for the test suites) fills
//! every scratch resource with NaN when it is handed out, so a launcher that reads scratch it
//! did not write fails its tests instead of reading zeros by luck.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::context::{poisoned, Context};
use crate::error::Result;
use crate::gpu::Bind;
use crate::kernels::Kernel;

/// Most parameter buffers kept (each at most a few hundred bytes).
const MAX_UNIFORMS: usize = 4096;
/// Most bind groups kept.
const MAX_GROUPS: usize = 1024;

/// The pools and caches of one context.
pub(crate) struct Pools {
    idle: Mutex<Idle>,
    uniforms: Mutex<Uniforms>,
    groups: Mutex<Groups>,
    tick: AtomicU64,
    /// Buffers and textures the library created on this context.
    allocations: AtomicU64,
    /// Bind groups created.
    groups_created: AtomicU64,
    /// Fill scratch with NaN when handed out (`WGCONV_POISON_SCRATCH`).
    poison: bool,
    /// Calls recording band by band ([`Context::hold_scratch`]): while any does, idle
    /// scratch is kept past the budget, so every band reuses the images and buffers of the
    /// band before instead of allocating (and the driver page-faulting) its own.
    holds: AtomicUsize,
}

#[derive(Default)]
struct Idle {
    buffers: Vec<IdleBuffer>,
    images: Vec<IdleImage>,
    /// Buffers of dropped tensors that only the library's own submitted work used (see
    /// [`Pools::put_output`]): kept apart from scratch, which a caller's unsubmitted
    /// encoder may still write.
    outputs: Vec<IdleBuffer>,
    bytes: u64,
}

struct IdleBuffer {
    buffer: wgpu::Buffer,
    last: u64,
}

struct IdleImage {
    texture: wgpu::Texture,
    view: wgpu::TextureView,
    bytes: u64,
    last: u64,
}

#[derive(Default)]
struct Uniforms {
    map: HashMap<Vec<u8>, (wgpu::Buffer, u64)>,
    bytes: u64,
}

#[derive(Default)]
struct Groups {
    map: HashMap<GroupKey, (wgpu::BindGroup, u64)>,
    /// How many cached groups bind each buffer and view: releasing a resource no group
    /// binds costs a lookup, not a scan.
    buffers: HashMap<wgpu::Buffer, usize>,
    views: HashMap<wgpu::TextureView, usize>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct GroupKey {
    kernel: Kernel,
    params: wgpu::Buffer,
    binds: Vec<BindKey>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum BindKey {
    Buffer(wgpu::Buffer, u64, u64),
    Image(wgpu::TextureView),
}

/// Resources leaving the pools, dropped once no lock is held (dropping forgets their bind
/// groups, which takes the group lock).
#[derive(Default)]
struct Evicted {
    buffers: Vec<wgpu::Buffer>,
    images: Vec<(wgpu::Texture, wgpu::TextureView, u64)>,
}

fn lock<T>(m: &Mutex<T>) -> Result<MutexGuard<'_, T>> {
    m.lock().map_err(poisoned)
}

impl Pools {
    pub(crate) fn new() -> Self {
        Pools {
            idle: Mutex::default(),
            uniforms: Mutex::default(),
            groups: Mutex::default(),
            tick: AtomicU64::new(0),
            allocations: AtomicU64::new(0),
            groups_created: AtomicU64::new(0),
            poison: std::env::var("WGCONV_POISON_SCRATCH").is_ok_and(|v| v == "1"),
            holds: AtomicUsize::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.tick.fetch_add(1, Ordering::Relaxed)
    }

    /// Counts one buffer or texture created by the library.
    pub(crate) fn count_allocation(&self) {
        self.allocations.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn poison(&self) -> bool {
        self.poison
    }

    /// An idle scratch buffer of exactly `size` bytes (the most recently used one).
    pub(crate) fn take_buffer(&self, size: u64) -> Option<wgpu::Buffer> {
        self.take_from(size, |i| &mut i.buffers)
    }

    /// The most recently used buffer of exactly `size` bytes of the idle list `list`.
    fn take_from(
        &self,
        size: u64,
        list: fn(&mut Idle) -> &mut Vec<IdleBuffer>,
    ) -> Option<wgpu::Buffer> {
        let mut idle = self.idle.lock().ok()?;
        let l = list(&mut idle);
        let i = (l.iter().enumerate())
            .filter(|(_, b)| b.buffer.size() == size)
            .max_by_key(|(_, b)| b.last)?
            .0;
        let b = l.swap_remove(i).buffer;
        idle.bytes -= size;
        Some(b)
    }

    /// Adds `buffer` to the idle list `list` and evicts down to the budget.
    fn put_into(
        &self,
        ctx: &Context,
        buffer: wgpu::Buffer,
        list: fn(&mut Idle) -> &mut Vec<IdleBuffer>,
    ) {
        let size = buffer.size();
        let last = self.now();
        let Ok(mut idle) = self.idle.lock() else {
            return destroy(
                ctx,
                Evicted {
                    buffers: vec![buffer],
                    ..Default::default()
                },
            );
        };
        list(&mut idle).push(IdleBuffer { buffer, last });
        idle.bytes += size;
        let evicted = self.evict(ctx, idle);
        destroy(ctx, evicted);
    }

    /// An idle scratch image of `width` x `height` texels of `format` (the most recently used
    /// one).
    pub(crate) fn take_image(
        &self,
        width: u32,
        height: u32,
        format: wgpu::TextureFormat,
    ) -> Option<(wgpu::Texture, wgpu::TextureView, u64)> {
        let mut idle = self.idle.lock().ok()?;
        let i = (idle.images.iter().enumerate())
            .filter(|(_, m)| {
                m.texture.width() == width
                    && m.texture.height() == height
                    && m.texture.format() == format
            })
            .max_by_key(|(_, m)| m.last)?
            .0;
        let m = idle.images.swap_remove(i);
        idle.bytes -= m.bytes;
        Some((m.texture, m.view, m.bytes))
    }

    /// Takes back a scratch buffer whose commands are recorded.
    pub(crate) fn put_buffer(&self, ctx: &Context, buffer: wgpu::Buffer) {
        self.put_into(ctx, buffer, |i| &mut i.buffers)
    }

    /// An idle tensor buffer of exactly `size` bytes (the most recently used one), for a new
    /// tensor the library writes in its own submissions. Its contents are stale: the taker
    /// clears or overwrites them.
    pub(crate) fn take_output(&self, size: u64) -> Option<wgpu::Buffer> {
        self.take_from(size, |i| &mut i.outputs)
    }

    /// Takes back the buffer of a dropped tensor whose every use was recorded by the
    /// library into encoders it submitted itself (never a caller's encoder, never handed
    /// out): any later submission is ordered after those uses, so a new tensor may take
    /// the buffer ([`Pools::take_output`]). Its cached bind groups stay valid and are reused.
    pub(crate) fn put_output(&self, ctx: &Context, buffer: wgpu::Buffer) {
        let size = buffer.size();
        if size > ctx.scratch_budget() / 2 {
            // Would push most of the pool out: freed instead.
            self.forget_buffer(&buffer);
            ctx.inner.allocated.fetch_sub(size, Ordering::Relaxed);
            return;
        }
        self.put_into(ctx, buffer, |i| &mut i.outputs)
    }

    /// Takes back a scratch image whose commands are recorded.
    pub(crate) fn put_image(
        &self,
        ctx: &Context,
        texture: wgpu::Texture,
        view: wgpu::TextureView,
        bytes: u64,
    ) {
        let last = self.now();
        let Ok(mut idle) = self.idle.lock() else {
            return destroy(
                ctx,
                Evicted {
                    images: vec![(texture, view, bytes)],
                    ..Default::default()
                },
            );
        };
        idle.images.push(IdleImage {
            texture,
            view,
            bytes,
            last,
        });
        idle.bytes += bytes;
        let evicted = self.evict(ctx, idle);
        destroy(ctx, evicted);
    }

    /// Evicts idle scratch, least recently used first, until it and the parameter buffers
    /// fit the scratch budget; returns what left, to be destroyed after the lock is dropped.
    fn evict(&self, ctx: &Context, mut idle: MutexGuard<'_, Idle>) -> Evicted {
        if self.holds.load(Ordering::Acquire) > 0 {
            return Evicted::default();
        }
        let budget = ctx.scratch_budget();
        let uniform_bytes = self.uniforms.lock().map_or(0, |u| u.bytes);
        let mut out = Evicted::default();
        while idle.bytes + uniform_bytes > budget && idle.bytes > 0 {
            let oldest = |v: &[IdleBuffer]| {
                (v.iter().enumerate())
                    .min_by_key(|(_, b)| b.last)
                    .map(|(i, b)| (i, b.last))
            };
            let buffer = oldest(&idle.buffers);
            let output = oldest(&idle.outputs);
            let image = (idle.images.iter().enumerate())
                .min_by_key(|(_, m)| m.last)
                .map(|(i, m)| (i, m.last));
            let last = |o: Option<(usize, u64)>| o.map_or(u64::MAX, |(_, l)| l);
            let (lb, lo, li) = (last(buffer), last(output), last(image));
            if let Some((i, _)) = buffer.filter(|_| lb <= lo && lb <= li) {
                let b = idle.buffers.swap_remove(i).buffer;
                idle.bytes -= b.size();
                out.buffers.push(b);
            } else if let Some((i, _)) = output.filter(|_| lo <= li) {
                let b = idle.outputs.swap_remove(i).buffer;
                idle.bytes -= b.size();
                out.buffers.push(b);
            } else if let Some((i, _)) = image {
                let m = idle.images.swap_remove(i);
                idle.bytes -= m.bytes;
                out.images.push((m.texture, m.view, m.bytes));
            } else {
                break;
            }
        }
        out
    }

    /// Bytes of idle scratch and parameter buffers.
    pub(crate) fn pooled_bytes(&self) -> u64 {
        self.idle.lock().map_or(0, |i| i.bytes) + self.uniforms.lock().map_or(0, |u| u.bytes)
    }

    /// Evicts down to the scratch budget (after it was lowered).
    pub(crate) fn trim(&self, ctx: &Context) {
        // Parameter buffers past the budget go first (they are cheap to make again).
        let budget = ctx.scratch_budget();
        let mut dropped = Vec::new();
        if let Ok(mut u) = self.uniforms.lock() {
            if u.bytes > budget {
                dropped = evict_uniforms(&mut u, budget);
            }
        }
        forget_uniforms(ctx, dropped);
        if let Ok(idle) = self.idle.lock() {
            let evicted = self.evict(ctx, idle);
            destroy(ctx, evicted);
        }
    }

    /// Frees every idle scratch resource, parameter buffer and bind group.
    pub(crate) fn release(&self, ctx: &Context) {
        if let Ok(mut g) = self.groups.lock() {
            *g = Groups::default();
        }
        let uniforms = self
            .uniforms
            .lock()
            .map(|mut u| std::mem::take(&mut *u))
            .unwrap_or_default();
        ctx.inner
            .allocated
            .fetch_sub(uniforms.bytes, Ordering::Relaxed);
        let idle = self
            .idle
            .lock()
            .map(|mut i| std::mem::take(&mut *i))
            .unwrap_or_default();
        destroy(
            ctx,
            Evicted {
                buffers: (idle.buffers.into_iter())
                    .chain(idle.outputs)
                    .map(|b| b.buffer)
                    .collect(),
                images: (idle.images.into_iter())
                    .map(|m| (m.texture, m.view, m.bytes))
                    .collect(),
            },
        );
    }

    /// The buffer holding parameter bytes `bytes` (created and written on first use).
    fn uniform(&self, ctx: &Context, label: &str, bytes: &[u8]) -> Result<wgpu::Buffer> {
        let last = self.now();
        if let Some((b, l)) = lock(&self.uniforms)?.map.get_mut(bytes) {
            *l = last;
            return Ok(b.clone());
        }
        let device = ctx.device();
        let buffer = ctx.scoped(label, || {
            // Written through the queue (not mapped at creation): on a lost or destroyed
            // device this records an error instead of panicking. The write lands before
            // any later submission, so before any command using the buffer.
            let b = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes.len() as u64,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            ctx.queue().write_buffer(&b, 0, bytes);
            b
        })?;
        self.count_allocation();
        let size = buffer.size();
        ctx.inner.allocated.fetch_add(size, Ordering::Relaxed);
        let budget = ctx.scratch_budget();
        let mut dropped = Vec::new();
        {
            let mut u = lock(&self.uniforms)?;
            if let Some((old, _)) = u.map.insert(bytes.to_vec(), (buffer.clone(), last)) {
                // Another thread made the same one meanwhile.
                u.bytes -= old.size();
                dropped.push(old);
            }
            u.bytes += size;
            if u.map.len() > MAX_UNIFORMS || u.bytes > budget {
                let keep = (MAX_UNIFORMS / 2).min(u.map.len());
                dropped.extend(evict_uniforms_to_count(&mut u, keep));
                if u.bytes > budget {
                    dropped.extend(evict_uniforms(&mut u, budget));
                }
            }
        }
        forget_uniforms(ctx, dropped);
        // Idle scratch makes room for the parameters within the budget.
        if let Ok(idle) = self.idle.lock() {
            let evicted = self.evict(ctx, idle);
            destroy(ctx, evicted);
        }
        Ok(buffer)
    }

    /// The bind group of `kernel` with parameter bytes `params` at binding 0 and `binds`
    /// at bindings 1.. (cached).
    pub(crate) fn bind_group(
        &self,
        ctx: &Context,
        kernel: Kernel,
        params: &[u8],
        binds: &[Bind<'_>],
    ) -> Result<wgpu::BindGroup> {
        let ubuf = self.uniform(ctx, kernel.name(), params)?;
        let key = GroupKey {
            kernel,
            params: ubuf,
            binds: binds
                .iter()
                .map(|b| match *b {
                    Bind::Buffer {
                        buffer,
                        offset,
                        size,
                    } => BindKey::Buffer(buffer.clone(), offset, size),
                    Bind::Image(view) => BindKey::Image(view.clone()),
                })
                .collect(),
        };
        let last = self.now();
        if let Some((g, l)) = lock(&self.groups)?.map.get_mut(&key) {
            *l = last;
            return Ok(g.clone());
        }
        let layout = ctx.layout(kernel)?;
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: key.params.as_entire_binding(),
        }];
        for (i, b) in binds.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: b.resource(),
            });
        }
        let group = ctx.scoped(kernel.name(), || {
            ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(kernel.name()),
                layout: &layout,
                entries: &entries,
            })
        })?;
        self.groups_created.fetch_add(1, Ordering::Relaxed);
        let mut g = lock(&self.groups)?;
        if g.map.len() >= MAX_GROUPS {
            let mut ages: Vec<u64> = g.map.values().map(|(_, l)| *l).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            let old: Vec<GroupKey> = (g.map.iter())
                .filter(|(_, (_, l))| *l <= cut)
                .map(|(k, _)| k.clone())
                .collect();
            for k in old {
                g.remove(&k);
            }
        }
        g.insert(key, group.clone(), last);
        Ok(group)
    }

    /// Drops the bind groups binding `buffer` (it is being released).
    pub(crate) fn forget_buffer(&self, buffer: &wgpu::Buffer) {
        self.forget(std::slice::from_ref(buffer), &[]);
    }

    /// Drops the bind groups binding `view` (its image is being released).
    pub(crate) fn forget_view(&self, view: &wgpu::TextureView) {
        self.forget(&[], std::slice::from_ref(view));
    }

    /// Drops the bind groups binding any of `buffers` or `views` (being released): one pass
    /// over the cache, none when no cached group binds them.
    fn forget(&self, buffers: &[wgpu::Buffer], views: &[wgpu::TextureView]) {
        let Ok(mut g) = self.groups.lock() else {
            return;
        };
        let buffers: Vec<&wgpu::Buffer> = buffers
            .iter()
            .filter(|b| g.buffers.contains_key(*b))
            .collect();
        let views: Vec<&wgpu::TextureView> =
            views.iter().filter(|v| g.views.contains_key(*v)).collect();
        if buffers.is_empty() && views.is_empty() {
            return;
        }
        let hit = |k: &GroupKey| {
            buffers.contains(&&k.params)
                || k.binds.iter().any(|b| match b {
                    BindKey::Buffer(x, ..) => buffers.contains(&x),
                    BindKey::Image(v) => views.contains(&v),
                })
        };
        let gone: Vec<GroupKey> = g.map.keys().filter(|k| hit(k)).cloned().collect();
        for k in gone {
            g.remove(&k);
        }
    }
}

impl Groups {
    fn insert(&mut self, key: GroupKey, group: wgpu::BindGroup, last: u64) {
        *self.buffers.entry(key.params.clone()).or_default() += 1;
        for b in &key.binds {
            match b {
                BindKey::Buffer(x, ..) => *self.buffers.entry(x.clone()).or_default() += 1,
                BindKey::Image(v) => *self.views.entry(v.clone()).or_default() += 1,
            }
        }
        if let Some((_, _)) = self.map.insert(key.clone(), (group, last)) {
            // Replaced an equal key (another thread made the same group): undo its counts.
            self.uncount(&key);
        }
    }

    fn remove(&mut self, key: &GroupKey) {
        if self.map.remove(key).is_some() {
            self.uncount(key);
        }
    }

    fn uncount(&mut self, key: &GroupKey) {
        fn dec<K: std::hash::Hash + Eq>(m: &mut HashMap<K, usize>, k: &K) {
            if let Some(n) = m.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    m.remove(k);
                }
            }
        }
        dec(&mut self.buffers, &key.params);
        for b in &key.binds {
            match b {
                BindKey::Buffer(x, ..) => dec(&mut self.buffers, x),
                BindKey::Image(v) => dec(&mut self.views, v),
            }
        }
    }
}

/// Evicts the least recently used parameter buffers until they hold at most `budget` bytes.
fn evict_uniforms(u: &mut Uniforms, budget: u64) -> Vec<wgpu::Buffer> {
    let mut order: Vec<(u64, Vec<u8>)> = u.map.iter().map(|(k, (_, l))| (*l, k.clone())).collect();
    order.sort_unstable_by_key(|(l, _)| *l);
    let mut out = Vec::new();
    for (_, k) in order {
        if u.bytes <= budget {
            break;
        }
        if let Some((b, _)) = u.map.remove(&k) {
            u.bytes -= b.size();
            out.push(b);
        }
    }
    out
}

/// Evicts the least recently used parameter buffers until `keep` remain.
fn evict_uniforms_to_count(u: &mut Uniforms, keep: usize) -> Vec<wgpu::Buffer> {
    let mut order: Vec<(u64, Vec<u8>)> = u.map.iter().map(|(k, (_, l))| (*l, k.clone())).collect();
    order.sort_unstable_by_key(|(l, _)| std::cmp::Reverse(*l));
    let mut out = Vec::new();
    for (_, k) in order.into_iter().skip(keep) {
        if let Some((b, _)) = u.map.remove(&k) {
            u.bytes -= b.size();
            out.push(b);
        }
    }
    out
}

/// Releases evicted parameter buffers: their bind groups go, their bytes leave the count.
fn forget_uniforms(ctx: &Context, dropped: Vec<wgpu::Buffer>) {
    destroy(
        ctx,
        Evicted {
            buffers: dropped,
            ..Default::default()
        },
    );
}

/// Destroys evicted scratch (or parameter buffers): their bind groups go, their bytes leave
/// the count.
fn destroy(ctx: &Context, e: Evicted) {
    if e.buffers.is_empty() && e.images.is_empty() {
        return;
    }
    let views: Vec<wgpu::TextureView> = e.images.iter().map(|(_, v, _)| v.clone()).collect();
    ctx.inner.pool.forget(&e.buffers, &views);
    let bytes = e.buffers.iter().map(|b| b.size()).sum::<u64>()
        + e.images.iter().map(|(_, _, n)| n).sum::<u64>();
    ctx.inner.allocated.fetch_sub(bytes, Ordering::Relaxed);
}

/// Counters of the pools (see `wgconv::dev::pool_stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Buffers and textures the library created on the context (tensors, scratch,
    /// parameter buffers, readback buffers).
    pub device_allocations: u64,
    /// Bind groups created.
    pub bind_groups_created: u64,
    /// Idle scratch buffers and images and idle tensor buffers held for reuse.
    pub idle_resources: usize,
    /// Parameter buffers and bind groups cached.
    pub cached_params: usize,
    /// Bind groups cached.
    pub cached_bind_groups: usize,
}

/// While alive, idle scratch is kept past the budget (see [`Context::hold_scratch`]).
pub(crate) struct ScratchHold<'a>(&'a Context);

impl Drop for ScratchHold<'_> {
    fn drop(&mut self) {
        let pool = &self.0.inner.pool;
        if pool.holds.fetch_sub(1, Ordering::AcqRel) == 1 {
            pool.trim(self.0);
        }
    }
}

impl Context {
    /// Keeps idle scratch past the scratch budget until the guard drops (then trims it to
    /// the budget): for calls that record the same work band by band, whose per-band
    /// scratch would otherwise be freed and allocated again for every band.
    pub(crate) fn hold_scratch(&self) -> ScratchHold<'_> {
        self.inner.pool.holds.fetch_add(1, Ordering::AcqRel);
        ScratchHold(self)
    }

    /// Bytes of device memory held for reuse and not in use: idle scratch buffers and images
    /// and cached dispatch-parameter buffers. Included in [`Context::allocated_bytes`]; at
    /// most [`Context::scratch_budget`] once a call has returned (scratch in use while a
    /// call records can add to it, see [`ContextOptions::scratch_budget`]).
    /// [`Context::release_scratch`] frees it.
    ///
    /// [`ContextOptions::scratch_budget`]: crate::ContextOptions::scratch_budget
    pub fn pooled_bytes(&self) -> u64 {
        self.inner.pool.pooled_bytes()
    }

    /// Frees the idle scratch, the cached dispatch parameters and the cached bind groups
    /// (see [`Context::pooled_bytes`]), and the cached input images
    /// ([`Context::input_cache_bytes`]). Calls after this allocate them again. Work already
    /// recorded or submitted is unaffected (wgpu keeps what it uses alive until it ran).
    pub fn release_scratch(&self) {
        self.inner.inputs.clear();
        self.inner.pool.release(self);
    }

    /// Counters of the pools, for tests and tools.
    pub(crate) fn pool_stats(&self) -> PoolStats {
        let p = &self.inner.pool;
        PoolStats {
            device_allocations: p.allocations.load(Ordering::Relaxed),
            bind_groups_created: p.groups_created.load(Ordering::Relaxed),
            idle_resources: p
                .idle
                .lock()
                .map_or(0, |i| i.buffers.len() + i.images.len() + i.outputs.len()),
            cached_params: p.uniforms.lock().map_or(0, |u| u.map.len()),
            cached_bind_groups: p.groups.lock().map_or(0, |g| g.map.len()),
        }
    }
}
