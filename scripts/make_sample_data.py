"""Regenerate the sample shipped in ``dippas_core/data/`` from the Dresden files.

The sample is the centre 256×256 crop of ``nat-jpg/Nikon_D70s_0_21853.JPG`` (a building, pixels as
stored) and the fingerprint of its camera, Nikon_D70s_0, estimated from that camera's 10 flat-field
shots cropped at the same place (centre 256×256; the flat-field and natural shots share one sensor
size).  At this size the photo's NCC with its own camera's fingerprint is about 0.027, against
0.005 or less with the five other cameras, so the one-click demo starts from a clear attribution.

Usage::

    .venv/bin/python scripts/make_sample_data.py [DRESDEN_DIR]

``DRESDEN_DIR`` defaults to ``../shared/data/prnu-python-testdata`` beside the repository (or
``$DIPPAS_TESTDATA``).  The photo is written as PNG without metadata; the fingerprint as float16
``.npz``.  It prints the NCC of the sample photo against all six cameras as a check.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PHOTO = "Nikon_D70s_0_21853.JPG"
CAMERA = "Nikon_D70s_0"
SIZE = 256


def main(argv: list[str]) -> int:
    from dippas_core.correlation import ncc
    from dippas_core.fingerprint import estimate_fingerprint
    from dippas_core.io import center_crop, read_image, write_image
    from dippas_core.residual import residual
    from dippas_core.sample import FINGERPRINT_FILE, PHOTO_FILE

    default = os.environ.get("DIPPAS_TESTDATA", REPO.parent / "shared/data/prnu-python-testdata")
    data = Path(argv[0]) if argv else Path(default)
    ff_dir = data / "ff-jpg"
    photo = np.array(center_crop(read_image(data / "nat-jpg" / PHOTO), SIZE))
    fingerprints = {}
    for cam in sorted({p.name.rsplit("_", 1)[0] for p in ff_dir.glob("*.JPG")}):
        files = sorted(ff_dir.glob(f"{cam}_*.JPG"))
        fingerprints[cam] = estimate_fingerprint(files, crop=SIZE, camera=cam)
    w = residual(photo)
    for cam, fp in fingerprints.items():
        print(f"NCC with {cam:>13}: {ncc(w, photo, fp.K):+.4f}")
    out = REPO / "dippas_core" / "data"
    write_image(out / PHOTO_FILE, photo)
    fingerprints[CAMERA].save(out / FINGERPRINT_FILE, dtype=np.float16)
    for name in (PHOTO_FILE, FINGERPRINT_FILE):
        print(f"wrote {out / name} ({(out / name).stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
