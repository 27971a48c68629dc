"""Original | anonymized | difference ×4 (mid-gray = 0), zoomed, as one PNG: how an output is
looked at (docs/fidelity pictures).

    python scripts/side_by_side.py ORIGINAL ANONYMIZED OUT.png [--zoom 4] [--region Y,X,H,W]
"""

from __future__ import annotations

import argparse

import numpy as np


def side_by_side(original: np.ndarray, anonymized: np.ndarray, zoom: int = 4,
                 gain: float = 4.0, gap: int = 4) -> np.ndarray:
    """One uint8 picture: the two images and ``128 + gain·(anonymized − original)``, zoomed."""
    a = np.asarray(original, np.float32)
    b = np.asarray(anonymized, np.float32)
    diff = np.clip(128.0 + gain * (b - a), 0, 255)
    panels = [np.clip(a, 0, 255), np.clip(b, 0, 255), diff]
    h, w = a.shape[:2]
    out = np.full((h * zoom, 3 * w * zoom + 2 * gap, 3), 255, np.uint8)
    for i, p in enumerate(panels):
        big = np.repeat(np.repeat(np.rint(p).astype(np.uint8), zoom, 0), zoom, 1)
        x0 = i * (w * zoom + gap)
        out[:, x0 : x0 + w * zoom] = big
    return out


def main() -> None:
    from dippas_core.io import read_image, write_image

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("original")
    p.add_argument("anonymized")
    p.add_argument("out")
    p.add_argument("--zoom", type=int, default=4)
    p.add_argument("--gain", type=float, default=4.0)
    p.add_argument("--region", default=None, help="Y,X,H,W of both images to show")
    args = p.parse_args()
    a, b = read_image(args.original), read_image(args.anonymized)
    if args.region:
        y, x, h, w = (int(v) for v in args.region.split(","))
        a, b = a[y : y + h, x : x + w], b[y : y + h, x : x + w]
    write_image(args.out, side_by_side(a, b, args.zoom, args.gain))


if __name__ == "__main__":
    main()
