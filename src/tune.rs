//! Autotuning of [`Algorithm::Auto`]: the first call of an (operation, parameters, shape
//! bucket) on a context times every algorithm that can run it and remembers the fastest.
//!
//! - Keys hold the operation, every index parameter exactly (kernel, stride, padding,
//!   dilation, groups, padding mode, flip, bias) and the sizes rounded up to powers of two, so
//!   one measurement serves a bucket of shapes. Whether an algorithm can run a problem depends
//!   only on the exact parts of the key (and on fitting one storage binding, which is decided
//!   before tuning), so a cached choice is always valid for the whole bucket.
//! - Timing is wall clock around submit + wait, the fastest of three runs after a warm-up that also
//!   compiles the pipelines, the runs interleaved over the candidates, on scratch tensors of the
//!   problem's shape (the caller's tensors are never touched).
//! - Results can persist in a file (`ContextOptions::tune_cache` or `WGCONV_TUNE_CACHE`),
//!   one line per entry: `<adapter>\t<key>\t<algorithm>`; entries of other adapters or
//!   drivers in the same file are ignored.
//! - Forced algorithms bypass the tuner; `ContextOptions::autotune = Some(false)` (or
//!   `WGCONV_AUTOTUNE=0`, or [`Context::set_autotune`]) gives the deterministic heuristic.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Instant;

use crate::context::{Context, ContextOptions};
use crate::conv::Algorithm;
use crate::params::Conv2dProblem;

/// Problems whose tensors together exceed this are not tuned (the heuristic decides): the
/// scratch copies and the timing runs would cost more than they save.
const MAX_TUNED_BYTES: usize = 96 << 20;

/// Which operation a tuning entry is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum TunedOp {
    Forward,
    BackwardInput,
    BackwardWeight,
}

impl TunedOp {
    fn name(self) -> &'static str {
        match self {
            TunedOp::Forward => "fwd",
            TunedOp::BackwardInput => "dx",
            TunedOp::BackwardWeight => "dw",
        }
    }
}

pub(crate) struct Tuner {
    enabled: AtomicBool,
    cache: RwLock<HashMap<String, Algorithm>>,
    path: Option<PathBuf>,
    adapter: String,
    file_lock: Mutex<()>,
    measured: AtomicUsize,
}

impl Tuner {
    pub(crate) fn new(options: &ContextOptions, info: &wgpu::AdapterInfo) -> Self {
        let env_off = std::env::var("WGCONV_AUTOTUNE")
            .is_ok_and(|v| v == "0" || v.eq_ignore_ascii_case("off"));
        let enabled = options.autotune.unwrap_or(!env_off);
        let path = options
            .tune_cache
            .clone()
            .or_else(|| std::env::var_os("WGCONV_TUNE_CACHE").map(PathBuf::from));
        let mut adapter = format!(
            "{} | {:?} | {} {}",
            info.name, info.backend, info.driver, info.driver_info
        )
        .replace('\t', " ");
        // A forced kernel class tunes other kernels: its entries must not mix with the
        // adapter's own (entries of the default class keep the plain key).
        if let Some(class) = options.kernel_class {
            if class != crate::KernelClass::for_device_type(info.device_type) {
                adapter.push_str(&format!(" | {class:?} kernels"));
            }
        }
        let mut cache = HashMap::new();
        if let Some(p) = &path {
            if let Ok(text) = std::fs::read_to_string(p) {
                for line in text.lines() {
                    let mut parts = line.split('\t');
                    if let (Some(a), Some(k), Some(v)) = (parts.next(), parts.next(), parts.next())
                    {
                        if a == adapter {
                            if let Ok(alg) = Algorithm::from_name(v) {
                                cache.insert(k.to_string(), alg);
                            }
                        }
                    }
                }
            }
        }
        Tuner {
            enabled: AtomicBool::new(enabled),
            cache: RwLock::new(cache),
            path,
            adapter,
            file_lock: Mutex::new(()),
            measured: AtomicUsize::new(0),
        }
    }

    fn get(&self, key: &str) -> Option<Algorithm> {
        self.cache.read().ok()?.get(key).copied()
    }

    fn insert(&self, key: String, algo: Algorithm) {
        if let Some(p) = &self.path {
            // Best effort: a cache file that cannot be written only costs re-tuning.
            let _guard = self.file_lock.lock();
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
            {
                let _ = writeln!(f, "{}\t{}\t{}", self.adapter, key, algo.name());
            }
        }
        if let Ok(mut c) = self.cache.write() {
            c.insert(key, algo);
        }
    }
}

fn bucket(v: usize) -> usize {
    v.max(1).next_power_of_two()
}

/// The tuning key of `op` on `p`.
pub(crate) fn key(op: TunedOp, p: &Conv2dProblem) -> String {
    format!(
        "{} n{} c{} h{} w{} k{} g{} r{} s{} st{}x{} p{},{},{},{} d{}x{} m{} f{} b{}",
        op.name(),
        bucket(p.n),
        bucket(p.c_per_group()),
        bucket(p.h),
        bucket(p.w),
        bucket(p.k_per_group()),
        p.groups,
        p.r,
        p.s,
        p.stride[0],
        p.stride[1],
        p.pad[0],
        p.pad[1],
        p.pad[2],
        p.pad[3],
        p.dilation[0],
        p.dilation[1],
        p.mode.name(),
        p.flip as u8,
        p.has_bias as u8,
    )
}

impl Context {
    /// Turns autotuning of [`Algorithm::Auto`] on or off (off: the deterministic heuristic).
    pub fn set_autotune(&self, on: bool) {
        self.inner.tuner.enabled.store(on, Ordering::Relaxed);
    }

    /// Is autotuning on?
    pub fn autotune(&self) -> bool {
        self.inner.tuner.enabled.load(Ordering::Relaxed)
    }

    /// How many (operation, parameters, shape bucket) entries this context has measured.
    pub fn tuned_entries(&self) -> usize {
        self.inner.tuner.measured.load(Ordering::Relaxed)
    }

    /// The algorithm `Auto` runs for `op` on `p`: with tuning on, the cached or freshly
    /// measured fastest of `candidates` (the entries of the operation's table that can run
    /// `p` and are worth timing here), else `heuristic`.
    pub(crate) fn choose(
        &self,
        op: TunedOp,
        p: &Conv2dProblem,
        heuristic: Algorithm,
        candidates: &[Algorithm],
    ) -> Algorithm {
        let tuner = &self.inner.tuner;
        if !self.autotune() || candidates.len() <= 1 {
            return heuristic;
        }
        let key = key(op, p);
        if let Some(a) = tuner.get(&key) {
            // Texture limits depend on exact sizes: a choice made for a smaller shape of the
            // bucket may not run this one.
            return if candidates.contains(&a) {
                a
            } else {
                heuristic
            };
        }
        let elems = crate::params::numel(&p.x_shape())
            + crate::params::numel(&p.w_shape())
            + crate::params::numel(&p.y_shape());
        if elems * 4 > MAX_TUNED_BYTES {
            return heuristic;
        }
        let best = self.measure(op, p, candidates, &key).unwrap_or(heuristic);
        tuner.measured.fetch_add(1, Ordering::Relaxed);
        tuner.insert(key, best);
        best
    }

    /// Fastest of three interleaved runs of each candidate; the fastest candidate that ran.
    fn measure(
        &self,
        op: TunedOp,
        p: &Conv2dProblem,
        candidates: &[Algorithm],
        key: &str,
    ) -> Option<Algorithm> {
        use crate::tensor::Tensor;
        let x = Tensor::zeros(self, &p.x_shape()).ok()?;
        let w = Tensor::zeros(self, &p.w_shape()).ok()?;
        // Timed with the weight packing of every call (as in training, where the weights
        // change between calls), not from the packed-weight cache.
        w.mark_volatile();
        let y = Tensor::zeros(self, &p.y_shape()).ok()?;
        let b = if p.has_bias {
            Some(Tensor::zeros(self, &[p.k]).ok()?)
        } else {
            None
        };
        let run = |algo: Algorithm| -> crate::Result<f64> {
            let t = Instant::now();
            let mut enc = self.encoder("wgconv autotune");
            match op {
                TunedOp::Forward => {
                    self.encode_conv2d_problem(&mut enc, p, &x, &w, b.as_ref(), &y, algo)?
                }
                TunedOp::BackwardInput => crate::conv::input_grad::encode(
                    self,
                    &mut enc,
                    p,
                    y.raw(),
                    w.raw(),
                    None,
                    x.raw(),
                    algo,
                    false,
                )?,
                TunedOp::BackwardWeight => crate::conv::weight_grad::encode(
                    self,
                    &mut enc,
                    p,
                    x.raw(),
                    y.raw(),
                    w.raw(),
                    algo,
                )?,
            }
            self.submit(enc)?;
            self.synchronize()?;
            Ok(t.elapsed().as_secs_f64())
        };
        // Warm-up (compiles the pipelines); an algorithm that fails is not a candidate.
        let mut live: Vec<(Algorithm, f64)> = candidates
            .iter()
            .filter(|&&algo| run(algo).is_ok())
            .map(|&algo| (algo, f64::INFINITY))
            .collect();
        // Three rounds over all candidates in turn, so a slow phase of the machine (another
        // process, or the VM moving a thread) hits every candidate alike rather than the one
        // that happened to be measured then. Each keeps its fastest run: interference only ever
        // slows a run down, so the minimum is the robust estimate on a shared machine.
        for _ in 0..3 {
            live.retain_mut(|(algo, best)| match run(*algo) {
                Ok(t) => {
                    *best = best.min(t);
                    true
                }
                Err(_) => false,
            });
        }
        let mut best: Option<(f64, Algorithm)> = None;
        for &(algo, t) in &live {
            log::debug!("wgconv autotune {key} {}: {:.3} ms", algo.name(), t * 1e3);
            if best.is_none_or(|(bt, _)| t < bt) {
                best = Some((t, algo));
            }
        }
        best.map(|(_, a)| a)
    }
}
