"""Is the learned gamma of a DIPPAS run where least squares puts it?

For each run folder, the gamma that minimises ``||I_phi (1 + gamma P) - I||²`` for the run's last
snapshot ``I_phi`` (closed form: ``<(I - I_phi) I_phi, P> / <I_phi P, I_phi P>``) beside the
gamma the inversion ended with.  method §2's ``K`` is in gray levels per unit of normalised
intensity (sd ≈ 0.3–0.4 here), so a perfect fingerprint would give gamma ≈ 1/255 ≈ 0.004 and an
estimated one less (its estimation noise attenuates the fit).  For runs recorded with gamma* in
``history.csv`` it also prints the share of recording-phase iterations with gamma at 0 and the
medians of gamma and gamma* there (``dippas_core.run.gamma_summary``).  Usage::

    .venv/bin/python scripts/gamma_check.py RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import sys

import numpy as np


def main(argv: list[str]) -> int:
    from dippas_core.run import RunDirectory, gamma_summary
    from dippas_core.snapshots import SCALE

    print(f"{'run':40s} {'sd P':>7s} {'gamma* (LSQ)':>13s} {'gamma end':>10s} "
          f"{'at 0 (rec.)':>11s} {'med gamma':>10s} {'med gamma*':>10s}")
    for path in argv:
        run = RunDirectory.open(path)
        if run.n_ready == 0:
            print(f"{path}: no snapshot", file=sys.stderr)
            continue
        image = run.photo.astype(np.float64) / 255.0
        P = run.reference.astype(np.float64)
        P = P[..., None] if P.ndim == 2 else P
        phi = run.snapshots.frames[-1].astype(np.float64) / SCALE / 255.0
        best = np.sum((image - phi) * phi * P) / np.sum((phi * P) ** 2)
        hist = run.history()
        end = float(hist["gamma"][-1])
        g = gamma_summary(hist)
        star = g.get("median_star")
        print(f"{path.rstrip('/').split('/')[-1]:40s} {P.std():7.3f} {best:13.5f} {end:10.5f} "
              f"{100 * g.get('at_bound_share', float('nan')):10.1f}% "
              f"{g.get('median', float('nan')):10.5f} "
              f"{star if star is not None else float('nan'):10.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
