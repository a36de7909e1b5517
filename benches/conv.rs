//! Convolution benchmarks: GFLOP/s per shape and algorithm.
//!
//! `cargo bench --bench conv [-- --quick] [--shapes a,b,...] [--ops fwd,...]`
//!
//! Prints the adapter first, then one machine-readable line per measurement:
//! `bench op=<op> shape=<name> algo=<name> ms=<median> gflops=<value>`.
//! Each measurement is the median of several timed runs (submit + wait), after a warm-up
//! that also compiles the pipelines and queues `auto`'s shape bucket for background tuning,
//! which it waits for: `auto` is timed with its tuned choice.

#[path = "suite/mod.rs"]
mod suite;

use wgconv::Context;

fn opts() -> suite::Opts {
    let args: Vec<String> = std::env::args().collect();
    let list = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .map(|s| s.split(',').map(str::to_string).collect())
    };
    let quick = args.iter().any(|a| a == "--quick");
    suite::Opts {
        reps: if quick { 5 } else { 11 },
        shapes: list("--shapes"),
        ops: list("--ops"),
        algos: list("--algos"),
        slow_ms: f64::INFINITY,
    }
}

fn main() -> wgconv::Result<()> {
    let o = opts();
    let ctx = Context::new_blocking()?;
    println!("adapter: {}", ctx.adapter_summary());
    suite::run(&ctx, &o, |op, shape, algo, ms, flops| {
        println!(
            "bench op={op} shape={shape} algo={algo} ms={ms:.3} gflops={:.2}",
            flops / ms / 1e6
        );
    })
}
