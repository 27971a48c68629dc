"""How one tile's fit looks, iteration by iteration: PSNR, checkerboard, colour shift, max |Δ|
and whether the output meets the fit's bars, for a setting of the ``cpu`` preset.

One 256-px tile of a Dresden photo (``--photo NAME --y Y --x X``), its camera's fingerprint
from the odd flat fields (``--fingerprints``: ``CAMERA_attack.npz``, made by
``scripts/quality_study.py``), every output kept and no stop before ``--iterations``.  Each
``--every``-th output is measured as it would be written (rounded to 8 bits) with today's
measures (``dippas_core.fidelity``); ``--keep IT ...`` also saves those outputs (``.npz`` beside
the JSON) for pictures (``scripts/side_by_side.py``).  Used for the stripes nearest-neighbour
up-sampling drew (docs/eval/2026-12-06-stripes.md)::

    NUMBA_CACHE_DIR=/tmp/numba .venv/bin/python scripts/fit_curve.py \\
        --data ../shared/data/prnu-python-testdata --fingerprints /tmp/fp \\
        --photo Nikon_D70s_1_22928.JPG --y 1344 --x 672 --iterations 400 \\
        --change upsample='"nearest"' --json nearest.json [--keep 100]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--fingerprints", type=Path, required=True)
    p.add_argument("--photo", required=True, help="a file of DATA/nat-jpg")
    p.add_argument("--y", type=int, required=True)
    p.add_argument("--x", type=int, required=True)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--iterations", type=int, default=400)
    p.add_argument("--every", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--change", action="append", default=[], metavar="FIELD=JSON",
                   help="a field of the cpu preset's DIP settings (value as JSON), repeatable")
    p.add_argument("--keep", type=int, nargs="*", default=[], metavar="IT")
    p.add_argument("--json", type=Path, required=True)
    args = p.parse_args(argv)

    import torch

    from dippas_core import fidelity
    from dippas_core.config import AnonymizeConfig
    from dippas_core.dip import invert
    from dippas_core.evaluation import camera_label
    from dippas_core.fingerprint import Fingerprint
    from dippas_core.io import read_image

    torch.set_num_threads(1)
    y, x, n = args.y, args.x, args.size
    photo = read_image(args.data / "nat-jpg" / args.photo)[y : y + n, x : x + n]
    attack = Fingerprint.load(args.fingerprints / f"{camera_label(args.photo)}_attack.npz")
    changes = {k: json.loads(v) for k, v in (c.split("=", 1) for c in args.change)}
    dip = AnonymizeConfig.preset("cpu", seed=args.seed).dip.replace(
        record_psnr=-math.inf, stop_psnr=math.inf, max_iter=args.iterations, torch_threads=1,
        **changes)
    tau = float(AnonymizeConfig.preset("cpu").assembly.tau)
    reference = photo.astype(np.float64)
    rows, kept = [], {}
    c0 = time.process_time()
    for step in invert(photo, attack.K[y : y + n, x : x + n], dip):
        if step.iteration % args.every and step.iteration not in args.keep:
            continue
        out = np.round(np.clip(step.snapshot, 0, 255))
        delta = out - reference
        rows.append({"iteration": step.iteration, "psnr": step.psnr,
                     "checkerboard": fidelity.checkerboard_energy(delta, photo=reference),
                     "colour_shift": fidelity.colour_shift(delta),
                     "max_abs": float(np.abs(delta).max()), "looks_same": step.looks_same,
                     "cpu_s": time.process_time() - c0})
        if step.iteration in args.keep:
            kept[str(step.iteration)] = out.astype(np.uint8)
    args.json.write_text(json.dumps({"photo": args.photo, "y": y, "x": x, "size": n,
                                     "changes": changes, "seed": args.seed, "rows": rows}))
    if kept:
        np.savez_compressed(args.json.with_suffix(".npz"), **kept)
    first = next((r for r in rows if r["psnr"] >= tau and r["looks_same"]), None)
    print(f"{args.photo}@{y},{x} {changes or 'the cpu preset'}: first output at τ {tau} within "
          f"the bars: " + (f"iteration {first['iteration']} ({first['psnr']:.2f} dB)" if first
                           else "none") + f"; {rows[-1]['cpu_s'] / rows[-1]['iteration']:.3f} "
          f"CPU s per iteration")
    print(f"{'it':>5} {'PSNR':>6} {'checker':>8} {'shift':>6} {'max|Δ|':>7}  bars")
    for r in rows[:: max(1, len(rows) // 20)]:
        print(f"{r['iteration']:5d} {r['psnr']:6.2f} {r['checkerboard']:8.2f} "
              f"{r['colour_shift']:6.2f} {r['max_abs']:7.0f}  {r['looks_same']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
