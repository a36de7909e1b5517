//! The driver's first-dispatch compilation cost of each kernel: on lavapipe (llvmpipe) LLVM
//! compiles a compute pipeline at its first dispatch, in the one queue thread, so the first
//! call of a layer pays it for every kernel it runs. This creates each kernel's pipeline as
//! the library does (same module checks), dispatches one workgroup on stand-in resources
//! (parameters all 1), and prints the first dispatch's time minus the second's.
//!
//! Run with Mesa's shader cache disabled, or its cache answers instead of LLVM:
//! `MESA_SHADER_CACHE_DISABLE=true cargo run --release --example jit_cost -- [NAME ..] [--spec I]`
//! (names are substrings of kernel names; default: the first-call kernels of the lavapipe
//! forward convolution). `--spec I` picks the I-th validated specialisation (default: the
//! overrides' defaults).

use std::time::Instant;

use naga::{AddressSpace, ImageClass, StorageFormat, TypeInner};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut names = Vec::new();
    let mut spec: Option<usize> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--spec" {
            spec = Some(args.next().ok_or("--spec needs an index")?.parse()?);
        } else {
            names.push(a);
        }
    }
    if names.is_empty() {
        names = [
            "pack_conv_weights_texel",
            "pad_image_texel",
            "conv2d_implicit_p1x32",
        ]
        .map(String::from)
        .to_vec();
    }
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::VULKAN);
    let instance = wgpu::Instance::new(desc);
    let adapter = pollster::block_on(instance.request_adapter(&Default::default()))?;
    let features = adapter.features() & (wgpu::Features::SUBGROUP | wgpu::Features::SHADER_F16);
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_features: features,
        required_limits: adapter.limits(),
        ..Default::default()
    }))?;
    println!("adapter: {}", adapter.get_info().name);
    let kernels = wgconv::dev::kernel_sources();
    for k in kernels.iter().filter(|k| {
        names
            .iter()
            .any(|n| k.name == n || k.name.contains(n.as_str()))
    }) {
        let constants: Vec<(&str, f64)> = match spec {
            Some(i) => k
                .specialisations
                .get(i)
                .ok_or("no such specialisation")?
                .iter()
                .map(|(n, v)| (*n, *v as f64))
                .collect(),
            None => Vec::new(),
        };
        let module = naga::front::wgsl::parse_str(k.wgsl)?;
        let mut checks = wgpu::ShaderRuntimeChecks::checked();
        checks.force_loop_bounding = false;
        checks.int_div_checks = false;
        let t0 = Instant::now();
        // SAFETY: the library's own kernels, created as the library creates them.
        let sm = unsafe {
            device.create_shader_module_trusted(
                wgpu::ShaderModuleDescriptor {
                    label: Some(k.name),
                    source: wgpu::ShaderSource::Wgsl(k.wgsl.into()),
                },
                checks,
            )
        };
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(k.name),
            layout: None,
            module: &sm,
            entry_point: Some("main"),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &constants,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        let create = t0.elapsed();
        // Stand-in resources for every binding the entry point uses (auto layout).
        let mut buffers = Vec::new();
        let mut views = Vec::new();
        let mut slots = Vec::new();
        for (_, var) in module.global_variables.iter() {
            let Some(b) = &var.binding else { continue };
            match &module.types[var.ty].inner {
                TypeInner::Image {
                    class: ImageClass::Storage { format, .. },
                    ..
                } => {
                    let format = match format {
                        StorageFormat::Rgba16Float => wgpu::TextureFormat::Rgba16Float,
                        StorageFormat::R32Float => wgpu::TextureFormat::R32Float,
                        _ => wgpu::TextureFormat::Rgba32Float,
                    };
                    let t = device.create_texture(&wgpu::TextureDescriptor {
                        label: None,
                        size: wgpu::Extent3d {
                            width: 64,
                            height: 64,
                            depth_or_array_layers: 1,
                        },
                        mip_level_count: 1,
                        sample_count: 1,
                        dimension: wgpu::TextureDimension::D2,
                        format,
                        usage: wgpu::TextureUsages::STORAGE_BINDING,
                        view_formats: &[],
                    });
                    views.push((b.binding, t.create_view(&Default::default())));
                }
                _ if matches!(
                    var.space,
                    AddressSpace::Storage { .. } | AddressSpace::Uniform
                ) =>
                {
                    let usage = if var.space == AddressSpace::Uniform {
                        wgpu::BufferUsages::UNIFORM
                    } else {
                        wgpu::BufferUsages::STORAGE
                    };
                    let buf = device.create_buffer(&wgpu::BufferDescriptor {
                        label: None,
                        size: 1 << 16,
                        usage: usage | wgpu::BufferUsages::COPY_DST,
                        mapped_at_creation: false,
                    });
                    // Parameters all 1: loops run once, no division by zero.
                    queue.write_buffer(&buf, 0, bytemuck::cast_slice(&vec![1u32; 1 << 14]));
                    buffers.push((b.binding, buf));
                }
                _ => {}
            }
        }
        for (i, buf) in &buffers {
            slots.push(wgpu::BindGroupEntry {
                binding: *i,
                resource: buf.as_entire_binding(),
            });
        }
        for (i, v) in &views {
            slots.push(wgpu::BindGroupEntry {
                binding: *i,
                resource: wgpu::BindingResource::TextureView(v),
            });
        }
        // Auto layouts hold only the bindings the entry point uses.
        let layout = pipeline.get_bind_group_layout(0);
        let bg = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &layout,
            entries: &slots,
        });
        let run = || -> Result<f64, wgpu::PollError> {
            let t = Instant::now();
            let mut enc = device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                pass.set_pipeline(&pipeline);
                pass.set_bind_group(0, &bg, &[]);
                pass.dispatch_workgroups(1, 1, 1);
            }
            queue.submit([enc.finish()]);
            device.poll(wgpu::PollType::wait_indefinitely())?;
            Ok(t.elapsed().as_secs_f64() * 1e3)
        };
        let first = run()?;
        let second = run()?;
        println!(
            "{:40} create {:6.1} ms, first dispatch {:6.1} ms, second {:5.2} ms: driver compile ~{:.1} ms",
            k.name,
            create.as_secs_f64() * 1e3,
            first,
            second,
            first - second
        );
    }
    Ok(())
}
