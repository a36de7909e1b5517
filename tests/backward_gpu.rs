//! Gradients and transposed convolution on the GPU vs the CPU reference: seeded sweeps over
//! every forward parameter (padding modes, stride, dilation, groups, depthwise, flip) and
//! every algorithm; determinism; typed errors.

mod common;

use common::{check, conv_sweep, ctx, tol, ConvCase, Rng};
use wgconv::{cpu, Algorithm, ConvTranspose2dParams, ErrorKind, Operation, Tensor};

fn abs(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs()).collect()
}

/// `Auto` and every algorithm that runs all of `ops` on `p` on the test context.
fn algos(p: &wgconv::Conv2dProblem, ops: &[Operation]) -> Vec<Algorithm> {
    let mut v: Vec<Algorithm> = Algorithm::ALL
        .iter()
        .copied()
        .filter(|&a| {
            ops.iter()
                .all(|&op| ctx().check_algorithm(op, a, p).is_ok())
        })
        .collect();
    v.push(Algorithm::Auto);
    v
}

/// A forced algorithm the library says cannot run an operation refuses with
/// `UnsupportedAlgorithm` (it never runs something else).
fn assert_refused(r: wgconv::Result<()>, what: &str) -> Result<(), String> {
    match r {
        Err(e) if matches!(e.kind(), ErrorKind::UnsupportedAlgorithm { .. }) => Ok(()),
        Err(e) => Err(format!("{what}: refused with the wrong error: {e}")),
        Ok(()) => Err(format!("{what}: ran although check_algorithm refused it")),
    }
}

fn run_grads(i: usize, case: &ConvCase, rng: &mut Rng) -> Result<usize, String> {
    let ctx = ctx();
    let p = &case.problem;
    let integer = rng.range(0, 3) == 0;
    let gen = |rng: &mut Rng, n: usize| if integer { rng.int_vec(n) } else { rng.vec(n) };
    let x = gen(rng, p.x_shape().iter().product());
    let w = gen(rng, p.w_shape().iter().product());
    let dy = gen(rng, p.y_shape().iter().product());
    let want_dx = cpu::conv2d_backward_input(p, &dy, &w);
    let want_dw = cpu::conv2d_backward_weight(p, &x, &dy);
    let want_db = cpu::conv2d_backward_bias(p, &dy);
    let tols = |want: &[f32], scale: Vec<f32>, len: usize| -> Vec<f32> {
        if integer {
            vec![0.0; want.len()]
        } else {
            scale.iter().map(|&s| tol(s, len)).collect()
        }
    };
    let dx_tol = tols(
        &want_dx,
        cpu::conv2d_backward_input(p, &abs(&dy), &abs(&w)),
        p.k_per_group() * p.r() * p.s(),
    );
    let dw_tol = tols(
        &want_dw,
        cpu::conv2d_backward_weight(p, &abs(&x), &abs(&dy)),
        p.n() * p.oh() * p.ow(),
    );
    let db_tol = tols(
        &want_db,
        cpu::conv2d_backward_bias(p, &abs(&dy)),
        p.n() * p.oh() * p.ow(),
    );
    let err = |e: wgconv::Error| format!("case {i} {case:?}: {e}");
    let xt = Tensor::from_slice(ctx, &x, &p.x_shape()).map_err(err)?;
    let wt = Tensor::from_slice(ctx, &w, &p.w_shape()).map_err(err)?;
    let dyt = Tensor::from_slice(ctx, &dy, &p.y_shape()).map_err(err)?;
    let mut runs = 0;
    for algo in std::iter::once(Algorithm::Auto).chain(Algorithm::ALL.iter().copied()) {
        let label = format!("case {i} algo {} {case:?}", algo.name());
        let dx_ok = ctx.check_algorithm(Operation::InputGrad, algo, p).is_ok();
        let dw_ok = ctx.check_algorithm(Operation::WeightGrad, algo, p).is_ok();
        // Outputs poisoned with NaN so unwritten elements show.
        let dx = Tensor::full(ctx, &p.x_shape(), f32::NAN).map_err(err)?;
        let dw = Tensor::full(ctx, &p.w_shape(), f32::NAN).map_err(err)?;
        let db = Tensor::full(ctx, &[p.k()], f32::NAN).map_err(err)?;
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        let r = ctx.encode_conv2d_backward_input(&mut enc, &dyt, &wt, &case.params, algo, &dx);
        if dx_ok {
            r.map_err(err)?;
        } else {
            assert_refused(r, &format!("dx {label}"))?;
        }
        let r = ctx.encode_conv2d_backward_weight(&mut enc, &xt, &dyt, &case.params, algo, &dw);
        if dw_ok {
            r.map_err(err)?;
        } else {
            assert_refused(r, &format!("dw {label}"))?;
        }
        ctx.encode_conv2d_backward_bias(&mut enc, &dyt, &db)
            .map_err(err)?;
        ctx.queue().submit([enc.finish()]);
        if dx_ok {
            check(
                &format!("dx {label}"),
                &dx.read().map_err(err)?,
                &want_dx,
                &dx_tol,
            )?;
        }
        if dw_ok {
            check(
                &format!("dw {label}"),
                &dw.read().map_err(err)?,
                &want_dw,
                &dw_tol,
            )?;
        }
        check(
            &format!("db {label}"),
            &db.read().map_err(err)?,
            &want_db,
            &db_tol,
        )?;
        runs += dx_ok as usize + dw_ok as usize;
    }
    Ok(runs)
}

#[test]
fn gradients_match_cpu_on_sweep_every_algorithm() {
    let cases = conv_sweep(0x5eed_0003, 320, 150_000);
    let mut rng = Rng::new(21);
    let mut failures = Vec::new();
    let mut runs = 0;
    for (i, case) in cases.iter().enumerate() {
        match run_grads(i, case, &mut rng) {
            Ok(n) => runs += n,
            Err(e) => failures.push(e),
        }
    }
    for f in failures.iter().take(15) {
        eprintln!("{f}");
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed",
        failures.len(),
        cases.len()
    );
    assert!(
        runs >= 2 * 3 * 300,
        "ran {runs} (case, algorithm, gradient) triples"
    );
}

fn random_transpose(
    rng: &mut Rng,
) -> Option<([usize; 4], [usize; 4], bool, ConvTranspose2dParams)> {
    let g = rng.pick(&[1, 1, 2, 3]);
    let depthwise = rng.range(0, 4) == 0;
    let (cin, cout_g) = if depthwise {
        (g * rng.range(1, 2), 1)
    } else {
        (g * rng.range(1, 6), rng.range(1, 6))
    };
    let (r, s) = (rng.range(1, 4), rng.range(1, 4));
    let stride = [rng.range(1, 3), rng.range(1, 3)];
    let dilation = [rng.range(1, 3), rng.range(1, 3)];
    let padding = [rng.range(0, 2), rng.range(0, 2)];
    let op = |st: usize, d: usize, rng: &mut Rng| rng.range(0, st.max(d) - 1);
    let output_padding = [
        op(stride[0], dilation[0], rng),
        op(stride[1], dilation[1], rng),
    ];
    let params = ConvTranspose2dParams {
        stride,
        padding,
        output_padding,
        dilation,
        groups: g,
    };
    let x = [rng.range(1, 2), cin, rng.range(1, 9), rng.range(1, 9)];
    let w = [cin, cout_g, r, s];
    let bias = rng.bool();
    params.resolve(x, w, bias.then_some(cout_g * g)).ok()?;
    Some((x, w, bias, params))
}

#[test]
fn conv_transpose2d_matches_cpu_every_algorithm() {
    let ctx = ctx();
    let mut rng = Rng::new(77);
    let mut done = 0;
    let mut op_ge_stride = 0;
    while done < 320 {
        let Some((xs, ws, bias, params)) = random_transpose(&mut rng) else {
            continue;
        };
        let tp = params
            .resolve(xs, ws, bias.then_some(ws[1] * params.groups))
            .unwrap();
        if params
            .output_padding
            .iter()
            .zip(params.stride)
            .any(|(&o, s)| o >= s)
        {
            op_ge_stride += 1;
        }
        let x = rng.vec(xs.iter().product());
        let w = rng.vec(ws.iter().product());
        let b = bias.then(|| rng.vec(tp.y_shape()[1]));
        let (want, shape) = cpu::conv_transpose2d(&x, xs, &w, ws, b.as_deref(), &params).unwrap();
        let ab = b.as_ref().map(|b| abs(b));
        let (scale, _) =
            cpu::conv_transpose2d(&abs(&x), xs, &abs(&w), ws, ab.as_deref(), &params).unwrap();
        let tols: Vec<f32> = scale
            .iter()
            .map(|&s| tol(s, ws[0] * ws[2] * ws[3]))
            .collect();
        let xt = Tensor::from_slice(ctx, &x, &xs).unwrap();
        let wt = Tensor::from_slice(ctx, &w, &ws).unwrap();
        let bt = b
            .as_ref()
            .map(|b| Tensor::from_slice(ctx, b, &[b.len()]).unwrap());
        for algo in algos(&tp.conv(), &[Operation::Transposed]) {
            let y = Tensor::full(ctx, &shape, f32::NAN).unwrap();
            let mut enc = ctx.device().create_command_encoder(&Default::default());
            ctx.encode_conv_transpose2d(&mut enc, &xt, &wt, bt.as_ref(), &params, algo, &y)
                .unwrap_or_else(|e| panic!("{params:?} {xs:?} {ws:?}: {e}"));
            ctx.queue().submit([enc.finish()]);
            check(
                &format!("{} {params:?} x{xs:?} w{ws:?} bias {bias}", algo.name()),
                &y.read().unwrap(),
                &want,
                &tols,
            )
            .unwrap();
        }
        done += 1;
    }
    assert!(
        op_ge_stride > 10,
        "output_padding >= stride (< dilation) covered {op_ge_stride} times"
    );
}

#[test]
fn gradients_are_deterministic() {
    let ctx = ctx();
    let mut rng = Rng::new(5);
    let cases = conv_sweep(0x5eed_0004, 40, 200_000);
    for case in &cases {
        let p = &case.problem;
        let x =
            Tensor::from_slice(ctx, &rng.vec(p.x_shape().iter().product()), &p.x_shape()).unwrap();
        let w =
            Tensor::from_slice(ctx, &rng.vec(p.w_shape().iter().product()), &p.w_shape()).unwrap();
        let dy =
            Tensor::from_slice(ctx, &rng.vec(p.y_shape().iter().product()), &p.y_shape()).unwrap();
        for algo in algos(p, &[Operation::InputGrad, Operation::WeightGrad]) {
            if algo == Algorithm::Auto {
                // Auto is deterministic once its choice is settled: tuning (in the background
                // by default) may replace the heuristic's choice by another algorithm, whose
                // results differ in the rounding. Settle it first.
                ctx.warm_up(&[Operation::InputGrad, Operation::WeightGrad], &[*p])
                    .unwrap();
                ctx.wait_for_tuning();
            }
            let a = ctx
                .conv2d_backward(&x, &w, &dy, true, &case.params, algo)
                .unwrap();
            let b = ctx
                .conv2d_backward(&x, &w, &dy, true, &case.params, algo)
                .unwrap();
            let bits = |t: &Tensor| {
                t.read()
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect::<Vec<_>>()
            };
            assert_eq!(bits(&a.dx), bits(&b.dx), "dx {}", algo.name());
            assert_eq!(bits(&a.dw), bits(&b.dw), "dw {}", algo.name());
            assert_eq!(
                bits(a.db.as_ref().unwrap()),
                bits(b.db.as_ref().unwrap()),
                "db {}",
                algo.name()
            );
        }
    }
}

#[test]
fn backward_shape_errors_are_typed() {
    let ctx = ctx();
    let t = |s: &[usize]| Tensor::zeros(ctx, s).unwrap();
    let p = wgconv::Conv2dParams::default();
    let is = |r: wgconv::Result<Tensor>| {
        matches!(
            r.unwrap_err().kind(),
            ErrorKind::ShapeMismatch { .. } | ErrorKind::InvalidParam { .. }
        )
    };
    // dy with the wrong spatial size / channel count.
    assert!(is(ctx.conv2d_backward_input(
        &t(&[1, 4, 5, 5]),
        &t(&[4, 3, 3, 3]),
        [1, 3, 8, 8],
        &p,
        Algorithm::Auto
    )));
    assert!(is(ctx.conv2d_backward_input(
        &t(&[1, 5, 6, 6]),
        &t(&[4, 3, 3, 3]),
        [1, 3, 8, 8],
        &p,
        Algorithm::Auto
    )));
    assert!(is(ctx.conv2d_backward_weight(
        &t(&[1, 3, 8, 8]),
        &t(&[1, 4, 5, 6]),
        [4, 3, 3, 3],
        &p,
        Algorithm::Auto
    )));
    assert!(is(ctx.conv2d_backward_weight(
        &t(&[1, 3, 8, 8]),
        &t(&[1, 4, 6, 6]),
        [4, 2, 3, 3],
        &p,
        Algorithm::Auto
    )));
    assert!(is(ctx.conv2d_backward_bias(&t(&[4, 6, 6]))));
    // Transposed: output_padding >= stride and >= dilation.
    let tp = ConvTranspose2dParams::default()
        .with_stride([2, 2])
        .with_output_padding([2, 0]);
    assert!(is(ctx.conv_transpose2d(
        &t(&[1, 3, 4, 4]),
        &t(&[3, 2, 3, 3]),
        None,
        &tp,
        Algorithm::Auto
    )));
    // Forced 1x1 algorithm on a 3x3 problem.
    let r = ctx.conv2d_backward_input(
        &t(&[1, 4, 6, 6]),
        &t(&[4, 3, 3, 3]),
        [1, 3, 8, 8],
        &p,
        Algorithm::Gemm1x1,
    );
    assert!(matches!(
        r.unwrap_err().kind(),
        ErrorKind::UnsupportedAlgorithm { .. }
    ));
}

/// The depthwise weight-gradient kernels (the image variant on CPU adapters: every left
/// padding 0..=4 and kernel width it takes, row stride and dilation, multipliers, flip,
/// several images and bands; and the buffer variant for the shapes the image one refuses)
/// against the CPU reference, forced and auto, with dw poisoned with NaN.
#[test]
fn depthwise_weight_gradient_matches_cpu() {
    use wgconv::{Conv2dParams, Padding};
    let ctx = ctx();
    let mut rng = Rng::new(77);
    let mut cases = Vec::new();
    for (s, pl) in [
        (1, 0),
        (3, 0),
        (3, 1),
        (3, 2),
        (5, 2),
        (5, 4),
        (7, 3),
        (7, 2),
        (4, 1),
    ] {
        // [n, c, h, w], multiplier, kernel rows, row stride, row dilation, flip
        cases.push(([2, 3, 9, 16], 1, 3, 1, 1, s, pl, false));
        cases.push(([1, 4, 13, 8], 2, 2, 2, 1, s, pl, true));
        cases.push(([3, 2, 6, 12], 3, 3, 1, 2, s, pl, false));
    }
    // Shapes the image variant refuses: W or OW not a multiple of 4.
    cases.push(([2, 3, 9, 10], 1, 3, 1, 1, 3, 1, false));
    cases.push(([1, 5, 40, 33], 1, 5, 1, 1, 5, 2, true));
    let mut checked = 0;
    for (xs, mult, r, sh, dh, s, pl, flip) in cases {
        let c = xs[1];
        let pr = (s - 1 - pl).min(4);
        let params = Conv2dParams::default()
            .with_groups(c)
            .with_stride([sh, 1])
            .with_dilation([dh, 1])
            .with_padding(Padding::PerSide([r / 2, r / 2, pl, pr]))
            .with_flip(flip);
        let ws = [c * mult, 1, r, s];
        let Ok(p) = params.resolve(xs, ws, None) else {
            continue;
        };
        let x = rng.vec(xs.iter().product());
        let dy = rng.vec(p.y_shape().iter().product());
        let want = cpu::conv2d_backward_weight(&p, &x, &dy);
        let scale = cpu::conv2d_backward_weight(&p, &abs(&x), &abs(&dy));
        let tols: Vec<f32> = scale
            .iter()
            .map(|&v| tol(v, p.n() * p.oh() * p.ow()))
            .collect();
        let xt = Tensor::from_slice(ctx, &x, &xs).unwrap();
        let dyt = Tensor::from_slice(ctx, &dy, &p.y_shape()).unwrap();
        for algo in [Algorithm::Depthwise, Algorithm::Auto] {
            if ctx
                .check_algorithm(Operation::WeightGrad, algo, &p)
                .is_err()
            {
                continue;
            }
            let dw = Tensor::full(ctx, &ws, f32::NAN).unwrap();
            let mut enc = ctx.device().create_command_encoder(&Default::default());
            ctx.encode_conv2d_backward_weight(&mut enc, &xt, &dyt, &params, algo, &dw)
                .unwrap();
            ctx.queue().submit([enc.finish()]);
            let label = format!("dw {} x{xs:?} w{ws:?} {params:?}", algo.name());
            if let Err(e) = check(&label, &dw.read().unwrap(), &want, &tols) {
                panic!("{e}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 50, "checked {checked}");
}

/// The strided input gradient by phases (the direct algorithm on CPU adapters when OW is a
/// multiple of 4): strides 2, 3 and mixed, sub-kernels 1..=8 wide and every window offset,
/// phases without taps (kernel smaller than the stride), groups, channels not a multiple of
/// 4, several images, flip, bias (the transposed convolution), against the CPU reference with
/// dx poisoned with NaN.
#[test]
fn strided_input_gradient_by_phases_matches_cpu() {
    use wgconv::{Conv2dParams, Padding};
    let ctx = ctx();
    let mut rng = Rng::new(91);
    // x shape, w shape, stride, padding [top, bottom, left, right], groups, flip
    type Case = ([usize; 4], [usize; 4], [usize; 2], [usize; 4], usize, bool);
    let cases: Vec<Case> = vec![
        ([1, 3, 32, 32], [8, 3, 7, 7], [2, 2], [3, 3, 3, 3], 1, false),
        ([2, 5, 17, 16], [6, 5, 3, 3], [2, 2], [1, 1, 1, 1], 1, true),
        ([1, 4, 15, 24], [4, 2, 5, 4], [3, 3], [2, 1, 0, 3], 2, false),
        ([1, 2, 9, 32], [3, 2, 1, 1], [2, 2], [0, 0, 0, 0], 1, false),
        (
            [1, 6, 12, 16],
            [4, 6, 3, 16],
            [1, 2],
            [1, 1, 7, 8],
            1,
            false,
        ),
        ([2, 3, 16, 8], [4, 3, 4, 3], [2, 1], [1, 2, 1, 1], 1, true),
        ([1, 8, 20, 24], [8, 1, 3, 3], [2, 2], [1, 1, 1, 1], 8, false),
        (
            [1, 9, 16, 16],
            [12, 9, 2, 2],
            [2, 2],
            [0, 0, 0, 0],
            1,
            false,
        ),
        ([1, 3, 23, 31], [5, 3, 6, 5], [3, 2], [2, 2, 2, 3], 1, false),
    ];
    let mut checked = 0;
    for (xs, ws, stride, pad, groups, flip) in cases {
        let params = Conv2dParams::default()
            .with_stride(stride)
            .with_padding(Padding::PerSide(pad))
            .with_groups(groups)
            .with_flip(flip);
        let p = params.resolve(xs, ws, None).unwrap();
        assert!(p.ow().is_multiple_of(4), "{xs:?} {ws:?}: ow {}", p.ow());
        let w = rng.vec(ws.iter().product());
        let dy = rng.vec(p.y_shape().iter().product());
        let want = cpu::conv2d_backward_input(&p, &dy, &w);
        let scale = cpu::conv2d_backward_input(&p, &abs(&dy), &abs(&w));
        let len = p.k_per_group() * p.r() * p.s();
        let tols: Vec<f32> = scale.iter().map(|&v| tol(v, len)).collect();
        let wt = Tensor::from_slice(ctx, &w, &ws).unwrap();
        let dyt = Tensor::from_slice(ctx, &dy, &p.y_shape()).unwrap();
        for algo in [Algorithm::Direct, Algorithm::Auto] {
            let dx = Tensor::full(ctx, &xs, f32::NAN).unwrap();
            let mut enc = ctx.device().create_command_encoder(&Default::default());
            ctx.encode_conv2d_backward_input(&mut enc, &dyt, &wt, &params, algo, &dx)
                .unwrap();
            ctx.queue().submit([enc.finish()]);
            let label = format!("dx {} x{xs:?} w{ws:?} {params:?}", algo.name());
            if let Err(e) = check(&label, &dx.read().unwrap(), &want, &tols) {
                panic!("{e}");
            }
            checked += 1;
        }
        // With bias: the transposed convolution of dy.
        let tp = wgconv::ConvTranspose2dParams::default()
            .with_stride(stride)
            .with_padding([pad[0], pad[2]])
            .with_groups(groups);
        if pad[0] == pad[1] && pad[2] == pad[3] && !flip {
            let op = [
                xs[2] - ((p.oh() - 1) * stride[0] + ws[2] - 2 * pad[0]),
                xs[3] - ((p.ow() - 1) * stride[1] + ws[3] - 2 * pad[2]),
            ];
            let tp = tp.with_output_padding(op);
            let b = rng.vec(xs[1]);
            let bt = Tensor::from_slice(ctx, &b, &[xs[1]]).unwrap();
            let got = ctx
                .conv_transpose2d(&dyt, &wt, Some(&bt), &tp, Algorithm::Direct)
                .unwrap()
                .read()
                .unwrap();
            let plane = xs[2] * xs[3];
            let want_b: Vec<f32> = want
                .iter()
                .enumerate()
                .map(|(i, v)| v + b[(i / plane) % xs[1]])
                .collect();
            let label = format!("transpose x{xs:?} w{ws:?} {tp:?}");
            if let Err(e) = check(&label, &got, &want_b, &tols) {
                panic!("{e}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "checked {checked}");

    // Packed weights beyond the scratch budget: the direct gather kernel runs instead (the
    // forced algorithm still succeeds).
    let small = wgconv::Context::with_options_blocking(wgconv::ContextOptions {
        scratch_budget: Some(4096),
        ..Default::default()
    })
    .unwrap();
    let (xs, ws) = ([1, 3, 8, 8], [8, 3, 7, 7]);
    let params = Conv2dParams::default()
        .with_stride([2, 2])
        .with_padding(Padding::Symmetric([3, 3]));
    let p = params.resolve(xs, ws, None).unwrap();
    let w = rng.vec(ws.iter().product());
    let dy = rng.vec(p.y_shape().iter().product());
    let want = cpu::conv2d_backward_input(&p, &dy, &w);
    let scale = cpu::conv2d_backward_input(&p, &abs(&dy), &abs(&w));
    let tols: Vec<f32> = scale.iter().map(|&v| tol(v, 8 * 49)).collect();
    let wt = Tensor::from_slice(&small, &w, &ws).unwrap();
    let dyt = Tensor::from_slice(&small, &dy, &p.y_shape()).unwrap();
    let dx = small
        .conv2d_backward_input(&dyt, &wt, xs, &params, Algorithm::Direct)
        .unwrap();
    if let Err(e) = check("small scratch budget", &dx.read().unwrap(), &want, &tols) {
        panic!("{e}");
    }

    // A huge stride (one output row): not the phase kernel (at most 8 phases per axis; the
    // host once looped over every phase of such a stride for minutes).
    let xs = [1, 2, 6, 8];
    let ws = [3, 2, 3, 3];
    let params = Conv2dParams::default().with_stride([1 << 30, 1]);
    let p = params.resolve(xs, ws, None).unwrap();
    let w = rng.vec(ws.iter().product());
    let dy = rng.vec(p.y_shape().iter().product());
    let want = cpu::conv2d_backward_input(&p, &dy, &w);
    let scale = cpu::conv2d_backward_input(&p, &abs(&dy), &abs(&w));
    let tols: Vec<f32> = scale.iter().map(|&v| tol(v, 27)).collect();
    let wt = Tensor::from_slice(ctx, &w, &ws).unwrap();
    let dyt = Tensor::from_slice(ctx, &dy, &p.y_shape()).unwrap();
    let dx = ctx
        .conv2d_backward_input(&dyt, &wt, xs, &params, Algorithm::Direct)
        .unwrap();
    if let Err(e) = check("huge stride", &dx.read().unwrap(), &want, &tols) {
        panic!("{e}");
    }
}

/// The implicit GEMM's input gradient packs its weights with the run packer
/// (`pack_conv_weights_runs.wgsl`) when they come in texel-aligned tap runs, and by copies
/// for 1x1 kernels with 256-byte rows: kernels of 1..9 taps, partial output-channel quads,
/// reduction channels padded to 8, groups, flip, and a weight image whose panels wrap into
/// several texel columns. The forward of each case
/// (generic packer, fresh weights) is checked alongside.
#[test]
fn implicit_gemm_run_packer_matches_cpu() {
    use wgconv::Conv2dParams;
    // Also under a 512-texel limit: the weight panels wrap into several texel columns.
    let small = wgconv::Context::with_options_blocking(wgconv::ContextOptions {
        limits: Some(wgconv::LimitsOverride {
            max_texture_dimension_2d: Some(512),
            ..Default::default()
        }),
        ..Default::default()
    })
    .expect("adapter");
    if !small.has_subgroups8() {
        return;
    }
    let mut rng = Rng::new(92);
    // x shape, w shape, padding, groups, flip
    type Case = ([usize; 4], [usize; 4], [usize; 2], usize, bool);
    let cases: Vec<Case> = vec![
        ([1, 8, 9, 11], [12, 8, 1, 1], [0, 0], 1, false),
        ([1, 4, 10, 9], [5, 4, 3, 3], [1, 1], 1, true),
        ([2, 3, 8, 12], [9, 3, 2, 2], [1, 0], 1, false),
        ([1, 5, 7, 13], [6, 5, 2, 4], [1, 2], 1, true),
        ([1, 8, 6, 9], [16, 4, 3, 1], [1, 0], 2, false),
        ([1, 12, 9, 8], [8, 12, 1, 3], [0, 1], 1, true),
        ([1, 20, 7, 7], [36, 20, 3, 3], [1, 1], 1, false),
        // 4 panels x 2304 rows.
        ([1, 64, 6, 6], [256, 64, 3, 3], [1, 1], 1, true),
        // 1x1 with 64-channel rows: packed by buffer-to-texture copies (panels of 200 rows
        // straddle the 512-row column blocks of the small context).
        ([1, 64, 5, 6], [200, 64, 1, 1], [0, 0], 1, false),
        ([1, 128, 4, 5], [16, 64, 1, 1], [0, 0], 2, false),
    ];
    for (xs, ws, pad, groups, flip) in cases {
        let params = Conv2dParams::default()
            .with_padding(wgconv::Padding::Symmetric(pad))
            .with_groups(groups)
            .with_flip(flip);
        let p = params.resolve(xs, ws, None).unwrap();
        let w = rng.vec(ws.iter().product());
        let dy = rng.vec(p.y_shape().iter().product());
        let x = rng.vec(xs.iter().product());
        let want_y = cpu::conv2d_problem(&p, &x, &w, None);
        let scale_y = cpu::conv2d_problem(&p, &abs(&x), &abs(&w), None);
        let len_y = p.c_per_group() * p.r() * p.s();
        let tols_y: Vec<f32> = scale_y.iter().map(|&v| tol(v, len_y)).collect();
        let want = cpu::conv2d_backward_input(&p, &dy, &w);
        let scale = cpu::conv2d_backward_input(&p, &abs(&dy), &abs(&w));
        let len = p.k_per_group() * p.r() * p.s();
        let tols: Vec<f32> = scale.iter().map(|&v| tol(v, len)).collect();
        for (name, ctx) in [("default", ctx()), ("512-texel", &small)] {
            let wt = Tensor::from_slice(ctx, &w, &ws).unwrap();
            let dyt = Tensor::from_slice(ctx, &dy, &p.y_shape()).unwrap();
            let dx = Tensor::full(ctx, &xs, f32::NAN).unwrap();
            let mut enc = ctx.device().create_command_encoder(&Default::default());
            ctx.encode_conv2d_backward_input(
                &mut enc,
                &dyt,
                &wt,
                &params,
                Algorithm::ImplicitGemm,
                &dx,
            )
            .unwrap();
            ctx.queue().submit([enc.finish()]);
            let label = format!("dx implicit_gemm ({name}) x{xs:?} w{ws:?} {params:?}");
            if let Err(e) = check(&label, &dx.read().unwrap(), &want, &tols) {
                panic!("{e}");
            }
            // Forward, with a fresh weight tensor (packed, not from the weight cache).
            let wt = Tensor::from_slice(ctx, &w, &ws).unwrap();
            let xt = Tensor::from_slice(ctx, &x, &xs).unwrap();
            let y = ctx
                .conv2d_with(&xt, &wt, None, &params, Algorithm::ImplicitGemm)
                .unwrap();
            let label = format!("fwd implicit_gemm ({name}) x{xs:?} w{ws:?} {params:?}");
            if let Err(e) = check(&label, &y.read().unwrap(), &want_y, &tols_y) {
                panic!("{e}");
            }
        }
    }
}

#[test]
fn implicit_weight_gradient_accumulates_image_chunks() {
    // A scratch budget that holds one padded input image but not two: the implicit-GEMM
    // weight gradient runs image by image, later chunks adding onto dw (ACCUMULATE), for the
    // 1x1 vec4-store variant, the 8-channel and the 4-channel kernels.
    let small = wgconv::Context::with_options_blocking(wgconv::ContextOptions {
        scratch_budget: Some(20_000),
        ..Default::default()
    })
    .unwrap();
    if !small.has_subgroups8() {
        return;
    }
    let mut rng = Rng::new(17);
    for (xs, ws, pad) in [
        ([3, 64, 8, 8], [16, 64, 1, 1], 0),
        ([3, 64, 6, 6], [16, 64, 3, 3], 1),
        ([2, 60, 8, 8], [12, 60, 1, 1], 0),
    ] {
        let params =
            wgconv::Conv2dParams::default().with_padding(wgconv::Padding::Symmetric([pad, pad]));
        let p = params.resolve(xs, ws, None).unwrap();
        let x = rng.vec(xs.iter().product());
        let dy = rng.vec(p.y_shape().iter().product());
        let want = cpu::conv2d_backward_weight(&p, &x, &dy);
        let scale = cpu::conv2d_backward_weight(&p, &abs(&x), &abs(&dy));
        let tols: Vec<f32> = scale
            .iter()
            .map(|&v| tol(v, p.n() * p.oh() * p.ow()))
            .collect();
        let xt = Tensor::from_slice(&small, &x, &xs).unwrap();
        let dyt = Tensor::from_slice(&small, &dy, &p.y_shape()).unwrap();
        let dw = small
            .conv2d_backward_weight(&xt, &dyt, ws, &params, Algorithm::ImplicitGemm)
            .unwrap();
        let label = format!("dw implicit_gemm, small scratch, x{xs:?} w{ws:?}");
        if let Err(e) = check(&label, &dw.read().unwrap(), &want, &tols) {
            panic!("{e}");
        }
    }
}

/// Strided 1x1 convolutions (downsampling shortcuts) under the implicit GEMM: the forward and
/// the weight gradient on an image of the sampled pixels, the input gradient on dy written in
/// place on the sampled pixels of a cleared dx (no padding, no bias) or plus
/// `scatter_strided` (padding, the transposed convolution's bias); strides, per-side and
/// non-zero padding modes, groups, batches, and the bias of the transposed convolution.
#[test]
fn strided_pointwise_matches_cpu() {
    use wgconv::{Conv2dParams, Padding, PaddingMode};
    let ctx = ctx();
    if !ctx.has_subgroups8() {
        return;
    }
    let mut rng = Rng::new(93);
    // x shape, w shape, stride, padding [top, bottom, left, right], groups, mode
    type Case = (
        [usize; 4],
        [usize; 4],
        [usize; 2],
        [usize; 4],
        usize,
        PaddingMode,
    );
    let z = PaddingMode::Zeros;
    let cases: Vec<Case> = vec![
        ([1, 16, 14, 14], [32, 16, 1, 1], [2, 2], [0; 4], 1, z),
        ([2, 8, 9, 13], [12, 8, 1, 1], [3, 2], [0; 4], 1, z),
        ([1, 12, 10, 11], [16, 12, 1, 1], [2, 3], [1, 0, 2, 1], 1, z),
        ([1, 16, 8, 8], [16, 8, 1, 1], [2, 2], [0; 4], 2, z),
        (
            [1, 8, 7, 9],
            [8, 8, 1, 1],
            [2, 2],
            [1, 1, 1, 1],
            1,
            PaddingMode::Reflect,
        ),
        ([1, 8, 5, 6], [9, 8, 1, 1], [4, 5], [0, 2, 0, 0], 1, z),
        (
            [2, 8, 9, 10],
            [8, 8, 1, 1],
            [3, 2],
            [2, 0, 1, 2],
            1,
            PaddingMode::Circular,
        ),
        (
            [1, 12, 6, 7],
            [9, 4, 1, 1],
            [2, 2],
            [1, 2, 0, 1],
            3,
            PaddingMode::Replicate,
        ),
        // 64-channel rows: the weights are packed by copies.
        ([2, 64, 10, 10], [32, 64, 1, 1], [2, 2], [0; 4], 1, z),
        // Stride 1, channels per group a multiple of 8: the weight gradient stores vec4
        // (conv2d_wgrad_implicit_v4); output channels per group not a multiple of 16.
        ([2, 24, 5, 7], [21, 8, 1, 1], [1, 1], [0; 4], 3, z),
        ([1, 32, 6, 6], [40, 32, 1, 1], [1, 1], [0; 4], 1, z),
    ];
    for (xs, ws, stride, pad, groups, mode) in cases {
        let params = Conv2dParams::default()
            .with_stride(stride)
            .with_padding(Padding::PerSide(pad))
            .with_padding_mode(mode)
            .with_groups(groups);
        let p = params.resolve(xs, ws, None).unwrap();
        let w = rng.vec(ws.iter().product());
        let dy = rng.vec(p.y_shape().iter().product());
        let want = cpu::conv2d_backward_input(&p, &dy, &w);
        let scale = cpu::conv2d_backward_input(&p, &abs(&dy), &abs(&w));
        let len = p.k_per_group();
        let tols: Vec<f32> = scale.iter().map(|&v| tol(v, len)).collect();
        let wt = Tensor::from_slice(ctx, &w, &ws).unwrap();
        let dyt = Tensor::from_slice(ctx, &dy, &p.y_shape()).unwrap();
        // The forward runs at stride 1 on an image of the sampled pixels.
        let x = rng.vec(xs.iter().product());
        let want_y = cpu::conv2d_problem(&p, &x, &w, None);
        let scale_y = cpu::conv2d_problem(&p, &abs(&x), &abs(&w), None);
        let tols_y: Vec<f32> = scale_y.iter().map(|&v| tol(v, p.c_per_group())).collect();
        let xt = Tensor::from_slice(ctx, &x, &xs).unwrap();
        let y = ctx
            .conv2d_with(&xt, &wt, None, &params, Algorithm::ImplicitGemm)
            .unwrap();
        let label = format!("fwd implicit_gemm x{xs:?} w{ws:?} {params:?}");
        if let Err(e) = check(&label, &y.read().unwrap(), &want_y, &tols_y) {
            panic!("{e}");
        }
        // The weight gradient reads the same image of sampled pixels.
        let want_dw = cpu::conv2d_backward_weight(&p, &x, &dy);
        let scale_dw = cpu::conv2d_backward_weight(&p, &abs(&x), &abs(&dy));
        let tols_dw: Vec<f32> = scale_dw
            .iter()
            .map(|&v| tol(v, p.n() * p.oh() * p.ow()))
            .collect();
        let dw = ctx
            .conv2d_backward_weight(&xt, &dyt, ws, &params, Algorithm::ImplicitGemm)
            .unwrap();
        let label = format!("dw implicit_gemm x{xs:?} w{ws:?} {params:?}");
        if let Err(e) = check(&label, &dw.read().unwrap(), &want_dw, &tols_dw) {
            panic!("{e}");
        }
        for algo in [Algorithm::ImplicitGemm, Algorithm::Auto] {
            let dx = Tensor::full(ctx, &xs, f32::NAN).unwrap();
            let mut enc = ctx.device().create_command_encoder(&Default::default());
            ctx.encode_conv2d_backward_input(&mut enc, &dyt, &wt, &params, algo, &dx)
                .unwrap();
            ctx.queue().submit([enc.finish()]);
            let label = format!("dx {} x{xs:?} w{ws:?} {params:?}", algo.name());
            if let Err(e) = check(&label, &dx.read().unwrap(), &want, &tols) {
                panic!("{e}");
            }
        }
        // With bias: the transposed convolution of dy (symmetric zero padding only).
        if mode == z && pad[0] == pad[1] && pad[2] == pad[3] {
            let op = [
                xs[2] - ((p.oh() - 1) * stride[0] + 1 - 2 * pad[0]),
                xs[3] - ((p.ow() - 1) * stride[1] + 1 - 2 * pad[2]),
            ];
            if op[0] >= stride[0] || op[1] >= stride[1] {
                continue;
            }
            let tp = wgconv::ConvTranspose2dParams::default()
                .with_stride(stride)
                .with_padding([pad[0], pad[2]])
                .with_groups(groups)
                .with_output_padding(op);
            let b = rng.vec(xs[1]);
            let bt = Tensor::from_slice(ctx, &b, &[xs[1]]).unwrap();
            let got = ctx
                .conv_transpose2d(&dyt, &wt, Some(&bt), &tp, Algorithm::ImplicitGemm)
                .unwrap()
                .read()
                .unwrap();
            let hw = xs[2] * xs[3];
            let want_b: Vec<f32> = want
                .iter()
                .enumerate()
                .map(|(i, v)| v + b[(i / hw) % xs[1]])
                .collect();
            let label = format!("conv_transpose2d x{xs:?} w{ws:?} {tp:?}");
            if let Err(e) = check(&label, &got, &want_b, &tols) {
                panic!("{e}");
            }
        }
    }
    // Which path ran: in place without padding, through the scatter with it.
    for (pad, scatter) in [([0; 4], false), ([1, 0, 0, 1], true)] {
        let fresh = wgconv::Context::with_options_blocking(wgconv::ContextOptions {
            autotune: Some(false),
            ..Default::default()
        })
        .unwrap();
        let params = Conv2dParams::default()
            .with_stride([3, 2])
            .with_padding(Padding::PerSide(pad));
        let (xs, ws) = ([2, 8, 9, 13], [12, 8, 1, 1]);
        let p = params.resolve(xs, ws, None).unwrap();
        let (w, dy) = (
            rng.vec(ws.iter().product()),
            rng.vec(p.y_shape().iter().product()),
        );
        let wt = Tensor::from_slice(&fresh, &w, &ws).unwrap();
        let dyt = Tensor::from_slice(&fresh, &dy, &p.y_shape()).unwrap();
        for _ in 0..2 {
            // The second call after the first call's stand-in kernels.
            fresh.wait_for_tuning();
            let dx = fresh
                .conv2d_backward_input(&dyt, &wt, xs, &params, Algorithm::ImplicitGemm)
                .unwrap();
            let want = cpu::conv2d_backward_input(&p, &dy, &w);
            let scale = cpu::conv2d_backward_input(&p, &abs(&dy), &abs(&w));
            let tols: Vec<f32> = scale.iter().map(|&v| tol(v, ws[0])).collect();
            if let Err(e) = check(
                &format!("dx pad {pad:?}"),
                &dx.read().unwrap(),
                &want,
                &tols,
            ) {
                panic!("{e}");
            }
        }
        let ran = wgconv::dev::compiled_kernels(&fresh).contains(&"scatter_strided");
        assert_eq!(
            ran, scatter,
            "scatter_strided compiled with padding {pad:?}"
        );
    }
}

/// The bias gradient on shapes whose channel rows start inside a 4-float texel (the image
/// kernel of CPU adapters masks straddling texels), whose total is not a multiple of 4 (the
/// buffer kernel), and with few channels over many pixels and images.
#[test]
fn bias_gradient_matches_cpu_on_unaligned_rows() {
    let ctx = ctx();
    let mut rng = Rng::new(0xb1a5);
    for shape in [
        [2, 3, 5, 6],
        [1, 3, 5, 5],
        [3, 7, 1, 1],
        [1, 1, 1, 4],
        [2, 40, 33, 33],
        [1, 32, 112, 112],
    ] {
        let [n, k, h, w] = shape;
        let dy = rng.vec(n * k * h * w);
        let mut want = vec![0.0f32; k];
        let mut scale = vec![0.0f32; k];
        for (c, (wv, sv)) in want.iter_mut().zip(&mut scale).enumerate() {
            let (mut s, mut a) = (0.0f64, 0.0f64);
            for img in 0..n {
                let row = &dy[(img * k + c) * h * w..][..h * w];
                s += row.iter().map(|&v| v as f64).sum::<f64>();
                a += row.iter().map(|&v| v.abs() as f64).sum::<f64>();
            }
            (*wv, *sv) = (s as f32, a as f32);
        }
        let tols: Vec<f32> = scale.iter().map(|&s| tol(s, n * h * w)).collect();
        let dyt = Tensor::from_slice(ctx, &dy, &shape).expect("upload dy");
        let db = Tensor::full(ctx, &[k], f32::NAN).expect("poisoned db");
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        ctx.encode_conv2d_backward_bias(&mut enc, &dyt, &db)
            .expect("encode the bias gradient");
        ctx.queue().submit([enc.finish()]);
        let got = db.read().expect("read db");
        if let Err(e) = check(&format!("db {shape:?}"), &got, &want, &tols) {
            panic!("{e}");
        }
    }
}

/// Random x, w and dy of problem `p`: the host copies and the tensors.
#[allow(clippy::type_complexity)]
fn random_operands(
    ctx: &wgconv::Context,
    rng: &mut Rng,
    p: &wgconv::Conv2dProblem,
) -> ((Vec<f32>, Vec<f32>, Vec<f32>), (Tensor, Tensor, Tensor)) {
    let shapes = [p.x_shape(), p.w_shape(), p.y_shape()];
    let [x, w, dy] = shapes.map(|s| rng.vec(s.iter().product()));
    let t = |v: &[f32], s: &[usize]| Tensor::from_slice(ctx, v, s).unwrap();
    let tensors = (t(&x, &shapes[0]), t(&w, &shapes[1]), t(&dy, &shapes[2]));
    ((x, w, dy), tensors)
}

/// dx, dw and db of `g` against the CPU reference of problem `p` (`x`, `w`, `dy` host
/// copies; `len` the input gradient's reduction length per output).
fn check_gradients(
    label: &str,
    p: &wgconv::Conv2dProblem,
    (x, w, dy): (&[f32], &[f32], &[f32]),
    g: wgconv::Conv2dGradients,
    len: usize,
) {
    let pixels = p.y_shape()[0] * p.y_shape()[2] * p.y_shape()[3];
    let tols = |s: &[f32], len: usize| s.iter().map(|&v| tol(v, len)).collect::<Vec<_>>();
    let want = cpu::conv2d_backward_bias(p, dy);
    let scale = cpu::conv2d_backward_bias(p, &abs(dy));
    let db = g.db.expect("db asked for").read().unwrap();
    check(&format!("{label} db"), &db, &want, &tols(&scale, pixels)).unwrap();
    let want = cpu::conv2d_backward_weight(p, x, dy);
    let scale = cpu::conv2d_backward_weight(p, &abs(x), &abs(dy));
    let dw = g.dw.read().unwrap();
    check(&format!("{label} dw"), &dw, &want, &tols(&scale, pixels)).unwrap();
    let want = cpu::conv2d_backward_input(p, dy, w);
    let scale = cpu::conv2d_backward_input(p, &abs(dy), &abs(w));
    let dx = g.dx.read().unwrap();
    check(&format!("{label} dx"), &dx, &want, &tols(&scale, len)).unwrap();
}

/// The weight gradient's GEMMs (im2col + image GEMM, implicit GEMM) sum the dy panels they
/// read into the bias gradient (`COL_SUMS`) instead of a pass of its own: dx, dw and db match
/// the CPU reference across strided 1x1 layers, several images, groups, output channels that
/// fill no whole 16-column block and pixel counts that fill no whole 8-pixel step; and the
/// summing kernels ran.
#[test]
fn bias_gradient_summed_by_the_weight_gradient_gemms() {
    use wgconv::{Context, ContextOptions, Conv2dParams, Padding, TuningMode};
    let ctx = Context::with_options_blocking(ContextOptions {
        tuning: Some(TuningMode::Blocking),
        ..Default::default()
    })
    .expect("GPU test needs a WebGPU adapter");
    let mut rng = Rng::new(97);
    // (N, C, H, W, K, R, S, stride, pad, groups)
    let cases = [
        (1, 16, 14, 14, 40, 1, 1, 2, 0, 1),
        (3, 8, 7, 9, 20, 3, 3, 1, 1, 1),
        (2, 16, 6, 6, 24, 1, 1, 1, 0, 2),
        (2, 8, 5, 5, 16, 1, 1, 1, 0, 1),
    ];
    let mut ran = Vec::new();
    for (n, c, h, w, k, r, s, stride, pad, groups) in cases {
        let params = Conv2dParams::default()
            .with_stride([stride, stride])
            .with_padding(Padding::Symmetric([pad, pad]))
            .with_groups(groups);
        let (xs, ws) = ([n, c, h, w], [k, c / groups, r, s]);
        let p = params.resolve(xs, ws, None).unwrap();
        let ((x, wv, dy), (xt, wt, dyt)) = random_operands(&ctx, &mut rng, &p);
        for algo in [Algorithm::Im2colGemm, Algorithm::ImplicitGemm] {
            let runs = [Operation::InputGrad, Operation::WeightGrad]
                .iter()
                .all(|&op| ctx.check_algorithm(op, algo, &p).is_ok());
            if !runs {
                continue;
            }
            ran.push(algo);
            let g = ctx
                .conv2d_backward(&xt, &wt, &dyt, true, &params, algo)
                .unwrap();
            let label = format!("{algo:?} {:?}", (n, c, h, w, k, r, s, stride, pad, groups));
            let len = (k / groups) * r * s;
            check_gradients(&label, &p, (&x, &wv, &dy), g, len);
        }
    }
    let summed = |kernel: &str| {
        wgconv::dev::compiled_pipelines(&ctx)
            .iter()
            .any(|(name, spec)| name.starts_with(kernel) && spec.contains(&("COL_SUMS", 1)))
    };
    if ran.contains(&Algorithm::ImplicitGemm) {
        assert!(
            summed("conv2d_wgrad_implicit"),
            "the implicit GEMM summed no dy"
        );
    }
    if ctx.check_gemm_variant(wgconv::GemmVariant::Image).is_ok() {
        assert!(summed("gemm_image"), "the image GEMM summed no dy");
    }
}

/// The backward of a 1x1 layer whose gradients both run the implicit GEMM fills dy once:
/// the weight gradient reads it from the input gradient's input image (the `_v4d` kernel)
/// instead of packing dy again, and `Auto` takes that path for strided layers. dx, dw and
/// db against the CPU reference across strides (also unequal), padding (the scattered
/// input gradient), 3 images, groups whose output channels end inside a 16-channel panel
/// (blocks past the group read as 0), and pixel counts not a multiple of 8; the profile of
/// the call shows the kernel ran and dy was not packed.
#[test]
fn weight_gradient_reads_dy_from_the_input_gradient_image() {
    use wgconv::{Context, ContextOptions, Conv2dParams, Padding, TuningMode};
    let mut rng = Rng::new(131);
    // (N, C, H, W, K, stride, pad, groups, algorithm)
    let cases = [
        (1, 256, 14, 14, 512, [2, 2], 0, 1, Algorithm::Auto),
        (3, 32, 9, 11, 40, [2, 3], 0, 2, Algorithm::ImplicitGemm),
        (2, 8, 10, 10, 24, [2, 2], 1, 1, Algorithm::ImplicitGemm),
        (2, 16, 6, 6, 24, [1, 1], 0, 1, Algorithm::ImplicitGemm),
    ];
    for (n, c, h, w, k, stride, pad, groups, algo) in cases {
        let ctx = Context::with_options_blocking(ContextOptions {
            tuning: Some(TuningMode::Blocking),
            ..Default::default()
        })
        .expect("GPU test needs a WebGPU adapter");
        let params = Conv2dParams::default()
            .with_stride(stride)
            .with_padding(Padding::Symmetric([pad, pad]))
            .with_groups(groups);
        let (xs, ws) = ([n, c, h, w], [k, c / groups, 1, 1]);
        let p = params.resolve(xs, ws, None).unwrap();
        let implicit = [Operation::InputGrad, Operation::WeightGrad]
            .iter()
            .all(|&op| ctx.check_algorithm(op, Algorithm::ImplicitGemm, &p).is_ok());
        let ((x, wv, dy), (xt, wt, dyt)) = random_operands(&ctx, &mut rng, &p);
        let label = format!("{algo:?} {:?}", (n, c, h, w, k, stride, pad, groups));
        // The first calls may run first-call kernels while the steady ones compile.
        for _ in 0..2 {
            drop(
                ctx.conv2d_backward(&xt, &wt, &dyt, true, &params, algo)
                    .unwrap(),
            );
        }
        ctx.wait_for_tuning();
        ctx.synchronize().unwrap();
        let profiled = wgconv::dev::profile_begin(&ctx, 64).is_ok();
        let g = ctx
            .conv2d_backward(&xt, &wt, &dyt, true, &params, algo)
            .unwrap();
        let passes = if profiled {
            ctx.synchronize().unwrap();
            wgconv::dev::profile_end(&ctx).unwrap()
        } else {
            Vec::new()
        };
        check_gradients(&label, &p, (&x, &wv, &dy), g, k / groups);
        // Auto shares dy where its input gradient runs the implicit GEMM (the tuner's
        // choice on this adapter; shape e of the bench).
        let ran = |name: &str| passes.iter().any(|(pass, _)| pass.starts_with(name));
        if implicit && (algo != Algorithm::Auto || ran("conv2d_implicit")) {
            assert!(profiled, "{label}: no pass timestamps on this adapter");
            assert!(
                ran("conv2d_wgrad_implicit_v4d "),
                "{label}: the weight gradient did not read the shared dy image: {passes:?}"
            );
            assert!(
                !ran("pack_image"),
                "{label}: dy was packed although shared: {passes:?}"
            );
        }
    }
}
