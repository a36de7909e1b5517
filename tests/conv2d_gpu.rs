//! GPU forward convolution vs the CPU reference on a seeded sweep, every algorithm.

mod common;

use common::{check, conv_sweep, ctx, tol, ConvCase, Rng};
use wgconv::{cpu, Algorithm, Context, ContextOptions, LimitsOverride, Tensor};

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
    let b = case.bias.then(|| gen(rng, p.k()));
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
        .map(|b| Tensor::from_slice(ctx, b, &[p.k()]))
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
fn implicit_gemm_matches_cpu_on_sweep() {
    // Runs on adapters with 8-lane subgroups (lavapipe, which CI uses); elsewhere the
    // forced algorithm must refuse with a typed error, never fall back.
    let ctx = ctx();
    let case = &conv_sweep(0x5eed_0001, 1, 400_000)[0];
    if !ctx.can_run_forward(Algorithm::ImplicitGemm, &case.problem) {
        assert!(
            !ctx.has_subgroups8(),
            "implicit GEMM refused a small problem"
        );
        return;
    }
    sweep(Algorithm::ImplicitGemm);
}

#[test]
fn implicit_gemm_tiled_matches_cpu_on_sweep() {
    sweep(Algorithm::ImplicitGemmTiled);
}

/// The implicit GEMM under lowered texture limits and a tiny scratch budget: the padded
/// input is filled and consumed a chunk of images at a time, the weight and dy panels wrap
/// into several column blocks, and problems whose images cannot fit are refused with a
/// typed error (forward) or run by the im2col kernels (gradients).
#[test]
fn implicit_gemm_chunks_and_wraps_under_small_limits() {
    let small = Context::with_options_blocking(ContextOptions {
        limits: Some(LimitsOverride {
            max_texture_dimension_2d: Some(64),
            ..Default::default()
        }),
        scratch_budget: Some(16384),
        ..Default::default()
    })
    .expect("adapter");
    if !small.has_subgroups8() {
        return;
    }
    let cases = conv_sweep(0x5eed_0003, 120, 60_000);
    let mut rng = Rng::new(11);
    let (mut ran, mut refused) = (0, 0);
    for (i, case) in cases.iter().enumerate() {
        if small.can_run_forward(Algorithm::ImplicitGemm, &case.problem) {
            run_case_on(&small, i, case, Algorithm::ImplicitGemm, &mut rng).unwrap();
            ran += 1;
        } else {
            let x = Tensor::zeros(&small, &case.x).unwrap();
            let w = Tensor::zeros(&small, &case.w).unwrap();
            let err = small
                .conv2d_with(&x, &w, None, &case.params, Algorithm::ImplicitGemm)
                .unwrap_err();
            assert!(
                matches!(err.kind(), wgconv::ErrorKind::UnsupportedAlgorithm { .. }),
                "{err}"
            );
            refused += 1;
        }
    }
    assert!(ran >= 40 && refused >= 1, "ran {ran}, refused {refused}");
    // Many images with several channel blocks: chunks of images (the scratch budget holds
    // few padded images) accumulate in order; 40 output channels wrap the weight panels.
    let params = wgconv::Conv2dParams::default().with_padding(wgconv::Padding::Symmetric([1, 1]));
    let problem = params
        .resolve([9, 12, 6, 7], [40, 12, 3, 3], Some(40))
        .unwrap();
    let case = common::ConvCase {
        x: [9, 12, 6, 7],
        w: [40, 12, 3, 3],
        bias: true,
        params,
        problem,
    };
    run_case_on(&small, 999, &case, Algorithm::ImplicitGemm, &mut rng).unwrap();
    // Channel blocks wrapping to the next plane row inside a group's run (the kernel walks
    // them with counters, not divisions): 2 groups of 3 channel blocks (6 texel blocks
    // each) on planes 20 and 32 wide, i.e. 3 and 2 blocks per 64-texel row.
    for (i, (wdt, groups)) in [(18, 2), (30, 2), (18, 1)].into_iter().enumerate() {
        let params = wgconv::Conv2dParams::default()
            .with_padding(wgconv::Padding::Symmetric([1, 1]))
            .with_groups(groups);
        let (x, w) = ([2, 40, 4, wdt], [16, 40 / groups, 3, 3]);
        let problem = params.resolve(x, w, Some(16)).unwrap();
        let case = common::ConvCase {
            x,
            w,
            bias: true,
            params,
            problem,
        };
        run_case_on(&small, 1000 + i, &case, Algorithm::ImplicitGemm, &mut rng).unwrap();
    }
    // Gradients through the implicit kernels: 5 images in chunks of 3 + 2 (the weight
    // gradient accumulates the second chunk), weight and dy panels wrapping at 64 rows.
    let problem = params.resolve([5, 12, 6, 7], [8, 12, 3, 3], None).unwrap();
    let case = common::ConvCase {
        x: [5, 12, 6, 7],
        w: [8, 12, 3, 3],
        bias: false,
        params,
        problem,
    };
    let p = &case.problem;
    let x = rng.vec(p.x_shape().iter().product());
    let w = rng.vec(p.w_shape().iter().product());
    let dy = rng.vec(p.y_shape().iter().product());
    let xt = Tensor::from_slice(&small, &x, &case.x).unwrap();
    let wt = Tensor::from_slice(&small, &w, &case.w).unwrap();
    let dyt = Tensor::from_slice(&small, &dy, &p.y_shape()).unwrap();
    let g = small
        .conv2d_backward(&xt, &wt, &dyt, false, &case.params, Algorithm::ImplicitGemm)
        .unwrap();
    let want_dw = cpu::conv2d_backward_weight(p, &x, &dy);
    let len = p.n() * p.oh() * p.ow();
    let tol_dw: Vec<f32> = want_dw.iter().map(|_| tol(len as f32, len)).collect();
    check(
        "implicit dw (small limits)",
        &g.dw.read().unwrap(),
        &want_dw,
        &tol_dw,
    )
    .unwrap();
    let want_dx = cpu::conv2d_backward_input(p, &dy, &w);
    let klen = p.k() * p.r() * p.s();
    let tol_dx: Vec<f32> = want_dx.iter().map(|_| tol(klen as f32, klen)).collect();
    check(
        "implicit dx (small limits)",
        &g.dx.read().unwrap(),
        &want_dx,
        &tol_dx,
    )
    .unwrap();
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

/// Cases the image variant of the depthwise kernel takes on CPU adapters (column stride 1,
/// zero padding with pad_left <= 4 and S - pad_left <= 5, W a multiple of 4): every kernel
/// width and left padding it allows, row strides and dilations, multipliers, flip, bias, and
/// row counts that leave a partial texture row.
#[test]
fn depthwise_image_variant_matches_cpu() {
    let mut rng = Rng::new(4321);
    let mut n = 0;
    while n < 80 {
        let c = rng.pick(&[1, 3, 8, 16]);
        let mult = rng.pick(&[1, 1, 2]);
        let s = rng.range(1, 7);
        let pl = rng.range(s.saturating_sub(5), s.min(5) - 1).min(4);
        let pr = s - 1 - pl; // keeps OW == W (a multiple of 4)
        let r = rng.range(1, 7);
        let params = wgconv::Conv2dParams::default()
            .with_groups(c)
            .with_stride([rng.range(1, 2), 1])
            .with_dilation([rng.range(1, 2), 1])
            .with_padding(wgconv::Padding::PerSide([
                rng.range(0, 2),
                rng.range(0, 2),
                pl,
                pr,
            ]))
            .with_flip(rng.bool());
        let bias = rng.bool();
        let x = [rng.range(1, 3), c, rng.range(1, 13), 4 * rng.range(1, 30)];
        let w = [c * mult, 1, r, s];
        let Ok(problem) = params.resolve(x, w, bias.then_some(c * mult)) else {
            continue;
        };
        assert_eq!(problem.ow(), x[3]);
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

/// The row packer of forward weights (`pack_conv_weights_rows`: one texel load per packed
/// texel) on panels that wrap to the next column block of the weight image (at most 256 texels
/// tall here), with flipped taps, groups and a 5x5 kernel whose rows straddle texels and
/// taps; steady kernels from the first call on (blocking tuning, no first-call stand-ins).
#[test]
fn weight_row_packer_matches_cpu_on_wrapped_panels() {
    let ctx = Context::with_options_blocking(ContextOptions {
        limits: Some(LimitsOverride {
            max_texture_dimension_2d: Some(256),
            ..Default::default()
        }),
        tuning: Some(wgconv::TuningMode::Blocking),
        ..Default::default()
    })
    .expect("adapter");
    if !ctx.has_subgroups8() {
        return;
    }
    let mut rng = Rng::new(29);
    let pad =
        |p: usize| wgconv::Conv2dParams::default().with_padding(wgconv::Padding::Symmetric([p, p]));
    // (x, w, params): 64 x 16 x 3 x 3 is two 144-row panels in a 256-row image.
    let cases = [
        ([1, 16, 6, 6], [64, 16, 3, 3], pad(1)),
        ([2, 16, 5, 7], [64, 16, 3, 3], pad(1).with_flip(true)),
        ([1, 32, 5, 5], [64, 16, 3, 3], pad(1).with_groups(2)),
        ([1, 8, 9, 9], [32, 8, 5, 5], pad(2).with_flip(true)),
    ];
    for (i, (x, w, params)) in cases.into_iter().enumerate() {
        let problem = params.resolve(x, w, Some(w[0])).unwrap();
        let case = ConvCase {
            x,
            w,
            bias: true,
            params,
            problem,
        };
        assert!(ctx.can_run_forward(Algorithm::ImplicitGemm, &problem));
        run_case_on(&ctx, 2000 + i, &case, Algorithm::ImplicitGemm, &mut rng).unwrap();
    }
    assert!(
        wgconv::dev::compiled_kernels(&ctx).contains(&"pack_conv_weights_rows"),
        "{:?}",
        wgconv::dev::compiled_kernels(&ctx)
    );
}
