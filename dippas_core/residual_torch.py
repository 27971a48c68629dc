"""Noise residual W (method §1) in torch, on whatever device the images are: the GPU snapshot path.

The same five steps as :func:`dippas_core.residual.residual` (and the same constants: wavelet,
levels, "symmetric" mode, Wiener windows, gray weights), batched over N images:

1. a 4-level 2-D DWT equal to ``pywt.wavedec2(mode="symmetric")``: PyWavelets' filter bank as
   stride-2 ``conv2d`` after a half-sample symmetric extension (an index map, so any size works,
   also sides shorter than the filter), and its inverse as ``conv_transpose2d`` (``waverec2``);
2. the adaptive Wiener shrink of every detail band (box means of ``x**2`` over 3, 5, 7, 9 windows
   with zero padding: ``avg_pool2d`` with ``count_include_pad``), the coarsest approximation zeroed;
3. gray with MATLAB's weights; 4. zero-mean per CFA sub-lattice; 5. the Wiener filter in the
   Fourier domain (shrink of ``|F| / sqrt(HW)`` with the residual's own variance).

It agrees with the Numba path within 1e-4 of ``max|W|`` (``tests/test_residual_torch.py``).  torch
is imported inside the functions: ``import dippas_core`` stays quick.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InputError

if TYPE_CHECKING:
    import torch

__all__ = ["residual_torch", "tile_sums_torch", "gray_torch"]


@functools.cache
def _bank(device_str: str, dtype_name: str) -> tuple[Any, Any]:
    """Analysis (2×L) and synthesis (2×L) filters of the wavelet on one device, as tensors."""
    import pywt
    import torch

    from .residual_spec import WAVELET

    w = pywt.Wavelet(WAVELET)
    dtype = getattr(torch, dtype_name)
    # conv is a cross-correlation: the analysis filters are flipped, the synthesis ones are not
    dec = torch.tensor([w.dec_lo[::-1], w.dec_hi[::-1]], dtype=dtype, device=device_str)
    rec = torch.tensor([w.rec_lo, w.rec_hi], dtype=dtype, device=device_str)
    return dec, rec


@functools.cache
def _symmetric_index(n: int, pad: int) -> np.ndarray:
    """Indices of a length-``n`` signal extended by ``pad`` half-sample symmetric samples a side."""
    k = np.arange(-pad, n + pad)
    m = np.mod(k, 2 * n)
    return np.where(m >= n, 2 * n - 1 - m, m)


def _extend(x: torch.Tensor, dim: int, pad: int) -> torch.Tensor:
    import torch

    idx = torch.from_numpy(_symmetric_index(x.shape[dim], pad)).to(x.device)
    return x.index_select(dim, idx)


def _dwt2(x: torch.Tensor, dec: torch.Tensor) -> torch.Tensor:
    """One level of ``pywt.dwt2(mode="symmetric")`` of B×1×H×W: B×4×m×n.

    The bands come in the order (cA, cV, cH, cD) of PyWavelets' names: low/high along the height
    (outer), then low/high along the width.
    """
    import torch.nn.functional as F

    taps = dec.shape[1]
    b = x.shape[0]
    # out[o] = sum_j f[j] x[2o + 1 - j] on the extended signal: start one sample in, stride 2
    x = _extend(x, 2, taps - 1)[:, :, 1:]
    x = F.conv2d(x, dec.reshape(2, 1, taps, 1), stride=(2, 1))  # B×2×m×W
    x = x.reshape(2 * b, 1, x.shape[2], x.shape[3])
    x = _extend(x, 3, taps - 1)[:, :, :, 1:]
    x = F.conv2d(x, dec.reshape(2, 1, 1, taps), stride=(1, 2))  # 2B×2×m×n
    return x.reshape(b, 4, x.shape[2], x.shape[3])


def _idwt2(c: torch.Tensor, rec: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_dwt2` (``pywt.idwt2``): B×4×m×n → B×1×(2m-L+2)×(2n-L+2)."""
    import torch.nn.functional as F

    taps = rec.shape[1]
    b, _, m, n = c.shape
    x = c.reshape(2 * b, 2, m, n)  # (LL, LH) and (HL, HH): inverse along the width first
    x = F.conv_transpose2d(x, rec.reshape(2, 1, 1, taps), stride=(1, 2))
    x = x[:, :, :, taps - 2 : 2 * n]
    x = x.reshape(b, 2, m, x.shape[3])
    x = F.conv_transpose2d(x, rec.reshape(2, 1, taps, 1), stride=(2, 1))
    return x[:, :, taps - 2 : 2 * m]


def _wiener_gain(x: torch.Tensor, noise_var: torch.Tensor | float) -> torch.Tensor:
    """Adaptive Wiener gain ``v / (s2 + v)`` of B×C×h×w coefficients (method §1 step 2)."""
    import torch
    import torch.nn.functional as F

    from .residual_spec import WINDOWS

    sq = x * x
    s2 = None
    for size in WINDOWS:
        mean = F.avg_pool2d(sq, size, stride=1, padding=size // 2, count_include_pad=True)
        var = torch.clamp(mean - noise_var, min=0.0)
        s2 = var if s2 is None else torch.minimum(s2, var)
    return noise_var / (s2 + noise_var)


def _wavelet_noise(planes: torch.Tensor, noise_var: float) -> torch.Tensor:
    """Steps 1–2 on B×1×H×W planes: B×1×H×W wavelet-Wiener noise (cropped back)."""
    import torch

    from .residual_spec import LEVELS

    h, w = planes.shape[-2:]
    dec, rec = _bank(str(planes.device), str(planes.dtype).removeprefix("torch."))
    details = []
    approx = planes
    for _ in range(LEVELS):
        coeffs = _dwt2(approx, dec)
        approx = coeffs[:, :1]
        bands = coeffs[:, 1:]
        details.append(bands * _wiener_gain(bands, noise_var))
    out = torch.zeros_like(approx)
    for bands in reversed(details):
        m, n = bands.shape[-2:]
        out = _idwt2(torch.cat([out[..., :m, :n], bands], dim=1), rec)
    return out[..., :h, :w]


def gray_torch(images: torch.Tensor) -> torch.Tensor:
    """N×H×W gray of N×3×H×W images (MATLAB weights); N×1×H×W comes back as N×H×W."""
    from .residual_spec import GRAY_WEIGHTS

    if images.shape[1] == 1:
        return images[:, 0]
    g = [float(v) for v in GRAY_WEIGHTS]
    return images[:, 0] * g[0] + images[:, 1] * g[1] + images[:, 2] * g[2]


def _zero_mean(w: torch.Tensor) -> torch.Tensor:
    """Zero-mean per CFA sub-lattice of N×H×W (method §1 step 4): ``x - rows - cols + all``."""
    out = w.clone()
    for di in (0, 1):
        for dj in (0, 1):
            sub = w[:, di::2, dj::2]
            if sub.numel() == 0:
                continue
            rows = sub.mean(dim=2, keepdim=True)
            cols = sub.mean(dim=1, keepdim=True)
            total = sub.mean(dim=(1, 2), keepdim=True)
            out[:, di::2, dj::2] = sub - rows - cols + total
    return out


def _wiener_dft(w: torch.Tensor) -> torch.Tensor:
    """Fourier-domain Wiener filter of N×H×W residuals, each with its own variance (step 5)."""
    import torch

    n, h, wd = w.shape
    if h * wd > 1:
        var = torch.var(w, dim=(1, 2), correction=1).reshape(n, 1, 1, 1)
    else:
        var = torch.zeros((n, 1, 1, 1), dtype=w.dtype, device=w.device)
    f = torch.fft.fft2(w)
    mag = (f.abs() / float(np.sqrt(h * wd)))[:, None]
    zero = torch.zeros((), dtype=w.dtype, device=w.device)
    gain = torch.where((mag > 0) & (var > 0), _wiener_gain(mag, var), zero)
    return torch.fft.ifft2(f * gain[:, 0]).real


def _as_batch(images: Any, dtype: Any) -> torch.Tensor:
    """N×C×H×W float tensor (0..255) from a tensor N×H×W×3 / N×H×W, or one numpy image."""
    import torch

    if isinstance(images, torch.Tensor):
        x = images
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4 or x.shape[-1] not in (1, 3):
            raise InputError(f"images must be N×H×W or N×H×W×3, got shape {tuple(images.shape)}")
        if x.dtype == torch.uint8:
            x = x.to(dtype)
        elif not x.is_floating_point():
            raise InputError(f"images must be uint8 or float (0..255), got {x.dtype}")
        return x.to(dtype).permute(0, 3, 1, 2)
    from .residual_spec import validated

    arr = validated(images)
    if arr.dtype == np.uint16:
        arr = arr.astype(np.float32) * np.float32(255.0 / 65535.0)
    x = torch.from_numpy(np.ascontiguousarray(arr)).to(dtype)
    return (x[None, :, :, None] if x.ndim == 2 else x[None]).permute(0, 3, 1, 2)


def residual_torch(images: Any, sigma: float = 5.0, *, dtype: Any = None) -> Any:
    """Noise residuals of N same-size images in torch, on the images' device.

    Parameters
    ----------
    images : torch.Tensor or array_like
        A tensor N×H×W×3 or N×H×W (float 0..255, or uint8) on any device; or one numpy image as
        :func:`dippas_core.residual.residual` takes it (H×W(×3), uint8/uint16/float), computed
        on the CPU.
    sigma : float
        Noise standard deviation of the wavelet-domain shrink (0..255 scale), > 0.
    dtype : torch.dtype, optional
        Computation dtype: the input's floating dtype, else float32 (float64 works too).

    Returns
    -------
    torch.Tensor or numpy.ndarray
        For a tensor input, an N×H×W tensor on its device (``dtype``); for a numpy image, the
        float32 H×W array.
    """
    import torch

    from ._validation import check_positive

    sigma = check_positive(sigma, "sigma")
    tensor_in = isinstance(images, torch.Tensor)
    if dtype is None:
        dtype = images.dtype if tensor_in and images.is_floating_point() else torch.float32
    with torch.no_grad():
        x = _as_batch(images, dtype)
        n, c, h, w = x.shape
        noise = _wavelet_noise(x.reshape(n * c, 1, h, w), sigma * sigma).reshape(n, c, h, w)
        out = _wiener_dft(_zero_mean(gray_torch(noise)))
    if tensor_in:
        return out
    return out[0].to(torch.float32).numpy()


def tile_sums_torch(w: torch.Tensor, ip: torch.Tensor, tile: int) -> torch.Tensor:
    """:func:`dippas_core.snapshots.tile_sums` in torch (float64 N×Th×Tw×3, on ``w``'s device)."""
    import torch
    import torch.nn.functional as F

    w = w.to(torch.float64)
    ip = ip.to(torch.float64)
    n, h, wd = w.shape
    th, tw = -(-h // tile), -(-wd // tile)
    prods = torch.stack([w * ip, w * w, ip * ip], dim=-1)  # N×H×W×3
    prods = F.pad(prods, (0, 0, 0, tw * tile - wd, 0, th * tile - h))
    return prods.reshape(n, th, tile, tw, tile, 3).sum(dim=(2, 4))
