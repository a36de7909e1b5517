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
        assert!(compiled.contains(&"pad_image"), "{compiled:?}");
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
    let p = Conv2dParams::default().with_padding(Padding::Symmetric([1, 1]));
    let compiled = run(
        Algorithm::ImplicitGemm,
        &p,
        DType::F16,
        [1, 16, 8, 10],
        [16, 16, 3, 3],
    );
    assert!(compiled.contains(&"f16_unpack") && compiled.contains(&"f16_pack"));
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
