//! Training with wgconv's forward and backward passes.
//!
//! * `--mode filters` (default): a hidden bank of filters (8 filters 3x3 over 3 channels,
//!   with bias) turns random images into targets; a randomly initialised conv layer is
//!   trained on them (MSE loss, plain SGD) with the GPU forward and the GPU weight and bias
//!   gradients until it has recovered the hidden filters. Two variants run: stride 1 with
//!   padding 1, and stride 2 with dilation 2 and padding 2. Recovered means
//!   `max |w - w_true| <= 1e-2` and `max |b - b_true| <= 1e-2` (in practice it reaches
//!   f32 precision).
//! * `--mode cnn`: a tiny CNN, conv 3x3 -> ReLU -> conv 3x3 stride 2 -> ReLU -> global
//!   average -> linear, learns to tell generated squares, circles and crosses apart
//!   (softmax cross-entropy, Adam). Converged means at least 95% accuracy on a held-out
//!   test set. (The second ReLU is there because without it conv 2 followed by the
//!   average would collapse into one linear map, up to border effects.)
//! * `--mode all`: both.
//!
//! What runs where: every convolution (forward, input, weight and bias gradients) is a
//! wgconv GPU op; the linear layer is `Context::encode_gemm` forward (`X·W + b`) and
//! backward (`dW = Xᵀ·dY` and `dX = dY·Wᵀ` through the transpose flags); global average
//! pooling and its gradient are GEMMs against a constant `1/HW` vector; ReLU and its
//! gradient are two tiny WGSL shaders written below. The CNN records a whole forward (or
//! backward) pass into one command encoder. The host does the data generation, the MSE /
//! softmax cross-entropy loss and its gradient, and the optimizer step (a few thousand
//! numbers per step).
//!
//! Prints the loss per epoch (with a progress bar on stderr when it is a terminal) and a
//! summary; exits with code 1 when training does not converge (or on any error), 2 on a bad
//! command line (`clap`: `--help`, `--version`, usage errors on stderr).
//!
//! Run: `cargo run --release --example train_filters -- --mode all`

use std::error::Error as StdError;
use std::process::ExitCode;
use std::time::Instant;

use clap::builder::TypedValueParser;
use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use wgconv::{Activation, Algorithm, Context, Conv2dParams, Epilogue, GemmParams, Padding, Tensor};

#[path = "common/rng.rs"]
mod rng;
pub use rng::Rng;

/// Errors of the example: library errors, shader-creation errors, failed sanity checks.
pub type BoxError = Box<dyn StdError>;

// ---------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------

/// Which training runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Recover a hidden filter bank (stride 1, and stride 2 + dilation 2)
    Filters,
    /// Train conv-ReLU-conv-ReLU-average-linear on squares / circles / crosses
    Cnn,
    /// Both
    All,
}

/// The command line.
#[derive(Parser, Clone, Debug, PartialEq, Eq)]
#[command(
    name = "train_filters",
    version,
    about = "Training with wgconv's GPU forward and backward passes: filter recovery and a tiny CNN",
    after_help = "Exit codes: 0 every run converged, 1 one did not (or an error), 2 bad arguments."
)]
pub struct Options {
    /// What to train
    #[arg(long, value_enum, default_value_t = Mode::Filters)]
    pub mode: Mode,
    /// Epochs of every run [default: 20 per filter variant, 30 for the CNN]
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::value_parser!(u64).range(1..=1_000_000).map(|n| n as usize)
    )]
    pub epochs: Option<usize>,
    /// Seed of the data, the hidden filters and the initialisation
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub seed: u64,
}

/// A progress bar over `steps` steps on stderr (drawn only when stderr is a terminal;
/// hidden unless `verbose`); the per-epoch lines are printed through [`ProgressBar::suspend`]
/// so that they stay above it.
pub fn progress_bar(steps: usize, verbose: bool) -> ProgressBar {
    if !verbose {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(steps as u64);
    if let Ok(style) = ProgressStyle::with_template(
        "  {bar:30.cyan/blue} {pos:>5}/{len} steps  {elapsed_precise}  eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

// ---------------------------------------------------------------------------------------
// Small helpers: RNG, Adam, learning-rate schedule
// ---------------------------------------------------------------------------------------

/// Adam (Kingma & Ba) for one parameter tensor, on the host.
#[derive(Clone, Debug)]
pub struct Adam {
    m: Vec<f32>,
    v: Vec<f32>,
    t: i32,
}

impl Adam {
    const BETA1: f32 = 0.9;
    const BETA2: f32 = 0.999;
    const EPS: f32 = 1e-8;

    /// State for `n` parameters.
    pub fn new(n: usize) -> Self {
        Adam {
            m: vec![0.0; n],
            v: vec![0.0; n],
            t: 0,
        }
    }

    /// One update of `w` with gradient `g` and step size `lr`.
    pub fn step(&mut self, w: &mut [f32], g: &[f32], lr: f32) {
        self.t += 1;
        let c1 = 1.0 - Self::BETA1.powi(self.t);
        let c2 = 1.0 - Self::BETA2.powi(self.t);
        for i in 0..w.len() {
            self.m[i] = Self::BETA1 * self.m[i] + (1.0 - Self::BETA1) * g[i];
            self.v[i] = Self::BETA2 * self.v[i] + (1.0 - Self::BETA2) * g[i] * g[i];
            let m = self.m[i] / c1;
            let v = self.v[i] / c2;
            w[i] -= lr * m / (v.sqrt() + Self::EPS);
        }
    }
}

/// Cosine decay from `base` at step 0 to `base * floor` at step `total`.
pub fn cosine_lr(base: f32, floor: f32, step: usize, total: usize) -> f32 {
    let t = step as f32 / total.max(1) as f32;
    base * (floor + (1.0 - floor) * 0.5 * (1.0 + (std::f32::consts::PI * t.min(1.0)).cos()))
}

/// A trainable tensor: host copy, device copy and optimizer state.
struct Param {
    host: Vec<f32>,
    dev: Tensor,
    adam: Adam,
}

impl Param {
    fn new(ctx: &Context, values: Vec<f32>, shape: &[usize]) -> Result<Self, BoxError> {
        let dev = Tensor::from_slice(ctx, &values, shape)?;
        Ok(Param {
            adam: Adam::new(values.len()),
            host: values,
            dev,
        })
    }

    /// Adam step on the host, then the new values are uploaded.
    fn adam(&mut self, ctx: &Context, grad: &[f32], lr: f32) -> Result<(), BoxError> {
        self.check(grad)?;
        self.adam.step(&mut self.host, grad, lr);
        self.upload(ctx);
        Ok(())
    }

    /// Plain gradient-descent step `w -= lr * g` on the host, then the upload.
    fn sgd(&mut self, ctx: &Context, grad: &[f32], lr: f32) -> Result<(), BoxError> {
        self.check(grad)?;
        for (w, g) in self.host.iter_mut().zip(grad) {
            *w -= lr * g;
        }
        self.upload(ctx);
        Ok(())
    }

    /// Writes the host values into the device tensor in place; the write is ordered before
    /// any later submission on the queue.
    fn upload(&self, ctx: &Context) {
        ctx.queue()
            .write_buffer(self.dev.buffer(), 0, bytemuck::cast_slice(&self.host));
    }

    fn check(&self, grad: &[f32]) -> Result<(), BoxError> {
        if grad.len() != self.host.len() || grad.iter().any(|g| !g.is_finite()) {
            return Err(format!(
                "bad gradient: {} values for {} parameters, finite: {}",
                grad.len(),
                self.host.len(),
                grad.iter().all(|g| g.is_finite())
            )
            .into());
        }
        Ok(())
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, |m, d| {
            if d.is_nan() || m.is_nan() {
                f32::NAN
            } else {
                m.max(d)
            }
        })
}

/// Copies the rows `idx` (each `row` values long) of `src` into one batch.
fn gather(src: &[f32], row: usize, idx: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(row * idx.len());
    for &i in idx {
        out.extend_from_slice(&src[i * row..(i + 1) * row]);
    }
    out
}

/// Uploads `data` into an existing tensor of the same size.
fn upload(ctx: &Context, t: &Tensor, data: &[f32]) -> Result<(), BoxError> {
    if data.len() != t.numel() {
        return Err(format!(
            "upload of {} values into a tensor of shape {:?}",
            data.len(),
            t.shape()
        )
        .into());
    }
    ctx.queue()
        .write_buffer(t.buffer(), 0, bytemuck::cast_slice(data));
    Ok(())
}

/// Another shape over the same device buffer (same element count): the library has no
/// reshape, so this wraps a clone of the buffer handle with [`Tensor::from_buffer`].
fn view(ctx: &Context, t: &Tensor, shape: &[usize]) -> Result<Tensor, BoxError> {
    let n: usize = shape.iter().product();
    if n != t.numel() {
        return Err(format!("cannot view {:?} as {shape:?}", t.shape()).into());
    }
    Ok(Tensor::from_buffer(ctx, t.buffer().clone(), shape)?)
}

// ---------------------------------------------------------------------------------------
// Mode 1: filter recovery
// ---------------------------------------------------------------------------------------

/// One filter-recovery problem.
#[derive(Clone, Debug)]
pub struct FilterTask {
    /// Name printed in the log.
    pub name: &'static str,
    /// Number of random images.
    pub images: usize,
    /// Images per SGD step.
    pub batch: usize,
    /// Image shape `[C, H, W]`.
    pub image: [usize; 3],
    /// Hidden (and learned) weight shape `[K, C, R, S]`.
    pub weight: [usize; 4],
    /// Convolution parameters (stride, padding, dilation).
    pub params: Conv2dParams,
    /// Epochs (passes over the images).
    pub epochs: usize,
    /// Gradient-descent step size.
    ///
    /// The loss is a convex quadratic in `(w, b)`: for one filter its Hessian is
    /// `2/K · E[[x;1][x;1]ᵀ]` (the mean runs over the `K` output channels too), i.e. about
    /// `2/(3K)` along the weights (inputs uniform in [-1, 1)) and `2/K` along the bias. A
    /// step of `K/2` therefore contracts the weight error by ~2/3 per step and lands the
    /// bias almost exactly, well inside the stability limit `2/λ_max = K`. With exact
    /// targets the gradient vanishes at the solution, so plain SGD converges linearly,
    /// without any step-size decay.
    pub lr: f32,
}

/// The two variants: stride 1 with padding 1, and stride 2 with dilation 2 and padding 2.
pub fn filter_tasks() -> Vec<FilterTask> {
    vec![
        FilterTask {
            name: "stride 1, pad 1",
            images: 64,
            batch: 16,
            image: [3, 16, 16],
            weight: [8, 3, 3, 3],
            params: Conv2dParams::default().with_padding(Padding::Symmetric([1, 1])),
            epochs: 20,
            lr: 4.0,
        },
        FilterTask {
            name: "stride 2, dilation 2, pad 2",
            images: 64,
            batch: 16,
            image: [3, 19, 19],
            weight: [8, 3, 3, 3],
            params: Conv2dParams::default()
                .with_stride([2, 2])
                .with_dilation([2, 2])
                .with_padding(Padding::Symmetric([2, 2])),
            epochs: 20,
            lr: 4.0,
        },
    ]
}

/// Result of one filter-recovery run.
#[derive(Clone, Debug)]
pub struct FilterOutcome {
    /// The task's name.
    pub name: &'static str,
    /// Mean MSE per epoch (measured during the epoch, before each step's update).
    pub losses: Vec<f64>,
    /// `max |w - w_true|` after training.
    pub max_weight_err: f32,
    /// `max |b - b_true|` after training.
    pub max_bias_err: f32,
    /// Wall-clock time of the training loop.
    pub seconds: f64,
}

impl FilterOutcome {
    /// Tolerance on the recovered weights and biases.
    pub const TOL: f32 = 1e-2;

    /// Were the filters recovered?
    pub fn converged(&self) -> bool {
        // `<=` is false for NaN.
        self.max_weight_err <= Self::TOL && self.max_bias_err <= Self::TOL
    }
}

/// Trains a conv layer to reproduce the hidden filters of `task`.
///
/// # Errors
/// Library errors, and targets that disagree with the CPU reference.
pub fn train_filters(
    ctx: &Context,
    task: &FilterTask,
    seed: u64,
    verbose: bool,
) -> Result<FilterOutcome, BoxError> {
    if task.batch == 0 || task.images == 0 || !task.images.is_multiple_of(task.batch) {
        return Err(format!(
            "{}: {} images are not a whole number of batches of {}",
            task.name, task.images, task.batch
        )
        .into());
    }
    let mut rng = Rng::new(seed);
    let [c, h, w] = task.image;
    let ws = task.weight;
    let k = ws[0];
    let wn: usize = ws.iter().product();
    let x_all = rng.vec(task.images * c * h * w, 1.0);
    let w_true = rng.vec(wn, 1.0);
    let b_true = rng.vec(k, 0.5);

    // Targets from the hidden bank with the GPU forward, cross-checked once against the
    // CPU reference so that "recovered" means "recovered PyTorch's semantics".
    let xs = [task.images, c, h, w];
    let x_dev = Tensor::from_slice(ctx, &x_all, &xs)?;
    let wt_dev = Tensor::from_slice(ctx, &w_true, &ws)?;
    let bt_dev = Tensor::from_slice(ctx, &b_true, &[k])?;
    let y_dev = ctx.conv2d(&x_dev, &wt_dev, Some(&bt_dev), &task.params)?;
    let targets = y_dev.read()?;
    let (reference, y_shape) =
        wgconv::cpu::conv2d(&x_all, xs, &w_true, ws, Some(&b_true), &task.params)?;
    let target_err = max_abs_diff(&targets, &reference);
    if target_err.is_nan() || target_err > 1e-4 {
        return Err(format!(
            "{}: GPU targets differ from the CPU reference by {target_err:e}",
            task.name
        )
        .into());
    }
    let x_row = c * h * w;
    let y_row = y_shape[1] * y_shape[2] * y_shape[3];

    // The student: a fresh random layer.
    let bound = (1.0 / (ws[1] * ws[2] * ws[3]) as f32).sqrt();
    let mut wp = Param::new(ctx, rng.vec(wn, bound), &ws)?;
    let mut bp = Param::new(ctx, vec![0.0; k], &[k])?;
    let xb = Tensor::zeros(ctx, &[task.batch, c, h, w])?;

    if verbose {
        println!(
            "filters [{}]: x {:?} -> y {:?}, w {:?}, {} images, batch {}, {} epochs, SGD lr {}",
            task.name,
            [task.batch, c, h, w],
            [task.batch, y_shape[1], y_shape[2], y_shape[3]],
            ws,
            task.images,
            task.batch,
            task.epochs,
            task.lr
        );
    }
    let steps_per_epoch = task.images / task.batch;
    let mut order: Vec<usize> = (0..task.images).collect();
    let mut losses = Vec::with_capacity(task.epochs);
    let bar = progress_bar(task.epochs * steps_per_epoch, verbose);
    let start = Instant::now();
    for epoch in 0..task.epochs {
        rng.shuffle(&mut order);
        let mut epoch_loss = 0f64;
        for idx in order.chunks(task.batch) {
            upload(ctx, &xb, &gather(&x_all, x_row, idx))?;
            let t = gather(&targets, y_row, idx);
            // Forward on the GPU, MSE and its gradient on the host.
            let y = ctx
                .conv2d(&xb, &wp.dev, Some(&bp.dev), &task.params)?
                .read()?;
            let scale = 2.0 / y.len() as f32;
            let mut loss = 0f64;
            let dy: Vec<f32> = y
                .iter()
                .zip(&t)
                .map(|(a, b)| {
                    let d = a - b;
                    loss += (d as f64) * (d as f64);
                    scale * d
                })
                .collect();
            epoch_loss += loss / y.len() as f64;
            // Weight and bias gradients on the GPU.
            let dy_dev =
                Tensor::from_slice(ctx, &dy, &[task.batch, y_shape[1], y_shape[2], y_shape[3]])?;
            let dw = ctx
                .conv2d_backward_weight(&xb, &dy_dev, ws, &task.params, Algorithm::Auto)?
                .read()?;
            let db = ctx.conv2d_backward_bias(&dy_dev)?.read()?;
            wp.sgd(ctx, &dw, task.lr)?;
            bp.sgd(ctx, &db, task.lr)?;
            bar.inc(1);
        }
        let loss = epoch_loss / steps_per_epoch as f64;
        losses.push(loss);
        if verbose {
            bar.suspend(|| {
                println!(
                    "  epoch {:3}  loss {:.3e}  max|w - w_true| {:.2e}",
                    epoch + 1,
                    loss,
                    max_abs_diff(&wp.host, &w_true)
                )
            });
        }
        if !loss.is_finite() {
            break;
        }
    }
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    // Errors of the device copies (what the GPU actually computes with).
    let max_weight_err = max_abs_diff(&wp.dev.read()?, &w_true);
    let max_bias_err = max_abs_diff(&bp.dev.read()?, &b_true);
    Ok(FilterOutcome {
        name: task.name,
        losses,
        max_weight_err,
        max_bias_err,
        seconds,
    })
}

// ---------------------------------------------------------------------------------------
// Mode 2: tiny CNN on generated shapes
// ---------------------------------------------------------------------------------------

/// Smallest image side [`make_shapes`] accepts.
pub const MIN_SIZE: usize = 12;

/// Names of the classes, by label.
pub const CLASSES: [&str; 3] = ["square", "circle", "cross"];

/// `count` images of `size`x`size` pixels (one channel), equally many of each class, in
/// random order: filled squares, filled disks and plus-shaped crosses of random size,
/// position and brightness, on noise. Returns the pixels (`[count, 1, size, size]`) and
/// the labels.
///
/// # Errors
/// `size` below [`MIN_SIZE`].
pub fn make_shapes(
    count: usize,
    size: usize,
    rng: &mut Rng,
) -> Result<(Vec<f32>, Vec<usize>), BoxError> {
    if size < MIN_SIZE {
        return Err(format!(
            "images of {size}x{size} are too small for the shapes (minimum {MIN_SIZE})"
        )
        .into());
    }
    let mut labels: Vec<usize> = (0..count).map(|i| i % CLASSES.len()).collect();
    rng.shuffle(&mut labels);
    let mut pixels = Vec::with_capacity(count * size * size);
    let s = size as f32;
    for &label in &labels {
        let mut img = vec![0f32; size * size];
        let ink = rng.uniform(0.6, 1.0);
        let inside: Box<dyn Fn(usize, usize) -> bool> = match label {
            0 => {
                let side = 4 + rng.below(size / 2 - 2);
                let x0 = 1 + rng.below(size - side - 1);
                let y0 = 1 + rng.below(size - side - 1);
                Box::new(move |x, y| (x0..x0 + side).contains(&x) && (y0..y0 + side).contains(&y))
            }
            1 => {
                let r = rng.uniform(2.5, s / 4.0 + 0.5);
                let cx = rng.uniform(r + 1.0, s - r - 1.0);
                let cy = rng.uniform(r + 1.0, s - r - 1.0);
                Box::new(move |x, y| {
                    let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
                    dx * dx + dy * dy <= r * r
                })
            }
            _ => {
                let arm = 2 + rng.below(size / 4);
                let thick = 1 + rng.below(2);
                let lo = arm + 1;
                let span = size - 2 * arm - thick - 1;
                let cx = lo + rng.below(span);
                let cy = lo + rng.below(span);
                Box::new(move |x, y| {
                    let in_x = x + arm >= cx && x < cx + thick + arm;
                    let in_y = y + arm >= cy && y < cy + thick + arm;
                    let bar_x = (cx..cx + thick).contains(&x);
                    let bar_y = (cy..cy + thick).contains(&y);
                    (bar_y && in_x) || (bar_x && in_y)
                })
            }
        };
        for y in 0..size {
            for x in 0..size {
                let base = if inside(x, y) { ink } else { 0.0 };
                img[y * size + x] = base + rng.uniform(-0.1, 0.1);
            }
        }
        pixels.extend_from_slice(&img);
    }
    Ok((pixels, labels))
}

/// Softmax cross-entropy over `classes` logits per row. Returns the mean loss, its
/// gradient w.r.t. the logits (already divided by the batch size) and the number of rows
/// whose arg-max is the label.
pub fn softmax_xent(logits: &[f32], labels: &[usize], classes: usize) -> (f64, Vec<f32>, usize) {
    let n = labels.len();
    let mut loss = 0f64;
    let mut grad = vec![0f32; logits.len()];
    let mut correct = 0;
    for (i, &label) in labels.iter().enumerate() {
        let row = &logits[i * classes..(i + 1) * classes];
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exps: Vec<f64> = row.iter().map(|&v| ((v - max) as f64).exp()).collect();
        let sum: f64 = exps.iter().sum();
        loss += sum.ln() - (row[label] - max) as f64;
        for j in 0..classes {
            let p = exps[j] / sum;
            let target = if j == label { 1.0 } else { 0.0 };
            grad[i * classes + j] = ((p - target) / n as f64) as f32;
        }
        let arg = (0..classes).fold(0, |b, j| if row[j] > row[b] { j } else { b });
        if arg == label {
            correct += 1;
        }
    }
    (loss / n as f64, grad, correct)
}

/// Settings of the CNN run.
#[derive(Clone, Debug)]
pub struct CnnConfig {
    /// Image side (pixels).
    pub size: usize,
    /// Training images (a multiple of 3).
    pub train: usize,
    /// Test images.
    pub test: usize,
    /// Images per step.
    pub batch: usize,
    /// Channels after the first and second convolution.
    pub channels: [usize; 2],
    /// Epochs.
    pub epochs: usize,
    /// Adam step size at the start (cosine decay to 10% of it).
    pub lr: f32,
}

impl Default for CnnConfig {
    fn default() -> Self {
        CnnConfig {
            size: 16,
            train: 480,
            test: 240,
            batch: 32,
            channels: [8, 16],
            epochs: 30,
            lr: 0.03,
        }
    }
}

/// Result of the CNN run.
#[derive(Clone, Debug)]
pub struct CnnOutcome {
    /// Mean training loss per epoch.
    pub losses: Vec<f64>,
    /// Training accuracy per epoch (during the epoch).
    pub train_accuracy: Vec<f32>,
    /// Accuracy on the held-out test set after training.
    pub test_accuracy: f32,
    /// Wall-clock time of the training loop and the evaluation.
    pub seconds: f64,
}

impl CnnOutcome {
    /// Required test accuracy.
    pub const TARGET: f32 = 0.95;

    /// Did the CNN reach the target accuracy?
    pub fn converged(&self) -> bool {
        self.test_accuracy >= Self::TARGET
    }
}

/// The CNN's parameters.
struct Cnn {
    w1: Param,
    b1: Param,
    w2: Param,
    b2: Param,
    wl: Param,
    bl: Param,
    p1: Conv2dParams,
    p2: Conv2dParams,
    channels: [usize; 2],
    size: usize,
}

/// Device buffers of one batch size: activations, their gradients, parameter gradients.
struct Workspace {
    n: usize,
    x: Tensor,
    h1: Tensor,
    h2: Tensor,
    /// `h2` as `[n * c2, H * W]` rows for the pooling GEMM.
    h2_rows: Tensor,
    /// Pooled features `[n * c2, 1]`, also viewed as `[n, c2]` for the linear layer.
    pooled_col: Tensor,
    pooled: Tensor,
    logits: Tensor,
    dlogits: Tensor,
    dpooled: Tensor,
    dpooled_col: Tensor,
    dh2: Tensor,
    dh2_rows: Tensor,
    dh1: Tensor,
    /// Gradients at the pre-activations of the two conv layers (through the ReLU).
    dz2: Tensor,
    dz1: Tensor,
    dw1: Tensor,
    db1: Tensor,
    dw2: Tensor,
    db2: Tensor,
    dwl: Tensor,
}

impl Workspace {
    fn new(ctx: &Context, net: &Cnn, n: usize) -> Result<Self, BoxError> {
        let [c1, c2] = net.channels;
        let s = net.size;
        let [_, _, oh, ow] = net.h2_shape(n)?;
        let hw = oh * ow;
        let h2 = Tensor::zeros(ctx, &[n, c2, oh, ow])?;
        let dh2 = Tensor::zeros(ctx, &[n, c2, oh, ow])?;
        let pooled_col = Tensor::zeros(ctx, &[n * c2, 1])?;
        let dpooled = Tensor::zeros(ctx, &[n, c2])?;
        Ok(Workspace {
            n,
            x: Tensor::zeros(ctx, &[n, 1, s, s])?,
            h1: Tensor::zeros(ctx, &[n, c1, s, s])?,
            h2_rows: view(ctx, &h2, &[n * c2, hw])?,
            h2,
            pooled: view(ctx, &pooled_col, &[n, c2])?,
            pooled_col,
            logits: Tensor::zeros(ctx, &[n, CLASSES.len()])?,
            dlogits: Tensor::zeros(ctx, &[n, CLASSES.len()])?,
            dpooled_col: view(ctx, &dpooled, &[n * c2, 1])?,
            dpooled,
            dh2_rows: view(ctx, &dh2, &[n * c2, hw])?,
            dh2,
            dh1: Tensor::zeros(ctx, &[n, c1, s, s])?,
            dz2: Tensor::zeros(ctx, &[n, c2, oh, ow])?,
            dz1: Tensor::zeros(ctx, &[n, c1, s, s])?,
            dw1: Tensor::zeros(ctx, net.w1.dev.shape())?,
            db1: Tensor::zeros(ctx, &[c1])?,
            dw2: Tensor::zeros(ctx, net.w2.dev.shape())?,
            db2: Tensor::zeros(ctx, &[c2])?,
            dwl: Tensor::zeros(ctx, net.wl.dev.shape())?,
        })
    }
}

/// Constant vectors for global average pooling as a GEMM.
struct Pooling {
    /// `[HW, 1]` of `1/HW`: `pooled = h2_rows · avg_col`.
    avg_col: Tensor,
    /// `[1, HW]` of `1/HW`: `dh2_rows = dpooled_col · avg_row`.
    avg_row: Tensor,
}

impl Pooling {
    fn new(ctx: &Context, net: &Cnn) -> Result<Self, BoxError> {
        let [_, _, oh, ow] = net.h2_shape(1)?;
        let pixels = oh * ow;
        let inv = 1.0 / pixels as f32;
        Ok(Pooling {
            avg_col: Tensor::full(ctx, &[pixels, 1], inv)?,
            avg_row: Tensor::full(ctx, &[1, pixels], inv)?,
        })
    }
}

impl Cnn {
    fn new(ctx: &Context, cfg: &CnnConfig, rng: &mut Rng) -> Result<Self, BoxError> {
        let [c1, c2] = cfg.channels;
        let classes = CLASSES.len();
        // He-uniform for the ReLU layers, Glorot-uniform for the linear layer.
        let he = |fan_in: usize| (6.0 / fan_in as f32).sqrt();
        let same = Conv2dParams::default().with_padding(Padding::Symmetric([1, 1]));
        Ok(Cnn {
            w1: Param::new(ctx, rng.vec(c1 * 9, he(9)), &[c1, 1, 3, 3])?,
            b1: Param::new(ctx, vec![0.0; c1], &[c1])?,
            w2: Param::new(ctx, rng.vec(c2 * c1 * 9, he(c1 * 9)), &[c2, c1, 3, 3])?,
            b2: Param::new(ctx, vec![0.0; c2], &[c2])?,
            wl: Param::new(
                ctx,
                rng.vec(c2 * classes, (6.0 / (c2 + classes) as f32).sqrt()),
                &[c2, classes],
            )?,
            bl: Param::new(ctx, vec![0.0; classes], &[classes])?,
            p1: same,
            p2: same.with_stride([2, 2]),
            channels: cfg.channels,
            size: cfg.size,
        })
    }

    /// Shape of the second convolution's output for a batch of `n`.
    fn h2_shape(&self, n: usize) -> Result<[usize; 4], BoxError> {
        let [c1, c2] = self.channels;
        let h1 = [n, c1, self.size, self.size];
        Ok(self.p2.output_shape(h1, [c2, c1, 3, 3])?)
    }

    /// Records the forward pass of the batch in `ws.x` into one encoder, submits it and
    /// returns the logits.
    fn forward(&self, ctx: &Context, pool: &Pooling, ws: &Workspace) -> Result<Vec<f32>, BoxError> {
        let auto = Algorithm::Auto;
        let gemm = GemmParams::default();
        let mut enc = ctx
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("cnn forward"),
            });
        // conv + bias + ReLU in one call each (the ReLU fused into the kernels' store).
        let relu = Epilogue::new(Activation::Relu);
        ctx.encode_conv2d_fused(
            &mut enc,
            &ws.x,
            &self.w1.dev,
            Some(&self.b1.dev),
            None,
            &self.p1,
            &relu,
            auto,
            &ws.h1,
        )?;
        ctx.encode_conv2d_fused(
            &mut enc,
            &ws.h1,
            &self.w2.dev,
            Some(&self.b2.dev),
            None,
            &self.p2,
            &relu,
            auto,
            &ws.h2,
        )?;
        // Global average pooling: [n*c2, HW] · [HW, 1].
        ctx.encode_gemm(
            &mut enc,
            &ws.h2_rows,
            &pool.avg_col,
            None,
            &ws.pooled_col,
            false,
            &gemm,
        )?;
        // Linear layer: [n, c2] · [c2, classes] + b.
        ctx.encode_gemm(
            &mut enc,
            &ws.pooled,
            &self.wl.dev,
            Some(&self.bl.dev),
            &ws.logits,
            false,
            &gemm,
        )?;
        ctx.queue().submit([enc.finish()]);
        Ok(ws.logits.read()?)
    }

    /// The parameters, in the order of [`Cnn::backward`]'s gradients.
    fn params_mut(&mut self) -> [&mut Param; 6] {
        [
            &mut self.w1,
            &mut self.b1,
            &mut self.w2,
            &mut self.b2,
            &mut self.wl,
            &mut self.bl,
        ]
    }

    /// Records the backward pass for `dlogits` (the gradient of the loss w.r.t. the logits
    /// of the batch last run forward in `ws`) into one encoder, submits it, and returns the
    /// gradients of `w1, b1, w2, b2, wl, bl`.
    fn backward(
        &self,
        ctx: &Context,
        pool: &Pooling,
        ws: &Workspace,
        dlogits: &[f32],
    ) -> Result<[Vec<f32>; 6], BoxError> {
        let auto = Algorithm::Auto;
        let plain = GemmParams::default();
        upload(ctx, &ws.dlogits, dlogits)?;
        let mut enc = ctx
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("cnn backward"),
            });
        // Linear layer: dW = Xᵀ·dY, dX = dY·Wᵀ.
        ctx.encode_gemm(
            &mut enc,
            &ws.pooled,
            &ws.dlogits,
            None,
            &ws.dwl,
            false,
            &plain.with_transpose_a(true),
        )?;
        ctx.encode_gemm(
            &mut enc,
            &ws.dlogits,
            &self.wl.dev,
            None,
            &ws.dpooled,
            false,
            &plain.with_transpose_b(true),
        )?;
        // Pooling: every pixel gets dpooled / HW.
        ctx.encode_gemm(
            &mut enc,
            &ws.dpooled_col,
            &pool.avg_row,
            None,
            &ws.dh2_rows,
            false,
            &plain,
        )?;
        // Through the ReLU: dz = dh * (h > 0), from the saved output (one elementwise pass).
        let relu = Epilogue::new(Activation::Relu);
        ctx.encode_epilogue_backward(&mut enc, &ws.dh2, &ws.h2, &relu, &ws.dz2, None)?;
        // Second convolution: all three gradients.
        ctx.encode_conv2d_backward_input(&mut enc, &ws.dz2, &self.w2.dev, &self.p2, auto, &ws.dh1)?;
        ctx.encode_conv2d_backward_weight(&mut enc, &ws.h1, &ws.dz2, &self.p2, auto, &ws.dw2)?;
        ctx.encode_conv2d_backward_bias(&mut enc, &ws.dz2, &ws.db2)?;
        ctx.encode_epilogue_backward(&mut enc, &ws.dh1, &ws.h1, &relu, &ws.dz1, None)?;
        // First convolution: weight and bias (its input needs no gradient).
        ctx.encode_conv2d_backward_weight(&mut enc, &ws.x, &ws.dz1, &self.p1, auto, &ws.dw1)?;
        ctx.encode_conv2d_backward_bias(&mut enc, &ws.dz1, &ws.db1)?;
        ctx.queue().submit([enc.finish()]);

        // The linear bias gradient is the column sum of dY.
        let classes = CLASSES.len();
        let mut dbl = vec![0f32; classes];
        for row in dlogits.chunks(classes) {
            for (d, v) in dbl.iter_mut().zip(row) {
                *d += v;
            }
        }
        Ok([
            ws.dw1.read()?,
            ws.db1.read()?,
            ws.dw2.read()?,
            ws.db2.read()?,
            ws.dwl.read()?,
            dbl,
        ])
    }

    /// One Adam step on every parameter.
    fn adam_step(&mut self, ctx: &Context, grads: &[Vec<f32>; 6], lr: f32) -> Result<(), BoxError> {
        for (p, g) in self.params_mut().into_iter().zip(grads) {
            p.adam(ctx, g, lr)?;
        }
        Ok(())
    }
}

/// The workspace for batch size `n`, created on first use.
fn workspace<'a>(
    ctx: &Context,
    net: &Cnn,
    cache: &'a mut Vec<Workspace>,
    n: usize,
) -> Result<&'a Workspace, BoxError> {
    let pos = match cache.iter().position(|w| w.n == n) {
        Some(p) => p,
        None => {
            cache.push(Workspace::new(ctx, net, n)?);
            cache.len() - 1
        }
    };
    Ok(&cache[pos])
}

/// Trains the CNN on generated shapes and measures its test accuracy.
///
/// # Errors
/// Library and shader errors, an empty data set.
pub fn train_cnn(
    ctx: &Context,
    cfg: &CnnConfig,
    seed: u64,
    verbose: bool,
) -> Result<CnnOutcome, BoxError> {
    if cfg.train == 0 || cfg.test == 0 || cfg.batch == 0 {
        return Err("the CNN needs training images, test images and a batch size".into());
    }
    let mut rng = Rng::new(seed);
    let row = cfg.size * cfg.size;
    let (train_x, train_y) = make_shapes(cfg.train, cfg.size, &mut rng)?;
    let (test_x, test_y) = make_shapes(cfg.test, cfg.size, &mut rng)?;
    let mut net = Cnn::new(ctx, cfg, &mut rng)?;
    let pool = Pooling::new(ctx, &net)?;
    let [_, _, oh, ow] = net.h2_shape(1)?;
    let mut cache = Vec::new();
    if verbose {
        println!(
            "cnn: {}x{} images of {:?}, {} train / {} test; conv 1->{} 3x3 pad 1, ReLU, \
             conv {}->{} 3x3 stride 2 pad 1, ReLU, global average over {oh}x{ow}, linear {}->{}; \
             batch {}, {} epochs, Adam lr {}",
            cfg.size,
            cfg.size,
            CLASSES,
            cfg.train,
            cfg.test,
            cfg.channels[0],
            cfg.channels[0],
            cfg.channels[1],
            cfg.channels[1],
            CLASSES.len(),
            cfg.batch,
            cfg.epochs,
            cfg.lr
        );
    }
    let steps_per_epoch = cfg.train.div_ceil(cfg.batch);
    let total = cfg.epochs * steps_per_epoch;
    let mut order: Vec<usize> = (0..cfg.train).collect();
    let mut losses = Vec::new();
    let mut train_accuracy = Vec::new();
    let bar = progress_bar(total, verbose);
    let start = Instant::now();
    let mut step = 0;
    for epoch in 0..cfg.epochs {
        let t0 = Instant::now();
        rng.shuffle(&mut order);
        let (mut loss_sum, mut correct) = (0f64, 0usize);
        for idx in order.chunks(cfg.batch) {
            let ws = workspace(ctx, &net, &mut cache, idx.len())?;
            upload(ctx, &ws.x, &gather(&train_x, row, idx))?;
            let labels: Vec<usize> = idx.iter().map(|&i| train_y[i]).collect();
            let logits = net.forward(ctx, &pool, ws)?;
            let (loss, dlogits, ok) = softmax_xent(&logits, &labels, CLASSES.len());
            loss_sum += loss * idx.len() as f64;
            correct += ok;
            let lr = cosine_lr(cfg.lr, 0.1, step, total);
            let grads = net.backward(ctx, &pool, ws, &dlogits)?;
            net.adam_step(ctx, &grads, lr)?;
            step += 1;
            bar.inc(1);
        }
        let loss = loss_sum / cfg.train as f64;
        let acc = correct as f32 / cfg.train as f32;
        losses.push(loss);
        train_accuracy.push(acc);
        if verbose {
            bar.suspend(|| {
                println!(
                    "  epoch {:3}  loss {:.4}  train accuracy {:5.1}%  ({:.1} s)",
                    epoch + 1,
                    loss,
                    100.0 * acc,
                    t0.elapsed().as_secs_f64()
                )
            });
        }
        if !loss.is_finite() {
            break;
        }
    }
    bar.finish_and_clear();
    // Test accuracy.
    let test_idx: Vec<usize> = (0..cfg.test).collect();
    let mut correct = 0;
    let mut confusion = [[0usize; 3]; 3];
    for idx in test_idx.chunks(cfg.batch) {
        let ws = workspace(ctx, &net, &mut cache, idx.len())?;
        upload(ctx, &ws.x, &gather(&test_x, row, idx))?;
        let labels: Vec<usize> = idx.iter().map(|&i| test_y[i]).collect();
        let logits = net.forward(ctx, &pool, ws)?;
        let (_, _, ok) = softmax_xent(&logits, &labels, CLASSES.len());
        correct += ok;
        for (i, &label) in labels.iter().enumerate() {
            let r = &logits[i * 3..i * 3 + 3];
            let arg = (0..3).fold(0, |b, j| if r[j] > r[b] { j } else { b });
            confusion[label][arg] += 1;
        }
    }
    let test_accuracy = correct as f32 / cfg.test as f32;
    if verbose {
        println!("  test confusion (rows: true {CLASSES:?}; columns: predicted): {confusion:?}");
    }
    Ok(CnnOutcome {
        losses,
        train_accuracy,
        test_accuracy,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// One forward and backward pass of a small random CNN on the GPU, with everything needed
/// to recompute it independently (see `tests/train_example.rs`, which checks it against
/// the CPU reference).
#[derive(Clone, Debug)]
pub struct CnnPass {
    /// Image side.
    pub size: usize,
    /// Channels after each convolution.
    pub channels: [usize; 2],
    /// Parameters of the first and second convolution.
    pub conv: [Conv2dParams; 2],
    /// Input images `[n, 1, size, size]`.
    pub x: Vec<f32>,
    /// Their labels.
    pub labels: Vec<usize>,
    /// `w1, b1, w2, b2, wl, bl`.
    pub params: [Vec<f32>; 6],
    /// The GPU logits `[n, 3]`.
    pub logits: Vec<f32>,
    /// The GPU gradients of the mean cross-entropy, in the order of `params`.
    pub grads: [Vec<f32>; 6],
}

/// Runs [`CnnPass`] for a network with random weights and biases on `n` generated
/// images.
///
/// # Errors
/// Library and shader errors.
pub fn cnn_pass(ctx: &Context, seed: u64, n: usize) -> Result<CnnPass, BoxError> {
    let cfg = CnnConfig {
        size: MIN_SIZE,
        channels: [4, 6],
        ..CnnConfig::default()
    };
    let mut rng = Rng::new(seed);
    let (x, labels) = make_shapes(n, cfg.size, &mut rng)?;
    let mut net = Cnn::new(ctx, &cfg, &mut rng)?;
    // Non-zero biases, so that their gradients and the ReLU masks are not trivial.
    for p in [&mut net.b1, &mut net.b2, &mut net.bl] {
        p.host = rng.vec(p.host.len(), 0.1);
        p.upload(ctx);
    }
    let pool = Pooling::new(ctx, &net)?;
    let ws = Workspace::new(ctx, &net, n)?;
    upload(ctx, &ws.x, &x)?;
    let logits = net.forward(ctx, &pool, &ws)?;
    let (_, dlogits, _) = softmax_xent(&logits, &labels, CLASSES.len());
    let grads = net.backward(ctx, &pool, &ws, &dlogits)?;
    let params = net.params_mut().map(|p| p.host.clone());
    Ok(CnnPass {
        size: cfg.size,
        channels: cfg.channels,
        conv: [net.p1, net.p2],
        x,
        labels,
        params,
        logits,
        grads,
    })
}

// ---------------------------------------------------------------------------------------
// Driver
// ---------------------------------------------------------------------------------------

/// Runs what `opts` asks for, printing the logs and a summary. Returns whether every run
/// converged.
///
/// # Errors
/// Context creation and training errors.
pub fn run(ctx: &Context, opts: &Options) -> Result<bool, BoxError> {
    let mut summary = Vec::new();
    let mut ok = true;
    if matches!(opts.mode, Mode::Filters | Mode::All) {
        for mut task in filter_tasks() {
            if let Some(e) = opts.epochs {
                task.epochs = e;
            }
            let out = train_filters(ctx, &task, opts.seed, true)?;
            let first = out.losses.first().copied().unwrap_or(f64::NAN);
            let last = out.losses.last().copied().unwrap_or(f64::NAN);
            let line = format!(
                "filters [{}]: loss {first:.3e} -> {last:.3e}, max|w - w_true| = {:.2e}, \
                 max|b - b_true| = {:.2e} (tolerance {:.0e}), {:.1} s: {}",
                out.name,
                out.max_weight_err,
                out.max_bias_err,
                FilterOutcome::TOL,
                out.seconds,
                if out.converged() {
                    "recovered"
                } else {
                    "NOT RECOVERED"
                }
            );
            println!("{line}");
            ok &= out.converged();
            summary.push(line);
        }
    }
    if matches!(opts.mode, Mode::Cnn | Mode::All) {
        let mut cfg = CnnConfig::default();
        if let Some(e) = opts.epochs {
            cfg.epochs = e;
        }
        let out = train_cnn(ctx, &cfg, opts.seed, true)?;
        let first = out.losses.first().copied().unwrap_or(f64::NAN);
        let last = out.losses.last().copied().unwrap_or(f64::NAN);
        let line = format!(
            "cnn: loss {first:.4} -> {last:.4}, train accuracy {:.1}%, test accuracy {:.1}% \
             (target {:.0}%), {:.1} s: {}",
            100.0 * out.train_accuracy.last().copied().unwrap_or(0.0),
            100.0 * out.test_accuracy,
            100.0 * CnnOutcome::TARGET,
            out.seconds,
            if out.converged() {
                "converged"
            } else {
                "NOT CONVERGED"
            }
        );
        println!("{line}");
        ok &= out.converged();
        summary.push(line);
    }
    println!("\nsummary:");
    for line in &summary {
        println!("  {line}");
    }
    Ok(ok)
}

fn main() -> ExitCode {
    let opts = Options::parse(); // --help, --version; bad arguments exit with code 2
    let ctx = match Context::new_blocking() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: no WebGPU device: {e}");
            return ExitCode::from(1);
        }
    };
    println!("adapter: {}", ctx.adapter_summary());
    match run(&ctx, &opts) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("training did not converge");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
