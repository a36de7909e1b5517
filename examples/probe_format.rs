use std::time::Instant;
use wgconv::{Context, MemoryFormat, Tensor};
fn main() -> wgconv::Result<()> {
    let ctx = Context::new_blocking()?;
    for shape in [
        [1usize, 32, 112, 112],
        [1, 256, 14, 14],
        [8, 32, 32, 32],
        [1, 3, 224, 224],
    ] {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let a = Tensor::from_slice(&ctx, &v, &shape)?;
        let c = a.with_format(MemoryFormat::ChannelsLast)?;
        for (name, t, f) in [
            ("to_cl", &a, MemoryFormat::ChannelsLast),
            ("to_contig", &c, MemoryFormat::Contiguous),
        ] {
            let mut best = f64::MAX;
            for _ in 0..7 {
                let t0 = Instant::now();
                let o = t
                    .with_format(if f == MemoryFormat::ChannelsLast {
                        MemoryFormat::Contiguous
                    } else {
                        MemoryFormat::ChannelsLast
                    })?
                    .to_format(f)?;
                ctx.device().poll(wgpu::PollType::wait_indefinitely()).ok();
                drop(o);
                best = best.min(t0.elapsed().as_secs_f64() * 1e3);
            }
            println!("{shape:?} {name}: {best:.3} ms");
        }
    }
    Ok(())
}
