//! `digits`: a small CNN trained on real handwritten digits with wgconv's forward and
//! backward passes and plain SGD.
//!
//! Data: scikit-learn's bundled digits (1,797 images of 8x8 pixels, 10 classes; a copy of
//! the UCI "Optical Recognition of Handwritten Digits" test set, CC BY 4.0), shipped as
//! `assets/digits.bin` by `tools/export_assets.py`. Fixed split: image `i` is a test image
//! when `i % 5 == 0` (360 test, 1,437 training images).
//!
//! Network (PyTorch notation; flatten keeps where the strokes are, which a global average
//! over 4x4 positions would throw away):
//!
//! ```text
//! Conv2d(1, 16, 3, padding=1) -> ReLU -> Conv2d(16, 32, 3, stride=2, padding=1) -> ReLU
//!   -> flatten (32 x 4 x 4 = 512) -> Linear(512, 10)
//! ```
//!
//! What runs where: both convolutions (forward; input, weight and bias gradients) are
//! wgconv GPU ops, the linear layer is `Context::encode_gemm` forward (`X·Wᵀ + b`) and
//! backward (`dW = dYᵀ·X`, `dX = dY·W` through the transpose flags), the ReLU and its
//! gradient are two tiny WGSL shaders written below; a whole forward (or backward) pass is
//! recorded into one command encoder. The host computes the softmax cross-entropy and its
//! gradient, the linear bias gradient (a column sum) and the SGD update (10k numbers).
//!
//! Training: mini-batches of 32 drawn by a seeded shuffle every epoch (the last partial batch
//! is dropped), SGD with weight decay 1e-3 (PyTorch's `torch.optim.SGD(lr, weight_decay)`
//! update) and a cosine learning-rate decay from 0.2 to 0 over 30 epochs (1,320 steps);
//! initial weights drawn like PyTorch's defaults (`U(-1/sqrt(fan_in), 1/sqrt(fan_in))`).
//! A progress bar while training, a loss / accuracy plot written as SVG at the end.
//! `tests/digits_example.rs` replays 200 steps recorded from PyTorch with the same code.
//!
//! ```text
//! WGPU_BACKEND=vulkan cargo run --release --example digits
//! cargo run --release --example digits -- --help
//! ```
//!
//! Exit code 0 when the test accuracy reaches `--target` (default 97%), 1 when it does not or
//! on an error, 2 on a bad command line.

use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use wgconv::{Algorithm, Context, Conv2dParams, GemmParams, Padding, Tensor};

#[path = "common/relu.rs"]
mod relu;
pub use relu::Relu;
#[path = "common/rng.rs"]
mod rng;
pub use rng::Rng;

/// Errors of the example: library errors, shader errors, bad data files.
pub type BoxError = Box<dyn StdError + Send + Sync>;

// ---------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------

/// Trains a small CNN on scikit-learn's handwritten digits (8x8, 10 classes) with wgconv's
/// GPU forward and backward passes and plain SGD, then writes a loss / accuracy plot.
#[derive(Parser, Clone, Debug, PartialEq)]
#[command(name = "digits", version, after_help = AFTER_HELP)]
pub struct Args {
    /// Passes over the 1,437 training images.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub epochs: u32,
    /// Images per SGD step.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1437))]
    pub batch: u32,
    /// Learning rate at the first step (cosine decay to 0 at the last one).
    #[arg(long, default_value_t = 0.2, value_parser = positive_f32)]
    pub lr: f32,
    /// L2 weight decay (added to every gradient as in torch.optim.SGD).
    #[arg(long, default_value_t = 1e-3, value_parser = non_negative_f32)]
    pub weight_decay: f32,
    /// Seed of the initial weights and of the batch order.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The data file (format: tools/export_assets.py).
    #[arg(long, default_value = DEFAULT_DATA)]
    pub data: PathBuf,
    /// Where to write the loss / accuracy plot (SVG).
    #[arg(long, default_value = "digits.svg")]
    pub plot: PathBuf,
    /// Test accuracy (0..1) below which the exit code is 1.
    #[arg(long, default_value_t = 0.97, value_parser = fraction)]
    pub target: f32,
    /// No progress bar and no per-epoch lines; only the summary.
    #[arg(long, short)]
    pub quiet: bool,
}

const AFTER_HELP: &str = "\
Data: scikit-learn's load_digits (UCI optdigits test set, CC BY 4.0), images i % 5 == 0 are \
the test set. Network: conv 3x3 1->16 pad 1, ReLU, conv 3x3 16->32 stride 2 pad 1, ReLU, \
flatten, linear 512->10 (GEMM). Convolutions, their gradients and the GEMMs run on the GPU.

Exit codes: 0 test accuracy >= --target, 1 below it or an error, 2 bad arguments.
Environment: WGPU_BACKEND=vulkan (or metal, dx12, gl) picks the backend; without a GPU install
Mesa's lavapipe (mesa-vulkan-drivers).";

/// `assets/digits.bin` of this repository.
pub const DEFAULT_DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/digits.bin");

fn parse_f32(s: &str) -> Result<f32, String> {
    let v: f32 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("`{s}` is not a finite number"))
    }
}

fn positive_f32(s: &str) -> Result<f32, String> {
    let v = parse_f32(s)?;
    if v > 0.0 {
        Ok(v)
    } else {
        Err(format!("{v} is not positive"))
    }
}

fn non_negative_f32(s: &str) -> Result<f32, String> {
    let v = parse_f32(s)?;
    if v >= 0.0 {
        Ok(v)
    } else {
        Err(format!("{v} is negative"))
    }
}

fn fraction(s: &str) -> Result<f32, String> {
    let v = parse_f32(s)?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not in 0..=1"))
    }
}

// ---------------------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------------------

/// Magic bytes of `assets/digits.bin`.
pub const MAGIC: &[u8; 8] = b"WGDIGIT1";

/// Number of classes.
pub const CLASSES: usize = 10;

/// Image side.
pub const SIDE: usize = 8;

/// The digits: pixels scaled to `[0, 1]` (`value / 16`), `[n, 1, 8, 8]` row-major, and the
/// labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Digits {
    /// `n * 64` pixels in `[0, 1]`.
    pub pixels: Vec<f32>,
    /// `n` labels in `0..10`.
    pub labels: Vec<usize>,
}

impl Digits {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// No images?
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The pixels of the images `idx`, one after the other (`[idx.len(), 1, 8, 8]`).
    pub fn gather(&self, idx: &[usize]) -> Vec<f32> {
        let row = SIDE * SIDE;
        let mut out = Vec::with_capacity(idx.len() * row);
        for &i in idx {
            out.extend_from_slice(&self.pixels[i * row..(i + 1) * row]);
        }
        out
    }

    /// The labels of the images `idx`.
    pub fn labels_of(&self, idx: &[usize]) -> Vec<usize> {
        idx.iter().map(|&i| self.labels[i]).collect()
    }
}

/// Parses the bytes of a digits file (format in `tools/export_assets.py`).
///
/// # Errors
/// A message naming what is wrong (magic, header, size, label or pixel out of range).
pub fn parse_digits(bytes: &[u8]) -> Result<Digits, String> {
    if bytes.len() < 16 || &bytes[..8] != MAGIC {
        return Err("not a digits file (bad magic)".into());
    }
    let count = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    let (h, w, max, classes) = (bytes[12], bytes[13], bytes[14], bytes[15]);
    if (h as usize, w as usize, classes as usize) != (SIDE, SIDE, CLASSES) || max == 0 {
        return Err(format!(
            "unsupported header: {h}x{w} images, max value {max}, {classes} classes \
             (expected 8x8, 10 classes)"
        ));
    }
    let rec = 1 + SIDE * SIDE;
    if bytes.len() != 16 + count * rec {
        return Err(format!(
            "{} bytes for {count} images (expected {})",
            bytes.len(),
            16 + count * rec
        ));
    }
    let mut pixels = Vec::with_capacity(count * SIDE * SIDE);
    let mut labels = Vec::with_capacity(count);
    for (i, r) in bytes[16..].chunks_exact(rec).enumerate() {
        if r[0] as usize >= CLASSES {
            return Err(format!("image {i}: label {} is not a digit", r[0]));
        }
        if let Some(p) = r[1..].iter().find(|&&p| p > max) {
            return Err(format!("image {i}: pixel {p} > max value {max}"));
        }
        labels.push(r[0] as usize);
        pixels.extend(r[1..].iter().map(|&p| p as f32 / max as f32));
    }
    Ok(Digits { pixels, labels })
}

/// Reads a digits file.
///
/// # Errors
/// I/O errors and [`parse_digits`]'s.
pub fn load_digits(path: &Path) -> Result<Digits, BoxError> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(parse_digits(&bytes).map_err(|e| format!("{}: {e}", path.display()))?)
}

/// The fixed split: `(train, test)` indices; image `i` is a test image when `i % 5 == 0`.
pub fn split(n: usize) -> (Vec<usize>, Vec<usize>) {
    (0..n).partition(|i| i % 5 != 0)
}

/// The mini-batches of one epoch: the training indices shuffled by `rng`, cut into batches
/// of `batch` (the last partial batch dropped, like PyTorch's `drop_last=True`).
pub fn epoch_batches(train: &[usize], batch: usize, rng: &mut Rng) -> Vec<Vec<usize>> {
    let mut order = train.to_vec();
    rng.shuffle(&mut order);
    order
        .chunks_exact(batch.max(1))
        .map(<[usize]>::to_vec)
        .collect()
}

// ---------------------------------------------------------------------------------------
// Network
// ---------------------------------------------------------------------------------------

/// Channels after the first and the second convolution.
pub const CHANNELS: [usize; 2] = [16, 32];

/// Features after flattening: `32 x 4 x 4`.
pub const FEATURES: usize = CHANNELS[1] * 4 * 4;

/// Names of the parameters, in [`Params`] order (PyTorch's `state_dict` names).
pub const PARAM_NAMES: [&str; 6] = [
    "conv1.weight",
    "conv1.bias",
    "conv2.weight",
    "conv2.bias",
    "fc.weight",
    "fc.bias",
];

/// Shapes of the parameters, in [`Params`] order (PyTorch layouts).
pub const PARAM_SHAPES: [&[usize]; 6] = [
    &[CHANNELS[0], 1, 3, 3],
    &[CHANNELS[0]],
    &[CHANNELS[1], CHANNELS[0], 3, 3],
    &[CHANNELS[1]],
    &[CLASSES, FEATURES],
    &[CLASSES],
];

/// The network's parameters on the host, in [`PARAM_NAMES`] order and PyTorch layouts
/// (`fc.weight` is `[10, 512]`).
pub type Params = [Vec<f32>; 6];

/// Initial parameters drawn like PyTorch's defaults for `Conv2d` and `Linear`: weights and
/// biases uniform in `±1/sqrt(fan_in)`.
pub fn init_params(seed: u64) -> Params {
    let mut rng = Rng::new(seed);
    let fan_in = [9, 9, CHANNELS[0] * 9, CHANNELS[0] * 9, FEATURES, FEATURES];
    std::array::from_fn(|i| {
        let n: usize = PARAM_SHAPES[i].iter().product();
        let bound = 1.0 / (fan_in[i] as f32).sqrt();
        (0..n).map(|_| rng.symmetric(bound)).collect()
    })
}

/// Softmax cross-entropy over `CLASSES` logits per row: the mean loss, its gradient w.r.t.
/// the logits (divided by the batch size, as PyTorch's mean reduction) and the number of
/// rows whose arg-max is the label.
pub fn softmax_xent(logits: &[f32], labels: &[usize]) -> (f64, Vec<f32>, usize) {
    let n = labels.len();
    let mut loss = 0f64;
    let mut grad = vec![0f32; logits.len()];
    let mut correct = 0;
    for (i, &label) in labels.iter().enumerate() {
        let row = &logits[i * CLASSES..(i + 1) * CLASSES];
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exps: Vec<f64> = row.iter().map(|&v| ((v - max) as f64).exp()).collect();
        let sum: f64 = exps.iter().sum();
        loss += sum.ln() - (row[label] - max) as f64;
        for (j, e) in exps.iter().enumerate() {
            let target = if j == label { 1.0 } else { 0.0 };
            grad[i * CLASSES + j] = ((e / sum - target) / n as f64) as f32;
        }
        if argmax(row) == label {
            correct += 1;
        }
    }
    (loss / n as f64, grad, correct)
}

/// Index of the largest value (the first on ties).
pub fn argmax(row: &[f32]) -> usize {
    (0..row.len()).fold(0, |b, j| if row[j] > row[b] { j } else { b })
}

/// One SGD step as `torch.optim.SGD(lr=lr, weight_decay=wd)` (no momentum):
/// `w -= lr * (g + wd * w)`.
pub fn sgd(w: &mut [f32], g: &[f32], lr: f32, wd: f32) {
    for (w, g) in w.iter_mut().zip(g) {
        let d = g + wd * *w;
        *w -= lr * d;
    }
}

/// Cosine decay from `base` at step 0 to 0 at step `total`.
pub fn cosine_lr(base: f32, step: usize, total: usize) -> f32 {
    let t = (step as f64 / total.max(1) as f64).min(1.0);
    (base as f64 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())) as f32
}

/// Device buffers for one batch size: activations and their gradients.
struct Workspace {
    n: usize,
    x: Tensor,
    h1: Tensor,
    h2: Tensor,
    /// `h2` viewed as `[n, 512]`.
    flat: Tensor,
    logits: Tensor,
    dlogits: Tensor,
    dh1: Tensor,
    dh2: Tensor,
    /// `dh2` viewed as `[n, 512]`.
    dflat: Tensor,
}

impl Workspace {
    fn new(ctx: &Context, n: usize) -> Result<Self, BoxError> {
        let [c1, c2] = CHANNELS;
        let h2 = Tensor::zeros(ctx, &[n, c2, 4, 4])?;
        let dh2 = Tensor::zeros(ctx, &[n, c2, 4, 4])?;
        Ok(Workspace {
            n,
            x: Tensor::zeros(ctx, &[n, 1, SIDE, SIDE])?,
            h1: Tensor::zeros(ctx, &[n, c1, SIDE, SIDE])?,
            flat: h2.reshape(&[n, FEATURES])?,
            h2,
            logits: Tensor::zeros(ctx, &[n, CLASSES])?,
            dlogits: Tensor::zeros(ctx, &[n, CLASSES])?,
            dh1: Tensor::zeros(ctx, &[n, c1, SIDE, SIDE])?,
            dflat: dh2.reshape(&[n, FEATURES])?,
            dh2,
        })
    }
}

/// What one training step measured (before its update).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    /// Mean cross-entropy of the batch.
    pub loss: f64,
    /// Correctly classified images of the batch.
    pub correct: usize,
}

/// The network on the GPU: device copies of the parameters (host copies are the truth the
/// SGD step updates), the ReLU shaders, gradient buffers and one workspace per batch size.
pub struct Net {
    /// Host parameters, [`PARAM_NAMES`] order.
    pub params: Params,
    dev: [Tensor; 6],
    grads: [Tensor; 5],
    relu: Relu,
    p1: Conv2dParams,
    p2: Conv2dParams,
    workspaces: Vec<Workspace>,
}

impl Net {
    /// Uploads `params` and compiles the ReLU shaders.
    ///
    /// # Errors
    /// Wrong parameter sizes, library and shader errors.
    pub fn new(ctx: &Context, params: Params) -> Result<Self, BoxError> {
        for (i, p) in params.iter().enumerate() {
            let want: usize = PARAM_SHAPES[i].iter().product();
            if p.len() != want {
                return Err(format!(
                    "{}: {} values for shape {:?}",
                    PARAM_NAMES[i],
                    p.len(),
                    PARAM_SHAPES[i]
                )
                .into());
            }
        }
        let mut dev = Vec::with_capacity(6);
        for (p, shape) in params.iter().zip(PARAM_SHAPES) {
            dev.push(Tensor::from_slice(ctx, p, shape)?);
        }
        let mut grads = Vec::with_capacity(5);
        for shape in &PARAM_SHAPES[..5] {
            grads.push(Tensor::zeros(ctx, shape)?);
        }
        let same = Conv2dParams::default().with_padding(Padding::Symmetric([1, 1]));
        Ok(Net {
            params,
            dev: dev.try_into().map_err(|_| "six parameters")?,
            grads: grads.try_into().map_err(|_| "five gradients")?,
            relu: Relu::new(ctx)?,
            p1: same,
            p2: same.with_stride([2, 2]),
            workspaces: Vec::new(),
        })
    }

    /// The workspace for batch size `n` (created on first use).
    fn workspace(&mut self, ctx: &Context, n: usize) -> Result<usize, BoxError> {
        if let Some(i) = self.workspaces.iter().position(|w| w.n == n) {
            return Ok(i);
        }
        self.workspaces.push(Workspace::new(ctx, n)?);
        Ok(self.workspaces.len() - 1)
    }

    /// Runs the forward pass on `x` (`[n, 1, 8, 8]`) and returns the logits `[n, 10]`.
    ///
    /// # Errors
    /// An empty or partial batch; library and shader errors.
    pub fn forward(&mut self, ctx: &Context, x: &[f32]) -> Result<Vec<f32>, BoxError> {
        let n = x.len() / (SIDE * SIDE);
        if n == 0 || x.len() != n * SIDE * SIDE {
            return Err(format!("{} pixels are not a batch of 8x8 images", x.len()).into());
        }
        let wi = self.workspace(ctx, n)?;
        let ws = &self.workspaces[wi];
        ws.x.write(x)?;
        let [w1, b1, w2, b2, wl, bl] = &self.dev;
        let auto = Algorithm::Auto;
        let mut enc = ctx
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("digits forward"),
            });
        ctx.encode_conv2d(&mut enc, &ws.x, w1, Some(b1), &self.p1, auto, &ws.h1)?;
        self.relu.forward(ctx, &mut enc, &ws.h1)?;
        ctx.encode_conv2d(&mut enc, &ws.h1, w2, Some(b2), &self.p2, auto, &ws.h2)?;
        self.relu.forward(ctx, &mut enc, &ws.h2)?;
        // Linear layer: logits = flat · fc.weightᵀ + fc.bias.
        let nt = GemmParams::default().with_transpose_b(true);
        ctx.encode_gemm(&mut enc, &ws.flat, wl, Some(bl), &ws.logits, false, &nt)?;
        ctx.submit(enc)?;
        Ok(ws.logits.read()?)
    }

    /// Back-propagates `dlogits` (the loss gradient w.r.t. the logits of the batch last run
    /// forward with the same batch size) and returns the gradients in [`PARAM_NAMES`]
    /// order.
    ///
    /// # Errors
    /// Library and shader errors; no forward pass of that batch size before.
    pub fn backward(&mut self, ctx: &Context, dlogits: &[f32]) -> Result<Params, BoxError> {
        let n = dlogits.len() / CLASSES;
        let ws = self
            .workspaces
            .iter()
            .find(|w| w.n == n)
            .ok_or("backward without a forward pass of the same batch size")?;
        ws.dlogits.write(dlogits)?;
        let [_, _, w2, _, wl, _] = &self.dev;
        let [dw1, db1, dw2, db2, dwl] = &self.grads;
        let auto = Algorithm::Auto;
        let plain = GemmParams::default();
        let mut enc = ctx
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("digits backward"),
            });
        // Linear layer: d fc.weight = dYᵀ · flat, d flat = dY · fc.weight.
        let tn = plain.with_transpose_a(true);
        ctx.encode_gemm(&mut enc, &ws.dlogits, &ws.flat, None, dwl, false, &tn)?;
        ctx.encode_gemm(&mut enc, &ws.dlogits, wl, None, &ws.dflat, false, &plain)?;
        self.relu.backward(ctx, &mut enc, &ws.h2, &ws.dh2)?;
        // Second convolution: all three gradients.
        ctx.encode_conv2d_backward_input(&mut enc, &ws.dh2, w2, &self.p2, auto, &ws.dh1)?;
        ctx.encode_conv2d_backward_weight(&mut enc, &ws.h1, &ws.dh2, &self.p2, auto, dw2)?;
        ctx.encode_conv2d_backward_bias(&mut enc, &ws.dh2, db2)?;
        self.relu.backward(ctx, &mut enc, &ws.h1, &ws.dh1)?;
        // First convolution: weight and bias (the images need no gradient).
        ctx.encode_conv2d_backward_weight(&mut enc, &ws.x, &ws.dh1, &self.p1, auto, dw1)?;
        ctx.encode_conv2d_backward_bias(&mut enc, &ws.dh1, db1)?;
        ctx.submit(enc)?;
        // The linear bias gradient is the column sum of dY.
        let mut dbl = vec![0f32; CLASSES];
        for row in dlogits.chunks(CLASSES) {
            for (d, v) in dbl.iter_mut().zip(row) {
                *d += v;
            }
        }
        Ok([
            dw1.read()?,
            db1.read()?,
            dw2.read()?,
            db2.read()?,
            dwl.read()?,
            dbl,
        ])
    }

    /// One SGD step on the batch `x`, `labels`: forward, loss, backward, update of the host
    /// and device parameters. Returns the batch's loss and correct count before the update.
    ///
    /// # Errors
    /// Library and shader errors, a non-finite gradient.
    pub fn train_step(
        &mut self,
        ctx: &Context,
        x: &[f32],
        labels: &[usize],
        lr: f32,
        weight_decay: f32,
    ) -> Result<StepStats, BoxError> {
        let logits = self.forward(ctx, x)?;
        let (loss, dlogits, correct) = softmax_xent(&logits, labels);
        let grads = self.backward(ctx, &dlogits)?;
        for (i, g) in grads.iter().enumerate() {
            if g.iter().any(|v| !v.is_finite()) {
                return Err(format!("{}: non-finite gradient", PARAM_NAMES[i]).into());
            }
            sgd(&mut self.params[i], g, lr, weight_decay);
            self.dev[i].write(&self.params[i])?;
        }
        Ok(StepStats { loss, correct })
    }

    /// Accuracy, mean loss and confusion matrix on the images `idx` of `data` (forward
    /// passes of up to 512 images).
    ///
    /// # Errors
    /// Library and shader errors.
    pub fn evaluate(
        &mut self,
        ctx: &Context,
        data: &Digits,
        idx: &[usize],
    ) -> Result<Evaluation, BoxError> {
        let (mut correct, mut loss) = (0usize, 0f64);
        let mut confusion = [[0usize; CLASSES]; CLASSES];
        for chunk in idx.chunks(512) {
            let logits = self.forward(ctx, &data.gather(chunk))?;
            let labels = data.labels_of(chunk);
            let (l, _, c) = softmax_xent(&logits, &labels);
            correct += c;
            loss += l * chunk.len() as f64;
            for (row, &label) in logits.chunks(CLASSES).zip(&labels) {
                confusion[label][argmax(row)] += 1;
            }
        }
        let n = idx.len().max(1);
        Ok(Evaluation {
            accuracy: correct as f32 / n as f32,
            loss: loss / n as f64,
            confusion,
        })
    }
}

/// What [`Net::evaluate`] measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// Fraction classified correctly.
    pub accuracy: f32,
    /// Mean cross-entropy.
    pub loss: f64,
    /// `confusion[label][predicted]` counts.
    pub confusion: [[usize; CLASSES]; CLASSES],
}

/// The confusion matrix as a small table (rows: true digit, columns: predicted).
pub fn format_confusion(confusion: &[[usize; CLASSES]; CLASSES]) -> String {
    let mut s = format!("{:>17}", "true \\ predicted");
    for d in 0..CLASSES {
        s.push_str(&format!("{d:>4}"));
    }
    s.push_str("   recall\n");
    for (d, row) in confusion.iter().enumerate() {
        s.push_str(&format!("{d:>17}"));
        for &c in row {
            if c == 0 {
                s.push_str("   .");
            } else {
                s.push_str(&format!("{c:>4}"));
            }
        }
        let total: usize = row.iter().sum();
        s.push_str(&format!(
            "   {:5.1}%\n",
            100.0 * row[d] as f64 / total.max(1) as f64
        ));
    }
    s
}

// ---------------------------------------------------------------------------------------
// Training
// ---------------------------------------------------------------------------------------

/// Settings of a training run (the command line's values).
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    /// Epochs.
    pub epochs: usize,
    /// Batch size.
    pub batch: usize,
    /// Learning rate of step 0 (cosine decay to 0).
    pub lr: f32,
    /// Weight decay.
    pub weight_decay: f32,
    /// Seed of the initial weights and of the batch order.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 30,
            batch: 32,
            lr: 0.2,
            weight_decay: 1e-3,
            seed: 1,
        }
    }
}

/// Figures of one epoch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpochStats {
    /// Mean training loss of the epoch's steps (each measured before its update).
    pub train_loss: f64,
    /// Training accuracy of the epoch's steps.
    pub train_accuracy: f32,
    /// Test loss after the epoch.
    pub test_loss: f64,
    /// Test accuracy after the epoch.
    pub test_accuracy: f32,
}

/// What a training run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainOutcome {
    /// Loss of every step.
    pub step_losses: Vec<f64>,
    /// Figures of every epoch.
    pub epochs: Vec<EpochStats>,
    /// Steps per epoch.
    pub steps_per_epoch: usize,
    /// Wall-clock seconds of training and evaluation.
    pub seconds: f64,
    /// The test set after the last epoch.
    pub test: Evaluation,
}

impl TrainOutcome {
    /// Test accuracy after the last epoch.
    pub fn test_accuracy(&self) -> f32 {
        self.epochs.last().map_or(0.0, |e| e.test_accuracy)
    }
}

/// Progress of a run, for a progress bar or a log.
#[derive(Clone, Copy, Debug)]
pub enum Progress {
    /// A step finished (`step` counts from 1).
    Step {
        /// Steps done.
        step: usize,
        /// Its loss.
        loss: f64,
    },
    /// An epoch finished (`epoch` counts from 1).
    Epoch {
        /// Epochs done.
        epoch: usize,
        /// Its figures.
        stats: EpochStats,
    },
}

/// Trains the network on the training split of `data` and evaluates it on the test split
/// after every epoch; `progress` sees every step and epoch.
///
/// # Errors
/// Library and shader errors, a batch larger than the training set.
pub fn train(
    ctx: &Context,
    data: &Digits,
    cfg: &TrainConfig,
    progress: &mut dyn FnMut(Progress),
) -> Result<TrainOutcome, BoxError> {
    let (train_idx, test_idx) = split(data.len());
    if cfg.batch == 0 || cfg.batch > train_idx.len() || cfg.epochs == 0 {
        return Err(format!(
            "need at least one epoch and a batch of 1..={} images",
            train_idx.len()
        )
        .into());
    }
    let steps_per_epoch = train_idx.len() / cfg.batch;
    let total = cfg.epochs * steps_per_epoch;
    let mut net = Net::new(ctx, init_params(cfg.seed))?;
    let mut rng = Rng::new(cfg.seed.wrapping_add(1));
    let mut step_losses = Vec::with_capacity(total);
    let mut epochs = Vec::with_capacity(cfg.epochs);
    let mut test = Evaluation {
        accuracy: 0.0,
        loss: f64::NAN,
        confusion: [[0; CLASSES]; CLASSES],
    };
    let start = Instant::now();
    for epoch in 0..cfg.epochs {
        let (mut loss_sum, mut correct) = (0f64, 0usize);
        for idx in epoch_batches(&train_idx, cfg.batch, &mut rng) {
            let lr = cosine_lr(cfg.lr, step_losses.len(), total);
            let s = net.train_step(
                ctx,
                &data.gather(&idx),
                &data.labels_of(&idx),
                lr,
                cfg.weight_decay,
            )?;
            loss_sum += s.loss;
            correct += s.correct;
            step_losses.push(s.loss);
            progress(Progress::Step {
                step: step_losses.len(),
                loss: s.loss,
            });
        }
        let eval = net.evaluate(ctx, data, &test_idx)?;
        let stats = EpochStats {
            train_loss: loss_sum / steps_per_epoch as f64,
            train_accuracy: correct as f32 / (steps_per_epoch * cfg.batch) as f32,
            test_loss: eval.loss,
            test_accuracy: eval.accuracy,
        };
        test = eval;
        epochs.push(stats);
        progress(Progress::Epoch {
            epoch: epoch + 1,
            stats,
        });
        if !stats.train_loss.is_finite() {
            return Err(format!("epoch {}: the loss diverged", epoch + 1).into());
        }
    }
    Ok(TrainOutcome {
        step_losses,
        epochs,
        steps_per_epoch,
        seconds: start.elapsed().as_secs_f64(),
        test,
    })
}

/// Replays a recorded run: from `init`, one SGD step with constant `lr` and `weight_decay`
/// per batch of indices into `data`. Returns every step's loss and the final parameters.
///
/// # Errors
/// Library and shader errors.
pub fn replay(
    ctx: &Context,
    data: &Digits,
    init: Params,
    batches: &[Vec<usize>],
    lr: f32,
    weight_decay: f32,
) -> Result<(Vec<f64>, Params), BoxError> {
    let mut net = Net::new(ctx, init)?;
    let mut losses = Vec::with_capacity(batches.len());
    for idx in batches {
        let s = net.train_step(
            ctx,
            &data.gather(idx),
            &data.labels_of(idx),
            lr,
            weight_decay,
        )?;
        losses.push(s.loss);
    }
    Ok((losses, net.params))
}

// ---------------------------------------------------------------------------------------
// Plot
// ---------------------------------------------------------------------------------------

/// Draws the training curves as SVG: the loss of every step and the per-epoch train / test
/// loss (left), the per-epoch train / test accuracy (right).
///
/// # Errors
/// Drawing errors (as text).
pub fn plot_svg(out: &TrainOutcome, title: &str) -> Result<String, BoxError> {
    use plotters::prelude::*;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 360)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let root = root
            .titled(title, ("sans-serif", 18))
            .map_err(|e| e.to_string())?;
        let (left, right) = root.split_horizontally(480);
        let spe = out.steps_per_epoch.max(1) as f64;
        let epochs = out.epochs.len() as f64;
        let err = |e: &dyn std::fmt::Display| e.to_string();

        let max_loss = out
            .step_losses
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .fold(0.1f64, f64::max);
        let mut chart = ChartBuilder::on(&left)
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(45)
            .caption("cross-entropy", ("sans-serif", 15))
            .build_cartesian_2d(0f64..epochs, (0.003f64..max_loss * 1.2).log_scale())
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_desc("loss (log)")
            .light_line_style(WHITE)
            .draw()
            .map_err(|e| err(&e))?;
        let steps = out
            .step_losses
            .iter()
            .enumerate()
            .map(|(i, &l)| ((i + 1) as f64 / spe, l.max(0.003)));
        chart
            .draw_series(LineSeries::new(
                steps,
                RGBColor(170, 190, 230).stroke_width(1),
            ))
            .map_err(|e| err(&e))?
            .label("train, every step")
            .legend(|(x, y)| {
                PathElement::new(
                    [(x, y), (x + 18, y)],
                    RGBColor(170, 190, 230).stroke_width(2),
                )
            });
        let per_epoch = |f: fn(&EpochStats) -> f64| {
            out.epochs
                .iter()
                .enumerate()
                .map(move |(i, e)| ((i + 1) as f64, f(e).max(0.003)))
        };
        chart
            .draw_series(LineSeries::new(
                per_epoch(|e| e.train_loss),
                BLUE.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label("train, epoch mean")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], BLUE.stroke_width(2)));
        chart
            .draw_series(LineSeries::new(
                per_epoch(|e| e.test_loss),
                RED.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label("test")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], RED.stroke_width(2)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(|e| err(&e))?;

        let lowest = out
            .epochs
            .iter()
            .map(|e| e.test_accuracy.min(e.train_accuracy) as f64 * 100.0)
            .fold(100.0f64, f64::min);
        let floor = (lowest / 10.0).floor() * 10.0;
        let mut chart = ChartBuilder::on(&right)
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(45)
            .caption("accuracy (%)", ("sans-serif", 15))
            .build_cartesian_2d(0f64..epochs, floor.min(90.0)..100.5f64)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .y_desc("%")
            .light_line_style(WHITE)
            .draw()
            .map_err(|e| err(&e))?;
        let acc = |f: fn(&EpochStats) -> f32| {
            out.epochs
                .iter()
                .enumerate()
                .map(move |(i, e)| ((i + 1) as f64, 100.0 * f(e) as f64))
        };
        chart
            .draw_series(LineSeries::new(
                acc(|e| e.train_accuracy),
                BLUE.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label("train (during the epoch)")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], BLUE.stroke_width(2)));
        chart
            .draw_series(LineSeries::new(
                acc(|e| e.test_accuracy),
                RED.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label("test")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], RED.stroke_width(2)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}

// ---------------------------------------------------------------------------------------
// Driver
// ---------------------------------------------------------------------------------------

/// The whole program after argument parsing: trains with a progress bar (unless `quiet`),
/// writes the plot, prints a summary. Returns whether the target accuracy was reached.
///
/// # Errors
/// Data, GPU and plot-writing errors.
pub fn run(ctx: &Context, args: &Args) -> Result<bool, BoxError> {
    let data = load_digits(&args.data)?;
    let (train_idx, test_idx) = split(data.len());
    let cfg = TrainConfig {
        epochs: args.epochs as usize,
        batch: args.batch as usize,
        lr: args.lr,
        weight_decay: args.weight_decay,
        seed: args.seed,
    };
    let steps = cfg.epochs * (train_idx.len() / cfg.batch);
    println!(
        "digits: {} train / {} test images of 8x8; conv 1->{} 3x3, ReLU, conv {}->{} 3x3 \
         stride 2, ReLU, flatten {FEATURES}, linear {FEATURES}->{CLASSES}; SGD lr {} (cosine), \
         weight decay {}, batch {}, {} epochs = {steps} steps",
        train_idx.len(),
        test_idx.len(),
        CHANNELS[0],
        CHANNELS[0],
        CHANNELS[1],
        cfg.lr,
        cfg.weight_decay,
        cfg.batch,
        cfg.epochs
    );
    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(steps as u64)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30.cyan/blue} {pos:>4}/{len} steps  {elapsed_precise}  eta {eta}  {msg}",
        )
        .map_err(|e| e.to_string())?
        .progress_chars("=> "),
    );
    let quiet = args.quiet;
    let out = train(ctx, &data, &cfg, &mut |p| match p {
        Progress::Step { step, loss } => {
            bar.set_position(step as u64);
            bar.set_message(format!("loss {loss:.4}"));
        }
        Progress::Epoch { epoch, stats } if !quiet => bar.suspend(|| {
            println!(
                "epoch {epoch:3}  train loss {:.4}  train {:5.1}%  test loss {:.4}  test {:5.1}%",
                stats.train_loss,
                100.0 * stats.train_accuracy,
                stats.test_loss,
                100.0 * stats.test_accuracy
            )
        }),
        Progress::Epoch { .. } => {}
    });
    bar.finish_and_clear();
    let out = out?;
    let acc = out.test_accuracy();
    let svg = plot_svg(
        &out,
        &format!(
            "wgconv: CNN on scikit-learn digits, {} ({:.1}% test accuracy)",
            ctx.adapter_info().name,
            100.0 * acc
        ),
    )?;
    std::fs::write(&args.plot, svg)
        .map_err(|e| format!("cannot write {}: {e}", args.plot.display()))?;
    let ok = acc >= args.target;
    if !args.quiet {
        print!("{}", format_confusion(&out.test.confusion));
    }
    println!(
        "test accuracy {:.2}% ({} of {}; target {:.0}%) after {} steps in {:.1} s; plot: {}: {}",
        100.0 * acc,
        (acc * test_idx.len() as f32).round(),
        test_idx.len(),
        100.0 * args.target,
        out.step_losses.len(),
        out.seconds,
        args.plot.display(),
        if ok { "reached" } else { "NOT REACHED" }
    );
    Ok(ok)
}

fn main() -> ExitCode {
    let args = Args::parse(); // --help, --version; bad arguments exit with code 2
    let ctx = match Context::new_blocking() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("digits: no WebGPU device: {e}");
            return ExitCode::from(1);
        }
    };
    println!("adapter: {}", ctx.adapter_summary());
    match run(&ctx, &args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("digits: {e}");
            ExitCode::from(1)
        }
    }
}
