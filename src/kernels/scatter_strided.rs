//! `scatter_strided`: the input gradient of a strided 1x1 convolution, scattered from the
//! gradient of its sampled pixels.

use crate::gpu::wgsl::{hoist_params, params, spec, ParamStruct, Spec};
use crate::kernels::f16_convert::F32_TO_F16;

params! {
    /// Parameters of `scatter_strided`.
    pub(crate) struct ScatterParams {
        planes: u32, h: u32, w: u32, oh: u32,
        ow: u32, sh: u32, sw: u32, top: u32,
        left: u32, c: u32, total: u32, t0: u32,
    }
}

spec! {
    /// Specialisation of `scatter_strided`.
    pub(crate) struct ScatterSpec {
        /// Workgroup size.
        WG: u32 = 64,
        /// Add bias[plane % c] to every element (the transposed convolution).
        HAS_BIAS: bool = false,
        /// Channels-last source and destination: one invocation per pixel of dst and 16
        /// channels (`total` = pixels x ceil(C / 16)).
        NHWC: bool = false,
    }
}

/// The f16 store of `scatter_strided_h`: `dst` as words of two halves, each row of dx
/// (NCHW, even width, so rows start on a word) written two elements per word, rounded to
/// nearest even by `f32_to_f16`. Replaces the f32 `dst` binding and the NCHW row loop of the
/// f32 kernel (the part after `// NCHW rows.`) and drops its NHWC branch (`NHWC` is never
/// set with it).
const F16_ROWS: &str = "    // f16 rows: two elements per word (width even).
    let dbase = t * P.w / 2u;
    var ox = P.left / P.sw;
    var ph = P.left - ox * P.sw;
    for (var ix = 0u; ix < P.w; ix += 2u) {
        var v = vec2<f32>(b);
        for (var e = 0u; e < 2u; e++) {
            if (row_ok && ph == 0u && ox < P.ow) {
                v[e] += src[sbase + ox];
            }
            ph += 1u;
            if (ph == P.sw) {
                ph = 0u;
                ox += 1u;
            }
        }
        dst[dbase + ix / 2u] = f32_to_f16(v.x) | (f32_to_f16(v.y) << 16u);
    }
}
";

/// The WGSL source of `scatter_strided`, or with `f16_out` of `scatter_strided_h` (dx an
/// f16 tensor: see [`F16_ROWS`]).
pub(crate) fn source(f16_out: bool) -> String {
    let body = include_str!("scatter_strided.wgsl");
    let body = if f16_out {
        // The f32 kernel without its NHWC branch and its NCHW store loop.
        let (head, rest) = body
            .split_once("    if (NHWC) {")
            .expect("scatter_strided.wgsl has an NHWC branch");
        let (_, rows) = rest
            .split_once("    let plane = t / P.h;")
            .expect("scatter_strided.wgsl has NCHW rows");
        let (rows, _) = rows
            .split_once("    // NCHW rows.")
            .expect("scatter_strided.wgsl marks its NCHW store loop");
        let head = head.replace(
            "var<storage, read_write> dst: array<f32>;",
            "var<storage, read_write> dst: array<u32>;",
        );
        format!("{F32_TO_F16}\n{head}    let plane = t / P.h;{rows}{F16_ROWS}")
    } else {
        body.to_string()
    };
    let src = format!(
        "{}\n\n{}\n\n{}",
        ScatterParams::wgsl(),
        ScatterSpec::wgsl(),
        body
    );
    if src.contains("Barrier") {
        src
    } else {
        hoist_params(&src, &ScatterParams::fields())
    }
}
