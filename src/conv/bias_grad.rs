//! Bias gradient: deterministic row sums of `dy`.

use crate::context::Context;
use crate::conv::table::{always, anywhere, runs_all, Entry, Operation, Table};
use crate::conv::Algorithm;
use crate::error::{Error, Result};
use crate::gpu::memory::{copy_flat, copy_flat_at_of, flat_image_fits_of};
use crate::gpu::{fits, launch, max_window_elems, u32_of, window, Bind};
use crate::kernels::k;
use crate::kernels::reduce_rows::{ReduceParams, ReduceSpec};
use crate::kernels::reduce_rows_image::{ReduceImageParams, ReduceImageSpec};
use crate::params::Shape4;
use crate::tensor::DType;

/// The buffers of a bias-gradient call.
pub(crate) struct BgradArgs {
    pub dy: wgpu::Buffer,
    pub db: wgpu::Buffer,
    /// dy is stored channels-last (only when it fits one binding: [`reads_channels_last`]).
    pub cl: bool,
    /// dy is the caller's f16 tensor (packed words; only where [`reads_f16`] holds).
    pub f16: bool,
}

/// The bias-gradient table (problems: the shape of `dy`): one entry, the direct row sums.
pub(crate) static TABLE: Table<Shape4, BgradArgs> = Table {
    op: Operation::BiasGrad,
    entries: &[Entry {
        algorithm: Algorithm::Direct,
        check: runs_all,
        prefer: always,
        tune: anywhere,
        encode: |ctx, enc, shape, a| encode_bgrad(ctx, enc, *shape, a),
    }],
};

/// Bias gradient `db` of a `dy` of shape `dy_shape` (always the table's one entry: the
/// operations that take an algorithm apply it to `dx` and `dw`).
pub(crate) fn encode(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    dy_shape: Shape4,
    dy: &wgpu::Buffer,
    db: &wgpu::Buffer,
    cl: bool,
    f16: bool,
) -> Result<()> {
    let entry = TABLE.select(ctx, &dy_shape, Algorithm::Auto, |h, _| h)?;
    let args = BgradArgs {
        dy: dy.clone(),
        db: db.clone(),
        cl,
        f16,
    };
    (entry.encode)(ctx, enc, &dy_shape, &args)
}

/// Does the bias gradient read a channels-last `dy` of `elems` f32 values in place (when it
/// fits one binding; else from a contiguous copy)?
pub(crate) fn reads_channels_last(ctx: &Context, elems: usize) -> bool {
    (elems as u64).saturating_mul(4) <= ctx.limits().max_storage_buffer_binding_size
}

/// Does the bias gradient of a contiguous f16 `dy` of `dy_shape` read it itself (CPU
/// adapters: the row sums of an `rgba16float` copy, `reduce_rows_image_f16`)?
pub(crate) fn reads_f16(ctx: &Context, dy_shape: Shape4) -> bool {
    let len = dy_shape.iter().product::<usize>();
    ctx.cpu_kernels()
        && (dy_shape[1] as u64) * 4 <= ctx.limits().max_storage_buffer_binding_size
        && flat_image_fits_of(ctx, 0, len, DType::F16)
}

/// Bias gradient `db[k] = Σ_{n, oy, ox} dy[n, k, oy, ox]`, deterministic.
fn encode_bgrad(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    dy_shape: [usize; 4],
    a: &BgradArgs,
) -> Result<()> {
    let (dy, db, cl) = (&a.dy, &a.db, a.cl);
    if a.f16 {
        if cl || !reads_f16(ctx, dy_shape) {
            return Err(Error::library_bug(
                "recording a bias gradient",
                "f16 dy without the f16 image kernel",
            ));
        }
        let [n, k, oh, ow] = dy_shape;
        let len = n * k * oh * ow;
        let label = "wgconv bias-gradient dy image";
        let Some((img, tw)) = copy_flat_at_of(ctx, enc, (dy, 0), len, DType::F16, label)? else {
            return Err(Error::library_bug(
                "recording a bias gradient",
                "no image copy of f16 dy",
            ));
        };
        let u = ReduceImageParams {
            rows: u32_of(k, "channels")?,
            len: u32_of(oh * ow, "pixels")?,
            batch: u32_of(n, "images")?,
            bstride: u32_of(k * oh * ow, "elements")?,
            total: u32_of(k, "channels")?,
            tw_shift: tw.trailing_zeros(),
            ..Default::default()
        };
        return launch::<k::ReduceRowsImageF16>(
            ctx,
            enc,
            &ReduceImageSpec::default(),
            &u,
            &[Bind::Image(&img.view), Bind::whole(db)],
            k as u64,
        );
    }
    let [n, k, oh, ow] = dy_shape;
    let ohw = oh * ow;
    let spec = |acc: bool| ReduceSpec {
        ACCUMULATE: acc,
        ..Default::default()
    };
    // Channels-last dy (it fits one binding, see `reads_channels_last`): channel k's pixels
    // are k apart (`cl_k`).
    let cl_k = if cl { u32_of(k, "channels")? } else { 0 };
    // CPU adapters: sum a verbatim image copy of dy (a texel load per four floats instead of
    // a per-lane loop per float), one subgroup-sized workgroup per 8 channels so that few
    // channels still spread over the compute threads; channels-last, one invocation per 4
    // channels (a texel per pixel; channels a multiple of 4).
    if ctx.cpu_kernels() && fits(ctx, db) && (!cl || k.is_multiple_of(4)) {
        let len = n * k * ohw;
        if let Some((img, tw)) = copy_flat(ctx, enc, dy, len, "wgconv bias-gradient dy image")? {
            let invocations = if cl { k / 4 } else { k };
            let u = ReduceImageParams {
                rows: u32_of(k, "channels")?,
                len: u32_of(ohw, "pixels")?,
                batch: u32_of(n, "images")?,
                bstride: u32_of(k * ohw, "elements")?,
                total: u32_of(invocations, "channels")?,
                tw_shift: tw.trailing_zeros(),
                cl_k,
                ..Default::default()
            };
            return launch::<k::ReduceRowsImage>(
                ctx,
                enc,
                &ReduceImageSpec::default(),
                &u,
                &[Bind::Image(&img.view), Bind::whole(db)],
                invocations as u64,
            );
        }
    }
    if cl || (fits(ctx, dy) && fits(ctx, db)) {
        let u = ReduceParams {
            rows: u32_of(k, "channels")?,
            len: u32_of(ohw, "pixels")?,
            batch: u32_of(n, "images")?,
            bstride: u32_of(k * ohw, "elements")?,
            total: u32_of(k, "channels")?,
            cl_k,
            ..Default::default()
        };
        return launch::<k::ReduceRows>(
            ctx,
            enc,
            &spec(false),
            &u,
            &[Bind::whole(dy), Bind::whole(db)],
            k as u64,
        );
    }
    // Large dy: bands of whole images (one launch per band, each summing every channel over
    // its images), else one image at a time in bands of channels, else pieces of one
    // channel plane; every band is bound through a window of dy and added in order.
    let maxw = max_window_elems(ctx);
    let (dbb, db_off) = window(ctx, db, 0, k)?;
    let launch_band = |enc: &mut wgpu::CommandEncoder,
                       lo: usize,
                       (rows, len, batch): (usize, usize, usize),
                       k0: usize,
                       acc: bool|
     -> Result<()> {
        let (src, src_off) = window(ctx, dy, lo, lo + batch * k * ohw - (k - rows) * ohw)?;
        let u = ReduceParams {
            rows: u32_of(rows, "channels")?,
            len: u32_of(len, "pixels")?,
            batch: u32_of(batch, "images")?,
            bstride: u32_of(k * ohw, "elements")?,
            total: u32_of(rows, "channels")?,
            src_off: src_off.wrapping_add(lo as u32),
            dst_off: db_off.wrapping_add(k0 as u32),
            cl_k: 0,
        };
        launch::<k::ReduceRows>(ctx, enc, &spec(acc), &u, &[src, dbb], rows as u64)
    };
    let per_image = k * ohw;
    if per_image <= maxw {
        let images = (maxw / per_image).min(n);
        for n0 in (0..n).step_by(images) {
            let nb = images.min(n - n0);
            launch_band(enc, n0 * per_image, (k, ohw, nb), 0, n0 > 0)?;
        }
        return Ok(());
    }
    if ohw <= maxw {
        let channels = maxw / ohw;
        for img in 0..n {
            for k0 in (0..k).step_by(channels) {
                let kb = channels.min(k - k0);
                launch_band(enc, (img * k + k0) * ohw, (kb, ohw, 1), k0, img > 0)?;
            }
        }
        return Ok(());
    }
    for kk in 0..k {
        let (dbb, db_off) = window(ctx, db, kk, kk + 1)?;
        let mut first = true;
        for img in 0..n {
            let mut p0 = 0;
            while p0 < ohw {
                let cnt = maxw.min(ohw - p0);
                let lo = (img * k + kk) * ohw + p0;
                let (src, src_off) = window(ctx, dy, lo, lo + cnt)?;
                let u = ReduceParams {
                    rows: 1,
                    len: u32_of(cnt, "pixels")?,
                    batch: 1,
                    bstride: 0,
                    total: 1,
                    src_off: src_off.wrapping_add(lo as u32),
                    dst_off: db_off.wrapping_add(kk as u32),
                    cl_k: 0,
                };
                launch::<k::ReduceRows>(ctx, enc, &spec(!first), &u, &[src, dbb], 1)?;
                first = false;
                p0 += cnt;
            }
        }
    }
    Ok(())
}
