//! A small layer in a loop: the time per training step (forward, then all gradients with the
//! bias) of one bench shape, called again and again as a training loop does. For small layers
//! the per-call overhead (allocations, bind groups, parameter uploads) is a large share of the
//! step; `allocated_bytes` is printed so a loop that allocates per call shows.
//!
//! Run: `cargo run --release --example layer_loop -- [--shape e] [--steps 200] [--algo auto]
//! [--no-sync] [--no-tune] [--update-weights] [--layer N,C,H,W,K,R,S,stride,pad]
//! [--profile STEPS]`

#[path = "../benches/suite/mod.rs"]
mod suite;

use std::time::Instant;

use clap::Parser;
use wgconv::{Algorithm, Context, ContextOptions, Tensor};

/// Time per step of forward + backward of one bench shape in a loop.
#[derive(Parser)]
#[command(name = "layer_loop", version)]
struct Args {
    /// Bench shape (a..g)
    #[arg(long, default_value = "e")]
    shape: String,
    /// Timed steps (after 10 warm-up steps)
    #[arg(long, default_value_t = 200)]
    steps: usize,
    /// Algorithm of every operation (auto, direct, implicit_gemm, ...)
    #[arg(long, default_value = "auto")]
    algo: String,
    /// Another layer instead of a bench shape: `N,C,H,W,K,R,S,stride,pad`
    #[arg(long, value_delimiter = ',')]
    layer: Vec<usize>,
    /// Batch size (default: the bench shape's)
    #[arg(long)]
    batch: Option<usize>,
    /// Operations per step: `fwd` and `bwd` (all gradients in one submission), or single
    /// gradients `dx`, `dw`, `db`
    #[arg(long, value_delimiter = ',', default_value = "fwd,bwd")]
    ops: Vec<String>,
    /// Record into preallocated outputs with the `encode_*` calls (one submission per step)
    /// instead of the allocating calls
    #[arg(long)]
    reuse_outputs: bool,
    /// Do not wait for the GPU after each step (only at the end)
    #[arg(long)]
    no_sync: bool,
    /// Rewrite the weights (`Tensor::write`, same values) before every step, as a training
    /// loop whose optimizer runs on the host does: the packed-weight cache misses every step
    #[arg(long)]
    update_weights: bool,
    /// Rewrite x and dy (`Tensor::write`, same values) before every step, as a training loop
    /// on a new batch every step does: no cache can reuse anything derived from them
    #[arg(long)]
    update_inputs: bool,
    /// Use the heuristic algorithm choice instead of autotuning
    #[arg(long)]
    no_tune: bool,
    /// After the timed steps, profile this many more: GPU time of each kernel per step
    /// (pass timestamps; needs the adapter's timestamp queries)
    #[arg(long, default_value_t = 0)]
    profile: usize,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = Args::parse();
    let ctx = Context::with_options_blocking(ContextOptions {
        autotune: a.no_tune.then_some(false),
        ..Default::default()
    })?;
    let algo = Algorithm::from_name(&a.algo)?;
    let mut s = match a.layer.as_slice() {
        [] => suite::shapes()
            .into_iter()
            .find(|s| s.name == a.shape)
            .ok_or("unknown shape")?,
        &[n, c, h, w, k, r, sz, stride, pad] => suite::Shape {
            name: "layer",
            x: [n, c, h, w],
            w: [k, c, r, sz],
            params: wgconv::Conv2dParams::default()
                .with_stride([stride, stride])
                .with_padding(wgconv::Padding::Symmetric([pad, pad])),
        },
        _ => return Err("--layer takes 9 numbers: N,C,H,W,K,R,S,stride,pad".into()),
    };
    s.x[0] = a.batch.unwrap_or(s.x[0]);
    let p = s.params.resolve(s.x, s.w, Some(s.w[0]))?;
    let x_data = suite::fill(s.x.iter().product(), 7);
    let x = Tensor::from_slice(&ctx, &x_data, &s.x)?;
    let w_data = suite::fill(s.w.iter().product(), 11);
    let w = Tensor::from_slice(&ctx, &w_data, &s.w)?;
    let b = Tensor::from_slice(&ctx, &suite::fill(s.w[0], 5), &[s.w[0]])?;
    let dy_data = suite::fill(p.y_shape().iter().product(), 13);
    let dy = Tensor::from_slice(&ctx, &dy_data, &p.y_shape())?;
    let outs = [
        Tensor::zeros(&ctx, &p.y_shape())?,
        Tensor::zeros(&ctx, &s.x)?,
        Tensor::zeros(&ctx, &s.w)?,
        Tensor::zeros(&ctx, &[s.w[0]])?,
    ];
    let encode = |enc: &mut wgpu::CommandEncoder, op: &str| -> wgconv::Result<()> {
        let [y, dx, dw, db] = &outs;
        let prm = &s.params;
        let bwd = op == "bwd";
        if op == "fwd" {
            ctx.encode_conv2d(enc, &x, &w, Some(&b), prm, algo, y)?;
        }
        if bwd || op == "dx" {
            ctx.encode_conv2d_backward_input(enc, &dy, &w, prm, algo, dx)?;
        }
        if bwd || op == "dw" {
            ctx.encode_conv2d_backward_weight(enc, &x, &dy, prm, algo, dw)?;
        }
        if bwd || op == "db" {
            ctx.encode_conv2d_backward_bias(enc, &dy, db)?;
        }
        Ok(())
    };
    let step = || -> wgconv::Result<()> {
        if a.update_inputs {
            x.write(&x_data)?;
            dy.write(&dy_data)?;
        }
        if a.update_weights {
            w.write(&w_data)?;
        }
        if a.reuse_outputs {
            for op in &a.ops {
                let mut enc = ctx
                    .device()
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
                encode(&mut enc, op)?;
                ctx.submit(enc)?;
            }
            if !a.no_sync {
                ctx.synchronize()?;
            }
            return Ok(());
        }
        for op in &a.ops {
            match op.as_str() {
                "fwd" => drop(ctx.conv2d_with(&x, &w, Some(&b), &s.params, algo)?),
                "bwd" => drop(ctx.conv2d_backward(&x, &w, &dy, true, &s.params, algo)?),
                "dx" => drop(ctx.conv2d_backward_input(&dy, &w, s.x, &s.params, algo)?),
                "dw" => drop(ctx.conv2d_backward_weight(&x, &dy, s.w, &s.params, algo)?),
                "db" => drop(ctx.conv2d_backward_bias(&dy)?),
                other => panic!("unknown op {other}"),
            }
        }
        if !a.no_sync {
            ctx.synchronize()?;
        }
        Ok(())
    };
    for _ in 0..10 {
        step()?;
    }
    // Steady state: background tuning and the compilations queued by first-call stand-ins
    // have landed, and their kernels have run once.
    ctx.wait_for_tuning();
    step()?;
    ctx.synchronize()?;
    let before = ctx.allocated_bytes();
    let stats0 = wgconv::dev::pool_stats(&ctx);
    let cpu0 = thread_cpu();
    let mut times = Vec::with_capacity(a.steps);
    let t0 = Instant::now();
    for _ in 0..a.steps {
        let t = Instant::now();
        step()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ctx.synchronize()?;
    let total = t0.elapsed().as_secs_f64() * 1e3;
    let cpu1 = thread_cpu();
    times.sort_by(f64::total_cmp);
    println!("adapter: {}", ctx.adapter_summary());
    println!(
        "layer_loop shape={} ops={} algo={} steps={} mean_ms={:.3} median_ms={:.3} p10_ms={:.3} p90_ms={:.3} allocated_before={} allocated_after={}",
        s.name,
        a.ops.join(","),
        algo.name(),
        a.steps,
        total / a.steps as f64,
        times[times.len() / 2],
        times[times.len() / 10],
        times[times.len() * 9 / 10],
        before,
        ctx.allocated_bytes()
    );
    let stats1 = wgconv::dev::pool_stats(&ctx);
    println!(
        "per step: device allocations {:.2}, bind groups created {:.2}; pooled_bytes {}",
        (stats1.device_allocations - stats0.device_allocations) as f64 / a.steps as f64,
        (stats1.bind_groups_created - stats0.bind_groups_created) as f64 / a.steps as f64,
        ctx.pooled_bytes()
    );
    // CPU time per step of each thread that ran during the loop (Linux only): the caller's
    // thread first, then the driver's (on lavapipe: the queue thread and the shader workers).
    let per: Vec<String> = cpu1
        .iter()
        .filter_map(|(tid, t1)| {
            let t0 = cpu0.iter().find(|(t, _)| t == tid).map_or(0.0, |(_, t)| *t);
            let ms = (t1 - t0) / a.steps as f64;
            (ms > 0.005).then(|| format!("{tid}:{ms:.3}"))
        })
        .collect();
    if !per.is_empty() {
        println!("cpu_ms_per_step (thread:ms) {}", per.join(" "));
    }
    if a.profile > 0 {
        profile(&ctx, a.profile, &step)?;
    }
    Ok(())
}

/// Runs `steps` more steps with every dispatch timestamped; prints each kernel's mean GPU
/// time per step and the sum against the step's wall time.
fn profile(
    ctx: &Context,
    steps: usize,
    step: &dyn Fn() -> wgconv::Result<()>,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut rows: Vec<(String, f64, usize)> = Vec::new();
    let mut wall = 0.0;
    for _ in 0..steps {
        wgconv::dev::profile_begin(ctx, 256)?;
        let t = Instant::now();
        step()?;
        ctx.synchronize()?;
        wall += t.elapsed().as_secs_f64() * 1e3;
        for (i, (name, ns)) in wgconv::dev::profile_end(ctx)?.into_iter().enumerate() {
            match rows.get_mut(i) {
                Some(r) => r.1 += ns,
                None => rows.push((name, ns, i)),
            }
        }
    }
    let n = steps as f64;
    let mut total = 0.0;
    for (name, ns, _) in &rows {
        let ms = ns / n / 1e6;
        total += ms;
        println!("profile {ms:8.3} ms  {name}");
    }
    println!(
        "profile sum of passes {total:.3} ms per step; wall {:.3} ms per step (with the timestamps)",
        wall / n
    );
    Ok(())
}

/// `(thread id, CPU ms)` of every thread of this process, from `/proc` (empty elsewhere).
fn thread_cpu() -> Vec<(u64, f64)> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut v: Vec<(u64, f64)> = dir
        .filter_map(|e| {
            let e = e.ok()?;
            let tid: u64 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // Fields after the command name (which may hold spaces): utime and stime are
            // fields 14 and 15, in clock ticks (100 per second on Linux).
            let rest = stat.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            Some((tid, ticks * 10.0))
        })
        .collect();
    v.sort_by_key(|(t, _)| *t);
    v
}
