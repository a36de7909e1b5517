//! Convolution parameters (PyTorch semantics), validation, and the resolved
//! problem shared by the GPU kernels and the CPU reference.
//!
//! Parameters are validated once into a [`Conv2dProblem`]: every later stage
//! (kernel launchers, the CPU reference, tests) consumes that one struct, so
//! the GPU and the reference can never disagree on shapes, padding or modes.

use crate::error::{Error, Result};

/// A 4-D shape, `[N, C, H, W]` for activations or `[K, C/groups, R, S]` for weights.
pub type Shape4 = [usize; 4];

/// How the input is extended beyond its borders (PyTorch's `padding_mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PaddingMode {
    /// Zeros outside the input.
    #[default]
    Zeros,
    /// Mirror without repeating the edge (`[a b c] -> b | a b c | b`); each pad must be
    /// smaller than the input size along its dimension.
    Reflect,
    /// Repeat the edge value (`[a b c] -> a a | a b c | c c`); any pad.
    Replicate,
    /// Wrap around (`[a b c] -> c | a b c | a`); each pad must be at most the input size.
    Circular,
}

impl PaddingMode {
    /// The PyTorch name (`zeros`, `reflect`, `replicate`, `circular`).
    pub fn name(self) -> &'static str {
        match self {
            PaddingMode::Zeros => "zeros",
            PaddingMode::Reflect => "reflect",
            PaddingMode::Replicate => "replicate",
            PaddingMode::Circular => "circular",
        }
    }

    /// Parses a PyTorch padding-mode name.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "zeros" => Ok(PaddingMode::Zeros),
            "reflect" => Ok(PaddingMode::Reflect),
            "replicate" => Ok(PaddingMode::Replicate),
            "circular" => Ok(PaddingMode::Circular),
            other => Err(Error::invalid_param(
                "padding_mode",
                other,
                "expected zeros, reflect, replicate or circular",
            )),
        }
    }

    /// Index used by the WGSL kernels (`override padding_mode`).
    pub(crate) fn code(self) -> u32 {
        match self {
            PaddingMode::Zeros => 0,
            PaddingMode::Reflect => 1,
            PaddingMode::Replicate => 2,
            PaddingMode::Circular => 3,
        }
    }

    /// Maps a coordinate of the padded input (`i` may be negative or `>= size`) to the
    /// input coordinate it reads, or `None` for a zero. `size >= 1`; the pad limits of the
    /// mode (reflect: pad < size, circular: pad <= size) are assumed validated.
    pub fn source_index(self, i: isize, size: usize) -> Option<usize> {
        let n = size as isize;
        if (0..n).contains(&i) {
            return Some(i as usize);
        }
        match self {
            PaddingMode::Zeros => None,
            PaddingMode::Reflect => {
                // One reflection suffices because pad < size.
                let j = if i < 0 { -i } else { 2 * (n - 1) - i };
                (0..n).contains(&j).then_some(j as usize)
            }
            PaddingMode::Replicate => Some(i.clamp(0, n - 1) as usize),
            PaddingMode::Circular => Some(i.rem_euclid(n) as usize),
        }
    }
}

/// Spatial padding of a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Padding {
    /// `[ph, pw]`: `ph` rows on top and bottom, `pw` columns left and right.
    Symmetric([usize; 2]),
    /// `[top, bottom, left, right]`.
    PerSide([usize; 4]),
    /// PyTorch's `padding="same"` (stride 1 only): output size equals input size; the total
    /// `d*(k-1)` is split with the smaller half before (top/left).
    Same,
    /// PyTorch's `padding="valid"`: no padding.
    Valid,
}

impl Default for Padding {
    fn default() -> Self {
        Padding::Symmetric([0, 0])
    }
}

/// Parameters of a 2-D convolution, with PyTorch's meaning and defaults.
///
/// ```
/// use wgconv::{Conv2dParams, Padding, PaddingMode};
/// let p = Conv2dParams::default()
///     .with_stride([2, 2])
///     .with_padding(Padding::Symmetric([3, 3]))
///     .with_padding_mode(PaddingMode::Reflect);
/// // x: [1, 3, 224, 224], w: [64, 3, 7, 7]
/// let out = p.output_shape([1, 3, 224, 224], [64, 3, 7, 7]).unwrap();
/// assert_eq!(out, [1, 64, 112, 112]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv2dParams {
    /// `[sh, sw]`, each >= 1.
    pub stride: [usize; 2],
    /// Padding amount (see [`Padding`]).
    pub padding: Padding,
    /// `[dh, dw]`, each >= 1.
    pub dilation: [usize; 2],
    /// Number of groups; must divide both input and output channels.
    pub groups: usize,
    /// How padded positions are filled.
    pub padding_mode: PaddingMode,
    /// `true` for true convolution (kernel rotated 180°); `false` (default) for PyTorch's
    /// cross-correlation.
    pub flip: bool,
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Conv2dParams {
            stride: [1, 1],
            padding: Padding::default(),
            dilation: [1, 1],
            groups: 1,
            padding_mode: PaddingMode::Zeros,
            flip: false,
        }
    }
}

impl Conv2dParams {
    /// Sets the stride.
    pub fn with_stride(mut self, stride: [usize; 2]) -> Self {
        self.stride = stride;
        self
    }
    /// Sets the padding.
    pub fn with_padding(mut self, padding: Padding) -> Self {
        self.padding = padding;
        self
    }
    /// Sets the dilation.
    pub fn with_dilation(mut self, dilation: [usize; 2]) -> Self {
        self.dilation = dilation;
        self
    }
    /// Sets the number of groups.
    pub fn with_groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }
    /// Sets the padding mode.
    pub fn with_padding_mode(mut self, mode: PaddingMode) -> Self {
        self.padding_mode = mode;
        self
    }
    /// Selects true convolution (`true`) or cross-correlation (`false`).
    pub fn with_flip(mut self, flip: bool) -> Self {
        self.flip = flip;
        self
    }

    /// Validates the parameters against input and weight shapes (no bias) and returns the
    /// output shape `[N, K, Ho, Wo]`.
    pub fn output_shape(&self, x: Shape4, w: Shape4) -> Result<Shape4> {
        Ok(Conv2dProblem::new(x, w, None, self)?.y_shape())
    }

    /// Validates everything a conv2d call validates and returns the resolved problem.
    pub fn resolve(&self, x: Shape4, w: Shape4, bias_len: Option<usize>) -> Result<Conv2dProblem> {
        Conv2dProblem::new(x, w, bias_len, self)
    }

    /// Resolved padding `[top, bottom, left, right]` for a kernel `[r, s]`.
    pub fn resolved_padding(&self, kernel: [usize; 2]) -> Result<[usize; 4]> {
        check_positive("stride", self.stride)?;
        check_positive("dilation", self.dilation)?;
        match self.padding {
            Padding::Symmetric([ph, pw]) => Ok([ph, ph, pw, pw]),
            Padding::PerSide(p) => Ok(p),
            Padding::Valid => Ok([0; 4]),
            Padding::Same => {
                if self.stride != [1, 1] {
                    return Err(Error::invalid_param(
                        "padding",
                        format!("same with stride {:?}", self.stride),
                        "padding=\"same\" requires stride 1 (as in PyTorch)",
                    ));
                }
                let total = |d: usize, k: usize| -> Result<(usize, usize)> {
                    let t = d
                        .checked_mul(k.saturating_sub(1))
                        .ok_or_else(|| Error::invalid_param("dilation", d, "too large"))?;
                    Ok((t / 2, t - t / 2))
                };
                let (t, b) = total(self.dilation[0], kernel[0])?;
                let (l, r) = total(self.dilation[1], kernel[1])?;
                Ok([t, b, l, r])
            }
        }
    }
}

/// Output size along one dimension:
/// `floor((size + pad_lo + pad_hi - dilation*(k-1) - 1) / stride) + 1`, or `None` when
/// the dilated kernel does not fit in the padded input (or on overflow).
pub fn conv_output_size(
    size: usize,
    k: usize,
    stride: usize,
    dilation: usize,
    pad_lo: usize,
    pad_hi: usize,
) -> Option<usize> {
    if stride == 0 || dilation == 0 || k == 0 {
        return None;
    }
    let padded = size.checked_add(pad_lo)?.checked_add(pad_hi)?;
    let span = dilation.checked_mul(k - 1)?.checked_add(1)?;
    if span > padded {
        return None;
    }
    Some((padded - span) / stride + 1)
}

/// Output size of a transposed convolution along one dimension:
/// `(size-1)*stride - 2*pad + dilation*(k-1) + output_padding + 1`, `None` if < 1 or on overflow.
pub fn conv_transpose_output_size(
    size: usize,
    k: usize,
    stride: usize,
    dilation: usize,
    pad: usize,
    output_padding: usize,
) -> Option<usize> {
    if size == 0 || k == 0 || stride == 0 || dilation == 0 {
        return None;
    }
    let full = (size - 1)
        .checked_mul(stride)?
        .checked_add(dilation.checked_mul(k - 1)?)?
        .checked_add(output_padding)?
        .checked_add(1)?;
    let cut = pad.checked_mul(2)?;
    if cut >= full {
        return None;
    }
    Some(full - cut)
}

fn check_positive(name: &'static str, v: [usize; 2]) -> Result<()> {
    if v[0] == 0 || v[1] == 0 {
        return Err(Error::invalid_param(name, format!("{v:?}"), "must be >= 1"));
    }
    Ok(())
}

fn check_dims(what: &'static str, shape: Shape4) -> Result<()> {
    if shape.contains(&0) {
        return Err(Error::shape_mismatch(
            what,
            "every dimension >= 1",
            format!("{shape:?}"),
        ));
    }
    // Element count must be representable (and stays far below usize::MAX in bytes).
    shape
        .iter()
        .try_fold(4usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            Error::shape_mismatch(
                what,
                "a shape whose byte size fits in usize",
                format!("{shape:?}"),
            )
        })?;
    Ok(())
}

/// Number of elements of a shape.
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// A fully validated convolution: every shape and index parameter resolved.
///
/// The forward convolution computes, for every `n, k, oy, ox`:
/// `y[n,k,oy,ox] = b[k] + Σ_{c in group(k), r, s} w[k, c, r', s'] · xpad[n, c, oy*sh - top + r*dh, ox*sw - left + s*dw]`
/// where `(r', s') = (r, s)` or `(R-1-r, S-1-s)` when `flip` is set, and `xpad` reads the
/// input through [`PaddingMode::source_index`]. The transposed convolution and the
/// gradients are expressed on the same struct (the forward they differentiate), so the
/// CPU reference and every GPU kernel share one definition of the semantics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv2dProblem {
    /// Batch.
    pub(crate) n: usize,
    /// Input channels.
    pub(crate) c: usize,
    /// Input height.
    pub(crate) h: usize,
    /// Input width.
    pub(crate) w: usize,
    /// Output channels.
    pub(crate) k: usize,
    /// Kernel height.
    pub(crate) r: usize,
    /// Kernel width.
    pub(crate) s: usize,
    /// Groups.
    pub(crate) groups: usize,
    /// `[sh, sw]`.
    pub(crate) stride: [usize; 2],
    /// `[dh, dw]`.
    pub(crate) dilation: [usize; 2],
    /// `[top, bottom, left, right]`. Only the transposed convolution produces a negative
    /// bottom/right pad (rows of its output that receive no input).
    pub(crate) pad: [isize; 4],
    /// Padding mode.
    pub(crate) mode: PaddingMode,
    /// True convolution (kernel rotated 180°).
    pub(crate) flip: bool,
    /// A bias of length `k` is added.
    pub(crate) has_bias: bool,
    /// Output height.
    pub(crate) oh: usize,
    /// Output width.
    pub(crate) ow: usize,
}

impl Conv2dProblem {
    /// Validates a conv2d (every rule of PyTorch's `conv2d` plus the padding-mode rules)
    /// and resolves it.
    pub fn new(x: Shape4, w: Shape4, bias_len: Option<usize>, p: &Conv2dParams) -> Result<Self> {
        check_positive("stride", p.stride)?;
        check_positive("dilation", p.dilation)?;
        if p.groups == 0 {
            return Err(Error::invalid_param("groups", 0, "must be >= 1"));
        }
        check_dims("input", x)?;
        check_dims("weight", w)?;
        let [n, c, h, wd] = x;
        let [k, cg, r, s] = w;
        let g = p.groups;
        if c % g != 0 {
            return Err(Error::invalid_param(
                "groups",
                g,
                format!("input channels {c} are not divisible by groups"),
            ));
        }
        if k % g != 0 {
            return Err(Error::invalid_param(
                "groups",
                g,
                format!("output channels {k} are not divisible by groups"),
            ));
        }
        if cg != c / g {
            return Err(Error::shape_mismatch(
                "weight",
                format!(
                    "[{k}, {}, {r}, {s}] (dim 1 = input channels / groups = {c}/{g})",
                    c / g
                ),
                format!("{w:?}"),
            ));
        }
        if let Some(len) = bias_len {
            if len != k {
                return Err(Error::shape_mismatch(
                    "bias",
                    format!("[{k}]"),
                    format!("[{len}]"),
                ));
            }
        }
        let pad = p.resolved_padding([r, s])?;
        let sizes = [h, h, wd, wd];
        match p.padding_mode {
            PaddingMode::Zeros | PaddingMode::Replicate => {}
            PaddingMode::Reflect => {
                for (i, (&pv, &sz)) in pad.iter().zip(&sizes).enumerate() {
                    if pv >= sz && pv > 0 {
                        return Err(Error::invalid_param(
                            "padding",
                            format!("{pad:?}"),
                            format!("reflect padding {pv} on the {} side must be smaller than the input size {sz}", SIDES[i]),
                        ));
                    }
                }
            }
            PaddingMode::Circular => {
                for (i, (&pv, &sz)) in pad.iter().zip(&sizes).enumerate() {
                    if pv > sz {
                        return Err(Error::invalid_param(
                            "padding",
                            format!("{pad:?}"),
                            format!("circular padding {pv} on the {} side must not exceed the input size {sz}", SIDES[i]),
                        ));
                    }
                }
            }
        }
        let oh = conv_output_size(h, r, p.stride[0], p.dilation[0], pad[0], pad[1]);
        let ow = conv_output_size(wd, s, p.stride[1], p.dilation[1], pad[2], pad[3]);
        let (oh, ow) = match (oh, ow) {
            (Some(a), Some(b)) => (a, b),
            _ => {
                return Err(Error::invalid_param(
                    "kernel",
                    format!("{r}x{s} dilated {:?}", p.dilation),
                    format!(
                        "the dilated kernel ({}x{}) is larger than the padded input ({}x{})",
                        p.dilation[0]
                            .saturating_mul(r.saturating_sub(1))
                            .saturating_add(1),
                        p.dilation[1]
                            .saturating_mul(s.saturating_sub(1))
                            .saturating_add(1),
                        h.saturating_add(pad[0]).saturating_add(pad[1]),
                        wd.saturating_add(pad[2]).saturating_add(pad[3]),
                    ),
                ))
            }
        };
        check_dims("output", [n, k, oh, ow])?;
        let to_isize = |v: usize| -> Result<isize> {
            isize::try_from(v).map_err(|_| Error::invalid_param("padding", v, "too large"))
        };
        Ok(Conv2dProblem {
            n,
            c,
            h,
            w: wd,
            k,
            r,
            s,
            groups: g,
            stride: p.stride,
            dilation: p.dilation,
            pad: [
                to_isize(pad[0])?,
                to_isize(pad[1])?,
                to_isize(pad[2])?,
                to_isize(pad[3])?,
            ],
            mode: p.padding_mode,
            flip: p.flip,
            has_bias: bias_len.is_some(),
            oh,
            ow,
        })
    }

    /// Batch.
    pub fn n(&self) -> usize {
        self.n
    }
    /// Input channels.
    pub fn c(&self) -> usize {
        self.c
    }
    /// Input height.
    pub fn h(&self) -> usize {
        self.h
    }
    /// Input width.
    pub fn w(&self) -> usize {
        self.w
    }
    /// Output channels.
    pub fn k(&self) -> usize {
        self.k
    }
    /// Kernel height.
    pub fn r(&self) -> usize {
        self.r
    }
    /// Kernel width.
    pub fn s(&self) -> usize {
        self.s
    }
    /// Groups.
    pub fn groups(&self) -> usize {
        self.groups
    }
    /// `[sh, sw]`.
    pub fn stride(&self) -> [usize; 2] {
        self.stride
    }
    /// `[dh, dw]`.
    pub fn dilation(&self) -> [usize; 2] {
        self.dilation
    }
    /// `[top, bottom, left, right]`; only the transposed convolution's problem has a negative bottom/right pad.
    pub fn pad(&self) -> [isize; 4] {
        self.pad
    }
    /// Padding mode.
    pub fn mode(&self) -> PaddingMode {
        self.mode
    }
    /// True convolution (kernel rotated 180°)?
    pub fn flip(&self) -> bool {
        self.flip
    }
    /// Is a bias of length `k` added?
    pub fn has_bias(&self) -> bool {
        self.has_bias
    }
    /// Output height.
    pub fn oh(&self) -> usize {
        self.oh
    }
    /// Output width.
    pub fn ow(&self) -> usize {
        self.ow
    }
    /// Input channels per group.
    pub fn c_per_group(&self) -> usize {
        self.c / self.groups
    }
    /// Output channels per group.
    pub fn k_per_group(&self) -> usize {
        self.k / self.groups
    }
    /// `[N, C, H, W]`.
    pub fn x_shape(&self) -> Shape4 {
        [self.n, self.c, self.h, self.w]
    }
    /// `[K, C/groups, R, S]`.
    pub fn w_shape(&self) -> Shape4 {
        [self.k, self.c_per_group(), self.r, self.s]
    }
    /// `[N, K, Ho, Wo]`.
    pub fn y_shape(&self) -> Shape4 {
        [self.n, self.k, self.oh, self.ow]
    }
    /// Reduction length of one output: `C/groups * R * S`.
    pub fn reduction_len(&self) -> usize {
        self.c_per_group() * self.r * self.s
    }
    /// Multiply-adds × 2 of the forward (`2·N·K·(C/g)·R·S·Ho·Wo`).
    pub fn flops(&self) -> f64 {
        2.0 * (self.n * self.k * self.oh * self.ow) as f64 * self.reduction_len() as f64
    }
    /// Is this a depthwise convolution (`groups == C`, any channel multiplier)?
    pub fn is_depthwise(&self) -> bool {
        self.groups == self.c && self.groups > 1
    }
    /// Padded-input row read by output row `oy` and kernel row `r` (before padding-mode mapping).
    pub fn in_row(&self, oy: usize, r: usize) -> isize {
        (oy * self.stride[0] + r * self.dilation[0]) as isize - self.pad[0]
    }
    /// Padded-input column read by output column `ox` and kernel column `s`.
    pub fn in_col(&self, ox: usize, s: usize) -> isize {
        (ox * self.stride[1] + s * self.dilation[1]) as isize - self.pad[2]
    }
    /// For a stride-1, zero-padded convolution, the forward convolution whose output is this
    /// problem's input gradient: `dy` as input, channels swapped (weights `[C, K/groups, R, S]`),
    /// kernel rotated by 180° (`flip` toggled) and complementary padding `(R-1)*d - pad`
    /// (possibly negative: those rows are cropped). `None` for other strides or modes.
    pub(crate) fn input_gradient_as_forward(&self, has_bias: bool) -> Option<Conv2dProblem> {
        if self.stride != [1, 1] || self.mode != PaddingMode::Zeros {
            return None;
        }
        let span = |k: usize, d: usize| ((k - 1) * d) as isize;
        let (sr, ss) = (
            span(self.r, self.dilation[0]),
            span(self.s, self.dilation[1]),
        );
        Some(Conv2dProblem {
            c: self.k,
            h: self.oh,
            w: self.ow,
            k: self.c,
            pad: [
                sr - self.pad[0],
                sr - self.pad[1],
                ss - self.pad[2],
                ss - self.pad[3],
            ],
            flip: !self.flip,
            has_bias,
            oh: self.h,
            ow: self.w,
            ..*self
        })
    }

    /// Weight index `(r', s')` used at kernel tap `(r, s)` (rotated when `flip`).
    pub fn tap(&self, r: usize, s: usize) -> (usize, usize) {
        if self.flip {
            (self.r - 1 - r, self.s - 1 - s)
        } else {
            (r, s)
        }
    }
}

const SIDES: [&str; 4] = ["top", "bottom", "left", "right"];

/// Parameters of a 2-D transposed convolution, with PyTorch's `ConvTranspose2d` meaning and
/// defaults (stride 1, padding 0, output padding 0, dilation 1, groups 1; zero padding only).
///
/// Shapes: input `x` `[N, Cin, H, W]`, weight `[Cin, Cout/groups, R, S]`, bias `[Cout]`,
/// output `[N, Cout, Ho, Wo]` with
/// `Ho = (H-1)*sh - 2*ph + dh*(R-1) + oph + 1` (and likewise `Wo`).
///
/// ```
/// use wgconv::ConvTranspose2dParams;
/// let p = ConvTranspose2dParams::default()
///     .with_stride([2, 2])
///     .with_padding([1, 1])
///     .with_output_padding([1, 1]);
/// // x: [1, 16, 5, 7], w: [16, 8, 3, 3]
/// assert_eq!(p.output_shape([1, 16, 5, 7], [16, 8, 3, 3]).unwrap(), [1, 8, 10, 14]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvTranspose2dParams {
    /// `[sh, sw]`, each >= 1.
    pub stride: [usize; 2],
    /// `[ph, pw]` (PyTorch's meaning): the full transposed output is cropped by `ph` rows at
    /// the top and bottom and `pw` columns left and right.
    pub padding: [usize; 2],
    /// `[oph, opw]`: extra rows/columns added to the bottom/right of the output; each must be
    /// smaller than the stride or smaller than the dilation along its dimension.
    pub output_padding: [usize; 2],
    /// `[dh, dw]`, each >= 1.
    pub dilation: [usize; 2],
    /// Number of groups; must divide the input channels.
    pub groups: usize,
}

impl Default for ConvTranspose2dParams {
    fn default() -> Self {
        ConvTranspose2dParams {
            stride: [1, 1],
            padding: [0, 0],
            output_padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
        }
    }
}

impl ConvTranspose2dParams {
    /// Sets the stride.
    pub fn with_stride(mut self, stride: [usize; 2]) -> Self {
        self.stride = stride;
        self
    }
    /// Sets the padding `[ph, pw]`.
    pub fn with_padding(mut self, padding: [usize; 2]) -> Self {
        self.padding = padding;
        self
    }
    /// Sets the output padding `[oph, opw]`.
    pub fn with_output_padding(mut self, output_padding: [usize; 2]) -> Self {
        self.output_padding = output_padding;
        self
    }
    /// Sets the dilation.
    pub fn with_dilation(mut self, dilation: [usize; 2]) -> Self {
        self.dilation = dilation;
        self
    }
    /// Sets the number of groups.
    pub fn with_groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }

    /// Validates the parameters against input `[N, Cin, H, W]` and weight
    /// `[Cin, Cout/groups, R, S]` shapes (no bias) and returns the output shape
    /// `[N, Cout, Ho, Wo]`.
    ///
    /// # Errors
    /// As [`ConvTranspose2dParams::resolve`].
    pub fn output_shape(&self, x: Shape4, w: Shape4) -> Result<Shape4> {
        Ok(self.resolve(x, w, None)?.y_shape())
    }

    /// Validates everything PyTorch's `conv_transpose2d` validates and returns the resolved
    /// problem, expressed as the forward convolution it is the input-gradient of.
    ///
    /// `x` is `[N, Cin, H, W]`, `w` `[Cin, Cout/groups, R, S]`, `bias_len` the length of the
    /// bias (`Cout`) if there is one.
    ///
    /// # Errors
    /// [`InvalidParam`](crate::ErrorKind::InvalidParam) named `stride` / `dilation` (a zero),
    /// `groups` (zero, or not dividing `Cin`), `output_padding` (not smaller than the stride
    /// nor the dilation), `padding` (output size < 1); [`ShapeMismatch`](crate::ErrorKind::ShapeMismatch)
    /// named `input` / `weight` / `output` (a zero dimension, or a size overflowing `usize`),
    /// `weight` (`w[0] != Cin`), `bias` (length != `Cout`).
    pub fn resolve(
        &self,
        x: Shape4,
        w: Shape4,
        bias_len: Option<usize>,
    ) -> Result<TransposedProblem> {
        check_positive("stride", self.stride)?;
        check_positive("dilation", self.dilation)?;
        if self.groups == 0 {
            return Err(Error::invalid_param("groups", 0, "must be >= 1"));
        }
        check_dims("input", x)?;
        check_dims("weight", w)?;
        let [n, cin, h, wd] = x;
        let [wk, cog, r, s] = w;
        let g = self.groups;
        if cin % g != 0 {
            return Err(Error::invalid_param(
                "groups",
                g,
                format!("input channels {cin} are not divisible by groups"),
            ));
        }
        if wk != cin {
            return Err(Error::shape_mismatch(
                "weight",
                format!("[{cin}, Cout/groups, R, S] (dim 0 = input channels = {cin})"),
                format!("{w:?}"),
            ));
        }
        let cout = cog.checked_mul(g).ok_or_else(|| {
            Error::shape_mismatch(
                "output",
                "a channel count (groups * weight dim 1) that fits in usize",
                format!("{g} * {cog}"),
            )
        })?;
        if let Some(len) = bias_len {
            if len != cout {
                return Err(Error::shape_mismatch(
                    "bias",
                    format!("[{cout}] (output channels = groups * weight dim 1 = {g}*{cog})"),
                    format!("[{len}]"),
                ));
            }
        }
        for (d, dim) in DIMS.iter().enumerate() {
            let (op, st, dl) = (self.output_padding[d], self.stride[d], self.dilation[d]);
            if op >= st && op >= dl {
                return Err(Error::invalid_param(
                    "output_padding",
                    format!("{:?}", self.output_padding),
                    format!(
                        "output padding {op} along {dim} must be smaller than either the stride \
                         {st} or the dilation {dl}"
                    ),
                ));
            }
        }
        let in_sizes = [h, wd];
        let kernel = [r, s];
        let mut out = [0usize; 2];
        for d in 0..2 {
            let (size, k) = (in_sizes[d], kernel[d]);
            let (st, dl, pd, op) = (
                self.stride[d],
                self.dilation[d],
                self.padding[d],
                self.output_padding[d],
            );
            out[d] = match conv_transpose_output_size(size, k, st, dl, pd, op) {
                Some(o) => o,
                None => {
                    // Distinguish "< 1" (a padding error) from an overflow of the size itself.
                    let exact = (|| {
                        let full = ((size as i128 - 1).checked_mul(st as i128))?
                            .checked_add((dl as i128).checked_mul(k as i128 - 1)?)?
                            .checked_add(op as i128)?
                            .checked_add(1)?;
                        full.checked_sub((pd as i128).checked_mul(2)?)
                    })();
                    return Err(match exact {
                        Some(v) if v < 1 => Error::invalid_param(
                            "padding",
                            format!("{:?}", self.padding),
                            format!(
                                "the output {} (in-1)*stride - 2*padding + dilation*(kernel-1) \
                                 + output_padding + 1 = ({size}-1)*{st} - 2*{pd} + {dl}*({k}-1) \
                                 + {op} + 1 = {v} must be >= 1",
                                DIMS[d]
                            ),
                        ),
                        _ => Error::shape_mismatch(
                            "output",
                            "an output size that fits in usize",
                            format!("{} overflowing usize", DIMS[d]),
                        ),
                    });
                }
            };
        }
        let [ho, wo] = out;
        check_dims("output", [n, cout, ho, wo])?;
        let to_isize = |v: usize| -> Result<isize> {
            isize::try_from(v).map_err(|_| Error::invalid_param("padding", v, "too large"))
        };
        let to_isize_op = |v: usize| -> Result<isize> {
            isize::try_from(v).map_err(|_| Error::invalid_param("output_padding", v, "too large"))
        };
        let (ph, pw) = (to_isize(self.padding[0])?, to_isize(self.padding[1])?);
        let (oph, opw) = (
            to_isize_op(self.output_padding[0])?,
            to_isize_op(self.output_padding[1])?,
        );
        // ph, oph >= 0, so the differences cannot overflow.
        let conv = Conv2dProblem {
            n,
            c: cout,
            h: ho,
            w: wo,
            k: cin,
            r,
            s,
            groups: g,
            stride: self.stride,
            dilation: self.dilation,
            pad: [ph, ph - oph, pw, pw - opw],
            mode: PaddingMode::Zeros,
            flip: false,
            has_bias: false,
            oh: h,
            ow: wd,
        };
        Ok(TransposedProblem {
            conv,
            has_bias: bias_len.is_some(),
        })
    }
}

const DIMS: [&str; 2] = ["height", "width"];

/// A fully validated transposed convolution, expressed through the forward convolution whose
/// input-gradient it is.
///
/// `conv` is that forward problem: its input is the transposed convolution's output
/// (`conv.n = N`, `conv.c = Cout`, `conv.h = Ho`, `conv.w = Wo`), its output is the transposed
/// convolution's input (`conv.k = Cin`, `conv.oh = H`, `conv.ow = W`), and its weight
/// `[Cin, Cout/groups, R, S]` is the transposed convolution's weight unchanged. Padding is
/// `[ph, ph - oph, pw, pw - opw]` with mode zeros and no flip; the bottom/right pad is negative
/// when `output_padding > padding` (those output rows/columns receive no input, only bias).
/// Then, for every element,
/// `y[n, co, oy, ox] = b[co] + Σ x[n, ci, iy, ix] · w[ci, co % (Cout/g), r, s]` over
/// `oy = iy*sh - ph + r*dh`, `ox = ix*sw - pw + s*dw`, `ci` in the group of `co`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TransposedProblem {
    /// The forward convolution whose input-gradient this transposed convolution is
    /// (`has_bias` is always `false` there).
    pub(crate) conv: Conv2dProblem,
    /// A bias of length `Cout` is added.
    pub(crate) has_bias: bool,
}

impl TransposedProblem {
    /// The forward convolution whose input gradient this transposed convolution is
    /// (`has_bias` is always `false` there).
    pub fn conv(&self) -> Conv2dProblem {
        self.conv
    }
    /// Is a bias of length `Cout` added?
    pub fn has_bias(&self) -> bool {
        self.has_bias
    }
    /// Input shape `[N, Cin, H, W]` (= `conv.y_shape()`).
    pub fn x_shape(&self) -> Shape4 {
        self.conv.y_shape()
    }
    /// Weight shape `[Cin, Cout/groups, R, S]` (= `conv.w_shape()`).
    pub fn w_shape(&self) -> Shape4 {
        self.conv.w_shape()
    }
    /// Output shape `[N, Cout, Ho, Wo]` (= `conv.x_shape()`).
    pub fn y_shape(&self) -> Shape4 {
        self.conv.x_shape()
    }
    /// Multiply-adds × 2 (`2·N·Cin·(Cout/g)·R·S·H·W`, = `conv.flops()`).
    pub fn flops(&self) -> f64 {
        self.conv.flops()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> Conv2dParams {
        Conv2dParams::default()
    }

    #[test]
    fn output_size_formula() {
        assert_eq!(conv_output_size(224, 7, 2, 1, 3, 3), Some(112));
        assert_eq!(conv_output_size(5, 3, 1, 1, 0, 0), Some(3));
        assert_eq!(conv_output_size(5, 3, 2, 1, 1, 1), Some(3));
        assert_eq!(conv_output_size(6, 3, 2, 1, 0, 0), Some(2));
        assert_eq!(conv_output_size(7, 3, 1, 3, 0, 0), Some(1));
        assert_eq!(conv_output_size(6, 3, 1, 3, 0, 0), None);
        assert_eq!(conv_output_size(3, 5, 1, 1, 1, 1), Some(1));
        assert_eq!(conv_output_size(3, 5, 1, 1, 1, 0), None);
        assert_eq!(conv_output_size(usize::MAX, 3, 1, 1, 1, 1), None);
        assert_eq!(conv_output_size(10, 3, 0, 1, 0, 0), None);
        assert_eq!(conv_transpose_output_size(3, 3, 2, 1, 1, 1), Some(6));
        assert_eq!(conv_transpose_output_size(1, 1, 1, 1, 1, 0), None);
    }

    #[test]
    fn same_padding_splits_smaller_half_first() {
        let q = p().with_padding(Padding::Same);
        assert_eq!(q.resolved_padding([4, 3]).unwrap(), [1, 2, 1, 1]);
        let q = q.with_dilation([2, 3]);
        assert_eq!(q.resolved_padding([4, 2]).unwrap(), [3, 3, 1, 2]);
        let pr = Conv2dProblem::new([1, 1, 9, 8], [1, 1, 4, 2], None, &q).unwrap();
        assert_eq!((pr.oh, pr.ow), (9, 8));
    }

    fn kind_name(e: Error) -> (&'static str, String) {
        match e.kind() {
            crate::ErrorKind::InvalidParam { name, .. } => ("param", name.to_string()),
            crate::ErrorKind::ShapeMismatch { what, .. } => ("shape", what.to_string()),
            k => ("other", format!("{k:?}")),
        }
    }

    #[test]
    fn every_validation_rule() {
        let x = [1, 4, 8, 8];
        let w = [4, 4, 3, 3];
        let err = |x: Shape4, w: Shape4, b: Option<usize>, q: Conv2dParams| {
            kind_name(Conv2dProblem::new(x, w, b, &q).unwrap_err())
        };
        assert_eq!(
            err(x, w, None, p().with_stride([0, 1])),
            ("param", "stride".into())
        );
        assert_eq!(
            err(x, w, None, p().with_stride([1, 0])),
            ("param", "stride".into())
        );
        assert_eq!(
            err(x, w, None, p().with_dilation([0, 1])),
            ("param", "dilation".into())
        );
        assert_eq!(
            err(x, w, None, p().with_groups(0)),
            ("param", "groups".into())
        );
        assert_eq!(
            err(x, [4, 1, 3, 3], None, p().with_groups(3)),
            ("param", "groups".into())
        );
        assert_eq!(
            err([1, 4, 8, 8], [6, 2, 3, 3], None, p().with_groups(4)),
            ("param", "groups".into())
        );
        assert_eq!(err(x, [4, 2, 3, 3], None, p()), ("shape", "weight".into()));
        assert_eq!(err(x, w, Some(3), p()), ("shape", "bias".into()));
        assert_eq!(
            err(
                x,
                w,
                None,
                p().with_padding(Padding::Same).with_stride([2, 1])
            ),
            ("param", "padding".into())
        );
        let refl = p().with_padding_mode(PaddingMode::Reflect);
        assert_eq!(
            err(x, w, None, refl.with_padding(Padding::Symmetric([8, 0]))),
            ("param", "padding".into())
        );
        assert!(
            Conv2dProblem::new(x, w, None, &refl.with_padding(Padding::Symmetric([7, 7]))).is_ok()
        );
        let circ = p().with_padding_mode(PaddingMode::Circular);
        assert_eq!(
            err(
                x,
                w,
                None,
                circ.with_padding(Padding::PerSide([0, 9, 0, 0]))
            ),
            ("param", "padding".into())
        );
        assert!(
            Conv2dProblem::new(x, w, None, &circ.with_padding(Padding::Symmetric([8, 8]))).is_ok()
        );
        let repl = p().with_padding_mode(PaddingMode::Replicate);
        assert!(
            Conv2dProblem::new(x, w, None, &repl.with_padding(Padding::Symmetric([20, 20])))
                .is_ok()
        );
        assert_eq!(err(x, [4, 4, 9, 3], None, p()), ("param", "kernel".into()));
        assert_eq!(
            err(x, w, None, p().with_dilation([4, 1])),
            ("param", "kernel".into())
        );
        assert!(Conv2dProblem::new(
            x,
            [4, 4, 9, 3],
            None,
            &p().with_padding(Padding::PerSide([1, 0, 0, 0]))
        )
        .is_ok());
        assert_eq!(err([0, 4, 8, 8], w, None, p()), ("shape", "input".into()));
        assert_eq!(err(x, [4, 4, 0, 3], None, p()), ("shape", "weight".into()));
        assert_eq!(
            err(
                x,
                w,
                None,
                p().with_padding(Padding::Symmetric([usize::MAX, 0]))
            ),
            ("param", "kernel".into())
        );
        assert_eq!(
            err([usize::MAX, 4, 8, 8], w, None, p()),
            ("shape", "input".into())
        );
        // A huge stride is valid: one output row.
        let pr = Conv2dProblem::new(x, w, None, &p().with_stride([usize::MAX, 1])).unwrap();
        assert_eq!((pr.oh, pr.ow), (1, 6));
    }

    fn tkind(
        x: Shape4,
        w: Shape4,
        b: Option<usize>,
        q: ConvTranspose2dParams,
    ) -> (&'static str, String) {
        kind_name(q.resolve(x, w, b).unwrap_err())
    }

    #[test]
    fn transposed_problem_layout() {
        let q = ConvTranspose2dParams::default()
            .with_stride([2, 3])
            .with_padding([1, 2])
            .with_output_padding([1, 2])
            .with_dilation([1, 1])
            .with_groups(2);
        let tp = q.resolve([3, 4, 5, 7], [4, 3, 3, 4], Some(6)).unwrap();
        // Ho = 4*2 - 2 + 2 + 1 + 1 = 10, Wo = 6*3 - 4 + 3 + 2 + 1 = 20.
        assert_eq!(tp.y_shape(), [3, 6, 10, 20]);
        assert_eq!(tp.x_shape(), [3, 4, 5, 7]);
        assert_eq!(tp.w_shape(), [4, 3, 3, 4]);
        assert!(tp.has_bias);
        let c = tp.conv;
        assert_eq!((c.n, c.c, c.h, c.w, c.k, c.r, c.s), (3, 6, 10, 20, 4, 3, 4));
        assert_eq!((c.groups, c.stride, c.dilation), (2, [2, 3], [1, 1]));
        assert_eq!(c.pad, [1, 0, 2, 0]);
        assert_eq!(
            (c.mode, c.flip, c.has_bias, c.oh, c.ow),
            (PaddingMode::Zeros, false, false, 5, 7)
        );
        assert_eq!(tp.flops(), 2.0 * (3 * 4 * 3 * 3 * 4 * 5 * 7) as f64);
        assert_eq!(
            q.output_shape([3, 4, 5, 7], [4, 3, 3, 4]).unwrap(),
            [3, 6, 10, 20]
        );
        // output_padding > padding: negative bottom/right pad.
        let q = ConvTranspose2dParams::default()
            .with_stride([1, 3])
            .with_dilation([3, 1])
            .with_output_padding([2, 2]);
        let tp = q.resolve([1, 1, 4, 4], [1, 1, 2, 2], None).unwrap();
        assert_eq!(tp.conv.pad, [0, -2, 0, -2]);
        assert_eq!(tp.y_shape(), [1, 1, 4 + 3 + 2, 9 + 1 + 2 + 1]);
        assert!(!tp.has_bias);
    }

    #[test]
    fn transposed_forward_size_roundtrip() {
        // SplitMix64.
        let mut state = 0x5EED_u64;
        let mut next = |m: usize| -> usize {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) % m as u64) as usize
        };
        let mut valid = 0;
        for _ in 0..20_000 {
            let stride = [1 + next(5), 1 + next(5)];
            let dilation = [1 + next(4), 1 + next(4)];
            let output_padding = [next(5), next(5)];
            let padding = [next(6), next(6)];
            let g = 1 + next(3);
            let x = [1 + next(2), g * (1 + next(2)), 1 + next(9), 1 + next(9)];
            let w = [x[1], 1 + next(3), 1 + next(5), 1 + next(5)];
            let q = ConvTranspose2dParams {
                stride,
                padding,
                output_padding,
                dilation,
                groups: g,
            };
            let Ok(tp) = q.resolve(x, w, None) else {
                continue;
            };
            valid += 1;
            let c = tp.conv;
            let y = tp.y_shape();
            for d in 0..2 {
                let (size, k) = ([c.h, c.w][d], [c.r, c.s][d]);
                let (lo, hi) = (c.pad[2 * d] as i128, c.pad[2 * d + 1] as i128);
                let span = (c.dilation[d] * (k - 1) + 1) as i128;
                let num = size as i128 + lo + hi - span;
                assert!(num >= 0, "{q:?} {x:?} {w:?}");
                let out = num.div_euclid(c.stride[d] as i128) + 1;
                assert_eq!(out, x[2 + d] as i128, "{q:?} {x:?} {w:?}");
                // Exact fit: the last output row's window ends exactly at the bottom pad.
                assert_eq!(num % c.stride[d] as i128, 0);
                if hi >= 0 {
                    assert_eq!(
                        conv_output_size(
                            size,
                            k,
                            c.stride[d],
                            c.dilation[d],
                            lo as usize,
                            hi as usize
                        ),
                        Some(x[2 + d])
                    );
                }
                assert_eq!(
                    Some(y[2 + d]),
                    conv_transpose_output_size(
                        x[2 + d],
                        k,
                        stride[d],
                        dilation[d],
                        padding[d],
                        output_padding[d]
                    )
                );
            }
            assert_eq!((c.k, c.c, c.n), (x[1], w[1] * g, x[0]));
        }
        assert!(valid > 5_000, "{valid}");
    }

    #[test]
    fn transposed_validation_rules() {
        let t = ConvTranspose2dParams::default;
        let x = [1, 4, 5, 5];
        let w = [4, 2, 3, 3];
        assert!(t().resolve(x, w, Some(2)).is_ok());
        assert_eq!(
            tkind(x, w, None, t().with_stride([0, 1])),
            ("param", "stride".into())
        );
        assert_eq!(
            tkind(x, w, None, t().with_stride([1, 0])),
            ("param", "stride".into())
        );
        assert_eq!(
            tkind(x, w, None, t().with_dilation([1, 0])),
            ("param", "dilation".into())
        );
        assert_eq!(
            tkind(x, w, None, t().with_groups(0)),
            ("param", "groups".into())
        );
        assert_eq!(
            tkind(x, [4, 2, 3, 3], None, t().with_groups(3)),
            ("param", "groups".into())
        );
        assert_eq!(
            tkind(x, [3, 2, 3, 3], None, t()),
            ("shape", "weight".into())
        );
        assert_eq!(tkind(x, w, Some(4), t()), ("shape", "bias".into()));
        assert_eq!(
            tkind(x, w, Some(2), t().with_groups(2)),
            ("shape", "bias".into())
        );
        assert!(t().with_groups(2).resolve(x, w, Some(4)).is_ok());
        assert_eq!(tkind([0, 4, 5, 5], w, None, t()), ("shape", "input".into()));
        assert_eq!(
            tkind(x, [4, 0, 3, 3], None, t()),
            ("shape", "weight".into())
        );
        assert_eq!(
            tkind([usize::MAX, 4, 5, 5], w, None, t()),
            ("shape", "input".into())
        );
        // output_padding < stride or < dilation.
        let op = |o: [usize; 2]| t().with_output_padding(o);
        assert_eq!(
            tkind(x, w, None, op([1, 0])),
            ("param", "output_padding".into())
        );
        assert_eq!(
            tkind(x, w, None, op([0, 1])),
            ("param", "output_padding".into())
        );
        assert_eq!(
            tkind(x, w, None, op([2, 0]).with_stride([2, 2])),
            ("param", "output_padding".into())
        );
        assert!(op([1, 1]).with_stride([2, 2]).resolve(x, w, None).is_ok());
        assert!(op([2, 1]).with_dilation([3, 2]).resolve(x, w, None).is_ok());
        assert_eq!(
            tkind(x, w, None, op([0, 2]).with_dilation([2, 2])),
            ("param", "output_padding".into())
        );
        // Output size < 1: Ho = (5-1) - 2*4 + 2 + 1 = -1 / exactly 0.
        assert_eq!(
            tkind(x, w, None, t().with_padding([4, 0])),
            ("param", "padding".into())
        );
        assert_eq!(
            tkind([1, 4, 2, 4], w, None, t().with_padding([2, 0])),
            ("param", "padding".into())
        );
        assert_eq!(
            t().with_padding([1, 0])
                .output_shape([1, 4, 2, 4], w)
                .unwrap(),
            [1, 2, 2, 6]
        );
        assert_eq!(
            tkind([1, 4, 1, 1], [4, 2, 1, 1], None, t().with_padding([1, 1])),
            ("param", "padding".into())
        );
        assert_eq!(
            tkind(x, w, None, t().with_padding([usize::MAX, 0])),
            ("param", "padding".into())
        );
        // Huge values never panic.
        assert_eq!(
            tkind(x, w, None, t().with_stride([usize::MAX, 1])),
            ("shape", "output".into())
        );
        assert_eq!(
            tkind(x, [4, usize::MAX, 3, 3], None, t().with_groups(2)),
            ("shape", "weight".into())
        );
        assert_eq!(
            // The weight fits but the output (Cout = 4 * MAX/32, 5x5) does not.
            tkind(x, [4, usize::MAX / 32, 1, 1], None, t().with_groups(4)),
            ("shape", "output".into())
        );
        assert_eq!(
            tkind(
                x,
                w,
                None,
                t().with_stride([usize::MAX, 1])
                    .with_output_padding([usize::MAX - 1, 0])
            ),
            ("shape", "output".into())
        );
        let big = t()
            .with_stride([usize::MAX, 1])
            .with_padding([usize::MAX / 2, 0])
            .with_output_padding([usize::MAX - 1, 0]);
        let _ = big.resolve([1, 4, 1, 5], w, None);
        let _ = big.resolve([1, 4, 2, 5], w, None);
    }
}
