//! The conformance runner's core, shared by `tests/conformance.rs` and `examples/report.rs`:
//! every case of a directory of JSON fixtures (`../shared/FIXTURES.md`) run through the CPU
//! reference, `auto` and every algorithm the library says can run it
//! ([`wgconv::Context::check_algorithm`]), compared with the fixture's arrays.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use wgconv::half::f16;
use wgconv::{
    cpu, Activation, Algorithm, Context, Conv2dParams, Conv2dProblem, ConvTranspose2dParams, DType,
    Epilogue, Error, ErrorKind, GemmParams, GemmVariant, MemoryFormat, Operation, Padding,
    PaddingMode, Residual, Tensor,
};

type Arrays = BTreeMap<String, Vec<f32>>;

#[derive(Clone)]
struct Case {
    id: String,
    op: String,
    expect_ok: bool,
    params: Value,
    shapes: BTreeMap<String, Vec<i64>>,
    integer_valued: bool,
    rtol: f64,
    atol: f64,
    data: Arrays,
    /// Element type of every array (`dtype`): float16 data are held as their exact f32 values,
    /// uploaded as f16 tensors and computed with f32 accumulation (also the cases marked
    /// `accumulate: "float16"`, whose looser tolerance they must meet).
    dtype: DType,
    /// `accumulate: "float16"`: the case also runs with f16 arithmetic
    /// ([`run_all_f16_arithmetic`]).
    accumulate_f16: bool,
    /// The `epilogue` field, if any.
    epilogue: Option<Value>,
    /// Memory order of the activation arrays (`layout`: x, y, dx, dy, r, dr, z).
    layout: MemoryFormat,
    /// Memory order of the weight arrays (`weight_layout`: w, dw).
    wlayout: MemoryFormat,
    /// An optional field value of the format (`../shared/FIXTURES.md`) this runner does not
    /// implement: the case fails on every algorithm (never skipped).
    unsupported: Option<String>,
}

/// The first optional field of `v` whose value this runner does not implement.
fn unsupported_field(v: &Value) -> Option<String> {
    let is = |k: &str, default: &str| match v.get(k) {
        None => true,
        Some(x) => x.as_str() == Some(default),
    };
    // dtype float16 is implemented (f32 accumulation); accumulate float16 only belongs to
    // float16 cases (run with f32 accumulation, within the case's looser tolerance).
    let f16 = v.get("dtype").and_then(Value::as_str) == Some("float16");
    if !is("dtype", "float32") && !f16 {
        return Some(format!("dtype = {}", v["dtype"]));
    }
    let accumulate_ok = is("accumulate", "float32") || (f16 && is("accumulate", "float16"));
    if !accumulate_ok {
        return Some(format!("accumulate = {}", v["accumulate"]));
    }
    for (k, values) in [
        ("layout", ["nchw", "nhwc"]),
        ("weight_layout", ["kcrs", "krsc"]),
    ] {
        if !(is(k, values[0]) || is(k, values[1])) {
            return Some(format!("{k} = {}", v[k]));
        }
    }
    None
}

/// The case's epilogue (`None` without the field); invalid values are the library's own
/// typed errors (an error case may test them).
fn epilogue(c: &Case) -> Result<Option<Epilogue>, Error> {
    let Some(e) = &c.epilogue else {
        return Ok(None);
    };
    let f = |k: &str| e.get(k).and_then(Value::as_f64).map(|v| v as f32);
    let name = e
        .get("activation")
        .and_then(Value::as_str)
        .unwrap_or("identity");
    let activation = Activation::from_name(name, f("alpha"), f("lo"), f("hi"))?;
    let residual =
        Residual::from_name(e.get("residual").and_then(Value::as_str).unwrap_or("none"))?;
    Ok(Some(Epilogue::new(activation).with_residual(residual)))
}

/// The epilogue and the residual array of a forward case (`r`, when the epilogue has one).
fn residual_input(c: &Case) -> Result<(Epilogue, Option<Vec<f32>>), Error> {
    let ep = epilogue(c)?.unwrap_or_default();
    let r = (ep.residual != Residual::None).then(|| input(c, "r"));
    Ok((ep, r))
}

fn load(path: &Path) -> Result<Case, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let dtype = if v.get("dtype").and_then(Value::as_str) == Some("float16") {
        DType::F16
    } else {
        DType::F32
    };
    // float16 numbers are decimals that parse to the exact f16 value.
    let value = |x: &Value| -> f32 {
        let f = x.as_f64().unwrap_or(f64::NAN);
        match dtype {
            DType::F16 => f16::from_f64(f).to_f32(),
            _ => f as f32,
        }
    };
    let s = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or(format!("missing {k}"))
    };
    let shapes = v
        .get("shapes")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, a)| {
                    let dims = a
                        .as_array()
                        .map(|d| d.iter().filter_map(Value::as_i64).collect())
                        .unwrap_or_default();
                    (k.clone(), dims)
                })
                .collect()
        })
        .unwrap_or_default();
    let data = v
        .get("data")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, a)| {
                    let vals = a
                        .as_array()
                        .map(|d| d.iter().map(value).collect())
                        .unwrap_or_default();
                    (k.clone(), vals)
                })
                .collect()
        })
        .unwrap_or_default();
    let tol = v.get("tolerance");
    let num = |k: &str, d: f64| {
        tol.and_then(|t| t.get(k))
            .and_then(Value::as_f64)
            .unwrap_or(d)
    };
    let fmt = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .and_then(|n| MemoryFormat::from_name(n).ok())
            .unwrap_or_default()
    };
    Ok(Case {
        layout: fmt("layout"),
        wlayout: fmt("weight_layout"),
        unsupported: unsupported_field(&v),
        epilogue: v.get("epilogue").cloned(),
        accumulate_f16: v.get("accumulate").and_then(Value::as_str) == Some("float16"),
        id: s("id")?,
        op: s("op")?,
        expect_ok: s("expect")? == "ok",
        params: v.get("params").cloned().unwrap_or(Value::Null),
        shapes,
        integer_valued: v
            .get("integer_valued")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        rtol: num("rtol", 1e-5),
        atol: num("atol", 1e-6),
        data,
        dtype,
    })
}

// ---- parameter decoding: values a Rust API cannot represent (negative, non-integer) are
// refused with the library's own typed error, like any other invalid parameter.

fn uint(v: &Value, name: &'static str) -> Result<usize, Error> {
    match v.as_i64() {
        Some(i) if i >= 0 => Ok(i as usize),
        _ => Err(Error::invalid_param(
            name,
            v,
            "must be a non-negative integer",
        )),
    }
}

fn pair(p: &Value, key: &'static str, default: [usize; 2]) -> Result<[usize; 2], Error> {
    match p.get(key) {
        None => Ok(default),
        Some(Value::Array(a)) if a.len() == 2 => Ok([uint(&a[0], key)?, uint(&a[1], key)?]),
        Some(Value::Array(a)) if a.len() == 1 => {
            let v = uint(&a[0], key)?;
            Ok([v, v])
        }
        Some(v) if v.is_i64() => {
            let v = uint(v, key)?;
            Ok([v, v])
        }
        Some(v) => Err(Error::invalid_param(key, v, "expected [h, w]")),
    }
}

fn padding(p: &Value) -> Result<Padding, Error> {
    match p.get("padding") {
        None => Ok(Padding::Symmetric([0, 0])),
        Some(Value::String(s)) if s == "same" => Ok(Padding::Same),
        Some(Value::String(s)) if s == "valid" => Ok(Padding::Valid),
        Some(Value::Array(a)) if a.len() == 4 => Ok(Padding::PerSide([
            uint(&a[0], "padding")?,
            uint(&a[1], "padding")?,
            uint(&a[2], "padding")?,
            uint(&a[3], "padding")?,
        ])),
        Some(_) => Ok(Padding::Symmetric(pair(p, "padding", [0, 0])?)),
    }
}

fn conv_params(p: &Value, flip: bool) -> Result<Conv2dParams, Error> {
    Ok(Conv2dParams {
        stride: pair(p, "stride", [1, 1])?,
        padding: padding(p)?,
        dilation: pair(p, "dilation", [1, 1])?,
        groups: p.get("groups").map_or(Ok(1), |g| uint(g, "groups"))?,
        padding_mode: PaddingMode::from_name(
            p.get("padding_mode")
                .and_then(Value::as_str)
                .unwrap_or("zeros"),
        )?,
        flip,
    })
}

fn has_bias(c: &Case) -> bool {
    c.params
        .get("bias")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn shape<const N: usize>(c: &Case, name: &'static str) -> Result<[usize; N], Error> {
    let dims = c
        .shapes
        .get(name)
        .ok_or_else(|| Error::shape_mismatch(name, format!("{N}-D shape"), "none"))?;
    if dims.len() != N || dims.iter().any(|&d| d < 0) {
        return Err(Error::shape_mismatch(
            name,
            format!("{N}-D shape"),
            format!("{dims:?}"),
        ));
    }
    let mut out = [0usize; N];
    for (o, &d) in out.iter_mut().zip(dims) {
        *o = d as usize;
    }
    Ok(out)
}

/// Input array `name`: the case's data, or zeros of its shape for error cases.
fn input(c: &Case, name: &'static str) -> Vec<f32> {
    c.data.get(name).cloned().unwrap_or_else(|| {
        let n: i64 = c.shapes.get(name).map_or(0, |d| d.iter().product());
        vec![0.0; n.max(0) as usize]
    })
}

fn upload(ctx: &Context, c: &Case, name: &'static str, dims: &[usize]) -> Result<Tensor, Error> {
    let t = Tensor::from_f32(ctx, &input(c, name), dims, c.dtype)?;
    if dims.len() == 4 {
        t.with_format(format_of(c, name))
    } else {
        Ok(t)
    }
}

/// The memory order of array `name` of a convolution case.
fn format_of(c: &Case, name: &str) -> MemoryFormat {
    match name {
        "w" | "dw" => c.wlayout,
        _ => c.layout,
    }
}

/// The logical shape of 4-D array `name` (outputs and extra inputs take their partner's).
fn array_shape(c: &Case, name: &str) -> Option<[usize; 4]> {
    let partner = match name {
        "dx" => "x",
        "dw" => "w",
        "r" | "z" | "dr" | "y" if !c.shapes.contains_key(name) => {
            if c.shapes.contains_key("dy") {
                "dy"
            } else {
                "y"
            }
        }
        other => other,
    };
    let d = c.shapes.get(partner).or_else(|| c.shapes.get(name))?;
    let v: Vec<usize> = d.iter().map(|&x| x.max(0) as usize).collect();
    <[usize; 4]>::try_from(v.as_slice()).ok()
}

/// The case with every 4-D array reordered from its stated memory order to `to` (`into`
/// direction `true`: case order -> contiguous; `false`: contiguous -> case order).
fn reorder(c: &Case, arrays: &Arrays, to_contiguous: bool) -> Arrays {
    let conv = matches!(
        c.op.as_str(),
        "conv2d" | "convolve2d" | "conv_transpose2d" | "conv2d_grad"
    );
    arrays
        .iter()
        .map(|(k, v)| {
            let f = format_of(c, k);
            let out = match array_shape(c, k) {
                Some(shape) if conv && f != MemoryFormat::Contiguous => {
                    let (from, to) = if to_contiguous {
                        (f, MemoryFormat::Contiguous)
                    } else {
                        (MemoryFormat::Contiguous, f)
                    };
                    from.convert(v, shape, to).unwrap_or_else(|_| v.clone())
                }
                _ => v.clone(),
            };
            (k.clone(), out)
        })
        .collect()
}

/// Input array `name` as f16 values (exact: float16 data are f16 values).
fn input16(c: &Case, name: &'static str) -> Vec<f16> {
    input(c, name).into_iter().map(f16::from_f32).collect()
}

fn widen(v: Vec<f16>) -> Vec<f32> {
    v.into_iter().map(f32::from).collect()
}

/// The values of a GPU result, which must have the case's element type.
fn fetch(c: &Case, t: Tensor, what: &'static str) -> Result<Vec<f32>, Error> {
    if t.dtype() != c.dtype {
        return Err(Error::invalid_param(
            what,
            t.dtype(),
            format!("the result must be {}", c.dtype),
        ));
    }
    t.read()
}

// ---- ops

fn conv2d(ctx: &Context, c: &Case, algo: &str, flip: bool) -> Result<Arrays, Error> {
    let params = conv_params(&c.params, flip)?;
    let xs: [usize; 4] = shape(c, "x")?;
    let ws: [usize; 4] = shape(c, "w")?;
    let bias = if has_bias(c) {
        Some(input(c, "b"))
    } else {
        None
    };
    let bs: Option<[usize; 1]> = if has_bias(c) {
        Some(shape(c, "b")?)
    } else {
        None
    };
    let (ep, r) = residual_input(c)?;
    let y = if algo == "cpu" && c.dtype == DType::F16 {
        let b16 = has_bias(c).then(|| input16(c, "b"));
        let r16 = r.as_ref().map(|_| input16(c, "r"));
        widen(
            cpu::conv2d_fused_f16(
                &input16(c, "x"),
                xs,
                &input16(c, "w"),
                ws,
                b16.as_deref(),
                r16.as_deref(),
                &params,
                &ep,
            )?
            .0,
        )
    } else if algo == "cpu" {
        cpu::conv2d_fused(
            &input(c, "x"),
            xs,
            &input(c, "w"),
            ws,
            bias.as_deref(),
            r.as_deref(),
            &params,
            &ep,
        )?
        .0
    } else {
        let x = upload(ctx, c, "x", &xs)?;
        let w = upload(ctx, c, "w", &ws)?;
        let b = bs.map(|bs| upload(ctx, c, "b", &bs)).transpose()?;
        let a = Algorithm::from_name(algo)?;
        if c.epilogue.is_none() {
            fetch(c, ctx.conv2d_with(&x, &w, b.as_ref(), &params, a)?, "y")?
        } else {
            let rt = r
                .is_some()
                .then(|| upload(ctx, c, "r", &shape::<4>(c, "r")?))
                .transpose()?;
            let y = ctx.conv2d_fused(&x, &w, b.as_ref(), rt.as_ref(), &params, &ep, a)?;
            fetch(c, y, "y")?
        }
    };
    Ok(BTreeMap::from([("y".to_string(), y)]))
}

fn transpose_params(p: &Value) -> Result<ConvTranspose2dParams, Error> {
    Ok(ConvTranspose2dParams {
        stride: pair(p, "stride", [1, 1])?,
        padding: pair(p, "padding", [0, 0])?,
        output_padding: pair(p, "output_padding", [0, 0])?,
        dilation: pair(p, "dilation", [1, 1])?,
        groups: p.get("groups").map_or(Ok(1), |g| uint(g, "groups"))?,
    })
}

fn conv_transpose2d(ctx: &Context, c: &Case, algo: &str) -> Result<Arrays, Error> {
    let params = transpose_params(&c.params)?;
    if let Some(m) = c.params.get("padding_mode").and_then(Value::as_str) {
        if m != "zeros" {
            return Err(Error::invalid_param(
                "padding_mode",
                m,
                "conv_transpose2d supports only zeros",
            ));
        }
    }
    let xs: [usize; 4] = shape(c, "x")?;
    let ws: [usize; 4] = shape(c, "w")?;
    let bias = if has_bias(c) {
        Some(input(c, "b"))
    } else {
        None
    };
    let bs: Option<[usize; 1]> = if has_bias(c) {
        Some(shape(c, "b")?)
    } else {
        None
    };
    let (ep, r) = residual_input(c)?;
    let y = if algo == "cpu" && c.dtype == DType::F16 {
        let b16 = has_bias(c).then(|| input16(c, "b"));
        let r16 = r.as_ref().map(|_| input16(c, "r"));
        widen(
            cpu::conv_transpose2d_fused_f16(
                &input16(c, "x"),
                xs,
                &input16(c, "w"),
                ws,
                b16.as_deref(),
                r16.as_deref(),
                &params,
                &ep,
            )?
            .0,
        )
    } else if algo == "cpu" {
        cpu::conv_transpose2d_fused(
            &input(c, "x"),
            xs,
            &input(c, "w"),
            ws,
            bias.as_deref(),
            r.as_deref(),
            &params,
            &ep,
        )?
        .0
    } else {
        let x = upload(ctx, c, "x", &xs)?;
        let w = upload(ctx, c, "w", &ws)?;
        let b = bs.map(|bs| upload(ctx, c, "b", &bs)).transpose()?;
        let a = Algorithm::from_name(algo)?;
        if c.epilogue.is_none() {
            fetch(
                c,
                ctx.conv_transpose2d(&x, &w, b.as_ref(), &params, a)?,
                "y",
            )?
        } else {
            let rt = r
                .is_some()
                .then(|| upload(ctx, c, "r", &shape::<4>(c, "r")?))
                .transpose()?;
            let y = ctx.conv_transpose2d_fused(&x, &w, b.as_ref(), rt.as_ref(), &params, &ep, a)?;
            fetch(c, y, "y")?
        }
    };
    Ok(BTreeMap::from([("y".to_string(), y)]))
}

fn conv2d_grad(
    ctx: &Context,
    c: &Case,
    algo: &str,
    outputs: &[&'static str],
) -> Result<Arrays, Error> {
    let params = conv_params(&c.params, false)?;
    let xs: [usize; 4] = shape(c, "x")?;
    let ws: [usize; 4] = shape(c, "w")?;
    let dys: [usize; 4] = shape(c, "dy")?;
    if has_bias(c) {
        // The bias values do not enter the gradients, but its shape is validated.
        params.resolve(xs, ws, Some(shape::<1>(c, "b")?[0]))?;
    }
    let mut out = BTreeMap::new();
    let ep = epilogue(c)?;
    if algo == "cpu" && c.dtype == DType::F16 {
        let (g, dr) = match &ep {
            None => (
                cpu::conv2d_grad_f16(
                    &input16(c, "x"),
                    xs,
                    &input16(c, "w"),
                    ws,
                    &input16(c, "dy"),
                    dys,
                    has_bias(c),
                    &params,
                )?,
                None,
            ),
            Some(ep) => cpu::conv2d_grad_fused_f16(
                &input16(c, "x"),
                xs,
                &input16(c, "w"),
                ws,
                &input16(c, "dy"),
                dys,
                &input16(c, "z"),
                has_bias(c),
                &params,
                ep,
            )?,
        };
        if let Some(dr) = dr {
            out.insert("dr".to_string(), widen(dr));
        }
        out.insert("dx".to_string(), widen(g.dx));
        out.insert("dw".to_string(), widen(g.dw));
        if let Some(db) = g.db {
            out.insert("db".to_string(), widen(db));
        }
    } else if algo == "cpu" {
        let (g, dr) = match &ep {
            None => (
                cpu::conv2d_grad(
                    &input(c, "x"),
                    xs,
                    &input(c, "w"),
                    ws,
                    &input(c, "dy"),
                    dys,
                    has_bias(c),
                    &params,
                )?,
                None,
            ),
            Some(ep) => {
                let g = cpu::conv2d_grad_fused(
                    &input(c, "x"),
                    xs,
                    &input(c, "w"),
                    ws,
                    &input(c, "dy"),
                    dys,
                    &input(c, "z"),
                    has_bias(c),
                    &params,
                    ep,
                )?;
                (g.grads, g.dr)
            }
        };
        out.insert("dx".to_string(), g.dx);
        out.insert("dw".to_string(), g.dw);
        if let Some(db) = g.db {
            out.insert("db".to_string(), db);
        }
        if let Some(dr) = dr {
            out.insert("dr".to_string(), dr);
        }
    } else {
        // Each gradient through its own entry point, so an algorithm that runs only one of
        // them (see `plan`) is checked on that one. With an epilogue, `dz` (and `dr`) first,
        // by the epilogue's own pass, then the gradients of `dz`.
        let a = Algorithm::from_name(algo)?;
        let x = upload(ctx, c, "x", &xs)?;
        let w = upload(ctx, c, "w", &ws)?;
        let mut dy = upload(ctx, c, "dy", &dys)?;
        if let Some(ep) = ep.as_ref().filter(|_| c.dtype == DType::F16) {
            // f16: the whole backward through the epilogue in one call, which keeps
            // dz = dy ⊙ act'(z) in f32 (`plan` runs it only on algorithms doing dx and dw).
            let z = upload(ctx, c, "z", &dys)?;
            let g = ctx.conv2d_backward_fused(&x, &w, &dy, &z, ep, has_bias(c), &params, a)?;
            out.insert("dx".to_string(), fetch(c, g.grads.dx, "dx")?);
            out.insert("dw".to_string(), fetch(c, g.grads.dw, "dw")?);
            if let Some(db) = g.grads.db {
                out.insert("db".to_string(), fetch(c, db, "db")?);
            }
            if let Some(dr) = g.dr {
                out.insert("dr".to_string(), fetch(c, dr, "dr")?);
            }
            return Ok(out);
        }
        if let Some(ep) = &ep {
            let z = upload(ctx, c, "z", &dys)?;
            let dz = Tensor::full(ctx, &dys, f32::NAN)?.with_format(c.layout)?;
            let dr = (ep.residual != Residual::None)
                .then(|| Tensor::full(ctx, &dys, f32::NAN)?.with_format(c.layout))
                .transpose()?;
            let mut enc = ctx.device().create_command_encoder(&Default::default());
            ctx.encode_epilogue_backward(&mut enc, &dy, &z, ep, &dz, dr.as_ref())?;
            ctx.submit(enc)?;
            if let Some(dr) = dr {
                out.insert("dr".to_string(), dr.read()?);
            }
            dy = dz;
        }
        if outputs.contains(&"dx") {
            let dx = ctx.conv2d_backward_input(&dy, &w, xs, &params, a)?;
            out.insert("dx".to_string(), fetch(c, dx, "dx")?);
        }
        if outputs.contains(&"dw") {
            // Into a dw of the case's weight order (the allocating form gives KCRS).
            let dw = Tensor::full_of(ctx, &ws, f32::NAN, c.dtype)?.with_format(c.wlayout)?;
            let mut enc = ctx.device().create_command_encoder(&Default::default());
            ctx.encode_conv2d_backward_weight(&mut enc, &x, &dy, &params, a, &dw)?;
            ctx.submit(enc)?;
            out.insert("dw".to_string(), fetch(c, dw, "dw")?);
        }
        if outputs.contains(&"db") {
            let db = ctx.conv2d_backward_bias(&dy)?;
            out.insert("db".to_string(), fetch(c, db, "db")?);
        }
    }
    Ok(out)
}

fn gemm(ctx: &Context, c: &Case, algo: &str) -> Result<Arrays, Error> {
    let p = &c.params;
    let flag = |k: &str| p.get(k).and_then(Value::as_bool).unwrap_or(false);
    let params = GemmParams::default()
        .with_transpose_a(flag("transpose_a"))
        .with_transpose_b(flag("transpose_b"));
    let dims = |name: &'static str| -> Result<Vec<usize>, Error> {
        let d = c
            .shapes
            .get(name)
            .ok_or_else(|| Error::shape_mismatch(name, "a shape", "none"))?;
        d.iter()
            .map(|&v| {
                usize::try_from(v)
                    .map_err(|_| Error::shape_mismatch(name, "non-negative dims", format!("{d:?}")))
            })
            .collect()
    };
    let (ash, bsh) = (dims("a")?, dims("b")?);
    // The declared m, k, n must agree with the operand shapes.
    let (m, k, n) = (
        uint(&p["m"], "m")?,
        uint(&p["k"], "k")?,
        uint(&p["n"], "n")?,
    );
    let (am, ak) = if params.transpose_a {
        (ash.get(1), ash.first())
    } else {
        (ash.first(), ash.get(1))
    };
    let (bk, bn) = if params.transpose_b {
        (bsh.get(1), bsh.first())
    } else {
        (bsh.first(), bsh.get(1))
    };
    if am != Some(&m) || ak != Some(&k) || bk != Some(&k) || bn != Some(&n) {
        return Err(Error::shape_mismatch(
            "gemm operands",
            format!("m={m} k={k} n={n}"),
            format!("a {ash:?}, b {bsh:?}"),
        ));
    }
    let (ep, r) = residual_input(c)?;
    let bias = c.shapes.contains_key("bias").then(|| input(c, "bias"));
    let out = if algo == "cpu" && c.dtype == DType::F16 {
        let bias16 = bias.as_ref().map(|_| input16(c, "bias"));
        let r16 = r.as_ref().map(|_| input16(c, "r"));
        widen(
            cpu::gemm_fused_f16(
                &input16(c, "a"),
                &ash,
                &input16(c, "b"),
                &bsh,
                bias16.as_deref(),
                r16.as_deref(),
                &params,
                &ep,
            )?
            .0,
        )
    } else if algo == "cpu" {
        if c.epilogue.is_none() {
            cpu::gemm(&input(c, "a"), &ash, &input(c, "b"), &bsh, &params)?.0
        } else {
            cpu::gemm_fused(
                &input(c, "a"),
                &ash,
                &input(c, "b"),
                &bsh,
                bias.as_deref(),
                r.as_deref(),
                &params,
                &ep,
            )?
            .0
        }
    } else {
        let variant = GemmVariant::ALL
            .iter()
            .chain([&GemmVariant::Auto])
            .find(|v| v.name() == algo)
            .copied()
            .ok_or_else(|| Error::invalid_param("algorithm", algo, "unknown gemm variant"))?;
        let a = Tensor::from_f32(ctx, &input(c, "a"), &ash, c.dtype)?;
        let b = Tensor::from_f32(ctx, &input(c, "b"), &bsh, c.dtype)?;
        let params = params.with_variant(variant);
        if c.epilogue.is_none() {
            fetch(c, ctx.gemm(&a, &b, &params)?, "c")?
        } else {
            let bt = bias
                .as_ref()
                .map(|v| Tensor::from_f32(ctx, v, &[n], c.dtype))
                .transpose()?;
            let rt = r
                .as_ref()
                .map(|v| Tensor::from_f32(ctx, v, &[m, n], c.dtype))
                .transpose()?;
            fetch(
                c,
                ctx.gemm_fused(&a, &b, bt.as_ref(), rt.as_ref(), &params, &ep)?,
                "c",
            )?
        }
    };
    Ok(BTreeMap::from([("c".to_string(), out)]))
}

/// The forward problem of a conv case (the conv2d the transposed convolution or the
/// gradients belong to), or the error that makes it an invalid case.
fn problem(c: &Case) -> Result<Conv2dProblem, Error> {
    let xs = shape(c, "x")?;
    let ws = shape(c, "w")?;
    let bias = || -> Result<Option<usize>, Error> {
        Ok(if has_bias(c) {
            Some(shape::<1>(c, "b")?[0])
        } else {
            None
        })
    };
    match c.op.as_str() {
        "conv_transpose2d" => Ok(transpose_params(&c.params)?
            .resolve(xs, ws, bias()?)?
            .conv()),
        "conv2d_grad" => conv_params(&c.params, false)?.resolve(xs, ws, None),
        _ => conv_params(&c.params, c.op == "convolve2d")?.resolve(xs, ws, bias()?),
    }
}

/// What running `algo` on case `c` computes on this adapter: the outputs it produces, or,
/// when it runs none of them, why (the library's own reason). Error cases run every
/// algorithm (each must refuse); `cpu` and `auto` run every case.
fn plan(ctx: &Context, c: &Case, algo: &str) -> Result<Vec<&'static str>, String> {
    let all = expected_outputs(c);
    if !c.expect_ok || algo == "cpu" || algo == "auto" {
        return Ok(all);
    }
    if c.op == "gemm" {
        let v = GemmVariant::ALL
            .iter()
            .find(|v| v.name() == algo)
            .copied()
            .unwrap_or(GemmVariant::Auto);
        return ctx
            .check_gemm_variant(v)
            .map(|_| all)
            .map_err(|e| e.to_string());
    }
    let Ok(p) = problem(c) else {
        return Ok(all);
    };
    let Ok(a) = Algorithm::from_name(algo) else {
        return Ok(all);
    };
    let ops: &[(&str, Operation)] = match c.op.as_str() {
        "conv_transpose2d" => &[("y", Operation::Transposed)],
        "conv2d_grad" => &[
            ("dx", Operation::InputGrad),
            ("dw", Operation::WeightGrad),
            ("db", Operation::BiasGrad),
        ],
        _ => &[("y", Operation::Forward)],
    };
    let mut outputs = Vec::new();
    let mut reasons = Vec::new();
    for &(name, op) in ops {
        if !all.contains(&name) {
            continue;
        }
        match ctx.check_algorithm(op, a, &p) {
            Ok(()) => outputs.push(name),
            // db has one entry (direct): its refusal by the others says nothing new.
            Err(_) if op == Operation::BiasGrad => {}
            Err(e) => reasons.push(match e.kind() {
                ErrorKind::UnsupportedAlgorithm { reason, .. } => reason.clone(),
                _ => e.to_string(),
            }),
        }
    }
    // The bias gradient has one entry (direct): an algorithm that runs neither dx nor dw is
    // not run for db alone.
    if outputs.iter().all(|&o| o == "db") {
        return Err(reasons.join("; "));
    }
    // f16 gradients through an epilogue run in `conv2d_backward_fused` (f32 dz): one
    // algorithm for dx and dw.
    let f16_fused = c.op == "conv2d_grad" && c.dtype == DType::F16 && c.epilogue.is_some();
    if f16_fused && !(outputs.contains(&"dx") && outputs.contains(&"dw")) {
        reasons.push("f16 gradients through an epilogue need dx and dw on one algorithm".into());
        return Err(reasons.join("; "));
    }
    // dr comes from the epilogue's own pass, whatever the algorithm.
    if all.contains(&"dr") {
        outputs.push("dr");
    }
    Ok(outputs)
}

/// The algorithm names a case is tried with.
fn algorithm_names(c: &Case) -> Vec<String> {
    let mut v = vec!["cpu".to_string()];
    match c.op.as_str() {
        "gemm" => v.extend(GemmVariant::ALL.iter().map(|g| g.name().to_string())),
        "conv2d" | "convolve2d" | "conv_transpose2d" | "conv2d_grad" => {
            v.extend(Algorithm::ALL.iter().map(|a| a.name().to_string()))
        }
        _ => {}
    }
    v.push("auto".into());
    v
}

fn run(ctx: &Context, c: &Case, algo: &str, outputs: &[&'static str]) -> Result<Arrays, Error> {
    // The CPU reference computes in the logical (contiguous) order: the case's arrays are
    // reordered into it, the results back into the case's order.
    if algo == "cpu"
        && (c.layout != MemoryFormat::Contiguous || c.wlayout != MemoryFormat::Contiguous)
    {
        let logical = Case {
            data: reorder(c, &c.data, true),
            layout: MemoryFormat::Contiguous,
            wlayout: MemoryFormat::Contiguous,
            ..c.clone()
        };
        return run_op(ctx, &logical, algo, outputs).map(|r| reorder(c, &r, false));
    }
    run_op(ctx, c, algo, outputs)
}

fn run_op(ctx: &Context, c: &Case, algo: &str, outputs: &[&'static str]) -> Result<Arrays, Error> {
    match c.op.as_str() {
        "conv2d" => conv2d(ctx, c, algo, false),
        "convolve2d" => conv2d(ctx, c, algo, true),
        "conv_transpose2d" => conv_transpose2d(ctx, c, algo),
        "conv2d_grad" => conv2d_grad(ctx, c, algo, outputs),
        "gemm" => gemm(ctx, c, algo),
        other => Err(Error::invalid_param(
            "op",
            other,
            "operation not implemented by wgconv",
        )),
    }
}

/// Output arrays a case must produce.
fn expected_outputs(c: &Case) -> Vec<&'static str> {
    let mut v = match c.op.as_str() {
        "conv2d_grad" if has_bias(c) => vec!["dx", "dw", "db"],
        "conv2d_grad" => vec!["dx", "dw"],
        "gemm" => vec!["c"],
        _ => vec!["y"],
    };
    let residual = c
        .epilogue
        .as_ref()
        .and_then(|e| e.get("residual"))
        .and_then(Value::as_str)
        .is_some_and(|r| r != "none");
    if c.op == "conv2d_grad" && residual {
        v.push("dr");
    }
    v
}

fn compare(c: &Case, algo: &str, got: &Arrays, outputs: &[&str]) -> Result<(), String> {
    for &name in outputs {
        let want = c.data.get(name).ok_or(format!("fixture has no `{name}`"))?;
        let g = got.get(name).ok_or(format!("no output `{name}`"))?;
        if g.len() != want.len() {
            return Err(format!("{name}: length {} != {}", g.len(), want.len()));
        }
        let exact = c.integer_valued;
        let mut first = None;
        let mut max_err = 0f64;
        for (i, (&a, &b)) in g.iter().zip(want).enumerate() {
            let err = (a as f64 - b as f64).abs();
            let bound = if exact {
                0.0
            } else {
                c.atol + c.rtol * (b as f64).abs()
            };
            let within = err <= bound; // false when err is NaN
            if !within && a != b {
                first.get_or_insert((i, a, b));
            }
            if err.is_nan() {
                max_err = f64::NAN;
            } else if !max_err.is_nan() {
                max_err = max_err.max(err);
            }
        }
        if let Some((i, a, b)) = first {
            return Err(format!(
                "{} {algo} {name} first bad index {i}: got {a} want {b}; max error {max_err:e}",
                c.id
            ));
        }
    }
    Ok(())
}

fn write_out(dir: &Path, c: &Case, algo: &str, result: &Result<Arrays, Error>) {
    let body = match result {
        Ok(arrays) => json!({"id": c.id, "algorithm": algo, "outputs": arrays}),
        Err(e) => json!({"id": c.id, "algorithm": algo, "error": e.to_string()}),
    };
    let path = dir.join(format!("{}.{algo}.json", c.id));
    if let Err(e) = std::fs::write(&path, body.to_string()) {
        eprintln!("cannot write {}: {e}", path.display());
    }
}

/// (algorithm, reason) -> number of cases not run for that reason.
pub type NotRun = BTreeMap<(String, String), usize>;

/// What a run of the cases on one context found.
#[derive(Default)]
pub struct Summary {
    /// (case, algorithm) pairs that passed.
    pub passed: usize,
    /// One line per failing (case, algorithm) pair.
    pub failures: Vec<String>,
    /// (algorithm, reason) -> number of cases the algorithm did not run for that reason.
    pub not_run: NotRun,
}

impl Summary {
    /// The algorithms not run, one line each (empty when every algorithm ran every case).
    pub fn not_run_lines(&self) -> Vec<String> {
        self.not_run
            .iter()
            .map(|((algo, reason), n)| format!("{algo}: {reason} ({n})"))
            .collect()
    }
}

/// Runs every case of `files` with every algorithm on `ctx` that runs it.
pub fn run_all(ctx: &Context, files: &[PathBuf], out_dir: Option<&Path>) -> Summary {
    let mut summary = Summary::default();
    for case in load_all(files, &mut summary) {
        if let Some(field) = &case.unsupported {
            for algo in algorithm_names(&case) {
                summary.failures.push(format!(
                    "{} {algo}: the runner does not implement the field value {field}",
                    case.id
                ));
            }
            continue;
        }
        for algo in algorithm_names(&case) {
            let outputs = match plan(ctx, &case, &algo) {
                Ok(o) => o,
                Err(reason) => {
                    *summary.not_run.entry((algo.clone(), reason)).or_default() += 1;
                    continue;
                }
            };
            let result = run(ctx, &case, &algo, &outputs);
            if let Some(d) = out_dir {
                write_out(d, &case, &algo, &result);
            }
            match verdict(&case, &algo, &result, &outputs) {
                Ok(()) => summary.passed += 1,
                Err(msg) => summary.failures.push(msg),
            }
        }
    }
    summary
}

/// The algorithms that must run every case with f16 arithmetic
/// (`Precision::F16Accumulate`); the others run it or refuse it with `UnsupportedAlgorithm`.
fn runs_f16_arithmetic(algo: &str) -> bool {
    matches!(algo, "auto" | "direct" | "register" | "tiled")
}

/// Runs every `accumulate: "float16"` case of `files` on `ctx`, whose precision is
/// `Precision::F16Accumulate`, within the case's own (f16-arithmetic) tolerance: the direct
/// algorithm, the register and tiled GEMMs and `auto` must compute it; every other
/// algorithm computes it too or refuses with `UnsupportedAlgorithm` (counted as not run with
/// its reason; any other error fails).
pub fn run_all_f16_arithmetic(ctx: &Context, files: &[PathBuf]) -> Summary {
    let mut summary = Summary::default();
    for case in load_all(files, &mut summary) {
        if !case.accumulate_f16 || case.unsupported.is_some() {
            continue;
        }
        for algo in algorithm_names(&case) {
            if algo == "cpu" {
                continue;
            }
            let outputs = expected_outputs(&case);
            let result = run(ctx, &case, &algo, &outputs);
            let refused = matches!(&result, Err(e)
                if matches!(e.kind(), ErrorKind::UnsupportedAlgorithm { .. }));
            if refused && !runs_f16_arithmetic(&algo) && case.expect_ok {
                if let Err(e) = &result {
                    let reason = format!("f16 arithmetic: {}", e.kind());
                    *summary.not_run.entry((algo.clone(), reason)).or_default() += 1;
                }
                continue;
            }
            match verdict(
                &case,
                &format!("{algo} (f16 arithmetic)"),
                &result,
                &outputs,
            ) {
                Ok(()) => summary.passed += 1,
                Err(msg) => summary.failures.push(msg),
            }
        }
    }
    summary
}

/// The cases of `files`; a file that does not load is a failure of `summary`.
fn load_all(files: &[PathBuf], summary: &mut Summary) -> Vec<Case> {
    let mut cases = Vec::new();
    for path in files {
        match load(path) {
            Ok(c) => cases.push(c),
            Err(e) => summary
                .failures
                .push(format!("{}: cannot load: {e}", path.display())),
        }
    }
    cases
}

/// The outcome of one (case, algorithm) run: the outputs within tolerance of an ok case,
/// an error for an error case.
fn verdict(
    case: &Case,
    algo: &str,
    result: &Result<Arrays, Error>,
    outputs: &[&str],
) -> Result<(), String> {
    match (result, case.expect_ok) {
        (Ok(arrays), true) => compare(case, algo, arrays, outputs),
        (Err(e), true) => Err(format!("{} {algo}: unexpected error: {e}", case.id)),
        (Ok(_), false) => Err(format!(
            "{} {algo}: computed a result, expected an error",
            case.id
        )),
        (Err(_), false) => Ok(()),
    }
}

/// The `*.json` case files of `dir`, sorted.
pub fn case_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("json"))
        .collect();
    files.sort();
    Ok(files)
}
