"""Noise residual W of an image (SPEC §1).

Two paths compute the same thing:

* ``method="reference"``: plain NumPy/PyWavelets/SciPy, short and readable, kept as the test oracle.
* ``method="fast"`` (default): hot loops in Numba kernels.  (Until the kernels land, the fast path
  falls back to the reference path.)
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "GRAY_WEIGHTS",
    "residual",
    "residual_reference",
    "rgb2gray",
    "wavelet_noise",
    "wiener_dft",
    "zero_mean",
]

#: MATLAB ``rgb2gray`` weights.
GRAY_WEIGHTS = np.array([0.29893602, 0.58704307, 0.11402090], dtype=np.float32)
WAVELET = "db4"
LEVELS = 4
WINDOWS = (3, 5, 7, 9)


def rgb2gray(image: np.ndarray) -> np.ndarray:
    """Gray image (float32) from H×W×3 with MATLAB weights; 2-D input is returned as float32."""
    image = np.asarray(image)
    if image.ndim == 2:
        return image.astype(np.float32, copy=False)
    return np.tensordot(image.astype(np.float32, copy=False), GRAY_WEIGHTS, axes=([2], [0]))


def _wiener_shrink_reference(x: np.ndarray, noise_var: float) -> np.ndarray:
    from scipy.ndimage import uniform_filter

    x = x.astype(np.float64, copy=False)
    x2 = x * x
    s2 = None
    for w in WINDOWS:
        var_w = np.maximum(uniform_filter(x2, size=w, mode="constant", cval=0.0) - noise_var, 0.0)
        s2 = var_w if s2 is None else np.minimum(s2, var_w)
    return x * noise_var / (s2 + noise_var)


def _wavelet_noise_channel_reference(x: np.ndarray, sigma: float) -> np.ndarray:
    import pywt

    h, w = x.shape
    coeffs = pywt.wavedec2(x.astype(np.float64), WAVELET, level=LEVELS, mode="symmetric")
    out = [np.zeros_like(coeffs[0])]
    v = float(sigma) ** 2
    for detail in coeffs[1:]:
        out.append(tuple(_wiener_shrink_reference(band, v) for band in detail))
    rec = pywt.waverec2(out, WAVELET, mode="symmetric")
    return rec[:h, :w].astype(np.float32)


def wavelet_noise(image: np.ndarray, sigma: float = 5.0, *, method: str = "fast") -> np.ndarray:
    """Step 1 of SPEC §1 per channel: H×W×C (or H×W) float32 wavelet-Wiener noise."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        return _wavelet_noise_channel_reference(image, sigma)
    return np.stack(
        [_wavelet_noise_channel_reference(image[..., c], sigma) for c in range(image.shape[2])],
        axis=2,
    )


def zero_mean(w: np.ndarray) -> np.ndarray:
    """Zero-mean per CFA sub-lattice: global, then row and column means (SPEC §1 step 4)."""
    out = np.array(w, dtype=np.float32, copy=True)
    for i in (0, 1):
        for j in (0, 1):
            sub = out[i::2, j::2]
            sub -= sub.mean()
            sub -= sub.mean(axis=1, keepdims=True)
            sub -= sub.mean(axis=0, keepdims=True)
    return out


def wiener_dft(w: np.ndarray) -> np.ndarray:
    """Wiener filter in the Fourier domain (SPEC §1 step 5)."""
    from scipy import fft

    w = w.astype(np.float32, copy=False)
    h, wd = w.shape
    sigma = float(np.std(w, ddof=1))
    f = fft.fft2(w)
    a = np.abs(f) / np.sqrt(h * wd)
    a_shrunk = _wiener_shrink_reference(a, sigma**2)
    zero = a == 0
    a[zero] = 1.0
    a_shrunk[zero] = 0.0
    return np.real(fft.ifft2(f * a_shrunk / a)).astype(np.float32)


def residual_reference(image: np.ndarray, sigma: float = 5.0) -> np.ndarray:
    """Reference (oracle) noise residual: float32 H×W."""
    noise = wavelet_noise(image, sigma, method="reference")
    return wiener_dft(zero_mean(rgb2gray(noise)))


def residual(image: np.ndarray, sigma: float = 5.0, *, method: str = "fast") -> np.ndarray:
    """Noise residual W of ``image`` (2-D or H×W×3, any size): float32 H×W."""
    return residual_reference(image, sigma)
