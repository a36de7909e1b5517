//! The packed-weight cache: results follow every way a weight tensor can change (write,
//! clones and reshapes, outputs of `encode_*` calls, `buffer()` writes, caller-owned
//! buffers), entries go with their tensor and the budget, and memory is accounted.

mod common;

use common::{check, tol, Rng};
use wgconv::{cpu, Algorithm, Context, ContextOptions, Conv2dParams, Padding, Tensor, TuningMode};

/// A context whose calls run the steady-state kernels from the first call on (blocking
/// tuning: no first-call kernels, which read the weights in place and cache nothing).
fn fresh_ctx() -> Context {
    let options = ContextOptions {
        tuning: Some(TuningMode::Blocking),
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

const XS: [usize; 4] = [1, 16, 9, 10];
const WS: [usize; 4] = [24, 16, 3, 3];

fn params() -> Conv2dParams {
    Conv2dParams::default().with_padding(Padding::Symmetric([1, 1]))
}

/// The forward convolution of `x` with weights `w` (host copies) checked against the CPU
/// reference; `got` is the GPU result.
fn expect(label: &str, x: &[f32], w: &[f32], got: &[f32]) {
    let p = params().resolve(XS, WS, None).unwrap();
    let want = cpu::conv2d(x, XS, w, WS, None, &params()).unwrap().0;
    let scale = cpu::conv2d(&abs(x), XS, &abs(w), WS, None, &params())
        .unwrap()
        .0;
    let tols: Vec<f32> = scale.iter().map(|&s| tol(s, p.reduction_len())).collect();
    if let Err(e) = check(label, got, &want, &tols) {
        panic!("{e}");
    }
}

/// The forward with the implicit GEMM (the algorithm whose packed weights are cached) where
/// it runs, else `Auto` (results are still checked).
fn cached_algorithm(ctx: &Context) -> Algorithm {
    let p = params().resolve(XS, WS, None).unwrap();
    if ctx.can_run_forward(Algorithm::ImplicitGemm, &p) {
        Algorithm::ImplicitGemm
    } else {
        Algorithm::Auto
    }
}

fn conv(ctx: &Context, x: &Tensor, w: &Tensor) -> Vec<f32> {
    ctx.conv2d_with(x, w, None, &params(), cached_algorithm(ctx))
        .unwrap()
        .read()
        .unwrap()
}

#[test]
fn cached_weights_follow_every_change() {
    let ctx = fresh_ctx();
    let p = params().resolve(XS, WS, None).unwrap();
    if !ctx.can_run_forward(Algorithm::ImplicitGemm, &p) {
        // Only the lavapipe implicit GEMM packs weights into cached panels; elsewhere the
        // cache stays empty and every result below must still be right.
        eprintln!("implicit GEMM not available: checking results only");
    }
    let packs = ctx.can_run_forward(Algorithm::ImplicitGemm, &p);
    let mut rng = Rng::new(5);
    let xv = rng.vec(XS.iter().product());
    let x = Tensor::from_slice(&ctx, &xv, &XS).unwrap();
    let base = ctx.allocated_bytes();

    // First call packs and caches; the second reads the cache.
    let mut wv = rng.vec(WS.iter().product());
    let w = Tensor::from_slice(&ctx, &wv, &WS).unwrap();
    expect("first call", &xv, &wv, &conv(&ctx, &x, &w));
    let cached = ctx.weight_cache_bytes();
    if packs {
        assert!(cached > 0, "nothing cached");
    }
    expect("cached call", &xv, &wv, &conv(&ctx, &x, &w));
    assert_eq!(
        ctx.weight_cache_bytes(),
        cached,
        "a hit must not add entries"
    );

    // Tensor::write: the next call repacks (the old version is dropped).
    wv = rng.vec(WS.iter().product());
    w.write(&wv).unwrap();
    expect("after write", &xv, &wv, &conv(&ctx, &x, &w));
    assert_eq!(ctx.weight_cache_bytes(), cached, "old version kept");

    // A reshape shares the buffer and its version.
    wv = rng.vec(WS.iter().product());
    let flat = w.reshape(&[WS.iter().product()]).unwrap();
    flat.write(&wv).unwrap();
    expect(
        "after write through a reshape",
        &xv,
        &wv,
        &conv(&ctx, &x, &w),
    );
    let clone = w.clone();
    wv = rng.vec(WS.iter().product());
    clone.write(&wv).unwrap();
    expect("after write through a clone", &xv, &wv, &conv(&ctx, &x, &w));

    // Written as the output of an encode_* call in the same encoder that then reads it as
    // weights: the cache must not serve the old contents.
    let dy =
        Tensor::from_slice(&ctx, &rng.vec(p.y_shape().iter().product()), &p.y_shape()).unwrap();
    let y = Tensor::zeros(&ctx, &p.y_shape()).unwrap();
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    ctx.encode_conv2d_backward_weight(&mut enc, &x, &dy, &params(), Algorithm::Auto, &w)
        .unwrap();
    ctx.encode_conv2d(
        &mut enc,
        &x,
        &w,
        None,
        &params(),
        cached_algorithm(&ctx),
        &y,
    )
    .unwrap();
    ctx.submit(enc).unwrap();
    let new_w = w.read().unwrap();
    expect(
        "weights written in the same encoder",
        &xv,
        &new_w,
        &y.read().unwrap(),
    );
    expect("and in a later call", &xv, &new_w, &conv(&ctx, &x, &w));

    // Written behind the library's back through buffer().
    let w2 = Tensor::from_slice(&ctx, &rng.vec(WS.iter().product()), &WS).unwrap();
    let _ = conv(&ctx, &x, &w2);
    wv = rng.vec(WS.iter().product());
    ctx.queue()
        .write_buffer(w2.buffer(), 0, bytemuck::cast_slice(&wv));
    expect("after a raw buffer write", &xv, &wv, &conv(&ctx, &x, &w2));

    // A caller-owned buffer is never cached.
    let before = ctx.weight_cache_bytes();
    let raw = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: (wv.len() * 4) as u64,
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    ctx.queue().write_buffer(&raw, 0, bytemuck::cast_slice(&wv));
    let w3 = Tensor::from_buffer(&ctx, raw, &WS).unwrap();
    expect("caller-owned buffer", &xv, &wv, &conv(&ctx, &x, &w3));
    assert_eq!(
        ctx.weight_cache_bytes(),
        before,
        "a caller-owned buffer was cached"
    );

    // Entries go with their tensor (at the next insertion) and with the budget; the bytes
    // are accounted in allocated_bytes.
    drop((w, flat, clone));
    let w4 = Tensor::from_slice(&ctx, &wv, &WS).unwrap();
    expect("new tensor", &xv, &wv, &conv(&ctx, &x, &w4));
    if packs {
        assert_eq!(
            ctx.weight_cache_bytes(),
            cached,
            "a dropped tensor's entry survived"
        );
    }
    ctx.set_weight_cache_budget(0);
    assert_eq!(ctx.weight_cache_bytes(), 0);
    expect("cache disabled", &xv, &wv, &conv(&ctx, &x, &w4));
    assert_eq!(ctx.weight_cache_bytes(), 0, "cached with a zero budget");
    drop((w2, w3, w4, y, dy));
    // The weight gradient above (Auto) queued its bucket for background tuning, whose scratch
    // tensors count while it measures; idle scratch kept for reuse is counted apart.
    ctx.wait_for_tuning();
    assert_eq!(
        ctx.allocated_bytes() - ctx.pooled_bytes() - ctx.input_cache_bytes(),
        base,
        "cache bytes not released"
    );
}

#[test]
fn channels_last_weights_are_cached_apart_from_their_contiguous_view() {
    let ctx = fresh_ctx();
    let p = params().resolve(XS, WS, None).unwrap();
    let packs = ctx.can_run_forward(Algorithm::ImplicitGemm, &p);
    let mut rng = Rng::new(11);
    let xv = rng.vec(XS.iter().product());
    let x = Tensor::from_slice(&ctx, &xv, &XS).unwrap();
    let wv = rng.vec(WS.iter().product());
    let cl = wgconv::MemoryFormat::ChannelsLast;
    let krsc = wgconv::MemoryFormat::Contiguous
        .convert(&wv, WS, cl)
        .unwrap();
    // One buffer holding KRSC weights, viewed both ways: two different weight tensors.
    let w_cl = Tensor::from_slice(&ctx, &krsc, &WS)
        .unwrap()
        .with_format(cl)
        .unwrap();
    let w_as_kcrs = w_cl.with_format(wgconv::MemoryFormat::Contiguous).unwrap();
    expect("krsc, first call", &xv, &wv, &conv(&ctx, &x, &w_cl));
    let cached = ctx.weight_cache_bytes();
    if packs {
        assert!(cached > 0, "channels-last weights not cached");
    }
    expect("krsc, cached call", &xv, &wv, &conv(&ctx, &x, &w_cl));
    assert_eq!(
        ctx.weight_cache_bytes(),
        cached,
        "a hit must not add entries"
    );
    // The same buffer read as KCRS: other weights, not the cached KRSC packing.
    expect(
        "the buffer as kcrs",
        &xv,
        &krsc,
        &conv(&ctx, &x, &w_as_kcrs),
    );
    expect("krsc again", &xv, &wv, &conv(&ctx, &x, &w_cl));
}

/// Whether `ctx` compiled an implicit-GEMM forward pipeline reading flat weights (`W_FLAT`).
fn ran_flat_weights(ctx: &Context) -> bool {
    wgconv::dev::compiled_pipelines(ctx)
        .iter()
        .any(|(name, spec)| {
            name.starts_with("conv2d_implicit")
                && spec.iter().any(|&(k, v)| k == "W_FLAT" && v == 1)
        })
}

/// 1x1 layers (channels per group a multiple of 8) read their weights' verbatim copy once the
/// weights change between calls (a training loop) or cannot be cached: every write is
/// followed, across groups, strides, output channels that fill no whole channel block,
/// batches and the bias.
#[test]
fn flat_weights_of_pointwise_layers_follow_every_write() {
    let mut rng = Rng::new(71);
    // (N, C, H, W, K, groups, stride, bias)
    let cases = [
        (2, 16, 7, 9, 40, 1, 1, true),
        (1, 32, 8, 8, 20, 2, 2, false),
        (2, 48, 5, 6, 60, 3, 1, true),
        (1, 8, 14, 14, 36, 1, 2, true),
    ];
    for budget in [None, Some(0)] {
        let ctx = fresh_ctx();
        if let Some(b) = budget {
            ctx.set_weight_cache_budget(b);
        }
        let mut flat_possible = false;
        for &(n, c, h, wd, k, groups, stride, with_bias) in &cases {
            let xs = [n, c, h, wd];
            let ws = [k, c / groups, 1, 1];
            let prm = Conv2dParams::default()
                .with_stride([stride, stride])
                .with_groups(groups);
            let p = prm.resolve(xs, ws, Some(k)).unwrap();
            let algo = if ctx.can_run_forward(Algorithm::ImplicitGemm, &p) {
                flat_possible = true;
                Algorithm::ImplicitGemm
            } else {
                Algorithm::Auto
            };
            let xv = rng.vec(xs.iter().product());
            let bv = rng.vec(k);
            let x = Tensor::from_slice(&ctx, &xv, &xs).unwrap();
            let b = Tensor::from_slice(&ctx, &bv, &[k]).unwrap();
            let bias = with_bias.then_some(&b);
            let w = Tensor::from_slice(&ctx, &rng.vec(ws.iter().product()), &ws).unwrap();
            for round in 0..3 {
                let wv = rng.vec(ws.iter().product());
                w.write(&wv).unwrap();
                let got = ctx
                    .conv2d_with(&x, &w, bias, &prm, algo)
                    .and_then(|y| y.read())
                    .unwrap();
                let bref = with_bias.then_some(bv.as_slice());
                let want = cpu::conv2d(&xv, xs, &wv, ws, bref, &prm).unwrap().0;
                let scale = cpu::conv2d(&abs(&xv), xs, &abs(&wv), ws, None, &prm)
                    .unwrap()
                    .0;
                let tols: Vec<f32> = scale
                    .iter()
                    .map(|&s| tol(s + 1.0, p.reduction_len()))
                    .collect();
                let label = format!("1x1 {xs:?} K={k} groups={groups} s={stride} round {round}");
                if let Err(e) = check(&label, &got, &want, &tols) {
                    panic!("{e} (cache budget {budget:?})");
                }
            }
        }
        // Rounds 1 and 2 changed cached weights (and with no cache every call reads them
        // flat): the flat kernel ran wherever the implicit GEMM does.
        assert_eq!(
            ran_flat_weights(&ctx),
            flat_possible,
            "flat weights (cache budget {budget:?})"
        );
    }
}

/// Weights written between calls (a training loop) are packed again in the call's own
/// encoder, into pooled scratch: after the first change no call allocates, f32 and f16
/// weights alike (f16 ones are converted in the call: it bound only a placeholder, expecting
/// the cache), and every result follows the write.
#[test]
fn changing_weights_pack_without_allocating() {
    let mut rng = Rng::new(72);
    let ctx = fresh_ctx();
    let algo = cached_algorithm(&ctx);
    let n: usize = WS.iter().product();
    let h = |v: &[f32]| -> Vec<half::f16> { v.iter().map(|&a| half::f16::from_f32(a)).collect() };
    let back = |v: &[half::f16]| -> Vec<f32> { v.iter().map(|a| a.to_f32()).collect() };
    for f16 in [false, true] {
        let mut xv = rng.vec(XS.iter().product());
        let (x, w) = if f16 {
            xv = back(&h(&xv));
            let x = Tensor::from_f16(&ctx, &h(&xv), &XS).unwrap();
            (
                x,
                Tensor::from_f16(&ctx, &vec![half::f16::ZERO; n], &WS).unwrap(),
            )
        } else {
            let x = Tensor::from_slice(&ctx, &xv, &XS).unwrap();
            (x, Tensor::zeros(&ctx, &WS).unwrap())
        };
        for round in 0..4 {
            let mut wv = rng.vec(n);
            if f16 {
                wv = back(&h(&wv));
                w.write_f16(&h(&wv)).unwrap();
            } else {
                w.write(&wv).unwrap();
            }
            let before = wgconv::dev::pool_stats(&ctx).device_allocations;
            let y = ctx.conv2d_with(&x, &w, None, &params(), algo).unwrap();
            let allocated = wgconv::dev::pool_stats(&ctx).device_allocations - before;
            let label = format!("f16 {f16} round {round}");
            if f16 {
                // f16 results: the f32 sums rounded once more.
                let got = back(&y.read_f16().unwrap());
                let want = cpu::conv2d(&xv, XS, &wv, WS, None, &params()).unwrap().0;
                for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - e).abs() <= 1e-3 + 2e-3 * e.abs(),
                        "{label}: element {i} got {g} want {e}"
                    );
                }
            } else {
                expect(&label, &xv, &wv, &y.read().unwrap());
            }
            // Round 0 caches, round 1 takes scratch for the first repack; later rounds reuse.
            if round >= 2 {
                assert_eq!(allocated, 0, "{label}: device allocations");
            }
        }
    }
}

/// The input gradient and the transposed convolution cache their packed weights too (the
/// weights bound as they are), and follow every write: `Tensor::write`, and an `encode_*`
/// call writing them in the encoder that then reads them.
#[test]
fn input_gradient_and_transposed_cache_follow_every_write() {
    let ctx = fresh_ctx();
    let mut rng = Rng::new(73);
    let p = params().resolve(XS, WS, None).unwrap();
    let algo = if ctx.can_run_forward(Algorithm::ImplicitGemm, &p) {
        Algorithm::ImplicitGemm
    } else {
        Algorithm::Auto
    };
    let ys = p.y_shape();
    let dyv = rng.vec(ys.iter().product());
    let dy = Tensor::from_slice(&ctx, &dyv, &ys).unwrap();
    let w = Tensor::from_slice(&ctx, &rng.vec(WS.iter().product()), &WS).unwrap();
    let check_dx = |label: &str, wv: &[f32], got: Vec<f32>| {
        let want = cpu::conv2d_backward_input(&p, &dyv, wv);
        let scale = cpu::conv2d_backward_input(&p, &abs(&dyv), &abs(wv));
        let tols: Vec<f32> = scale.iter().map(|&s| tol(s, p.reduction_len())).collect();
        if let Err(e) = check(label, &got, &want, &tols) {
            panic!("{e}");
        }
    };
    let dx = |w: &Tensor| {
        ctx.conv2d_backward_input(&dy, w, XS, &params(), algo)
            .and_then(|t| t.read())
            .unwrap()
    };
    let mut wv = w.read().unwrap();
    check_dx("first call", &wv, dx(&w));
    let cached = ctx.weight_cache_bytes();
    check_dx("cached call", &wv, dx(&w));
    assert_eq!(
        ctx.weight_cache_bytes(),
        cached,
        "a hit must not add entries"
    );
    if algo == Algorithm::ImplicitGemm {
        assert!(cached > 0, "the input gradient cached nothing");
    }
    for round in 0..2 {
        wv = rng.vec(WS.iter().product());
        w.write(&wv).unwrap();
        check_dx(&format!("after write {round}"), &wv, dx(&w));
    }
    // Written by an encode_* call in the encoder that then reads it.
    let x = Tensor::from_slice(&ctx, &rng.vec(XS.iter().product()), &XS).unwrap();
    let out = Tensor::zeros(&ctx, &XS).unwrap();
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    ctx.encode_conv2d_backward_weight(&mut enc, &x, &dy, &params(), Algorithm::Auto, &w)
        .unwrap();
    ctx.encode_conv2d_backward_input(&mut enc, &dy, &w, &params(), algo, &out)
        .unwrap();
    ctx.submit(enc).unwrap();
    check_dx(
        "weights written in the same encoder",
        &w.read().unwrap(),
        out.read().unwrap(),
    );
    // The transposed convolution with those weights ([C_in, C_out, R, S] = w's [K, C, R, S]).
    let tparams = wgconv::ConvTranspose2dParams::default().with_padding([1, 1]);
    for round in 0..3 {
        if round == 2 {
            wv = rng.vec(WS.iter().product());
            w.write(&wv).unwrap();
        } else {
            wv = w.read().unwrap();
        }
        let got = ctx
            .conv_transpose2d(&dy, &w, None, &tparams, algo)
            .and_then(|t| t.read())
            .unwrap();
        let want = cpu::conv_transpose2d(&dyv, ys, &wv, WS, None, &tparams)
            .unwrap()
            .0;
        let scale = cpu::conv_transpose2d(&abs(&dyv), ys, &abs(&wv), WS, None, &tparams)
            .unwrap()
            .0;
        let tols: Vec<f32> = scale.iter().map(|&s| tol(s, p.reduction_len())).collect();
        if let Err(e) = check(&format!("transposed round {round}"), &got, &want, &tols) {
            panic!("{e}");
        }
    }
}
