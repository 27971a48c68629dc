"""Camera fingerprint (method §2) from 10 flat-field crops: reference path vs fast path.

Usage::

    NUMBA_CACHE_DIR=/tmp/numba_cache .venv/bin/python benchmarks/bench_fingerprint.py [DRESDEN_DIR]

Uses the centre 512×512 crops of one camera's 10 flat-field JPEGs from the Dresden test data
(``$DIPPAS_TESTDATA`` or ``../shared/data/prnu-python-testdata``), read once before timing; falls
back to random images when the data is missing.  Prints seconds per path and the ratio.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _forensic_timing import HEADER, best_of, machine_note, row  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CAMERA = "Nikon_D70_0"


def _flat_fields(data: Path) -> tuple[list[np.ndarray], str]:
    from dippas_core.io import center_crop, read_image

    files = sorted((data / "ff-jpg").glob(f"{CAMERA}_*.JPG"))
    if not files:
        rng = np.random.default_rng(0)
        return [rng.integers(0, 256, (512, 512, 3), dtype=np.uint8) for _ in range(10)], "random"
    return [np.array(center_crop(read_image(f), 512)) for f in files], f"{CAMERA} flat fields"


def main() -> int:
    from dippas_core.fingerprint import estimate_fingerprint

    default = os.environ.get("DIPPAS_TESTDATA", REPO.parent / "shared/data/prnu-python-testdata")
    data = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(default)
    images, what = _flat_fields(data)
    estimate_fingerprint([im[:64, :64] for im in images[:2]])  # warm-up
    print(f"fingerprint benchmark ({len(images)} × 512×512×3, {what}) — {machine_note()}")
    print(HEADER)
    ref = best_of(lambda: estimate_fingerprint(images, method="reference"), 1)
    fast = best_of(lambda: estimate_fingerprint(images), 3)
    print(row(f"fingerprint from {len(images)} crops", ref, fast))
    return 0


if __name__ == "__main__":
    sys.exit(main())
