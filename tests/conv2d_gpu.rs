//! GPU forward convolution vs the CPU reference on a seeded sweep, every algorithm.

mod common;

use common::{check, conv_sweep, ctx, tol, ConvCase, Rng};
use wgconv::{cpu, Algorithm, Context, ContextOptions, Tensor};

fn run_case(i: usize, case: &ConvCase, algo: Algorithm, rng: &mut Rng) -> Result<(), String> {
    run_case_on(ctx(), i, case, algo, rng)
}

fn run_case_on(
    ctx: &Context,
    i: usize,
    case: &ConvCase,
    algo: Algorithm,
    rng: &mut Rng,
) -> Result<(), String> {
    let p = &case.problem;
    let integer = rng.range(0, 4) == 0;
    let gen = |rng: &mut Rng, n: usize| if integer { rng.int_vec(n) } else { rng.vec(n) };
    let x = gen(rng, p.x_shape().iter().product());
    let w = gen(rng, p.w_shape().iter().product());
    let b = case.bias.then(|| gen(rng, p.k));
    let want = cpu::conv2d_problem(p, &x, &w, b.as_deref());
    let scale = cpu::conv2d_abs_scale(p, &x, &w, b.as_deref());
    let tols: Vec<f32> = if integer {
        vec![0.0; want.len()]
    } else {
        scale.iter().map(|&s| tol(s, p.reduction_len())).collect()
    };
    let err = |e: wgconv::Error| format!("case {i} {case:?}: {e}");
    let xt = Tensor::from_slice(ctx, &x, &case.x).map_err(err)?;
    let wt = Tensor::from_slice(ctx, &w, &case.w).map_err(err)?;
    let bt = b
        .as_ref()
        .map(|b| Tensor::from_slice(ctx, b, &[p.k]))
        .transpose()
        .map_err(err)?;
    let yt = Tensor::full(ctx, &p.y_shape(), f32::NAN).map_err(err)?;
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    ctx.encode_conv2d(&mut enc, &xt, &wt, bt.as_ref(), &case.params, algo, &yt)
        .map_err(err)?;
    ctx.queue().submit([enc.finish()]);
    let got = yt.read().map_err(err)?;
    check(
        &format!("case {i} algo {} {:?}", algo.name(), case),
        &got,
        &want,
        &tols,
    )
}

fn sweep(algo: Algorithm) {
    let cases = conv_sweep(0x5eed_0001, 320, 400_000);
    let mut rng = Rng::new(7);
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        if !algo.supports_forward(&case.problem) {
            continue;
        }
        if let Err(e) = run_case(i, case, algo, &mut rng) {
            failures.push(e);
        }
    }
    for f in failures.iter().take(20) {
        eprintln!("{f}");
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed",
        failures.len(),
        cases.len()
    );
}

#[test]
fn direct_matches_cpu_on_sweep() {
    sweep(Algorithm::Direct);
}

#[test]
fn auto_matches_cpu_on_sweep() {
    sweep(Algorithm::Auto);
}

#[test]
fn im2col_gemm_matches_cpu_on_sweep() {
    sweep(Algorithm::Im2colGemm);
}

#[test]
fn gemm1x1_matches_cpu_on_pointwise_cases() {
    // The sweep has few 1x1 stride-1 unpadded cases: add a dedicated set.
    let mut rng = Rng::new(99);
    let mut n = 0;
    for i in 0..60 {
        let g = rng.pick(&[1, 1, 2, 4]);
        let c = g * rng.range(1, 9);
        let k = g * rng.range(1, 9);
        let (h, w) = (rng.range(1, 13), rng.range(1, 13));
        let params = wgconv::Conv2dParams::default().with_groups(g);
        let bias = rng.bool();
        let x = [rng.range(1, 3), c, h, w];
        let wsh = [k, c / g, 1, 1];
        let problem = params.resolve(x, wsh, bias.then_some(k)).unwrap();
        let case = ConvCase {
            x,
            w: wsh,
            bias,
            params,
            problem,
        };
        run_case(i, &case, Algorithm::Gemm1x1, &mut rng).unwrap();
        n += 1;
    }
    assert_eq!(n, 60);
    // Forced on a problem it cannot run: a typed error, never a silent fallback.
    let ctx = ctx();
    let x = Tensor::zeros(ctx, &[1, 2, 5, 5]).unwrap();
    let w = Tensor::zeros(ctx, &[2, 2, 3, 3]).unwrap();
    let err = ctx
        .conv2d_with(&x, &w, None, &Default::default(), Algorithm::Gemm1x1)
        .unwrap_err();
    assert!(
        matches!(err.kind(), wgconv::ErrorKind::UnsupportedAlgorithm { .. }),
        "{err}"
    );
}

#[test]
fn im2col_chunked_under_a_tiny_scratch_budget() {
    // 4 KiB of scratch forces splitting over images and pixel ranges.
    let ctx = Context::with_options_blocking(ContextOptions {
        scratch_budget: Some(4096),
        ..Default::default()
    })
    .expect("adapter");
    assert_eq!(ctx.scratch_budget(), 4096);
    let cases = conv_sweep(0x5eed_0002, 60, 200_000);
    let mut rng = Rng::new(8);
    for (i, case) in cases.iter().enumerate() {
        run_case_on(&ctx, i, case, Algorithm::Im2colGemm, &mut rng).unwrap();
    }
}

#[test]
fn depthwise_matches_cpu_on_sweep() {
    // The general sweep has depthwise cases (with and without channel multipliers); this adds
    // a dense set of them: every padding mode, strides 1-2, kernels 1..7 wide, flip, bias.
    let mut rng = Rng::new(1234);
    let mut n = 0;
    let modes = [
        wgconv::PaddingMode::Zeros,
        wgconv::PaddingMode::Reflect,
        wgconv::PaddingMode::Replicate,
        wgconv::PaddingMode::Circular,
    ];
    while n < 120 {
        let c = rng.pick(&[1, 2, 3, 8, 16]);
        let mult = rng.pick(&[1, 1, 2, 3]);
        let (r, s) = (rng.range(1, 7), rng.range(1, 7));
        let params = wgconv::Conv2dParams::default()
            .with_groups(c)
            .with_stride([rng.range(1, 3), rng.range(1, 2)])
            .with_dilation([rng.range(1, 2), 1])
            .with_padding(wgconv::Padding::PerSide([
                rng.range(0, 3),
                rng.range(0, 3),
                rng.range(0, 3),
                rng.range(0, 3),
            ]))
            .with_padding_mode(modes[rng.range(0, 3)])
            .with_flip(rng.bool());
        let bias = rng.bool();
        let x = [rng.range(1, 2), c, rng.range(1, 20), rng.range(1, 40)];
        let w = [c * mult, 1, r, s];
        let Ok(problem) = params.resolve(x, w, bias.then_some(c * mult)) else {
            continue;
        };
        assert!(Algorithm::Depthwise.supports_forward(&problem));
        run_case(
            n,
            &ConvCase {
                x,
                w,
                bias,
                params,
                problem,
            },
            Algorithm::Depthwise,
            &mut rng,
        )
        .unwrap();
        n += 1;
    }
}
