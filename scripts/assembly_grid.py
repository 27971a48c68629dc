"""How the assembly's B, L and tau move PSNR, AUC and the NCC cut (the paper's §4.5 grid).

Runs DIPPAS aware once per crop of an evaluation preset (same crops, seeds and DIP settings as
``dippas evaluate --preset P``), keeps each run folder, then re-assembles every run on a grid of
(B, L, tau) -- cheap, from the per-tile NCC sums -- and scores each result against every camera
as the evaluation does.  Usage::

    NUMBA_CACHE_DIR=/tmp/numba_cache .venv/bin/python scripts/assembly_grid.py \\
        --data ../shared/data/prnu-python-testdata --out grid-out [--preset cpu]

Writes ``grid-out/assembly_grid.csv``, prints the table and the setting a fixed rule picks
(lowest mean |NCC| with the true camera among those with mean PSNR >= 38 dB).  With
``--held-out`` it runs on the photos the preset leaves out: a validation set, so that the preset's
B, L, tau are not chosen on the crops they are then scored on.  Runs already in ``grid-out/runs``
are reused, so a second call only re-assembles.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import sys
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    from dippas_core.assembly import assemble
    from dippas_core.edges import edge_mask
    from dippas_core.errors import DippasError
    from dippas_core.evaluation import EvalConfig, _auc, load_dataset, score_output
    from dippas_core.photo_sets import select_photos
    from dippas_core.pipeline import anonymize
    from dippas_core.run import RunDirectory

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--preset", default="cpu")
    p.add_argument("--blocks", default="32,64,128")
    p.add_argument("--tops", default="1,5,10,25,50")
    p.add_argument("--taus", default="38,39")
    p.add_argument(
        "--crops", default=None,
        help="indices of the crops to run, in this order (default: all); a second process "
        "given another order shares the work (a crop whose run folder exists is skipped)",
    )
    p.add_argument(
        "--gamma-mode", default=None,
        help="DIPConfig.gamma_mode of the DIP runs (default: the preset's); 'adam' is the old way",
    )
    p.add_argument(
        "--lr", type=float, default=None,
        help="the DIP learning rate (default: the preset's), to re-choose it on held-out photos",
    )
    p.add_argument(
        "--max-iter", type=int, default=None,
        help="the DIP's iteration budget (default: the preset's, chosen on 128×128 crops)",
    )
    p.add_argument(
        "--crop-size", type=int, default=None,
        help="square crop side (default: the preset's); larger crops carry a trace above the "
        "NCC's noise floor (about 1/side)",
    )
    p.add_argument(
        "--held-out", action="store_true",
        help="use the photos the preset leaves out (a validation set for choosing B, L, tau)",
    )
    args = p.parse_args(argv)

    config = EvalConfig.preset(args.preset)
    if args.crop_size is not None:
        config = config.replace(crop_sizes=(args.crop_size,))
    every_photo = config.replace(photos_per_camera=None, max_photos=None)
    ds = load_dataset(args.data, every_photo if args.held_out else config,
                      cache_dir=args.out / "fingerprints", log=print)
    crops = ds.crops
    if args.held_out:
        # the preset's own choice among the same files: what remains is the validation set
        used = {p.name for p in select_photos([Path(n) for n in ds.files["photos"]],
                                          config.photos_per_camera, config.max_photos)}
        crops = [c for c in ds.crops if c.photo not in used]
        print(f"held-out photos: {len(crops)} crops from photos the preset does not use")
    runs: list[tuple[object, Path]] = []
    order = range(len(crops)) if args.crops is None else [int(v) for v in args.crops.split(",")]
    for i in order:
        crop = crops[i]
        run_dir = args.out / "runs" / crop.crop_id.replace("@", "_").replace("#", "_")
        K = ds.fingerprint_crop(crop.camera, crop)
        if not (run_dir / RunDirectory.CONFIG).is_file():
            seed = config.seed + i
            changes = {"gamma_mode": args.gamma_mode, "lr": args.lr, "max_iter": args.max_iter}
            conf = config.anonymize_config(seed).replace(
                **{k: v for k, v in changes.items() if v is not None}
            )
            t = time.perf_counter()
            try:
                anonymize(crop.image, K, conf, run_dir=run_dir)
            except Exception as exc:  # noqa: BLE001 - a crop without snapshots is reported
                print(f"{crop.crop_id}: {exc}", file=sys.stderr)
                continue
            print(f"{crop.crop_id}: DIP run {time.perf_counter() - t:.0f} s", flush=True)
        try:  # a kept run that never reached tau has nothing to assemble
            assemble(RunDirectory.open(run_dir), config.dippas.assembly)
        except DippasError as exc:
            print(f"{crop.crop_id}: skipped: {exc}", file=sys.stderr)
            continue
        runs.append((crop, run_dir))

    def scores(image, crop):
        fps = {cam: ds.fingerprint_crop(cam, crop) for cam in ds.cameras}
        edges = edge_mask(crop.image)
        fid, per_cam = score_output(image, crop.image, fps, edges, pce=False)
        return fid.psnr, per_cam

    def summary(results):
        ncc = np.array([s[cam]["ncc"] for crop, _q, s in results for cam in ds.cameras])
        labels = np.array([cam == crop.camera for crop, _q, _s in results for cam in ds.cameras])
        true_abs = np.mean([abs(s[crop.camera]["ncc"]) for crop, _q, s in results])
        psnr = np.mean([q for _c, q, _s in results])
        return psnr, _auc(ncc, labels), true_abs

    untouched = [(crop, *scores(crop.image, crop)) for crop, _ in runs]
    _, auc0, abs0 = summary(untouched)
    print(f"untouched: {len(untouched)} crops, AUC {auc0:.3f}, mean |NCC| true {abs0:.4f}")
    rows, cells = [], {}
    grid = itertools.product(
        [int(b) for b in args.blocks.split(",")],
        [int(v) for v in args.tops.split(",")],
        [float(t) for t in args.taus.split(",")],
    )
    for B, L, tau in grid:
        results = []
        for crop, run_dir in runs:
            run = RunDirectory.open(run_dir)
            image = assemble(run, B=B, L=L, tau=tau).image
            results.append((crop, *scores(image, crop)))
        cells[(B, L, tau)] = results
        psnr, auc, true_abs = summary(results)
        C = psnr * (1 - 2 * abs(auc - 0.5))
        rows.append({"B": B, "L": L, "tau": tau, "crops": len(results), "mean_psnr": psnr,
                     "auc_ncc": auc, "mean_abs_ncc_true": true_abs, "ncc_cut": abs0 / true_abs,
                     "C": C})
        print(f"B={B:4d} L={L:3d} tau={tau:4.1f}  PSNR {psnr:6.2f}  AUC {auc:.3f}  "
              f"|NCC| {true_abs:.4f}  cut {abs0 / true_abs:5.2f}x  C {C:6.2f}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "assembly_grid.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"untouched AUC {auc0:.3f}; table in {args.out / 'assembly_grid.csv'}")
    # the selection rule fixed before looking at the test crops: hide the true camera best
    # (lowest mean |NCC| with it) among the settings that keep the paper's 38 dB
    ok = [r for r in rows if r["mean_psnr"] >= 38.0]
    if ok:
        best = min(ok, key=lambda r: (r["mean_abs_ncc_true"], -r["mean_psnr"]))
        print(f"chosen (lowest mean |NCC| true at mean PSNR >= 38 dB): B={best['B']} "
              f"L={best['L']} tau={best['tau']:g}  cut {best['ncc_cut']:.2f}x  "
              f"AUC {best['auc_ncc']:.3f}  PSNR {best['mean_psnr']:.2f}")
    if not ok:
        return 0
    dirs = {crop.crop_id: run_dir for crop, run_dir in runs}
    photo_ncc = {crop.crop_id: s[crop.camera]["ncc"] for crop, _q, s in untouched}
    preset_cell = (config.dippas.assembly.B, config.dippas.assembly.L, config.dippas.assembly_tau)
    for name, key in (("preset", preset_cell), ("chosen", (best["B"], best["L"], best["tau"]))):
        if key in cells:
            _per_crop(cells[key], dirs, ds.cameras, args.out / f"crops_{name}.csv", name,
                      photo_ncc)
    return 0


def _per_crop(results, run_dirs, cameras, path: Path, name: str, photo_ncc: dict) -> None:
    """Per crop of one (B, L, tau) cell: PSNR, NCC with the true camera against the wrong ones,
    and how gamma behaved in the run's recording phase (issue 17's bars)."""
    from dippas_core.run import RunDirectory, gamma_summary

    rows = []
    for crop, quality, per_cam in results:
        wrong = [per_cam[c]["ncc"] for c in cameras if c != crop.camera]
        g = gamma_summary(RunDirectory.open(run_dirs[crop.crop_id]).history())
        rows.append({
            "crop": crop.crop_id, "camera": crop.camera, "psnr": quality,
            "ncc_true_photo": photo_ncc[crop.crop_id], "ncc_true": per_cam[crop.camera]["ncc"],
            "ncc_wrong_max": max(wrong),
            "ncc_wrong_mean_abs": float(np.mean(np.abs(wrong))),
            "recording_iterations": g["recording_iterations"],
            "gamma_at_bound_share": g.get("at_bound_share"),
            "gamma_dead_share": g.get("dead_share"), "gamma_median": g.get("median"),
            "gamma_star_median": g.get("median_star"),
        })
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    chance = np.mean([r["ncc_wrong_mean_abs"] for r in rows])
    below_max = np.mean([r["ncc_true"] < r["ncc_wrong_max"] for r in rows])
    below_chance = np.mean([abs(r["ncc_true"]) < chance for r in rows])
    rec = np.array([r["recording_iterations"] for r in rows], float)
    bound = np.array([r["gamma_at_bound_share"] or 0.0 for r in rows]) * rec
    dead = np.array([r["gamma_dead_share"] or 0.0 for r in rows]) * rec
    worst = max(r["gamma_at_bound_share"] or 0.0 for r in rows)
    print(f"{name} cell, per crop ({path}): true-camera NCC below the best wrong camera's on "
          f"{100 * below_max:.0f} % of {len(rows)} crops, |NCC| below the wrong cameras' mean "
          f"|NCC| ({chance:.4f}) on {100 * below_chance:.0f} %; gamma at 0 in "
          f"{100 * bound.sum() / max(rec.sum(), 1):.1f} % of {int(rec.sum())} recording-phase "
          f"iterations (worst crop {100 * worst:.0f} %), at 0 although gamma* > 0 in "
          f"{100 * dead.sum() / max(rec.sum(), 1):.1f} %")


if __name__ == "__main__":
    sys.exit(main())
