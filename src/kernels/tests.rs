//! Every kernel checked without a GPU: its source parses and validates with naga in every
//! specialisation the tests enumerate ([`Spec::variants`]); its WGSL parameter struct has
//! the member names, types and byte offsets of the Rust type, its overrides the names and
//! types of its `spec!` type, and its bindings the kinds its registry entry declares; no
//! signed division; parameters read once in barrier-free kernels.

use std::collections::HashMap;

use super::{Kernel, ALL_KERNELS};
use crate::gpu::wgsl::Ty;
use crate::gpu::Binding;

fn parse(kernel: Kernel) -> naga::Module {
    let src = kernel.source();
    naga::front::wgsl::parse_str(src)
        .unwrap_or_else(|e| panic!("{}: {}", kernel.name(), e.emit_to_string(src)))
}

fn validate(name: &str, module: &naga::Module, src: &str) -> naga::valid::ModuleInfo {
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(module)
    .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(src)))
}

fn scalar(ty: Ty) -> naga::Scalar {
    match ty {
        Ty::U32 => naga::Scalar::U32,
        Ty::I32 => naga::Scalar::I32,
        Ty::F32 => naga::Scalar::F32,
        Ty::Bool => naga::Scalar::BOOL,
    }
}

/// The parameter struct `P` (binding 0) has the Rust type's members: same names, types and
/// byte offsets, same size. Swapping two fields in either definition fails here.
#[test]
fn parameter_structs_match_the_rust_types() {
    for &kernel in ALL_KERNELS {
        let module = parse(kernel);
        let globals: Vec<_> = module
            .global_variables
            .iter()
            .filter(|(_, g)| {
                g.binding
                    .as_ref()
                    .is_some_and(|b| b.group == 0 && b.binding == 0)
            })
            .collect();
        assert_eq!(globals.len(), 1, "{}: one binding 0", kernel.name());
        let g = globals[0].1;
        assert_eq!(g.name.as_deref(), Some("P"), "{}", kernel.name());
        assert_eq!(
            g.space,
            naga::AddressSpace::Storage {
                access: naga::StorageAccess::LOAD
            },
            "{}: P is a read-only storage buffer (lavapipe inlines uniform buffers and \
             recompiles; see gpu::pipeline)",
            kernel.name()
        );
        let naga::TypeInner::Struct { members, span } = &module.types[g.ty].inner else {
            panic!("{}: P is not a struct", kernel.name());
        };
        let fields = kernel.param_fields();
        assert_eq!(
            members.len(),
            fields.len(),
            "{}: member count",
            kernel.name()
        );
        for (i, (m, f)) in members.iter().zip(fields).enumerate() {
            assert_eq!(
                m.name.as_deref(),
                Some(f.name),
                "{} member {i}",
                kernel.name()
            );
            assert_eq!(
                m.offset as usize,
                4 * i,
                "{}.{}: offset",
                kernel.name(),
                f.name
            );
            assert_eq!(
                module.types[m.ty].inner,
                naga::TypeInner::Scalar(scalar(f.ty)),
                "{}.{}: type",
                kernel.name(),
                f.name
            );
        }
        assert_eq!(
            *span as usize,
            kernel.params_size(),
            "{}: size",
            kernel.name()
        );
    }
}

/// The overrides are the `spec!` type's constants (names, types), and `WG` is one of them.
#[test]
fn overrides_match_the_spec_types() {
    for &kernel in ALL_KERNELS {
        let module = parse(kernel);
        let mut declared: Vec<(String, naga::Scalar)> = module
            .overrides
            .iter()
            .map(|(_, o)| {
                let naga::TypeInner::Scalar(s) = module.types[o.ty].inner else {
                    panic!("{}: non-scalar override", kernel.name());
                };
                (o.name.clone().unwrap_or_default(), s)
            })
            .collect();
        let mut spec: Vec<(String, naga::Scalar)> = kernel
            .spec_fields()
            .iter()
            .map(|f| (f.name.to_string(), scalar(f.ty)))
            .collect();
        declared.sort_by(|a, b| a.0.cmp(&b.0));
        spec.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(declared, spec, "{}: overrides vs spec type", kernel.name());
        assert!(
            spec.iter().any(|(n, _)| n == "WG"),
            "{}: a WG override",
            kernel.name()
        );
        assert!(
            module
                .entry_points
                .iter()
                .any(|e| e.name == "main" && e.stage == naga::ShaderStage::Compute),
            "{}: compute entry point `main`",
            kernel.name()
        );
    }
}

/// Bindings 1.. are the kinds the registry declares (the bind-group layout is built from
/// them).
#[test]
fn bindings_match_the_registry() {
    for &kernel in ALL_KERNELS {
        let module = parse(kernel);
        let mut found: Vec<(u32, Binding)> = module
            .global_variables
            .iter()
            .filter_map(|(_, g)| {
                let b = g.binding.as_ref()?;
                if b.binding == 0 {
                    return None;
                }
                let kind = match (&g.space, &module.types[g.ty].inner) {
                    (naga::AddressSpace::Storage { access }, _) => {
                        if access.contains(naga::StorageAccess::STORE) {
                            Binding::Storage
                        } else {
                            Binding::StorageRead
                        }
                    }
                    (
                        _,
                        naga::TypeInner::Image {
                            class: naga::ImageClass::Storage { format, .. },
                            ..
                        },
                    ) => match format {
                        naga::StorageFormat::Rgba16Float => Binding::Image16Read,
                        _ => Binding::ImageRead,
                    },
                    other => panic!("{}: unexpected binding {other:?}", kernel.name()),
                };
                Some((b.binding, kind))
            })
            .collect();
        found.sort_by_key(|(b, _)| *b);
        let want: Vec<(u32, Binding)> = kernel
            .bindings()
            .iter()
            .enumerate()
            .map(|(i, &k)| (i as u32 + 1, k))
            .collect();
        assert_eq!(found, want, "{}: bindings", kernel.name());
    }
}

/// Every specialisation the tests enumerate validates after naga's override processing.
#[test]
fn every_specialisation_validates() {
    let mut count = 0;
    for &kernel in ALL_KERNELS {
        let src = kernel.source();
        let module = parse(kernel);
        let info = validate(kernel.name(), &module, src);
        for constants in kernel.variants() {
            let map: naga::back::PipelineConstants = constants
                .iter()
                .map(|&(n, v)| (n.to_string(), v as f64))
                .collect();
            let (m, _) = naga::back::pipeline_constants::process_overrides(
                &module,
                &info,
                Some((naga::ShaderStage::Compute, "main")),
                &map,
            )
            .unwrap_or_else(|e| panic!("{} {constants:?}: {e}", kernel.name()));
            validate(kernel.name(), &m, src);
            count += 1;
        }
    }
    assert!(count >= ALL_KERNELS.len());
}

/// GLSL leaves `%` undefined for negative operands and naga's GLSL back end emits WGSL's
/// `%` and `/` on `i32` as they are, so on the GL backend a signed remainder or quotient of a
/// negative value is a wrong answer (WGSL, SPIR-V and MSL define them; GLSL does not). Every
/// kernel divides only unsigned values: wrap negative coordinates with explicit compares.
#[test]
fn no_signed_division_or_remainder() {
    let mut found = Vec::new();
    for &kernel in ALL_KERNELS {
        let src = kernel.source();
        let module = parse(kernel);
        let info = validate(kernel.name(), &module, src);
        let mut scan = |name: &str, f: &naga::Function, fi: &naga::valid::FunctionInfo| {
            for (h, e) in f.expressions.iter() {
                if let naga::Expression::Binary { op, left, .. } = *e {
                    if matches!(
                        op,
                        naga::BinaryOperator::Divide | naga::BinaryOperator::Modulo
                    ) {
                        let ty = fi[left].ty.inner_with(&module.types);
                        if ty.scalar_kind() == Some(naga::ScalarKind::Sint) {
                            let loc = f.expressions.get_span(h).location(src);
                            found.push(format!(
                                "{}:{} ({name}): signed {op:?}",
                                kernel.name(),
                                loc.line_number
                            ));
                        }
                    }
                }
            }
        };
        for (h, f) in module.functions.iter() {
            scan(f.name.as_deref().unwrap_or("?"), f, &info[h]);
        }
        for (i, ep) in module.entry_points.iter().enumerate() {
            scan(&ep.name, &ep.function, info.get_entry_point(i));
        }
    }
    assert!(
        found.is_empty(),
        "signed / or % in kernels:\n{}",
        found.join("\n")
    );
}

/// On lavapipe every read of a storage-buffer field is a loop over the lanes that LLVM does
/// not hoist out of the kernel's loops, so kernels without barriers copy the fields of `P`
/// they use into private variables once, at the top of `main` (`gpu::wgsl::hoist_params`,
/// applied by every generator); measured 17 % on the 1024^3 GEMM, 2.2x on the depthwise
/// weight gradient. A read of `P.<field>` anywhere else fails here.
#[test]
fn barrier_free_kernels_read_parameters_once() {
    for &kernel in ALL_KERNELS {
        let src = kernel.source();
        if src.contains("Barrier") {
            continue;
        }
        for (i, line) in src.lines().enumerate() {
            let Some(pos) = line.find("P.") else {
                continue;
            };
            if pos > 0 && line[..pos].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
                continue; // some other identifier ending in P
            }
            let t = line.trim();
            let copy = |prefix: &str| {
                t.strip_prefix(prefix)
                    .and_then(|r| r.split_once(" = P."))
                    .is_some_and(|(a, b)| b.strip_suffix(';') == Some(a))
            };
            let ok = copy("let p_") || copy("g_");
            assert!(
                ok,
                "{}:{}: `{t}` reads P outside the hoisted copies at the top of main",
                kernel.name(),
                i + 1
            );
        }
    }
}

/// Kernel names are unique (labels, logs, dumped file names).
#[test]
fn kernel_names_are_unique() {
    let mut seen = HashMap::new();
    for &k in ALL_KERNELS {
        assert!(seen.insert(k.name(), k).is_none(), "duplicate {}", k.name());
    }
}

/// Every specialisation the tests enumerate translates with naga's SPIR-V (Vulkan), MSL
/// (Metal), HLSL (DX12) and GLSL (GL) back ends, as wgpu does on those platforms, and the
/// SPIR-V passes `spirv-val` (Debian's `spirv-tools`, installed by `.ci/run`; the test fails
/// with that hint when it is missing).
#[test]
fn every_specialisation_translates_for_every_backend() {
    use naga::back::{glsl, hlsl, msl, spv};
    let dir = std::env::temp_dir().join(format!("wgconv-spv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut spv_files = Vec::new();
    for &kernel in ALL_KERNELS {
        let src = kernel.source();
        let module = parse(kernel);
        let info = validate(kernel.name(), &module, src);
        for (i, constants) in kernel.variants().iter().enumerate() {
            let map: naga::back::PipelineConstants = constants
                .iter()
                .map(|&(n, v)| (n.to_string(), v as f64))
                .collect();
            let (m, mi) = naga::back::pipeline_constants::process_overrides(
                &module,
                &info,
                Some((naga::ShaderStage::Compute, "main")),
                &map,
            )
            .unwrap_or_else(|e| panic!("{} {constants:?}: {e}", kernel.name()));
            let what = |backend: &str, e: &dyn std::fmt::Display| {
                format!("{} {constants:?} -> {backend}: {e}", kernel.name())
            };
            // Vulkan: SPIR-V 1.3 (subgroup operations).
            let words = spv::write_vec(
                &m,
                &mi,
                &spv::Options {
                    lang_version: (1, 3),
                    ..Default::default()
                },
                Some(&spv::PipelineOptions {
                    shader_stage: naga::ShaderStage::Compute,
                    entry_point: "main".into(),
                }),
            )
            .unwrap_or_else(|e| panic!("{}", what("spir-v", &e)));
            let file = dir.join(format!("{}-{i}.spv", kernel.name()));
            let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            std::fs::write(&file, bytes).expect("write spir-v");
            spv_files.push(file);
            // Metal: MSL 2.4 (SIMD-group functions).
            msl::write_string(
                &m,
                &mi,
                &msl::Options {
                    lang_version: (2, 4),
                    ..Default::default()
                },
                &msl::PipelineOptions {
                    entry_point: Some((naga::ShaderStage::Compute, "main".into())),
                    ..Default::default()
                },
            )
            .unwrap_or_else(|e| panic!("{}", what("msl", &e)));
            // DX12: HLSL shader model 6.0 (wave intrinsics).
            let options = hlsl::Options {
                shader_model: hlsl::ShaderModel::V6_0,
                ..Default::default()
            };
            let pipeline = hlsl::PipelineOptions {
                entry_point: Some((naga::ShaderStage::Compute, "main".into())),
            };
            let mut out = String::new();
            hlsl::Writer::new(&mut out, &options, &pipeline)
                .write(&m, &mi, None)
                .unwrap_or_else(|e| panic!("{}", what("hlsl", &e)));
            // GL: GLSL 4.30 core (compute shaders); subgroup kernels and f16 twins are not
            // run on GL (no subgroups, no `shader-f16` there), so they are not translated to
            // it.
            if !src.contains("subgroup") && !src.contains("enable f16;") {
                let options = glsl::Options {
                    version: glsl::Version::Desktop(430),
                    ..Default::default()
                };
                let pipeline = glsl::PipelineOptions {
                    shader_stage: naga::ShaderStage::Compute,
                    entry_point: "main".into(),
                    multiview: None,
                };
                let mut out = String::new();
                glsl::Writer::new(
                    &mut out,
                    &m,
                    &mi,
                    &options,
                    &pipeline,
                    naga::proc::BoundsCheckPolicies::default(),
                )
                .and_then(|mut w| w.write())
                .unwrap_or_else(|e| panic!("{}", what("glsl", &e)));
            }
        }
    }
    let mut failures = Vec::new();
    for file in &spv_files {
        let out = std::process::Command::new("spirv-val")
            .args(["--target-env", "vulkan1.1"])
            .arg(file)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run spirv-val ({e}): install it (Debian: apt-get install spirv-tools)"
                )
            });
        if !out.status.success() {
            failures.push(format!(
                "{}: {}",
                file.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        failures.is_empty(),
        "spirv-val rejected {} of {} modules:\n{}",
        failures.len(),
        spv_files.len(),
        failures.join("\n")
    );
}
