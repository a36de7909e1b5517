//! Bands: problems whose tensors exceed one storage binding, run by every algorithm on
//! binding-sized pieces.
//!
//! A problem whose input, weight and output each fit one storage binding runs whole.
//! Otherwise it is cut into bands, each an ordinary problem that the operation's table runs
//! with any algorithm (the heuristic's, the tuner's or the caller's choice, checked on every
//! band):
//!
//! - **image bands**: as many whole images as fit, copied contiguously into scratch, the
//!   results copied back;
//! - **row bands**, one image at a time: the forward convolution and the weight gradient
//!   partition the *output* rows, each band reading the input rows its windows cover (the
//!   halo); the input gradient partitions the *input* rows, each band reading the `dy` rows
//!   whose windows touch it. Rows outside the image stay virtual: a band's problem keeps the
//!   original padding at the image's edges and zero rows where its windows leave the band
//!   (their gradient belongs to the neighbouring band). Reflect and replicate padding thus
//!   band like zeros (the input gradient folds each band's padding gradient onto the band,
//!   which holds the rows it reflects); circular padding of rows wraps across the plane and
//!   is banded by images only.
//!
//! Band inputs and outputs go through scratch buffers (plane by plane for row bands): the
//! fast kernels index whole tensors from element 0, and a copy costs little next to the
//! convolution. The weight gradient's band partial sums are added in band order, so results
//! stay deterministic. What cannot be banded (a weight tensor beyond one binding, one output
//! row with its input rows beyond one binding, circular row padding of a plane beyond one
//! binding) runs only on the direct algorithm's windows.

use crate::context::Context;
use crate::conv::input_grad::{self, needs_fold, padded_problem, DgradArgs, DgradNative};
use crate::conv::launch::{fit_one_binding, ConvBuffers};
use crate::conv::table::{Operation, Reason, Table};
use crate::conv::weight_grad::{WgradArgs, WgradNative};
use crate::conv::{forward, refuse, weight_grad, Algorithm};
use crate::error::{Error, Result};
use crate::gpu::memory::ScratchBuffer;
use crate::gpu::{launch, max_window_elems, u32_of, Bind};
use crate::kernels::k;
use crate::kernels::reduce_rows::{ReduceParams, ReduceSpec};
use crate::params::{Conv2dProblem, PaddingMode};
use crate::tune::TunedOp;

/// Scratch a band may use even under a smaller scratch budget (one band's input and output).
const MIN_BAND_SCRATCH: u64 = 4 << 20;

/// Which rows a row band partitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// The output rows (forward, weight gradient).
    Outputs,
    /// The input rows (input gradient, transposed convolution).
    Inputs,
}

/// How a problem runs.
#[derive(Debug)]
pub(crate) enum Plan {
    /// Every tensor fits one binding: the problem runs as it is.
    Whole,
    /// Bands of `per_band` whole images (the last one possibly fewer).
    Images { per_band: usize },
    /// One image at a time, these bands of rows.
    Rows(Vec<RowBand>),
    /// Only the direct algorithm's windows run it, for this reason.
    Windows(Reason),
    /// Nothing on this context runs it: circular padding of rows on a plane of this many
    /// bytes, beyond one storage binding.
    Impossible(u64),
}

/// One band of rows of one image.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RowBand {
    /// Rows `[a, b)` of the input (`x`, or `dx` for the input gradient).
    pub a: usize,
    pub b: usize,
    /// Rows `[oy0, oy1)` of the output (`y` or `dy`).
    pub oy0: usize,
    pub oy1: usize,
    /// The one-image problem the table runs on the band.
    pub sub: Conv2dProblem,
    /// Input gradient with reflect or replicate padding: the band's problem whose padding
    /// gradient `pad_fold` folds onto the band; `sub` is then its zero-padded core (the
    /// gradient of the band's explicitly padded rows).
    pub fold: Option<Conv2dProblem>,
}

impl Plan {
    /// The distinct problems the table runs for `p` under this plan (empty for windows).
    pub(crate) fn problems(&self, p: &Conv2dProblem) -> Vec<Conv2dProblem> {
        let mut out: Vec<Conv2dProblem> = Vec::new();
        let mut push = |q: Conv2dProblem| {
            if !out.contains(&q) {
                out.push(q);
            }
        };
        match self {
            Plan::Whole => push(*p),
            Plan::Images { per_band } => {
                push(Conv2dProblem { n: *per_band, ..*p });
                if !p.n.is_multiple_of(*per_band) {
                    push(Conv2dProblem {
                        n: p.n % per_band,
                        ..*p
                    });
                }
            }
            Plan::Rows(bands) => bands.iter().for_each(|b| push(b.sub)),
            Plan::Windows(_) | Plan::Impossible(_) => {}
        }
        out
    }
}

fn ceil_div_i(a: isize, b: isize) -> isize {
    a.div_euclid(b) + (a.rem_euclid(b) != 0) as isize
}

/// The plan of `p` for the operation side `side` on `ctx`.
pub(crate) fn plan(ctx: &Context, p: &Conv2dProblem, side: Side) -> Plan {
    let whole =
        fit_one_binding(ctx, p).is_ok() && (side == Side::Outputs || !input_grad::windowed(ctx, p));
    if whole {
        return Plan::Whole;
    }
    let limit = max_window_elems(ctx);
    let budget = (ctx.scratch_budget().max(MIN_BAND_SCRATCH) / 4) as usize;
    if p.k * p.c_per_group() * p.r * p.s > limit {
        return Plan::Windows("the weight tensor exceeds one storage binding".into());
    }
    let fold = side == Side::Inputs && needs_fold(p);
    let pp = padded_problem(p);
    // Image bands.
    let xi = p.c * p.h * p.w;
    let yi = p.k * p.oh * p.ow;
    let pi = if fold { p.c * pp.h * pp.w } else { 0 };
    let per_band = (limit / xi.max(1))
        .min(limit / yi.max(1))
        .min(if fold { limit / pi.max(1) } else { usize::MAX })
        .min(budget / (xi + yi).max(1))
        .min(p.n);
    if per_band >= 1 {
        return Plan::Images { per_band };
    }
    // Row bands.
    let [pt, pb, _, _] = p.pad;
    if p.mode == PaddingMode::Circular && pt + pb > 0 {
        // The direct windows take whole planes (padded planes for the input gradient).
        let planes = [p.h * p.w, p.oh * p.ow, if fold { pp.h * pp.w } else { 0 }];
        let largest = planes.iter().copied().max().unwrap_or(0);
        if largest > limit {
            return Plan::Impossible(largest as u64 * 4);
        }
        return Plan::Windows(
            "circular padding of rows wraps across a plane larger than one storage binding".into(),
        );
    }
    // The direct windows: whole padded planes for an input gradient that folds padding.
    let windows = |reason: &'static str| {
        if fold && pp.h * pp.w > limit {
            Plan::Impossible((pp.h * pp.w) as u64 * 4)
        } else {
            Plan::Windows(reason.into())
        }
    };
    let span = p.dilation[0] * (p.r - 1) + 1;
    let s = p.stride[0];
    // Elements of one band of `t` rows (input rows for the input gradient, output rows
    // otherwise): (largest tensor, all scratch).
    let cost = |t: usize| -> (usize, usize) {
        match side {
            Side::Outputs => {
                let xb = p.c * ((t - 1) * s + span).min(p.h) * p.w;
                let yb = p.k * t * p.ow;
                (xb.max(yb), xb + yb)
            }
            Side::Inputs => {
                let dxb = p.c * t * p.w;
                // Outputs whose windows (span rows) touch t rows.
                // A folding band's rows include the padding rows at the image's edges.
                let rows = if fold {
                    t + (pt + pb).max(0) as usize
                } else {
                    t
                };
                let dyb = p.k * ((rows + span - 2) / s + 1).min(p.oh) * p.ow;
                let gb = if fold { p.c * rows * pp.w } else { 0 };
                (dxb.max(dyb).max(gb), dxb + dyb + gb)
            }
        }
    };
    let total = match side {
        Side::Outputs => p.oh,
        Side::Inputs => p.h,
    };
    let ok = |t: usize| {
        let (big, all) = cost(t);
        big <= limit && all <= budget
    };
    if !ok(1) {
        return windows(
            "one band of rows with its halo exceeds one storage binding or the scratch budget",
        );
    }
    // Largest rows per band that fit, then an even split.
    let (mut lo, mut hi) = (1, total);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if ok(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let count = total.div_ceil(lo);
    let mut bands = Vec::with_capacity(count);
    for i in 0..count {
        let r0 = total * i / count;
        let r1 = total * (i + 1) / count;
        let band = match side {
            Side::Outputs => output_band(p, r0, r1),
            Side::Inputs if fold => folded_input_band(p, r0, r1),
            Side::Inputs => input_band(p, r0, r1),
        };
        match band {
            Ok(b) => bands.push(b),
            Err(reason) => return windows(reason),
        }
    }
    Plan::Rows(bands)
}

/// The band of output rows `[oy0, oy1)` (forward, weight gradient): the input rows its
/// windows cover, with the original padding where they leave the image.
fn output_band(p: &Conv2dProblem, oy0: usize, oy1: usize) -> Result<RowBand, &'static str> {
    let span = (p.dilation[0] * (p.r - 1)) as isize;
    let s = p.stride[0] as isize;
    let start = oy0 as isize * s - p.pad[0];
    let end = (oy1 as isize - 1) * s - p.pad[0] + span; // last input row read (inclusive)
    let a = start.max(0);
    let b = (end + 1).min(p.h as isize);
    if a >= b {
        return Err("a band of output rows reads only padding");
    }
    let (top, bottom, rows) = (a - start, end + 1 - b, b - a);
    if p.mode == PaddingMode::Reflect && (top >= rows || bottom >= rows) {
        return Err("a band is shorter than the reflect padding it reflects");
    }
    let sub = Conv2dProblem {
        n: 1,
        h: rows as usize,
        pad: [top, bottom, p.pad[2], p.pad[3]],
        oh: oy1 - oy0,
        ..*p
    };
    debug_assert_eq!(out_rows(&sub), sub.oh);
    Ok(RowBand {
        a: a as usize,
        b: b as usize,
        oy0,
        oy1,
        sub,
        fold: None,
    })
}

/// Output rows `[oy0, oy1)` whose windows touch rows `[a, b)` of an input with top padding
/// `pt` (rows of the padded input are `row + pt`), in a problem like `p`.
fn touching(p: &Conv2dProblem, a: isize, b: isize, pt: isize) -> (usize, usize) {
    let span = (p.dilation[0] * (p.r - 1)) as isize;
    let s = p.stride[0] as isize;
    let oy0 = ceil_div_i(a + pt - span, s).max(0) as usize;
    let oy1 = ((b - 1 + pt).div_euclid(s) + 1).clamp(0, p.oh as isize) as usize;
    (oy0, oy1)
}

/// The band of input rows `[a, b)` of the input gradient with zero padding (or none): the
/// `dy` rows whose windows touch it; window rows outside the band are virtual zero rows
/// (their gradient belongs to other bands and is dropped).
fn input_band(p: &Conv2dProblem, a: usize, b: usize) -> Result<RowBand, &'static str> {
    let (oy0, oy1) = touching(p, a as isize, b as isize, p.pad[0]);
    if oy1 <= oy0 {
        return Err("a band of input rows meets no output row");
    }
    let span = (p.dilation[0] * (p.r - 1)) as isize;
    let s = p.stride[0] as isize;
    let top = a as isize - (oy0 as isize * s - p.pad[0]);
    let bottom = (oy1 as isize - 1) * s - p.pad[0] + span + 1 - b as isize;
    let sub = Conv2dProblem {
        n: 1,
        h: b - a,
        pad: [top, bottom, p.pad[2], p.pad[3]],
        mode: PaddingMode::Zeros,
        oh: oy1 - oy0,
        ..*p
    };
    debug_assert_eq!(out_rows(&sub), sub.oh);
    Ok(RowBand {
        a,
        b,
        oy0,
        oy1,
        sub,
        fold: None,
    })
}

/// The band of input rows `[a, b)` of the input gradient with reflect or replicate padding:
/// the gradient of the band's explicitly padded rows (its top padding when it starts the
/// image, its bottom padding when it ends it, the columns' padding always), folded onto the
/// band, which holds every row those padding rows copy.
fn folded_input_band(p: &Conv2dProblem, a: usize, b: usize) -> Result<RowBand, &'static str> {
    let [pt, pb, pl, pr] = p.pad;
    let top = if a == 0 { pt } else { 0 };
    let bottom = if b == p.h { pb } else { 0 };
    let rows = (b - a) as isize;
    if p.mode == PaddingMode::Reflect && (top >= rows || bottom >= rows) {
        return Err("a band is shorter than the reflect padding it reflects");
    }
    let pp = padded_problem(p);
    // Rows of the explicitly padded input the band's gradient covers.
    let a2 = a as isize + pt - top;
    let b2 = b as isize + pt + bottom;
    let zero = Conv2dProblem { pad: [0; 4], ..pp };
    let (oy0, oy1) = touching(&zero, a2, b2, 0);
    if oy1 <= oy0 {
        return Err("a band of input rows meets no output row");
    }
    let span = (p.dilation[0] * (p.r - 1)) as isize;
    let s = p.stride[0] as isize;
    let core = Conv2dProblem {
        n: 1,
        h: (b2 - a2) as usize,
        pad: [
            a2 - oy0 as isize * s,
            (oy1 as isize - 1) * s + span + 1 - b2,
            0,
            0,
        ],
        mode: PaddingMode::Zeros,
        oh: oy1 - oy0,
        ..pp
    };
    debug_assert_eq!(out_rows(&core), core.oh);
    let fold = Conv2dProblem {
        n: 1,
        h: b - a,
        pad: [top, bottom, pl, pr],
        oh: oy1 - oy0,
        ..*p
    };
    Ok(RowBand {
        a,
        b,
        oy0,
        oy1,
        sub: core,
        fold: Some(fold),
    })
}

/// Output rows of `q` by PyTorch's formula (a check of the band arithmetic).
fn out_rows(q: &Conv2dProblem) -> usize {
    let span = (q.dilation[0] * (q.r - 1)) as isize;
    ((q.h as isize + q.pad[0] + q.pad[1] - span - 1).div_euclid(q.stride[0] as isize) + 1) as usize
}

/// `Ok` when `algorithm` can run every band of `p` (see [`crate::Context::check_algorithm`]).
pub(crate) fn check<B>(
    ctx: &Context,
    table: &Table<Conv2dProblem, B>,
    side: Side,
    p: &Conv2dProblem,
    algorithm: Algorithm,
) -> Result<()> {
    match plan(ctx, p, side) {
        Plan::Windows(reason) => windows_only(table.op, algorithm, &reason),
        Plan::Impossible(bytes) => impossible(ctx, table.op, algorithm, bytes).map(|_| ()),
        plan => {
            for q in plan.problems(p) {
                table.check(ctx, &q, algorithm)?;
            }
            Ok(())
        }
    }
}

/// `Ok` for the algorithms that run a problem only windows can: `Auto` and `Direct`.
fn windows_only(op: Operation, algorithm: Algorithm, reason: &str) -> Result<()> {
    if matches!(algorithm, Algorithm::Auto | Algorithm::Direct) {
        Ok(())
    } else {
        Err(refuse(
            algorithm,
            &format!(
                "{}: {reason}; only the direct algorithm splits it into windows",
                op.name()
            ),
        ))
    }
}

/// The error of a problem nothing runs: `UnsupportedAlgorithm` for a forced algorithm (`Ok`
/// for `Auto` in a check, which always can be asked), `ExceedsLimit` when it runs.
fn impossible(ctx: &Context, op: Operation, algorithm: Algorithm, bytes: u64) -> Result<Error> {
    if algorithm == Algorithm::Auto {
        return Ok(Error::exceeds_limit(
            "max_storage_buffer_binding_size (a circularly padded plane, which cannot be split)",
            bytes,
            ctx.limits().max_storage_buffer_binding_size,
        ));
    }
    Err(refuse(
        algorithm,
        &format!(
            "{}: circular padding of rows wraps across a plane of {bytes} bytes, beyond one \
             storage binding",
            op.name()
        ),
    ))
}

/// Records `count` runs of `len` elements from `src` (element `src0`, then every
/// `src_stride`) to `dst` (element `dst0`, then every `dst_stride`); contiguous runs are
/// merged into one copy.
#[allow(clippy::too_many_arguments)]
fn copy_runs(
    enc: &mut wgpu::CommandEncoder,
    src: &wgpu::Buffer,
    src0: usize,
    src_stride: usize,
    dst: &wgpu::Buffer,
    dst0: usize,
    dst_stride: usize,
    (count, len): (usize, usize),
) {
    if len == 0 || count == 0 {
        return;
    }
    if src_stride == len && dst_stride == len {
        enc.copy_buffer_to_buffer(
            src,
            src0 as u64 * 4,
            dst,
            dst0 as u64 * 4,
            (count * len) as u64 * 4,
        );
        return;
    }
    for i in 0..count {
        enc.copy_buffer_to_buffer(
            src,
            (src0 + i * src_stride) as u64 * 4,
            dst,
            (dst0 + i * dst_stride) as u64 * 4,
            len as u64 * 4,
        );
    }
}

/// Rows `[r0, r1)` of every plane of image `n` of an `[N, planes, rows, width]` tensor,
/// copied to (or, with `back`, from) a `[1, planes, r1 - r0, width]` scratch tensor.
#[allow(clippy::too_many_arguments)]
fn copy_rows(
    enc: &mut wgpu::CommandEncoder,
    tensor: &wgpu::Buffer,
    scratch: &wgpu::Buffer,
    [n, planes, rows, width]: [usize; 4],
    (r0, r1): (usize, usize),
    back: bool,
) {
    let plane = rows * width;
    let band = (r1 - r0) * width;
    let t0 = n * planes * plane + r0 * width;
    if back {
        copy_runs(enc, scratch, 0, band, tensor, t0, plane, (planes, band));
    } else {
        copy_runs(enc, tensor, t0, plane, scratch, 0, band, (planes, band));
    }
}

/// `dst[i] += src[i]` for `len` elements (the deterministic sum of band partials).
fn add_into(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    src: &wgpu::Buffer,
    dst: &wgpu::Buffer,
    len: usize,
) -> Result<()> {
    let u = ReduceParams {
        rows: u32_of(len, "elements")?,
        len: 1,
        batch: 1,
        bstride: 0,
        total: u32_of(len, "elements")?,
        ..Default::default()
    };
    let spec = ReduceSpec {
        ACCUMULATE: true,
        ..Default::default()
    };
    launch::<k::ReduceRows>(
        ctx,
        enc,
        &spec,
        &u,
        &[Bind::whole(src), Bind::whole(dst)],
        len as u64,
    )
}

/// Band scratch from the context's pool: every band writes what it reads (copies in, the
/// entry's complete output), so its undefined contents are never read.
fn scratch(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    elems: usize,
    label: &str,
) -> Result<ScratchBuffer> {
    ScratchBuffer::new(ctx, enc, elems as u64 * 4, label)
}

/// Whether the whole forward problem `p`, run with the concrete `pinned` algorithm
/// ([`forward_pin`]; `None`: bands or a refusal), reads a channels-last `x` and writes a
/// channels-last `y` in place: the implicit GEMM (`pad_image` reads x by strides,
/// `conv2d_implicit` stores y by strides), and the depthwise entry when both x and y are
/// channels-last (`both`) and `conv2d_depthwise_nhwc` runs the problem. Every other entry,
/// and bands, take contiguous views.
pub(crate) fn forward_reads_channels_last(
    ctx: &Context,
    p: &Conv2dProblem,
    pinned: Option<Algorithm>,
    both: bool,
) -> bool {
    match pinned {
        Some(Algorithm::ImplicitGemm) => true,
        Some(Algorithm::Depthwise) => both && forward::depthwise::nhwc_runs(ctx, p),
        _ => false,
    }
}

/// The concrete algorithm a whole (unbanded) forward problem runs with `algorithm` (`Auto`
/// resolved once): the caller decides its views from it and passes it on, so a tuning
/// result landing in between cannot hand views meant for one kernel to another. `None` for
/// banded problems (each band chooses) and refusals (reported by `forward`).
pub(crate) fn forward_pin(
    ctx: &Context,
    p: &Conv2dProblem,
    algorithm: Algorithm,
) -> Option<Algorithm> {
    let whole = matches!(plan(ctx, p, Side::Outputs), Plan::Whole);
    pin(ctx, p, whole, &forward::TABLE, TunedOp::Forward, algorithm)
}

/// The algorithm `table`'s selection resolves `algorithm` to for `p` when `whole`.
fn pin<B>(
    ctx: &Context,
    p: &Conv2dProblem,
    whole: bool,
    table: &Table<Conv2dProblem, B>,
    tuned: TunedOp,
    algorithm: Algorithm,
) -> Option<Algorithm> {
    if !whole {
        return None;
    }
    table
        .select(ctx, p, algorithm, |h, c| ctx.choose(tuned, p, h, &c))
        .ok()
        .map(|e| e.algorithm)
}

/// Records the forward convolution `p` (any size) with `algorithm`.
pub(crate) fn forward(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    bufs: &ConvBuffers,
    algorithm: Algorithm,
) -> Result<()> {
    let table = &forward::TABLE;
    let select = |q: &Conv2dProblem| {
        table.select(ctx, q, algorithm, |h, c| {
            ctx.choose(TunedOp::Forward, q, h, &c)
        })
    };
    let plan = plan(ctx, p, Side::Outputs);
    // Band after band reuses the scratch of the band before.
    let _hold = (!matches!(plan, Plan::Whole)).then(|| ctx.hold_scratch());
    let (xi, yi) = (p.c * p.h * p.w, p.k * p.oh * p.ow);
    // Channels-last buffers reach only whole problems (`forward_reads_channels_last`).
    debug_assert!(
        matches!(plan, Plan::Whole) || !(bufs.x_cl || bufs.y_cl || bufs.x_f16 || bufs.y_f16)
    );
    match plan {
        Plan::Whole => (select(p)?.encode)(ctx, enc, p, bufs),
        Plan::Impossible(bytes) => Err(impossible(ctx, table.op, algorithm, bytes)?),
        Plan::Windows(reason) => {
            windows_only(table.op, algorithm, &reason)?;
            // Not fused (the windows accumulate): the caller's elementwise pass applies it.
            forward::direct::encode(ctx, enc, p, &bufs.x, &bufs.w, bufs.b.as_ref(), &bufs.y)
        }
        Plan::Images { per_band } => {
            // Every band's entry first: a refusal records nothing.
            for q in plan.problems(p) {
                select(&q)?;
            }
            let xs = scratch(ctx, enc, per_band * xi, "wgconv band x")?;
            let ys = scratch(ctx, enc, per_band * yi, "wgconv band y")?;
            let band = ConvBuffers {
                x: xs.buffer.clone(),
                y: ys.buffer.clone(),
                // The epilogue runs as the elementwise pass on the whole output.
                epilogue: None,
                ..bufs.clone()
            };
            for n0 in (0..p.n).step_by(per_band) {
                let nb = per_band.min(p.n - n0);
                let q = Conv2dProblem { n: nb, ..*p };
                let e = select(&q)?;
                copy_runs(enc, &bufs.x, n0 * xi, 0, &xs.buffer, 0, 0, (1, nb * xi));
                (e.encode)(ctx, enc, &q, &band)?;
                copy_runs(enc, &ys.buffer, 0, 0, &bufs.y, n0 * yi, 0, (1, nb * yi));
            }
            Ok(())
        }
        Plan::Rows(bands) => {
            let entries = bands
                .iter()
                .map(|b| select(&b.sub))
                .collect::<Result<Vec<_>>>()?;
            let xs_len = bands.iter().map(|b| p.c * (b.b - b.a) * p.w).max();
            let ys_len = bands.iter().map(|b| p.k * (b.oy1 - b.oy0) * p.ow).max();
            let xs = scratch(ctx, enc, xs_len.unwrap_or(1), "wgconv band x")?;
            let ys = scratch(ctx, enc, ys_len.unwrap_or(1), "wgconv band y")?;
            let band = ConvBuffers {
                x: xs.buffer.clone(),
                y: ys.buffer.clone(),
                // The epilogue runs as the elementwise pass on the whole output.
                epilogue: None,
                ..bufs.clone()
            };
            for n in 0..p.n {
                for (b, e) in bands.iter().zip(&entries) {
                    copy_rows(
                        enc,
                        &bufs.x,
                        &xs.buffer,
                        [n, p.c, p.h, p.w],
                        (b.a, b.b),
                        false,
                    );
                    (e.encode)(ctx, enc, &b.sub, &band)?;
                    let shape = [n, p.k, p.oh, p.ow];
                    copy_rows(enc, &bufs.y, &ys.buffer, shape, (b.oy0, b.oy1), true);
                }
            }
            Ok(())
        }
    }
}

/// Whether the whole input gradient (or transposed convolution) of `p`, run with the
/// concrete `pinned` algorithm ([`input_grad_pin`]; `None`: bands, a folded padding mode or
/// a refusal), reads a channels-last `dy` and writes a channels-last `dx` in place: the
/// implicit GEMM as a forward convolution of dy (not for strided 1x1 kernels, scattered),
/// and the depthwise entry (a depthwise convolution of dy) when both dy and dx are
/// channels-last (`both`) and `conv2d_depthwise_nhwc` runs it (see
/// [`forward_reads_channels_last`]).
pub(crate) fn input_grad_reads_channels_last(
    ctx: &Context,
    p: &Conv2dProblem,
    pinned: Option<Algorithm>,
    both: bool,
) -> bool {
    match pinned {
        Some(Algorithm::ImplicitGemm) => input_grad::implicit_gemm::runs_as_forward(ctx, p, both),
        Some(Algorithm::Depthwise) => {
            both && input_grad::depthwise::dgrad_as_forward(p)
                .is_some_and(|q| forward::depthwise::nhwc_runs(ctx, &q))
        }
        _ => false,
    }
}

/// The concrete algorithm of a whole input-gradient problem (see [`forward_pin`]).
pub(crate) fn input_grad_pin(
    ctx: &Context,
    p: &Conv2dProblem,
    algorithm: Algorithm,
    (transposed, has_bias): (bool, bool),
) -> Option<Algorithm> {
    let whole = matches!(plan(ctx, p, Side::Inputs), Plan::Whole) && !input_grad::needs_fold(p);
    let (table, tuned) = input_grad_table(transposed, has_bias);
    pin(ctx, p, whole, table, tuned, algorithm)
}

/// Whether the input gradient of `p` with the concrete `algorithm` ([`input_grad_pin`])
/// reads f16 dy and writes f16 dx itself (contiguous): the depthwise entry when its
/// forward form runs the f16 image kernel.
pub(crate) fn input_grad_reads_f16(ctx: &Context, p: &Conv2dProblem, algorithm: Algorithm) -> bool {
    algorithm == Algorithm::Depthwise
        && input_grad::depthwise::dgrad_as_forward(p)
            .is_some_and(|q| forward::depthwise::reads_f16(ctx, &q))
}

/// Whether the input gradient of `p` with the concrete `algorithm` ([`input_grad_pin`])
/// writes an f16 dx itself (contiguous, from f32 dy): the implicit GEMM's strided-1x1
/// scatter, on a whole problem.
pub(crate) fn input_grad_writes_f16_dx(
    ctx: &Context,
    p: &Conv2dProblem,
    algorithm: Algorithm,
) -> bool {
    // (Zero padding only: `writes_f16_dx` takes the strided-1x1 path, which has no fold.)
    algorithm == Algorithm::ImplicitGemm
        && matches!(plan(ctx, p, Side::Inputs), Plan::Whole)
        && input_grad::implicit_gemm::writes_f16_dx(ctx, p)
}

/// The input-gradient table of the operation and its tuning key.
fn input_grad_table(
    transposed: bool,
    has_bias: bool,
) -> (&'static Table<Conv2dProblem, DgradArgs>, TunedOp) {
    let table = if transposed {
        &input_grad::TRANSPOSED
    } else {
        &input_grad::TABLE
    };
    // Transposed with a bias: tuned apart (timed, and compiled, with the bias).
    let tuned = if has_bias {
        TunedOp::TransposedBias
    } else {
        TunedOp::BackwardInput
    };
    (table, tuned)
}

/// Input gradient of `p` (see `input_grad::encode`); `cl` = (dy, dx) stored channels-last,
/// only where [`input_grad_reads_channels_last`] holds.
#[allow(clippy::too_many_arguments)]
pub(crate) fn input_grad(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    (dy, w, bias, dx): (
        &wgpu::Buffer,
        &wgpu::Buffer,
        Option<&wgpu::Buffer>,
        &wgpu::Buffer,
    ),
    algorithm: Algorithm,
    transposed: bool,
    native: DgradNative,
) -> Result<()> {
    let DgradNative { cl, f16, dx_f16 } = native;
    let (table, tuned) = input_grad_table(transposed, bias.is_some());
    let select =
        |q: &Conv2dProblem| table.select(ctx, q, algorithm, |h, c| ctx.choose(tuned, q, h, &c));
    let plan = plan(ctx, p, Side::Inputs);
    // Band after band reuses the scratch of the band before.
    let _hold = (!matches!(plan, Plan::Whole)).then(|| ctx.hold_scratch());
    let (xi, yi) = (p.c * p.h * p.w, p.k * p.oh * p.ow);
    debug_assert!(matches!(plan, Plan::Whole) || (cl == [false; 2] && !f16 && !dx_f16));
    match plan {
        Plan::Whole => input_grad::encode_whole(ctx, enc, p, select(p)?, dy, w, bias, dx, native),
        Plan::Impossible(bytes) => Err(impossible(ctx, table.op, algorithm, bytes)?),
        Plan::Windows(reason) => {
            windows_only(table.op, algorithm, &reason)?;
            input_grad::direct::dgrad_windowed(ctx, enc, p, dy, w, bias, dx)
        }
        Plan::Images { per_band } => {
            // Every band's entry first: a refusal records nothing.
            for q in plan.problems(p) {
                select(&q)?;
            }
            let dys = scratch(ctx, enc, per_band * yi, "wgconv band dy")?;
            let dxs = scratch(ctx, enc, per_band * xi, "wgconv band dx")?;
            for n0 in (0..p.n).step_by(per_band) {
                let nb = per_band.min(p.n - n0);
                let q = Conv2dProblem { n: nb, ..*p };
                let e = select(&q)?;
                copy_runs(enc, dy, n0 * yi, 0, &dys.buffer, 0, 0, (1, nb * yi));
                input_grad::encode_whole(
                    ctx,
                    enc,
                    &q,
                    e,
                    &dys.buffer,
                    w,
                    bias,
                    &dxs.buffer,
                    DgradNative::default(),
                )?;
                copy_runs(enc, &dxs.buffer, 0, 0, dx, n0 * xi, 0, (1, nb * xi));
            }
            Ok(())
        }
        Plan::Rows(bands) => {
            let entries = bands
                .iter()
                .map(|b| select(&b.sub))
                .collect::<Result<Vec<_>>>()?;
            let max = |f: &dyn Fn(&RowBand) -> usize| bands.iter().map(f).max().unwrap_or(1);
            let dys = scratch(
                ctx,
                enc,
                max(&|b| p.k * (b.oy1 - b.oy0) * p.ow),
                "wgconv band dy",
            )?;
            let dxs = scratch(
                ctx,
                enc,
                max(&|b| p.c * (b.b - b.a) * p.w),
                "wgconv band dx",
            )?;
            let folded = bands.iter().any(|b| b.fold.is_some());
            let gs = if folded {
                Some(scratch(
                    ctx,
                    enc,
                    max(&|b| p.c * b.sub.h * b.sub.w),
                    "wgconv band padded dx",
                )?)
            } else {
                None
            };
            for n in 0..p.n {
                for (b, e) in bands.iter().zip(&entries) {
                    let shape = [n, p.k, p.oh, p.ow];
                    copy_rows(enc, dy, &dys.buffer, shape, (b.oy0, b.oy1), false);
                    match (&b.fold, &gs) {
                        (Some(fold), Some(gs)) => {
                            let args = DgradArgs {
                                dy: dys.buffer.clone(),
                                dy_off: 0,
                                w: w.clone(),
                                bias: None,
                                dx: gs.buffer.clone(),
                                cl: [false; 2],
                                f16: false,
                                dx_f16: false,
                            };
                            (e.encode)(ctx, enc, &b.sub, &args)?;
                            let total = p.c * (b.b - b.a) * p.w;
                            input_grad::pad_fold(
                                ctx,
                                enc,
                                fold,
                                (p.c, total, 0),
                                Bind::whole(&gs.buffer),
                                Bind::whole(&dxs.buffer),
                            )?;
                        }
                        _ => {
                            let args = DgradArgs {
                                dy: dys.buffer.clone(),
                                dy_off: 0,
                                w: w.clone(),
                                bias: bias.cloned(),
                                dx: dxs.buffer.clone(),
                                cl: [false; 2],
                                f16: false,
                                dx_f16: false,
                            };
                            (e.encode)(ctx, enc, &b.sub, &args)?;
                        }
                    }
                    let shape = [n, p.c, p.h, p.w];
                    copy_rows(enc, dx, &dxs.buffer, shape, (b.a, b.b), true);
                }
            }
            Ok(())
        }
    }
}

/// Whether the whole weight gradient of `p`, run with the concrete `pinned` algorithm
/// ([`weight_grad_pin`]; `None`: bands or a refusal), reads channels-last `x` and `dy` in
/// place: the implicit GEMM (`pad_image` and `pack_image`), and the depthwise entry with
/// both x and dy channels-last (`both`) where `conv2d_wgrad_depthwise_nhwc` runs it.
pub(crate) fn weight_grad_reads_channels_last(
    ctx: &Context,
    p: &Conv2dProblem,
    pinned: Option<Algorithm>,
    both: bool,
) -> bool {
    match pinned {
        Some(Algorithm::ImplicitGemm) => true,
        Some(Algorithm::Depthwise) => both && weight_grad::depthwise::nhwc_runs(ctx, p),
        _ => false,
    }
}

/// The concrete algorithm of a whole weight-gradient problem (see [`forward_pin`]).
pub(crate) fn weight_grad_pin(
    ctx: &Context,
    p: &Conv2dProblem,
    algorithm: Algorithm,
) -> Option<Algorithm> {
    let whole = matches!(plan(ctx, p, Side::Outputs), Plan::Whole);
    pin(
        ctx,
        p,
        whole,
        &weight_grad::TABLE,
        TunedOp::BackwardWeight,
        algorithm,
    )
}

/// Whether the weight gradient of `p` with the concrete `algorithm` ([`weight_grad_pin`])
/// reads f16 x and dy itself (contiguous): the depthwise entry's f16 image kernel.
pub(crate) fn weight_grad_reads_f16(
    ctx: &Context,
    p: &Conv2dProblem,
    algorithm: Algorithm,
) -> bool {
    algorithm == Algorithm::Depthwise && weight_grad::depthwise::reads_f16(ctx, p)
}

/// Whether the weight gradient of `p` with the concrete `algorithm` ([`weight_grad_pin`])
/// reads f16 x (alone; channels-last when `x_cl`) itself: the implicit GEMM's input fill, on a
/// whole problem.
pub(crate) fn weight_grad_reads_f16_x(
    ctx: &Context,
    p: &Conv2dProblem,
    algorithm: Algorithm,
    x_cl: bool,
) -> bool {
    algorithm == Algorithm::ImplicitGemm
        && matches!(plan(ctx, p, Side::Outputs), Plan::Whole)
        && weight_grad::implicit_gemm::reads_f16_x(ctx, p, x_cl)
}

/// Whether the weight gradient of `p` with the concrete `algorithm` ([`weight_grad_pin`])
/// writes an f16 dw itself (contiguous): the implicit GEMM's 1x1 kernel, on a whole problem
/// in one launch.
pub(crate) fn weight_grad_writes_f16_dw(
    ctx: &Context,
    p: &Conv2dProblem,
    algorithm: Algorithm,
) -> bool {
    algorithm == Algorithm::ImplicitGemm
        && matches!(plan(ctx, p, Side::Outputs), Plan::Whole)
        && weight_grad::implicit_gemm::writes_f16_dw(ctx, p)
}

/// Whether the weight gradient of `p` with the concrete `algorithm` ([`weight_grad_pin`])
/// stores dw channels-last (`[K, R, S, C/groups]`) itself: the implicit GEMM, on a whole
/// problem.
pub(crate) fn weight_grad_writes_channels_last(
    ctx: &Context,
    p: &Conv2dProblem,
    algorithm: Algorithm,
) -> bool {
    algorithm == Algorithm::ImplicitGemm && matches!(plan(ctx, p, Side::Outputs), Plan::Whole)
}

/// Weight gradient of `p` (see `weight_grad::encode`); each flag of `native` only where its
/// query holds ([`weight_grad_reads_channels_last`], [`weight_grad_reads_f16`], ...).
#[allow(clippy::too_many_arguments)]
pub(crate) fn weight_grad(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    p: &Conv2dProblem,
    (x, dy, dw, db): (
        &wgpu::Buffer,
        &wgpu::Buffer,
        &wgpu::Buffer,
        Option<&wgpu::Buffer>,
    ),
    algorithm: Algorithm,
    native: WgradNative,
) -> Result<bool> {
    let WgradNative {
        cl,
        f16,
        x_f16,
        dw_f16,
        dw_cl,
    } = native;
    let table = &weight_grad::TABLE;
    let select = |q: &Conv2dProblem| {
        table.select(ctx, q, algorithm, |h, c| {
            ctx.choose(TunedOp::BackwardWeight, q, h, &c)
        })
    };
    let args = |x: &wgpu::Buffer, dy: &wgpu::Buffer, dw: &wgpu::Buffer| WgradArgs {
        x: x.clone(),
        dy: dy.clone(),
        dw: dw.clone(),
        cl: [false; 2],
        f16: false,
        x_f16: false,
        dw_f16: false,
        dw_cl: false,
        db: None,
        db_done: Default::default(),
    };
    let plan = plan(ctx, p, Side::Outputs);
    // Band after band reuses the scratch of the band before.
    let _hold = (!matches!(plan, Plan::Whole)).then(|| ctx.hold_scratch());
    debug_assert!(matches!(plan, Plan::Whole) || (cl == [false; 2] && !f16));
    let (xi, yi) = (p.c * p.h * p.w, p.k * p.oh * p.ow);
    let wlen = p.k * p.c_per_group() * p.r * p.s;
    let entry_bug = || {
        // `weight_grad_reads_f16_x` / `weight_grad_writes_f16_dw` / `..._channels_last` said
        // otherwise: never read f16 words as f32 or write f32 sums into f16 words (or
        // another order).
        Err(Error::library_bug(
            "recording a weight gradient",
            "f16 x or dw for a path that reads or writes f32",
        ))
    };
    if (x_f16 || dw_f16 || dw_cl) && !matches!(plan, Plan::Whole) {
        return entry_bug();
    }
    match plan {
        Plan::Whole => {
            let entry = select(p)?;
            if (x_f16 || dw_f16 || dw_cl) && entry.algorithm != Algorithm::ImplicitGemm {
                return entry_bug();
            }
            let a = WgradArgs {
                cl,
                f16,
                x_f16,
                dw_f16,
                dw_cl,
                db: db.cloned(),
                ..args(x, dy, dw)
            };
            (entry.encode)(ctx, enc, p, &a)?;
            Ok(a.db_done.get())
        }
        Plan::Impossible(bytes) => Err(impossible(ctx, table.op, algorithm, bytes)?),
        Plan::Windows(reason) => {
            windows_only(table.op, algorithm, &reason)?;
            (weight_grad::direct::WEIGHT_GRAD.encode)(ctx, enc, p, &args(x, dy, dw))?;
            Ok(false)
        }
        Plan::Images { per_band } => {
            // Every band's entry first: a refusal records nothing.
            for q in plan.problems(p) {
                select(&q)?;
            }
            let xs = scratch(ctx, enc, per_band * xi, "wgconv band x")?;
            let dys = scratch(ctx, enc, per_band * yi, "wgconv band dy")?;
            let part = scratch(ctx, enc, wlen, "wgconv band dw")?;
            for (i, n0) in (0..p.n).step_by(per_band).enumerate() {
                let nb = per_band.min(p.n - n0);
                let q = Conv2dProblem { n: nb, ..*p };
                let e = select(&q)?;
                copy_runs(enc, x, n0 * xi, 0, &xs.buffer, 0, 0, (1, nb * xi));
                copy_runs(enc, dy, n0 * yi, 0, &dys.buffer, 0, 0, (1, nb * yi));
                let out = if i == 0 { dw } else { &part.buffer };
                (e.encode)(ctx, enc, &q, &args(&xs.buffer, &dys.buffer, out))?;
                if i > 0 {
                    add_into(ctx, enc, &part.buffer, dw, wlen)?;
                }
            }
            Ok(false)
        }
        Plan::Rows(bands) => {
            let entries = bands
                .iter()
                .map(|b| select(&b.sub))
                .collect::<Result<Vec<_>>>()?;
            let max = |f: &dyn Fn(&RowBand) -> usize| bands.iter().map(f).max().unwrap_or(1);
            let xs = scratch(ctx, enc, max(&|b| p.c * (b.b - b.a) * p.w), "wgconv band x")?;
            let dys = scratch(
                ctx,
                enc,
                max(&|b| p.k * (b.oy1 - b.oy0) * p.ow),
                "wgconv band dy",
            )?;
            let part = scratch(ctx, enc, wlen, "wgconv band dw")?;
            let mut first = true;
            for n in 0..p.n {
                for (b, e) in bands.iter().zip(&entries) {
                    copy_rows(enc, x, &xs.buffer, [n, p.c, p.h, p.w], (b.a, b.b), false);
                    let shape = [n, p.k, p.oh, p.ow];
                    copy_rows(enc, dy, &dys.buffer, shape, (b.oy0, b.oy1), false);
                    let out = if first { dw } else { &part.buffer };
                    (e.encode)(ctx, enc, &b.sub, &args(&xs.buffer, &dys.buffer, out))?;
                    if !first {
                        add_into(ctx, enc, &part.buffer, dw, wlen)?;
                    }
                    first = false;
                }
            }
            Ok(false)
        }
    }
}
