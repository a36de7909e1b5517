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
/// `main`, into a private variable, and rewrites the uses to read that variable.
///
/// On lavapipe each read of a storage-buffer field is a loop over the 8 lanes with a bounds
/// check and a store-forwarding stall (~15 cycles per lane), and LLVM does not hoist it out
/// of loops: a loop bound read as `P.k_len` costs that on every iteration, and the 32 calls
/// of a store epilogue read their six fields 32 times. Private variables become registers
/// (NIR inlines every function into `main`). Only for kernels without barriers: WGSL's
/// uniformity analysis treats private variables as non-uniform
/// (`docs/lavapipe-driver-notes.md`).
///
/// `src` must declare `@group(0) @binding(0) var<storage, read> P: Params;` on a line of its
/// own, before any use of `P`, and have a `fn main(` whose header line ends with `{`.
pub(crate) fn hoist_params(src: &str, fields: &[Field]) -> String {
    const BIND: &str = "@group(0) @binding(0) var<storage, read> P: Params;";
    let Some(bind) = src.find(BIND) else {
        return src.to_string();
    };
    let split = bind + BIND.len() + 1; // past the newline
    let (head, body) = src.split_at(split.min(src.len()));
    // Fields used, in order of first use; every `P.<field>` rewritten to `p_<field>`.
    let mut used: Vec<&str> = Vec::new();
    let mut out = String::with_capacity(body.len());
    let bytes = body.as_bytes();
    let mut i = 0;
    while i < body.len() {
        let is_use = body[i..].starts_with("P.")
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'));
        if is_use {
            let start = i + 2;
            let end = body[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(body.len(), |e| start + e);
            let name = &body[start..end];
            if !used.contains(&name) {
                used.push(name);
            }
            out.push_str("p_");
            out.push_str(name);
            i = end;
        } else {
            let c = body[i..].chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
        }
    }
    if used.is_empty() {
        return src.to_string();
    }
    let ty = |name: &str| {
        fields
            .iter()
            .find(|f| f.name == name)
            .map_or("u32", |f| f.ty.wgsl())
    };
    let mut decl =
        String::from("// Fields of P read once per invocation (see gpu::wgsl::hoist_params).\n");
    for f in &used {
        let _ = writeln!(decl, "var<private> p_{f}: {};", ty(f));
    }
    let mut loads = String::new();
    for f in &used {
        let _ = writeln!(loads, "    p_{f} = P.{f};");
    }
    // Insert the loads after the line that opens `fn main(`.
    let lines: Vec<&str> = out.split('\n').collect();
    let mut result = String::with_capacity(src.len() + decl.len() + loads.len());
    result.push_str(head);
    result.push_str(&decl);
    let main = lines.iter().position(|l| l.starts_with("fn main("));
    let open = main.and_then(|m| (m..lines.len()).find(|&i| lines[i].ends_with('{')));
    for (i, l) in lines.iter().enumerate() {
        result.push_str(l);
        if i + 1 < lines.len() {
            result.push('\n');
        }
        if Some(i) == open {
            result.push_str(&loads);
        }
    }
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
