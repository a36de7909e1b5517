//! `f16_unpack` / `f16_pack`: f16 tensors (two values per `u32` word, see
//! [`DType::F16`](crate::DType::F16)) to f32 scratch and back, so every f32 kernel runs on
//! f16 data with f32 arithmetic.
//!
//! The conversions are integer code on the bit patterns, not `unpack2x16float` /
//! `pack2x16float`: WGSL leaves the rounding of `pack2x16float` to the implementation
//! (nearest or toward zero) and makes its result indeterminate beyond the f16 range, and
//! some drivers flush f16 subnormals. Here f16 → f32 is exact for every value (subnormals,
//! ±0, ±infinity, NaN), and f32 → f16 rounds to nearest, ties to even, overflows to
//! ±infinity (|v| ≥ 65520) and keeps NaN a NaN, bit-identical to `half::f16::from_f32`.
//! Every index is a `u32`: element `2w` and `2w + 1` of word `w`, the tensor's element count
//! checked to fit by the launcher.

use crate::gpu::wgsl::{hoist_params, params, spec, ParamStruct, Spec};

params! {
    /// Parameters of `f16_unpack` / `f16_pack`: words `w_lo + base + i` (`< w_hi`) of a
    /// tensor of `n` elements; `src_off` / `dst_off` rebase global indices into the bound
    /// windows (see `gpu::window`).
    pub(crate) struct F16ConvertParams {
        n: u32, w_lo: u32, w_hi: u32, base: u32,
        src_off: u32, dst_off: u32, tw_shift: u32, _p1: u32,
    }
}

spec! {
    /// Specialisation of the f16 conversion kernels.
    pub(crate) struct F16ConvertSpec {
        /// Workgroup size.
        WG: u32 = 64,
    }
}

/// f16 bits (low 16 bits of `h`) to f32, exactly.
const F16_TO_F32: &str = r#"
fn f16_to_f32(h: u32) -> f32 {
    let sign = (h & 0x8000u) << 16u;
    let e = (h >> 10u) & 0x1fu;
    let m = h & 0x3ffu;
    if (e == 0x1fu) {
        return bitcast<f32>(sign | 0x7f800000u | (m << 13u));
    }
    if (e == 0u) {
        // Zero or subnormal: m * 2^-24 (a normal f32, exact).
        let v = f32(m) * 5.9604644775390625e-8;
        return bitcast<f32>(bitcast<u32>(v) | sign);
    }
    return bitcast<f32>(sign | ((e + 112u) << 23u) | (m << 13u));
}
"#;

/// f32 to f16 bits, round to nearest even, overflow to infinity.
pub(crate) const F32_TO_F16: &str = r#"
fn f32_to_f16(f: f32) -> u32 {
    let x = bitcast<u32>(f);
    let sign = (x >> 16u) & 0x8000u;
    let ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) {
        return sign | 0x7e00u | ((ax >> 13u) & 0x1ffu);
    }
    if (ax >= 0x477ff000u) {
        // >= 65520 (the tie above 65504 rounds to even, i.e. up) and infinity.
        return sign | 0x7c00u;
    }
    if (ax >= 0x38800000u) {
        // Normal f16: rebias the exponent (127 - 15 = 112), round the 13 dropped bits.
        let v = ax - 0x38000000u;
        return sign | ((v + 0xfffu + ((v >> 13u) & 1u)) >> 13u);
    }
    if (ax <= 0x33000000u) {
        // <= 2^-25: rounds to zero (the tie at 2^-25 to the even zero).
        return sign;
    }
    // Subnormal f16: units of 2^-24.
    let e = ax >> 23u;
    let m = (ax & 0x7fffffu) | 0x800000u;
    let shift = 126u - e;
    var q = m >> shift;
    let rem = m & ((1u << shift) - 1u);
    let half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (q & 1u) == 1u)) {
        q = q + 1u;
    }
    return sign | q;
}
"#;

const UNPACK: &str = r#"
@group(0) @binding(0) var<storage, read> P: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let w = P.w_lo + P.base + gid.x + gid.y * nwg.x * WG;
    if (w >= P.w_hi) {
        return;
    }
    let word = src[w + P.src_off];
    let e = 2u * w;
    dst[e + P.dst_off] = f16_to_f32(word & 0xffffu);
    if (e + 1u < P.n) {
        dst[e + 1u + P.dst_off] = f16_to_f32(word >> 16u);
    }
}
"#;

const PACK: &str = r#"
@group(0) @binding(0) var<storage, read> P: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let w = P.w_lo + P.base + gid.x + gid.y * nwg.x * WG;
    if (w >= P.w_hi) {
        return;
    }
    let e = 2u * w;
    var word = f32_to_f16(src[e + P.src_off]);
    if (e + 1u < P.n) {
        word = word | (f32_to_f16(src[e + 1u + P.src_off]) << 16u);
    }
    dst[w + P.dst_off] = word;
}
"#;

/// [`F16_TO_F32`] on four values, without branches (lavapipe runs every taken branch of a
/// SIMD row; selects are cheaper). Same bits for every input.
const F16_TO_F32_4: &str = r#"
fn f16_to_f32_4(h: vec4<u32>) -> vec4<f32> {
    let sign = (h & vec4<u32>(0x8000u)) << vec4<u32>(16u);
    let e = (h >> vec4<u32>(10u)) & vec4<u32>(0x1fu);
    let m = h & vec4<u32>(0x3ffu);
    let normal = sign | ((e + vec4<u32>(112u)) << vec4<u32>(23u)) | (m << vec4<u32>(13u));
    let special = sign | vec4<u32>(0x7f800000u) | (m << vec4<u32>(13u));
    // Zero or subnormal: m * 2^-24 (a normal f32, exact).
    let sub = bitcast<vec4<u32>>(vec4<f32>(m) * 5.9604644775390625e-8) | sign;
    let bits = select(select(normal, sub, e == vec4<u32>(0u)), special, e == vec4<u32>(0x1fu));
    return bitcast<vec4<f32>>(bits);
}
"#;

/// [`F32_TO_F16`] on four values, without branches. Same bits for every input.
pub(crate) const F32_TO_F16_4: &str = r#"
fn f32_to_f16_4(f: vec4<f32>) -> vec4<u32> {
    let x = bitcast<vec4<u32>>(f);
    let sign = (x >> vec4<u32>(16u)) & vec4<u32>(0x8000u);
    let ax = x & vec4<u32>(0x7fffffffu);
    let nan = sign | vec4<u32>(0x7e00u) | ((ax >> vec4<u32>(13u)) & vec4<u32>(0x1ffu));
    let inf = sign | vec4<u32>(0x7c00u);
    // Normal f16: rebias the exponent (127 - 15 = 112), round the 13 dropped bits.
    let v = ax - vec4<u32>(0x38000000u);
    let normal = sign | ((v + vec4<u32>(0xfffu) + ((v >> vec4<u32>(13u)) & vec4<u32>(1u))) >> vec4<u32>(13u));
    // Subnormal f16 (2^-25 < |f| < 2^-14): units of 2^-24, shift 14..24; clamped to 1..31
    // for the lanes that take another branch.
    let e = ax >> vec4<u32>(23u);
    let m = (ax & vec4<u32>(0x7fffffu)) | vec4<u32>(0x800000u);
    let shift = clamp(vec4<u32>(126u) - min(e, vec4<u32>(125u)), vec4<u32>(1u), vec4<u32>(31u));
    let q = m >> shift;
    let rem = m & ((vec4<u32>(1u) << shift) - vec4<u32>(1u));
    let half = vec4<u32>(1u) << (shift - vec4<u32>(1u));
    let up = (rem > half) | ((rem == half) & ((q & vec4<u32>(1u)) == vec4<u32>(1u)));
    let sub = sign | (q + select(vec4<u32>(0u), vec4<u32>(1u), up));
    var r = select(sub, sign, ax <= vec4<u32>(0x33000000u));
    r = select(r, normal, ax >= vec4<u32>(0x38800000u));
    r = select(r, inf, ax >= vec4<u32>(0x477ff000u));
    return select(r, nan, ax > vec4<u32>(0x7f800000u));
}
"#;

/// A four-words-per-invocation entry point: `bindings` (binding 1 the source, 2 the
/// destination) and `body`, run for words `w .. w + 4`, `w = w_lo + 4 * i` (`< w_hi`) of
/// invocation `i`.
fn entry4(bindings: &str, body: &str) -> String {
    format!(
        "
@group(0) @binding(0) var<storage, read> P: Params;
{bindings}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {{
    let i = P.base + gid.x + gid.y * nwg.x * WG;
    let w = P.w_lo + 4u * i;
    if (w >= P.w_hi) {{
        return;
    }}
{body}}}
"
    )
}

/// Four words (eight values) per invocation as one `vec4<u32>` and two `vec4<f32>`; word
/// and f32 windows offset by multiples of 4 elements, every word full.
fn unpack4() -> String {
    entry4(
        "@group(0) @binding(1) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;",
        "    let word = src[(w + P.src_off) / 4u];
    let lo = f16_to_f32_4(word & vec4<u32>(0xffffu));
    let hi = f16_to_f32_4(word >> vec4<u32>(16u));
    let d = (2u * w + P.dst_off) / 4u;
    dst[d] = vec4<f32>(lo.x, hi.x, lo.y, hi.y);
    dst[d + 1u] = vec4<f32>(lo.z, hi.z, lo.w, hi.w);
",
    )
}

/// The rounding of eight f32 values `a`, `b` into the four words at `w` (`PACK_STORE`).
const PACK_STORE: &str = "    let lo = f32_to_f16_4(vec4<f32>(a.x, a.z, b.x, b.z));
    let hi = f32_to_f16_4(vec4<f32>(a.y, a.w, b.y, b.w));
    dst[(w + P.dst_off) / 4u] = lo | (hi << vec4<u32>(16u));
";

fn pack4() -> String {
    entry4(
        "@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<u32>>;",
        &format!(
            "    let d = (2u * w + P.src_off) / 4u;
    let a = src[d];
    let b = src[d + 1u];
{PACK_STORE}"
        ),
    )
}

/// Texels `2i` and `2i + 1` of a verbatim image copy of the words `w_lo..` (rows of
/// `1 << tw_shift` texels) as `a`, `b`.
const IMAGE_LOADS: &str = "    let m = (1u << P.tw_shift) - 1u;
    let t = 2u * i;
    let a = textureLoad(src, vec2<u32>(t & m, t >> P.tw_shift));
    let b = textureLoad(src, vec2<u32>((t + 1u) & m, (t + 1u) >> P.tw_shift));
";

/// `f16_unpack_image` / `f16_pack_image`: [`unpack4`] / [`pack4`] with the source read
/// from a verbatim image copy of words `w_lo..w_hi` (texel `t` holds values
/// `2 * w_lo + 4t ..`): for CPU adapters, where a texel load costs a fraction of a per-lane
/// storage-buffer load. f32 values come from an `rgba32float` copy; f16 values from an
/// `rgba16float` copy, whose texel loads are the conversion (exact).
fn unpack_image() -> String {
    entry4(
        "@group(0) @binding(1) var src: texture_storage_2d<rgba16float, read>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;",
        &format!(
            "{IMAGE_LOADS}    let d = (2u * w + P.dst_off) / 4u;
    dst[d] = a;
    dst[d + 1u] = b;
"
        ),
    )
}

fn pack_image() -> String {
    entry4(
        "@group(0) @binding(1) var src: texture_storage_2d<rgba32float, read>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<u32>>;",
        &format!("{IMAGE_LOADS}{PACK_STORE}"),
    )
}

/// The WGSL source of `f16_pack_image` (`pack`) or `f16_unpack_image`.
pub(crate) fn source_image(pack: bool) -> String {
    if pack {
        assemble(F32_TO_F16_4, &pack_image())
    } else {
        assemble("", &unpack_image())
    }
}

/// The WGSL source of `f16_pack4` (`pack`) or `f16_unpack4`: [`source`] on four words per
/// invocation.
pub(crate) fn source4(pack: bool) -> String {
    if pack {
        assemble(F32_TO_F16_4, &pack4())
    } else {
        assemble(F16_TO_F32_4, &unpack4())
    }
}

/// A conversion kernel: the parameter and specialisation structs, the conversion function
/// `conv` (if any) and the entry point `body`.
fn assemble(conv: &str, body: &str) -> String {
    let src = format!(
        "{}\n\n{}\n{}\n{}",
        F16ConvertParams::wgsl(),
        F16ConvertSpec::wgsl(),
        conv,
        body
    );
    hoist_params(&src, &F16ConvertParams::fields())
}

/// The WGSL source of `f16_pack` (`pack`) or `f16_unpack`.
pub(crate) fn source(pack: bool) -> String {
    if pack {
        assemble(F32_TO_F16, PACK)
    } else {
        assemble(F16_TO_F32, UNPACK)
    }
}
