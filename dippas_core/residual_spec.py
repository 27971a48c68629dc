"""What a noise residual is (method §1), whichever path computes it.

The wavelet and its levels, the Wiener windows, the gray weights and the images accepted: the
NumPy/Numba paths (:mod:`dippas_core.residual`) and the torch path
(:mod:`dippas_core.residual_torch`) both read them here.
"""

from __future__ import annotations

import numpy as np

from ._validation import as_image

__all__ = ["GRAY_WEIGHTS", "LEVELS", "MODE", "WAVELET", "WINDOWS", "as_float255", "validated"]

#: MATLAB ``rgb2gray`` weights.
GRAY_WEIGHTS = np.array([0.29893602, 0.58704307, 0.11402090], dtype=np.float32)
WAVELET = "db4"
LEVELS = 4
MODE = "symmetric"
WINDOWS = (3, 5, 7, 9)


def as_float255(image, name: str = "image") -> np.ndarray:
    """``image`` as finite float32 H×W or H×W×3 in the 0..255 scale (uint16 is rescaled)."""
    from .io import to_float255

    arr = np.asarray(image) if not isinstance(image, np.ndarray) else image
    if arr.dtype == np.uint16:
        arr = to_float255(arr)
    return as_image(arr, name)


def validated(image, name: str = "image") -> np.ndarray:
    """uint8/uint16 H×W(×3) arrays as they are (always finite), anything else as float 0..255."""
    arr = np.asarray(image)
    if (
        arr.dtype in (np.uint8, np.uint16)
        and arr.size
        and (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3))
    ):
        return arr
    return as_float255(arr, name)
