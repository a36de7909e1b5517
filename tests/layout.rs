//! Memory formats (`wgconv::MemoryFormat`): `with_format` / `to_format` round trips (f32 and
//! f16, bit for bit) and their typed errors; every convolution operation and gradient with
//! channels-last operands (every combination of operand formats, every algorithm the context
//! accepts, padding modes, groups, stride, dilation) against the CPU reference computed on
//! contiguous data and permuted on the host; f16 with channels-last; the fused forms and the
//! format checks of their elementwise passes; conversions of tensors beyond one storage
//! binding, in tiles (`src/gpu/layout.rs`); `to_array4` of a channels-last tensor.

mod common;

use common::{check, ctx, tol, Rng};
use wgconv::half::f16;
use wgconv::{
    cpu, Activation, Algorithm, Context, ContextOptions, Conv2dParams, Conv2dProblem,
    ConvTranspose2dParams, DType, Epilogue, ErrorKind, LimitsOverride, MemoryFormat, Operation,
    Padding, PaddingMode, Residual, Tensor,
};

const CO: MemoryFormat = MemoryFormat::Contiguous;
const CL: MemoryFormat = MemoryFormat::ChannelsLast;
const FORMATS: [MemoryFormat; 2] = [CO, CL];

fn shape4(s: &[usize]) -> [usize; 4] {
    s.try_into().expect("a 4-D shape")
}

/// Logical (NCHW / KCRS) data uploaded as a tensor stored in `fmt`: permuted on the host,
/// then viewed in that format.
fn upload(ctx: &Context, data: &[f32], shape: [usize; 4], fmt: MemoryFormat) -> Tensor {
    let mem = CO.convert(data, shape, fmt).unwrap();
    let t = Tensor::from_slice(ctx, &mem, &shape)
        .unwrap()
        .with_format(fmt)
        .unwrap();
    assert_eq!(t.format(), fmt);
    t
}

/// [`upload`] of f16 data.
fn upload_f16(ctx: &Context, data: &[f16], shape: [usize; 4], fmt: MemoryFormat) -> Tensor {
    let mem = CO.convert(data, shape, fmt).unwrap();
    let t = Tensor::from_f16(ctx, &mem, &shape)
        .unwrap()
        .with_format(fmt)
        .unwrap();
    assert_eq!((t.format(), t.dtype()), (fmt, DType::F16));
    t
}

/// A tensor's values in logical order (read in memory order, permuted on the host).
fn logical(t: &Tensor) -> Vec<f32> {
    let v = t.read().unwrap();
    if t.shape().len() != 4 {
        assert_eq!(t.format(), CO);
        return v;
    }
    t.format().convert(&v, shape4(t.shape()), CO).unwrap()
}

fn logical_f16(t: &Tensor) -> Vec<f16> {
    t.format()
        .convert(&t.read_f16().unwrap(), shape4(t.shape()), CO)
        .unwrap()
}

fn abs(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs()).collect()
}

fn tols(scale: &[f32], len: usize) -> Vec<f32> {
    scale.iter().map(|&s| tol(s, len)).collect()
}

fn widen(v: &[f16]) -> Vec<f32> {
    v.iter().map(|&h| f32::from(h)).collect()
}

fn halves(rng: &mut Rng, n: usize) -> Vec<f16> {
    rng.vec(n).into_iter().map(f16::from_f32).collect()
}

fn is_invalid(e: &wgconv::Error, name: &str) -> bool {
    matches!(e.kind(), ErrorKind::InvalidParam { name: n, .. } if *n == name)
}

fn is_shape(e: &wgconv::Error) -> bool {
    matches!(e.kind(), ErrorKind::ShapeMismatch { .. })
}

fn is_unsupported(e: &wgconv::Error) -> bool {
    matches!(e.kind(), ErrorKind::UnsupportedAlgorithm { .. })
}

/// `Auto` and every concrete algorithm.
fn algorithms() -> Vec<Algorithm> {
    std::iter::once(Algorithm::Auto)
        .chain(Algorithm::ALL.iter().copied())
        .collect()
}

/// A context whose storage bindings are capped at `binding` bytes (as in `tests/bands.rs`).
fn small_ctx(binding: u64) -> Context {
    Context::with_options_blocking(ContextOptions {
        limits: Some(LimitsOverride {
            max_storage_buffer_binding_size: Some(binding),
            ..Default::default()
        }),
        ..Default::default()
    })
    .expect("GPU test needs a WebGPU adapter")
}

/// The element count of the largest window `src/gpu/layout.rs` binds (`gpu::max_window_elems`).
fn max_window_elems(ctx: &Context) -> usize {
    let l = ctx.limits();
    ((l.max_storage_buffer_binding_size - (l.min_storage_buffer_offset_alignment as u64 + 4)) / 4)
        as usize
}

// ---------------------------------------------------------------------------------------------
// 1. Tensors: formats, conversions, typed errors.

#[test]
fn memory_format_host_helpers() {
    assert_eq!(MemoryFormat::default(), CO);
    for (name, f) in [
        ("contiguous", CO),
        ("nchw", CO),
        ("kcrs", CO),
        ("channels_last", CL),
        ("nhwc", CL),
        ("krsc", CL),
    ] {
        assert_eq!(MemoryFormat::from_name(name).unwrap(), f);
    }
    assert_eq!(MemoryFormat::from_name(CL.name()).unwrap(), CL);
    assert_eq!(MemoryFormat::from_name(CO.name()).unwrap(), CO);
    let e = MemoryFormat::from_name("nwhc").unwrap_err();
    assert!(is_invalid(&e, "memory format"), "{e}");

    // `index` against the NHWC formula written out here, and `convert` in both directions.
    let s = [2, 3, 4, 5];
    let data: Vec<u32> = (0..120).collect();
    let nhwc = CO.convert(&data, s, CL).unwrap();
    for n in 0..2 {
        for c in 0..3 {
            for h in 0..4 {
                for w in 0..5 {
                    let nchw_i = ((n * 3 + c) * 4 + h) * 5 + w;
                    let nhwc_i = ((n * 4 + h) * 5 + w) * 3 + c;
                    assert_eq!(CO.index(s, [n, c, h, w]), nchw_i);
                    assert_eq!(CL.index(s, [n, c, h, w]), nhwc_i);
                    assert_eq!(nhwc[nhwc_i], data[nchw_i]);
                }
            }
        }
    }
    assert_eq!(CL.convert(&nhwc, s, CO).unwrap(), data);
    assert_eq!(CL.convert(&nhwc, s, CL).unwrap(), nhwc);
    let e = CO.convert(&data[..119], s, CL).unwrap_err();
    assert!(is_shape(&e), "{e}");
}

#[test]
fn f32_formats_round_trip_bit_exact() {
    let ctx = ctx();
    let mut rng = Rng::new(1);
    let s = [2, 3, 4, 5];
    let mut data = rng.vec(120);
    // Bit patterns a conversion through arithmetic would change: NaN payloads, -0, infinities,
    // subnormals.
    for (i, bits) in [
        0x7fc0_1234u32,
        0xffa0_0001,
        0x7f80_0001,
        0x8000_0000,
        0x7f80_0000,
        0xff80_0000,
        0x0000_0001,
        0x807f_ffff,
    ]
    .into_iter()
    .enumerate()
    {
        data[i * 13] = f32::from_bits(bits);
    }
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
    let t = Tensor::from_slice(ctx, &data, &s).unwrap();
    assert_eq!(t.format(), CO);

    let cl = t.to_format(CL).unwrap();
    assert_eq!(
        (cl.format(), cl.shape(), cl.dtype()),
        (CL, &s[..], DType::F32)
    );
    assert_eq!(
        bits(&cl.read().unwrap()),
        bits(&CO.convert(&data, s, CL).unwrap())
    );
    assert_eq!(bits(&logical(&cl)), bits(&data));
    let back = cl.to_format(CO).unwrap();
    assert_eq!(back.format(), CO);
    assert_eq!(bits(&back.read().unwrap()), bits(&data));
    // Converting to the format a tensor has is the tensor itself.
    assert_eq!(cl.to_format(CL).unwrap().read().unwrap().len(), 120);
    assert_eq!(bits(&t.to_format(CO).unwrap().read().unwrap()), bits(&data));

    // with_format reinterprets: NHWC data uploaded and viewed as channels-last converts to
    // the logical NCHW data; viewing it back as contiguous shows the memory order again.
    let nhwc = CO.convert(&data, s, CL).unwrap();
    let v = Tensor::from_slice(ctx, &nhwc, &s)
        .unwrap()
        .with_format(CL)
        .unwrap();
    assert_eq!(v.format(), CL);
    assert_eq!(bits(&v.to_format(CO).unwrap().read().unwrap()), bits(&data));
    let raw = v.with_format(CO).unwrap();
    assert_eq!(raw.format(), CO);
    assert_eq!(bits(&raw.read().unwrap()), bits(&nhwc));
    // The view shares the buffer: a write through one shows in the other.
    let w2 = rng.vec(120);
    raw.write(&w2).unwrap();
    assert_eq!(bits(&v.read().unwrap()), bits(&w2));

    // A batch of one, a single channel, single pixels: conversions degenerate gracefully.
    for s in [[1, 7, 1, 1], [3, 1, 2, 5], [1, 1, 1, 1], [4, 6, 1, 3]] {
        let n: usize = s.iter().product();
        let d = rng.vec(n);
        let t = upload(ctx, &d, s, CL);
        assert_eq!(bits(&logical(&t)), bits(&d), "{s:?}");
        assert_eq!(bits(&t.to_format(CO).unwrap().read().unwrap()), bits(&d));
    }
    // Short axes of 1..=17 elements against a multiple of 4 (the vector kernel up to 16,
    // the general one beyond), both axes short (9 taps x 4 channels, 4 x 9), both directions.
    let mut shapes: Vec<[usize; 4]> = (1..=17)
        .flat_map(|k| [[2, k, 4, 3], [2, 8, k, 1]])
        .collect();
    shapes.extend([[2, 4, 3, 3], [3, 9, 2, 2], [2, 12, 4, 4], [5, 16, 1, 16]]);
    for s in shapes {
        let n: usize = s.iter().product();
        let d = rng.vec(n);
        let t = Tensor::from_slice(ctx, &d, &s).unwrap();
        let cl = t.to_format(CL).unwrap();
        let want = CO.convert(&d, s, CL).unwrap();
        assert_eq!(
            bits(&cl.read().unwrap()),
            bits(&want),
            "{s:?} to channels-last"
        );
        let back = cl.to_format(CO).unwrap();
        assert_eq!(bits(&back.read().unwrap()), bits(&d), "{s:?} back");
    }
    // The 4 x 4 tile path (both axes multiples of 4; read from an image copy on CPU
    // adapters) keeps every bit pattern too, on a fresh context to see which kernel ran.
    {
        let fresh = &Context::new_blocking().unwrap();
        let s = [2, 20, 4, 5];
        let mut d = rng.vec(800);
        for (i, b) in [
            0x7fc0_1234u32,
            0xffa0_0001,
            0x7f80_0001,
            0x8000_0000,
            0x0000_0001,
            0x807f_ffff,
        ]
        .into_iter()
        .enumerate()
        {
            d[i * 37] = f32::from_bits(b);
        }
        let t = Tensor::from_slice(fresh, &d, &s).unwrap();
        let cl = t.to_format(CL).unwrap();
        assert_eq!(
            bits(&cl.read().unwrap()),
            bits(&CO.convert(&d, s, CL).unwrap())
        );
        assert_eq!(bits(&cl.to_format(CO).unwrap().read().unwrap()), bits(&d));
        let k = wgconv::dev::compiled_kernels(fresh);
        let image = k.iter().any(|n| n.starts_with("swap_axes4_image"));
        assert_eq!(image, fresh.is_cpu_adapter(), "{k:?}");
    }
    // Empty tensors convert to empty tensors.
    let e = Tensor::zeros(ctx, &[0, 3, 4, 4])
        .unwrap()
        .to_format(CL)
        .unwrap();
    assert_eq!((e.format(), e.read().unwrap().len()), (CL, 0));
}

#[test]
fn f16_formats_round_trip_bit_exact() {
    let ctx = ctx();
    // Every f16 bit pattern (±0, subnormals, ±inf, NaNs).
    let s = [4, 16, 32, 32];
    let all: Vec<f16> = (0..=u16::MAX).map(f16::from_bits).collect();
    let t = Tensor::from_f16(ctx, &all, &s).unwrap();
    let same = |got: &[f16], want: &[f16], what: &str| {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let ok = if w.is_nan() {
                g.is_nan()
            } else {
                g.to_bits() == w.to_bits()
            };
            assert!(
                ok,
                "{what}: index {i}: got {:#06x} want {:#06x}",
                g.to_bits(),
                w.to_bits()
            );
        }
    };
    let cl = t.to_format(CL).unwrap();
    assert_eq!((cl.format(), cl.dtype()), (CL, DType::F16));
    same(
        &cl.read_f16().unwrap(),
        &CO.convert(&all, s, CL).unwrap(),
        "f16 to channels-last",
    );
    let back = cl.to_format(CO).unwrap();
    assert_eq!((back.format(), back.dtype()), (CO, DType::F16));
    same(&back.read_f16().unwrap(), &all, "f16 back to contiguous");

    // Odd element counts: the last word's high half is padding.
    let mut rng = Rng::new(2);
    for s in [[1, 3, 3, 5], [3, 5, 1, 3], [1, 1, 1, 1]] {
        let n: usize = s.iter().product();
        let d = halves(&mut rng, n);
        let t = upload_f16(ctx, &d, s, CL);
        same(&logical_f16(&t), &d, "odd f16");
        let c = t.to_format(CO).unwrap();
        same(&c.read_f16().unwrap(), &d, "odd f16 to contiguous");
        let again = c.to_format(CL).unwrap();
        same(
            &again.read_f16().unwrap(),
            &CO.convert(&d, s, CL).unwrap(),
            "odd f16 to channels-last",
        );
    }
}

#[test]
fn format_typed_errors() {
    let ctx = ctx();
    let t = Tensor::zeros(ctx, &[2, 3, 4, 5]).unwrap();
    let cl = t.to_format(CL).unwrap();
    // reshape refuses channels-last tensors (typed), whatever the target shape.
    for shape in [&[2, 3, 20][..], &[2, 3, 4, 5], &[120]] {
        let e = cl.reshape(shape).unwrap_err();
        assert!(is_invalid(&e, "reshape"), "{e}");
    }
    let e = upload(ctx, &[0.0; 6], [1, 2, 3, 1], CL)
        .reshape(&[6])
        .unwrap_err();
    assert!(is_invalid(&e, "reshape"), "{e}");
    // ... but a contiguous view of the same storage reshapes, and so does the converted one.
    assert_eq!(
        cl.with_format(CO).unwrap().reshape(&[120]).unwrap().shape(),
        &[120]
    );
    let r = cl.to_format(CO).unwrap().reshape(&[6, 20]).unwrap();
    assert_eq!((r.shape(), r.format()), (&[6, 20][..], CO));
    // Channels-last needs a 4-D tensor: with_format and to_format refuse others.
    for shape in [&[6, 20][..], &[120], &[2, 3, 4, 5, 1], &[2, 3, 20]] {
        let t = Tensor::zeros(ctx, shape).unwrap();
        let e = t.with_format(CL).unwrap_err();
        assert!(is_shape(&e), "{shape:?}: {e}");
        let e = t.to_format(CL).unwrap_err();
        assert!(is_shape(&e), "{shape:?}: {e}");
        // Contiguous stays available to every rank.
        assert_eq!(t.with_format(CO).unwrap().format(), CO);
        assert_eq!(t.to_format(CO).unwrap().format(), CO);
    }
    let h = Tensor::zeros_of(ctx, &[4, 5], DType::F16).unwrap();
    assert!(is_shape(&h.with_format(CL).unwrap_err()));
    // Fresh tensors are contiguous; formats survive clones.
    assert_eq!(Tensor::full(ctx, &[1, 2, 3, 4], 1.0).unwrap().format(), CO);
    #[allow(clippy::redundant_clone)]
    let c = cl.clone();
    assert_eq!(c.format(), CL);
    assert!(format!("{cl:?}").contains("ChannelsLast"), "{cl:?}");
}

// ---------------------------------------------------------------------------------------------
// 2. Forward convolution: every format combination, every accepted algorithm.

struct FwdCase {
    name: &'static str,
    xs: [usize; 4],
    ws: [usize; 4],
    params: Conv2dParams,
}

fn forward_cases() -> Vec<FwdCase> {
    let d = Conv2dParams::default();
    vec![
        FwdCase {
            name: "reflect, stride 2x1",
            xs: [2, 5, 7, 6],
            ws: [6, 5, 3, 3],
            params: d
                .with_padding(Padding::Symmetric([1, 1]))
                .with_padding_mode(PaddingMode::Reflect)
                .with_stride([2, 1]),
        },
        FwdCase {
            name: "circular, groups 2, dilation 2x1",
            xs: [1, 6, 9, 8],
            ws: [4, 3, 3, 2],
            params: d
                .with_padding(Padding::Symmetric([2, 1]))
                .with_padding_mode(PaddingMode::Circular)
                .with_groups(2)
                .with_dilation([2, 1]),
        },
        FwdCase {
            name: "depthwise, channel multiplier 2",
            xs: [2, 4, 8, 9],
            ws: [8, 1, 3, 3],
            params: d.with_padding(Padding::Symmetric([1, 1])).with_groups(4),
        },
        FwdCase {
            name: "pointwise",
            xs: [2, 8, 5, 6],
            ws: [5, 8, 1, 1],
            params: d,
        },
        FwdCase {
            name: "replicate, stride 2, flip",
            xs: [1, 3, 10, 11],
            ws: [4, 3, 3, 3],
            params: d
                .with_padding(Padding::PerSide([1, 2, 0, 1]))
                .with_padding_mode(PaddingMode::Replicate)
                .with_stride([2, 2])
                .with_flip(true),
        },
    ]
}

#[test]
fn conv2d_every_format_combination_and_algorithm() {
    let ctx = ctx();
    let mut rng = Rng::new(3);
    let mut ran: Vec<Algorithm> = Vec::new();
    let mut errors = Vec::new();
    for case in forward_cases() {
        let (xs, ws, params) = (case.xs, case.ws, &case.params);
        let p = Conv2dProblem::new(xs, ws, Some(ws[0]), params).unwrap();
        let ys = p.y_shape();
        let x = rng.vec(xs.iter().product());
        let w = rng.vec(ws.iter().product());
        let b = rng.vec(ws[0]);
        let (want, shape) = cpu::conv2d(&x, xs, &w, ws, Some(&b), params).unwrap();
        assert_eq!(shape, ys);
        let t = tols(
            &cpu::conv2d_abs_scale(&p, &x, &w, Some(&b)),
            p.reduction_len() + 1,
        );
        let bt = Tensor::from_slice(ctx, &b, &[ws[0]]).unwrap();
        for xf in FORMATS {
            for wf in FORMATS {
                let xt = upload(ctx, &x, xs, xf);
                let wt = upload(ctx, &w, ws, wf);
                for a in algorithms() {
                    let what = format!("{} x {xf} w {wf} {}", case.name, a.name());
                    let can = ctx.check_algorithm(Operation::Forward, a, &p);
                    let got = ctx.conv2d_with(&xt, &wt, Some(&bt), params, a);
                    match (can, got) {
                        (Ok(()), Ok(y)) => {
                            assert_eq!(y.format(), xf, "{what}: the output follows x");
                            assert_eq!(y.shape(), ys, "{what}");
                            if let Err(e) = check(&what, &logical(&y), &want, &t) {
                                errors.push(e);
                            }
                            ran.push(a);
                        }
                        (Err(_), Err(e)) if is_unsupported(&e) => {}
                        (c, g) => errors.push(format!("{what}: check {c:?}, run {:?}", g.err())),
                    }
                }
                // The encode form writes into an output of either format, NaN-poisoned.
                for yf in FORMATS {
                    let y = Tensor::full(ctx, &ys, f32::NAN)
                        .unwrap()
                        .with_format(yf)
                        .unwrap();
                    let mut enc = ctx.device().create_command_encoder(&Default::default());
                    ctx.encode_conv2d(&mut enc, &xt, &wt, Some(&bt), params, Algorithm::Auto, &y)
                        .unwrap();
                    ctx.submit(enc).unwrap();
                    assert_eq!(y.format(), yf);
                    let what = format!("{} encode x {xf} w {wf} into y {yf}", case.name);
                    if let Err(e) = check(&what, &logical(&y), &want, &t) {
                        errors.push(e);
                    }
                }
            }
        }
    }
    eprintln!(
        "forward runs per algorithm: {:?}",
        algorithms()
            .iter()
            .map(|a| (a.name(), ran.iter().filter(|r| *r == a).count()))
            .collect::<Vec<_>>()
    );
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    for &a in Algorithm::ALL {
        if a == Algorithm::ImplicitGemm && !ctx.has_subgroups8() {
            continue;
        }
        assert!(ran.contains(&a), "{} never ran", a.name());
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Transposed convolution and gradients.

#[test]
fn conv_transpose2d_with_channels_last_operands() {
    let ctx = ctx();
    let mut rng = Rng::new(4);
    let (xs, ws) = ([2, 6, 5, 4], [6, 2, 3, 3]);
    let params = ConvTranspose2dParams::default()
        .with_stride([2, 2])
        .with_padding([1, 1])
        .with_output_padding([1, 0])
        .with_groups(2);
    let tp = params.resolve(xs, ws, Some(4)).unwrap();
    let x = rng.vec(xs.iter().product());
    let w = rng.vec(ws.iter().product());
    let b = rng.vec(4);
    let (want, ys) = cpu::conv_transpose2d(&x, xs, &w, ws, Some(&b), &params).unwrap();
    let (scale, _) =
        cpu::conv_transpose2d(&abs(&x), xs, &abs(&w), ws, Some(&abs(&b)), &params).unwrap();
    let t = tols(&scale, ws[0] * ws[2] * ws[3]);
    let bt = Tensor::from_slice(ctx, &b, &[4]).unwrap();
    let mut runs = 0;
    for xf in FORMATS {
        for wf in FORMATS {
            let (xt, wt) = (upload(ctx, &x, xs, xf), upload(ctx, &w, ws, wf));
            for a in algorithms() {
                let what = format!("transposed x {xf} w {wf} {}", a.name());
                let can = ctx.check_algorithm(Operation::Transposed, a, &tp.conv());
                match (can, ctx.conv_transpose2d(&xt, &wt, Some(&bt), &params, a)) {
                    (Ok(()), Ok(y)) => {
                        assert_eq!((y.format(), y.shape()), (xf, &ys[..]), "{what}");
                        check(&what, &logical(&y), &want, &t).unwrap();
                        runs += 1;
                    }
                    (Err(_), Err(e)) if is_unsupported(&e) => {}
                    (c, g) => panic!("{what}: check {c:?}, run {:?}", g.err()),
                }
            }
        }
    }
    assert!(runs >= 8, "{runs}");
}

struct Grads {
    dx: Vec<f32>,
    dw: Vec<f32>,
    db: Vec<f32>,
    t_dx: Vec<f32>,
    t_dw: Vec<f32>,
    t_db: Vec<f32>,
}

fn grad_refs(p: &Conv2dProblem, x: &[f32], w: &[f32], dy: &[f32]) -> Grads {
    let pix = p.n() * p.oh() * p.ow();
    Grads {
        dx: cpu::conv2d_backward_input(p, dy, w),
        dw: cpu::conv2d_backward_weight(p, x, dy),
        db: cpu::conv2d_backward_bias(p, dy),
        t_dx: tols(
            &cpu::conv2d_backward_input(p, &abs(dy), &abs(w)),
            p.k_per_group() * p.r() * p.s(),
        ),
        t_dw: tols(&cpu::conv2d_backward_weight(p, &abs(x), &abs(dy)), pix),
        t_db: tols(&cpu::conv2d_backward_bias(p, &abs(dy)), pix),
    }
}

#[test]
fn gradients_with_channels_last_operands() {
    let ctx = ctx();
    let mut rng = Rng::new(5);
    let d = Conv2dParams::default();
    let cases = [
        (
            [2, 4, 7, 6],
            [6, 2, 3, 3],
            d.with_padding(Padding::Symmetric([1, 1]))
                .with_padding_mode(PaddingMode::Reflect)
                .with_groups(2),
        ),
        (
            [1, 3, 9, 8],
            [4, 3, 3, 2],
            d.with_padding(Padding::Symmetric([1, 1]))
                .with_stride([2, 2])
                .with_dilation([1, 2]),
        ),
    ];
    let mut errors = Vec::new();
    let mut runs: Vec<(&str, Algorithm)> = Vec::new();
    let mut push = |r: Result<(), String>| {
        if let Err(e) = r {
            errors.push(e)
        }
    };
    for (xs, ws, params) in cases {
        let p = Conv2dProblem::new(xs, ws, None, &params).unwrap();
        let ys = p.y_shape();
        let x = rng.vec(xs.iter().product());
        let w = rng.vec(ws.iter().product());
        let dy = rng.vec(ys.iter().product());
        let g = grad_refs(&p, &x, &w, &dy);
        // conv2d_backward: dx follows x, dw follows w, db is 1-D; every combination.
        for xf in FORMATS {
            for wf in FORMATS {
                for dyf in FORMATS {
                    let (xt, wt, dyt) = (
                        upload(ctx, &x, xs, xf),
                        upload(ctx, &w, ws, wf),
                        upload(ctx, &dy, ys, dyf),
                    );
                    let what = format!("{xs:?} backward x {xf} w {wf} dy {dyf}");
                    let r = ctx
                        .conv2d_backward(&xt, &wt, &dyt, true, &params, Algorithm::Auto)
                        .unwrap();
                    assert_eq!(r.dx.format(), xf, "{what}: dx follows x");
                    assert_eq!(r.dw.format(), wf, "{what}: dw follows w");
                    let db = r.db.as_ref().unwrap();
                    assert_eq!((db.format(), db.shape()), (CO, &[ws[0]][..]));
                    push(check(
                        &format!("{what} dx"),
                        &logical(&r.dx),
                        &g.dx,
                        &g.t_dx,
                    ));
                    push(check(
                        &format!("{what} dw"),
                        &logical(&r.dw),
                        &g.dw,
                        &g.t_dw,
                    ));
                    push(check(
                        &format!("{what} db"),
                        &db.read().unwrap(),
                        &g.db,
                        &g.t_db,
                    ));
                }
            }
        }
        // Per algorithm: the input gradient follows dy; the weight gradient is contiguous, or
        // written into a dw of any format by the encode form; the bias gradient of any dy.
        for a in algorithms() {
            let in_ok = ctx.check_algorithm(Operation::InputGrad, a, &p);
            let wt_ok = ctx.check_algorithm(Operation::WeightGrad, a, &p);
            for f1 in FORMATS {
                for f2 in FORMATS {
                    // conv2d_backward_input: dy in f1, w in f2.
                    let (dyt, wt) = (upload(ctx, &dy, ys, f1), upload(ctx, &w, ws, f2));
                    let what = format!("{xs:?} input grad dy {f1} w {f2} {}", a.name());
                    match (&in_ok, ctx.conv2d_backward_input(&dyt, &wt, xs, &params, a)) {
                        (Ok(()), Ok(dx)) => {
                            assert_eq!(dx.format(), f1, "{what}: dx follows dy");
                            push(check(&what, &logical(&dx), &g.dx, &g.t_dx));
                            runs.push(("input_grad", a));
                        }
                        (Err(_), Err(e)) if is_unsupported(&e) => {}
                        (c, r) => push(Err(format!("{what}: check {c:?}, run {:?}", r.err()))),
                    }
                    // conv2d_backward_weight: x in f1, dy in f2; contiguous dw.
                    let (xt, dyt) = (upload(ctx, &x, xs, f1), upload(ctx, &dy, ys, f2));
                    let what = format!("{xs:?} weight grad x {f1} dy {f2} {}", a.name());
                    match (
                        &wt_ok,
                        ctx.conv2d_backward_weight(&xt, &dyt, ws, &params, a),
                    ) {
                        (Ok(()), Ok(dw)) => {
                            assert_eq!(dw.format(), CO, "{what}: dw is contiguous");
                            push(check(&what, &dw.read().unwrap(), &g.dw, &g.t_dw));
                            runs.push(("weight_grad", a));
                        }
                        (Err(_), Err(e)) if is_unsupported(&e) => {}
                        (c, r) => push(Err(format!("{what}: check {c:?}, run {:?}", r.err()))),
                    }
                    // encode_conv2d_backward_weight into a NaN-poisoned channels-last dw.
                    if wt_ok.is_ok() {
                        let dw = Tensor::full(ctx, &ws, f32::NAN)
                            .unwrap()
                            .with_format(CL)
                            .unwrap();
                        let mut enc = ctx.device().create_command_encoder(&Default::default());
                        ctx.encode_conv2d_backward_weight(&mut enc, &xt, &dyt, &params, a, &dw)
                            .unwrap();
                        ctx.submit(enc).unwrap();
                        assert_eq!(dw.format(), CL);
                        let what = format!("{what} encoded into channels-last dw");
                        push(check(&what, &logical(&dw), &g.dw, &g.t_dw));
                    }
                }
            }
        }
        // conv2d_backward_bias from a channels-last dy (and its encode form into a poisoned db).
        let dyt = upload(ctx, &dy, ys, CL);
        let db = ctx.conv2d_backward_bias(&dyt).unwrap();
        assert_eq!((db.format(), db.shape()), (CO, &[ws[0]][..]));
        push(check(
            "bias grad of channels-last dy",
            &db.read().unwrap(),
            &g.db,
            &g.t_db,
        ));
        let db = Tensor::full(ctx, &[ws[0]], f32::NAN).unwrap();
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        ctx.encode_conv2d_backward_bias(&mut enc, &dyt, &db)
            .unwrap();
        ctx.submit(enc).unwrap();
        push(check(
            "encoded bias grad",
            &db.read().unwrap(),
            &g.db,
            &g.t_db,
        ));
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    let mut counts = std::collections::BTreeMap::new();
    for (op, a) in &runs {
        *counts.entry((*op, a.name())).or_insert(0) += 1;
    }
    eprintln!("gradient runs: {counts:?}");
    for op in ["input_grad", "weight_grad"] {
        for a in [Algorithm::Direct, Algorithm::Im2colGemm] {
            assert!(runs.contains(&(op, a)), "{op} never ran {}", a.name());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 4. f16 with channels-last.

/// `got` within [`cpu::f16_tolerance`] of the f16 reference.
fn close_f16(what: &str, got: &[f16], want: &[f16], scale: &[f32], len: usize) {
    assert_eq!(got.len(), want.len(), "{what}");
    for i in 0..got.len() {
        let (g, e) = (f64::from(got[i]), f64::from(want[i]));
        let bound = cpu::f16_tolerance(e, scale[i] as f64, len);
        assert!(
            (g - e).abs() <= bound,
            "{what}: index {i}: got {g} want {e} (bound {bound})"
        );
    }
}

#[test]
fn f16_channels_last_forward_and_backward() {
    let ctx = ctx();
    let mut rng = Rng::new(6);
    let (xs, ws) = ([2, 4, 6, 7], [6, 2, 3, 3]);
    let params = Conv2dParams::default()
        .with_padding(Padding::Symmetric([1, 1]))
        .with_padding_mode(PaddingMode::Reflect)
        .with_groups(2);
    let p = Conv2dProblem::new(xs, ws, Some(6), &params).unwrap();
    let ys = p.y_shape();
    let x = halves(&mut rng, xs.iter().product());
    let w = halves(&mut rng, ws.iter().product());
    let b = halves(&mut rng, 6);
    let dy = halves(&mut rng, ys.iter().product());
    let (x32, w32, b32, dy32) = (widen(&x), widen(&w), widen(&b), widen(&dy));

    // Forward, every accepted algorithm, channels-last x with either weight format.
    let (want, _) = cpu::conv2d_f16(&x, xs, &w, ws, Some(&b), &params).unwrap();
    let scale = cpu::conv2d_abs_scale(&p, &x32, &w32, Some(&b32));
    let len = p.reduction_len() + 1;
    let bt = Tensor::from_f16(ctx, &b, &[6]).unwrap();
    let mut runs = 0;
    for (xf, wf) in [(CL, CL), (CL, CO), (CO, CL)] {
        let (xt, wt) = (upload_f16(ctx, &x, xs, xf), upload_f16(ctx, &w, ws, wf));
        for a in algorithms() {
            if ctx.check_algorithm(Operation::Forward, a, &p).is_err() {
                continue;
            }
            let y = ctx.conv2d_with(&xt, &wt, Some(&bt), &params, a).unwrap();
            assert_eq!((y.format(), y.dtype()), (xf, DType::F16));
            let what = format!("f16 forward x {xf} w {wf} {}", a.name());
            close_f16(&what, &logical_f16(&y), &want, &scale, len);
            runs += 1;
        }
    }
    assert!(runs >= 6, "{runs}");

    // Backward: every gradient rounded once to f16, in the formats of x, w (and dy for the
    // input gradient alone).
    let gw = cpu::conv2d_grad_f16(&x, xs, &w, ws, &dy, ys, true, &params).unwrap();
    let pix = p.n() * p.oh() * p.ow();
    let s_dx = cpu::conv2d_backward_input(&p, &abs(&dy32), &abs(&w32));
    let s_dw = cpu::conv2d_backward_weight(&p, &abs(&x32), &abs(&dy32));
    let s_db = cpu::conv2d_backward_bias(&p, &abs(&dy32));
    let l_dx = p.k_per_group() * p.r() * p.s();
    for (xf, wf, dyf) in [(CL, CL, CL), (CL, CO, CL), (CO, CL, CL), (CL, CL, CO)] {
        let (xt, wt, dyt) = (
            upload_f16(ctx, &x, xs, xf),
            upload_f16(ctx, &w, ws, wf),
            upload_f16(ctx, &dy, ys, dyf),
        );
        let what = format!("f16 backward x {xf} w {wf} dy {dyf}");
        let r = ctx
            .conv2d_backward(&xt, &wt, &dyt, true, &params, Algorithm::Auto)
            .unwrap();
        assert_eq!((r.dx.format(), r.dx.dtype()), (xf, DType::F16), "{what}");
        assert_eq!((r.dw.format(), r.dw.dtype()), (wf, DType::F16), "{what}");
        close_f16(
            &format!("{what} dx"),
            &logical_f16(&r.dx),
            &gw.dx,
            &s_dx,
            l_dx,
        );
        close_f16(
            &format!("{what} dw"),
            &logical_f16(&r.dw),
            &gw.dw,
            &s_dw,
            pix,
        );
        let db = r.db.unwrap().read_f16().unwrap();
        close_f16(
            &format!("{what} db"),
            &db,
            gw.db.as_ref().unwrap(),
            &s_db,
            pix,
        );

        let dx = ctx
            .conv2d_backward_input(&dyt, &wt, xs, &params, Algorithm::Auto)
            .unwrap();
        assert_eq!((dx.format(), dx.dtype()), (dyf, DType::F16), "{what}");
        close_f16(
            &format!("{what} input grad"),
            &logical_f16(&dx),
            &gw.dx,
            &s_dx,
            l_dx,
        );
        // The master-weights pattern: an f32 channels-last dw of f16 inputs (not rounded).
        let dw = Tensor::full(ctx, &ws, f32::NAN)
            .unwrap()
            .with_format(CL)
            .unwrap();
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        ctx.encode_conv2d_backward_weight(&mut enc, &xt, &dyt, &params, Algorithm::Auto, &dw)
            .unwrap();
        ctx.submit(enc).unwrap();
        let want = cpu::conv2d_backward_weight(&p, &x32, &dy32);
        check(
            &format!("{what} f32 channels-last dw"),
            &logical(&dw),
            &want,
            &tols(&s_dw, pix),
        )
        .unwrap();
    }

    // Transposed, f16 channels-last.
    let tparams = ConvTranspose2dParams::default()
        .with_stride([2, 2])
        .with_padding([1, 1]);
    let (txs, tws) = ([1, 4, 4, 5], [4, 3, 3, 3]);
    let tx = halves(&mut rng, txs.iter().product());
    let tw = halves(&mut rng, tws.iter().product());
    let (want, tys) = cpu::conv_transpose2d_f16(&tx, txs, &tw, tws, None, &tparams).unwrap();
    let (scale, _) = cpu::conv_transpose2d(
        &abs(&widen(&tx)),
        txs,
        &abs(&widen(&tw)),
        tws,
        None,
        &tparams,
    )
    .unwrap();
    let y = ctx
        .conv_transpose2d(
            &upload_f16(ctx, &tx, txs, CL),
            &upload_f16(ctx, &tw, tws, CL),
            None,
            &tparams,
            Algorithm::Auto,
        )
        .unwrap();
    assert_eq!(
        (y.format(), y.shape(), y.dtype()),
        (CL, &tys[..], DType::F16)
    );
    close_f16(
        "f16 transposed channels-last",
        &logical_f16(&y),
        &want,
        &scale,
        tws[0] * tws[2] * tws[3],
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Fused forms.

fn fused_close(what: &str, got: &[f32], want: &[f32], scale: &[f32], r: &[f32], len: usize) {
    assert_eq!(got.len(), want.len(), "{what}");
    for k in 0..got.len() {
        let t = 2.0 * tol(scale[k] + r[k].abs(), len) + 1e-5 * want[k].abs() + 1e-6;
        assert!(
            (got[k] - want[k]).abs() <= t,
            "{what}: index {k}: got {} want {}",
            got[k],
            want[k]
        );
    }
}

#[test]
fn fused_forms_with_channels_last_operands() {
    let ctx = ctx();
    let mut rng = Rng::new(7);
    let (xs, ws) = ([2, 4, 6, 7], [6, 4, 3, 3]);
    let params = Conv2dParams::default().with_padding(Padding::Symmetric([1, 1]));
    let p = params.resolve(xs, ws, Some(6)).unwrap();
    let ys = p.y_shape();
    let x = rng.vec(xs.iter().product());
    let w = rng.vec(ws.iter().product());
    let b = rng.vec(6);
    let r = rng.vec(ys.iter().product());
    let scale = cpu::conv2d_abs_scale(&p, &x, &w, Some(&b));
    let len = p.reduction_len() + 2;
    let bt = Tensor::from_slice(ctx, &b, &[6]).unwrap();
    let epilogues = [
        Epilogue::new(Activation::Relu).with_residual(Residual::Before),
        Epilogue::new(Activation::Silu).with_residual(Residual::After),
    ];
    // Algorithms that fuse the epilogue into their store (direct, implicit GEMM) and one
    // that runs the elementwise pass (im2col).
    let algos = [
        Algorithm::Auto,
        Algorithm::Direct,
        Algorithm::ImplicitGemm,
        Algorithm::Im2colGemm,
    ];
    let mut runs = 0;
    for ep in epilogues {
        let (want, _) =
            cpu::conv2d_fused(&x, xs, &w, ws, Some(&b), Some(&r), &params, &ep).unwrap();
        for (wf, rf) in [(CL, CL), (CO, CL), (CL, CO)] {
            let (xt, wt, rt) = (
                upload(ctx, &x, xs, CL),
                upload(ctx, &w, ws, wf),
                upload(ctx, &r, ys, rf),
            );
            for a in algos {
                if a != Algorithm::Auto && !ctx.can_run_forward(a, &p) {
                    continue;
                }
                let what = format!(
                    "fused {} {} x {CL} w {wf} r {rf} {}",
                    ep.activation.name(),
                    ep.residual.name(),
                    a.name()
                );
                let y = ctx
                    .conv2d_fused(&xt, &wt, Some(&bt), Some(&rt), &params, &ep, a)
                    .unwrap();
                assert_eq!(y.format(), CL, "{what}: the output follows x");
                fused_close(&what, &logical(&y), &want, &scale, &r, len);
                runs += 1;
                // The encode form into a contiguous y (the residual is read through its own
                // view, so any format combines).
                let y = Tensor::full(ctx, &ys, f32::NAN).unwrap();
                let mut enc = ctx.device().create_command_encoder(&Default::default());
                ctx.encode_conv2d_fused(
                    &mut enc,
                    &xt,
                    &wt,
                    Some(&bt),
                    Some(&rt),
                    &params,
                    &ep,
                    a,
                    &y,
                )
                .unwrap();
                ctx.submit(enc).unwrap();
                fused_close(
                    &format!("{what} into contiguous y"),
                    &y.read().unwrap(),
                    &want,
                    &scale,
                    &r,
                    len,
                );
            }
        }
    }
    assert!(runs >= 12, "{runs}");

    // Backward through the epilogue: dz, dr follow dy; dx follows x; dw follows w.
    let dy = rng.vec(ys.iter().product());
    let z = rng.vec(ys.iter().product());
    for (ep, wf) in [
        (
            Epilogue::new(Activation::Relu).with_residual(Residual::Before),
            CO,
        ),
        (
            Epilogue::new(Activation::Tanh).with_residual(Residual::After),
            CL,
        ),
    ] {
        let want = cpu::conv2d_grad_fused(&x, xs, &w, ws, &dy, ys, &z, true, &params, &ep).unwrap();
        let (xt, wt, dyt, zt) = (
            upload(ctx, &x, xs, CL),
            upload(ctx, &w, ws, wf),
            upload(ctx, &dy, ys, CL),
            upload(ctx, &z, ys, CL),
        );
        let got = ctx
            .conv2d_backward_fused(&xt, &wt, &dyt, &zt, &ep, true, &params, Algorithm::Auto)
            .unwrap();
        let what = format!("backward fused {} w {wf}", ep.activation.name());
        assert_eq!(got.grads.dx.format(), CL, "{what}");
        assert_eq!(got.grads.dw.format(), wf, "{what}");
        let dr = got.dr.as_ref().expect("a residual gradient");
        assert_eq!(dr.format(), CL, "{what}");
        let pairs = [
            ("dx", logical(&got.grads.dx), &want.grads.dx),
            ("dw", logical(&got.grads.dw), &want.grads.dw),
            (
                "db",
                got.grads.db.as_ref().unwrap().read().unwrap(),
                want.grads.db.as_ref().unwrap(),
            ),
            ("dr", logical(dr), want.dr.as_ref().unwrap()),
        ];
        for (name, g, e) in pairs {
            let m = e.iter().fold(0f32, |a, v| a.max(v.abs())).max(1.0);
            for (k, (a, b)) in g.iter().zip(e.iter()).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-4 * m,
                    "{what}: {name}[{k}] got {a} want {b}"
                );
            }
        }
        // z in another format than dy: the elementwise pass refuses it.
        let zc = upload(ctx, &z, ys, CO);
        let e = ctx
            .conv2d_backward_fused(&xt, &wt, &dyt, &zc, &ep, true, &params, Algorithm::Auto)
            .unwrap_err();
        assert!(is_invalid(&e, "z"), "{e}");
    }

    // encode_epilogue_backward: every operand in dy's format, else InvalidParam naming it.
    let ep = Epilogue::new(Activation::Relu).with_residual(Residual::Before);
    let (want_dz, want_dr) = cpu::epilogue_backward(&dy, &z, &ep).unwrap();
    let dyt = upload(ctx, &dy, ys, CL);
    let at = |f: MemoryFormat| {
        Tensor::full(ctx, &ys, f32::NAN)
            .unwrap()
            .with_format(f)
            .unwrap()
    };
    let (z_cl, z_co) = (upload(ctx, &z, ys, CL), upload(ctx, &z, ys, CO));
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    for (zt, dz, dr, name) in [
        (&z_co, at(CL), at(CL), "z"),
        (&z_cl, at(CO), at(CL), "dz"),
        (&z_cl, at(CL), at(CO), "dr"),
    ] {
        let e = ctx
            .encode_epilogue_backward(&mut enc, &dyt, zt, &ep, &dz, Some(&dr))
            .unwrap_err();
        assert!(is_invalid(&e, name), "{name}: {e}");
    }
    let (dz, dr) = (at(CL), at(CL));
    ctx.encode_epilogue_backward(&mut enc, &dyt, &z_cl, &ep, &dz, Some(&dr))
        .unwrap();
    ctx.submit(enc).unwrap();
    let exact = vec![0.0; want_dz.len()];
    check("epilogue backward dz", &logical(&dz), &want_dz, &exact).unwrap();
    check(
        "epilogue backward dr",
        &logical(&dr),
        want_dr.as_ref().unwrap(),
        &exact,
    )
    .unwrap();

    // Transposed fused: the epilogue pass runs over y's storage, so the residual must have
    // y's format (x's, for the allocating form).
    let tparams = ConvTranspose2dParams::default()
        .with_stride([2, 2])
        .with_padding([1, 1]);
    let (txs, tws) = ([1, 4, 4, 5], [4, 3, 3, 3]);
    let tx = rng.vec(txs.iter().product());
    let tw = rng.vec(tws.iter().product());
    let tb = rng.vec(3);
    let tys = tparams.output_shape(txs, tws).unwrap();
    let tr = rng.vec(tys.iter().product());
    let ep = Epilogue::new(Activation::Relu).with_residual(Residual::After);
    let (want, _) =
        cpu::conv_transpose2d_fused(&tx, txs, &tw, tws, Some(&tb), Some(&tr), &tparams, &ep)
            .unwrap();
    let (tscale, _) =
        cpu::conv_transpose2d(&abs(&tx), txs, &abs(&tw), tws, Some(&abs(&tb)), &tparams).unwrap();
    let tlen = tws[0] * tws[2] * tws[3] + 2;
    let (xcl, wcl, btt) = (
        upload(ctx, &tx, txs, CL),
        upload(ctx, &tw, tws, CL),
        Tensor::from_slice(ctx, &tb, &[3]).unwrap(),
    );
    let (r_cl, r_co) = (upload(ctx, &tr, tys, CL), upload(ctx, &tr, tys, CO));
    let e = ctx
        .conv_transpose2d_fused(
            &xcl,
            &wcl,
            Some(&btt),
            Some(&r_co),
            &tparams,
            &ep,
            Algorithm::Auto,
        )
        .unwrap_err();
    assert!(is_invalid(&e, "residual"), "{e}");
    let y = ctx
        .conv_transpose2d_fused(
            &xcl,
            &wcl,
            Some(&btt),
            Some(&r_cl),
            &tparams,
            &ep,
            Algorithm::Auto,
        )
        .unwrap();
    assert_eq!(y.format(), CL);
    fused_close(
        "transposed fused channels-last",
        &logical(&y),
        &want,
        &tscale,
        &tr,
        tlen,
    );
    // The encode form: the residual follows y, whatever x's format.
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    let y_cl = at_shape(ctx, tys, CL);
    let e = ctx
        .encode_conv_transpose2d_fused(
            &mut enc,
            &xcl,
            &wcl,
            Some(&btt),
            Some(&r_co),
            &tparams,
            &ep,
            Algorithm::Auto,
            &y_cl,
        )
        .unwrap_err();
    assert!(is_invalid(&e, "residual"), "{e}");
    let y_co = at_shape(ctx, tys, CO);
    ctx.encode_conv_transpose2d_fused(
        &mut enc,
        &xcl,
        &wcl,
        Some(&btt),
        Some(&r_co),
        &tparams,
        &ep,
        Algorithm::Auto,
        &y_co,
    )
    .unwrap();
    ctx.submit(enc).unwrap();
    fused_close(
        "transposed fused into contiguous y",
        &y_co.read().unwrap(),
        &want,
        &tscale,
        &tr,
        tlen,
    );
}

fn at_shape(ctx: &Context, shape: [usize; 4], f: MemoryFormat) -> Tensor {
    Tensor::full(ctx, &shape, f32::NAN)
        .unwrap()
        .with_format(f)
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// 6. Conversions beyond one storage binding, in tiles.

#[test]
fn conversions_beyond_one_binding_run_in_tiles() {
    let ctx = &small_ctx(2048);
    let max = max_window_elems(ctx);
    let mut rng = Rng::new(8);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
    // [N, C, H·W] shapes: (a) one image beyond a window with C and H·W within one, the
    // (row-block, column-block) tiles; (b) images within one window, batched in whole
    // entries over several launches; (c) one channel whose plane alone exceeds a window.
    let s_tiles = [2, 12, 9, 10];
    let s_entries = [20, 3, 4, 5];
    let s_plane = [2, 1, 30, 31];
    // (d) as (a) with both axes multiples of 4: the 4 x 4 vector tiles (`swap_axes4`).
    let s_vec4 = [2, 12, 8, 10];
    let (c, hw) = (s_tiles[1], s_tiles[2] * s_tiles[3]);
    assert!(c * hw > max && c.max(hw) <= max, "max {max}: no tiles");
    assert!(
        (4 * 80..12 * 80).contains(&max),
        "max {max}: no vector tiles"
    );
    assert!(
        60 <= max && 20 * 60 > 2 * max,
        "max {max}: no whole entries"
    );
    assert!(930 > max, "max {max}");
    for s in [s_tiles, s_entries, s_plane, s_vec4] {
        let n: usize = s.iter().product();
        let data = rng.vec(n);
        let t = Tensor::from_slice(ctx, &data, &s).unwrap();
        let cl = t.to_format(CL).unwrap();
        assert_eq!(
            bits(&cl.read().unwrap()),
            bits(&CO.convert(&data, s, CL).unwrap()),
            "{s:?} to channels-last"
        );
        let back = cl.to_format(CO).unwrap();
        assert_eq!(bits(&back.read().unwrap()), bits(&data), "{s:?} back");
        // f16: converted through f32 scratch twice as large.
        let h = halves(&mut rng, n);
        let t = upload_f16(ctx, &h, s, CL);
        let c = t.to_format(CO).unwrap();
        let hb = |v: &[f16]| v.iter().map(|x| x.to_bits()).collect::<Vec<u16>>();
        assert_eq!(hb(&c.read_f16().unwrap()), hb(&h), "{s:?} f16");
    }
    assert!(wgconv::dev::compiled_kernels(ctx).contains(&"swap_axes"));

    // A convolution whose channels-last input, output, and input gradient each exceed one
    // binding (and one window per image), every algorithm the context accepts.
    let params = Conv2dParams::default()
        .with_padding(Padding::Symmetric([1, 1]))
        .with_padding_mode(PaddingMode::Reflect)
        .with_groups(4);
    let (xs, ws) = (s_tiles, [8, 3, 3, 3]);
    let p = Conv2dProblem::new(xs, ws, Some(8), &params).unwrap();
    let ys = p.y_shape();
    assert!(
        ys[1] * ys[2] * ys[3] > max,
        "{ys:?}: the output does not tile"
    );
    let x = rng.vec(xs.iter().product());
    let w = rng.vec(ws.iter().product());
    let b = rng.vec(8);
    let want = cpu::conv2d_problem(&p, &x, &w, Some(&b));
    let t = tols(
        &cpu::conv2d_abs_scale(&p, &x, &w, Some(&b)),
        p.reduction_len() + 1,
    );
    let (xt, wt, bt) = (
        upload(ctx, &x, xs, CL),
        upload(ctx, &w, ws, CL),
        Tensor::from_slice(ctx, &b, &[8]).unwrap(),
    );
    let mut ran = Vec::new();
    for a in algorithms() {
        let can = ctx.check_algorithm(Operation::Forward, a, &p);
        match (can, ctx.conv2d_with(&xt, &wt, Some(&bt), &params, a)) {
            (Ok(()), Ok(y)) => {
                assert_eq!(y.format(), CL);
                check(
                    &format!("small binding {}", a.name()),
                    &logical(&y),
                    &want,
                    &t,
                )
                .unwrap();
                ran.push(a);
            }
            (Err(_), Err(e)) if is_unsupported(&e) => {}
            (c, g) => panic!("{}: check {c:?}, run {:?}", a.name(), g.err()),
        }
    }
    assert!(
        ran.contains(&Algorithm::Direct) && ran.len() >= 3,
        "{ran:?}"
    );
    let dy = rng.vec(ys.iter().product());
    let dyt = upload(ctx, &dy, ys, CL);
    let g = grad_refs(&p, &x, &w, &dy);
    let r = ctx
        .conv2d_backward(&xt, &wt, &dyt, true, &params, Algorithm::Auto)
        .unwrap();
    assert_eq!((r.dx.format(), r.dw.format()), (CL, CL));
    check("small binding dx", &logical(&r.dx), &g.dx, &g.t_dx).unwrap();
    check("small binding dw", &logical(&r.dw), &g.dw, &g.t_dw).unwrap();
    check(
        "small binding db",
        &r.db.unwrap().read().unwrap(),
        &g.db,
        &g.t_db,
    )
    .unwrap();

    // One channel whose plane exceeds a window (grayscale images): channels-last and
    // contiguous storage coincide, and the convolution runs as it does on contiguous data.
    let (xs, ws) = (s_plane, [2, 1, 3, 3]);
    let params = Conv2dParams::default().with_padding(Padding::Symmetric([1, 1]));
    let p = Conv2dProblem::new(xs, ws, None, &params).unwrap();
    let x = rng.vec(xs.iter().product());
    let w = rng.vec(ws.iter().product());
    let want = cpu::conv2d_problem(&p, &x, &w, None);
    let t = tols(&cpu::conv2d_abs_scale(&p, &x, &w, None), p.reduction_len());
    let y = ctx
        .conv2d(
            &upload(ctx, &x, xs, CL),
            &upload(ctx, &w, ws, CL),
            None,
            &params,
        )
        .unwrap();
    assert_eq!(y.format(), CL);
    check("one-channel plane beyond a window", &logical(&y), &want, &t).unwrap();

    // Weights whose every filter exceeds a window ([K, C, R·S] tiles) and the whole weight one
    // binding: the direct algorithm's weight windows, on a channels-last copy.
    let (xs, ws) = ([1, 12, 9, 10], [2, 12, 7, 7]);
    assert!(12 * 49 > max, "the weights do not tile");
    let params = Conv2dParams::default().with_padding(Padding::Symmetric([3, 3]));
    let p = Conv2dProblem::new(xs, ws, None, &params).unwrap();
    let x = rng.vec(xs.iter().product());
    let w = rng.vec(ws.iter().product());
    let want = cpu::conv2d_problem(&p, &x, &w, None);
    let t = tols(&cpu::conv2d_abs_scale(&p, &x, &w, None), p.reduction_len());
    let (xt, wt) = (upload(ctx, &x, xs, CL), upload(ctx, &w, ws, CL));
    for a in [Algorithm::Auto, Algorithm::Direct] {
        let y = ctx.conv2d_with(&xt, &wt, None, &params, a).unwrap();
        assert_eq!(y.format(), CL);
        let what = format!("weights beyond one binding {}", a.name());
        check(&what, &logical(&y), &want, &t).unwrap();
    }

    // f16 channels-last beyond one binding: unpacked in windows, swapped in tiles, packed
    // in windows, forward and backward.
    let params = Conv2dParams::default()
        .with_padding(Padding::Symmetric([1, 1]))
        .with_groups(4);
    let (xs, ws) = (s_tiles, [8, 3, 3, 3]);
    let p = Conv2dProblem::new(xs, ws, None, &params).unwrap();
    let ys = p.y_shape();
    let x = halves(&mut rng, xs.iter().product());
    let w = halves(&mut rng, ws.iter().product());
    let dy = halves(&mut rng, ys.iter().product());
    let (x32, w32, dy32) = (widen(&x), widen(&w), widen(&dy));
    let (want, _) = cpu::conv2d_f16(&x, xs, &w, ws, None, &params).unwrap();
    let (xt, wt, dyt) = (
        upload_f16(ctx, &x, xs, CL),
        upload_f16(ctx, &w, ws, CL),
        upload_f16(ctx, &dy, ys, CL),
    );
    let y = ctx.conv2d(&xt, &wt, None, &params).unwrap();
    assert_eq!((y.format(), y.dtype()), (CL, DType::F16));
    let scale = cpu::conv2d_abs_scale(&p, &x32, &w32, None);
    close_f16(
        "f16 small binding y",
        &logical_f16(&y),
        &want,
        &scale,
        p.reduction_len(),
    );
    let gw = cpu::conv2d_grad_f16(&x, xs, &w, ws, &dy, ys, false, &params).unwrap();
    let r = ctx
        .conv2d_backward(&xt, &wt, &dyt, false, &params, Algorithm::Auto)
        .unwrap();
    assert_eq!((r.dx.format(), r.dw.format()), (CL, CL));
    let s_dx = cpu::conv2d_backward_input(&p, &abs(&dy32), &abs(&w32));
    let s_dw = cpu::conv2d_backward_weight(&p, &abs(&x32), &abs(&dy32));
    let l_dx = p.k_per_group() * p.r() * p.s();
    close_f16(
        "f16 small binding dx",
        &logical_f16(&r.dx),
        &gw.dx,
        &s_dx,
        l_dx,
    );
    let pix = p.n() * p.oh() * p.ow();
    close_f16(
        "f16 small binding dw",
        &logical_f16(&r.dw),
        &gw.dw,
        &s_dw,
        pix,
    );
}

// ---------------------------------------------------------------------------------------------
// 7. ndarray.

#[cfg(feature = "ndarray")]
#[test]
fn to_array4_of_channels_last_is_logical() {
    let ctx = ctx();
    let mut rng = Rng::new(9);
    let s = [2, 3, 4, 5];
    let data = rng.vec(120);
    let t = upload(ctx, &data, s, CL);
    let a = t.to_array4().unwrap();
    assert_eq!(a.dim(), (2, 3, 4, 5));
    assert_eq!(a.iter().copied().collect::<Vec<_>>(), data);
    assert_eq!(a[[1, 2, 3, 4]], data[CO.index(s, [1, 2, 3, 4])]);
    // The tensor is unchanged (still channels-last, NHWC storage).
    assert_eq!(t.format(), CL);
    assert_eq!(t.read().unwrap(), CO.convert(&data, s, CL).unwrap());
    // A channels-last result of a convolution reads back in logical order too.
    let w = rng.vec(2 * 3 * 3 * 3);
    let params = Conv2dParams::default().with_padding(Padding::Symmetric([1, 1]));
    let (want, _) = cpu::conv2d(&data, s, &w, [2, 3, 3, 3], None, &params).unwrap();
    let y = ctx
        .conv2d(&t, &upload(ctx, &w, [2, 3, 3, 3], CO), None, &params)
        .unwrap();
    assert_eq!(y.format(), CL);
    let got: Vec<f32> = y.to_array4().unwrap().iter().copied().collect();
    let p = params.resolve(s, [2, 3, 3, 3], None).unwrap();
    let t = tols(
        &cpu::conv2d_abs_scale(&p, &data, &w, None),
        p.reduction_len(),
    );
    check("to_array4 of a channels-last output", &got, &want, &t).unwrap();
}
