//! The benchmark suite of `benches/conv.rs`, shared with `examples/report.rs`: the peer
//! harnesses' shapes, their deterministic fill, and the timing loop.
#![allow(dead_code)]

use std::time::Instant;

use wgconv::{
    Activation, Algorithm, Context, Conv2dParams, ConvTranspose2dParams, DType, Epilogue,
    GemmParams, GemmVariant, MemoryFormat, Operation, Padding, Tensor,
};

/// What to measure.
pub struct Opts {
    /// Timed runs per measurement (the median is reported).
    pub reps: usize,
    /// Only these shapes (`a`..`g`, `gemm1024`).
    pub shapes: Option<Vec<String>>,
    /// Only these operations (`fwd`, `dx`, `dw`, `bwd`, `transpose`, `gemm`; `epilogue`,
    /// conv + bias vs fused relu / gelu, runs only when listed).
    pub ops: Option<Vec<String>>,
    /// Only these algorithm / variant names (e.g. `auto`).
    pub algos: Option<Vec<String>>,
    /// A measurement whose warm-up run takes longer than this (ms) is timed once.
    pub slow_ms: f64,
    /// Element type of every tensor (f16: f16 storage, f32 accumulation).
    pub dtype: DType,
    /// Memory format of the activations (x, y, dy, dx); weights stay contiguous (KCRS).
    pub layout: MemoryFormat,
}

pub struct Shape {
    pub name: &'static str,
    pub x: [usize; 4],
    pub w: [usize; 4],
    pub params: Conv2dParams,
}

pub fn shapes() -> Vec<Shape> {
    let p = |s: usize, pad: usize| {
        Conv2dParams::default()
            .with_stride([s, s])
            .with_padding(Padding::Symmetric([pad, pad]))
    };
    vec![
        Shape {
            name: "a",
            x: [1, 3, 224, 224],
            w: [64, 3, 7, 7],
            params: p(2, 3),
        },
        Shape {
            name: "b",
            x: [1, 64, 56, 56],
            w: [64, 64, 3, 3],
            params: p(1, 1),
        },
        Shape {
            name: "c",
            x: [1, 128, 28, 28],
            w: [128, 128, 3, 3],
            params: p(1, 1),
        },
        Shape {
            name: "d",
            x: [1, 256, 14, 14],
            w: [256, 256, 3, 3],
            params: p(1, 1),
        },
        Shape {
            name: "e",
            x: [1, 256, 14, 14],
            w: [512, 256, 1, 1],
            params: p(2, 0),
        },
        Shape {
            name: "f",
            x: [8, 32, 32, 32],
            w: [32, 32, 3, 3],
            params: p(1, 1),
        },
        Shape {
            name: "g",
            x: [1, 32, 112, 112],
            w: [32, 1, 3, 3],
            params: p(1, 1).with_groups(32),
        },
    ]
}

pub fn fill(n: usize, mul: usize) -> Vec<f32> {
    // The peers' deterministic fill: ((i*mul) % m)/m - 0.5
    let m = 1013;
    (0..n)
        .map(|i| ((i * mul) % m) as f32 / m as f32 - 0.5)
        .collect()
}

/// Median wall time in ms of `f` (which records and submits work), waiting for the GPU; a
/// run slower than `slow_ms` in warm-up is timed once. After the warm-up run, waits for the
/// background tuning it queued (`Auto`), so the timed runs are of the tuned choice and do not
/// share the machine with the tuner.
fn time(
    ctx: &Context,
    reps: usize,
    slow_ms: f64,
    mut f: impl FnMut() -> wgconv::Result<()>,
) -> wgconv::Result<f64> {
    let t = Instant::now();
    f()?;
    ctx.synchronize()?;
    let warm_ms = t.elapsed().as_secs_f64() * 1e3;
    ctx.wait_for_tuning();
    let reps = if warm_ms > slow_ms { 1 } else { reps };
    let mut v = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        ctx.synchronize()?;
        v.push(t.elapsed().as_secs_f64() * 1e3);
    }
    v.sort_by(f64::total_cmp);
    Ok(v[v.len() / 2])
}

/// Runs the suite on `ctx`, calling `report(op, shape, algorithm, ms, flops)` per
/// measurement.
pub fn run(
    ctx: &Context,
    o: &Opts,
    mut report: impl FnMut(&str, &str, &str, f64, f64),
) -> wgconv::Result<()> {
    let ctx = ctx.clone();
    let want_op = |op: &str| o.ops.as_ref().is_none_or(|v| v.iter().any(|s| s == op));
    let want_algo = |a: &str| o.algos.as_ref().is_none_or(|v| v.iter().any(|s| s == a));
    for s in shapes() {
        if o.shapes
            .as_ref()
            .is_some_and(|v| !v.iter().any(|n| n == s.name))
        {
            continue;
        }
        let x = Tensor::from_f32(&ctx, &fill(s.x.iter().product(), 7), &s.x, o.dtype)?
            .with_format(o.layout)?;
        // PyTorch's channels_last model: KRSC weights with NHWC activations.
        let w = Tensor::from_f32(&ctx, &fill(s.w.iter().product(), 11), &s.w, o.dtype)?
            .with_format(o.layout)?;
        let p = s.params.resolve(s.x, s.w, None)?;
        let runs = |ops: &[Operation], a: Algorithm| {
            ops.iter().all(|&op| ctx.check_algorithm(op, a, &p).is_ok())
        };
        let flops = p.flops();
        if want_op("fwd") {
            for &algo in Algorithm::ALL.iter().chain([&Algorithm::Auto]) {
                if !runs(&[Operation::Forward], algo) || !want_algo(algo.name()) {
                    continue;
                }
                let ms = time(&ctx, o.reps, o.slow_ms, || {
                    ctx.conv2d_with(&x, &w, None, &s.params, algo).map(drop)
                })?;
                report("conv2d_fwd", s.name, algo.name(), ms, flops);
            }
        }
        // Opt-in (`--ops epilogue`): conv + bias against the fused relu and gelu epilogues
        // (Auto), interleaved over 3 rounds, the median round reported.
        // Epilogues take f32 tensors.
        if o.dtype == DType::F32
            && o.ops
                .as_ref()
                .is_some_and(|v| v.iter().any(|s| s == "epilogue"))
        {
            let b = Tensor::from_slice(&ctx, &fill(s.w[0], 5), &[s.w[0]])?;
            let eps = [
                ("conv2d_bias", Epilogue::default()),
                ("conv2d_relu", Epilogue::new(Activation::Relu)),
                ("conv2d_gelu", Epilogue::new(Activation::Gelu)),
            ];
            // Each activation fused into the kernel's store, and as the separate elementwise
            // pass after conv + bias (`_separate`, `dev::set_fused_epilogues(false)`).
            let mut runs: Vec<Vec<f64>> = vec![Vec::new(); 2 * eps.len()];
            for _ in 0..3 {
                for fused in [true, false] {
                    wgconv::dev::set_fused_epilogues(&ctx, fused);
                    for (i, (_, ep)) in eps.iter().enumerate() {
                        let slot = if fused { i } else { eps.len() + i };
                        runs[slot].push(time(&ctx, o.reps, o.slow_ms, || {
                            ctx.conv2d_fused(&x, &w, Some(&b), None, &s.params, ep, Algorithm::Auto)
                                .map(drop)
                        })?);
                    }
                }
            }
            wgconv::dev::set_fused_epilogues(&ctx, true);
            for (i, (name, _)) in eps.iter().enumerate() {
                runs[i].sort_by(f64::total_cmp);
                report(name, s.name, "auto", runs[i][1], flops);
                if i > 0 {
                    let j = eps.len() + i;
                    runs[j].sort_by(f64::total_cmp);
                    report(
                        &format!("{name}_separate"),
                        s.name,
                        "auto",
                        runs[j][1],
                        flops,
                    );
                }
            }
        }
        let dy = Tensor::from_f32(
            &ctx,
            &fill(p.y_shape().iter().product(), 13),
            &p.y_shape(),
            o.dtype,
        )?
        .with_format(o.layout)?;
        // The algorithms that run `ops` on this shape here (a forced algorithm that cannot is
        // refused, never rerouted).
        let algos = |ops: &[Operation]| -> Vec<Algorithm> {
            Algorithm::ALL
                .iter()
                .copied()
                .chain([Algorithm::Auto])
                .filter(|&a| runs(ops, a) && want_algo(a.name()))
                .collect()
        };
        if want_op("dx") {
            for algo in algos(&[Operation::InputGrad]) {
                let ms = time(&ctx, o.reps, o.slow_ms, || {
                    ctx.conv2d_backward_input(&dy, &w, s.x, &s.params, algo)
                        .map(drop)
                })?;
                report("conv2d_dx", s.name, algo.name(), ms, flops);
            }
        }
        if want_op("dw") {
            for algo in algos(&[Operation::WeightGrad]) {
                let ms = time(&ctx, o.reps, o.slow_ms, || {
                    ctx.conv2d_backward_weight(&x, &dy, s.w, &s.params, algo)
                        .map(drop)
                })?;
                report("conv2d_dw", s.name, algo.name(), ms, flops);
            }
        }
        if want_op("bwd") {
            for algo in algos(&[Operation::InputGrad, Operation::WeightGrad]) {
                let ms = time(&ctx, o.reps, o.slow_ms, || {
                    ctx.conv2d_backward(&x, &w, &dy, true, &s.params, algo)
                        .map(drop)
                })?;
                report("conv2d_bwd", s.name, algo.name(), ms, 2.0 * flops);
            }
        }
        if want_op("transpose") {
            // The transposed convolution mapping this shape's output back to its input.
            let Padding::Symmetric([pad, _]) = s.params.padding else {
                unreachable!("bench shapes are symmetric")
            };
            let st = s.params.stride[0];
            let op = (s.x[2] + 2 * pad - (s.w[2] - 1) - 1) % st;
            let tparams = ConvTranspose2dParams::default()
                .with_stride(s.params.stride)
                .with_padding([pad, pad])
                .with_output_padding([op, op])
                .with_groups(s.params.groups);
            for algo in algos(&[Operation::Transposed]) {
                let ms = time(&ctx, o.reps, o.slow_ms, || {
                    ctx.conv_transpose2d(&dy, &w, None, &tparams, algo)
                        .map(drop)
                })?;
                report("conv_transpose2d", s.name, algo.name(), ms, flops);
            }
        }
    }
    if o.shapes
        .as_ref()
        .is_none_or(|v| v.iter().any(|n| n == "gemm1024"))
        && want_op("gemm")
    {
        let n = 1024;
        let a = Tensor::from_f32(&ctx, &fill(n * n, 7), &[n, n], o.dtype)?;
        let b = Tensor::from_f32(&ctx, &fill(n * n, 11), &[n, n], o.dtype)?;
        for &v in GemmVariant::ALL.iter().chain([&GemmVariant::Auto]) {
            if !want_algo(v.name()) || ctx.check_gemm_variant(v).is_err() {
                continue;
            }
            let p = GemmParams::default().with_variant(v);
            let ms = time(&ctx, o.reps, o.slow_ms, || ctx.gemm(&a, &b, &p).map(drop))?;
            report("gemm", "gemm1024", v.name(), ms, 2.0 * (n * n * n) as f64);
        }
    }
    Ok(())
}
