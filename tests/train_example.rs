//! Tests of `examples/train_filters.rs`, included as a module: argument parsing, the host
//! pieces (Adam, softmax cross-entropy, shape generator), the ReLU shaders of `digits`, the CNN's GPU
//! forward and backward pass against the CPU reference, filter recovery for both variants
//! with a reduced budget, and the full CNN run to >= 95% test accuracy (about 10-15 s on
//! lavapipe).

mod common;

#[path = "../examples/train_filters.rs"]
#[allow(dead_code)]
mod train;

/// The ReLU shaders the `digits` example uses (`train_filters` uses the fused epilogue).
#[path = "../examples/common/relu.rs"]
mod relu;

use clap::Parser;
use common::ctx;
use relu::Relu;
use train::{
    cnn_pass, filter_tasks, make_shapes, softmax_xent, train_cnn, train_filters, Adam, CnnConfig,
    CnnPass, Mode, Options, Rng, CLASSES,
};
use wgconv::{cpu, Conv2dProblem, GemmParams, Tensor};

#[test]
fn parses_arguments() {
    let parse = |a: &[&str]| {
        Options::try_parse_from(std::iter::once("train_filters").chain(a.iter().copied()))
    };
    let opts = |mode, epochs, seed| Options { mode, epochs, seed };
    assert_eq!(parse(&[]).unwrap(), opts(Mode::Filters, None, 1));
    assert_eq!(
        parse(&["--mode", "cnn", "--epochs", "3", "--seed", "9"]).unwrap(),
        opts(Mode::Cnn, Some(3), 9)
    );
    assert_eq!(
        parse(&["--mode=all", "--epochs=2"]).unwrap(),
        opts(Mode::All, Some(2), 1)
    );
    use clap::error::ErrorKind;
    assert_eq!(
        parse(&["--help"]).unwrap_err().kind(),
        ErrorKind::DisplayHelp
    );
    assert_eq!(parse(&["-h"]).unwrap_err().kind(), ErrorKind::DisplayHelp);
    assert_eq!(
        parse(&["--version"]).unwrap_err().kind(),
        ErrorKind::DisplayVersion
    );
    let help = parse(&["--help"]).unwrap_err().to_string();
    for text in [
        "--mode",
        "filters",
        "cnn",
        "all",
        "--epochs",
        "--seed",
        "Exit codes",
    ] {
        assert!(help.contains(text), "{text} missing in --help:\n{help}");
    }
    for bad in [
        &["--mode"][..],
        &["--mode", "gan"],
        &["--epochs", "0"],
        &["--epochs", "-1"],
        &["--epochs", "x"],
        &["--seed", "1.5"],
        &["--frobnicate"],
        &["filters"],
        &["--seed", "1", "--seed", "2"],
    ] {
        let e = parse(bad).expect_err(&format!("{bad:?} should be rejected"));
        // Usage errors: stderr, exit code 2.
        assert_eq!(e.exit_code(), 2, "{bad:?}");
        assert!(e.use_stderr(), "{bad:?}");
    }
}

#[test]
fn adam_minimises_a_quadratic() {
    let mut w = vec![3.0f32, -2.0];
    let mut adam = Adam::new(2);
    for _ in 0..500 {
        let g: Vec<f32> = w.iter().map(|v| 2.0 * (v - 1.0)).collect();
        adam.step(&mut w, &g, 0.05);
    }
    assert!(w.iter().all(|v| (v - 1.0).abs() < 1e-2), "{w:?}");
}

#[test]
fn softmax_xent_gradient_matches_finite_differences() {
    let mut rng = Rng::new(3);
    let logits = rng.vec(4 * 3, 2.0);
    let labels = [0, 2, 1, 2];
    let (loss, grad, _) = softmax_xent(&logits, &labels, 3);
    assert!(loss > 0.0 && loss.is_finite());
    for i in 0..logits.len() {
        let eps = 1e-3;
        let mut p = logits.clone();
        p[i] += eps;
        let mut m = logits.clone();
        m[i] -= eps;
        let fd =
            (softmax_xent(&p, &labels, 3).0 - softmax_xent(&m, &labels, 3).0) / (2.0 * eps as f64);
        assert!(
            (fd - grad[i] as f64).abs() < 1e-4,
            "logit {i}: analytic {} vs numeric {fd}",
            grad[i]
        );
    }
    // Rows of the gradient sum to zero; a confident correct row counts as correct.
    for row in grad.chunks(3) {
        assert!(row.iter().sum::<f32>().abs() < 1e-6);
    }
    let (_, _, correct) = softmax_xent(&[5.0, 0.0, 0.0, 0.0, 0.0, 5.0], &[0, 1], 3);
    assert_eq!(correct, 1);
}

#[test]
fn shape_generator_is_balanced_and_deterministic() {
    let (x, y) = make_shapes(30, 16, &mut Rng::new(1)).expect("shapes");
    assert_eq!(x.len(), 30 * 16 * 16);
    for c in 0..CLASSES.len() {
        assert_eq!(y.iter().filter(|&&l| l == c).count(), 10);
    }
    assert!(x
        .iter()
        .all(|v| v.is_finite() && (-0.11..=1.11).contains(v)));
    // Every image has some ink.
    for img in x.chunks(256) {
        assert!(img.iter().filter(|&&v| v > 0.5).count() >= 5);
    }
    assert_eq!(
        make_shapes(30, 16, &mut Rng::new(1)).expect("shapes"),
        (x, y)
    );
    // Large and small images alike; too small ones are an error, not a panic.
    for size in [train::MIN_SIZE, 20, 32] {
        let (x, _) = make_shapes(9, size, &mut Rng::new(size as u64)).expect("shapes");
        assert_eq!(x.len(), 9 * size * size);
    }
    for size in [0, 1, 5, train::MIN_SIZE - 1] {
        assert!(make_shapes(3, size, &mut Rng::new(1)).is_err());
    }
}

#[test]
fn relu_shaders_match_the_host() {
    let ctx = ctx();
    let relu = Relu::new(ctx).expect("compile the ReLU shaders");
    let mut rng = Rng::new(11);
    // More than 65535 * 256 would need the second dispatch dimension; this size still
    // checks the tail of a partial workgroup.
    let n = 3 * 256 + 17;
    let x = rng.vec(n, 1.0);
    let g = rng.vec(n, 1.0);
    let act = Tensor::from_slice(ctx, &x, &[n]).expect("x");
    let grad = Tensor::from_slice(ctx, &g, &[n]).expect("g");
    let mut enc = ctx
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
    relu.forward(ctx, &mut enc, &act).expect("record relu");
    relu.backward(ctx, &mut enc, &act, &grad)
        .expect("record relu backward");
    ctx.queue().submit([enc.finish()]);
    let want_act: Vec<f32> = x.iter().map(|v| v.max(0.0)).collect();
    let want_grad: Vec<f32> = x
        .iter()
        .zip(&g)
        .map(|(v, d)| if *v > 0.0 { *d } else { 0.0 })
        .collect();
    assert_eq!(act.read().expect("read"), want_act);
    assert_eq!(grad.read().expect("read"), want_grad);
    let other = Tensor::zeros(ctx, &[n + 1]).expect("zeros");
    let mut enc = ctx
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
    assert!(relu.backward(ctx, &mut enc, &act, &other).is_err());
}

/// The CNN forward and backward pass on the host with the CPU reference ops (f64
/// accumulation), for [`cnn_pass_matches_the_cpu_reference`]. Returns the logits and the
/// gradients of `w1, b1, w2, b2, wl, bl`.
fn cpu_cnn(pass: &CnnPass) -> (Vec<f32>, [Vec<f32>; 6]) {
    let [w1, b1, w2, b2, wl, bl] = &pass.params;
    let [c1, c2] = pass.channels;
    let classes = CLASSES.len();
    let n = pass.labels.len();
    let s = pass.size;
    let relu = |v: Vec<f32>| -> Vec<f32> { v.into_iter().map(|a| a.max(0.0)).collect() };
    let (z1, s1) = cpu::conv2d(
        &pass.x,
        [n, 1, s, s],
        w1,
        [c1, 1, 3, 3],
        Some(b1),
        &pass.conv[0],
    )
    .expect("cpu conv 1");
    let h1 = relu(z1);
    let (z2, s2) =
        cpu::conv2d(&h1, s1, w2, [c2, c1, 3, 3], Some(b2), &pass.conv[1]).expect("cpu conv 2");
    let h2 = relu(z2);
    let hw = s2[2] * s2[3];
    let pooled: Vec<f32> = h2
        .chunks(hw)
        .map(|plane| (plane.iter().map(|&v| v as f64).sum::<f64>() / hw as f64) as f32)
        .collect();
    let plain = GemmParams::default();
    let (mut logits, _) = cpu::gemm(&pooled, &[n, c2], wl, &[c2, classes], &plain).expect("gemm");
    for (i, v) in logits.iter_mut().enumerate() {
        *v += bl[i % classes];
    }
    // Backward from the GPU's logits, so that both sides start from the same dY.
    let (_, dlogits, _) = softmax_xent(&pass.logits, &pass.labels, classes);
    let (dwl, _) = cpu::gemm(
        &pooled,
        &[n, c2],
        &dlogits,
        &[n, classes],
        &plain.with_transpose_a(true),
    )
    .expect("gemm");
    let mut dbl = vec![0f32; classes];
    for (i, d) in dlogits.iter().enumerate() {
        dbl[i % classes] += d;
    }
    let (dpooled, _) = cpu::gemm(
        &dlogits,
        &[n, classes],
        wl,
        &[c2, classes],
        &plain.with_transpose_b(true),
    )
    .expect("gemm");
    let dh2: Vec<f32> = (0..h2.len())
        .map(|i| {
            if h2[i] > 0.0 {
                dpooled[i / hw] / hw as f32
            } else {
                0.0
            }
        })
        .collect();
    let p2 = Conv2dProblem::new(s1, [c2, c1, 3, 3], None, &pass.conv[1]).expect("problem 2");
    let dw2 = cpu::conv2d_backward_weight(&p2, &h1, &dh2);
    let db2 = cpu::conv2d_backward_bias(&p2, &dh2);
    let dh1: Vec<f32> = cpu::conv2d_backward_input(&p2, &dh2, w2)
        .into_iter()
        .zip(&h1)
        .map(|(d, &h)| if h > 0.0 { d } else { 0.0 })
        .collect();
    let p1 = Conv2dProblem::new([n, 1, s, s], [c1, 1, 3, 3], None, &pass.conv[0]).expect("p1");
    let dw1 = cpu::conv2d_backward_weight(&p1, &pass.x, &dh1);
    let db1 = cpu::conv2d_backward_bias(&p1, &dh1);
    (logits, [dw1, db1, dw2, db2, dwl, dbl])
}

/// The CNN's GPU forward and backward pass (convolutions and their three gradients, the
/// GEMM linear layer and its gradients, pooling as GEMMs, the ReLU shaders) against the
/// same network computed with the CPU reference.
#[test]
fn cnn_pass_matches_the_cpu_reference() {
    let pass = cnn_pass(ctx(), 5, 6).expect("GPU pass");
    let (logits, grads) = cpu_cnn(&pass);
    let max = |v: &[f32]| v.iter().fold(0f32, |m, a| m.max(a.abs()));
    let err = |a: &[f32], b: &[f32]| {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
    };
    let e = err(&pass.logits, &logits);
    assert!(e <= 1e-5 * max(&logits).max(1.0), "logits differ by {e}");
    let names = ["w1", "b1", "w2", "b2", "wl", "bl"];
    for (i, name) in names.iter().enumerate() {
        let (gpu, cpu) = (&pass.grads[i], &grads[i]);
        let scale = max(cpu);
        assert!(scale > 1e-6, "{name}: the gradient is trivially zero");
        let e = err(gpu, cpu);
        // Both sides round differently (f32 GPU sums vs f64 CPU sums) and a pre-activation
        // within rounding of 0 may fall on different sides of the ReLU kink: allow a small
        // fraction of the gradient's scale.
        assert!(
            e <= 1e-3 * scale + 1e-7,
            "{name}: GPU and CPU gradients differ by {e:e} (scale {scale:e})\nGPU {gpu:?}\nCPU {cpu:?}"
        );
        println!("{name}: max |GPU - CPU| = {e:.2e} (max |grad| {scale:.2e})");
    }
}

/// Both filter-recovery variants with fewer epochs (8 instead of 20) and fewer images
/// still recover the hidden filters to the example's tolerance.
#[test]
fn recovers_hidden_filters() {
    let ctx = ctx();
    for mut task in filter_tasks() {
        task.epochs = 8;
        task.images = 48;
        let out = train_filters(ctx, &task, 7, false).expect("train filters");
        println!(
            "{}: loss {:e} -> {:e}, max weight error {:e}, max bias error {:e}, {:.1} s",
            out.name,
            out.losses[0],
            out.losses[out.losses.len() - 1],
            out.max_weight_err,
            out.max_bias_err,
            out.seconds
        );
        assert_eq!(out.losses.len(), 8);
        assert!(out.converged(), "{}: not recovered: {out:?}", out.name);
        assert!(out.losses[7] < out.losses[0] * 1e-4, "{:?}", out.losses);
    }
}

/// The full CNN run of `--mode cnn` (default configuration and seed): reaches the 95%
/// test-accuracy target; about 10-15 s on lavapipe.
#[test]
fn cnn_reaches_target_accuracy() {
    let out = train_cnn(ctx(), &CnnConfig::default(), 1, true).expect("train the CNN");
    println!("{out:?}");
    let first = out.losses[0];
    let last = out.losses[out.losses.len() - 1];
    assert!(last < first * 0.5, "loss {first} -> {last}");
    assert!(
        out.converged(),
        "test accuracy {:.1}% < {:.0}%",
        100.0 * out.test_accuracy,
        100.0 * train::CnnOutcome::TARGET
    );
}
