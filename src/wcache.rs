//! Cache of packed weights (the implicit-GEMM weight panels of forward, input-gradient and
//! transposed calls) across calls.
//!
//! Packing a convolution's weights into the GEMM's panels costs as much as a third of a
//! forward pass on lavapipe (shape d: 28 %; a 1x1 layer with 512 x 256 weights: ~1.6 ms of
//! 4.5), and inference calls a layer with the same weights again and again. Entries are keyed
//! by the weight buffer's identity, its content version and the panel layout; the version
//! changes with every [`Tensor::write`](crate::Tensor::write), and tensors the library cannot
//! track (caller-owned buffers, [`Tensor::buffer`](crate::Tensor::buffer), outputs recorded
//! into a caller's encoder) are never cached. A miss packs in a submission of its own, so a
//! cached image is filled whatever the caller later does with its encoder. Entries die with
//! their tensor (checked on every insertion) and the least recently used go first when the
//! cache exceeds its byte budget ([`Context::set_weight_cache_budget`]). On CPU adapters a
//! 1x1 layer whose cached weights changed since (a training loop writing them every step)
//! reads its weights' verbatim image copy instead of packing them again: no pass, no
//! allocation, nothing cached (see `reads_flat_weights` in `conv::forward::implicit_gemm`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::context::Context;
use crate::gpu::memory::{ContentKey, DeviceImage};

/// Default byte budget of the cache.
pub const DEFAULT_WEIGHT_CACHE_BUDGET: u64 = 256 << 20;

/// What an entry holds: a packed weight image, or an f32 copy of f16 (or channels-last)
/// parameters (weights, biases) for the kernels that read f32.
#[derive(Clone)]
pub(crate) enum Held {
    /// Keeps its texture alive.
    Image(wgpu::TextureView),
    /// A buffer of the library's own (not from the scratch pool).
    Buffer(wgpu::Buffer),
}

struct Entry {
    key: ContentKey,
    layout: Vec<u64>,
    held: Held,
    bytes: u64,
    last_use: u64,
}

pub(crate) struct WeightCache {
    entries: Mutex<Vec<Entry>>,
    budget: AtomicU64,
    tick: AtomicU64,
}

impl WeightCache {
    pub(crate) fn new(budget: u64) -> Self {
        WeightCache {
            entries: Mutex::new(Vec::new()),
            budget: AtomicU64::new(budget),
            tick: AtomicU64::new(0),
        }
    }

    /// The packed image of the weights `key` in panel layout `layout`, if cached.
    pub(crate) fn get(&self, key: &ContentKey, layout: &[u64]) -> Option<wgpu::TextureView> {
        match self.get_held(key, layout)? {
            Held::Image(v) => Some(v),
            Held::Buffer(_) => None,
        }
    }

    /// The f32 copy of the parameters `key` kept under `layout`, if cached.
    pub(crate) fn get_buffer(&self, key: &ContentKey, layout: &[u64]) -> Option<wgpu::Buffer> {
        match self.get_held(key, layout)? {
            Held::Buffer(b) => Some(b),
            Held::Image(_) => None,
        }
    }

    /// Does the cache hold another version of the weights `key` in layout `layout`? Then
    /// they changed since they were cached (a training loop writing them every step), and
    /// packing this version for the cache would likely be wasted.
    pub(crate) fn holds_other_version(&self, key: &ContentKey, layout: &[u64]) -> bool {
        self.entries.lock().is_ok_and(|entries| {
            entries
                .iter()
                .any(|e| e.key.id == key.id && e.key.version != key.version && e.layout == layout)
        })
    }

    fn get_held(&self, key: &ContentKey, layout: &[u64]) -> Option<Held> {
        let mut entries = self.entries.lock().ok()?;
        let e = entries
            .iter_mut()
            .find(|e| e.key.id == key.id && e.key.version == key.version && e.layout == layout)?;
        e.last_use = self.tick.fetch_add(1, Ordering::Relaxed);
        Some(e.held.clone())
    }

    /// Remembers `img` as the packed weights `key` in layout `layout` (taking it out of the
    /// scratch pool), dropping older versions of the same weights, entries of dropped tensors
    /// or of tensors that became untrackable and, past the budget, the least recently used.
    /// An image larger than the budget is not cached (and goes back to the pool).
    pub(crate) fn insert(
        &self,
        ctx: &Context,
        key: &ContentKey,
        layout: Vec<u64>,
        img: &DeviceImage,
    ) {
        if img.bytes > self.budget.load(Ordering::Relaxed) {
            return;
        }
        img.retain();
        ctx.inner.allocated.fetch_add(img.bytes, Ordering::Relaxed);
        self.insert_held(ctx, key, layout, Held::Image(img.view.clone()), img.bytes);
    }

    /// Remembers `buffer` (`bytes` long, created for the cache and counted in
    /// `allocated_bytes`) as the f32 copy of the parameters `key` under `layout`, as
    /// [`WeightCache::insert`]; returns whether it is cached (else the caller drops it and
    /// takes its bytes off the count).
    pub(crate) fn insert_buffer(
        &self,
        ctx: &Context,
        key: &ContentKey,
        layout: Vec<u64>,
        buffer: &wgpu::Buffer,
        bytes: u64,
    ) -> bool {
        if bytes > self.budget.load(Ordering::Relaxed) {
            return false;
        }
        self.insert_held(ctx, key, layout, Held::Buffer(buffer.clone()), bytes);
        true
    }

    fn insert_held(
        &self,
        ctx: &Context,
        key: &ContentKey,
        layout: Vec<u64>,
        held: Held,
        bytes: u64,
    ) {
        let budget = self.budget.load(Ordering::Relaxed);
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        let mut gone = Vec::new();
        entries.retain(|e| {
            // Live, still trackable, and not replaced by this entry.
            let keep = e.key.alive.upgrade().is_some_and(|b| !b.is_volatile())
                && !(e.key.id == key.id && (e.key.version != key.version || e.layout == layout));
            if !keep {
                gone.push((e.held.clone(), e.bytes));
            }
            keep
        });
        gone.extend(evict_to(&mut entries, budget - bytes));
        entries.push(Entry {
            key: key.clone(),
            layout,
            held,
            bytes,
            last_use: self.tick.fetch_add(1, Ordering::Relaxed),
        });
        drop(entries);
        release(ctx, gone);
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> u64 {
        self.entries
            .lock()
            .map(|e| e.iter().map(|e| e.bytes).sum())
            .unwrap_or(0)
    }

    /// Sets the budget and evicts down to it (0 disables the cache).
    pub(crate) fn set_budget(&self, ctx: &Context, budget: u64) {
        self.budget.store(budget, Ordering::Relaxed);
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        let gone = evict_to(&mut entries, budget);
        drop(entries);
        release(ctx, gone);
    }

    pub(crate) fn budget(&self) -> u64 {
        self.budget.load(Ordering::Relaxed)
    }
}

/// Drops the least recently used entries until they hold at most `budget` bytes; returns
/// their images and sizes.
fn evict_to(entries: &mut Vec<Entry>, budget: u64) -> Vec<(Held, u64)> {
    let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
    let mut gone = Vec::new();
    while total > budget {
        let Some((i, _)) = entries.iter().enumerate().min_by_key(|(_, e)| e.last_use) else {
            break;
        };
        let e = entries.swap_remove(i);
        total -= e.bytes;
        gone.push((e.held, e.bytes));
    }
    gone
}

/// Releases dropped entries: their cached bind groups go (they would keep the images and
/// buffers alive) and their bytes leave the count.
fn release(ctx: &Context, gone: Vec<(Held, u64)>) {
    for (held, bytes) in gone {
        match &held {
            Held::Image(view) => ctx.inner.pool.forget_view(view),
            Held::Buffer(buffer) => ctx.inner.pool.forget_buffer(buffer),
        }
        ctx.inner.allocated.fetch_sub(bytes, Ordering::Relaxed);
    }
}
