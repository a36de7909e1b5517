//! Per-call resources come from pools: a small layer in a loop allocates nothing per call
//! once warm (scratch buffers and images, staging, parameter buffers, bind groups), the idle
//! pool stays within the scratch budget, `release_scratch` frees it, and what
//! `allocated_bytes` counts adds up.

mod common;

use common::{check, tol, Rng};
use wgconv::{
    cpu, dev, Algorithm, Context, ContextOptions, Conv2dParams, Conv2dProblem, Operation, Padding,
    Tensor,
};

fn fresh_ctx(options: ContextOptions) -> Context {
    match Context::with_options_blocking(options) {
        Ok(c) => c,
        Err(e) => panic!("GPU test needs a WebGPU adapter and found none: {e}"),
    }
}

fn abs(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs()).collect()
}

fn expect(label: &str, got: &[f32], want: &[f32], scale: &[f32], len: usize) {
    let tols: Vec<f32> = scale.iter().map(|&s| tol(s, len)).collect();
    if let Err(e) = check(label, got, want, &tols) {
        panic!("{e}");
    }
}

/// Shape e of the bench suite, scaled down: a strided 1x1 layer on a small image.
const XS: [usize; 4] = [1, 64, 14, 14];
const WS: [usize; 4] = [128, 64, 1, 1];

fn params() -> Conv2dParams {
    Conv2dParams::default().with_stride([2, 2])
}

/// A layer's tensors and its CPU results.
struct Layer {
    p: Conv2dProblem,
    x: Tensor,
    w: Tensor,
    b: Tensor,
    dy: Tensor,
    host: [Vec<f32>; 4],
}

impl Layer {
    fn new(
        ctx: &Context,
        xs: [usize; 4],
        ws: [usize; 4],
        params: &Conv2dParams,
        seed: u64,
    ) -> Self {
        let mut rng = Rng::new(seed);
        let p = params.resolve(xs, ws, Some(ws[0])).unwrap();
        let (xv, wv, bv) = (
            rng.vec(xs.iter().product()),
            rng.vec(ws.iter().product()),
            rng.vec(ws[0]),
        );
        let dyv = rng.vec(p.y_shape().iter().product());
        Layer {
            x: Tensor::from_slice(ctx, &xv, &xs).unwrap(),
            w: Tensor::from_slice(ctx, &wv, &ws).unwrap(),
            b: Tensor::from_slice(ctx, &bv, &[ws[0]]).unwrap(),
            dy: Tensor::from_slice(ctx, &dyv, &p.y_shape()).unwrap(),
            host: [xv, wv, bv, dyv],
            p,
        }
    }

    /// Checks forward and gradients against the CPU reference.
    fn check(
        &self,
        label: &str,
        params: &Conv2dParams,
        y: &[f32],
        dx: &[f32],
        dw: &[f32],
        db: &[f32],
    ) {
        let [xv, wv, bv, dyv] = &self.host;
        let p = &self.p;
        let (xs, ws, ys) = (p.x_shape(), p.w_shape(), p.y_shape());
        let pixels = ys[0] * ys[2] * ys[3];
        let want = cpu::conv2d(xv, xs, wv, ws, Some(bv), params).unwrap().0;
        let scale = cpu::conv2d(&abs(xv), xs, &abs(wv), ws, Some(&abs(bv)), params)
            .unwrap()
            .0;
        expect(&format!("{label} y"), y, &want, &scale, p.reduction_len());
        let want = cpu::conv2d_backward_input(p, dyv, wv);
        let scale = cpu::conv2d_backward_input(p, &abs(dyv), &abs(wv));
        expect(&format!("{label} dx"), dx, &want, &scale, ys[1]);
        let want = cpu::conv2d_backward_weight(p, xv, dyv);
        let scale = cpu::conv2d_backward_weight(p, &abs(xv), &abs(dyv));
        expect(&format!("{label} dw"), dw, &want, &scale, pixels);
        let want = cpu::conv2d_backward_bias(p, dyv);
        let scale = cpu::conv2d_backward_bias(p, &abs(dyv));
        expect(&format!("{label} db"), db, &want, &scale, pixels);
    }
}

/// The algorithms that run forward and both gradients of `p` here, and `Auto`.
fn algorithms(ctx: &Context, p: &Conv2dProblem) -> Vec<Algorithm> {
    let ops = [
        Operation::Forward,
        Operation::InputGrad,
        Operation::WeightGrad,
    ];
    std::iter::once(Algorithm::Auto)
        .chain(Algorithm::ALL.iter().copied())
        .filter(|&a| ops.iter().all(|&op| ctx.check_algorithm(op, a, p).is_ok()))
        .collect()
}

#[test]
fn a_small_layer_in_a_loop_allocates_nothing_per_call() {
    let ctx = fresh_ctx(ContextOptions {
        autotune: Some(false),
        ..Default::default()
    });
    let l = Layer::new(&ctx, XS, WS, &params(), 1);
    let p = l.p;
    for algo in algorithms(&ctx, &p) {
        // Outputs owned by the loop, as a training loop recording into its own encoder.
        let y = Tensor::zeros(&ctx, &p.y_shape()).unwrap();
        let dx = Tensor::zeros(&ctx, &p.x_shape()).unwrap();
        let dw = Tensor::zeros(&ctx, &p.w_shape()).unwrap();
        let db = Tensor::zeros(&ctx, &[p.k()]).unwrap();
        let step = || {
            let mut enc = ctx
                .device()
                .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
            ctx.encode_conv2d(&mut enc, &l.x, &l.w, Some(&l.b), &params(), algo, &y)
                .unwrap();
            ctx.encode_conv2d_backward_input(&mut enc, &l.dy, &l.w, &params(), algo, &dx)
                .unwrap();
            ctx.encode_conv2d_backward_weight(&mut enc, &l.x, &l.dy, &params(), algo, &dw)
                .unwrap();
            ctx.encode_conv2d_backward_bias(&mut enc, &l.dy, &db)
                .unwrap();
            ctx.submit(enc).unwrap();
        };
        step();
        step();
        // First calls may run a stand-in kernel while the steady one compiles in the
        // background: the steady state starts once that has landed and run once.
        ctx.wait_for_tuning();
        step();
        ctx.synchronize().unwrap();
        let (bytes, stats) = (ctx.allocated_bytes(), dev::pool_stats(&ctx));
        for _ in 0..20 {
            step();
        }
        ctx.synchronize().unwrap();
        let after = dev::pool_stats(&ctx);
        let name = algo.name();
        assert_eq!(ctx.allocated_bytes(), bytes, "{name}: allocated_bytes grew");
        assert_eq!(
            after.device_allocations, stats.device_allocations,
            "{name}: device allocations in the loop"
        );
        assert_eq!(
            after.bind_groups_created, stats.bind_groups_created,
            "{name}: bind groups created in the loop"
        );
        l.check(
            name,
            &params(),
            &y.read().unwrap(),
            &dx.read().unwrap(),
            &dw.read().unwrap(),
            &db.read().unwrap(),
        );
        drop((y, dx, dw, db));
        // The allocating calls allocate nothing but the results the caller holds.
        let call = || {
            let y = ctx
                .conv2d_with(&l.x, &l.w, Some(&l.b), &params(), algo)
                .unwrap();
            let g = ctx
                .conv2d_backward(&l.x, &l.w, &l.dy, true, &params(), algo)
                .unwrap();
            (y, g)
        };
        // From an empty pool (the previous algorithm's results are pooled too): after the
        // warm-up it holds one set of results.
        ctx.release_scratch();
        drop(call());
        drop(call());
        ctx.synchronize().unwrap();
        let (bytes, stats) = (ctx.allocated_bytes(), dev::pool_stats(&ctx));
        let mut last = None;
        for _ in 0..10 {
            last = Some(call());
        }
        let (y, g) = last.expect("ran");
        let outputs = p.y_shape().iter().product::<usize>()
            + p.x_shape().iter().product::<usize>()
            + p.w_shape().iter().product::<usize>()
            + p.k();
        assert_eq!(
            ctx.allocated_bytes(),
            bytes + 4 * outputs as u64,
            "{name}: allocated_bytes besides the results held"
        );
        // Each call's results come from the buffers of the results dropped before it (the
        // pool of tensor buffers): the one set held by the loop while the next call runs
        // is the only one allocated.
        assert_eq!(
            dev::pool_stats(&ctx).device_allocations - stats.device_allocations,
            4,
            "{name}: one more set of 4 result tensors and nothing else"
        );
        l.check(
            &format!("{name} (allocating calls)"),
            &params(),
            &y.read().unwrap(),
            &g.dx.read().unwrap(),
            &g.dw.read().unwrap(),
            &g.db.as_ref().expect("bias").read().unwrap(),
        );
    }
}

/// Layers of different shapes and algorithms, so the pool sees many sizes.
fn varied_layers(ctx: &Context) -> Vec<(Layer, Conv2dParams)> {
    let pad = |p: usize| Conv2dParams::default().with_padding(Padding::Symmetric([p, p]));
    vec![
        (Layer::new(ctx, XS, WS, &params(), 2), params()),
        (
            Layer::new(ctx, [2, 16, 9, 10], [24, 16, 3, 3], &pad(1), 3),
            pad(1),
        ),
        (
            Layer::new(ctx, [1, 8, 20, 20], [8, 8, 5, 5], &pad(2), 4),
            pad(2),
        ),
        (
            Layer::new(
                ctx,
                [1, 16, 12, 12],
                [16, 1, 3, 3],
                &pad(1).with_groups(16),
                5,
            ),
            pad(1).with_groups(16),
        ),
    ]
}

fn run_all(ctx: &Context, layers: &[(Layer, Conv2dParams)], after_each: &dyn Fn(&str)) {
    for (i, (l, params)) in layers.iter().enumerate() {
        for algo in algorithms(ctx, &l.p) {
            let y = ctx
                .conv2d_with(&l.x, &l.w, Some(&l.b), params, algo)
                .unwrap();
            let g = ctx
                .conv2d_backward(&l.x, &l.w, &l.dy, true, params, algo)
                .unwrap();
            let label = format!("layer {i} {}", algo.name());
            after_each(&label);
            l.check(
                &label,
                params,
                &y.read().unwrap(),
                &g.dx.read().unwrap(),
                &g.dw.read().unwrap(),
                &g.db.as_ref().expect("bias").read().unwrap(),
            );
        }
    }
}

#[test]
fn the_idle_pool_stays_within_the_scratch_budget() {
    let budget = 256 << 10;
    let ctx = fresh_ctx(ContextOptions {
        autotune: Some(false),
        scratch_budget: Some(budget),
        ..Default::default()
    });
    let layers = varied_layers(&ctx);
    run_all(&ctx, &layers, &|label| {
        assert!(
            ctx.pooled_bytes() <= ctx.scratch_budget(),
            "{label}: {} pooled bytes over the budget {}",
            ctx.pooled_bytes(),
            ctx.scratch_budget()
        )
    });
    assert!(ctx.pooled_bytes() > 0, "nothing was kept for reuse");
    // Lowering the budget trims the pool at once.
    ctx.set_scratch_budget(8 << 10);
    assert!(ctx.pooled_bytes() <= 8 << 10, "{}", ctx.pooled_bytes());
    run_all(&ctx, &layers, &|label| {
        assert!(
            ctx.pooled_bytes() <= 8 << 10,
            "{label}: {}",
            ctx.pooled_bytes()
        )
    });
}

#[test]
fn release_scratch_frees_the_pool_and_allocated_bytes_adds_up() {
    let ctx = fresh_ctx(ContextOptions {
        autotune: Some(false),
        ..Default::default()
    });
    assert_eq!((ctx.allocated_bytes(), ctx.pooled_bytes()), (0, 0));
    let layers = varied_layers(&ctx);
    let inputs: u64 = layers
        .iter()
        .map(|(l, _)| 4 * (l.x.numel() + l.w.numel() + l.b.numel() + l.dy.numel()) as u64)
        .sum();
    assert_eq!(ctx.allocated_bytes(), inputs, "tensors only");
    run_all(&ctx, &layers, &|_| {});
    ctx.synchronize().unwrap();
    // Tensors, the idle pool and the caches: nothing else is held.
    assert!(ctx.pooled_bytes() > 0);
    assert_eq!(
        ctx.allocated_bytes(),
        inputs + ctx.pooled_bytes() + ctx.weight_cache_bytes() + ctx.input_cache_bytes()
    );
    ctx.release_scratch();
    assert_eq!(ctx.pooled_bytes(), 0);
    assert_eq!(ctx.allocated_bytes(), inputs + ctx.weight_cache_bytes());
    ctx.set_weight_cache_budget(0);
    assert_eq!(ctx.allocated_bytes(), inputs);
    // Everything still works, and refills the pool.
    run_all(&ctx, &layers, &|_| {});
    assert!(ctx.pooled_bytes() > 0);
    drop(layers);
    ctx.release_scratch();
    assert_eq!(ctx.allocated_bytes(), 0);
}

#[test]
fn threads_sharing_the_pool_get_their_own_scratch() {
    let ctx = fresh_ctx(ContextOptions {
        autotune: Some(false),
        ..Default::default()
    });
    // Every thread runs the same shapes (so they compete for the same pooled sizes) on its
    // own data, many times, with the results checked.
    let handles: Vec<_> = (0..6)
        .map(|t| {
            let ctx = ctx.clone();
            std::thread::spawn(move || {
                let l = Layer::new(&ctx, XS, WS, &params(), 10 + t);
                let p = l.p;
                let algos = algorithms(&ctx, &p);
                for i in 0..12 {
                    let algo = algos[(i + t as usize) % algos.len()];
                    let y = ctx
                        .conv2d_with(&l.x, &l.w, Some(&l.b), &params(), algo)
                        .unwrap();
                    let g = ctx
                        .conv2d_backward(&l.x, &l.w, &l.dy, true, &params(), algo)
                        .unwrap();
                    l.check(
                        &format!("thread {t} call {i} {}", algo.name()),
                        &params(),
                        &y.read().unwrap(),
                        &g.dx.read().unwrap(),
                        &g.dw.read().unwrap(),
                        &g.db.as_ref().expect("bias").read().unwrap(),
                    );
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("no panic");
    }
    assert!(ctx.pooled_bytes() <= ctx.scratch_budget());
}

#[test]
fn a_destroyed_device_with_warm_caches_gives_typed_errors() {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter =
        pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
            .expect("adapter");
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: None,
        required_features: adapter.features() & wgpu::Features::SUBGROUP,
        required_limits: adapter.limits(),
        experimental_features: wgpu::ExperimentalFeatures::disabled(),
        memory_hints: wgpu::MemoryHints::Performance,
        trace: wgpu::Trace::Off,
    }))
    .expect("device");
    device.on_uncaptured_error(std::sync::Arc::new(|_| {}));
    let ctx = Context::from_device(device.clone(), queue);
    ctx.set_autotune(false);
    let l = Layer::new(&ctx, XS, WS, &params(), 7);
    let y = Tensor::zeros(&ctx, &l.p.y_shape()).unwrap();
    let dx = Tensor::zeros(&ctx, &l.p.x_shape()).unwrap();
    let step = || -> wgconv::Result<()> {
        let mut enc = ctx
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
        ctx.encode_conv2d(
            &mut enc,
            &l.x,
            &l.w,
            Some(&l.b),
            &params(),
            Algorithm::Auto,
            &y,
        )?;
        ctx.encode_conv2d_backward_input(&mut enc, &l.dy, &l.w, &params(), Algorithm::Auto, &dx)?;
        ctx.submit(enc)?;
        y.read().map(drop)
    };
    step().unwrap();
    step().unwrap();
    device.destroy();
    // Every resource of the step is cached now; the failure still comes back as an error.
    for _ in 0..3 {
        match step() {
            Ok(()) => panic!("a destroyed device cannot compute"),
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    wgconv::ErrorKind::Device { .. } | wgconv::ErrorKind::BufferMap(_)
                ),
                "{e:?}"
            ),
        }
    }
    ctx.release_scratch();
    assert_eq!(ctx.pooled_bytes(), 0);
}

/// A call run in many row bands reuses the scratch of one band for the next (the pool keeps
/// idle scratch past the budget while the call records, then trims it): its allocations do
/// not grow with the number of bands, and the idle pool is back within the budget after the
/// call.
#[test]
fn banded_calls_reuse_scratch_across_bands() {
    // A budget below one band's images: without the hold every band would allocate them.
    let budget = 64 << 10;
    let ctx = fresh_ctx(ContextOptions {
        // 64 KiB bindings: the 1 MiB output runs in ~16 row bands.
        limits: Some(wgconv::LimitsOverride {
            max_storage_buffer_binding_size: Some(64 << 10),
            ..Default::default()
        }),
        scratch_budget: Some(budget),
        tuning: Some(wgconv::TuningMode::Blocking),
        ..Default::default()
    });
    let (xs, ws) = ([1, 8, 128, 128], [16, 8, 3, 3]);
    let params = Conv2dParams::default().with_padding(Padding::Symmetric([1, 1]));
    let l = Layer::new(&ctx, xs, ws, &params, 9);
    for op in [Operation::InputGrad, Operation::WeightGrad] {
        assert_eq!(dev::band_plan(&ctx, op, &l.p), "rows", "{op:?}");
    }
    let run = || -> Vec<Vec<f32>> {
        let a = Algorithm::Auto;
        let y = ctx.conv2d_with(&l.x, &l.w, Some(&l.b), &params, a).unwrap();
        let dx = ctx
            .conv2d_backward_input(&l.dy, &l.w, xs, &params, a)
            .unwrap();
        let dw = ctx
            .conv2d_backward_weight(&l.x, &l.dy, ws, &params, a)
            .unwrap();
        let db = ctx.conv2d_backward_bias(&l.dy).unwrap();
        [y, dx, dw, db].iter().map(|t| t.read().unwrap()).collect()
    };
    run();
    ctx.wait_for_tuning();
    run();
    let before = dev::pool_stats(&ctx).device_allocations;
    let got = run();
    let allocated = dev::pool_stats(&ctx).device_allocations - before;
    // The four results and their readbacks, the band scratch of each operation and one
    // band's images; with every band allocating its own images, over 40.
    assert!(
        allocated <= 24,
        "{allocated} allocations for one banded step"
    );
    assert!(
        ctx.pooled_bytes() <= budget,
        "{} idle bytes",
        ctx.pooled_bytes()
    );
    l.check("banded", &params, &got[0], &got[1], &got[2], &got[3]);
}
