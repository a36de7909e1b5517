//! Channels-last tensors read and written in place: the implicit GEMM's forward path
//! (`pad_image` reading NHWC x by strides, `conv2d_implicit` storing NHWC y by strides) runs
//! without any format conversion (`swap_axes` never compiled), and matches the CPU
//! reference; paths that do not read channels-last natively convert (and match too).

mod common;

use wgconv::{
    cpu, Algorithm, Context, ContextOptions, Conv2dParams, DType, MemoryFormat, Padding,
    PaddingMode, Tensor, TuningMode,
};

fn fresh() -> Context {
    let _ = common::ctx();
    Context::with_options_blocking(ContextOptions {
        tuning: Some(TuningMode::Blocking),
        ..Default::default()
    })
    .expect("GPU test needs a WebGPU adapter")
}

const CL: MemoryFormat = MemoryFormat::ChannelsLast;

/// Does this adapter run the implicit GEMM (8-lane subgroups and storage images, e.g.
/// lavapipe)? Where it does not (GL, GPUs), a forced implicit GEMM must be refused with a
/// typed error, which is what the implicit-GEMM tests then check.
fn implicit_runs() -> bool {
    let ctx = common::ctx();
    let p = Conv2dParams::default()
        .resolve([1, 8, 8, 8], [8, 8, 3, 3], None)
        .unwrap();
    match ctx.check_algorithm(wgconv::Operation::Forward, Algorithm::ImplicitGemm, &p) {
        Ok(()) => true,
        Err(e) => {
            assert!(
                matches!(e.kind(), wgconv::ErrorKind::UnsupportedAlgorithm { .. }),
                "{e}"
            );
            false
        }
    }
}

/// `v` (logical NCHW values of shape `s`) as a channels-last tensor.
fn upload_cl(ctx: &Context, v: &[f32], s: [usize; 4]) -> Tensor {
    let d = MemoryFormat::Contiguous.convert(v, s, CL).unwrap();
    Tensor::from_slice(ctx, &d, &s)
        .unwrap()
        .with_format(CL)
        .unwrap()
}

/// conv2d of NHWC x (and the output) against the CPU reference; returns the kernels compiled.
fn run(
    algo: Algorithm,
    params: &Conv2dParams,
    dtype: DType,
    xs: [usize; 4],
    ws: [usize; 4],
) -> Vec<&'static str> {
    let ctx = fresh();
    let mut rng = common::Rng::new(7);
    let x = rng.vec(xs.iter().product());
    let w = rng.vec(ws.iter().product());
    let b = rng.vec(ws[0]);
    let (want, ys) = cpu::conv2d(&x, xs, &w, ws, Some(&b), params).unwrap();
    let x_cl = MemoryFormat::Contiguous.convert(&x, xs, CL).unwrap();
    let xt = Tensor::from_f32(&ctx, &x_cl, &xs, dtype)
        .unwrap()
        .with_format(CL)
        .unwrap();
    let wt = Tensor::from_f32(&ctx, &w, &ws, dtype).unwrap();
    let bt = Tensor::from_f32(&ctx, &b, &[ws[0]], dtype).unwrap();
    let y = ctx.conv2d_with(&xt, &wt, Some(&bt), params, algo).unwrap();
    assert_eq!(y.format(), CL);
    let got = CL
        .convert(&y.read().unwrap(), ys, MemoryFormat::Contiguous)
        .unwrap();
    let len = xs[1] / params.groups * ws[2] * ws[3];
    let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
    let tol = match dtype {
        DType::F16 => 4e-3 * scale * (len as f32).sqrt(),
        _ => common::tol(scale, len),
    };
    for (i, (g, e)) in got.iter().zip(&want).enumerate() {
        assert!(
            (g - e).abs() <= tol,
            "{algo:?} {dtype:?} y[{i}]: {g} vs {e} (tol {tol})"
        );
    }
    wgconv::dev::compiled_kernels(&ctx)
}

#[test]
fn implicit_gemm_reads_and_writes_nhwc_in_place() {
    if !implicit_runs() {
        return;
    }
    let p = Conv2dParams::default().with_padding(Padding::Symmetric([1, 1]));
    for (xs, ws, params) in [
        ([2, 16, 9, 11], [24, 16, 3, 3], p),
        // any padding mode, groups, stride
        (
            [1, 16, 10, 9],
            [8, 8, 3, 3],
            p.with_groups(2).with_padding_mode(PaddingMode::Reflect),
        ),
        (
            [1, 12, 9, 13],
            [16, 12, 3, 3],
            p.with_stride([2, 2])
                .with_padding_mode(PaddingMode::Circular),
        ),
        // strided 1x1 (the sampled problem)
        (
            [2, 32, 9, 9],
            [16, 32, 1, 1],
            Conv2dParams::default().with_stride([2, 2]),
        ),
    ] {
        let compiled = run(Algorithm::ImplicitGemm, &params, DType::F32, xs, ws);
        // pad_image_nhwc (CPU adapters: a texel load of the verbatim copy), else pad_image.
        assert!(
            compiled.contains(&"pad_image_nhwc") || compiled.contains(&"pad_image"),
            "{compiled:?}"
        );
        assert!(!compiled.contains(&"swap_axes"), "converted: {compiled:?}");
    }
}

#[test]
fn auto_on_nhwc_takes_the_in_place_path_when_it_picks_the_implicit_gemm() {
    let p = Conv2dParams::default().with_padding(Padding::Symmetric([1, 1]));
    let compiled = run(
        Algorithm::Auto,
        &p,
        DType::F32,
        [1, 64, 14, 14],
        [64, 64, 3, 3],
    );
    if compiled.iter().any(|k| k.starts_with("conv2d_implicit")) {
        assert!(!compiled.contains(&"swap_axes"), "{compiled:?}");
    }
}

#[test]
fn f16_nhwc_in_place_converts_only_the_element_type() {
    if !implicit_runs() {
        return;
    }
    let p = Conv2dParams::default().with_padding(Padding::Symmetric([1, 1]));
    let compiled = run(
        Algorithm::ImplicitGemm,
        &p,
        DType::F16,
        [1, 16, 8, 10],
        [16, 16, 3, 3],
    );
    // f16_unpack / f16_pack or their four-words-per-invocation forms.
    let has = |name: &str| compiled.iter().any(|k| k.starts_with(name));
    assert!(has("f16_unpack") && has("f16_pack"), "{compiled:?}");
    assert!(!compiled.contains(&"swap_axes"), "{compiled:?}");
}

#[test]
fn other_algorithms_convert_nhwc_and_agree() {
    let p = Conv2dParams::default().with_padding(Padding::Symmetric([1, 1]));
    let compiled = run(
        Algorithm::Direct,
        &p,
        DType::F32,
        [1, 8, 9, 11],
        [8, 8, 3, 3],
    );
    assert!(compiled.contains(&"swap_axes"), "{compiled:?}");
}

/// Max |a - b| over the logical elements, `a` stored in format `fa`.
fn check(what: &str, got: &[f32], fa: MemoryFormat, shape: [usize; 4], want: &[f32]) {
    let got = fa.convert(got, shape, MemoryFormat::Contiguous).unwrap();
    let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
    let tol = common::tol(scale, 4096);
    for (i, (g, e)) in got.iter().zip(want).enumerate() {
        assert!((g - e).abs() <= tol, "{what}[{i}]: {g} vs {e}");
    }
}

#[test]
fn implicit_gemm_backward_reads_nhwc_in_place() {
    if !implicit_runs() {
        return;
    }
    let (xs, ws) = ([2, 16, 9, 11], [24, 16, 3, 3]);
    for params in [
        Conv2dParams::default().with_padding(Padding::Symmetric([1, 1])),
        // strided 1x1: dx through the scatter of the sampled pixels' gradient
        Conv2dParams::default().with_stride([2, 2]),
    ] {
        let ws = if params.stride == [2, 2] {
            [24, 16, 1, 1]
        } else {
            ws
        };
        let ctx = fresh();
        let mut rng = common::Rng::new(3);
        let x = rng.vec(xs.iter().product());
        let w = rng.vec(ws.iter().product());
        let ys = params.output_shape(xs, ws).unwrap();
        let dy = rng.vec(ys.iter().product());
        let want = cpu::conv2d_grad(&x, xs, &w, ws, &dy, ys, true, &params).unwrap();
        let up = |v: &[f32], s: [usize; 4]| upload_cl(&ctx, v, s);
        let (xt, dyt) = (up(&x, xs), up(&dy, ys));
        let wt = Tensor::from_slice(&ctx, &w, &ws).unwrap();
        let g = ctx
            .conv2d_backward(&xt, &wt, &dyt, true, &params, Algorithm::ImplicitGemm)
            .unwrap();
        assert_eq!(g.dx.format(), CL);
        check("dx", &g.dx.read().unwrap(), CL, xs, &want.dx);
        check(
            "dw",
            &g.dw.read().unwrap(),
            MemoryFormat::Contiguous,
            ws,
            &want.dw,
        );
        let db = g.db.unwrap().read().unwrap();
        check(
            "db",
            &db,
            MemoryFormat::Contiguous,
            [1, 1, 1, ws[0]],
            want.db.as_ref().unwrap(),
        );
        let compiled = wgconv::dev::compiled_kernels(&ctx);
        let converted = compiled.iter().any(|k| k.starts_with("swap_axes"));
        // Strided 1x1: dx through the channels-last scatter of the sampled pixels.
        assert!(!converted, "converted: {compiled:?}");
        // CPU adapters: the NHWC dy packed for the weight gradient from an image copy, a
        // texel per 4 channels.
        if compiled.contains(&"pad_image_nhwc") {
            assert!(compiled.contains(&"pack_image_rows"), "{compiled:?}");
        }
        // The bias gradient: summed by the weight gradient's kernel from the dy panels
        // (COL_SUMS), or by the row sums reading the NHWC dy in place.
        let summed = wgconv::dev::compiled_pipelines(&ctx)
            .iter()
            .any(|(name, spec)| {
                name.starts_with("conv2d_wgrad_implicit") && spec.contains(&("COL_SUMS", 1))
            });
        assert!(
            summed || compiled.iter().any(|k| k.starts_with("reduce_rows")),
            "{compiled:?}"
        );
    }
}

#[test]
fn implicit_gemm_transposed_reads_nhwc_in_place() {
    if !implicit_runs() {
        return;
    }
    let t = wgconv::ConvTranspose2dParams::default();
    // 3x3 stride 1 (a forward convolution of x), 1x1 stride 2 with output padding (the
    // channels-last scatter of the sampled pixels, with the bias).
    for (ws, p) in [
        ([16, 8, 3, 3], t.with_padding([1, 1])),
        (
            [16, 8, 1, 1],
            t.with_stride([2, 2]).with_output_padding([1, 1]),
        ),
    ] {
        transposed_case(ws, p);
    }
}

fn transposed_case(ws: [usize; 4], p: wgconv::ConvTranspose2dParams) {
    let ctx = fresh();
    let mut rng = common::Rng::new(4);
    let xs = [1, 16, 7, 9];
    let (x, w, b) = (
        rng.vec(xs.iter().product()),
        rng.vec(ws.iter().product()),
        rng.vec(8),
    );
    let (want, ys) = cpu::conv_transpose2d(&x, xs, &w, ws, Some(&b), &p).unwrap();
    let xd = MemoryFormat::Contiguous.convert(&x, xs, CL).unwrap();
    let xt = Tensor::from_slice(&ctx, &xd, &xs)
        .unwrap()
        .with_format(CL)
        .unwrap();
    let wt = Tensor::from_slice(&ctx, &w, &ws).unwrap();
    let bt = Tensor::from_slice(&ctx, &b, &[8]).unwrap();
    let y = ctx
        .conv_transpose2d(&xt, &wt, Some(&bt), &p, Algorithm::ImplicitGemm)
        .unwrap();
    assert_eq!(y.format(), CL);
    check("y", &y.read().unwrap(), CL, ys, &want);
    let compiled = wgconv::dev::compiled_kernels(&ctx);
    assert!(
        !compiled.iter().any(|k| k.starts_with("swap_axes")),
        "{compiled:?}"
    );
}

#[test]
fn depthwise_reads_and_writes_nhwc_in_place() {
    for params in [
        Conv2dParams::default()
            .with_padding(Padding::Symmetric([1, 1]))
            .with_groups(16),
        Conv2dParams::default()
            .with_padding(Padding::Symmetric([2, 1]))
            .with_stride([2, 1])
            .with_dilation([2, 1])
            .with_padding_mode(PaddingMode::Reflect)
            .with_groups(16)
            .with_flip(true),
        // column stride 2: a texel load per tap and pixel (no sliding window)
        Conv2dParams::default()
            .with_padding(Padding::Symmetric([1, 3]))
            .with_stride([1, 2])
            .with_padding_mode(PaddingMode::Circular)
            .with_groups(16),
    ] {
        // 3x5: 8 pixels per invocation (sliding window or per tap); 3x3 and 2x3 at column
        // stride 1: one invocation per output row.
        for ws in [[16, 1, 3, 5], [16, 1, 3, 3], [16, 1, 2, 3]] {
            let compiled = run(
                Algorithm::Depthwise,
                &params,
                DType::F32,
                [2, 16, 11, 13],
                ws,
            );
            assert!(compiled.contains(&"conv2d_depthwise_nhwc"), "{compiled:?}");
            // Only the weights are repacked ([C, R·S] -> [R·S, C], not a multiple of 4 wide).
            assert!(!compiled.contains(&"swap_axes4"), "{compiled:?}");
        }
    }
}

#[test]
fn bias_gradient_of_nhwc_dy_both_paths() {
    // K a multiple of 4: texel loads of an image copy (CPU adapters); else per-channel sums.
    for k in [8usize, 6] {
        let ctx = fresh();
        let mut rng = common::Rng::new(k as u64);
        let s = [3, k, 5, 7];
        let dy = rng.vec(s.iter().product());
        let mut want = vec![0f64; k];
        for n in 0..s[0] {
            for (c, acc) in want.iter_mut().enumerate() {
                for p in 0..s[2] * s[3] {
                    *acc += dy[(n * k + c) * s[2] * s[3] + p] as f64;
                }
            }
        }
        let d = MemoryFormat::Contiguous.convert(&dy, s, CL).unwrap();
        let t = Tensor::from_slice(&ctx, &d, &s)
            .unwrap()
            .with_format(CL)
            .unwrap();
        let db = ctx.conv2d_backward_bias(&t).unwrap().read().unwrap();
        for (c, (g, e)) in db.iter().zip(&want).enumerate() {
            assert!(
                (*g as f64 - e).abs() <= 1e-4 * (1.0 + e.abs()),
                "k {k} db[{c}]: {g} vs {e}"
            );
        }
        let compiled = wgconv::dev::compiled_kernels(&ctx);
        assert!(
            !compiled.iter().any(|n| n.starts_with("swap_axes")),
            "{compiled:?}"
        );
    }
}

#[test]
fn depthwise_backward_reads_nhwc_in_place() {
    let (xs, ws) = ([2, 16, 9, 13], [16, 1, 3, 3]);
    for params in [
        Conv2dParams::default()
            .with_padding(Padding::Symmetric([1, 1]))
            .with_groups(16),
        // row stride and dilation, reflect padding, true convolution, a 2x3 kernel
        Conv2dParams::default()
            .with_padding(Padding::PerSide([2, 1, 1, 1]))
            .with_stride([2, 1])
            .with_dilation([2, 1])
            .with_padding_mode(PaddingMode::Reflect)
            .with_groups(16)
            .with_flip(true),
    ] {
        let ws = if params.flip { [16, 1, 2, 3] } else { ws };
        let ctx = fresh();
        let mut rng = common::Rng::new(9);
        let x = rng.vec(xs.iter().product());
        let w = rng.vec(ws.iter().product());
        let ys = params.output_shape(xs, ws).unwrap();
        let dy = rng.vec(ys.iter().product());
        let want = cpu::conv2d_grad(&x, xs, &w, ws, &dy, ys, true, &params).unwrap();
        let up = |v: &[f32], s: [usize; 4]| upload_cl(&ctx, v, s);
        let (xt, dyt) = (up(&x, xs), up(&dy, ys));
        let wt = Tensor::from_slice(&ctx, &w, &ws).unwrap();
        let dw = ctx
            .conv2d_backward_weight(&xt, &dyt, ws, &params, Algorithm::Depthwise)
            .unwrap();
        check(
            "dw",
            &dw.read().unwrap(),
            MemoryFormat::Contiguous,
            ws,
            &want.dw,
        );
        let db = ctx.conv2d_backward_bias(&dyt).unwrap();
        let db = db.read().unwrap();
        check(
            "db",
            &db,
            MemoryFormat::Contiguous,
            [1, 1, 1, 16],
            want.db.as_ref().unwrap(),
        );
        let compiled = wgconv::dev::compiled_kernels(&ctx);
        assert!(
            compiled.contains(&"conv2d_wgrad_depthwise_nhwc"),
            "{compiled:?}"
        );
        assert!(!compiled.contains(&"swap_axes4"), "{compiled:?}");
        // Stride 1: dx in place too (the forward kernel on dy, as part of conv2d_backward).
        if params.stride == [1, 1] {
            let g = ctx
                .conv2d_backward(&xt, &wt, &dyt, true, &params, Algorithm::Depthwise)
                .unwrap();
            assert_eq!(g.dx.format(), CL);
            check("dx", &g.dx.read().unwrap(), CL, xs, &want.dx);
            check(
                "dw",
                &g.dw.read().unwrap(),
                MemoryFormat::Contiguous,
                ws,
                &want.dw,
            );
            let compiled = wgconv::dev::compiled_kernels(&ctx);
            assert!(compiled.contains(&"conv2d_depthwise_nhwc"), "{compiled:?}");
            assert!(!compiled.contains(&"swap_axes4"), "{compiled:?}");
        }
    }
}

#[test]
fn small_channel_conversions_use_vector_accesses() {
    // 1-3 channels (RGB images) with H·W a multiple of 4: swap_axes_small, both directions.
    let ctx = fresh();
    let mut rng = common::Rng::new(12);
    for s in [
        [2usize, 3, 4, 6],
        [1, 1, 8, 8],
        [3, 2, 2, 6],
        [1, 3, 224, 224],
    ] {
        let n: usize = s.iter().product();
        let v = rng.vec(n);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        let t = Tensor::from_slice(&ctx, &v, &s).unwrap();
        let cl = t.to_format(CL).unwrap();
        let want = MemoryFormat::Contiguous.convert(&v, s, CL).unwrap();
        assert_eq!(
            bits(&cl.read().unwrap()),
            bits(&want),
            "{s:?} to channels-last"
        );
        let back = cl.to_format(MemoryFormat::Contiguous).unwrap();
        assert_eq!(bits(&back.read().unwrap()), bits(&v), "{s:?} back");
    }
    let compiled = wgconv::dev::compiled_kernels(&ctx);
    assert!(compiled.contains(&"swap_axes_small"), "{compiled:?}");
    assert!(!compiled.contains(&"swap_axes"), "{compiled:?}");
}

/// A channels-last (KRSC) weight gradient is stored in that order by the implicit GEMM's
/// kernel itself, and 1x1 weights are the same memory in both orders: no conversion at all
/// (`swap_axes*` never compiled) with NHWC x and dy, 3x3 (groups too) and strided 1x1.
#[test]
fn implicit_gemm_weight_gradient_stores_krsc_in_place() {
    if !implicit_runs() {
        return;
    }
    let d = Conv2dParams::default();
    let cases = [
        (
            [2, 16, 9, 11],
            [24, 16, 3, 3],
            d.with_padding(Padding::Symmetric([1, 1])),
        ),
        ([1, 16, 7, 6], [8, 8, 3, 3], d.with_groups(2)),
        ([2, 16, 9, 11], [24, 16, 1, 1], d.with_stride([2, 2])),
    ];
    for (xs, ws, params) in cases {
        let ctx = fresh();
        let mut rng = common::Rng::new(11);
        let x = rng.vec(xs.iter().product());
        let ys = params.output_shape(xs, ws).unwrap();
        let dy = rng.vec(ys.iter().product());
        let p = params.resolve(xs, ws, None).unwrap();
        let want = cpu::conv2d_backward_weight(&p, &x, &dy);
        let up = |v: &[f32], s: [usize; 4]| upload_cl(&ctx, v, s);
        let (xt, dyt) = (up(&x, xs), up(&dy, ys));
        let dw = Tensor::full(&ctx, &ws, f32::NAN)
            .unwrap()
            .with_format(CL)
            .unwrap();
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        ctx.encode_conv2d_backward_weight(
            &mut enc,
            &xt,
            &dyt,
            &params,
            Algorithm::ImplicitGemm,
            &dw,
        )
        .unwrap();
        ctx.submit(enc).unwrap();
        check(&format!("dw {ws:?}"), &dw.read().unwrap(), CL, ws, &want);
        let compiled = wgconv::dev::compiled_kernels(&ctx);
        assert!(
            !compiled.iter().any(|k| k.starts_with("swap_axes")),
            "{ws:?} converted: {compiled:?}"
        );
        assert!(
            compiled
                .iter()
                .any(|k| k.starts_with("conv2d_wgrad_implicit")),
            "{compiled:?}"
        );
    }
}
