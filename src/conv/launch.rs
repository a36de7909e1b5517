//! Launch pieces several convolution algorithms share: the buffers of a call, the shape
//! fields of the kernel parameter structs, the rule that tensors must fit one storage
//! binding, and the im2col kernel.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::context::Context;
use crate::conv::table::Reason;
use crate::epilogue::Epilogue;
use crate::error::Result;
use crate::gpu::memory::ContentKey;
use crate::gpu::{i32_of, u32_of};
use crate::kernels::im2col::{Im2colParams, Im2colSpec};
use crate::kernels::shared::ConvShape;
use crate::params::{numel, Conv2dProblem};
use crate::tensor::Tensor;

/// Buffers of one forward convolution call (cheap clones of the caller's buffers).
#[derive(Clone)]
pub(crate) struct ConvBuffers {
    pub x: wgpu::Buffer,
    pub w: wgpu::Buffer,
    pub b: Option<wgpu::Buffer>,
    pub y: wgpu::Buffer,
    /// Identity and version of the weights when the caller's weight tensor may be cached
    /// (see `wcache`); `None` packs every call.
    pub w_key: Option<ContentKey>,
    /// The caller's weight tensor when `w` is its contiguous f32 copy (f16 or channels-last
    /// weights), filled by commands of the call's encoder: a weight pack recorded into a
    /// submission of its own (the packed-weight cache) converts it there instead of reading
    /// `w`.
    pub w_src: Option<crate::tensor::Tensor>,
    /// The epilogue a kernel may fuse into its store (`None`: store `conv + b`).
    pub epilogue: Option<FusedEpilogue>,
    /// `x` (and `y`) are stored channels-last (NHWC): only for the entries that read (write)
    /// them in place (see `forward::channels_last_native`); every other path gets contiguous
    /// views.
    pub x_cl: bool,
    /// See `x_cl`.
    pub y_cl: bool,
    /// `x` is the caller's f16 tensor (packed words), not an f32 view: only for the entries
    /// that read f16 themselves (see `band::forward_reads_f16`).
    pub x_f16: bool,
    /// `y` is the caller's f16 tensor, stored by the kernel itself (see `x_f16`).
    pub y_f16: bool,
    /// Element pitches `[image, channel, row, column]` of the output when it is not the
    /// problem's own contiguous y: the implicit GEMM's outputs on every sh-th row and sw-th
    /// column of a bigger image (the input gradient of strided 1x1 layers written in place).
    /// Only that entry reads it; `None` everywhere else.
    pub y_pitch: Option<[usize; 4]>,
}

/// An epilogue offered to the forward kernels (`crate::conv::epilogue`): a launcher whose
/// kernel applies it in its store calls [`FusedEpilogue::mark_applied`]; when none did (other
/// algorithms, bands, windows), the caller runs the elementwise pass. Only whole problems
/// carry it (bands strip it), so `r` has `y`'s layout and a kernel reads `r` at `y`'s index.
#[derive(Clone)]
pub(crate) struct FusedEpilogue {
    /// The epilogue.
    pub ep: Epilogue,
    /// The residual (given exactly when `ep` has one).
    pub r: Option<wgpu::Buffer>,
    /// Set by the launcher that applied it.
    pub applied: Arc<AtomicBool>,
}

impl FusedEpilogue {
    /// Records that the kernels applied the epilogue.
    pub(crate) fn mark_applied(&self) {
        self.applied.store(true, Ordering::Relaxed);
    }
}

impl ConvBuffers {
    /// `(ACT, RES)` override values of the fused kernels (0, 0 without epilogue).
    pub(crate) fn ep_codes(&self) -> (u32, u32) {
        self.epilogue
            .as_ref()
            .map_or((0, 0), |e| (e.ep.activation.code(), e.ep.residual.code()))
    }

    /// `(alpha, lo, hi)` parameter fields of the fused kernels.
    pub(crate) fn ep_constants(&self) -> (f32, f32, f32) {
        self.epilogue
            .as_ref()
            .map_or((0.0, 0.0, 0.0), |e| e.ep.activation.constants())
    }

    /// The buffer bound as the residual: the residual, else `dummy` (never read).
    pub(crate) fn r_or<'a>(&'a self, dummy: &'a wgpu::Buffer) -> &'a wgpu::Buffer {
        self.epilogue
            .as_ref()
            .and_then(|e| e.r.as_ref())
            .unwrap_or(dummy)
    }

    /// Marks the epilogue applied (when there is one).
    pub(crate) fn mark_epilogue_applied(&self) {
        if let Some(e) = &self.epilogue {
            e.mark_applied();
        }
    }
}

impl ConvBuffers {
    /// Buffers without a cacheable weight.
    pub(crate) fn new(
        x: &wgpu::Buffer,
        w: &wgpu::Buffer,
        b: Option<&wgpu::Buffer>,
        y: &wgpu::Buffer,
    ) -> Self {
        ConvBuffers {
            x: x.clone(),
            w: w.clone(),
            b: b.cloned(),
            y: y.clone(),
            w_key: None,
            w_src: None,
            epilogue: None,
            x_cl: false,
            y_cl: false,
            x_f16: false,
            y_f16: false,
            y_pitch: None,
        }
    }
}

/// Do the tensors of `p` (input, weight, output) each fit one storage binding? Every
/// algorithm but the direct one needs it; the direct kernels split larger tensors into
/// windows.
pub(crate) fn fit_one_binding(ctx: &Context, p: &Conv2dProblem) -> Result<(), Reason> {
    let max = ctx.limits().max_storage_buffer_binding_size;
    let largest = [p.x_shape(), p.w_shape(), p.y_shape()]
        .iter()
        .map(|s| numel(s) as u64 * 4)
        .max()
        .unwrap_or(0);
    if largest > max {
        return Err(format!(
            "a tensor of {largest} bytes exceeds one storage binding ({max} bytes); \
             only the direct algorithm splits tensors into windows"
        )
        .into());
    }
    Ok(())
}

/// The shape fields of problem `p` for the kernels that embed [`ConvShape`], each checked to
/// fit 32-bit indexing.
pub(crate) fn conv_shape(p: &Conv2dProblem) -> Result<ConvShape> {
    Ok(ConvShape {
        n: u32_of(p.n, "images")?,
        c: u32_of(p.c, "channels")?,
        h: u32_of(p.h, "height")?,
        w: u32_of(p.w, "width")?,
        k: u32_of(p.k, "output channels")?,
        groups: u32_of(p.groups, "groups")?,
        cg: u32_of(p.c_per_group(), "channels per group")?,
        kg: u32_of(p.k_per_group(), "output channels per group")?,
        r: u32_of(p.r, "kernel height")?,
        s: u32_of(p.s, "kernel width")?,
        oh: u32_of(p.oh, "output height")?,
        ow: u32_of(p.ow, "output width")?,
        sh: u32_of(p.stride[0], "stride")?,
        sw: u32_of(p.stride[1], "stride")?,
        dh: u32_of(p.dilation[0], "dilation")?,
        dw: u32_of(p.dilation[1], "dilation")?,
        pad_top: i32_of(p.pad[0], "padding")?,
        pad_left: i32_of(p.pad[2], "padding")?,
    })
}

/// The parameters of `im2col` for problem `p`; the launch fields (`n`, offsets, pixel range,
/// `total`, `ldq`) are set per launch.
pub(crate) fn im2col_params(p: &Conv2dProblem) -> Result<Im2colParams> {
    Ok(Im2colParams {
        shape: conv_shape(p)?,
        ..Default::default()
    })
}

/// The specialisation of `im2col` for `p` (`transposed`: the pixel-major column matrix of
/// the weight gradient).
pub(crate) fn im2col_spec(p: &Conv2dProblem, transposed: bool) -> Im2colSpec {
    Im2colSpec {
        PAD_MODE: p.mode.code(),
        FLIP: p.flip,
        TRANSPOSED: transposed,
        ..Default::default()
    }
}

thread_local! {
    static SCOPED_KEYS: RefCell<Vec<(wgpu::Buffer, ContentKey)>> = const { RefCell::new(Vec::new()) };
}

/// The caller's tensor as a key of the caches of derived data while a call records (the
/// launchers see only buffers): the weights of an input gradient or transposed convolution
/// for the packed-weight cache, x of a weight gradient for the input-image cache
/// (`crate::icache`). Set when the tensor is bound as it is (f32, contiguous, trackable), so
/// that a launcher binding that very buffer may take its derived data from the cache
/// ([`scoped_key`]). Scopes nest; each removes its key when dropped.
pub(crate) struct KeyScope(bool);

impl KeyScope {
    /// `t` bound as `bound` (its own buffer, or an f32 copy: then no key).
    pub(crate) fn enter(t: &Tensor, bound: &wgpu::Buffer) -> Self {
        let key = (!crate::gpu::half::needs_copy(t) && t.raw() == bound)
            .then(|| t.content_key())
            .flatten();
        let pushed = key.is_some();
        if let Some(k) = key {
            SCOPED_KEYS.with(|c| c.borrow_mut().push((bound.clone(), k)));
        }
        KeyScope(pushed)
    }
}

impl Drop for KeyScope {
    fn drop(&mut self) {
        if self.0 {
            SCOPED_KEYS.with(|c| c.borrow_mut().pop());
        }
    }
}

/// The cache key of the tensor bound as `buf` inside a [`KeyScope`] of that buffer.
pub(crate) fn scoped_key(buf: &wgpu::Buffer) -> Option<ContentKey> {
    SCOPED_KEYS.with(|c| {
        c.borrow()
            .iter()
            .rev()
            .find(|(b, _)| b == buf)
            .map(|(_, k)| k.clone())
    })
}
