//! `reduce_rows_image`: the row sums of `reduce_rows` (bias gradient) for CPU-like adapters,
//! with the source read from a storage image.

use crate::gpu::wgsl::{hoist_params, params, spec, ParamStruct, Spec};

params! {
    /// Parameters of `reduce_rows_image` (`tw_shift`: log2 of the image width in texels).
    pub(crate) struct ReduceImageParams {
        rows: u32, len: u32, batch: u32, bstride: u32,
        total: u32, tw_shift: u32,
        /// 0: rows as `reduce_rows`; else channels-last data with `cl_k` channels (a
        /// multiple of 4): invocation `id` sums channels `4id..4id+3` (a texel per pixel).
        cl_k: u32, _p1: u32,
    }
}

spec! {
    /// Specialisation of `reduce_rows_image`.
    pub(crate) struct ReduceImageSpec {
        /// Workgroup size.
        WG: u32 = 8,
    }
}

/// The WGSL source of `reduce_rows_image`, or with `f16` of `reduce_rows_image_f16` (the
/// source an `rgba16float` copy of f16 data; the texel loads convert, f32 sums).
pub(crate) fn source(f16: bool) -> String {
    let body = crate::gpu::wgsl::f16_images(include_str!("reduce_rows_image.wgsl"), f16);
    let src = format!(
        "{}\n\n{}\n\n{}",
        ReduceImageParams::wgsl(),
        ReduceImageSpec::wgsl(),
        body
    );
    if src.contains("Barrier") {
        src
    } else {
        hoist_params(&src, &ReduceImageParams::fields())
    }
}
