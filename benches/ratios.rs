//! Time ratios of two or more variants of the same layer, measured interleaved in one
//! process: f16 against f32 tensors, channels-last against contiguous, a fused activation
//! against plain conv + bias. On a noisy host (a shared VM: the same binary's medians move
//! 0.6x–1.5x between processes) the ratio of calls alternated within one process is far
//! steadier than the ratio of two separate runs of `benches/conv.rs`.
//!
//! `cargo bench --bench ratios -- --compare f16|nhwc|epilogue [--shapes a,b,...]
//! [--ops fwd,bwd,...] [--iters N] [--algo auto]`
//!
//! - `f16`: `--ops` of `fwd`, `bwd` (all gradients with the bias), `dx`, `dw`, `db`, `gemm`
//!   (1024³); f32 tensors against f16 tensors (f32 accumulation).
//! - `nhwc`: the same ops (not `gemm`) with contiguous tensors against channels-last x, dy and
//!   weights (PyTorch's `channels_last` model: NHWC activations, KRSC weights; the gradients
//!   come out in their operand's format).
//! - `epilogue`: the forward with bias against the same with a fused relu and a fused gelu.
//!
//! Each call is submitted and waited for (outputs allocated per call, except `dw`, written
//! into a preallocated tensor of w's element type and format); after 8 warm-up calls of every variant (which
//! also queue `auto`'s tuning, waited for), the variants run in turn `--iters` times. One
//! line per shape and op: `ratio op=<op> shape=<s> variant=<v> min=<ms> p25=<ms>
//! median=<ms> x_min=<r> x_p25=<r> x_median=<r>`, the ratios against the first variant.

#[path = "suite/mod.rs"]
mod suite;

use std::time::Instant;

use wgconv::{Activation, Algorithm, Context, DType, Epilogue, GemmParams, MemoryFormat, Tensor};

/// One variant's call.
type Call<'a> = Box<dyn Fn() -> wgconv::Result<()> + 'a>;

/// The operands of one variant: x, w, bias, dy (and the GEMM's a, b for `gemm`).
struct Operands {
    x: Tensor,
    w: Tensor,
    b: Tensor,
    dy: Tensor,
    /// The weight gradient's output, in w's element type and format (written by every `dw`
    /// call).
    dw: Tensor,
    gemm: Option<(Tensor, Tensor)>,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let list = |flag: &str| value(flag).map(|v| v.split(',').map(String::from).collect());
    let compare = value("--compare").unwrap_or_else(|| "f16".into());
    if !["f16", "nhwc", "epilogue"].contains(&compare.as_str()) {
        return Err(format!("--compare takes f16, nhwc or epilogue, not {compare}").into());
    }
    let default_ops = if compare == "epilogue" {
        "fwd"
    } else {
        "fwd,bwd"
    };
    let ops: Vec<String> = list("--ops").unwrap_or_else(|| vec![default_ops.to_string()]);
    let ops: Vec<String> = ops
        .iter()
        .flat_map(|o| o.split(',').map(String::from).collect::<Vec<_>>())
        .collect();
    let shapes: Option<Vec<String>> = list("--shapes");
    let iters: usize = value("--iters").map_or(Ok(30), |v| v.parse())?;
    let algo = Algorithm::from_name(&value("--algo").unwrap_or_else(|| "auto".into()))?;
    let ctx = Context::new_blocking()?;
    println!("adapter: {}", ctx.adapter_summary());
    let gemm_size = 1024;
    for s in suite::shapes() {
        if shapes
            .as_ref()
            .is_some_and(|v| !v.iter().any(|n| n == s.name))
        {
            continue;
        }
        let p = s.params.resolve(s.x, s.w, Some(s.w[0]))?;
        let ys = p.y_shape();
        let make = |dt: DType, f: MemoryFormat, gemm: bool| -> wgconv::Result<Operands> {
            let t = |n: usize, mul: usize, shape: &[usize], format: bool| {
                let t = Tensor::from_f32(&ctx, &suite::fill(n, mul), shape, dt)?;
                if format {
                    t.to_format(f)
                } else {
                    Ok(t)
                }
            };
            let gemm = if gemm {
                let n = gemm_size * gemm_size;
                let shape = [gemm_size, gemm_size];
                Some((t(n, 3, &shape, false)?, t(n, 17, &shape, false)?))
            } else {
                None
            };
            Ok(Operands {
                x: t(s.x.iter().product(), 7, &s.x, true)?,
                w: t(s.w.iter().product(), 11, &s.w, true)?,
                b: t(s.w[0], 5, &[s.w[0]], false)?,
                dy: t(ys.iter().product(), 13, &ys, true)?,
                dw: t(s.w.iter().product(), 19, &s.w, true)?,
                gemm,
            })
        };
        let wants_gemm = ops.iter().any(|o| o == "gemm");
        let sets: Vec<(&str, Operands)> = match compare.as_str() {
            "f16" => vec![
                (
                    "f32",
                    make(DType::F32, MemoryFormat::Contiguous, wants_gemm)?,
                ),
                (
                    "f16",
                    make(DType::F16, MemoryFormat::Contiguous, wants_gemm)?,
                ),
            ],
            "nhwc" => vec![
                ("nchw", make(DType::F32, MemoryFormat::Contiguous, false)?),
                ("nhwc", make(DType::F32, MemoryFormat::ChannelsLast, false)?),
            ],
            _ => vec![("f32", make(DType::F32, MemoryFormat::Contiguous, false)?)],
        };
        for op in &ops {
            if op == "gemm" && (compare != "f16" || s.name != "a") {
                // One GEMM measurement, with the first shape.
                continue;
            }
            let call = |o, ep| call(&ctx, &s, o, op, ep, algo);
            let variants: Vec<(String, Call<'_>)> = if compare == "epilogue" {
                let o = &sets[0].1;
                vec![
                    ("bias".into(), call(o, None)),
                    (
                        "relu".into(),
                        call(o, Some(Epilogue::new(Activation::Relu))),
                    ),
                    (
                        "gelu".into(),
                        call(o, Some(Epilogue::new(Activation::Gelu))),
                    ),
                ]
            } else {
                sets.iter()
                    .map(|(n, o)| (n.to_string(), call(o, None)))
                    .collect()
            };
            let timed = |f: &Call<'_>| -> wgconv::Result<f64> {
                let t = Instant::now();
                f()?;
                ctx.synchronize()?;
                Ok(t.elapsed().as_secs_f64() * 1e3)
            };
            for (_, f) in &variants {
                for _ in 0..8 {
                    timed(f)?;
                }
            }
            ctx.wait_for_tuning();
            let mut ts: Vec<Vec<f64>> = vec![Vec::with_capacity(iters); variants.len()];
            for _ in 0..iters {
                for (i, (_, f)) in variants.iter().enumerate() {
                    ts[i].push(timed(f)?);
                }
            }
            for v in ts.iter_mut() {
                v.sort_by(f64::total_cmp);
            }
            let q = |v: &[f64], f: f64| v[((v.len() - 1) as f64 * f).round() as usize];
            for (i, (name, _)) in variants.iter().enumerate() {
                let (a, b) = (&ts[i], &ts[0]);
                println!(
                    "ratio op={op} shape={} variant={name} min={:.3} p25={:.3} median={:.3} \
                     x_min={:.2} x_p25={:.2} x_median={:.2}",
                    s.name,
                    q(a, 0.0),
                    q(a, 0.25),
                    q(a, 0.5),
                    q(a, 0.0) / q(b, 0.0),
                    q(a, 0.25) / q(b, 0.25),
                    q(a, 0.5) / q(b, 0.5),
                );
            }
        }
    }
    Ok(())
}

/// The call of `op` on operands `o` (`fwd` with epilogue `ep` when given).
fn call<'a>(
    ctx: &'a Context,
    s: &'a suite::Shape,
    o: &'a Operands,
    op: &str,
    ep: Option<Epilogue>,
    algo: Algorithm,
) -> Call<'a> {
    let prm = &s.params;
    match (op, ep) {
        ("fwd", Some(ep)) => Box::new(move || {
            ctx.conv2d_fused(&o.x, &o.w, Some(&o.b), None, prm, &ep, algo)
                .map(drop)
        }),
        ("fwd", None) => {
            Box::new(move || ctx.conv2d_with(&o.x, &o.w, Some(&o.b), prm, algo).map(drop))
        }
        ("bwd", _) => Box::new(move || {
            ctx.conv2d_backward(&o.x, &o.w, &o.dy, true, prm, algo)
                .map(drop)
        }),
        ("dx", _) => Box::new(move || {
            ctx.conv2d_backward_input(&o.dy, &o.w, s.x, prm, algo)
                .map(drop)
        }),
        // Into the preallocated dw of w's element type and format.
        ("dw", _) => Box::new(move || {
            let mut enc = ctx.device().create_command_encoder(&Default::default());
            ctx.encode_conv2d_backward_weight(&mut enc, &o.x, &o.dy, prm, algo, &o.dw)?;
            ctx.submit(enc)
        }),
        ("db", _) => Box::new(move || ctx.conv2d_backward_bias(&o.dy).map(drop)),
        ("gemm", _) => Box::new(move || match &o.gemm {
            Some((a, b)) => ctx.gemm(a, b, &GemmParams::default()).map(drop),
            None => Ok(()),
        }),
        (other, _) => {
            let other = other.to_string();
            Box::new(move || {
                Err(wgconv::Error::invalid_param(
                    "--ops",
                    other.clone(),
                    "one of fwd, bwd, dx, dw, db, gemm",
                ))
            })
        }
    }
}
