//! Autotuning: first call of a shape bucket measures, later calls (and other processes, via
//! the cache file) reuse the choice; off means the deterministic heuristic; results match the
//! CPU reference whatever is picked.

mod common;

use common::{check, tol, Rng};
use wgconv::{cpu, Algorithm, Context, ContextOptions, Conv2dParams, KernelClass, Padding, Tensor};

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
    run(&ctx, [1, 8, 20, 20], &mut rng);
    // forward, input gradient and weight gradient: one measurement each.
    assert_eq!(ctx.tuned_entries(), 3);
    // Same bucket (sizes round up to the same powers of two): no new measurement.
    run(&ctx, [1, 8, 27, 30], &mut rng);
    assert_eq!(ctx.tuned_entries(), 3);
    // Another bucket: measured.
    run(&ctx, [2, 8, 20, 20], &mut rng);
    assert_eq!(ctx.tuned_entries(), 6);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 6, "{text}");
    assert!(text.lines().all(|l| l.split('\t').count() == 3));
    // A new context (another process, in effect) reads the file: nothing to measure.
    let ctx2 = Context::with_options_blocking(opts).expect("adapter");
    run(&ctx2, [1, 8, 20, 20], &mut rng);
    run(&ctx2, [2, 8, 17, 19], &mut rng);
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
    let mut rng = Rng::new(2);
    run(&ctx, [1, 8, 20, 20], &mut rng);
    assert_eq!(ctx.tuned_entries(), 0);
    ctx.set_autotune(true);
    let x = Tensor::zeros(&ctx, &[1, 8, 9, 9]).unwrap();
    let w = Tensor::zeros(&ctx, &[4, 8, 3, 3]).unwrap();
    ctx.conv2d_with(&x, &w, None, &Conv2dParams::default(), Algorithm::Direct)
        .unwrap();
    assert_eq!(ctx.tuned_entries(), 0, "a forced algorithm does not tune");
    ctx.conv2d(&x, &w, None, &Conv2dParams::default()).unwrap();
    assert_eq!(ctx.tuned_entries(), 1);
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
