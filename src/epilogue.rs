//! Epilogues: what happens to `conv + bias` before it is stored (an activation, and a
//! residual tensor added before or after it), with PyTorch's definitions.
//!
//! `y = act(conv(x, w) + b + r)` ([`Residual::Before`]), `y = act(conv(x, w) + b) + r`
//! ([`Residual::After`]) or `y = act(conv(x, w) + b)` ([`Residual::None`]). The entry points
//! are [`Context::conv2d_fused`](crate::Context::conv2d_fused),
//! [`Context::conv_transpose2d_fused`](crate::Context::conv_transpose2d_fused),
//! [`Context::gemm_fused`](crate::Context::gemm_fused), their `encode_*` forms, the gradient
//! [`Context::conv2d_backward_fused`](crate::Context::conv2d_backward_fused), and the CPU
//! references in [`crate::cpu`].

use crate::error::{Error, Result};

/// An activation function, with PyTorch's definition (`torch.nn.functional`).
///
/// The constants (`alpha`, `lo`, `hi`) are applied as `f32` values on the GPU.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[non_exhaustive]
pub enum Activation {
    /// `z` (no activation).
    #[default]
    Identity,
    /// `max(z, 0)`; derivative 0 at 0 (PyTorch's).
    Relu,
    /// `z` for `z > 0`, else `alpha * z` (PyTorch's default `alpha` is 0.01, see
    /// [`Activation::leaky_relu`]).
    LeakyRelu {
        /// The negative slope.
        alpha: f32,
    },
    /// `min(max(z, lo), hi)` (PyTorch `hardtanh`; relu6 is `Clamp { lo: 0, hi: 6 }`, see
    /// [`Activation::relu6`]). Derivative 1 strictly inside `(lo, hi)`, else 0.
    Clamp {
        /// Lower bound.
        lo: f32,
        /// Upper bound (`>= lo`).
        hi: f32,
    },
    /// `1 / (1 + exp(-z))`.
    Sigmoid,
    /// `tanh(z)`.
    Tanh,
    /// `z * sigmoid(z)` (swish).
    Silu,
    /// `z/2 * (1 + erf(z / sqrt 2))` (PyTorch `gelu`, `approximate='none'`).
    Gelu,
    /// `z/2 * (1 + tanh(sqrt(2/pi) * (z + 0.044715 z^3)))` (PyTorch `gelu`,
    /// `approximate='tanh'`).
    GeluTanh,
    /// `z * relu6(z + 3) / 6`.
    Hardswish,
    /// `relu6(z + 3) / 6`.
    Hardsigmoid,
}

/// Where the residual tensor `r` (the output's shape) is added.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Residual {
    /// No residual: `y = act(conv + b)`.
    #[default]
    None,
    /// Before the activation: `y = act(conv + b + r)`.
    Before,
    /// After the activation: `y = act(conv + b) + r`.
    After,
}

/// An epilogue: an activation and where a residual is added. `Epilogue::default()` is the
/// identity (`y = conv + b`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Epilogue {
    /// The activation.
    pub activation: Activation,
    /// Where the residual is added (a call with a residual other than `None` needs the
    /// residual tensor, and one with `None` must not get one).
    pub residual: Residual,
}

impl Epilogue {
    /// The epilogue applying `activation`, without residual.
    pub fn new(activation: Activation) -> Self {
        Epilogue {
            activation,
            residual: Residual::None,
        }
    }

    /// Sets where the residual is added.
    pub fn with_residual(mut self, residual: Residual) -> Self {
        self.residual = residual;
        self
    }

    /// No activation and no residual (the plain `conv + b`).
    pub fn is_identity(&self) -> bool {
        self.activation == Activation::Identity && self.residual == Residual::None
    }

    /// Checks the activation's constants ([`Activation::validate`]).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidParam`](crate::ErrorKind::InvalidParam) for a non-finite `alpha`,
    /// `lo` or `hi`, or `lo > hi`.
    pub fn validate(&self) -> Result<()> {
        self.activation.validate()
    }

    /// Checks that a residual tensor is given exactly when [`Epilogue::residual`] asks for
    /// one (`has_residual`: whether the call got one).
    pub(crate) fn check_residual_given(&self, has_residual: bool) -> Result<()> {
        match (self.residual, has_residual) {
            (Residual::None, true) => Err(Error::invalid_param(
                "residual",
                "a tensor",
                "the epilogue has no residual (Residual::None): pass None",
            )),
            (Residual::Before | Residual::After, false) => Err(Error::invalid_param(
                "residual",
                "None",
                format!(
                    "the epilogue adds a residual ({:?}): pass the residual tensor",
                    self.residual
                ),
            )),
            _ => Ok(()),
        }
    }

    /// `y` from the pre-residual value `v = conv + b` and the residual `r` (0 without), in
    /// `f64` (the CPU reference).
    pub fn apply(&self, v: f64, r: f64) -> f64 {
        match self.residual {
            Residual::None => self.activation.apply(v),
            Residual::Before => self.activation.apply(v + r),
            Residual::After => self.activation.apply(v) + r,
        }
    }
}

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
const GELU_KAPPA: f64 = 0.044715;

impl Activation {
    /// `LeakyRelu` with PyTorch's default negative slope 0.01.
    pub fn leaky_relu() -> Self {
        Activation::LeakyRelu { alpha: 0.01 }
    }

    /// relu6: `Clamp { lo: 0, hi: 6 }`.
    pub fn relu6() -> Self {
        Activation::Clamp { lo: 0.0, hi: 6.0 }
    }

    /// Every activation (with default constants: `alpha` 0.01, clamp to `[0, 6]`).
    pub const ALL: &'static [Activation] = &[
        Activation::Identity,
        Activation::Relu,
        Activation::LeakyRelu { alpha: 0.01 },
        Activation::Clamp { lo: 0.0, hi: 6.0 },
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Silu,
        Activation::Gelu,
        Activation::GeluTanh,
        Activation::Hardswish,
        Activation::Hardsigmoid,
    ];

    /// Lowercase name, as in the fixture format (`identity`, `relu`, `leaky_relu`, `clamp`,
    /// `sigmoid`, `tanh`, `silu`, `gelu`, `gelu_tanh`, `hardswish`, `hardsigmoid`).
    pub fn name(self) -> &'static str {
        match self {
            Activation::Identity => "identity",
            Activation::Relu => "relu",
            Activation::LeakyRelu { .. } => "leaky_relu",
            Activation::Clamp { .. } => "clamp",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
            Activation::Silu => "silu",
            Activation::Gelu => "gelu",
            Activation::GeluTanh => "gelu_tanh",
            Activation::Hardswish => "hardswish",
            Activation::Hardsigmoid => "hardsigmoid",
        }
    }

    /// The activation named `name` ([`Activation::name`]), with `alpha` for `leaky_relu`
    /// (`None`: 0.01) and `lo`, `hi` for `clamp` (required).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidParam`](crate::ErrorKind::InvalidParam) for an unknown name, a
    /// clamp without bounds, or constants [`Activation::validate`] refuses.
    pub fn from_name(
        name: &str,
        alpha: Option<f32>,
        lo: Option<f32>,
        hi: Option<f32>,
    ) -> Result<Self> {
        let a = match name {
            "identity" => Activation::Identity,
            "relu" => Activation::Relu,
            "relu6" => Activation::relu6(),
            "leaky_relu" => Activation::LeakyRelu {
                alpha: alpha.unwrap_or(0.01),
            },
            "clamp" => match (lo, hi) {
                (Some(lo), Some(hi)) => Activation::Clamp { lo, hi },
                _ => {
                    return Err(Error::invalid_param(
                        "activation",
                        name,
                        "clamp needs both bounds lo and hi",
                    ))
                }
            },
            "sigmoid" => Activation::Sigmoid,
            "tanh" => Activation::Tanh,
            "silu" => Activation::Silu,
            "gelu" => Activation::Gelu,
            "gelu_tanh" => Activation::GeluTanh,
            "hardswish" => Activation::Hardswish,
            "hardsigmoid" => Activation::Hardsigmoid,
            _ => {
                return Err(Error::invalid_param(
                    "activation",
                    name,
                    "unknown activation name",
                ))
            }
        };
        a.validate()?;
        Ok(a)
    }

    /// Checks the constants.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidParam`](crate::ErrorKind::InvalidParam) named `alpha` when the
    /// leaky slope is not finite, `lo` / `hi` when a clamp bound is not finite, and `lo`
    /// when `lo > hi`.
    pub fn validate(self) -> Result<()> {
        match self {
            Activation::LeakyRelu { alpha } if !alpha.is_finite() => Err(Error::invalid_param(
                "alpha",
                alpha,
                "the leaky_relu slope must be finite",
            )),
            Activation::Clamp { lo, .. } if !lo.is_finite() => Err(Error::invalid_param(
                "lo",
                lo,
                "the clamp bounds must be finite",
            )),
            Activation::Clamp { hi, .. } if !hi.is_finite() => Err(Error::invalid_param(
                "hi",
                hi,
                "the clamp bounds must be finite",
            )),
            Activation::Clamp { lo, hi } if lo > hi => Err(Error::invalid_param(
                "lo",
                lo,
                format!("the clamp's lower bound exceeds its upper bound {hi}"),
            )),
            _ => Ok(()),
        }
    }

    /// Can the derivative be computed from the activation's output instead of its input
    /// (relu, clamp, identity: `act'(z)` is a function of `act(z)` alone)?
    pub fn grad_from_output(self) -> bool {
        matches!(
            self,
            Activation::Identity | Activation::Relu | Activation::Clamp { .. }
        )
    }

    /// The activation's value at `z`, in `f64` (the CPU reference; NaN propagates).
    pub fn apply(self, z: f64) -> f64 {
        match self {
            Activation::Identity => z,
            Activation::Relu => {
                if z <= 0.0 {
                    0.0
                } else {
                    z
                }
            }
            Activation::LeakyRelu { alpha } => {
                if z > 0.0 {
                    z
                } else {
                    alpha as f64 * z
                }
            }
            Activation::Clamp { lo, hi } => {
                let (lo, hi) = (lo as f64, hi as f64);
                if z < lo {
                    lo
                } else if z > hi {
                    hi
                } else {
                    z
                }
            }
            Activation::Sigmoid => sigmoid(z),
            Activation::Tanh => z.tanh(),
            Activation::Silu => z * sigmoid(z),
            Activation::Gelu => 0.5 * z * (1.0 + erf(z / std::f64::consts::SQRT_2)),
            Activation::GeluTanh => {
                0.5 * z * (1.0 + (SQRT_2_OVER_PI * (z + GELU_KAPPA * z * z * z)).tanh())
            }
            Activation::Hardswish => z * relu6(z + 3.0) / 6.0,
            Activation::Hardsigmoid => relu6(z + 3.0) / 6.0,
        }
    }

    /// The derivative `act'(z)` with PyTorch's definitions at the kinks (relu: 0 at 0;
    /// leaky_relu: `alpha` at 0; clamp: 0 at `lo` and `hi`; hardswish: 0 below -3,
    /// `z/3 + 1/2` on `[-3, 3]`, 1 above; hardsigmoid: 1/6 strictly inside `(-3, 3)`), in `f64`.
    pub fn derivative(self, z: f64) -> f64 {
        match self {
            Activation::Identity => 1.0,
            Activation::Relu => f64::from(u8::from(z > 0.0)),
            Activation::LeakyRelu { alpha } => {
                if z > 0.0 {
                    1.0
                } else {
                    alpha as f64
                }
            }
            Activation::Clamp { lo, hi } => f64::from(u8::from(z > lo as f64 && z < hi as f64)),
            Activation::Sigmoid => {
                let s = sigmoid(z);
                s * (1.0 - s)
            }
            Activation::Tanh => {
                let t = z.tanh();
                1.0 - t * t
            }
            Activation::Silu => {
                let s = sigmoid(z);
                s * (1.0 + z * (1.0 - s))
            }
            Activation::Gelu => {
                let cdf = 0.5 * (1.0 + erf(z / std::f64::consts::SQRT_2));
                let pdf = (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt();
                cdf + z * pdf
            }
            Activation::GeluTanh => {
                let inner = SQRT_2_OVER_PI * (z + GELU_KAPPA * z * z * z);
                let t = inner.tanh();
                0.5 * (1.0 + t)
                    + 0.5 * z * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_KAPPA * z * z)
            }
            Activation::Hardswish => {
                if z < -3.0 {
                    0.0
                } else if z <= 3.0 {
                    z / 3.0 + 0.5
                } else {
                    1.0
                }
            }
            Activation::Hardsigmoid => {
                if z > -3.0 && z < 3.0 {
                    1.0 / 6.0
                } else {
                    0.0
                }
            }
        }
    }

    /// The code of the activation in the kernels' `ACT` override (identity = 0).
    pub(crate) fn code(self) -> u32 {
        match self {
            Activation::Identity => 0,
            Activation::Relu => 1,
            Activation::LeakyRelu { .. } => 2,
            Activation::Clamp { .. } => 3,
            Activation::Sigmoid => 4,
            Activation::Tanh => 5,
            Activation::Silu => 6,
            Activation::Gelu => 7,
            Activation::GeluTanh => 8,
            Activation::Hardswish => 9,
            Activation::Hardsigmoid => 10,
        }
    }

    /// `(alpha, lo, hi)` for the kernels' parameter fields (unused ones 0).
    pub(crate) fn constants(self) -> (f32, f32, f32) {
        match self {
            Activation::LeakyRelu { alpha } => (alpha, 0.0, 0.0),
            Activation::Clamp { lo, hi } => (0.0, lo, hi),
            _ => (0.0, 0.0, 0.0),
        }
    }
}

impl Residual {
    /// Lowercase name, as in the fixture format (`none`, `before`, `after`).
    pub fn name(self) -> &'static str {
        match self {
            Residual::None => "none",
            Residual::Before => "before",
            Residual::After => "after",
        }
    }

    /// Parses a name produced by [`Residual::name`].
    ///
    /// # Errors
    /// [`ErrorKind::InvalidParam`](crate::ErrorKind::InvalidParam) for another name.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "none" => Ok(Residual::None),
            "before" => Ok(Residual::Before),
            "after" => Ok(Residual::After),
            _ => Err(Error::invalid_param(
                "residual",
                name,
                "expected none, before or after",
            )),
        }
    }

    /// The code of the residual position in the kernels' `RES` override.
    pub(crate) fn code(self) -> u32 {
        match self {
            Residual::None => 0,
            Residual::Before => 1,
            Residual::After => 2,
        }
    }
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

fn relu6(z: f64) -> f64 {
    z.clamp(0.0, 6.0)
}

/// `erf` in `f64` (W. J. Cody's rational approximations, as in most libms; relative error
/// below 1e-15 — the reference has no `erf` in `std`).
pub(crate) fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let ax = x.abs();
    let r = if ax < 0.5 {
        // erf(x) = x * P(x^2) / Q(x^2)
        const A: [f64; 5] = [
            3.161_123_743_870_565_6,
            113.864_154_151_050_16,
            377.485_237_685_302_1,
            3_209.377_589_138_469_4,
            0.185_777_706_184_603_15,
        ];
        const B: [f64; 4] = [
            23.601_290_952_344_122,
            244.024_637_934_444_17,
            1_282.616_526_077_372_3,
            2_844.236_833_439_17,
        ];
        let z = x * x;
        let mut num = A[4] * z;
        let mut den = z;
        for i in 0..3 {
            num = (num + A[i]) * z;
            den = (den + B[i]) * z;
        }
        return x * (num + A[3]) / (den + B[3]);
    } else if ax < 4.0 {
        const C: [f64; 9] = [
            0.564_188_496_988_670_1,
            8.883_149_794_388_376,
            66.119_190_637_141_63,
            298.635_138_197_400_1,
            881.952_221_241_769,
            1_712.047_612_634_070_7,
            2_051.078_377_826_071_6,
            1_230.339_354_797_997_2,
            2.153_115_354_744_038_3e-8,
        ];
        const D: [f64; 8] = [
            15.744_926_110_709_835,
            117.693_950_891_312_5,
            537.181_101_862_009_9,
            1_621.389_574_566_690_3,
            3_290.799_235_733_459_7,
            4_362.619_090_143_247,
            3_439.367_674_143_721_6,
            1_230.339_354_803_749_5,
        ];
        let mut num = C[8] * ax;
        let mut den = ax;
        for i in 0..7 {
            num = (num + C[i]) * ax;
            den = (den + D[i]) * ax;
        }
        let erfc = (num + C[7]) / (den + D[7]) * (-ax * ax).exp();
        1.0 - erfc
    } else {
        const P: [f64; 6] = [
            0.305_326_634_961_232_36,
            0.360_344_899_949_804_45,
            0.125_781_726_111_229_26,
            0.016_083_785_148_742_275,
            6.587_491_615_298_378e-4,
            0.016_315_387_137_302_097,
        ];
        const Q: [f64; 5] = [
            2.568_520_192_289_822,
            1.872_952_849_923_460_4,
            0.527_905_102_951_428_4,
            0.060_518_341_312_441_32,
            0.002_335_204_976_268_691_8,
        ];
        let z = 1.0 / (ax * ax);
        let mut num = P[5] * z;
        let mut den = z;
        for i in 0..4 {
            num = (num + P[i]) * z;
            den = (den + Q[i]) * z;
        }
        let mut r = z * (num + P[4]) / (den + Q[4]);
        r = (1.0 / std::f64::consts::PI.sqrt() - r) / ax;
        let erfc = r * (-ax * ax).exp();
        1.0 - erfc
    };
    if x < 0.0 {
        -r
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        // erf values from tables (Abramowitz & Stegun), 1e-12 accuracy.
        for (x, want) in [
            (0.0, 0.0),
            (0.1, 0.112_462_916_018_284_9),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (3.5, 0.999_999_256_901_627_7),
            (5.0, 0.999_999_999_998_462_5),
        ] {
            assert!((erf(x) - want).abs() < 1e-12, "erf({x}) = {}", erf(x));
            assert!((erf(-x) + want).abs() < 1e-12);
        }
    }

    #[test]
    fn derivatives_match_finite_differences() {
        for &a in Activation::ALL {
            for &z in &[-4.2, -2.5, -0.7, -0.1, 0.13, 0.9, 2.2, 4.5, 6.5] {
                let h = 1e-6;
                let fd = (a.apply(z + h) - a.apply(z - h)) / (2.0 * h);
                let d = a.derivative(z);
                assert!((fd - d).abs() < 1e-6, "{a:?} at {z}: {d} vs {fd}");
            }
        }
    }

    #[test]
    fn bad_constants_are_refused() {
        assert!(Activation::LeakyRelu { alpha: f32::NAN }
            .validate()
            .is_err());
        assert!(Activation::Clamp { lo: 1.0, hi: 0.0 }.validate().is_err());
        assert!(Activation::Clamp {
            lo: f32::NEG_INFINITY,
            hi: 0.0
        }
        .validate()
        .is_err());
        assert!(Activation::relu6().validate().is_ok());
        assert!(Activation::from_name("clamp", None, Some(0.0), None).is_err());
        assert!(Activation::from_name("nope", None, None, None).is_err());
    }
}
