#!/usr/bin/env python3
"""Exports the real data the examples ship with, once, into assets/.

* assets/digits.bin: scikit-learn's bundled handwritten digits (``load_digits``: 1,797
  images of 8x8 pixels, values 0..16, 10 classes), a copy of the test set of the UCI
  "Optical Recognition of Handwritten Digits" data set (E. Alpaydin, C. Kaynak, 1998;
  CC BY 4.0). Kept in scikit-learn's order. Format (little-endian):

      offset 0   8 bytes  magic b"WGDIGIT1"
      offset 8   u32      count (1797)
      offset 12  u8       height (8)
      offset 13  u8       width (8)
      offset 14  u8       max pixel value (16)
      offset 15  u8       classes (10)
      offset 16  count records of 1 + height*width bytes: the label, then the pixels
                 row-major

  116,821 bytes. ``examples/digits.rs`` (``load_digits``) and
  ``tools/digits_reference.py`` read it.

* assets/coffee.jpg: scikit-image's bundled ``coffee`` photograph (CC0, by Rachel
  Michetti, courtesy of Pikolo Espresso Bar), 600x400 downscaled to 512x341 (Lanczos),
  JPEG quality 90.

Nothing is downloaded: both packages ship these files. Run from the repository root:

    pip install scikit-learn scikit-image pillow
    python3 tools/export_assets.py

Tested with Python 3.11, scikit-learn 1.9.1, scikit-image 0.26.0, Pillow 13.0.0. A rerun
writes byte-identical files with the same package versions.
"""

import hashlib
import struct
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
import skimage.data

MAGIC = b"WGDIGIT1"


def export_digits(path: Path) -> None:
    d = load_digits()
    images = d.images
    labels = d.target
    assert images.shape == (1797, 8, 8), images.shape
    assert np.all(images == np.round(images)) and images.min() >= 0 and images.max() == 16
    assert sorted(set(labels.tolist())) == list(range(10))
    pixels = images.astype(np.uint8).reshape(len(images), 64)
    out = bytearray(MAGIC)
    out += struct.pack("<IBBBB", len(images), 8, 8, 16, 10)
    for label, row in zip(labels, pixels):
        out.append(int(label))
        out += row.tobytes()
    path.write_bytes(bytes(out))
    print(f"{path}: {len(out)} bytes, sha256 {hashlib.sha256(out).hexdigest()}")


def export_photo(path: Path) -> None:
    img = Image.fromarray(skimage.data.coffee())
    w, h = img.size
    assert (w, h) == (600, 400), (w, h)
    small = img.resize((512, round(h * 512 / w)), Image.LANCZOS)
    small.save(path, quality=90, optimize=True)
    print(f"{path}: {small.size[0]}x{small.size[1]}, {path.stat().st_size} bytes")


def main() -> int:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("assets")
    if not root.is_dir():
        print(f"{root} is not a directory (run from the repository root)", file=sys.stderr)
        return 1
    export_digits(root / "digits.bin")
    export_photo(root / "coffee.jpg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
