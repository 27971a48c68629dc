"""Fit the estimate's iteration model (``dippas_core.cost.ITERATION_MODEL``) on finished tiles.

Each finished tile gives one point: its *gap* (stopping PSNR minus the PSNR of its own low band,
``cost.start_psnr``) and the iterations it needed.  The model
``its = scale · (gap + offset) ** power`` is fitted by Poisson likelihood (the mean iterations
at a gap: the estimate is their sum), the offset and power on a grid (tiles whose low band lies a
little above the stop still need some iterations); ``low``/``high`` are the 10 % and 90 %
quantiles of actual over predicted.  Sources::

    python scripts/calibrate_estimate.py --crops Q/NAME [Q/NAME2 ...]       # quality_study outputs
                                         --photo-runs RUN=PHOTO [...]        # photo run folders
                                         --reports REPORT=PHOTO [...]        # forensic records
                                         --bench FILE.jsonl:KEY=VALUE [...]  # benchmark tiles
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


def report_points(reports: list[str], stop: float, sigma: float) -> list[tuple[float, int, str]]:
    """(gap, iterations, name) of every finished tile of forensic records (``REPORT=PHOTO``):
    a run without its folder (a region) still lists its tiles with their iterations."""
    from dippas_core.cost import start_psnr
    from dippas_core.io import read_image

    points = []
    for item in reports:
        report_text, _, photo_path = str(item).partition("=")
        report = json.loads(Path(report_text).read_text())
        photo = read_image(photo_path)
        region = report.get("region") or {"y": 0, "x": 0}
        for tile in report["tiles"]:
            if not tile.get("done"):
                continue
            y, x = region["y"] + tile["y"], region["x"] + tile["x"]
            crop = photo[y : y + tile["h"], x : x + tile["w"]]
            name = f"{Path(report_text).resolve().parent.name}#{tile['index']}"
            points.append((stop - start_psnr(crop, sigma), int(tile["iterations"]), name))
    return points


def bench_points(items: list[str], stop: float) -> list[tuple[float, int, str]]:
    """(gap, iterations, name) of benchmark rows (``FILE.jsonl[:KEY=VALUE]``: JSON lines with
    ``tile``, ``start_psnr`` and ``iterations``, e.g. ``bench_fit_bars.py``'s, those whose KEY
    is VALUE)."""
    points = []
    for item in items:
        path, _, where = item.partition(":")
        key, _, value = where.partition("=")
        for line in Path(path).read_text().splitlines():
            row = json.loads(line) if line.strip() else None
            if row is None or (key and str(row.get(key)) != value):
                continue
            name = f"{Path(path).stem}#{row['tile']}"
            points.append((stop - float(row["start_psnr"]), int(row["iterations"]), name))
    return points


def fit(points: list[tuple[float, int, str]]) -> dict[str, float]:
    """:func:`dippas_core.cost.fit_iteration_model` of the points (the mean iterations at each gap,
    by Poisson likelihood: the estimate is their sum)."""
    from dippas_core.cost import fit_iteration_model

    return fit_iteration_model([p[0] for p in points], [p[1] for p in points])


def leave_one_out(points: list[tuple[float, int, str]], max_iter: int) -> list[str]:
    """Each source (photo run, region, crop folder: the name before ``#``) predicted by the
    model fitted without it: its total iterations against the prediction."""
    sources = sorted({name.split("#")[0] for _, _, name in points})
    lines = []
    for src in sources:
        own = [p for p in points if p[2].split("#")[0] == src]
        rest = [p for p in points if p[2].split("#")[0] != src]
        model = fit(rest)
        actual = sum(i for _, i, _ in own)
        predicted = sum(predict(model, g, max_iter) for g, _, _ in own)
        lines.append(f"  {src}: {len(own)} tiles, {actual} iterations, predicted {predicted} "
                     f"without it ({100 * (predicted - actual) / max(actual, 1):+.0f} %; "
                     f"actual/predicted {actual / max(predicted, 1):.2f})")
    return lines


def predict(model: dict[str, float], gap: float, max_iter: int) -> int:
    from dippas_core.cost import iterations_for_gap

    return iterations_for_gap(gap, max_iter, model)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--crops", type=Path, nargs="*", default=[])
    p.add_argument("--photo-runs", nargs="*", default=[], metavar="RUN=PHOTO")
    p.add_argument("--reports", nargs="*", default=[], metavar="REPORT=PHOTO",
                   help="forensic records (forensic.json) of photo or region runs")
    p.add_argument("--bench", nargs="*", default=[], metavar="FILE.jsonl[:KEY=VALUE]",
                   help="benchmark rows with start_psnr and iterations (e.g. mode=gated)")
    p.add_argument("--check", nargs="*", default=[], metavar="RUN=PHOTO|Q/NAME|REPORT.json=PHOTO",
                   help="photo runs, forensic records or quality_study folders to score the "
                        "model on")
    p.add_argument("--current", action="store_true", help="score the model in the code")
    p.add_argument("--leave-one-out", action="store_true",
                   help="predict each source's total from a fit without it")
    p.add_argument("--stop", type=float, default=39.0)
    p.add_argument("--sigma", type=float, default=3.0)
    p.add_argument("--max-iter", type=int, default=1500)
    args = p.parse_args(argv)
    from dippas_core.cost import ITERATION_MODEL

    points = (crop_points(args.crops, args.stop, args.sigma)
              + run_points(args.photo_runs, args.stop, args.sigma)
              + report_points(args.reports, args.stop, args.sigma)
              + bench_points(args.bench, args.stop))
    model = dict(ITERATION_MODEL) if args.current or not points else fit(points)
    if points:
        n_more = sum(i > 1 for _, i, _ in points)
        print(f"fitted on {len(points)} tiles ({n_more} needing more than one iteration):")
    print(json.dumps({k: round(v, 4) for k, v in model.items()}))
    if args.leave_one_out and points:
        print("each source left out of the fit:")
        print("\n".join(leave_one_out(points, args.max_iter)))
    records = [c for c in args.check if "=" in c and c.partition("=")[0].endswith(".json")]
    checks = [c for c in args.check if "=" in c and c not in records]
    crops = [Path(c) for c in args.check if "=" not in c]
    scored = (run_points(checks, args.stop, args.sigma) + crop_points(crops, args.stop, args.sigma)
              + report_points(records, args.stop, args.sigma))
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
