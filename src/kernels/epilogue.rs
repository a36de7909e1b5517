//! `epilogue` and `epilogue_grad`: the elementwise passes of the epilogues
//! (`crate::Epilogue`). `epilogue` applies an epilogue in place to an output that the
//! convolution or GEMM stored without it (`y = epilogue(y, r)`), for the algorithms whose
//! kernels do not fuse it into their store; `epilogue_grad` computes `dz = dy ⊙ act'(z)`
//! before the gradients. One invocation per element, over a window of at most one binding
//! (the launcher walks larger tensors window by window).

use crate::gpu::wgsl::{hoist_params, params, spec, ParamStruct, Spec, ACTIVATION};

params! {
    /// Parameters of `epilogue` and `epilogue_grad`. Element `i = start + id` of the tensor
    /// is element `i + <name>_off` (mod 2^32) of its bound window.
    pub(crate) struct EpilogueParams {
        total: u32, start: u32, y_off: u32, r_off: u32,
        z_off: u32, alpha: f32, lo: f32, hi: f32,
    }
}

spec! {
    /// Specialisation of `epilogue` / `epilogue_grad`.
    pub(crate) struct EpilogueSpec {
        /// Workgroup size.
        WG: u32 = 64,
        /// The activation (`Activation::code`).
        ACT: u32 = 0 in [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        /// The residual's position (`Residual::code`; 0 in the kernels without residual).
        RES: u32 = 0 in [0, 1, 2],
    }
}

/// The WGSL source of `epilogue` (`residual`: with the residual binding; `v4`: on vec4
/// elements, where `total`, `start` and the offsets count vec4s).
pub(crate) fn source(residual: bool, v4: bool) -> String {
    let (ty, f, zero) = if v4 {
        ("vec4<f32>", "epilogue4", "vec4<f32>(0.0)")
    } else {
        ("f32", "epilogue", "0.0")
    };
    let (binds, r) = if residual {
        (
            format!(
                "@group(0) @binding(1) var<storage, read> r: array<{ty}>;
@group(0) @binding(2) var<storage, read_write> y: array<{ty}>;"
            ),
            "r[i + P.r_off]",
        )
    } else {
        (
            format!("@group(0) @binding(1) var<storage, read_write> y: array<{ty}>;"),
            zero,
        )
    };
    let src = format!(
        "{}\n\n{}\n\n{ACTIVATION}\n\n// y = epilogue(y, r), elementwise, in place.
@group(0) @binding(0) var<storage, read> P: Params;
{binds}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {{
    let id = gid.x + gid.y * nwg.x * WG;
    if (id >= P.total) {{
        return;
    }}
    let i = P.start + id;
    let yi = i + P.y_off;
    y[yi] = {f}(y[yi], {r}, P.alpha, P.lo, P.hi);
}}
",
        EpilogueParams::wgsl(),
        EpilogueSpec::wgsl(),
    );
    hoist_params(&src, &EpilogueParams::fields())
}

/// The WGSL source of `epilogue_grad`: `dz = dy ⊙ act'(z)` (`y` binds `dz`, `r` binds `dy`).
pub(crate) fn grad_source() -> String {
    let src = format!(
        "{}\n\n{}\n\n{ACTIVATION}\n\n// dz = dy * act'(z), elementwise.
@group(0) @binding(0) var<storage, read> P: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> z: array<f32>;
@group(0) @binding(3) var<storage, read_write> dz: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {{
    let id = gid.x + gid.y * nwg.x * WG;
    if (id >= P.total) {{
        return;
    }}
    let i = P.start + id;
    dz[i + P.y_off] = dy[i + P.r_off] * act_grad(z[i + P.z_off], P.alpha, P.lo, P.hi);
}}
",
        EpilogueParams::wgsl(),
        EpilogueSpec::wgsl(),
    );
    hoist_params(&src, &EpilogueParams::fields())
}
