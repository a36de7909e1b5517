//! The pipeline cache: one compiled pipeline per kernel specialisation and context, and one
//! bind-group layout per kernel.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use crate::context::{poisoned, Context};
use crate::error::{Error, ErrorKind, Result};
use crate::gpu::wgsl::Spec;
use crate::kernels::{Kernel, KernelDef};

/// One specialisation's pipeline, compiled or being compiled (see [`Context::pipeline`]).
pub(crate) type PipelineSlot = Arc<Mutex<Option<Arc<wgpu::ComputePipeline>>>>;

/// A kernel plus its specialisation constants: the pipeline-cache key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PipelineKey {
    pub kernel: Kernel,
    /// `(override name, value)` in the declaration order of the kernel's `spec!` type.
    pub constants: Vec<(&'static str, i64)>,
}

impl PipelineKey {
    /// The key of kernel `K` specialised by `spec`.
    pub(crate) fn of<K: KernelDef>(spec: &K::Spec) -> Self {
        PipelineKey {
            kernel: K::KERNEL,
            constants: spec.constants(),
        }
    }

    /// Value of the `WG` constant (workgroup size), which every kernel has.
    pub(crate) fn workgroup_size(&self) -> u32 {
        self.constants
            .iter()
            .find(|(n, _)| *n == "WG")
            .map_or(64, |(_, v)| *v as u32)
    }
}

impl Context {
    /// Bind-group layout of a kernel (cached).
    pub(crate) fn layout(&self, kernel: Kernel) -> Result<Arc<wgpu::BindGroupLayout>> {
        if let Some(l) = self.inner.layouts.read().map_err(poisoned)?.get(&kernel) {
            return Ok(l.clone());
        }
        let mut map = self.inner.layouts.write().map_err(poisoned)?;
        if let Some(l) = map.get(&kernel) {
            return Ok(l.clone());
        }
        let entries: Vec<wgpu::BindGroupLayoutEntry> =
            std::iter::once(wgpu::BindGroupLayoutEntry {
                binding: 0,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    // A read-only storage buffer, not a uniform buffer: lavapipe (Mesa 22.3)
                    // inlines uniform-buffer values that steer loops and branches and then
                    // recompiles the shader whenever they change (~10 ms per dispatch, see
                    // docs/lavapipe-loads.md); storage-buffer parameters are never inlined.
                    ty: wgpu::BufferBindingType::Storage { read_only: true },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
            .chain(
                kernel
                    .bindings()
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b.layout_entry(i as u32 + 1)),
            )
            .collect();
        let layout = self.scoped("creating a bind group layout", || {
            self.inner
                .device
                .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                    label: Some(kernel.name()),
                    entries: &entries,
                })
        })?;
        let layout = Arc::new(layout);
        map.insert(kernel, layout.clone());
        Ok(layout)
    }

    /// Starts compiling the pipeline of `key` on a thread of its own when it is neither
    /// compiled nor being compiled, so that a call can record its other work (compiling
    /// those pipelines) meanwhile; the call's own [`Context::pipeline`] then waits for it.
    /// Nothing happens where threads cannot be spawned, nor on wgpu's GL backend (one
    /// context lock serialises the device there).
    pub(crate) fn compile_ahead(&self, key: PipelineKey) {
        if self.adapter_info().backend == wgpu::Backend::Gl {
            return;
        }
        // The common case (compiled or under way) under the read lock only.
        if self
            .inner
            .pipelines
            .read()
            .map_or(true, |map| map.contains_key(&key))
        {
            return;
        }
        let fresh = match self.inner.pipelines.write() {
            Ok(mut map) => {
                let fresh = !map.contains_key(&key);
                map.entry(key.clone()).or_default();
                fresh
            }
            Err(_) => false,
        };
        if !fresh {
            return;
        }
        let ctx = self.clone();
        let _ = std::thread::Builder::new()
            .name("wgconv-compile".into())
            .spawn(move || {
                // An error shows again when the call compiles the pipeline itself.
                let _ = ctx.pipeline(&key);
            });
    }

    /// The names of the kernels with a compiled pipeline (sorted, once each).
    pub(crate) fn compiled_pipelines(&self) -> Vec<(&'static str, Vec<(&'static str, i64)>)> {
        let Ok(map) = self.inner.pipelines.read() else {
            return Vec::new();
        };
        let mut keys: Vec<(&'static str, Vec<(&'static str, i64)>)> = map
            .iter()
            .filter(|(_, slot)| slot.try_lock().is_ok_and(|p| p.is_some()))
            .map(|(k, _)| (k.kernel.name(), k.constants.clone()))
            .collect();
        keys.sort_unstable();
        keys
    }

    pub(crate) fn compiled_kernels(&self) -> Vec<&'static str> {
        let Ok(map) = self.inner.pipelines.read() else {
            return Vec::new();
        };
        let mut names: Vec<&'static str> = map
            .iter()
            .filter(|(_, slot)| slot.try_lock().is_ok_and(|p| p.is_some()))
            .map(|(k, _)| k.kernel.name())
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// The shader compilation error the pipeline of `key` failed with, if it did.
    pub(crate) fn pipeline_failure(&self, key: &PipelineKey) -> Option<Error> {
        self.inner.failed_pipelines.read().ok()?.get(key).cloned()
    }

    /// Remembers a shader compilation error of `key` (other errors, e.g. a lost device, are
    /// not about the pipeline): later requests return it without compiling again, and a
    /// first call keeps its stand-in instead of queueing the compilation again; logged once.
    fn remember_failure(&self, key: &PipelineKey, e: &Error) {
        self.inner.compile_failures.fetch_add(1, Ordering::Relaxed);
        if !matches!(e.kind(), ErrorKind::ShaderCompile { .. }) {
            return;
        }
        if let Ok(mut failed) = self.inner.failed_pipelines.write() {
            if failed.insert(key.clone(), e.clone()).is_none() {
                log::warn!(
                    "wgconv: {} {:?} failed to compile; calls that can run another kernel in \
                     its place keep doing so: {e}",
                    key.kernel.name(),
                    key.constants
                );
            }
        }
    }

    /// Whether the pipeline of `key` is compiled (without waiting for a compilation under
    /// way, and without compiling it).
    pub(crate) fn pipeline_ready(&self, key: &PipelineKey) -> bool {
        let Ok(map) = self.inner.pipelines.read() else {
            return false;
        };
        let Some(slot) = map.get(key) else {
            return false;
        };
        slot.try_lock().is_ok_and(|p| p.is_some())
    }

    /// The compute pipeline of a kernel specialization, compiled once per context. Threads
    /// wanting the same specialisation wait for the one compiling it; others are not held
    /// up by a compilation (the map lock is never held while compiling), so background
    /// tuning does not stall a caller's calls.
    pub(crate) fn pipeline(&self, key: &PipelineKey) -> Result<Arc<wgpu::ComputePipeline>> {
        let existing = self
            .inner
            .pipelines
            .read()
            .map_err(poisoned)?
            .get(key)
            .cloned();
        let slot = match existing {
            Some(slot) => slot,
            None => self
                .inner
                .pipelines
                .write()
                .map_err(poisoned)?
                .entry(key.clone())
                .or_default()
                .clone(),
        };
        let mut compiled = slot.lock().map_err(poisoned)?;
        if let Some(p) = compiled.as_ref() {
            return Ok(p.clone());
        }
        if let Some(e) = self.pipeline_failure(key) {
            return Err(e);
        }
        let layout = self.layout(key.kernel)?;
        let kernel = key.kernel;
        let browser = self.adapter_info().backend == wgpu::Backend::BrowserWebGpu;
        let constants: Vec<(&str, f64)> =
            key.constants.iter().map(|(n, v)| (*n, *v as f64)).collect();
        let device = &self.inner.device;
        let started = std::time::Instant::now();
        let pipeline = self
            .scoped("compiling a pipeline", || {
                let desc = wgpu::ShaderModuleDescriptor {
                    label: Some(kernel.name()),
                    // On the web, wgpu hands WGSL to the browser's compiler (Tint), which
                    // needs the `enable` directives naga refuses.
                    source: wgpu::ShaderSource::Wgsl(if browser {
                        kernel.browser_source().into()
                    } else {
                        kernel.source().into()
                    }),
                };
                let mut checks = wgpu::ShaderRuntimeChecks::checked();
                // Our loops are all bounded by uniforms and overrides, and every divisor is a
                // validated non-zero size: naga's loop-bounding counters and division guards
                // only block unrolling. Out-of-bounds protection stays on.
                checks.force_loop_bounding = false;
                checks.int_div_checks = false;
                // SAFETY: see above; bounds checks are kept, so memory safety does not rest
                // on the kernels' index math.
                let module = unsafe { device.create_shader_module_trusted(desc, checks) };
                let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                    label: Some(kernel.name()),
                    bind_group_layouts: &[Some(&layout)],
                    immediate_size: 0,
                });
                device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(kernel.name()),
                    layout: Some(&pl),
                    module: &module,
                    entry_point: Some("main"),
                    compilation_options: wgpu::PipelineCompilationOptions {
                        constants: &constants,
                        zero_initialize_workgroup_memory: false,
                    },
                    cache: None,
                })
            })
            .map_err(|e| match e.into_kind() {
                ErrorKind::Device { message, .. } => Error::new(ErrorKind::ShaderCompile {
                    kernel: kernel.name(),
                    message,
                }),
                k => Error::new(k),
            })
            .inspect_err(|e| self.remember_failure(key, e))?;
        self.inner.compiles.fetch_add(1, Ordering::Relaxed);
        log::debug!(
            "wgconv: compiled {} {:?} in {:.1} ms",
            kernel.name(),
            key.constants,
            started.elapsed().as_secs_f64() * 1e3
        );
        record(key);
        let pipeline = Arc::new(pipeline);
        *compiled = Some(pipeline.clone());
        Ok(pipeline)
    }
}

/// With `WGCONV_RECORD_PIPELINES=<file>`, appends every specialisation the library compiles
/// to `<file>`, one JSON object per line: `{"kernel": name, "constants": {name: value}}`
/// (what `examples/dump_shaders.rs --recorded` and the portability checks read). Best effort:
/// a file that cannot be written is skipped.
fn record(key: &PipelineKey) {
    let Some(path) = std::env::var_os("WGCONV_RECORD_PIPELINES") else {
        return;
    };
    let constants: Vec<String> = key
        .constants
        .iter()
        .map(|(n, v)| format!("\"{n}\": {v}"))
        .collect();
    let line = format!(
        "{{\"kernel\": \"{}\", \"constants\": {{{}}}}}\n",
        key.kernel.name(),
        constants.join(", ")
    );
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(line.as_bytes());
    }
}
