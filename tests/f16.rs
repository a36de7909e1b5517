//! f16 tensors: creation, conversion, readback, typed errors, and every operation on f16
//! data (f32 accumulation) against the f16 CPU reference.

mod common;

use common::ctx;
use wgconv::half::f16;
use wgconv::{DType, ErrorKind, Tensor};

#[test]
fn f16_round_trip_is_bit_exact() {
    let ctx = ctx();
    // Odd length: the last word's high half is padding, never read back.
    let bits: Vec<u16> = vec![
        0x0000, 0x8000, 0x3c00, 0x7bff, 0x0001, 0x83ff, 0x7c00, 0xfc00, 0x3555,
    ];
    let h: Vec<f16> = bits.iter().map(|&b| f16::from_bits(b)).collect();
    let t = Tensor::from_f16(ctx, &h, &[3, 3]).unwrap();
    assert_eq!(t.dtype(), DType::F16);
    assert_eq!(t.storage_bytes(), 20);
    let back: Vec<u16> = t.read_f16().unwrap().iter().map(|v| v.to_bits()).collect();
    assert_eq!(back, bits);
    let as32 = t.read().unwrap();
    for (a, b) in as32.iter().zip(&h) {
        assert_eq!(a.to_bits(), f32::from(*b).to_bits());
    }
}

#[test]
fn f32_to_f16_rounds_to_nearest_even() {
    let ctx = ctx();
    // 1 + 2^-11 is a tie between 1 and 1 + 2^-10: even is 1. 1 + 3·2^-11 ties to 1 + 2^-9.
    let v = [
        1.0 + 2f32.powi(-11),
        1.0 + 3.0 * 2f32.powi(-11),
        65519.0,
        65520.0,
        -1e9,
        2f32.powi(-25),
        3.0 * 2f32.powi(-26),
    ];
    let t = Tensor::from_f32(ctx, &v, &[7], DType::F16).unwrap();
    let got = t.read().unwrap();
    let want: Vec<f32> = v.iter().map(|&x| f16::from_f32(x).to_f32()).collect();
    assert_eq!(got, want);
    assert_eq!(got[0], 1.0);
    assert_eq!(got[1], 1.0 + 2f32.powi(-9));
    assert_eq!(got[2], 65504.0);
    assert!(got[3].is_infinite() && got[4] == f32::NEG_INFINITY);
    assert_eq!(got[5], 0.0);
    assert_eq!(got[6], 2f32.powi(-24));
}

#[test]
fn f16_fill_write_reshape_zeros() {
    let ctx = ctx();
    let t = Tensor::full_of(ctx, &[5], 1.5, DType::F16).unwrap();
    assert_eq!(t.read().unwrap(), vec![1.5; 5]);
    t.write(&[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
    let r = t.reshape(&[1, 5]).unwrap();
    assert_eq!(r.dtype(), DType::F16);
    assert_eq!(r.read().unwrap(), vec![1.0, 2.0, 3.0, 4.0, 5.0]);
    t.write_f16(&[f16::from_f32(-2.0); 5]).unwrap();
    assert_eq!(t.read().unwrap(), vec![-2.0; 5]);
    let z = Tensor::zeros_of(ctx, &[3], DType::F16).unwrap();
    assert_eq!(z.read().unwrap(), vec![0.0; 3]);
    // f32 API unchanged.
    let f = Tensor::from_slice(ctx, &[1.0, 2.0], &[2]).unwrap();
    assert_eq!(f.dtype(), DType::F32);
    assert_eq!(f.storage_bytes(), 8);
}

#[test]
fn f16_typed_errors() {
    let ctx = ctx();
    let f = Tensor::from_slice(ctx, &[1.0, 2.0], &[2]).unwrap();
    let e = f.read_f16().unwrap_err();
    assert!(matches!(
        e.kind(),
        ErrorKind::DTypeMismatch {
            expected: DType::F16,
            got: DType::F32,
            ..
        }
    ));
    let e = f.write_f16(&[f16::ONE; 2]).unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::DTypeMismatch { .. }));
    let h = Tensor::zeros_of(ctx, &[3], DType::F16).unwrap();
    let e = h.write_f16(&[f16::ONE; 2]).unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::ShapeMismatch { .. }));
    let e = Tensor::from_f16(ctx, &[f16::ONE; 3], &[2, 2]).unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::ShapeMismatch { .. }));
    assert!(DType::from_name("bf16").is_err());
    assert_eq!(DType::from_name("float16").unwrap(), DType::F16);
}

#[test]
fn f16_from_buffer_checks_size_per_dtype() {
    let ctx = ctx();
    let usage =
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
    let buf = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 8,
        usage,
        mapped_at_creation: false,
    });
    // 4 f16 values fit in 8 bytes, 4 f32 values do not.
    let t = Tensor::from_buffer_of(ctx, buf.clone(), &[4], DType::F16).unwrap();
    assert_eq!(t.dtype(), DType::F16);
    assert!(Tensor::from_buffer(ctx, buf.clone(), &[4]).is_err());
    assert!(Tensor::from_buffer_of(ctx, buf, &[5], DType::F16).is_err());
}

// ---- operations on f16 tensors, every algorithm

use common::Rng;
use wgconv::{
    cpu, Algorithm, Context, Conv2dParams, Conv2dProblem, ConvTranspose2dParams, GemmParams,
    GemmVariant, Operation, Padding, PaddingMode,
};

fn r16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| f16::from_f32(x).to_f32()).collect()
}

fn up(ctx: &Context, v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_f32(ctx, v, shape, DType::F16).unwrap()
}

/// `got` (f16 results) vs the reference rounded once to f16: exact for integer data, else
/// within one f16 ulp of the output plus the f32 accumulation bound.
fn close(label: &str, got: &Tensor, want: &[f32], scale: &[f32], len: usize, exact: bool) {
    assert_eq!(got.dtype(), DType::F16, "{label}");
    let g = got.read().unwrap();
    assert_eq!(g.len(), want.len(), "{label}");
    for i in 0..g.len() {
        let w16 = f16::from_f32(want[i]).to_f32();
        let ok = if exact {
            g[i].to_bits() == w16.to_bits()
        } else {
            let bound = w16.abs() * 2f32.powi(-11) * 1.01
                + 2.0 * (len as f32 + 2.0) * f32::EPSILON * scale[i]
                + 2f32.powi(-24);
            (g[i] - w16).abs() <= bound
        };
        assert!(ok, "{label}: index {i}: got {} want {w16}", g[i]);
    }
}

fn problems() -> Vec<(Conv2dParams, [usize; 4], [usize; 4])> {
    let p = Conv2dParams::default;
    vec![
        (
            p().with_padding(Padding::Symmetric([1, 1])),
            [2, 3, 9, 7],
            [4, 3, 3, 3],
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
            [2, 2, 3, 3],
        ),
        (
            p().with_groups(4).with_padding(Padding::Symmetric([1, 1])),
            [1, 4, 6, 6],
            [4, 1, 3, 3],
        ),
        (p(), [1, 8, 5, 5], [6, 8, 1, 1]),
    ]
}

fn ints(rng: &mut Rng, n: usize) -> Vec<f32> {
    rng.int_vec(n)
}

#[test]
fn f16_conv_ops_every_algorithm_integer_exact() {
    let ctx = ctx();
    let mut rng = Rng::new(16);
    for (params, xs, ws) in problems() {
        let p = Conv2dProblem::new(xs, ws, Some(ws[0]), &params).unwrap();
        let x = ints(&mut rng, p.x_shape().iter().product());
        let w = ints(&mut rng, p.w_shape().iter().product());
        let b = ints(&mut rng, ws[0]);
        let dy = ints(&mut rng, p.y_shape().iter().product());
        let (xt, wt, bt, dyt) = (
            up(ctx, &x, &xs),
            up(ctx, &w, &ws),
            up(ctx, &b, &[ws[0]]),
            up(ctx, &dy, &p.y_shape()),
        );
        let y_ref = cpu::conv2d_problem(&p, &x, &w, Some(&b));
        let pg = Conv2dProblem::new(xs, ws, None, &params).unwrap();
        let dx_ref = cpu::conv2d_backward_input(&pg, &dy, &w);
        let dw_ref = cpu::conv2d_backward_weight(&pg, &x, &dy);
        let db_ref = cpu::conv2d_backward_bias(&pg, &dy);
        for &a in std::iter::once(&Algorithm::Auto).chain(Algorithm::ALL) {
            let l = format!("{params:?} {}", a.name());
            if ctx.check_algorithm(Operation::Forward, a, &p).is_ok() {
                let y = ctx.conv2d_with(&xt, &wt, Some(&bt), &params, a).unwrap();
                close(&format!("y {l}"), &y, &y_ref, &[], 0, true);
            }
            if ctx.check_algorithm(Operation::InputGrad, a, &pg).is_ok() {
                let dx = ctx
                    .conv2d_backward_input(&dyt, &wt, xs, &params, a)
                    .unwrap();
                close(&format!("dx {l}"), &dx, &dx_ref, &[], 0, true);
            }
            if ctx.check_algorithm(Operation::WeightGrad, a, &pg).is_ok() {
                let dw = ctx
                    .conv2d_backward_weight(&xt, &dyt, ws, &params, a)
                    .unwrap();
                close(&format!("dw {l}"), &dw, &dw_ref, &[], 0, true);
                // Master weights: the same sums, stored in f32.
                let dw32 = ctx
                    .conv2d_backward_weight_as(&xt, &dyt, ws, &params, a, DType::F32)
                    .unwrap();
                assert_eq!(dw32.dtype(), DType::F32);
                assert_eq!(dw32.read().unwrap(), dw_ref, "dw f32 {l}");
            }
        }
        let db = ctx.conv2d_backward_bias(&dyt).unwrap();
        close("db", &db, &db_ref, &[], 0, true);
        let g = ctx
            .conv2d_backward(&xt, &wt, &dyt, true, &params, Algorithm::Auto)
            .unwrap();
        close("all dx", &g.dx, &dx_ref, &[], 0, true);
        close("all dw", &g.dw, &dw_ref, &[], 0, true);
        close("all db", g.db.as_ref().unwrap(), &db_ref, &[], 0, true);
    }
}

#[test]
fn f16_transposed_and_gemm_every_algorithm() {
    let ctx = ctx();
    let mut rng = Rng::new(17);
    let tparams = ConvTranspose2dParams {
        stride: [2, 2],
        padding: [1, 0],
        output_padding: [1, 0],
        dilation: [1, 2],
        groups: 2,
    };
    let (xs, ws) = ([2, 4, 5, 4], [4, 3, 3, 2]);
    let x = ints(&mut rng, xs.iter().product());
    let w = ints(&mut rng, ws.iter().product());
    let b = ints(&mut rng, 6);
    let (ytr, _) = cpu::conv_transpose2d(&x, xs, &w, ws, Some(&b), &tparams).unwrap();
    let tp = tparams.resolve(xs, ws, Some(6)).unwrap();
    let (xt, wt, bt) = (up(ctx, &x, &xs), up(ctx, &w, &ws), up(ctx, &b, &[6]));
    for &a in std::iter::once(&Algorithm::Auto).chain(Algorithm::ALL) {
        if ctx
            .check_algorithm(Operation::Transposed, a, &tp.conv())
            .is_ok()
        {
            let y = ctx
                .conv_transpose2d(&xt, &wt, Some(&bt), &tparams, a)
                .unwrap();
            close(&format!("transposed {}", a.name()), &y, &ytr, &[], 0, true);
        }
    }
    // GEMM: integer data exact, random data within the bound; odd sizes, transposes, batch.
    for (m, k, n, ta, tb) in [
        (5, 7, 3, false, false),
        (33, 17, 65, true, false),
        (8, 64, 9, false, true),
    ] {
        let gp = GemmParams::default()
            .with_transpose_a(ta)
            .with_transpose_b(tb);
        let (ash, bsh) = (
            if ta { vec![k, m] } else { vec![m, k] },
            if tb { vec![n, k] } else { vec![k, n] },
        );
        for integer in [true, false] {
            let (a, bm) = if integer {
                (ints(&mut rng, m * k), ints(&mut rng, k * n))
            } else {
                (r16(&rng.vec(m * k)), r16(&rng.vec(k * n)))
            };
            let (want, _) = cpu::gemm(&a, &ash, &bm, &bsh, &gp).unwrap();
            let abs: Vec<f32> = a.iter().map(|v| v.abs()).collect();
            let bbs: Vec<f32> = bm.iter().map(|v| v.abs()).collect();
            let (scale, _) = cpu::gemm(&abs, &ash, &bbs, &bsh, &gp).unwrap();
            let (at, btt) = (up(ctx, &a, &ash), up(ctx, &bm, &bsh));
            for &v in std::iter::once(&GemmVariant::Auto).chain(GemmVariant::ALL) {
                if ctx.check_gemm_variant(v).is_err() {
                    continue;
                }
                let c = ctx.gemm(&at, &btt, &gp.with_variant(v)).unwrap();
                close(
                    &format!("gemm {m}x{k}x{n} {}", v.name()),
                    &c,
                    &want,
                    &scale,
                    k,
                    integer,
                );
            }
        }
    }
}

#[test]
fn f16_mixed_dtypes_are_refused() {
    let ctx = ctx();
    let x = up(ctx, &[1.0; 16], &[1, 1, 4, 4]);
    let w = Tensor::from_slice(ctx, &[1.0; 9], &[1, 1, 3, 3]).unwrap();
    let e = ctx
        .conv2d(&x, &w, None, &Conv2dParams::default())
        .unwrap_err();
    assert!(matches!(
        e.kind(),
        ErrorKind::DTypeMismatch {
            what: "w",
            expected: DType::F16,
            got: DType::F32
        }
    ));
    // An f16 dw of f32 inputs is not a supported mix.
    let x32 = Tensor::from_slice(ctx, &[1.0; 16], &[1, 1, 4, 4]).unwrap();
    let dy32 = Tensor::from_slice(ctx, &[1.0; 4], &[1, 1, 2, 2]).unwrap();
    let e = ctx
        .conv2d_backward_weight_as(
            &x32,
            &dy32,
            [1, 1, 3, 3],
            &Conv2dParams::default(),
            Algorithm::Auto,
            DType::F16,
        )
        .unwrap_err();
    assert!(matches!(
        e.kind(),
        ErrorKind::DTypeMismatch { what: "dw", .. }
    ));
    let a = up(ctx, &[1.0; 4], &[2, 2]);
    let b = Tensor::from_slice(ctx, &[1.0; 4], &[2, 2]).unwrap();
    assert!(matches!(
        ctx.gemm(&a, &b, &GemmParams::default()).unwrap_err().kind(),
        ErrorKind::DTypeMismatch { .. }
    ));
}

#[test]
fn f16_products_overflowing_f16_stay_finite_with_f32_accumulation() {
    // 300 * 300 = 90000 > 65504 overflows f16, not f32; the sum 90000 - 89999.x... is
    // representable: f32 accumulation must give it, not inf/NaN/0.
    let ctx = ctx();
    let x = up(ctx, &[300.0, 300.0], &[1, 2, 1, 1]);
    let w = up(ctx, &[300.0, -299.0], &[1, 2, 1, 1]);
    let y = ctx.conv2d(&x, &w, None, &Conv2dParams::default()).unwrap();
    assert_eq!(y.read().unwrap(), vec![300.0]);
    let a = up(ctx, &[256.0, 256.0, 256.0], &[1, 3]);
    let b = up(ctx, &[256.0, -256.0, 1.0], &[3, 1]);
    let c = ctx.gemm(&a, &b, &GemmParams::default()).unwrap();
    assert_eq!(c.read().unwrap(), vec![256.0]);
    // A result beyond the f16 range is +inf (as PyTorch rounds), never a silent zero.
    let w2 = up(ctx, &[300.0, 300.0], &[1, 2, 1, 1]);
    let y2 = ctx.conv2d(&x, &w2, None, &Conv2dParams::default()).unwrap();
    assert_eq!(y2.read().unwrap(), vec![f32::INFINITY]);
}

#[test]
fn f16_random_data_within_the_documented_bound() {
    let ctx = ctx();
    let mut rng = Rng::new(18);
    for (params, xs, ws) in problems() {
        let p = Conv2dProblem::new(xs, ws, Some(ws[0]), &params).unwrap();
        let h = |v: Vec<f32>| -> Vec<f16> { v.into_iter().map(f16::from_f32).collect() };
        let x = h(rng.vec(xs.iter().product()));
        let w = h(rng.vec(ws.iter().product()));
        let b = h(rng.vec(ws[0]));
        let (want, _) = cpu::conv2d_f16(&x, xs, &w, ws, Some(&b), &params).unwrap();
        let wide = |v: &[f16]| -> Vec<f32> { v.iter().map(|&a| f32::from(a)).collect() };
        let scale = cpu::conv2d_abs_scale(&p, &wide(&x), &wide(&w), Some(&wide(&b)));
        let len = ws[1] * ws[2] * ws[3] + 1;
        let (xt, wt, bt) = (
            Tensor::from_f16(ctx, &x, &xs).unwrap(),
            Tensor::from_f16(ctx, &w, &ws).unwrap(),
            Tensor::from_f16(ctx, &b, &[ws[0]]).unwrap(),
        );
        for &a in std::iter::once(&Algorithm::Auto).chain(Algorithm::ALL) {
            if ctx.check_algorithm(Operation::Forward, a, &p).is_err() {
                continue;
            }
            let got = ctx
                .conv2d_with(&xt, &wt, Some(&bt), &params, a)
                .unwrap()
                .read_f16()
                .unwrap();
            for i in 0..got.len() {
                let (g, e) = (f64::from(got[i]), f64::from(want[i]));
                let bound = cpu::f16_tolerance(e, scale[i] as f64, len);
                assert!(
                    (g - e).abs() <= bound,
                    "{params:?} {}: index {i}: got {g} want {e} bound {bound}",
                    a.name()
                );
            }
        }
    }
}

#[test]
fn f16_cpu_reference_rounds_once() {
    // 2049 = 2048 + 1 is a tie in f16 (spacing 2 above 2048): f64 sum 2049 rounds to even
    // 2048; 2049.5 must round up to 2050 (rounding through f32 first would not change it,
    // but the sum is taken exactly, not in f16 steps: 1024 + 1024 + 1 + 0.5).
    let p = Conv2dParams::default();
    let x = [1024.0f32, 1024.0, 1.0, 0.5].map(f16::from_f32);
    let w = [1.0f32; 4].map(f16::from_f32);
    let (y, _) = cpu::conv2d_f16(&x, [1, 4, 1, 1], &w, [1, 4, 1, 1], None, &p).unwrap();
    assert_eq!(y[0].to_f32(), 2050.0);
    let (y, _) = cpu::conv2d_f16(&x[..3], [1, 3, 1, 1], &w[..3], [1, 3, 1, 1], None, &p).unwrap();
    assert_eq!(y[0].to_f32(), 2048.0);
}

/// A context whose storage bindings are capped at `binding` bytes (see `tests/bands.rs`).
fn small_ctx(binding: u64) -> Context {
    Context::with_options_blocking(wgconv::ContextOptions {
        limits: Some(wgconv::LimitsOverride {
            max_storage_buffer_binding_size: Some(binding),
            ..Default::default()
        }),
        ..Default::default()
    })
    .expect("GPU test needs a WebGPU adapter")
}

#[test]
fn f16_tensors_beyond_one_binding_convert_in_windows_and_run_in_bands() {
    // 4 KiB bindings: the f16 tensors (6.4 KB) and their f32 copies (12.8 KB) span several
    // bindings, so the conversions run in windows and every algorithm in bands.
    let ctx = &small_ctx(4096);
    let mut rng = Rng::new(19);
    let params = Conv2dParams::default()
        .with_padding(Padding::Symmetric([1, 1]))
        .with_padding_mode(PaddingMode::Reflect);
    let (xs, ws) = ([2, 4, 20, 20], [4, 4, 3, 3]);
    let p = Conv2dProblem::new(xs, ws, None, &params).unwrap();
    let x = ints(&mut rng, xs.iter().product());
    let w = ints(&mut rng, ws.iter().product());
    let dy = ints(&mut rng, p.y_shape().iter().product());
    let y_ref = cpu::conv2d_problem(&p, &x, &w, None);
    let dx_ref = cpu::conv2d_backward_input(&p, &dy, &w);
    let dw_ref = cpu::conv2d_backward_weight(&p, &x, &dy);
    let (xt, wt, dyt) = (
        up(ctx, &x, &xs),
        up(ctx, &w, &ws),
        up(ctx, &dy, &p.y_shape()),
    );
    for op in [
        Operation::Forward,
        Operation::InputGrad,
        Operation::WeightGrad,
    ] {
        assert_ne!(
            wgconv::dev::band_plan(ctx, op, &p),
            "whole",
            "{op:?} is not banded"
        );
    }
    let mut ran = 0;
    for &a in std::iter::once(&Algorithm::Auto).chain(Algorithm::ALL) {
        let l = a.name();
        if ctx.check_algorithm(Operation::Forward, a, &p).is_ok() {
            let y = ctx.conv2d_with(&xt, &wt, None, &params, a).unwrap();
            close(&format!("banded y {l}"), &y, &y_ref, &[], 0, true);
            ran += 1;
        }
        if ctx.check_algorithm(Operation::InputGrad, a, &p).is_ok() {
            let dx = ctx
                .conv2d_backward_input(&dyt, &wt, xs, &params, a)
                .unwrap();
            close(&format!("banded dx {l}"), &dx, &dx_ref, &[], 0, true);
        }
        if ctx.check_algorithm(Operation::WeightGrad, a, &p).is_ok() {
            let dw = ctx
                .conv2d_backward_weight(&xt, &dyt, ws, &params, a)
                .unwrap();
            close(&format!("banded dw {l}"), &dw, &dw_ref, &[], 0, true);
        }
    }
    assert!(ran >= 2, "too few algorithms ran the banded problem");
    // A 3-word-odd f16 GEMM operand beyond one binding.
    let (m, k, n) = (41, 33, 47);
    let a = ints(&mut rng, m * k);
    let b = ints(&mut rng, k * n);
    let (want, _) = cpu::gemm(&a, &[m, k], &b, &[k, n], &GemmParams::default()).unwrap();
    let c = ctx
        .gemm(
            &up(ctx, &a, &[m, k]),
            &up(ctx, &b, &[k, n]),
            &GemmParams::default(),
        )
        .unwrap();
    close("banded gemm", &c, &want, &[], 0, true);
}

#[test]
fn f16_gemm_accumulate_reads_the_f16_c() {
    let ctx = ctx();
    let a = up(ctx, &[1.0, 2.0, 3.0, 4.0], &[2, 2]);
    let b = up(ctx, &[1.0, 0.0, 0.0, 1.0], &[2, 2]);
    let c = up(ctx, &[0.5, 0.25, -1.0, 2048.0], &[2, 2]);
    let bias = up(ctx, &[10.0, 20.0], &[2]);
    let mut enc = ctx
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
    ctx.encode_gemm(
        &mut enc,
        &a,
        &b,
        Some(&bias),
        &c,
        true,
        &GemmParams::default(),
    )
    .unwrap();
    ctx.submit(enc).unwrap();
    // 2048 + 4 + 20 = 2072 (exact in f16: spacing 2 above 2048).
    assert_eq!(c.read().unwrap(), vec![11.5, 22.25, 12.0, 2072.0]);
}

#[test]
fn f16_conversions_on_the_gpu_match_half_for_every_f16_value() {
    // y = x * w with C = 1, 1x1: one exact f32 product per output, rounded once by
    // `f16_pack`. x runs through all 65536 f16 bit patterns (subnormals, ±0, ±inf, NaN), so
    // `f16_unpack` is checked on every value and `f16_pack` on ties (x * 0.5 of odd
    // subnormals), overflow (x * 3 beyond 65520), underflow and general rounding.
    // The conversions run four words at a time (`f16_unpack4` / `f16_pack4`, or on CPU
    // adapters `f16_unpack_image` / `f16_pack_image` from image copies) and the words short
    // of a group of four, and an odd last element, one at a time: the second shape (65533
    // elements) takes both.
    let ctx = ctx();
    let all: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
    let cases = [
        (
            [1usize, 1, 256, 256],
            &[1.0f32, 0.5, 3.0, -1.5, 2f32.powi(-10), 1000.0, 0.1, -0.0][..],
        ),
        ([1, 1, 1, 65533], &[0.5, 3.0][..]),
    ];
    for (shape, ws) in cases {
        let x = &all[..shape.iter().product::<usize>()];
        let xt = Tensor::from_f16(ctx, x, &shape).unwrap();
        for &w in ws {
            let w16 = f16::from_f32(w);
            let wt = Tensor::from_f16(ctx, &[w16], &[1, 1, 1, 1]).unwrap();
            // Depthwise (C = 1 is one channel per group) runs the f16 image kernel:
            // rgba16float texel loads and `f32_to_f16_4` stores instead of the conversions.
            for &a in &[Algorithm::Auto, Algorithm::Direct, Algorithm::Depthwise] {
                let y = ctx
                    .conv2d_with(&xt, &wt, None, &Conv2dParams::default(), a)
                    .unwrap()
                    .read_f16()
                    .unwrap();
                for (i, (&got, &xv)) in y.iter().zip(x).enumerate() {
                    // The kernels' sums start at +0 (so -0 * 1 gives +0, as in the f32 path).
                    let want = f16::from_f32(0.0 + f32::from(xv) * f32::from(w16));
                    // The sign of an exact zero sum is not specified (the depthwise kernel's
                    // compiler folds its first FMA into a product: -0 * 1 gives -0 there).
                    let ok = if want.is_nan() {
                        got.is_nan()
                    } else if want == f16::ZERO && a == Algorithm::Depthwise {
                        got == want
                    } else {
                        got.to_bits() == want.to_bits()
                    };
                    assert!(
                    ok,
                    "w = {w16}, {}: x = {xv} (bits {i:#06x}): got {got} ({:#06x}) want {want} ({:#06x})",
                    a.name(),
                    got.to_bits(),
                    want.to_bits()
                );
                }
            }
        }
    }
}

/// f16 results `got` against the f64 reference `want` rounded once to f16: bit for bit
/// (`exact`, integer data) or within the documented bound (`cpu::f16_tolerance` of each
/// output's scale and the reduction length `len`).
fn check_f16(label: &str, got: &[f32], want: &[f32], scale: &[f32], len: usize, exact: bool) {
    assert_eq!(got.len(), want.len(), "{label}");
    for (i, (&g, &e)) in got.iter().zip(want).enumerate() {
        let e16 = f64::from(f16::from_f32(e));
        let bound = if exact {
            0.0
        } else {
            cpu::f16_tolerance(e16, scale[i] as f64, len)
        };
        assert!(
            (f64::from(g) - e16).abs() <= bound,
            "{label}: [{i}] = {g}, want {e16} (bound {bound})"
        );
    }
}

/// `n` test values: small integers (exact sums) or random values representable in f16.
fn data(rng: &mut Rng, integer: bool, n: usize) -> Vec<f32> {
    if integer {
        rng.int_vec(n)
    } else {
        r16(&rng.vec(n))
    }
}

/// x, w, b of `pr` (see [`data`]), the reference y and each output's scale.
type ForwardCase = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>);

fn forward_case(rng: &mut Rng, pr: &Conv2dProblem, integer: bool) -> ForwardCase {
    let x = data(rng, integer, pr.x_shape().iter().product());
    let w = data(rng, integer, pr.w_shape().iter().product());
    let b = data(rng, integer, pr.k());
    let y_ref = cpu::conv2d_problem(pr, &x, &w, Some(&b));
    let scale = cpu::conv2d_abs_scale(pr, &x, &w, Some(&b));
    (x, w, b, y_ref, scale)
}

/// Depthwise layers on f16 tensors read x and write y as f16 in the kernel itself
/// (`conv2d_depthwise_image_f16`): no f32 copy of y is rounded (`f16_pack*` never compiled
/// on a fresh context), and the results are the CPU reference rounded once, bit for bit on
/// integer data, within the f16 bound on random data. Channel multipliers, row strides
/// (one output row per invocation), 5x5 kernels, batches and a fused relu.
#[test]
fn f16_depthwise_reads_and_writes_f16_in_the_kernel() {
    let _ = ctx();
    let p = Conv2dParams::default().with_padding(Padding::Symmetric([1, 1]));
    let cases = [
        ([2, 8, 12, 16], [8, 1, 3, 3], p.with_groups(8)),
        (
            [1, 4, 9, 8],
            [8, 1, 3, 3],
            p.with_groups(4).with_stride([2, 1]),
        ),
        (
            [1, 6, 7, 12],
            [6, 1, 5, 5],
            Conv2dParams::default()
                .with_padding(Padding::Symmetric([2, 2]))
                .with_groups(6),
        ),
        ([3, 32, 20, 24], [32, 1, 3, 3], p.with_groups(32)),
    ];
    let mut rng = Rng::new(21);
    for (xs, ws, params) in cases {
        let pr = Conv2dProblem::new(xs, ws, Some(ws[0]), &params).unwrap();
        for integer in [true, false] {
            let ctx = &Context::new_blocking().unwrap();
            let (x, w, b, y_ref, scale) = forward_case(&mut rng, &pr, integer);
            let (xt, wt, bt) = (up(ctx, &x, &xs), up(ctx, &w, &ws), up(ctx, &b, &[ws[0]]));
            for a in [Algorithm::Auto, Algorithm::Depthwise] {
                let y = ctx.conv2d_with(&xt, &wt, Some(&bt), &params, a).unwrap();
                let l = format!("{xs:?} {a:?} y integer {integer}");
                let got = y.read().unwrap();
                check_f16(&l, &got, &y_ref, &scale, ws[2] * ws[3] + 1, integer);
            }
            let k = wgconv::dev::compiled_kernels(ctx);
            assert!(k.contains(&"conv2d_depthwise_image_f16"), "{xs:?}: {k:?}");
            assert!(
                !k.iter().any(|n| n.starts_with("f16_pack")),
                "{xs:?}: y went through an f32 copy: {k:?}"
            );
            // The input gradient of a stride-1 depthwise layer without channel multiplier
            // runs the same f16 kernel on dy (alone and in conv2d_backward): dx is never
            // rounded from an f32 copy either.
            let pg = Conv2dProblem::new(xs, ws, None, &params).unwrap();
            if ctx
                .check_algorithm(Operation::InputGrad, Algorithm::Depthwise, &pg)
                .is_err()
            {
                continue;
            }
            let ctx = &Context::new_blocking().unwrap();
            let dy = data(&mut rng, integer, pg.y_shape().iter().product());
            let dx_ref = cpu::conv2d_backward_input(&pg, &dy, &w);
            let (dyt, wt) = (up(ctx, &dy, &pg.y_shape()), up(ctx, &w, &ws));
            let xt = up(ctx, &x, &xs);
            for a in [Algorithm::Auto, Algorithm::Depthwise] {
                let dx = ctx
                    .conv2d_backward_input(&dyt, &wt, xs, &params, a)
                    .unwrap();
                let all = ctx
                    .conv2d_backward(&xt, &wt, &dyt, true, &params, a)
                    .unwrap();
                // dw and db from f16 x and dy read by the kernels themselves (alone and in
                // conv2d_backward); integer data: exact.
                let dw = ctx
                    .conv2d_backward_weight(&xt, &dyt, ws, &params, a)
                    .unwrap();
                let db = ctx.conv2d_backward_bias(&dyt).unwrap();
                if integer {
                    let dw_ref = cpu::conv2d_backward_weight(&pg, &x, &dy);
                    let db_ref = cpu::conv2d_backward_bias(&pg, &dy);
                    close(&format!("{xs:?} {a:?} dw"), &dw, &dw_ref, &[], 0, true);
                    close(
                        &format!("{xs:?} {a:?} all dw"),
                        &all.dw,
                        &dw_ref,
                        &[],
                        0,
                        true,
                    );
                    close(&format!("{xs:?} {a:?} db"), &db, &db_ref, &[], 0, true);
                    let all_db = all.db.as_ref().unwrap();
                    close(
                        &format!("{xs:?} {a:?} all db"),
                        all_db,
                        &db_ref,
                        &[],
                        0,
                        true,
                    );
                }
                for (what, t) in [("dx", &dx), ("backward dx", &all.dx)] {
                    let l = format!("{xs:?} {a:?} {what} integer {integer}");
                    let abs = |v: &[f32]| -> Vec<f32> { v.iter().map(|a| a.abs()).collect() };
                    let scale = cpu::conv2d_backward_input(&pg, &abs(&dy), &abs(&w));
                    let got = t.read().unwrap();
                    check_f16(&l, &got, &dx_ref, &scale, ws[2] * ws[3], integer);
                }
            }
            let k = wgconv::dev::compiled_kernels(ctx);
            for name in [
                "conv2d_depthwise_image_f16",
                "conv2d_wgrad_depthwise_image_f16",
                "reduce_rows_image_f16",
            ] {
                assert!(k.contains(&name), "{xs:?} gradients: {name} not in {k:?}");
            }
        }
    }
}

/// The implicit GEMM reads f16 x itself: its input image is filled from an `rgba16float`
/// copy of x (`pad_image_flat_f16` / its stand-in `pad_image_texel_f16`, and
/// `pad_image_nhwc_f16` for channels-last x in any padding mode), not from an f32 copy.
/// Results within the documented f16 bound, integer data bit for bit.
#[test]
fn f16_implicit_gemm_reads_f16_x_in_its_input_fill() {
    if !implicit_gemm_runs(Operation::Forward, Conv2dParams::default(), 3) {
        // Adapters without the implicit GEMM (GL, GPUs) refuse it; the f16 path is theirs.
        return;
    }
    let p = Conv2dParams::default().with_padding(Padding::Symmetric([1, 1]));
    let cases = [
        ([2, 16, 9, 12], [24, 16, 3, 3], p, false, "pad_image_"),
        ([1, 12, 10, 8], [8, 12, 3, 3], p, false, "pad_image_"),
        (
            [2, 16, 7, 9],
            [16, 8, 3, 3],
            p.with_groups(2).with_padding_mode(PaddingMode::Reflect),
            true,
            "pad_image_nhwc_f16",
        ),
        // Strided 1x1 (sampled pixels) and NCHW reflect: f16 words unpacked from x's buffer;
        // odd element counts (the last word half used).
        (
            [1, 17, 9, 7],
            [12, 17, 1, 1],
            Conv2dParams::default().with_stride([2, 2]),
            false,
            "pad_image_f16",
        ),
        (
            [1, 9, 7, 5],
            [8, 9, 3, 3],
            p.with_padding_mode(PaddingMode::Reflect),
            false,
            "pad_image_f16",
        ),
    ];
    let mut rng = Rng::new(23);
    for (xs, ws, params, cl, kernel) in cases {
        let pr = Conv2dProblem::new(xs, ws, Some(ws[0]), &params).unwrap();
        for integer in [true, false] {
            let ctx = &Context::new_blocking().unwrap();
            let (x, w, b, y_ref, scale) = forward_case(&mut rng, &pr, integer);
            let fmt = if cl {
                wgconv::MemoryFormat::ChannelsLast
            } else {
                wgconv::MemoryFormat::Contiguous
            };
            let xd = wgconv::MemoryFormat::Contiguous
                .convert(&x, xs, fmt)
                .unwrap();
            let xt = up(ctx, &xd, &xs).with_format(fmt).unwrap();
            let (wt, bt) = (up(ctx, &w, &ws), up(ctx, &b, &[ws[0]]));
            let y = ctx
                .conv2d_with(&xt, &wt, Some(&bt), &params, Algorithm::ImplicitGemm)
                .unwrap();
            let got = fmt
                .convert(
                    &y.read().unwrap(),
                    pr.y_shape(),
                    wgconv::MemoryFormat::Contiguous,
                )
                .unwrap();
            let len = ws[1] * ws[2] * ws[3] + 1;
            check_f16(
                &format!("{xs:?} integer {integer}"),
                &got,
                &y_ref,
                &scale,
                len,
                integer,
            );
            let k = wgconv::dev::compiled_kernels(ctx);
            assert!(
                k.iter()
                    .any(|n| n.starts_with(kernel) && n.ends_with("_f16")),
                "{xs:?}: {k:?}"
            );
        }
    }
}

#[test]
fn f16_operand_whose_f32_copy_exceeds_max_buffer_size_is_refused() {
    // 64 KiB buffers: a 40 000-element f16 tensor (80 KB) cannot even be created, a 20 000
    // one (40 KB) can, but its f32 copy (80 KB) cannot: a typed ExceedsLimit, no panic.
    let ctx = &Context::with_options_blocking(wgconv::ContextOptions {
        limits: Some(wgconv::LimitsOverride {
            max_buffer_size: Some(64 << 10),
            ..Default::default()
        }),
        ..Default::default()
    })
    .expect("GPU test needs a WebGPU adapter");
    let e = Tensor::zeros_of(ctx, &[40_000], DType::F16).unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::ExceedsLimit { .. }), "{e}");
    let x = Tensor::zeros_of(ctx, &[1, 1, 100, 200], DType::F16).unwrap();
    let w = Tensor::zeros_of(ctx, &[1, 1, 1, 1], DType::F16).unwrap();
    let e = ctx
        .conv2d(&x, &w, None, &Conv2dParams::default())
        .unwrap_err();
    assert!(
        matches!(
            e.kind(),
            ErrorKind::ExceedsLimit {
                limit: "max_buffer_size",
                ..
            }
        ),
        "{e}"
    );
}

/// f16 weights and biases of the algorithms that read f32 are converted once into an f32
/// copy the packed-weight cache keeps (counted in `weight_cache_bytes`); results follow
/// writes to them (a new version, a new copy) and the gradients use the same copies.
#[test]
fn f16_parameters_are_converted_once_and_follow_writes() {
    let p1 = Conv2dParams::default().with_padding(Padding::Symmetric([1, 1]));
    let mut rng = Rng::new(29);
    for (xs, ws, params, a) in [
        ([1, 8, 9, 10], [12, 8, 3, 3], p1, Algorithm::Direct),
        ([1, 8, 9, 10], [12, 8, 3, 3], p1, Algorithm::Im2colGemm),
        (
            [1, 8, 9, 12],
            [8, 1, 3, 3],
            p1.with_groups(8),
            Algorithm::Depthwise,
        ),
    ] {
        // A context each: the cache's bytes are this case's alone.
        let ctx = &Context::new_blocking().expect("GPU test needs a WebGPU adapter");
        if ctx
            .check_algorithm(
                Operation::Forward,
                a,
                &params.resolve(xs, ws, Some(ws[0])).unwrap(),
            )
            .is_err()
        {
            continue;
        }
        let p = Conv2dProblem::new(xs, ws, Some(ws[0]), &params).unwrap();
        let x = ints(&mut rng, xs.iter().product());
        let xt = up(ctx, &x, &xs);
        let (mut w, mut b) = (ints(&mut rng, ws.iter().product()), ints(&mut rng, ws[0]));
        let (wt, bt) = (up(ctx, &w, &ws), up(ctx, &b, &[ws[0]]));
        let before = ctx.weight_cache_bytes();
        for round in 0..3 {
            let want = cpu::conv2d_problem(&p, &x, &w, Some(&b));
            let y = ctx.conv2d_with(&xt, &wt, Some(&bt), &params, a).unwrap();
            close(&format!("{a:?} round {round}"), &y, &want, &[], 0, true);
            assert!(
                ctx.weight_cache_bytes() > before,
                "{a:?}: f16 parameters not cached"
            );
            let y = ctx.conv2d_with(&xt, &wt, Some(&bt), &params, a).unwrap();
            close(
                &format!("{a:?} round {round}, cached"),
                &y,
                &want,
                &[],
                0,
                true,
            );
            let dy = ints(&mut rng, p.y_shape().iter().product());
            let pg = Conv2dProblem::new(xs, ws, None, &params).unwrap();
            let dx_want = cpu::conv2d_backward_input(&pg, &dy, &w);
            let dyt = up(ctx, &dy, &p.y_shape());
            let dx = ctx
                .conv2d_backward_input(&dyt, &wt, xs, &params, Algorithm::Auto)
                .unwrap();
            close(
                &format!("{a:?} round {round} dx"),
                &dx,
                &dx_want,
                &[],
                0,
                true,
            );
            w = ints(&mut rng, ws.iter().product());
            b = ints(&mut rng, ws[0]);
            wt.write(&w).unwrap();
            bt.write(&b).unwrap();
        }
    }
}

#[test]
fn f16_weights_are_packed_once_and_follow_writes() {
    // The implicit GEMM caches packed weights keyed by the f16 tensor; the pack runs in a
    // submission of its own, which converts the f16 weights itself. Results follow writes,
    // also when the call is recorded into a caller's encoder submitted after the pack.
    let ctx = &Context::new_blocking().expect("GPU test needs a WebGPU adapter");
    let params = Conv2dParams::default().with_padding(Padding::Symmetric([1, 1]));
    let (xs, ws) = ([1, 16, 9, 10], [24, 16, 3, 3]);
    let p = Conv2dProblem::new(xs, ws, None, &params).unwrap();
    let mut rng = Rng::new(21);
    let x = ints(&mut rng, xs.iter().product());
    let xt = up(ctx, &x, &xs);
    let packs = ctx.can_run_forward(Algorithm::ImplicitGemm, &p);
    let a = if packs {
        Algorithm::ImplicitGemm
    } else {
        Algorithm::Auto
    };
    let mut w = ints(&mut rng, ws.iter().product());
    let wt = up(ctx, &w, &ws);
    for round in 0..3 {
        let want = cpu::conv2d_problem(&p, &x, &w, None);
        let y = ctx.conv2d_with(&xt, &wt, None, &params, a).unwrap();
        close(&format!("round {round}"), &y, &want, &[], 0, true);
        if packs {
            assert!(ctx.weight_cache_bytes() > 0, "f16 weights not cached");
        }
        // Cached: the same result again, recorded into a caller's encoder.
        let y2 = Tensor::full_of(ctx, &p.y_shape(), f32::NAN, DType::F16).unwrap();
        let mut enc = ctx
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
        ctx.encode_conv2d(&mut enc, &xt, &wt, None, &params, a, &y2)
            .unwrap();
        ctx.submit(enc).unwrap();
        close(&format!("round {round}, encoded"), &y2, &want, &[], 0, true);
        w = ints(&mut rng, ws.iter().product());
        wt.write(&w).unwrap();
    }
}

/// The implicit GEMM's weight gradient reads f16 x in its input fill (`pad_image_f16` from
/// the words, or the image-copy kernels), dy as f32: results within the f16 bound (bit-exact
/// on integers), alone and in `conv2d_backward`.
#[test]
fn f16_implicit_gemm_weight_gradient_reads_f16_x() {
    if !implicit_gemm_runs(Operation::WeightGrad, Conv2dParams::default(), 3) {
        // Adapters without the implicit GEMM (GL, GPUs) refuse it.
        return;
    }
    let p = Conv2dParams::default().with_padding(Padding::Symmetric([1, 1]));
    let cases = [
        (
            [1, 17, 9, 7],
            [12, 17, 1, 1],
            Conv2dParams::default().with_stride([2, 2]),
            "pad_image_f16",
        ),
        ([2, 16, 9, 12], [24, 16, 3, 3], p, "pad_image_"),
        (
            [1, 9, 7, 5],
            [8, 9, 3, 3],
            p.with_padding_mode(PaddingMode::Reflect),
            "pad_image_f16",
        ),
    ];
    let mut rng = Rng::new(29);
    for (xs, ws, params, kernel) in cases {
        let pr = Conv2dProblem::new(xs, ws, None, &params).unwrap();
        let ys = pr.y_shape();
        for integer in [true, false] {
            let ctx = &Context::new_blocking().unwrap();
            let x = data(&mut rng, integer, xs.iter().product());
            let dy = data(&mut rng, integer, ys.iter().product());
            let want = cpu::conv2d_backward_weight(&pr, &x, &dy);
            let absv = |v: &[f32]| v.iter().map(|a| a.abs()).collect::<Vec<_>>();
            let scale = cpu::conv2d_backward_weight(&pr, &absv(&x), &absv(&dy));
            let len = pr.n() * pr.oh() * pr.ow();
            let (xt, dyt) = (up(ctx, &x, &xs), up(ctx, &dy, &ys));
            let dw = ctx
                .conv2d_backward_weight(&xt, &dyt, ws, &params, Algorithm::ImplicitGemm)
                .unwrap();
            let label = format!("dw {xs:?} {ws:?} integer {integer}");
            check_f16(&label, &dw.read().unwrap(), &want, &scale, len, integer);
            let wt = up(ctx, &data(&mut rng, integer, ws.iter().product()), &ws);
            let g = ctx
                .conv2d_backward(&xt, &wt, &dyt, false, &params, Algorithm::ImplicitGemm)
                .unwrap();
            check_f16(
                &format!("all {label}"),
                &g.dw.read().unwrap(),
                &want,
                &scale,
                len,
                integer,
            );
            let k = wgconv::dev::compiled_kernels(ctx);
            assert!(
                k.iter()
                    .any(|n| n.starts_with(kernel) && n.ends_with("_f16")),
                "{xs:?}: {k:?}"
            );
        }
    }
}

/// f16 results `got` bit for bit the f32 results of the same algorithm rounded once
/// (`want`), and within the f16 bound of the f64 reference (`reference`: values, scales,
/// reduction length).
fn rounded_once(label: &str, got: &[f32], want: &[f32], reference: (&[f32], &[f32], usize)) {
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(got), bits(want), "{label}");
    let (want_ref, scale, len) = reference;
    check_f16(label, got, want_ref, scale, len, false);
}

/// Does this adapter run the implicit GEMM for `op` of an 8-channel layer with `params` and
/// an `rs` x `rs` kernel? GL and GPUs refuse it (typed); tests of its f16 paths end there.
fn implicit_gemm_runs(op: Operation, params: Conv2dParams, rs: usize) -> bool {
    let probe = params.resolve([1, 8, 8, 8], [8, 8, rs, rs], None).unwrap();
    ctx()
        .check_algorithm(op, Algorithm::ImplicitGemm, &probe)
        .is_ok()
}

/// Random f16-representable x, dy and w of problem `pr`.
fn grad_data(rng: &mut Rng, pr: &Conv2dProblem) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let n = |s: [usize; 4]| s.iter().product();
    (
        data(rng, false, n(pr.x_shape())),
        data(rng, false, n(pr.y_shape())),
        data(rng, false, n(pr.w_shape())),
    )
}

/// Has `ctx` compiled a kernel whose name starts with `name`?
fn compiled(ctx: &Context, name: &str) -> bool {
    let k = wgconv::dev::compiled_kernels(ctx);
    k.iter().any(|n| n.starts_with(name))
}

/// 1x1 weight gradients with a multiple of 8 channels per group (shape e of the bench:
/// strided, sampled) write the f16 dw in the implicit GEMM's store
/// (`conv2d_wgrad_implicit_v4h`, no `f16_pack*` pass): bit for bit the f32 sums of the
/// same algorithm on the same values rounded once (round to nearest even), alone and
/// through `conv2d_backward`. A batch split into several launches (small scratch budget)
/// keeps the f32 sums and the rounding pass instead.
#[test]
fn f16_implicit_gemm_weight_gradient_writes_f16_dw() {
    if !implicit_gemm_runs(Operation::WeightGrad, Conv2dParams::default(), 1) {
        // Adapters without the implicit GEMM (GL, GPUs) refuse it.
        return;
    }
    let s2 = Conv2dParams::default().with_stride([2, 2]);
    let cases = [
        ([1, 16, 9, 7], [24, 16, 1, 1], s2, None),
        ([2, 8, 6, 5], [8, 8, 1, 1], Conv2dParams::default(), None),
        ([1, 32, 5, 6], [16, 16, 1, 1], s2.with_groups(2), None),
        // Several images per launch would not fit: chunks accumulate in f32.
        ([6, 64, 24, 24], [8, 64, 1, 1], s2, Some(100 * 1024)),
    ];
    let mut rng = Rng::new(31);
    for (xs, ws, params, budget) in cases {
        let pr = Conv2dProblem::new(xs, ws, None, &params).unwrap();
        let ys = pr.y_shape();
        let ctx = &Context::with_options_blocking(wgconv::ContextOptions {
            scratch_budget: budget,
            ..Default::default()
        })
        .unwrap();
        let (x, dy, w) = grad_data(&mut rng, &pr);
        let label = format!("{xs:?} {ws:?}");
        // The f32 run on the same values, rounded once.
        let f32_dw = ctx
            .conv2d_backward_weight(
                &Tensor::from_slice(ctx, &x, &xs).unwrap(),
                &Tensor::from_slice(ctx, &dy, &ys).unwrap(),
                ws,
                &params,
                Algorithm::ImplicitGemm,
            )
            .unwrap()
            .read()
            .unwrap();
        let want: Vec<f32> = r16(&f32_dw);
        let want_ref = cpu::conv2d_backward_weight(&pr, &x, &dy);
        let absv = |v: &[f32]| v.iter().map(|a| a.abs()).collect::<Vec<_>>();
        let scale = cpu::conv2d_backward_weight(&pr, &absv(&x), &absv(&dy));
        let len = pr.n() * pr.oh() * pr.ow();
        let (xt, dyt, wt) = (up(ctx, &x, &xs), up(ctx, &dy, &ys), up(ctx, &w, &ws));
        let dw = ctx
            .conv2d_backward_weight(&xt, &dyt, ws, &params, Algorithm::ImplicitGemm)
            .unwrap()
            .read()
            .unwrap();
        let mut runs = vec![("dw", dw)];
        if budget.is_none() {
            // (With the small budget the implicit GEMM cannot run the input gradient.)
            let g = ctx
                .conv2d_backward(&xt, &wt, &dyt, true, &params, Algorithm::ImplicitGemm)
                .unwrap();
            runs.push(("all", g.dw.read().unwrap()));
        }
        for (what, got) in runs {
            let label = format!("{what} {label}");
            rounded_once(&label, &got, &want, (&want_ref, &scale, len));
        }
        let v4h = compiled(ctx, "conv2d_wgrad_implicit_v4h");
        assert_eq!(v4h, budget.is_none(), "{label}");
    }
}

/// Strided 1x1 input gradients (shape e of the bench) on f16 tensors write dx in the
/// scatter's store (`scatter_strided_h`, no `f16_pack*` pass) when rows have an even width:
/// bit for bit the f32 run of the same algorithm on the same values rounded once, alone and
/// through `conv2d_backward`. An odd width keeps the f32 scatter and the rounding pass.
#[test]
fn f16_strided_pointwise_input_gradient_writes_f16_dx() {
    let s2 = Conv2dParams::default().with_stride([2, 2]);
    if !implicit_gemm_runs(Operation::InputGrad, s2, 1) {
        // Adapters without the implicit GEMM (GL, GPUs) refuse it.
        return;
    }
    let cases = [
        ([1, 16, 10, 8], [24, 16, 1, 1], s2, true),
        ([2, 8, 6, 12], [16, 8, 1, 1], s2.with_stride([3, 2]), true),
        (
            [1, 8, 8, 6],
            [8, 4, 1, 1],
            s2.with_groups(2).with_padding(Padding::Symmetric([1, 1])),
            true,
        ),
        ([1, 16, 9, 7], [24, 16, 1, 1], s2, false),
    ];
    let mut rng = Rng::new(37);
    for (xs, ws, params, even) in cases {
        let pr = Conv2dProblem::new(xs, ws, None, &params).unwrap();
        let ys = pr.y_shape();
        let ctx = &Context::new_blocking().unwrap();
        let (x, dy, w) = grad_data(&mut rng, &pr);
        let label = format!("{xs:?} {ws:?}");
        let f32_dx = ctx
            .conv2d_backward_input(
                &Tensor::from_slice(ctx, &dy, &ys).unwrap(),
                &Tensor::from_slice(ctx, &w, &ws).unwrap(),
                xs,
                &params,
                Algorithm::ImplicitGemm,
            )
            .unwrap()
            .read()
            .unwrap();
        let want = r16(&f32_dx);
        let want_ref = cpu::conv2d_backward_input(&pr, &dy, &w);
        let absv = |v: &[f32]| v.iter().map(|a| a.abs()).collect::<Vec<_>>();
        let scale = cpu::conv2d_backward_input(&pr, &absv(&dy), &absv(&w));
        let len = pr.k() / pr.groups();
        let (xt, dyt, wt) = (up(ctx, &x, &xs), up(ctx, &dy, &ys), up(ctx, &w, &ws));
        let dx = ctx
            .conv2d_backward_input(&dyt, &wt, xs, &params, Algorithm::ImplicitGemm)
            .unwrap()
            .read()
            .unwrap();
        let g = ctx
            .conv2d_backward(&xt, &wt, &dyt, true, &params, Algorithm::ImplicitGemm)
            .unwrap();
        for (what, got) in [("dx", dx), ("all", g.dx.read().unwrap())] {
            let label = format!("{what} {label}");
            rounded_once(&label, &got, &want, (&want_ref, &scale, len));
        }
        assert_eq!(compiled(ctx, "scatter_strided_h"), even, "{label}");
    }
}
