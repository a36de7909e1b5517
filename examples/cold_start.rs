//! Cold start: time to the first result of a conv (shape b: 1x64x56x56 -> 64, 3x3, pad 1, or
//! `--layer`) in a fresh process, against the steady-state call.
//!
//! Prints the context creation, the first call (compilation included; by default the
//! heuristic's choice, its bucket queued for background tuning), the background tuning, the
//! steady-state call (median of later calls, after tuning) and the ratio first / steady.
//! `--blocking-tune` measures the candidates on the first call instead (the behaviour before
//! background tuning), `--no-tune` turns tuning off. Run it with Mesa's shader cache warm (run
//! it twice) and cold (`MESA_SHADER_CACHE_DISABLE=true`, as on a fresh CI machine); set
//! `WGCONV_TUNE_CACHE` to a file to see a persisted tuning cache skip the tuning.
//!
//! Run: `cargo run --release --example cold_start [-- --blocking-tune | --no-tune] [--warm-up]
//! [--backward] [--layer N,C,H,W,K,R,S,stride,pad]`

use std::time::{Duration, Instant};

use clap::Parser;
use wgconv::{
    Algorithm, Context, ContextOptions, Conv2dParams, Operation, Padding, Tensor, TuningMode,
};

/// Time to the first result of a conv in a fresh process (context, pipeline compilation,
/// tuning) against the steady-state call.
#[derive(Parser)]
#[command(name = "cold_start", version)]
struct Args {
    /// Measure the algorithms on the first call, before it runs (TuningMode::Blocking)
    #[arg(long, conflicts_with = "no_tune")]
    blocking_tune: bool,
    /// Use the heuristic algorithm choice only (TuningMode::Off)
    #[arg(long)]
    no_tune: bool,
    /// Force this algorithm (`direct`, `im2col_gemm`, `implicit_gemm`, ...; default `auto`)
    #[arg(long, default_value = "auto")]
    algo: String,
    /// Call `Context::warm_up` for the layer first (timed apart): the first call then
    /// should compile nothing
    #[arg(long)]
    warm_up: bool,
    /// Later calls timed for the steady state (the median is reported)
    #[arg(long, default_value_t = 15)]
    reps: usize,
    /// Time the backward (input, weight and bias gradients in one call) instead of the
    /// forward
    #[arg(long)]
    backward: bool,
    /// Another layer: `N,C,H,W,K,R,S,stride,pad` (default shape b: 1,64,56,56,64,3,3,1,1)
    #[arg(long, value_delimiter = ',')]
    layer: Vec<usize>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    // `RUST_LOG=wgconv=debug` prints each pipeline compilation and its time.
    env_logger::init();
    let mode = if args.blocking_tune {
        TuningMode::Blocking
    } else if args.no_tune {
        TuningMode::Off
    } else {
        TuningMode::Background
    };
    let t0 = Instant::now();
    let ctx = Context::with_options_blocking(ContextOptions {
        tuning: Some(mode),
        ..Default::default()
    })?;
    let t_ctx = t0.elapsed();
    println!("adapter: {}", ctx.adapter_summary());
    println!(
        "tuning: {mode:?}; Mesa shader cache {}",
        if std::env::var("MESA_SHADER_CACHE_DISABLE").is_ok_and(|v| v == "true" || v == "1") {
            "disabled"
        } else {
            "enabled"
        }
    );
    let l = if args.layer.is_empty() {
        vec![1, 64, 56, 56, 64, 3, 3, 1, 1]
    } else if args.layer.len() == 9 {
        args.layer.clone()
    } else {
        return Err("--layer takes 9 numbers: N,C,H,W,K,R,S,stride,pad".into());
    };
    let (xs, ws) = ([l[0], l[1], l[2], l[3]], [l[4], l[1], l[5], l[6]]);
    let x = Tensor::from_slice(&ctx, &vec![0.25; xs.iter().product()], &xs)?;
    let w = Tensor::from_slice(&ctx, &vec![0.01; ws.iter().product()], &ws)?;
    let p = Conv2dParams::default()
        .with_stride([l[7], l[7]])
        .with_padding(Padding::Symmetric([l[8], l[8]]));
    println!(
        "layer: x {xs:?}, w {ws:?}, stride {}, padding {}",
        l[7], l[8]
    );
    let algo = Algorithm::from_name(&args.algo)?;
    let prob = p.resolve(xs, ws, None)?;
    let dy = Tensor::from_slice(
        &ctx,
        &vec![0.5; prob.y_shape().iter().product()],
        &prob.y_shape(),
    )?;
    // The call's result (the forward's y, or the backward's dw), and the pipelines it
    // compiled.
    let run = || -> wgconv::Result<(Vec<f32>, usize)> {
        if args.backward {
            let g = ctx.conv2d_backward(&x, &w, &dy, true, &p, algo)?;
            let compiled = ctx.pipeline_compiles();
            g.dx.read()?;
            Ok((g.dw.read()?, compiled))
        } else {
            let y = ctx.conv2d_with(&x, &w, None, &p, algo)?;
            let compiled = ctx.pipeline_compiles();
            Ok((y.read()?, compiled))
        }
    };
    let call = || run().map(|(v, _)| v);
    if args.warm_up {
        let t = Instant::now();
        let ops: &[Operation] = if args.backward {
            &[Operation::InputGrad, Operation::WeightGrad]
        } else {
            &[Operation::Forward]
        };
        ctx.warm_up(ops, &[prob])?;
        println!("warm_up: {:.1} ms", ms(t.elapsed()));
    }

    let t1 = Instant::now();
    let (first, compiled) = run()?;
    let t_first = t1.elapsed();
    let want = if args.backward {
        prob.w_shape()
    } else {
        prob.y_shape()
    };
    assert_eq!(first.len(), want.iter().product::<usize>());

    let t2 = Instant::now();
    ctx.wait_for_tuning();
    let t_tune = t2.elapsed();
    let tuned = ctx.tuned_entries();

    let mut steady: Vec<f64> = (0..args.reps.max(1))
        .map(|_| {
            let t = Instant::now();
            call().map(|_| ms(t.elapsed()))
        })
        .collect::<wgconv::Result<_>>()?;
    steady.sort_by(f64::total_cmp);
    let t_steady = steady[steady.len() / 2];

    println!("context: {:.1} ms", ms(t_ctx));
    println!(
        "first result: {:.1} ms ({compiled} pipelines compiled by the call)",
        ms(t_first)
    );
    if mode == TuningMode::Background {
        println!(
            "background tuning: done {:.1} ms after the first result; buckets tuned {tuned}, \
             pipelines compiled in all {}",
            ms(t_tune),
            ctx.pipeline_compiles()
        );
    } else {
        println!("buckets tuned: {tuned}");
    }
    println!(
        "steady-state call: {t_steady:.1} ms (median of {}, min {:.1}, max {:.1})",
        steady.len(),
        steady[0],
        steady[steady.len() - 1]
    );
    println!("first / steady: {:.1}x", ms(t_first) / t_steady);
    println!(
        "time to first result in this process: {:.1} ms",
        ms(t_ctx + t_first)
    );
    Ok(())
}
