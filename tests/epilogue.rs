//! Epilogues (`wgconv::Epilogue`): typed errors for bad constants and residuals (GPU entry
//! points and the CPU reference), every algorithm with every activation and residual position
//! (spread over the cases) against the CPU reference (fused kernels and the elementwise pass alike), bands (the residual
//! follows the output through band copies), and the backward pass through the epilogue.

mod common;

use common::{ctx, tol, Rng};
use wgconv::{
    cpu, Activation, Algorithm, Context, ContextOptions, Conv2dParams, ConvTranspose2dParams,
    Epilogue, ErrorKind, GemmParams, LimitsOverride, Padding, PaddingMode, Residual, Tensor,
};

fn is_invalid(e: &wgconv::Error, name: &str) -> bool {
    matches!(e.kind(), ErrorKind::InvalidParam { name: n, .. } if *n == name)
}

fn is_shape(e: &wgconv::Error, what: &str) -> bool {
    matches!(e.kind(), ErrorKind::ShapeMismatch { what: w, .. } if *w == what)
}

#[test]
fn bad_epilogues_and_residuals_are_typed_errors() {
    let ctx = ctx();
    let (xs, ws) = ([1, 2, 5, 5], [3, 2, 3, 3]);
    let params = Conv2dParams::default().with_padding(Padding::Symmetric([1, 1]));
    let x = Tensor::zeros(ctx, &xs).unwrap();
    let w = Tensor::zeros(ctx, &ws).unwrap();
    let r = Tensor::zeros(ctx, &[1, 3, 5, 5]).unwrap();
    let r_bad = Tensor::zeros(ctx, &[1, 3, 5, 4]).unwrap();
    let a = Algorithm::Auto;
    let run = |ep: Epilogue, r: Option<&Tensor>| ctx.conv2d_fused(&x, &w, None, r, &params, &ep, a);

    let e = run(Epilogue::new(Activation::Clamp { lo: 1.0, hi: 0.0 }), None).unwrap_err();
    assert!(is_invalid(&e, "lo"), "{e}");
    let e = run(
        Epilogue::new(Activation::LeakyRelu { alpha: f32::NAN }),
        None,
    )
    .unwrap_err();
    assert!(is_invalid(&e, "alpha"), "{e}");
    let e = run(
        Epilogue::new(Activation::Clamp {
            lo: 0.0,
            hi: f32::INFINITY,
        }),
        None,
    )
    .unwrap_err();
    assert!(is_invalid(&e, "hi"), "{e}");
    // Residual missing, extra, of the wrong shape.
    let before = Epilogue::new(Activation::Relu).with_residual(Residual::Before);
    let e = run(before, None).unwrap_err();
    assert!(is_invalid(&e, "residual"), "{e}");
    let e = run(Epilogue::new(Activation::Relu), Some(&r)).unwrap_err();
    assert!(is_invalid(&e, "residual"), "{e}");
    let e = run(before, Some(&r_bad)).unwrap_err();
    assert!(is_shape(&e, "residual"), "{e}");
    assert!(run(before, Some(&r)).is_ok());
    // The residual may not be the output itself.
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    let e = ctx
        .encode_conv2d_fused(&mut enc, &x, &w, None, Some(&r), &params, &before, a, &r)
        .unwrap_err();
    assert!(is_invalid(&e, "residual"), "{e}");
    // Transposed and gemm check the same.
    let tp = ConvTranspose2dParams::default();
    let wt = Tensor::zeros(ctx, &[2, 3, 3, 3]).unwrap();
    let e = ctx
        .conv_transpose2d_fused(&x, &wt, None, None, &tp, &before, a)
        .unwrap_err();
    assert!(is_invalid(&e, "residual"), "{e}");
    let (ma, mb) = (
        Tensor::zeros(ctx, &[4, 3]).unwrap(),
        Tensor::zeros(ctx, &[3, 5]).unwrap(),
    );
    let gp = GemmParams::default();
    let e = ctx
        .gemm_fused(&ma, &mb, None, Some(&r), &gp, &before)
        .unwrap_err();
    assert!(is_shape(&e, "residual"), "{e}");
    // Backward: dr without residual, z of the wrong shape.
    let dy = Tensor::zeros(ctx, &[1, 3, 5, 5]).unwrap();
    let (dz, dr) = (
        Tensor::zeros(ctx, &[1, 3, 5, 5]).unwrap(),
        Tensor::zeros(ctx, &[1, 3, 5, 5]).unwrap(),
    );
    let relu = Epilogue::new(Activation::Relu);
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    let e = ctx
        .encode_epilogue_backward(&mut enc, &dy, &r, &relu, &dz, Some(&dr))
        .unwrap_err();
    assert!(is_invalid(&e, "residual"), "{e}");
    let e = ctx
        .encode_epilogue_backward(&mut enc, &dy, &r_bad, &relu, &dz, None)
        .unwrap_err();
    assert!(is_shape(&e, "z"), "{e}");
    let e = ctx
        .encode_epilogue_backward(&mut enc, &dy, &r, &relu, &dy, None)
        .unwrap_err();
    assert!(is_invalid(&e, "dz"), "{e}");
    let e = ctx
        .conv2d_backward_fused(&x, &w, &dy, &r_bad, &relu, false, &params, a)
        .unwrap_err();
    assert!(is_shape(&e, "z"), "{e}");
    // The CPU reference refuses the same.
    let z = vec![0.0; 50];
    let e = cpu::conv2d_fused(&z, xs, &[0.0; 54], ws, None, None, &params, &before).unwrap_err();
    assert!(is_invalid(&e, "residual"), "{e}");
    let e = cpu::conv2d_fused(
        &z,
        xs,
        &[0.0; 54],
        ws,
        None,
        Some(&[0.0; 74]),
        &params,
        &before,
    )
    .unwrap_err();
    assert!(is_shape(&e, "residual"), "{e}");
    let e = cpu::epilogue_backward(&[0.0; 3], &[0.0; 2], &relu).unwrap_err();
    assert!(is_shape(&e, "z"), "{e}");
}

fn abs(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs()).collect()
}

/// Every activation with a residual position, on `ctx`, with every algorithm the context can
/// run the problem with, against the CPU reference.
fn forward_sweep(ctx: &Context, cases: &[([usize; 4], [usize; 4], Conv2dParams)], seed: u64) {
    let mut rng = Rng::new(seed);
    let mut failures = Vec::new();
    let mut runs = 0;
    for (i, (xs, ws, params)) in cases.iter().enumerate() {
        let p = params.resolve(*xs, *ws, Some(ws[0])).unwrap();
        let ys = p.y_shape();
        let x = rng.vec(xs.iter().product());
        let w = rng.vec(ws.iter().product());
        let b = rng.vec(ws[0]);
        let r = rng.vec(ys.iter().product());
        let scale = cpu::conv2d_abs_scale(&p, &abs(&x), &abs(&w), Some(&abs(&b)));
        let (xt, wt, bt, rt) = (
            Tensor::from_slice(ctx, &x, xs).unwrap(),
            Tensor::from_slice(ctx, &w, ws).unwrap(),
            Tensor::from_slice(ctx, &b, &[ws[0]]).unwrap(),
            Tensor::from_slice(ctx, &r, &ys).unwrap(),
        );
        // Each activation on one case (pipelines per activation are compiled, which is slow
        // on lavapipe), the residual positions rotating.
        for (j, &act) in Activation::ALL.iter().enumerate() {
            if j % cases.len() != i {
                continue;
            }
            let res = [Residual::None, Residual::Before, Residual::After][(i + j) % 3];
            let ep = Epilogue::new(act).with_residual(res);
            let rr = (res != Residual::None).then_some(&r[..]);
            let (want, _) = cpu::conv2d_fused(&x, *xs, &w, *ws, Some(&b), rr, params, &ep).unwrap();
            for &a in Algorithm::ALL.iter().chain([&Algorithm::Auto]) {
                if a != Algorithm::Auto && !ctx.can_run_forward(a, &p) {
                    continue;
                }
                let rt = (res != Residual::None).then_some(&rt);
                let got = ctx
                    .conv2d_fused(&xt, &wt, Some(&bt), rt, params, &ep, a)
                    .and_then(|y| y.read())
                    .unwrap();
                runs += 1;
                let len = p.reduction_len() + 2;
                for (k, (&g, &e)) in got.iter().zip(&want).enumerate() {
                    let t = 2.0 * tol(scale[k] + r[k].abs(), len) + 1e-5 * e.abs() + 1e-6;
                    if (g - e).abs() > t || g.is_nan() {
                        failures.push(format!(
                            "case {i} {} {} {}: index {k}: got {g}, want {e}",
                            a.name(),
                            act.name(),
                            res.name()
                        ));
                        break;
                    }
                }
            }
        }
    }
    assert!(runs > 0);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_algorithm_and_activation_matches_the_reference() {
    let pad = |p: usize| Conv2dParams::default().with_padding(Padding::Symmetric([p, p]));
    let cases = [
        ([2, 8, 9, 12], [8, 8, 3, 3], pad(1)),
        ([1, 16, 6, 7], [12, 16, 1, 1], Conv2dParams::default()),
        ([1, 8, 10, 16], [8, 1, 3, 3], pad(1).with_groups(8)),
        (
            [1, 3, 11, 9],
            [5, 3, 5, 5],
            pad(2)
                .with_stride([2, 2])
                .with_padding_mode(PaddingMode::Reflect),
        ),
    ];
    forward_sweep(ctx(), &cases, 19);
}

#[test]
fn the_residual_follows_the_output_through_bands() {
    // Bindings of 2 KiB: outputs of several KiB run in image and row bands.
    let small = Context::with_options_blocking(ContextOptions {
        limits: Some(LimitsOverride {
            max_storage_buffer_binding_size: Some(2048),
            ..Default::default()
        }),
        ..Default::default()
    })
    .expect("GPU test needs a WebGPU adapter");
    let pad = Conv2dParams::default().with_padding(Padding::Symmetric([1, 1]));
    let cases = [
        ([3, 4, 9, 10], [4, 4, 3, 3], pad),
        ([1, 2, 24, 20], [3, 2, 3, 3], pad),
    ];
    forward_sweep(&small, &cases, 23);
}

#[test]
fn backward_through_the_epilogue_matches_the_reference() {
    let ctx = ctx();
    let mut rng = Rng::new(29);
    let (xs, ws) = ([2, 4, 7, 9], [6, 4, 3, 3]);
    let params = Conv2dParams::default().with_padding(Padding::Symmetric([1, 1]));
    let p = params.resolve(xs, ws, None).unwrap();
    let ys = p.y_shape();
    let x = rng.vec(xs.iter().product());
    let w = rng.vec(ws.iter().product());
    let dy = rng.vec(ys.iter().product());
    let z = rng.vec(ys.iter().product());
    let (xt, wt, dyt, zt) = (
        Tensor::from_slice(ctx, &x, &xs).unwrap(),
        Tensor::from_slice(ctx, &w, &ws).unwrap(),
        Tensor::from_slice(ctx, &dy, &ys).unwrap(),
        Tensor::from_slice(ctx, &z, &ys).unwrap(),
    );
    for (j, &act) in Activation::ALL.iter().enumerate() {
        let res = [Residual::None, Residual::Before, Residual::After][j % 3];
        let ep = Epilogue::new(act).with_residual(res);
        let want = cpu::conv2d_grad_fused(&x, xs, &w, ws, &dy, ys, &z, true, &params, &ep).unwrap();
        let got = ctx
            .conv2d_backward_fused(&xt, &wt, &dyt, &zt, &ep, true, &params, Algorithm::Auto)
            .unwrap();
        let pairs = [
            ("dx", got.grads.dx.read().unwrap(), want.grads.dx.clone()),
            ("dw", got.grads.dw.read().unwrap(), want.grads.dw.clone()),
            (
                "db",
                got.grads.db.as_ref().unwrap().read().unwrap(),
                want.grads.db.clone().unwrap(),
            ),
        ];
        for (name, g, e) in pairs {
            let m = e.iter().fold(0f32, |a, v| a.max(v.abs())).max(1.0);
            for (k, (a, b)) in g.iter().zip(&e).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-4 * m,
                    "{} {}: {name}[{k}] got {a} want {b}",
                    act.name(),
                    res.name()
                );
            }
        }
        assert_eq!(got.dr.is_some(), res != Residual::None);
        if let (Some(g), Some(e)) = (&got.dr, &want.dr) {
            let g = g.read().unwrap();
            for (a, b) in g.iter().zip(e) {
                assert!((a - b).abs() <= 1e-5 * b.abs() + 1e-6, "dr {a} vs {b}");
            }
        }
    }
}

/// Epilogues take f32 or f16 tensors, one type per call: every fused entry point refuses
/// operands of mixed element types with a typed `DTypeMismatch` naming the first one that
/// differs from the first operand, before recording anything; all-f16 operands run.
#[test]
fn fused_entry_points_refuse_mixed_element_types() {
    use wgconv::{DType, ErrorKind};
    let ctx = ctx();
    let f16 = |shape: &[usize]| {
        Tensor::from_f32(ctx, &vec![0.5; shape.iter().product()], shape, DType::F16).unwrap()
    };
    let f32t = |shape: &[usize]| {
        Tensor::from_slice(ctx, &vec![0.5; shape.iter().product()], shape).unwrap()
    };
    let mismatch = |r: wgconv::Result<Tensor>, what: &str| {
        let e = r.expect_err("an f16 tensor was accepted");
        assert!(
            matches!(e.kind(), ErrorKind::DTypeMismatch { what: w, .. } if *w == what),
            "{e}"
        );
    };
    let params = Conv2dParams::default();
    let relu = Epilogue::new(Activation::Relu);
    let (xs, ws) = ([1, 2, 5, 5], [3, 2, 3, 3]);
    mismatch(
        ctx.conv2d_fused(
            &f16(&xs),
            &f32t(&ws),
            None,
            None,
            &params,
            &relu,
            Algorithm::Auto,
        ),
        "w",
    );
    mismatch(
        ctx.conv2d_fused(
            &f32t(&xs),
            &f16(&ws),
            None,
            None,
            &params,
            &relu,
            Algorithm::Auto,
        ),
        "w",
    );
    let tp = wgconv::ConvTranspose2dParams::default();
    mismatch(
        ctx.conv_transpose2d_fused(
            &f16(&[1, 3, 3, 3]),
            &f32t(&[3, 2, 3, 3]),
            None,
            None,
            &tp,
            &relu,
            Algorithm::Auto,
        ),
        "w",
    );
    mismatch(
        ctx.gemm_fused(
            &f16(&[4, 5]),
            &f32t(&[5, 6]),
            None,
            None,
            &wgconv::GemmParams::default(),
            &relu,
        ),
        "b",
    );
    // One type per call: f16 throughout runs, and gives an f16 result.
    let y = ctx
        .conv2d_fused(
            &f16(&xs),
            &f16(&ws),
            None,
            None,
            &params,
            &relu,
            Algorithm::Auto,
        )
        .unwrap();
    assert_eq!(y.dtype(), DType::F16);
    assert!(
        y.read().unwrap().iter().all(|&v| v == 4.5),
        "relu(2 * 9 * 0.25)"
    );
}

#[test]
fn unfused_epilogue_pass_gives_the_fused_bits() {
    // dev::set_fused_epilogues(false): the elementwise pass instead of the kernels' store,
    // the same f32 operations in the same order.
    let ctx = wgconv::Context::new_blocking().expect("GPU test needs a WebGPU adapter");
    let mut rng = Rng::new(31);
    let (xs, ws) = ([1usize, 16, 9, 11], [16usize, 16, 3, 3]);
    let x = wgconv::Tensor::from_slice(&ctx, &rng.vec(xs.iter().product()), &xs).unwrap();
    let w = wgconv::Tensor::from_slice(&ctx, &rng.vec(ws.iter().product()), &ws).unwrap();
    let b = wgconv::Tensor::from_slice(&ctx, &rng.vec(16), &[16]).unwrap();
    let p = wgconv::Conv2dParams::default().with_padding(wgconv::Padding::Symmetric([1, 1]));
    for act in [wgconv::Activation::Relu, wgconv::Activation::Gelu] {
        let ep = wgconv::Epilogue::new(act);
        let run = || {
            ctx.conv2d_fused(&x, &w, Some(&b), None, &p, &ep, wgconv::Algorithm::Direct)
                .unwrap()
                .read()
                .unwrap()
        };
        let fused = run();
        wgconv::dev::set_fused_epilogues(&ctx, false);
        let separate = run();
        wgconv::dev::set_fused_epilogues(&ctx, true);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&fused), bits(&separate), "{act:?}");
    }
    let compiled = wgconv::dev::compiled_kernels(&ctx);
    assert!(
        compiled.iter().any(|k| k.starts_with("epilogue")),
        "{compiled:?}"
    );
}
