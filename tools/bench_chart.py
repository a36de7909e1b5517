#!/usr/bin/env python3
"""Draws the side-by-side benchmark as an SVG bar chart (no dependencies).

Usage: python3 tools/bench_chart.py RESULTS.json assets/bench.svg
RESULTS.json is what `tools/side_by_side.py --json RESULTS.json` writes. One group of bars
per (shape, op), one bar per implementation, GFLOP/s on a log scale (the implementations span
three orders of magnitude), the date, machine and adapter in the caption.
"""
import json
import math
import sys

PEERS = [
    ("wgconv", "wgconv (auto)", "#1f6feb"),
    ("burn", "Burn 0.22 (wgpu)", "#d29922"),
    ("torch", "PyTorch CPU", "#8250df"),
    ("naive", "naive loop", "#8c959f"),
]


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: bench_chart.py RESULTS.json OUT.svg")
    data = json.load(open(sys.argv[1]))
    med = data["medians"]
    peers = [p for p in PEERS if med.get(p[0])]
    keys = [f"{s}/{op}" for s in "abcdefg" for op in ("fwd", "bwd")] + ["gemm1024/gemm"]
    keys = [k for k in keys if any(k in med[p[0]] for p in peers)]
    values = [v for p in peers for k, v in med[p[0]].items() if k in keys and v > 0]
    lo = 10 ** math.floor(math.log10(min(values)))
    hi = 10 ** math.ceil(math.log10(max(values)))
    w, h = 980, 420
    left, right, top, bottom = 60, 20, 50, 110
    pw, ph = w - left - right, h - top - bottom
    group = pw / len(keys)
    bar = group * 0.8 / len(peers)

    def y(v):
        return top + ph * (1 - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)))

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'font-family="sans-serif" font-size="11">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{left}" y="20" font-size="14" font-weight="bold">GFLOP/s, higher is better '
        f'(log scale)</text>',
    ]
    decade = lo
    while decade <= hi * 1.0001:
        yy = y(decade)
        out.append(f'<line x1="{left}" x2="{w - right}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#d0d7de"/>')
        out.append(f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end">{decade:g}</text>')
        decade *= 10
    for i, k in enumerate(keys):
        x0 = left + i * group + group * 0.1
        for j, (p, _, color) in enumerate(peers):
            v = med[p].get(k)
            if not v:
                continue
            yy = y(max(v, lo))
            out.append(
                f'<rect x="{x0 + j * bar:.1f}" y="{yy:.1f}" width="{bar * 0.9:.1f}" '
                f'height="{top + ph - yy:.1f}" fill="{color}"><title>{p} {k}: {v:.2f} GFLOP/s</title></rect>'
            )
        label = k.replace("gemm1024/gemm", "GEMM").replace("/", " ")
        out.append(
            f'<text x="{left + i * group + group / 2:.1f}" y="{top + ph + 14}" text-anchor="middle">{label}</text>'
        )
    lx = left
    for _, name, color in peers:
        out.append(f'<rect x="{lx}" y="{h - 62}" width="12" height="12" fill="{color}"/>')
        out.append(f'<text x="{lx + 16}" y="{h - 52}">{name}</text>')
        lx += 24 + 7 * len(name)
    out.append(
        f'<text x="{left}" y="{h - 28}" fill="#57606a">{data["date"]}, {data["cores"]} cores '
        f'({data["cpu"]}); adapter: {data["adapter"]}</text>'
    )
    out.append(
        f'<text x="{left}" y="{h - 12}" fill="#57606a">{data["rounds"]} interleaved rounds x '
        f'{data["reps"]} reps, medians; shapes a-g as in the README; bwd = dx + dw</text>'
    )
    out.append("</svg>")
    open(sys.argv[2], "w").write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
