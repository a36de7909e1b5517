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

/// Records `y = epilogue(y, r)` over the `len` elements of `y` (and `r`, given exactly when
/// the epilogue has a residual). Nothing for the identity epilogue.
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
        let mut u = EpilogueParams {
            total: u32_of(hi - lo, "elements")?,
            y_off,
            ..params(ep)
        };
        let set = |u: &mut EpilogueParams, first: u32| u.start = lo as u32 + first;
        match r {
            Some(r) => {
                let (rb, r_off) = window(ctx, r, lo, hi)?;
                u.r_off = r_off;
                launch_linear::<k::EpilogueResidual>(
                    ctx,
                    enc,
                    &spec,
                    &mut u,
                    set,
                    &[rb, yb],
                    (hi - lo) as u64,
                )?;
            }
            None => {
                launch_linear::<k::Epilogue>(ctx, enc, &spec, &mut u, set, &[yb], (hi - lo) as u64)?
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
