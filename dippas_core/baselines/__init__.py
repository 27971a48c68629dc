"""Published anonymization methods DIPPAS is compared with (issue 6, method §6).

Each is a function ``photo (+ fingerprint) -> image`` (float32 0..255, the photo's shape):

* :func:`inpaint_anonymize` — inpainting-based anonymization (Mandelli et al., ICIP 2017), L2
  (Tikhonov) or L1 (total variation), optional edge-preserving step;
* :func:`subtract_fingerprint` — PRNU-aware subtraction of ``alpha·I·K`` with the NCC-minimising
  ``alpha`` (Karaküçük & Dirik, Zeng et al.);
* :func:`wavelet_denoise` / :func:`denoise` — plain denoising (BM3D only if ``bm3d`` is installed).
"""

from __future__ import annotations

from .denoising import bm3d_available, denoise, wavelet_denoise
from .inpainting import inpaint, inpaint_anonymize, lattice_holes
from .subtraction import subtract_fingerprint, subtraction_alpha

__all__ = [
    "bm3d_available",
    "denoise",
    "inpaint",
    "inpaint_anonymize",
    "lattice_holes",
    "subtract_fingerprint",
    "subtraction_alpha",
    "wavelet_denoise",
]
