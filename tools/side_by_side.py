#!/usr/bin/env python3
"""Side-by-side: wgconv's bench and the peer harnesses (Burn's wgpu backend, PyTorch on the
CPU when `import torch` works, the naive single-thread loop) run interleaved on the same
shapes; prints one markdown table with GFLOP/s per shape and op and the ratios, and with
`--json FILE` writes the medians for `tools/bench_chart.py`.

Usage (from the repo root, after `cargo bench --bench conv --no-run` and building the peers as
described in ../shared/peers/README.md):
    python3 tools/side_by_side.py [--rounds 3] [--reps 5] [--peers-dir ../shared/peers]

Each round runs, in turn: wgconv (`algo=auto` lines, i.e. what a caller gets by default), Burn,
naive. Figures are medians over rounds of each harness's per-round median. Ops compared:
fwd (conv2d forward), bwd (dx + dw, FLOPs = 2 x forward; Burn's is derived from autodiff as
median(fwd+bwd) - median(fwd)), gemm (1024^3).
"""
import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LVP = "/usr/share/vulkan/icd.d/lvp_icd.x86_64.json"
SHAPES = ["a", "b", "c", "d", "e", "f", "g"]


def env():
    e = dict(os.environ)
    e.setdefault("WGPU_BACKEND", "vulkan")
    e.setdefault("XDG_RUNTIME_DIR", "/tmp")
    if os.path.exists(LVP):
        e.setdefault("VK_ICD_FILENAMES", LVP)
    return e


def bench_binary():
    out = subprocess.run(
        ["cargo", "bench", "--bench", "conv", "--no-run", "--message-format=json"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout
    for line in out.splitlines():
        try:
            m = json.loads(line)
        except ValueError:
            continue
        if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "conv" and m.get("executable"):
            return m["executable"]
    sys.exit("cannot find the conv bench binary")


def run_ours(exe, reps):
    args = [exe, "--ops", "fwd,bwd,gemm", "--algos", "auto"] + (["--quick"] if reps <= 5 else [])
    out = subprocess.run(args, capture_output=True, text=True, env=env(), check=True).stdout
    res, adapter = {}, ""
    for line in out.splitlines():
        if line.startswith("adapter:"):
            adapter = line.split(":", 1)[1].strip()
        m = re.match(r"bench op=(\S+) shape=(\S+) algo=auto ms=(\S+) gflops=(\S+)", line)
        if m:
            op = {"conv2d_fwd": "fwd", "conv2d_bwd": "bwd", "gemm": "gemm"}.get(m.group(1))
            if op:
                res[(m.group(2), op)] = float(m.group(4))
    return res, adapter


def cpu_model():
    """The host CPU as lscpu names it, with its family and model (hosts change)."""
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return "unknown CPU"
    field = lambda k: next((l.split(":", 1)[1].strip() for l in text.splitlines() if l.startswith(k)), "?")
    flags = field("flags").split()
    avx = "AVX-512" if any(f.startswith("avx512") for f in flags) else ("AVX2" if "avx2" in flags else "no AVX2")
    return f"{field('model name')} family {field('cpu family')} model {field('model')}, {avx}"


def run_peer(cmd, peer, reps):
    out = subprocess.run(cmd + ["--reps", str(reps)], capture_output=True, text=True, env=env()).stdout
    raw = {}
    for line in out.splitlines():
        if not line.startswith("RESULT,"):
            continue
        f = line.split(",")
        shape, op, ms, gf = f[2], f[3], float(f[4]), float(f[5])
        raw[(shape, op)] = (ms, gf)
    res = {}
    for (shape, op), (ms, gf) in raw.items():
        if shape == "gemm1024":
            res[("gemm1024", "gemm")] = gf
        elif op == "fwd":
            res[(shape, "fwd")] = gf
        elif op == "bwd":
            res[(shape, "bwd")] = gf
    # Burn has no data-gradient op: derive bwd from autodiff fwd+bwd minus fwd.
    for shape in SHAPES:
        if (shape, "bwd") not in res and (shape, "fwd+bwd") in raw and (shape, "fwd") in raw:
            ms = raw[(shape, "fwd+bwd")][0] - raw[(shape, "fwd")][0]
            gf_fwd = raw[(shape, "fwd")][1] * raw[(shape, "fwd")][0]  # = fwd MFLOP
            if ms > 0:
                res[(shape, "bwd")] = 2 * gf_fwd / ms
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--peers-dir", default=os.path.join(ROOT, "..", "shared", "peers"))
    ap.add_argument("--json", help="write the medians and the machine here")
    a = ap.parse_args()
    burn = ["/tmp/peers-target/release/burn-conv", "--warmup", "3"]
    naive = ["/tmp/peers-target/naive/release/naive-conv"]
    torch = None
    if subprocess.run([sys.executable, "-c", "import torch"], capture_output=True).returncode == 0:
        torch = [sys.executable, os.path.join(a.peers_dir, "run_torch.py"), "--threads", str(os.cpu_count())]
    exe = bench_binary()
    samples = {"wgconv": {}, "burn": {}, "torch": {}, "naive": {}}
    adapter = ""
    for r in range(a.rounds):
        ours, adapter = run_ours(exe, a.reps)
        peers = [("wgconv", ours), ("burn", run_peer(burn, "burn", a.reps))]
        if torch:
            peers.append(("torch", run_peer(torch, "torch", a.reps)))
        peers.append(("naive", run_peer(naive, "naive", a.reps)))
        for peer, res in peers:
            for k, v in res.items():
                samples[peer].setdefault(k, []).append(v)
        print(f"round {r + 1}/{a.rounds} done", file=sys.stderr)
    med = {p: {k: statistics.median(v) for k, v in s.items()} for p, s in samples.items()}
    cpu = cpu_model()
    print(f"Side-by-side, {datetime.date.today()}, {a.rounds} interleaved rounds x {a.reps} reps (medians).")
    print(f"Machine: {os.cpu_count()} cores, {cpu}; adapter (wgconv and Burn): {adapter}\n")
    print("| shape | op | wgconv GFLOP/s | Burn GFLOP/s | wgconv / Burn | PyTorch CPU GFLOP/s | wgconv / PyTorch | naive GFLOP/s | wgconv / naive |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = [(s, op) for s in SHAPES for op in ("fwd", "bwd")] + [("gemm1024", "gemm")]
    fmt = lambda v: f"{v:.2f}" if v is not None else "-"
    ratio = lambda x, y: f"{x / y:.1f}x" if x is not None and y else "-"
    for shape, op in rows:
        w, b, t, n = (med[p].get((shape, op)) for p in ("wgconv", "burn", "torch", "naive"))
        print(f"| {shape} | {op} | {fmt(w)} | {fmt(b)} | {ratio(w, b)} | {fmt(t)} | {ratio(w, t)} | {fmt(n)} | {ratio(w, n)} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({
                "date": str(datetime.date.today()),
                "cpu": cpu,
                "cores": os.cpu_count(),
                "adapter": adapter,
                "rounds": a.rounds,
                "reps": a.reps,
                "medians": {p: {f"{k[0]}/{k[1]}": v for k, v in m.items()} for p, m in med.items()},
            }, f, indent=1)


if __name__ == "__main__":
    main()
