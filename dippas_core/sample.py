"""A small real sample: a Dresden photo crop and its camera's fingerprint (for demos and tests).

``nat-jpg/Nikon_D70s_0_21853.JPG`` from the Dresden Image Database (Gloe & Böhme, ACM SAC 2010;
"freely available for scientific purposes"), centre 256×256 crop, and the fingerprint of its camera
(Nikon_D70s_0) from 10 flat-field shots cropped at the same place.  Regenerate with
``scripts/make_sample_data.py``.
"""

from __future__ import annotations

from importlib import resources

import numpy as np

__all__ = ["FINGERPRINT_FILE", "PHOTO_FILE", "SAMPLE_CAMERA", "sample_data", "sample_paths"]

PHOTO_FILE = "sample_photo.png"
FINGERPRINT_FILE = "sample_fingerprint.npz"
SAMPLE_CAMERA = "Nikon_D70s_0"


def sample_paths():
    """(photo path, fingerprint path) of the files shipped in ``dippas_core/data``."""
    data = resources.files("dippas_core") / "data"
    return data / PHOTO_FILE, data / FINGERPRINT_FILE


def sample_data():
    """The sample photo (uint8 256×256×3) and its camera's :class:`Fingerprint` (256×256).

    Returns fresh copies: callers may modify them.
    """
    from .fingerprint import Fingerprint
    from .io import read_image

    photo_path, fp_path = sample_paths()
    with resources.as_file(photo_path) as p:
        photo = read_image(p)
    with resources.as_file(fp_path) as p:
        fingerprint = Fingerprint.load(p)
    return np.array(photo, copy=True), fingerprint
