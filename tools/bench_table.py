#!/usr/bin/env python3
"""Turns `cargo bench --bench conv` output (lines `bench op=... shape=... algo=... ms=... gflops=...`)
into the README's markdown table: one row per (shape, op), one column per algorithm, cells
`GFLOP/s (ms)`.

Usage: cargo bench --bench conv -- --quick | python3 tools/bench_table.py
"""
import re
import sys

OPS = {"conv2d_fwd": "fwd", "conv2d_dx": "dx", "conv2d_dw": "dw", "conv2d_bwd": "bwd",
       "conv_transpose2d": "conv_transpose2d"}


def main():
    cells, algos, rows, gemm = {}, [], [], []
    for line in sys.stdin:
        m = re.match(r"bench op=(\S+) shape=(\S+) algo=(\S+) ms=(\S+) gflops=(\S+)", line)
        if not m:
            continue
        op, shape, algo, ms, gf = m.groups()
        if op == "gemm":
            gemm.append(f"{algo} {float(gf):.1f} GFLOP/s")
            continue
        key = (shape, OPS.get(op, op))
        if key not in rows:
            rows.append(key)
        if algo not in algos:
            algos.append(algo)
        cells[(key, algo)] = f"{float(gf):.2f} ({float(ms):.1f})"
    algos = [a for a in algos if a != "auto"] + (["auto"] if "auto" in algos else [])
    print("| shape | op | " + " | ".join(algos) + " |")
    print("|---|---|" + "---|" * len(algos))
    for key in rows:
        print(f"| {key[0]} | {key[1]} | " + " | ".join(cells.get((key, a), "-") for a in algos) + " |")
    if gemm:
        print()
        print("GEMM 1024³: " + ", ".join(gemm) + ".")


if __name__ == "__main__":
    main()
