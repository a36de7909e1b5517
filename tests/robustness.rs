//! Non-finite values, many threads, no leaks, resources released, device loss.

mod common;

use std::sync::Arc;

use common::{check, ctx, tol, Rng};
use wgconv::{
    cpu, Algorithm, Context, Conv2dParams, ErrorKind, GemmParams, Operation, Padding, PaddingMode,
    Tensor,
};

/// NaN / ±Inf compare as classes (NaN == NaN, same infinity); finite values within `tol`.
fn same_class(label: &str, got: &[f32], want: &[f32], scale: &[f32], len: usize) {
    for i in 0..got.len() {
        let (g, w) = (got[i], want[i]);
        let ok = if w.is_nan() {
            g.is_nan()
        } else if w.is_infinite() {
            g == w
        } else {
            g.is_finite() && (g - w).abs() <= tol(scale[i], len)
        };
        assert!(ok, "{label}: index {i}: got {g}, want {w}");
    }
}

#[test]
fn nan_and_inf_propagate_like_the_reference() {
    let ctx = ctx();
    let mut rng = Rng::new(13);
    let modes = [
        PaddingMode::Zeros,
        PaddingMode::Reflect,
        PaddingMode::Replicate,
        PaddingMode::Circular,
    ];
    for (i, &mode) in modes.iter().enumerate() {
        let params = Conv2dParams::default()
            .with_padding(Padding::Symmetric([1, 1]))
            .with_padding_mode(mode);
        let (xs, ws) = ([2, 3, 9, 10], [4, 3, 3, 3]);
        let mut x = rng.vec(xs.iter().product());
        // A NaN, a +Inf and a -Inf in the input (positive weights keep Inf signs defined where
        // only one infinity is read).
        x[7] = f32::NAN;
        x[100 + i] = f32::INFINITY;
        x[400] = f32::NEG_INFINITY;
        let w: Vec<f32> = rng
            .vec(ws.iter().product())
            .iter()
            .map(|v| v.abs() + 0.01)
            .collect();
        let p = params.resolve(xs, ws, None).unwrap();
        let (want, _) = cpu::conv2d(&x, xs, &w, ws, None, &params).unwrap();
        assert!(want.iter().any(|v| v.is_nan()) && want.iter().any(|v| v.is_infinite()));
        let scale = cpu::conv2d_abs_scale(
            &p,
            &x.iter()
                .map(|v| if v.is_finite() { *v } else { 0.0 })
                .collect::<Vec<_>>(),
            &w,
            None,
        );
        let xt = Tensor::from_slice(ctx, &x, &xs).unwrap();
        let wt = Tensor::from_slice(ctx, &w, &ws).unwrap();
        // Every algorithm that runs this problem on this adapter (the image kernels need
        // 8-lane subgroups: not on GL).
        let runs = |a: &&Algorithm| ctx.check_algorithm(Operation::Forward, **a, &p).is_ok();
        for &algo in Algorithm::ALL.iter().filter(runs) {
            let y = ctx
                .conv2d_with(&xt, &wt, None, &params, algo)
                .unwrap()
                .read()
                .unwrap();
            same_class(
                &format!("conv2d {} {:?}", algo.name(), mode),
                &y,
                &want,
                &scale,
                27,
            );
        }
        // Gradients: NaN in dy reaches dx and dw as in the reference.
        let mut dy = rng.vec(p.y_shape().iter().product());
        dy[5] = f32::NAN;
        let dyt = Tensor::from_slice(ctx, &dy, &p.y_shape()).unwrap();
        let want_dx = cpu::conv2d_backward_input(&p, &dy, &w);
        let g = ctx
            .conv2d_backward(&xt, &wt, &dyt, false, &params, Algorithm::Auto)
            .unwrap();
        let got_dx = g.dx.read().unwrap();
        for (a, b) in got_dx.iter().zip(&want_dx) {
            assert_eq!(a.is_nan(), b.is_nan(), "dx NaN pattern ({mode:?})");
        }
    }
    // GEMM: an Inf in A reaches exactly its row.
    let (m, k, n) = (5, 7, 6);
    let mut a = rng.vec(m * k);
    a[2 * k + 3] = f32::INFINITY;
    let b: Vec<f32> = rng.vec(k * n).iter().map(|v| v.abs() + 0.1).collect();
    let c = ctx
        .gemm(
            &Tensor::from_slice(ctx, &a, &[m, k]).unwrap(),
            &Tensor::from_slice(ctx, &b, &[k, n]).unwrap(),
            &GemmParams::default(),
        )
        .unwrap()
        .read()
        .unwrap();
    for (i, v) in c.iter().enumerate() {
        assert_eq!(v.is_infinite(), i / n == 2, "gemm Inf row at {i}: {v}");
    }
}

/// Runs one of several ops, checks it against the reference, returns an error message on mismatch.
fn mixed_op(ctx: &Context, which: usize, rng: &mut Rng) -> Result<(), String> {
    let err = |e: wgconv::Error| e.to_string();
    match which % 5 {
        0 | 1 => {
            let params = Conv2dParams::default()
                .with_padding(Padding::Symmetric([1, 1]))
                .with_padding_mode(if which.is_multiple_of(2) {
                    PaddingMode::Zeros
                } else {
                    PaddingMode::Reflect
                });
            let (xs, ws) = ([1, 4, 11, 9], [6, 4, 3, 3]);
            let x = rng.vec(xs.iter().product());
            let w = rng.vec(ws.iter().product());
            let p = params.resolve(xs, ws, None).map_err(err)?;
            let want = cpu::conv2d_problem(&p, &x, &w, None);
            let scale = cpu::conv2d_abs_scale(&p, &x, &w, None);
            let algo = Algorithm::ALL[which % Algorithm::ALL.len()];
            let algo = if ctx.check_algorithm(Operation::Forward, algo, &p).is_ok() {
                algo
            } else {
                Algorithm::Auto
            };
            let y = ctx
                .conv2d_with(
                    &Tensor::from_slice(ctx, &x, &xs).map_err(err)?,
                    &Tensor::from_slice(ctx, &w, &ws).map_err(err)?,
                    None,
                    &params,
                    algo,
                )
                .map_err(err)?;
            let tols: Vec<f32> = scale.iter().map(|&s| tol(s, 36)).collect();
            check("thread conv2d", &y.read().map_err(err)?, &want, &tols)
        }
        2 => {
            let (m, k, n) = (9, 13, 7);
            let a = rng.vec(m * k);
            let b = rng.vec(k * n);
            let p = GemmParams::default().with_transpose_b(true);
            let (want, _) = cpu::gemm(&a, &[m, k], &b, &[n, k], &p).map_err(err)?;
            let c = ctx
                .gemm(
                    &Tensor::from_slice(ctx, &a, &[m, k]).map_err(err)?,
                    &Tensor::from_slice(ctx, &b, &[n, k]).map_err(err)?,
                    &p,
                )
                .map_err(err)?;
            check(
                "thread gemm",
                &c.read().map_err(err)?,
                &want,
                &vec![1e-4; m * n],
            )
        }
        _ => {
            let params = Conv2dParams::default()
                .with_stride([2, 2])
                .with_padding(Padding::Symmetric([1, 1]));
            let (xs, ws) = ([2, 3, 8, 8], [4, 3, 3, 3]);
            let x = rng.vec(xs.iter().product());
            let w = rng.vec(ws.iter().product());
            let p = params.resolve(xs, ws, None).map_err(err)?;
            let dy = rng.vec(p.y_shape().iter().product());
            let g = ctx
                .conv2d_backward(
                    &Tensor::from_slice(ctx, &x, &xs).map_err(err)?,
                    &Tensor::from_slice(ctx, &w, &ws).map_err(err)?,
                    &Tensor::from_slice(ctx, &dy, &p.y_shape()).map_err(err)?,
                    true,
                    &params,
                    Algorithm::Auto,
                )
                .map_err(err)?;
            let want_dw = cpu::conv2d_backward_weight(&p, &x, &dy);
            check(
                "thread dw",
                &g.dw.read().map_err(err)?,
                &want_dw,
                &vec![1e-4; want_dw.len()],
            )?;
            let want_dx = cpu::conv2d_backward_input(&p, &dy, &w);
            check(
                "thread dx",
                &g.dx.read().map_err(err)?,
                &want_dx,
                &vec![1e-4; want_dx.len()],
            )
        }
    }
}

#[test]
fn eight_threads_share_one_context_and_compile_each_pipeline_once() {
    // Reference count of compiles: the same op sequence on one thread, fresh context.
    let single = Context::new_blocking().expect("adapter");
    let mut rng = Rng::new(1);
    // Every op variant the threads will run (they cover `which` in 0..57).
    for which in 0..60 {
        mixed_op(&single, which, &mut rng).unwrap();
    }
    // The background tuner compiles the candidates of the buckets the ops queued: count once
    // it is done (the same buckets, so the same pipelines, on both contexts).
    single.wait_for_tuning();
    let expected = single.pipeline_compiles();
    assert!(expected > 0);

    let shared = Arc::new(Context::new_blocking().expect("adapter"));
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let ctx = Arc::clone(&shared);
            std::thread::spawn(move || {
                let mut rng = Rng::new(100 + t);
                for i in 0..50 {
                    mixed_op(&ctx, t as usize + i, &mut rng)
                        .map_err(|e| format!("thread {t} op {i}: {e}"))?;
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    for h in handles {
        h.join().expect("no panic").unwrap();
    }
    shared.wait_for_tuning();
    // 400 ops raced on the cache: every specialization was compiled exactly once.
    let compiled = wgconv::dev::compiled_pipelines(&shared);
    assert_eq!(
        shared.pipeline_compiles(),
        compiled.len(),
        "compiles under contention vs pipelines held"
    );
    // The same steady pipelines as single-threaded. Which first calls run a first-call kernel
    // or stand-in depends on timing: not when another thread's call or the tuner compiled
    // the steady kernel first.
    let steady = |c: Vec<(&'static str, Vec<(&'static str, i64)>)>| {
        let first_call_only =
            |n: &str| n.ends_with("_first") || n.contains("_p1x") || n.ends_with("_texel");
        c.into_iter()
            .filter(|(n, _)| !first_call_only(n))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        steady(compiled),
        steady(wgconv::dev::compiled_pipelines(&single)),
        "steady pipelines under contention vs single-threaded"
    );
    let expected = shared.pipeline_compiles();
    // And running everything again compiles nothing.
    let mut rng = Rng::new(2);
    for which in 0..60 {
        mixed_op(&shared, which, &mut rng).unwrap();
    }
    shared.wait_for_tuning();
    assert_eq!(shared.pipeline_compiles(), expected);
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

#[test]
fn two_thousand_forward_backward_calls_keep_memory_flat() {
    let ctx = Context::new_blocking().expect("adapter");
    let mut rng = Rng::new(3);
    let params = Conv2dParams::default().with_padding(Padding::Symmetric([1, 1]));
    let (xs, ws) = ([2, 8, 12, 12], [8, 8, 3, 3]);
    let x = Tensor::from_slice(&ctx, &rng.vec(xs.iter().product()), &xs).unwrap();
    let w = Tensor::from_slice(&ctx, &rng.vec(ws.iter().product()), &ws).unwrap();
    let b = Tensor::from_slice(&ctx, &rng.vec(8), &[8]).unwrap();
    let baseline_bytes = ctx.allocated_bytes();
    let step = |i: usize| {
        let algo = Algorithm::ALL[i % 2]; // direct and im2col+GEMM (scratch buffers)
        let y = ctx.conv2d_with(&x, &w, Some(&b), &params, algo).unwrap();
        let g = ctx
            .conv2d_backward(&x, &w, &y, true, &params, algo)
            .unwrap();
        drop((y, g));
        if i.is_multiple_of(50) {
            ctx.synchronize().unwrap();
        }
    };
    for i in 0..200 {
        step(i); // warm-up: pipelines, allocator pools, the scratch pool
    }
    ctx.synchronize().unwrap();
    // The steady state: the tensors, plus idle scratch kept for reuse within the budget.
    let steady = ctx.allocated_bytes();
    assert!(ctx.pooled_bytes() <= ctx.scratch_budget());
    assert_eq!(steady, baseline_bytes + ctx.pooled_bytes());
    let rss0 = rss_bytes();
    for i in 0..2000 {
        step(i);
        assert_eq!(
            ctx.allocated_bytes(),
            steady,
            "library-held device memory after call {i}"
        );
    }
    ctx.synchronize().unwrap();
    ctx.release_scratch();
    assert_eq!(ctx.allocated_bytes(), baseline_bytes, "the pool is freed");
    let grown = rss_bytes().saturating_sub(rss0);
    eprintln!(
        "rss growth over 2000 forward+backward calls: {} KiB",
        grown / 1024
    );
    assert!(grown < 64 << 20, "resident memory grew by {grown} bytes");
}

#[test]
fn dropping_tensors_and_contexts_releases_memory_and_in_flight_reads_are_safe() {
    // 20 contexts, each holding 64 MiB, created and dropped: memory does not pile up.
    let rss0 = rss_bytes();
    for _ in 0..20 {
        let ctx = Context::new_blocking().expect("adapter");
        let t = Tensor::full(&ctx, &[16, 1024, 1024], 1.0).unwrap();
        assert_eq!(ctx.allocated_bytes(), 64 << 20);
        drop(t);
        assert_eq!(ctx.allocated_bytes(), 0);
    }
    let grown = rss_bytes().saturating_sub(rss0);
    assert!(
        grown < 512 << 20,
        "20 x 64 MiB contexts left {grown} bytes resident"
    );

    let ctx = ctx();
    let mut rng = Rng::new(4);
    let params = Conv2dParams::default().with_padding(Padding::Symmetric([1, 1]));
    let (xs, ws) = ([1, 16, 128, 128], [16, 16, 3, 3]);
    let xv = rng.vec(xs.iter().product());
    let wv = rng.vec(ws.iter().product());
    let x = Tensor::from_slice(ctx, &xv, &xs).unwrap();
    let w = Tensor::from_slice(ctx, &wv, &ws).unwrap();
    // Read while the work is still in flight: the read waits for it.
    let y = ctx.conv2d(&x, &w, None, &params).unwrap();
    let got = pollster::block_on(y.read_async()).unwrap();
    let (want, _) = cpu::conv2d(&xv, xs, &wv, ws, None, &params).unwrap();
    let p = params.resolve(xs, ws, None).unwrap();
    let scale = cpu::conv2d_abs_scale(&p, &xv, &wv, None);
    check(
        "in-flight read",
        &got,
        &want,
        &scale.iter().map(|&s| tol(s, 144)).collect::<Vec<_>>(),
    )
    .unwrap();
    // A clone outlives the original; inputs dropped right after submission are kept alive
    // by the queue; an output dropped before anyone reads it is fine too.
    let y2 = ctx.conv2d(&x, &w, None, &params).unwrap();
    let keep = y2.clone();
    drop(y2);
    drop(x);
    drop(ctx.conv2d(&keep, &w, None, &params).unwrap());
    assert_eq!(keep.read().unwrap().len(), want.len());
}

#[test]
fn a_destroyed_device_gives_typed_errors_not_panics() {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter =
        pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
            .expect("adapter");
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: None,
        required_features: wgpu::Features::empty(),
        required_limits: adapter.limits(),
        experimental_features: wgpu::ExperimentalFeatures::disabled(),
        memory_hints: wgpu::MemoryHints::Performance,
        trace: wgpu::Trace::Off,
    }))
    .expect("device");
    device.on_uncaptured_error(Arc::new(|_| {}));
    let ctx = Context::from_device(device.clone(), queue);
    let x = Tensor::from_slice(&ctx, &[1.0; 16], &[1, 1, 4, 4]).unwrap();
    let w = Tensor::from_slice(&ctx, &[1.0; 9], &[1, 1, 3, 3]).unwrap();
    device.destroy();
    let r = ctx
        .conv2d(&x, &w, None, &Conv2dParams::default())
        .and_then(|y| y.read());
    match r {
        Ok(_) => panic!("a destroyed device cannot compute"),
        Err(e) => assert!(
            matches!(
                e.kind(),
                ErrorKind::Device { .. }
                    | ErrorKind::BufferMap(_)
                    | ErrorKind::ShaderCompile { .. }
                    | ErrorKind::OutOfMemory(_)
            ),
            "{e:?}"
        ),
    }
}
