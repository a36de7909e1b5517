//! CPU reference for the conv2d gradients and the transposed convolution (no GPU needed):
//! adjoint identities against the forward reference, exact difference quotients, zero rows of
//! strided gradients, an independent naive scatter for `conv_transpose2d`, every validation
//! rule, and a few JSON fixtures.

use std::path::Path;

use serde_json::Value;
use wgconv::cpu::{
    conv2d_abs_scale, conv2d_backward_bias, conv2d_backward_input, conv2d_backward_weight,
    conv2d_grad, conv2d_problem, conv_transpose2d, conv_transpose2d_problem,
};
use wgconv::{
    numel, Conv2dParams, Conv2dProblem, ConvTranspose2dParams, Error, ErrorKind, Padding,
    PaddingMode, Shape4,
};

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }
    /// Uniform in `[-1, 1)`.
    fn unit(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn floats(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.unit()).collect()
    }
    /// Integers in `[-m, m]`.
    fn ints(&mut self, n: usize, m: usize) -> Vec<f32> {
        (0..n)
            .map(|_| self.below(2 * m + 1) as f32 - m as f32)
            .collect()
    }
}

const MODES: [PaddingMode; 4] = [
    PaddingMode::Zeros,
    PaddingMode::Reflect,
    PaddingMode::Replicate,
    PaddingMode::Circular,
];

/// A random valid forward problem. `mode` / `flip` forced when given; `max_hw` bounds H, W.
fn random_conv(
    rng: &mut Rng,
    mode: Option<PaddingMode>,
    flip: Option<bool>,
    max_hw: usize,
) -> (Conv2dParams, Conv2dProblem) {
    loop {
        let n = 1 + rng.below(2);
        let (g, cg, kg) = match rng.below(4) {
            0 | 1 => (1, 1 + rng.below(3), 1 + rng.below(3)),
            // Grouped, not depthwise.
            2 => (2 + rng.below(2), 2, 1 + rng.below(2)),
            // Depthwise, with a channel multiplier.
            _ => (2 + rng.below(3), 1, 1 + rng.below(3)),
        };
        let (c, k) = (g * cg, g * kg);
        let (h, w) = (1 + rng.below(max_hw), 1 + rng.below(max_hw));
        let (r, s) = (1 + rng.below(4), 1 + rng.below(4));
        let mut stride = [1 + rng.below(3), 1 + rng.below(3)];
        let dilation = [1 + rng.below(3), 1 + rng.below(3)];
        let padding = match rng.below(6) {
            0 | 1 => Padding::Symmetric([rng.below(4), rng.below(4)]),
            2 | 3 => Padding::PerSide([rng.below(4), rng.below(4), rng.below(4), rng.below(4)]),
            4 => {
                stride = [1, 1];
                Padding::Same
            }
            _ => Padding::Valid,
        };
        let params = Conv2dParams::default()
            .with_stride(stride)
            .with_padding(padding)
            .with_dilation(dilation)
            .with_groups(g)
            .with_padding_mode(mode.unwrap_or(MODES[rng.below(4)]))
            .with_flip(flip.unwrap_or_else(|| rng.coin()));
        if let Ok(p) = Conv2dProblem::new([n, c, h, w], [k, cg, r, s], None, &params) {
            return (params, p);
        }
    }
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

fn abs(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs()).collect()
}

#[derive(Default)]
struct Coverage {
    modes: [usize; 4],
    flip: usize,
    strided: usize,
    dilated: usize,
    grouped: usize,
    depthwise: usize,
    uneven_pad: usize,
    negative_pad: usize,
}

impl Coverage {
    fn add(&mut self, p: &Conv2dProblem) {
        self.modes[MODES.iter().position(|&m| m == p.mode()).unwrap()] += 1;
        self.flip += p.flip() as usize;
        self.strided += (p.stride() != [1, 1]) as usize;
        self.dilated += (p.dilation() != [1, 1]) as usize;
        self.grouped += (p.groups() > 1 && !p.is_depthwise()) as usize;
        self.depthwise += (p.is_depthwise() && p.k() > p.c()) as usize;
        self.uneven_pad += (p.pad()[0] != p.pad()[1] || p.pad()[2] != p.pad()[3]) as usize;
        self.negative_pad += p.pad().iter().any(|&v| v < 0) as usize;
    }
    fn assert_min(&self, min: usize) {
        let all = [
            self.modes[0],
            self.modes[1],
            self.modes[2],
            self.modes[3],
            self.flip,
            self.strided,
            self.dilated,
            self.grouped,
            self.depthwise,
            self.uneven_pad,
        ];
        assert!(all.iter().all(|&v| v >= min), "coverage too thin: {all:?}");
    }
}

/// `<conv(x, w), dy> == <x, backward_input(dy, w)> == <w, backward_weight(x, dy)>` in f64,
/// within a relative 2e-6 of Σ|x||w||dy| (each side is a rounded-once f32 per element).
fn check_adjoint(p: &Conv2dProblem, rng: &mut Rng, what: &str) {
    let x = rng.floats(numel(&p.x_shape()));
    let w = rng.floats(numel(&p.w_shape()));
    let dy = rng.floats(numel(&p.y_shape()));
    let y = conv2d_problem(p, &x, &w, None);
    let scale = dot(&conv2d_abs_scale(p, &x, &w, None), &abs(&dy));
    let tol = 2e-6 * scale + 1e-30;
    let lhs = dot(&y, &dy);
    let dx = conv2d_backward_input(p, &dy, &w);
    let dw = conv2d_backward_weight(p, &x, &dy);
    assert_eq!(dx.len(), numel(&p.x_shape()));
    assert_eq!(dw.len(), numel(&p.w_shape()));
    let rx = dot(&x, &dx);
    let rw = dot(&w, &dw);
    assert!(
        (lhs - rx).abs() <= tol,
        "{what} dx: {lhs} vs {rx} (tol {tol}) {p:?}"
    );
    assert!(
        (lhs - rw).abs() <= tol,
        "{what} dw: {lhs} vs {rw} (tol {tol}) {p:?}"
    );
    // Scale check: the same maps on |inputs| bound the terms of each side.
    let sx = dot(&abs(&x), &conv2d_backward_input(p, &abs(&dy), &abs(&w)));
    assert!(
        (sx - scale).abs() <= 1e-5 * scale + 1e-30,
        "{sx} vs {scale}"
    );
}

#[test]
fn adjoint_identities_random() {
    let mut rng = Rng(0x0AD7_01A7);
    let mut cov = Coverage::default();
    for i in 0..240 {
        let (_, p) = random_conv(&mut rng, Some(MODES[i % 4]), None, 9);
        cov.add(&p);
        check_adjoint(&p, &mut rng, &format!("case {i}"));
    }
    cov.assert_min(10);
}

#[test]
fn adjoint_identities_transposed_problems() {
    // The forward convolutions produced by ConvTranspose2dParams (negative bottom/right pads).
    let mut rng = Rng(0x7A45);
    let mut cov = Coverage::default();
    let mut done = 0;
    while done < 120 {
        let Some((q, x_shape, w_shape)) = random_transposed(&mut rng) else {
            continue;
        };
        let tp = q.resolve(x_shape, w_shape, None).unwrap();
        cov.add(&tp.conv());
        check_adjoint(&tp.conv(), &mut rng, &format!("transposed {q:?}"));
        done += 1;
    }
    assert!(cov.negative_pad >= 10, "{}", cov.negative_pad);
}

/// `L(x, w, b) = Σ conv2d(x, w, b) · dy`, exact for small integer inputs.
fn loss(p: &Conv2dProblem, x: &[f32], w: &[f32], b: &[f32], dy: &[f32]) -> f64 {
    dot(&conv2d_problem(p, x, w, Some(b)), dy)
}

#[test]
fn exact_difference_quotients() {
    // Integer-valued data: every product and sum is exact in f32 and f64, and the loss is
    // linear in each argument, so L(v + e_i) - L(v) is exactly the i-th gradient entry.
    let mut rng = Rng(0xD1FF);
    let mut cov = Coverage::default();
    for i in 0..40 {
        let (params, p) = random_conv(&mut rng, Some(MODES[i % 4]), Some((i / 4) % 2 == 1), 6);
        cov.add(&p);
        let x = rng.ints(numel(&p.x_shape()), 3);
        let w = rng.ints(numel(&p.w_shape()), 2);
        let b = rng.ints(p.k(), 3);
        let dy = rng.ints(numel(&p.y_shape()), 2);
        let g = conv2d_grad(
            &x,
            p.x_shape(),
            &w,
            p.w_shape(),
            &dy,
            p.y_shape(),
            true,
            &params,
        )
        .unwrap();
        let base = loss(&p, &x, &w, &b, &dy);
        for j in 0..x.len() {
            let mut xp = x.clone();
            xp[j] += 1.0;
            let want = loss(&p, &xp, &w, &b, &dy) - base;
            assert_eq!(g.dx[j] as f64, want, "case {i} dx[{j}] {p:?}");
        }
        for j in 0..w.len() {
            let mut wp = w.clone();
            wp[j] += 1.0;
            let want = loss(&p, &x, &wp, &b, &dy) - base;
            assert_eq!(g.dw[j] as f64, want, "case {i} dw[{j}] {p:?}");
        }
        let db = g.db.as_ref().expect("db requested");
        assert_eq!(db, &conv2d_backward_bias(&p, &dy));
        for j in 0..b.len() {
            let mut bp = b.clone();
            bp[j] += 1.0;
            let want = loss(&p, &x, &w, &bp, &dy) - base;
            assert_eq!(db[j] as f64, want, "case {i} db[{j}] {p:?}");
        }
        // Without bias: same dx/dw, no db.
        let g2 = conv2d_grad(
            &x,
            p.x_shape(),
            &w,
            p.w_shape(),
            &dy,
            p.y_shape(),
            false,
            &params,
        )
        .unwrap();
        assert_eq!((&g2.dx, &g2.dw, &g2.db), (&g.dx, &g.dw, &None));
    }
    cov.assert_min(3);
}

#[test]
fn strided_gradient_skips_unread_rows() {
    // H = W = 8, 2x2 kernel, stride 3: output rows 0..3 read input rows {0,1,3,4,6,7}.
    let mut rng = Rng(5);
    for flip in [false, true] {
        let params = Conv2dParams::default().with_stride([3, 3]).with_flip(flip);
        let p = Conv2dProblem::new([2, 2, 8, 8], [3, 2, 2, 2], None, &params).unwrap();
        assert_eq!((p.oh(), p.ow()), (3, 3));
        let w = rng.floats(numel(&p.w_shape()));
        let dy = rng.floats(numel(&p.y_shape()));
        let dx = conv2d_backward_input(&p, &dy, &w);
        for (i, &v) in dx.iter().enumerate() {
            let (row, col) = ((i / 8) % 8, i % 8);
            if [2, 5].contains(&row) || [2, 5].contains(&col) {
                assert_eq!(v.to_bits(), 0, "dx[{i}] = {v}");
            } else {
                assert_ne!(v, 0.0, "dx[{i}]");
            }
        }
    }
}

#[test]
fn padding_modes_by_hand() {
    // x = [a b c], 1x3 kernel of ones, pad 1 left/right, dy = ones: dx counts how often each
    // pixel is read, including through padded copies.
    let x = [1.0f32, 2.0, 3.0];
    let w = [1.0f32; 3];
    let dy = [1.0f32; 3];
    for (mode, want) in [
        (PaddingMode::Zeros, [2.0, 3.0, 2.0]),
        // b | a b c | b: windows (b a b) (a b c) (b c b).
        (PaddingMode::Reflect, [2.0, 5.0, 2.0]),
        // a | a b c | c.
        (PaddingMode::Replicate, [3.0, 3.0, 3.0]),
        // c | a b c | a.
        (PaddingMode::Circular, [3.0, 3.0, 3.0]),
    ] {
        let params = Conv2dParams::default()
            .with_padding(Padding::Symmetric([0, 1]))
            .with_padding_mode(mode);
        let g = conv2d_grad(
            &x,
            [1, 1, 1, 3],
            &w,
            [1, 1, 1, 3],
            &dy,
            [1, 1, 1, 3],
            true,
            &params,
        )
        .unwrap();
        assert_eq!(g.dx, want, "{mode:?}");
        assert_eq!(g.db, Some(vec![3.0]));
        // dw[s] = Σ_ox xpad[ox + s]: the padded sequences above.
        let want_dw = match mode {
            PaddingMode::Zeros => [3.0, 6.0, 5.0],
            PaddingMode::Reflect => [5.0, 6.0, 7.0],
            PaddingMode::Replicate => [4.0, 6.0, 8.0],
            PaddingMode::Circular => [6.0, 6.0, 6.0],
        };
        assert_eq!(g.dw, want_dw, "{mode:?}");
        // Flip rotates the weight gradient.
        let gf = conv2d_grad(
            &x,
            [1, 1, 1, 3],
            &w,
            [1, 1, 1, 3],
            &dy,
            [1, 1, 1, 3],
            false,
            &params.with_flip(true),
        )
        .unwrap();
        assert_eq!(gf.dw, [want_dw[2], want_dw[1], want_dw[0]], "{mode:?}");
    }
}

fn random_transposed(rng: &mut Rng) -> Option<(ConvTranspose2dParams, Shape4, Shape4)> {
    let (g, cig, cog) = match rng.below(4) {
        0 | 1 => (1, 1 + rng.below(3), 1 + rng.below(3)),
        2 => (2 + rng.below(2), 1 + rng.below(2), 1 + rng.below(2)),
        // Depthwise (one input channel per group), with a channel multiplier.
        _ => (2 + rng.below(3), 1, 1 + rng.below(3)),
    };
    let stride = [1 + rng.below(4), 1 + rng.below(4)];
    let dilation = [1 + rng.below(3), 1 + rng.below(3)];
    let output_padding = [
        rng.below(stride[0].max(dilation[0])),
        rng.below(stride[1].max(dilation[1])),
    ];
    let q = ConvTranspose2dParams::default()
        .with_stride(stride)
        .with_padding([rng.below(4), rng.below(4)])
        .with_output_padding(output_padding)
        .with_dilation(dilation)
        .with_groups(g);
    let x = [
        1 + rng.below(2),
        g * cig,
        1 + rng.below(7),
        1 + rng.below(7),
    ];
    let w = [g * cig, cog, 1 + rng.below(4), 1 + rng.below(4)];
    q.resolve(x, w, None).ok().map(|_| (q, x, w))
}

/// Independent scatter definition of PyTorch's conv_transpose2d, f64, rounded once.
fn naive_conv_transpose(
    x: &[f32],
    xs: Shape4,
    w: &[f32],
    ws: Shape4,
    b: Option<&[f32]>,
    q: &ConvTranspose2dParams,
) -> (Vec<f32>, Shape4) {
    let [n, cin, h, wd] = xs;
    let [_, cog, r, s] = ws;
    let g = q.groups;
    let cig = cin / g;
    let cout = cog * g;
    let size = |i: usize, k: usize, d: usize| -> usize {
        let v = (i as i64 - 1) * q.stride[d] as i64 - 2 * q.padding[d] as i64
            + q.dilation[d] as i64 * (k as i64 - 1)
            + q.output_padding[d] as i64
            + 1;
        assert!(v >= 1);
        v as usize
    };
    let (ho, wo) = (size(h, r, 0), size(wd, s, 1));
    let mut out = vec![0f64; n * cout * ho * wo];
    for (i, v) in out.iter_mut().enumerate() {
        *v = b.map_or(0.0, |b| b[(i / (ho * wo)) % cout] as f64);
    }
    for nn in 0..n {
        for ci in 0..cin {
            let grp = ci / cig;
            for iy in 0..h {
                for ix in 0..wd {
                    let xv = x[((nn * cin + ci) * h + iy) * wd + ix] as f64;
                    for col in 0..cog {
                        let co = grp * cog + col;
                        for rr in 0..r {
                            let oy = (iy * q.stride[0] + rr * q.dilation[0]) as i64
                                - q.padding[0] as i64;
                            if oy < 0 || oy >= ho as i64 {
                                continue;
                            }
                            for ss in 0..s {
                                let ox = (ix * q.stride[1] + ss * q.dilation[1]) as i64
                                    - q.padding[1] as i64;
                                if ox < 0 || ox >= wo as i64 {
                                    continue;
                                }
                                let wv = w[((ci * cog + col) * r + rr) * s + ss] as f64;
                                out[((nn * cout + co) * ho + oy as usize) * wo + ox as usize] +=
                                    xv * wv;
                            }
                        }
                    }
                }
            }
        }
    }
    (
        out.into_iter().map(|v| v as f32).collect(),
        [n, cout, ho, wo],
    )
}

#[test]
fn conv_transpose_matches_naive_scatter() {
    let mut rng = Rng(0x0007_2A45_905E);
    let (mut cases, mut op_ge_stride, mut grouped, mut depthwise, mut biased, mut ints) =
        (0, 0, 0, 0, 0, 0);
    while cases < 150 {
        let Some((q, xs, ws)) = random_transposed(&mut rng) else {
            continue;
        };
        cases += 1;
        op_ge_stride += (0..2).any(|d| q.output_padding[d] >= q.stride[d]) as usize;
        grouped += (q.groups > 1 && xs[1] > q.groups) as usize;
        depthwise += (q.groups > 1 && xs[1] == q.groups) as usize;
        let integer = rng.coin();
        ints += integer as usize;
        let gen = |rng: &mut Rng, len: usize| {
            if integer {
                rng.ints(len, 3)
            } else {
                rng.floats(len)
            }
        };
        let x = gen(&mut rng, numel(&xs));
        let w = gen(&mut rng, numel(&ws));
        let cout = ws[1] * q.groups;
        let b = rng.coin().then(|| gen(&mut rng, cout));
        biased += b.is_some() as usize;
        let (got, shape) = conv_transpose2d(&x, xs, &w, ws, b.as_deref(), &q).unwrap();
        let (want, want_shape) = naive_conv_transpose(&x, xs, &w, ws, b.as_deref(), &q);
        assert_eq!(shape, want_shape, "{q:?} {xs:?} {ws:?}");
        assert_eq!(q.output_shape(xs, ws).unwrap(), shape);
        let tp = q.resolve(xs, ws, b.as_ref().map(Vec::len)).unwrap();
        assert_eq!(
            conv_transpose2d_problem(&tp, &x, &w, b.as_deref()),
            got,
            "{q:?}"
        );
        if integer {
            assert_eq!(got, want, "{q:?} {xs:?} {ws:?}");
        } else {
            let ab = b.as_deref().map(abs);
            let (scale, _) = naive_conv_transpose(&abs(&x), xs, &abs(&w), ws, ab.as_deref(), &q);
            for i in 0..got.len() {
                let tol = 1e-6 * scale[i] as f64;
                assert!(
                    (got[i] as f64 - want[i] as f64).abs() <= tol,
                    "{q:?} {xs:?} {ws:?} [{i}] {} vs {}",
                    got[i],
                    want[i]
                );
            }
        }
    }
    assert!(
        op_ge_stride >= 10 && grouped >= 10 && depthwise >= 10 && biased >= 10 && ints >= 10,
        "{op_ge_stride} {grouped} {depthwise} {biased} {ints}"
    );
}

#[test]
fn conv_transpose_output_padding_rows_get_only_bias() {
    // stride 1, dilation 3, output_padding 2 (>= stride, < dilation): the last 2 rows and
    // columns receive no input, only the bias.
    let q = ConvTranspose2dParams::default()
        .with_dilation([3, 3])
        .with_output_padding([2, 2]);
    let x = vec![1.0f32; 2 * 3 * 3];
    let w = vec![1.0f32; 2 * 2 * 2];
    let (y, shape) =
        conv_transpose2d(&x, [1, 2, 3, 3], &w, [2, 1, 2, 2], Some(&[0.5]), &q).unwrap();
    assert_eq!(shape, [1, 1, 8, 8]);
    for (i, &v) in y.iter().enumerate() {
        let (row, col) = (i / 8, i % 8);
        let want = if row >= 6 || col >= 6 {
            0.5
        } else {
            // Rows 0..3 get tap 0 only, rows 3..6 tap 1 only (dilation 3 > input span).
            2.0 + 0.5
        };
        assert_eq!(v, want, "y[{row},{col}]");
    }
}

fn kind(e: Error) -> (&'static str, String) {
    match e.into_kind() {
        ErrorKind::InvalidParam { name, .. } => ("param", name.to_string()),
        ErrorKind::ShapeMismatch { what, .. } => ("shape", what.to_string()),
        k => ("other", format!("{k:?}")),
    }
}

#[test]
fn conv_transpose_validation() {
    let t = ConvTranspose2dParams::default;
    let run = |xs: Shape4, ws: Shape4, b: Option<usize>, q: ConvTranspose2dParams| {
        let x = vec![0.0; numel(&xs).min(1 << 20)];
        let w = vec![0.0; numel(&ws).min(1 << 20)];
        let bias = b.map(|n| vec![0.0; n]);
        kind(conv_transpose2d(&x, xs, &w, ws, bias.as_deref(), &q).unwrap_err())
    };
    let (x, w) = ([1, 2, 5, 5], [2, 2, 3, 3]);
    let p = |n: &str| ("param", n.to_string());
    let sh = |n: &str| ("shape", n.to_string());
    assert_eq!(run(x, w, None, t().with_stride([0, 1])), p("stride"));
    assert_eq!(run(x, w, None, t().with_dilation([0, 0])), p("dilation"));
    assert_eq!(run(x, w, None, t().with_groups(0)), p("groups"));
    assert_eq!(
        run([1, 3, 5, 5], [3, 2, 3, 3], None, t().with_groups(2)),
        p("groups")
    );
    assert_eq!(run([1, 3, 5, 5], w, None, t()), sh("weight"));
    assert_eq!(run(x, w, Some(2), t().with_groups(2)), sh("bias"));
    assert_eq!(run(x, w, Some(3), t()), sh("bias"));
    assert_eq!(
        run(
            x,
            w,
            None,
            t().with_stride([2, 2]).with_output_padding([2, 2])
        ),
        p("output_padding")
    );
    assert_eq!(
        run(
            x,
            w,
            None,
            t().with_dilation([2, 2]).with_output_padding([0, 2])
        ),
        p("output_padding")
    );
    assert_eq!(
        run(x, w, None, t().with_output_padding([1, 0])),
        p("output_padding")
    );
    assert_eq!(
        run([1, 2, 1, 1], [2, 2, 1, 1], None, t().with_padding([1, 1])),
        p("padding")
    );
    assert_eq!(
        run([1, 2, 2, 4], w, None, t().with_padding([2, 0])),
        p("padding")
    );
    assert_eq!(run([1, 2, 0, 5], w, None, t()), sh("input"));
    assert_eq!(run(x, [2, 2, 3, 0], None, t()), sh("weight"));
    // Slice lengths.
    let (xv, wv) = (vec![0.0; 50], vec![0.0; 36]);
    assert!(conv_transpose2d(&xv, x, &wv, w, None, &t()).is_ok());
    assert_eq!(
        kind(conv_transpose2d(&xv[1..], x, &wv, w, None, &t()).unwrap_err()),
        sh("x")
    );
    assert_eq!(
        kind(conv_transpose2d(&xv, x, &wv[1..], w, None, &t()).unwrap_err()),
        sh("w")
    );
}

#[test]
fn conv2d_grad_validation() {
    let c = Conv2dParams::default;
    let run = |xs: Shape4, ws: Shape4, dys: Shape4, bias: bool, q: Conv2dParams| {
        let x = vec![0.0; numel(&xs)];
        let w = vec![0.0; numel(&ws)];
        let dy = vec![0.0; numel(&dys)];
        kind(conv2d_grad(&x, xs, &w, ws, &dy, dys, bias, &q).unwrap_err())
    };
    let p = |n: &str| ("param", n.to_string());
    let sh = |n: &str| ("shape", n.to_string());
    let (x, w, dy) = ([1, 2, 5, 7], [3, 2, 3, 3], [1, 3, 3, 5]);
    assert_eq!(run(x, w, dy, false, c().with_stride([1, 0])), p("stride"));
    assert_eq!(
        run(x, w, dy, false, c().with_dilation([0, 1])),
        p("dilation")
    );
    assert_eq!(run(x, w, dy, false, c().with_groups(0)), p("groups"));
    assert_eq!(
        run([1, 3, 5, 7], [4, 1, 3, 3], dy, false, c().with_groups(2)),
        p("groups")
    );
    assert_eq!(
        run([1, 4, 5, 7], [3, 2, 3, 3], dy, false, c().with_groups(2)),
        p("groups")
    );
    assert_eq!(run(x, [3, 1, 3, 3], dy, false, c()), sh("weight"));
    assert_eq!(
        run(
            x,
            w,
            [1, 3, 3, 4],
            false,
            c().with_stride([2, 2]).with_padding(Padding::Same)
        ),
        p("padding")
    );
    assert_eq!(
        run(
            [1, 2, 3, 7],
            [2, 2, 3, 3],
            [1, 2, 7, 7],
            false,
            c().with_padding(Padding::Symmetric([3, 1]))
                .with_padding_mode(PaddingMode::Reflect)
        ),
        p("padding")
    );
    assert_eq!(
        run(
            x,
            w,
            [1, 3, 11, 5],
            false,
            c().with_padding(Padding::Symmetric([6, 0]))
                .with_padding_mode(PaddingMode::Circular)
        ),
        p("padding")
    );
    assert_eq!(
        run([1, 2, 3, 3], [3, 2, 5, 5], [1, 3, 1, 1], false, c()),
        p("kernel")
    );
    assert_eq!(run([0, 2, 5, 7], w, dy, false, c()), sh("input"));
    // dy shape: batch, channels, height, width.
    assert!(conv2d_grad(&[0.0; 70], x, &[0.0; 54], w, &[0.0; 45], dy, true, &c()).is_ok());
    for bad in [[2, 3, 3, 5], [1, 2, 3, 5], [1, 3, 4, 5], [1, 3, 3, 4]] {
        assert_eq!(run(x, w, bad, false, c()), sh("dy"), "{bad:?}");
        assert_eq!(run(x, w, bad, true, c()), sh("dy"), "{bad:?}");
    }
    // Slice lengths.
    let q = c();
    assert_eq!(
        kind(conv2d_grad(&[0.0; 69], x, &[0.0; 54], w, &[0.0; 45], dy, false, &q).unwrap_err()),
        sh("x")
    );
    assert_eq!(
        kind(conv2d_grad(&[0.0; 70], x, &[0.0; 55], w, &[0.0; 45], dy, false, &q).unwrap_err()),
        sh("w")
    );
    assert_eq!(
        kind(conv2d_grad(&[0.0; 70], x, &[0.0; 54], w, &[0.0; 44], dy, false, &q).unwrap_err()),
        sh("dy")
    );
}

// ---- JSON fixtures (format: /work/shared/FIXTURES.md) ----

fn arr(v: &Value, key: &str) -> Vec<f32> {
    v["data"][key]
        .as_array()
        .unwrap_or_else(|| panic!("missing data.{key}"))
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn shape(v: &Value, key: &str) -> Shape4 {
    let d: Vec<usize> = v["shapes"][key]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    d.try_into().unwrap()
}

fn pair(v: &Value) -> [usize; 2] {
    let a = v.as_array().unwrap();
    [
        a[0].as_u64().unwrap() as usize,
        a[1].as_u64().unwrap() as usize,
    ]
}

fn compare(v: &Value, name: &str, got: &[f32]) {
    let want = arr(v, name);
    assert_eq!(got.len(), want.len(), "{name}");
    let exact = v["integer_valued"].as_bool().unwrap();
    let rtol = v["tolerance"]["rtol"].as_f64().unwrap();
    let atol = v["tolerance"]["atol"].as_f64().unwrap();
    for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
        let ok = if exact {
            g == w
        } else {
            ((g - w) as f64).abs() <= atol + rtol * (w as f64).abs()
        };
        assert!(ok, "{}: {name}[{i}] got {g}, want {w}", v["id"]);
    }
}

fn run_fixture(id: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{id}.json"));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(v["expect"], "ok");
    let prm = &v["params"];
    let bias = prm["bias"].as_bool().unwrap();
    match v["op"].as_str().unwrap() {
        "conv2d_grad" => {
            let padding = match &prm["padding"] {
                Value::String(s) if s == "same" => Padding::Same,
                Value::String(s) if s == "valid" => Padding::Valid,
                p => Padding::Symmetric(pair(p)),
            };
            let q = Conv2dParams::default()
                .with_stride(pair(&prm["stride"]))
                .with_padding(padding)
                .with_dilation(pair(&prm["dilation"]))
                .with_groups(prm["groups"].as_u64().unwrap() as usize)
                .with_padding_mode(
                    PaddingMode::from_name(prm["padding_mode"].as_str().unwrap()).unwrap(),
                );
            let g = conv2d_grad(
                &arr(&v, "x"),
                shape(&v, "x"),
                &arr(&v, "w"),
                shape(&v, "w"),
                &arr(&v, "dy"),
                shape(&v, "dy"),
                bias,
                &q,
            )
            .unwrap();
            compare(&v, "dx", &g.dx);
            compare(&v, "dw", &g.dw);
            assert_eq!(g.db.is_some(), bias);
            if let Some(db) = &g.db {
                compare(&v, "db", db);
            }
        }
        "conv_transpose2d" => {
            assert_eq!(prm["padding_mode"], "zeros");
            let q = ConvTranspose2dParams::default()
                .with_stride(pair(&prm["stride"]))
                .with_padding(pair(&prm["padding"]))
                .with_output_padding(pair(&prm["output_padding"]))
                .with_dilation(pair(&prm["dilation"]))
                .with_groups(prm["groups"].as_u64().unwrap() as usize);
            let b = bias.then(|| arr(&v, "b"));
            let (y, ys) = conv_transpose2d(
                &arr(&v, "x"),
                shape(&v, "x"),
                &arr(&v, "w"),
                shape(&v, "w"),
                b.as_deref(),
                &q,
            )
            .unwrap();
            assert_eq!(ys, shape(&v, "y"));
            compare(&v, "y", &y);
        }
        op => panic!("unexpected op {op}"),
    }
}

#[test]
fn fixtures_sample() {
    for id in [
        "conv2d_grad_n1_c4_7x9_k6_3x3_p2_d2_reflect_g2_bias",
        "conv2d_grad_n1_c3_4x4_k3_3x3_p4_circular_g3_int",
        "conv2d_grad_n1_c2_4x5_k2_3x2_p2x1_d1x2_replicate_bias_int",
        "conv_transpose2d_n1_c2_5x5_k2_3x3_s2_p2_d3_op2",
        "conv_transpose2d_n2_c4_4x5_k4_3x2_s2x3_p1x0_g2_bias_int",
    ] {
        run_fixture(id);
    }
}
