//! Cold start: time to the first result of a conv (shape b: 1x64x56x56 -> 64, 3x3, pad 1)
//! in a fresh process: context creation, first call (pipeline compilation + autotuning),
//! second call. Run twice with `WGCONV_TUNE_CACHE=/tmp/wgconv.tune` to see a persisted cache
//! skip the tuning. `--no-tune` uses the heuristic choice.
//!
//! Run: `cargo run --release --example cold_start [-- --no-tune]`

use std::time::Instant;

use clap::Parser;
use wgconv::{Context, ContextOptions, Conv2dParams, Padding, Tensor};

/// Time to the first result of a conv in a fresh process (context, pipeline compilation,
/// autotuning); set WGCONV_TUNE_CACHE to a file to see a persisted tuning cache skip the
/// tuning on the second run.
#[derive(Parser)]
#[command(name = "cold_start", version)]
struct Args {
    /// Use the heuristic algorithm choice instead of autotuning
    #[arg(long)]
    no_tune: bool,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let no_tune = Args::parse().no_tune;
    let t0 = Instant::now();
    let ctx = Context::with_options_blocking(ContextOptions {
        autotune: no_tune.then_some(false),
        ..Default::default()
    })?;
    let t_ctx = t0.elapsed();
    println!("adapter: {}", ctx.adapter_summary());
    let (xs, ws) = ([1, 64, 56, 56], [64, 64, 3, 3]);
    let x = Tensor::from_slice(&ctx, &vec![0.25; xs.iter().product()], &xs)?;
    let w = Tensor::from_slice(&ctx, &vec![0.01; ws.iter().product()], &ws)?;
    let p = Conv2dParams::default().with_padding(Padding::Symmetric([1, 1]));
    let t1 = Instant::now();
    let y = ctx.conv2d(&x, &w, None, &p)?.read()?;
    let t_first = t1.elapsed();
    let t2 = Instant::now();
    let _ = ctx.conv2d(&x, &w, None, &p)?.read()?;
    let t_second = t2.elapsed();
    println!("context: {:.1} ms", t_ctx.as_secs_f64() * 1e3);
    println!(
        "first result (compile{}): {:.1} ms; pipelines compiled {}, buckets tuned {}",
        if no_tune { "" } else { " + autotune" },
        t_first.as_secs_f64() * 1e3,
        ctx.pipeline_compiles(),
        ctx.tuned_entries()
    );
    println!("second call: {:.1} ms", t_second.as_secs_f64() * 1e3);
    println!(
        "time to first result in this process: {:.1} ms",
        (t_ctx + t_first).as_secs_f64() * 1e3
    );
    assert_eq!(y.len(), 64 * 56 * 56);
    Ok(())
}
