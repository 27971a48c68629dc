"""PRNU-aware fingerprint subtraction (the family of Karaküçük & Dirik and Zeng et al.).

The photo follows the PRNU model ``I = I0 (1 + K) + noise``; removing ``alpha·I·K`` undoes the
multiplicative term.  Since the estimated ``K`` is attenuated and the detector works on a denoised
residual, the useful weight is not 1: it is chosen so that the anonymized photo's NCC with ``K``
(method §3, the detector the ROC is computed from) is as close to zero as possible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._validation import as_image, check_same_size
from ..errors import InputError
from ..fingerprint import Fingerprint, fingerprint_parts

__all__ = ["SubtractionResult", "fingerprint_of", "subtract_fingerprint", "subtraction_alpha"]


def fingerprint_of(fingerprint: Fingerprint | np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``K`` (float32 H×W) from a ``Fingerprint`` or an array, checked against ``shape``."""
    K, _ = fingerprint_parts(fingerprint)
    if K is None:
        raise InputError("a fingerprint is needed (got None): subtraction has no blind mode")
    if K.shape != tuple(shape):
        raise InputError(
            f"fingerprint is {K.shape[0]}×{K.shape[1]} but the photo is {shape[0]}×{shape[1]}; "
            "crop the fingerprint at the photo's place (e.g. Fingerprint.center_crop)"
        )
    return K


@dataclass(frozen=True)
class SubtractionResult:
    """Output of :func:`subtraction_alpha`: the weight and the NCC it leaves."""

    alpha: float
    ncc_before: float
    ncc_after: float
    evaluations: int


def _subtract(image: np.ndarray, K: np.ndarray, alpha: float, quantize: bool) -> np.ndarray:
    IK = image * (K[..., None] if image.ndim == 3 else K)
    out = np.clip(image - np.float32(alpha) * IK, 0.0, 255.0)
    return (np.rint(out) if quantize else out).astype(np.float32)


def subtraction_alpha(
    photo, fingerprint, *, sigma: float = 5.0, quantize: bool = True, max_doublings: int = 24
) -> SubtractionResult:
    """The weight ``alpha`` that brings ``NCC(W(I'), I', K)`` of ``I' = I - alpha·I·K`` nearest 0.

    The NCC is scored on the image as it will be saved: rounded to integers when ``quantize``
    (an 8-bit photo cannot carry a change below half a gray level, so the weight that zeroes the
    NCC of the float image does nothing once saved).  Search: ``alpha`` doubles from the
    smallest weight that moves any pixel by half a level until the NCC changes sign, then Brent's
    method finds the crossing inside that bracket; the best of all weights tried is returned
    (never one worse than ``alpha = 0``).  A negative NCC gets a negative weight.

    Parameters
    ----------
    photo : array_like
        H×W×3 or H×W image, 0..255.
    fingerprint : Fingerprint or array_like
        The camera fingerprint ``K``, same H×W as the photo.
    sigma : float
        Residual noise level (method §1).
    quantize : bool
        Score (and later produce) the image rounded to integer levels.
    max_doublings : int
        Bound on the bracketing search.
    """
    from scipy import optimize

    from ..correlation import ncc
    from ..residual import residual

    image = as_image(photo, "photo", min_size=2)
    K = fingerprint_of(fingerprint, image.shape[:2])
    tried: dict[float, float] = {}

    def signed(alpha: float) -> float:
        if alpha not in tried:
            out = _subtract(image, K, alpha, quantize)
            tried[alpha] = float(ncc(residual(out, sigma), out, K))
        return tried[alpha]

    before = signed(0.0)
    ik = np.abs(image * (K[..., None] if image.ndim == 3 else K))
    peak = float(np.quantile(ik, 0.999))
    if before == 0.0 or peak == 0.0:
        return SubtractionResult(0.0, before, before, len(tried))
    # smallest useful weight: half a level on the strongest pixels (a far smaller one in float);
    # a negative NCC is brought up to 0 by a negative weight (adding I·K)
    alpha = np.sign(before) * (0.5 if quantize else 1e-3) / peak
    inner = 0.0
    for _ in range(int(max_doublings)):
        if np.sign(signed(alpha)) != np.sign(before):
            lo, hi = sorted((inner, alpha))
            optimize.brentq(signed, lo, hi, xtol=1e-3 * abs(alpha), maxiter=60)
            break
        inner, alpha = alpha, 2.0 * alpha
    best = min(tried, key=lambda a: (abs(tried[a]), a))
    return SubtractionResult(best, before, tried[best], len(tried))


def subtract_fingerprint(
    photo, fingerprint, *, alpha: float | None = None, sigma: float = 5.0, quantize: bool = True
) -> np.ndarray:
    """Anonymize ``photo`` by removing ``alpha·I·K`` (``alpha`` from :func:`subtraction_alpha`).

    Parameters
    ----------
    photo : array_like
        H×W×3 or H×W image, 0..255 (uint8/uint16 as read, or float).
    fingerprint : Fingerprint or array_like
        The camera fingerprint ``K`` cropped to the photo's place.
    alpha : float, optional
        A fixed weight; by default the NCC-minimising one.
    sigma : float
        Residual noise level used to score candidate weights.
    quantize : bool
        Round the result to integer levels (and choose ``alpha`` for the rounded image): what an
        8-bit file will hold.

    Returns
    -------
    numpy.ndarray
        float32, same shape as ``photo``, clipped to 0..255.
    """
    image = as_image(photo, "photo", min_size=2)
    K = fingerprint_of(fingerprint, image.shape[:2])
    check_same_size(image, K, "photo", "fingerprint")
    if alpha is None:
        alpha = subtraction_alpha(image, K, sigma=sigma, quantize=quantize).alpha
    elif not np.isfinite(alpha):
        raise InputError(f"alpha must be finite, got {alpha!r}")
    return _subtract(image, K, float(alpha), quantize)
