//! Memory formats on the GPU: the `swap_axes` conversions between contiguous (NCHW, KCRS)
//! and channels-last (NHWC, KRSC) storage, in windows of at most one storage binding.
//!
//! The kernels of an algorithm that reads channels-last operands natively take them as they
//! are; every other path reads and writes contiguous f32 views ([`crate::gpu::half`]), which
//! this module fills from a channels-last operand and writes back into one.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::gpu::memory::{copy_flat_at, ScratchBuffer};
use crate::gpu::{launch_linear, max_window_elems, u32_of, window, Bind};
use crate::kernels::k;
use crate::kernels::swap_axes::{SwapAxesParams, SwapAxesSpec, SwapSmallSpec, SMALL_MAX};
use crate::tensor::{DType, MemoryFormat, Tensor};

/// `[E, A, B]` of the transpose taking a 4-D tensor of logical `shape` from format `from`
/// to the other format.
fn dims(shape: [usize; 4], from: MemoryFormat) -> [usize; 3] {
    let [n, c, h, w] = shape;
    match from {
        MemoryFormat::Contiguous => [n, c, h * w],
        MemoryFormat::ChannelsLast => [n, h * w, c],
    }
}

/// Records the conversion of the 32-bit words of a 4-D tensor of logical `shape` stored in
/// format `from` in `src` into the other format in `dst` (distinct buffers).
pub(crate) fn swap(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    src: &wgpu::Buffer,
    dst: &wgpu::Buffer,
    shape: [usize; 4],
    from: MemoryFormat,
) -> Result<()> {
    let [e, a, b] = dims(shape, from);
    if e * a * b == 0 {
        return Ok(());
    }
    u32_of(e * a * b, "tensor elements")?;
    let max = max_window_elems(ctx);
    // One axis of 1-16 elements (RGB images, the taps of small kernels), the other a multiple
    // of 4, the whole tensor in one binding: vector accesses on both sides (`swap_axes_small`).
    if e * a * b <= max && (a <= SMALL_MAX && b % 4 == 0 || b <= SMALL_MAX && a % 4 == 0) {
        let rows_short = a <= SMALL_MAX && b % 4 == 0;
        // (Both axes may be short, e.g. 9 taps x 4 channels: the one of `rows_short`.)
        let (small, long) = if rows_short { (a, b) } else { (b, a) };
        let total = e * (long / 4);
        let (sb, src_off) = window(ctx, src, 0, e * a * b)?;
        let (db, dst_off) = window(ctx, dst, 0, e * a * b)?;
        let mut params = SwapAxesParams {
            a: a as u32,
            b: b as u32,
            e0: 0,
            ne: e as u32,
            na: a as u32,
            nb: b as u32,
            src_off,
            dst_off,
            total: total as u32,
            ..Default::default()
        };
        let spec = SwapSmallSpec {
            N: small as u32,
            ROWS_SHORT: rows_short,
            ..Default::default()
        };
        return launch_linear::<k::SwapAxesSmall>(
            ctx,
            enc,
            &spec,
            &mut params,
            |p, base| p.base = base,
            &[sb, db],
            total as u64,
        );
    }
    // Both axes multiples of 4: 4 x 4 tiles of vector accesses (every block edge below is
    // then a multiple of 4, and window offsets are multiples of the 256-byte alignment).
    // (Tiled entries need 4 whole rows and 4 whole columns per window.)
    let vec4 = a % 4 == 0 && b % 4 == 0 && (a * b <= max || (4 * a <= max && 4 * b <= max));
    // CPU adapters, the whole tensor in one binding: the tiles read from an image copy of the
    // source (a copy, then texel loads instead of per-lane storage-buffer loads).
    if vec4 && ctx.cpu_kernels() && e * a * b <= max {
        if let Some((img, tw)) = copy_flat_at(ctx, enc, (src, 0), e * a * b, "wgconv format")? {
            let total = e * (a / 4) * (b / 4);
            let (db, dst_off) = window(ctx, dst, 0, e * a * b)?;
            let mut params = SwapAxesParams {
                a: a as u32,
                b: b as u32,
                ne: e as u32,
                na: a as u32,
                nb: b as u32,
                dst_off,
                total: u32_of(total, "tensor elements")?,
                tw_shift: tw.trailing_zeros(),
                ..Default::default()
            };
            return launch_linear::<k::SwapAxes4Image>(
                ctx,
                enc,
                &SwapAxesSpec::default(),
                &mut params,
                |p, base| p.base = base,
                &[Bind::Image(&img.view), db],
                total as u64,
            );
        }
    }
    let q = if vec4 { 4 } else { 1 };
    // Tiles whose source and destination ranges each fit one binding: whole entries when
    // one entry fits, else blocks of rows (source) and columns (destination). A row longer
    // than a window (e.g. the plane of a one-channel image) is cut into single-row tiles of
    // columns, and a column taller than a window into single-column tiles of rows: only
    // rows and columns both longer than a window cannot be tiled.
    let (ea, eb) = if a * b <= max {
        (a, b)
    } else if a <= max || b <= max {
        ((max / b / q * q).max(q), (max / a / q * q).max(q))
    } else {
        return Err(Error::exceeds_limit(
            "max_storage_buffer_binding_size (one row of a format conversion)",
            (a.min(b) * 4) as u64,
            (max * 4) as u64,
        ));
    };
    let entries = if ea == a && eb == b {
        (max / (a * b)).max(1)
    } else {
        1
    };
    let mut e0 = 0;
    while e0 < e {
        let ne = entries.min(e - e0);
        let mut a0 = 0;
        while a0 < a {
            let na = ea.min(a - a0);
            let mut b0 = 0;
            while b0 < b {
                let nb = eb.min(b - b0);
                let entry = e0 * a * b;
                let last = (e0 + ne - 1) * a * b;
                let (sb, src_off) = window(
                    ctx,
                    src,
                    entry + a0 * b + b0,
                    last + (a0 + na - 1) * b + b0 + nb,
                )?;
                let (db, dst_off) = window(
                    ctx,
                    dst,
                    entry + b0 * a + a0,
                    last + (b0 + nb - 1) * a + a0 + na,
                )?;
                let total = if vec4 {
                    ne * (na / 4) * (nb / 4)
                } else {
                    ne * na * nb
                };
                let mut params = SwapAxesParams {
                    a: a as u32,
                    b: b as u32,
                    e0: e0 as u32,
                    ne: ne as u32,
                    a0: a0 as u32,
                    na: na as u32,
                    b0: b0 as u32,
                    nb: nb as u32,
                    src_off,
                    dst_off,
                    total: total as u32,
                    ..Default::default()
                };
                let set = |p: &mut SwapAxesParams, base| p.base = base;
                let binds = [sb, db];
                let spec = SwapAxesSpec::default();
                if vec4 {
                    launch_linear::<k::SwapAxes4>(
                        ctx,
                        enc,
                        &spec,
                        &mut params,
                        set,
                        &binds,
                        total as u64,
                    )?;
                } else {
                    launch_linear::<k::SwapAxes>(
                        ctx,
                        enc,
                        &spec,
                        &mut params,
                        set,
                        &binds,
                        total as u64,
                    )?;
                }
                b0 += nb;
            }
            a0 += na;
        }
        e0 += ne;
    }
    Ok(())
}

/// Records the conversion of tensor `src` into `dst` (same shape and element type, the
/// other memory format), for [`Tensor::to_format`].
pub(crate) fn convert_tensor(
    ctx: &Context,
    enc: &mut wgpu::CommandEncoder,
    src: &Tensor,
    dst: &Tensor,
    shape: [usize; 4],
) -> Result<()> {
    match src.dtype() {
        DType::F32 => swap(ctx, enc, src.raw(), dst.raw(), shape, src.format()),
        DType::F16 => {
            let n = src.numel();
            let s = crate::gpu::half::unpack_scratch(ctx, enc, src.raw(), n)?;
            let t = ScratchBuffer::new(ctx, enc, DType::F32.storage_bytes(n), "wgconv format")?;
            swap(ctx, enc, &s.buffer, &t.buffer, shape, src.format())?;
            crate::gpu::half::pack(ctx, enc, &t.buffer, dst.raw(), n)
        }
    }
}
