"""Fit the estimate's iteration model (``dippas_core.cost.ITERATION_MODEL``) on finished tiles.

Each finished tile gives one point: its *gap* (stopping PSNR minus the PSNR of its own low band,
``cost.start_psnr``) and the iterations it needed.  The model
``its = scale · (gap + offset) ** power`` is fitted by least squares in log space, the offset
on a grid (tiles whose low band lies a little above the stop still need some iterations);
``low``/``high`` are the 10 % and 90 % quantiles of actual over predicted.  Sources::

    python scripts/calibrate_estimate.py --crops Q/NAME [Q/NAME2 ...]       # quality_study outputs
                                         --photo-runs RUN=PHOTO [...]        # photo run folders
                                         [--check RUN=PHOTO | Q/NAME ...]    # tiles only scored

``--check`` scores the fitted model (or, with ``--current``, the one in the code) on other tiles
without fitting on them: per tile, and the total predicted against the total actual.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def crop_points(folders: list[Path], stop: float, sigma: float) -> list[tuple[float, int, str]]:
    """(gap, iterations, name) of every finished crop of quality_study output folders."""
    from dippas_core.cost import start_psnr
    from dippas_core.io import read_image

    points = []
    for folder in folders:
        for f in sorted(folder.glob("*/scores.json")):
            s = json.loads(f.read_text())
            photo = read_image(f.parent / "original.png")
            gap = stop - start_psnr(photo, sigma)
            points.append((gap, int(s["iterations"]), f"{folder.name}/{f.parent.name}"))
    return points


def run_points(runs: list[str], stop: float, sigma: float) -> list[tuple[float, int, str]]:
    """(gap, iterations, name) of every finished tile of photo run folders (``RUN=PHOTO``)."""
    from dippas_core.cost import start_psnr
    from dippas_core.io import read_image
    from dippas_core.tiling import plan_tiles

    points = []
    for item in runs:
        run_text, _, photo_path = str(item).partition("=")
        run = Path(run_text)
        meta = json.loads((run / "photo-run.json").read_text())
        plan = plan_tiles(tuple(meta["plan"]["shape"]), meta["plan"]["tile"],
                          meta["plan"]["overlap"])
        photo = read_image(photo_path)
        for tile in plan.tiles:
            rec = run / "done" / f"{tile.index:04d}.npz"
            if not rec.is_file():
                continue
            with np.load(rec, allow_pickle=False) as z:
                stats = json.loads(str(z["stats"]))
            gap = stop - start_psnr(photo[tile.slices], sigma)
            name = f"{run.resolve().parent.name}#{tile.index}"
            points.append((gap, int(stats["iterations"]), name))
    return points


def fit(points: list[tuple[float, int, str]]) -> dict[str, float]:
    """``scale``, ``power`` and ``offset`` (least squares in log space, the offset by a grid of
    quarter dB); ``low``/``high``: the 10 % and 90 % quantiles of actual over predicted."""
    gaps = np.array([p[0] for p in points])
    its = np.array([p[1] for p in points], float)
    best = None
    for offset in np.arange(0.0, 8.01, 0.25):
        x = gaps + offset
        use = (x > 0.25) & (its > 1)  # a tile done at its first output carries no slope
        if use.sum() < 3:
            continue
        power, log_scale = np.polyfit(np.log(x[use]), np.log(its[use]), 1)
        model = {"scale": float(np.exp(log_scale)), "power": float(power),
                 "offset": float(offset)}
        pred = np.array([predict(model, g, 10**9) for g in gaps], float)
        err = float(np.mean(np.log(its / pred) ** 2))
        if best is None or err < best[0]:
            best = (err, model, pred)
    if best is None:
        raise SystemExit("too few tiles with more than one iteration to fit")
    _, model, pred = best
    ratio = its / pred
    model["low"], model["high"] = (float(q) for q in np.quantile(ratio, [0.1, 0.9]))
    return model


def predict(model: dict[str, float], gap: float, max_iter: int) -> int:
    from dippas_core.cost import iterations_for_gap

    return iterations_for_gap(gap, max_iter, model)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--crops", type=Path, nargs="*", default=[])
    p.add_argument("--photo-runs", nargs="*", default=[], metavar="RUN=PHOTO")
    p.add_argument("--check", nargs="*", default=[], metavar="RUN=PHOTO|Q/NAME",
                   help="photo runs or quality_study folders to score the model on")
    p.add_argument("--current", action="store_true", help="score the model in the code")
    p.add_argument("--stop", type=float, default=39.0)
    p.add_argument("--sigma", type=float, default=3.0)
    p.add_argument("--max-iter", type=int, default=1500)
    args = p.parse_args(argv)
    from dippas_core.cost import ITERATION_MODEL

    points = crop_points(args.crops, args.stop, args.sigma) + run_points(
        args.photo_runs, args.stop, args.sigma)
    model = dict(ITERATION_MODEL) if args.current or not points else fit(points)
    if points:
        n_more = sum(i > 1 for _, i, _ in points)
        print(f"fitted on {len(points)} tiles ({n_more} needing more than one iteration):")
    print(json.dumps({k: round(v, 4) for k, v in model.items()}))
    checks = [c for c in args.check if "=" in c]
    crops = [Path(c) for c in args.check if "=" not in c]
    scored = run_points(checks, args.stop, args.sigma) + crop_points(crops, args.stop, args.sigma)
    if scored:
        actual = sum(i for _, i, _ in scored)
        predicted = sum(predict(model, g, args.max_iter) for g, _, _ in scored)
        print(f"checked on {len(scored)} tiles: {actual} iterations, predicted {predicted} "
              f"({100 * (predicted - actual) / max(actual, 1):+.0f} %)")
        for g, i, name in scored:
            print(f"  {name}: gap {g:5.1f} dB, {i} iterations, predicted "
                  f"{predict(model, g, args.max_iter)}")
    return 0 if points or scored else (print("no tiles given", file=sys.stderr) or 2)


if __name__ == "__main__":
    sys.exit(main())
