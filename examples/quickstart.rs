//! Quickstart: a ResNet stem convolution (1x3x224x224, 64 filters 7x7, stride 2, pad 3,
//! bias) on the GPU and on the CPU reference. Prints the adapter, output shape, max abs
//! error and GPU time; exits non-zero on mismatch.
//!
//! Run: `cargo run --release --example quickstart`

use std::time::Instant;

use wgconv::{cpu, Context, Conv2dParams, Padding, Tensor};

fn pseudo_random(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
        .collect()
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let ctx = Context::new_blocking()?;
    println!("adapter: {}", ctx.adapter_summary());

    let (xs, ws) = ([1, 3, 224, 224], [64, 3, 7, 7]);
    let x = pseudo_random(xs.iter().product(), 1);
    let w = pseudo_random(ws.iter().product(), 2);
    let b = pseudo_random(64, 3);
    let params = Conv2dParams::default()
        .with_stride([2, 2])
        .with_padding(Padding::Symmetric([3, 3]));

    let xt = Tensor::from_slice(&ctx, &x, &xs)?;
    let wt = Tensor::from_slice(&ctx, &w, &ws)?;
    let bt = Tensor::from_slice(&ctx, &b, &[64])?;

    // First call compiles the pipeline; time a second one.
    ctx.conv2d(&xt, &wt, Some(&bt), &params)?.read()?;
    let t0 = Instant::now();
    let y = ctx.conv2d(&xt, &wt, Some(&bt), &params)?;
    ctx.synchronize()?;
    let gpu_ms = t0.elapsed().as_secs_f64() * 1e3;
    let got = y.read()?;

    let (want, shape) = cpu::conv2d(&x, xs, &w, ws, Some(&b), &params)?;
    let max_err = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let flops = 2.0 * 64.0 * 3.0 * 49.0 * 112.0 * 112.0;
    println!("output shape: {:?}", y.shape());
    println!("max abs error vs CPU reference: {max_err:e}");
    println!(
        "GPU time: {gpu_ms:.2} ms ({:.2} GFLOP/s)",
        flops / gpu_ms / 1e6
    );
    let within = max_err <= 1e-4; // false for NaN too
    if y.shape() != shape || !within || got.iter().any(|v| !v.is_finite()) {
        eprintln!("MISMATCH: GPU result differs from the CPU reference");
        std::process::exit(1);
    }
    println!("OK");
    Ok(())
}
