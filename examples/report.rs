//! One report of what wgconv does on your adapter, to attach to a bug report or a benchmark
//! comparison: `cargo run --release --example report [-- --output FILE]`.
//!
//! It prints and writes (default `wgconv-report.md`) one markdown file: the adapter, its
//! limits and features; a correctness pass over the conformance fixtures (`tests/fixtures`,
//! every case through the CPU reference, `auto` and every algorithm the adapter runs) with both
//! kernel families (CPU-adapter and GPU variants); the benchmark table (GFLOP/s of `auto` and
//! of each algorithm on the peer shapes a–g and GEMM 1024³). About 2–3 minutes on lavapipe.

#[path = "../tests/common/conformance.rs"]
mod conformance;
#[path = "../benches/suite/mod.rs"]
mod suite;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use wgconv::{Context, ContextOptions, KernelClass};

/// A markdown report of wgconv on this adapter: adapter, limits, a correctness pass over the
/// conformance fixtures with both kernel families, and the benchmark table.
#[derive(Parser)]
#[command(name = "report", version)]
struct Args {
    /// Where to write the report
    #[arg(long, default_value = "wgconv-report.md")]
    output: PathBuf,
    /// Directory of conformance fixtures (JSON cases)
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))]
    fixtures: PathBuf,
    /// Skip the benchmark
    #[arg(long)]
    no_bench: bool,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let start = Instant::now();
    let ctx = Context::new_blocking()?;
    let mut md = String::new();
    writeln!(md, "# wgconv report\n")?;
    machine(&mut md, &ctx)?;
    let failed = correctness(&mut md, &ctx, &args)?;
    if !args.no_bench {
        bench(&mut md, &ctx)?;
    }
    writeln!(
        md,
        "\nReport written in {:.0} s by `cargo run --release --example report` (wgconv {}).",
        start.elapsed().as_secs_f64(),
        env!("CARGO_PKG_VERSION")
    )?;
    std::fs::write(&args.output, &md)?;
    print!("{md}");
    eprintln!("written to {}", args.output.display());
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// The adapter, the host, the limits the library plans against and the device features.
fn machine(md: &mut String, ctx: &Context) -> std::fmt::Result {
    let i = ctx.adapter_info();
    writeln!(md, "## Adapter\n")?;
    writeln!(md, "| | |\n|---|---|")?;
    writeln!(md, "| adapter | {} |", i.name)?;
    writeln!(md, "| backend | {:?} |", i.backend)?;
    writeln!(md, "| device type | {:?} |", i.device_type)?;
    writeln!(md, "| driver | {} {} |", i.driver, i.driver_info)?;
    writeln!(
        md,
        "| subgroup sizes | {}..{} |",
        i.subgroup_min_size, i.subgroup_max_size
    )?;
    writeln!(md, "| kernel family | {:?} |", ctx.kernel_class())?;
    writeln!(md, "| host CPU | {} |", cpu_model())?;
    writeln!(
        md,
        "| OS | {} {} |",
        std::env::consts::OS,
        std::env::consts::ARCH
    )?;
    let l = ctx.limits();
    writeln!(md, "\n## Limits\n")?;
    writeln!(md, "| limit | value |\n|---|---|")?;
    let device = ctx.device().limits();
    for (name, value) in [
        (
            "maxStorageBufferBindingSize",
            l.max_storage_buffer_binding_size,
        ),
        ("maxBufferSize", l.max_buffer_size),
        (
            "maxComputeWorkgroupsPerDimension",
            l.max_compute_workgroups_per_dimension as u64,
        ),
        (
            "maxComputeInvocationsPerWorkgroup",
            l.max_compute_invocations_per_workgroup as u64,
        ),
        (
            "maxComputeWorkgroupStorageSize",
            device.max_compute_workgroup_storage_size as u64,
        ),
        (
            "maxStorageBuffersPerShaderStage",
            device.max_storage_buffers_per_shader_stage as u64,
        ),
        (
            "minStorageBufferOffsetAlignment",
            l.min_storage_buffer_offset_alignment as u64,
        ),
        ("maxTextureDimension2D", l.max_texture_dimension_2d as u64),
    ] {
        writeln!(md, "| {name} | {value} |")?;
    }
    let features: Vec<String> = ctx
        .device()
        .features()
        .iter_names()
        .map(|(n, _)| n.to_lowercase())
        .collect();
    writeln!(md, "\nDevice features: {}.", features.join(", "))
}

/// The host's CPU model (Linux), for reading benchmark figures of CPU adapters.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            let field = |key: &str| {
                s.lines()
                    .find(|l| l.starts_with(key))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|v| v.trim().to_string())
            };
            let name = field("model name")?;
            let fam = field("cpu family").unwrap_or_default();
            let model = field("model\t").unwrap_or_default();
            Some(format!("{name} (family {fam}, model {model})"))
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The conformance fixtures with the adapter's kernel family and the other one; returns the
/// number of failures.
fn correctness(
    md: &mut String,
    ctx: &Context,
    args: &Args,
) -> Result<usize, Box<dyn std::error::Error>> {
    let files = conformance::case_files(&args.fixtures)?;
    writeln!(
        md,
        "\n## Correctness\n\n{} cases from `{}`, each through the CPU reference, `auto` and \
         every algorithm this adapter runs, compared with the fixture.\n",
        files.len(),
        args.fixtures.display()
    )?;
    writeln!(
        md,
        "| kernel family | passed | failed | seconds |\n|---|---|---|---|"
    )?;
    let other = match ctx.kernel_class() {
        KernelClass::Cpu => KernelClass::Gpu,
        KernelClass::Gpu => KernelClass::Cpu,
    };
    let forced = Context::with_options_blocking(ContextOptions {
        kernel_class: Some(other),
        ..Default::default()
    })?;
    let mut failed = 0;
    let mut details = String::new();
    for (label, c) in [("default", ctx), ("forced", &forced)] {
        let t = Instant::now();
        let s = conformance::run_all(c, &files, None);
        let family = format!("{:?} ({label})", c.kernel_class());
        writeln!(
            md,
            "| {family} | {} | {} | {:.0} |",
            s.passed,
            s.failures.len(),
            t.elapsed().as_secs_f64()
        )?;
        failed += s.failures.len();
        for f in s.failures.iter().take(50) {
            writeln!(details, "- FAIL ({family}) {f}")?;
        }
        let not_run = s.not_run_lines();
        if !not_run.is_empty() {
            writeln!(
                details,
                "\nNot run with the {family} family, and why (cases):\n"
            )?;
            for l in not_run {
                writeln!(details, "- {l}")?;
            }
        }
    }
    writeln!(md, "\n{details}")?;
    Ok(failed)
}

/// GFLOP/s of `auto` and every algorithm on the peer shapes, forward and backward, and GEMM.
fn bench(md: &mut String, ctx: &Context) -> Result<(), Box<dyn std::error::Error>> {
    let opts = suite::Opts {
        reps: 3,
        shapes: None,
        ops: Some(vec!["fwd".into(), "bwd".into(), "gemm".into()]),
        algos: None,
        slow_ms: 250.0,
        dtype: wgconv::DType::F32,
        layout: wgconv::MemoryFormat::Contiguous,
    };
    // (shape, op) -> algorithm -> GFLOP/s
    let mut rows: BTreeMap<(String, String), BTreeMap<String, f64>> = BTreeMap::new();
    let mut algos: Vec<String> = Vec::new();
    let t = Instant::now();
    suite::run(ctx, &opts, |op, shape, algo, ms, flops| {
        let op = op.trim_start_matches("conv2d_").to_string();
        rows.entry((shape.to_string(), op))
            .or_default()
            .insert(algo.to_string(), flops / ms / 1e6);
        if !algos.iter().any(|a| a == algo) {
            algos.push(algo.to_string());
        }
    })?;
    // `auto` first, then the algorithms in the order they were measured.
    algos.sort_by_key(|a| a != "auto");
    writeln!(
        md,
        "## Benchmark\n\nGFLOP/s (median of 3 timed runs after a warm-up; runs slower than \
         250 ms timed once), {:.0} s. Shapes (N,C,H,W → K, R×S, stride, pad): a) 1,3,224,224 → \
         64, 7×7, s2, p3; b) 1,64,56,56 → 64, 3×3, p1; c) 1,128,28,28 → 128, 3×3, p1; d) \
         1,256,14,14 → 256, 3×3, p1; e) 1,256,14,14 → 512, 1×1, s2; f) 8,32,32,32 → 32, 3×3, \
         p1; g) 1,32,112,112 depthwise 3×3, p1. bwd = dx + dw + db. `-`: the algorithm does \
         not run that problem here.\n",
        t.elapsed().as_secs_f64()
    )?;
    writeln!(md, "| shape | op | {} |", algos.join(" | "))?;
    writeln!(md, "|---|---|{}", "---|".repeat(algos.len()))?;
    for ((shape, op), v) in &rows {
        let cells: Vec<String> = algos
            .iter()
            .map(|a| v.get(a).map_or("-".into(), |g| format!("{g:.2}")))
            .collect();
        writeln!(md, "| {shape} | {op} | {} |", cells.join(" | "))?;
    }
    Ok(())
}
