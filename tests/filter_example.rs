//! Tests of `examples/filter.rs`, included as a module: kernel table, `--kernel-values`
//! parsing, argument parsing, normalisation, border masks, the GPU pipeline against the CPU
//! reference, the border-bias claim, and end-to-end runs on small PNG files.

mod common;

#[path = "../examples/filter.rs"]
#[allow(dead_code)]
mod filter;

use std::path::PathBuf;

use common::{ctx, Rng};
use filter::{
    apply, border_bias, border_masks, border_report, kernel_names, named_kernel, output_shape,
    parse_args, parse_kernel_values, run, to_bytes, Backend, Command, Failure, Kernel, Normalize,
    Step, KERNELS, MODES, SOBEL_MAG,
};
use wgconv::PaddingMode;

fn args(s: &[&str]) -> Vec<String> {
    s.iter().map(|a| a.to_string()).collect()
}

fn kernel(rows: usize, cols: usize, values: &[f32]) -> Kernel {
    Kernel {
        rows,
        cols,
        values: values.to_vec(),
    }
}

/// A fresh directory for one test's files.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wgconv-filter-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a temp dir");
    dir
}

/// Writes a small RGB PNG with a gradient, a bright square and some noise.
fn write_test_png(path: &std::path::Path, w: u32, h: u32) {
    let mut rng = Rng::new(7);
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let square = (w / 4..w / 2).contains(&x) && (h / 4..h / 2).contains(&y);
        let base = if square {
            230.0
        } else {
            40.0 + 120.0 * x as f32 / w as f32
        };
        let n = 10.0 * rng.f32();
        image::Rgb([
            (base + n).clamp(0.0, 255.0) as u8,
            (base * 0.8).clamp(0.0, 255.0) as u8,
            (255.0 - base).clamp(0.0, 255.0) as u8,
        ])
    });
    img.save(path).expect("write test png");
}

#[test]
fn kernel_values_parse_good_inputs() {
    let k = parse_kernel_values("1,2,3;4,5,6;7,8,9").unwrap();
    assert_eq!(k, kernel(3, 3, &[1., 2., 3., 4., 5., 6., 7., 8., 9.]));
    let k = parse_kernel_values(" -1 , 0 ,1 ;-2,0,2; -1,0,1 ").unwrap();
    assert_eq!(k, kernel(3, 3, &[-1., 0., 1., -2., 0., 2., -1., 0., 1.]));
    assert_eq!(parse_kernel_values("0.25").unwrap(), kernel(1, 1, &[0.25]));
    assert_eq!(
        parse_kernel_values("1,-1").unwrap(),
        kernel(1, 2, &[1., -1.])
    );
    assert_eq!(
        parse_kernel_values("1;-1").unwrap(),
        kernel(2, 1, &[1., -1.])
    );
    assert_eq!(
        parse_kernel_values("1e-1,+2.5,-.5,3;0,0,0,0").unwrap(),
        kernel(2, 4, &[0.1, 2.5, -0.5, 3., 0., 0., 0., 0.])
    );
    let big = vec!["1"; 64].join(",");
    let k = parse_kernel_values(&big).unwrap();
    assert_eq!((k.rows, k.cols), (1, 64));
}

#[test]
fn kernel_values_reject_bad_inputs() {
    let cases = [
        ("", "empty"),
        ("   ", "empty"),
        (";", "row 1 is empty"),
        ("1,2;", "row 2 is empty"),
        ("1,2;;3,4", "row 2 is empty"),
        ("1,,2", "row 1, column 2 is empty"),
        ("1,2,", "row 1, column 3 is empty"),
        ("1,2;3", "row 2 has 1 value(s) but row 1 has 2"),
        ("1;2,3", "row 2 has 2 value(s) but row 1 has 1"),
        ("a,b", "`a` is not a number"),
        ("1 2,3", "`1 2` is not a number"),
        ("0x10", "is not a number"),
        ("nan", "not a finite number"),
        ("1,inf", "not a finite number"),
        ("1e39", "not a finite number"),
    ];
    for (input, want) in cases {
        match parse_kernel_values(input) {
            Ok(k) => panic!("{input:?} parsed as {k:?}"),
            Err(e) => {
                assert!(e.contains(want), "{input:?}: {e:?} lacks {want:?}");
                assert!(!e.contains('\n'), "{e:?}");
            }
        }
    }
    let too_big = vec!["1"; 65].join(",");
    assert!(parse_kernel_values(&too_big)
        .unwrap_err()
        .contains("too large"));
}

#[test]
fn named_kernels_have_the_documented_sums() {
    let want = [
        "identity",
        "box3",
        "box5",
        "gauss3",
        "gauss5",
        "sharpen",
        "emboss",
        "sobel-x",
        "sobel-y",
        "laplace4",
        "laplace8",
        "prewitt-x",
        "prewitt-y",
        "sobel-mag",
    ];
    assert_eq!(kernel_names(), want);
    for name in [
        "box3", "box5", "gauss3", "gauss5", "identity", "sharpen", "emboss",
    ] {
        let k = named_kernel(name).unwrap().kernel();
        assert!((k.sum() - 1.0).abs() < 1e-6, "{name}: sum {}", k.sum());
        assert!(!Step::named(name).unwrap().is_edge(), "{name}");
    }
    for name in [
        "sobel-x",
        "sobel-y",
        "laplace4",
        "laplace8",
        "prewitt-x",
        "prewitt-y",
    ] {
        let k = named_kernel(name).unwrap().kernel();
        assert_eq!(k.sum(), 0.0, "{name}");
        assert!(Step::named(name).unwrap().is_edge(), "{name}");
    }
    // Blurs are non-negative and symmetric; gradients are antisymmetric.
    for name in ["box3", "box5", "gauss3", "gauss5"] {
        let k = named_kernel(name).unwrap().kernel();
        assert!(k.values.iter().all(|&v| v > 0.0), "{name}");
        let rev: Vec<f32> = k.values.iter().rev().copied().collect();
        assert_eq!(rev, k.values, "{name}");
    }
    for name in ["sobel-x", "sobel-y", "prewitt-x", "prewitt-y"] {
        let k = named_kernel(name).unwrap().kernel();
        let rev: Vec<f32> = k.values.iter().rev().map(|v| -v).collect();
        assert_eq!(rev, k.values, "{name}");
    }
    for k in KERNELS {
        assert_eq!(k.weights.len(), k.size * k.size, "{}", k.name);
    }
    match Step::named(SOBEL_MAG).unwrap() {
        Step::Magnitude { gx, gy, .. } => {
            assert_eq!(gx, named_kernel("sobel-x").unwrap().kernel());
            assert_eq!(gy, named_kernel("sobel-y").unwrap().kernel());
        }
        other => panic!("{other:?}"),
    }
    assert!(Step::named(SOBEL_MAG).unwrap().is_edge());
    assert!(Step::named("gauss7").is_none());
    // The help lists every kernel.
    let help = filter::help_text();
    for name in kernel_names() {
        assert!(
            help.contains(&format!("    {name} ")),
            "{name} missing in --help"
        );
    }
}

#[test]
fn same_padding_keeps_the_size() {
    assert_eq!(kernel(3, 5, &[0.0; 15]).same_padding(), [1, 1, 2, 2]);
    assert_eq!(kernel(2, 4, &[0.0; 8]).same_padding(), [0, 1, 1, 2]);
    assert_eq!(kernel(1, 1, &[1.0]).same_padding(), [0, 0, 0, 0]);
    for (r, s) in [(1, 1), (2, 3), (3, 2), (4, 4), (5, 1), (6, 7)] {
        let step = Step::Conv {
            name: "k".into(),
            kernel: kernel(r, s, &vec![1.0; r * s]),
        };
        for mode in MODES {
            let out = output_shape([1, 3, 17, 12], std::slice::from_ref(&step), mode, 1).unwrap();
            assert_eq!(out, [1, 3, 17, 12], "{r}x{s} {mode:?}");
        }
        let out = output_shape(
            [1, 3, 17, 12],
            std::slice::from_ref(&step),
            PaddingMode::Zeros,
            2,
        )
        .unwrap();
        assert_eq!(out, [1, 3, 9, 6]);
    }
}

#[test]
fn argument_parsing() {
    let Command::Run(o) = parse_args(&args(&[
        "in.png",
        "--kernel",
        "gauss3",
        "--kernel-values",
        "-1,1",
        "--kernel=sobel-mag",
        "--padding",
        "reflect",
        "--stride=2",
        "--normalize",
        "minmax",
        "--output",
        "out.png",
        "--check",
        "--border-report",
    ]))
    .unwrap() else {
        panic!("expected a run")
    };
    assert_eq!(o.input, PathBuf::from("in.png"));
    let names: Vec<&str> = o.steps.iter().map(Step::name).collect();
    assert_eq!(names, ["gauss3", "custom 1x2", "sobel-mag"]);
    assert_eq!(o.mode, PaddingMode::Reflect);
    assert_eq!(o.stride, 2);
    assert_eq!(o.normalize, Normalize::MinMax);
    assert_eq!(o.output, Some(PathBuf::from("out.png")));
    assert!(o.check && o.border_report);

    // Defaults.
    let Command::Run(o) =
        parse_args(&args(&["in.jpg", "--kernel", "box3", "--output", "o.png"])).unwrap()
    else {
        panic!("expected a run")
    };
    assert_eq!(
        (o.mode, o.stride, o.normalize, o.check, o.border_report),
        (PaddingMode::Zeros, 1, Normalize::Auto, false, false)
    );
    // Only a report, no output file.
    assert!(parse_args(&args(&["in.png", "--kernel", "box3", "--border-report"])).is_ok());
    // A custom kernel starting with a minus sign is a value, not a flag.
    let Command::Run(o) =
        parse_args(&args(&["in.png", "--kernel-values", "-1,1", "--check"])).unwrap()
    else {
        panic!("expected a run")
    };
    assert_eq!(o.steps[0].window().values, [-1.0, 1.0]);
    // clap's conventions: --help (long, with the kernel table), -h (short), --version.
    let Command::Help(long) = parse_args(&args(&["--help"])).unwrap() else {
        panic!("expected the help")
    };
    assert!(long.contains("Kernels:") && long.contains("--border-report"));
    assert!(long.contains("Exit codes:"), "{long}");
    let Command::Help(short) = parse_args(&args(&["in.png", "-h"])).unwrap() else {
        panic!("expected the help")
    };
    assert!(short.contains("Usage: filter") && !short.contains("Kernels:"));
    let Command::Version(version) = parse_args(&args(&["--version"])).unwrap() else {
        panic!("expected the version")
    };
    assert_eq!(
        version.trim_end(),
        format!("filter {}", env!("CARGO_PKG_VERSION"))
    );

    let bad: &[(&[&str], &str)] = &[
        (&[], "Usage: filter"),
        (
            &["in.png", "--output", "o.png"],
            "required arguments were not provided",
        ),
        (
            &["in.png", "--kernel", "box3"],
            "required arguments were not provided",
        ),
        (
            &["in.png", "--kernel", "blur", "--output", "o.png"],
            "invalid value 'blur' for '--kernel <NAME>'",
        ),
        (
            &["in.png", "--kernel"],
            "a value is required for '--kernel <NAME>'",
        ),
        (
            &["in.png", "--kernel", "box3", "--output"],
            "a value is required for '--output <OUT>'",
        ),
        (
            &["in.png", "--kernel", "box3", "--output="],
            "'--output <OUT>'",
        ),
        (
            &["in.png", "--kernel", "box3", "--stride", "0", "--check"],
            "0 is not in 1..=1024",
        ),
        (
            &["in.png", "--kernel", "box3", "--stride", "-1", "--check"],
            "'-1'",
        ),
        (
            &["in.png", "--kernel", "box3", "--stride", "1.5", "--check"],
            "invalid value '1.5' for '--stride <N>'",
        ),
        (
            &[
                "in.png",
                "--kernel",
                "box3",
                "--padding",
                "mirror",
                "--check",
            ],
            "invalid value 'mirror' for '--padding <MODE>'",
        ),
        (
            &[
                "in.png",
                "--kernel",
                "box3",
                "--normalize",
                "log",
                "--check",
            ],
            "invalid value 'log' for '--normalize <MODE>'",
        ),
        (
            &["in.png", "--kernel", "box3", "--frobnicate", "--check"],
            "unexpected argument '--frobnicate'",
        ),
        (
            &["in.png", "--kernel", "box3", "-x", "--check"],
            "unexpected argument '-x'",
        ),
        (
            &["in.png", "--kernel", "box3", "--check=yes"],
            "unexpected value 'yes' for '--check'",
        ),
        (
            &["a.png", "b.png", "--kernel", "box3", "--check"],
            "unexpected argument 'b.png'",
        ),
        (
            &["in.png", "--kernel-values", "1,2;3", "--check"],
            "row 2 has 1 value(s)",
        ),
        (
            &[
                "in.png", "--kernel", "box3", "--stride", "2", "--stride", "2", "--check",
            ],
            "cannot be used multiple times",
        ),
        (
            &[
                "in.png",
                "--kernel",
                "box3",
                "--padding",
                "zeros",
                "--padding=reflect",
                "--check",
            ],
            "cannot be used multiple times",
        ),
        // Help does not rescue a bad argument before it.
        (&["--bogus", "--help"], "unexpected argument '--bogus'"),
    ];
    for (argv, want) in bad {
        match parse_args(&args(argv)) {
            Err(f @ Failure::Usage(_)) => {
                assert_eq!(f.exit_code(), 2);
                let msg = f.to_string();
                assert!(msg.contains(want), "{argv:?}: {msg:?} lacks {want:?}");
                if !argv.is_empty() {
                    assert!(msg.starts_with("error: "), "{msg:?}");
                    assert!(msg.contains("try '--help'"), "{msg:?}");
                }
            }
            other => panic!("{argv:?}: expected a usage error, got {other:?}"),
        }
    }
    assert_eq!(Failure::Runtime("x".into()).exit_code(), 1);
    assert_eq!(Failure::Mismatch("x".into()).exit_code(), 1);
}

#[test]
fn normalisation() {
    let v = [-2.0, -1.0, 0.0, 0.5, 1.0, 2.0];
    assert_eq!(to_bytes(&v, Normalize::Abs), [255, 128, 0, 64, 128, 255]);
    assert_eq!(to_bytes(&v, Normalize::MinMax), [0, 64, 128, 159, 191, 255]);
    assert_eq!(to_bytes(&v, Normalize::Clamp), [0, 0, 0, 128, 255, 255]);
    // Constant and all-zero inputs, and non-finite values, never divide by zero or panic.
    assert_eq!(to_bytes(&[0.0; 4], Normalize::Abs), [0; 4]);
    assert_eq!(to_bytes(&[0.7; 4], Normalize::MinMax), [0; 4]);
    assert_eq!(
        to_bytes(&[f32::NAN, 1.0, f32::INFINITY, -3.0], Normalize::Abs),
        [0, 85, 255, 255]
    );
    assert_eq!(to_bytes(&[f32::NAN, 0.5], Normalize::Clamp), [0, 128]);
    assert_eq!(
        to_bytes(&[f32::NAN, 1.0, 3.0], Normalize::MinMax),
        [0, 0, 255]
    );

    let steps =
        |names: &[&str]| -> Vec<Step> { names.iter().map(|n| Step::named(n).unwrap()).collect() };
    assert_eq!(
        Normalize::Auto.resolve(&steps(&["gauss3"])),
        Normalize::Clamp
    );
    assert_eq!(
        Normalize::Auto.resolve(&steps(&["sharpen", "emboss"])),
        Normalize::Clamp
    );
    assert_eq!(
        Normalize::Auto.resolve(&steps(&["sobel-x"])),
        Normalize::Abs
    );
    assert_eq!(
        Normalize::Auto.resolve(&steps(&["sobel-x", "gauss3"])),
        Normalize::Abs
    );
    assert_eq!(
        Normalize::Auto.resolve(&steps(&["gauss5", "sobel-mag"])),
        Normalize::Abs
    );
    assert_eq!(
        Normalize::MinMax.resolve(&steps(&["sobel-x"])),
        Normalize::MinMax
    );
}

#[test]
fn border_masks_follow_the_receptive_field() {
    let s =
        |names: &[&str]| -> Vec<Step> { names.iter().map(|n| Step::named(n).unwrap()).collect() };
    let count = |m: &[bool]| m.iter().filter(|b| **b).count();
    let (r, c) = border_masks(10, 8, &s(&["gauss3"]), 1);
    assert_eq!(
        r,
        [true, false, false, false, false, false, false, false, false, true]
    );
    assert_eq!((c.len(), count(&c), c[0], c[7]), (8, 2, true, true));
    // 5x5 then 3x3: the band is 2 + 1 = 3 wide.
    let (r, _) = border_masks(12, 12, &s(&["gauss5", "sobel-mag"]), 1);
    assert_eq!(
        r.iter().map(|&b| b as u8).collect::<Vec<_>>(),
        [1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 1]
    );
    // Stride 2 on 9 rows: outputs read rows 2o-1 ..= 2o+1.
    let (r, _) = border_masks(9, 9, &s(&["box3"]), 2);
    assert_eq!(r, [true, false, false, false, true]);
    // Even kernel: padding only after.
    let even = Step::Conv {
        name: "d".into(),
        kernel: kernel(1, 2, &[1.0, -1.0]),
    };
    let (r, c) = border_masks(4, 4, &[even], 1);
    assert_eq!(r, [false; 4]);
    assert_eq!(c, [false, false, false, true]);
    // border_bias: mean |y| border - mean |y| interior.
    let y = [
        1.0, 1.0, 1.0, //
        1.0, -0.5, 1.0, //
        1.0, 1.0, 1.0,
    ];
    let m = [true, false, true];
    assert_eq!(border_bias(&y, [1, 1, 3, 3], &m, &m), Some(0.5));
    assert_eq!(border_bias(&y, [1, 1, 3, 3], &[true; 3], &m), None);
}

/// Every named kernel, a custom even-sized one, every padding mode and two strides: the
/// GPU pipeline against the CPU reference.
#[test]
fn gpu_pipeline_matches_cpu_reference() {
    let ctx = ctx();
    let mut rng = Rng::new(11);
    let shape = [1, 3, 19, 23];
    let x: Vec<f32> = rng.vec(3 * 19 * 23).iter().map(|v| 0.5 + 0.5 * v).collect();
    let mut pipelines: Vec<Vec<Step>> = kernel_names()
        .into_iter()
        .map(|n| vec![Step::named(n).unwrap()])
        .collect();
    pipelines.push(vec![
        Step::named("gauss5").unwrap(),
        Step::Conv {
            name: "custom".into(),
            kernel: parse_kernel_values("1,2,-1,0.5;0,-3,1,1").unwrap(),
        },
        Step::named("sobel-mag").unwrap(),
    ]);
    for steps in &pipelines {
        for mode in MODES {
            for stride in [1, 2] {
                let label = format!(
                    "{:?} {mode:?} stride {stride}",
                    steps.iter().map(Step::name).collect::<Vec<_>>()
                );
                let (got, gs) = apply(Backend::Gpu(ctx), &x, shape, steps, mode, stride)
                    .unwrap_or_else(|e| panic!("{label}: {e}"));
                let (want, ws) = apply(Backend::Cpu, &x, shape, steps, mode, stride)
                    .unwrap_or_else(|e| panic!("{label}: {e}"));
                assert_eq!(gs, ws, "{label}");
                assert_eq!(gs, output_shape(shape, steps, mode, stride).unwrap());
                let (err, scale) = filter::max_abs_error(&got, &want);
                assert!(err <= 1e-5 * scale.max(1.0), "{label}: max abs error {err}");
            }
        }
    }
}

/// On a constant image only the padding can create a response at the border: zero
/// padding makes edge filters respond there (bias > 0) and darkens blurs (bias < 0);
/// reflect, replicate and circular padding continue the constant, so the bias is ~0.
#[test]
fn border_bias_on_a_constant_image() {
    let ctx = ctx();
    let shape = [1, 3, 24, 32];
    let x = vec![filter::CONSTANT_LEVEL; 3 * 24 * 32];
    let edges = [
        "sobel-x",
        "sobel-y",
        "laplace4",
        "laplace8",
        "prewitt-x",
        "prewitt-y",
        "sobel-mag",
    ];
    let blurs = ["box3", "box5", "gauss3", "gauss5"];
    for name in edges
        .iter()
        .chain(&blurs)
        .chain(&["identity", "sharpen", "emboss"])
    {
        let steps = vec![Step::named(name).unwrap()];
        for backend in [Backend::Gpu(ctx), Backend::Cpu] {
            let rows = border_report(backend, &x, shape, &steps, 1);
            assert_eq!(rows.len(), 4);
            for row in &rows {
                let label = format!("{name} {:?} {backend:?}", row.mode);
                let c = *row
                    .constant
                    .as_ref()
                    .unwrap_or_else(|e| panic!("{label}: {e}"));
                // The "real" image is the same constant here.
                assert_eq!(row.image.as_ref().ok(), Some(&c), "{label}");
                match row.mode {
                    PaddingMode::Zeros if edges.contains(name) => {
                        assert!(
                            c > 0.1,
                            "{label}: zero padding should create edges, bias {c}"
                        )
                    }
                    PaddingMode::Zeros if blurs.contains(name) => {
                        assert!(c < -0.05, "{label}: zero padding should darken, bias {c}")
                    }
                    PaddingMode::Zeros if *name == "identity" => {
                        assert!(c.abs() < 1e-6, "{label}: {c}")
                    }
                    PaddingMode::Zeros => assert!(c.abs() > 0.05, "{label}: {c}"),
                    _ => assert!(c.abs() < 1e-6, "{label}: bias {c}"),
                }
            }
        }
    }
    // A chain and a stride keep the claim.
    let steps = vec![
        Step::named("gauss5").unwrap(),
        Step::named("sobel-mag").unwrap(),
    ];
    let rows = border_report(Backend::Gpu(ctx), &x, shape, &steps, 2);
    for row in rows {
        let c = row.constant.unwrap();
        if row.mode == PaddingMode::Zeros {
            assert!(c > 0.1, "{c}");
        } else {
            assert!(c.abs() < 1e-6, "{:?}: {c}", row.mode);
        }
    }
}

#[test]
fn end_to_end_runs() {
    let dir = temp_dir("e2e");
    let input = dir.join("in.png");
    write_test_png(&input, 40, 30);
    let out = dir.join("out.png");
    let s = |p: &PathBuf| p.to_string_lossy().into_owned();

    let mut stdout = Vec::new();
    run(
        &args(&[
            &s(&input),
            "--kernel",
            "gauss3",
            "--kernel",
            "sobel-mag",
            "--padding",
            "reflect",
            "--output",
            &s(&out),
            "--check",
            "--border-report",
        ]),
        &mut stdout,
    )
    .unwrap();
    let text = String::from_utf8(stdout).unwrap();
    assert!(text.contains("check vs wgconv::cpu::conv2d"), "{text}");
    assert!(text.contains(": OK"), "{text}");
    for mode in ["zeros", "reflect", "replicate", "circular"] {
        assert!(text.lines().any(|l| l.starts_with(mode)), "{text}");
    }
    let img = image::open(&out).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (40, 30));
    // abs normalisation: the strongest edge maps to 255.
    assert_eq!(img.as_raw().iter().max(), Some(&255));

    // Stride 2 with an even custom kernel; a JPEG input.
    let jpeg = dir.join("in.jpg");
    image::open(&input).unwrap().save(&jpeg).unwrap();
    let out2 = dir.join("strided.png");
    let mut sink = Vec::new();
    run(
        &args(&[
            &s(&jpeg),
            "--kernel-values",
            "0.25,0.25;0.25,0.25",
            "--stride",
            "2",
            "--padding=circular",
            "--output",
            &s(&out2),
            "--check",
        ]),
        &mut sink,
    )
    .unwrap();
    assert_eq!(image::open(&out2).unwrap().to_rgb8().dimensions(), (20, 15));

    // Identity with clamp reproduces the input exactly.
    let out3 = dir.join("identity.png");
    run(
        &args(&[&s(&input), "--kernel", "identity", "--output", &s(&out3)]),
        &mut sink,
    )
    .unwrap();
    assert_eq!(
        image::open(&out3).unwrap().to_rgb8(),
        image::open(&input).unwrap().to_rgb8()
    );

    // A .jpg name writes a JPEG (whatever the case of the extension), other names PNG.
    for name in ["blur.jpg", "blur.JPEG"] {
        let out4 = dir.join(name);
        run(
            &args(&[&s(&input), "--kernel", "gauss5", "-o", &s(&out4)]),
            &mut sink,
        )
        .unwrap();
        let bytes = std::fs::read(&out4).unwrap();
        assert_eq!(&bytes[..3], &[0xFF, 0xD8, 0xFF], "{name} is not a JPEG");
        let img = image::load_from_memory(&bytes).unwrap();
        assert_eq!((img.width(), img.height()), (40, 30));
    }
    assert!(std::fs::read(&out)
        .unwrap()
        .starts_with(&[0x89, b'P', b'N', b'G']));

    // Runtime errors: exit code 1, one line.
    let missing = dir.join("missing.png");
    let err = run(
        &args(&[&s(&missing), "--kernel", "box3", "--check"]),
        &mut sink,
    )
    .unwrap_err();
    assert!(matches!(err, Failure::Runtime(_)), "{err:?}");
    assert_eq!(err.exit_code(), 1);
    let not_image = dir.join("notes.png");
    std::fs::write(&not_image, "not an image").unwrap();
    let err = run(
        &args(&[&s(&not_image), "--kernel", "box3", "--check"]),
        &mut sink,
    )
    .unwrap_err();
    assert_eq!(err.exit_code(), 1, "{err}");

    // Reflect padding needs the image to be larger than the pad: a usage error (code 2).
    let thin = dir.join("thin.png");
    write_test_png(&thin, 16, 2);
    let err = run(
        &args(&[
            &s(&thin),
            "--kernel",
            "gauss5",
            "--padding",
            "reflect",
            "--check",
        ]),
        &mut sink,
    )
    .unwrap_err();
    assert_eq!(err.exit_code(), 2, "{err}");
    assert!(err.to_string().contains("do not fit"), "{err}");

    // --help goes to the writer.
    let mut help = Vec::new();
    run(&args(&["--help"]), &mut help).unwrap();
    assert!(String::from_utf8(help).unwrap().contains("--border-report"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The shipped images (the synthetic sample, the coffee photograph and the README's
/// filtered versions of both) exist, decode, have the documented sizes and stay small.
#[test]
fn sample_assets() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for (name, size, limit) in [
        ("assets/sample.png", (512, 384), 500_000),
        ("assets/sample_sobel.png", (512, 384), 500_000),
        ("assets/coffee.jpg", (512, 341), 100_000),
        ("assets/coffee_sobel.jpg", (512, 341), 100_000),
        ("assets/coffee_blur_zeros.jpg", (512, 341), 100_000),
        ("assets/coffee_blur_reflect.jpg", (512, 341), 100_000),
    ] {
        let path = root.join(name);
        let bytes = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .len();
        assert!(bytes < limit, "{name}: {bytes} bytes");
        let img = image::open(&path).unwrap();
        assert_eq!((img.width(), img.height()), size, "{name}");
    }
}

/// The README's blur pair shows what the border report measures: zero padding darkens the
/// frame of the photograph, reflect padding does not.
#[test]
fn coffee_blur_border() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mean = |name: &str, frame: bool| -> f64 {
        let img = image::open(root.join(name)).unwrap().to_luma8();
        let (w, h) = img.dimensions();
        let (mut sum, mut n) = (0f64, 0usize);
        for (x, y, p) in img.enumerate_pixels() {
            let in_frame = x < 4 || y < 4 || x >= w - 4 || y >= h - 4;
            let inner_ring = (8..16).contains(&x.min(y).min(w - 1 - x).min(h - 1 - y));
            if (frame && in_frame) || (!frame && inner_ring) {
                sum += p[0] as f64;
                n += 1;
            }
        }
        sum / n as f64
    };
    let zeros =
        mean("assets/coffee_blur_zeros.jpg", true) / mean("assets/coffee_blur_zeros.jpg", false);
    let reflect = mean("assets/coffee_blur_reflect.jpg", true)
        / mean("assets/coffee_blur_reflect.jpg", false);
    assert!(zeros < 0.8, "zero padding: frame / ring brightness {zeros}");
    assert!(
        (0.85..1.15).contains(&reflect),
        "reflect: frame / ring brightness {reflect}"
    );
}
