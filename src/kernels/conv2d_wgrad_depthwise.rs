//! `conv2d_wgrad_depthwise` and `conv2d_wgrad_depthwise_image`: the per-band partial sums of
//! the weight gradient of a depthwise convolution (reduced afterwards by `reduce_rows`), from
//! storage buffers or, for CPU-like adapters, from storage images.

use crate::gpu::wgsl::{hoist_params, params, spec, ParamStruct, Spec, SRC_INDEX};
use crate::kernels::shared::ConvShape;

params! {
    /// Parameters of `conv2d_wgrad_depthwise` and `conv2d_wgrad_depthwise_image` (only the
    /// image kernel reads `x_rows_shift` / `dy_rows_shift`: log2 of the tensor rows per
    /// texture row of its two images).
    pub(crate) struct WgradDepthwiseParams {
        @embed shape: ConvShape;
        nr: u32, rb: u32, nb: u32, total: u32,
        x_rows_shift: u32, dy_rows_shift: u32,
    }
}

spec! {
    /// Specialisation of `conv2d_wgrad_depthwise`.
    pub(crate) struct WgradDepthwiseSpec {
        /// Workgroup size.
        WG: u32 = 64,
        /// Kernel width, 1..=7.
        S: u32 = 3 in [1, 2, 3, 4, 5, 6, 7],
        /// Column stride 1 and column dilation 1: the 4 + S - 1 input columns of a step are
        /// loaded once and shared by the S taps.
        COLS1: bool = true,
        /// Padding mode of x: 0 zeros, 1 reflect, 2 replicate, 3 circular (`src_index`).
        PAD_MODE: u32 = 0 in [0, 1, 2, 3],
        /// True convolution: the partials are written to the rotated taps.
        FLIP: bool = false,
    }
}

spec! {
    /// Specialisation of `conv2d_wgrad_depthwise_image`.
    pub(crate) struct WgradDepthwiseImageSpec {
        /// Workgroup size.
        WG: u32 = 64,
        /// Kernel width (1..=7).
        S: u32 = 3 in [1, 2, 3, 4, 5, 6, 7],
        /// Left padding (0..=4).
        PAD_LEFT: u32 = 1 in [0, 1, 2, 3, 4],
        /// True convolution: the partials are written to the rotated taps.
        FLIP: bool = false,
    }
}

/// Applies [`hoist_params`] unless the kernel synchronises (see its documentation).
fn hoisted(src: String) -> String {
    if src.contains("Barrier") {
        src
    } else {
        hoist_params(&src, &WgradDepthwiseParams::fields())
    }
}

/// The WGSL source of `conv2d_wgrad_depthwise` (storage buffers).
pub(crate) fn source() -> String {
    hoisted(format!(
        "{}\n\n{}\n\n{}\n\n{}",
        WgradDepthwiseParams::wgsl(),
        WgradDepthwiseSpec::wgsl(),
        SRC_INDEX,
        include_str!("conv2d_wgrad_depthwise.wgsl")
    ))
}

/// The WGSL source of `conv2d_wgrad_depthwise_image` (x and dy in storage images).
pub(crate) fn image_source() -> String {
    image_source_of(false)
}

/// [`image_source`], or with `f16` the `_f16` twin reading x and dy from `rgba16float`
/// copies (the texel loads convert, exactly; f32 arithmetic and partials).
pub(crate) fn image_source_of(f16: bool) -> String {
    let body = crate::gpu::wgsl::f16_images(include_str!("conv2d_wgrad_depthwise_image.wgsl"), f16);
    hoisted(format!(
        "{}\n\n{}\n\n{}",
        WgradDepthwiseParams::wgsl(),
        WgradDepthwiseImageSpec::wgsl(),
        body
    ))
}
