//! Writes the WGSL of every kernel as the library compiles it, for reading and for other
//! WGSL compilers: `cargo run --example dump_shaders -- DIR [--expand]`.
//!
//! For each kernel: `DIR/<name>.wgsl` (the source, with `override` constants, as naga takes
//! it), `DIR/<name>.browser.wgsl` where the source for other compilers (Tint) differs (the
//! `enable` directives naga refuses) and `DIR/<name>.specs.json` (the override values of every
//! specialisation the library's tests validate). With `--expand`, also `DIR/<name>/<i>.wgsl`: each specialisation with its
//! overrides replaced by constants (a self-contained program).

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: dump_shaders DIR [--expand]");
        std::process::exit(2);
    };
    let expand = args.any(|a| a == "--expand");
    std::fs::create_dir_all(&dir)?;
    let kernels = wgconv::dev::kernel_sources();
    let mut files = 0;
    for k in &kernels {
        std::fs::write(dir.join(format!("{}.wgsl", k.name)), k.wgsl)?;
        if k.browser_wgsl != k.wgsl {
            std::fs::write(dir.join(format!("{}.browser.wgsl", k.name)), k.browser_wgsl)?;
            files += 1;
        }
        let specs: Vec<String> = k
            .specialisations
            .iter()
            .map(|c| {
                let fields: Vec<String> = c.iter().map(|(n, v)| format!("\"{n}\": {v}")).collect();
                format!("{{{}}}", fields.join(", "))
            })
            .collect();
        std::fs::write(
            dir.join(format!("{}.specs.json", k.name)),
            format!("[\n  {}\n]\n", specs.join(",\n  ")),
        )?;
        files += 2;
        if expand {
            let sub = dir.join(k.name);
            std::fs::create_dir_all(&sub)?;
            for (i, c) in k.specialisations.iter().enumerate() {
                std::fs::write(sub.join(format!("{i}.wgsl")), specialise(k.wgsl, c))?;
                files += 1;
            }
        }
    }
    println!(
        "{} kernels, {files} files in {}",
        kernels.len(),
        dir.display()
    );
    Ok(())
}

/// `src` with each `override NAME: T = default;` replaced by `const NAME: T = value;`.
fn specialise(src: &str, constants: &[(&str, i64)]) -> String {
    src.lines()
        .map(|line| {
            let Some(rest) = line.strip_prefix("override ") else {
                return line.to_string();
            };
            let name = rest.split(':').next().unwrap_or("").trim();
            let ty = rest
                .split(':')
                .nth(1)
                .and_then(|t| t.split('=').next())
                .unwrap_or("u32")
                .trim();
            match constants.iter().find(|(n, _)| *n == name) {
                Some(&(_, v)) => {
                    let value = match ty {
                        "bool" => (v != 0).to_string(),
                        "i32" => format!("{v}i"),
                        _ => format!("{v}u"),
                    };
                    format!("const {name}: {ty} = {value};")
                }
                None => line.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}
