"""What the generator's outputs carry at each PSNR: the NCC of every output of one inversion with
the camera's unseen fingerprint, by PSNR band (issue 22: "what the snapshots carry at each PSNR").

One crop of quality_study's sets (``--crop NAME``, e.g. ``Nikon_D70_0_19445@128``), the ``cpu``
preset's generator with the camera's fingerprint from the odd flat fields, every output kept
(``record_psnr = -inf``) and no stop before ``--iterations``.  Each output's residual is scored
against the fingerprint from the even flat fields at the crop's own position (the trace); the
photo's, also at ``--positions`` other positions shifted by multiples of 8 px, gives the chance
spread of the crop's texture (``scripts/trace_null.py``).
Printed: per PSNR band the outputs' mean NCC, its z against chance, and the γ* of the fit.

    NUMBA_CACHE_DIR=/tmp/numba .venv/bin/python scripts/trace_by_psnr.py \\
        --data ../shared/data/prnu-python-testdata --fingerprints /tmp/fp \\
        --crop Nikon_D70_0_19445@128 --iterations 600 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality_study import crops_of, fingerprint  # noqa: E402
from trace_null import ncc_here_and_elsewhere, null_positions  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--fingerprints", type=Path, required=True)
    p.add_argument("--crop", required=True, help="a crop name of the special/test128 sets")
    p.add_argument("--iterations", type=int, default=600)
    p.add_argument("--every", type=int, default=3, help="score every N-th output")
    p.add_argument("--positions", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    import torch

    from dippas_core.config import AnonymizeConfig
    from dippas_core.dip import invert
    from dippas_core.evaluation import camera_label
    from dippas_core.io import read_image

    torch.set_num_threads(1)
    crop = next((c for c in crops_of(args.data, "special,test128,heldout256")
                 if c[0] == args.crop), None)
    if crop is None:
        raise SystemExit(f"no crop {args.crop!r} in the special, test128 or heldout256 sets")
    _, fname, y, x, size = crop
    cam = camera_label(fname)
    photo = read_image(args.data / "nat-jpg" / fname)[y : y + size, x : x + size]
    attack = fingerprint(args.data, args.fingerprints, cam, "attack")
    unseen = fingerprint(args.data, args.fingerprints, cam, "detector")
    positions = null_positions(unseen.shape, y, x, size, args.positions,
                               np.random.default_rng(args.seed))
    dip = AnonymizeConfig.preset("cpu", seed=args.seed).dip.replace(
        record_psnr=-math.inf, stop_psnr=math.inf, max_iter=args.iterations, torch_threads=1)

    # the chance spread is the photo's own (its texture's); each output needs only its NCC
    before, null = ncc_here_and_elsewhere(photo, unseen, y, x, size, positions)
    chance = float(null.std())
    rows = []
    for step in invert(photo, np.asarray(attack[y : y + size, x : x + size]), dip):
        if step.iteration % args.every:
            continue
        out = np.round(np.clip(step.snapshot, 0, 255))  # as it would be written
        own, _ = ncc_here_and_elsewhere(out, unseen, y, x, size, [])
        rows.append({"iteration": step.iteration, "psnr": step.psnr, "ncc": own,
                     "gamma_star": step.gamma_star, "looks_same": step.looks_same})
    print(f"{args.crop} ({cam}): NCC before {before:+.4f} (z {before / chance:.1f}, chance std "
          f"{chance:.4f}); {len(rows)} outputs scored of {args.iterations}")
    print(f"{'PSNR band':>12} {'outputs':>7} {'NCC mean':>9} {'z':>5} {'NCC min':>8} "
          f"{'NCC max':>8} {'γ* median':>10} {'in bars':>7}")
    psnr = np.array([r["psnr"] for r in rows])
    for lo in np.arange(np.floor(psnr.min()), np.ceil(psnr.max()), 1.0):
        band = [r for r in rows if lo <= r["psnr"] < lo + 1]
        if not band:
            continue
        v = np.array([r["ncc"] for r in band])
        print(f"{lo:5.0f}–{lo + 1:<5.0f} {len(band):7d} {v.mean():+9.4f} {v.mean() / chance:5.1f} "
              f"{v.min():+8.4f} {v.max():+8.4f} "
              f"{np.median([r['gamma_star'] for r in band]):10.4f} "
              f"{sum(bool(r['looks_same']) for r in band):7d}")
    if args.json:
        args.json.write_text(json.dumps({"crop": args.crop, "before": before, "chance": chance,
                                         "outputs": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
