#!/usr/bin/env python3
"""Accuracy of the GPU gelu (erf) epilogue, simulated in f32 with numpy.

`ep_phi` in src/gpu/wgsl.rs computes Phi(v) through erfc(a) = t P(t) exp(-a^2),
t = 1 / (1 + p a) (Abramowitz & Stegun 7.1.26). This script evaluates the same
operations in f32 over [-12, 12] and reports the largest error of gelu(v) = v Phi(v)
against math.erfc in f64, absolute and as a fraction of the conformance tolerance
1e-6 + 1e-5 |gelu| (the tightest tolerance the fixtures use). Also the derivative
Phi(v) + v exp(-v^2/2) / sqrt(2 pi). Exits non-zero if either exceeds half the tolerance.
"""
import math
import sys

import numpy as np

f = np.float32
x = np.linspace(-12, 12, 2_000_001).astype(f)
xs = [float(v) for v in x]
ref = np.array([0.5 * v * math.erfc(-v / math.sqrt(2)) for v in xs])
dref = np.array([0.5 * math.erfc(-v / math.sqrt(2)) + v * math.exp(-0.5 * v * v) / math.sqrt(2 * math.pi) for v in xs])


def phi(v):
    a = (np.abs(v) * f(0.7071067811865476)).astype(f)
    t = (f(1) / (f(0.3275911) * a + f(1))).astype(f)
    s = f(1.061405429)
    for c in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        s = (s * t + f(c)).astype(f)
    e = np.exp(-a * a).astype(f)
    h = (f(0.5) * t * s * e).astype(f)
    return np.where(v >= 0, f(1) - h, h).astype(f), e


p, e = phi(x)
worst = 0.0
for name, got, want in (
    ("gelu", (x * p).astype(f), ref),
    ("gelu'", (p + x * e * f(0.3989422804014327)).astype(f), dref),
):
    err = np.abs(got.astype(np.float64) - want)
    frac = err / (1e-6 + 1e-5 * np.abs(want))
    i = int(np.argmax(frac))
    print(f"{name}: max abs error {err.max():.3g}, max error / tolerance {frac.max():.3f} at {x[i]}")
    worst = max(worst, frac.max())
sys.exit(0 if worst <= 0.5 else 1)
