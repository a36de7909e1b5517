//! The epilogue's elementwise passes: `y = epilogue(y, r)` in place after a convolution or
//! GEMM that stored `conv + b` (every algorithm whose kernel does not fuse the epilogue into
//! its store), and `dz = dy ⊙ act'(z)` before the gradients. Tensors beyond one storage
//! binding are walked in windows of at most one binding (elementwise: any split is exact).

use crate::context::Context;
use crate::epilogue::Epilogue;
use crate::error::Result;
use crate::gpu::{launch_linear, max_window_elems, u32_of, window};
use crate::kernels::epilogue::{EpilogueParams, EpilogueSpec};
use crate::kernels::k;

fn spec(ep: &Epilogue) -> EpilogueSpec {
    EpilogueSpec {
        ACT: ep.activation.code(),
        RES: ep.residual.code(),
        ..Default::default()
    }
}

fn params(ep: &Epilogue) -> EpilogueParams {
    let (alpha, lo, hi) = ep.activation.constants();
    EpilogueParams {
        alpha,
        lo,
        hi,
        ..Default::default()
    }
}

/// The windows `[lo, hi)` of `len` elements, each within one binding.
fn windows(ctx: &Context, len: usize) -> impl Iterator<Item = (usize, usize)> {
    let step = (max_window_elems(ctx) / 64 * 64).max(64);
    (0..len)
        .step_by(step)
        .map(move |lo| (lo, (lo + step).min(len)))
}

/// The vec4 form of a window offset from [`window`]: `global4 + off4 = local4` (mod 2^32)
/// when `global + off = local` and the window starts on a vec4.
fn off4(off: u32) -> u32 {
    0u32.wrapping_sub(0u32.wrapping_sub(off) / 4)
}

/// Records `y = epilogue(y, r)` over the `len` elements of `y` (and `r`, given exactly when
/// the epilogue has a residual). Nothing for the identity epilogue. Each window (of at most
/// one binding, starting on a multiple of 64 elements) runs as vec4s, and a last partial
/// vec4 (when `len` is not a multiple of 4) as scalars.
pub(crate) fn encode_forward(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    ep: &Epilogue,
    y: &wgpu::Buffer,
    r: Option<&wgpu::Buffer>,
    len: usize,
) -> Result<()> {
    if ep.is_identity() {
        return Ok(());
    }
    let spec = spec(ep);
    for (lo, hi) in windows(ctx, len) {
        let (yb, y_off) = window(ctx, y, lo, hi)?;
        let rw = r.map(|r| window(ctx, r, lo, hi)).transpose()?;
        let n4 = (hi - lo) / 4;
        let tail = lo + 4 * n4;
        // The vec4 bulk.
        if n4 > 0 {
            let mut u = EpilogueParams {
                total: u32_of(n4, "elements")?,
                y_off: off4(y_off),
                r_off: rw.map_or(0, |(_, o)| off4(o)),
                ..params(ep)
            };
            let set = |u: &mut EpilogueParams, first: u32| u.start = (lo / 4) as u32 + first;
            match rw {
                Some((rb, _)) => launch_linear::<k::EpilogueResidual4>(
                    ctx,
                    enc,
                    &spec,
                    &mut u,
                    set,
                    &[rb, yb],
                    n4 as u64,
                )?,
                None => {
                    launch_linear::<k::Epilogue4>(ctx, enc, &spec, &mut u, set, &[yb], n4 as u64)?
                }
            }
        }
        // The scalar tail.
        if tail < hi {
            let mut u = EpilogueParams {
                total: u32_of(hi - tail, "elements")?,
                y_off,
                r_off: rw.map_or(0, |(_, o)| o),
                ..params(ep)
            };
            let set = |u: &mut EpilogueParams, first: u32| u.start = tail as u32 + first;
            match rw {
                Some((rb, _)) => launch_linear::<k::EpilogueResidual>(
                    ctx,
                    enc,
                    &spec,
                    &mut u,
                    set,
                    &[rb, yb],
                    (hi - tail) as u64,
                )?,
                None => launch_linear::<k::Epilogue>(
                    ctx,
                    enc,
                    &spec,
                    &mut u,
                    set,
                    &[yb],
                    (hi - tail) as u64,
                )?,
            }
        }
    }
    Ok(())
}

/// Records `dz = dy ⊙ act'(z)` over `len` elements.
pub(crate) fn encode_grad(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    ep: &Epilogue,
    dy: &wgpu::Buffer,
    z: &wgpu::Buffer,
    dz: &wgpu::Buffer,
    len: usize,
) -> Result<()> {
    let spec = EpilogueSpec { RES: 0, ..spec(ep) };
    for (lo, hi) in windows(ctx, len) {
        let (dzb, y_off) = window(ctx, dz, lo, hi)?;
        let (dyb, r_off) = window(ctx, dy, lo, hi)?;
        let (zb, z_off) = window(ctx, z, lo, hi)?;
        let mut u = EpilogueParams {
            total: u32_of(hi - lo, "elements")?,
            y_off,
            r_off,
            z_off,
            ..params(ep)
        };
        let set = |u: &mut EpilogueParams, first: u32| u.start = lo as u32 + first;
        launch_linear::<k::EpilogueGrad>(
            ctx,
            enc,
            &spec,
            &mut u,
            set,
            &[dyb, zb, dzb],
            (hi - lo) as u64,
        )?;
    }
    Ok(())
}
