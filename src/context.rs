//! [`Context`]: adapter, device, queue, limits and the pipeline cache.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use crate::error::{Error, ErrorKind, Result};
use crate::gpu::pipeline::PipelineKey;
use crate::kernels::Kernel;
use crate::tune::TuningMode;

/// Default cap on the scratch memory of one operation (im2col columns, split-K partials, the
/// operand images of [`GemmVariant::Image`](crate::GemmVariant::Image)).
pub const DEFAULT_SCRATCH_BUDGET: u64 = 64 << 20;

/// Options for [`Context::with_options`].
#[derive(Clone, Debug, Default)]
pub struct ContextOptions {
    /// Backends to consider. `None`: `WGPU_BACKEND` if set, else every native backend.
    pub backends: Option<wgpu::Backends>,
    /// Pick the first adapter whose name contains this (case-insensitive).
    /// `None`: `WGPU_ADAPTER_NAME` if set, else the highest-performance adapter.
    pub adapter_name: Option<String>,
    /// Lower the limits the library plans its work against (never raises them). Used to
    /// exercise the splitting paths on small problems, or to leave headroom to an app.
    pub limits: Option<LimitsOverride>,
    /// Scratch-memory budget per operation in bytes (im2col columns, GEMM operand images and
    /// the like). Images filled by a kernel are written through a staging buffer of their
    /// size (released right after the copy), so the transient peak can reach one more image.
    /// It also bounds the idle scratch the context keeps for reuse between calls
    /// ([`Context::pooled_bytes`]). `None`: [`DEFAULT_SCRATCH_BUDGET`].
    pub scratch_budget: Option<u64>,
    /// Autotuning of [`Algorithm::Auto`](crate::Algorithm::Auto) on or off: `Some(false)` is
    /// [`TuningMode::Off`] (the deterministic heuristic choice), `Some(true)`
    /// [`TuningMode::Background`] ([`TuningMode::Blocking`] on wgpu's GL backend, see
    /// [`TuningMode`]). Ignored when [`ContextOptions::tuning`] is set. `None` (and `tuning`
    /// unset): `WGCONV_AUTOTUNE` if set (`0`/`off`, `1`/`on`, `background`, `blocking`), else
    /// the default: [`TuningMode::Background`] ([`TuningMode::Off`] on GL).
    pub autotune: Option<bool>,
    /// When [`Algorithm::Auto`](crate::Algorithm::Auto) measures the algorithms (see
    /// [`TuningMode`]); takes precedence over [`ContextOptions::autotune`]. `None`: as
    /// `autotune` says.
    pub tuning: Option<TuningMode>,
    /// File that persists tuning results across processes (keyed by adapter name and
    /// driver). An entry is appended when its measurement lands: with background tuning,
    /// [`Context::wait_for_tuning`] before the process exits completes the file. `None`:
    /// `WGCONV_TUNE_CACHE` if set, else in memory only.
    pub tune_cache: Option<std::path::PathBuf>,
    /// Byte budget of the cache of packed weights reused across calls with unchanged
    /// weights (see [`Context::set_weight_cache_budget`]); `Some(0)` disables it (and the
    /// cache of filled input images the weight gradient shares with the forward). `None`:
    /// [`DEFAULT_WEIGHT_CACHE_BUDGET`](crate::DEFAULT_WEIGHT_CACHE_BUDGET).
    pub weight_cache_budget: Option<u64>,
    /// Family of kernel variants to run. `None`: by the adapter's device type
    /// ([`KernelClass::Cpu`] on CPU adapters such as lavapipe, SwiftShader and WARP, else
    /// [`KernelClass::Gpu`]). Forcing `Gpu` on a CPU adapter runs the GPU variants there
    /// (slowly), which is how the test suites check them on machines without a GPU.
    pub kernel_class: Option<KernelClass>,
}

/// The family of kernel variants a [`Context`] runs (see [`ContextOptions::kernel_class`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelClass {
    /// Variants for CPU adapters: register-blocked kernels without barriers, operands read
    /// through storage images (a per-lane loop per float through a storage buffer there).
    Cpu,
    /// Variants for GPUs: workgroup-memory tiles, storage-buffer operands.
    Gpu,
}

impl KernelClass {
    /// The class the library picks for an adapter of this device type.
    pub fn for_device_type(t: wgpu::DeviceType) -> Self {
        if t == wgpu::DeviceType::Cpu {
            KernelClass::Cpu
        } else {
            KernelClass::Gpu
        }
    }
}

/// Artificially lower device limits (see [`ContextOptions::limits`]). `None` keeps the
/// device's own value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimitsOverride {
    /// Cap for `maxStorageBufferBindingSize` in bytes.
    pub max_storage_buffer_binding_size: Option<u64>,
    /// Cap for `maxBufferSize` in bytes.
    pub max_buffer_size: Option<u64>,
    /// Cap for `maxComputeWorkgroupsPerDimension`.
    pub max_compute_workgroups_per_dimension: Option<u32>,
    /// Cap for `maxTextureDimension2D` (the storage images of [`GemmVariant::Image`]);
    /// values below 16 count as 16.
    ///
    /// [`GemmVariant::Image`]: crate::GemmVariant::Image
    pub max_texture_dimension_2d: Option<u32>,
}

/// The limits the library plans against (the device's, possibly lowered by
/// [`LimitsOverride`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest storage-buffer binding in bytes.
    pub max_storage_buffer_binding_size: u64,
    /// Largest buffer in bytes.
    pub max_buffer_size: u64,
    /// Largest dispatch size along one dimension.
    pub max_compute_workgroups_per_dimension: u32,
    /// Largest workgroup (invocations).
    pub max_compute_invocations_per_workgroup: u32,
    /// Required alignment of storage-buffer binding offsets.
    pub min_storage_buffer_offset_alignment: u32,
    /// Largest width or height of a 2-D texture (storage images of the image GEMM).
    pub max_texture_dimension_2d: u32,
}

impl Limits {
    fn from_wgpu(l: &wgpu::Limits, over: Option<LimitsOverride>) -> Self {
        let o = over.unwrap_or_default();
        let cap = |v: u64, c: Option<u64>| c.map_or(v, |c| v.min(c));
        Limits {
            max_storage_buffer_binding_size: cap(
                l.max_storage_buffer_binding_size,
                o.max_storage_buffer_binding_size,
            ),
            max_buffer_size: cap(l.max_buffer_size, o.max_buffer_size),
            max_compute_workgroups_per_dimension: o
                .max_compute_workgroups_per_dimension
                .map_or(l.max_compute_workgroups_per_dimension, |c| {
                    c.clamp(1, l.max_compute_workgroups_per_dimension)
                }),
            max_compute_invocations_per_workgroup: l.max_compute_invocations_per_workgroup,
            min_storage_buffer_offset_alignment: l.min_storage_buffer_offset_alignment,
            max_texture_dimension_2d: o
                .max_texture_dimension_2d
                .map_or(l.max_texture_dimension_2d, |c| {
                    c.max(16).min(l.max_texture_dimension_2d)
                }),
        }
    }
}

/// The arithmetic of operations on f16 tensors ([`Context::set_precision`]).
///
/// f16 tensors are always stored as f16; this chooses what the kernels compute in. It is
/// never changed by the library: f16 arithmetic runs only where the caller asked for it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Precision {
    /// f32 multiply-adds and accumulation, each result rounded once to f16 (the default):
    /// every adapter, every operation and algorithm, within `cpu::f16_tolerance` of the
    /// f64 reference, finite wherever the f32 sums are.
    #[default]
    F32Accumulate,
    /// f16 multiply-adds and accumulation (WGSL `f16`; needs `shader-f16`,
    /// [`Context::has_shader_f16`]): half the register and arithmetic width on GPUs that
    /// have native f16 (most do), and the error of an f16 sum: within
    /// `cpu::f16_accumulate_tolerance` (it grows with the reduction length), and products
    /// or partial sums beyond 65504 overflow to infinity. Runs the direct algorithm's
    /// kernels ([`Algorithm::Direct`](crate::Algorithm::Direct): forward, transposed, input
    /// and weight gradients, every padding mode, stride, dilation and group) and the
    /// register and tiled GEMMs ([`GemmVariant::Register`](crate::GemmVariant::Register),
    /// [`GemmVariant::Tiled`](crate::GemmVariant::Tiled)); `Auto` picks those, and another
    /// forced algorithm returns [`ErrorKind::UnsupportedAlgorithm`]. Channels-last operands
    /// go through contiguous f16 copies; every operand must fit one storage binding
    /// ([`ErrorKind::ExceedsLimit`] otherwise, never a silent f32 run). The bias gradient, an f32 `dw` of f16 inputs
    /// ([`Context::conv2d_backward_weight_as`]), the epilogue (computed in f32 on the f16 sum)
    /// and operations on f32 tensors keep f32 arithmetic.
    F16Accumulate,
}

impl Precision {
    fn code(self) -> u8 {
        match self {
            Precision::F32Accumulate => 0,
            Precision::F16Accumulate => 1,
        }
    }

    fn from_code(code: u8) -> Self {
        if code == 1 {
            Precision::F16Accumulate
        } else {
            Precision::F32Accumulate
        }
    }

    /// Lowercase name (`f32-accumulate`, `f16-accumulate`).
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32Accumulate => "f32-accumulate",
            Precision::F16Accumulate => "f16-accumulate",
        }
    }
}

/// A GPU context: one device and queue, its limits, and the compiled pipelines.
///
/// Cheap to clone (an `Arc`); `Send + Sync`, so one context can serve many threads.
/// Every [`Tensor`](crate::Tensor) keeps its context alive.
#[derive(Clone)]
pub struct Context {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    kernel_class: KernelClass,
    limits: Limits,
    scratch_budget: AtomicU64,
    pub(crate) pipelines: RwLock<HashMap<PipelineKey, crate::gpu::pipeline::PipelineSlot>>,
    /// Pipelines whose creation failed with a shader compilation error, and that error:
    /// returned again instead of compiling again, and never queued for the background.
    pub(crate) failed_pipelines: RwLock<HashMap<PipelineKey, Error>>,
    /// Pipeline creations that failed (each attempt; tests check that none is repeated).
    pub(crate) compile_failures: AtomicUsize,
    pub(crate) layouts: RwLock<HashMap<Kernel, Arc<wgpu::BindGroupLayout>>>,
    pub(crate) compiles: AtomicUsize,
    pub(crate) allocated: AtomicU64,
    lost: Arc<AtomicBool>,
    pub(crate) tuner: crate::tune::Tuner,
    pub(crate) weights: crate::wcache::WeightCache,
    /// Filled input images across calls (see `crate::icache`).
    pub(crate) inputs: crate::icache::InputCache,
    pub(crate) pool: crate::gpu::pool::Pools,
    /// Kernels may fuse an epilogue into their store (default); off: always the elementwise
    /// pass (`dev::set_fused_epilogues`, for measuring what fusing saves).
    pub(crate) fuse_epilogues: AtomicBool,
    /// [`Precision`] of operations on f16 tensors (`Precision::code`).
    precision: AtomicU8,
    /// Per-dispatch GPU timestamps while a `dev::profile_begin` is active.
    pub(crate) profiler: std::sync::Mutex<Option<crate::gpu::profile::Profiler>>,
    /// A profile is active: dispatches take the `profiler` lock only then.
    pub(crate) profiling: AtomicBool,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("adapter", &self.inner.info.name)
            .field("backend", &self.inner.info.backend)
            .field("limits", &self.inner.limits)
            .finish()
    }
}

fn rank(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let ty = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 5,
        wgpu::DeviceType::IntegratedGpu => 4,
        wgpu::DeviceType::VirtualGpu => 3,
        wgpu::DeviceType::Other => 2,
        wgpu::DeviceType::Cpu => 1,
    };
    // GL compiles shaders slowly and has the weakest compute support.
    let backend = match info.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 2,
        wgpu::Backend::Gl => 1,
        _ => 0,
    };
    (ty, backend)
}

impl Context {
    /// Creates a context on the best adapter: `WGPU_BACKEND` / `WGPU_ADAPTER_NAME` when
    /// set, else the highest-performance adapter (discrete > integrated > CPU; Vulkan,
    /// Metal, DX12 before GL). The device is requested with the adapter's own limits.
    ///
    /// # Errors
    /// [`ErrorKind::NoAdapter`] (with the lavapipe install hint) when no adapter matches;
    /// [`ErrorKind::RequestDevice`] when the device cannot be created.
    pub async fn new() -> Result<Self> {
        Self::with_options(ContextOptions::default()).await
    }

    /// Blocking [`Context::new`].
    pub fn new_blocking() -> Result<Self> {
        pollster::block_on(Self::new())
    }

    /// Blocking [`Context::with_options`].
    pub fn with_options_blocking(options: ContextOptions) -> Result<Self> {
        pollster::block_on(Self::with_options(options))
    }

    /// Creates a context with explicit options.
    pub async fn with_options(options: ContextOptions) -> Result<Self> {
        let backends = options
            .backends
            .or_else(wgpu::Backends::from_env)
            .unwrap_or(wgpu::Backends::PRIMARY | wgpu::Backends::GL);
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        desc.backends = backends;
        let instance = wgpu::Instance::new(desc);
        let adapters = instance.enumerate_adapters(backends).await;
        let wanted = options
            .adapter_name
            .clone()
            .or_else(|| std::env::var("WGPU_ADAPTER_NAME").ok())
            .filter(|s| !s.is_empty());
        let adapter = match &wanted {
            Some(name) => {
                let needle = name.to_lowercase();
                adapters
                    .into_iter()
                    .find(|a| a.get_info().name.to_lowercase().contains(&needle))
                    .ok_or_else(|| {
                        Error::new(ErrorKind::NoAdapter {
                            detail: format!(
                                " whose name contains {name:?} (backends {backends:?})"
                            ),
                        })
                    })?
            }
            None => adapters
                .into_iter()
                .max_by_key(|a| rank(&a.get_info()))
                .ok_or_else(|| {
                    Error::new(ErrorKind::NoAdapter {
                        detail: format!(" (backends {backends:?})"),
                    })
                })?,
        };
        let info = adapter.get_info();
        let wanted_features = wgpu::Features::TIMESTAMP_QUERY
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS
            | wgpu::Features::SUBGROUP
            | wgpu::Features::SHADER_F16;
        let features = adapter.features() & wanted_features;
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("wgconv"),
                required_features: features,
                required_limits: adapter.limits(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| {
                Error::new(ErrorKind::RequestDevice(format!(
                    "{e} (adapter {})",
                    info.name
                )))
            })?;
        // Errors the library does not catch in its own scopes are logged, never a panic.
        device.on_uncaptured_error(Arc::new(|e| {
            log::error!("wgconv: uncaptured wgpu error: {e}")
        }));
        let ctx = Self::build(device, queue, info, &options);
        let lost = ctx.inner.lost.clone();
        ctx.inner
            .device
            .set_device_lost_callback(move |reason, msg| {
                log::error!("wgconv: device lost ({reason:?}): {msg}");
                lost.store(true, Ordering::SeqCst);
            });
        Ok(ctx)
    }

    /// Wraps a device and queue the application already has. The library uses them as
    /// given (features, limits) and never destroys them; the application's error handlers
    /// and device-lost callback are left untouched. Background tuning
    /// ([`TuningMode::Background`], the default) submits its timing runs to this queue from
    /// the context's tuning thread; [`ContextOptions::tuning`] with
    /// [`Context::from_device_with_options`] chooses another mode.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Self {
        let info = device.adapter_info();
        Self::build(device, queue, info, &ContextOptions::default())
    }

    /// [`Context::from_device`] with lowered limits and a scratch budget.
    pub fn from_device_with_options(
        device: wgpu::Device,
        queue: wgpu::Queue,
        options: &ContextOptions,
    ) -> Self {
        let info = device.adapter_info();
        Self::build(device, queue, info, options)
    }

    fn build(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: wgpu::AdapterInfo,
        options: &ContextOptions,
    ) -> Self {
        let limits = Limits::from_wgpu(&device.limits(), options.limits);
        let scratch = options.scratch_budget;
        let tuner = crate::tune::Tuner::new(options, &info);
        let kernel_class = options
            .kernel_class
            .unwrap_or(KernelClass::for_device_type(info.device_type));
        Context {
            inner: Arc::new(Inner {
                device,
                queue,
                info,
                kernel_class,
                limits,
                scratch_budget: AtomicU64::new(scratch.unwrap_or(DEFAULT_SCRATCH_BUDGET)),
                pipelines: RwLock::default(),
                failed_pipelines: RwLock::default(),
                compile_failures: AtomicUsize::new(0),
                layouts: RwLock::default(),
                compiles: AtomicUsize::new(0),
                allocated: AtomicU64::new(0),
                lost: Arc::new(AtomicBool::new(false)),
                tuner,
                weights: crate::wcache::WeightCache::new(
                    options
                        .weight_cache_budget
                        .unwrap_or(crate::wcache::DEFAULT_WEIGHT_CACHE_BUDGET),
                ),
                // Off with the packed-weight cache (`weight_cache_budget: Some(0)`).
                inputs: crate::icache::InputCache::new(match options.weight_cache_budget {
                    Some(0) => 0,
                    _ => crate::icache::DEFAULT_INPUT_CACHE_BUDGET,
                }),
                pool: crate::gpu::pool::Pools::new(),
                fuse_epilogues: AtomicBool::new(true),
                profiler: std::sync::Mutex::new(None),
                profiling: AtomicBool::new(false),
                precision: AtomicU8::new(Precision::F32Accumulate.code()),
            }),
        }
    }

    /// Sets the byte budget of the packed-weight cache and evicts down to it (0 empties and
    /// disables it). Forward convolutions whose algorithm packs the weights into GEMM panels
    /// (the implicit GEMM on lavapipe) keep the packed image of a weight tensor between calls
    /// while the tensor is unchanged: its version moves with every [`Tensor::write`]; tensors
    /// wrapped with [`Tensor::from_buffer`], whose [`Tensor::buffer`] was handed out, or that
    /// were the output of an `encode_*` call are never cached (the library cannot see their
    /// writes). Entries go with their tensor.
    ///
    /// [`Tensor::write`]: crate::Tensor::write
    /// [`Tensor::from_buffer`]: crate::Tensor::from_buffer
    /// [`Tensor::buffer`]: crate::Tensor::buffer
    pub fn set_weight_cache_budget(&self, bytes: u64) {
        self.inner.weights.set_budget(self, bytes);
    }

    /// The packed-weight cache's budget in bytes.
    pub fn weight_cache_budget(&self) -> u64 {
        self.inner.weights.budget()
    }

    /// Bytes held by the packed-weight cache (included in [`Context::allocated_bytes`]).
    pub fn weight_cache_bytes(&self) -> u64 {
        self.inner.weights.bytes()
    }

    /// Bytes held by the cache of filled input images (included in
    /// [`Context::allocated_bytes`]): on CPU adapters the implicit GEMM's padded image of an
    /// input that an allocating forward filled, kept (at most 64 MiB, least recently used
    /// out; only for layers whose weight gradient ran before, so inference keeps nothing) so
    /// that the weight gradient of the same input reads it instead of filling it again,
    /// plus images of replaced entries kept for the next input of their size (a training
    /// loop with a new batch every step allocates nothing). Off with
    /// [`ContextOptions::weight_cache_budget`] `Some(0)`; [`Context::release_scratch`] frees
    /// it.
    pub fn input_cache_bytes(&self) -> u64 {
        self.inner.inputs.bytes()
    }

    /// The wgpu device.
    pub fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }
    /// The wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }
    /// Adapter name, backend, device type and driver.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.inner.info
    }
    /// One line describing the adapter, e.g. `llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan, Cpu, Mesa 22.3.6)`.
    pub fn adapter_summary(&self) -> String {
        let i = &self.inner.info;
        format!(
            "{} ({:?}, {:?}, {} {})",
            i.name, i.backend, i.device_type, i.driver, i.driver_info
        )
    }
    /// Is the adapter a CPU implementation (lavapipe, SwiftShader, WARP)?
    pub fn is_cpu_adapter(&self) -> bool {
        self.inner.info.device_type == wgpu::DeviceType::Cpu
    }
    /// The family of kernel variants this context runs: by the adapter's device type unless
    /// [`ContextOptions::kernel_class`] forced one.
    pub fn kernel_class(&self) -> KernelClass {
        self.inner.kernel_class
    }
    /// Runs the CPU-adapter variants ([`KernelClass::Cpu`])?
    pub(crate) fn cpu_kernels(&self) -> bool {
        self.inner.kernel_class == KernelClass::Cpu
    }
    /// Does the device have WGSL's `f16` type (`shader-f16`), which
    /// [`Precision::F16Accumulate`] needs? Requested by [`Context::new`] where the adapter
    /// offers it (lavapipe does; wgpu's GL backend does not).
    pub fn has_shader_f16(&self) -> bool {
        self.inner
            .device
            .features()
            .contains(wgpu::Features::SHADER_F16)
    }

    /// The arithmetic of operations on f16 tensors (see [`Precision`]).
    pub fn precision(&self) -> Precision {
        Precision::from_code(self.inner.precision.load(Ordering::Relaxed))
    }

    /// Sets the arithmetic of operations on f16 tensors from now on (see [`Precision`]);
    /// f32 tensors are unaffected.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidParam`] for [`Precision::F16Accumulate`] on a device without
    /// `shader-f16` ([`Context::has_shader_f16`]); the precision is unchanged then.
    pub fn set_precision(&self, precision: Precision) -> Result<()> {
        if precision == Precision::F16Accumulate && !self.has_shader_f16() {
            return Err(Error::invalid_param(
                "precision",
                "F16Accumulate",
                format!(
                    "f16 arithmetic needs the `shader-f16` feature, which this device ({}, {:?}) \
                     does not have; f16 tensors compute in f32 (Precision::F32Accumulate)",
                    self.inner.info.name, self.inner.info.backend
                ),
            ));
        }
        self.inner
            .precision
            .store(precision.code(), Ordering::Relaxed);
        Ok(())
    }

    /// Does the device support subgroup operations with 8-lane subgroups (the size the
    /// subgroup kernels are written for)?
    pub fn has_subgroups8(&self) -> bool {
        let i = &self.inner.info;
        self.inner
            .device
            .features()
            .contains(wgpu::Features::SUBGROUP)
            && i.subgroup_min_size == 8
            && i.subgroup_max_size == 8
    }
    /// Can the subgroup image kernels run here: 8-lane subgroups, and storage bindings large
    /// enough to stage eight rows of the widest image (2 MiB at 16384 texels; every real
    /// device's binding limit is at least 128 MiB, so only lowered test limits fail this).
    pub(crate) fn image_kernels(&self) -> bool {
        let l = self.limits();
        let widest = (l.max_texture_dimension_2d as u64).div_ceil(16) * 16;
        self.has_subgroups8() && 8 * widest * 16 <= l.max_storage_buffer_binding_size
    }
    /// Why the subgroup image kernels cannot run here (see `image_kernels`).
    pub(crate) fn image_kernels_reason(&self) -> &'static str {
        if self.has_subgroups8() {
            "storage bindings too small to stage rows of the widest image \
             (max_storage_buffer_binding_size below 128 x max_texture_dimension_2d bytes)"
        } else {
            "needs subgroups of exactly 8 lanes (a CPU adapter such as lavapipe)"
        }
    }
    /// The limits the library plans its work against.
    pub fn limits(&self) -> Limits {
        self.inner.limits
    }
    /// The scratch-memory budget per operation, in bytes.
    pub fn scratch_budget(&self) -> u64 {
        self.inner.scratch_budget.load(Ordering::Relaxed)
    }
    /// Sets the scratch-memory budget per operation (at least 4 KiB are always allowed), which
    /// also bounds the idle scratch kept for reuse ([`Context::pooled_bytes`]).
    pub fn set_scratch_budget(&self, bytes: u64) {
        self.inner
            .scratch_budget
            .store(bytes.max(4096), Ordering::Relaxed);
        self.inner.pool.trim(self);
    }
    /// How many compute pipelines this context has compiled (each kernel specialization
    /// exactly once).
    pub fn pipeline_compiles(&self) -> usize {
        self.inner.compiles.load(Ordering::Relaxed)
    }
    /// Bytes of device memory the library currently holds on this context: the tensors it
    /// allocated (not buffers wrapped with [`Tensor::from_buffer`]), scratch buffers and
    /// images in use by a call being recorded, idle scratch and dispatch-parameter buffers
    /// kept for reuse ([`Context::pooled_bytes`], at most the scratch budget;
    /// [`Context::release_scratch`] frees them), the packed-weight cache
    /// ([`Context::weight_cache_bytes`]) and the input-image cache
    /// ([`Context::input_cache_bytes`]). A layer called in a loop reaches a steady value
    /// after its first call. Memory wgpu still holds for submitted work that has not finished
    /// is not included. While a background tuning measurement runs, its scratch tensors
    /// count too (see [`Context::wait_for_tuning`]).
    ///
    /// [`Tensor::from_buffer`]: crate::Tensor::from_buffer
    pub fn allocated_bytes(&self) -> u64 {
        self.inner.allocated.load(Ordering::Relaxed)
    }
    /// Blocks until all submitted work has finished.
    pub fn synchronize(&self) -> Result<()> {
        self.inner
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| self.device_error("waiting for the queue", e.to_string()))?;
        self.check_lost("waiting for the queue")
    }

    pub(crate) fn same(&self, other: &Context) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    pub(crate) fn check_lost(&self, context: &str) -> Result<()> {
        if self.inner.lost.load(Ordering::SeqCst) {
            return Err(self.device_error(context, "the device was lost".into()));
        }
        Ok(())
    }

    fn device_error(&self, context: &str, message: String) -> Error {
        Error::new(ErrorKind::Device {
            context: context.to_string(),
            message,
        })
    }

    /// Submits work the library records for itself (weight packing, tuning runs), inside its
    /// error scopes. Unlike [`Context::submit`] it does not mark the end of a caller's call
    /// (which lets buckets queued for background tuning start).
    pub(crate) fn submit_internal(&self, enc: wgpu::CommandEncoder) -> Result<()> {
        self.scoped("submitting work", || {
            self.queue().submit([enc.finish()]);
        })
    }

    /// Runs `f` inside validation + out-of-memory error scopes and turns captured errors
    /// into typed errors. Scopes are per thread in wgpu, so this is safe to use from many
    /// threads at once.
    pub(crate) fn scoped<T>(&self, what: &str, f: impl FnOnce() -> T) -> Result<T> {
        self.check_lost(what)?;
        let dev = &self.inner.device;
        let oom = dev.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let internal = dev.push_error_scope(wgpu::ErrorFilter::Internal);
        let validation = dev.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        let v = pollster::block_on(validation.pop());
        let i = pollster::block_on(internal.pop());
        let o = pollster::block_on(oom.pop());
        if let Some(e) = o {
            return Err(Error::new(ErrorKind::OutOfMemory(format!("{what}: {e}"))));
        }
        if let Some(e) = v.or(i) {
            return Err(self.device_error(what, e.to_string()));
        }
        Ok(out)
    }
}

pub(crate) fn poisoned<T>(_: T) -> Error {
    Error::new(ErrorKind::Device {
        context: "accessing the pipeline cache".into(),
        message: "a thread panicked while holding the cache lock".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn context_is_send_sync() {
        fn check<T: Send + Sync + Clone>() {}
        check::<Context>();
    }

    /// A pipeline that fails to compile (here a workgroup size of 0) fails once: asking for
    /// it again returns the same typed error without compiling, and a first call that could
    /// stand in for it keeps standing in without queueing it for the background again.
    #[test]
    fn a_failed_pipeline_is_not_compiled_again() {
        use crate::gpu::pipeline::PipelineKey;
        use crate::kernels::{k, pad_image::PadImageFlatSpec};
        let ctx = Context::with_options_blocking(ContextOptions {
            tuning: Some(crate::TuningMode::Background),
            ..Default::default()
        })
        .expect("GPU test needs a WebGPU adapter");
        let key = PipelineKey::of::<k::PadImageFlat>(&PadImageFlatSpec { WG: 0 });
        let failures = || ctx.inner.compile_failures.load(Ordering::Relaxed);
        let first = ctx
            .pipeline(&key)
            .expect_err("a workgroup size of 0 compiled");
        assert!(
            matches!(first.kind(), ErrorKind::ShaderCompile { .. }),
            "{first}"
        );
        assert_eq!(failures(), 1);
        let again = ctx.pipeline(&key).expect_err("compiled on the second try");
        assert_eq!(again, first);
        if ctx.adapter_info().backend != wgpu::Backend::Gl {
            // (GL never stands in.)
            assert!(ctx.stand_in(key.clone()), "stopped standing in");
        }
        ctx.compile_later(key);
        ctx.wait_for_tuning();
        assert_eq!(failures(), 1, "compiled again");
    }
}
