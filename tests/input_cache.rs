//! The input-image cache: the weight gradient of a training step reads the input image the
//! forward filled from the same x (one fill pass fewer), results follow x when it changes,
//! a caller's encoder neither fills nor reads the cache, a loop with a new x every step
//! allocates nothing, and `weight_cache_budget: Some(0)` turns it off.

mod common;

use common::{check, tol, Rng};
use wgconv::{
    cpu, Algorithm, Context, ContextOptions, Conv2dParams, Operation, Padding, Tensor, TuningMode,
};

fn ctx_with(weight_cache_budget: Option<u64>) -> Context {
    let options = ContextOptions {
        tuning: Some(TuningMode::Blocking),
        weight_cache_budget,
        ..Default::default()
    };
    match Context::with_options_blocking(options) {
        Ok(c) => c,
        Err(e) => panic!("GPU test needs a WebGPU adapter and found none: {e}"),
    }
}

fn abs(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs()).collect()
}

/// (x shape, w shape, params): a strided 1x1 layer (sampled image) and a padded 3x3 one.
fn layers() -> Vec<([usize; 4], [usize; 4], Conv2dParams)> {
    vec![
        (
            [2, 16, 10, 12],
            [24, 16, 1, 1],
            Conv2dParams::default().with_stride([2, 2]),
        ),
        (
            [1, 16, 9, 10],
            [24, 16, 3, 3],
            Conv2dParams::default().with_padding(Padding::Symmetric([1, 1])),
        ),
    ]
}

struct Layer {
    xs: [usize; 4],
    ws: [usize; 4],
    params: Conv2dParams,
    p: wgconv::Conv2dProblem,
    x: Tensor,
    w: Tensor,
    b: Tensor,
    dy: Tensor,
    dyv: Vec<f32>,
    /// The implicit GEMM (the algorithm that fills input images) when it runs both the
    /// forward and the weight gradient here.
    implicit: bool,
}

impl Layer {
    fn new(
        ctx: &Context,
        rng: &mut Rng,
        (xs, ws, params): ([usize; 4], [usize; 4], Conv2dParams),
    ) -> Self {
        let p = params.resolve(xs, ws, Some(ws[0])).unwrap();
        let implicit = [
            Operation::Forward,
            Operation::InputGrad,
            Operation::WeightGrad,
        ]
        .iter()
        .all(|&op| ctx.check_algorithm(op, Algorithm::ImplicitGemm, &p).is_ok());
        let t = |rng: &mut Rng, s: &[usize]| {
            let v = rng.vec(s.iter().product());
            (Tensor::from_slice(ctx, &v, s).unwrap(), v)
        };
        let (x, _) = t(rng, &xs);
        let (w, _) = t(rng, &ws);
        let (b, _) = t(rng, &[ws[0]]);
        let (dy, dyv) = t(rng, &p.y_shape());
        Layer {
            xs,
            ws,
            params,
            p,
            x,
            w,
            b,
            dy,
            dyv,
            implicit,
        }
    }

    /// The layer's shapes, for messages.
    fn label(&self) -> String {
        format!("{:?} {:?}", self.xs, self.ws)
    }

    fn algo(&self) -> Algorithm {
        if self.implicit {
            Algorithm::ImplicitGemm
        } else {
            Algorithm::Auto
        }
    }

    fn forward(&self, ctx: &Context) {
        let y = ctx
            .conv2d_with(&self.x, &self.w, Some(&self.b), &self.params, self.algo())
            .unwrap();
        drop(y);
    }

    /// The backward's dw (checked against the CPU reference for x = `xv`) and the names of
    /// the passes it ran.
    fn backward(&self, ctx: &Context, xv: &[f32], label: &str) -> Vec<String> {
        ctx.synchronize().unwrap();
        let profiled = wgconv::dev::profile_begin(ctx, 64).is_ok();
        let g = ctx
            .conv2d_backward(&self.x, &self.w, &self.dy, true, &self.params, self.algo())
            .unwrap();
        ctx.synchronize().unwrap();
        let passes: Vec<String> = if profiled {
            wgconv::dev::profile_end(ctx)
                .unwrap()
                .into_iter()
                .map(|(n, _)| n)
                .collect()
        } else {
            Vec::new()
        };
        assert!(profiled || !self.implicit, "{label}: no pass timestamps");
        let p = &self.p;
        let want = cpu::conv2d_backward_weight(p, xv, &self.dyv);
        let scale = cpu::conv2d_backward_weight(p, &abs(xv), &abs(&self.dyv));
        let pixels = self.xs[0] * p.y_shape()[2] * p.y_shape()[3];
        let tols: Vec<f32> = scale.iter().map(|&s| tol(s, pixels)).collect();
        let dw = g.dw.read().unwrap();
        if let Err(e) = check(&format!("{label} dw"), &dw, &want, &tols) {
            panic!("{e}");
        }
        passes
    }
}

/// Passes that fill an input image of the implicit GEMM (x's, or dy's for dx).
fn fills(passes: &[String]) -> usize {
    passes.iter().filter(|p| p.starts_with("pad_image")).count()
}

/// After the forward, the backward of the same x skips x's fill; after `x.write` (new
/// values) it fills again and follows the new x; a forward recorded into a caller's
/// encoder leaves nothing to reuse.
#[test]
fn weight_gradient_reads_the_forwards_input_image() {
    let ctx = ctx_with(None);
    let mut rng = Rng::new(5);
    let mut implicit_ran = false;
    for spec in layers() {
        let l = Layer::new(&ctx, &mut rng, spec);
        let label = l.label();
        let mut xv = l.x.read().unwrap();
        // Steady kernels (the first calls may run first-call kernels).
        l.forward(&ctx);
        l.backward(&ctx, &xv, &label);
        ctx.wait_for_tuning();
        // Uncached: x rewritten (new version) right before the backward.
        l.x.write(&xv).unwrap();
        let uncached = l.backward(&ctx, &xv, &format!("{label} after write"));
        // Cached: the forward of this x version filled its image.
        l.forward(&ctx);
        let cached = l.backward(&ctx, &xv, &format!("{label} after forward"));
        // Only a forward fills entries: a second backward fills x again.
        let again = l.backward(&ctx, &xv, &format!("{label} second backward"));
        // New values after the forward: the backward must not read the stale image.
        xv = rng.vec(xv.len());
        l.forward(&ctx);
        l.x.write(&xv).unwrap();
        let rewritten = l.backward(&ctx, &xv, &format!("{label} new values"));
        // A forward recorded into a caller's encoder caches nothing.
        l.x.write(&xv).unwrap();
        let y = Tensor::zeros(&ctx, &l.p.y_shape()).unwrap();
        let mut enc = ctx
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
        ctx.encode_conv2d(&mut enc, &l.x, &l.w, Some(&l.b), &l.params, l.algo(), &y)
            .unwrap();
        ctx.submit(enc).unwrap();
        let after_caller = l.backward(&ctx, &xv, &format!("{label} after encode_conv2d"));
        if l.implicit {
            assert_eq!(
                fills(&cached) + 1,
                fills(&uncached),
                "{label}: the backward after the forward filled x again: {cached:?} vs {uncached:?}"
            );
            assert_eq!(
                fills(&rewritten),
                fills(&uncached),
                "{label}: {rewritten:?}"
            );
            assert_eq!(fills(&again), fills(&uncached), "{label}: {again:?}");
            assert_eq!(
                fills(&after_caller),
                fills(&uncached),
                "{label}: {after_caller:?}"
            );
            implicit_ran = true;
        }
    }
    // The cached images count in allocated_bytes, and release_scratch frees them.
    let held = ctx.input_cache_bytes();
    assert!(held > 0 || !implicit_ran);
    let before = ctx.allocated_bytes();
    ctx.release_scratch();
    assert_eq!(ctx.input_cache_bytes(), 0);
    assert!(ctx.allocated_bytes() + held <= before);
}

/// A training loop with a new x every step (written before the forward) reuses the
/// evicted image: no device allocation per step once warm, and every step's dw right.
#[test]
fn a_new_input_every_step_allocates_nothing() {
    let ctx = ctx_with(None);
    let mut rng = Rng::new(9);
    let l = Layer::new(&ctx, &mut rng, layers().remove(0));
    let label = l.label();
    // A step checked against the CPU (its readback allocates a staging buffer) or not.
    let step = |rng: &mut Rng, checked: bool| {
        let xv = rng.vec(l.x.numel());
        l.x.write(&xv).unwrap();
        l.forward(&ctx);
        if checked {
            l.backward(&ctx, &xv, &label)
        } else {
            let g = ctx
                .conv2d_backward(&l.x, &l.w, &l.dy, true, &l.params, l.algo())
                .unwrap();
            ctx.synchronize().unwrap();
            drop(g);
            Vec::new()
        }
    };
    for _ in 0..3 {
        step(&mut rng, false);
    }
    ctx.wait_for_tuning();
    step(&mut rng, false);
    let before = wgconv::dev::pool_stats(&ctx).device_allocations;
    for _ in 0..4 {
        step(&mut rng, false);
    }
    let after = wgconv::dev::pool_stats(&ctx).device_allocations;
    assert_eq!(after, before, "{label}: allocations in the loop");
    let passes = step(&mut rng, true);
    if l.implicit {
        // dy's fill for the input gradient only: x's image came from the forward.
        assert_eq!(fills(&passes), 1, "{label}: {passes:?}");
    }
}

/// `weight_cache_budget: Some(0)` turns the input-image cache off too.
#[test]
fn no_input_cache_without_the_weight_cache() {
    let ctx = ctx_with(Some(0));
    let mut rng = Rng::new(11);
    let l = Layer::new(&ctx, &mut rng, layers().remove(0));
    let xv = l.x.read().unwrap();
    let label = l.label();
    l.forward(&ctx);
    l.backward(&ctx, &xv, &label);
    ctx.wait_for_tuning();
    l.forward(&ctx);
    let passes = l.backward(&ctx, &xv, &label);
    if l.implicit {
        assert_eq!(fills(&passes), 2, "{label}: {passes:?}");
    }
}

/// Forwards alone (inference) cache nothing; once a weight gradient of the layer ran, its
/// forwards fill entries.
#[test]
fn inference_caches_nothing() {
    let ctx = ctx_with(None);
    let mut rng = Rng::new(13);
    let l = Layer::new(&ctx, &mut rng, layers().remove(0));
    let label = l.label();
    for _ in 0..3 {
        l.forward(&ctx);
    }
    ctx.wait_for_tuning();
    l.forward(&ctx);
    ctx.synchronize().unwrap();
    assert_eq!(ctx.input_cache_bytes(), 0, "{label}: forwards alone cached");
    let xv = l.x.read().unwrap();
    l.backward(&ctx, &xv, &label);
    l.forward(&ctx);
    ctx.synchronize().unwrap();
    if l.implicit {
        assert!(
            ctx.input_cache_bytes() > 0,
            "{label}: nothing cached for training"
        );
        let passes = l.backward(&ctx, &xv, &label);
        assert_eq!(fills(&passes), 1, "{label}: {passes:?}");
    }
}
