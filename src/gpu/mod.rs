//! GPU plumbing shared by every operation: bindings, windows onto large buffers, dispatch
//! grids and the dispatch itself, memory (buffers, storage images), the pipeline cache, and
//! WGSL produced from Rust.

pub(crate) mod half;
pub(crate) mod layout;
pub(crate) mod memory;
pub(crate) mod pipeline;
pub(crate) mod pool;
pub(crate) mod profile;
pub(crate) mod wgsl;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::KernelDef;
use pipeline::PipelineKey;

/// Kind of a kernel binding after the uniform struct (see [`Kernel::bindings`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Binding {
    /// `var<storage, read>` buffer.
    StorageRead,
    /// `var<storage, read_write>` buffer.
    Storage,
    /// `texture_storage_2d<rgba32float, read>`. (Images are written through staging buffers
    /// and copies, never `textureStore`: see `tensor::ImageStaging`.)
    ImageRead,
    /// `texture_storage_2d<rgba16float, read>`: f16 data read as f32 by the texel load (exact).
    Image16Read,
}

impl Binding {
    /// The bind-group layout entry of this binding.
    pub(crate) fn layout_entry(self, binding: u32) -> wgpu::BindGroupLayoutEntry {
        let image = |access, format| wgpu::BindingType::StorageTexture {
            access,
            format,
            view_dimension: wgpu::TextureViewDimension::D2,
        };
        let storage = |read_only| wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        };
        wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: match self {
                Binding::StorageRead => storage(true),
                Binding::Storage => storage(false),
                Binding::ImageRead => image(
                    wgpu::StorageTextureAccess::ReadOnly,
                    wgpu::TextureFormat::Rgba32Float,
                ),
                Binding::Image16Read => image(
                    wgpu::StorageTextureAccess::ReadOnly,
                    wgpu::TextureFormat::Rgba16Float,
                ),
            },
            count: None,
        }
    }

    fn is_image(self) -> bool {
        matches!(self, Binding::ImageRead | Binding::Image16Read)
    }
}

/// One binding after the uniform struct: a buffer range (`offset` a multiple of the device's
/// `min_storage_buffer_offset_alignment`) or a storage-image view.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Bind<'a> {
    /// A storage-buffer range.
    Buffer {
        buffer: &'a wgpu::Buffer,
        offset: u64,
        size: u64,
    },
    /// A storage image (a view of an `rgba32float` texture).
    Image(&'a wgpu::TextureView),
}

impl<'a> Bind<'a> {
    pub fn whole(buffer: &'a wgpu::Buffer) -> Self {
        Bind::Buffer {
            buffer,
            offset: 0,
            size: buffer.size(),
        }
    }

    pub(crate) fn resource(&self) -> wgpu::BindingResource<'a> {
        match *self {
            Bind::Buffer {
                buffer,
                offset,
                size,
            } => wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer,
                offset,
                size: std::num::NonZeroU64::new(size),
            }),
            Bind::Image(view) => wgpu::BindingResource::TextureView(view),
        }
    }
}

/// A window onto `buffer` covering elements `[lo, hi)`, bound at an offset aligned to the
/// device's `min_storage_buffer_offset_alignment`. Returns the binding and the element offset
/// to add (wrapping, mod 2^32) to a *global* element index to get the index inside the
/// window: kernels keep computing global indices and only their `*_off` uniform changes.
pub(crate) fn window<'a>(
    ctx: &Context,
    buffer: &'a wgpu::Buffer,
    lo: usize,
    hi: usize,
) -> Result<(Bind<'a>, u32)> {
    let align = ctx.limits().min_storage_buffer_offset_alignment.max(4) as u64;
    let start = (lo as u64 * 4) / align * align;
    let end = ((hi.max(lo + 1) as u64) * 4).min(buffer.size());
    let size = end.saturating_sub(start).max(4);
    let max = ctx.limits().max_storage_buffer_binding_size;
    if size > max {
        return Err(Error::exceeds_limit(
            "max_storage_buffer_binding_size",
            size,
            max,
        ));
    }
    let off = 0u32.wrapping_sub((start / 4) as u32);
    Ok((
        Bind::Buffer {
            buffer,
            offset: start,
            size,
        },
        off,
    ))
}

/// Largest element count whose window always fits one binding (whatever its alignment).
pub(crate) fn max_window_elems(ctx: &Context) -> usize {
    let l = ctx.limits();
    ((l.max_storage_buffer_binding_size
        .saturating_sub(l.min_storage_buffer_offset_alignment as u64 + 4))
        / 4) as usize
}

/// Does the whole buffer fit in one binding?
pub(crate) fn fits(ctx: &Context, buffer: &wgpu::Buffer) -> bool {
    buffer.size() <= ctx.limits().max_storage_buffer_binding_size
}

/// Workgroup grid for `invocations` linear invocations of `wg` lanes: `[x, y]` with
/// `x <= max_dim`, or an error when even two dimensions do not suffice (callers split
/// their work before that).
pub(crate) fn grid(ctx: &Context, invocations: u64, wg: u32) -> Result<[u32; 2]> {
    let max = ctx.limits().max_compute_workgroups_per_dimension.max(1) as u64;
    let groups = invocations.div_ceil(wg as u64).max(1);
    let x = groups.min(max);
    let y = groups.div_ceil(x);
    if y > max || invocations > u32::MAX as u64 {
        return Err(Error::exceeds_limit(
            "max_compute_workgroups_per_dimension (one dispatch)",
            groups,
            max * max,
        ));
    }
    Ok([x as u32, y as u32])
}

/// Records one dispatch of `key` over `invocations` linear invocations.
fn dispatch(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    key: &PipelineKey,
    uniforms: &[u8],
    binds: &[Bind<'_>],
    invocations: u64,
) -> Result<()> {
    let kernel = key.kernel;
    let kinds = kernel.bindings();
    debug_assert_eq!(binds.len(), kinds.len());
    debug_assert!(binds
        .iter()
        .zip(kinds)
        .all(|(b, k)| matches!(b, Bind::Image(_)) == k.is_image()));
    let max = ctx.limits().max_storage_buffer_binding_size;
    for b in binds {
        if let Bind::Buffer { size, .. } = *b {
            if size > max {
                return Err(Error::exceeds_limit(
                    "max_storage_buffer_binding_size",
                    size,
                    max,
                ));
            }
        }
    }
    let pipeline = ctx.pipeline(key)?;
    let [gx, gy] = grid(ctx, invocations, key.workgroup_size())?;
    // The parameter buffer and the bind group come from the context's caches (see
    // `gpu::pool`): a dispatch repeated with the same parameters and resources creates
    // nothing. Creating them is error-scoped; what is recorded into the encoder is validated
    // when it is finished (in `Context::submit`'s scope, or by the caller of `encode_*`).
    ctx.check_lost(kernel.name())?;
    let bind_group = ctx.inner.pool.bind_group(ctx, kernel, uniforms, binds)?;
    let profiling = ctx
        .inner
        .profiling
        .load(std::sync::atomic::Ordering::Acquire);
    let mut profiler = profiling.then(|| ctx.inner.profiler.lock().ok()).flatten();
    let timestamp_writes = profiler.as_mut().and_then(|p| p.as_mut()).and_then(|p| {
        let spec: Vec<String> = key
            .constants
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        p.next(format!("{} [{}] {gx}x{gy}", kernel.name(), spec.join(",")))
    });
    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some(kernel.name()),
        timestamp_writes,
    });
    pass.set_pipeline(&pipeline);
    pass.set_bind_group(0, &bind_group, &[]);
    pass.dispatch_workgroups(gx, gy, 1);
    Ok(())
}

pub(crate) fn u32_of(v: usize, what: &'static str) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::exceeds_limit(what, v as u64, u32::MAX as u64))
}

pub(crate) fn i32_of(v: isize, what: &'static str) -> Result<i32> {
    i32::try_from(v)
        .map_err(|_| Error::exceeds_limit(what, v.unsigned_abs() as u64, i32::MAX as u64))
}

/// Records one dispatch of kernel `K`, specialised by `spec`, with `params` at binding 0 and
/// `binds` at bindings 1.., over `invocations` linear invocations.
pub(crate) fn launch<K: KernelDef>(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    spec: &K::Spec,
    params: &K::Params,
    binds: &[Bind<'_>],
    invocations: u64,
) -> Result<()> {
    let key = PipelineKey::of::<K>(spec);
    dispatch(
        ctx,
        enc,
        &key,
        bytemuck::bytes_of(params),
        binds,
        invocations,
    )
}

/// [`launch`] of `total` invocations in dispatches of at most the grid size, setting a field
/// of the parameters (via `set`) to each dispatch's first invocation.
pub(crate) fn launch_linear<K: KernelDef>(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    spec: &K::Spec,
    params: &mut K::Params,
    set: impl Fn(&mut K::Params, u32),
    binds: &[Bind<'_>],
    total: u64,
) -> Result<()> {
    let key = PipelineKey::of::<K>(spec);
    let wg = key.workgroup_size() as u64;
    split_dispatches(ctx, total, wg, |start, count| {
        set(params, start as u32);
        dispatch(ctx, enc, &key, bytemuck::bytes_of(params), binds, count)
    })
}

/// Records `total` linear work items of `per_group` items per workgroup as dispatches of at
/// most the device's workgroup-grid size each; `record(start, count)` records one dispatch of
/// `count` items starting at item `start`.
pub(crate) fn split_dispatches(
    ctx: &Context,
    total: u64,
    per_group: u64,
    mut record: impl FnMut(u64, u64) -> Result<()>,
) -> Result<()> {
    let dim = ctx.limits().max_compute_workgroups_per_dimension.max(1) as u64;
    let groups = (dim * dim).min(u32::MAX as u64 / per_group);
    let step = groups * per_group;
    let mut start = 0;
    while start < total {
        let count = step.min(total - start);
        record(start, count)?;
        start += count;
    }
    Ok(())
}
