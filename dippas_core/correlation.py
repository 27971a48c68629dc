"""Attribution scores (method §3): NCC, block NCC maps and PCE.

Conventions
    ``W`` is a noise residual (float32 H×W), ``I`` the image (H×W×3 or H×W, 0..255 scale, or
    uint8/uint16 as read), ``K`` a camera fingerprint (H×W).  A fingerprint of a different size
    than the image raises :class:`~dippas_core.errors.ShapeMismatchError` naming both sizes: crop
    explicitly (``Fingerprint.center_crop`` / ``io.center_crop``).  Inputs are never modified.
    Sums run in float64.

PCE default
    Binghamton style: the energy is the mean of ``cc**2`` outside an 11×11 square centred on the
    peak (with wrap-around), and the peak is searched over every shift (``shift_range=None``, as
    prnu-python does).  For images known to be aligned pass ``shift_range=(0, 0)``; for the
    prnu-python-like small exclusion pass ``exclusion=4``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validation import as_plane, check_same_size
from .errors import InputError

__all__ = ["PCEResult", "block_ncc", "gray255", "ncc", "pce"]

DEFAULT_EXCLUSION = 11


def _as_int(value, name: str, minimum: int) -> int:
    """``value`` as an int >= ``minimum`` (integral floats accepted), else InputError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, float, np.floating)):
        raise InputError(f"{name} must be an integer, got {value!r}")
    if not float(value).is_integer():
        raise InputError(f"{name} must be an integer, got {value!r}")
    if int(value) < minimum:
        raise InputError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def gray255(image) -> np.ndarray:
    """Gray image (float32, 0..255 scale) from H×W×3 or H×W, uint8/uint16/float input."""
    from .residual import rgb2gray
    from .residual_spec import as_float255

    return rgb2gray(as_float255(image, "I"))


def _ncc_inputs(W, I, K) -> tuple[np.ndarray, np.ndarray]:
    """(W, I_g·K) as float64 after checking sizes."""
    w = as_plane(W, "W")
    k = as_plane(K, "K")
    ig = gray255(I)
    check_same_size(w, ig, "the residual W", "the image I")
    check_same_size(ig, k, "the image I", "the fingerprint K")
    return w.astype(np.float64), ig.astype(np.float64) * k


def ncc(W, I, K) -> float:
    """Normalised cross-correlation ``sum(W·I_g·K) / (||W||·||I_g·K||)`` (paper eq. 2, method §3).

    Parameters
    ----------
    W : array_like
        Noise residual, H×W.
    I : array_like
        The image, H×W×3 or H×W (0..255 scale; converted to gray with MATLAB weights).
    K : array_like
        Camera fingerprint, H×W.

    Returns
    -------
    float
        In [-1, 1]; 0.0 when either norm is zero.
    """
    w, x = _ncc_inputs(W, I, K)
    den = np.sqrt(np.sum(w * w) * np.sum(x * x))
    return float(np.sum(w * x) / den) if den > 0 else 0.0


def _block_sums(a: np.ndarray, B: int) -> np.ndarray:
    """Sums over non-overlapping B×B blocks; edge blocks are smaller (zero padding adds nothing)."""
    h, w = a.shape
    nh, nw = -(-h // B), -(-w // B)
    padded = np.zeros((nh * B, nw * B), dtype=np.float64)
    padded[:h, :w] = a
    return padded.reshape(nh, B, nw, B).sum(axis=(1, 3))


def _window_sums(a: np.ndarray, B: int, stride: int) -> np.ndarray:
    """Sums over B×B windows whose top-left corners step by ``stride`` (windows fully inside)."""
    h, w = a.shape
    c = np.zeros((h + 1, w + 1), dtype=np.float64)
    np.cumsum(np.cumsum(a, axis=0), axis=1, out=c[1:, 1:])
    tops = np.arange(0, h - B + 1, stride)
    lefts = np.arange(0, w - B + 1, stride)
    t0, l0 = np.ix_(tops, lefts)
    return c[t0 + B, l0 + B] - c[t0, l0 + B] - c[t0 + B, l0] + c[t0, l0]


def block_ncc(W, I, K, B: int, *, stride: int | None = None) -> np.ndarray:
    """Map of the NCC of method §3 on B×B blocks.

    Parameters
    ----------
    W, I, K : array_like
        As in :func:`ncc`.
    B : int
        Block (window) side in pixels.
    stride : int, optional
        None: non-overlapping blocks, a ``ceil(H/B) × ceil(W/B)`` map whose last row/column
        blocks are smaller when B does not divide the size (they are kept, not dropped).
        An int: a sliding B×B window moved by ``stride`` pixels, windows fully inside the image,
        a ``((H-B)//stride + 1) × ((W-B)//stride + 1)`` map (the classic PRNU localisation map).

    Returns
    -------
    numpy.ndarray
        float64 map; 0.0 where a block has zero norm.
    """
    B = _as_int(B, "block size B", 1)
    w, x = _ncc_inputs(W, I, K)
    if stride is None:
        sums = [_block_sums(a, B) for a in (w * x, w * w, x * x)]
    else:
        stride = _as_int(stride, "stride", 1)
        if B > min(w.shape):
            raise InputError(f"window B={B} is larger than the image {w.shape[0]}×{w.shape[1]}")
        sums = [_window_sums(a, B, stride) for a in (w * x, w * w, x * x)]
    num, ww, xx = sums
    den = np.sqrt(np.maximum(ww, 0.0) * np.maximum(xx, 0.0))
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den > 0)
    return out


@dataclass(frozen=True)
class PCEResult:
    """Peak-to-correlation energy.

    Attributes
    ----------
    pce : float
        ``sign(peak) * peak**2 / energy``.
    peak : float
        Value of the cross-correlation at the peak (signed maximum).
    shift : tuple of int
        (dy, dx) of the peak, wrapped to ``-H//2 .. (H-1)//2``: ``a`` equals ``b`` moved by this
        shift (``np.roll(b, shift, (0, 1))``).
    energy : float
        Mean of ``cc**2`` outside the exclusion square.
    """

    pce: float
    peak: float
    shift: tuple[int, int]
    energy: float


def _signed(idx: int, n: int) -> int:
    return idx - n if idx > (n - 1) // 2 else idx


def cross_correlation(a, b) -> np.ndarray:
    """Circular cross-correlation ``real(ifft2(fft2(a - mean a) * conj(fft2(b - mean b))))``."""
    from scipy import fft

    # validate, then work on float64 copies of the values as given (no float32 round trip)
    pa, pb = as_plane(a, "a"), as_plane(b, "b")
    check_same_size(pa, pb, "a", "b")
    x = np.array(a, dtype=np.float64).reshape(pa.shape)
    y = np.array(b, dtype=np.float64).reshape(pb.shape)
    x = x - x.mean()
    y = y - y.mean()
    spec = fft.rfft2(x) * np.conj(fft.rfft2(y))
    return fft.irfft2(spec, s=x.shape)


def pce(
    a,
    b,
    *,
    exclusion: int = DEFAULT_EXCLUSION,
    shift_range: tuple[int, int] | int | None = None,
) -> PCEResult:
    """Peak-to-correlation energy of two same-size planes (method §3).

    Parameters
    ----------
    a, b : array_like
        H×W planes, e.g. ``W`` and ``I_g * K``.  Not modified.
    exclusion : int
        Side of the square around the peak (wrap-around) left out of the energy (default 11,
        Binghamton); the energy is the mean of ``cc**2`` over the rest.
    shift_range : (int, int) or int, optional
        Search the peak only over shifts with ``|dy| <= shift_range[0]`` and
        ``|dx| <= shift_range[1]``; None searches every shift; ``(0, 0)`` scores aligned images
        at zero shift only.

    Returns
    -------
    PCEResult
    """
    exclusion = _as_int(exclusion, "exclusion", 1)
    cc = cross_correlation(a, b)
    h, w = cc.shape
    if exclusion >= h or exclusion >= w:
        raise InputError(f"exclusion {exclusion} does not fit in a {h}×{w} cross-correlation")
    if shift_range is None:
        iy, ix = np.unravel_index(int(np.argmax(cc)), cc.shape)
    else:
        pair = (shift_range, shift_range) if np.isscalar(shift_range) else tuple(shift_range)
        if len(pair) != 2:
            raise InputError(f"shift_range must be an int or (dy, dx), got {shift_range!r}")
        ry, rx = (_as_int(r, "shift_range", 0) for r in pair)
        ys = np.arange(-min(ry, (h - 1) // 2), min(ry, h // 2) + 1) % h
        xs = np.arange(-min(rx, (w - 1) // 2), min(rx, w // 2) + 1) % w
        sub = cc[np.ix_(ys, xs)]
        jy, jx = np.unravel_index(int(np.argmax(sub)), sub.shape)
        iy, ix = int(ys[jy]), int(xs[jx])
    peak = float(cc[iy, ix])
    half = exclusion // 2
    rows = (iy + np.arange(-half, exclusion - half)) % h
    cols = (ix + np.arange(-half, exclusion - half)) % w
    # mean of cc**2 over everything outside the (wrapped) square around the peak
    excluded = cc[np.ix_(rows, cols)]
    total = float(np.einsum("ij,ij->", cc, cc))
    energy = (total - float(np.sum(excluded * excluded))) / (cc.size - excluded.size)
    value = float(np.sign(peak) * peak**2 / energy) if energy > 0 else 0.0
    return PCEResult(
        pce=value, peak=peak, shift=(_signed(int(iy), h), _signed(int(ix), w)), energy=energy
    )
