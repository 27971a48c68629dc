"""Tiled DIPPAS on a real Dresden region: time, estimate vs actual, PSNR, PCE/NCC, seams, disk, RAM.

The region (default 384×512 at y=1200, x=1800: off-centre, several tiles) of a natural Nikon D70
photo is anonymized with the camera's fingerprint, estimated from the same region of its ten
flat fields (with a margin, so the residual's border effects stay outside).  Printed:

- wall time, the up-front estimate and the ratio actual/estimate;
- PSNR, and PCE and NCC of the whole region before and after (PCE decision level 60);
- edge-jump ratio (:func:`dippas_core.tiling.edge_jump_ratio`): the mean jump of
  (output - original) across tile edges divided by the mean jump across the other lines of the
  network's 32-pixel grid (1 = no seam; the issue's bar is <= 1.25), and the same against every
  other row/column;
- block NCC (32-pixel blocks): mean |NCC| of blocks in tile overlaps vs blocks inside one tile;
- disk peak of the run folder and RAM peak of the process.

Usage::

    python benchmarks/bench_fullres.py [--preset tiny] [--max-iter 300] [--lr 1e-2]
        [--tiles-per-step 1,auto]

With several ``--tiles-per-step`` values the region is anonymized once per value, in one run:
the wall times side by side and their ratio to the first value, and the largest difference of
the images (same seed); the other figures are of the last value's image.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(
    os.environ.get("DIPPAS_TESTDATA", REPO.parent / "shared" / "data" / "prnu-python-testdata")
)


def overlap_block_ncc(image: np.ndarray, K: np.ndarray, plan, B: int = 32) -> tuple[float, float]:
    """Mean |block NCC| of B×B blocks lying in tile overlaps, and of blocks inside one tile."""
    from dippas_core.assembly import measure_block_ncc

    ncc = np.abs(measure_block_ncc(np.asarray(image, np.float32), K, B))
    count = np.zeros(plan.shape, np.int32)
    for t in plan.tiles:
        count[t.slices] += 1
    inside, shared = [], []
    for by in range(ncc.shape[0]):
        for bx in range(ncc.shape[1]):
            c = count[by * B : (by + 1) * B, bx * B : (bx + 1) * B]
            (shared if c.min() > 1 else inside if c.max() == 1 else []).append(ncc[by, bx])
    return float(np.mean(shared)) if shared else float("nan"), (
        float(np.mean(inside)) if inside else float("nan")
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--region", default="1200,1800,384,512", help="Y,X,H,W")
    ap.add_argument("--tile", type=int, default=None)
    ap.add_argument("--overlap", type=int, default=None)
    ap.add_argument("--max-iter", type=int, default=300)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--record-psnr", type=float, default=None)
    ap.add_argument("--photo", default="Nikon_D70_0_19445.JPG")
    ap.add_argument(
        "--tiles-per-step", default="1", help="N or auto, comma-separated to compare (1,auto)"
    )
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from dippas_core.config import AnonymizeConfig
    from dippas_core.correlation import ncc, pce
    from dippas_core.cost import estimate_cost
    from dippas_core.fingerprint import estimate_fingerprint
    from dippas_core.io import read_image
    from dippas_core.pipeline import anonymize
    from dippas_core.residual import residual, rgb2gray
    from dippas_core.tiling import edge_jump_ratio, parse_region, plan_tiles

    y, x, h, w = parse_region(args.region)
    camera = args.photo.rsplit("_", 1)[0]
    m = 64  # margin: the flat fields' residual border effects stay outside the region
    flats = sorted((DATA / "ff-jpg").glob(f"{camera}_*.JPG"))
    crops = [read_image(p)[y - m : y + h + m, x - m : x + w + m].copy() for p in flats]
    K = estimate_fingerprint(crops, camera=camera).K[m:-m, m:-m].copy()
    del crops
    photo = read_image(DATA / "nat-jpg" / args.photo)[y : y + h, x : x + w].copy()

    changes = {"max_iter": args.max_iter, "lr": args.lr, "seed": 0, "torch_threads": 1}
    if args.record_psnr is not None:
        changes["record_psnr"] = args.record_psnr
    if args.tile:
        changes["tile_size"] = args.tile
    if args.overlap:
        changes["overlap"] = args.overlap
    values = [v if v == "auto" else int(v) for v in args.tiles_per_step.split(",")]
    config = AnonymizeConfig.preset(args.preset, **changes, tiles_per_step=values[0])
    plan = plan_tiles(photo.shape, config.tile_size, config.overlap)
    print(f"region {args.photo} y={y} x={x} {h}×{w}, camera {camera} ({len(flats)} flat fields)")
    print(f"tile plan: {plan.describe()}")
    estimate = estimate_cost(photo.shape, config)
    print(f"estimate: {estimate.text}")

    walls: dict = {}
    images: dict = {}
    for value in values:
        cfg = AnonymizeConfig.preset(args.preset, **changes, tiles_per_step=value)
        with tempfile.TemporaryDirectory(prefix="bench-fullres-") as tmp:
            t0 = time.perf_counter()
            result = anonymize(photo, K, cfg, run_dir=Path(tmp) / "run", estimate=estimate)
            walls[value] = time.perf_counter() - t0
        images[value] = result.image
        inv = result.report["inversion"]
        print(
            f"tiles_per_step={value}: wall {walls[value]:.1f} s, N used "
            f"{inv['tiles_per_step']} ({inv['tiles_per_step_choice']})"
        )
    wall = walls[values[-1]]
    if len(values) > 1:
        first = values[0]
        side = ", ".join(f"{v}: {walls[v]:.1f} s" for v in values)
        ratios = ", ".join(f"{v}: {walls[first] / walls[v]:.2f}x" for v in values[1:])
        diffs = ", ".join(
            f"{v}: {np.abs(images[v].astype(np.float64) - images[first]).max():.0f}"
            for v in values[1:]
        )
        print(f"wall times {side}; speed-up over {first}: {ratios} (under load (shared machine))")
        print(f"largest pixel difference to tiles_per_step={first}: {diffs} (uint8 levels)")
    rep = result.report
    out = result.image
    w_after = residual(out.astype(np.float32))
    p_after = pce(w_after, rgb2gray(out.astype(np.float32)) * K, shift_range=0).pce
    w_before = residual(photo.astype(np.float32))
    p_before = pce(w_before, rgb2gray(photo.astype(np.float32)) * K, shift_range=0).pce
    n_before = ncc(w_before, photo.astype(np.float32), K)
    n_after = ncc(w_after, out.astype(np.float32), K)
    jump = edge_jump_ratio(out, photo, plan)
    jump_all = edge_jump_ratio(out, photo, plan, lattice=10**9)  # vs every other line
    shared, inside = overlap_block_ncc(out, K, plan)
    shared0, inside0 = overlap_block_ncc(photo, K, plan)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    print(
        f"wall time: {wall:.0f} s (estimate {estimate.seconds:.0f} s, actual/estimate "
        f"{wall / estimate.seconds:.2f}); timing under load (shared machine)"
    )
    print(f"PSNR: {rep['psnr']:.2f} dB")
    print(f"PCE (region, decision level 60): {p_before:.1f} -> {p_after:.1f}")
    print(f"NCC (region): {n_before:.4f} -> {n_after:.4f}")
    print(
        f"edge-jump ratio: {jump:.3f} vs the network's 32-px grid lines (bar: <= 1.25); "
        f"{jump_all:.3f} vs every other line"
    )
    print(
        f"mean |block NCC| 32 px, overlaps vs inside tiles: after {shared:.4f} vs {inside:.4f}"
        f" (before {shared0:.4f} vs {inside0:.4f})"
    )
    print(f"tiles below tau: {[d['tile'] for d in rep['below_tau']]}")
    print(f"disk peak of the run folder: {rep['disk_peak_bytes'] / 2**20:.1f} MiB")
    print(f"RAM peak (max RSS): {rss:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
