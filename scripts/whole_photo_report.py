"""A whole anonymized photo measured: the trace before and after, fidelity, and four regions by eye.

For docs/whole-photos.md (issue 23): the photo and its anonymized version are scored against one
or more fingerprints of the camera (e.g. from all ten flat fields, and from the five the
anonymizer never saw), aligned NCC and PCE before and after; the fidelity measures with the run's
tiles as seam lines; and four 256×256 regions chosen from the photo's content — the flattest
bright window (sky), the most textured, the strongest edges and the darkest — written as
original | anonymized | difference × 4 at 100 %::

    python scripts/whole_photo_report.py PHOTO ANON.png --fingerprint all=K_all.npz \\
        --fingerprint unseen=K_detector.npz [--run-dir RUN] [--pictures OUT_PREFIX] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def regions(photo: np.ndarray, size: int = 256) -> dict[str, tuple[int, int]]:
    """Top-left corners of four windows of ``photo`` chosen by their content (a window grid of
    half a window's step): ``sky`` (bright, least local variation), ``texture`` (most local
    variation), ``edges`` (strongest mean gradient along a few lines: largest max/mean of the
    gradient) and ``dark`` (lowest mean)."""
    from scipy import ndimage

    gray = photo.astype(np.float32).mean(axis=2)
    detail = np.abs(gray - ndimage.gaussian_filter(gray, 2.0))
    grad = np.hypot(ndimage.sobel(gray, 0), ndimage.sobel(gray, 1))
    h, w = gray.shape
    step = size // 2
    cells = [(y, x) for y in range(0, h - size + 1, step) for x in range(0, w - size + 1, step)]

    def stat(f: Any, im: np.ndarray) -> np.ndarray:
        return np.array([f(im[y : y + size, x : x + size]) for y, x in cells])

    mean = stat(np.mean, gray)
    var = stat(np.mean, detail)
    edge = stat(lambda g: np.percentile(g, 99) / (np.mean(g) + 1e-3), grad)
    bright = mean > np.percentile(mean, 50)
    pick = {
        "sky": int(np.argmin(np.where(bright, var, np.inf))),
        "texture": int(np.argmax(var)),
        "edges": int(np.argmax(np.where(var < np.percentile(var, 75), edge, -np.inf))),
        "dark": int(np.argmin(mean)),
    }
    return {name: cells[i] for name, i in pick.items()}


def _line(fid: Any) -> str:
    from dippas_core.fidelity import describe

    return describe({**fid.to_dict(), "bars_failed": fid.failures()})


def main() -> int:
    from dippas_core.attribution import attribute
    from dippas_core.fidelity import fidelity
    from dippas_core.fingerprint import Fingerprint
    from dippas_core.io import read_image, write_image

    sys.path.insert(0, str(Path(__file__).parent))
    from side_by_side import side_by_side

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("photo")
    p.add_argument("anonymized")
    p.add_argument("--fingerprint", action="append", required=True, help="NAME=K.npz")
    p.add_argument("--run-dir", default=None, help="the photo run (its tiles are seam lines)")
    p.add_argument("--pictures", default=None, help="write PREFIX-{sky,texture,edges,dark}.png")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    photo = read_image(args.photo)
    anon = read_image(args.anonymized)
    if anon.dtype != np.uint8:
        anon = np.clip(np.rint(anon.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)
    out: dict[str, Any] = {"photo": Path(args.photo).name, "scores": {}}
    before_res = after_res = None
    for item in args.fingerprint:
        name, _, path = item.partition("=")
        K = Fingerprint.load(path).K
        b = attribute(photo, K, residual=before_res)
        a = attribute(anon, K, residual=after_res)
        before_res, after_res = b.residual, a.residual
        out["scores"][name] = {"ncc_before": b.ncc, "pce_before": b.pce,
                               "ncc_after": a.ncc, "pce_after": a.pce}
        print(f"{name:>8}: NCC {b.ncc:+.4f} -> {a.ncc:+.4f}   PCE (aligned) {b.pce:.1f} -> "
              f"{a.pce:.1f}")
    tiles = None
    if args.run_dir:
        plan = json.loads((Path(args.run_dir) / "photo-run.json").read_text())["plan"]
        tiles = [tuple(t[k] for k in ("y", "x", "h", "w")) for t in plan["tiles"]]
    fid = fidelity(photo, anon, tiles=tiles)
    out["fidelity"] = fid.to_dict()
    print("fidelity:", _line(fid))
    if args.pictures:
        out["regions"] = {}
        for name, (y, x) in regions(photo).items():
            crop = (slice(y, y + 256), slice(x, x + 256))
            row = side_by_side(photo[crop], anon[crop], zoom=1, gain=4.0)
            target = f"{args.pictures}-{name}.png"
            write_image(target, row)
            local = fidelity(photo[crop], anon[crop])
            out["regions"][name] = {"y": y, "x": x, "size": 256, **local.to_dict()}
            print(f"{name:>8} at y={y} x={x}: {_line(local)} -> {target}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
