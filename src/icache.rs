//! Cache of filled input images across calls (the padded input image of the implicit GEMM,
//! CPU adapters).
//!
//! A training step fills the same input image twice: the forward of a layer fills x's
//! padded (or, at stride > 1 on a 1x1 layer, sampled) image, and the weight gradient of the
//! same layer fills the very same image from the same x again. On lavapipe such a fill is a
//! dispatch of its own (~0.1 ms on the bench's shape e, a twentieth of its training step).
//! Entries are keyed like the packed-weight cache ([`crate::wcache`]): the tensor's buffer
//! identity and content version ([`ContentKey`]) and the image's layout.
//!
//! Safety of the contents, the rules of `gpu::pool` applied to an image that outlives its
//! recording:
//! - Only the library's own recordings (allocating calls, [`OwnRecording`]) fill or read
//!   entries; a caller's encoder never binds one (it may be submitted at any time, or never).
//! - A filled image becomes an entry only once the recording that fills it was submitted
//!   ([`OwnRecording`]'s scope commits it when it ends; a recording that failed never does).
//! - Every image a recording binds is held until its scope ends (after its submission), so
//!   no other thread recycles it in between: an evicted entry's image is reused for a new
//!   entry only when nothing else holds it, and never goes to the scratch pool (whose last
//!   user may be a caller's encoder submitted later, see `gpu::pool`).
//!
//! A forward fills an entry only in a layout a weight gradient asked for before (the first
//! training step's backward registers it), so inference caches nothing.
//!
//! Entries of dropped or untrackable tensors go at the next insertion, older versions of a
//! tensor with the same layout when a newer one comes, and the least recently used past the
//! byte budget. Images count in [`Context::allocated_bytes`] while cached or kept for reuse.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::context::Context;
use crate::error::Result;
use crate::gpu::memory::{ContentKey, DeviceImage};

/// Default byte budget of the cache (entries and images kept for reuse together).
pub(crate) const DEFAULT_INPUT_CACHE_BUDGET: u64 = 64 << 20;

struct Entry {
    key: ContentKey,
    layout: Vec<u64>,
    img: Arc<DeviceImage>,
    last_use: u64,
}

#[derive(Default)]
struct State {
    entries: Vec<Entry>,
    /// Images of evicted entries nothing else held, for the next entry of their size.
    free: Vec<Arc<DeviceImage>>,
    /// Layouts a weight gradient asked for: a forward fills an entry only in these, so
    /// inference (no weight gradient) caches nothing.
    wanted: Vec<Vec<u64>>,
    tick: u64,
}

/// Layouts remembered in `State::wanted` (the most recent; a network has one per layer).
const WANTED_LAYOUTS: usize = 256;

impl State {
    fn bytes(&self) -> u64 {
        let held = self.entries.iter().map(|e| e.img.bytes).sum::<u64>();
        held + self.free.iter().map(|i| i.bytes).sum::<u64>()
    }

    /// The kept image of `width` x `height` texels nothing else holds, if any.
    fn free_image(&self, (width, height): (u32, u32)) -> Option<usize> {
        self.free.iter().position(|i| {
            i.texture.width() == width && i.texture.height() == height && Arc::strong_count(i) == 1
        })
    }
}

/// The input-image cache of a context.
pub(crate) struct InputCache {
    state: Mutex<State>,
    budget: AtomicU64,
}

/// What one own recording did with the cache, committed or dropped when its scope ends.
#[derive(Default)]
struct Level {
    /// Images bound by the recording (kept from reuse until it was submitted).
    holds: Vec<Arc<DeviceImage>>,
    /// Filled images to cache once the recording is submitted.
    inserts: Vec<(Context, ContentKey, Vec<u64>, Arc<DeviceImage>)>,
    submitted: bool,
}

thread_local! {
    /// One level per open `OwnRecording` on this thread, innermost last.
    static LEVELS: RefCell<Vec<Level>> = const { RefCell::new(Vec::new()) };
}

/// Opens a level (called by `OwnRecording::enter`).
pub(crate) fn enter_level() {
    LEVELS.with(|l| l.borrow_mut().push(Level::default()));
}

/// Closes the innermost level (called when its `OwnRecording` drops): its fills become
/// entries if its recording was submitted; its holds are released.
pub(crate) fn leave_level() {
    let Some(level) = LEVELS.with(|l| l.borrow_mut().pop()) else {
        return;
    };
    if level.submitted {
        for (ctx, key, layout, img) in level.inserts {
            ctx.inner.inputs.commit(&ctx, key, layout, img);
        }
    }
}

/// Marks the innermost level's recording as submitted (called by `Context::submit`).
pub(crate) fn mark_submitted() {
    LEVELS.with(|l| {
        if let Some(level) = l.borrow_mut().last_mut() {
            level.submitted = true;
        }
    });
}

/// Is an own recording open on this thread (the only kind that may use the cache)?
fn recording() -> bool {
    LEVELS.with(|l| !l.borrow().is_empty())
}

fn hold(img: &Arc<DeviceImage>) {
    LEVELS.with(|l| {
        if let Some(level) = l.borrow_mut().last_mut() {
            level.holds.push(img.clone());
        }
    });
}

impl InputCache {
    pub(crate) fn new(budget: u64) -> Self {
        InputCache {
            state: Mutex::new(State::default()),
            budget: AtomicU64::new(budget),
        }
    }

    /// Takes the cached image of tensor `key` in `layout` out of the cache, held for the open
    /// own recording (its image is kept for reuse once that recording ends); `None` outside
    /// one. One read per fill: the weight gradient of a training step takes what its forward
    /// filled, and a second gradient of the same input fills again.
    pub(crate) fn take(&self, key: &ContentKey, layout: &[u64]) -> Option<Arc<DeviceImage>> {
        if !recording() {
            return None;
        }
        let mut s = self.state.lock().ok()?;
        let i = s.entries.iter().position(|e| {
            e.key.id == key.id && e.key.version == key.version && e.layout == layout
        })?;
        let img = s.entries.swap_remove(i).img;
        // Reused for a later entry only once nothing else holds it (`reserve`).
        s.free.push(img.clone());
        drop(s);
        hold(&img);
        Some(img)
    }

    /// Remembers `layout` as one a weight gradient reads: forwards fill entries in it.
    pub(crate) fn want(&self, layout: &[u64]) {
        if let Ok(mut s) = self.state.lock() {
            if !s.wanted.iter().any(|l| l == layout) {
                if s.wanted.len() == WANTED_LAYOUTS {
                    s.wanted.remove(0);
                }
                s.wanted.push(layout.to_vec());
            }
        }
    }

    /// A kept image of `width` x `height` texels for the open own recording to fill and use
    /// as scratch (not cached), held until it ends: a weight gradient that found no entry
    /// (its forward's image taken by an earlier call) fills the image it took before rather
    /// than new scratch. `None` outside an own recording or when none is free.
    pub(crate) fn scratch(&self, (width, height): (u32, u32)) -> Option<Arc<DeviceImage>> {
        if !recording() {
            return None;
        }
        let s = self.state.lock().ok()?;
        let img = s.free[s.free_image((width, height))?].clone();
        drop(s);
        hold(&img);
        Some(img)
    }

    /// An image of `width` x `height` texels for the open own recording to fill with tensor
    /// `key` in `layout`: cached once the recording is submitted. `None` outside an own
    /// recording, beyond the budget, or in a layout no weight gradient asked for yet (the
    /// caller fills scratch instead).
    pub(crate) fn reserve(
        &self,
        ctx: &Context,
        enc: &mut wgpu::CommandEncoder,
        (key, layout): (&ContentKey, Vec<u64>),
        (width, height): (u32, u32),
    ) -> Result<Option<Arc<DeviceImage>>> {
        let bytes = width as u64 * height as u64 * DeviceImage::TEXEL;
        if !recording() || bytes > self.budget.load(Ordering::Relaxed) / 2 {
            return Ok(None);
        }
        // The image of this tensor's entry in this layout (the fill replaces it), else a kept
        // image of the same size; either only when nothing else holds it.
        let reused = {
            let Ok(mut s) = self.state.lock() else {
                return Ok(None);
            };
            if !s.wanted.contains(&layout) {
                return Ok(None);
            }
            let own = s.entries.iter().position(|e| {
                e.key.id == key.id && e.layout == layout && Arc::strong_count(&e.img) == 1
            });
            match own {
                Some(i) => Some(s.entries.swap_remove(i).img),
                None => s.free_image((width, height)).map(|i| s.free.swap_remove(i)),
            }
        };
        let img = match reused {
            Some(img) => img,
            None => {
                let img = DeviceImage::new_unshared(ctx, enc, width, height, "wgconv input cache")?;
                // Not the pool's: dropped, it is freed (and leaves `allocated_bytes`).
                img.retain();
                Arc::new(img)
            }
        };
        hold(&img);
        LEVELS.with(|l| {
            if let Some(level) = l.borrow_mut().last_mut() {
                level
                    .inserts
                    .push((ctx.clone(), key.clone(), layout, img.clone()));
            }
        });
        Ok(Some(img))
    }

    /// Caches `img` as tensor `key` in `layout` (its recording was submitted), evicting
    /// entries of dropped or untrackable tensors, other versions of the same tensor in the
    /// same layout and, past the budget, the least recently used.
    fn commit(&self, ctx: &Context, key: ContentKey, layout: Vec<u64>, img: Arc<DeviceImage>) {
        let budget = self.budget.load(Ordering::Relaxed);
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        let mut gone = Vec::new();
        s.entries.retain_mut(|e| {
            let keep = e.key.alive.upgrade().is_some_and(|b| !b.is_volatile())
                && !(e.key.id == key.id && e.layout == layout);
            if !keep {
                gone.push(e.img.clone());
            }
            keep
        });
        s.tick += 1;
        let last_use = s.tick;
        s.entries.push(Entry {
            key,
            layout,
            img,
            last_use,
        });
        // Evicted images nothing else holds are kept for reuse (a training loop's next x).
        let mut dropped = Vec::new();
        for img in gone {
            if Arc::strong_count(&img) == 1 {
                s.free.push(img);
            } else {
                dropped.push(img);
            }
        }
        // Past the budget: kept images first, then the least recently used entries.
        while s.bytes() > budget {
            if !s.free.is_empty() {
                dropped.push(s.free.remove(0));
                continue;
            }
            let Some(i) = (0..s.entries.len()).min_by_key(|&i| s.entries[i].last_use) else {
                break;
            };
            dropped.push(s.entries.remove(i).img);
        }
        drop(s);
        // Cached bind groups would keep them alive.
        for img in dropped {
            ctx.inner.pool.forget_view(&img.view);
        }
    }

    /// Bytes of the cached and kept images.
    pub(crate) fn bytes(&self) -> u64 {
        self.state.lock().map_or(0, |s| s.bytes())
    }

    /// Drops every entry and kept image (`Context::release_scratch`); images a recording
    /// still holds are freed when it ends.
    pub(crate) fn clear(&self) {
        let taken = self.state.lock().map(|mut s| std::mem::take(&mut *s));
        drop(taken);
    }
}
