#!/usr/bin/env python3
"""Writes assets/sample.png: a procedural, photo-like 512x384 RGB test scene.

The scene has what image filters react to: a smooth sky gradient with soft clouds, a sun
with a glow, two mountain ridges, a textured meadow, a lake with rippled reflections, a
brick house with a roof, windows and a door, a tree, and a fence. Everything is computed
from a fixed seed with the standard library only (zlib for the PNG stream), so a rerun
gives a byte-identical file.

Usage (from the repository root):

    python3 tools/make_sample_image.py                    # writes assets/sample.png
    python3 tools/make_sample_image.py out.png 256 192    # other path and size
"""

import math
import os
import struct
import sys
import zlib

SEED = 20240611


def hash2(ix, iy, seed):
    """Deterministic pseudo-random value in [0, 1) for an integer lattice point."""
    h = (ix * 374761393 + iy * 668265263 + seed * 2246822519) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * 1274126177) & 0xFFFFFFFF
    h ^= h >> 16
    return h / 4294967296.0


class ValueNoise:
    """Smooth value noise (smoothstep-interpolated lattice), summed over octaves (fBm).
    Coordinates may go beyond width x height: the lattice wraps around."""

    def __init__(self, width, height, cell, octaves, seed):
        self.layers = []
        for o in range(octaves):
            c = max(1.0, cell / (2**o))
            gw = int(width / c) + 2
            gh = int(height / c) + 2
            grid = [[hash2(x, y, seed + 101 * o) for x in range(gw)] for y in range(gh)]
            self.layers.append((c, grid, 0.5**o))
        self.norm = sum(a for _, _, a in self.layers)

    def at(self, x, y):
        total = 0.0
        for c, grid, amp in self.layers:
            fx, fy = x / c, y / c
            ix, iy = int(fx), int(fy)
            tx, ty = fx - ix, fy - iy
            tx = tx * tx * (3 - 2 * tx)
            ty = ty * ty * (3 - 2 * ty)
            gh, gw = len(grid), len(grid[0])  # the lattice wraps (tiles)
            r0, r1 = grid[iy % gh], grid[(iy + 1) % gh]
            x0, x1 = ix % gw, (ix + 1) % gw
            a = r0[x0] + (r0[x1] - r0[x0]) * tx
            b = r1[x0] + (r1[x1] - r1[x0]) * tx
            total += amp * (a + (b - a) * ty)
        return total / self.norm  # in [0, 1)


def ridge(width, cell, octaves, seed):
    """A 1-D fBm profile in [0, 1) per column (for mountain silhouettes)."""
    layers = []
    for o in range(octaves):
        c = max(1.0, cell / (2**o))
        pts = [hash2(i, 7, seed + 31 * o) for i in range(int(width / c) + 2)]
        layers.append((c, pts, 0.55**o))
    norm = sum(a for _, _, a in layers)
    out = []
    for x in range(width):
        v = 0.0
        for c, pts, amp in layers:
            f = x / c
            i = int(f)
            t = f - i
            t = t * t * (3 - 2 * t)
            v += amp * (pts[i] + (pts[i + 1] - pts[i]) * t)
        out.append(v / norm)
    return out


def mix(a, b, t):
    return tuple(a[i] + (b[i] - a[i]) * t for i in range(3))


def smoothstep(e0, e1, x):
    t = min(1.0, max(0.0, (x - e0) / (e1 - e0)))
    return t * t * (3 - 2 * t)


def render(width, height):
    sx, sy = width / 512.0, height / 384.0  # scene is laid out on a 512x384 canvas
    horizon = 250 * sy
    clouds = ValueNoise(width, height, 96 * sx, 4, SEED + 1)
    grass = ValueNoise(width, height, 24 * sx, 3, SEED + 2)
    bark = ValueNoise(width, height, 6 * sx, 2, SEED + 3)
    leaves = ValueNoise(width, height, 10 * sx, 3, SEED + 4)
    far = ridge(width, 90 * sx, 5, SEED + 5)
    near = ridge(width, 60 * sx, 5, SEED + 6)
    sun = (402 * sx, 78 * sy, 26 * min(sx, sy))
    lake = (120 * sx, 318 * sy, 105 * sx, 26 * sy)  # centre x, centre y, semi-axes
    house = (300 * sx, 212 * sy, 430 * sx, 300 * sy)  # x0, y0, x1, y1 of the walls
    roof_top = 160 * sy
    tree = (95 * sx, 235 * sy, 38 * min(sx, sy))  # crown centre and radius

    rows = []
    for y in range(height):
        row = bytearray()
        for x in range(width):
            # Sky: vertical gradient, sun glow, soft clouds.
            t = y / horizon
            c = mix((38, 84, 168), (196, 218, 236), min(1.0, t) ** 0.8)
            d = math.hypot(x - sun[0], y - sun[1])
            c = mix(c, (255, 236, 190), 0.55 * math.exp(-((d / (3.5 * sun[2])) ** 2)))
            if d < sun[2]:
                c = mix(c, (255, 246, 214), smoothstep(sun[2], sun[2] - 2, d))
            cl = smoothstep(0.52, 0.72, clouds.at(x, y * 2.2)) * (1 - t) ** 0.5
            c = mix(c, (246, 246, 250), 0.85 * cl)

            # Mountains: a hazy far ridge and a darker near ridge.
            far_y = horizon - (40 + 95 * far[x]) * sy
            near_y = horizon - (10 + 55 * near[x]) * sy
            if y >= far_y:
                shade = 0.85 + 0.15 * grass.at(x * 0.5, y)
                c = mix((112, 128, 156), (150, 162, 182), (y - far_y) / (horizon - far_y + 1))
                c = tuple(v * shade for v in c)
                snow = smoothstep(0.5, 0.75, far[x]) * (1 - (y - far_y) / (16 * sy))
                c = mix(c, (240, 244, 250), 0.85 * max(0.0, snow))  # snow caps
            if y >= near_y:
                c = mix((62, 88, 64), (86, 110, 70), (y - near_y) / (horizon - near_y + 1))
                c = tuple(v * (0.8 + 0.3 * grass.at(x, y)) for v in c)

            # Meadow: textured grass, darker towards the viewer, fine noise.
            if y >= horizon:
                g = grass.at(x, y * 3)
                fine = hash2(x, y, SEED + 9) - 0.5
                depth = (y - horizon) / (height - horizon)
                c = mix((118, 160, 72), (58, 98, 40), depth)
                c = tuple(v * (0.78 + 0.4 * g) + 26 * fine for v in c)

            # Lake: an ellipse mirroring the sky, with horizontal ripples.
            ex = (x - lake[0]) / lake[2]
            ey = (y - lake[1]) / lake[3]
            if ex * ex + ey * ey < 1:
                ripple = 0.5 + 0.5 * math.sin(y * 1.7 + 6 * grass.at(x, y * 4))
                mirror = mix((60, 104, 170), (170, 200, 226), 1 - (ey + 1) / 2)
                c = mix(mirror, (220, 232, 244), 0.25 * ripple)
                edge = ex * ex + ey * ey
                c = mix(c, (70, 90, 60), smoothstep(0.85, 1.0, edge) * 0.6)

            # House: brick wall, roof, windows, door.
            x0, y0, x1, y1 = house
            if x0 <= x < x1 and y0 <= y < y1:
                row_i = int((y - y0) / (7 * sy))
                off = (row_i % 2) * 9 * sx
                mortar = ((y - y0) % (7 * sy)) < 1.2 or ((x - x0 + off) % (18 * sx)) < 1.2
                brick = 0.85 + 0.3 * hash2(int((x - x0 + off) / (18 * sx)), row_i, SEED + 11)
                c = (214, 206, 190) if mortar else (172 * brick, 74 * brick, 54 * brick)
                for wx in (318 * sx, 392 * sx):  # windows with a cross
                    if wx <= x < wx + 24 * sx and 232 * sy <= y < 258 * sy:
                        frame = abs(x - (wx + 12 * sx)) < 1.5 or abs(y - 245 * sy) < 1.5
                        c = (245, 245, 240) if frame else mix((255, 226, 120), (230, 180, 80), (y - 232 * sy) / (26 * sy))
                if 356 * sx <= x < 378 * sx and 262 * sy <= y < y1:
                    c = (92, 58, 36) if abs(x - 373 * sx) > 1.5 else (200, 170, 60)
            cx = (x0 + x1) / 2
            half = (x1 - x0) / 2 + 12 * sx
            if roof_top <= y < y0:
                span = half * (y - roof_top) / (y0 - roof_top)
                if abs(x - cx) <= span:
                    tile = 0.8 + 0.25 * (((y - roof_top) / (5 * sy)) % 1.0 < 0.75)
                    c = (96 * tile, 44 * tile, 40 * tile)

            # Tree: trunk with bark noise, round crown with leaf texture.
            tx, ty, tr = tree
            if abs(x - tx) < 7 * sx and ty <= y < 300 * sy:
                b = bark.at(x, y * 0.3)
                c = (86 * (0.7 + 0.5 * b), 60 * (0.7 + 0.5 * b), 38 * (0.7 + 0.5 * b))
            dc = math.hypot(x - tx, (y - ty) * 1.15)
            lv = leaves.at(x, y)
            if dc < tr * (0.85 + 0.3 * lv):
                light = 0.7 + 0.6 * lv - 0.25 * (y - ty) / tr
                c = (40 * light, 110 * light, 42 * light)

            # Fence: posts and two rails in front of everything.
            fy0 = 300 * sy
            if fy0 <= y < 336 * sy and x >= 230 * sx:
                post = ((x - 230 * sx) % (26 * sx)) < 5 * sx
                rail = abs(y - 310 * sy) < 2 * sy or abs(y - 326 * sy) < 2 * sy
                if post or rail:
                    c = (226, 222, 210) if post else (200, 196, 184)

            row.extend(max(0, min(255, int(v + 0.5))) for v in c)
        rows.append(bytes(row))
    return rows


def paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def filter_rows(rows, bpp):
    """PNG filtering with the usual heuristic: per row, the filter with the smallest sum
    of absolute (signed) residuals."""
    out = bytearray()
    prev = bytes(len(rows[0]))
    for row in rows:
        n = len(row)
        left = bytes(bpp) + row[: n - bpp]
        upleft = bytes(bpp) + prev[: n - bpp]
        cands = [
            bytes(row),
            bytes((row[i] - left[i]) & 255 for i in range(n)),
            bytes((row[i] - prev[i]) & 255 for i in range(n)),
            bytes((row[i] - ((left[i] + prev[i]) >> 1)) & 255 for i in range(n)),
            bytes((row[i] - paeth(left[i], prev[i], upleft[i])) & 255 for i in range(n)),
        ]
        cost = [sum(v if v < 128 else 256 - v for v in cand) for cand in cands]
        best = cost.index(min(cost))
        out.append(best)
        out.extend(cands[best])
        prev = row
    return bytes(out)


def write_png(path, width, height, rows):
    def chunk(tag, data):
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    idat = zlib.compress(filter_rows(rows, 3), 9)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "assets", "sample.png")
    width = int(sys.argv[2]) if len(sys.argv) > 2 else 512
    height = int(sys.argv[3]) if len(sys.argv) > 3 else 384
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_png(path, width, height, render(width, height))
    print(f"wrote {path} ({width}x{height}, {os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
