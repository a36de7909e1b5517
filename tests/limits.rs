//! Device limits are invisible: work is split so that no binding exceeds
//! `maxStorageBufferBindingSize`, no buffer exceeds `maxBufferSize` and no dispatch exceeds
//! `maxComputeWorkgroupsPerDimension`. Big problems on the real limits (checked against the
//! CPU reference on a seeded sample of >= 100,000 elements plus every border element), and
//! small problems on artificially lowered limits so every split path runs.

mod common;

use common::{check, conv_sweep, ctx, tol, Rng};
use wgconv::{
    cpu, Algorithm, Context, ContextOptions, Conv2dParams, Conv2dProblem, ConvTranspose2dParams,
    ErrorKind, GemmParams, LimitsOverride, Padding, PaddingMode, Tensor,
};

fn abs(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs()).collect()
}

/// A context whose storage bindings are capped at `binding` bytes.
fn small_ctx(binding: u64, dim: u32) -> Context {
    Context::with_options_blocking(ContextOptions {
        limits: Some(LimitsOverride {
            max_storage_buffer_binding_size: Some(binding),
            max_buffer_size: None,
            max_compute_workgroups_per_dimension: Some(dim),
            max_texture_dimension_2d: None,
        }),
        ..Default::default()
    })
    .expect("adapter")
}

#[test]
fn lowered_limits_split_forward_and_gradients() {
    // 4 KiB bindings: most tensors of the sweep exceed one binding, many single planes too.
    let ctx = small_ctx(4096, 64);
    assert_eq!(ctx.limits().max_storage_buffer_binding_size, 4096);
    let mut rng = Rng::new(31);
    let mut split = 0;
    for (i, case) in conv_sweep(0x5eed_0005, 120, 60_000).iter().enumerate() {
        let p = &case.problem;
        if p.mode() == PaddingMode::Circular && p.h() * p.w() * 4 > 4000 {
            continue; // circular padding cannot be split within a plane (documented)
        }
        let x = rng.vec(p.x_shape().iter().product());
        let w = rng.vec(p.w_shape().iter().product());
        let b = case.bias.then(|| rng.vec(p.k()));
        let dy = rng.vec(p.y_shape().iter().product());
        if (x.len().max(dy.len()) * 4) as u64 > 4096 {
            split += 1;
        }
        let xt = Tensor::from_slice(&ctx, &x, &case.x).unwrap();
        let wt = Tensor::from_slice(&ctx, &w, &case.w).unwrap();
        let bt = b
            .as_ref()
            .map(|b| Tensor::from_slice(&ctx, b, &[p.k()]).unwrap());
        let dyt = Tensor::from_slice(&ctx, &dy, &p.y_shape()).unwrap();
        let label = format!("case {i} {case:?}");
        // forward
        let want = cpu::conv2d_problem(p, &x, &w, b.as_deref());
        let scale = cpu::conv2d_abs_scale(p, &x, &w, b.as_deref());
        let tols: Vec<f32> = scale.iter().map(|&s| tol(s, p.reduction_len())).collect();
        let y = ctx
            .conv2d(&xt, &wt, bt.as_ref(), &case.params)
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        check(&format!("fwd {label}"), &y.read().unwrap(), &want, &tols).unwrap();
        // gradients
        let g = ctx
            .conv2d_backward(&xt, &wt, &dyt, true, &case.params, Algorithm::Auto)
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        let want_dx = cpu::conv2d_backward_input(p, &dy, &w);
        let s_dx = cpu::conv2d_backward_input(p, &abs(&dy), &abs(&w));
        let t_dx: Vec<f32> = s_dx
            .iter()
            .map(|&s| tol(s, p.k() * p.r() * p.s()))
            .collect();
        check(
            &format!("dx {label}"),
            &g.dx.read().unwrap(),
            &want_dx,
            &t_dx,
        )
        .unwrap();
        let want_dw = cpu::conv2d_backward_weight(p, &x, &dy);
        let s_dw = cpu::conv2d_backward_weight(p, &abs(&x), &abs(&dy));
        let t_dw: Vec<f32> = s_dw
            .iter()
            .map(|&s| tol(s, p.n() * p.oh() * p.ow()))
            .collect();
        check(
            &format!("dw {label}"),
            &g.dw.read().unwrap(),
            &want_dw,
            &t_dw,
        )
        .unwrap();
        let want_db = cpu::conv2d_backward_bias(p, &dy);
        let s_db = cpu::conv2d_backward_bias(p, &abs(&dy));
        let t_db: Vec<f32> = s_db
            .iter()
            .map(|&s| tol(s, p.n() * p.oh() * p.ow()))
            .collect();
        check(
            &format!("db {label}"),
            &g.db.unwrap().read().unwrap(),
            &want_db,
            &t_db,
        )
        .unwrap();
        // A forced non-direct algorithm on a split problem runs in bands (checked against
        // the reference) when the context says it can, else refuses with a typed error.
        if (x.len() * 4) as u64 > 4096 {
            let forced =
                ctx.conv2d_with(&xt, &wt, bt.as_ref(), &case.params, Algorithm::Im2colGemm);
            match ctx.check_algorithm(wgconv::Operation::Forward, Algorithm::Im2colGemm, p) {
                Ok(()) => check(
                    &format!("fwd im2col_gemm {label}"),
                    &forced
                        .unwrap_or_else(|e| panic!("{label}: {e}"))
                        .read()
                        .unwrap(),
                    &want,
                    &tols,
                )
                .unwrap(),
                Err(_) => assert!(
                    matches!(
                        forced.as_ref().map_err(|e| e.kind()),
                        Err(ErrorKind::UnsupportedAlgorithm { .. })
                    ),
                    "{label}: {:?}",
                    forced.map(|_| ())
                ),
            }
        }
    }
    assert!(split > 60, "only {split} cases needed splitting");
}

#[test]
fn lowered_limits_split_transpose_and_gemm() {
    let ctx = small_ctx(2048, 16);
    let mut rng = Rng::new(32);
    // conv_transpose2d: input and output tensors beyond one binding.
    let params = ConvTranspose2dParams::default()
        .with_stride([2, 2])
        .with_padding([1, 1])
        .with_output_padding([1, 1]);
    let (xs, ws) = ([2, 6, 9, 11], [6, 4, 3, 3]);
    let x = rng.vec(xs.iter().product());
    let w = rng.vec(ws.iter().product());
    let b = rng.vec(4);
    let (want, shape) = cpu::conv_transpose2d(&x, xs, &w, ws, Some(&b), &params).unwrap();
    let (scale, _) =
        cpu::conv_transpose2d(&abs(&x), xs, &abs(&w), ws, Some(&abs(&b)), &params).unwrap();
    let y = ctx
        .conv_transpose2d(
            &Tensor::from_slice(&ctx, &x, &xs).unwrap(),
            &Tensor::from_slice(&ctx, &w, &ws).unwrap(),
            Some(&Tensor::from_slice(&ctx, &b, &[4]).unwrap()),
            &params,
            Algorithm::Auto,
        )
        .unwrap();
    assert_eq!(y.shape(), shape);
    let tols: Vec<f32> = scale.iter().map(|&s| tol(s, 54)).collect();
    check("conv_transpose2d split", &y.read().unwrap(), &want, &tols).unwrap();
    // GEMM, every transpose combination, operands far beyond one binding.
    for ta in [false, true] {
        for tb in [false, true] {
            let (m, k, n) = (67, 45, 29);
            let p = GemmParams::default()
                .with_transpose_a(ta)
                .with_transpose_b(tb);
            let ash = if ta { [k, m] } else { [m, k] };
            let bsh = if tb { [n, k] } else { [k, n] };
            let a = rng.vec(m * k);
            let bv = rng.vec(k * n);
            let (want, _) = cpu::gemm(&a, &ash, &bv, &bsh, &p).unwrap();
            let (scale, _) = cpu::gemm(&abs(&a), &ash, &abs(&bv), &bsh, &p).unwrap();
            let c = ctx
                .gemm(
                    &Tensor::from_slice(&ctx, &a, &ash).unwrap(),
                    &Tensor::from_slice(&ctx, &bv, &bsh).unwrap(),
                    &p,
                )
                .unwrap();
            let tols: Vec<f32> = scale.iter().map(|&s| tol(s, k)).collect();
            check(
                &format!("gemm split ta={ta} tb={tb}"),
                &c.read().unwrap(),
                &want,
                &tols,
            )
            .unwrap();
        }
    }
}

#[test]
fn a_tensor_larger_than_max_buffer_size_is_a_typed_error() {
    let ctx = ctx();
    let max = ctx.limits().max_buffer_size;
    let side = ((max / 4) as f64).sqrt() as usize + 2;
    let err = Tensor::zeros(ctx, &[1, 1, side, side]).unwrap_err();
    match err.kind() {
        ErrorKind::ExceedsLimit {
            limit,
            requested,
            max: m,
        } => {
            assert_eq!(*limit, "max_buffer_size");
            assert!(requested > m);
        }
        k => panic!("expected ExceedsLimit, got {k:?}"),
    }
    // An output that cannot exist is refused before anything runs.
    let x = Tensor::zeros(ctx, &[1, 1, 8, 8]).unwrap();
    let w = Tensor::zeros(ctx, &[1, 1, 1, 1]).unwrap();
    let p = Conv2dParams::default().with_padding(Padding::Symmetric([side, side]));
    let e = ctx.conv2d(&x, &w, None, &p).unwrap_err();
    assert!(
        matches!(
            e.kind(),
            ErrorKind::ExceedsLimit { .. } | ErrorKind::ShapeMismatch { .. }
        ),
        "{e}"
    );
}

/// Seeded sample of output indices: `count` random ones plus every element on the border of
/// every output plane.
fn sample(shape: [usize; 4], count: usize, rng: &mut Rng) -> Vec<[usize; 4]> {
    let [n, k, h, w] = shape;
    let mut v = Vec::new();
    for a in 0..n {
        for b in 0..k {
            for y in 0..h {
                for x in 0..w {
                    if y == 0 || x == 0 || y == h - 1 || x == w - 1 {
                        v.push([a, b, y, x]);
                    }
                    // Interior elements are sampled below.
                    if y > 0 && y < h - 1 && x == 0 {
                        continue;
                    }
                }
            }
        }
    }
    for _ in 0..count {
        v.push([
            rng.range(0, n - 1),
            rng.range(0, k - 1),
            rng.range(0, h - 1),
            rng.range(0, w - 1),
        ]);
    }
    v
}

fn idx(shape: [usize; 4], i: [usize; 4]) -> usize {
    ((i[0] * shape[1] + i[1]) * shape[2] + i[2]) * shape[3] + i[3]
}

/// One forward output element, in f64, and its absolute scale.
fn conv_at(
    p: &Conv2dProblem,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    o: [usize; 4],
) -> (f32, f32) {
    let [n, k, oy, ox] = o;
    let (cg, g) = (p.c_per_group(), k / p.k_per_group());
    let (mut acc, mut sc) = (
        b.map_or(0.0, |b| b[k] as f64),
        b.map_or(0.0, |b| b[k].abs() as f64),
    );
    for ci in 0..cg {
        for r in 0..p.r() {
            let Some(iy) = p.mode().source_index(p.in_row(oy, r), p.h()) else {
                continue;
            };
            for s in 0..p.s() {
                let Some(ix) = p.mode().source_index(p.in_col(ox, s), p.w()) else {
                    continue;
                };
                let (rr, ss) = p.tap(r, s);
                let xv = x[idx(p.x_shape(), [n, g * cg + ci, iy, ix])] as f64;
                let wv = w[idx(p.w_shape(), [k, ci, rr, ss])] as f64;
                acc += xv * wv;
                sc += (xv * wv).abs();
            }
        }
    }
    (acc as f32, sc as f32)
}

#[test]
fn conv_4096x4096_forward_and_gradients_on_real_limits() {
    let ctx = ctx();
    let mut rng = Rng::new(4096);
    let params = Conv2dParams::default().with_padding(Padding::Symmetric([1, 1]));
    let (xs, ws) = ([1, 3, 4096, 4096], [16, 3, 3, 3]);
    let p = params.resolve(xs, ws, Some(16)).unwrap();
    let x = rng.vec(xs.iter().product());
    let w = rng.vec(ws.iter().product());
    let b = rng.vec(16);
    let xt = Tensor::from_slice(ctx, &x, &xs).unwrap();
    let wt = Tensor::from_slice(ctx, &w, &ws).unwrap();
    let bt = Tensor::from_slice(ctx, &b, &[16]).unwrap();
    assert!(
        p.y_shape().iter().product::<usize>() as u64 * 4
            > ctx.limits().max_storage_buffer_binding_size
    );
    // Forward.
    let y = ctx
        .conv2d(&xt, &wt, Some(&bt), &params)
        .unwrap()
        .read()
        .unwrap();
    let pts = sample(p.y_shape(), 100_000, &mut rng);
    let (mut got, mut want, mut tols) = (Vec::new(), Vec::new(), Vec::new());
    for &o in &pts {
        let (v, s) = conv_at(&p, &x, &w, Some(&b), o);
        got.push(y[idx(p.y_shape(), o)]);
        want.push(v);
        tols.push(tol(s, 27));
    }
    check("4096 forward (sample + borders)", &got, &want, &tols).unwrap();
    drop(y);
    // Gradients with dy = a seeded random tensor.
    let dy = rng.vec(p.y_shape().iter().product());
    let dyt = Tensor::from_slice(ctx, &dy, &p.y_shape()).unwrap();
    let g = ctx
        .conv2d_backward(&xt, &wt, &dyt, true, &params, Algorithm::Auto)
        .unwrap();
    // dx at sampled input positions: the adjoint gathers dy over the 3x3 neighbourhood.
    let dx = g.dx.read().unwrap();
    let (mut got, mut want, mut tols) = (Vec::new(), Vec::new(), Vec::new());
    for &i in &sample(xs, 100_000, &mut rng) {
        let [_, c, iy, ix] = i;
        let (mut acc, mut sc) = (0f64, 0f64);
        for k in 0..16 {
            for r in 0..3 {
                for s in 0..3 {
                    let (oy, ox) = (iy as isize + 1 - r as isize, ix as isize + 1 - s as isize);
                    if oy < 0 || ox < 0 || oy >= 4096 || ox >= 4096 {
                        continue;
                    }
                    let t = dy[idx(p.y_shape(), [0, k, oy as usize, ox as usize])] as f64
                        * w[idx(ws, [k, c, r, s])] as f64;
                    acc += t;
                    sc += t.abs();
                }
            }
        }
        got.push(dx[idx(xs, i)]);
        want.push(acc as f32);
        tols.push(tol(sc as f32, 144));
    }
    check("4096 dx (sample + borders)", &got, &want, &tols).unwrap();
    drop(dx);
    // dw and db: every element (432 + 16), full f64 reductions.
    let want_dw = cpu::conv2d_backward_weight(&p, &x, &dy);
    let scale = cpu::conv2d_backward_weight(&p, &abs(&x), &abs(&dy));
    let t: Vec<f32> = scale.iter().map(|&s| tol(s, 4096 * 4096)).collect();
    check("4096 dw", &g.dw.read().unwrap(), &want_dw, &t).unwrap();
    let want_db = cpu::conv2d_backward_bias(&p, &dy);
    let scale = cpu::conv2d_backward_bias(&p, &abs(&dy));
    let t: Vec<f32> = scale.iter().map(|&s| tol(s, 4096 * 4096)).collect();
    check("4096 db", &g.db.unwrap().read().unwrap(), &want_db, &t).unwrap();
}

#[test]
fn depthwise_needing_more_than_65535_workgroups_in_one_dimension() {
    let ctx = ctx();
    let mut rng = Rng::new(65536);
    let (xs, ws) = ([1, 16, 2048, 2048], [16, 1, 3, 3]);
    let params = Conv2dParams::default()
        .with_padding(Padding::Symmetric([1, 1]))
        .with_groups(16);
    let p = params.resolve(xs, ws, None).unwrap();
    // Invocations of the direct kernel: one per 8 output columns; 64 per workgroup.
    let groups = 16 * 2048 * 2048 / 8 / 64;
    assert!(groups > ctx.limits().max_compute_workgroups_per_dimension as usize);
    let x = rng.vec(xs.iter().product());
    let w = rng.vec(ws.iter().product());
    let y = ctx
        .conv2d(
            &Tensor::from_slice(ctx, &x, &xs).unwrap(),
            &Tensor::from_slice(ctx, &w, &ws).unwrap(),
            None,
            &params,
        )
        .unwrap()
        .read()
        .unwrap();
    let (mut got, mut want, mut tols) = (Vec::new(), Vec::new(), Vec::new());
    for &o in &sample(p.y_shape(), 100_000, &mut rng) {
        let (v, s) = conv_at(&p, &x, &w, None, o);
        got.push(y[idx(p.y_shape(), o)]);
        want.push(v);
        tols.push(tol(s, 9));
    }
    check("depthwise 16x2048x2048", &got, &want, &tols).unwrap();
}

#[test]
fn gemm_with_an_operand_over_128_mib() {
    let ctx = ctx();
    let mut rng = Rng::new(128);
    let (m, k, n) = (33_000, 1024, 7);
    assert!((m * k * 4) as u64 > 128 << 20);
    let a = rng.vec(m * k);
    let b = rng.vec(k * n);
    let p = GemmParams::default();
    let (want, _) = cpu::gemm(&a, &[m, k], &b, &[k, n], &p).unwrap();
    let (scale, _) = cpu::gemm(&abs(&a), &[m, k], &abs(&b), &[k, n], &p).unwrap();
    let c = ctx
        .gemm(
            &Tensor::from_slice(ctx, &a, &[m, k]).unwrap(),
            &Tensor::from_slice(ctx, &b, &[k, n]).unwrap(),
            &p,
        )
        .unwrap();
    let tols: Vec<f32> = scale.iter().map(|&s| tol(s, k)).collect();
    check("gemm 33000x1024x7", &c.read().unwrap(), &want, &tols).unwrap();
}
