//! Property tests: random parameters and shapes, valid and invalid (zero / huge strides,
//! per-side pads, groups not dividing, mismatched weight / bias / dy shapes, empty tensors,
//! kernels bigger than the input, reflect pads >= size, data lengths not matching shapes).
//! Every call must return a typed error or a result matching the CPU reference; the GPU
//! refuses exactly what the reference refuses (shared validation), plus sizes it cannot
//! represent (typed `ExceedsLimit`). 2,500 cases per run.

mod common;

use common::{ctx, tol, Rng};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, RngSeed};
use std::sync::atomic::{AtomicUsize, Ordering};
use wgconv::{
    cpu, Algorithm, Conv2dParams, ConvTranspose2dParams, ErrorKind, GemmParams, Padding,
    PaddingMode, Tensor,
};

/// A fixed seed (reproducible CI); set `PROPTEST_RNG_SEED` to explore other cases.
fn config(cases: u32) -> Config {
    let seed = std::env::var("PROPTEST_RNG_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_c0de);
    Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        rng_seed: RngSeed::Fixed(seed),
        ..Config::default()
    }
}

/// A dimension: mostly small, sometimes 0.
fn dim(max: usize) -> impl Strategy<Value = usize> {
    prop_oneof![40 => 1..=max, 1 => Just(0)]
}

/// A stride / dilation: mostly 1..=3, sometimes 0 or huge.
fn step() -> impl Strategy<Value = usize> {
    prop_oneof![60 => 1usize..=2, 1 => Just(0usize), 1 => Just(usize::MAX), 1 => Just(1usize << 40)]
}

fn pad() -> impl Strategy<Value = usize> {
    prop_oneof![60 => 0usize..=2, 1 => Just(usize::MAX / 2), 1 => Just(1usize << 33)]
}

fn padding() -> impl Strategy<Value = Padding> {
    prop_oneof![
        8 => (pad(), pad()).prop_map(|(a, b)| Padding::Symmetric([a, b])),
        4 => (pad(), pad(), pad(), pad()).prop_map(|(a, b, c, d)| Padding::PerSide([a, b, c, d])),
        1 => Just(Padding::Same),
        1 => Just(Padding::Valid),
    ]
}

fn mode() -> impl Strategy<Value = PaddingMode> {
    prop_oneof![
        Just(PaddingMode::Zeros),
        Just(PaddingMode::Reflect),
        Just(PaddingMode::Replicate),
        Just(PaddingMode::Circular)
    ]
}

fn params() -> impl Strategy<Value = Conv2dParams> {
    (
        (step(), step()),
        padding(),
        (step(), step()),
        prop_oneof![40 => 1usize..=4, 1 => Just(0usize)],
        mode(),
        any::<bool>(),
    )
        .prop_map(
            |((s0, s1), padding, (d0, d1), groups, padding_mode, flip)| Conv2dParams {
                stride: [s0, s1],
                padding,
                dilation: [
                    if d0 == 2 { 2 } else { d0.min(1) },
                    if d1 == 2 { 2 } else { d1.min(1) },
                ],
                groups,
                padding_mode,
                flip,
            },
        )
}

#[derive(Debug, Clone)]
struct ConvInput {
    x: [usize; 4],
    w: [usize; 4],
    bias: Option<usize>,
    params: Conv2dParams,
    /// Make one data length wrong (0: none, 1: x, 2: w).
    bad_len: u8,
    seed: u64,
}

fn conv_input() -> impl Strategy<Value = ConvInput> {
    (
        (dim(3), dim(8), 2usize..=11, 2usize..=11),
        (
            dim(8),
            prop_oneof![12 => Just(None), 1 => (1usize..=8).prop_map(Some)],
            dim(4),
            dim(4),
        ),
        prop_oneof![6 => Just(None), 6 => Just(Some(usize::MAX)), 1 => (0usize..=9).prop_map(Some)],
        params(),
        prop_oneof![60 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
        any::<u64>(),
    )
        .prop_map(
            |((n, c, h, w), (k, cg, r, s), bias, params, bad_len, seed)| {
                // Usually a consistent weight (C/groups); sometimes an arbitrary one.
                let cg = cg.unwrap_or(if params.groups > 0 {
                    c / params.groups.max(1)
                } else {
                    c
                });
                let k = if params.groups > 1 && k > 0 {
                    k.div_ceil(params.groups) * params.groups
                } else {
                    k
                };
                let bias = bias.map(|b| if b == usize::MAX { k } else { b });
                ConvInput {
                    x: [n, c, h, w],
                    w: [k, cg, r, s],
                    bias,
                    params,
                    bad_len,
                    seed,
                }
            },
        )
}

fn data(rng: &mut Rng, n: usize, wrong: bool) -> Vec<f32> {
    rng.vec(if wrong { n + 1 } else { n })
}

fn compare(
    label: &str,
    got: &[f32],
    want: &[f32],
    scale: &[f32],
    len: usize,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), want.len(), "{}: length", label);
    for i in 0..got.len() {
        let t = tol(scale[i], len);
        prop_assert!(
            (got[i] - want[i]).abs() <= t,
            "{}: index {} got {} want {} tol {}",
            label,
            i,
            got[i],
            want[i],
            t
        );
    }
    Ok(())
}

static FWD_OK: AtomicUsize = AtomicUsize::new(0);
static BWD_OK: AtomicUsize = AtomicUsize::new(0);
static TR_OK: AtomicUsize = AtomicUsize::new(0);
static GEMM_OK: AtomicUsize = AtomicUsize::new(0);

/// Both outcomes must be well represented: at least `min` of the cases computed a result.
fn check_coverage(name: &str, ok: &AtomicUsize, min: usize) {
    let ok = ok.load(Ordering::Relaxed);
    eprintln!(
        "{name}: {ok} cases computed and matched the CPU, the rest were refused with typed errors"
    );
    assert!(ok >= min, "{name}: only {ok} valid cases");
}

fn abs(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs()).collect()
}

proptest! {
    #![proptest_config(config(1200))]
    fn conv2d_forward_errors_or_matches_cpu(inp in conv_input()) {
        let ctx = ctx();
        let mut rng = Rng::new(inp.seed);
        let xn: usize = inp.x.iter().product();
        let wn: usize = inp.w.iter().product();
        let x = data(&mut rng, xn, inp.bad_len == 1);
        let w = data(&mut rng, wn, inp.bad_len == 2);
        let b = inp.bias.map(|k| rng.vec(k));
        let want = cpu::conv2d(&x, inp.x, &w, inp.w, b.as_deref(), &inp.params);
        let got = (|| {
            let xt = Tensor::from_slice(ctx, &x, &inp.x)?;
            let wt = Tensor::from_slice(ctx, &w, &inp.w)?;
            let bt = b.as_ref().map(|b| Tensor::from_slice(ctx, b, &[b.len()])).transpose()?;
            ctx.conv2d(&xt, &wt, bt.as_ref(), &inp.params)?.read()
        })();
        match (got, want) {
            (Ok(g), Ok((wv, shape))) => {
                FWD_OK.fetch_add(1, Ordering::Relaxed);
                let p = inp.params.resolve(inp.x, inp.w, inp.bias).unwrap();
                prop_assert_eq!(shape, p.y_shape());
                let scale = cpu::conv2d_abs_scale(&p, &x, &w, b.as_deref());
                compare("conv2d", &g, &wv, &scale, p.reduction_len())?;
            }
            (Err(e), Ok(_)) => prop_assert!(matches!(e.kind(), ErrorKind::ExceedsLimit { .. }), "GPU refused what the CPU computes: {}", e),
            (Ok(_), Err(e)) => prop_assert!(false, "GPU computed what the CPU refuses: {}", e),
            (Err(_), Err(_)) => {}
        }
    }
}

proptest! {
    #![proptest_config(config(500))]
    fn conv2d_gradients_error_or_match_cpu(inp in conv_input(), dy_delta in prop_oneof![6 => Just(0usize), 1 => 1usize..=2], with_bias in any::<bool>()) {
        let ctx = ctx();
        let mut rng = Rng::new(inp.seed);
        let x = rng.vec(inp.x.iter().product());
        let w = rng.vec(inp.w.iter().product());
        let p = inp.params.resolve(inp.x, inp.w, None);
        // dy: the forward output shape, or a wrong one.
        let mut dys = p.as_ref().map(|p| p.y_shape()).unwrap_or([1, inp.w[0].max(1), 2, 2]);
        dys[2] += dy_delta;
        if dys.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).is_none_or(|n| n > 1 << 22) {
            // A valid dy would not fit in host memory: exercise the mismatch path instead.
            dys = [1, 1, 1, 1];
        }
        let dy = rng.vec(dys.iter().product());
        let want = cpu::conv2d_grad(&x, inp.x, &w, inp.w, &dy, dys, with_bias, &inp.params);
        let got = (|| {
            let xt = Tensor::from_slice(ctx, &x, &inp.x)?;
            let wt = Tensor::from_slice(ctx, &w, &inp.w)?;
            let dyt = Tensor::from_slice(ctx, &dy, &dys)?;
            let g = ctx.conv2d_backward(&xt, &wt, &dyt, with_bias, &inp.params, Algorithm::Auto)?;
            Ok::<_, wgconv::Error>((g.dx.read()?, g.dw.read()?, g.db.map(|d| d.read()).transpose()?))
        })();
        match (got, want) {
            (Ok((dx, dw, db)), Ok(g)) => {
                BWD_OK.fetch_add(1, Ordering::Relaxed);
                let p = p.unwrap();
                compare("dx", &dx, &g.dx, &cpu::conv2d_backward_input(&p, &abs(&dy), &abs(&w)), p.k() * p.r() * p.s())?;
                compare("dw", &dw, &g.dw, &cpu::conv2d_backward_weight(&p, &abs(&x), &abs(&dy)), p.n() * p.oh() * p.ow())?;
                prop_assert_eq!(db.is_some(), with_bias);
                if let (Some(db), Some(want)) = (db, g.db) {
                    compare("db", &db, &want, &cpu::conv2d_backward_bias(&p, &abs(&dy)), p.n() * p.oh() * p.ow())?;
                }
            }
            (Err(e), Ok(_)) => prop_assert!(matches!(e.kind(), ErrorKind::ExceedsLimit { .. }), "GPU refused what the CPU computes: {}", e),
            (Ok(_), Err(e)) => prop_assert!(false, "GPU computed what the CPU refuses: {}", e),
            (Err(_), Err(_)) => {}
        }
    }
}

proptest! {
    #![proptest_config(config(400))]
    fn conv_transpose2d_errors_or_matches_cpu(
        x in (dim(2), dim(6), dim(7), dim(7)),
        w in (dim(6), dim(3), dim(4), dim(4)),
        stride in (step(), step()),
        padding in (0usize..=3, 0usize..=3),
        output_padding in (prop_oneof![6 => Just(0usize), 2 => Just(1usize), 1 => Just(3usize)], prop_oneof![6 => Just(0usize), 2 => Just(1usize), 1 => Just(3usize)]),
        same_cin in prop_oneof![8 => Just(true), 1 => Just(false)],
        dilation in (1usize..=3, 1usize..=3),
        groups in prop_oneof![20 => Just(1usize), 4 => 2usize..=3, 1 => Just(0usize)],
        bias in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let ctx = ctx();
        let mut rng = Rng::new(seed);
        let (xs, ws) = ([x.0, x.1, x.2, x.3], [if same_cin { x.1 } else { w.0 }, w.1, w.2, w.3]);
        let params = ConvTranspose2dParams {
            stride: [stride.0, stride.1],
            padding: [padding.0, padding.1],
            output_padding: [output_padding.0, output_padding.1],
            dilation: [dilation.0, dilation.1],
            groups,
        };
        let xv = rng.vec(xs.iter().product());
        let wv = rng.vec(ws.iter().product());
        let b = bias.then(|| rng.vec(ws[1] * groups.max(1)));
        let want = cpu::conv_transpose2d(&xv, xs, &wv, ws, b.as_deref(), &params);
        let got = (|| {
            let xt = Tensor::from_slice(ctx, &xv, &xs)?;
            let wt = Tensor::from_slice(ctx, &wv, &ws)?;
            let bt = b.as_ref().map(|b| Tensor::from_slice(ctx, b, &[b.len()])).transpose()?;
            ctx.conv_transpose2d(&xt, &wt, bt.as_ref(), &params, Algorithm::Auto)?.read()
        })();
        match (got, want) {
            (Ok(g), Ok((want, _))) => {
                TR_OK.fetch_add(1, Ordering::Relaxed);
                let ab = b.as_ref().map(|b| abs(b));
                let (scale, _) = cpu::conv_transpose2d(&abs(&xv), xs, &abs(&wv), ws, ab.as_deref(), &params).unwrap();
                compare("conv_transpose2d", &g, &want, &scale, ws[0] * ws[2] * ws[3])?;
            }
            (Err(e), Ok(_)) => prop_assert!(matches!(e.kind(), ErrorKind::ExceedsLimit { .. }), "GPU refused what the CPU computes: {}", e),
            (Ok(_), Err(e)) => prop_assert!(false, "GPU computed what the CPU refuses: {}", e),
            (Err(_), Err(_)) => {}
        }
    }
}

proptest! {
    #![proptest_config(config(400))]
    fn gemm_errors_or_matches_cpu(
        a in prop::collection::vec(0usize..=9, 1..=3),
        b in prop::collection::vec(0usize..=9, 1..=3),
        ta in any::<bool>(),
        tb in any::<bool>(),
        consistent in prop_oneof![3 => Just(true), 1 => Just(false)],
        seed in any::<u64>(),
    ) {
        let ctx = ctx();
        let mut rng = Rng::new(seed);
        let mut b = b;
        // Mostly make the inner dimensions agree.
        if consistent && a.len() >= 2 && b.len() >= 2 {
            let ka = if ta { a[a.len() - 2] } else { a[a.len() - 1] };
            let bl = b.len();
            if tb { b[bl - 1] = ka } else { b[bl - 2] = ka }
            if a.len() == 3 && b.len() == 3 { b[0] = a[0] }
        }
        let p = GemmParams::default().with_transpose_a(ta).with_transpose_b(tb);
        let av = rng.vec(a.iter().product());
        let bv = rng.vec(b.iter().product());
        let want = cpu::gemm(&av, &a, &bv, &b, &p);
        let got = (|| {
            let at = Tensor::from_slice(ctx, &av, &a)?;
            let bt = Tensor::from_slice(ctx, &bv, &b)?;
            ctx.gemm(&at, &bt, &p)?.read()
        })();
        match (got, want) {
            (Ok(g), Ok((want, _))) => {
                GEMM_OK.fetch_add(1, Ordering::Relaxed);
                let (scale, _) = cpu::gemm(&abs(&av), &a, &abs(&bv), &b, &p).unwrap();
                compare("gemm", &g, &want, &scale, 10)?;
            }
            (Err(e), Ok(_)) => prop_assert!(false, "GPU refused what the CPU computes: {}", e),
            (Ok(_), Err(e)) => prop_assert!(false, "GPU computed what the CPU refuses: {}", e),
            (Err(_), Err(_)) => {}
        }
    }
}

// The properties run from one test, in order, so the coverage counters they leave can be
// checked afterwards: each must both compute (and match) and refuse a fair share of cases.
#[test]
fn properties_cover_valid_and_invalid_inputs() {
    conv2d_forward_errors_or_matches_cpu();
    conv2d_gradients_error_or_match_cpu();
    conv_transpose2d_errors_or_matches_cpu();
    gemm_errors_or_matches_cpu();
    check_coverage("conv2d", &FWD_OK, 200);
    check_coverage("conv2d_backward", &BWD_OK, 70);
    check_coverage("conv_transpose2d", &TR_OK, 60);
    check_coverage("gemm", &GEMM_OK, 60);
}
