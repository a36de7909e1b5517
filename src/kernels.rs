//! The one list of WGSL kernels, their bindings, and the dispatch helper.
//!
//! Every kernel lives in its own file under `shaders/` (valid WGSL as it stands, checked by
//! naga in `tests/shaders.rs`) and follows one convention: binding 0 is a uniform struct of
//! runtime shapes, bindings 1.. are storage buffers or `rgba32float` storage images (read-only
//! ones first, the output last; see [`Binding`]), the entry point is `main`, specializations are WGSL `override` constants, and the linear
//! invocation index is `gid.x + gid.y * num_workgroups.x * WG` so that a launch can spread
//! over two dispatch dimensions.

use crate::context::Context;
use crate::error::{Error, Result};

/// A WGSL kernel of the crate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kernel {
    /// Direct (register-blocked) forward convolution.
    Conv2dDirect,
    /// GEMM with per-invocation register blocks (CPU-like adapters).
    GemmReg,
    /// GEMM with workgroup-memory tiles (GPUs).
    GemmTiled,
    /// GEMM sharing operand loads through subgroup broadcasts (8-lane subgroups).
    GemmSg,
    /// GEMM reading both operands from packed read-only storage images (8-lane subgroups).
    GemmImage,
    /// [`Kernel::GemmImage`] reading B from a storage buffer.
    GemmImageSb,
    /// Operand packing (transpose / pad to vec4) for the GEMM kernels.
    Pack,
    /// Operand packing into the storage-image panels of [`Kernel::GemmImage`].
    PackImage,
    /// [`Kernel::PackImage`] for k-contiguous operands, reading a verbatim image copy.
    PackImageFlat,
    /// Unfolds convolution patches into a column matrix.
    Im2col,
    /// Input gradient / transposed convolution, gathered.
    Conv2dDgrad,
    /// Folds a column-gradient matrix back onto the input (gathered).
    Col2im,
    /// Adjoint of reflect / replicate / circular padding.
    PadFold,
    /// Direct weight gradient.
    Conv2dWgrad,
    /// Deterministic row sums (bias gradient).
    ReduceRows,
    /// Bias gradient reading its source from a verbatim image copy (CPU adapters).
    ReduceRowsImage,
    /// Depthwise convolution with register row windows.
    Conv2dDepthwise,
    /// Depthwise convolution with a workgroup-memory input tile (GPUs).
    Conv2dDepthwiseTiled,
    /// Swaps the output/input channel axes of a grouped weight.
    PermuteKc,
    /// Input copied into the padded input image of the implicit-GEMM convolution.
    PadImage,
    /// [`Kernel::PadImage`] (zero padding) reading the input from a verbatim image copy.
    PadImageFlat,
    /// Convolution weights packed into the weight image of the implicit-GEMM convolution.
    PackConvWeights,
    /// [`Kernel::PackConvWeights`] reading the weights from a verbatim copy in an image.
    PackConvWeightsImage,
    /// [`Kernel::PackConvWeightsImage`] for weights whose texels are contiguous tap runs
    /// (the input gradient's channel-swapped view): one texel load per packed texel.
    PackConvWeightsRuns,
    /// Depthwise convolution reading the input from a storage image.
    Conv2dDepthwiseImage,
    /// Implicit-GEMM convolution on storage images.
    Conv2dImplicit,
    /// [`Kernel::Conv2dImplicit`] with 4 pixels x 32 output channels per invocation.
    Conv2dImplicitN32,
    /// Implicit-GEMM weight gradient on storage images.
    Conv2dWgradImplicit,
    /// [`Kernel::Conv2dWgradImplicit`] with 4 input channels per lane (few channels).
    Conv2dWgradImplicitC4,
    /// [`Kernel::Conv2dWgradImplicit`] for 1x1 kernels, storing 4 adjacent channels at once.
    Conv2dWgradImplicitV4,
    /// Implicit-GEMM convolution with workgroup-memory tiles (GPUs).
    Conv2dImplicitTiled,
    /// Depthwise weight gradient: per-band partial sums (then [`Kernel::ReduceRows`]).
    Conv2dWgradDepthwise,
    /// [`Kernel::Conv2dWgradDepthwise`] reading x and dy from storage images.
    Conv2dWgradDepthwiseImage,
    /// Input gradient of a strided convolution, one phase per dispatch (storage images).
    Conv2dDgradPhaseImage,
    /// Sub-kernel weights of the phases of [`Kernel::Conv2dDgradPhaseImage`].
    DgradPhaseWeights,
    /// Input gradient of a strided 1x1 convolution from its sampled pixels' gradient.
    ScatterStrided,
}

/// Every kernel, for tests and tooling.
pub const ALL_KERNELS: &[Kernel] = &[
    Kernel::Conv2dDirect,
    Kernel::GemmReg,
    Kernel::GemmTiled,
    Kernel::GemmSg,
    Kernel::GemmImage,
    Kernel::GemmImageSb,
    Kernel::Pack,
    Kernel::PackImage,
    Kernel::PackImageFlat,
    Kernel::Im2col,
    Kernel::Conv2dDgrad,
    Kernel::Col2im,
    Kernel::PadFold,
    Kernel::Conv2dWgrad,
    Kernel::ReduceRows,
    Kernel::ReduceRowsImage,
    Kernel::Conv2dDepthwise,
    Kernel::Conv2dDepthwiseTiled,
    Kernel::PermuteKc,
    Kernel::PadImage,
    Kernel::PadImageFlat,
    Kernel::PackConvWeights,
    Kernel::PackConvWeightsImage,
    Kernel::PackConvWeightsRuns,
    Kernel::Conv2dDepthwiseImage,
    Kernel::Conv2dImplicit,
    Kernel::Conv2dImplicitN32,
    Kernel::Conv2dWgradImplicit,
    Kernel::Conv2dWgradImplicitC4,
    Kernel::Conv2dWgradImplicitV4,
    Kernel::Conv2dImplicitTiled,
    Kernel::Conv2dWgradDepthwise,
    Kernel::Conv2dWgradDepthwiseImage,
    Kernel::Conv2dDgradPhaseImage,
    Kernel::DgradPhaseWeights,
    Kernel::ScatterStrided,
];

impl Kernel {
    /// Kernel (and shader file) name.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Conv2dDirect => "conv2d_direct",
            Kernel::GemmReg => "gemm_reg",
            Kernel::GemmTiled => "gemm_tiled",
            Kernel::GemmSg => "gemm_sg",
            Kernel::GemmImage => "gemm_image",
            Kernel::GemmImageSb => "gemm_image_sb",
            Kernel::Pack => "pack",
            Kernel::PackImage => "pack_image",
            Kernel::PackImageFlat => "pack_image_flat",
            Kernel::Im2col => "im2col",
            Kernel::Conv2dDgrad => "conv2d_dgrad",
            Kernel::Col2im => "col2im",
            Kernel::PadFold => "pad_fold",
            Kernel::Conv2dWgrad => "conv2d_wgrad",
            Kernel::ReduceRows => "reduce_rows",
            Kernel::ReduceRowsImage => "reduce_rows_image",
            Kernel::Conv2dDepthwise => "conv2d_depthwise",
            Kernel::Conv2dDepthwiseTiled => "conv2d_depthwise_tiled",
            Kernel::PermuteKc => "permute_kc",
            Kernel::PadImage => "pad_image",
            Kernel::PadImageFlat => "pad_image_flat",
            Kernel::PackConvWeights => "pack_conv_weights",
            Kernel::PackConvWeightsImage => "pack_conv_weights_image",
            Kernel::PackConvWeightsRuns => "pack_conv_weights_runs",
            Kernel::Conv2dDepthwiseImage => "conv2d_depthwise_image",
            Kernel::Conv2dImplicit => "conv2d_implicit",
            Kernel::Conv2dImplicitN32 => "conv2d_implicit_n32",
            Kernel::Conv2dWgradImplicit => "conv2d_wgrad_implicit",
            Kernel::Conv2dWgradImplicitC4 => "conv2d_wgrad_implicit_c4",
            Kernel::Conv2dWgradImplicitV4 => "conv2d_wgrad_implicit_v4",
            Kernel::Conv2dImplicitTiled => "conv2d_implicit_tiled",
            Kernel::Conv2dWgradDepthwise => "conv2d_wgrad_depthwise",
            Kernel::Conv2dWgradDepthwiseImage => "conv2d_wgrad_depthwise_image",
            Kernel::Conv2dDgradPhaseImage => "conv2d_dgrad_phase_image",
            Kernel::DgradPhaseWeights => "dgrad_phase_weights",
            Kernel::ScatterStrided => "scatter_strided",
        }
    }

    /// WGSL source.
    pub fn source(self) -> &'static str {
        match self {
            Kernel::Conv2dDirect => include_str!("../shaders/conv2d_direct.wgsl"),
            Kernel::GemmReg => include_str!("../shaders/gemm_reg.wgsl"),
            Kernel::GemmTiled => include_str!("../shaders/gemm_tiled.wgsl"),
            Kernel::GemmSg => include_str!("../shaders/gemm_sg.wgsl"),
            Kernel::GemmImage => include_str!("../shaders/gemm_image.wgsl"),
            Kernel::GemmImageSb => include_str!("../shaders/gemm_image_sb.wgsl"),
            Kernel::Pack => include_str!("../shaders/pack.wgsl"),
            Kernel::PackImage => include_str!("../shaders/pack_image.wgsl"),
            Kernel::PackImageFlat => include_str!("../shaders/pack_image_flat.wgsl"),
            Kernel::Im2col => include_str!("../shaders/im2col.wgsl"),
            Kernel::Conv2dDgrad => include_str!("../shaders/conv2d_dgrad.wgsl"),
            Kernel::Col2im => include_str!("../shaders/col2im.wgsl"),
            Kernel::PadFold => include_str!("../shaders/pad_fold.wgsl"),
            Kernel::Conv2dWgrad => include_str!("../shaders/conv2d_wgrad.wgsl"),
            Kernel::ReduceRows => include_str!("../shaders/reduce_rows.wgsl"),
            Kernel::ReduceRowsImage => include_str!("../shaders/reduce_rows_image.wgsl"),
            Kernel::Conv2dDepthwise => include_str!("../shaders/conv2d_depthwise.wgsl"),
            Kernel::Conv2dDepthwiseTiled => {
                include_str!("../shaders/conv2d_depthwise_tiled.wgsl")
            }
            Kernel::PermuteKc => include_str!("../shaders/permute_kc.wgsl"),
            Kernel::PadImage => include_str!("../shaders/pad_image.wgsl"),
            Kernel::PadImageFlat => include_str!("../shaders/pad_image_flat.wgsl"),
            Kernel::PackConvWeights => include_str!("../shaders/pack_conv_weights.wgsl"),
            Kernel::PackConvWeightsImage => {
                include_str!("../shaders/pack_conv_weights_image.wgsl")
            }
            Kernel::PackConvWeightsRuns => include_str!("../shaders/pack_conv_weights_runs.wgsl"),
            Kernel::Conv2dDepthwiseImage => {
                include_str!("../shaders/conv2d_depthwise_image.wgsl")
            }
            Kernel::Conv2dImplicit => include_str!("../shaders/conv2d_implicit.wgsl"),
            Kernel::Conv2dImplicitN32 => include_str!("../shaders/conv2d_implicit_n32.wgsl"),
            Kernel::Conv2dWgradImplicit => {
                include_str!("../shaders/conv2d_wgrad_implicit.wgsl")
            }
            Kernel::Conv2dWgradImplicitC4 => {
                include_str!("../shaders/conv2d_wgrad_implicit_c4.wgsl")
            }
            Kernel::Conv2dWgradImplicitV4 => {
                include_str!("../shaders/conv2d_wgrad_implicit_v4.wgsl")
            }
            Kernel::Conv2dImplicitTiled => {
                include_str!("../shaders/conv2d_implicit_tiled.wgsl")
            }
            Kernel::Conv2dWgradDepthwise => {
                include_str!("../shaders/conv2d_wgrad_depthwise.wgsl")
            }
            Kernel::Conv2dWgradDepthwiseImage => {
                include_str!("../shaders/conv2d_wgrad_depthwise_image.wgsl")
            }
            Kernel::Conv2dDgradPhaseImage => {
                include_str!("../shaders/conv2d_dgrad_phase_image.wgsl")
            }
            Kernel::DgradPhaseWeights => include_str!("../shaders/dgrad_phase_weights.wgsl"),
            Kernel::ScatterStrided => include_str!("../shaders/scatter_strided.wgsl"),
        }
    }

    /// Kind of each binding from binding 1 on (binding 0 is always the uniform struct).
    pub(crate) fn bindings(self) -> &'static [Binding] {
        use Binding::{ImageRead, Storage, StorageRead};
        match self {
            Kernel::Conv2dDirect | Kernel::GemmReg | Kernel::GemmTiled | Kernel::GemmSg => {
                &[StorageRead, StorageRead, StorageRead, Storage]
            }
            Kernel::GemmImage => &[ImageRead, ImageRead, StorageRead, Storage],
            Kernel::GemmImageSb => &[ImageRead, StorageRead, StorageRead, Storage],
            Kernel::Conv2dDgrad
            | Kernel::Conv2dDepthwise
            | Kernel::Conv2dDepthwiseTiled
            | Kernel::Conv2dImplicitTiled => &[StorageRead, StorageRead, StorageRead, Storage],
            Kernel::Col2im | Kernel::Conv2dWgrad | Kernel::Conv2dWgradDepthwise => {
                &[StorageRead, StorageRead, Storage]
            }
            Kernel::Pack
            | Kernel::Im2col
            | Kernel::PadFold
            | Kernel::ReduceRows
            | Kernel::PermuteKc => &[StorageRead, Storage],
            Kernel::PackImage | Kernel::PadImage | Kernel::PackConvWeights => {
                &[StorageRead, Storage]
            }
            Kernel::ReduceRowsImage => &[ImageRead, Storage],
            Kernel::Conv2dImplicit | Kernel::Conv2dImplicitN32 | Kernel::Conv2dDgradPhaseImage => {
                &[ImageRead, ImageRead, StorageRead, Storage]
            }
            Kernel::DgradPhaseWeights => &[StorageRead, Storage],
            Kernel::ScatterStrided => &[StorageRead, StorageRead, Storage],
            Kernel::Conv2dDepthwiseImage => &[ImageRead, StorageRead, StorageRead, Storage],
            Kernel::PackConvWeightsImage
            | Kernel::PackConvWeightsRuns
            | Kernel::PadImageFlat
            | Kernel::PackImageFlat => &[ImageRead, Storage],
            Kernel::Conv2dWgradImplicit
            | Kernel::Conv2dWgradImplicitC4
            | Kernel::Conv2dWgradImplicitV4
            | Kernel::Conv2dWgradDepthwiseImage => &[ImageRead, ImageRead, Storage],
        }
    }

    /// Size in bytes of the kernel's uniform struct (checked against naga in the tests).
    pub fn uniform_size(self) -> usize {
        match self {
            Kernel::Conv2dDirect => std::mem::size_of::<crate::conv::direct::DirectUniforms>(),
            Kernel::GemmReg | Kernel::GemmTiled | Kernel::GemmSg => {
                std::mem::size_of::<crate::gemm::GemmUniforms>()
            }
            Kernel::GemmImage | Kernel::GemmImageSb => {
                std::mem::size_of::<crate::gemm::GemmImageUniforms>()
            }
            Kernel::Pack => std::mem::size_of::<crate::gemm::PackUniforms>(),
            Kernel::PackImage | Kernel::PackImageFlat => {
                std::mem::size_of::<crate::gemm::PackImageUniforms>()
            }
            Kernel::Im2col => std::mem::size_of::<crate::conv::im2col::Im2colUniforms>(),
            Kernel::Conv2dDgrad => std::mem::size_of::<crate::conv::backward::DgradUniforms>(),
            Kernel::Col2im => std::mem::size_of::<crate::conv::backward::Col2imUniforms>(),
            Kernel::PadFold => std::mem::size_of::<crate::conv::backward::PadFoldUniforms>(),
            Kernel::Conv2dWgrad => std::mem::size_of::<crate::conv::backward::WgradUniforms>(),
            Kernel::ReduceRows => std::mem::size_of::<crate::conv::backward::ReduceUniforms>(),
            Kernel::ReduceRowsImage => {
                std::mem::size_of::<crate::conv::backward::ReduceImageUniforms>()
            }
            Kernel::Conv2dDepthwiseTiled => {
                std::mem::size_of::<crate::conv::depthwise::DepthwiseUniforms>()
            }
            Kernel::Conv2dDepthwise => {
                std::mem::size_of::<crate::conv::depthwise::DepthwiseUniforms>()
            }
            Kernel::PermuteKc => std::mem::size_of::<crate::conv::backward::PermuteUniforms>(),
            Kernel::PadImage | Kernel::PadImageFlat => {
                std::mem::size_of::<crate::conv::implicit::PadImageUniforms>()
            }
            Kernel::PackConvWeights
            | Kernel::PackConvWeightsImage
            | Kernel::PackConvWeightsRuns => {
                std::mem::size_of::<crate::conv::implicit::PackWeightsUniforms>()
            }
            Kernel::Conv2dDepthwiseImage => {
                std::mem::size_of::<crate::conv::depthwise::DepthwiseImageUniforms>()
            }
            Kernel::Conv2dImplicit | Kernel::Conv2dImplicitN32 => {
                std::mem::size_of::<crate::conv::implicit::ImplicitUniforms>()
            }
            Kernel::Conv2dWgradImplicit
            | Kernel::Conv2dWgradImplicitC4
            | Kernel::Conv2dWgradImplicitV4 => {
                std::mem::size_of::<crate::conv::implicit::WgradImplicitUniforms>()
            }
            Kernel::Conv2dImplicitTiled => {
                std::mem::size_of::<crate::conv::implicit::TiledUniforms>()
            }
            Kernel::Conv2dWgradDepthwise | Kernel::Conv2dWgradDepthwiseImage => {
                std::mem::size_of::<crate::conv::backward::WgradDepthwiseUniforms>()
            }
            Kernel::Conv2dDgradPhaseImage => {
                std::mem::size_of::<crate::conv::phase::PhaseUniforms>()
            }
            Kernel::DgradPhaseWeights => {
                std::mem::size_of::<crate::conv::phase::PhaseWeightsUniforms>()
            }
            Kernel::ScatterStrided => std::mem::size_of::<crate::conv::backward::ScatterUniforms>(),
        }
    }
}

/// A kernel plus its specialization constants: the pipeline-cache key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PipelineKey {
    pub kernel: Kernel,
    /// `(override name, value)`, in a fixed order per kernel.
    pub constants: Vec<(&'static str, i64)>,
}

impl PipelineKey {
    pub fn new(kernel: Kernel) -> Self {
        PipelineKey {
            kernel,
            constants: Vec::new(),
        }
    }
    pub fn with(mut self, name: &'static str, value: impl Into<i64>) -> Self {
        self.constants.push((name, value.into()));
        self
    }
    /// Value of the `WG` constant (workgroup size), which every kernel has.
    pub fn workgroup_size(&self) -> u32 {
        self.constants
            .iter()
            .find(|(n, _)| *n == "WG")
            .map_or(64, |(_, v)| *v as u32)
    }
}

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
}

impl Binding {
    /// The bind-group layout entry of this binding.
    pub(crate) fn layout_entry(self, binding: u32) -> wgpu::BindGroupLayoutEntry {
        let image = |access| wgpu::BindingType::StorageTexture {
            access,
            format: wgpu::TextureFormat::Rgba32Float,
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
                Binding::ImageRead => image(wgpu::StorageTextureAccess::ReadOnly),
            },
            count: None,
        }
    }

    fn is_image(self) -> bool {
        matches!(self, Binding::ImageRead)
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

    fn resource(&self) -> wgpu::BindingResource<'a> {
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
pub(crate) fn dispatch(
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
    let layout = ctx.layout(kernel)?;
    let [gx, gy] = grid(ctx, invocations, key.workgroup_size())?;
    let device = ctx.device();
    ctx.scoped(kernel.name(), || {
        // Written through the queue (not mapped at creation): on a lost or destroyed
        // device this records an error instead of panicking.
        let ubuf = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(kernel.name()),
            size: uniforms.len() as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        ctx.queue().write_buffer(&ubuf, 0, uniforms);
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: ubuf.as_entire_binding(),
        }];
        for (i, b) in binds.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: b.resource(),
            });
        }
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel.name()),
            layout: &layout,
            entries: &entries,
        });
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(kernel.name()),
            timestamp_writes: None,
        });
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(gx, gy, 1);
    })
}
