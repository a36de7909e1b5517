//! Per-dispatch GPU timestamps (`dev::profile_begin` / `dev::profile_end`): every compute
//! pass the library records while a profile is active writes a timestamp at its start and
//! end, so a profile says which kernels a call runs and what each costs on the adapter.
//! Needs `Features::TIMESTAMP_QUERY` (requested when the adapter has it).

use std::sync::atomic::Ordering;

use crate::context::poisoned;
use crate::{Context, Error, Result};

/// An active profile: one query set, two timestamps per recorded pass.
pub(crate) struct Profiler {
    set: wgpu::QuerySet,
    /// Kernel name and specialisation of each recorded pass, in recording order.
    names: Vec<String>,
    capacity: u32,
}

impl Profiler {
    /// The timestamp writes of the next pass (named `name`), or `None` once the profile is full.
    pub(crate) fn next(&mut self, name: String) -> Option<wgpu::ComputePassTimestampWrites<'_>> {
        let i = self.names.len() as u32;
        if i >= self.capacity {
            return None;
        }
        self.names.push(name);
        Some(wgpu::ComputePassTimestampWrites {
            query_set: &self.set,
            beginning_of_pass_write_index: Some(2 * i),
            end_of_pass_write_index: Some(2 * i + 1),
        })
    }
}

/// Starts a profile of at most `capacity` passes.
pub(crate) fn begin(ctx: &Context, capacity: u32) -> Result<()> {
    if !ctx
        .device()
        .features()
        .contains(wgpu::Features::TIMESTAMP_QUERY)
    {
        return Err(Error::from(crate::ErrorKind::Device {
            context: "profiling".into(),
            message: "profiling needs the adapter's TIMESTAMP_QUERY feature".into(),
        }));
    }
    let capacity = capacity.clamp(1, 2048);
    let set = ctx.device().create_query_set(&wgpu::QuerySetDescriptor {
        label: Some("wgconv profile"),
        ty: wgpu::QueryType::Timestamp,
        count: 2 * capacity,
    });
    *ctx.inner.profiler.lock().map_err(poisoned)? = Some(Profiler {
        set,
        names: Vec::new(),
        capacity,
    });
    ctx.inner.profiling.store(true, Ordering::Release);
    Ok(())
}

/// Ends the profile: `(pass name, GPU nanoseconds)` of every recorded pass. Every recorded
/// pass must have been submitted.
pub(crate) fn end(ctx: &Context) -> Result<Vec<(String, f64)>> {
    ctx.inner.profiling.store(false, Ordering::Release);
    let Some(p) = ctx.inner.profiler.lock().map_err(poisoned)?.take() else {
        return Ok(Vec::new());
    };
    let n = p.names.len() as u32;
    if n == 0 {
        return Ok(Vec::new());
    }
    let bytes = 16 * n as u64;
    let dev = ctx.device();
    let resolve = dev.create_buffer(&wgpu::BufferDescriptor {
        label: Some("wgconv profile resolve"),
        size: bytes,
        usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let read = dev.create_buffer(&wgpu::BufferDescriptor {
        label: Some("wgconv profile read"),
        size: bytes,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut enc = dev.create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
    enc.resolve_query_set(&p.set, 0..2 * n, &resolve, 0);
    enc.copy_buffer_to_buffer(&resolve, 0, &read, 0, bytes);
    ctx.inner.queue.submit([enc.finish()]);
    let slice = read.slice(..);
    slice.map_async(wgpu::MapMode::Read, |_| {});
    ctx.synchronize()?;
    let period = ctx.inner.queue.get_timestamp_period() as f64;
    let data = slice
        .get_mapped_range()
        .map_err(|e| Error::from(crate::ErrorKind::BufferMap(e.to_string())))?;
    let ts: Vec<u64> = bytemuck::pod_collect_to_vec(&data);
    Ok(p.names
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            let ns = ts[2 * i + 1].saturating_sub(ts[2 * i]) as f64 * period;
            (name, ns)
        })
        .collect())
}
