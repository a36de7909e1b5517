//! The pool of tensor buffers: the allocating calls make their results from the buffers of
//! dropped tensors, so a layer in a loop allocates nothing, and the stale contents of a
//! reused buffer never show; tensors a caller's encoder binds never go to the pool.

mod common;

use common::Rng;
use wgconv::{
    cpu, dev, Activation, Algorithm, Context, ContextOptions, Conv2dParams, ConvTranspose2dParams,
    Epilogue, GemmParams, Operation, Padding, Residual, Tensor,
};

fn fresh_ctx() -> Context {
    match Context::with_options_blocking(ContextOptions {
        autotune: Some(false),
        ..Default::default()
    }) {
        Ok(c) => c,
        Err(e) => panic!("GPU test needs a WebGPU adapter and found none: {e}"),
    }
}

fn upload(ctx: &Context, rng: &mut Rng, shape: &[usize]) -> Tensor {
    Tensor::from_slice(ctx, &rng.vec(shape.iter().product()), shape).unwrap()
}

/// Runs `call` (after a warm-up call), fills its results with NaN and drops them, runs it
/// again (its results must now come from those buffers: no device allocation) and checks
/// the two runs agree bit for bit: an element the call does not write would keep the
/// warm-up's value (0, from a new buffer) the first time and NaN the second.
fn check_reuse(ctx: &Context, label: &str, call: &dyn Fn() -> Vec<Tensor>) {
    // The steady path: a first call may run a stand-in kernel with other scratch.
    drop(call());
    ctx.wait_for_tuning();
    let first = call();
    let want: Vec<Vec<f32>> = first.iter().map(|t| t.read().unwrap()).collect();
    for t in &first {
        t.write(&vec![f32::NAN; t.numel()]).unwrap();
    }
    drop(first);
    ctx.synchronize().unwrap();
    let before = dev::pool_stats(ctx).device_allocations;
    let second = call();
    ctx.synchronize().unwrap();
    assert_eq!(
        dev::pool_stats(ctx).device_allocations,
        before,
        "{label}: the second call allocated (its results should reuse the first's buffers)"
    );
    for (i, (t, w)) in second.iter().zip(&want).enumerate() {
        let got = t.read().unwrap();
        assert!(
            w.iter().all(|v| v.is_finite()),
            "{label}: result {i} not finite"
        );
        let same = got.iter().zip(w).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(
            same,
            "{label}: result {i} differs after reuse (stale contents showed)"
        );
    }
}

/// Layers of the shapes the entries special-case: strided 1x1 (the input gradient written
/// in place on every other row and column), 3x3 with groups, depthwise, and a 5x5 kernel.
fn layers() -> Vec<([usize; 4], [usize; 4], Conv2dParams)> {
    let pad = |p: usize| Conv2dParams::default().with_padding(Padding::Symmetric([p, p]));
    vec![
        (
            [2, 16, 10, 12],
            [24, 16, 1, 1],
            Conv2dParams::default().with_stride([2, 2]),
        ),
        ([1, 16, 9, 10], [24, 8, 3, 3], pad(1).with_groups(2)),
        ([1, 16, 12, 12], [16, 1, 3, 3], pad(1).with_groups(16)),
        ([1, 8, 13, 11], [8, 8, 5, 5], pad(2).with_stride([2, 1])),
    ]
}

#[test]
fn reused_buffers_never_show_stale_contents() {
    let ctx = fresh_ctx();
    let mut rng = Rng::new(7);
    for (xs, ws, params) in layers() {
        let p = params.resolve(xs, ws, Some(ws[0])).unwrap();
        let x = upload(&ctx, &mut rng, &xs);
        let w = upload(&ctx, &mut rng, &ws);
        let b = upload(&ctx, &mut rng, &[ws[0]]);
        let dy = upload(&ctx, &mut rng, &p.y_shape());
        let algos: Vec<Algorithm> = std::iter::once(Algorithm::Auto)
            .chain(Algorithm::ALL.iter().copied())
            .collect();
        for algo in algos {
            let runs = |op| ctx.check_algorithm(op, algo, &p).is_ok();
            let label = format!("{xs:?} {ws:?} {}", algo.name());
            if runs(Operation::Forward) {
                check_reuse(&ctx, &format!("{label} conv2d"), &|| {
                    vec![ctx.conv2d_with(&x, &w, Some(&b), &params, algo).unwrap()]
                });
                let ep = Epilogue::new(Activation::Relu).with_residual(Residual::Before);
                let y = ctx.conv2d_with(&x, &w, None, &params, algo).unwrap();
                check_reuse(&ctx, &format!("{label} conv2d_fused"), &|| {
                    let r = Some(&y);
                    vec![(ctx.conv2d_fused(&x, &w, Some(&b), r, &params, &ep, algo)).unwrap()]
                });
            }
            if runs(Operation::InputGrad) && runs(Operation::WeightGrad) {
                check_reuse(&ctx, &format!("{label} conv2d_backward"), &|| {
                    let g = ctx
                        .conv2d_backward(&x, &w, &dy, true, &params, algo)
                        .unwrap();
                    vec![g.dx, g.dw, g.db.expect("bias")]
                });
                check_reuse(&ctx, &format!("{label} conv2d_backward_fused"), &|| {
                    let ep = Epilogue::new(Activation::LeakyRelu { alpha: 0.1 });
                    let g = ctx
                        .conv2d_backward_fused(&x, &w, &dy, &dy, &ep, true, &params, algo)
                        .unwrap();
                    vec![g.grads.dx, g.grads.dw]
                });
            }
            if runs(Operation::InputGrad) {
                check_reuse(&ctx, &format!("{label} conv2d_backward_input"), &|| {
                    let dx = ctx.conv2d_backward_input(&dy, &w, xs, &params, algo);
                    vec![dx.unwrap()]
                });
            }
            if runs(Operation::WeightGrad) {
                check_reuse(&ctx, &format!("{label} conv2d_backward_weight"), &|| {
                    let dw = ctx.conv2d_backward_weight(&x, &dy, ws, &params, algo);
                    vec![dw.unwrap()]
                });
            }
        }
        check_reuse(&ctx, "conv2d_backward_bias", &|| {
            vec![ctx.conv2d_backward_bias(&dy).unwrap()]
        });
    }
    // Transposed convolution (its bias lands on pixels no input reaches) and GEMM.
    let tx = upload(&ctx, &mut rng, &[1, 8, 5, 6]);
    let tw = upload(&ctx, &mut rng, &[8, 6, 3, 3]);
    let tb = upload(&ctx, &mut rng, &[6]);
    let tparams = ConvTranspose2dParams::default().with_stride([3, 2]);
    check_reuse(&ctx, "conv_transpose2d", &|| {
        let y = ctx.conv_transpose2d(&tx, &tw, Some(&tb), &tparams, Algorithm::Auto);
        vec![y.unwrap()]
    });
    let a = upload(&ctx, &mut rng, &[19, 33]);
    let bm = upload(&ctx, &mut rng, &[33, 21]);
    check_reuse(&ctx, "gemm", &|| {
        vec![ctx.gemm(&a, &bm, &GemmParams::default()).unwrap()]
    });
    // And the results are right, not only stable.
    let (xs, ws, params) = layers().remove(0);
    let mut rng = Rng::new(8);
    let (xv, wv) = (rng.vec(xs.iter().product()), rng.vec(ws.iter().product()));
    let (x, w) = (
        Tensor::from_slice(&ctx, &xv, &xs).unwrap(),
        Tensor::from_slice(&ctx, &wv, &ws).unwrap(),
    );
    for _ in 0..3 {
        let y = ctx.conv2d(&x, &w, None, &params).unwrap().read().unwrap();
        let want = cpu::conv2d(&xv, xs, &wv, ws, None, &params).unwrap().0;
        let err = y
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(err < 1e-4, "conv2d after reuse: max error {err}");
    }
}

#[test]
fn a_loop_of_allocating_calls_allocates_nothing() {
    let ctx = fresh_ctx();
    let mut rng = Rng::new(9);
    let (xs, ws, params) = layers().remove(0);
    let p = params.resolve(xs, ws, Some(ws[0])).unwrap();
    let x = upload(&ctx, &mut rng, &xs);
    let w = upload(&ctx, &mut rng, &ws);
    let b = upload(&ctx, &mut rng, &[ws[0]]);
    let dy = upload(&ctx, &mut rng, &p.y_shape());
    let step = || {
        let y = ctx.conv2d(&x, &w, Some(&b), &params).unwrap();
        let g = ctx
            .conv2d_backward(&x, &w, &dy, true, &params, Algorithm::Auto)
            .unwrap();
        drop((y, g));
    };
    step();
    ctx.wait_for_tuning();
    step();
    ctx.synchronize().unwrap();
    let (bytes, stats) = (ctx.allocated_bytes(), dev::pool_stats(&ctx));
    for _ in 0..10 {
        step();
    }
    ctx.synchronize().unwrap();
    let after = dev::pool_stats(&ctx);
    assert_eq!(after.device_allocations, stats.device_allocations);
    assert_eq!(after.bind_groups_created, stats.bind_groups_created);
    assert_eq!(ctx.allocated_bytes(), bytes);
    // The idle results are pooled bytes, and `release_scratch` frees them.
    assert!(ctx.pooled_bytes() >= 4 * (p.y_shape().iter().product::<usize>()) as u64);
    ctx.release_scratch();
    assert_eq!(ctx.pooled_bytes(), 0);
    let held = 4 * (x.numel() + w.numel() + b.numel() + dy.numel()) as u64;
    assert_eq!(ctx.allocated_bytes(), held + ctx.weight_cache_bytes());
}

#[test]
fn tensors_a_callers_encoder_binds_are_never_pooled() {
    let ctx = fresh_ctx();
    let mut rng = Rng::new(10);
    let (xs, ws, params) = layers().remove(1);
    let p = params.resolve(xs, ws, None).unwrap();
    let (xv, wv) = (rng.vec(xs.iter().product()), rng.vec(ws.iter().product()));
    let w = Tensor::from_slice(&ctx, &wv, &ws).unwrap();
    let want = cpu::conv2d(&xv, xs, &wv, ws, None, &params).unwrap().0;
    // x and y bound by the caller's encoder and dropped before it is submitted: the
    // commands still read x and write into y's buffer when submitted, so neither buffer may
    // become another tensor meanwhile.
    let keep = Tensor::zeros(&ctx, &p.y_shape()).unwrap();
    let mut enc = ctx
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
    let c = xs[1];
    let mut eye = vec![0.0; c * c];
    for i in 0..c {
        eye[i * c + i] = 1.0;
    }
    let eye = Tensor::from_slice(&ctx, &eye, &[c, c, 1, 1]).unwrap();
    let x0 = Tensor::from_slice(&ctx, &xv, &xs).unwrap();
    let p1 = Conv2dParams::default();
    {
        // Results of allocating calls (the tensors the pool takes back): x an exact copy
        // of x0 (a 1x1 identity convolution), y any tensor of y's shape.
        let x = ctx.conv2d(&x0, &eye, None, &p1).unwrap();
        let y = ctx.conv2d(&x0, &w, None, &params).unwrap();
        ctx.encode_conv2d(&mut enc, &x, &w, None, &params, Algorithm::Auto, &y)
            .unwrap();
        enc.copy_buffer_to_buffer(y.buffer(), 0, keep.buffer(), 0, 4 * y.numel() as u64);
        let pooled = ctx.pooled_bytes();
        drop((x, y));
        assert_eq!(
            ctx.pooled_bytes(),
            pooled,
            "a caller-bound tensor went to the pool"
        );
    }
    // Allocating calls of the same sizes meanwhile make new buffers, and their results
    // stay theirs after the caller's submission.
    let x2 = Tensor::from_slice(&ctx, &vec![0.5; xs.iter().product()], &xs).unwrap();
    let y2 = ctx.conv2d(&x2, &w, None, &params).unwrap();
    let y2v = y2.read().unwrap();
    ctx.submit(enc).unwrap();
    assert_eq!(
        y2.read().unwrap(),
        y2v,
        "the caller's commands wrote another tensor"
    );
    let got = keep.read().unwrap();
    let err = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(err < 1e-4, "the caller's result: max error {err}");
    // A buffer handed out by `Tensor::buffer` may be bound anywhere: never pooled either.
    let t = ctx.conv2d(&x0, &eye, None, &p1).unwrap();
    ctx.synchronize().unwrap();
    let _ = t.buffer();
    let pooled = ctx.pooled_bytes();
    drop(t);
    assert_eq!(ctx.pooled_bytes(), pooled);
    // An allocating call's own results are pooled when dropped; tensors the caller makes
    // are freed.
    drop(y2);
    assert!(ctx.pooled_bytes() > pooled);
    let pooled = ctx.pooled_bytes();
    drop(x2);
    assert_eq!(ctx.pooled_bytes(), pooled);
}
