//! Big tensors: GFLOP/s of convolutions whose tensors exceed one storage binding (run in
//! bands, `src/conv/band.rs`) next to the same layer on a size that fits one binding, per
//! algorithm, forward and backward (input and weight gradients), in one process.
//!
//! - `3->16`: 3 -> 16 channels, 3x3, pad 1, on 1x3x1024² (fits) and 1x3x4096² (the 1 GiB
//!   output runs in row bands);
//! - `b`: 64 -> 64 channels, 3x3, pad 1, 56², at batch 32 (fits) and 192 (x and y of
//!   154 MB run in image bands).
//!
//! Each row is the median of `--reps` runs after one warm-up run (which compiles and, for
//! `auto`, tunes). Run: `cargo run --release --example big_tensors [-- --reps 3]`

use std::time::Instant;

use clap::Parser;
use wgconv::{Algorithm, Context, Conv2dParams, Operation, Padding, Tensor};

/// GFLOP/s of banded convolutions (tensors beyond one storage binding) against the same
/// layer on a shape that fits one binding.
#[derive(Parser)]
#[command(name = "big_tensors", version)]
struct Args {
    /// Timed runs per row (median reported)
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Algorithms to run, comma-separated (`auto`, `direct`, `im2col_gemm`, ...)
    #[arg(long, default_value = "auto,im2col_gemm,implicit_gemm,direct")]
    algos: String,
    /// Only these layers (`3->16`, `b`), comma-separated
    #[arg(long, default_value = "3->16,b")]
    layers: String,
    /// Side of the banded `3->16` image
    #[arg(long, default_value_t = 4096)]
    side: usize,
    /// Batch of the banded `b` layer
    #[arg(long, default_value_t = 192)]
    batch: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median seconds of `reps` runs of `f` after one warm-up.
/// Median time of `reps` runs of `f`, after an untimed run and the background work it
/// started (tuning of its bucket, compilation of the steady-state kernels; see
/// [`Context::wait_for_tuning`]).
fn time(
    ctx: &Context,
    reps: usize,
    mut f: impl FnMut() -> wgconv::Result<()>,
) -> wgconv::Result<f64> {
    f()?;
    ctx.wait_for_tuning();
    let mut t = Vec::with_capacity(reps);
    for _ in 0..reps {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed().as_secs_f64());
    }
    Ok(median(t))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let ctx = Context::new_blocking()?;
    println!("adapter: {}", ctx.adapter_summary());
    println!(
        "max_storage_buffer_binding_size: {} MiB",
        ctx.limits().max_storage_buffer_binding_size >> 20
    );
    let algos = args
        .algos
        .split(',')
        .map(Algorithm::from_name)
        .collect::<wgconv::Result<Vec<_>>>()?;
    let params = Conv2dParams::default().with_padding(Padding::Symmetric([1, 1]));
    type Layer = (&'static str, [usize; 4], [usize; 4], [usize; 4]);
    let layers: Vec<Layer> = vec![
        (
            "3->16",
            [1, 3, 1024, 1024],
            [1, 3, args.side, args.side],
            [16, 3, 3, 3],
        ),
        (
            "b",
            [32, 64, 56, 56],
            [args.batch, 64, 56, 56],
            [64, 64, 3, 3],
        ),
    ];
    println!(
        "| layer | algorithm | pass | fits one binding: shape, GFLOP/s | banded: shape, plan, GFLOP/s | ratio |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, small, big, ws) in layers {
        if !args.layers.split(',').any(|l| l == name) {
            continue;
        }
        let w = Tensor::from_slice(&ctx, &vec![0.01f32; ws.iter().product()], &ws)?;
        // Per algorithm: forward and backward GFLOP/s per size, the banded plans, and the
        // input and weight gradients' GFLOP/s per size.
        type Row = (
            Algorithm,
            [Option<f64>; 2],
            [Option<f64>; 2],
            [String; 2],
            [Option<[f64; 2]>; 2],
        );
        let mut rows: Vec<Row> = algos
            .iter()
            .map(|&a| {
                (
                    a,
                    [None; 2],
                    [None; 2],
                    [String::new(), String::new()],
                    [None; 2],
                )
            })
            .collect();
        for (si, xs) in [small, big].into_iter().enumerate() {
            let p = params.resolve(xs, ws, None)?;
            let x = Tensor::from_slice(&ctx, &vec![0.5f32; xs.iter().product()], &xs)?;
            let dy = Tensor::from_slice(
                &ctx,
                &vec![0.25f32; p.y_shape().iter().product()],
                &p.y_shape(),
            )?;
            let y = Tensor::zeros(&ctx, &p.y_shape())?;
            let dx = Tensor::zeros(&ctx, &xs)?;
            let dw = Tensor::zeros(&ctx, &ws)?;
            let flops =
                2.0 * p.reduction_len() as f64 * p.y_shape().iter().product::<usize>() as f64;
            for row in rows.iter_mut() {
                let algo = row.0;
                let plan = |op| wgconv::dev::band_plan(&ctx, op, &p);
                let fwd_ok = ctx.check_algorithm(Operation::Forward, algo, &p).is_ok();
                let bwd_ok = ctx.check_algorithm(Operation::InputGrad, algo, &p).is_ok()
                    && ctx.check_algorithm(Operation::WeightGrad, algo, &p).is_ok();
                if fwd_ok {
                    let t = time(&ctx, args.reps, || {
                        let mut enc = ctx.device().create_command_encoder(&Default::default());
                        ctx.encode_conv2d(&mut enc, &x, &w, None, &params, algo, &y)?;
                        ctx.submit(enc)?;
                        ctx.synchronize()
                    })?;
                    row.1[si] = Some(flops / t / 1e9);
                }
                if bwd_ok {
                    let t_dx = time(&ctx, args.reps, || {
                        let mut enc = ctx.device().create_command_encoder(&Default::default());
                        ctx.encode_conv2d_backward_input(&mut enc, &dy, &w, &params, algo, &dx)?;
                        ctx.submit(enc)?;
                        ctx.synchronize()
                    })?;
                    let t_dw = time(&ctx, args.reps, || {
                        let mut enc = ctx.device().create_command_encoder(&Default::default());
                        ctx.encode_conv2d_backward_weight(&mut enc, &x, &dy, &params, algo, &dw)?;
                        ctx.submit(enc)?;
                        ctx.synchronize()
                    })?;
                    row.2[si] = Some(2.0 * flops / (t_dx + t_dw) / 1e9);
                    row.4[si] = Some([flops / t_dx / 1e9, flops / t_dw / 1e9]);
                }
                if si == 1 {
                    row.3 = [
                        plan(Operation::Forward).to_string(),
                        format!(
                            "{}/{}",
                            plan(Operation::InputGrad),
                            plan(Operation::WeightGrad)
                        ),
                    ];
                }
            }
        }
        let shape = |s: [usize; 4]| format!("{}x{}x{}x{}", s[0], s[1], s[2], s[3]);
        let cell = |g: Option<f64>| g.map_or("-".to_string(), |g| format!("{g:.2}"));
        for (algo, fwd, bwd, plans, parts) in &rows {
            let part = |i: usize| [parts[0].map(|p| p[i]), parts[1].map(|p| p[i])];
            let (dxg, dwg) = (part(0), part(1));
            for (pass, g, plan) in [
                ("forward", fwd, &plans[0]),
                ("backward", bwd, &plans[1]),
                ("(input grad)", &dxg, &plans[1]),
                ("(weight grad)", &dwg, &plans[1]),
            ] {
                let ratio = match (g[0], g[1]) {
                    (Some(a), Some(b)) => format!("{:.2}", b / a),
                    _ => "-".into(),
                };
                println!(
                    "| {name} | {} | {pass} | {}, {} | {}, {plan}, {} | {ratio} |",
                    algo.name(),
                    shape(small),
                    cell(g[0]),
                    shape(big),
                    cell(g[1]),
                );
            }
        }
    }
    Ok(())
}
