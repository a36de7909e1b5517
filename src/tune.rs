//! Autotuning of [`Algorithm::Auto`]: per (operation, parameters, shape bucket) and context,
//! the algorithms that can run a problem are timed and the fastest is remembered.
//!
//! - When a bucket is measured is the context's [`TuningMode`]. By default
//!   ([`TuningMode::Background`]) the first call of a bucket runs the heuristic's choice,
//!   compiling only that algorithm's pipelines, and queues the bucket for a worker thread of
//!   the context; later calls run the measured fastest once it has landed.
//!   [`TuningMode::Blocking`] measures on the first call, before it runs;
//!   [`TuningMode::Off`] always runs the heuristic's choice.
//! - Keys hold the operation, every index parameter exactly (kernel, stride, padding,
//!   dilation, groups, padding mode, flip, bias) and the sizes rounded up to powers of two, so
//!   one measurement serves a bucket of shapes. Whether an algorithm can run a problem depends
//!   only on the exact parts of the key (and on fitting one storage binding, which is decided
//!   before tuning), so a cached choice is always valid for the whole bucket.
//! - Timing is wall clock around submit + wait, on scratch tensors of the problem's shape (the
//!   caller's tensors are never touched): an untimed warm-up run of every candidate (it
//!   compiles the pipelines), one timed round over all, then candidates more than
//!   [`PRUNE_FACTOR`] times slower than the fastest are dropped and the others run two more
//!   rounds; each keeps its fastest run.
//! - One measurement at a time per context (the worker's and blocking callers'), so they do
//!   not time each other. A queued bucket starts once the call that queued it has been
//!   submitted, the caller has submitted nothing for [`QUIET`] (at most [`MAX_DEFER`] after
//!   the tuning thread saw it), and the work submitted so far has finished: a first call
//!   never waits behind tuning runs of its own bucket, nor does a first pass through a
//!   network made of back-to-back calls wait behind the runs of its earlier layers.
//! - Results can persist in a file (`ContextOptions::tune_cache` or `WGCONV_TUNE_CACHE`),
//!   one line per entry: `<adapter>\t<key>\t<algorithm>`; entries of other adapters or
//!   drivers in the same file are ignored.
//! - Forced algorithms bypass the tuner.
//! - First-call stand-ins: a kernel whose code is large (the lavapipe implicit GEMM, 4 x 32
//!   or 8 x 16 register blocks: 50-60 ms to compile with Mesa's shader cache warm, most of a
//!   second without it) has a smaller stand-in computing the same sums in the same order
//!   (bit-identical results, about 2.5x slower to run, a quarter of the code). Outside
//!   [`TuningMode::Blocking`], a call that finds the large kernel not compiled yet runs the
//!   stand-in and queues the large one for compilation on the worker thread (without waiting
//!   for a pause: compiling submits nothing, but after the work submitted so far has
//!   finished, so that it does not take a core from the first call); later calls run it
//!   once it is compiled. A small zero-padded forward runs one first-call kernel instead of
//!   the stand-in and its packing and padding kernels (`conv2d_implicit_first`, see
//!   `conv::forward::implicit_gemm`), and its weight gradient one kernel instead of the dy
//!   packing, the input fill and the steady kernel (`conv2d_wgrad_first`, see
//!   `conv::weight_grad::implicit_gemm`). Measurements, [`Context::warm_up`] and
//!   [`TuningMode::Blocking`] always use (and compile) the large kernels;
//!   [`Context::wait_for_tuning`] also waits for the queued compilations.

use std::cell::Cell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use crate::context::{Context, ContextOptions, Inner};
use crate::conv::{Algorithm, Operation};
use crate::error::Result;
use crate::gpu::pipeline::PipelineKey;
use crate::params::Conv2dProblem;
use crate::tensor::Tensor;

/// Problems whose tensors together exceed this are not tuned (the heuristic decides): the
/// scratch copies and the timing runs would cost more than they save.
const MAX_TUNED_BYTES: usize = 96 << 20;

/// A candidate whose first timed run is more than this many times slower than the fastest
/// candidate's is not timed again.
const PRUNE_FACTOR: f64 = 4.0;

/// A queued bucket waits for the call that queued it to be submitted (see [`Job::after`]), or
/// this long when the caller submits its encoder through its own queue.
const GATE_TIMEOUT: Duration = Duration::from_secs(1);

/// ... and then until no call has been submitted for this long, so that the first pass
/// through a network (a first call per layer, back to back) does not queue behind tuning
/// runs of the layers before ...
const QUIET: Duration = Duration::from_millis(200);

/// ... but not longer than this after the tuning thread first saw it (a caller that never
/// pauses still gets its buckets tuned).
const MAX_DEFER: Duration = Duration::from_secs(2);

/// When [`Algorithm::Auto`] measures the algorithms that can run a problem (see
/// [`ContextOptions::tuning`]).
///
/// The default is [`TuningMode::Background`], except on wgpu's GL backend, where it is
/// [`TuningMode::Off`] and "tuning on" means [`TuningMode::Blocking`]: that backend runs
/// every device call under one lock and panics in a thread that waits more than 6 s for it,
/// which a measurement running alongside a caller's call could cause.
///
/// Whichever algorithm runs, results agree with the CPU reference within the conformance
/// tolerance, but different algorithms sum in different orders: with tuning on, the bits of a
/// result can change once a bucket's measurement lands (and between processes or machines,
/// where the measurement can pick differently). [`TuningMode::Off`] is bit-for-bit
/// reproducible for a given adapter and library version.
///
/// Outside [`TuningMode::Blocking`], the first calls that would compile a large kernel (the
/// lavapipe implicit GEMM) run a smaller stand-in while the large kernel compiles on the
/// tuning thread: the stand-in computes the same sums in the same order, so results are
/// bit-identical, and the first call compiles about a quarter of the code.
/// [`Context::wait_for_tuning`] waits for those compilations; [`Context::warm_up`] compiles
/// the large kernels directly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TuningMode {
    /// Never measure: `Auto` runs the heuristic's choice (deterministic). Tuning results
    /// already cached are not used.
    Off,
    /// The first call of a bucket runs the heuristic's choice at once (compiling only its
    /// pipelines) and queues the bucket for the context's tuning thread, which measures the
    /// candidates on scratch tensors; calls after the measurement has landed run the fastest.
    /// The caller never waits for a measurement ([`Context::wait_for_tuning`] does). The
    /// measurements share the device, and on CPU adapters the cores, with the caller's work
    /// while they run ([`Context::set_tuning_paused`] holds them). Where no thread can be
    /// started (wasm in the browser) buckets stay queued and `Auto` runs the heuristic's
    /// choice.
    #[default]
    Background,
    /// The first call of a bucket measures the candidates before it runs (it compiles every
    /// candidate's pipelines and runs each up to four times): the slowest first call, tuned
    /// from that call on.
    Blocking,
}

impl TuningMode {
    fn to_u8(self) -> u8 {
        match self {
            TuningMode::Off => 0,
            TuningMode::Background => 1,
            TuningMode::Blocking => 2,
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            0 => TuningMode::Off,
            2 => TuningMode::Blocking,
            _ => TuningMode::Background,
        }
    }

    /// The mode named by `WGCONV_AUTOTUNE` (`0`/`off`/`false`; `1`/`on`/`true`: `on`, the
    /// adapter's default mode with tuning on; `background`; `blocking`), if it names one.
    fn from_env(v: &str, on: TuningMode) -> Option<Self> {
        match v.trim().to_ascii_lowercase().as_str() {
            "0" | "off" | "false" => Some(TuningMode::Off),
            "1" | "on" | "true" => Some(on),
            "background" => Some(TuningMode::Background),
            "blocking" => Some(TuningMode::Blocking),
            _ => None,
        }
    }

    /// The mode "tuning on" means on `backend`, and the default mode there. wgpu's GL backend
    /// serialises every device call behind one context lock, held while a submission runs and
    /// while a wait lasts, and panics in the thread that cannot get it within 6 s
    /// (wgpu-hal `gles`): a measurement running alongside a caller's call could make that
    /// call panic. There tuning measures on the caller's thread when on ([`Blocking`]), and
    /// is off by default, so that the first call of a bucket still compiles only what it
    /// runs.
    ///
    /// [`Blocking`]: TuningMode::Blocking
    fn defaults(backend: wgpu::Backend) -> (TuningMode, TuningMode) {
        if backend == wgpu::Backend::Gl {
            (TuningMode::Blocking, TuningMode::Off)
        } else {
            (TuningMode::Background, TuningMode::Background)
        }
    }
}

/// Which operation a tuning entry is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum TunedOp {
    Forward,
    BackwardInput,
    /// The transposed convolution with a bias (without one it is `BackwardInput`).
    TransposedBias,
    BackwardWeight,
}

impl TunedOp {
    fn name(self) -> &'static str {
        match self {
            TunedOp::Forward => "fwd",
            TunedOp::BackwardInput => "dx",
            TunedOp::TransposedBias => "dxb",
            TunedOp::BackwardWeight => "dw",
        }
    }

    /// The operation whose table this entry chooses from.
    fn operation(self) -> Operation {
        match self {
            TunedOp::Forward => Operation::Forward,
            TunedOp::BackwardInput => Operation::InputGrad,
            TunedOp::TransposedBias => Operation::Transposed,
            TunedOp::BackwardWeight => Operation::WeightGrad,
        }
    }
}

/// The prefix of the keys of compilation jobs (bucket keys start with an operation name).
const COMPILE_KEY: &str = "compile ";

/// What a job of the worker thread does.
enum Work {
    /// Measure a bucket.
    Tune {
        op: TunedOp,
        p: Conv2dProblem,
        heuristic: Algorithm,
        candidates: Vec<Algorithm>,
    },
    /// Compile the pipeline a first-call stand-in stood in for.
    Compile(PipelineKey),
}

/// A bucket waiting for (or under) measurement, or a pipeline waiting to be compiled.
struct Job {
    /// The bucket's key, or `compile <kernel> <constants>`: a key is queued once.
    key: String,
    work: Work,
    /// [`QueueState::submits`] when queued: the job starts once a later submission (the
    /// queuing call's own, normally) has happened, so the tuning runs never go to the device
    /// ahead of the work of the call that queued them (on lavapipe one queue thread runs
    /// everything in order: a first call would wait for the runs of every slow candidate).
    after: u64,
    /// When the tuning thread first saw the job (for [`GATE_TIMEOUT`] and [`MAX_DEFER`]; read
    /// by that thread only, so that queuing a job needs no clock: `Instant::now` panics on
    /// wasm).
    seen: Option<Instant>,
}

thread_local! {
    /// Set while this thread records work that must use the steady-state kernels (see
    /// [`SteadyKernels`]).
    static STEADY_KERNELS: Cell<bool> = const { Cell::new(false) };
}

/// While alive, calls on this thread record the steady-state kernels, never first-call
/// stand-ins (measurements time what later calls run; warm-up compiles it).
struct SteadyKernels(bool);

impl SteadyKernels {
    fn enter() -> Self {
        SteadyKernels(STEADY_KERNELS.with(|f| f.replace(true)))
    }
}

impl Drop for SteadyKernels {
    fn drop(&mut self) {
        STEADY_KERNELS.with(|f| f.set(self.0));
    }
}

/// The queue of buckets to measure, shared by the context and its tuning thread.
#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    /// Signalled when a job is queued or finished, on pause changes and when the context goes.
    changed: Condvar,
}

#[derive(Default)]
struct QueueState {
    jobs: VecDeque<Job>,
    /// Keys queued or under measurement (a bucket is queued once).
    pending: HashSet<String>,
    /// Jobs under measurement.
    running: usize,
    /// The worker starts no new job while paused.
    paused: bool,
    /// A worker thread is running.
    worker: bool,
    /// The context is gone: the worker exits.
    closed: bool,
    /// Submissions of callers' work so far ([`Context::submit`]).
    submits: u64,
    /// When the last one happened (kept only while a tuning thread runs).
    last_submit: Option<Instant>,
    /// Threads in [`Context::wait_for_tuning`]: jobs start without waiting for a submission.
    hurry: usize,
}

impl QueueState {
    /// The next job the worker may start now, or how long to wait before asking again.
    /// Compilations go first and wait only for the queuing call's submission; measurements
    /// wait for the caller to pause, in queue order.
    fn next_ready(&mut self) -> Result<Job, Option<Duration>> {
        if self.paused {
            return Err(None);
        }
        let mut wait: Option<Duration> = None;
        let (submits, hurry) = (self.submits, self.hurry);
        for (i, job) in self.jobs.iter_mut().enumerate() {
            if !matches!(job.work, Work::Compile(_)) {
                continue;
            }
            let waited = job.seen.get_or_insert_with(Instant::now).elapsed();
            if hurry > 0 || submits > job.after || waited >= GATE_TIMEOUT {
                self.running += 1;
                return self.jobs.remove(i).ok_or(None);
            }
            let left = GATE_TIMEOUT - waited;
            wait = Some(wait.map_or(left, |w| w.min(left)));
        }
        let Some(job) = self
            .jobs
            .iter_mut()
            .find(|j| matches!(j.work, Work::Tune { .. }))
        else {
            return Err(wait);
        };
        let min = |d: Duration| Some(wait.map_or(d, |w| w.min(d)));
        let waited = job.seen.get_or_insert_with(Instant::now).elapsed();
        if self.hurry == 0 && waited < MAX_DEFER {
            if self.submits > job.after {
                let quiet = self.last_submit.map_or(QUIET, |t| t.elapsed());
                if quiet < QUIET {
                    return Err(min(QUIET - quiet));
                }
            } else if waited < GATE_TIMEOUT {
                return Err(min(GATE_TIMEOUT - waited));
            }
        }
        let i = self
            .jobs
            .iter()
            .position(|j| matches!(j.work, Work::Tune { .. }))
            .ok_or(None)?;
        self.running += 1;
        self.jobs.remove(i).ok_or(None)
    }
}

impl Queue {
    /// The state; a panic while it was held (it never runs user code) does not make it
    /// unusable.
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Marks a job finished when dropped, also when the measurement panicked (so
/// [`Context::wait_for_tuning`] never waits for a job that will not finish).
struct Finish<'a> {
    queue: &'a Queue,
    key: String,
    /// The job ran on the worker thread.
    worker: bool,
}

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        let mut s = self.queue.lock();
        s.running -= 1;
        s.pending.remove(&self.key);
        if self.worker && std::thread::panicking() {
            // The worker thread dies with this panic: the next queued job starts another.
            s.worker = false;
        }
        drop(s);
        self.queue.changed.notify_all();
    }
}

pub(crate) struct Tuner {
    mode: AtomicU8,
    /// The mode [`Context::set_autotune`]`(true)` restores (never `Off`).
    on_mode: AtomicU8,
    cache: RwLock<HashMap<String, Algorithm>>,
    path: Option<PathBuf>,
    adapter: String,
    file_lock: Mutex<()>,
    measured: AtomicUsize,
    queue: Arc<Queue>,
    /// Held while measuring: one measurement at a time.
    measuring: Mutex<()>,
}

impl Drop for Tuner {
    fn drop(&mut self) {
        self.queue.lock().closed = true;
        self.queue.changed.notify_all();
    }
}

impl Tuner {
    pub(crate) fn new(options: &ContextOptions, info: &wgpu::AdapterInfo) -> Self {
        let (on, default) = TuningMode::defaults(info.backend);
        let mode = options
            .tuning
            .or(options
                .autotune
                .map(|a| if a { on } else { TuningMode::Off }))
            .or_else(|| {
                std::env::var("WGCONV_AUTOTUNE")
                    .ok()
                    .and_then(|v| TuningMode::from_env(&v, on))
            })
            .unwrap_or(default);
        let on_mode = if mode == TuningMode::Off { on } else { mode };
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
            mode: AtomicU8::new(mode.to_u8()),
            on_mode: AtomicU8::new(on_mode.to_u8()),
            cache: RwLock::new(cache),
            path,
            adapter,
            file_lock: Mutex::new(()),
            measured: AtomicUsize::new(0),
            queue: Arc::default(),
            measuring: Mutex::new(()),
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

/// Tensors of a problem's shapes for work that must not touch a caller's tensors (timing,
/// warm-up). Never cached: the packed-weight cache must not keep panels of scratch weights.
pub(crate) struct Scratch {
    x: Tensor,
    w: Tensor,
    y: Tensor,
    /// The forward's bias (length `k`) when the problem has one, for the forward and the
    /// bias gradient.
    b: Option<Tensor>,
    /// The transposed convolution's bias (length `c`), when asked for.
    bt: Option<Tensor>,
}

impl Scratch {
    /// Zero tensors for `p` (a transposed bias when `transposed_bias`).
    pub(crate) fn new(ctx: &Context, p: &Conv2dProblem, transposed_bias: bool) -> Result<Self> {
        let t = |shape: &[usize]| -> Result<Tensor> {
            let t = Tensor::zeros(ctx, shape)?;
            t.mark_volatile();
            Ok(t)
        };
        Ok(Scratch {
            x: t(&p.x_shape())?,
            w: t(&p.w_shape())?,
            y: t(&p.y_shape())?,
            b: if p.has_bias { Some(t(&[p.k])?) } else { None },
            bt: if transposed_bias {
                Some(t(&[p.c])?)
            } else {
                None
            },
        })
    }

    /// Records `op` of `p` with `algo` on these tensors (the forward reads `x` and `w` and
    /// writes `y`; the gradients read `y` as `dy`). For [`Operation::Transposed`] `p` is the
    /// forward problem ([`TransposedProblem::conv`](crate::TransposedProblem::conv)). The
    /// forward's bias (`p.has_bias`) plays no part in the other operations, whose problems
    /// never have one (as in the calls); the bias gradient of a problem without bias gets a
    /// scratch bias of its own.
    pub(crate) fn encode(
        &self,
        ctx: &Context,
        enc: &mut wgpu::CommandEncoder,
        op: Operation,
        p: &Conv2dProblem,
        algo: Algorithm,
    ) -> Result<()> {
        use crate::conv::{bias_grad, input_grad, weight_grad};
        let (x, w, y) = (self.x.raw(), self.w.raw(), self.y.raw());
        let grad = &without_bias(p);
        match op {
            Operation::Forward => {
                ctx.encode_conv2d_problem(enc, p, &self.x, &self.w, self.b.as_ref(), &self.y, algo)
            }
            Operation::InputGrad => input_grad::encode(
                ctx,
                enc,
                grad,
                y,
                w,
                None,
                x,
                algo,
                false,
                Default::default(),
            ),
            Operation::Transposed => input_grad::encode(
                ctx,
                enc,
                grad,
                y,
                w,
                self.bt.as_ref().map(Tensor::raw),
                x,
                algo,
                true,
                Default::default(),
            ),
            Operation::WeightGrad => {
                weight_grad::encode(ctx, enc, grad, x, y, w, None, algo, Default::default())?;
                Ok(())
            }
            Operation::BiasGrad => {
                let own;
                let db = match &self.b {
                    Some(b) => b,
                    None => {
                        own = Tensor::zeros(ctx, &[p.k])?;
                        &own
                    }
                };
                bias_grad::encode(ctx, enc, p.y_shape(), y, db.raw(), false, false)
            }
        }
    }

    /// Records the weight and bias gradients of `p` as `conv2d_backward` with a bias does:
    /// the weight gradient's GEMM summing the bias gradient where it can (other pipelines
    /// than either gradient alone), else the bias gradient's own pass.
    fn encode_weight_and_bias(
        &self,
        ctx: &Context,
        enc: &mut wgpu::CommandEncoder,
        p: &Conv2dProblem,
        algo: Algorithm,
    ) -> Result<()> {
        let db = Tensor::zeros(ctx, &[p.k])?;
        let (x, y, dw) = (self.x.raw(), self.y.raw(), self.w.raw());
        let native = Default::default();
        let grad = &without_bias(p);
        if !crate::conv::weight_grad::encode(
            ctx,
            enc,
            grad,
            x,
            y,
            dw,
            Some(db.raw()),
            algo,
            native,
        )? {
            self.encode(ctx, enc, Operation::BiasGrad, p, algo)?;
        }
        Ok(())
    }
}

impl Scratch {
    /// Records the forward of `p` with weights the library can track, as a call whose
    /// weights stay alive does: 1x1 layers pack and cache those (other pipelines than the
    /// scratch weights, which their kernel reads in place from a verbatim copy).
    fn encode_forward_kept(
        &self,
        ctx: &Context,
        enc: &mut wgpu::CommandEncoder,
        p: &Conv2dProblem,
    ) -> Result<()> {
        let w = Tensor::zeros(ctx, &p.w_shape())?;
        ctx.encode_conv2d_problem(
            enc,
            p,
            &self.x,
            &w,
            self.b.as_ref(),
            &self.y,
            Algorithm::Auto,
        )
    }

    /// Records the gradients of `p` (the bias gradient too when `bias`) as `conv2d_backward`
    /// does: one recording in which they may share work (other pipelines than each gradient
    /// alone, e.g. the weight gradient reading the input gradient's dy image).
    fn encode_backward(
        &self,
        ctx: &Context,
        enc: &mut wgpu::CommandEncoder,
        p: &Conv2dProblem,
        bias: bool,
    ) -> Result<()> {
        let db = bias.then(|| Tensor::zeros(ctx, &[p.k])).transpose()?;
        if let Some(t) = &db {
            t.mark_volatile();
        }
        // dx and dw into x and w: the values are not used, and no pass reads the buffer it
        // writes.
        ctx.encode_backward_all(
            enc,
            &without_bias(p),
            (&self.x, &self.w, &self.y),
            (&self.x, &self.w, db.as_ref()),
            Algorithm::Auto,
        )
    }
}

/// `p` without its bias: the problem of the gradients, which never have one (as in the calls).
fn without_bias(p: &Conv2dProblem) -> Conv2dProblem {
    Conv2dProblem {
        has_bias: false,
        ..*p
    }
}

impl Context {
    /// Turns autotuning of [`Algorithm::Auto`] on or off. Off is [`TuningMode::Off`] (the
    /// deterministic heuristic); on restores the mode the context was created with, or
    /// last set with [`Context::set_tuning_mode`] (if that was `Off`: the adapter's "on" mode,
    /// [`TuningMode::Background`], or [`TuningMode::Blocking`] on GL).
    pub fn set_autotune(&self, on: bool) {
        let tuner = &self.inner.tuner;
        let mode = if on {
            TuningMode::from_u8(tuner.on_mode.load(Ordering::Relaxed))
        } else {
            TuningMode::Off
        };
        tuner.mode.store(mode.to_u8(), Ordering::Relaxed);
    }

    /// Is autotuning on (any mode but [`TuningMode::Off`])?
    pub fn autotune(&self) -> bool {
        self.tuning_mode() != TuningMode::Off
    }

    /// When [`Algorithm::Auto`] measures (see [`TuningMode`]).
    pub fn tuning_mode(&self) -> TuningMode {
        TuningMode::from_u8(self.inner.tuner.mode.load(Ordering::Relaxed))
    }

    /// Sets when [`Algorithm::Auto`] measures. Buckets already queued for the background
    /// thread are still measured whatever the new mode.
    pub fn set_tuning_mode(&self, mode: TuningMode) {
        let tuner = &self.inner.tuner;
        tuner.mode.store(mode.to_u8(), Ordering::Relaxed);
        if mode != TuningMode::Off {
            tuner.on_mode.store(mode.to_u8(), Ordering::Relaxed);
        }
    }

    /// Pauses (`true`) or resumes the background tuning thread: while paused it starts no
    /// new measurement (one under way finishes) and buckets keep queuing; `Auto` keeps
    /// running the heuristic's choice for them. For phases where the caller wants the
    /// device, and on CPU adapters the cores, to itself. [`Context::wait_for_tuning`] still
    /// measures the queued buckets (on the calling thread).
    pub fn set_tuning_paused(&self, paused: bool) {
        let queue = &self.inner.tuner.queue;
        queue.lock().paused = paused;
        queue.changed.notify_all();
    }

    /// Is the background tuning thread paused ([`Context::set_tuning_paused`])?
    pub fn tuning_paused(&self) -> bool {
        self.inner.tuner.queue.lock().paused
    }

    /// How many (operation, parameters, shape bucket) entries this context has measured
    /// (on the first call in [`TuningMode::Blocking`], on the tuning thread in
    /// [`TuningMode::Background`]; entries read from the tuning cache file are not counted).
    pub fn tuned_entries(&self) -> usize {
        self.inner.tuner.measured.load(Ordering::Relaxed)
    }

    /// How many buckets are queued for the background tuning thread or being measured by it.
    /// (Compilations queued by first-call stand-ins are not counted.)
    pub fn pending_tuning(&self) -> usize {
        let s = self.inner.tuner.queue.lock();
        s.pending
            .iter()
            .filter(|k| !k.starts_with(COMPILE_KEY))
            .count()
    }

    /// Blocks until every bucket queued for background tuning has been measured and its
    /// result is in use (and in the tuning cache file, if any), and every pipeline queued by
    /// a first-call stand-in (see [`TuningMode`]) is compiled. Queued buckets the tuning
    /// thread has not started are measured on the calling thread while it is paused or
    /// could not be started. For tests, benchmarks and tools that want tuned choices, or a
    /// complete tuning cache file, before going on.
    pub fn wait_for_tuning(&self) {
        let queue = &self.inner.tuner.queue;
        let mut s = queue.lock();
        s.hurry += 1;
        queue.changed.notify_all();
        loop {
            if s.jobs.is_empty() && s.running == 0 {
                s.hurry -= 1;
                return;
            }
            if s.paused || !s.worker {
                if let Some(job) = s.jobs.pop_front() {
                    s.running += 1;
                    drop(s);
                    let finish = Finish {
                        queue,
                        key: job.key.clone(),
                        worker: false,
                    };
                    self.run_job(&job);
                    drop(finish);
                    s = queue.lock();
                    continue;
                }
            }
            s = queue
                .changed
                .wait(s)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// The algorithm `Auto` runs for `op` on `p`: the tuned choice among `candidates` (the
    /// entries of the operation's table that can run `p` and are worth timing here) when
    /// there is one, else `heuristic`; a bucket without a tuned choice is measured now
    /// ([`TuningMode::Blocking`]) or queued ([`TuningMode::Background`]).
    pub(crate) fn choose(
        &self,
        op: TunedOp,
        p: &Conv2dProblem,
        heuristic: Algorithm,
        candidates: &[Algorithm],
    ) -> Algorithm {
        let tuner = &self.inner.tuner;
        let mode = self.tuning_mode();
        if mode == TuningMode::Off || candidates.len() <= 1 {
            return heuristic;
        }
        let key = key(op, p);
        // Texture limits depend on exact sizes: a choice made for a smaller shape of the
        // bucket may not run this one.
        let usable = |a: Algorithm| {
            if candidates.contains(&a) {
                a
            } else {
                heuristic
            }
        };
        if let Some(a) = tuner.get(&key) {
            return usable(a);
        }
        let elems = crate::params::numel(&p.x_shape())
            + crate::params::numel(&p.w_shape())
            + crate::params::numel(&p.y_shape());
        if elems * 4 > MAX_TUNED_BYTES {
            return heuristic;
        }
        let job = Job {
            key,
            work: Work::Tune {
                op,
                p: *p,
                heuristic,
                candidates: candidates.to_vec(),
            },
            after: 0,
            seen: None,
        };
        if mode == TuningMode::Blocking {
            self.run_job(&job);
            return tuner.get(&job.key).map_or(heuristic, usable);
        }
        self.enqueue(job);
        heuristic
    }

    /// Queues `job` for the tuning thread (once per key), starting the thread if needed.
    fn enqueue(&self, mut job: Job) {
        let queue = &self.inner.tuner.queue;
        let mut s = queue.lock();
        if !s.pending.insert(job.key.clone()) {
            return;
        }
        job.after = s.submits;
        s.jobs.push_back(job);
        if !s.worker {
            let weak = Arc::downgrade(&self.inner);
            let q = Arc::clone(queue);
            let spawned = std::thread::Builder::new()
                .name("wgconv-tuner".into())
                .spawn(move || worker(weak, q));
            // Without a thread (a platform without threads), the queue waits for
            // `wait_for_tuning`; `Auto` runs the heuristic's choice meanwhile.
            s.worker = spawned.is_ok();
        }
        drop(s);
        queue.changed.notify_all();
    }

    /// Marks the end of a caller's call ([`Context::submit`]): buckets queued before it may
    /// start measuring.
    pub(crate) fn release_tuning(&self) {
        let queue = &self.inner.tuner.queue;
        let mut s = queue.lock();
        s.submits += 1;
        if s.worker {
            s.last_submit = Some(Instant::now());
        }
        let waiting = !s.jobs.is_empty();
        drop(s);
        if waiting {
            queue.changed.notify_all();
        }
    }

    /// Whether a call recording kernel `key` now may run its first-call stand-in instead
    /// (see the module documentation): outside [`TuningMode::Blocking`], measurements and
    /// [`Context::warm_up`], when that pipeline is not compiled yet. Queues its compilation
    /// then.
    pub(crate) fn stand_in(&self, key: PipelineKey) -> bool {
        if STEADY_KERNELS.with(Cell::get)
            || self.tuning_mode() == TuningMode::Blocking
            || self.adapter_info().backend == wgpu::Backend::Gl
            || self.pipeline_ready(&key)
        {
            return false;
        }
        self.compile_later(key);
        true
    }

    /// Queues the compilation of `key` for the tuning thread (the pipelines a first-call
    /// kernel stood in for; see [`Context::stand_in`]).
    pub(crate) fn compile_later(&self, key: PipelineKey) {
        if self.pipeline_ready(&key) || self.pipeline_failure(&key).is_some() {
            return;
        }
        self.enqueue(Job {
            key: format!("{COMPILE_KEY}{} {:?}", key.kernel.name(), key.constants),
            work: Work::Compile(key),
            after: 0,
            seen: None,
        });
    }

    /// Runs `job` on this thread.
    fn run_job(&self, job: &Job) {
        match &job.work {
            Work::Tune {
                op,
                p,
                heuristic,
                candidates,
            } => self.tune_bucket(&job.key, *op, p, *heuristic, candidates),
            Work::Compile(key) => {
                // A failure shows again, with its error, when a call compiles it.
                let _ = self.pipeline(key);
            }
        }
    }

    /// Measures a bucket (unless another thread has meanwhile) and records the fastest
    /// candidate, or the heuristic's choice when none ran.
    fn tune_bucket(
        &self,
        key: &str,
        op: TunedOp,
        p: &Conv2dProblem,
        heuristic: Algorithm,
        candidates: &[Algorithm],
    ) {
        let tuner = &self.inner.tuner;
        let _one = tuner
            .measuring
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if tuner.get(key).is_some() {
            return;
        }
        let best = {
            let _steady = SteadyKernels::enter();
            self.measure(op, p, candidates, key)
        }
        .unwrap_or(heuristic);
        log::debug!(
            "wgconv autotune {}: {} (heuristic {})",
            key,
            best.name(),
            heuristic.name()
        );
        tuner.measured.fetch_add(1, Ordering::Relaxed);
        tuner.insert(key.to_string(), best);
    }

    /// The fastest of `candidates` on `p`, pruning hopeless ones after one timed run (see the
    /// module documentation); `None` when none ran.
    fn measure(
        &self,
        op: TunedOp,
        p: &Conv2dProblem,
        candidates: &[Algorithm],
        key: &str,
    ) -> Option<Algorithm> {
        let scratch = Scratch::new(self, p, op == TunedOp::TransposedBias).ok()?;
        // Timed with the weight packing of every call (as in training, where the weights
        // change between calls), not from the packed-weight cache (scratch is volatile).
        let operation = op.operation();
        let run = |algo: Algorithm| -> Result<f64> {
            let t = Instant::now();
            let mut enc = self.encoder("wgconv autotune");
            scratch.encode(self, &mut enc, operation, p, algo)?;
            self.submit_internal(enc)?;
            self.synchronize()?;
            Ok(t.elapsed().as_secs_f64())
        };
        // Warm-up, untimed: compiles the pipelines, and on drivers that compile a pipeline's
        // machine code at its first dispatch (lavapipe without its shader cache: up to a
        // second for a large kernel) runs that too, which would otherwise inflate the first
        // timed run and prune the wrong candidates. An algorithm that fails is not a
        // candidate.
        let mut live: Vec<(Algorithm, f64)> = candidates
            .iter()
            .filter(|&&algo| run(algo).is_ok())
            .map(|&algo| (algo, f64::INFINITY))
            .collect();
        // Rounds over all candidates in turn, so a slow phase of the machine (another
        // process, the caller's own work, or the VM moving a thread) hits every candidate
        // alike rather than the one that happened to be measured then. Each keeps its fastest
        // run: interference only ever slows a run down, so the minimum is the robust estimate
        // on a shared machine. After the first round, candidates far slower than the fastest
        // are dropped: they cannot win, and timing them again (a direct kernel on a large
        // layer runs for hundreds of milliseconds on lavapipe) would dominate the tuning time.
        for round in 0..3 {
            live.retain_mut(|(algo, best)| match run(*algo) {
                Ok(t) => {
                    *best = best.min(t);
                    true
                }
                Err(_) => false,
            });
            if round == 0 {
                let fastest = live.iter().map(|&(_, t)| t).fold(f64::INFINITY, f64::min);
                live.retain(|&(algo, t)| {
                    let keep = t <= PRUNE_FACTOR * fastest;
                    if !keep {
                        log::debug!(
                            "wgconv autotune {key} {}: {:.3} ms, dropped",
                            algo.name(),
                            t * 1e3
                        );
                    }
                    keep
                });
            }
            if live.len() <= 1 {
                break;
            }
        }
        let mut best: Option<(f64, Algorithm)> = None;
        for &(algo, t) in &live {
            log::debug!("wgconv autotune {key} {}: {:.3} ms", algo.name(), t * 1e3);
            if best.is_none_or(|(bt, _)| t < bt) {
                best = Some((t, algo));
            }
        }
        if let (TunedOp::BackwardWeight, Some((_, algo))) = (op, best) {
            // The winner's twin that also sums the bias gradient (what `conv2d_backward` with
            // a bias runs) compiles now too, untimed, rather than behind the caller's calls.
            let mut enc = self.encoder("wgconv autotune");
            if scratch
                .encode_weight_and_bias(self, &mut enc, p, algo)
                .is_ok()
            {
                let _ = self.submit_internal(enc).and_then(|()| self.synchronize());
            }
        }
        best.map(|(_, a)| a)
    }

    /// Compiles the pipelines that [`Algorithm::Auto`] will run for every operation of `ops`
    /// on every problem of `problems`: the work is recorded on scratch tensors of the
    /// problems' shapes (allocated for the duration of the call, never filled) and run once,
    /// so that drivers which compile a pipeline at its first dispatch (lavapipe) do it now;
    /// returns when it has run. Later calls with these problems compile nothing. Costs one
    /// run of each operation on each problem besides the compilation.
    ///
    /// Tuning proceeds as on a first call: in [`TuningMode::Background`] the buckets are
    /// queued (their measurement compiles the other candidates' pipelines, so after
    /// [`Context::wait_for_tuning`] the tuned choice compiles nothing either); in
    /// [`TuningMode::Blocking`] they are measured now. Choices already tuned (or read from
    /// the tuning cache file) are the ones compiled.
    ///
    /// `problems` are forward problems, as for [`Context::check_algorithm`]: for
    /// [`Operation::Transposed`] this prepares the transposed convolution (without bias)
    /// whose forward each problem is; [`Context::warm_up_transposed`] takes transposed
    /// problems with their bias. [`Operation::BiasGrad`] prepares the bias gradient of each
    /// problem's output; with [`Operation::WeightGrad`] too, also the two as
    /// [`Context::conv2d_backward`] with a bias runs them (the weight gradient's GEMM may sum
    /// the bias gradient itself).
    ///
    /// ```no_run
    /// # use wgconv::*;
    /// # fn main() -> Result<()> {
    /// let ctx = Context::new_blocking()?;
    /// let p = Conv2dParams::default().with_padding(Padding::Symmetric([1, 1]));
    /// let layers = [
    ///     p.resolve([1, 3, 224, 224], [64, 3, 3, 3], Some(64))?,
    ///     p.resolve([1, 64, 224, 224], [64, 64, 3, 3], Some(64))?,
    /// ];
    /// ctx.warm_up(&[Operation::Forward], &layers)?; // inference
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// Allocation failures of the scratch tensors, and the errors the calls would return
    /// (e.g. [`ErrorKind::ExceedsLimit`](crate::ErrorKind::ExceedsLimit)).
    pub fn warm_up(&self, ops: &[Operation], problems: &[Conv2dProblem]) -> Result<()> {
        let _steady = SteadyKernels::enter();
        for p in problems {
            let scratch = Scratch::new(self, p, false)?;
            let mut enc = self.encoder("wgconv warm-up");
            for &op in ops {
                scratch.encode(self, &mut enc, op, p, Algorithm::Auto)?;
            }
            if ops.contains(&Operation::WeightGrad) && ops.contains(&Operation::BiasGrad) {
                scratch.encode_weight_and_bias(self, &mut enc, p, Algorithm::Auto)?;
            }
            if ops.contains(&Operation::Forward) && p.r * p.s == 1 {
                scratch.encode_forward_kept(self, &mut enc, p)?;
            }
            if ops.contains(&Operation::InputGrad) && ops.contains(&Operation::WeightGrad) {
                let bias = ops.contains(&Operation::BiasGrad);
                scratch.encode_backward(self, &mut enc, p, bias)?;
            }
            // Run, not just recorded: drivers that compile a pipeline at its first dispatch
            // (lavapipe's LLVM, ~0.5 s for the register-blocked implicit GEMM) do it now.
            // Recorded only, the pipelines existed and the first call still paid the
            // driver's compilation, more than the first-call stand-ins it then skipped
            // (shape b: 0.7-0.9 s against 0.3 s without warm-up; 11-14 ms now).
            self.submit(enc)?;
        }
        self.synchronize()
    }

    /// [`Context::warm_up`] for transposed convolutions ([`Context::conv_transpose2d`]),
    /// with their bias when they have one.
    ///
    /// # Errors
    /// As [`Context::warm_up`].
    pub fn warm_up_transposed(&self, problems: &[crate::TransposedProblem]) -> Result<()> {
        let _steady = SteadyKernels::enter();
        for tp in problems {
            let p = tp.conv();
            let scratch = Scratch::new(self, &p, tp.has_bias())?;
            let mut enc = self.encoder("wgconv warm-up");
            scratch.encode(self, &mut enc, Operation::Transposed, &p, Algorithm::Auto)?;
            // Run, as in `warm_up`.
            self.submit(enc)?;
        }
        self.synchronize()
    }
}

/// The tuning thread of one context: measures queued buckets until the context is gone. It
/// holds the context only while measuring, so it never keeps the device alive.
fn worker(ctx: Weak<Inner>, queue: Arc<Queue>) {
    loop {
        let mut s = queue.lock();
        let job = loop {
            if s.closed {
                s.worker = false;
                return;
            }
            match s.next_ready() {
                Ok(job) => break job,
                Err(None) => {
                    s = queue
                        .changed
                        .wait(s)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                Err(Some(timeout)) => {
                    s = queue
                        .changed
                        .wait_timeout(s, timeout)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
        };
        drop(s);
        let finish = Finish {
            queue: &queue,
            key: job.key.clone(),
            worker: true,
        };
        let Some(inner) = ctx.upgrade() else {
            return;
        };
        let ctx = Context { inner };
        // Let the caller's submitted work (the call that queued the job, and the read of
        // its result submitted right after) finish before the first tuning run, and before a
        // compilation: on a CPU adapter the compilation would take a core from the first
        // call's kernels (and from the driver compiling them).
        let _ = ctx.synchronize();
        ctx.run_job(&job);
        drop(ctx);
        drop(finish);
    }
}
