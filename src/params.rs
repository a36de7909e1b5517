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
    pub n: usize,
    /// Input channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub k: usize,
    /// Kernel height.
    pub r: usize,
    /// Kernel width.
    pub s: usize,
    /// Groups.
    pub groups: usize,
    /// `[sh, sw]`.
    pub stride: [usize; 2],
    /// `[dh, dw]`.
    pub dilation: [usize; 2],
    /// `[top, bottom, left, right]`. Only the transposed convolution produces a negative
    /// bottom/right pad (rows of its output that receive no input).
    pub pad: [isize; 4],
    /// Padding mode.
    pub mode: PaddingMode,
    /// True convolution (kernel rotated 180°).
    pub flip: bool,
    /// A bias of length `k` is added.
    pub has_bias: bool,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
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
}
