//! The kernels: each one defined once, in Rust.
//!
//! A kernel module (one per kernel family) holds the kernel's parameter struct (`params!`:
//! one Rust type giving both the uploaded bytes and the WGSL `struct Params`), its
//! specialisation (`spec!`: typed override constants), and the function producing its WGSL
//! source: generated code where WGSL cannot express the kernel (named register accumulators,
//! unrolled blocks), or a hand-written body (`<name>.wgsl` next to the module) that the module
//! completes with the parameter struct, the overrides and the shared helpers of
//! [`crate::gpu::wgsl`]. This file is the one list of kernels: name, source, bindings, and a
//! marker type per kernel tying its parameter and specialisation types to it
//! ([`KernelDef`]), so a launcher cannot upload another kernel's parameters.
//!
//! Conventions of every kernel: binding 0 is the parameter struct `P` (a read-only storage
//! buffer, not a uniform buffer: see [`crate::gpu::pipeline`]), bindings 1.. are storage
//! buffers or `rgba32float` storage images ([`Binding`]), the entry point is `main`, the
//! workgroup size is the override `WG`, and the linear invocation index is
//! `gid.x + gid.y * num_workgroups.x * WG`, so a launch can spread over two dispatch
//! dimensions.

pub(crate) mod col2im;
pub(crate) mod conv2d_depthwise;
pub(crate) mod conv2d_depthwise_image;
pub(crate) mod conv2d_depthwise_nhwc;
pub(crate) mod conv2d_dgrad;
pub(crate) mod conv2d_dgrad_phase_image;
pub(crate) mod conv2d_direct;
pub(crate) mod conv2d_implicit;
pub(crate) mod conv2d_implicit_first;
pub(crate) mod conv2d_implicit_tiled;
pub(crate) mod conv2d_wgrad;
pub(crate) mod conv2d_wgrad_depthwise;
pub(crate) mod conv2d_wgrad_depthwise_nhwc;
pub(crate) mod conv2d_wgrad_first;
pub(crate) mod conv2d_wgrad_implicit;
pub(crate) mod dgrad_phase_weights;
pub(crate) mod epilogue;
pub(crate) mod f16_convert;
pub(crate) mod gemm_image;
pub(crate) mod gemm_reg;
pub(crate) mod gemm_tiled;
pub(crate) mod im2col;
pub(crate) mod pack;
pub(crate) mod pack_conv_weights;
pub(crate) mod pack_image;
pub(crate) mod pad_fold;
pub(crate) mod pad_image;
pub(crate) mod permute_kc;
pub(crate) mod reduce_rows;
pub(crate) mod reduce_rows_image;
pub(crate) mod scatter_strided;
pub(crate) mod shared;
pub(crate) mod swap_axes;
#[cfg(test)]
mod tests;

use std::sync::OnceLock;

#[cfg(test)]
use crate::gpu::wgsl::Field;
use crate::gpu::wgsl::{Elem, ParamStruct, Spec};
use crate::gpu::Binding;

/// Ties a kernel's marker type (in [`k`]) to its parameter and specialisation types.
pub(crate) trait KernelDef {
    /// The kernel.
    const KERNEL: Kernel;
    /// Its parameter struct (binding 0).
    type Params: ParamStruct;
    /// Its override constants.
    type Spec: Spec;
}

macro_rules! kernels {
    ($($(#[$doc:meta])* $variant:ident = $name:literal, $source:expr, $params:ty, $spec:ty, [$($b:ident),*];)*) => {
        /// A WGSL kernel of the crate.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub(crate) enum Kernel {
            $($(#[$doc])* $variant,)*
        }

        /// Every kernel.
        pub(crate) const ALL_KERNELS: &[Kernel] = &[$(Kernel::$variant,)*];

        // Every parameter struct is a multiple of 16 bytes.
        $(const _: () = assert!(std::mem::size_of::<$params>() % 16 == 0);)*

        /// Marker types of the kernels, for typed launches ([`KernelDef`]).
        pub(crate) mod k {
            use super::*;
            $(
                $(#[$doc])*
                pub(crate) struct $variant;
                impl KernelDef for $variant {
                    const KERNEL: Kernel = Kernel::$variant;
                    type Params = $params;
                    type Spec = $spec;
                }
            )*
        }

        impl Kernel {
            /// The kernel's name (labels, logs, the dump of sources).
            pub(crate) fn name(self) -> &'static str {
                match self {
                    $(Kernel::$variant => $name,)*
                }
            }

            fn generate(self) -> String {
                match self {
                    $(Kernel::$variant => $source,)*
                }
            }

            /// Kind of each binding from binding 1 on (binding 0 is the parameter struct).
            pub(crate) fn bindings(self) -> &'static [Binding] {
                use Binding::*;
                match self {
                    $(Kernel::$variant => &[$($b),*],)*
                }
            }

            /// The fields of the parameter struct.
            #[cfg(test)]
            pub(crate) fn param_fields(self) -> Vec<Field> {
                match self {
                    $(Kernel::$variant => <$params as ParamStruct>::fields(),)*
                }
            }

            /// The size of the parameter struct in bytes.
            #[cfg(test)]
            pub(crate) fn params_size(self) -> usize {
                match self {
                    $(Kernel::$variant => std::mem::size_of::<$params>(),)*
                }
            }

            /// The override constants of every specialisation the tests validate
            /// ([`Spec::variants`]).
            pub(crate) fn variants(self) -> Vec<Vec<(&'static str, i64)>> {
                match self {
                    $(Kernel::$variant => <$spec as Spec>::variants()
                        .iter()
                        .map(Spec::constants)
                        .collect(),)*
                }
            }

            /// The names of the override constants.
            #[cfg(test)]
            pub(crate) fn spec_fields(self) -> &'static [Field] {
                match self {
                    $(Kernel::$variant => <$spec as Spec>::FIELDS,)*
                }
            }
        }
    };
}

use col2im::{Col2imParams, Col2imSpec};
use conv2d_depthwise::{DepthwiseParams, DepthwiseSpec};
use conv2d_depthwise_image::{DepthwiseImageParams, DepthwiseImageSpec};
use conv2d_depthwise_nhwc::{DepthwiseNhwcParams, DepthwiseNhwcSpec};
use conv2d_dgrad::{DgradParams, DgradSpec};
use conv2d_dgrad_phase_image::{PhaseParams, PhaseSpec};
use conv2d_direct::{DirectParams, DirectSpec};
use conv2d_implicit::{ImplicitParams, ImplicitSpec};
use conv2d_implicit_first::{ImplicitFirstParams, ImplicitFirstSpec};
use conv2d_implicit_tiled::{TiledParams, TiledSpec};
use conv2d_wgrad::{WgradParams, WgradSpec};
use conv2d_wgrad_depthwise::{WgradDepthwiseImageSpec, WgradDepthwiseParams, WgradDepthwiseSpec};
use conv2d_wgrad_depthwise_nhwc::{WgradDepthwiseNhwcParams, WgradDepthwiseNhwcSpec};
use conv2d_wgrad_first::{WgradFirstParams, WgradFirstSpec};
use conv2d_wgrad_implicit::{WgradImplicitParams, WgradImplicitSpec};
use dgrad_phase_weights::{PhaseWeightsParams, PhaseWeightsSpec};
use epilogue::{EpilogueParams, EpilogueSpec};
use f16_convert::{F16ConvertParams, F16ConvertSpec};
use gemm_image::{GemmImageParams, GemmImageSpec};
use gemm_reg::{GemmParams, GemmRegSpec};
use gemm_tiled::GemmTiledSpec;
use im2col::{Im2colParams, Im2colSpec};
use pack::{PackParams, PackSpec};
use pack_conv_weights::{PackWeightsParams, PackWeightsRunsSpec, PackWeightsSpec};
use pack_image::{PackImageParams, PackImageSpec};
use pad_fold::{PadFoldParams, PadFoldSpec};
use pad_image::{PadImageFlatSpec, PadImageNhwcSpec, PadImageParams, PadImageSpec};
use permute_kc::{PermuteParams, PermuteSpec};
use reduce_rows::{ReduceParams, ReduceSpec};
use reduce_rows_image::{ReduceImageParams, ReduceImageSpec};
use scatter_strided::{ScatterParams, ScatterSpec};
use swap_axes::{SwapAxesParams, SwapAxesSpec, SwapSmallSpec};

kernels! {
    /// Direct (register-blocked) forward convolution.
    Conv2dDirect = "conv2d_direct", conv2d_direct::source(Elem::F32), DirectParams, DirectSpec,
        [StorageRead, StorageRead, StorageRead, Storage, StorageRead];
    /// Its f16 twin: f16 tensors, f16 arithmetic (`Precision::F16Accumulate`).
    Conv2dDirectF16 = "conv2d_direct_f16", conv2d_direct::source(Elem::F16), DirectParams,
        DirectSpec, [StorageRead, StorageRead, StorageRead, Storage, StorageRead];
    /// GEMM with per-invocation register blocks (CPU adapters without 8-lane subgroups).
    GemmReg = "gemm_reg", gemm_reg::source(Elem::F32), GemmParams, GemmRegSpec,
        [StorageRead, StorageRead, StorageRead, Storage];
    /// Its f16 twin: f16 operands, f16 arithmetic (`Precision::F16Accumulate`).
    GemmRegF16 = "gemm_reg_f16", gemm_reg::source(Elem::F16), GemmParams, GemmRegSpec,
        [StorageRead, StorageRead, StorageRead, Storage];
    /// GEMM with workgroup-memory tiles (GPUs).
    GemmTiled = "gemm_tiled", gemm_tiled::source(Elem::F32), GemmParams, GemmTiledSpec,
        [StorageRead, StorageRead, StorageRead, Storage];
    /// Its f16 twin: f16 operands, f16 arithmetic (`Precision::F16Accumulate`).
    GemmTiledF16 = "gemm_tiled_f16", gemm_tiled::source(Elem::F16), GemmParams, GemmTiledSpec,
        [StorageRead, StorageRead, StorageRead, Storage];
    /// GEMM reading both operands from packed storage images (8-lane subgroups).
    GemmImage = "gemm_image", gemm_image::source(false, 0), GemmImageParams, GemmImageSpec,
        [ImageRead, ImageRead, StorageRead, Storage, StorageRead, Storage];
    /// [`Kernel::GemmImage`] storing four columns of a row of C at a time.
    GemmImageC4 = "gemm_image_c4", gemm_image::source(false, 1), GemmImageParams,
        GemmImageSpec, [ImageRead, ImageRead, StorageRead, Storage, StorageRead, Storage];
    /// [`Kernel::GemmImage`] storing four rows of a column of C at a time.
    GemmImageC4t = "gemm_image_c4t", gemm_image::source(false, 2), GemmImageParams,
        GemmImageSpec, [ImageRead, ImageRead, StorageRead, Storage, StorageRead, Storage];
    /// [`Kernel::GemmImage`] reading B from a storage buffer.
    GemmImageSb = "gemm_image_sb", gemm_image::source(true, 0), GemmImageParams,
        GemmImageSpec, [ImageRead, StorageRead, StorageRead, Storage, StorageRead];
    /// Operand packing (transpose / pad to vec4) for the buffer GEMM kernels.
    Pack = "pack", pack::source(Elem::F32), PackParams, PackSpec, [StorageRead, Storage];
    /// Its f16 twin (the operands of `gemm_reg_f16`).
    PackF16 = "pack_f16", pack::source(Elem::F16), PackParams, PackSpec, [StorageRead, Storage];
    /// Operand packing into the storage-image panels of [`Kernel::GemmImage`].
    PackImage = "pack_image", pack_image::source(false), PackImageParams, PackImageSpec,
        [StorageRead, Storage];
    /// [`Kernel::PackImage`] for row-contiguous operands, reading a verbatim image copy.
    PackImageRows = "pack_image_rows", pack_image::rows_source(), PackImageParams, PackImageSpec,
        [ImageRead, Storage];
    /// [`Kernel::PackImage`] for k-contiguous operands, reading a verbatim image copy.
    PackImageFlat = "pack_image_flat", pack_image::source(true), PackImageParams, PackImageSpec,
        [ImageRead, Storage];
    /// Unfolds convolution patches into a column matrix.
    Im2col = "im2col", im2col::source(Elem::F32), Im2colParams, Im2colSpec, [StorageRead, Storage];
    /// Its f16 twin (the columns of `Precision::F16Accumulate`'s im2col GEMM).
    Im2colF16 = "im2col_f16", im2col::source(Elem::F16), Im2colParams, Im2colSpec,
        [StorageRead, Storage];
    /// Input gradient / transposed convolution, gathered.
    Conv2dDgrad = "conv2d_dgrad", conv2d_dgrad::source(Elem::F32), DgradParams, DgradSpec,
        [StorageRead, StorageRead, StorageRead, Storage];
    /// Its f16 twin: f16 tensors, f16 arithmetic (`Precision::F16Accumulate`).
    Conv2dDgradF16 = "conv2d_dgrad_f16", conv2d_dgrad::source(Elem::F16), DgradParams,
        DgradSpec, [StorageRead, StorageRead, StorageRead, Storage];
    /// Folds a column-gradient matrix back onto the input (gathered).
    Col2im = "col2im", col2im::source(), Col2imParams, Col2imSpec,
        [StorageRead, StorageRead, Storage];
    /// Adjoint of reflect / replicate / circular padding.
    PadFold = "pad_fold", pad_fold::source(Elem::F32), PadFoldParams, PadFoldSpec,
        [StorageRead, Storage];
    /// Its f16 twin (`Precision::F16Accumulate`).
    PadFoldF16 = "pad_fold_f16", pad_fold::source(Elem::F16), PadFoldParams, PadFoldSpec,
        [StorageRead, Storage];
    /// Direct weight gradient.
    Conv2dWgrad = "conv2d_wgrad", conv2d_wgrad::source(Elem::F32), WgradParams, WgradSpec,
        [StorageRead, StorageRead, Storage];
    /// Its f16 twin: f16 tensors, f16 arithmetic (`Precision::F16Accumulate`).
    Conv2dWgradF16 = "conv2d_wgrad_f16", conv2d_wgrad::source(Elem::F16), WgradParams,
        WgradSpec, [StorageRead, StorageRead, Storage];
    /// Deterministic row sums (bias gradient, split sums).
    ReduceRows = "reduce_rows", reduce_rows::source(), ReduceParams, ReduceSpec,
        [StorageRead, Storage];
    /// Bias gradient reading its source from a verbatim image copy (CPU adapters).
    ReduceRowsImage = "reduce_rows_image", reduce_rows_image::source(false), ReduceImageParams,
        ReduceImageSpec, [ImageRead, Storage];
    /// [`Kernel::ReduceRowsImage`] on f16 data (an `rgba16float` copy).
    ReduceRowsImageF16 = "reduce_rows_image_f16", reduce_rows_image::source(true),
        ReduceImageParams, ReduceImageSpec, [Image16Read, Storage];
    /// Depthwise convolution with register row windows.
    Conv2dDepthwise = "conv2d_depthwise", conv2d_depthwise::source(), DepthwiseParams,
        DepthwiseSpec, [StorageRead, StorageRead, StorageRead, Storage];
    /// Depthwise convolution with a workgroup-memory input tile (GPUs).
    Conv2dDepthwiseTiled = "conv2d_depthwise_tiled", conv2d_depthwise::tiled_source(),
        DepthwiseParams, DepthwiseSpec, [StorageRead, StorageRead, StorageRead, Storage];
    /// Depthwise convolution of channels-last tensors (CPU adapters, image loads).
    Conv2dDepthwiseNhwc = "conv2d_depthwise_nhwc", conv2d_depthwise_nhwc::source(),
        DepthwiseNhwcParams, DepthwiseNhwcSpec, [ImageRead, StorageRead, StorageRead, Storage];
    /// Per-row partial weight gradients of a depthwise convolution of channels-last tensors.
    Conv2dWgradDepthwiseNhwc = "conv2d_wgrad_depthwise_nhwc", conv2d_wgrad_depthwise_nhwc::source(),
        WgradDepthwiseNhwcParams, WgradDepthwiseNhwcSpec, [ImageRead, ImageRead, Storage];
    /// Swaps the output/input channel axes of a grouped weight.
    PermuteKc = "permute_kc", permute_kc::source(), PermuteParams, PermuteSpec,
        [StorageRead, Storage];
    /// Input copied into the padded input image of the implicit-GEMM convolution.
    PadImage = "pad_image", pad_image::source(false), PadImageParams, PadImageSpec,
        [StorageRead, Storage];
    /// `pad_image` reading f16 x (packed words).
    PadImageF16 = "pad_image_f16", pad_image::buffer_f16_source(), PadImageParams, PadImageSpec,
        [StorageRead, Storage];
    /// [`Kernel::PadImage`] for channels-last x, read from a verbatim image copy.
    PadImageNhwc = "pad_image_nhwc", pad_image::nhwc_source(false), PadImageParams,
        PadImageNhwcSpec, [ImageRead, Storage];
    /// [`Kernel::PadImageNhwc`] reading f16 x from an `rgba16float` copy.
    PadImageNhwcF16 = "pad_image_nhwc_f16", pad_image::nhwc_source(true), PadImageParams,
        PadImageNhwcSpec, [Image16Read, Storage];
    /// [`Kernel::PadImage`] (zero padding) reading the input from a verbatim image copy.
    PadImageFlat = "pad_image_flat", pad_image::source(true), PadImageParams, PadImageFlatSpec,
        [ImageRead, Storage];
    /// [`Kernel::PadImageFlat`] reading f16 x from an `rgba16float` copy.
    PadImageFlatF16 = "pad_image_flat_f16", pad_image::flat_f16_source(), PadImageParams,
        PadImageFlatSpec, [Image16Read, Storage];
    /// The first-call stand-in of [`Kernel::PadImageFlat`]: one invocation per texel.
    PadImageTexel = "pad_image_texel", pad_image::texel_source(false), PadImageParams,
        PadImageFlatSpec, [ImageRead, Storage];
    /// [`Kernel::PadImageTexel`] reading f16 x from an `rgba16float` copy.
    PadImageTexelF16 = "pad_image_texel_f16", pad_image::texel_source(true), PadImageParams,
        PadImageFlatSpec, [Image16Read, Storage];
    /// Convolution weights packed into the weight image of the implicit-GEMM convolution.
    PackConvWeights = "pack_conv_weights", pack_conv_weights::source(false), PackWeightsParams,
        PackWeightsSpec, [StorageRead, Storage];
    /// [`Kernel::PackConvWeights`] reading the weights from a verbatim copy in an image.
    PackConvWeightsImage = "pack_conv_weights_image", pack_conv_weights::source(true),
        PackWeightsParams, PackWeightsSpec, [ImageRead, Storage];
    /// The first-call stand-in of [`Kernel::PackConvWeightsImage`]: one invocation per texel.
    PackConvWeightsTexel = "pack_conv_weights_texel", pack_conv_weights::texel_source(),
        PackWeightsParams, PackWeightsSpec, [ImageRead, Storage];
    /// [`Kernel::PackConvWeightsImage`] for forward weights whose rows are whole texels and
    /// whose panels need no padding: one texel load per packed texel (4 x 4 transposes).
    PackConvWeightsRows = "pack_conv_weights_rows", pack_conv_weights::rows_source(),
        PackWeightsParams, PackWeightsSpec, [ImageRead, Storage];
    /// [`Kernel::PackConvWeightsImage`] for weights whose texels are contiguous tap runs
    /// (the input gradient's channel-swapped view): one texel load per packed texel.
    PackConvWeightsRuns = "pack_conv_weights_runs", pack_conv_weights::runs_source(),
        PackWeightsParams, PackWeightsRunsSpec, [ImageRead, Storage];
    /// Depthwise convolution reading the input from a storage image.
    Conv2dDepthwiseImage = "conv2d_depthwise_image", conv2d_depthwise_image::source(false),
        DepthwiseImageParams, DepthwiseImageSpec,
        [ImageRead, StorageRead, StorageRead, Storage, StorageRead];
    /// [`Kernel::Conv2dDepthwiseImage`] on f16 x and y (f32 arithmetic).
    Conv2dDepthwiseImageF16 = "conv2d_depthwise_image_f16", conv2d_depthwise_image::source(true),
        DepthwiseImageParams, DepthwiseImageSpec,
        [Image16Read, StorageRead, StorageRead, Storage, StorageRead];
    /// Implicit-GEMM convolution on storage images: 8 pixels x 16 output channels per lane.
    Conv2dImplicit = "conv2d_implicit", conv2d_implicit::source(conv2d_implicit::IC_TM, conv2d_implicit::IC_TN), ImplicitParams,
        ImplicitSpec, [ImageRead, ImageRead, StorageRead, Storage, StorageRead];
    /// [`Kernel::Conv2dImplicit`] with 4 pixels x 32 output channels per invocation.
    Conv2dImplicitN32 = "conv2d_implicit_n32", conv2d_implicit::source(4, 32), ImplicitParams,
        ImplicitSpec, [ImageRead, ImageRead, StorageRead, Storage, StorageRead];
    /// The first-call stand-in of [`Kernel::Conv2dImplicit`]: 1 pixel x 16 output channels
    /// per lane, same weight panels, same sums in the same order (bit-identical results),
    /// a fraction of the code to compile (see [`crate::tune`]).
    Conv2dImplicitP1x16 = "conv2d_implicit_p1x16", conv2d_implicit::source(1, 16), ImplicitParams,
        ImplicitSpec, [ImageRead, ImageRead, StorageRead, Storage, StorageRead];
    /// The first-call stand-in of [`Kernel::Conv2dImplicitN32`]: 1 pixel x 32 output
    /// channels per lane.
    Conv2dImplicitP1x32 = "conv2d_implicit_p1x32", conv2d_implicit::source(1, 32), ImplicitParams,
        ImplicitSpec, [ImageRead, ImageRead, StorageRead, Storage, StorageRead];
    /// The first-call kernel of [`Kernel::Conv2dImplicit`] and [`Kernel::Conv2dImplicitN32`]:
    /// x and the weights read through verbatim image copies (no packing or padding kernel),
    /// 1 pixel x 8 output channels per lane, the same sums in the same order.
    Conv2dImplicitFirst = "conv2d_implicit_first", conv2d_implicit_first::source(),
        ImplicitFirstParams, ImplicitFirstSpec,
        [ImageRead, ImageRead, StorageRead, Storage, StorageRead];
    /// Implicit-GEMM weight gradient on storage images.
    Conv2dWgradImplicit = "conv2d_wgrad_implicit", conv2d_wgrad_implicit::source(8, false, false, false),
        WgradImplicitParams, WgradImplicitSpec, [ImageRead, ImageRead, Storage, Storage];
    /// [`Kernel::Conv2dWgradImplicit`] with 4 input channels per lane (few channels).
    Conv2dWgradImplicitC4 = "conv2d_wgrad_implicit_c4", conv2d_wgrad_implicit::source(4, false, false, false),
        WgradImplicitParams, WgradImplicitSpec, [ImageRead, ImageRead, Storage, Storage];
    /// [`Kernel::Conv2dWgradImplicit`] for 1x1 kernels, storing 4 adjacent channels at once.
    Conv2dWgradImplicitV4 = "conv2d_wgrad_implicit_v4", conv2d_wgrad_implicit::source(8, true, false, false),
        WgradImplicitParams, WgradImplicitSpec, [ImageRead, ImageRead, Storage, Storage];
    /// [`Kernel::Conv2dWgradImplicitV4`] reading dy from the input image of the input
    /// gradient's implicit GEMM (the backward of a strided 1x1 layer fills dy once).
    Conv2dWgradImplicitV4D = "conv2d_wgrad_implicit_v4d", conv2d_wgrad_implicit::source(8, true, false, true),
        WgradImplicitParams, WgradImplicitSpec, [ImageRead, ImageRead, Storage, Storage];
    /// [`Kernel::Conv2dWgradImplicitV4`] storing an f16 dw (one launch over every image).
    Conv2dWgradImplicitV4H = "conv2d_wgrad_implicit_v4h", conv2d_wgrad_implicit::source(8, true, true, false),
        WgradImplicitParams, WgradImplicitSpec, [ImageRead, ImageRead, Storage, Storage];
    /// The first-call kernel of the [`Kernel::Conv2dWgradImplicit`] family: x and dy read
    /// through verbatim image copies (no packing or fill kernel), one weight column x 8
    /// output channels per lane.
    Conv2dWgradFirst = "conv2d_wgrad_first", conv2d_wgrad_first::source(), WgradFirstParams,
        WgradFirstSpec, [ImageRead, ImageRead, Storage];
    /// Implicit-GEMM convolution with workgroup-memory tiles (GPUs).
    Conv2dImplicitTiled = "conv2d_implicit_tiled", conv2d_implicit_tiled::source(), TiledParams,
        TiledSpec, [StorageRead, StorageRead, StorageRead, Storage];
    /// Depthwise weight gradient: per-band partial sums (then [`Kernel::ReduceRows`]).
    Conv2dWgradDepthwise = "conv2d_wgrad_depthwise", conv2d_wgrad_depthwise::source(),
        WgradDepthwiseParams, WgradDepthwiseSpec, [StorageRead, StorageRead, Storage];
    /// [`Kernel::Conv2dWgradDepthwise`] reading x and dy from storage images.
    Conv2dWgradDepthwiseImage = "conv2d_wgrad_depthwise_image",
        conv2d_wgrad_depthwise::image_source(), WgradDepthwiseParams, WgradDepthwiseImageSpec,
        [ImageRead, ImageRead, Storage];
    /// [`Kernel::Conv2dWgradDepthwiseImage`] on f16 x and dy (`rgba16float` copies).
    Conv2dWgradDepthwiseImageF16 = "conv2d_wgrad_depthwise_image_f16",
        conv2d_wgrad_depthwise::image_source_of(true), WgradDepthwiseParams,
        WgradDepthwiseImageSpec, [Image16Read, Image16Read, Storage];
    /// Input gradient of a strided convolution, one phase per dispatch (storage images).
    Conv2dDgradPhaseImage = "conv2d_dgrad_phase_image", conv2d_dgrad_phase_image::source(),
        PhaseParams, PhaseSpec, [ImageRead, ImageRead, StorageRead, Storage];
    /// Sub-kernel weights of the phases of [`Kernel::Conv2dDgradPhaseImage`].
    DgradPhaseWeights = "dgrad_phase_weights", dgrad_phase_weights::source(), PhaseWeightsParams,
        PhaseWeightsSpec, [StorageRead, Storage];
    /// f16 tensor words to f32 scratch (exact).
    F16Unpack = "f16_unpack", f16_convert::source(false), F16ConvertParams, F16ConvertSpec,
        [StorageRead, Storage];
    /// f32 scratch to f16 tensor words (round to nearest even).
    F16Pack = "f16_pack", f16_convert::source(true), F16ConvertParams, F16ConvertSpec,
        [StorageRead, Storage];
    /// [`Kernel::F16Unpack`] on four words per invocation (vector accesses).
    F16Unpack4 = "f16_unpack4", f16_convert::source4(false), F16ConvertParams, F16ConvertSpec,
        [StorageRead, Storage];
    /// [`Kernel::F16Pack`] on four words per invocation (vector accesses).
    F16Pack4 = "f16_pack4", f16_convert::source4(true), F16ConvertParams, F16ConvertSpec,
        [StorageRead, Storage];
    /// [`Kernel::F16Unpack4`] reading the words from an `rgba16float` copy (CPU adapters).
    F16UnpackImage = "f16_unpack_image", f16_convert::source_image(false), F16ConvertParams,
        F16ConvertSpec, [Image16Read, Storage];
    /// [`Kernel::F16Pack4`] reading the f32 values from an `rgba32float` copy (CPU adapters).
    F16PackImage = "f16_pack_image", f16_convert::source_image(true), F16ConvertParams,
        F16ConvertSpec, [ImageRead, Storage];
    /// Memory-format conversion (NCHW ⇄ NHWC, KCRS ⇄ KRSC): a transpose of the last two
    /// axes of `[E, A, B]`.
    SwapAxes = "swap_axes", swap_axes::source(), SwapAxesParams, SwapAxesSpec,
        [StorageRead, Storage];
    /// [`Kernel::SwapAxes`] with a short axis of 1-3 elements (RGB images), the other a
    /// multiple of 4: vector accesses.
    SwapAxesSmall = "swap_axes_small", swap_axes::small_source(), SwapAxesParams, SwapSmallSpec,
        [StorageRead, Storage];
    /// [`Kernel::SwapAxes`] in 4 x 4 tiles of vector accesses (both axes multiples of 4).
    SwapAxes4 = "swap_axes4", swap_axes::source4(false), SwapAxesParams, SwapAxesSpec,
        [StorageRead, Storage];
    /// [`Kernel::SwapAxes4`] reading its source from an image copy (CPU adapters).
    SwapAxes4Image = "swap_axes4_image", swap_axes::source4(true), SwapAxesParams,
        SwapAxesSpec, [ImageRead, Storage];
    /// Input gradient of a strided 1x1 convolution from its sampled pixels' gradient.
    ScatterStrided = "scatter_strided", scatter_strided::source(false), ScatterParams, ScatterSpec,
        [StorageRead, StorageRead, Storage];
    /// [`Kernel::ScatterStrided`] storing an f16 dx (NCHW rows of even width).
    ScatterStridedH = "scatter_strided_h", scatter_strided::source(true), ScatterParams,
        ScatterSpec, [StorageRead, StorageRead, Storage];
    /// The epilogue applied in place to an output stored without it (no residual).
    Epilogue = "epilogue", epilogue::source(false, false), EpilogueParams, EpilogueSpec,
        [Storage];
    /// [`Kernel::Epilogue`] with a residual tensor.
    EpilogueResidual = "epilogue_residual", epilogue::source(true, false), EpilogueParams,
        EpilogueSpec, [StorageRead, Storage];
    /// [`Kernel::Epilogue`] on vec4 elements (the bulk of the pass; the scalar kernel takes a
    /// tail of up to 3 elements).
    Epilogue4 = "epilogue4", epilogue::source(false, true), EpilogueParams, EpilogueSpec,
        [Storage];
    /// [`Kernel::EpilogueResidual`] on vec4 elements.
    EpilogueResidual4 = "epilogue_residual4", epilogue::source(true, true), EpilogueParams,
        EpilogueSpec, [StorageRead, Storage];
    /// `dz = dy ⊙ act'(z)`: the gradient through an epilogue's activation.
    EpilogueGrad = "epilogue_grad", epilogue::grad_source(), EpilogueParams, EpilogueSpec,
        [StorageRead, StorageRead, Storage];
}

/// One generated source per kernel, produced on first use.
static SOURCES: [OnceLock<String>; ALL_KERNELS.len()] =
    [const { OnceLock::new() }; ALL_KERNELS.len()];

/// The sources for WGSL compilers other than naga (Tint in browsers and Dawn).
static BROWSER_SOURCES: [OnceLock<String>; ALL_KERNELS.len()] =
    [const { OnceLock::new() }; ALL_KERNELS.len()];

impl Kernel {
    /// The kernel's WGSL source as naga takes it (wgpu on Vulkan, Metal, DX12, GL), generated
    /// once per process.
    pub(crate) fn source(self) -> &'static str {
        SOURCES[self as usize].get_or_init(|| self.generate())
    }

    /// The source for other WGSL compilers (Tint: browsers, Dawn): [`Kernel::source`] with the
    /// `enable` directives the WGSL spec requires for the extensions it uses (`subgroups`).
    /// naga 30 rejects `enable subgroups;` (it enables subgroup operations from the device's
    /// features instead), so the two sources differ by that line.
    pub(crate) fn browser_source(self) -> &'static str {
        BROWSER_SOURCES[self as usize].get_or_init(|| {
            let src = self.source();
            if src.contains("subgroup") {
                format!("enable subgroups;\n{src}")
            } else {
                src.to_string()
            }
        })
    }
}
