//! The ReLU and its gradient as two small compute shaders, shared by the training examples
//! (`digits`; `train_filters` uses the fused epilogue, `Context::conv2d_fused`).

use std::num::NonZeroU64;

use wgconv::{Context, Tensor};

/// What can go wrong recording a ReLU (converts with `?` into either example's error type).
#[derive(Debug)]
pub struct ReluError(String);

impl std::fmt::Display for ReluError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ReluError {}

impl From<String> for ReluError {
    fn from(s: String) -> Self {
        ReluError(s)
    }
}

impl From<&str> for ReluError {
    fn from(s: &str) -> Self {
        ReluError(s.to_string())
    }
}

const RELU_WGSL: &str = r#"
@group(0) @binding(0) var<storage, read_write> data: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * 256u;
    if (i < arrayLength(&data)) {
        data[i] = max(data[i], 0.0);
    }
}
"#;

/// `grad *= (act > 0)`, where `act` is the ReLU's output (positive exactly where its
/// input was).
const RELU_BACKWARD_WGSL: &str = r#"
@group(0) @binding(0) var<storage, read> act: array<f32>;
@group(0) @binding(1) var<storage, read_write> grad: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * 256u;
    if (i < arrayLength(&grad) && act[i] <= 0.0) {
        grad[i] = 0.0;
    }
}
"#;

/// The two element-wise shaders of the example (ReLU in place, and its gradient).
pub struct Relu {
    forward: wgpu::ComputePipeline,
    backward: wgpu::ComputePipeline,
}

impl Relu {
    /// Compiles the shaders on the context's device.
    ///
    /// # Errors
    /// The validation error if a shader or pipeline is rejected.
    pub fn new(ctx: &Context) -> Result<Self, ReluError> {
        let dev = ctx.device();
        let scope = dev.push_error_scope(wgpu::ErrorFilter::Validation);
        let make = |label: &str, src: &str| {
            let module = dev.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(label),
                source: wgpu::ShaderSource::Wgsl(src.into()),
            });
            dev.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(label),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            })
        };
        let forward = make("relu", RELU_WGSL);
        let backward = make("relu_backward", RELU_BACKWARD_WGSL);
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(format!("creating the ReLU shaders: {e}").into());
        }
        Ok(Relu { forward, backward })
    }

    fn encode(
        &self,
        ctx: &Context,
        enc: &mut wgpu::CommandEncoder,
        pipeline: &wgpu::ComputePipeline,
        tensors: &[&Tensor],
    ) -> Result<(), ReluError> {
        let n = tensors.last().map_or(0, |t| t.numel());
        if n == 0 {
            return Ok(());
        }
        // Bind exactly `numel` elements so `arrayLength` is the element count.
        let bytes = NonZeroU64::new(4 * n as u64).ok_or("empty tensor")?;
        let entries: Vec<wgpu::BindGroupEntry> = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: t.buffer(),
                    offset: 0,
                    size: Some(bytes),
                }),
            })
            .collect();
        let bind_group = ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("relu"),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let groups = n.div_ceil(256);
        let max = ctx.limits().max_compute_workgroups_per_dimension as usize;
        let gx = groups.min(max);
        let gy = groups.div_ceil(gx);
        if gy > max {
            return Err(format!("ReLU over {n} elements needs too many workgroups").into());
        }
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("relu"),
            timestamp_writes: None,
        });
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(gx as u32, gy as u32, 1);
        Ok(())
    }

    /// Records `t = max(t, 0)`.
    pub fn forward(
        &self,
        ctx: &Context,
        enc: &mut wgpu::CommandEncoder,
        t: &Tensor,
    ) -> Result<(), ReluError> {
        self.encode(ctx, enc, &self.forward, &[t])
    }

    /// Records `grad *= (act > 0)` (`act`: the ReLU's output, same shape as `grad`).
    pub fn backward(
        &self,
        ctx: &Context,
        enc: &mut wgpu::CommandEncoder,
        act: &Tensor,
        grad: &Tensor,
    ) -> Result<(), ReluError> {
        if act.shape() != grad.shape() {
            return Err(format!(
                "ReLU gradient: activation {:?} vs gradient {:?}",
                act.shape(),
                grad.shape()
            )
            .into());
        }
        self.encode(ctx, enc, &self.backward, &[act, grad])
    }
}
