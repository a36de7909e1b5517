//! Autotuning: a shape bucket is measured once (in the background after its first call by
//! default, on the first call in blocking mode), later calls (and other processes, via the
//! cache file) reuse the choice; off means the deterministic heuristic; the first call of a
//! bucket compiles only the heuristic's pipelines and does not wait for tuning; warm-up
//! compiles what later calls run; results match the CPU reference whatever is picked.

mod common;

use common::{check, tol, Rng};
use wgconv::{
    cpu, Activation, Algorithm, Context, ContextOptions, Conv2dParams, Epilogue, KernelClass,
    Operation, Padding, PaddingMode, Residual, Tensor, TuningMode,
};

fn is_gl(ctx: &Context) -> bool {
    ctx.adapter_info().backend == wgpu::Backend::Gl
}

/// What "tuning on" means on this adapter.
fn on_mode(ctx: &Context) -> TuningMode {
    if is_gl(ctx) {
        TuningMode::Blocking
    } else {
        TuningMode::Background
    }
}

fn run(ctx: &Context, xs: [usize; 4], rng: &mut Rng) {
    let params = Conv2dParams::default().with_padding(Padding::Symmetric([1, 1]));
    let ws = [16, xs[1], 3, 3];
    let x = rng.vec(xs.iter().product());
    let w = rng.vec(ws.iter().product());
    let p = params.resolve(xs, ws, None).unwrap();
    let y = ctx
        .conv2d(
            &Tensor::from_slice(ctx, &x, &xs).unwrap(),
            &Tensor::from_slice(ctx, &w, &ws).unwrap(),
            None,
            &params,
        )
        .unwrap();
    let want = cpu::conv2d_problem(&p, &x, &w, None);
    let scale = cpu::conv2d_abs_scale(&p, &x, &w, None);
    check(
        "tuned conv2d",
        &y.read().unwrap(),
        &want,
        &scale
            .iter()
            .map(|&s| tol(s, p.reduction_len()))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let dy = Tensor::from_slice(ctx, &rng.vec(p.y_shape().iter().product()), &p.y_shape()).unwrap();
    let xt = Tensor::from_slice(ctx, &x, &xs).unwrap();
    let wt = Tensor::from_slice(ctx, &w, &ws).unwrap();
    ctx.conv2d_backward(&xt, &wt, &dy, false, &params, Algorithm::Auto)
        .unwrap()
        .dx
        .read()
        .unwrap();
}

#[test]
fn tuning_is_cached_per_bucket_and_persisted() {
    let path = std::env::temp_dir().join(format!("wgconv-tune-{}.txt", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let opts = ContextOptions {
        autotune: Some(true),
        tune_cache: Some(path.clone()),
        ..Default::default()
    };
    let mut rng = Rng::new(1);
    let ctx = Context::with_options_blocking(opts.clone()).expect("adapter");
    // `autotune: Some(true)` is background tuning (blocking on GL): wait for it before
    // counting.
    assert_eq!(ctx.tuning_mode(), on_mode(&ctx));
    run(&ctx, [1, 8, 20, 20], &mut rng);
    ctx.wait_for_tuning();
    // forward, input gradient and weight gradient: one measurement each.
    assert_eq!(ctx.tuned_entries(), 3);
    assert_eq!(ctx.pending_tuning(), 0);
    // Same bucket (sizes round up to the same powers of two): no new measurement.
    run(&ctx, [1, 8, 27, 30], &mut rng);
    ctx.wait_for_tuning();
    assert_eq!(ctx.tuned_entries(), 3);
    // Another bucket: measured.
    run(&ctx, [2, 8, 20, 20], &mut rng);
    ctx.wait_for_tuning();
    assert_eq!(ctx.tuned_entries(), 6);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 6, "{text}");
    assert!(text.lines().all(|l| l.split('\t').count() == 3));
    // A new context (another process, in effect) reads the file: nothing to measure.
    let ctx2 = Context::with_options_blocking(opts).expect("adapter");
    run(&ctx2, [1, 8, 20, 20], &mut rng);
    run(&ctx2, [2, 8, 17, 19], &mut rng);
    assert_eq!(ctx2.pending_tuning(), 0, "nothing queued");
    ctx2.wait_for_tuning();
    assert_eq!(ctx2.tuned_entries(), 0);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn autotune_off_is_the_heuristic_and_forced_algorithms_bypass_tuning() {
    let ctx = Context::with_options_blocking(ContextOptions {
        autotune: Some(false),
        ..Default::default()
    })
    .expect("adapter");
    assert!(!ctx.autotune());
    assert_eq!(ctx.tuning_mode(), TuningMode::Off);
    let mut rng = Rng::new(2);
    run(&ctx, [1, 8, 20, 20], &mut rng);
    assert_eq!(ctx.pending_tuning(), 0);
    ctx.wait_for_tuning();
    assert_eq!(ctx.tuned_entries(), 0);
    // On: the adapter's "on" mode (background; blocking on GL).
    ctx.set_autotune(true);
    assert_eq!(ctx.tuning_mode(), on_mode(&ctx));
    let x = Tensor::zeros(&ctx, &[1, 8, 9, 9]).unwrap();
    let w = Tensor::zeros(&ctx, &[4, 8, 3, 3]).unwrap();
    ctx.conv2d_with(&x, &w, None, &Conv2dParams::default(), Algorithm::Direct)
        .unwrap();
    ctx.wait_for_tuning();
    assert_eq!(ctx.tuned_entries(), 0, "a forced algorithm does not tune");
    ctx.conv2d(&x, &w, None, &Conv2dParams::default()).unwrap();
    ctx.wait_for_tuning();
    assert_eq!(ctx.tuned_entries(), 1);
    // Off and on again keeps the mode last chosen.
    ctx.set_tuning_mode(TuningMode::Blocking);
    ctx.set_autotune(false);
    assert!(!ctx.autotune());
    ctx.set_autotune(true);
    assert_eq!(ctx.tuning_mode(), TuningMode::Blocking);
}

/// A forced kernel class: the context reports it, tunes and computes correctly with the other
/// class's variants, and keeps its tuning entries apart from the adapter's own in a shared
/// cache file.
#[test]
fn forced_kernel_class_tunes_apart_and_matches_cpu() {
    let path = std::env::temp_dir().join(format!("wgconv-class-{}.txt", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let own = Context::with_options_blocking(ContextOptions {
        autotune: Some(true),
        tune_cache: Some(path.clone()),
        ..Default::default()
    })
    .expect("adapter");
    let other = match own.kernel_class() {
        KernelClass::Cpu => KernelClass::Gpu,
        KernelClass::Gpu => KernelClass::Cpu,
    };
    let forced = Context::with_options_blocking(ContextOptions {
        autotune: Some(true),
        tune_cache: Some(path.clone()),
        kernel_class: Some(other),
        ..Default::default()
    })
    .expect("adapter");
    assert_eq!(forced.kernel_class(), other);
    assert_eq!(forced.is_cpu_adapter(), own.is_cpu_adapter());
    let mut rng = Rng::new(3);
    run(&own, [1, 8, 20, 20], &mut rng);
    run(&forced, [1, 8, 20, 20], &mut rng);
    own.wait_for_tuning();
    forced.wait_for_tuning();
    // The forced context measured its own choices (none read from the other's entries).
    assert_eq!(forced.tuned_entries(), 3);
    let text = std::fs::read_to_string(&path).unwrap();
    let tagged = format!(" | {other:?} kernels\t");
    assert_eq!(text.lines().count(), 6, "{text}");
    assert_eq!(
        text.lines().filter(|l| l.contains(&tagged)).count(),
        3,
        "{text}"
    );
    let _ = std::fs::remove_file(&path);
}

/// The shape of the first-call tests: forward, input and weight gradient each have several
/// candidates on every adapter.
const XS: [usize; 4] = [1, 8, 20, 20];
const WS: [usize; 4] = [16, 8, 3, 3];

fn forward(ctx: &Context, x: &[f32], w: &[f32]) -> Vec<f32> {
    let params = Conv2dParams::default().with_padding(Padding::Symmetric([1, 1]));
    ctx.conv2d(
        &Tensor::from_slice(ctx, x, &XS).unwrap(),
        &Tensor::from_slice(ctx, w, &WS).unwrap(),
        None,
        &params,
    )
    .unwrap()
    .read()
    .unwrap()
}

/// Default options: the first call of a bucket runs the heuristic's choice, compiling only its
/// pipelines (as many as a context with tuning off compiles), and returns without measuring;
/// the bucket is queued, measured later (here by `wait_for_tuning` on the calling thread while
/// the tuning thread is paused, then by the tuning thread), and the results before and after
/// tuning agree with the reference and with each other within the tolerance.
#[test]
fn first_call_compiles_only_the_heuristic_choice_and_does_not_wait_for_tuning() {
    let mut rng = Rng::new(4);
    let x = rng.vec(XS.iter().product());
    let w = rng.vec(WS.iter().product());
    let params = Conv2dParams::default().with_padding(Padding::Symmetric([1, 1]));
    let p = params.resolve(XS, WS, None).unwrap();
    let want = cpu::conv2d_problem(&p, &x, &w, None);
    let tols: Vec<f32> = cpu::conv2d_abs_scale(&p, &x, &w, None)
        .iter()
        .map(|&s| tol(s, p.reduction_len()))
        .collect();

    let off = Context::with_options_blocking(ContextOptions {
        tuning: Some(TuningMode::Off),
        ..Default::default()
    })
    .expect("adapter");
    let heuristic = forward(&off, &x, &w);
    check("heuristic", &heuristic, &want, &tols).unwrap();
    let heuristic_compiles = off.pipeline_compiles();

    let ctx = Context::with_options_blocking(ContextOptions::default()).expect("adapter");
    if std::env::var_os("WGCONV_AUTOTUNE").is_none() {
        // Background; off on GL, whose one device lock makes concurrent tuning unsafe (the
        // tiny problems here are safe: background tuning is tested there too).
        let default = if is_gl(&ctx) {
            TuningMode::Off
        } else {
            TuningMode::Background
        };
        assert_eq!(ctx.tuning_mode(), default, "the default");
    }
    ctx.set_tuning_mode(TuningMode::Background);
    // Paused, the tuning thread cannot start: whatever the first call compiles, it compiled
    // itself, and had it waited for a measurement it would never return.
    ctx.set_tuning_paused(true);
    assert!(ctx.tuning_paused());
    let first = forward(&ctx, &x, &w);
    assert_eq!(ctx.pipeline_compiles(), heuristic_compiles);
    assert_eq!(ctx.tuned_entries(), 0);
    assert_eq!(ctx.pending_tuning(), 1);
    assert_eq!(
        first.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        heuristic.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        "the first call runs the heuristic's choice"
    );
    // Queued once, however often the bucket is met before it is measured.
    let again = forward(&ctx, &x, &w);
    assert_eq!(ctx.pending_tuning(), 1);
    assert_eq!(ctx.pipeline_compiles(), heuristic_compiles);
    check("second call", &again, &want, &tols).unwrap();

    // Measured on this thread while the tuning thread is paused.
    ctx.wait_for_tuning();
    assert_eq!(ctx.tuned_entries(), 1);
    assert_eq!(ctx.pending_tuning(), 0);
    assert!(
        ctx.pipeline_compiles() > heuristic_compiles,
        "the measurement compiled the other candidates"
    );
    let tuned = forward(&ctx, &x, &w);
    check("tuned", &tuned, &want, &tols).unwrap();
    // Two algorithms, each within `tol` of the reference: within twice that of each other.
    let twice: Vec<f32> = tols.iter().map(|t| 2.0 * t).collect();
    check("tuned vs heuristic", &tuned, &heuristic, &twice).unwrap();

    // Resumed: the tuning thread measures the next bucket (input and weight gradients).
    ctx.set_tuning_paused(false);
    let dy = rng.vec(p.y_shape().iter().product());
    let g = ctx
        .conv2d_backward(
            &Tensor::from_slice(&ctx, &x, &XS).unwrap(),
            &Tensor::from_slice(&ctx, &w, &WS).unwrap(),
            &Tensor::from_slice(&ctx, &dy, &p.y_shape()).unwrap(),
            false,
            &params,
            Algorithm::Auto,
        )
        .unwrap();
    let before = g.dx.read().unwrap();
    ctx.wait_for_tuning();
    assert_eq!(ctx.tuned_entries(), 3);
    let after = ctx
        .conv2d_backward_input(
            &Tensor::from_slice(&ctx, &dy, &p.y_shape()).unwrap(),
            &Tensor::from_slice(&ctx, &w, &WS).unwrap(),
            XS,
            &params,
            Algorithm::Auto,
        )
        .unwrap()
        .read()
        .unwrap();
    let want_dx = cpu::conv2d_backward_input(&p, &dy, &w);
    let abs = |v: &[f32]| v.iter().map(|a| a.abs()).collect::<Vec<_>>();
    let dx_tols: Vec<f32> = cpu::conv2d_backward_input(&p, &abs(&dy), &abs(&w))
        .iter()
        .map(|&s| tol(s, WS[0] * 9))
        .collect();
    check("dx before tuning", &before, &want_dx, &dx_tols).unwrap();
    check("dx after tuning", &after, &want_dx, &dx_tols).unwrap();
}

/// Blocking mode measures on the first call: the bucket is tuned when the call returns.
#[test]
fn blocking_mode_tunes_on_the_first_call() {
    let ctx = Context::with_options_blocking(ContextOptions {
        tuning: Some(TuningMode::Blocking),
        autotune: Some(false), // `tuning` wins
        ..Default::default()
    })
    .expect("adapter");
    assert_eq!(ctx.tuning_mode(), TuningMode::Blocking);
    let mut rng = Rng::new(6);
    let (x, w) = (rng.vec(XS.iter().product()), rng.vec(WS.iter().product()));
    let y = forward(&ctx, &x, &w);
    assert_eq!(ctx.tuned_entries(), 1);
    assert_eq!(ctx.pending_tuning(), 0);
    let p = Conv2dParams::default()
        .with_padding(Padding::Symmetric([1, 1]))
        .resolve(XS, WS, None)
        .unwrap();
    let tols: Vec<f32> = cpu::conv2d_abs_scale(&p, &x, &w, None)
        .iter()
        .map(|&s| tol(s, p.reduction_len()))
        .collect();
    check(
        "blocking",
        &y,
        &cpu::conv2d_problem(&p, &x, &w, None),
        &tols,
    )
    .unwrap();
}

/// After `warm_up` the calls it covers compile nothing: with tuning off (the heuristic's
/// pipelines), in blocking mode (tuned by the warm-up), and in background mode once the
/// queued buckets are measured. Transposed convolutions with bias through
/// `warm_up_transposed`.
#[test]
fn warm_up_compiles_what_the_calls_run() {
    let params = Conv2dParams::default()
        .with_padding(Padding::Symmetric([1, 1]))
        .with_stride([2, 1]);
    let (xs, ws) = ([2, 8, 13, 11], [12, 8, 3, 3]);
    let p = params.resolve(xs, ws, Some(12)).unwrap();
    let tparams = wgconv::ConvTranspose2dParams::default()
        .with_stride([2, 1])
        .with_padding([1, 1]);
    let (txs, tws) = ([1, 12, 7, 11], [12, 8, 3, 3]);
    let tp = tparams.resolve(txs, tws, Some(8)).unwrap();
    // A strided 1x1 layer: its backward shares dy's image between the gradients (other
    // pipelines than either gradient alone).
    let params1 = Conv2dParams::default().with_stride([2, 2]);
    let (xs1, ws1) = ([1, 64, 14, 14], [128, 64, 1, 1]);
    let p1 = params1.resolve(xs1, ws1, Some(128)).unwrap();
    let mut rng = Rng::new(7);
    for mode in [
        TuningMode::Off,
        TuningMode::Blocking,
        TuningMode::Background,
    ] {
        let ctx = Context::with_options_blocking(ContextOptions {
            tuning: Some(mode),
            ..Default::default()
        })
        .expect("adapter");
        ctx.warm_up(
            &[
                Operation::Forward,
                Operation::InputGrad,
                Operation::WeightGrad,
                Operation::BiasGrad,
            ],
            &[p, p1],
        )
        .unwrap();
        ctx.warm_up_transposed(&[tp]).unwrap();
        ctx.wait_for_tuning();
        match mode {
            TuningMode::Off => assert_eq!(ctx.tuned_entries(), 0),
            // Forward, input gradient (also the transposed: same key), weight gradient.
            _ => assert!(ctx.tuned_entries() >= 3, "{mode:?}"),
        }
        let compiled = ctx.pipeline_compiles();
        assert!(compiled > 0);
        let mut t =
            |s: &[usize]| Tensor::from_slice(&ctx, &rng.vec(s.iter().product()), s).unwrap();
        let (x, w, b) = (t(&xs), t(&ws), t(&[12]));
        let y = ctx.conv2d(&x, &w, Some(&b), &params).unwrap();
        let g = ctx
            .conv2d_backward(&x, &w, &y, true, &params, Algorithm::Auto)
            .unwrap();
        let (tx, tw, tb) = (t(&txs), t(&tws), t(&[8]));
        let ty = ctx
            .conv_transpose2d(&tx, &tw, Some(&tb), &tparams, Algorithm::Auto)
            .unwrap();
        let (x1, w1, b1) = (t(&xs1), t(&ws1), t(&[128]));
        let y1 = ctx.conv2d(&x1, &w1, Some(&b1), &params1).unwrap();
        let g1 = ctx
            .conv2d_backward(&x1, &w1, &y1, true, &params1, Algorithm::Auto)
            .unwrap();
        g.dw.read().unwrap();
        g1.dw.read().unwrap();
        ty.read().unwrap();
        assert_eq!(ctx.pending_tuning(), 0, "{mode:?}: nothing new to tune");
        assert_eq!(
            ctx.pipeline_compiles(),
            compiled,
            "{mode:?}: the calls compiled pipelines the warm-up did not"
        );
    }
}

/// A context in tuning mode `mode`.
fn ctx_of(mode: TuningMode) -> Context {
    Context::with_options_blocking(ContextOptions {
        tuning: Some(mode),
        ..Default::default()
    })
    .expect("GPU test needs a WebGPU adapter")
}

/// The implicit GEMM's first-call kernels compute the same sums in the same order as the
/// steady-state kernel: bit-identical forward and input gradient, whichever runs, for both
/// tiles. With zero padding the first call runs `conv2d_implicit_first` alone (x and w read
/// through image copies: no packing or padding kernel); with other padding modes the
/// 1-pixel stand-in of the tile and the weight packing's stand-in. The first call queues the
/// steady kernel, which `wait_for_tuning` waits for; blocking mode and `warm_up` never use
/// first-call kernels.
#[test]
fn first_call_stand_in_is_bit_identical_to_the_steady_kernel() {
    let mut rng = Rng::new(11);
    let zeros = Conv2dParams::default().with_padding(Padding::Symmetric([1, 1]));
    let reflect = zeros.with_padding_mode(PaddingMode::Reflect);
    // 64 output channels: the 4 x 32 tile; 16: the 8 x 16 tile.
    for (k, params, steady, first) in [
        (
            64,
            zeros,
            "conv2d_implicit_n32",
            &["conv2d_implicit_first"][..],
        ),
        (16, zeros, "conv2d_implicit", &["conv2d_implicit_first"][..]),
        (
            64,
            reflect,
            "conv2d_implicit_n32",
            &["conv2d_implicit_p1x32", "pack_conv_weights_texel"][..],
        ),
        (
            16,
            reflect,
            "conv2d_implicit",
            &["conv2d_implicit_p1x16", "pack_conv_weights_texel"][..],
        ),
    ] {
        let (xs, ws) = ([2, 16, 20, 20], [k, 16, 3, 3]);
        let p = params.resolve(xs, ws, None).unwrap();
        let x = rng.vec(xs.iter().product());
        let w = rng.vec(ws.iter().product());
        let dy = rng.vec(p.y_shape().iter().product());
        let calls = |ctx: &Context| -> wgconv::Result<(Vec<f32>, Vec<f32>)> {
            let xt = Tensor::from_slice(ctx, &x, &xs)?;
            let wt = Tensor::from_slice(ctx, &w, &ws)?;
            let dyt = Tensor::from_slice(ctx, &dy, &p.y_shape())?;
            let y = ctx.conv2d_with(&xt, &wt, None, &params, Algorithm::ImplicitGemm)?;
            let dx = ctx.conv2d_backward_input(&dyt, &wt, xs, &params, Algorithm::ImplicitGemm)?;
            Ok((y.read()?, dx.read()?))
        };
        let bits = |v: &[f32]| v.iter().map(|a| a.to_bits()).collect::<Vec<_>>();
        let blocking = ctx_of(TuningMode::Blocking);
        if blocking
            .check_algorithm(Operation::Forward, Algorithm::ImplicitGemm, &p)
            .is_err()
        {
            // No image kernels (GL: no subgroups): the implicit GEMM is refused, nothing to
            // stand in for.
            assert!(calls(&blocking).is_err());
            continue;
        }
        let (y_ref, dx_ref) = calls(&blocking).unwrap();
        let compiled = wgconv::dev::compiled_kernels(&blocking);
        assert!(compiled.contains(&steady), "{compiled:?}");
        for k in first.iter().chain(&["pad_image_texel"]) {
            assert!(!compiled.contains(k), "blocking: {compiled:?}");
        }
        let want = cpu::conv2d_problem(&p, &x, &w, None);
        let tols: Vec<f32> = cpu::conv2d_abs_scale(&p, &x, &w, None)
            .iter()
            .map(|&s| tol(s, p.reduction_len()))
            .collect();
        check("steady kernel", &y_ref, &want, &tols).unwrap();

        for mode in [TuningMode::Off, TuningMode::Background] {
            let ctx = ctx_of(mode);
            ctx.set_tuning_paused(true);
            let (y1, dx1) = calls(&ctx).unwrap();
            let compiled = wgconv::dev::compiled_kernels(&ctx);
            assert!(!compiled.contains(&steady), "{mode:?}: {compiled:?}");
            for k in first {
                assert!(compiled.contains(k), "{mode:?}: {compiled:?}");
            }
            if first.contains(&"conv2d_implicit_first") {
                // One kernel: no packing, padding or GEMM stand-in.
                for k in ["conv2d_implicit_p1x32", "conv2d_implicit_p1x16"] {
                    assert!(!compiled.contains(&k), "{mode:?}: {compiled:?}");
                }
                for k in ["pad_image_texel", "pack_conv_weights_texel"] {
                    assert!(!compiled.contains(&k), "{mode:?}: {compiled:?}");
                }
            }
            assert_eq!(
                bits(&y1),
                bits(&y_ref),
                "{mode:?} k={k} {first:?}: first-call forward"
            );
            assert_eq!(
                bits(&dx1),
                bits(&dx_ref),
                "{mode:?} k={k} {first:?}: first-call dx"
            );
            // The steady kernel was queued; waiting compiles it (here, on this thread).
            ctx.wait_for_tuning();
            assert!(wgconv::dev::compiled_kernels(&ctx).contains(&steady));
            let before = ctx.pipeline_compiles();
            let (y2, dx2) = calls(&ctx).unwrap();
            assert_eq!(ctx.pipeline_compiles(), before, "{mode:?}: compiled again");
            assert_eq!(bits(&y2), bits(&y_ref), "{mode:?} k={k}: steady forward");
            assert_eq!(bits(&dx2), bits(&dx_ref), "{mode:?} k={k}: steady dx");
        }

        // Warm-up compiles the steady kernel, not the first-call kernels.
        let warm = ctx_of(TuningMode::Off);
        warm.warm_up(&[Operation::Forward], &[p]).unwrap();
        let compiled = wgconv::dev::compiled_kernels(&warm);
        assert!(compiled.contains(&steady), "warm-up: {compiled:?}");
        for k in first {
            assert!(!compiled.contains(k), "warm-up: {compiled:?}");
        }
    }
}

/// The first-call kernel (`conv2d_implicit_first`: x and w read through image copies) is
/// bit-identical to the steady-state implicit GEMM across the parameters it takes: groups,
/// stride, dilation, flip, per-side padding, channels that are not multiples of 8, output
/// channels that are not multiples of 4, bias and a fused epilogue with a residual.
#[test]
fn first_call_kernel_is_bit_identical_across_parameters() {
    let mut rng = Rng::new(23);
    let base = Conv2dParams::default();
    let cases = [
        // (x shape, w shape, params, epilogue)
        (
            [2, 12, 11, 9],
            [20, 12, 3, 3],
            base.with_padding(Padding::Symmetric([1, 1])),
            false,
        ),
        (
            [1, 16, 13, 13],
            [24, 8, 3, 3],
            base.with_groups(2).with_stride([2, 2]),
            false,
        ),
        (
            [1, 9, 12, 10],
            [6, 9, 3, 2],
            base.with_dilation([2, 1])
                .with_padding(Padding::PerSide([2, 0, 1, 3]))
                .with_flip(true),
            true,
        ),
        (
            [2, 32, 8, 8],
            [64, 32, 1, 1],
            base.with_stride([2, 2]),
            true,
        ),
    ];
    for (xs, ws, params, fused) in cases {
        let p = params.resolve(xs, ws, None).unwrap();
        let x = rng.vec(xs.iter().product());
        let w = rng.vec(ws.iter().product());
        let b = rng.vec(ws[0]);
        let r = rng.vec(p.y_shape().iter().product());
        let ep =
            Epilogue::new(Activation::LeakyRelu { alpha: 0.1 }).with_residual(Residual::Before);
        let call = |ctx: &Context| -> wgconv::Result<Vec<f32>> {
            let xt = Tensor::from_slice(ctx, &x, &xs)?;
            let wt = Tensor::from_slice(ctx, &w, &ws)?;
            let bt = Tensor::from_slice(ctx, &b, &[ws[0]])?;
            let y = if fused {
                let rt = Tensor::from_slice(ctx, &r, &p.y_shape())?;
                let a = Algorithm::ImplicitGemm;
                ctx.conv2d_fused(&xt, &wt, Some(&bt), Some(&rt), &params, &ep, a)?
            } else {
                ctx.conv2d_with(&xt, &wt, Some(&bt), &params, Algorithm::ImplicitGemm)?
            };
            y.read()
        };
        let blocking = ctx_of(TuningMode::Blocking);
        if blocking
            .check_algorithm(Operation::Forward, Algorithm::ImplicitGemm, &p)
            .is_err()
        {
            assert!(call(&blocking).is_err());
            continue;
        }
        let steady = call(&blocking).unwrap();
        let first_ctx = ctx_of(TuningMode::Off);
        first_ctx.set_tuning_paused(true);
        let first = call(&first_ctx).unwrap();
        let compiled = wgconv::dev::compiled_kernels(&first_ctx);
        assert!(
            compiled.contains(&"conv2d_implicit_first"),
            "{xs:?} {ws:?}: {compiled:?}"
        );
        let differ = first
            .iter()
            .zip(&steady)
            .position(|(a, b)| a.to_bits() != b.to_bits());
        assert_eq!(first.len(), steady.len());
        assert_eq!(
            differ, None,
            "{xs:?} {ws:?} {params:?}: first differing output"
        );
        // And both against the reference, so that a shared mistake cannot pass.
        let want = if fused {
            cpu::conv2d_fused(&x, xs, &w, ws, Some(&b), Some(&r), &params, &ep)
                .unwrap()
                .0
        } else {
            cpu::conv2d_problem(&p, &x, &w, Some(&b))
        };
        let tols: Vec<f32> = cpu::conv2d_abs_scale(&p, &x, &w, Some(&b))
            .iter()
            .zip(&r)
            .map(|(&s, &r)| tol(s + if fused { r.abs() } else { 0.0 }, p.reduction_len()))
            .collect();
        check("first-call kernel", &first, &want, &tols).unwrap();
    }
}

/// A first-call kernel queues what the steady call runs: with reflect padding and nothing
/// to pad, the first call runs `conv2d_implicit_first`, and once the queued compilations are
/// done the next call compiles nothing (its input fill is `pad_image`, not the zero-padding
/// `pad_image_flat`).
#[test]
fn first_call_kernel_queues_the_steady_fill() {
    let mut rng = Rng::new(29);
    let params = Conv2dParams::default().with_padding_mode(PaddingMode::Reflect);
    let (xs, ws) = ([1, 16, 12, 12], [64, 16, 3, 3]);
    let p = params.resolve(xs, ws, None).unwrap();
    let ctx = ctx_of(TuningMode::Off);
    if ctx
        .check_algorithm(Operation::Forward, Algorithm::ImplicitGemm, &p)
        .is_err()
    {
        return;
    }
    ctx.set_tuning_paused(true);
    let x = Tensor::from_slice(&ctx, &rng.vec(xs.iter().product()), &xs).unwrap();
    let w = Tensor::from_slice(&ctx, &rng.vec(ws.iter().product()), &ws).unwrap();
    let call = || {
        ctx.conv2d_with(&x, &w, None, &params, Algorithm::ImplicitGemm)
            .unwrap()
            .read()
            .unwrap()
    };
    let first = call();
    let compiled = wgconv::dev::compiled_kernels(&ctx);
    assert!(compiled.contains(&"conv2d_implicit_first"), "{compiled:?}");
    ctx.wait_for_tuning();
    let before = ctx.pipeline_compiles();
    let steady = call();
    assert_eq!(
        ctx.pipeline_compiles(),
        before,
        "the steady call compiled: {:?}",
        wgconv::dev::compiled_kernels(&ctx)
    );
    let bits = |v: &[f32]| v.iter().map(|a| a.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&first), bits(&steady));
}

/// The weight gradient's first-call kernel (`conv2d_wgrad_first`: x and dy read through
/// image copies, one kernel) against the CPU reference and the steady kernel across groups,
/// strides, dilation, per-side padding, true convolution, batches, channels not a multiple
/// of 8 or 16 and a strided 1x1 layer; the call queues the steady kernels, so the call after
/// `wait_for_tuning` compiles nothing.
#[test]
fn first_call_weight_gradient_matches_the_reference() {
    let mut rng = Rng::new(29);
    let base = Conv2dParams::default();
    let cases = [
        (
            [2, 12, 11, 9],
            [20, 12, 3, 3],
            base.with_padding(Padding::Symmetric([1, 1])),
        ),
        (
            [1, 16, 13, 13],
            [24, 8, 3, 3],
            base.with_groups(2).with_stride([2, 2]),
        ),
        (
            [3, 9, 12, 10],
            [6, 9, 3, 2],
            base.with_dilation([2, 1])
                .with_padding(Padding::PerSide([2, 0, 1, 3]))
                .with_flip(true),
        ),
        ([2, 32, 8, 8], [40, 32, 1, 1], base.with_stride([2, 2])),
        (
            [1, 5, 8, 17],
            [3, 5, 5, 5],
            base.with_padding(Padding::Symmetric([2, 2])),
        ),
    ];
    for (xs, ws, params) in cases {
        let p = params.resolve(xs, ws, None).unwrap();
        let x = rng.vec(xs.iter().product());
        let dy = rng.vec(p.y_shape().iter().product());
        let call = |ctx: &Context| -> wgconv::Result<Vec<f32>> {
            let xt = Tensor::from_slice(ctx, &x, &xs)?;
            let dyt = Tensor::from_slice(ctx, &dy, &p.y_shape())?;
            let a = Algorithm::ImplicitGemm;
            ctx.conv2d_backward_weight(&xt, &dyt, ws, &params, a)?
                .read()
        };
        let blocking = ctx_of(TuningMode::Blocking);
        if blocking
            .check_algorithm(Operation::WeightGrad, Algorithm::ImplicitGemm, &p)
            .is_err()
        {
            continue;
        }
        let steady = call(&blocking).unwrap();
        let first_ctx = ctx_of(TuningMode::Background);
        let first = call(&first_ctx).unwrap();
        let compiled = wgconv::dev::compiled_kernels(&first_ctx);
        assert!(
            compiled.contains(&"conv2d_wgrad_first"),
            "{xs:?} {ws:?}: {compiled:?}"
        );
        let want = cpu::conv2d_backward_weight(&p, &x, &dy);
        let abs = |v: &[f32]| v.iter().map(|a| a.abs()).collect::<Vec<f32>>();
        let scale = cpu::conv2d_backward_weight(&p, &abs(&x), &abs(&dy));
        let pixels = p.n() * p.oh() * p.ow();
        let tols: Vec<f32> = scale.iter().map(|&s| tol(s, pixels)).collect();
        for (label, got) in [("first call", &first), ("steady", &steady)] {
            if let Err(e) = check(
                &format!("{label} dw {xs:?} {ws:?} {params:?}"),
                got,
                &want,
                &tols,
            ) {
                panic!("{e}");
            }
        }
        // The steady kernel and its fills were queued: the next call compiles nothing.
        first_ctx.wait_for_tuning();
        let before = first_ctx.pipeline_compiles();
        let again = call(&first_ctx).unwrap();
        assert_eq!(
            first_ctx.pipeline_compiles(),
            before,
            "{xs:?} {ws:?}: compiled again"
        );
        if let Err(e) = check("second call", &again, &want, &tols) {
            panic!("{e}");
        }
    }
}
