#!/usr/bin/env python3
"""Generate wgconv's conformance fixtures (tests/fixtures/*.json).

Format and semantics: shared FIXTURES.md contract (one case per JSON file). References
reproduce PyTorch semantics with JAX (CPU) in float64:

* conv2d:      jax.lax.conv_general_dilated (NCHW/OIHW/NCHW, explicit padding pairs,
               rhs_dilation, feature_group_count); reflect/replicate/circular padding is
               applied first with jnp.pad ('reflect'/'edge'/'wrap'), then padding 0.
* convolve2d:  conv2d with the kernel rotated 180 degrees (w[..., ::-1, ::-1]).
* conv_transpose2d: the input-gradient (jax.vjp) of the conv2d that maps [N,Cout,Ho,Wo] to
               [N,Cin,*,*] with weight [Cin,Cout/g,R,S] read as OIHW, padding ph/pw each side;
               output_padding is realised by the choice of Ho (the forward conv may then
               produce more than H rows; the extra rows get a zero cotangent), plus bias.
* conv2d_grad: jax.vjp of sum(conv2d(x, w, b) * dy); gradients reaching padded copies of a
               pixel (reflect/replicate/circular) are folded back by the vjp of jnp.pad.
* gemm:        c = op(a) @ op(b).

Every reference is cross-checked against an independent naive numpy float64 implementation
(tap-by-tap gather with explicit padding index maps for conv2d/convolve2d and conv2d_grad,
scatter for conv_transpose2d, per-k accumulation for gemm); the script aborts when they differ
by more than 1e-10 * abs_scale. Inputs are float32 (numpy, seed = crc32(case id), so adding a
case never changes another); references are computed in float64 from those float32 values
and rounded once to float32 when written.

abs_scale[name] = max over elements of the same linear map applied to |inputs| (|x|, |w|,
|b|, |dy|, |a|, |b|), computed in float64: the sum of |term| of the worst element.

Tolerance (one per case, as the format has one):
    L[name]  = max over elements of the number of terms summed (the same map applied to
               all-ones inputs; includes the bias term and folded padding copies)
    atol     = max(1e-6, max over output arrays of 8 * L[name] * 2**-24 * abs_scale[name]),
               rounded up to 3 significant digits
    rtol     = 1e-5
The worst-case float32 error of any summation order is about L * 2**-24 * abs_scale; the
factor 8 leaves room for transform-based algorithms, while a single misplaced/missing term
(typically ~abs_scale / L) stays well above atol for the small L used here.
integer_valued cases draw every input from the integers -3..3: all partial sums are
integers below 2**24, so direct and GEMM algorithms must match exactly.

float16 cases ("dtype": "float16", ids ending in _f16): inputs are drawn as above and rounded
to float16 (values exactly representable in f16; "q" draws: multiples of 1/4 in [-2, 2], short
decimals for the large anchor cases); references are computed in float64 from those values and
rounded once to float16 (numpy's direct float64 -> float16, round to nearest even; the script
aborts on a non-finite result). Numbers are written as the shortest decimal of the value's
float32 (the f16 value is exact in f32), so every parse path (f64, f32, f16) gives the exact value.
Tolerance (f32 accumulation, the default):
    rtol = 0.000977 (>= 2**-10: one f16 ulp of the result, from rounding got and want to f16)
    atol = round_up_3sig(8 * L * 2**-24 * abs_scale + 2**-24)  (f32 sums; f16 subnormal ulp)
with "accumulate": "float16" (the f16-arithmetic bound, met a fortiori with f32 accumulation):
    atol = round_up_3sig(2 * L * 2**-11 * abs_scale + 2**-24)
integer_valued float16 cases keep abs_scale (hence every value and partial sum) <= 2048.

Error cases (expect "error") have no data and an empty abs_scale; shapes hold the would-be
input shapes only (conv: x, w, b when bias; conv2d_grad also dy; gemm: a, b); tolerance is
the default {rtol 1e-5, atol 1e-6}. Negative padding is written as is ([-1, 0]) and in
padding_resolved ([[-1, -1], [0, 0]]); for "same" the resolved pads are the stride-1 formula
even when the case is an error.

Numbers are written as the shortest decimal that round-trips to the float32 value (checked
via float64 parsing and exact rational comparison); output is byte-identical on rerun.
The script deletes the files listed in tests/fixtures/GENERATED_FILES.txt (its own previous
output), then writes the cases and a new list; other files in tests/fixtures are untouched.

Usage: python3 tools/gen_fixtures.py [OUTDIR]     (default: <repo>/tests/fixtures)
"""

import math
import os
import sys
import zlib
from fractions import Fraction

import numpy as np
import jax
import jax.numpy as jnp
from jax import lax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_platforms", "cpu")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFEST = "GENERATED_FILES.txt"
U = 2.0 ** -24
RTOL = 1e-5
ATOL_FLOOR = 1e-6
CROSS_RTOL = 1e-10
JMODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}
MODES = ("zeros", "reflect", "replicate", "circular")


class Fail(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


# --------------------------------------------------------------------------- number output

def f32_str(v):
    """Shortest decimal string that reads back as the same float32 (via f64 or directly)."""
    f = np.float32(v)
    check(np.isfinite(f), "non-finite value")
    s = str(f)  # numpy: shortest repr that round-trips float32
    if "e" not in s and "." not in s:
        s += ".0"
    if _reads_back(s, f):
        return s
    s = repr(float(f))  # exact float64 of the float32: always safe
    check(_reads_back(s, f), "cannot format %r" % (f,))
    return s


def _reads_back(s, f):
    if np.float32(float(s)) != f:  # decimal -> f64 -> f32 (double rounding path)
        return False
    # decimal -> f32 directly: s must be strictly nearer to f than to either neighbour
    q, fv = Fraction(s), Fraction(float(f))
    lo = Fraction(float(np.nextafter(f, np.float32(-np.inf))))
    hi = Fraction(float(np.nextafter(f, np.float32(np.inf))))
    return abs(q - fv) < abs(q - lo) and abs(q - fv) < abs(q - hi)


def round_up_3sig(v):
    v = float(v)
    if v <= 0:
        return 0.0
    e = math.floor(math.log10(v))
    m = math.ceil(v / 10.0 ** (e - 2) - 1e-9)
    return float("%de%d" % (m, e - 2))


class F32List:
    def __init__(self, arr):
        self.vals = np.asarray(arr, dtype=np.float32).ravel()


def dump(v, ind=0):
    pad = "  " * (ind + 1)
    if isinstance(v, dict):
        if not v:
            return "{}"
        items = ['%s"%s": %s' % (pad, k, dump(val, ind + 1)) for k, val in v.items()]
        return "{\n" + ",\n".join(items) + "\n" + "  " * ind + "}"
    if isinstance(v, np.float32):
        return f32_str(v)
    if isinstance(v, F32List):
        return "[" + ", ".join(f32_str(x) for x in v.vals) + "]"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(dump(x, ind) for x in v) + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, float):
        check(math.isfinite(v), "non-finite float")
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(type(v))


# --------------------------------------------------------------------------- semantics

def pair(v):
    return [int(v), int(v)] if isinstance(v, (int, np.integer)) else [int(v[0]), int(v[1])]


def resolve_padding(padding, R, S, dil):
    if padding == "valid":
        return [[0, 0], [0, 0]]
    if padding == "same":
        out = []
        for d, k in zip(dil, (R, S)):
            t = d * (k - 1)
            out.append([t // 2, t - t // 2])
        return out
    ph, pw = padding
    return [[ph, ph], [pw, pw]]


def conv_out(size, before, after, d, k, s):
    return (size + before + after - d * (k - 1) - 1) // s + 1


def conv_errors(p, xs, ws, bs, dys=None):
    """Every rule violation of a conv2d / convolve2d / conv2d_grad call (empty list = valid)."""
    e = []
    N, C, H, W = xs
    K, Cg, R, S = ws
    g = p["groups"]
    if min(p["stride"]) < 1:
        e.append("stride")
    if min(p["dilation"]) < 1:
        e.append("dilation")
    if g < 1:
        e.append("groups")
    pr = p["padding_resolved"]
    if min(pr[0] + pr[1]) < 0:
        e.append("negative_padding")
    if p["padding"] == "same" and p["stride"] != [1, 1]:
        e.append("same_stride")
    if g >= 1:
        if C % g:
            e.append("c_groups")
        if K % g:
            e.append("k_groups")
        if C % g == 0 and Cg != C // g:
            e.append("weight_channels")
    if p["bias"] and bs != [K]:
        e.append("bias_shape")
    mode = p["padding_mode"]
    for size, pads in ((H, pr[0]), (W, pr[1])):
        for q in pads:
            if mode == "reflect" and q >= size:
                e.append("reflect_pad")
            if mode == "circular" and q > size:
                e.append("circular_pad")
    if "stride" not in e and "dilation" not in e:
        Ho = conv_out(H, pr[0][0], pr[0][1], p["dilation"][0], R, p["stride"][0])
        Wo = conv_out(W, pr[1][0], pr[1][1], p["dilation"][1], S, p["stride"][1])
        if Ho < 1 or Wo < 1:
            e.append("output_size")
        elif dys is not None and list(dys) != [N, K, Ho, Wo]:
            e.append("dy_shape")
    return e


def convt_out(size, s, p, d, k, op):
    return (size - 1) * s - 2 * p + d * (k - 1) + op + 1


def convt_errors(p, xs, ws, bs):
    e = []
    N, Cin, H, W = xs
    Cw, Cog, R, S = ws
    g = p["groups"]
    st, dl, pd, op = p["stride"], p["dilation"], p["padding"], p["output_padding"]
    if min(st) < 1:
        e.append("stride")
    if min(dl) < 1:
        e.append("dilation")
    if g < 1:
        e.append("groups")
    if min(pd) < 0:
        e.append("negative_padding")
    if min(op) < 0:
        e.append("negative_output_padding")
    for i in range(2):
        if not (op[i] < st[i] or op[i] < dl[i]):
            e.append("output_padding")
    if Cw != Cin:
        e.append("weight_channels")
    if g >= 1 and Cin % g:
        e.append("cin_groups")
    if p["bias"] and bs != [Cog * max(g, 1)]:
        e.append("bias_shape")
    Ho = convt_out(H, st[0], pd[0], dl[0], R, op[0])
    Wo = convt_out(W, st[1], pd[1], dl[1], S, op[1])
    if Ho < 1 or Wo < 1:
        e.append("output_size")
    return e


def gemm_shapes(m, k, n, ta, tb):
    return ([k, m] if ta else [m, k]), ([n, k] if tb else [k, n])


def gemm_errors(p, sa, sb):
    e = []
    m, k, n = p["m"], p["k"], p["n"]
    if min(m, k, n) < 1:
        e.append("size")
    ka = sa[0] if p["transpose_a"] else sa[1]
    ma = sa[1] if p["transpose_a"] else sa[0]
    kb = sb[1] if p["transpose_b"] else sb[0]
    nb = sb[0] if p["transpose_b"] else sb[1]
    if ka != kb or ka != k or kb != k:
        e.append("inner_dims")
    if ma != m or nb != n:
        e.append("outer_dims")
    return e


# --------------------------------------------------------------------------- JAX references

def j_conv(x, w, b, p, flip=False):
    pr = p["padding_resolved"]
    if flip:
        w = w[:, :, ::-1, ::-1]
    if p["padding_mode"] != "zeros":
        x = jnp.pad(x, ((0, 0), (0, 0), tuple(pr[0]), tuple(pr[1])), mode=JMODE[p["padding_mode"]])
        pads = [(0, 0), (0, 0)]
    else:
        pads = [tuple(pr[0]), tuple(pr[1])]
    y = lax.conv_general_dilated(
        x, w, window_strides=tuple(p["stride"]), padding=pads,
        rhs_dilation=tuple(p["dilation"]), feature_group_count=p["groups"],
        dimension_numbers=("NCHW", "OIHW", "NCHW"), precision=lax.Precision.HIGHEST)
    if b is not None:
        y = y + b[None, :, None, None]
    return y


def jref_conv(x, w, b, p, flip):
    args = [jnp.asarray(a, jnp.float64) for a in (x, w)]
    bb = None if b is None else jnp.asarray(b, jnp.float64)
    return np.asarray(j_conv(args[0], args[1], bb, p, flip), dtype=np.float64)


def jref_grad(x, w, b, dy, p):
    x, w, dy = (jnp.asarray(a, jnp.float64) for a in (x, w, dy))
    if b is None:
        y, vjp = jax.vjp(lambda x_, w_: j_conv(x_, w_, None, p), x, w)
        dx, dw = vjp(dy)
        db = None
    else:
        b = jnp.asarray(b, jnp.float64)
        y, vjp = jax.vjp(lambda x_, w_, b_: j_conv(x_, w_, b_, p), x, w, b)
        dx, dw, db = vjp(dy)
    check(tuple(y.shape) == tuple(dy.shape), "dy shape")
    out = {"dx": np.asarray(dx), "dw": np.asarray(dw)}
    if db is not None:
        out["db"] = np.asarray(db)
    return out


def jref_convt(x, w, b, p):
    N, Cin, H, W = x.shape
    _, Cog, R, S = w.shape
    g = p["groups"]
    st, pd, dl, op = p["stride"], p["padding"], p["dilation"], p["output_padding"]
    Ho = convt_out(H, st[0], pd[0], dl[0], R, op[0])
    Wo = convt_out(W, st[1], pd[1], dl[1], S, op[1])
    fp = {"stride": st, "dilation": dl, "groups": g, "padding_mode": "zeros",
          "padding_resolved": [[pd[0], pd[0]], [pd[1], pd[1]]]}
    xin = jnp.zeros((N, Cog * g, Ho, Wo), jnp.float64)
    wj = jnp.asarray(w, jnp.float64)
    yf, vjp = jax.vjp(lambda z: j_conv(z, wj, None, fp), xin)
    Hf, Wf = yf.shape[2], yf.shape[3]
    check(Hf >= H and Wf >= W and yf.shape[1] == Cin, "convT forward size")
    ct = jnp.zeros(yf.shape, jnp.float64).at[:, :, :H, :W].set(jnp.asarray(x, jnp.float64))
    (y,) = vjp(ct)
    if b is not None:
        y = y + jnp.asarray(b, jnp.float64)[None, :, None, None]
    return np.asarray(y)


def jref_gemm(a, b, p):
    A = jnp.asarray(a, jnp.float64)
    B = jnp.asarray(b, jnp.float64)
    if p["transpose_a"]:
        A = A.T
    if p["transpose_b"]:
        B = B.T
    return np.asarray(jnp.matmul(A, B, precision=lax.Precision.HIGHEST))


# --------------------------------------------------------------------------- naive numpy

def pad_map(size, before, after, mode):
    """padded coordinate -> source coordinate, or -1 for a zero."""
    out = []
    for q in range(-before, size + after):
        if 0 <= q < size:
            out.append(q)
        elif mode == "zeros":
            out.append(-1)
        elif mode == "reflect":
            r = -q if q < 0 else 2 * (size - 1) - q
            check(0 <= r < size, "reflect pad too large")
            out.append(r)
        elif mode == "replicate":
            out.append(min(max(q, 0), size - 1))
        elif mode == "circular":
            check(-size <= q < 2 * size, "circular pad too large")
            out.append(q % size)
        else:
            raise Fail(mode)
    return np.array(out, dtype=np.int64)


def _taps(xshape, wshape, p):
    N, C, H, W = xshape
    K, Cg, R, S = wshape
    pr, (sh, sw), (dh, dw) = p["padding_resolved"], p["stride"], p["dilation"]
    mh = pad_map(H, pr[0][0], pr[0][1], p["padding_mode"])
    mw = pad_map(W, pr[1][0], pr[1][1], p["padding_mode"])
    Ho = conv_out(H, pr[0][0], pr[0][1], dh, R, sh)
    Wo = conv_out(W, pr[1][0], pr[1][1], dw, S, sw)
    for kh in range(R):
        rows = mh[np.arange(Ho) * sh + kh * dh]  # -1 -> index H of the zero sink row
        for kw in range(S):
            cols = mw[np.arange(Wo) * sw + kw * dw]
            yield kh, kw, np.where(rows < 0, H, rows), np.where(cols < 0, W, cols), Ho, Wo


def naive_conv(x, w, b, p, flip):
    x = x.astype(np.float64)
    w = w.astype(np.float64)
    if flip:
        w = w[:, :, ::-1, ::-1]
    N, C, H, W = x.shape
    K, Cg, R, S = w.shape
    g = p["groups"]
    Kg = K // g
    xz = np.zeros((N, C, H + 1, W + 1))
    xz[:, :, :H, :W] = x
    y = None
    for kh, kw, rows, cols, Ho, Wo in _taps(x.shape, w.shape, p):
        if y is None:
            y = np.zeros((N, K, Ho, Wo))
        patch = xz[:, :, rows][:, :, :, cols]
        for gi in range(g):
            y[:, gi * Kg:(gi + 1) * Kg] += np.einsum(
                "nchw,kc->nkhw", patch[:, gi * Cg:(gi + 1) * Cg], w[gi * Kg:(gi + 1) * Kg, :, kh, kw])
    if b is not None:
        y += b.astype(np.float64)[None, :, None, None]
    return y


def naive_grad(x, w, b, dy, p):
    x, w, dy = (a.astype(np.float64) for a in (x, w, dy))
    N, C, H, W = x.shape
    K, Cg, R, S = w.shape
    g = p["groups"]
    Kg = K // g
    xz = np.zeros((N, C, H + 1, W + 1))
    xz[:, :, :H, :W] = x
    dxt = np.zeros((H + 1, W + 1, N, C))  # spatial first for np.add.at
    dw = np.zeros_like(w)
    for kh, kw, rows, cols, Ho, Wo in _taps(x.shape, w.shape, p):
        patch = xz[:, :, rows][:, :, :, cols]
        for gi in range(g):
            ks, cs = slice(gi * Kg, (gi + 1) * Kg), slice(gi * Cg, (gi + 1) * Cg)
            dw[ks, :, kh, kw] += np.einsum("nkhw,nchw->kc", dy[:, ks], patch[:, cs])
            contrib = np.einsum("nkhw,kc->hwnc", dy[:, ks], w[ks, :, kh, kw])
            np.add.at(dxt[:, :, :, cs], (rows[:, None], cols[None, :]), contrib)
    out = {"dx": dxt[:H, :W].transpose(2, 3, 0, 1), "dw": dw}
    if b is not None:
        out["db"] = dy.sum(axis=(0, 2, 3))
    return out


def naive_convt(x, w, b, p):
    x, w = x.astype(np.float64), w.astype(np.float64)
    N, Cin, H, W = x.shape
    _, Cog, R, S = w.shape
    g = p["groups"]
    Cig = Cin // g
    st, pd, dl, op = p["stride"], p["padding"], p["dilation"], p["output_padding"]
    Ho = convt_out(H, st[0], pd[0], dl[0], R, op[0])
    Wo = convt_out(W, st[1], pd[1], dl[1], S, op[1])
    yt = np.zeros((Ho, Wo, N, Cog * g))
    for kh in range(R):
        ho = np.arange(H) * st[0] - pd[0] + kh * dl[0]
        vh = (ho >= 0) & (ho < Ho)
        for kw in range(S):
            wo = np.arange(W) * st[1] - pd[1] + kw * dl[1]
            vw = (wo >= 0) & (wo < Wo)
            for gi in range(g):
                cis = slice(gi * Cig, (gi + 1) * Cig)
                contrib = np.einsum("nchw,co->hwno", x[:, cis], w[cis, :, kh, kw])
                contrib = contrib[vh][:, vw]
                np.add.at(yt[:, :, :, gi * Cog:(gi + 1) * Cog],
                          (ho[vh][:, None], wo[vw][None, :]), contrib)
    y = yt.transpose(2, 3, 0, 1)
    if b is not None:
        y = y + b.astype(np.float64)[None, :, None, None]
    return y


def naive_gemm(a, b, p):
    A = a.astype(np.float64)
    B = b.astype(np.float64)
    if p["transpose_a"]:
        A = A.T
    if p["transpose_b"]:
        B = B.T
    c = np.zeros((A.shape[0], B.shape[1]))
    for kk in range(A.shape[1]):
        c += np.outer(A[:, kk], B[kk, :])
    return c


# --------------------------------------------------------------------------- case assembly

CASES = {}


def add_case(case):
    cid = case["id"]
    check(cid not in CASES, "duplicate id " + cid)
    CASES[cid] = case


def rng_for(cid):
    return np.random.default_rng(zlib.crc32(cid.encode()))


def draw(rng, shape, integer, dtype="float32"):
    if integer == "q":
        return (rng.integers(-8, 9, size=shape) / 4.0).astype(np.float32)
    if integer:
        return rng.integers(-3, 4, size=shape).astype(np.float32)
    v = rng.uniform(-1.0, 1.0, size=shape)
    if dtype == "float16":
        return v.astype(np.float16).astype(np.float32)
    return v.astype(np.float32)


F16_RTOL = 0.000977
assert F16_RTOL >= 2.0 ** -10


def cross_check(cid, name, ref, naive, scale):
    check(ref.shape == naive.shape, "%s: %s shape %s vs naive %s" % (cid, name, ref.shape, naive.shape))
    err = float(np.max(np.abs(ref - naive))) if ref.size else 0.0
    if err > CROSS_RTOL * max(scale, 1e-300):
        raise Fail("%s: %s disagrees with the naive implementation: max err %g, scale %g"
                   % (cid, name, err, scale))


def finish(case, inputs, outputs, abs_out, counts, integer, accumulate=None):
    """Fill tolerance, abs_scale and data of an ok case. `outputs` are the float64
    references, rounded here once to the case's dtype."""
    f16 = case["dtype"] == "float16"
    if f16:
        outputs = {k: v.astype(np.float16) for k, v in outputs.items()}
        for k, v in outputs.items():
            check(np.all(np.isfinite(v)), "%s: %s overflows float16" % (case["id"], k))
        outputs = {k: v.astype(np.float32) for k, v in outputs.items()}
        for k, v in inputs.items():
            check(np.array_equal(v.astype(np.float16).astype(np.float32), v),
                  "%s: input %s not exact in float16" % (case["id"], k))
        if accumulate:
            case["accumulate"] = accumulate
    else:
        outputs = {k: v.astype(np.float32) for k, v in outputs.items()}
    abs_scale, atol = {}, ATOL_FLOOR
    for name, arr in outputs.items():
        s = float(np.max(abs_out[name])) if arr.size else 0.0
        L = float(np.max(counts[name])) if arr.size else 0.0
        abs_scale[name] = np.float32(s)
        if not f16:
            atol = max(atol, 8.0 * L * U * s)
        elif accumulate == "float16":
            atol = max(atol, 2.0 * L * 2.0 ** -11 * s + U)
        else:
            atol = max(atol, 8.0 * L * U * s + U)
        if integer and integer != "q":
            check(s < (2 ** 11 + 1 if f16 else 2 ** 24), "%s: integer case too large" % case["id"])
            check(np.all(arr == np.round(arr)), "%s: non-integer result" % case["id"])
    case["integer_valued"] = bool(integer) and integer != "q"
    case["tolerance"] = {"rtol": F16_RTOL if f16 else RTOL, "atol": round_up_3sig(atol)}
    case["abs_scale"] = abs_scale
    data = {}
    for name, arr in list(inputs.items()) + list(outputs.items()):
        check(arr.dtype == np.float32, "inputs must be float32")
        data[name] = F32List(arr)
    case["data"] = data


def header(cid, op, expect, desc, params, shapes, dtype="float32"):
    return {"id": cid, "op": op, "expect": expect, "description": desc, "params": params,
            "shapes": shapes, "dtype": dtype, "integer_valued": False,
            "tolerance": {"rtol": RTOL, "atol": ATOL_FLOOR}, "abs_scale": {}}


def conv_params(stride, padding, dilation, groups, mode, bias, R, S):
    stride, dilation = pair(stride), pair(dilation)
    if padding not in ("same", "valid"):
        padding = pair(padding)
    return {"stride": stride, "padding": padding,
            "padding_resolved": resolve_padding(padding, R, S, dilation),
            "dilation": dilation, "groups": groups, "padding_mode": mode, "bias": bias}


def fmt2(v, sep="x"):
    return str(v[0]) if v[0] == v[1] else "%d%s%d" % (v[0], sep, v[1])


def conv_id(op, N, C, H, W, K, R, S, p, integer, tag):
    parts = [op] + ([tag] if tag else [])
    parts += ["n%d" % N, "c%d" % C, "%dx%d" % (H, W), "k%d" % K, "%dx%d" % (R, S)]
    if p["stride"] != [1, 1]:
        parts.append("s" + fmt2(p["stride"]))
    if p["padding"] in ("same", "valid"):
        parts.append(p["padding"])
    elif p["padding"] != [0, 0]:
        parts.append("p" + fmt2(p["padding"]))
    if p["dilation"] != [1, 1]:
        parts.append("d" + fmt2(p["dilation"]))
    if p["padding_mode"] != "zeros":
        parts.append(p["padding_mode"])
    if p["groups"] != 1:
        parts.append("g%d" % p["groups"])
    if p.get("output_padding", [0, 0]) != [0, 0]:
        parts.append("op" + fmt2(p["output_padding"]))
    if p["bias"]:
        parts.append("bias")
    if integer == "q":
        parts.append("q")
    elif integer:
        parts.append("int")
    return "_".join(parts)


def describe(op, N, C, H, W, K, R, S, p, integer, note):
    pad = p["padding"] if isinstance(p["padding"], str) else "%s" % (p["padding"],)
    s = ("%s: x [%d,%d,%d,%d], w %dx%d kernel, %d output channels, stride %s, padding %s "
         "(resolved %s, %s), dilation %s, groups %d, %s"
         % (op, N, C, H, W, R, S, K, p["stride"], pad, p["padding_resolved"], p["padding_mode"],
            p["dilation"], p["groups"], "bias" if p["bias"] else "no bias"))
    if "output_padding" in p:
        s += ", output_padding %s" % (p["output_padding"],)
    if integer == "q":
        s += "; inputs are multiples of 1/4 in [-2, 2]"
    elif integer:
        s += "; integer-valued inputs"
    if note:
        s += ". " + note
    return s


# ---- conv2d / convolve2d

def conv(op, N, C, H, W, K, R, S, stride=1, padding=0, dilation=1, groups=1, mode="zeros",
         bias=False, integer=False, tag=None, note=None, x=None, w=None, expect_y=None,
         dtype="float32", accumulate=None):
    flip = op == "convolve2d"
    p = conv_params(stride, padding, dilation, groups, mode, bias, R, S)
    cid = conv_id(op, N, C, H, W, K, R, S, p, integer, tag) + ("_f16" if dtype == "float16" else "")
    xs, ws = [N, C, H, W], [K, C // groups, R, S]
    errs = conv_errors(p, xs, ws, [K] if bias else None)
    check(not errs, "%s: ok case violates %s" % (cid, errs))
    rng = rng_for(cid)
    x = draw(rng, xs, integer, dtype) if x is None else np.asarray(x, np.float32).reshape(xs)
    w = draw(rng, ws, integer, dtype) if w is None else np.asarray(w, np.float32).reshape(ws)
    b = draw(rng, [K], integer, dtype) if bias else None
    y = jref_conv(x, w, b, p, flip)
    ya = jref_conv(np.abs(x), np.abs(w), None if b is None else np.abs(b), p, flip)
    ones = jref_conv(np.ones_like(x), np.ones_like(w), None if b is None else np.ones_like(b), p, flip)
    cross_check(cid, "y", y, naive_conv(x, w, b, p, flip), float(ya.max()))
    Ho = conv_out(H, *p["padding_resolved"][0], p["dilation"][0], R, p["stride"][0])
    Wo = conv_out(W, *p["padding_resolved"][1], p["dilation"][1], S, p["stride"][1])
    check(list(y.shape) == [N, K, Ho, Wo], cid + ": output shape")
    if expect_y is not None:
        check(np.array_equal(y.ravel(), np.asarray(expect_y, np.float64).ravel()),
              "%s: textbook result %s" % (cid, y.ravel()))
    shapes = {"x": xs, "w": ws}
    inputs = {"x": x, "w": w}
    if bias:
        shapes["b"], inputs["b"] = [K], b
    shapes["y"] = [N, K, Ho, Wo]
    case = header(cid, op, "ok", describe(op, N, C, H, W, K, R, S, p, integer, note), p, shapes,
                  dtype)
    finish(case, inputs, {"y": y}, {"y": ya}, {"y": ones}, integer, accumulate)
    add_case(case)
    return y


def conv_err(op, reason, N, C, H, W, K, R, S, stride=1, padding=0, dilation=1, groups=1,
             mode="zeros", bias=False, wc=None, bshape=None, dyshape=None, note=""):
    p = conv_params(stride, padding, dilation, groups, mode, bias, R, S)
    xs = [N, C, H, W]
    ws = [K, wc if wc is not None else (C // groups if groups > 0 else C), R, S]
    bs = (bshape if bshape is not None else [K]) if bias else None
    shapes = {"x": xs, "w": ws}
    if bias:
        shapes["b"] = bs
    dys = None
    if op == "conv2d_grad":
        if dyshape is None:
            pr = p["padding_resolved"]
            sh, sw = (max(s, 1) for s in p["stride"])
            dh, dw = (max(d, 1) for d in p["dilation"])
            dyshape = [N, K, max(conv_out(H, pr[0][0], pr[0][1], dh, R, sh), 0),
                       max(conv_out(W, pr[1][0], pr[1][1], dw, S, sw), 0)]
        dys = dyshape
        shapes["dy"] = dys
    errs = conv_errors(p, xs, ws, bs, dys)
    cid = "%s_err_%s" % (op, reason)
    check(reason.split("__")[0] in errs, "%s: expected violation %s, found %s" % (cid, reason, errs))
    desc = "%s must be refused: %s. Violations: %s" % (op, note, ", ".join(dict.fromkeys(errs)))
    add_case(header(cid, op, "error", desc, p, shapes))


# ---- conv_transpose2d

def convt(N, Cin, H, W, Cout, R, S, stride=1, padding=0, output_padding=0, dilation=1,
          groups=1, bias=False, integer=False, tag=None, note=None, dtype="float32",
          accumulate=None):
    op = "conv_transpose2d"
    p = {"stride": pair(stride), "padding": pair(padding)}
    p["padding_resolved"] = [[p["padding"][0]] * 2, [p["padding"][1]] * 2]
    p.update({"output_padding": pair(output_padding), "dilation": pair(dilation),
              "groups": groups, "padding_mode": "zeros", "bias": bias})
    cid = conv_id(op, N, Cin, H, W, Cout, R, S, p, integer, tag) + (
        "_f16" if dtype == "float16" else "")
    xs, ws = [N, Cin, H, W], [Cin, Cout // groups, R, S]
    check(Cout % groups == 0, cid)
    errs = convt_errors(p, xs, ws, [Cout] if bias else None)
    check(not errs, "%s: ok case violates %s" % (cid, errs))
    rng = rng_for(cid)
    x, w = draw(rng, xs, integer, dtype), draw(rng, ws, integer, dtype)
    b = draw(rng, [Cout], integer, dtype) if bias else None
    y = jref_convt(x, w, b, p)
    ya = jref_convt(np.abs(x), np.abs(w), None if b is None else np.abs(b), p)
    ones = jref_convt(np.ones_like(x), np.ones_like(w), None if b is None else np.ones_like(b), p)
    cross_check(cid, "y", y, naive_convt(x, w, b, p), float(ya.max()))
    st, pd, dl, op_ = p["stride"], p["padding"], p["dilation"], p["output_padding"]
    ys = [N, Cout, convt_out(H, st[0], pd[0], dl[0], R, op_[0]),
          convt_out(W, st[1], pd[1], dl[1], S, op_[1])]
    check(list(y.shape) == ys, cid + ": output shape")
    shapes = {"x": xs, "w": ws}
    inputs = {"x": x, "w": w}
    if bias:
        shapes["b"], inputs["b"] = [Cout], b
    shapes["y"] = ys
    case = header(cid, op, "ok", describe(op, N, Cin, H, W, Cout, R, S, p, integer, note), p, shapes,
                  dtype)
    finish(case, inputs, {"y": y}, {"y": ya}, {"y": ones}, integer, accumulate)
    add_case(case)
    return y


def convt_err(reason, N, Cin, H, W, Cout, R, S, stride=1, padding=0, output_padding=0,
              dilation=1, groups=1, bias=False, wshape=None, bshape=None, note=""):
    op = "conv_transpose2d"
    p = {"stride": pair(stride), "padding": pair(padding)}
    p["padding_resolved"] = [[p["padding"][0]] * 2, [p["padding"][1]] * 2]
    p.update({"output_padding": pair(output_padding), "dilation": pair(dilation),
              "groups": groups, "padding_mode": "zeros", "bias": bias})
    xs = [N, Cin, H, W]
    ws = wshape or [Cin, Cout // max(groups, 1), R, S]
    bs = (bshape or [Cout]) if bias else None
    shapes = {"x": xs, "w": ws}
    if bias:
        shapes["b"] = bs
    errs = convt_errors(p, xs, ws, bs)
    cid = "%s_err_%s" % (op, reason)
    check(reason.split("__")[0] in errs, "%s: expected violation %s, found %s" % (cid, reason, errs))
    desc = "%s must be refused: %s. Violations: %s" % (op, note, ", ".join(dict.fromkeys(errs)))
    add_case(header(cid, op, "error", desc, p, shapes))


# ---- conv2d_grad

def grad(N, C, H, W, K, R, S, stride=1, padding=0, dilation=1, groups=1, mode="zeros",
         bias=False, integer=False, tag=None, note=None, dtype="float32", accumulate=None):
    op = "conv2d_grad"
    p = conv_params(stride, padding, dilation, groups, mode, bias, R, S)
    cid = conv_id(op, N, C, H, W, K, R, S, p, integer, tag) + ("_f16" if dtype == "float16" else "")
    xs, ws = [N, C, H, W], [K, C // groups, R, S]
    pr = p["padding_resolved"]
    Ho = conv_out(H, pr[0][0], pr[0][1], p["dilation"][0], R, p["stride"][0])
    Wo = conv_out(W, pr[1][0], pr[1][1], p["dilation"][1], S, p["stride"][1])
    dys = [N, K, Ho, Wo]
    errs = conv_errors(p, xs, ws, [K] if bias else None, dys)
    check(not errs, "%s: ok case violates %s" % (cid, errs))
    rng = rng_for(cid)
    x, w = draw(rng, xs, integer, dtype), draw(rng, ws, integer, dtype)
    b = draw(rng, [K], integer, dtype) if bias else None
    dy = draw(rng, dys, integer, dtype)
    g = jref_grad(x, w, b, dy, p)
    ga = jref_grad(np.abs(x), np.abs(w), None if b is None else np.abs(b), np.abs(dy), p)
    go = jref_grad(np.ones_like(x), np.ones_like(w), None if b is None else np.ones_like(b),
                   np.ones_like(dy), p)
    nv = naive_grad(x, w, b, dy, p)
    for name in g:
        cross_check(cid, name, g[name], nv[name], float(ga[name].max()))
    check(list(g["dx"].shape) == xs and list(g["dw"].shape) == ws, cid + ": grad shapes")
    shapes = {"x": xs, "w": ws}
    inputs = {"x": x, "w": w}
    if bias:
        shapes["b"], inputs["b"] = [K], b
    shapes["dy"], inputs["dy"] = dys, dy
    shapes["dx"], shapes["dw"] = xs, ws
    if bias:
        shapes["db"] = [K]
    case = header(cid, op, "ok", describe(op, N, C, H, W, K, R, S, p, integer, note), p, shapes,
                  dtype)
    finish(case, inputs, dict(g), ga, go, integer, accumulate)
    add_case(case)
    return g


# ---- gemm

def gemm(m, k, n, ta, tb, integer=False, tag=None, note=None, dtype="float32", accumulate=None,
         a=None, b=None):
    p = {"m": m, "k": k, "n": n, "transpose_a": ta, "transpose_b": tb}
    cid = "gemm_%s%dx%dx%d_%s%s%s" % (tag + "_" if tag else "", m, k, n, "t" if ta else "n",
                                      "t" if tb else "n",
                                      "_q" if integer == "q" else "_int" if integer else "")
    cid += "_f16" if dtype == "float16" else ""
    sa, sb = gemm_shapes(m, k, n, ta, tb)
    check(not gemm_errors(p, sa, sb), cid)
    rng = rng_for(cid)
    a = draw(rng, sa, integer, dtype) if a is None else np.asarray(a, np.float32).reshape(sa)
    b = draw(rng, sb, integer, dtype) if b is None else np.asarray(b, np.float32).reshape(sb)
    c = jref_gemm(a, b, p)
    ca = jref_gemm(np.abs(a), np.abs(b), p)
    cross_check(cid, "c", c, naive_gemm(a, b, p), float(ca.max()))
    check(list(c.shape) == [m, n], cid + ": output shape")
    desc = ("gemm: c [%d,%d] = %s @ %s, k = %d; a stored %s, b stored %s%s%s"
            % (m, n, "a^T" if ta else "a", "b^T" if tb else "b", k, sa, sb,
               "; inputs are multiples of 1/4" if integer == "q" else
               "; integer-valued inputs" if integer else "", (". " + note) if note else ""))
    case = header(cid, "gemm", "ok", desc, p, {"a": sa, "b": sb, "c": [m, n]}, dtype)
    finish(case, {"a": a, "b": b}, {"c": c}, {"c": ca},
           {"c": np.full(c.shape, float(k))}, integer, accumulate)
    add_case(case)


def gemm_err(reason, m, k, n, ta, tb, sa, sb, note):
    p = {"m": m, "k": k, "n": n, "transpose_a": ta, "transpose_b": tb}
    errs = gemm_errors(p, sa, sb)
    cid = "gemm_err_%s" % reason
    check("inner_dims" in errs, cid)
    desc = "gemm must be refused: %s. Violations: %s" % (note, ", ".join(dict.fromkeys(errs)))
    add_case(header(cid, "gemm", "error", desc, p, {"a": sa, "b": sb}))


# --------------------------------------------------------------------------- the cases

def build_conv_cases():
    # Textbook examples (integer valued, exact).
    x4 = [[1, 2, 3, 0], [4, 5, 6, 1], [7, 8, 9, 2], [0, 1, 2, 3]]
    k2 = [[1, 0], [0, -1]]
    y4 = [[-4, -4, 2], [-4, -4, 4], [6, 6, 6]]
    conv("conv2d", 1, 1, 4, 4, 1, 2, 2, padding="valid", integer=True, tag="textbook",
         x=x4, w=k2, expect_y=y4, note="y[i,j] = x[i,j] - x[i+1,j+1]")
    conv("convolve2d", 1, 1, 4, 4, 1, 2, 2, padding="valid", integer=True, tag="textbook",
         x=x4, w=k2, expect_y=-np.array(y4), note="true convolution: y[i,j] = x[i+1,j+1] - x[i,j]")
    x5 = [[1, 2, 3, 0, 1], [0, 1, 2, 3, 1], [1, 2, 1, 0, 0], [0, 0, 1, 2, 1], [1, 1, 0, 1, 0]]
    k3 = [[1, 0, -1]] * 3
    y5 = conv("conv2d", 1, 1, 5, 5, 1, 3, 3, padding="valid", integer=True, tag="textbook",
              x=x5, w=k3, note="vertical-edge kernel, y[0,0] = -4")
    check(y5[0, 0, 0, 0] == -4.0, "textbook conv2d y[0,0] must be -4, got %r" % y5[0, 0, 0, 0])
    y5c = conv("convolve2d", 1, 1, 5, 5, 1, 3, 3, padding="valid", integer=True, tag="textbook",
               x=x5, w=k3, note="vertical-edge kernel as true convolution, y[0,0] = 4")
    check(y5c[0, 0, 0, 0] == 4.0 and np.array_equal(y5c, -y5), "textbook convolve2d")

    c = "conv2d"
    # basic shapes / kernels / strides
    conv(c, 1, 1, 1, 1, 1, 1, 1, note="smallest case")
    conv(c, 1, 3, 3, 3, 2, 3, 3, padding="valid", note="kernel equals input: 1x1 output")
    conv(c, 2, 3, 3, 3, 4, 3, 3, padding=1, bias=True)
    conv(c, 1, 2, 5, 7, 3, 3, 3, padding=1)
    conv(c, 3, 4, 5, 7, 6, 1, 1, bias=True, note="pointwise convolution")
    conv(c, 2, 3, 13, 17, 4, 3, 3, stride=2, padding=1, bias=True)
    conv(c, 1, 4, 13, 17, 8, 5, 1, stride=(2, 1), padding=(2, 0), note="unequal stride")
    conv(c, 1, 2, 13, 17, 3, 1, 5, padding=(0, 2))
    conv(c, 2, 3, 13, 17, 5, 7, 7, stride=3, padding=3, bias=True)
    conv(c, 1, 8, 5, 7, 8, 2, 2, stride=2, note="stride equals kernel; last column never read")
    conv(c, 1, 1, 13, 17, 2, 3, 2, padding=1, bias=True, note="non-square 3x2 kernel")
    conv(c, 1, 2, 13, 17, 3, 2, 2, stride=3, note="stride 3 > kernel 2: rows/cols skipped")
    conv(c, 1, 1, 5, 7, 2, 3, 3, padding=3, note="padding larger than kernel half-width")
    conv(c, 1, 4, 5, 7, 2, 1, 1, stride=2, note="1x1 kernel with stride")
    conv(c, 2, 2, 7, 5, 3, 3, 3, stride=(1, 2), padding=(1, 0), bias=True)
    conv(c, 1, 3, 6, 9, 2, 3, 3, stride=(3, 2), padding=(2, 1))
    # dilation
    conv(c, 2, 4, 13, 17, 4, 3, 3, padding=2, dilation=2)
    conv(c, 1, 3, 13, 17, 2, 3, 3, padding=(2, 3), dilation=(2, 3), bias=True, note="unequal dilation")
    conv(c, 1, 2, 13, 17, 3, 3, 3, dilation=3, note="dilation 3, no padding")
    conv(c, 1, 2, 13, 17, 2, 7, 7, padding="valid", dilation=2,
         note="dilated kernel height equals input height: Ho = 1")
    conv(c, 1, 2, 11, 12, 3, 2, 2, stride=2, padding=1, dilation=3)
    # same / valid
    conv(c, 1, 3, 5, 7, 4, 3, 3, padding="same")
    conv(c, 2, 2, 5, 7, 3, 2, 2, padding="same", bias=True, note="even kernel: pad 0 before, 1 after")
    conv(c, 1, 3, 13, 17, 2, 3, 2, padding="same", dilation=(2, 3),
         note="same with dilation and even kernel width: rows 2/2, cols 1/2")
    conv(c, 1, 2, 13, 17, 2, 2, 2, padding="same", dilation=3, note="same, T = 3: 1 before, 2 after")
    conv(c, 1, 2, 5, 7, 2, 1, 5, padding="same", bias=True)
    conv(c, 2, 3, 5, 7, 2, 3, 3, padding="valid")
    # groups
    conv(c, 1, 4, 13, 17, 6, 3, 3, padding=1, groups=2, bias=True)
    conv(c, 2, 8, 5, 7, 8, 3, 3, padding=1, groups=4)
    conv(c, 1, 8, 13, 17, 8, 3, 3, padding=1, groups=8, bias=True, note="depthwise")
    conv(c, 2, 4, 5, 7, 8, 3, 3, padding=1, groups=4, note="depthwise with channel multiplier 2")
    conv(c, 1, 16, 5, 7, 16, 3, 3, padding=1, bias=True, note="16 channels")
    conv(c, 1, 16, 13, 17, 8, 1, 1, groups=4, note="grouped pointwise, 16 channels")
    # padding modes
    conv(c, 1, 2, 5, 7, 3, 3, 3, padding=1, mode="reflect")
    conv(c, 2, 3, 13, 17, 4, 3, 3, stride=2, padding=2, mode="reflect", bias=True)
    conv(c, 1, 2, 4, 3, 2, 3, 3, padding=(3, 2), mode="reflect", note="reflect pad = size - 1")
    conv(c, 1, 4, 13, 17, 4, 3, 3, padding=2, dilation=2, groups=2, mode="reflect")
    conv(c, 2, 4, 13, 17, 8, 3, 3, stride=2, padding=2, dilation=2, groups=4, mode="reflect",
         note="depthwise multiplier with reflect, stride and dilation")
    conv(c, 1, 3, 5, 7, 2, 3, 3, padding=1, mode="replicate")
    conv(c, 1, 2, 13, 17, 3, 3, 3, stride=(2, 1), padding=(1, 2), dilation=(1, 2),
         mode="replicate", bias=True)
    conv(c, 1, 2, 2, 3, 2, 3, 3, padding=3, mode="replicate", note="replicate pad larger than size")
    conv(c, 3, 8, 13, 17, 8, 3, 3, stride=2, padding=1, groups=2, mode="replicate", bias=True)
    conv(c, 1, 2, 5, 7, 2, 3, 3, padding=1, mode="circular")
    conv(c, 1, 2, 3, 3, 2, 3, 3, padding=3, mode="circular", note="circular pad = size")
    conv(c, 1, 2, 2, 3, 3, 3, 3, padding=(2, 3), mode="circular", bias=True,
         note="circular pad = size, non-square")
    conv(c, 2, 4, 13, 17, 4, 3, 3, stride=2, padding=2, dilation=2, groups=2, mode="circular",
         bias=True)
    conv(c, 1, 3, 5, 7, 6, 1, 5, padding=(0, 2), groups=3, mode="circular",
         note="depthwise multiplier")
    conv(c, 1, 2, 5, 7, 3, 2, 2, padding="same", mode="reflect", note="same, even kernel, reflect")
    conv(c, 1, 2, 5, 7, 3, 2, 3, padding="same", dilation=(3, 2), mode="circular")
    # output 1x1
    conv(c, 1, 3, 3, 3, 2, 5, 5, padding=1, bias=True, note="kernel equals padded input: 1x1 output")
    conv(c, 1, 2, 1, 1, 3, 7, 7, padding=3, bias=True, note="1x1 input, 7x7 kernel, pad 3")
    # integer-valued
    conv(c, 2, 4, 5, 7, 4, 3, 3, padding=1, groups=2, mode="reflect", bias=True, integer=True)
    conv(c, 1, 8, 13, 17, 8, 3, 3, stride=2, padding=1, groups=8, mode="circular", integer=True)
    conv(c, 3, 2, 5, 7, 4, 2, 2, padding="same", mode="replicate", integer=True)
    conv(c, 1, 3, 13, 17, 6, 3, 2, padding=(2, 1), dilation=(2, 1), groups=3, integer=True)
    conv(c, 2, 16, 5, 7, 4, 1, 1, bias=True, integer=True)
    conv(c, 1, 2, 13, 17, 3, 7, 7, stride=3, padding=3, integer=True)

    v = "convolve2d"
    conv(v, 1, 2, 5, 7, 3, 3, 3, padding=1, bias=True)
    conv(v, 2, 3, 13, 17, 2, 3, 2, padding=(1, 1), note="non-square kernel: flip matters")
    conv(v, 1, 2, 13, 17, 2, 1, 5, padding=(0, 2))
    conv(v, 1, 2, 13, 17, 2, 5, 1, stride=(2, 1), padding=(2, 0))
    conv(v, 1, 3, 13, 17, 4, 3, 3, stride=2, padding=1, bias=True)
    conv(v, 1, 2, 13, 17, 3, 3, 3, padding=(2, 3), dilation=(2, 3))
    conv(v, 1, 4, 5, 7, 6, 3, 3, padding=1, groups=2, bias=True)
    conv(v, 2, 4, 5, 7, 8, 3, 3, padding=1, groups=4, note="depthwise with channel multiplier 2")
    conv(v, 1, 2, 5, 7, 2, 3, 3, padding=2, mode="reflect")
    conv(v, 1, 2, 5, 7, 2, 3, 2, padding=(1, 2), mode="replicate", bias=True)
    conv(v, 1, 2, 5, 7, 2, 3, 3, padding=(2, 3), stride=2, mode="circular")
    conv(v, 1, 2, 5, 7, 3, 2, 2, padding="same", note="same, even kernel")
    conv(v, 1, 3, 13, 17, 2, 7, 7, stride=3, padding=3)
    conv(v, 1, 2, 5, 7, 3, 3, 2, padding=1, groups=1, mode="reflect", integer=True)
    conv(v, 2, 4, 13, 17, 4, 3, 3, stride=2, padding="valid", dilation=2, groups=4, integer=True,
         bias=True)


def build_conv_errors():
    c = "conv2d"
    conv_err(c, "stride", 1, 2, 5, 5, 2, 3, 3, stride=(0, 1), note="stride 0")
    conv_err(c, "stride__negative", 1, 2, 5, 5, 2, 3, 3, stride=(1, -1), note="negative stride")
    conv_err(c, "dilation", 1, 2, 5, 5, 2, 3, 3, dilation=(1, 0), note="dilation 0")
    conv_err(c, "groups", 1, 2, 5, 5, 2, 3, 3, groups=0, note="groups 0")
    conv_err(c, "negative_padding", 1, 2, 5, 5, 2, 3, 3, padding=(-1, 0), note="padding [-1, 0]")
    conv_err(c, "negative_padding__reflect", 1, 2, 5, 5, 2, 3, 3, padding=(0, -1), mode="reflect",
             note="padding [0, -1] with reflect")
    conv_err(c, "c_groups", 1, 3, 5, 5, 4, 3, 3, groups=2, wc=1, note="C = 3 not divisible by groups 2")
    conv_err(c, "k_groups", 1, 4, 5, 5, 3, 3, 3, groups=2, note="K = 3 not divisible by groups 2")
    conv_err(c, "weight_channels", 1, 4, 5, 5, 2, 3, 3, wc=3, note="w.shape[1] = 3 but C = 4")
    conv_err(c, "weight_channels__grouped", 1, 4, 5, 5, 4, 3, 3, groups=2, wc=4,
             note="w.shape[1] = 4 but C/groups = 2")
    conv_err(c, "bias_shape", 1, 2, 5, 5, 4, 3, 3, bias=True, bshape=[3], note="b has 3 entries, K = 4")
    conv_err(c, "same_stride", 1, 2, 5, 5, 2, 3, 3, stride=2, padding="same",
             note='padding "same" with stride 2')
    conv_err(c, "same_stride__unequal", 1, 2, 5, 5, 2, 3, 3, stride=(1, 2), padding="same",
             note='padding "same" with stride [1, 2]')
    conv_err(c, "reflect_pad", 1, 2, 5, 3, 2, 3, 3, padding=(1, 3), mode="reflect",
             note="reflect pad 3 equals width 3")
    conv_err(c, "reflect_pad__larger", 1, 2, 2, 6, 2, 3, 3, padding=(3, 1), mode="reflect",
             note="reflect pad 3 > height 2")
    conv_err(c, "reflect_pad__same", 1, 1, 1, 5, 1, 3, 3, padding="same", mode="reflect",
             note='reflect with "same" needs pad 1 on an input of height 1')
    conv_err(c, "circular_pad", 1, 2, 3, 5, 2, 3, 3, padding=(4, 1), mode="circular",
             note="circular pad 4 > height 3")
    conv_err(c, "output_size", 1, 2, 3, 3, 2, 5, 5, note="5x5 kernel on 3x3 input without padding")
    conv_err(c, "output_size__valid", 1, 2, 4, 6, 2, 5, 3, padding="valid",
             note='5x3 kernel on 4x6 input with "valid"')
    conv_err(c, "output_size__dilated", 1, 2, 5, 5, 2, 2, 2, dilation=5,
             note="2x2 kernel with dilation 5 spans 6 > 5")
    conv_err(c, "output_size__dilated_padded", 1, 2, 5, 5, 2, 3, 3, padding=1, dilation=(1, 4),
             note="dilated kernel width 9 > padded width 7")
    v = "convolve2d"
    conv_err(v, "stride", 1, 2, 5, 5, 2, 3, 3, stride=0, note="stride 0")
    conv_err(v, "negative_padding", 1, 2, 5, 8, 2, 3, 3, padding=(0, -2), note="padding [0, -2]")
    conv_err(v, "c_groups", 1, 6, 5, 5, 4, 3, 3, groups=4, wc=1, note="C = 6 not divisible by groups 4")
    conv_err(v, "weight_channels", 1, 2, 5, 5, 2, 3, 3, wc=1, note="w.shape[1] = 1 but C = 2")
    conv_err(v, "reflect_pad", 1, 1, 4, 4, 1, 3, 3, padding=4, mode="reflect",
             note="reflect pad 4 equals size 4")
    conv_err(v, "output_size", 1, 1, 3, 8, 1, 4, 4, note="4x4 kernel on 3x8 input")
    conv_err(v, "same_stride", 1, 2, 6, 6, 2, 2, 2, stride=(2, 1), padding="same",
             note='padding "same" with stride [2, 1]')


def build_gemm_cases():
    sizes = [(1, 1, 1), (1, 64, 1), (7, 13, 5), (17, 33, 65), (31, 1, 9), (64, 64, 64),
             (3, 1, 1), (1, 1, 7), (8, 8, 8), (16, 3, 31), (5, 100, 3), (2, 257, 3)]
    combos = [(False, False), (False, True), (True, False), (True, True)]
    for i, (m, k, n) in enumerate(sizes):
        gemm(m, k, n, *combos[i % 4])
        gemm(m, k, n, *combos[(i + 1) % 4])
    gemm(7, 13, 5, False, False, integer=True)
    gemm(64, 64, 64, True, False, integer=True)
    gemm(17, 33, 65, False, True, integer=True)
    gemm(9, 1, 1, True, True, integer=True)
    gemm_err("inner_dims", 4, 5, 3, False, False, [4, 5], [6, 3], "a is [4,5] but b is [6,3]")
    gemm_err("inner_dims__ta", 4, 5, 3, True, False, [5, 4], [4, 3],
             "a stored transposed [5,4] (k = 5) but b is [4,3]")
    gemm_err("inner_dims__tb", 4, 5, 3, False, True, [4, 5], [3, 7],
             "b stored transposed [3,7] (k = 7) but a is [4,5]")
    gemm_err("inner_dims__tatb", 2, 3, 2, True, True, [3, 2], [2, 2],
             "a stored transposed [3,2] (k = 3) but b stored transposed [2,2] (k = 2)")


def build_convt_cases():
    convt(1, 1, 3, 3, 1, 3, 3)
    convt(1, 2, 3, 3, 3, 3, 3, stride=2, bias=True)
    convt(2, 3, 5, 7, 2, 3, 3, stride=2, padding=1, output_padding=1, bias=True)
    convt(1, 4, 5, 7, 4, 4, 4, stride=2, padding=1, note="classic 2x upsampling")
    convt(1, 2, 5, 7, 2, 3, 3, stride=3, padding=1, output_padding=2)
    convt(1, 3, 5, 7, 2, 3, 2, stride=(2, 1), padding=(1, 0), output_padding=(1, 0))
    convt(1, 2, 5, 7, 3, 3, 3, padding=1, output_padding=1, dilation=2,
          note="output_padding 1 >= stride 1 but < dilation 2")
    convt(1, 2, 5, 5, 2, 3, 3, stride=2, padding=2, output_padding=2, dilation=3,
          note="output_padding 2 >= stride 2 but < dilation 3")
    convt(1, 2, 5, 7, 2, 3, 3, stride=(1, 2), padding=(0, 1), output_padding=(2, 1), dilation=(3, 1),
          note="output_padding rows 2 < dilation 3")
    convt(2, 2, 4, 6, 3, 3, 3, padding=1, dilation=(1, 2))
    convt(1, 4, 5, 7, 6, 3, 3, stride=2, padding=1, groups=2, bias=True)
    convt(1, 4, 5, 7, 4, 3, 3, stride=2, padding=1, output_padding=1, groups=4, note="depthwise")
    convt(1, 4, 5, 7, 8, 3, 3, stride=2, groups=4, bias=True, note="depthwise, channel multiplier 2")
    convt(1, 3, 4, 5, 2, 1, 1, stride=2, note="1x1 kernel, stride 2: zeros between samples")
    convt(1, 2, 4, 5, 2, 1, 1, stride=3, output_padding=2, bias=True,
          note="1x1 kernel, stride 3, output_padding 2: bias-only rows")
    convt(2, 3, 5, 7, 2, 2, 2, stride=2)
    convt(1, 2, 5, 7, 3, 1, 4, stride=(1, 2), padding=(0, 1))
    convt(1, 2, 5, 7, 3, 4, 1, stride=(3, 1), padding=(1, 0), output_padding=(2, 0))
    convt(1, 2, 5, 7, 2, 4, 4, stride=2, padding=2, note="padding crops 2 each side")
    convt(2, 2, 8, 9, 3, 3, 3, stride=2, padding=1, output_padding=1, bias=True)
    convt(1, 3, 1, 1, 2, 3, 3, stride=2, note="1x1 input")
    convt(1, 2, 1, 1, 2, 3, 3, padding=1, bias=True, note="padding crops to a 1x1 output")
    convt(1, 4, 4, 5, 4, 3, 3, stride=3, padding=2, dilation=2, groups=2, bias=True)
    convt(1, 3, 5, 7, 2, 3, 3, stride=(3, 2), padding=1, output_padding=(2, 1))
    convt(1, 8, 5, 7, 16, 3, 3, stride=2, padding=1, groups=2, bias=True)
    convt(1, 2, 5, 7, 2, 2, 2, padding=1, output_padding=2, dilation=3,
          note="stride 1, dilation 3, output_padding 2")
    convt(1, 4, 5, 7, 2, 3, 3, stride=2, padding=1, output_padding=1, integer=True)
    convt(2, 4, 4, 5, 4, 3, 2, stride=(2, 3), padding=(1, 0), groups=2, bias=True, integer=True)
    convt(1, 3, 5, 5, 3, 3, 3, padding=2, output_padding=1, dilation=2, groups=3, integer=True)

    convt_err("output_padding", 1, 2, 5, 5, 2, 3, 3, stride=2, output_padding=2,
              note="output_padding 2 >= stride 2 and >= dilation 1")
    convt_err("output_padding__stride1", 1, 2, 5, 5, 2, 3, 3, output_padding=(1, 0),
              note="output_padding 1 with stride 1 and dilation 1")
    convt_err("output_padding__dilated", 1, 2, 5, 5, 2, 3, 3, stride=1, dilation=2,
              output_padding=(0, 2), note="output_padding 2 >= stride 1 and >= dilation 2")
    convt_err("stride", 1, 2, 5, 5, 2, 3, 3, stride=(0, 1), note="stride 0")
    convt_err("dilation", 1, 2, 5, 5, 2, 3, 3, dilation=0, note="dilation 0")
    convt_err("groups", 1, 2, 5, 5, 2, 3, 3, groups=0, wshape=[2, 2, 3, 3], note="groups 0")
    convt_err("cin_groups", 1, 3, 5, 5, 4, 3, 3, groups=2, note="Cin = 3 not divisible by groups 2")
    convt_err("weight_channels", 1, 3, 5, 5, 2, 3, 3, wshape=[2, 2, 3, 3],
              note="w.shape[0] = 2 but Cin = 3")
    convt_err("bias_shape", 1, 2, 5, 5, 4, 3, 3, groups=2, bias=True, bshape=[2],
              note="b has 2 entries, Cout = groups * w.shape[1] = 4")
    convt_err("negative_padding", 1, 2, 5, 5, 2, 3, 3, padding=(-1, 0), note="padding [-1, 0]")
    convt_err("output_size", 1, 2, 1, 1, 2, 1, 1, padding=1, note="Ho = 0 - 2 + 0 + 0 + 1 = -1")
    convt_err("output_size__zero", 1, 2, 2, 4, 2, 3, 3, padding=(2, 0), note="Ho = 1 - 4 + 2 + 1 = 0")


def build_grad_cases():
    # zeros
    grad(1, 2, 5, 7, 3, 3, 3, padding=1, bias=True)
    grad(2, 3, 8, 8, 2, 2, 2, stride=3, bias=True,
         note="rows/cols 2 and 5 are never read: their dx is exactly 0")
    grad(1, 2, 8, 10, 2, 1, 1, stride=(2, 3), note="1x1 kernel, stride: only every 2nd row/3rd col gets dx")
    grad(1, 4, 13, 17, 4, 3, 3, stride=2, padding=1, dilation=2, groups=2)
    grad(1, 3, 5, 7, 2, 2, 2, padding="same", note="even kernel: per-side padding 0/1")
    grad(1, 4, 5, 7, 8, 3, 3, padding=1, groups=4, bias=True, note="depthwise with channel multiplier 2")
    grad(2, 8, 9, 11, 8, 3, 3, stride=2, padding=1, groups=8, note="depthwise")
    grad(1, 2, 13, 17, 3, 7, 7, stride=2, padding=3, bias=True)
    grad(1, 2, 13, 17, 2, 3, 3, padding="valid", dilation=(2, 3))
    grad(1, 2, 5, 11, 2, 1, 5, padding="same", dilation=2)
    grad(3, 16, 5, 7, 8, 3, 3, padding=1, groups=2, note="16 channels, batch 3")
    grad(2, 16, 6, 5, 22, 1, 1, groups=2,
         note="1x1, 8 channels per group, 11 output channels per group (vec4 weight-gradient stores)")
    grad(1, 16, 9, 9, 12, 1, 1, stride=2, bias=True, note="strided 1x1 (downsampling shortcut), 16 channels")
    # reflect
    grad(1, 2, 5, 7, 3, 3, 3, padding=1, mode="reflect")
    grad(2, 3, 9, 11, 2, 3, 3, stride=2, padding=2, mode="reflect", bias=True)
    grad(1, 2, 3, 4, 2, 3, 3, padding=(2, 3), mode="reflect", note="reflect pad = size - 1")
    grad(1, 2, 7, 8, 2, 2, 2, padding="same", dilation=3, mode="reflect",
         note="same with dilation 3: per-side padding 1/2, reflect")
    grad(1, 4, 7, 9, 6, 3, 3, padding=2, dilation=2, groups=2, mode="reflect", bias=True)
    # replicate
    grad(1, 3, 5, 7, 2, 3, 3, padding=1, mode="replicate")
    grad(1, 2, 9, 8, 3, 3, 3, stride=(2, 1), padding=(2, 1), mode="replicate", bias=True)
    grad(1, 2, 2, 3, 2, 3, 3, padding=3, mode="replicate", note="replicate pad > size: edges collect many copies")
    grad(1, 4, 7, 9, 4, 3, 3, padding=2, dilation=2, groups=4, mode="replicate", note="depthwise")
    grad(1, 2, 6, 7, 2, 3, 2, padding="same", mode="replicate")
    # circular
    grad(1, 2, 5, 7, 3, 3, 3, padding=1, mode="circular")
    grad(1, 2, 3, 3, 2, 3, 3, padding=3, mode="circular", bias=True, note="circular pad = size")
    grad(1, 4, 9, 11, 4, 3, 3, stride=2, padding=2, dilation=2, groups=2, mode="circular")
    grad(1, 2, 5, 6, 2, 2, 2, padding="same", mode="circular", note="per-side 0/1 circular")
    grad(1, 3, 5, 7, 6, 1, 5, padding=(0, 2), groups=3, mode="circular", bias=True,
         note="depthwise with channel multiplier 2")
    # integer-valued
    grad(2, 4, 5, 7, 4, 3, 3, padding=1, groups=2, bias=True, integer=True)
    grad(1, 2, 5, 7, 3, 3, 3, stride=2, padding=2, mode="reflect", integer=True)
    grad(1, 2, 4, 5, 2, 3, 2, padding=(2, 1), dilation=(1, 2), mode="replicate", bias=True, integer=True)
    grad(1, 3, 4, 4, 3, 3, 3, padding=4, groups=3, mode="circular", integer=True,
         note="circular pad = size, depthwise")
    grad(1, 3, 8, 8, 2, 2, 2, stride=3, integer=True, note="never-read rows/cols get exactly 0")

    g = "conv2d_grad"
    conv_err(g, "dy_shape", 1, 2, 5, 7, 3, 3, 3, padding=1, dyshape=[1, 3, 4, 7],
             note="dy has Ho = 4, expected 5")
    conv_err(g, "dy_shape__width", 1, 2, 5, 7, 3, 3, 3, stride=2, dyshape=[1, 3, 2, 4],
             note="dy has Wo = 4, expected 3")
    conv_err(g, "dy_shape__channels", 1, 2, 5, 7, 3, 3, 3, padding=1, dyshape=[1, 2, 5, 7],
             note="dy has 2 channels, K = 3")
    conv_err(g, "dy_shape__batch", 2, 2, 5, 7, 3, 3, 3, padding=1, dyshape=[1, 3, 5, 7],
             note="dy has batch 1, x has batch 2")
    conv_err(g, "stride", 1, 2, 5, 7, 3, 3, 3, stride=(1, 0), note="stride 0")
    conv_err(g, "c_groups", 1, 3, 5, 7, 4, 3, 3, groups=2, wc=1, note="C = 3 not divisible by groups 2")
    conv_err(g, "reflect_pad", 1, 2, 3, 7, 2, 3, 3, padding=(3, 1), mode="reflect",
             note="reflect pad 3 equals height 3")
    conv_err(g, "bias_shape", 1, 2, 5, 7, 3, 3, 3, padding=1, bias=True, bshape=[4],
             note="b has 4 entries, K = 3")
    conv_err(g, "same_stride", 1, 2, 5, 7, 3, 3, 3, stride=2, padding="same",
             note='padding "same" with stride 2')
    conv_err(g, "output_size", 1, 2, 3, 3, 3, 5, 5, note="5x5 kernel on 3x3 input")
    conv_err(g, "negative_padding", 1, 2, 5, 7, 3, 3, 3, padding=(1, -1), note="padding [1, -1]")


# --------------------------------------------------------------------------- main

def build_f16_cases():
    H = "float16"
    # Every op, padding modes, groups, strides, dilation; random and integer-valued.
    conv("conv2d", 2, 3, 9, 7, 4, 3, 3, padding=1, bias=True, dtype=H)
    conv("conv2d", 1, 4, 8, 8, 4, 3, 3, padding="same", mode="reflect", groups=2, integer=True,
         dtype=H)
    conv("conv2d", 1, 2, 7, 6, 3, 3, 2, padding=(2, 1), dilation=(2, 1), mode="circular", dtype=H)
    conv("conv2d", 2, 2, 9, 9, 2, 3, 3, stride=2, padding=1, mode="replicate", bias=True,
         integer=True, dtype=H)
    conv("conv2d", 1, 8, 7, 7, 8, 3, 3, padding=1, groups=8, dtype=H, note="depthwise")
    conv("convolve2d", 1, 2, 6, 7, 3, 5, 5, padding=2, bias=True, dtype=H)
    conv("convolve2d", 1, 3, 5, 5, 2, 3, 3, padding=1, mode="reflect", integer=True, dtype=H)
    conv("conv2d", 1, 16, 6, 6, 8, 3, 3, padding=1, dtype=H, accumulate="float16",
         tag="f16acc", note="tolerance of f16 arithmetic (accumulate float16)")
    # Anchors: cubek#519 (f16 1x1 conv wrong at C = 96), at small cost.
    conv("conv2d", 1, 96, 8, 8, 16, 1, 1, bias=True, dtype=H, tag="c96",
         note="C = 96 1x1 (cubek#519)")
    # Anchor: f16 products overflow f16 (300 * 256 = 76800 > 65504) but not f32; f32
    # accumulation gives the finite result (ORT#32357: no silent zeros or infinities).
    conv("conv2d", 1, 2, 2, 2, 1, 1, 1, dtype=H, tag="overflow",
         x=[256, 250, 300, 260, 250, 256, 299, 260], w=[300, -299],
         note="products overflow float16, the sums do not")
    gemm(2, 3, 2, False, False, dtype=H, tag="overflow",
         a=[300, 300, 1, 250, 260, 2], b=[256, 250, -256, -250, 3, 5],
         note="products overflow float16, the sums do not")
    # conv_transpose2d, including ORT#28976's shape: output indices above 2048.
    convt(1, 4, 5, 7, 6, 3, 3, stride=2, padding=1, output_padding=1, groups=2, bias=True, dtype=H)
    convt(2, 4, 4, 5, 4, 3, 2, stride=(2, 3), padding=(1, 0), groups=2, integer=True, dtype=H)
    convt(1, 2, 2, 1100, 1, 3, 3, stride=(1, 2), bias=True, integer=True, dtype=H, tag="wide",
          note="output width 2201: indices above 2048 (ORT#28976)")
    # Gradients; the anchor: weight and bias gradients reducing over 2^15 output pixels.
    grad(1, 2, 5, 7, 3, 3, 3, padding=1, mode="reflect", bias=True, dtype=H)
    grad(1, 4, 13, 17, 4, 3, 3, stride=2, padding=1, dilation=2, groups=2, dtype=H)
    grad(2, 4, 5, 7, 4, 3, 3, padding=1, groups=2, mode="circular", bias=True, integer=True,
         dtype=H)
    grad(1, 1, 128, 256, 1, 1, 1, bias=True, integer="q", dtype=H, tag="long",
         note="dw and db reduce over 2^15 output pixels")
    # GEMM.
    gemm(17, 33, 65, False, True, dtype=H)
    gemm(33, 64, 9, True, False, integer=True, dtype=H)
    gemm(5, 100, 3, True, True, dtype=H, accumulate="float16", tag="f16acc")
    # f16 arithmetic (accumulate float16; Precision::F16Accumulate): every op, padding modes,
    # strides, dilation, groups, flips, output padding; integer-valued (exact in f16) too.
    A = dict(dtype=H, accumulate="float16", tag="f16acc")
    conv("conv2d", 2, 4, 7, 9, 6, 3, 3, padding=1, mode="reflect", groups=2, bias=True, **A)
    conv("conv2d", 1, 3, 8, 7, 5, 3, 2, stride=2, padding=(2, 1), dilation=(2, 1),
         mode="circular", integer=True, **A)
    conv("convolve2d", 1, 2, 6, 6, 3, 3, 3, padding=1, mode="replicate", bias=True, **A)
    convt(1, 4, 5, 6, 4, 3, 3, stride=2, padding=1, output_padding=1, groups=2, bias=True, **A)
    convt(2, 3, 4, 4, 2, 2, 3, stride=(1, 2), dilation=(2, 1), integer=True, **A)
    grad(1, 3, 6, 7, 4, 3, 3, padding=1, mode="reflect", bias=True, **A)
    grad(2, 4, 9, 9, 6, 3, 3, stride=2, padding=1, groups=2, mode="circular", **A)
    grad(1, 2, 6, 5, 3, 3, 3, padding=1, mode="replicate", dilation=(1, 2), integer=True, **A)
    gemm(9, 24, 13, False, False, integer=True, **A)


# --------------------------------------------------------------------------- epilogues
#
# y = act(conv + b + r) ("before"), act(conv + b) + r ("after"), act(conv + b) ("none"), with
# PyTorch's activations (jax.nn in float64; constants alpha/lo/hi taken as float32 values).
# Cross-checked against numpy/math formulas. abs_scale of an epilogue output = Lip(act) *
# (sum |terms| of z) (+ |r| after the activation); the tolerance adds 4e-6 * abs_scale for the
# f32 evaluation of the activation (exp/erf approximations), far below one missing term.
# conv2d_grad with an epilogue: inputs z (the pre-activation, rounded to float32: the
# reference differentiates the activation there), dy, r; outputs dx, dw, db of
# dz = dy * act'(z) and dr (dz for "before", dy for "after").

EPI_LIP = {"identity": 1.0, "relu": 1.0, "clamp": 1.0, "sigmoid": 0.25, "tanh": 1.0,
           "silu": 1.1, "gelu": 1.13, "gelu_tanh": 1.13, "hardswish": 1.5,
           "hardsigmoid": 1.0 / 6.0}
EPI_REL = 4e-6


def epi_obj(act, residual, alpha=None, lo=None, hi=None):
    e = {"activation": act}
    if act == "leaky_relu":
        e["alpha"] = np.float32(0.01 if alpha is None else alpha)
    if act == "clamp":
        e["lo"], e["hi"] = np.float32(lo), np.float32(hi)
    e["residual"] = residual
    return e


def epi_lip(e):
    if e["activation"] == "leaky_relu":
        return max(1.0, abs(float(e["alpha"])))
    return EPI_LIP[e["activation"]]


def j_act(e):
    a = e["activation"]
    if a == "identity":
        return lambda z: z
    if a == "relu":
        return jax.nn.relu
    if a == "leaky_relu":
        return lambda z: jax.nn.leaky_relu(z, float(e["alpha"]))
    if a == "clamp":
        return lambda z: jnp.clip(z, float(e["lo"]), float(e["hi"]))
    if a == "sigmoid":
        return jax.nn.sigmoid
    if a == "tanh":
        return jnp.tanh
    if a == "silu":
        return jax.nn.silu
    if a == "gelu":
        return lambda z: jax.nn.gelu(z, approximate=False)
    if a == "gelu_tanh":
        return lambda z: jax.nn.gelu(z, approximate=True)
    if a == "hardswish":
        return jax.nn.hard_swish
    if a == "hardsigmoid":
        return jax.nn.hard_sigmoid
    raise Fail("unknown activation " + a)


def n_act(e, z):
    """numpy float64 activation and derivative (PyTorch's formulas), for the cross-check."""
    a = e["activation"]
    erf = np.vectorize(math.erf)
    sig = 1.0 / (1.0 + np.exp(-z))
    if a == "identity":
        return z, np.ones_like(z)
    if a == "relu":
        return np.where(z > 0, z, 0.0), (z > 0).astype(float)
    if a == "leaky_relu":
        al = float(e["alpha"])
        return np.where(z > 0, z, al * z), np.where(z > 0, 1.0, al)
    if a == "clamp":
        lo, hi = float(e["lo"]), float(e["hi"])
        return np.clip(z, lo, hi), ((z > lo) & (z < hi)).astype(float)
    if a == "sigmoid":
        return sig, sig * (1 - sig)
    if a == "tanh":
        t = np.tanh(z)
        return t, 1 - t * t
    if a == "silu":
        return z * sig, sig * (1 + z * (1 - sig))
    if a == "gelu":
        cdf = 0.5 * (1 + erf(z / math.sqrt(2)))
        return z * cdf, cdf + z * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    if a == "gelu_tanh":
        k = math.sqrt(2 / math.pi)
        t = np.tanh(k * (z + 0.044715 * z ** 3))
        return (0.5 * z * (1 + t),
                0.5 * (1 + t) + 0.5 * z * (1 - t * t) * k * (1 + 3 * 0.044715 * z * z))
    if a == "hardswish":
        return (z * np.clip(z + 3, 0, 6) / 6,
                np.where(z < -3, 0.0, np.where(z <= 3, z / 3 + 0.5, 1.0)))
    if a == "hardsigmoid":
        return np.clip(z + 3, 0, 6) / 6, np.where((z > -3) & (z < 3), 1.0 / 6.0, 0.0)
    raise Fail("unknown activation " + a)


def j_epi(e, v, r):
    f = j_act(e)
    if e["residual"] == "before":
        return np.asarray(f(jnp.asarray(v + r)), np.float64)
    if e["residual"] == "after":
        return np.asarray(f(jnp.asarray(v)), np.float64) + r
    return np.asarray(f(jnp.asarray(v)), np.float64)


def n_epi(e, v, r):
    if e["residual"] == "before":
        return n_act(e, v + r)[0]
    if e["residual"] == "after":
        return n_act(e, v)[0] + r
    return n_act(e, v)[0]


def epi_kinks(e):
    a = e["activation"]
    if a in ("relu", "leaky_relu"):
        return [0.0]
    if a == "clamp":
        return [float(e["lo"]), float(e["hi"])]
    if a in ("hardswish", "hardsigmoid"):
        return [-3.0, 3.0]
    return []


def epi_apply(cid, e, v, va, ones, shape, rng, integer, dtype="float32"):
    """Output, abs scale, term counts and residual of epilogue e on v (= conv + b, float64)
    with |terms| va and term counts ones."""
    r = draw(rng, shape, integer, dtype).astype(np.float64) if e["residual"] != "none" else 0.0
    y = j_epi(e, v, r)
    ra = np.abs(r)
    lip = epi_lip(e)
    if e["residual"] == "before":
        ya, cnt = lip * (va + ra), ones + 1
    elif e["residual"] == "after":
        ya, cnt = lip * va + ra, ones + 1
    else:
        ya, cnt = lip * va, ones
    cross_check(cid, "y(epilogue)", y, n_epi(e, v, r), max(float(ya.max()), 1.0))
    z = v + r if e["residual"] == "before" else v
    for k in epi_kinks(e):
        check(integer or float(np.min(np.abs(z - k))) > 1e-6, "%s: z at a kink" % cid)
    return y, ya, cnt, (None if e["residual"] == "none" else np.asarray(r, np.float32))


F16_SUFFIX = {"float32": "", "float16": "_f16"}


def epi_tag(e):
    return "epi_%s_%s" % (e["activation"], e["residual"])


def epi_finish(case, e, inputs, outputs, abs_out, counts, integer):
    case["epilogue"] = e
    # float64 references, rounded once to the case's type by finish.
    finish(case, inputs, outputs, abs_out, counts, integer)
    if not integer:
        extra = max(EPI_REL * float(v) for v in case["abs_scale"].values())
        case["tolerance"]["atol"] = round_up_3sig(max(case["tolerance"]["atol"], extra))


def conv_epi(op, e, N, C, H, W, K, R, S, stride=1, padding=0, dilation=1, groups=1,
             mode="zeros", bias=True, integer=False, note=None, dtype="float32"):
    flip = op == "convolve2d"
    p = conv_params(stride, padding, dilation, groups, mode, bias, R, S)
    cid = conv_id(op, N, C, H, W, K, R, S, p, integer, epi_tag(e)) + F16_SUFFIX[dtype]
    xs, ws = [N, C, H, W], [K, C // groups, R, S]
    check(not conv_errors(p, xs, ws, [K] if bias else None), cid)
    rng = rng_for(cid)
    x, w = draw(rng, xs, integer, dtype), draw(rng, ws, integer, dtype)
    b = draw(rng, [K], integer, dtype) if bias else None
    v = jref_conv(x, w, b, p, flip)
    va = jref_conv(np.abs(x), np.abs(w), None if b is None else np.abs(b), p, flip)
    ones = jref_conv(np.ones_like(x), np.ones_like(w), None if b is None else np.ones_like(b), p, flip)
    cross_check(cid, "conv", v, naive_conv(x, w, b, p, flip), float(va.max()))
    y, ya, cnt, r = epi_apply(cid, e, v, va, ones, list(v.shape), rng, integer, dtype)
    shapes = {"x": xs, "w": ws}
    inputs = {"x": x, "w": w}
    if bias:
        shapes["b"], inputs["b"] = [K], b
    if r is not None:
        shapes["r"], inputs["r"] = list(v.shape), r
    shapes["y"] = list(v.shape)
    desc = describe(op, N, C, H, W, K, R, S, p, integer,
                    "epilogue %s, residual %s%s" % (e["activation"], e["residual"],
                                                    (". " + note) if note else ""))
    case = header(cid, op, "ok", desc, p, shapes, dtype)
    epi_finish(case, e, inputs, {"y": np.asarray(y, np.float64)}, {"y": ya}, {"y": cnt}, integer)
    add_case(case)


def convt_epi(e, N, Cin, H, W, Cout, R, S, stride=1, padding=0, output_padding=0,
              dilation=1, groups=1, bias=True, integer=False, dtype="float32"):
    op = "conv_transpose2d"
    p = {"stride": pair(stride), "padding": pair(padding)}
    p["padding_resolved"] = [[p["padding"][0]] * 2, [p["padding"][1]] * 2]
    p.update({"output_padding": pair(output_padding), "dilation": pair(dilation),
              "groups": groups, "padding_mode": "zeros", "bias": bias})
    cid = conv_id(op, N, Cin, H, W, Cout, R, S, p, integer, epi_tag(e)) + F16_SUFFIX[dtype]
    xs, ws = [N, Cin, H, W], [Cin, Cout // groups, R, S]
    check(not convt_errors(p, xs, ws, [Cout] if bias else None), cid)
    rng = rng_for(cid)
    x, w = draw(rng, xs, integer, dtype), draw(rng, ws, integer, dtype)
    b = draw(rng, [Cout], integer, dtype) if bias else None
    v = jref_convt(x, w, b, p)
    va = jref_convt(np.abs(x), np.abs(w), None if b is None else np.abs(b), p)
    ones = jref_convt(np.ones_like(x), np.ones_like(w), None if b is None else np.ones_like(b), p)
    cross_check(cid, "convt", v, naive_convt(x, w, b, p), float(va.max()))
    y, ya, cnt, r = epi_apply(cid, e, v, va, ones, list(v.shape), rng, integer, dtype)
    shapes = {"x": xs, "w": ws}
    inputs = {"x": x, "w": w}
    if bias:
        shapes["b"], inputs["b"] = [Cout], b
    if r is not None:
        shapes["r"], inputs["r"] = list(v.shape), r
    shapes["y"] = list(v.shape)
    desc = describe(op, N, Cin, H, W, Cout, R, S, p, integer,
                    "epilogue %s, residual %s" % (e["activation"], e["residual"]))
    case = header(cid, op, "ok", desc, p, shapes, dtype)
    epi_finish(case, e, inputs, {"y": np.asarray(y, np.float64)}, {"y": ya}, {"y": cnt}, integer)
    add_case(case)


def grad_epi(e, N, C, H, W, K, R, S, stride=1, padding=0, dilation=1, groups=1, mode="zeros",
             bias=True, dtype="float32"):
    op = "conv2d_grad"
    p = conv_params(stride, padding, dilation, groups, mode, bias, R, S)
    cid = conv_id(op, N, C, H, W, K, R, S, p, False, epi_tag(e)) + F16_SUFFIX[dtype]
    xs, ws = [N, C, H, W], [K, C // groups, R, S]
    rng = rng_for(cid)
    x, w = draw(rng, xs, False, dtype), draw(rng, ws, False, dtype)
    b = draw(rng, [K], False, dtype) if bias else None
    v = jref_conv(x, w, b, p, False)
    dys = list(v.shape)
    check(not conv_errors(p, xs, ws, [K] if bias else None, dys), cid)
    dy = draw(rng, dys, False, dtype)
    r = draw(rng, dys, False, dtype) if e["residual"] != "none" else None
    # z: the saved pre-activation, a tensor of the case's type.
    zt = np.float16 if dtype == "float16" else np.float32
    z = (v + r if e["residual"] == "before" else v).astype(zt).astype(np.float32)
    for k in epi_kinks(e):
        check(float(np.min(np.abs(z.astype(np.float64) - k))) > 1e-6, "%s: z at a kink" % cid)
    z64 = jnp.asarray(z, jnp.float64)
    _, vjp = jax.vjp(j_act(e), z64)
    dz = np.asarray(vjp(jnp.asarray(dy, jnp.float64))[0])
    ndz = dy.astype(np.float64) * n_act(e, z.astype(np.float64))[1]
    lip = epi_lip(e)
    dza = lip * np.abs(dy).astype(np.float64)
    cross_check(cid, "dz", dz, ndz, float(dza.max()))
    g = jref_grad(x, w, b, dz, p)
    ga = jref_grad(np.abs(x), np.abs(w), None if b is None else np.abs(b), dza, p)
    go = jref_grad(np.ones_like(x), np.ones_like(w), None if b is None else np.ones_like(b),
                   np.ones_like(dy), p)
    nv = naive_grad(x, w, b, ndz, p)
    for name in g:
        cross_check(cid, name, g[name], nv[name], float(ga[name].max()))
    if e["residual"] == "before":
        g["dr"], ga["dr"], go["dr"] = dz, dza, np.ones_like(dz)
    elif e["residual"] == "after":
        g["dr"], ga["dr"], go["dr"] = dy.astype(np.float64), np.abs(dy), np.ones_like(dz)
    shapes = {"x": xs, "w": ws}
    inputs = {"x": x, "w": w}
    if bias:
        shapes["b"], inputs["b"] = [K], b
    shapes["dy"], inputs["dy"] = dys, dy
    shapes["z"], inputs["z"] = dys, z
    if r is not None:
        shapes["r"], inputs["r"] = dys, r
    shapes["dx"], shapes["dw"] = xs, ws
    if bias:
        shapes["db"] = [K]
    if r is not None:
        shapes["dr"] = dys
    desc = describe(op, N, C, H, W, K, R, S, p, False,
                    "epilogue %s, residual %s: gradients through it given z" %
                    (e["activation"], e["residual"]))
    case = header(cid, op, "ok", desc, p, shapes, dtype)
    epi_finish(case, e, inputs, {k: np.asarray(v_, np.float64) for k, v_ in g.items()}, ga, go,
               False)
    add_case(case)


def gemm_epi(e, m, k, n, ta, tb, bias=True, integer=False, dtype="float32"):
    p = {"m": m, "k": k, "n": n, "transpose_a": ta, "transpose_b": tb}
    cid = "gemm_%s_%dx%dx%d_%s%s%s%s" % (epi_tag(e), m, k, n, "t" if ta else "n",
                                         "t" if tb else "n", "_bias" if bias else "",
                                         "_int" if integer else "") + F16_SUFFIX[dtype]
    sa, sb = gemm_shapes(m, k, n, ta, tb)
    rng = rng_for(cid)
    a, b = draw(rng, sa, integer, dtype), draw(rng, sb, integer, dtype)
    bv = draw(rng, [n], integer, dtype) if bias else None
    v = jref_gemm(a, b, p)
    va = jref_gemm(np.abs(a), np.abs(b), p)
    cross_check(cid, "c", v, naive_gemm(a, b, p), float(va.max()))
    ones = np.full(v.shape, float(k))
    if bias:
        v, va, ones = v + bv[None, :], va + np.abs(bv)[None, :], ones + 1
    c, ca, cnt, r = epi_apply(cid, e, v, va, ones, [m, n], rng, integer, dtype)
    shapes = {"a": sa, "b": sb}
    inputs = {"a": a, "b": b}
    if bias:
        shapes["bias"], inputs["bias"] = [n], bv
    if r is not None:
        shapes["r"], inputs["r"] = [m, n], r
    shapes["c"] = [m, n]
    desc = ("gemm: c [%d,%d] = epilogue(%s @ %s%s), k = %d, epilogue %s, residual %s%s"
            % (m, n, "a^T" if ta else "a", "b^T" if tb else "b", " + bias" if bias else "", k,
               e["activation"], e["residual"], "; integer-valued inputs" if integer else ""))
    case = header(cid, "gemm", "ok", desc, p, shapes, dtype)
    epi_finish(case, e, inputs, {"c": np.asarray(c, np.float64)}, {"c": ca}, {"c": cnt}, integer)
    add_case(case)


def build_epilogue_cases():
    E = epi_obj
    c, v = "conv2d", "convolve2d"
    # every activation, residual positions cycling, over strides, dilation, groups and modes
    conv_epi(c, E("identity", "before"), 2, 4, 7, 9, 6, 3, 3, padding=1)
    conv_epi(c, E("relu", "none"), 2, 4, 7, 9, 6, 3, 3, padding=1)
    conv_epi(c, E("relu", "before"), 1, 8, 13, 17, 16, 3, 3, stride=2, padding=1)
    conv_epi(c, E("relu", "after"), 2, 4, 7, 9, 6, 3, 3, padding=1, mode="reflect")
    conv_epi(c, E("leaky_relu", "none", alpha=0.2), 1, 4, 13, 17, 6, 3, 3, padding=2,
             dilation=2, groups=2)
    conv_epi(c, E("leaky_relu", "after"), 2, 3, 7, 9, 5, 3, 3, padding=1, mode="replicate")
    conv_epi(c, E("clamp", "before", lo=0.0, hi=6.0), 2, 4, 7, 9, 6, 3, 3, padding=1,
             mode="circular", note="relu6")
    conv_epi(c, E("clamp", "none", lo=-0.5, hi=0.25), 1, 3, 13, 17, 4, 5, 5, stride=2, padding=2)
    conv_epi(c, E("sigmoid", "none"), 2, 4, 7, 9, 6, 3, 3, padding="same", mode="reflect")
    conv_epi(c, E("tanh", "after"), 1, 4, 13, 17, 8, 3, 3, stride=(2, 1), padding=1, groups=4)
    conv_epi(c, E("silu", "before"), 2, 16, 7, 9, 8, 1, 1, note="pointwise")
    conv_epi(c, E("gelu", "none"), 1, 16, 13, 17, 16, 3, 3, padding=1)
    conv_epi(c, E("gelu", "before"), 2, 4, 7, 9, 6, 3, 3, padding=1, dilation=(1, 2))
    conv_epi(c, E("gelu", "after"), 1, 8, 13, 17, 8, 3, 3, padding=1, groups=8,
             note="depthwise")
    conv_epi(c, E("gelu_tanh", "before"), 1, 8, 13, 17, 16, 3, 3, padding=1, groups=8,
             mode="replicate", note="depthwise multiplier 2")
    conv_epi(c, E("hardswish", "after"), 2, 4, 7, 9, 6, 3, 3, stride=2, padding=1,
             mode="circular")
    conv_epi(c, E("hardsigmoid", "before"), 1, 3, 7, 9, 4, 7, 7, stride=2, padding=3)
    conv_epi(c, E("silu", "before"), 2, 8, 12, 16, 8, 3, 3, padding=1, groups=8,
             note="depthwise, widths multiples of 4 (the image kernel on CPU adapters)")
    conv_epi(c, E("relu", "after"), 1, 8, 9, 16, 16, 3, 3, padding=1, groups=8, integer=True,
             note="depthwise multiplier 2, widths multiples of 4")
    conv_epi(v, E("silu", "after"), 1, 3, 7, 9, 4, 3, 2, padding=1, mode="reflect")
    conv_epi(v, E("hardswish", "none"), 2, 4, 7, 9, 8, 3, 3, padding=1, groups=4)
    # integer-valued relu: bit-exact on direct and GEMM algorithms
    conv_epi(c, E("relu", "before"), 2, 4, 7, 9, 6, 3, 3, padding=1, mode="reflect",
             integer=True)
    conv_epi(c, E("relu", "after"), 1, 16, 7, 9, 8, 1, 1, integer=True)
    conv_epi(c, E("clamp", "none", lo=0.0, hi=6.0), 1, 8, 13, 17, 8, 3, 3, padding=1,
             groups=8, integer=True, note="relu6, depthwise")
    # transposed
    convt_epi(E("relu", "none"), 2, 4, 5, 6, 6, 3, 3, stride=2, padding=1, output_padding=1)
    convt_epi(E("gelu_tanh", "before"), 1, 4, 5, 6, 4, 3, 3, stride=1, padding=1, groups=2)
    convt_epi(E("leaky_relu", "after"), 1, 6, 4, 5, 3, 4, 4, stride=2, padding=1, dilation=1)
    convt_epi(E("relu", "after"), 1, 4, 5, 6, 4, 3, 3, stride=2, padding=1, integer=True)
    # gradients through the epilogue
    grad_epi(E("relu", "before"), 2, 4, 7, 9, 6, 3, 3, padding=1)
    grad_epi(E("gelu", "none"), 1, 4, 13, 17, 8, 3, 3, stride=2, padding=1, mode="reflect")
    grad_epi(E("sigmoid", "after"), 2, 16, 7, 9, 8, 1, 1)
    grad_epi(E("tanh", "before"), 1, 8, 13, 17, 8, 3, 3, padding=1, groups=8, mode="replicate")
    grad_epi(E("silu", "after"), 1, 4, 7, 9, 6, 3, 3, padding=2, dilation=2, groups=2)
    grad_epi(E("hardswish", "none"), 2, 3, 7, 9, 4, 3, 3, padding=1, mode="circular")
    grad_epi(E("clamp", "after", lo=-0.5, hi=0.5), 1, 4, 7, 9, 4, 3, 3, padding=1)
    grad_epi(E("leaky_relu", "before", alpha=0.1), 1, 4, 7, 9, 4, 3, 3, stride=2, padding=1)
    grad_epi(E("gelu_tanh", "before"), 1, 4, 7, 9, 4, 3, 3, padding=1)
    grad_epi(E("hardsigmoid", "after"), 1, 4, 7, 9, 4, 3, 3, padding=1, bias=False)
    # gemm
    gemm_epi(E("relu", "before"), 33, 20, 17, False, False)
    gemm_epi(E("gelu_tanh", "after"), 64, 48, 40, False, True)
    gemm_epi(E("sigmoid", "none"), 17, 9, 31, True, False, bias=False)
    gemm_epi(E("relu", "after"), 24, 16, 20, False, False, integer=True)
    # float16 tensors (f32 arithmetic, each result rounded once to f16): every entry point.
    H = "float16"
    conv_epi(c, E("relu", "before"), 2, 4, 7, 9, 6, 3, 3, padding=1, mode="reflect", dtype=H)
    conv_epi(c, E("gelu", "after"), 1, 8, 9, 16, 16, 3, 3, padding=1, groups=8, dtype=H,
             note="depthwise multiplier 2")
    conv_epi(c, E("silu", "none"), 1, 16, 8, 8, 16, 1, 1, dtype=H)
    conv_epi(c, E("relu", "after"), 1, 16, 7, 9, 8, 1, 1, integer=True, dtype=H)
    conv_epi(v, E("hardswish", "before"), 1, 3, 7, 9, 4, 3, 2, padding=1, mode="circular",
             dtype=H)
    convt_epi(E("leaky_relu", "after"), 1, 4, 5, 6, 4, 3, 3, stride=2, padding=1,
              output_padding=1, dtype=H)
    grad_epi(E("gelu", "before"), 1, 4, 7, 9, 6, 3, 3, padding=1, dtype=H)
    grad_epi(E("sigmoid", "after"), 2, 16, 7, 9, 8, 1, 1, dtype=H)
    grad_epi(E("relu", "none"), 1, 8, 9, 16, 8, 3, 3, padding=1, groups=8, mode="reflect",
             dtype=H)
    gemm_epi(E("tanh", "before"), 33, 20, 17, False, True, dtype=H)
    gemm_epi(E("relu", "after"), 24, 16, 20, False, False, integer=True, dtype=H)


def build_epilogue_errors():
    p = conv_params(1, 1, 1, 1, "zeros", True, 3, 3)
    shapes = {"x": [1, 2, 5, 5], "w": [3, 2, 3, 3], "b": [3], "r": [1, 3, 5, 5]}
    case = header("conv2d_err_epilogue_clamp_bounds", "conv2d", "error",
                  "conv2d must be refused: clamp epilogue with lo = 1 > hi = 0", p, shapes)
    case["epilogue"] = epi_obj("clamp", "before", lo=1.0, hi=0.0)
    add_case(case)
    shapes = {"x": [1, 2, 5, 5], "w": [3, 2, 3, 3], "b": [3], "r": [1, 3, 5, 4]}
    case = header("conv2d_err_epilogue_residual_shape", "conv2d", "error",
                  "conv2d must be refused: residual [1, 3, 5, 4] but y is [1, 3, 5, 5]", p, shapes)
    case["epilogue"] = epi_obj("relu", "after")
    add_case(case)


# --------------------------------------------------------------------------- layouts
# Channels-last variants of a selection of the cases above: the same logical problem and
# references, every 4-D array stored in the stated memory order (`layout` for x, y, dx, dy,
# r, dr, z; `weight_layout` for w, dw). One case per (op, padding mode, groups, stride,
# dilation, epilogue, dtype) signature, cycling over the three non-default combinations.

LAYOUT_COMBOS = [("nhwc", "kcrs"), ("nhwc", "krsc"), ("nchw", "krsc")]
ACT_ARRAYS = {"x", "y", "dx", "dy", "r", "dr", "z"}
WEIGHT_ARRAYS = {"w", "dw"}


def layout_array_shape(case, name):
    sh = case["shapes"]
    partner = {"dx": "x", "dw": "w"}.get(name, name)
    if partner not in sh and name in ("r", "z", "dr", "y"):
        partner = "dy" if "dy" in sh else "y"
    return sh.get(partner)


def to_channels_last(vals, shape):
    a = np.asarray(vals, dtype=np.float32).reshape(shape)
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).ravel()


def layout_signature(case):
    p = case["params"]
    e = case.get("epilogue")
    return (case["op"], p.get("padding_mode", "zeros"), p.get("groups", 1) > 1,
            p.get("stride", [1, 1]) != [1, 1], p.get("dilation", [1, 1]) != [1, 1],
            e["activation"] if e else None,
            e["residual"] if e else None, case["dtype"])


def layout_group(c):
    """Cases added later cycle on their own, so adding them did not move the layout combos
    of the others: 1 accumulate-float16 cases, 2 float16 cases with an epilogue."""
    if c.get("accumulate") == "float16":
        return 1
    if c["dtype"] == "float16" and c.get("epilogue"):
        return 2
    return 0


def build_layout_cases():
    for group in (0, 1, 2):
        build_layout_cases_of(group)


def build_layout_cases_of(group):
    seen = set()
    picked = []
    for cid in sorted(CASES):
        c = CASES[cid]
        if c["expect"] != "ok" or c["op"] not in ("conv2d", "convolve2d", "conv_transpose2d",
                                                   "conv2d_grad"):
            continue
        if layout_group(c) != group or "layout" in c:
            continue
        sig = layout_signature(c)
        if sig in seen:
            continue
        seen.add(sig)
        picked.append(cid)
    for i, cid in enumerate(picked):
        base = CASES[cid]
        layout, wlayout = LAYOUT_COMBOS[i % len(LAYOUT_COMBOS)]
        case = dict(base)
        tag = "_".join(t for t, d in ((layout, "nchw"), (wlayout, "kcrs")) if t != d)
        case["id"] = cid + "_" + tag
        case["description"] = base["description"] + "; arrays stored %s / weights %s" % (
            layout.upper(), wlayout.upper())
        case["layout"] = layout
        case["weight_layout"] = wlayout
        data = {}
        for name, arr in base["data"].items():
            shape = layout_array_shape(base, name)
            cl = (name in ACT_ARRAYS and layout == "nhwc") or (
                name in WEIGHT_ARRAYS and wlayout == "krsc")
            if cl:
                check(shape is not None and len(shape) == 4,
                      "%s: no 4-D shape for %s" % (cid, name))
                data[name] = F32List(to_channels_last(arr.vals, shape))
            else:
                data[name] = arr
        case["data"] = data
        add_case(case)


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, "tests", "fixtures")
    build_f16_cases()
    build_conv_cases()
    build_conv_errors()
    build_gemm_cases()
    build_convt_cases()
    build_grad_cases()
    build_epilogue_cases()
    build_epilogue_errors()
    build_layout_cases()

    os.makedirs(outdir, exist_ok=True)
    mpath = os.path.join(outdir, MANIFEST)
    if os.path.exists(mpath):
        with open(mpath) as f:
            for line in f:
                name = line.strip()
                if name.endswith(".json") and not name.startswith("#") and "/" not in name:
                    fp = os.path.join(outdir, name)
                    if os.path.exists(fp):
                        os.remove(fp)
    names = []
    total = 0
    for cid in sorted(CASES):
        text = dump(CASES[cid]) + "\n"
        name = cid + ".json"
        with open(os.path.join(outdir, name), "w", newline="\n") as f:
            f.write(text)
        names.append(name)
        total += len(text)
    with open(mpath, "w", newline="\n") as f:
        f.write("# Files written by tools/gen_fixtures.py (deleted and rewritten on each run).\n")
        f.write("".join(n + "\n" for n in names))

    counts = {}
    for c in CASES.values():
        counts[(c["op"], c["expect"])] = counts.get((c["op"], c["expect"]), 0) + 1
    for (op, ex), n in sorted(counts.items()):
        print("%-18s %-5s %4d" % (op, ex, n))
    print("%d cases, %d bytes in %s" % (len(CASES), total, outdir))


if __name__ == "__main__":
    try:
        main()
    except Fail as e:
        print("gen_fixtures: FAILED: %s" % e, file=sys.stderr)
        sys.exit(1)
