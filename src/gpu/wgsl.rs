//! WGSL produced from Rust: kernel parameter structs and override constants declared once as
//! Rust types, a line writer for the kernel generators, and the helpers every kernel shares.
//!
//! A kernel's parameter struct is declared with [`params!`]: the macro defines the
//! `#[repr(C)]` Rust struct (uploaded with `bytemuck`) and, from the same field list, the
//! WGSL `struct Params` declaration ([`ParamStruct::wgsl`]), so the two cannot drift. Its
//! specialisation constants are declared with [`spec!`]: a typed Rust struct whose values
//! become the pipeline's override constants, and whose field list produces the WGSL
//! `override` declarations ([`Spec::wgsl`]).

use std::fmt::Write as _;

/// The scalar type of a parameter field or override constant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ty {
    /// `u32`
    U32,
    /// `i32`
    I32,
    /// `f32`
    F32,
    /// `bool` (override constants only)
    Bool,
}

impl Ty {
    /// The WGSL spelling.
    pub(crate) fn wgsl(self) -> &'static str {
        match self {
            Ty::U32 => "u32",
            Ty::I32 => "i32",
            Ty::F32 => "f32",
            Ty::Bool => "bool",
        }
    }
}

/// One field of a parameter struct or one override constant.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Field {
    /// The name, identical in Rust and WGSL.
    pub name: &'static str,
    /// Its type.
    pub ty: Ty,
}

/// A kernel's parameter struct (binding 0): the bytes come from `bytemuck`, the WGSL
/// declaration from [`ParamStruct::fields`]. Implemented by [`params!`].
pub(crate) trait ParamStruct: bytemuck::Pod + Default {
    /// Fields in declaration order (4 bytes each, no implicit padding), embedded groups
    /// flattened.
    fn fields() -> Vec<Field>;

    /// `struct Params { ... }` as WGSL.
    fn wgsl() -> String {
        let mut s = String::from("struct Params {\n");
        for f in Self::fields() {
            let _ = writeln!(s, "    {}: {},", f.name, f.ty.wgsl());
        }
        s.push('}');
        s
    }
}

/// Maps a Rust field type of [`params!`] to its [`Ty`].
pub(crate) trait FieldType {
    const TY: Ty;
}
impl FieldType for u32 {
    const TY: Ty = Ty::U32;
}
impl FieldType for i32 {
    const TY: Ty = Ty::I32;
}
impl FieldType for f32 {
    const TY: Ty = Ty::F32;
}
impl FieldType for bool {
    const TY: Ty = Ty::Bool;
}

/// Declares a kernel parameter struct: a `#[repr(C)]`, `Pod` Rust struct of `u32` / `i32` /
/// `f32` fields whose [`ParamStruct::wgsl`] is the matching WGSL declaration. A struct may
/// start with one embedded group of fields shared by several kernels (`@embed shape:
/// ConvShape;`), flattened in WGSL: the kernel reads `P.n`, the launcher writes `u.shape.n`.
/// (A kernel's struct must be a multiple of 16 bytes: checked in the kernel registry.)
macro_rules! params {
    ($(#[$m:meta])* $vis:vis struct $name:ident {
        $(@embed $e:ident : $et:ty;)?
        $($(#[$fm:meta])* $f:ident : $t:ty),* $(,)?
    }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
        $vis struct $name {
            $(pub(crate) $e: $et,)?
            $($(#[$fm])* pub(crate) $f: $t,)*
        }
        impl $crate::gpu::wgsl::ParamStruct for $name {
            fn fields() -> Vec<$crate::gpu::wgsl::Field> {
                let embedded: Vec<Vec<$crate::gpu::wgsl::Field>> = vec![
                    $(<$et as $crate::gpu::wgsl::ParamStruct>::fields(),)?
                ];
                let own = [$($crate::gpu::wgsl::Field {
                    name: stringify!($f),
                    ty: <$t as $crate::gpu::wgsl::FieldType>::TY,
                }),*];
                embedded.into_iter().flatten().chain(own).collect()
            }
        }
    };
}
pub(crate) use params;

/// A kernel's specialisation: typed values of its WGSL `override` constants. Implemented by
/// [`spec!`].
pub(crate) trait Spec: Clone + std::fmt::Debug + Default {
    /// The constants in declaration order, with their WGSL default.
    const FIELDS: &'static [Field];
    /// The default of each constant, as WGSL literals (`64u`, `false`).
    const DEFAULTS: &'static [&'static str];
    /// `(name, value)` of every constant, for the pipeline (`bool` as 0 / 1).
    fn constants(&self) -> Vec<(&'static str, i64)>;
    /// For each constant, `self` with that constant set to each value the launchers use.
    fn domains(&self) -> Vec<Vec<Self>>;

    /// The specialisations the tests validate: every used value of every constant (the
    /// others at their defaults), and the whole product of the used values when it has at
    /// most 256 members.
    fn variants() -> Vec<Self> {
        let base = Self::default();
        let domains = base.domains();
        let product: usize = domains.iter().map(Vec::len).product();
        if product <= 256 {
            let mut out = vec![base];
            for i in 0..domains.len() {
                out = out
                    .iter()
                    .flat_map(|s| s.domains().swap_remove(i))
                    .collect();
            }
            out
        } else {
            domains.into_iter().flatten().collect()
        }
    }

    /// The `override` declarations, one per line.
    fn wgsl() -> String {
        let mut s = String::new();
        for (f, d) in Self::FIELDS.iter().zip(Self::DEFAULTS) {
            let _ = writeln!(s, "override {}: {} = {};", f.name, f.ty.wgsl(), d);
        }
        s.pop();
        s
    }
}

/// An override value as the integer of the pipeline key (wgpu takes it as `f64`).
pub(crate) trait SpecValue: Copy {
    fn to_i64(self) -> i64;
}
impl SpecValue for u32 {
    fn to_i64(self) -> i64 {
        self as i64
    }
}
impl SpecValue for i32 {
    fn to_i64(self) -> i64 {
        self as i64
    }
}
impl SpecValue for bool {
    fn to_i64(self) -> i64 {
        self as i64
    }
}

/// Declares a kernel's specialisation constants: a Rust struct with one field per WGSL
/// `override` (same name, upper case), each with its default and optionally the values the
/// launchers use (`in [..]`; `bool`s take both values, other fields only their default
/// unless listed), e.g.
/// `spec! { pub(crate) struct DirectSpec { WG: u32 = 64, KB: u32 = 4 in [1, 2, 4, 8] } }`.
/// The values feed [`Spec::variants`], which the tests validate.
macro_rules! spec {
    ($(#[$m:meta])* $vis:vis struct $name:ident { $($(#[$fm:meta])* $f:ident : $t:ident = $d:literal $(in [$($v:literal),* $(,)?])?),* $(,)? }) => {
        $(#[$m])*
        #[allow(non_snake_case)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis struct $name {
            $($(#[$fm])* pub(crate) $f: $t,)*
        }
        impl Default for $name {
            fn default() -> Self {
                $name { $($f: $d,)* }
            }
        }
        impl $crate::gpu::wgsl::Spec for $name {
            const FIELDS: &'static [$crate::gpu::wgsl::Field] = &[
                $($crate::gpu::wgsl::Field {
                    name: stringify!($f),
                    ty: <$t as $crate::gpu::wgsl::FieldType>::TY,
                },)*
            ];
            const DEFAULTS: &'static [&'static str] = &[
                $($crate::gpu::wgsl::spec!(@lit $t, $d),)*
            ];
            fn constants(&self) -> Vec<(&'static str, i64)> {
                vec![$((stringify!($f), $crate::gpu::wgsl::SpecValue::to_i64(self.$f)),)*]
            }
            fn domains(&self) -> Vec<Vec<Self>> {
                let mut out = Vec::new();
                $(
                    let values: Vec<$t> = $crate::gpu::wgsl::spec!(@dom $t, $d $(, [$($v),*])?);
                    out.push(
                        values
                            .into_iter()
                            .map(|v| {
                                let mut s = *self;
                                s.$f = v;
                                s
                            })
                            .collect(),
                    );
                )*
                out
            }
        }
    };
    (@lit u32, $d:literal) => { concat!(stringify!($d), "u") };
    (@lit i32, $d:literal) => { concat!(stringify!($d), "i") };
    (@lit bool, $d:literal) => { stringify!($d) };
    (@dom bool, $d:literal) => { vec![false, true] };
    (@dom $t:ident, $d:literal) => { vec![$d] };
    (@dom $t:ident, $d:literal, [$($v:literal),*]) => { vec![$($v),*] };
}
pub(crate) use spec;

/// A line writer for kernel generators: `line` appends one line (which may itself hold
/// several), `wln!` a formatted one.
#[derive(Default)]
pub(crate) struct Wgsl {
    out: String,
}

impl Wgsl {
    pub(crate) fn new() -> Self {
        Self::default()
    }
    /// Appends `s` and a newline.
    pub(crate) fn line(&mut self, s: &str) {
        self.out.push_str(s);
        self.out.push('\n');
    }
    /// The source written so far.
    pub(crate) fn finish(self) -> String {
        self.out
    }
}

/// `wln!(w, "fmt", args...)`: one formatted line into a [`Wgsl`] writer.
macro_rules! wln {
    ($w:expr, $($arg:tt)*) => {
        $w.line(&format!($($arg)*))
    };
}
pub(crate) use wln;

/// Reads every field of the parameter struct `P` that a kernel uses once, at the top of
/// `main`, and rewrites the uses to read that copy: in `main` a `let p_<field>` (uniform for
/// WGSL's uniformity analysis, like `P` itself, so loops bounded by it may hold subgroup
/// operations), in other functions a private variable `g_<field>` assigned at the top of
/// `main`.
///
/// On lavapipe each read of a storage-buffer field is a loop over the 8 lanes with a bounds
/// check and a store-forwarding stall (~15 cycles per lane), and LLVM does not hoist it out
/// of loops: a loop bound read as `P.k_len` costs that on every iteration, and the 32 calls
/// of a store epilogue read their six fields 32 times. Both copies become registers (NIR
/// inlines every function into `main`). Only for kernels without barriers
/// (`docs/lavapipe-driver-notes.md`).
///
/// `src` must declare `@group(0) @binding(0) var<storage, read> P: Params;` on a line of its
/// own, before any use of `P`, and have a `fn main(` whose header line ends with `{` and whose
/// body ends with a `}` alone on a line.
pub(crate) fn hoist_params(src: &str, fields: &[Field]) -> String {
    const BIND: &str = "@group(0) @binding(0) var<storage, read> P: Params;";
    let Some(bind) = src.find(BIND) else {
        return src.to_string();
    };
    let split = (bind + BIND.len() + 1).min(src.len()); // past the newline
    let (head, body) = src.split_at(split);
    let lines: Vec<&str> = body.split('\n').collect();
    let Some(main) = lines.iter().position(|l| l.starts_with("fn main(")) else {
        return src.to_string();
    };
    let Some(open) = (main..lines.len()).find(|&i| lines[i].ends_with('{')) else {
        return src.to_string();
    };
    let close = (open..lines.len())
        .find(|&i| lines[i] == "}")
        .unwrap_or(lines.len());
    // Rewrite `P.<field>` to `<prefix><field>`, collecting the fields in order of first use.
    fn rewrite<'a>(text: &'a str, prefix: &str, used: &mut Vec<&'a str>) -> String {
        let bytes = text.as_bytes();
        let mut out = String::with_capacity(text.len());
        let mut i = 0;
        while i < text.len() {
            let is_use = text[i..].starts_with("P.")
                && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'));
            if is_use {
                let start = i + 2;
                let end = text[start..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .map_or(text.len(), |e| start + e);
                let name = &text[start..end];
                if !used.contains(&name) {
                    used.push(name);
                }
                out.push_str(prefix);
                out.push_str(name);
                i = end;
            } else {
                let c = text[i..].chars().next().unwrap_or(' ');
                out.push(c);
                i += c.len_utf8();
            }
        }
        out
    }
    let before = lines[..main].join("\n");
    let main_text = lines[main..close.min(lines.len())].join("\n");
    let after = lines[close.min(lines.len())..].join("\n");
    let (mut in_main, mut in_fns) = (Vec::new(), Vec::new());
    let before = rewrite(&before, "g_", &mut in_fns);
    let after = rewrite(&after, "g_", &mut in_fns);
    let main_text = rewrite(&main_text, "p_", &mut in_main);
    if in_main.is_empty() && in_fns.is_empty() {
        return src.to_string();
    }
    let ty = |name: &str| {
        fields
            .iter()
            .find(|f| f.name == name)
            .map_or("u32", |f| f.ty.wgsl())
    };
    let mut decl = String::new();
    if !in_fns.is_empty() {
        decl.push_str(
            "// Fields of P the helper functions read, copied once per invocation at the top of\n\
             // main (see gpu::wgsl::hoist_params).\n",
        );
        for f in &in_fns {
            let _ = writeln!(decl, "var<private> g_{f}: {};", ty(f));
        }
    }
    let mut loads = String::new();
    for f in &in_main {
        let _ = writeln!(loads, "    let p_{f} = P.{f};");
    }
    for f in &in_fns {
        let _ = writeln!(loads, "    g_{f} = P.{f};");
    }
    // Insert the loads after the line that opens `fn main(` (relative to main's text).
    let open_rel = open - main;
    let mut main_out = String::new();
    for (i, l) in main_text.split('\n').enumerate() {
        main_out.push_str(l);
        main_out.push('\n');
        if i == open_rel {
            main_out.push_str(&loads);
        }
    }
    main_out.pop();
    let mut result = String::with_capacity(src.len() + decl.len() + loads.len());
    result.push_str(head);
    result.push_str(&decl);
    result.push_str(&before);
    result.push('\n');
    result.push_str(&main_out);
    result.push('\n');
    result.push_str(&after);
    result
}

/// Maps a coordinate of the padded input to the coordinate it reads, -1 for a zero (needs
/// `override PAD_MODE: u32`: 0 zeros, 1 reflect, 2 replicate, 3 circular). The one
/// definition of the padding modes on the GPU (the CPU's is `PaddingMode::source_index`).
pub(crate) const SRC_INDEX: &str =
    "// Maps a coordinate of the padded input to the coordinate it reads, -1 for a zero.
fn src_index(i: i32, size: i32) -> i32 {
    if (i >= 0 && i < size) {
        return i;
    }
    switch PAD_MODE {
        case 1u: {
            // reflect (pad < size): one mirror suffices
            var j = -i;
            if (i >= size) {
                j = 2 * (size - 1) - i;
            }
            return select(-1, j, j >= 0 && j < size);
        }
        case 2u: {
            return clamp(i, 0, size - 1);
        }
        case 3u: {
            // circular (pad <= size): one wrap suffices. No signed `%`: GLSL leaves it
            // undefined for negative operands. Clamped so that coordinates of outputs that
            // are never stored still read inside the tensor.
            return clamp(select(i - size, i + size, i < 0), 0, size - 1);
        }
        default: {
            return -1;
        }
    }
}";

/// `xload(row, ix)`: element `ix` (a padded-input column) of input row `row`, read through
/// [`SRC_INDEX`] (zero where the padding mode gives none), for kernels binding the input as
/// `x: array<T>` (see [`Elem`]) and reading its width from `P.w`.
pub(crate) const XLOAD: &str = "fn xload(row: u32, ix: i32) -> T {
    let sx = src_index(ix, i32(P.w));
    var v = T(0.0);
    if (sx >= 0) {
        v = x[row + u32(sx)];
    }
    return v;
}";

/// The epilogue of the fused kernels and of the `epilogue` pass: `act` applies the activation
/// selected by `override ACT: u32` (0 identity, 1 relu, 2 leaky_relu, 3 clamp, 4 sigmoid,
/// 5 tanh, 6 silu, 7 gelu (erf), 8 gelu_tanh, 9 hardswish, 10 hardsigmoid; codes of
/// `Activation::code`), `epilogue` adds the residual as `override RES: u32` says (0 none,
/// 1 before the activation, 2 after), `act_grad` is the derivative (PyTorch's definitions,
/// as `Activation::derivative`). The constants `alpha` (leaky slope), `lo`, `hi` (clamp
/// bounds) are arguments: parameter fields of the kernel, not overrides, so a new slope or
/// bound reuses the compiled pipeline. With `ACT = 0` and `RES = 0`, `epilogue(v, r, ..)`
/// is `v`: the default specialisation compiles to the kernel without epilogue. NaN
/// propagates (the comparisons are written so that NaN falls through to `v`).
pub(crate) const ACTIVATION: &str = "// tanh through exp(-2|v|): no overflow to inf/inf for large |v|.
fn ep_tanh(v: f32) -> f32 {
    let t = exp(-2.0 * abs(v));
    let m = (1.0 - t) / (1.0 + t);
    return select(m, -m, v < 0.0);
}
fn ep_sigmoid(v: f32) -> f32 {
    return 1.0 / (1.0 + exp(-v));
}
// The standard normal CDF Phi(v) = (1 + erf(v / sqrt 2)) / 2 (.x) and exp(-v^2 / 2) (.y, for
// the derivative). Through erfc(a) = t P(t) exp(-a^2), t = 1 / (1 + p a), a = |v| / sqrt 2
// (Abramowitz & Stegun 7.1.26): one exp, one division and 5 FMAs, cheaper here than a
// rational erf of degree 13 (12 FMAs), and accurate in the tail as well (Phi(v) for v < 0 is
// the small term itself, not 1 - erf): gelu within 4.3e-7 absolute and 0.21 of
// 1e-6 + 1e-5 |gelu| over f32 (tools/check_gelu.py). No clamp: exp underflows to 0 far out.
fn ep_phi(v: f32) -> vec2<f32> {
    let a = abs(v) * 0.7071067811865476;
    let t = 1.0 / fma(0.3275911, a, 1.0);
    var s = 1.061405429;
    s = fma(s, t, -1.453152027);
    s = fma(s, t, 1.421413741);
    s = fma(s, t, -0.284496736);
    s = fma(s, t, 0.254829592);
    let e = exp(-a * a);
    let h = 0.5 * t * s * e;
    return vec2<f32>(select(h, 1.0 - h, v >= 0.0), e);
}
fn ep_gelu_tanh_inner(v: f32) -> f32 {
    return 0.7978845608028654 * (v + 0.044715 * v * v * v);
}
fn act(v: f32, alpha: f32, lo: f32, hi: f32) -> f32 {
    switch ACT {
        case 1u: { return select(v, 0.0, v <= 0.0); }
        case 2u: { return select(v, alpha * v, v <= 0.0); }
        case 3u: { return select(select(v, lo, v < lo), hi, v > hi); }
        case 4u: { return ep_sigmoid(v); }
        case 5u: { return ep_tanh(v); }
        case 6u: { return v * ep_sigmoid(v); }
        case 7u: { return v * ep_phi(v).x; }
        case 8u: { return 0.5 * v * (1.0 + ep_tanh(ep_gelu_tanh_inner(v))); }
        case 9u: { return v * clamp(v + 3.0, 0.0, 6.0) / 6.0; }
        case 10u: { return clamp(v + 3.0, 0.0, 6.0) / 6.0; }
        default: { return v; }
    }
}
fn epilogue(v: f32, r: f32, alpha: f32, lo: f32, hi: f32) -> f32 {
    switch RES {
        case 1u: { return act(v + r, alpha, lo, hi); }
        case 2u: { return act(v, alpha, lo, hi) + r; }
        default: { return act(v, alpha, lo, hi); }
    }
}
fn epilogue4(v: vec4<f32>, r: vec4<f32>, alpha: f32, lo: f32, hi: f32) -> vec4<f32> {
    return vec4<f32>(
        epilogue(v.x, r.x, alpha, lo, hi),
        epilogue(v.y, r.y, alpha, lo, hi),
        epilogue(v.z, r.z, alpha, lo, hi),
        epilogue(v.w, r.w, alpha, lo, hi),
    );
}
fn act_grad(z: f32, alpha: f32, lo: f32, hi: f32) -> f32 {
    switch ACT {
        case 1u: { return select(0.0, 1.0, z > 0.0); }
        case 2u: { return select(alpha, 1.0, z > 0.0); }
        case 3u: { return select(0.0, 1.0, z > lo && z < hi); }
        case 4u: {
            let s = ep_sigmoid(z);
            return s * (1.0 - s);
        }
        case 5u: {
            let t = ep_tanh(z);
            return 1.0 - t * t;
        }
        case 6u: {
            let s = ep_sigmoid(z);
            return s * (1.0 + z * (1.0 - s));
        }
        case 7u: {
            let c = ep_phi(z);
            return c.x + z * c.y * 0.3989422804014327;
        }
        case 8u: {
            let t = ep_tanh(ep_gelu_tanh_inner(z));
            return 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * 0.7978845608028654 * (1.0 + 0.134145 * z * z);
        }
        case 9u: {
            if (z < -3.0) {
                return 0.0;
            }
            return select(1.0, z / 3.0 + 0.5, z <= 3.0);
        }
        case 10u: { return select(0.0, 1.0 / 6.0, z > -3.0 && z < 3.0); }
        default: { return 1.0; }
    }
}";

/// The epilogue applied in a fused kernel's store to the value `out` (a `var`) about to be
/// stored at index `idx` of `y`: needs [`ACTIVATION`], the overrides `ACT` and `RES`, a
/// binding `r: array<f32>` (or `array<f16>`: read as f32) with `y`'s layout (the residual, or any buffer when `RES` is 0:
/// not read then), and the parameter fields `alpha`, `lo`, `hi`. With `ACT = RES = 0` the
/// whole statement is dead code.
pub(crate) fn epilogue_store(ind: &str, out: &str, idx: &str) -> String {
    format!(
        "{ind}if (ACT != 0u || RES != 0u) {{
{ind}    var rv = 0.0;
{ind}    if (RES != 0u) {{
{ind}        rv = f32(r[{idx}]);
{ind}    }}
{ind}    {out} = epilogue({out}, rv, P.alpha, P.lo, P.hi);
{ind}}}"
    )
}

/// [`epilogue_store`] for a `vec4<f32>` value stored at index `idx` of `y: array<vec4<f32>>`,
/// with `r: array<vec4<f32>>`.
pub(crate) fn epilogue_store4(ind: &str, out: &str, idx: &str) -> String {
    format!(
        "{ind}if (ACT != 0u || RES != 0u) {{
{ind}    var rv = vec4<f32>(0.0);
{ind}    if (RES != 0u) {{
{ind}        rv = r[{idx}];
{ind}    }}
{ind}    {out} = epilogue4({out}, rv, P.alpha, P.lo, P.hi);
{ind}}}"
    )
}

/// `body` with its `rgba32float` read-only storage images declared `rgba16float` when `f16`
/// (the `_f16` twin of a kernel reading f16 data from `rgba16float` copies: the texel loads
/// return f32, exactly, so nothing else changes).
pub(crate) fn f16_images(body: &str, f16: bool) -> String {
    if f16 {
        body.replace(
            "texture_storage_2d<rgba32float, read>",
            "texture_storage_2d<rgba16float, read>",
        )
    } else {
        body.to_string()
    }
}

/// The element type of a kernel's tensors and of its arithmetic, `T` in its WGSL: one kernel
/// definition, two twins. [`Elem::F16`] twins read and write f16 tensors as `array<f16>` and
/// multiply-add in f16 (`enable f16;`, the `shader-f16` feature): the opt-in
/// `Precision::F16Accumulate` mode. Index arithmetic stays `u32` / `i32` in both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Elem {
    /// `T = f32`.
    F32,
    /// `T = f16` (needs the device feature `SHADER_F16`).
    F16,
}

impl Elem {
    /// The lines a source starts with: the `enable` directive (f16) and `alias T`.
    pub(crate) fn header(self) -> &'static str {
        match self {
            Elem::F32 => "alias T = f32;",
            Elem::F16 => "enable f16;\nalias T = f16;",
        }
    }
}
