"""Whole-photo speed levers side by side (issue 23): CPU-seconds per megapixel to τ, lever by
lever, on the same held-out tiles, with the quality each one reached.

Each lever is added to the one before; the last is the ``cpu`` preset of today:

* ``base``: the ``cpu`` preset before the levers (main at a9777bc): the paper's network
  (widths 16…256, 512 z channels), sigmoid output, the paper's assembly rule (B 64, L 1,
  τ 38.5), 256-px tiles overlapping by 64;
* ``+network``: the narrow network (widths 8…128, 32 z channels);
* ``+looks``: the look-the-same generator (linear output, the photo's low band restored,
  zero-initialised head and the low band as a guide, the fidelity bars required before a
  snapshot counts; bounded assembly): a flat tile ends at its first iteration;
* ``+overlap``: 32-px overlap instead of 64 (fewer tiles per megapixel; the tiles' own work is
  ``+looks``'s: not run again).

Tiles: ``--tiles`` 256-px tiles of the held-out photos (the ten the evaluation's ``cpu`` preset
leaves out), at evenly spaced quantiles of their start PSNR (the PSNR of their own low band, the
estimate's measure of content) over all those photos' tiles: a stratified sample of what whole
photos are made of, flat to textured.  Each tile is anonymized with its camera's fingerprint
from the odd flat fields (1st, 3rd, …); the trace is scored with the even ones (a reference the
anonymizer never saw).

Time: this process's CPU seconds (one torch thread, one tile at a time; steadier than the wall
clock on a shared machine), levers alternating tile by tile so that a change of load falls on
all of them.  Per megapixel: a whole 3008×2000 photo's tile count under each tiling times the
mean seconds per tile, over its 6.0 MP.  Quality: PSNR, the fidelity bars each output breaks,
NCC with the unseen reference before/after.

Results go to ``--out`` as JSON lines, one per (tile, lever); a run resumes where it stopped::

    NUMBA_CACHE_DIR=/tmp/numba .venv/bin/python benchmarks/bench_speed_levers.py \\
        --data ../shared/data/prnu-python-testdata --fingerprints /tmp/fp --out levers.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

TILE = 256
PHOTO_SHAPE = (2000, 3008)  # the Dresden Nikons' photos

#: base: the cpu preset at a9777bc; each lever changes it further (in order).
LEVERS: dict[str, dict[str, Any]] = {
    "base": {"widths": (16, 32, 64, 128, 256), "z_channels": 512, "output": "sigmoid",
             "zero_head": False, "guide": False, "low_pass_sigma": None,
             "require_fidelity": False, "rule": "paper", "overlap": 64},
    "+network": {"widths": (8, 16, 32, 64, 128), "z_channels": 32},
    "+looks": {"output": "linear", "zero_head": True, "guide": True, "low_pass_sigma": 3.0,
               "require_fidelity": True, "rule": "bounded"},
    "+overlap": {"overlap": 32},
}
#: levers that change no tile's own work: their seconds per tile are the previous lever's
NOT_RUN = ("+overlap",)


def lever_changes(name: str) -> dict[str, Any]:
    """The changes to the ``cpu`` preset that lever ``name`` and those before it make."""
    changes: dict[str, Any] = {}
    for lever, more in LEVERS.items():
        changes.update(more)
        if lever == name:
            return changes
    raise KeyError(name)


def held_out_photos(data: Path) -> list[Path]:
    from dippas_core.evaluation import EvalConfig
    from dippas_core.photo_sets import list_images, select_photos

    photos = list_images(data / "nat-jpg")
    test = select_photos(photos, EvalConfig.preset("cpu").photos_per_camera)
    return [p for p in photos if p not in test]


def choose_tiles(data: Path, n: int) -> list[dict[str, Any]]:
    """``n`` tiles of the held-out photos at evenly spaced quantiles of start PSNR."""
    from dippas_core.cost import start_psnr
    from dippas_core.io import read_image
    from dippas_core.tiling import plan_tiles

    pool = []
    for path in held_out_photos(data):
        img = read_image(path)
        for t in plan_tiles(img.shape[:2], TILE, 32).tiles:
            crop = img[t.y : t.y + TILE, t.x : t.x + TILE]
            pool.append({"photo": path.name, "y": t.y, "x": t.x,
                         "start_psnr": round(start_psnr(crop, 3.0), 3)})
    pool.sort(key=lambda t: t["start_psnr"])
    picks = np.linspace(0, len(pool) - 1, n).round().astype(int)
    # the middle quantiles first: a run stopped early has measured a spread of content
    middle_first = sorted(range(n), key=lambda k: abs(k - (n - 1) / 2))
    return [pool[picks[k]] for k in middle_first]


def named_tiles(data: Path, names: list[str]) -> list[dict[str, Any]]:
    """Tiles named ``PHOTO@Y,X`` (a photo of ``data/nat-jpg``, the tile's top-left corner)."""
    from dippas_core.cost import start_psnr
    from dippas_core.io import read_image

    tiles = []
    for name in names:
        photo, _, corner = name.partition("@")
        try:
            y, x = (int(v) for v in corner.split(","))
        except ValueError:
            raise SystemExit(f"--tile {name!r}: expected PHOTO@Y,X, e.g. "
                             f"Nikon_D70s_1_22928.JPG@1344,672") from None
        img = read_image(data / "nat-jpg" / photo)
        if not (0 <= y <= img.shape[0] - TILE and 0 <= x <= img.shape[1] - TILE):
            raise SystemExit(f"--tile {name!r}: a {TILE}-px tile at ({y}, {x}) does not fit in "
                             f"the photo's {img.shape[0]}×{img.shape[1]}")
        crop = img[y : y + TILE, x : x + TILE]
        tiles.append({"photo": photo, "y": y, "x": x,
                      "start_psnr": round(start_psnr(crop, 3.0), 3)})
    return tiles


def tile_key(tile: dict[str, Any]) -> str:
    """A tile's name in the rows: ``PHOTO@Y,X``."""
    return f"{tile['photo']}@{tile['y']},{tile['x']}"


def bench_tiles(args: argparse.Namespace, part: int = 0, parts: int = 1) -> list[dict[str, Any]]:
    """The tiles of :func:`tile_arguments`' options (held-out ones, then named ones), every
    ``parts``-th from ``part``, their cameras' fingerprints made where missing; says how many
    and the machine's load."""
    tiles = choose_tiles(args.data, args.tiles) + named_tiles(args.data, args.tile)
    tiles = tiles[part::parts]
    ensure_fingerprints(args.data, args.fingerprints, tiles)
    print(f"{len(tiles)} tiles; load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
          flush=True)
    return tiles


def append_row(path: Path, row: dict[str, Any]) -> None:
    """One more JSON line in ``path`` (what :func:`read_rows` reads back on a resume)."""
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def tiles_per_megapixel(overlap: int) -> float:
    from dippas_core.tiling import plan_tiles

    plan = plan_tiles(PHOTO_SHAPE, TILE, overlap)
    return len(plan.tiles) / (PHOTO_SHAPE[0] * PHOTO_SHAPE[1] / 1e6)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The JSON lines a run wrote so far (none when the file is not there yet)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def ensure_fingerprints(data: Path, fps: Path, tiles: list[dict[str, Any]]) -> None:
    """The tiles' cameras' fingerprints from the odd and the even flat fields, made where
    ``fps`` lacks them (``scripts/quality_study.py``'s cache, the same split)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from quality_study import fingerprint

    from dippas_core.evaluation import camera_label

    for tile in tiles:
        for role in ("attack", "detector"):
            fingerprint(data, fps, camera_label(tile["photo"]), role)


def tile_inputs(data: Path, fps: Path, tile: dict[str, Any]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The tile's pixels, its camera's fingerprint there from the odd flat fields (the
    anonymizer's) and from the even ones (the unseen reference)."""
    from dippas_core.evaluation import camera_label
    from dippas_core.fingerprint import Fingerprint
    from dippas_core.io import read_image

    cam = camera_label(tile["photo"])
    y, x = tile["y"], tile["x"]
    photo = read_image(data / "nat-jpg" / tile["photo"])[y : y + TILE, x : x + TILE]
    attack = Fingerprint.load(fps / f"{cam}_attack.npz").K[y : y + TILE, x : x + TILE]
    unseen = Fingerprint.load(fps / f"{cam}_detector.npz").K[y : y + TILE, x : x + TILE]
    return photo, attack, unseen


def run_tile(data: Path, fps: Path, tile: dict[str, Any], lever: str, seed: int) -> dict[str, Any]:
    """One tile with one lever: CPU seconds, iterations, PSNR, bars broken, the trace."""
    from dippas_core.attribution import attribute
    from dippas_core.config import AnonymizeConfig
    from dippas_core.fidelity import fidelity
    from dippas_core.pipeline import anonymize

    photo, attack, unseen = tile_inputs(data, fps, tile)
    config = AnonymizeConfig.preset("cpu", seed=seed, tiles_per_step=1, **lever_changes(lever))
    c0 = time.process_time()
    result = anonymize(photo, attack, config)
    cpu_s = time.process_time() - c0
    inv = result.report["inversion"]
    fid = fidelity(photo, result.image, block=int(config.assembly.B))
    before = attribute(np.asarray(photo, np.float32), unseen, pce=False).ncc
    after = attribute(np.asarray(result.image, np.float32), unseen, pce=False).ncc
    return {"tile": tile_key(tile), "start_psnr": tile["start_psnr"], "lever": lever,
            "cpu_s": cpu_s, "iterations": int(inv["n_iterations"]),
            "psnr": float(fid.psnr), "below_tau": bool(result.report.get("below_tau")),
            "bars_broken": [f.split()[0] for f in fid.failures()],
            "ncc_before": float(before), "ncc_after": float(after)}


def summary(rows: list[dict[str, Any]]) -> str:
    """The levers' table: seconds per tile, per megapixel, the ratio to base, and quality."""
    tiles = sorted({r["tile"] for r in rows})
    by = {(r["tile"], r["lever"]): r for r in rows}
    run = [lv for lv in LEVERS if lv not in NOT_RUN]
    complete = [t for t in tiles if all((t, lv) in by for lv in run)]
    if not complete:
        return "no tile has every lever yet"
    lines = [f"{len(complete)} tiles with every lever (of {len(tiles)} started); CPU seconds "
             f"per tile (1 torch thread); per MP: a {PHOTO_SHAPE[1]}×{PHOTO_SHAPE[0]} photo's "
             "tiles × the mean", ""]
    lines.append(f"{'lever':10} {'s/tile':>8} {'iters':>7} {'tiles/MP':>9} {'CPU-s/MP':>9} "
                 f"{'× fewer':>8} {'PSNR':>6} {'bars broken':>12} {'|NCC| after':>12}")
    base_per_mp = None
    last = None
    for lever in LEVERS:
        source = last if lever in NOT_RUN else lever
        rs = [by[(t, source)] for t in complete]
        per_tile = float(np.mean([r["cpu_s"] for r in rs]))
        per_mp = per_tile * tiles_per_megapixel(lever_changes(lever)["overlap"])
        base_per_mp = per_mp if base_per_mp is None else base_per_mp
        broken = sum(bool(r["bars_broken"]) for r in rs)
        lines.append(
            f"{lever:10} {per_tile:8.1f} {np.mean([r['iterations'] for r in rs]):7.0f} "
            f"{tiles_per_megapixel(lever_changes(lever)['overlap']):9.2f} {per_mp:9.0f} "
            f"{base_per_mp / per_mp:8.2f} {np.mean([r['psnr'] for r in rs]):6.2f} "
            f"{broken:>6}/{len(rs):<5} {np.mean([abs(r['ncc_after']) for r in rs]):12.4f}"
        )
        last = source
    lines += ["", "per tile (start PSNR: flat is high): lever, CPU s, iterations, PSNR, bars "
              "broken, NCC before → after"]
    for t in complete:
        r0 = by[(t, "base")]
        lines.append(f"  {t} (start {r0['start_psnr']:.1f} dB, NCC before {r0['ncc_before']:+.4f})")
        for lever in run:
            r = by[(t, lever)]
            lines.append(f"    {lever:9} {r['cpu_s']:7.1f} s {r['iterations']:5d} it "
                         f"{r['psnr']:6.2f} dB {','.join(r['bars_broken']) or '-':24} "
                         f"→ {r['ncc_after']:+.4f}")
    return "\n".join(lines)


def tile_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every held-out-tile benchmark takes: data, fingerprints, output, tiles, seed."""
    parser.add_argument("--data", type=Path, required=True, help="prnu-python-testdata folder")
    parser.add_argument("--fingerprints", type=Path, required=True,
                        help="folder of CAMERA_attack.npz / CAMERA_detector.npz (made if absent)")
    parser.add_argument("--out", type=Path, required=True, help="JSON lines, resumed")
    parser.add_argument("--tiles", type=int, default=6,
                        help="tiles of the held-out photos, at evenly spaced start PSNRs")
    parser.add_argument("--tile", action="append", default=[], metavar="PHOTO@Y,X",
                        help="a named tile besides those (repeatable)")
    parser.add_argument("--seed", type=int, default=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    tile_arguments(parser)
    parser.add_argument("--part", default="0/1",
                        help="I/N: run every N-th tile from the I-th (N processes side by side)")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    rows = read_rows(args.out)
    if not args.report_only:
        done = {(r["tile"], r["lever"]) for r in rows}
        part, parts = (int(v) for v in args.part.split("/"))
        for tile in bench_tiles(args, part, parts):
            for lever in (lv for lv in LEVERS if lv not in NOT_RUN):
                key = tile_key(tile)
                if (key, lever) in done:
                    continue
                row = run_tile(args.data, args.fingerprints, tile, lever, args.seed)
                rows = read_rows(args.out)  # parts write here too
                rows.append(row)
                append_row(args.out, row)
                print(f"{key} {lever}: {row['cpu_s']:.1f} CPU s, {row['iterations']} it, "
                      f"{row['psnr']:.2f} dB, bars broken {row['bars_broken'] or 'none'}",
                      flush=True)
    print(summary(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
