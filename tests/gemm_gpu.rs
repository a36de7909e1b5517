//! GEMM on the GPU vs the CPU reference: every M, N, K in 1..=20, odd larger shapes, all
//! four transpose combinations, every kernel variant, batching, bias and accumulation; the
//! image variant's splitting under lowered texture limits and scratch budgets.

mod common;

use common::{check, ctx, tol, Rng};
use wgconv::{
    cpu, Algorithm, Context, ContextOptions, Conv2dParams, ErrorKind, GemmParams, GemmVariant,
    LimitsOverride, Padding, Tensor,
};

fn abs(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs()).collect()
}

fn shapes(m: usize, n: usize, k: usize, p: &GemmParams) -> ([usize; 2], [usize; 2]) {
    let a = if p.transpose_a { [k, m] } else { [m, k] };
    let b = if p.transpose_b { [n, k] } else { [k, n] };
    (a, b)
}

/// Whether the image variant runs on `ctx`. Where it cannot (no 8-lane subgroups, e.g. on
/// wgpu's GL backend), checks that it is refused, by `check_gemm_variant` and by a forced call,
/// with `UnsupportedAlgorithm`.
fn image_variant_runs(ctx: &Context) -> bool {
    let refused = |e: &wgconv::Error| matches!(e.kind(), ErrorKind::UnsupportedAlgorithm { .. });
    match ctx.check_gemm_variant(GemmVariant::Image) {
        Ok(()) => true,
        Err(e) => {
            assert!(refused(&e), "{e}");
            let a = Tensor::zeros(ctx, &[2, 2]).unwrap();
            let forced = GemmParams::default().with_variant(GemmVariant::Image);
            let err = ctx
                .gemm(&a, &a, &forced)
                .expect_err("a forced image GEMM ran");
            assert!(refused(&err), "{err}");
            false
        }
    }
}

/// Every transpose combination of every variant that runs on the test context (see
/// [`image_variant_runs`]).
fn params_all() -> Vec<GemmParams> {
    let mut v = Vec::new();
    for &variant in GemmVariant::ALL {
        if variant == GemmVariant::Image && !image_variant_runs(ctx()) {
            continue;
        }
        for ta in [false, true] {
            for tb in [false, true] {
                v.push(
                    GemmParams::default()
                        .with_transpose_a(ta)
                        .with_transpose_b(tb)
                        .with_variant(variant),
                );
            }
        }
    }
    v
}

/// Runs many GEMMs in one submission, gathering every C into one buffer read once.
fn run_many(dims: &[(usize, usize, usize)], p: &GemmParams, rng: &mut Rng) -> Result<(), String> {
    let ctx = ctx();
    let total: usize = dims.iter().map(|&(m, n, _)| m * n).sum();
    let all = Tensor::full(ctx, &[total], f32::NAN).unwrap();
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    let mut want = Vec::with_capacity(total);
    let mut tols = Vec::with_capacity(total);
    let mut keep = Vec::new();
    let mut off = 0u64;
    for &(m, n, k) in dims {
        let (ash, bsh) = shapes(m, n, k, p);
        let a = rng.vec(m * k);
        let b = rng.vec(k * n);
        let (c, _) = cpu::gemm(&a, &ash, &b, &bsh, p).unwrap();
        let (s, _) = cpu::gemm(&abs(&a), &ash, &abs(&b), &bsh, p).unwrap();
        want.extend_from_slice(&c);
        tols.extend(s.iter().map(|&s| tol(s, k)));
        let at = Tensor::from_slice(ctx, &a, &ash).unwrap();
        let bt = Tensor::from_slice(ctx, &b, &bsh).unwrap();
        let ct = Tensor::full(ctx, &[m, n], f32::NAN).unwrap();
        ctx.encode_gemm(&mut enc, &at, &bt, None, &ct, false, p)
            .map_err(|e| format!("{m}x{n}x{k}: {e}"))?;
        enc.copy_buffer_to_buffer(ct.buffer(), 0, all.buffer(), off, (m * n * 4) as u64);
        off += (m * n * 4) as u64;
        keep.push((at, bt, ct));
    }
    ctx.queue().submit([enc.finish()]);
    let got = all.read().unwrap();
    // Locate the failing shape for the message.
    check("gemm", &got, &want, &tols).map_err(|e| {
        let mut start = 0;
        let idx: usize = e
            .split("index ")
            .nth(1)
            .and_then(|s| s.split(':').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut at = None;
        for &(m, n, k) in dims {
            if idx < start + m * n {
                at = Some((m, n, k, idx - start));
                break;
            }
            start += m * n;
        }
        format!("{p:?} shape (m, n, k, index) {at:?}: {e}")
    })
}

#[test]
fn every_size_up_to_20_all_transposes_both_variants() {
    let mut dims = Vec::new();
    for m in 1..=20 {
        for n in 1..=20 {
            for k in 1..=20 {
                dims.push((m, n, k));
            }
        }
    }
    let mut rng = Rng::new(1);
    for p in params_all() {
        run_many(&dims, &p, &mut rng).unwrap();
    }
}

#[test]
fn odd_larger_shapes_all_transposes_both_variants() {
    let dims = [
        (17, 33, 65),
        (300, 7, 129),
        (1, 4096, 1),
        (1024, 1, 1024),
        (67, 129, 3),
        (5, 5, 1000),
    ];
    let mut rng = Rng::new(2);
    for p in params_all() {
        for d in dims {
            run_many(&[d], &p, &mut rng).unwrap();
        }
    }
}

#[test]
fn batched_bias_and_accumulate() {
    let ctx = ctx();
    let mut rng = Rng::new(3);
    for p in params_all() {
        let (batch, m, n, k) = (3, 13, 9, 21);
        let (ash, bsh) = shapes(m, n, k, &p);
        // a batched, b shared; then both batched.
        for both in [false, true] {
            let a = rng.vec(batch * m * k);
            let b = rng.vec(if both { batch } else { 1 } * k * n);
            let a3 = [batch, ash[0], ash[1]];
            let b3 = [batch, bsh[0], bsh[1]];
            let bshape: &[usize] = if both { &b3 } else { &bsh };
            let (want, wshape) = cpu::gemm(&a, &a3, &b, bshape, &p).unwrap();
            let (scale, _) = cpu::gemm(&abs(&a), &a3, &abs(&b), bshape, &p).unwrap();
            let at = Tensor::from_slice(ctx, &a, &a3).unwrap();
            let bt = Tensor::from_slice(ctx, &b, bshape).unwrap();
            let c = ctx.gemm(&at, &bt, &p).unwrap();
            assert_eq!(c.shape(), wshape.as_slice());
            let tols: Vec<f32> = scale.iter().map(|&s| tol(s, k)).collect();
            check(
                &format!("batched {p:?} both={both}"),
                &c.read().unwrap(),
                &want,
                &tols,
            )
            .unwrap();
        }
        // bias per column + accumulate onto existing C.
        let a = rng.vec(m * k);
        let b = rng.vec(k * n);
        let bias = rng.vec(n);
        let c0 = rng.vec(m * n);
        let (prod, _) = cpu::gemm(&a, &ash, &b, &bsh, &p).unwrap();
        let (scale, _) = cpu::gemm(&abs(&a), &ash, &abs(&b), &bsh, &p).unwrap();
        let want: Vec<f32> = (0..m * n).map(|i| prod[i] + bias[i % n] + c0[i]).collect();
        let ct = Tensor::from_slice(ctx, &c0, &[m, n]).unwrap();
        let bias_t = Tensor::from_slice(ctx, &bias, &[n]).unwrap();
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        ctx.encode_gemm(
            &mut enc,
            &Tensor::from_slice(ctx, &a, &ash).unwrap(),
            &Tensor::from_slice(ctx, &b, &bsh).unwrap(),
            Some(&bias_t),
            &ct,
            true,
            &p,
        )
        .unwrap();
        ctx.queue().submit([enc.finish()]);
        let tols: Vec<f32> = scale
            .iter()
            .zip(&want)
            .map(|(&s, w)| tol(s + w.abs() + 2.0, k))
            .collect();
        check(
            &format!("bias+acc {p:?}"),
            &ct.read().unwrap(),
            &want,
            &tols,
        )
        .unwrap();
    }
}

#[test]
fn shape_errors_are_typed() {
    let ctx = ctx();
    let t = |s: &[usize]| Tensor::zeros(ctx, s).unwrap();
    let p = GemmParams::default();
    let is_shape = |r: wgconv::Result<Tensor>| {
        matches!(r.unwrap_err().kind(), ErrorKind::ShapeMismatch { .. })
    };
    assert!(is_shape(ctx.gemm(&t(&[3, 4]), &t(&[5, 6]), &p)));
    assert!(is_shape(ctx.gemm(
        &t(&[3, 4]),
        &t(&[4, 6]),
        &p.with_transpose_a(true)
    )));
    assert!(is_shape(ctx.gemm(
        &t(&[3, 4]),
        &t(&[4, 6]),
        &p.with_transpose_b(true)
    )));
    assert!(is_shape(ctx.gemm(&t(&[2, 3, 4]), &t(&[3, 4, 6]), &p)));
    assert!(is_shape(ctx.gemm(&t(&[3]), &t(&[3, 4]), &p)));
    assert!(is_shape(ctx.gemm(&t(&[0, 4]), &t(&[4, 6]), &p)));
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    let r = ctx.encode_gemm(
        &mut enc,
        &t(&[3, 4]),
        &t(&[4, 6]),
        None,
        &t(&[3, 5]),
        false,
        &p,
    );
    assert!(matches!(
        r.unwrap_err().kind(),
        ErrorKind::ShapeMismatch { .. }
    ));
    let r = ctx.encode_gemm(
        &mut enc,
        &t(&[3, 4]),
        &t(&[4, 6]),
        Some(&t(&[3])),
        &t(&[3, 6]),
        false,
        &p,
    );
    assert!(matches!(
        r.unwrap_err().kind(),
        ErrorKind::ShapeMismatch { .. }
    ));
    let (r, _) = (cpu::gemm(&[0.0; 12], &[3, 4], &[0.0; 30], &[5, 6], &p), ());
    assert!(r.is_err());
}

/// `C = op(A)·op(B) (+ bias) (+ C0)` on `ctx` vs the CPU reference; `batch` 0 means 2-D.
#[allow(clippy::too_many_arguments)]
fn check_on(
    ctx: &Context,
    (m, n, k): (usize, usize, usize),
    batch: usize,
    b_batched: bool,
    with_bias: bool,
    accumulate: bool,
    p: &GemmParams,
    rng: &mut Rng,
) {
    let (ash, bsh) = shapes(m, n, k, p);
    let nb = batch.max(1);
    let a_shape: Vec<usize> = if batch > 0 {
        vec![batch, ash[0], ash[1]]
    } else {
        ash.to_vec()
    };
    let b_shape: Vec<usize> = if batch > 0 && b_batched {
        vec![batch, bsh[0], bsh[1]]
    } else {
        bsh.to_vec()
    };
    let a = rng.vec(a_shape.iter().product());
    let b = rng.vec(b_shape.iter().product());
    let (prod, c_shape) = cpu::gemm(&a, &a_shape, &b, &b_shape, p).unwrap();
    let (scale, _) = cpu::gemm(&abs(&a), &a_shape, &abs(&b), &b_shape, p).unwrap();
    let bias = rng.vec(n);
    let c0 = if accumulate {
        rng.vec(nb * m * n)
    } else {
        vec![f32::NAN; nb * m * n]
    };
    let want: Vec<f32> = (0..nb * m * n)
        .map(|i| {
            prod[i]
                + if with_bias { bias[i % n] } else { 0.0 }
                + if accumulate { c0[i] } else { 0.0 }
        })
        .collect();
    let ct = Tensor::from_slice(ctx, &c0, &c_shape).unwrap();
    let bias_t = Tensor::from_slice(ctx, &bias, &[n]).unwrap();
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    ctx.encode_gemm(
        &mut enc,
        &Tensor::from_slice(ctx, &a, &a_shape).unwrap(),
        &Tensor::from_slice(ctx, &b, &b_shape).unwrap(),
        with_bias.then_some(&bias_t),
        &ct,
        accumulate,
        p,
    )
    .unwrap();
    ctx.queue().submit([enc.finish()]);
    let tols: Vec<f32> = scale
        .iter()
        .zip(&want)
        .map(|(&s, w)| tol(s + w.abs() + 2.0, k))
        .collect();
    let label = format!(
        "{m}x{n}x{k} batch {batch} (b batched {b_batched}) bias {with_bias} acc {accumulate} {p:?}"
    );
    check(&label, &ct.read().unwrap(), &want, &tols).unwrap();
}

/// The image GEMM splits problems whose storage images would exceed
/// `maxTextureDimension2D` (lowered to 64 texels here: 256 panel rows of A) or the scratch
/// budget: over batch entries, then over M, N and K (accumulating), with bias and
/// accumulation, every transpose; scratch goes back to the pool, within the budget.
#[test]
fn image_variant_splits_on_texture_limit_and_scratch_budget() {
    let small_tex = Context::with_options_blocking(ContextOptions {
        limits: Some(LimitsOverride {
            max_texture_dimension_2d: Some(64),
            ..Default::default()
        }),
        ..Default::default()
    })
    .expect("adapter");
    assert_eq!(small_tex.limits().max_texture_dimension_2d, 64);
    let small_budget = Context::with_options_blocking(ContextOptions {
        scratch_budget: Some(4096),
        ..Default::default()
    })
    .expect("adapter");
    if !image_variant_runs(&small_tex) {
        return;
    }
    let mut rng = Rng::new(4);
    for ctx in [&small_tex, &small_budget] {
        let before = ctx.allocated_bytes();
        for ta in [false, true] {
            for tb in [false, true] {
                let p = GemmParams::default()
                    .with_transpose_a(ta)
                    .with_transpose_b(tb)
                    .with_variant(GemmVariant::Image);
                // One entry exceeds the texture (A: 3 panels x 104 k-rows > 256 rows).
                check_on(ctx, (130, 70, 100), 0, false, false, false, &p, &mut rng);
                check_on(ctx, (130, 70, 100), 0, false, true, true, &p, &mut rng);
                // K alone exceeds it (A: 40 * 8 k-rows) and N is wide (B: 30 panels).
                check_on(ctx, (3, 470, 317), 0, false, true, false, &p, &mut rng);
                // Entries fit one by one, not all together: groups of batch entries.
                check_on(ctx, (20, 24, 30), 13, true, true, true, &p, &mut rng);
                check_on(ctx, (20, 24, 30), 13, false, false, false, &p, &mut rng);
            }
        }
        ctx.synchronize().unwrap();
        // Scratch images are released: to the pool (within the budget), then freed.
        assert_eq!(
            ctx.allocated_bytes() - ctx.pooled_bytes(),
            before,
            "scratch images are released"
        );
        assert!(ctx.pooled_bytes() <= ctx.scratch_budget());
        ctx.release_scratch();
        assert_eq!(ctx.allocated_bytes(), before, "the pool is freed");
    }
}

/// Convolutions through im2col + GEMM (outer batch = images, inner = groups) and the
/// gradients' GEMMs keep matching the CPU when the image GEMM must split.
#[test]
fn image_variant_splits_inside_convolutions() {
    let ctx = Context::with_options_blocking(ContextOptions {
        limits: Some(LimitsOverride {
            max_texture_dimension_2d: Some(64),
            ..Default::default()
        }),
        ..Default::default()
    })
    .expect("adapter");
    let mut rng = Rng::new(5);
    for (x_shape, w_shape, groups) in [
        ([3, 4, 9, 11], [6, 2, 3, 3], 2),
        ([2, 8, 12, 12], [40, 8, 3, 3], 1),
    ] {
        let params = Conv2dParams::default()
            .with_padding(Padding::Symmetric([1, 1]))
            .with_groups(groups);
        let x = rng.vec(x_shape.iter().product());
        let w = rng.vec(w_shape.iter().product());
        let bias = rng.vec(w_shape[0]);
        let (want, y_shape) = cpu::conv2d(&x, x_shape, &w, w_shape, Some(&bias), &params).unwrap();
        let (scale, _) = cpu::conv2d(
            &abs(&x),
            x_shape,
            &abs(&w),
            w_shape,
            Some(&abs(&bias)),
            &params,
        )
        .unwrap();
        let xt = Tensor::from_slice(&ctx, &x, &x_shape).unwrap();
        let wt = Tensor::from_slice(&ctx, &w, &w_shape).unwrap();
        let bt = Tensor::from_slice(&ctx, &bias, &[w_shape[0]]).unwrap();
        let y = ctx
            .conv2d_with(&xt, &wt, Some(&bt), &params, Algorithm::Im2colGemm)
            .unwrap();
        assert_eq!(y.shape(), y_shape.as_slice());
        let red = w_shape[1] * w_shape[2] * w_shape[3];
        let tols: Vec<f32> = scale.iter().map(|&s| tol(s, red)).collect();
        check(
            &format!("im2col {x_shape:?} {w_shape:?}"),
            &y.read().unwrap(),
            &want,
            &tols,
        )
        .unwrap();
        // Gradients (GEMM-based dx and dw) against the CPU.
        let p = wgconv::Conv2dProblem::new(x_shape, w_shape, None, &params).unwrap();
        let dy = rng.vec(y_shape.iter().product());
        let dyt = Tensor::from_slice(&ctx, &dy, &y_shape).unwrap();
        let g = ctx
            .conv2d_backward(&xt, &wt, &dyt, false, &params, Algorithm::Im2colGemm)
            .unwrap();
        let want_dx = cpu::conv2d_backward_input(&p, &dy, &w);
        let s_dx = cpu::conv2d_backward_input(&p, &abs(&dy), &abs(&w));
        let t_dx: Vec<f32> = s_dx
            .iter()
            .map(|&s| tol(s, p.k() * p.r() * p.s()))
            .collect();
        check("dx", &g.dx.read().unwrap(), &want_dx, &t_dx).unwrap();
        let want_dw = cpu::conv2d_backward_weight(&p, &x, &dy);
        let s_dw = cpu::conv2d_backward_weight(&p, &abs(&x), &abs(&dy));
        let red_dw = p.n() * p.oh() * p.ow();
        let t_dw: Vec<f32> = s_dw.iter().map(|&s| tol(s, red_dw)).collect();
        check("dw", &g.dw.read().unwrap(), &want_dw, &t_dw).unwrap();
    }
}

/// Operands stored K-major with rows of a multiple of 64 floats reach the image GEMM by
/// buffer-to-texture copies (plain layout) instead of the pack kernel: K not a multiple of 8,
/// batch entries stacked in one image, shared operands, bias and accumulation; the fallback to
/// packed panels when the plain image would exceed the texture limit; and B read straight
/// from its buffer (K-major, vec4-aligned rows, M <= 1024).
#[test]
fn image_variant_operand_sources() {
    let mut rng = Rng::new(6);
    let small_tex = Context::with_options_blocking(ContextOptions {
        limits: Some(LimitsOverride {
            max_texture_dimension_2d: Some(64),
            ..Default::default()
        }),
        ..Default::default()
    })
    .expect("adapter");
    if !image_variant_runs(&small_tex) {
        return;
    }
    for ta in [false, true] {
        for tb in [false, true] {
            let p = GemmParams::default()
                .with_transpose_a(ta)
                .with_transpose_b(tb)
                .with_variant(GemmVariant::Image);
            for dims in [
                (64, 128, 13),
                (128, 64, 40),
                (192, 256, 1),
                (64, 64, 8),
                (100, 36, 50),
                (1030, 12, 9),
            ] {
                check_on(ctx(), dims, 0, false, false, false, &p, &mut rng);
                check_on(ctx(), dims, 3, true, true, true, &p, &mut rng);
                check_on(ctx(), dims, 3, false, true, false, &p, &mut rng);
            }
            // One entry is 104 k-rows: taller than the 64-texel limit, so packed panels.
            check_on(
                &small_tex,
                (64, 64, 100),
                0,
                false,
                true,
                true,
                &p,
                &mut rng,
            );
            check_on(
                &small_tex,
                (64, 128, 20),
                4,
                true,
                false,
                false,
                &p,
                &mut rng,
            );
        }
    }
}

/// Reductions longer than one k-block of the image GEMM run as accumulating dispatches (bias
/// with the first): K = 2500 is three blocks.
#[test]
fn image_variant_long_reduction() {
    let mut rng = Rng::new(7);
    if !image_variant_runs(ctx()) {
        return;
    }
    for (ta, tb) in [(false, false), (true, true)] {
        let p = GemmParams::default()
            .with_transpose_a(ta)
            .with_transpose_b(tb)
            .with_variant(GemmVariant::Image);
        check_on(ctx(), (70, 33, 2500), 0, false, true, true, &p, &mut rng);
        check_on(ctx(), (70, 44, 2100), 2, true, true, true, &p, &mut rng);
        check_on(ctx(), (64, 128, 2049), 2, true, true, false, &p, &mut rng);
    }
}

/// Whether `ctx` compiled the image GEMM storing C as vec4s: mode 1 along rows
/// (`gemm_image_c4`), 2 along columns (`gemm_image_c4t`).
fn compiled_c4(ctx: &Context, mode: i64) -> bool {
    let kernel = if mode == 1 {
        "gemm_image_c4"
    } else {
        "gemm_image_c4t"
    };
    wgconv::dev::compiled_kernels(ctx).contains(&kernel)
}

/// The image GEMM stores C four floats at a time when C's rows (or, inside the 1x1 weight
/// gradient, its columns) are whole aligned vec4s: bias, accumulation, long reductions and
/// batches give the CPU reference's values; an N that is not a multiple of 4 keeps the
/// scalar stores.
#[test]
fn image_variant_stores_aligned_c_as_vec4() {
    if !image_variant_runs(ctx()) {
        return;
    }
    let mut rng = Rng::new(11);
    let fresh = || Context::with_options_blocking(ContextOptions::default()).unwrap();
    let ctx4 = fresh();
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let p = GemmParams::default()
            .with_transpose_a(ta)
            .with_transpose_b(tb)
            .with_variant(GemmVariant::Image);
        check_on(&ctx4, (13, 12, 21), 0, false, true, true, &p, &mut rng);
        check_on(&ctx4, (8, 4, 3), 0, false, false, false, &p, &mut rng);
        check_on(&ctx4, (70, 44, 2100), 2, true, true, true, &p, &mut rng);
        check_on(&ctx4, (9, 20, 17), 3, false, false, true, &p, &mut rng);
    }
    assert!(compiled_c4(&ctx4, 1), "no vec4 stores along the rows of C");
    let ctx1 = fresh();
    let p = GemmParams::default().with_variant(GemmVariant::Image);
    check_on(&ctx1, (13, 9, 21), 2, true, true, true, &p, &mut rng);
    assert!(
        !compiled_c4(&ctx1, 1) && !compiled_c4(&ctx1, 2),
        "vec4 stores into rows of 9 floats"
    );
    // The 1x1 weight gradient's GEMM writes dw[k, c] as C[m = c, n = k]: columns of C are
    // contiguous (C4 = 2), per group.
    let ctxw = fresh();
    for (c, k, groups, stride) in [(8, 12, 1, 2), (16, 12, 2, 1), (24, 5, 1, 1)] {
        let params = Conv2dParams::default()
            .with_groups(groups)
            .with_stride([stride, stride])
            .with_padding(Padding::Symmetric([0, 0]));
        let xs = [2, c, 5, 6];
        let ws = [k, c / groups, 1, 1];
        let pr = params.resolve(xs, ws, None).unwrap();
        let x = rng.vec(xs.iter().product());
        let dy = rng.vec(pr.y_shape().iter().product());
        let want = cpu::conv2d_backward_weight(&pr, &x, &dy);
        let scale = cpu::conv2d_backward_weight(&pr, &abs(&x), &abs(&dy));
        let xt = Tensor::from_slice(&ctxw, &x, &xs).unwrap();
        let dyt = Tensor::from_slice(&ctxw, &dy, &pr.y_shape()).unwrap();
        let got = ctxw
            .conv2d_backward_weight(&xt, &dyt, ws, &params, Algorithm::Im2colGemm)
            .unwrap();
        let len = 2 * pr.y_shape()[2] * pr.y_shape()[3];
        let tols: Vec<f32> = scale.iter().map(|&s| tol(s, len)).collect();
        check(
            &format!("dw c={c} k={k} groups={groups} stride={stride}"),
            &got.read().unwrap(),
            &want,
            &tols,
        )
        .unwrap();
    }
    assert!(
        compiled_c4(&ctxw, 2),
        "no vec4 stores along the columns of C"
    );
}
