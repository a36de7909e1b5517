//! Input gradient of strided convolutions by phases, for CPU-like adapters
//! (kernel `conv2d_dgrad_phase_image`, weights by `dgrad_phase_weights`); a variant of the
//! direct algorithm.
//!
//! The pixels `(py + sh*a, px + sw*b)` of dx (one phase per `(py, px)`) receive only the
//! taps `r ≡ py + pad_top (mod sh)`, `s ≡ px + pad_left (mod sw)`; on them the input gradient
//! is a stride-1 correlation of dy with a sub-kernel of `RJ x SL` taps. Each phase is one
//! dispatch that gathers dy from an image copy and writes its pixels of dx directly: no
//! column matrix (the im2col route writes and gathers back `C*R*S x Ho*Wo` floats: 147 x
//! 12544 for a ResNet stem) and no atomics. Made for few input channels per group (4 per
//! invocation), the first layers of a network.

use super::DgradArgs;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::gpu::memory::{copy_flat_wide, flat_rows_geom, flat_rows_image, ScratchBuffer};
use crate::gpu::{i32_of, launch, u32_of, Bind};
use crate::kernels::conv2d_dgrad_phase_image::{PhaseParams, PhaseSpec};
use crate::kernels::dgrad_phase_weights::{PhaseWeightsParams, PhaseWeightsSpec};
use crate::kernels::k;
use crate::params::{Conv2dProblem, PaddingMode};

/// Widest sub-kernel the kernel unrolls.
const MAX_SL: usize = 8;

/// Largest stride per axis (one dispatch per phase: at most 64).
const MAX_STRIDE: usize = 8;

/// One phase along one axis: first tap, taps, offset of dy (`a + j - off`), pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Axis {
    t0: usize,
    taps: usize,
    off: isize,
    count: usize,
}

/// Phase `ph` of an axis of size `size` (kernel `k`, stride `st`, leading padding `pad`).
fn axis(ph: usize, size: usize, k: usize, st: usize, pad: isize) -> Axis {
    let t0 = (ph as isize + pad).rem_euclid(st as isize) as usize;
    let taps = if k > t0 { (k - t0).div_ceil(st) } else { 0 };
    // dy index of tap j' (counted from the rotated end) for phase pixel a: a + q - (taps-1) + j'.
    let q = (ph as isize + pad - t0 as isize).div_euclid(st as isize);
    Axis {
        t0,
        taps,
        off: taps as isize - 1 - q,
        count: if size > ph {
            (size - ph).div_ceil(st)
        } else {
            0
        },
    }
}

/// Can the phase kernel compute the input gradient of zero-padded `p`? CPU adapters (image
/// loads), strides up to 8, dilation 1, zero padding, sub-kernels up to 8 wide, OW a
/// multiple of 4, dy rows and packed weights within the image limits, one storage binding
/// and the scratch budget (else the direct gather kernel runs).
pub(crate) fn supports(ctx: &Context, p: &Conv2dProblem) -> bool {
    p.stride[0] <= MAX_STRIDE
        && p.stride[1] <= MAX_STRIDE
        && ctx.cpu_kernels()
        && ctx.limits().max_texture_dimension_2d >= 1024
        && p.dilation == [1, 1]
        && p.mode == PaddingMode::Zeros
        && p.s.div_ceil(p.stride[1]) <= MAX_SL
        && p.ow.is_multiple_of(4)
        && p.n * p.k * p.oh > 0
        && weights_fit(ctx, weight_texels(p))
        && flat_rows_geom(ctx, p.n * p.k * p.oh, p.ow).is_some()
}

/// Do `texels` packed weight texels fit their staging binding, the scratch budget and an
/// image of 1024-texel rows?
fn weights_fit(ctx: &Context, texels: usize) -> bool {
    let bytes = texels as u64 * 16;
    let limits = ctx.limits();
    texels > 0
        && bytes <= limits.max_storage_buffer_binding_size
        && bytes <= ctx.scratch_budget().max(4096)
        && texels.div_ceil(1024) <= limits.max_texture_dimension_2d as usize
}

/// Texels of the packed weights of every phase.
fn weight_texels(p: &Conv2dProblem) -> usize {
    let per = p.groups * p.c_per_group().div_ceil(4) * p.k_per_group();
    let rows: usize = (0..p.stride[0])
        .map(|py| axis(py, p.h, p.r, p.stride[0], p.pad[0]).taps)
        .sum();
    let cols: usize = (0..p.stride[1])
        .map(|px| axis(px, p.w, p.s, p.stride[1], p.pad[2]).taps)
        .sum();
    per * rows * cols
}

/// Input gradient of zero-padded `p` (dy from element `dy_off`, dx from element 0), by
/// phases. The caller checks [`supports`].
pub(crate) fn encode(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    a: &DgradArgs,
) -> Result<()> {
    let (dy, dy_off, w, bias, dx) = (&a.dy, a.dy_off, &a.w, a.bias.as_ref(), &a.dx);
    let (cg, kg) = (p.c_per_group(), p.k_per_group());
    let cb = cg.div_ceil(4);
    let [sh, sw] = p.stride;
    let rows: Vec<Axis> = (0..sh).map(|py| axis(py, p.h, p.r, sh, p.pad[0])).collect();
    let cols: Vec<Axis> = (0..sw).map(|px| axis(px, p.w, p.s, sw, p.pad[2])).collect();
    // Weights of every phase, one after another, in a flat image of 1024-texel rows.
    let texels = weight_texels(p);
    let staging = ScratchBuffer::new(ctx, enc, (texels * 16) as u64, "wgconv phase weights")?;
    let per = p.groups * cb * kg;
    let mut bases = Vec::with_capacity(sh * sw);
    let mut base = 0;
    let wspec = PhaseWeightsSpec {
        FLIP: p.flip,
        ..Default::default()
    };
    for ra in &rows {
        for ca in &cols {
            bases.push(base);
            let total = per * ra.taps * ca.taps;
            if total == 0 {
                continue;
            }
            let u = PhaseWeightsParams {
                kg: u32_of(kg, "output channels per group")?,
                cg: u32_of(cg, "channels per group")?,
                cb: u32_of(cb, "channel blocks")?,
                groups: u32_of(p.groups, "groups")?,
                r: u32_of(p.r, "kernel height")?,
                s: u32_of(p.s, "kernel width")?,
                rj: u32_of(ra.taps, "taps")?,
                sl: u32_of(ca.taps, "taps")?,
                r0: u32_of(ra.t0, "taps")?,
                s0: u32_of(ca.t0, "taps")?,
                sh: u32_of(sh, "stride")?,
                sw: u32_of(sw, "stride")?,
                base: u32_of(base, "weight texels")?,
                total: u32_of(total, "weight texels")?,
                ..Default::default()
            };
            launch::<k::DgradPhaseWeights>(
                ctx,
                enc,
                &wspec,
                &u,
                &[Bind::whole(w), Bind::whole(&staging.buffer)],
                total as u64,
            )?;
            base += total;
        }
    }
    let Some((wimg, tw)) = copy_flat_wide(
        ctx,
        enc,
        &staging.buffer,
        texels * 4,
        "wgconv phase weights image",
    )?
    else {
        return Err(Error::exceeds_limit(
            "max_texture_dimension_2d",
            texels as u64,
            ctx.limits().max_texture_dimension_2d as u64,
        ));
    };
    debug_assert_eq!(tw, 1024);
    let Some(dyg) = flat_rows_geom(ctx, p.n * p.k * p.oh, p.ow) else {
        return Err(Error::exceeds_limit(
            "max_texture_dimension_2d",
            (p.n * p.k * p.oh) as u64,
            ctx.limits().max_texture_dimension_2d as u64,
        ));
    };
    let dyimg = flat_rows_image(
        ctx,
        enc,
        (dy, dy_off),
        p.n * p.k * p.oh * p.ow / 4,
        dyg,
        "wgconv phase dy",
    )?;
    let mut i = 0;
    for (py, ra) in rows.iter().enumerate() {
        for (px, ca) in cols.iter().enumerate() {
            let wbase = bases[i];
            i += 1;
            let bblocks = ca.count.div_ceil(8);
            let total = p.n * p.groups * cb * ra.count * bblocks;
            if total == 0 {
                continue;
            }
            // Window start column 8*bb - PLX: texel 2*bb + qoff, offset shift in it.
            let shift = (-ca.off).rem_euclid(4);
            let qoff = (-ca.off - shift) / 4;
            let u = PhaseParams {
                c: u32_of(p.c, "channels")?,
                h: u32_of(p.h, "height")?,
                w: u32_of(p.w, "width")?,
                k: u32_of(p.k, "output channels")?,
                oh: u32_of(p.oh, "output height")?,
                ow: u32_of(p.ow, "output width")?,
                cg: u32_of(cg, "channels per group")?,
                kg: u32_of(kg, "output channels per group")?,
                cb: u32_of(cb, "channel blocks")?,
                sh: u32_of(sh, "stride")?,
                sw: u32_of(sw, "stride")?,
                py: u32_of(py, "phase")?,
                px: u32_of(px, "phase")?,
                a_n: u32_of(ra.count, "phase rows")?,
                b_n: u32_of(ca.count, "phase columns")?,
                bblocks: u32_of(bblocks, "column blocks")?,
                rj: u32_of(ra.taps, "taps")?,
                pty: i32_of(ra.off, "offset")?,
                qoff: i32_of(qoff, "offset")?,
                owq: u32_of(p.ow / 4, "output width")?,
                rows_shift: dyg.rows_per.trailing_zeros(),
                wbase: u32_of(wbase, "weight texels")?,
                total: u32_of(total, "invocations")?,
                dy_rows_mask: u32_of(dyg.rows_per - 1, "rows")?,
            };
            let spec = PhaseSpec {
                SL: ca.taps as u32,
                SHIFT: shift as u32,
                HAS_BIAS: bias.is_some(),
                ..Default::default()
            };
            launch::<k::Conv2dDgradPhaseImage>(
                ctx,
                enc,
                &spec,
                &u,
                &[
                    Bind::Image(&dyimg.view),
                    Bind::Image(&wimg.view),
                    Bind::whole(bias.unwrap_or(w)),
                    Bind::whole(dx),
                ],
                total as u64,
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every tap of every output lands in exactly one phase, at the dy index the forward
    /// reads it from.
    #[test]
    fn phases_cover_every_tap_once() {
        for (size, k, st, pad) in [
            (224, 7, 2, 3),
            (9, 3, 2, 1),
            (10, 4, 3, 0),
            (5, 2, 3, 2),
            (8, 1, 2, 0),
        ] {
            let oh = (size + 2 * pad - k) / st + 1;
            let mut seen = vec![0usize; size * k];
            for ph in 0..st {
                let ax = axis(ph, size, k, st, pad as isize);
                for a in 0..ax.count {
                    let iy = ph + st * a;
                    for j in 0..ax.taps {
                        let r = ax.t0 + st * (ax.taps - 1 - j);
                        let oy = a as isize + j as isize - ax.off;
                        // The forward reads x[iy] at tap r from output oy.
                        assert_eq!(oy * st as isize - pad as isize + r as isize, iy as isize);
                        if oy >= 0 && (oy as usize) < oh {
                            seen[iy * k + r] += 1;
                        }
                    }
                }
            }
            for iy in 0..size {
                for r in 0..k {
                    let y = iy as isize + pad as isize - r as isize;
                    let hit = y >= 0 && y % st as isize == 0 && ((y / st as isize) as usize) < oh;
                    assert_eq!(
                        seen[iy * k + r],
                        hit as usize,
                        "size {size} k {k} st {st} pad {pad} iy {iy} r {r}"
                    );
                }
            }
        }
    }
}
