"""Plain denoising as an "anonymizer" (the paper's DnCNN baseline, here with classical denoisers).

Denoising alone is known not to remove a camera fingerprint (the DIPPAS paper, §5.1.4): it is the
floor every anonymization method must beat.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from .._validation import as_image, check_positive
from ..errors import InputError
from ..residual import wavelet_denoise

__all__ = ["bm3d_available", "bm3d_denoise", "denoise", "wavelet_denoise"]


def bm3d_available() -> bool:
    """True when the optional ``bm3d`` package can be imported (it is not a dependency)."""
    return importlib.util.find_spec("bm3d") is not None


def bm3d_denoise(photo, sigma: float = 5.0) -> np.ndarray:
    """BM3D denoising (needs the optional ``bm3d`` package; raises InputError without it)."""
    if not bm3d_available():
        raise InputError("BM3D needs the optional 'bm3d' package, which is not installed")
    import bm3d  # type: ignore[import-not-found]

    image = as_image(photo, "photo", min_size=2)
    sigma = check_positive(sigma, "sigma")
    if image.ndim == 3:
        out = bm3d.bm3d_rgb(image / 255.0, sigma / 255.0)
    else:
        out = bm3d.bm3d(image / 255.0, sigma / 255.0)
    return np.clip(np.asarray(out) * 255.0, 0.0, 255.0).astype(np.float32)


def denoise(photo, *, method: str = "wavelet", sigma: float = 5.0) -> np.ndarray:
    """Denoise ``photo`` with ``method`` in {"wavelet", "bm3d"}; float32 0..255, same shape."""
    if method == "wavelet":
        return wavelet_denoise(photo, sigma)
    if method == "bm3d":
        return bm3d_denoise(photo, sigma)
    raise InputError(f"unknown denoising method {method!r}; use 'wavelet' or 'bm3d'")
