//! Every shader under `shaders/` parses and validates with naga (no GPU needed), every
//! shader file is registered as a kernel, and each kernel's uniform struct has the size the
//! Rust side uploads.

use std::path::Path;

use wgconv::ALL_KERNELS;

fn parse(name: &str, src: &str) -> naga::Module {
    naga::front::wgsl::parse_str(src)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(src)))
}

fn validate(name: &str, module: &naga::Module, src: &str) -> naga::valid::ModuleInfo {
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(module)
    .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(src)))
}

#[test]
fn every_shader_file_validates_with_naga() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).expect("shaders/ exists") {
        let path = entry.expect("readable entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("wgsl") {
            continue;
        }
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("utf-8 name")
            .to_string();
        let src = std::fs::read_to_string(&path).expect("readable shader");
        let module = parse(&name, &src);
        validate(&name, &module, &src);
        assert!(
            ALL_KERNELS.iter().any(|k| k.name() == name),
            "shaders/{name}.wgsl is not registered in src/kernels.rs"
        );
        count += 1;
    }
    assert_eq!(
        count,
        ALL_KERNELS.len(),
        "every registered kernel has a shader file"
    );
}

#[test]
fn uniform_structs_match_rust_layout() {
    for &kernel in ALL_KERNELS {
        let src = kernel.source();
        let module = parse(kernel.name(), src);
        validate(kernel.name(), &module, src);
        // The parameter struct `P` is binding 0, a read-only storage buffer (not a uniform
        // buffer: see `Context::layout`).
        let uniforms: Vec<_> = module
            .global_variables
            .iter()
            .filter(|(_, g)| {
                g.binding
                    .as_ref()
                    .is_some_and(|b| b.group == 0 && b.binding == 0)
                    && g.space
                        == naga::AddressSpace::Storage {
                            access: naga::StorageAccess::LOAD,
                        }
                    && g.name.as_deref() == Some("P")
            })
            .collect();
        assert_eq!(
            uniforms.len(),
            1,
            "{}: exactly one parameter struct P at binding 0 (read-only storage)",
            kernel.name()
        );
        assert!(
            !module
                .global_variables
                .iter()
                .any(|(_, g)| g.space == naga::AddressSpace::Uniform),
            "{}: no uniform buffers (lavapipe inlines and recompiles them)",
            kernel.name()
        );
        let ty = &module.types[uniforms[0].1.ty];
        let size = ty.inner.size(module.to_ctx()) as usize;
        assert_eq!(
            size,
            kernel.uniform_size(),
            "{}: WGSL uniform size vs Rust struct",
            kernel.name()
        );
        assert_eq!(
            size % 16,
            0,
            "{}: uniform size is a multiple of 16",
            kernel.name()
        );
    }
}

#[test]
fn every_kernel_has_main_entry_and_wg_override() {
    for &kernel in ALL_KERNELS {
        let module = parse(kernel.name(), kernel.source());
        assert!(
            module
                .entry_points
                .iter()
                .any(|e| e.name == "main" && e.stage == naga::ShaderStage::Compute),
            "{}: compute entry point `main`",
            kernel.name()
        );
        assert!(
            module
                .overrides
                .iter()
                .any(|(_, o)| o.name.as_deref() == Some("WG")),
            "{}: `override WG` (workgroup size)",
            kernel.name()
        );
    }
}

/// WGSL has no include: the padding-mode index mapping `src_index` is written into every
/// kernel that reads through the padding (by tools/gen_shaders.py, or by hand). All copies
/// must be the same function.
#[test]
fn src_index_is_the_same_everywhere() {
    fn body(src: &str) -> Option<String> {
        let start = src.find("\nfn src_index(")? + 1;
        let end = src[start..].find("\n}\n")? + start + 2;
        Some(src[start..end].to_string())
    }
    let copies: Vec<(&str, String)> = wgconv::ALL_KERNELS
        .iter()
        .filter_map(|k| body(k.source()).map(|b| (k.name(), b)))
        .collect();
    assert!(copies.len() >= 6, "found {} copies", copies.len());
    for (name, b) in &copies[1..] {
        assert_eq!(
            b, &copies[0].1,
            "src_index in {name} differs from the one in {}",
            copies[0].0
        );
    }
}

/// On lavapipe every read of a storage-buffer field is a loop over the lanes that LLVM does
/// not hoist out of the kernel's loops, so kernels without barriers copy the fields of `P`
/// they use into private variables once, at the top of `main` (`hoist_params` in
/// tools/gen_shaders.py); measured 17 % on the 1024^3 GEMM, 2.2x on the depthwise weight
/// gradient. A new read of `P.<field>` anywhere else fails here.
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
            let ok = t
                .strip_prefix("p_")
                .and_then(|r| r.split_once(" = P."))
                .is_some_and(|(a, b)| b.strip_suffix(';') == Some(a));
            assert!(
                ok,
                "{}:{}: `{t}` reads P outside the hoisted copies at the top of main",
                kernel.name(),
                i + 1
            );
        }
    }
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
        let module = parse(kernel.name(), src);
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
                            let span = f.expressions.get_span(h);
                            let loc = span.location(src);
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
