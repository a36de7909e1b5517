//! `filter`: applies named or hand-written convolution kernels to a PNG or JPEG image on the
//! GPU (a depthwise `wgconv` convolution per colour channel), writes the result as PNG or
//! JPEG, and optionally checks it against the CPU reference and reports how each padding
//! mode biases the image border.
//!
//! ```text
//! WGPU_BACKEND=vulkan cargo run --release --example filter -- \
//!     assets/coffee.jpg --kernel sobel-mag --output assets/coffee_sobel.jpg
//! cargo run --release --example filter -- --help
//! ```
//!
//! The command line is parsed by `clap` (derive): `-h` / `--help` (the long form lists every
//! kernel with its weights), `--version`, and usage errors on stderr with exit code 2. A
//! spinner on stderr shows which phase runs when stderr is a terminal. The logic lives in
//! public functions (kernel table, argument parsing, the GPU and CPU pipelines,
//! normalisation, the border report) so `tests/filter_example.rs` can include this file as
//! a module and test them directly.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::builder::{NonEmptyStringValueParser, PossibleValuesParser, TypedValueParser};
use clap::{ArgGroup, CommandFactory, FromArgMatches, Parser, ValueEnum};
use indicatif::ProgressBar;
use wgconv::{cpu, Context, Conv2dParams, Padding, PaddingMode, Shape4, Tensor};

/// Largest number of rows or columns accepted from `--kernel-values` (a guard against a
/// typo turning into minutes of GPU time; the library itself has no such limit).
pub const MAX_KERNEL_DIM: usize = 64;

/// The value of every pixel of the constant image used by the border report.
pub const CONSTANT_LEVEL: f32 = 0.5;

/// `--check` fails when the max abs error exceeds this fraction of the max |reference|.
pub const CHECK_RELATIVE_TOLERANCE: f64 = 1e-3;

/// A convolution kernel: `rows x cols` weights, row-major, applied as cross-correlation
/// (PyTorch's convention: the kernel is not flipped).
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    /// Number of rows (R).
    pub rows: usize,
    /// Number of columns (S).
    pub cols: usize,
    /// `rows * cols` weights, row-major.
    pub values: Vec<f32>,
}

impl Kernel {
    /// Sum of the weights (the response to a constant image, away from the border).
    pub fn sum(&self) -> f32 {
        self.values.iter().sum()
    }

    /// `same`-style padding `[top, bottom, left, right]`: `R/2` and `S/2` on both sides for
    /// odd sizes; for even sizes the smaller half goes before (as PyTorch's
    /// `padding="same"`), so at stride 1 the output keeps the input size.
    pub fn same_padding(&self) -> [usize; 4] {
        [
            (self.rows - 1) / 2,
            self.rows / 2,
            (self.cols - 1) / 2,
            self.cols / 2,
        ]
    }
}

/// A kernel of the built-in table: integer weights and a divisor, for a readable `--help`.
#[derive(Clone, Copy, Debug)]
pub struct NamedKernel {
    /// Name used with `--kernel`.
    pub name: &'static str,
    /// One-line description.
    pub about: &'static str,
    /// Rows (the table only has square kernels).
    pub size: usize,
    /// Weights before division, row-major.
    pub weights: &'static [f32],
    /// Every weight is divided by this.
    pub divisor: f32,
}

impl NamedKernel {
    /// The kernel with the divisor applied.
    pub fn kernel(&self) -> Kernel {
        Kernel {
            rows: self.size,
            cols: self.size,
            values: self.weights.iter().map(|w| w / self.divisor).collect(),
        }
    }
}

const GAUSS5: [f32; 25] = [
    1.0, 4.0, 6.0, 4.0, 1.0, //
    4.0, 16.0, 24.0, 16.0, 4.0, //
    6.0, 24.0, 36.0, 24.0, 6.0, //
    4.0, 16.0, 24.0, 16.0, 4.0, //
    1.0, 4.0, 6.0, 4.0, 1.0,
];

/// The built-in kernels (`sobel-mag`, which combines two of them, is [`SOBEL_MAG`]).
pub const KERNELS: &[NamedKernel] = &[
    NamedKernel {
        name: "identity",
        about: "copies the input (sum 1)",
        size: 3,
        weights: &[0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0],
        divisor: 1.0,
    },
    NamedKernel {
        name: "box3",
        about: "3x3 box blur (mean; sum 1)",
        size: 3,
        weights: &[1.0; 9],
        divisor: 9.0,
    },
    NamedKernel {
        name: "box5",
        about: "5x5 box blur (mean; sum 1)",
        size: 5,
        weights: &[1.0; 25],
        divisor: 25.0,
    },
    NamedKernel {
        name: "gauss3",
        about: "3x3 Gaussian blur (binomial [1 2 1]^T [1 2 1]; sum 1)",
        size: 3,
        weights: &[1.0, 2.0, 1.0, 2.0, 4.0, 2.0, 1.0, 2.0, 1.0],
        divisor: 16.0,
    },
    NamedKernel {
        name: "gauss5",
        about: "5x5 Gaussian blur (binomial [1 4 6 4 1]^T [1 4 6 4 1]; sum 1)",
        size: 5,
        weights: &GAUSS5,
        divisor: 256.0,
    },
    NamedKernel {
        name: "sharpen",
        about: "sharpen: identity plus the negative 4-neighbour Laplacian (sum 1)",
        size: 3,
        weights: &[0.0, -1.0, 0.0, -1.0, 5.0, -1.0, 0.0, -1.0, 0.0],
        divisor: 1.0,
    },
    NamedKernel {
        name: "emboss",
        about: "emboss, light from the top left (sum 1)",
        size: 3,
        weights: &[-2.0, -1.0, 0.0, -1.0, 1.0, 1.0, 0.0, 1.0, 2.0],
        divisor: 1.0,
    },
    NamedKernel {
        name: "sobel-x",
        about: "Sobel horizontal gradient, > 0 where brightness grows to the right (sum 0)",
        size: 3,
        weights: &[-1.0, 0.0, 1.0, -2.0, 0.0, 2.0, -1.0, 0.0, 1.0],
        divisor: 1.0,
    },
    NamedKernel {
        name: "sobel-y",
        about: "Sobel vertical gradient, > 0 where brightness grows downwards (sum 0)",
        size: 3,
        weights: &[-1.0, -2.0, -1.0, 0.0, 0.0, 0.0, 1.0, 2.0, 1.0],
        divisor: 1.0,
    },
    NamedKernel {
        name: "laplace4",
        about: "Laplacian, 4-neighbour (sum 0)",
        size: 3,
        weights: &[0.0, 1.0, 0.0, 1.0, -4.0, 1.0, 0.0, 1.0, 0.0],
        divisor: 1.0,
    },
    NamedKernel {
        name: "laplace8",
        about: "Laplacian, 8-neighbour (sum 0)",
        size: 3,
        weights: &[1.0, 1.0, 1.0, 1.0, -8.0, 1.0, 1.0, 1.0, 1.0],
        divisor: 1.0,
    },
    NamedKernel {
        name: "prewitt-x",
        about: "Prewitt horizontal gradient (sum 0)",
        size: 3,
        weights: &[-1.0, 0.0, 1.0, -1.0, 0.0, 1.0, -1.0, 0.0, 1.0],
        divisor: 1.0,
    },
    NamedKernel {
        name: "prewitt-y",
        about: "Prewitt vertical gradient (sum 0)",
        size: 3,
        weights: &[-1.0, -1.0, -1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0],
        divisor: 1.0,
    },
];

/// Name of the gradient-magnitude filter: `sqrt(gx² + gy²)` with `gx`, `gy` the `sobel-x`
/// and `sobel-y` responses (two GPU convolutions, combined on the host).
pub const SOBEL_MAG: &str = "sobel-mag";

/// The built-in kernel called `name`, if any.
pub fn named_kernel(name: &str) -> Option<&'static NamedKernel> {
    KERNELS.iter().find(|k| k.name == name)
}

/// Every name `--kernel` accepts, in `--help` order.
pub fn kernel_names() -> Vec<&'static str> {
    KERNELS
        .iter()
        .map(|k| k.name)
        .chain(std::iter::once(SOBEL_MAG))
        .collect()
}

/// One stage of the pipeline.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// One depthwise convolution.
    Conv {
        /// Name for messages (`gauss3`, or `custom 3x3`).
        name: String,
        /// The kernel.
        kernel: Kernel,
    },
    /// `sqrt(gx² + gy²)` of two depthwise convolutions of the same input.
    Magnitude {
        /// Name for messages.
        name: String,
        /// Kernel giving `gx`.
        gx: Kernel,
        /// Kernel giving `gy` (same size as `gx`).
        gy: Kernel,
    },
}

impl Step {
    /// The step for a `--kernel` name, if it exists.
    pub fn named(name: &str) -> Option<Step> {
        if name == SOBEL_MAG {
            let k = |n: &str| named_kernel(n).map(NamedKernel::kernel);
            return Some(Step::Magnitude {
                name: SOBEL_MAG.into(),
                gx: k("sobel-x")?,
                gy: k("sobel-y")?,
            });
        }
        named_kernel(name).map(|k| Step::Conv {
            name: name.into(),
            kernel: k.kernel(),
        })
    }

    /// The name shown in messages.
    pub fn name(&self) -> &str {
        match self {
            Step::Conv { name, .. } | Step::Magnitude { name, .. } => name,
        }
    }

    /// The kernel that decides the window (and so the padding) of the step.
    pub fn window(&self) -> &Kernel {
        match self {
            Step::Conv { kernel, .. } => kernel,
            Step::Magnitude { gx, .. } => gx,
        }
    }

    /// Does the step remove the mean (zero response to a constant image)? Such "edge"
    /// steps give signed or near-zero outputs that `--normalize auto` maps with `abs`.
    pub fn is_edge(&self) -> bool {
        match self {
            Step::Conv { kernel, .. } => kernel.sum().abs() < 1e-6,
            Step::Magnitude { .. } => true,
        }
    }
}

/// Parses `--kernel-values`: rows separated by `;`, values in a row by `,`, spaces allowed
/// (`"-1,0,1; -2,0,2; -1,0,1"`). Every row must have the same number of finite values; at
/// most [`MAX_KERNEL_DIM`] rows and columns.
pub fn parse_kernel_values(text: &str) -> Result<Kernel, String> {
    if text.trim().is_empty() {
        return Err("--kernel-values is empty (expected e.g. \"0,1,0;1,-4,1;0,1,0\")".into());
    }
    let mut rows: Vec<Vec<f32>> = Vec::new();
    for (i, row) in text.split(';').enumerate() {
        if row.trim().is_empty() {
            return Err(format!("--kernel-values: row {} is empty", i + 1));
        }
        let mut values = Vec::new();
        for (j, item) in row.split(',').enumerate() {
            let item = item.trim();
            let at = format!("--kernel-values: row {}, column {}", i + 1, j + 1);
            if item.is_empty() {
                return Err(format!("{at} is empty"));
            }
            let v: f32 = item
                .parse()
                .map_err(|_| format!("{at}: `{item}` is not a number"))?;
            if !v.is_finite() {
                return Err(format!("{at}: `{item}` is not a finite number"));
            }
            values.push(v);
        }
        if let Some(first) = rows.first() {
            if first.len() != values.len() {
                return Err(format!(
                    "--kernel-values: row {} has {} value(s) but row 1 has {} (rows must have the \
                     same length)",
                    i + 1,
                    values.len(),
                    first.len()
                ));
            }
        }
        rows.push(values);
    }
    let (r, s) = (rows.len(), rows[0].len());
    if r > MAX_KERNEL_DIM || s > MAX_KERNEL_DIM {
        return Err(format!(
            "--kernel-values: a {r}x{s} kernel is too large (at most {MAX_KERNEL_DIM}x{MAX_KERNEL_DIM})"
        ));
    }
    Ok(Kernel {
        rows: r,
        cols: s,
        values: rows.into_iter().flatten().collect(),
    })
}

/// How float results become 8-bit pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Normalize {
    /// abs if any step is an edge filter (weights sum to 0, or sobel-mag), else clamp
    Auto,
    /// 255 * |v| / max|v| over the whole image (one scale for all channels)
    Abs,
    /// 255 * (v - min) / (max - min) over the whole image (0 if the image is constant)
    #[value(name = "minmax")]
    MinMax,
    /// 255 * clamp(v, 0, 1): the input was read as [0, 1], so this keeps intensities
    Clamp,
}

impl Normalize {
    /// The name used on the command line.
    pub fn name(self) -> String {
        self.to_possible_value()
            .map_or_else(String::new, |v| v.get_name().to_string())
    }

    /// Resolves `Auto` for a pipeline.
    pub fn resolve(self, steps: &[Step]) -> Normalize {
        match self {
            Normalize::Auto if steps.iter().any(Step::is_edge) => Normalize::Abs,
            Normalize::Auto => Normalize::Clamp,
            other => other,
        }
    }
}

/// Maps float values to bytes with `mode` (`Auto` behaves as `Clamp`; resolve it first).
/// Non-finite values become 0.
pub fn to_bytes(values: &[f32], mode: Normalize) -> Vec<u8> {
    let finite = || values.iter().copied().filter(|v| v.is_finite());
    let byte = |t: f32| (t.clamp(0.0, 1.0) * 255.0).round() as u8; // NaN -> 0
    match mode {
        Normalize::Abs => {
            let max = finite().map(f32::abs).fold(0.0, f32::max);
            let scale = if max > 0.0 { 1.0 / max } else { 0.0 };
            values.iter().map(|v| byte(v.abs() * scale)).collect()
        }
        Normalize::MinMax => {
            let min = finite().fold(f32::INFINITY, f32::min);
            let max = finite().fold(f32::NEG_INFINITY, f32::max);
            let range = max - min;
            if range > 0.0 && range.is_finite() {
                values.iter().map(|v| byte((v - min) / range)).collect()
            } else {
                vec![0; values.len()]
            }
        }
        Normalize::Auto | Normalize::Clamp => values.iter().map(|&v| byte(v)).collect(),
    }
}

/// `sqrt(gx² + gy²)` element-wise.
pub fn magnitude(gx: &[f32], gy: &[f32]) -> Vec<f32> {
    gx.iter()
        .zip(gy)
        .map(|(a, b)| (a * a + b * b).sqrt())
        .collect()
}

/// Convolution parameters of one step on `channels` channels: depthwise (`groups =
/// channels`), `same`-style padding for the kernel, the given mode and stride.
pub fn step_params(kernel: &Kernel, mode: PaddingMode, stride: usize) -> Conv2dParams {
    Conv2dParams::default()
        .with_padding(Padding::PerSide(kernel.same_padding()))
        .with_padding_mode(mode)
        .with_stride([stride, stride])
}

/// The depthwise weight `[C, 1, R, S]`: the kernel once per channel.
pub fn depthwise_weight(kernel: &Kernel, channels: usize) -> (Vec<f32>, Shape4) {
    let w = (0..channels)
        .flat_map(|_| kernel.values.iter().copied())
        .collect();
    (w, [channels, 1, kernel.rows, kernel.cols])
}

/// Validates the whole pipeline on an input shape and returns the output shape (errors:
/// a kernel that does not fit, reflect padding not smaller than the image, ...).
pub fn output_shape(
    shape: Shape4,
    steps: &[Step],
    mode: PaddingMode,
    stride: usize,
) -> wgconv::Result<Shape4> {
    let mut s = shape;
    for step in steps {
        let k = step.window();
        s = step_params(k, mode, stride)
            .with_groups(s[1])
            .output_shape(s, [s[1], 1, k.rows, k.cols])?;
    }
    Ok(s)
}

/// Where a pipeline runs.
#[derive(Clone, Copy, Debug)]
pub enum Backend<'a> {
    /// `Context::conv2d` on the GPU; data stays on the device between convolution steps.
    Gpu(&'a Context),
    /// `wgconv::cpu::conv2d`, the reference.
    Cpu,
}

/// Runs the steps on `x` (`[N, C, H, W]`, row-major) and returns the result and its shape.
pub fn apply(
    backend: Backend<'_>,
    x: &[f32],
    shape: Shape4,
    steps: &[Step],
    mode: PaddingMode,
    stride: usize,
) -> wgconv::Result<(Vec<f32>, Shape4)> {
    match backend {
        Backend::Gpu(ctx) => apply_gpu(ctx, x, shape, steps, mode, stride),
        Backend::Cpu => apply_cpu(x, shape, steps, mode, stride),
    }
}

fn conv_gpu(
    ctx: &Context,
    x: &Tensor,
    kernel: &Kernel,
    mode: PaddingMode,
    stride: usize,
) -> wgconv::Result<Tensor> {
    let c = x.shape().get(1).copied().unwrap_or(1);
    let (w, ws) = depthwise_weight(kernel, c);
    let wt = Tensor::from_slice(ctx, &w, &ws)?;
    ctx.conv2d(
        x,
        &wt,
        None,
        &step_params(kernel, mode, stride).with_groups(c),
    )
}

fn apply_gpu(
    ctx: &Context,
    x: &[f32],
    shape: Shape4,
    steps: &[Step],
    mode: PaddingMode,
    stride: usize,
) -> wgconv::Result<(Vec<f32>, Shape4)> {
    let mut t = Tensor::from_slice(ctx, x, &shape)?;
    for step in steps {
        t = match step {
            Step::Conv { kernel, .. } => conv_gpu(ctx, &t, kernel, mode, stride)?,
            Step::Magnitude { gx, gy, .. } => {
                let a = conv_gpu(ctx, &t, gx, mode, stride)?;
                let b = conv_gpu(ctx, &t, gy, mode, stride)?;
                let m = magnitude(&a.read()?, &b.read()?);
                Tensor::from_slice(ctx, &m, a.shape())?
            }
        };
    }
    let out_shape = output_shape(shape, steps, mode, stride)?;
    Ok((t.read()?, out_shape))
}

fn conv_cpu(
    x: &[f32],
    shape: Shape4,
    kernel: &Kernel,
    mode: PaddingMode,
    stride: usize,
) -> wgconv::Result<(Vec<f32>, Shape4)> {
    let (w, ws) = depthwise_weight(kernel, shape[1]);
    let p = step_params(kernel, mode, stride).with_groups(shape[1]);
    cpu::conv2d(x, shape, &w, ws, None, &p)
}

fn apply_cpu(
    x: &[f32],
    shape: Shape4,
    steps: &[Step],
    mode: PaddingMode,
    stride: usize,
) -> wgconv::Result<(Vec<f32>, Shape4)> {
    let (mut v, mut s) = (x.to_vec(), shape);
    for step in steps {
        (v, s) = match step {
            Step::Conv { kernel, .. } => conv_cpu(&v, s, kernel, mode, stride)?,
            Step::Magnitude { gx, gy, .. } => {
                let (a, sa) = conv_cpu(&v, s, gx, mode, stride)?;
                let (b, _) = conv_cpu(&v, s, gy, mode, stride)?;
                (magnitude(&a, &b), sa)
            }
        };
    }
    Ok((v, s))
}

/// Border rows and columns of the pipeline's output: an output row is a border row when
/// the window of some step that produced it reaches into the padding, directly or through
/// a border row of the step before. Returns `(rows, cols)` flags.
pub fn border_masks(h: usize, w: usize, steps: &[Step], stride: usize) -> (Vec<bool>, Vec<bool>) {
    let axis = |mut len: usize, dim: usize| -> Vec<bool> {
        let mut border = vec![false; len];
        for step in steps {
            let k = step.window();
            let (size, pad) = if dim == 0 {
                (k.rows, k.same_padding()[0])
            } else {
                (k.cols, k.same_padding()[2])
            };
            // Same-padded: out = floor((len - 1) / stride) + 1.
            let out = if len == 0 { 0 } else { (len - 1) / stride + 1 };
            let next: Vec<bool> = (0..out)
                .map(|o| {
                    let start = (o * stride) as isize - pad as isize;
                    let end = start + size as isize; // exclusive
                    start < 0
                        || end > len as isize
                        || (start.max(0)..end.min(len as isize)).any(|i| border[i as usize])
                })
                .collect();
            border = next;
            len = out;
        }
        border
    };
    (axis(h, 0), axis(w, 1))
}

/// Mean `|y|` over the border pixels minus mean `|y|` over the interior pixels (all images
/// and channels of `y`, shape `[N, C, H, W]`); `None` if either set is empty.
pub fn border_bias(y: &[f32], shape: Shape4, rows: &[bool], cols: &[bool]) -> Option<f64> {
    let [n, c, h, w] = shape;
    if rows.len() != h || cols.len() != w || y.len() != n * c * h * w {
        return None;
    }
    let (mut sb, mut nb, mut si, mut ni) = (0f64, 0usize, 0f64, 0usize);
    for plane in y.chunks(h * w.max(1)) {
        for (i, row) in plane.chunks(w.max(1)).enumerate() {
            for (j, v) in row.iter().enumerate() {
                if rows[i] || cols[j] {
                    sb += v.abs() as f64;
                    nb += 1;
                } else {
                    si += v.abs() as f64;
                    ni += 1;
                }
            }
        }
    }
    (nb > 0 && ni > 0).then(|| sb / nb as f64 - si / ni as f64)
}

/// One row of the border report.
#[derive(Clone, Debug, PartialEq)]
pub struct BorderRow {
    /// The padding mode.
    pub mode: PaddingMode,
    /// Border bias on the constant image ([`CONSTANT_LEVEL`]), or why it is not available.
    pub constant: Result<f64, String>,
    /// Border bias on the real image, or why it is not available.
    pub image: Result<f64, String>,
}

/// The four padding modes, in report order.
pub const MODES: [PaddingMode; 4] = [
    PaddingMode::Zeros,
    PaddingMode::Reflect,
    PaddingMode::Replicate,
    PaddingMode::Circular,
];

/// Runs the steps with every padding mode on a constant image of `x`'s shape and on `x`,
/// and measures the border bias of each result.
pub fn border_report(
    backend: Backend<'_>,
    x: &[f32],
    shape: Shape4,
    steps: &[Step],
    stride: usize,
) -> Vec<BorderRow> {
    let constant = vec![CONSTANT_LEVEL; x.len()];
    let bias = |input: &[f32], mode: PaddingMode| -> Result<f64, String> {
        let (y, ys) =
            apply(backend, input, shape, steps, mode, stride).map_err(|e| e.to_string())?;
        let (rows, cols) = border_masks(shape[2], shape[3], steps, stride);
        border_bias(&y, ys, &rows, &cols).ok_or_else(|| "no interior".to_string())
    };
    MODES
        .iter()
        .map(|&mode| BorderRow {
            mode,
            constant: bias(&constant, mode),
            image: bias(x, mode),
        })
        .collect()
}

/// Formats the border report as a small table; `band` is the band width
/// `[top, bottom, left, right]` in output pixels.
pub fn format_border_report(
    rows: &[BorderRow],
    image_label: &str,
    band: [usize; 4],
    steps: &[Step],
) -> String {
    let names: Vec<&str> = steps.iter().map(Step::name).collect();
    let mut s = format!(
        "border bias = mean |y| in the border band - mean |y| in the interior\n\
         (kernels: {}; band = the outputs whose window reaches the padding: {}/{} rows at \
         the top/bottom, {}/{} columns at the left/right)\n",
        names.join(" -> "),
        band[0],
        band[1],
        band[2],
        band[3]
    );
    let label = if image_label.chars().count() > 24 {
        "image"
    } else {
        image_label
    };
    let constant_label = format!("constant {CONSTANT_LEVEL}");
    s.push_str(&format!(
        "{:<10} {:>16} {:>24}\n",
        "padding", constant_label, label
    ));
    let cell = |r: &Result<f64, String>| match r {
        Ok(v) => format!("{v:+.6}"),
        Err(_) => "n/a".to_string(),
    };
    for r in rows {
        s.push_str(&format!(
            "{:<10} {:>16} {:>24}\n",
            r.mode.name(),
            cell(&r.constant),
            cell(&r.image)
        ));
    }
    for r in rows {
        for (what, res) in [("constant image", &r.constant), ("image", &r.image)] {
            if let Err(e) = res {
                s.push_str(&format!("n/a ({}, {what}): {e}\n", r.mode.name()));
            }
        }
    }
    s
}

/// Everything the command line asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// Input image (PNG or JPEG).
    pub input: PathBuf,
    /// The pipeline, in command-line order.
    pub steps: Vec<Step>,
    /// Padding mode of every step.
    pub mode: PaddingMode,
    /// Stride of every step.
    pub stride: usize,
    /// Where to write the result (PNG, or JPEG for a `.jpg` / `.jpeg` name).
    pub output: Option<PathBuf>,
    /// Byte mapping of the result.
    pub normalize: Normalize,
    /// Compare with the CPU reference.
    pub check: bool,
    /// Print the border-bias table.
    pub border_report: bool,
}

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Print this help text (`-h`: short, `--help`: long) to stdout.
    Help(String),
    /// Print this version line to stdout.
    Version(String),
    /// Filter an image.
    Run(Options),
}

/// Why the program failed; decides the exit code.
#[derive(Clone, Debug, PartialEq)]
pub enum Failure {
    /// Bad command line (exit code 2): clap's message (`error: ...`, a usage line, a hint).
    Usage(String),
    /// I/O, decoding or GPU failure (exit code 1).
    Runtime(String),
    /// `--check` found a mismatch (exit code 1).
    Mismatch(String),
}

impl Failure {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Usage(_) => 2,
            Failure::Runtime(_) | Failure::Mismatch(_) => 1,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Usage(m) => f.write_str(m.trim_end()),
            // One line (wgpu's validation messages span several).
            Failure::Runtime(m) | Failure::Mismatch(m) => {
                f.write_str(&m.split_whitespace().collect::<Vec<_>>().join(" "))
            }
        }
    }
}

fn runtime(msg: impl fmt::Display) -> Failure {
    Failure::Runtime(msg.to_string())
}

/// A usage error found after parsing, formatted like clap's.
fn usage(msg: impl fmt::Display) -> Failure {
    let e = Cli::command().error(clap::error::ErrorKind::ValueValidation, msg);
    Failure::Usage(e.render().to_string())
}

const PADDING_NAMES: [&str; 4] = ["zeros", "reflect", "replicate", "circular"];

/// The command line as clap sees it (turned into [`Options`] by [`parse_args`]).
#[derive(Parser, Debug)]
#[command(
    name = "filter",
    version,
    about = "Convolve an image with named or custom kernels on the GPU (wgconv)",
    long_about = LONG_ABOUT,
    after_long_help = kernel_table(),
    after_help = "`--help` lists the kernels with their weights.",
    arg_required_else_help = true,
    override_usage = "filter <INPUT> (--kernel <NAME> | --kernel-values <TEXT>)... [OPTIONS] \
                      (--output <OUT> | --check | --border-report)"
)]
#[command(group(
    ArgGroup::new("kernels").args(["kernel", "kernel_values"]).required(true).multiple(true)
))]
#[command(group(
    ArgGroup::new("actions").args(["output", "check", "border_report"]).required(true).multiple(true)
))]
struct Cli {
    /// The image to filter (PNG or JPEG; the format is detected from the content)
    #[arg(value_name = "INPUT")]
    input: PathBuf,
    /// Apply a built-in kernel (`--help` lists them); repeatable
    ///
    /// Several kernels apply in sequence, in command-line order (mixed with
    /// --kernel-values).
    #[arg(
        long,
        value_name = "NAME",
        value_parser = PossibleValuesParser::new(kernel_names()),
        hide_possible_values = true
    )]
    kernel: Vec<String>,
    /// Apply a custom kernel, e.g. "0,1,0;1,-4,1;0,1,0"; repeatable
    ///
    /// Rows separated by ';', values by ',', any rectangular size up to 64x64; takes its
    /// place in the sequence among the --kernel flags.
    #[arg(long, value_name = "TEXT", value_parser = parse_kernel_values, allow_hyphen_values = true)]
    kernel_values: Vec<Kernel>,
    /// How the image is extended past its border
    ///
    /// zeros (0), reflect (mirror without the edge), replicate (repeat the edge), circular
    /// (wrap around).
    #[arg(
        long,
        value_name = "MODE",
        default_value = "zeros",
        value_parser = PossibleValuesParser::new(PADDING_NAMES)
    )]
    padding: String,
    /// Stride of every convolution
    ///
    /// Each step then shrinks the image to ceil(size / N).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    stride: u32,
    /// How results become 8-bit pixels
    #[arg(long, value_name = "MODE", value_enum, default_value_t = Normalize::Auto)]
    normalize: Normalize,
    /// Write the result (JPEG for .jpg / .jpeg, else PNG)
    ///
    /// JPEG files are written with quality 90.
    #[arg(long, short, value_name = "OUT", value_parser = NonEmptyStringValueParser::new().map(PathBuf::from))]
    output: Option<PathBuf>,
    /// Compare with the CPU reference; exit 1 on a mismatch
    ///
    /// Runs wgconv::cpu::conv2d too, prints the max abs error, and fails if it exceeds 1e-3
    /// of the max |reference|.
    #[arg(long)]
    check: bool,
    /// Print how each padding mode biases the border
    ///
    /// For each padding mode, runs the kernels on a constant image (all 0.5) and on INPUT,
    /// and prints mean |y| in the border band (the outputs whose window reaches the padding)
    /// minus mean |y| in the interior. A constant image has no edges: any bias there is
    /// created by the padding. Zero padding darkens the border under blurs (< 0) and makes
    /// edge filters respond there (> 0); reflect, replicate and circular give ~0.
    #[arg(long)]
    border_report: bool,
}

const LONG_ABOUT: &str = "\
Convolve an image with named or custom kernels on the GPU (wgconv).

INPUT is read as RGB with values in [0, 1]; each kernel is applied to every colour channel
separately, as one depthwise GPU convolution (groups = 3, weight [3, 1, R, S]),
cross-correlation as in PyTorch (the kernel is not flipped). Padding is `same`-style: R/2 rows
and S/2 columns on each side (for an even size the smaller half before), so at stride 1 the
output keeps the input size.

Exit codes: 0 success; 1 I/O, GPU or --check failure; 2 bad arguments.";

/// Parses the arguments (without the program name).
///
/// # Errors
/// [`Failure::Usage`] with clap's message for anything clap rejects.
pub fn parse_args(args: &[String]) -> Result<Command, Failure> {
    let argv = std::iter::once("filter".to_string()).chain(args.iter().cloned());
    let matches = match Cli::command().try_get_matches_from(argv) {
        Ok(m) => m,
        Err(e) => {
            let text = e.render().to_string();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp => Ok(Command::Help(text)),
                clap::error::ErrorKind::DisplayVersion => Ok(Command::Version(text)),
                _ => Err(Failure::Usage(text)),
            };
        }
    };
    let cli =
        Cli::from_arg_matches(&matches).map_err(|e| Failure::Usage(e.render().to_string()))?;
    // The steps in command-line order: clap keeps each flag's values apart, with indices.
    let mut steps: Vec<(usize, Step)> = Vec::new();
    let names = matches.indices_of("kernel").into_iter().flatten();
    for (i, name) in names.zip(&cli.kernel) {
        steps.push((
            i,
            Step::named(name).ok_or_else(|| usage(format!("unknown kernel `{name}`")))?,
        ));
    }
    let customs = matches.indices_of("kernel_values").into_iter().flatten();
    for (i, kernel) in customs.zip(cli.kernel_values) {
        let name = format!("custom {}x{}", kernel.rows, kernel.cols);
        steps.push((i, Step::Conv { name, kernel }));
    }
    steps.sort_by_key(|(i, _)| *i);
    let mode = PaddingMode::from_name(&cli.padding).map_err(|e| usage(e.to_string()))?;
    Ok(Command::Run(Options {
        input: cli.input,
        steps: steps.into_iter().map(|(_, s)| s).collect(),
        mode,
        stride: cli.stride as usize,
        output: cli.output,
        normalize: cli.normalize,
        check: cli.check,
        border_report: cli.border_report,
    }))
}

fn format_matrix(k: &NamedKernel) -> Vec<String> {
    let cells: Vec<String> = k.weights.iter().map(|w| format!("{w}")).collect();
    let width = cells.iter().map(String::len).max().unwrap_or(1);
    let prefix = if k.divisor == 1.0 {
        String::new()
    } else {
        format!("1/{} x ", k.divisor)
    };
    cells
        .chunks(k.size.max(1))
        .enumerate()
        .map(|(i, row)| {
            let row: Vec<String> = row.iter().map(|c| format!("{c:>width$}")).collect();
            let lead = if i == 0 {
                prefix.clone()
            } else {
                " ".repeat(prefix.len())
            };
            format!("{lead}[ {} ]", row.join(" "))
        })
        .collect()
}

/// The kernel table and the example at the end of `--help`.
pub fn kernel_table() -> String {
    let mut s = String::from("Kernels:\n");
    for k in KERNELS {
        s.push_str(&format!("    {:<10} {}\n", k.name, k.about));
        for line in format_matrix(k) {
            s.push_str(&format!("               {line}\n"));
        }
    }
    s.push_str(&format!(
        "    {SOBEL_MAG:<10} gradient magnitude sqrt(gx^2 + gy^2), gx = sobel-x, gy = sobel-y\n\
         \x20              (two GPU convolutions; >= 0)\n\
         \nEnvironment:\n    WGPU_BACKEND=vulkan (or metal, dx12, gl) picks the backend; on a machine \
         without a GPU\n    install Mesa's lavapipe (mesa-vulkan-drivers).\n\
         \nExample:\n    filter assets/coffee.jpg --kernel gauss3 --kernel sobel-mag --padding reflect \\\n\
         \x20          --output edges.png --check --border-report"
    ));
    s
}

/// The `--help` text.
pub fn help_text() -> String {
    Cli::command().render_long_help().to_string()
}

/// Reads an image as planar RGB `[1, 3, H, W]` in `[0, 1]`.
pub fn load_image(path: &Path) -> Result<(Vec<f32>, Shape4), Failure> {
    let fail = |e: &dyn fmt::Display| runtime(format!("cannot read {}: {e}", path.display()));
    let img = image::ImageReader::open(path)
        .map_err(|e| fail(&e))?
        .with_guessed_format()
        .map_err(|e| fail(&e))?
        .decode()
        .map_err(|e| fail(&e))?
        .to_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    Ok((planar_from_interleaved(img.as_raw(), h, w), [1, 3, h, w]))
}

/// Interleaved RGB bytes to planar `[3, H, W]` floats in `[0, 1]`.
pub fn planar_from_interleaved(rgb: &[u8], h: usize, w: usize) -> Vec<f32> {
    let mut out = vec![0f32; 3 * h * w];
    for (i, px) in rgb.chunks_exact(3).take(h * w).enumerate() {
        for (c, &v) in px.iter().enumerate() {
            out[c * h * w + i] = v as f32 / 255.0;
        }
    }
    out
}

/// Quality of JPEG outputs (`--output *.jpg`).
pub const JPEG_QUALITY: u8 = 90;

/// Does `path` ask for a JPEG (`.jpg` / `.jpeg`, any case)?
pub fn is_jpeg_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg"))
}

/// Writes planar `[1, 3, H, W]` floats as an RGB image, mapped with `mode` (resolved):
/// JPEG (quality [`JPEG_QUALITY`]) when [`is_jpeg_name`], else PNG.
pub fn save_image(path: &Path, y: &[f32], shape: Shape4, mode: Normalize) -> Result<(), Failure> {
    let [_, c, h, w] = shape;
    if c != 3 || y.len() < 3 * h * w {
        return Err(runtime(format!("cannot write a {shape:?} result as RGB")));
    }
    let bytes = to_bytes(&y[..3 * h * w], mode);
    let mut rgb = vec![0u8; 3 * h * w];
    for i in 0..h * w {
        for ch in 0..3 {
            rgb[3 * i + ch] = bytes[ch * h * w + i];
        }
    }
    let too_big = |_| runtime(format!("image {w}x{h} is too large to write"));
    let (w32, h32) = (
        u32::try_from(w).map_err(too_big)?,
        u32::try_from(h).map_err(too_big)?,
    );
    let fail = |e: &dyn fmt::Display| runtime(format!("cannot write {}: {e}", path.display()));
    let file = std::io::BufWriter::new(std::fs::File::create(path).map_err(|e| fail(&e))?);
    let rgb8 = image::ExtendedColorType::Rgb8;
    if is_jpeg_name(path) {
        let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(file, JPEG_QUALITY);
        image::ImageEncoder::write_image(encoder, &rgb, w32, h32, rgb8).map_err(|e| fail(&e))
    } else {
        let encoder = image::codecs::png::PngEncoder::new_with_quality(
            file,
            image::codecs::png::CompressionType::Best,
            image::codecs::png::FilterType::Adaptive,
        );
        image::ImageEncoder::write_image(encoder, &rgb, w32, h32, rgb8).map_err(|e| fail(&e))
    }
}

/// Max abs difference and max |reference| (NaN anywhere gives NaN).
pub fn max_abs_error(got: &[f32], want: &[f32]) -> (f64, f64) {
    let mut err = 0f64;
    for (a, b) in got.iter().zip(want) {
        let d = (*a as f64 - *b as f64).abs();
        if d.is_nan() || d > err {
            err = d;
        }
        if d.is_nan() {
            break;
        }
    }
    if got.len() != want.len() {
        err = f64::NAN;
    }
    let scale = want.iter().map(|v| v.abs() as f64).fold(0f64, f64::max);
    (err, scale)
}

/// A spinner on stderr naming the running phase; drawn only when stderr is a terminal, and
/// cleared when dropped.
fn spinner() -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.enable_steady_tick(std::time::Duration::from_millis(100));
    bar
}

/// The whole program: parses `args`, filters, writes reports to `out`.
pub fn run(args: &[String], out: &mut dyn Write) -> Result<(), Failure> {
    let opts = match parse_args(args)? {
        Command::Help(text) | Command::Version(text) => {
            return writeln!(out, "{}", text.trim_end())
                .map_err(|e| runtime(format!("writing the help: {e}")));
        }
        Command::Run(o) => o,
    };
    let say = |out: &mut dyn Write, line: String| {
        writeln!(out, "{line}").map_err(|e| runtime(format!("writing to stdout: {e}")))
    };
    let (x, shape) = load_image(&opts.input)?;
    let (mode, stride, steps) = (opts.mode, opts.stride, &opts.steps);
    let out_shape = output_shape(shape, steps, mode, stride).map_err(|e| {
        usage(format!(
            "the kernels do not fit a {}x{} image with {} padding: {e}",
            shape[3],
            shape[2],
            mode.name()
        ))
    })?;
    let ctx = Context::new_blocking().map_err(runtime)?;
    say(out, format!("adapter: {}", ctx.adapter_summary()))?;
    let names: Vec<String> = steps
        .iter()
        .map(|s| format!("{} ({}x{})", s.name(), s.window().rows, s.window().cols))
        .collect();
    say(
        out,
        format!(
            "input: {} ({}x{}); kernels: {}; padding {}, stride {} -> output {}x{}",
            opts.input.display(),
            shape[3],
            shape[2],
            names.join(" -> "),
            mode.name(),
            stride,
            out_shape[3],
            out_shape[2]
        ),
    )?;
    let spinner = spinner();
    spinner.set_message("GPU convolutions");
    let t0 = Instant::now();
    let (y, ys) = apply(Backend::Gpu(&ctx), &x, shape, steps, mode, stride).map_err(runtime)?;
    say(
        out,
        format!(
            "GPU: {:.1} ms (upload, convolutions, readback; first run includes shader compilation)",
            t0.elapsed().as_secs_f64() * 1e3
        ),
    )?;
    if opts.check {
        spinner.set_message("CPU reference");
        let (want, ws) = apply(Backend::Cpu, &x, shape, steps, mode, stride).map_err(runtime)?;
        let (err, scale) = max_abs_error(&y, &want);
        let rel = err / scale.max(f64::MIN_POSITIVE);
        let ok = ws == ys && rel <= CHECK_RELATIVE_TOLERANCE; // false for NaN
        say(
            out,
            format!(
                "check vs wgconv::cpu::conv2d: max abs error {err:.3e} (max |reference| \
                 {scale:.4}, relative {rel:.3e}): {}",
                if ok { "OK" } else { "MISMATCH" }
            ),
        )?;
        if !ok {
            return Err(Failure::Mismatch(format!(
                "GPU result differs from the CPU reference: relative error {rel:.3e} > \
                 {CHECK_RELATIVE_TOLERANCE:e}"
            )));
        }
    }
    if let Some(path) = &opts.output {
        let norm = opts.normalize.resolve(steps);
        save_image(path, &y, ys, norm)?;
        say(
            out,
            format!(
                "wrote {} ({}x{}, normalize {})",
                path.display(),
                ys[3],
                ys[2],
                norm.name()
            ),
        )?;
    }
    if opts.border_report {
        spinner.set_message("border report: 4 padding modes x 2 images");
        let rows = border_report(Backend::Gpu(&ctx), &x, shape, steps, stride);
        let (rmask, cmask) = border_masks(shape[2], shape[3], steps, stride);
        let run = |m: &[bool], rev: bool| -> usize {
            if rev {
                m.iter().rev().take_while(|b| **b).count()
            } else {
                m.iter().take_while(|b| **b).count()
            }
        };
        let band = [
            run(&rmask, false),
            run(&rmask, true),
            run(&cmask, false),
            run(&cmask, true),
        ];
        let label = opts
            .input
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "image".into());
        say(
            out,
            format_border_report(&rows, &label, band, steps)
                .trim_end()
                .to_string(),
        )?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let mut args = Vec::new();
    for a in std::env::args_os().skip(1) {
        match a.into_string() {
            Ok(s) => args.push(s),
            Err(a) => {
                eprintln!("filter: argument {a:?} is not valid UTF-8 (see --help)");
                return ExitCode::from(2);
            }
        }
    }
    match run(&args, &mut std::io::stdout()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f @ Failure::Usage(_)) => {
            eprintln!("{f}"); // clap's "error: ..." with the usage line
            ExitCode::from(f.exit_code())
        }
        Err(f) => {
            eprintln!("filter: {f}");
            ExitCode::from(f.exit_code())
        }
    }
}
