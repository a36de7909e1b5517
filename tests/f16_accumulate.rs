//! `Precision::F16Accumulate`: f16 arithmetic on f16 tensors, opt-in, against the f64
//! reference within `cpu::f16_accumulate_tolerance` (bit-exact on small integers), proven to
//! sum in f16 (a case whose f16 and f32 sums differ), and refused with typed errors where it
//! does not run. On a device without `shader-f16` (wgpu's GL backend) the setter's refusal is
//! what is tested.

mod common;

use std::sync::OnceLock;

use common::{ctx, Rng};
use wgconv::half::f16;
use wgconv::{
    cpu, Algorithm, Context, ContextOptions, Conv2dParams, Conv2dProblem, ConvTranspose2dParams,
    DType, ErrorKind, GemmParams, GemmVariant, LimitsOverride, MemoryFormat, Padding, PaddingMode,
    Precision, Tensor,
};

/// A context of its own in f16-arithmetic mode (the precision is per context: the shared
/// one of `common` stays in the default mode); `None` where the device lacks `shader-f16`,
/// which only wgpu's GL backend may (lavapipe has it: a Vulkan context without it fails).
fn f16ctx() -> Option<&'static Context> {
    static CTX: OnceLock<Option<Context>> = OnceLock::new();
    CTX.get_or_init(|| {
        let c = Context::new_blocking().expect("a WebGPU adapter");
        if !c.has_shader_f16() {
            assert_eq!(
                c.adapter_info().backend,
                wgpu::Backend::Gl,
                "lavapipe (Vulkan) offers shader-f16: {}",
                c.adapter_summary()
            );
            return None;
        }
        c.set_precision(Precision::F16Accumulate).unwrap();
        Some(c)
    })
    .as_ref()
}

fn h(v: &[f32]) -> Vec<f16> {
    v.iter().map(|&a| f16::from_f32(a)).collect()
}

fn abs(v: &[f32]) -> Vec<f32> {
    v.iter().map(|a| a.abs()).collect()
}

/// Random values representable in f16 (uniform in [-1, 1)), or small integers whose sums
/// stay exact in f16.
fn data(rng: &mut Rng, integer: bool, n: usize) -> Vec<f32> {
    let v = if integer { rng.int_vec(n) } else { rng.vec(n) };
    h(&v).into_iter().map(f32::from).collect()
}

/// `got` (f16 results) against the f64 reference `want` within the f16-accumulation bound
/// (`exact`: bit for bit).
fn check(label: &str, got: &[f32], want: &[f32], scale: &[f32], len: usize, exact: bool) {
    assert_eq!(got.len(), want.len(), "{label}");
    for (i, (&g, &e)) in got.iter().zip(want).enumerate() {
        let e16 = f64::from(f16::from_f32(e));
        let bound = if exact {
            0.0
        } else {
            cpu::f16_accumulate_tolerance(e16, f64::from(scale[i]), len)
        };
        assert!(
            (f64::from(g) - e16).abs() <= bound,
            "{label}: [{i}] = {g}, want {e16} (bound {bound})"
        );
    }
}

fn tensor(ctx: &Context, v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_f32(ctx, v, shape, DType::F16).unwrap()
}

/// Padding modes, strides, dilations, groups, flips, depthwise and a channel multiplier.
fn problems() -> Vec<(Conv2dParams, [usize; 4], [usize; 4])> {
    let p = Conv2dParams::default;
    vec![
        (
            p().with_padding(Padding::Symmetric([1, 1])),
            [2, 3, 9, 7],
            [5, 3, 3, 3],
        ),
        (
            p().with_padding(Padding::Same)
                .with_padding_mode(PaddingMode::Reflect)
                .with_groups(2),
            [1, 4, 8, 8],
            [4, 2, 3, 3],
        ),
        (
            p().with_padding(Padding::Symmetric([2, 1]))
                .with_padding_mode(PaddingMode::Circular)
                .with_dilation([2, 1]),
            [1, 2, 7, 6],
            [3, 2, 3, 2],
        ),
        (
            p().with_padding(Padding::Symmetric([1, 1]))
                .with_padding_mode(PaddingMode::Replicate)
                .with_stride([2, 2])
                .with_flip(true),
            [2, 2, 9, 9],
            [9, 2, 3, 3],
        ),
        (
            p().with_padding(Padding::Symmetric([1, 1])).with_groups(4),
            [1, 4, 6, 10],
            [8, 1, 3, 3],
        ),
        (p().with_stride([2, 1]), [1, 16, 5, 9], [6, 16, 1, 1]),
    ]
}

#[test]
fn f16_arithmetic_is_opt_in_and_really_sums_in_f16() {
    let Some(f) = f16ctx() else {
        // GL: the mode is refused, typed, and the precision stays the default.
        let c = ctx();
        let e = c.set_precision(Precision::F16Accumulate).unwrap_err();
        assert!(matches!(e.kind(), ErrorKind::InvalidParam { .. }), "{e}");
        assert_eq!(c.precision(), Precision::F32Accumulate);
        return;
    };
    let d = ctx();
    assert_eq!(d.precision(), Precision::F32Accumulate);
    assert_eq!(f.precision(), Precision::F16Accumulate);
    // 2048 + 1 + 1: exact in f32 (2050, an f16 value); in f16 each +1 is a tie that rounds
    // back to 2048 (even).
    let xs = [1, 3, 1, 1];
    let ws = [1, 3, 1, 1];
    let p = Conv2dParams::default();
    for (ctx, want) in [(d, 2050.0), (f, 2048.0)] {
        let x = tensor(ctx, &[2048.0, 1.0, 1.0], &xs);
        let w = tensor(ctx, &[1.0; 3], &ws);
        let y = ctx.conv2d(&x, &w, None, &p).unwrap().read().unwrap();
        assert_eq!(y, vec![want], "{:?}", ctx.precision());
        // The weight gradient (dy = 1 at the one output): dw[c] = x[c], no sum; the input
        // gradient of three output channels summed into one input channel.
        let dy3 = tensor(ctx, &[2048.0, 1.0, 1.0], &[1, 3, 1, 1]);
        let w3 = tensor(ctx, &[1.0; 3], &[3, 1, 1, 1]);
        let dx = ctx
            .conv2d_backward_input(&dy3, &w3, [1, 1, 1, 1], &p, Algorithm::Auto)
            .unwrap()
            .read()
            .unwrap();
        assert_eq!(dx, vec![want], "dx {:?}", ctx.precision());
        let gemm = ctx
            .gemm(
                &tensor(ctx, &[2048.0, 1.0, 1.0], &[1, 3]),
                &tensor(ctx, &[1.0; 3], &[3, 1]),
                &GemmParams::default(),
            )
            .unwrap()
            .read()
            .unwrap();
        assert_eq!(gemm, vec![want], "gemm {:?}", ctx.precision());
    }
    let k = wgconv::dev::compiled_kernels(f);
    for name in ["conv2d_direct_f16", "conv2d_dgrad_f16", "gemm_reg_f16"] {
        assert!(k.contains(&name), "{name} not compiled: {k:?}");
    }
    // No f16 twin in the default mode.
    let kd = wgconv::dev::compiled_kernels(d);
    assert!(!kd
        .iter()
        .any(|n| n.ends_with("_f16") && n.starts_with("conv2d_direct")));
    // f32 tensors are unaffected by the mode.
    let x = Tensor::from_slice(f, &[2048.0, 1.0, 1.0], &xs).unwrap();
    let w = Tensor::from_slice(f, &[1.0; 3], &ws).unwrap();
    assert_eq!(
        f.conv2d(&x, &w, None, &p).unwrap().read().unwrap(),
        [2050.0]
    );
}

#[test]
fn f16_arithmetic_forward_within_its_bound() {
    let Some(ctx) = f16ctx() else { return };
    let mut rng = Rng::new(7);
    for integer in [true, false] {
        for (params, xs, ws) in problems() {
            let p = Conv2dProblem::new(xs, ws, Some(ws[0]), &params).unwrap();
            let x = data(&mut rng, integer, xs.iter().product());
            let w = data(&mut rng, integer, ws.iter().product());
            let b = data(&mut rng, integer, ws[0]);
            let want = cpu::conv2d_problem(&p, &x, &w, Some(&b));
            let scale = cpu::conv2d_abs_scale(&p, &x, &w, Some(&b));
            let (xt, wt, bt) = (
                tensor(ctx, &x, &xs),
                tensor(ctx, &w, &ws),
                tensor(ctx, &b, &[ws[0]]),
            );
            for a in [Algorithm::Auto, Algorithm::Direct, Algorithm::Im2colGemm] {
                let y = ctx.conv2d_with(&xt, &wt, Some(&bt), &params, a).unwrap();
                assert_eq!(y.dtype(), DType::F16);
                let label = format!("{params:?} {xs:?} {ws:?} {a:?} integer {integer}");
                let len = p.reduction_len() + 1;
                check(&label, &y.read().unwrap(), &want, &scale, len, integer);
            }
        }
    }
}

#[test]
fn f16_arithmetic_gradients_and_transposed_within_their_bound() {
    let Some(ctx) = f16ctx() else { return };
    let mut rng = Rng::new(8);
    for integer in [true, false] {
        for (params, xs, ws) in problems() {
            let p = Conv2dProblem::new(xs, ws, None, &params).unwrap();
            let ys = p.y_shape();
            let x = data(&mut rng, integer, xs.iter().product());
            let w = data(&mut rng, integer, ws.iter().product());
            let dy = data(&mut rng, integer, ys.iter().product());
            let label = format!("{params:?} {xs:?} {ws:?} integer {integer}");
            let (xt, wt, dyt) = (
                tensor(ctx, &x, &xs),
                tensor(ctx, &w, &ws),
                tensor(ctx, &dy, &ys),
            );
            // dx: up to K/g·R·S products, plus up to 9 folded partial sums.
            let dx_len = p.k_per_group() * p.r() * p.s() + 9;
            let dx_want = cpu::conv2d_backward_input(&p, &dy, &w);
            let dx_scale = cpu::conv2d_backward_input(&p, &abs(&dy), &abs(&w));
            let dw_len = p.n() * p.oh() * p.ow();
            let dw_want = cpu::conv2d_backward_weight(&p, &x, &dy);
            let dw_scale = cpu::conv2d_backward_weight(&p, &abs(&x), &abs(&dy));
            let dx = ctx
                .conv2d_backward_input(&dyt, &wt, xs, &params, Algorithm::Direct)
                .unwrap();
            check(
                &format!("dx {label}"),
                &dx.read().unwrap(),
                &dx_want,
                &dx_scale,
                dx_len,
                integer,
            );
            let dw = ctx
                .conv2d_backward_weight(&xt, &dyt, ws, &params, Algorithm::Auto)
                .unwrap();
            assert_eq!(dw.dtype(), DType::F16);
            check(
                &format!("dw {label}"),
                &dw.read().unwrap(),
                &dw_want,
                &dw_scale,
                dw_len,
                integer,
            );
            let g = ctx
                .conv2d_backward(&xt, &wt, &dyt, true, &params, Algorithm::Auto)
                .unwrap();
            check(
                &format!("all dx {label}"),
                &g.dx.read().unwrap(),
                &dx_want,
                &dx_scale,
                dx_len,
                integer,
            );
            check(
                &format!("all dw {label}"),
                &g.dw.read().unwrap(),
                &dw_want,
                &dw_scale,
                dw_len,
                integer,
            );
            // db keeps f32 sums (documented): f32 tolerance, bit-exact on integers.
            let db_want = cpu::conv2d_backward_bias(&p, &dy);
            let db_scale = cpu::conv2d_backward_bias(&p, &abs(&dy));
            let db = g.db.unwrap().read().unwrap();
            for (i, (&g, &e)) in db.iter().zip(&db_want).enumerate() {
                let e16 = f64::from(f16::from_f32(e));
                let bound = if integer {
                    0.0
                } else {
                    cpu::f16_tolerance(e16, f64::from(db_scale[i]), dw_len)
                };
                assert!((f64::from(g) - e16).abs() <= bound, "db {label} [{i}]");
            }
            // Master weights: an f32 dw of f16 inputs keeps f32 sums.
            let dw32 = ctx
                .conv2d_backward_weight_as(&xt, &dyt, ws, &params, Algorithm::Auto, DType::F32)
                .unwrap();
            assert_eq!(dw32.dtype(), DType::F32);
            for (i, (&g, &e)) in dw32.read().unwrap().iter().zip(&dw_want).enumerate() {
                let bound = if integer {
                    0.0
                } else {
                    1e-5 * f64::from(dw_scale[i]) + 1e-6
                };
                assert!(
                    (f64::from(g) - f64::from(e)).abs() <= bound,
                    "dw32 {label} [{i}]"
                );
            }
        }
    }
    // The transposed convolution (bias, stride, output padding, groups, dilation).
    for integer in [true, false] {
        let tp = ConvTranspose2dParams::default()
            .with_stride([2, 2])
            .with_padding([1, 0])
            .with_output_padding([1, 1])
            .with_groups(2)
            .with_dilation([1, 2]);
        let (xs, ws) = ([2, 4, 5, 6], [4, 3, 3, 2]);
        let x = data(&mut rng, integer, xs.iter().product());
        let w = data(&mut rng, integer, ws.iter().product());
        let b = data(&mut rng, integer, 6);
        let (want, ys) = cpu::conv_transpose2d(&x, xs, &w, ws, Some(&b), &tp).unwrap();
        let (scale, _) =
            cpu::conv_transpose2d(&abs(&x), xs, &abs(&w), ws, Some(&abs(&b)), &tp).unwrap();
        let y = ctx
            .conv_transpose2d(
                &tensor(ctx, &x, &xs),
                &tensor(ctx, &w, &ws),
                Some(&tensor(ctx, &b, &[6])),
                &tp,
                Algorithm::Auto,
            )
            .unwrap();
        assert_eq!(y.shape(), ys);
        check(
            "transposed",
            &y.read().unwrap(),
            &want,
            &scale,
            2 * 3 * 2 + 1,
            integer,
        );
    }
}

#[test]
fn f16_arithmetic_gemm_within_its_bound() {
    let Some(ctx) = f16ctx() else { return };
    let mut rng = Rng::new(9);
    // Sizes off the vec4 grid (packed A), transposes, a batch, a bias.
    for (m, k, n, ta, tb, batch) in [
        (5, 7, 3, false, false, 1),
        (8, 16, 20, true, false, 1),
        (13, 9, 6, false, true, 3),
        (4, 33, 17, true, true, 2),
    ] {
        for integer in [true, false] {
            let params = GemmParams::default()
                .with_transpose_a(ta)
                .with_transpose_b(tb);
            let a_shape = if ta {
                vec![batch, k, m]
            } else {
                vec![batch, m, k]
            };
            let b_shape = if tb {
                vec![batch, n, k]
            } else {
                vec![batch, k, n]
            };
            let a = data(&mut rng, integer, batch * m * k);
            let b = data(&mut rng, integer, batch * k * n);
            let (want, c_shape) = cpu::gemm(&a, &a_shape, &b, &b_shape, &params).unwrap();
            let (scale, _) = cpu::gemm(&abs(&a), &a_shape, &abs(&b), &b_shape, &params).unwrap();
            for v in [GemmVariant::Auto, GemmVariant::Register, GemmVariant::Tiled] {
                let c = ctx
                    .gemm(
                        &tensor(ctx, &a, &a_shape),
                        &tensor(ctx, &b, &b_shape),
                        &params.with_variant(v),
                    )
                    .unwrap();
                assert_eq!(c.shape(), c_shape);
                let label = format!("gemm {m}x{k}x{n} ta {ta} tb {tb} batch {batch} {v:?}");
                check(&label, &c.read().unwrap(), &want, &scale, k, integer);
            }
        }
    }
}

#[test]
fn f16_arithmetic_refuses_what_it_does_not_run() {
    let Some(ctx) = f16ctx() else { return };
    let p = Conv2dParams::default().with_padding(Padding::Symmetric([1, 1]));
    let x = Tensor::full_of(ctx, &[1, 8, 8, 8], 1.0, DType::F16).unwrap();
    let w = Tensor::full_of(ctx, &[8, 8, 3, 3], 1.0, DType::F16).unwrap();
    // Another forced algorithm: refused, never run in f32 instead.
    let dy = Tensor::full_of(ctx, &[1, 8, 8, 8], 1.0, DType::F16).unwrap();
    let refused = |r: wgconv::Result<Tensor>| {
        let e = r.unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::UnsupportedAlgorithm { .. }),
            "{e}"
        );
    };
    for a in [
        Algorithm::Im2colGemm,
        Algorithm::ImplicitGemm,
        Algorithm::Depthwise,
    ] {
        if a != Algorithm::Im2colGemm {
            refused(ctx.conv2d_with(&x, &w, None, &p, a));
        }
        refused(ctx.conv2d_backward_input(&dy, &w, [1, 8, 8, 8], &p, a));
        refused(ctx.conv2d_backward_weight(&x, &dy, [8, 8, 3, 3], &p, a));
    }
    let e = ctx
        .gemm(
            &Tensor::full_of(ctx, &[8, 8], 1.0, DType::F16).unwrap(),
            &Tensor::full_of(ctx, &[8, 8], 1.0, DType::F16).unwrap(),
            &GemmParams::default().with_variant(GemmVariant::Image),
        )
        .unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::UnsupportedAlgorithm { .. }),
        "{e}"
    );
    // Beyond one storage binding (a context whose bindings hold 4 KiB).
    let small = Context::with_options_blocking(ContextOptions {
        limits: Some(LimitsOverride {
            max_storage_buffer_binding_size: Some(4096),
            ..Default::default()
        }),
        ..Default::default()
    })
    .unwrap();
    small.set_precision(Precision::F16Accumulate).unwrap();
    let big = Tensor::full_of(&small, &[1, 8, 32, 32], 1.0, DType::F16).unwrap();
    let w1 = Tensor::full_of(&small, &[8, 8, 3, 3], 1.0, DType::F16).unwrap();
    let e = small.conv2d(&big, &w1, None, &p).unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::ExceedsLimit { .. }), "{e}");
    // The same call in the default mode runs (bands).
    small.set_precision(Precision::F32Accumulate).unwrap();
    let y = small.conv2d(&big, &w1, None, &p).unwrap().read().unwrap();
    assert_eq!(y[8 * 32 + 8], 72.0);
}

#[test]
fn f16_arithmetic_channels_last_matches_contiguous() {
    let Some(ctx) = f16ctx() else { return };
    let mut rng = Rng::new(10);
    let cl = MemoryFormat::ChannelsLast;
    for (params, xs, ws) in problems() {
        let p = Conv2dProblem::new(xs, ws, Some(ws[0]), &params).unwrap();
        let ys = p.y_shape();
        let x = data(&mut rng, false, xs.iter().product());
        let w = data(&mut rng, false, ws.iter().product());
        let b = data(&mut rng, false, ws[0]);
        let dy = data(&mut rng, false, ys.iter().product());
        let (xt, wt, bt, dyt) = (
            tensor(ctx, &x, &xs),
            tensor(ctx, &w, &ws),
            tensor(ctx, &b, &[ws[0]]),
            tensor(ctx, &dy, &ys),
        );
        let (xc, wc, dyc) = (
            xt.to_format(cl).unwrap(),
            wt.to_format(cl).unwrap(),
            dyt.to_format(cl).unwrap(),
        );
        let label = format!("{params:?} {xs:?} {ws:?}");
        // The same kernels on the same values: identical bits, results in the input's format.
        let y = ctx.conv2d(&xt, &wt, Some(&bt), &params).unwrap();
        let yc = ctx.conv2d(&xc, &wc, Some(&bt), &params).unwrap();
        assert_eq!(yc.format(), cl);
        assert_eq!(
            yc.to_format(MemoryFormat::Contiguous)
                .unwrap()
                .read_f16()
                .unwrap(),
            y.read_f16().unwrap(),
            "y {label}"
        );
        let g = ctx
            .conv2d_backward(&xt, &wt, &dyt, false, &params, Algorithm::Auto)
            .unwrap();
        let gc = ctx
            .conv2d_backward(&xc, &wc, &dyc, false, &params, Algorithm::Direct)
            .unwrap();
        assert_eq!((gc.dx.format(), gc.dw.format()), (cl, cl));
        let contiguous = |t: &Tensor| {
            t.to_format(MemoryFormat::Contiguous)
                .unwrap()
                .read_f16()
                .unwrap()
        };
        assert_eq!(contiguous(&gc.dx), g.dx.read_f16().unwrap(), "dx {label}");
        assert_eq!(contiguous(&gc.dw), g.dw.read_f16().unwrap(), "dw {label}");
    }
}

/// The GPU kernel family (forced on this CPU adapter): `Auto` runs the forward on the im2col
/// GEMM's f16 kernels (`im2col_f16`, `gemm_tiled_f16`), GEMM on the tiled twin.
#[test]
fn f16_arithmetic_gpu_kernel_family() {
    if f16ctx().is_none() {
        return;
    }
    let gpu = Context::with_options_blocking(ContextOptions {
        kernel_class: Some(wgconv::KernelClass::Gpu),
        ..Default::default()
    })
    .unwrap();
    gpu.set_precision(Precision::F16Accumulate).unwrap();
    let mut rng = Rng::new(11);
    for integer in [true, false] {
        for (params, xs, ws) in problems() {
            let p = Conv2dProblem::new(xs, ws, Some(ws[0]), &params).unwrap();
            let x = data(&mut rng, integer, xs.iter().product());
            let w = data(&mut rng, integer, ws.iter().product());
            let b = data(&mut rng, integer, ws[0]);
            let want = cpu::conv2d_problem(&p, &x, &w, Some(&b));
            let scale = cpu::conv2d_abs_scale(&p, &x, &w, Some(&b));
            let (xt, wt, bt) = (
                tensor(&gpu, &x, &xs),
                tensor(&gpu, &w, &ws),
                tensor(&gpu, &b, &[ws[0]]),
            );
            let y = gpu.conv2d(&xt, &wt, Some(&bt), &params).unwrap();
            let label = format!("gpu family {params:?} {xs:?} {ws:?} integer {integer}");
            check(
                &label,
                &y.read().unwrap(),
                &want,
                &scale,
                p.reduction_len() + 1,
                integer,
            );
        }
    }
    let k = wgconv::dev::compiled_kernels(&gpu);
    for name in ["im2col_f16", "gemm_tiled_f16"] {
        assert!(k.contains(&name), "{name} not compiled: {k:?}");
    }
    let a = data(&mut rng, false, 37 * 21);
    let bm = data(&mut rng, false, 21 * 19);
    let g = GemmParams::default();
    let (want, _) = cpu::gemm(&a, &[37, 21], &bm, &[21, 19], &g).unwrap();
    let (scale, _) = cpu::gemm(&abs(&a), &[37, 21], &abs(&bm), &[21, 19], &g).unwrap();
    let c = gpu
        .gemm(
            &tensor(&gpu, &a, &[37, 21]),
            &tensor(&gpu, &bm, &[21, 19]),
            &g,
        )
        .unwrap();
    check(
        "gpu family gemm",
        &c.read().unwrap(),
        &want,
        &scale,
        21,
        false,
    );
}

/// Epilogues with f16 arithmetic: fused into the direct kernel's store (residual read as
/// f16), or one pass on an f32 copy (transposed, GEMM); integer data: bit-exact.
#[test]
fn f16_arithmetic_with_epilogues() {
    let Some(ctx) = f16ctx() else { return };
    use wgconv::{Activation, Epilogue, Residual};
    let mut rng = Rng::new(12);
    let ep = Epilogue::new(Activation::Relu).with_residual(Residual::After);
    let (params, xs, ws) = problems().swap_remove(1);
    let p = Conv2dProblem::new(xs, ws, Some(ws[0]), &params).unwrap();
    let ys = p.y_shape();
    let x = data(&mut rng, true, xs.iter().product());
    let w = data(&mut rng, true, ws.iter().product());
    let b = data(&mut rng, true, ws[0]);
    let r = data(&mut rng, true, ys.iter().product());
    let (want, _) = cpu::conv2d_fused(&x, xs, &w, ws, Some(&b), Some(&r), &params, &ep).unwrap();
    let y = ctx
        .conv2d_fused(
            &tensor(ctx, &x, &xs),
            &tensor(ctx, &w, &ws),
            Some(&tensor(ctx, &b, &[ws[0]])),
            Some(&tensor(ctx, &r, &ys)),
            &params,
            &ep,
            Algorithm::Auto,
        )
        .unwrap();
    assert_eq!(y.dtype(), DType::F16);
    assert_eq!(y.read().unwrap(), want, "conv2d_fused");
    // GEMM with a bias and a residual before a leaky relu.
    let ep = Epilogue::new(Activation::LeakyRelu { alpha: 0.5 }).with_residual(Residual::Before);
    let (a, bm, bias, r) = (
        data(&mut rng, true, 6 * 5),
        data(&mut rng, true, 5 * 7),
        data(&mut rng, true, 7),
        data(&mut rng, true, 6 * 7),
    );
    let g = GemmParams::default();
    let (want, _) =
        cpu::gemm_fused(&a, &[6, 5], &bm, &[5, 7], Some(&bias), Some(&r), &g, &ep).unwrap();
    let c = ctx
        .gemm_fused(
            &tensor(ctx, &a, &[6, 5]),
            &tensor(ctx, &bm, &[5, 7]),
            Some(&tensor(ctx, &bias, &[7])),
            Some(&tensor(ctx, &r, &[6, 7])),
            &g,
            &ep,
        )
        .unwrap();
    assert_eq!(c.read().unwrap(), want, "gemm_fused");
    // The transposed convolution with a clamp.
    let ep = Epilogue::new(Activation::Clamp { lo: -4.0, hi: 4.0 });
    let tp = ConvTranspose2dParams::default().with_stride([2, 2]);
    let (xs, ws) = ([1, 3, 4, 5], [3, 2, 3, 3]);
    let (x, w) = (
        data(&mut rng, true, xs.iter().product()),
        data(&mut rng, true, ws.iter().product()),
    );
    let (want, _) = cpu::conv_transpose2d_fused(&x, xs, &w, ws, None, None, &tp, &ep).unwrap();
    let y = ctx
        .conv_transpose2d_fused(
            &tensor(ctx, &x, &xs),
            &tensor(ctx, &w, &ws),
            None,
            None,
            &tp,
            &ep,
            Algorithm::Auto,
        )
        .unwrap();
    assert_eq!(y.read().unwrap(), want, "conv_transpose2d_fused");
}
