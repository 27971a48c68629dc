"""Is a crop's NCC with its camera a trace, or chance? Each crop scored against its camera's
fingerprint at its own position and at many other positions (issue 22's trace bar).

For a crop of a quality_study output folder (``Q/NAME``: ``*/scores.json`` with the crop's
photo and position, ``original.png``, ``anonymized.png``), the NCC with the unseen fingerprint
(the even flat fields: ``CAMERA_detector.npz``) at the crop's own position is the trace.  The
same fingerprint cropped at ``--positions`` other places of the frame, shifted by multiples of
8 px (the JPEG grid's and the colour filter's phase kept, so that whatever pattern the camera's
processing leaves at every position stays in the comparison), carries the same statistics but
none of *this* crop's pixels' PRNU: their NCCs are the null distribution of this very crop's
texture.  The trace is ``z = (NCC − null mean) / null std``; ``|z| < 2``: at chance.

Run::

    NUMBA_CACHE_DIR=/tmp/numba .venv/bin/python scripts/trace_null.py Q/NAME \\
        --fingerprints /tmp/fp --data ../shared/data/prnu-python-testdata [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def null_positions(shape: tuple[int, int], y: int, x: int, size: int, n: int,
                   rng: np.random.Generator) -> list[tuple[int, int]]:
    """``n`` crop corners of the frame, at multiples of 8 px from ``(y, x)``, not overlapping
    the crop itself."""
    h, w = shape
    out: set[tuple[int, int]] = set()
    ys = np.arange(y % 8, h - size + 1, 8)
    xs = np.arange(x % 8, w - size + 1, 8)
    if ys.size * xs.size <= 4 * n:
        raise SystemExit("the frame is too small for that many positions")
    while len(out) < n:
        yy, xx = int(rng.choice(ys)), int(rng.choice(xs))
        if abs(yy - y) >= size or abs(xx - x) >= size:
            out.add((yy, xx))
    return sorted(out)


def ncc_here_and_elsewhere(img: np.ndarray, K: np.ndarray, y: int, x: int, size: int,
                           positions: list[tuple[int, int]]) -> tuple[float, np.ndarray]:
    """``img``'s NCC with ``K`` cropped at its own corner ``(y, x)`` and at each of
    ``positions`` (its residual computed once)."""
    from dippas_core.correlation import ncc
    from dippas_core.residual import residual

    img = np.asarray(img, np.float32)
    W = residual(img)
    own = ncc(W, img, K[y : y + size, x : x + size])
    return own, np.array([ncc(W, img, K[a : a + size, b : b + size]) for a, b in positions])


def score_crop(folder: Path, fps: Path, n: int, seed: int) -> dict:
    """The crop's NCC at its position, the null's mean and std, and z, before and after."""
    from dippas_core.evaluation import camera_label
    from dippas_core.fingerprint import Fingerprint
    from dippas_core.io import read_image

    scores = json.loads((folder / "scores.json").read_text())
    _, photo_name, y, x, size = scores["crop"]
    K = Fingerprint.load(fps / f"{camera_label(photo_name)}_detector.npz").K
    positions = null_positions(K.shape, y, x, size, n, np.random.default_rng(seed))
    out = {"crop": folder.name, "size": size, "wrong_mean_abs": scores["after"]["wrong_mean_abs"],
           "pce_before": scores["before"]["pce"], "pce_after": scores["after"]["pce"]}
    for when, name in (("before", "original.png"), ("after", "anonymized.png")):
        own, null = ncc_here_and_elsewhere(read_image(folder / name), K, y, x, size, positions)
        out[when] = {"ncc": own, "null_mean": float(null.mean()), "null_std": float(null.std()),
                     "z": float((own - null.mean()) / null.std()),
                     "share_null_above": float(np.mean(np.abs(null) >= abs(own)))}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", type=Path, nargs="+", help="quality_study output folders Q/NAME")
    p.add_argument("--fingerprints", type=Path, required=True)
    p.add_argument("--positions", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", nargs="*", default=None, help="crop names to score")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    rows = []
    for folder in args.folders:
        for crop in sorted(f.parent for f in folder.glob("*/scores.json")):
            if args.only and crop.name not in args.only:
                continue
            rows.append({"setting": folder.name, **score_crop(crop, args.fingerprints,
                                                               args.positions, args.seed)})
    print(f"{'setting':9} {'crop':24} {'NCC before':>10} {'z':>6} {'NCC after':>10} {'z':>6} "
          f"{'null std':>8} {'|null|≥':>7} {'wrong':>7} {'bar met':>7}")
    for r in rows:
        b, a = r["before"], r["after"]
        bar = abs(a["ncc"]) <= r["wrong_mean_abs"]
        print(f"{r['setting']:9} {r['crop']:24} {b['ncc']:+10.4f} {b['z']:6.1f} "
              f"{a['ncc']:+10.4f} {a['z']:6.1f} {a['null_std']:8.4f} "
              f"{a['share_null_above']:7.2f} {r['wrong_mean_abs']:7.4f} "
              f"{'yes' if bar else 'no':>7}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
