"""How gamma behaved in kept DIP runs, by PSNR phase, beside the photo's own trace (issue 17).

For every run folder under ``OUT/runs`` (``scripts/assembly_grid.py`` keeps them): the photo's NCC
with its camera's pattern (the run's reference ``K``), then, over the iterations from each PSNR
threshold on, their number, the share with gamma at its bound 0, the share at 0 although the
least-squares gamma* > 0 (the injection held off against the data), and the medians of gamma and
gamma*; and the kept snapshots' own NCC with the camera (whole crop, from the run's tile sums,
mean over the snapshots with PSNR >= ``--tau``): what the generator's outputs carry before the
assembly picks among them.  A photo whose NCC is within the noise floor (about 1/side for a
side×side crop) gives gamma* no sign to follow.  Usage::

    NUMBA_CACHE_DIR=/tmp/numba_cache .venv/bin/python scripts/gamma_phases.py ho-lsq ho-adam \\
        [--thresholds 30,34,38] [--tau 38]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    from dippas_core.correlation import ncc
    from dippas_core.residual import residual
    from dippas_core.run import RunDirectory
    from dippas_core.snapshots import block_ncc_from_sums

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("outs", nargs="+", type=Path, help="assembly_grid.py output folders")
    p.add_argument("--thresholds", default="30,34,38", help="PSNR thresholds (dB)")
    p.add_argument("--tau", type=float, default=38.0, help="snapshots scored from this PSNR (dB)")
    args = p.parse_args(argv)
    thresholds = [float(t) for t in args.thresholds.split(",")]
    print("out, run, photo NCC (noise floor), best PSNR; then per threshold: iterations, gamma at "
          "0, at 0 with gamma* > 0, median gamma / gamma*; the snapshots' mean NCC")
    for out in args.outs:
        for run_dir in sorted((out / "runs").iterdir()):
            run = RunDirectory.open(run_dir)
            h = run.history()
            if run.status != "finished":
                continue  # a run stopped part-way says little about its recording phase
            photo = run.photo
            floor = 1.0 / np.sqrt(photo.shape[0] * photo.shape[1])
            trace = ncc(residual(photo), photo, run.reference)
            psnr, gamma = np.asarray(h["psnr"]), np.asarray(h["gamma"])
            star = np.asarray(h["gamma_star"])
            parts = []
            for t in thresholds:
                sel = psnr >= t
                if not sel.any():
                    parts.append(f">= {t:g} dB: none")
                    continue
                at0 = gamma[sel] <= 0.0
                parts.append(
                    f">= {t:g} dB: {int(sel.sum())} its, at 0 {100 * at0.mean():.1f} %, dead "
                    f"{100 * (at0 & (star[sel] > 0)).mean():.1f} %, "
                    f"{np.median(gamma[sel]):.5f} / {np.median(star[sel]):+.5f}"
                )
            kept = np.flatnonzero(run.snapshots.psnrs[: run.refresh()] >= args.tau)
            if kept.size:
                whole = block_ncc_from_sums(
                    run.tile_sums.array()[kept], max(run.tile_sums.grid)
                )[:, 0, 0]
                parts.append(f"{kept.size} snapshots >= {args.tau:g} dB: NCC {whole.mean():+.4f}")
            print(f"{out.name} {run_dir.name}: photo NCC {trace:+.4f} ({floor:.4f}), best "
                  f"{psnr.max():.2f} dB; " + "; ".join(parts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
