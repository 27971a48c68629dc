"""Original | anonymized | difference ×4 (mid-grey = no change), zoomed: how an output is looked at.

One row per anonymized image given (e.g. before and after a change), each labelled::

    python scripts/side_by_side.py ORIGINAL OUT.png ANON[=LABEL] [ANON2[=LABEL2] ...] \\
        [--zoom 4] [--gain 4] [--region Y,X,H,W]
"""

from __future__ import annotations

import argparse

import numpy as np


def side_by_side(original: np.ndarray, anonymized: np.ndarray, zoom: int = 4,
                 gain: float = 4.0, gap: int = 4) -> np.ndarray:
    """One uint8 row: the two images and ``128 + gain·(anonymized − original)``, zoomed."""
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


def _label(row: np.ndarray, text: str) -> np.ndarray:
    """``row`` with ``text`` written above it (Pillow's default font)."""
    from PIL import Image, ImageDraw, ImageFont

    band = Image.new("RGB", (row.shape[1], 20), "white")
    ImageDraw.Draw(band).text((3, 2), text, fill="black", font=ImageFont.load_default(size=14))
    return np.concatenate([np.asarray(band), row], axis=0)


def main() -> None:
    from dippas_core.io import read_image, write_image

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("original")
    p.add_argument("out")
    p.add_argument("anonymized", nargs="+", help="PATH or PATH=LABEL, one row each")
    p.add_argument("--zoom", type=int, default=4)
    p.add_argument("--gain", type=float, default=4.0)
    p.add_argument("--region", default=None, help="Y,X,H,W of the images to show")
    args = p.parse_args()
    a = read_image(args.original)
    y, x, h, w = (int(v) for v in args.region.split(",")) if args.region else (0, 0, *a.shape[:2])

    def crop(im: np.ndarray) -> np.ndarray:
        return im[y : y + h, x : x + w]

    rows = []
    for item in args.anonymized:
        path, _, label = item.partition("=")
        row = side_by_side(crop(a), crop(read_image(path)), args.zoom, args.gain)
        rows.append(_label(row, label or path))
    write_image(args.out, np.concatenate(rows, axis=0))


if __name__ == "__main__":
    main()
