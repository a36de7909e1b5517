//! `reduce_rows`: deterministic row sums (the bias gradient, split-K and band partials).

use crate::gpu::wgsl::{hoist_params, params, spec, ParamStruct, Spec};

params! {
    /// Parameters of `reduce_rows`.
    pub(crate) struct ReduceParams {
        rows: u32, len: u32, batch: u32, bstride: u32,
        total: u32, src_off: u32, dst_off: u32,
        /// 0: row `id` of image `b` is `len` consecutive floats from `b * bstride + id * len`;
        /// else the data are channels-last with `cl_k` channels: element `i` of row (channel)
        /// `id` at `b * bstride + i * cl_k + id`.
        cl_k: u32,
    }
}

spec! {
    /// Specialisation of `reduce_rows`.
    pub(crate) struct ReduceSpec {
        /// Workgroup size.
        WG: u32 = 64,
        /// Add to dst (windows of a large source processed one after another).
        ACCUMULATE: bool = false,
    }
}

/// The WGSL source of `reduce_rows`.
pub(crate) fn source() -> String {
    let src = format!(
        "{}\n\n{}\n\n{}",
        ReduceParams::wgsl(),
        ReduceSpec::wgsl(),
        include_str!("reduce_rows.wgsl")
    );
    if src.contains("Barrier") {
        src
    } else {
        hoist_params(&src, &ReduceParams::fields())
    }
}
