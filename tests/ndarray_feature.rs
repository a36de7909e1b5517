//! The `ndarray` feature: `Tensor::{from,to}_array4` and `{from,to}_array2` with contiguous
//! and non-contiguous arrays, a convolution and a GEMM driven through them against the CPU
//! reference, and the typed rank errors.
//!
//! Run: `cargo test --release --features ndarray --test ndarray_feature`
#![cfg(feature = "ndarray")]

mod common;

use common::{ctx, Rng};
use ndarray::{s, Array2, Array4, Axis};
use wgconv::{cpu, Conv2dParams, ErrorKind, GemmParams, Padding, PaddingMode, Tensor};

fn random4(rng: &mut Rng, shape: (usize, usize, usize, usize)) -> Array4<f32> {
    let n = shape.0 * shape.1 * shape.2 * shape.3;
    Array4::from_shape_vec(shape, rng.vec(n)).expect("shape matches the data")
}

fn max_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, |m, d| if d.is_nan() { f32::NAN } else { m.max(d) })
}

fn row_major(a: &Array4<f32>) -> Vec<f32> {
    a.iter().copied().collect()
}

#[test]
fn array4_roundtrip_contiguous_and_strided() {
    let ctx = ctx();
    let mut rng = Rng::new(1);
    let a = random4(&mut rng, (2, 3, 5, 7));
    let t = Tensor::from_array4(ctx, &a).unwrap();
    assert_eq!(t.shape(), &[2, 3, 5, 7]);
    assert_eq!(t.to_array4().unwrap(), a);

    // NHWC data viewed as NCHW: not contiguous in row-major order.
    let nhwc = random4(&mut rng, (2, 5, 7, 3));
    let nchw = nhwc.view().permuted_axes([0, 3, 1, 2]);
    assert!(!nchw.is_standard_layout());
    let t = Tensor::from_array4(ctx, &nchw).unwrap();
    assert_eq!(t.shape(), &[2, 3, 5, 7]);
    assert_eq!(t.to_array4().unwrap(), nchw);

    // Stepped slice with a negative stride.
    let sliced = a.slice(s![.., ..;2, ..;-1, 1..6]);
    let t = Tensor::from_array4(ctx, &sliced).unwrap();
    assert_eq!(t.shape(), &[2, 2, 5, 5]);
    assert_eq!(t.to_array4().unwrap(), sliced);
    assert_eq!(
        t.read().unwrap(),
        sliced.iter().copied().collect::<Vec<_>>()
    );

    // Empty arrays round-trip too.
    let empty = Array4::<f32>::zeros((0, 3, 4, 4));
    let t = Tensor::from_array4(ctx, &empty).unwrap();
    assert_eq!(t.to_array4().unwrap().dim(), (0, 3, 4, 4));
}

#[test]
fn conv2d_on_arrays_matches_cpu_reference() {
    let ctx = ctx();
    let mut rng = Rng::new(2);
    // Input stored NHWC and permuted, weight sliced from a larger array: both strided.
    let x_nhwc = random4(&mut rng, (2, 11, 9, 4));
    let x = x_nhwc.view().permuted_axes([0, 3, 1, 2]);
    let w_big = random4(&mut rng, (8, 2, 3, 5));
    let w = w_big.slice(s![..;2, .., .., 1..4]); // [4, 2, 3, 3]
    let bias: Vec<f32> = rng.vec(4);
    let params = Conv2dParams::default()
        .with_groups(2)
        .with_stride([2, 1])
        .with_padding(Padding::Symmetric([1, 2]))
        .with_padding_mode(PaddingMode::Reflect);

    let xt = Tensor::from_array4(ctx, &x).unwrap();
    let wt = Tensor::from_array4(ctx, &w).unwrap();
    let bt = Tensor::from_slice(ctx, &bias, &[4]).unwrap();
    let y = ctx
        .conv2d(&xt, &wt, Some(&bt), &params)
        .unwrap()
        .to_array4()
        .unwrap();

    let xs: Vec<f32> = x.iter().copied().collect();
    let ws: Vec<f32> = w.iter().copied().collect();
    let (want, shape) = cpu::conv2d(&xs, [2, 4, 11, 9], &ws, [4, 2, 3, 3], Some(&bias), &params)
        .expect("valid problem");
    assert_eq!(
        [
            y.len_of(Axis(0)),
            y.len_of(Axis(1)),
            y.len_of(Axis(2)),
            y.len_of(Axis(3))
        ],
        shape
    );
    let err = max_err(&row_major(&y), &want);
    assert!(err <= 1e-4, "max abs error {err}");
}

#[test]
fn gemm_on_arrays_matches_cpu_reference() {
    let ctx = ctx();
    let mut rng = Rng::new(3);
    let (m, k, n) = (13, 17, 9);
    // A given as the transposed view of a [K, M] array: column-major [M, K].
    let a_km = Array2::from_shape_vec((k, m), rng.vec(k * m)).unwrap();
    let a = a_km.t();
    assert!(!a.is_standard_layout());
    let b = Array2::from_shape_vec((k, n), rng.vec(k * n)).unwrap();

    let at = Tensor::from_array2(ctx, &a).unwrap();
    let bt = Tensor::from_array2(ctx, &b).unwrap();
    assert_eq!(at.shape(), &[m, k]);
    assert_eq!(at.to_array2().unwrap(), a);
    let c = ctx
        .gemm(&at, &bt, &GemmParams::default())
        .unwrap()
        .to_array2()
        .unwrap();
    assert_eq!(c.dim(), (m, n));

    let a_rm: Vec<f32> = a.iter().copied().collect();
    let b_rm: Vec<f32> = b.iter().copied().collect();
    let (want, shape) = cpu::gemm(&a_rm, &[m, k], &b_rm, &[k, n], &GemmParams::default()).unwrap();
    assert_eq!(shape, vec![m, n]);
    let got: Vec<f32> = c.iter().copied().collect();
    let err = max_err(&got, &want);
    assert!(err <= 1e-4, "max abs error {err}");
    // And against ndarray's own product.
    let err = max_err(&got, &a.dot(&b).iter().copied().collect::<Vec<_>>());
    assert!(err <= 1e-4, "max abs error vs ndarray dot {err}");
}

#[test]
fn rank_mismatch_is_a_typed_error() {
    let ctx = ctx();
    let t2 = Tensor::from_slice(ctx, &[1.0; 6], &[2, 3]).unwrap();
    let t4 = Tensor::from_slice(ctx, &[1.0; 6], &[1, 1, 2, 3]).unwrap();
    let t1 = Tensor::from_slice(ctx, &[1.0; 6], &[6]).unwrap();
    for (err, want_rank) in [
        (t2.to_array4().unwrap_err(), 4),
        (t1.to_array4().unwrap_err(), 4),
        (t4.to_array2().unwrap_err(), 2),
        (t1.to_array2().unwrap_err(), 2),
    ] {
        match err.kind() {
            ErrorKind::ShapeMismatch { what, expected, .. } => {
                assert_eq!(*what, "tensor rank");
                assert!(expected.contains(&format!("{want_rank}-D")), "{err}");
            }
            other => panic!("expected ShapeMismatch, got {other:?}"),
        }
    }
    // The matching ranks work.
    assert_eq!(t2.to_array2().unwrap().dim(), (2, 3));
    assert_eq!(t4.to_array4().unwrap().dim(), (1, 1, 2, 3));
}
