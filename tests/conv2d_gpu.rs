//! GPU forward convolution vs the CPU reference on a seeded sweep, every algorithm.

mod common;

use common::{check, conv_sweep, ctx, tol, ConvCase, Rng};
use wgconv::{cpu, Algorithm, Tensor};

fn run_case(i: usize, case: &ConvCase, algo: Algorithm, rng: &mut Rng) -> Result<(), String> {
    let ctx = ctx();
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
