//! Conformance runner: every `*.json` case in `tests/fixtures/` (or `$WGCONV_FIXTURES`) is
//! run through every algorithm that supports it and through the CPU reference (`cpu`).
//! Contract: `../shared/FIXTURES.md`. `accumulate: "float16"` cases run a second time with
//! f16 arithmetic (`Precision::F16Accumulate`) where the device has `shader-f16`.
//! Prints one line per failure and ends with
//! `N passed, M failed` over (case, algorithm) pairs; exits non-zero when M > 0.
//! With `$WGCONV_FIXTURES_OUT`, writes `<id>.<algorithm>.json` for every pair.

#[path = "common/conformance.rs"]
mod runner;

use std::path::{Path, PathBuf};

use runner::{case_files, run_all, run_all_f16_arithmetic, Summary};
use wgconv::{Context, ContextOptions, KernelClass, Precision};

fn report(label: &str, s: &Summary) {
    for f in &s.failures {
        println!("FAIL {f}");
    }
    let lines = s.not_run_lines();
    if !lines.is_empty() {
        println!("{label}: algorithms not run on this adapter, and why (cases):");
        for l in lines {
            println!("  {l}");
        }
    }
}

fn main() {
    let dir = std::env::var_os("WGCONV_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"));
    let out_dir = std::env::var_os("WGCONV_FIXTURES_OUT").map(PathBuf::from);
    if let Some(d) = &out_dir {
        std::fs::create_dir_all(d).expect("create WGCONV_FIXTURES_OUT");
    }
    let files = case_files(&dir)
        .unwrap_or_else(|e| panic!("cannot read fixtures directory {}: {e}", dir.display()));
    let _ = env_logger::builder().is_test(true).try_init();
    let ctx = Context::new_blocking()
        .unwrap_or_else(|e| panic!("conformance needs a WebGPU adapter: {e}"));
    eprintln!("adapter: {}", ctx.adapter_summary());
    let s = run_all(&ctx, &files, out_dir.as_deref());
    report("default kernel family", &s);
    let (mut passed, mut failed) = (s.passed, s.failures.len());
    // On a CPU adapter, every case again with the GPU kernel variants forced (workgroup-memory
    // tiles, buffer operands, the GPU branches of the algorithm choices), so a machine without
    // a GPU checks them too.
    if ctx.kernel_class() == KernelClass::Cpu {
        let gpu = Context::with_options_blocking(ContextOptions {
            kernel_class: Some(KernelClass::Gpu),
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("conformance needs a WebGPU adapter: {e}"));
        let s = run_all(&gpu, &files, None);
        report("GPU kernel family", &s);
        println!(
            "GPU kernel variants: {} passed, {} failed",
            s.passed,
            s.failures.len()
        );
        (passed, failed) = (passed + s.passed, failed + s.failures.len());
    }
    // `accumulate: "float16"` cases again with f16 arithmetic, where the device offers it
    // (the fixture contract: they pass in both modes).
    if ctx.has_shader_f16() {
        let f16 = Context::new_blocking()
            .unwrap_or_else(|e| panic!("conformance needs a WebGPU adapter: {e}"));
        f16.set_precision(Precision::F16Accumulate)
            .unwrap_or_else(|e| panic!("shader-f16 offered, F16Accumulate refused: {e}"));
        let s = run_all_f16_arithmetic(&f16, &files);
        report("f16 arithmetic", &s);
        println!(
            "f16 arithmetic (accumulate float16 cases): {} passed, {} failed",
            s.passed,
            s.failures.len()
        );
        (passed, failed) = (passed + s.passed, failed + s.failures.len());
    } else {
        println!("f16 arithmetic: not offered by this device (no shader-f16)");
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 || passed == 0 {
        std::process::exit(1);
    }
}
