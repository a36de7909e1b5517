//! Convolution benchmarks: GFLOP/s per shape and algorithm.
//!
//! `cargo bench --bench conv [-- --quick] [--shapes a,b,...] [--ops fwd,...] [--dtype f16]
//! [--precision f16-accumulate] [--layout nhwc]`
//!
//! Prints the adapter first, then one machine-readable line per measurement:
//! `bench op=<op> shape=<name> algo=<name> ms=<median> gflops=<value>` (followed by
//! ` dtype=f16` with `--dtype f16`, ` precision=f16-accumulate` with that precision, and
//! ` layout=nhwc` with `--layout nhwc`: channels-last activations and KRSC weights, PyTorch's
//! `channels_last` model), so the tools parsing these lines read all of them).
//! `--dtype f16` runs every tensor in f16 (f16 storage, f32 accumulation);
//! `--precision f16-accumulate` with it sets `Precision::F16Accumulate` (f16 arithmetic:
//! the direct algorithm and the register GEMM, so `--algos auto` or `direct`).
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
    let dtype_arg: Option<Vec<String>> = list("--dtype");
    let dtype = match dtype_arg.as_deref() {
        None => wgconv::DType::F32,
        Some([d]) => wgconv::DType::from_name(d).unwrap_or_else(|e| {
            eprintln!("--dtype: {e}");
            std::process::exit(2)
        }),
        Some(_) => {
            eprintln!("--dtype takes one of f32, f16");
            std::process::exit(2)
        }
    };
    let layout = match list("--layout").as_deref() {
        None => wgconv::MemoryFormat::Contiguous,
        Some([l]) => wgconv::MemoryFormat::from_name(l).unwrap_or_else(|e| {
            eprintln!("--layout: {e}");
            std::process::exit(2)
        }),
        Some(_) => {
            eprintln!("--layout takes one of nchw, nhwc");
            std::process::exit(2)
        }
    };
    suite::Opts {
        layout,
        dtype,
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
    let args: Vec<String> = std::env::args().collect();
    let precision = match args.iter().position(|a| a == "--precision") {
        None => wgconv::Precision::F32Accumulate,
        Some(i) => match args.get(i + 1).map(String::as_str) {
            Some("f32-accumulate") => wgconv::Precision::F32Accumulate,
            Some("f16-accumulate") => wgconv::Precision::F16Accumulate,
            _ => {
                eprintln!("--precision takes one of f32-accumulate, f16-accumulate");
                std::process::exit(2)
            }
        },
    };
    ctx.set_precision(precision)?;
    let mut suffix = match o.dtype {
        wgconv::DType::F32 => String::new(),
        d => format!(" dtype={d}"),
    };
    if precision != wgconv::Precision::F32Accumulate {
        suffix.push_str(&format!(" precision={}", precision.name()));
    }
    if o.layout != wgconv::MemoryFormat::Contiguous {
        suffix.push_str(" layout=nhwc");
    }
    suite::run(&ctx, &o, |op, shape, algo, ms, flops| {
        println!(
            "bench op={op} shape={shape} algo={algo} ms={ms:.3} gflops={:.2}{suffix}",
            flops / ms / 1e6
        );
    })
}
