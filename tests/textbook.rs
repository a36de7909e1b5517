//! Worked examples with known answers, on the CPU reference and on every GPU algorithm.

mod common;

use common::{ctx, Rng};
use wgconv::{cpu, Algorithm, Conv2dParams, Padding, Tensor};

/// Runs a single-channel conv on the CPU reference and every GPU algorithm; checks they all
/// give `want` exactly (these are small integer computations).
fn conv_all(x: &[f32], xs: [usize; 4], w: &[f32], ws: [usize; 4], p: &Conv2dParams) -> Vec<f32> {
    let (cpu_y, shape) = cpu::conv2d(x, xs, w, ws, None, p).expect("valid");
    let ctx = ctx();
    let xt = Tensor::from_slice(ctx, x, &xs).unwrap();
    let wt = Tensor::from_slice(ctx, w, &ws).unwrap();
    for &algo in std::iter::once(&Algorithm::Auto).chain(Algorithm::ALL) {
        let y = match ctx.conv2d_with(&xt, &wt, None, p, algo) {
            Ok(y) => y,
            Err(e) if matches!(e.kind(), wgconv::ErrorKind::UnsupportedAlgorithm { .. }) => {
                continue
            }
            Err(e) => panic!("{}: {e}", algo.name()),
        };
        assert_eq!(y.shape(), shape, "{}", algo.name());
        assert_eq!(y.read().unwrap(), cpu_y, "{} vs cpu", algo.name());
    }
    cpu_y
}

#[test]
fn four_by_four_with_diagonal_difference_kernel() {
    let x = [
        1., 2., 3., 0., 4., 5., 6., 1., 7., 8., 9., 2., 0., 1., 2., 3.,
    ];
    let w = [1., 0., 0., -1.];
    let y = conv_all(&x, [1, 1, 4, 4], &w, [1, 1, 2, 2], &Conv2dParams::default());
    // y[i][j] = x[i][j] - x[i+1][j+1]
    assert_eq!(y, vec![-4., -4., 2., -4., -4., 4., 6., 6., 6.]);
}

#[test]
fn laplacian_of_a_square() {
    let mut x = [0f32; 25];
    for r in 1..4 {
        for c in 1..4 {
            x[r * 5 + c] = 1.0;
        }
    }
    let w = [1., 1., 1., 1., -8., 1., 1., 1., 1.];
    let y = conv_all(&x, [1, 1, 5, 5], &w, [1, 1, 3, 3], &Conv2dParams::default());
    assert_eq!(y, vec![-5., -3., -5., -3., 0., -3., -5., -3., -5.]);
    // With zero padding the ring around the square lights up (+1 at its corners).
    let y = conv_all(
        &x,
        [1, 1, 5, 5],
        &w,
        [1, 1, 3, 3],
        &Conv2dParams::default().with_padding(Padding::Same),
    );
    assert_eq!(y[0], 1.0);
    assert_eq!(y[2], 3.0);
    assert_eq!(y[12], 0.0);
}

#[test]
fn sobel_x_on_a_vertical_edge() {
    let cols = [100., 100., 100., 50., 50.];
    let x: Vec<f32> = (0..25).map(|i| cols[i % 5]).collect();
    let w = [-1., 0., 1., -2., 0., 2., -1., 0., 1.];
    let y = conv_all(&x, [1, 1, 5, 5], &w, [1, 1, 3, 3], &Conv2dParams::default());
    assert_eq!(
        y,
        vec![0., -200., -200., 0., -200., -200., 0., -200., -200.]
    );
}

#[test]
fn vertical_edge_kernel_textbook_example() {
    let x = [
        1., 2., 3., 0., 1., 0., 1., 2., 3., 1., 1., 2., 1., 0., 0., 0., 0., 1., 2., 1., 1., 1., 0.,
        1., 0.,
    ];
    let w = [1., 0., -1., 1., 0., -1., 1., 0., -1.];
    let y = conv_all(&x, [1, 1, 5, 5], &w, [1, 1, 3, 3], &Conv2dParams::default());
    assert_eq!(y[0], -4.0);
    // Every output is (left column sum) - (right column sum) of its 3x3 window.
    for oy in 0..3 {
        for ox in 0..3 {
            let col = |c: usize| (0..3).map(|r| x[(oy + r) * 5 + c]).sum::<f32>();
            assert_eq!(y[oy * 3 + ox], col(ox) - col(ox + 2));
        }
    }
}

#[test]
fn true_convolution_differs_only_for_asymmetric_kernels() {
    let mut rng = Rng::new(3);
    let x = rng.int_vec(36);
    let asym = [1., 2., 0., -1., 3., 1., 0., 0., 2.];
    let sym = [1., 2., 1., 2., 4., 2., 1., 2., 1.];
    let corr = Conv2dParams::default();
    let conv = corr.with_flip(true);
    let a = conv_all(&x, [1, 1, 6, 6], &asym, [1, 1, 3, 3], &corr);
    let b = conv_all(&x, [1, 1, 6, 6], &asym, [1, 1, 3, 3], &conv);
    assert_ne!(a, b, "asymmetric kernel: correlation != convolution");
    let rotated: Vec<f32> = asym.iter().rev().copied().collect();
    assert_eq!(
        b,
        conv_all(&x, [1, 1, 6, 6], &rotated, [1, 1, 3, 3], &corr),
        "convolution = correlation with the kernel rotated 180 degrees"
    );
    let a = conv_all(&x, [1, 1, 6, 6], &sym, [1, 1, 3, 3], &corr);
    let b = conv_all(&x, [1, 1, 6, 6], &sym, [1, 1, 3, 3], &conv);
    assert_eq!(a, b, "symmetric kernel: correlation == convolution");
}

#[test]
fn translation_equivariance_away_from_borders() {
    let mut rng = Rng::new(11);
    let (h, w, shift) = (16usize, 16usize, (2usize, 3usize));
    let x = rng.int_vec(h * w);
    let k = rng.int_vec(9);
    // x shifted down by 2 rows and right by 3 columns (zeros enter at the top-left).
    let mut xs = vec![0f32; h * w];
    for r in shift.0..h {
        for c in shift.1..w {
            xs[r * w + c] = x[(r - shift.0) * w + c - shift.1];
        }
    }
    let p = Conv2dParams::default().with_padding(Padding::Same);
    let y = conv_all(&x, [1, 1, h, w], &k, [1, 1, 3, 3], &p);
    let ys = conv_all(&xs, [1, 1, h, w], &k, [1, 1, 3, 3], &p);
    for r in shift.0 + 1..h - 1 {
        for c in shift.1 + 1..w - 1 {
            assert_eq!(
                ys[r * w + c],
                y[(r - shift.0) * w + c - shift.1],
                "at ({r},{c})"
            );
        }
    }
}
