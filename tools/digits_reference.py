#!/usr/bin/env python3
"""Records a PyTorch training run of the `digits` example's network, for the replay test.

PyTorch (CPU, float32) trains the network of ``examples/digits.rs``

    Conv2d(1, 16, 3, padding=1) -> ReLU -> Conv2d(16, 32, 3, stride=2, padding=1) -> ReLU
      -> flatten (512) -> Linear(512, 10),  mean softmax cross-entropy

for 200 steps of ``torch.optim.SGD(lr=0.2, weight_decay=1e-3)`` (plain SGD: no momentum,
constant learning rate) on batches of 32 training images of ``assets/digits.bin`` (split:
image i is a test image when i % 5 == 0; pixels value / 16). The initial weights are
PyTorch's default initialisation under ``torch.manual_seed(SEED)``; the batch order is the
example's (``Rng`` / ``epoch_batches`` in ``examples/digits.rs``, ported bit-exactly below:
SplitMix64, Fisher-Yates, last partial batch dropped, a new shuffle per epoch).

Written to ``tests/data/digits_pytorch_sgd.json``: the versions, the settings, the initial
parameters, the 200 batches (indices into the data file), the loss of every step (the
float32 loss PyTorch computed before the step's update) and the final parameters, all
parameters flat in PyTorch's layouts and ``state_dict`` names. ``tests/digits_example.rs``
replays the run with wgconv (no PyTorch needed) and compares every step's loss and the final
parameters.

    pip install torch numpy      # the CPU is enough; tested with torch 2.15.0, numpy 2.4.6
    python3 tools/digits_reference.py            # from the repository root, a few seconds

Deterministic: one thread, fixed seeds; a rerun with the same versions gives the same file.
"""

import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

SEED = 2026  # torch.manual_seed for the initial weights
BATCH_SEED = 2  # Rng seed of the batch order (the example uses seed + 1 = 2 by default)
STEPS = 200
BATCH = 32
LR = 0.2
WEIGHT_DECAY = 1e-3
CHANNELS = (16, 32)

MASK = (1 << 64) - 1


class Rng:
    """SplitMix64 as ``Rng`` in examples/digits.rs."""

    def __init__(self, seed: int):
        self.state = (seed ^ 0x9E3779B97F4A7C15) & MASK

    def next_u64(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def shuffle(self, v: list) -> None:
        for i in range(len(v) - 1, 0, -1):
            j = self.next_u64() % (i + 1)
            v[i], v[j] = v[j], v[i]


def epoch_batches(train: list, batch: int, rng: Rng) -> list:
    order = list(train)
    rng.shuffle(order)
    return [order[k * batch:(k + 1) * batch] for k in range(len(order) // batch)]


def load_digits(path: Path):
    raw = path.read_bytes()
    assert raw[:8] == b"WGDIGIT1", "not a digits file"
    n = int.from_bytes(raw[8:12], "little")
    h, w, vmax, classes = raw[12], raw[13], raw[14], raw[15]
    assert (h, w, classes) == (8, 8, 10)
    rec = np.frombuffer(raw[16:], np.uint8).reshape(n, 1 + h * w)
    labels = rec[:, 0].astype(np.int64)
    pixels = (rec[:, 1:].astype(np.float32) / np.float32(vmax)).reshape(n, 1, h, w)
    return pixels, labels


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        c1, c2 = CHANNELS
        self.conv1 = nn.Conv2d(1, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, stride=2, padding=1)
        self.fc = nn.Linear(c2 * 4 * 4, 10)

    def forward(self, x):
        h = F.relu(self.conv1(x))
        h = F.relu(self.conv2(h))
        return self.fc(h.flatten(1))


def flat(model: nn.Module) -> dict:
    return {k: v.detach().numpy().astype(np.float32).ravel().copy()
            for k, v in model.state_dict().items()}


def dumps(obj) -> str:
    """JSON with float32 arrays written as their shortest round-trip decimals (str of a
    numpy float32, ~10 characters instead of float64's ~19): the file stays small and
    parsing each number back to float32 gives the same bits."""
    arrays = []

    def walk(o):
        if isinstance(o, np.ndarray):
            arrays.append("[" + ",".join(str(np.float32(v)) for v in o) + "]")
            return f"@@{len(arrays) - 1}@@"
        if isinstance(o, dict):
            return {k: walk(v) for k, v in o.items()}
        return o

    text = json.dumps(walk(obj), separators=(",", ":"))
    for i, a in enumerate(arrays):
        text = text.replace(f'"@@{i}@@"', a, 1)
    return text


def main() -> int:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".")
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    pixels, labels = load_digits(root / "assets" / "digits.bin")
    n = len(labels)
    train = [i for i in range(n) if i % 5 != 0]

    rng = Rng(BATCH_SEED)
    batches = []
    while len(batches) < STEPS:
        batches.extend(epoch_batches(train, BATCH, rng))
    batches = batches[:STEPS]

    torch.manual_seed(SEED)
    model = Net()
    init = flat(model)
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    x_all = torch.from_numpy(pixels)
    y_all = torch.from_numpy(labels)
    losses = []
    for idx in batches:
        loss = F.cross_entropy(model(x_all[idx]), y_all[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach().numpy().astype(np.float32))
    final = flat(model)

    with torch.no_grad():
        test = [i for i in range(n) if i % 5 == 0]
        acc = (model(x_all[test]).argmax(1) == y_all[test]).float().mean().item()

    out = {
        "about": "PyTorch reference run of examples/digits.rs's network, written by "
                 "tools/digits_reference.py; replayed by tests/digits_example.rs",
        "framework": f"torch {torch.__version__} (CPU, float32, 1 thread)",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "data": "assets/digits.bin (scikit-learn load_digits), pixels / 16",
        "split": "test = i % 5 == 0",
        "network": "conv1 3x3 1->16 pad 1, relu, conv2 3x3 16->32 stride 2 pad 1, relu, "
                   "flatten 512, fc 512->10; mean softmax cross-entropy",
        "optimizer": "torch.optim.SGD(lr, weight_decay), no momentum, constant lr",
        "torch_seed": SEED,
        "batch_seed": BATCH_SEED,
        "batch": BATCH,
        "lr": LR,
        "weight_decay": WEIGHT_DECAY,
        "steps": STEPS,
        "test_accuracy_after": acc,
        "shapes": shapes,
        "init": init,
        "batches": batches,
        "loss": np.array(losses, dtype=np.float32),
        "final": final,
    }
    path = root / "tests" / "data" / "digits_pytorch_sgd.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(out) + "\n")
    print(f"{path}: {path.stat().st_size} bytes; loss {float(losses[0]):.4f} -> "
          f"{float(losses[-1]):.4f}, "
          f"test accuracy after {STEPS} steps {100 * acc:.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
