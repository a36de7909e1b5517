//! Bands: tensors beyond one storage binding run on every algorithm, in bands of images or
//! of rows (`src/conv/band.rs`). Small problems on artificially lowered binding limits, so
//! every band split runs: each operation (forward, input gradient, transposed, weight
//! gradient) with every algorithm the context says can run it, against the CPU reference;
//! an algorithm that says it cannot must refuse with `UnsupportedAlgorithm`.

mod common;

use std::collections::BTreeMap;

use common::{check, conv_sweep, tol, ConvCase, Rng};
use wgconv::{
    cpu, Algorithm, Context, ContextOptions, Conv2dParams, ConvTranspose2dParams, ErrorKind,
    LimitsOverride, Operation, Padding, PaddingMode, Tensor,
};

fn abs(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs()).collect()
}

/// A context whose storage bindings are capped at `binding` bytes.
fn small_ctx(binding: u64) -> Context {
    small_ctx_tex(binding, None)
}

/// [`small_ctx`] with images capped at `texture` texels a side.
fn small_ctx_tex(binding: u64, texture: Option<u32>) -> Context {
    Context::with_options_blocking(ContextOptions {
        limits: Some(LimitsOverride {
            max_storage_buffer_binding_size: Some(binding),
            max_texture_dimension_2d: texture,
            ..Default::default()
        }),
        ..Default::default()
    })
    .expect("GPU test needs a WebGPU adapter")
}

fn tols(scale: &[f32], len: usize) -> Vec<f32> {
    scale.iter().map(|&s| tol(s, len)).collect()
}

/// Every algorithm (and `Auto`).
fn algorithms() -> Vec<Algorithm> {
    Algorithm::ALL
        .iter()
        .copied()
        .chain(std::iter::once(Algorithm::Auto))
        .collect()
}

/// Plans seen per (operation, plan) and algorithm runs per operation.
#[derive(Default)]
struct Seen {
    plans: BTreeMap<(String, &'static str), usize>,
    modes_in_rows: BTreeMap<(String, String), usize>,
    runs: BTreeMap<(String, String), usize>,
}

fn run_case(ctx: &Context, case: &ConvCase, rng: &mut Rng, seen: &mut Seen) -> Result<(), String> {
    let mut errors = Vec::new();
    run_case_into(ctx, case, rng, seen, &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n"))
    }
}

fn run_case_into(
    ctx: &Context,
    case: &ConvCase,
    rng: &mut Rng,
    seen: &mut Seen,
    errors: &mut Vec<String>,
) {
    let p = &case.problem;
    let x = rng.vec(p.x_shape().iter().product());
    let w = rng.vec(p.w_shape().iter().product());
    let b = case.bias.then(|| rng.vec(p.k()));
    let dy = rng.vec(p.y_shape().iter().product());
    let xt = Tensor::from_slice(ctx, &x, &case.x).unwrap();
    let wt = Tensor::from_slice(ctx, &w, &case.w).unwrap();
    let bt = b
        .as_ref()
        .map(|b| Tensor::from_slice(ctx, b, &[p.k()]).unwrap());
    let dyt = Tensor::from_slice(ctx, &dy, &p.y_shape()).unwrap();
    let label = format!("{case:?}");
    let want_y = cpu::conv2d_problem(p, &x, &w, b.as_deref());
    let t_y = tols(
        &cpu::conv2d_abs_scale(p, &x, &w, b.as_deref()),
        p.reduction_len(),
    );
    let want_dx = cpu::conv2d_backward_input(p, &dy, &w);
    let t_dx = tols(
        &cpu::conv2d_backward_input(p, &abs(&dy), &abs(&w)),
        p.k() * p.r() * p.s(),
    );
    let want_dw = cpu::conv2d_backward_weight(p, &x, &dy);
    let t_dw = tols(
        &cpu::conv2d_backward_weight(p, &abs(&x), &abs(&dy)),
        p.n() * p.oh() * p.ow(),
    );
    for op in [
        Operation::Forward,
        Operation::InputGrad,
        Operation::WeightGrad,
    ] {
        let plan = wgconv::dev::band_plan(ctx, op, p);
        *seen.plans.entry((op.name().into(), plan)).or_default() += 1;
        if plan.starts_with("rows") {
            *seen
                .modes_in_rows
                .entry((op.name().into(), p.mode().name().into()))
                .or_default() += 1;
        }
        for algo in algorithms() {
            let can = ctx.check_algorithm(op, algo, p);
            let got = match op {
                Operation::Forward => ctx
                    .conv2d_with(&xt, &wt, bt.as_ref(), &case.params, algo)
                    .and_then(|t| t.read()),
                Operation::InputGrad => ctx
                    .conv2d_backward_input(&dyt, &wt, case.x, &case.params, algo)
                    .and_then(|t| t.read()),
                _ => ctx
                    .conv2d_backward_weight(&xt, &dyt, case.w, &case.params, algo)
                    .and_then(|t| t.read()),
            };
            let what = format!("{} {} ({plan}) {label}", op.name(), algo.name());
            if plan == "impossible" && algo == Algorithm::Auto {
                match got {
                    Err(e) if matches!(e.kind(), ErrorKind::ExceedsLimit { .. }) => {}
                    other => errors.push(format!("{what}: want ExceedsLimit, got {other:?}")),
                }
                continue;
            }
            match (can, got) {
                (Ok(()), Ok(v)) => {
                    let (want, t) = match op {
                        Operation::Forward => (&want_y, &t_y),
                        Operation::InputGrad => (&want_dx, &t_dx),
                        _ => (&want_dw, &t_dw),
                    };
                    if let Err(e) = check(&what, &v, want, t) {
                        errors.push(e);
                    }
                    *seen
                        .runs
                        .entry((op.name().into(), algo.name().into()))
                        .or_default() += 1;
                }
                (Ok(()), Err(e)) => errors.push(format!("{what}: checked ok, then failed: {e}")),
                (Err(_), Err(e)) if matches!(e.kind(), ErrorKind::UnsupportedAlgorithm { .. }) => {}
                (Err(c), Err(e)) => {
                    errors.push(format!("{what}: refused ({c}) with the wrong error: {e}"))
                }
                (Err(c), Ok(_)) => errors.push(format!("{what}: check refused ({c}) but it ran")),
            }
        }
    }
}

/// x, w, stride, dilation, groups, padding.
type RowShape = (
    [usize; 4],
    [usize; 4],
    [usize; 2],
    [usize; 2],
    usize,
    Padding,
);

/// x, w, stride, padding, output padding.
type TransposedShape = ([usize; 4], [usize; 4], [usize; 2], [usize; 2], [usize; 2]);

/// Cases that band by rows with every banded padding mode, strides, dilations, groups and
/// asymmetric padding (x planes of 20x24 and more floats exceed a 1 KiB binding).
fn row_cases() -> Vec<ConvCase> {
    const ROW_SCALE: usize = 4;
    let mut v = Vec::new();
    let modes = [
        PaddingMode::Zeros,
        PaddingMode::Reflect,
        PaddingMode::Replicate,
        PaddingMode::Circular,
    ];
    let shapes: &[RowShape] = &[
        (
            [1, 3, 23, 21],
            [4, 3, 3, 3],
            [1, 1],
            [1, 1],
            1,
            Padding::Symmetric([1, 1]),
        ),
        (
            [2, 2, 30, 17],
            [3, 2, 3, 2],
            [2, 1],
            [1, 1],
            1,
            Padding::Symmetric([1, 0]),
        ),
        (
            [1, 4, 26, 19],
            [4, 2, 3, 3],
            [1, 2],
            [2, 1],
            2,
            Padding::Symmetric([2, 1]),
        ),
        (
            [1, 2, 33, 16],
            [5, 2, 5, 3],
            [3, 1],
            [1, 1],
            1,
            Padding::PerSide([2, 1, 1, 0]),
        ),
        (
            [1, 3, 28, 18],
            [6, 3, 1, 1],
            [2, 2],
            [1, 1],
            1,
            Padding::Symmetric([0, 0]),
        ),
        (
            [1, 8, 22, 20],
            [12, 8, 1, 1],
            [1, 1],
            [1, 1],
            1,
            Padding::Valid,
        ),
        (
            [1, 4, 25, 20],
            [4, 1, 3, 3],
            [1, 1],
            [1, 1],
            4,
            Padding::Same,
        ),
        (
            [1, 8, 24, 16],
            [16, 8, 3, 3],
            [1, 1],
            [1, 1],
            1,
            Padding::Symmetric([1, 1]),
        ),
    ];
    for (i, &(xs, ws, stride, dilation, groups, pad)) in shapes.iter().enumerate() {
        let xs = [xs[0], xs[1], xs[2] * ROW_SCALE, xs[3] * ROW_SCALE];
        for (j, &mode) in modes.iter().enumerate() {
            if pad == Padding::Same && stride != [1, 1] {
                continue;
            }
            let params = Conv2dParams::default()
                .with_stride(stride)
                .with_dilation(dilation)
                .with_groups(groups)
                .with_padding(pad)
                .with_padding_mode(mode)
                .with_flip((i + j) % 3 == 0);
            let Ok(problem) = params.resolve(xs, ws, Some(ws[0])) else {
                continue;
            };
            v.push(ConvCase {
                x: xs,
                w: ws,
                bias: (i + j) % 2 == 0,
                params,
                problem,
            });
        }
    }
    v
}

#[test]
fn every_algorithm_runs_row_bands() {
    let mut rng = Rng::new(71);
    let mut seen = Seen::default();
    // Buffer kernels at 16 KiB bindings; the image kernels need bindings that stage eight
    // rows of the widest image: 64 KiB with images of at most 512 texels.
    for (binding, texture) in [(16384, None), (65536, Some(512))] {
        let ctx = small_ctx_tex(binding, texture);
        let errors: Vec<String> = row_cases()
            .iter()
            .filter_map(|case| run_case(&ctx, case, &mut rng, &mut seen).err())
            .collect();
        assert!(errors.is_empty(), "{}", errors.join("\n"));
    }
    eprintln!("plans: {:?}\nruns: {:?}", seen.plans, seen.runs);
    for op in ["forward", "input_grad", "weight_grad"] {
        for mode in ["zeros", "reflect", "replicate"] {
            assert!(
                seen.modes_in_rows
                    .contains_key(&(op.to_string(), mode.to_string())),
                "{op}: no row band with {mode} padding: {:?}",
                seen.modes_in_rows
            );
        }
    }
    assert!(seen.plans.contains_key(&("input_grad".into(), "rows+fold")));
    // Every algorithm ran row bands of some operation (the implicit GEMM where the adapter
    // has 8-lane subgroups: not on GL).
    let subgroups = small_ctx(65536).has_subgroups8();
    for algo in Algorithm::ALL {
        if *algo == Algorithm::ImplicitGemm && !subgroups {
            continue;
        }
        assert!(
            seen.runs.keys().any(|(_, a)| a == algo.name()),
            "{} never ran: {:?}",
            algo.name(),
            seen.runs
        );
    }
}

#[test]
fn every_algorithm_runs_image_bands_and_sweep() {
    for (binding, seed) in [(4096, 0x5eed_0011u64), (16384, 0x5eed_0012)] {
        let ctx = small_ctx(binding);
        let mut rng = Rng::new(seed);
        let mut seen = Seen::default();
        for case in conv_sweep(seed, 50, 40_000) {
            run_case(&ctx, &case, &mut rng, &mut seen).unwrap();
        }
        eprintln!(
            "binding {binding}: plans {:?}\nruns {:?}",
            seen.plans, seen.runs
        );
        for op in ["forward", "input_grad", "weight_grad"] {
            assert!(
                seen.plans.contains_key(&(op.to_string(), "images")),
                "{op}: no image bands at {binding} bytes: {:?}",
                seen.plans
            );
        }
    }
}

#[test]
fn transposed_convolution_in_bands_with_every_algorithm() {
    let ctx = small_ctx(2048);
    let mut rng = Rng::new(72);
    let cases: &[TransposedShape] = &[
        // x, w, stride, padding, output padding
        ([2, 6, 9, 11], [6, 4, 3, 3], [2, 2], [1, 1], [1, 1]),
        ([2, 6, 18, 22], [6, 4, 3, 3], [2, 2], [1, 1], [1, 1]),
        ([1, 4, 24, 20], [4, 3, 3, 3], [1, 1], [1, 1], [0, 0]),
        ([1, 3, 16, 18], [3, 2, 4, 4], [2, 2], [1, 1], [0, 0]),
        ([3, 8, 10, 12], [8, 8, 3, 3], [1, 1], [1, 1], [0, 0]),
    ];
    let mut planned = Vec::new();
    for &(xs, ws, stride, pad, opad) in cases {
        let params = ConvTranspose2dParams::default()
            .with_stride(stride)
            .with_padding(pad)
            .with_output_padding(opad);
        let x = rng.vec(xs.iter().product());
        let w = rng.vec(ws.iter().product());
        let b = rng.vec(ws[1]);
        let (want, shape) = cpu::conv_transpose2d(&x, xs, &w, ws, Some(&b), &params).unwrap();
        let (scale, _) =
            cpu::conv_transpose2d(&abs(&x), xs, &abs(&w), ws, Some(&abs(&b)), &params).unwrap();
        let t = tols(&scale, ws[0] * ws[2] * ws[3]);
        let tp = params.resolve(xs, ws, Some(ws[1])).unwrap();
        let plan = wgconv::dev::band_plan(&ctx, Operation::Transposed, &tp.conv());
        planned.push(plan);
        let xt = Tensor::from_slice(&ctx, &x, &xs).unwrap();
        let wt = Tensor::from_slice(&ctx, &w, &ws).unwrap();
        let bt = Tensor::from_slice(&ctx, &b, &[ws[1]]).unwrap();
        for algo in algorithms() {
            let can = ctx.check_algorithm(Operation::Transposed, algo, &tp.conv());
            let got = ctx.conv_transpose2d(&xt, &wt, Some(&bt), &params, algo);
            let what = format!(
                "transposed {} ({plan}) {xs:?} {ws:?} s{stride:?}",
                algo.name()
            );
            match (can, got) {
                (Ok(()), Ok(y)) => {
                    assert_eq!(y.shape(), shape);
                    check(&what, &y.read().unwrap(), &want, &t).unwrap();
                }
                (Err(_), Err(e)) => assert!(
                    matches!(e.kind(), ErrorKind::UnsupportedAlgorithm { .. }),
                    "{what}: {e}"
                ),
                (c, g) => panic!("{what}: check {c:?} but run {:?}", g.map(|_| ())),
            }
        }
    }
    assert!(planned.contains(&"rows"), "{planned:?}");
}
