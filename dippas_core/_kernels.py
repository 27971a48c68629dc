"""Numba kernels: the fast residual path (method §1), the fingerprint sums (§2), PNG row filters.

Imported only when first needed (fast residual, fingerprint, 16-bit colour PNG), so
``import dippas_core`` never pays for Numba.  Every kernel is compiled with ``nogil=True`` (a worker
thread runs it beside the GUI, and :func:`dippas_core.residual.residual_batch` runs several at once,
one per core) and ``cache=True``.  They are serial on purpose: parallelism comes from threads over
images and colour channels, which composes with the thread pool and with PyWavelets (which also
releases the GIL) without nesting two thread pools.

The adaptive Wiener shrink needs, for each coefficient, the mean of ``x**2`` over 3×3, 5×5, 7×7 and
9×9 windows with zero padding.  All four come from one sweep per row (vertical sums grown radius
by radius, horizontal sums as shifted adds), instead of the reference path's four box filters.  The
2-D DWT runs here too (PyWavelets-compatible), filtering along axis 0 so inner loops run over
contiguous columns.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = [
    "DWT_TAPS",
    "dft_wiener_gain",
    "dwt2_level",
    "gray_zero_mean",
    "idwt2_level",
    "ml_accumulate",
    "wavelet_noise_plane",
    "wiener_shrink_inplace",
    "zero_mean_inplace",
]

_PAD = 4  # largest window radius of the adaptive Wiener shrink (windows 3, 5, 7, 9)
#: 1 / window area, indexed by radius
_INV_AREA = np.array([1.0 / (2 * r + 1) ** 2 if r else 0.0 for r in range(_PAD + 1)])

_OPTS = {"nogil": True, "cache": True, "fastmath": False}


@njit(**_OPTS)
def _wiener_gain(sq, h, w, noise_var, gain):
    """Adaptive Wiener gain ``v / (s2 + v)`` of every coefficient, into ``gain`` (h×w float32).

    ``sq`` holds the squared coefficients with a zero border of 4 on every side ((h+8)×(w+8),
    float32).  ``s2`` is the minimum over windows 3, 5, 7, 9 of ``max(mean(x**2) - v, 0)``, each
    mean a plain box average (zero padding, divided by w² also at the borders).  Per row, the
    vertical sums grow from radius 1 to 4 by adding two rows each time, and each radius's
    horizontal sum is 2r+1 shifted adds: every inner loop is a short, contiguous pass over the row
    that vectorises (one fused loop with all 24 loads does not, and is slower).  The sums are
    local (at most 81 terms), so float32 keeps them to ~1e-6.
    """
    wp = w + 2 * _PAD
    vsum = np.empty(wp, dtype=np.float32)
    hsum = np.empty(w, dtype=np.float32)
    best = np.empty(w, dtype=np.float32)
    nv = np.float32(noise_var)
    zero = np.float32(0.0)
    for i in range(h):
        ip = i + _PAD
        for j in range(wp):
            vsum[j] = sq[ip, j]
        for j in range(w):
            best[j] = np.inf
        for r in range(1, _PAD + 1):
            above = sq[ip - r]
            below = sq[ip + r]
            for j in range(wp):
                vsum[j] += above[j] + below[j]
            for j in range(w):
                hsum[j] = vsum[j + _PAD - r]
            for dj in range(-r + 1, r + 1):
                off = _PAD + dj
                for j in range(w):
                    hsum[j] += vsum[j + off]
            inv = np.float32(_INV_AREA[r])
            # ternaries, not min()/max(): they vectorise
            for j in range(w):
                var = hsum[j] * inv - nv
                var = var if var > zero else zero
                best[j] = var if var < best[j] else best[j]
        g = gain[i]
        for j in range(w):
            g[j] = nv / (best[j] + nv)


@njit(**_OPTS)
def _shrink_plane(x, noise_var):
    """Adaptive Wiener shrink (method §1 step 2) of one float32 h×w band, in place."""
    h, w = x.shape
    sq = np.zeros((h + 2 * _PAD, w + 2 * _PAD), dtype=np.float32)
    for i in range(h):
        for j in range(w):
            v = x[i, j]
            sq[i + _PAD, j + _PAD] = v * v
    gain = np.empty((h, w), dtype=np.float32)
    _wiener_gain(sq, h, w, noise_var, gain)
    for i in range(h):
        for j in range(w):
            x[i, j] = x[i, j] * gain[i, j]


@njit(**_OPTS)
def wiener_shrink_inplace(bands, noise_var):
    """Adaptive Wiener shrink (method §1 step 2) of each plane of ``bands`` (C×h×w), in place."""
    for c in range(bands.shape[0]):
        _shrink_plane(bands[c], noise_var)


@njit(**_OPTS)
def zero_mean_inplace(w):
    """Zero-mean per CFA sub-lattice (method §1 step 4), in place, float64 sums.

    Per lattice, subtracting the global mean and then the row and column means (taken after the
    global mean) is ``x - row_mean - col_mean + global_mean`` with all three means of the input, so
    one pass collects the sums and one pass subtracts.
    """
    h, wd = w.shape
    for di in range(2):
        for dj in range(2):
            nr = (h - di + 1) // 2
            nc = (wd - dj + 1) // 2
            if nr == 0 or nc == 0:
                continue
            rows = np.zeros(nr)
            cols = np.zeros(nc)
            for a in range(nr):
                for b in range(nc):
                    v = np.float64(w[di + 2 * a, dj + 2 * b])
                    rows[a] += v
                    cols[b] += v
            total = rows.sum()
            g = total / (nr * nc)
            for a in range(nr):
                rows[a] /= nc
            for b in range(nc):
                cols[b] /= nr
            for a in range(nr):
                ra = rows[a] - g
                for b in range(nc):
                    w[di + 2 * a, dj + 2 * b] = w[di + 2 * a, dj + 2 * b] - ra - cols[b]


@njit(**_OPTS)
def gray_zero_mean(noise, weights, h, w):
    """Gray (method §1 step 3) of the C×H'×W' noise cropped to h×w, zero-meaned (step 4).

    Two passes: the first forms the gray image and the row/column sums of each CFA lattice, the
    second subtracts ``row mean + column mean - lattice mean`` (see :func:`zero_mean_inplace`) and
    collects the sums for the standard deviation.  Returns ``(W, std)``: float32 h×w and its
    sample standard deviation (ddof=1), which the Fourier-domain Wiener filter needs next.
    """
    out = np.empty((h, w), dtype=np.float32)
    row_sums = np.zeros((h, 2))  # [i, column parity]
    col_sums = np.zeros((2, w))  # [row parity, j]
    gray = noise.shape[0] == 3
    w0 = weights[0]
    w1 = weights[1]
    w2 = weights[2]
    for i in range(h):
        pi = i & 1
        for j in range(w):
            if gray:
                v = noise[0, i, j] * w0 + noise[1, i, j] * w1 + noise[2, i, j] * w2
            else:
                v = noise[0, i, j]
            out[i, j] = v
            col_sums[pi, j] += v
        s0 = 0.0
        s1 = 0.0
        for j in range(0, w, 2):
            s0 += out[i, j]
        for j in range(1, w, 2):
            s1 += out[i, j]
        row_sums[i, 0] = s0
        row_sums[i, 1] = s1
    n_rows = np.array([(h + 1) // 2, h // 2])
    n_cols = np.array([(w + 1) // 2, w // 2])
    lattice_mean = np.zeros((2, 2))
    for pi in range(2):
        for pj in range(2):
            n = n_rows[pi] * n_cols[pj]
            if n > 0:
                total = 0.0
                for i in range(pi, h, 2):
                    total += row_sums[i, pj]
                lattice_mean[pi, pj] = total / n
    for i in range(h):
        for pj in range(2):
            if n_cols[pj] > 0:
                row_sums[i, pj] /= n_cols[pj]
    for pi in range(2):
        if n_rows[pi] > 0:
            for j in range(w):
                col_sums[pi, j] /= n_rows[pi]
    s = 0.0
    ss = 0.0
    for i in range(h):
        pi = i & 1
        for j in range(w):
            pj = j & 1
            v = out[i, j] - (row_sums[i, pj] + col_sums[pi, j] - lattice_mean[pi, pj])
            out[i, j] = v
            s += v
            ss += np.float64(v) * v
    n = h * w
    var = (ss - s * s / n) / (n - 1) if n > 1 else 0.0
    return out, np.sqrt(max(var, 0.0))


@njit(**_OPTS)
def dft_wiener_gain(fhalf, h, w, noise_var):
    """Fourier-domain Wiener filter (method §1 step 5) of a real-input half spectrum, in place.

    ``fhalf`` is ``rfft2(W)`` (h × (w//2+1)).  The shrink runs on the full magnitude ``A`` (h×w,
    rebuilt from the half by Hermitian symmetry) and its gain ``A'/A = v / (s2 + v)`` (0 where
    ``A == 0``).  ``real(ifft2(F * g))`` equals ``irfft2`` of the half spectrum times the Hermitian
    part of the gain, ``(g[k, l] + g[-k, -l]) / 2``, which is what is written back.
    """
    wh = fhalf.shape[1]
    scale = np.float32(1.0 / (h * w))
    # |F|**2 / (h*w) over the full spectrum (zero border of 4), mirrored from the half
    sq = np.zeros((h + 2 * _PAD, w + 2 * _PAD), dtype=np.float32)
    for k in range(h):
        for ll in range(wh):
            z = fhalf[k, ll]
            sq[k + _PAD, ll + _PAD] = (z.real * z.real + z.imag * z.imag) * scale
    for k in range(h):
        km = (h - k) % h
        for ll in range(wh, w):
            sq[k + _PAD, ll + _PAD] = sq[km + _PAD, w - ll + _PAD]
    gain = np.empty((h, w), dtype=np.float32)
    _wiener_gain(sq, h, w, noise_var, gain)
    for k in range(h):
        km = (h - k) % h
        for ll in range(wh):
            z = fhalf[k, ll]
            if z.real == 0.0 and z.imag == 0.0:
                continue
            lm = (w - ll) % w
            fhalf[k, ll] = z * (np.float32(0.5) * (gain[k, ll] + gain[km, lm]))


# --------------------------------------------------------------------------------------------
# One level of the 2-D DWT and its inverse, PyWavelets-compatible ("symmetric" mode)
# --------------------------------------------------------------------------------------------
# PyWavelets' C loops filter one row at a time; these filter along axis 0 so the inner loop runs
# over contiguous columns (vectorised), and transpose in between.  Same sums as PyWavelets:
# ``out[o] = sum_j f[j] * x[2o + 1 - j]`` with half-sample symmetric extension, and the inverse's
# "valid" upsampling convolution.  Valid when every axis is at least len(filter) - 1 long (the
# extension then reflects once) and for 8-tap filters (db4, DWT_TAPS); the caller falls back to
# PyWavelets otherwise.


_TILE = 32


@njit(**_OPTS)
def _transpose(a):
    """Contiguous transpose of a 2-D float32 array, in cache-sized tiles."""
    n, m = a.shape
    out = np.empty((m, n), dtype=np.float32)
    for i0 in range(0, n, _TILE):
        i1 = min(i0 + _TILE, n)
        for j0 in range(0, m, _TILE):
            j1 = min(j0 + _TILE, m)
            for j in range(j0, j1):
                for i in range(i0, i1):
                    out[j, i] = a[i, j]
    return out


#: Filter length the DWT kernels are written for (db4); the caller checks it.
DWT_TAPS = 8


@njit(**_OPTS)
def _dwt_axis0(x, lo, hi):
    """One DWT step along axis 0 of float32 ``x`` (n×w, 8-tap filters): (approx, detail), m×w.

    The 8 taps are spelled out so each output row is one vectorised pass over the columns that
    reads 8 input rows and writes once (no read-modify-write per tap).
    """
    n, w = x.shape
    pad = DWT_TAPS - 1
    m = (n + DWT_TAPS - 1) // 2
    xp = np.empty((n + 2 * pad, w), dtype=np.float32)
    xp[pad : pad + n] = x
    for k in range(pad):
        xp[pad - 1 - k] = x[k]
        xp[pad + n + k] = x[n - 1 - k]
    a = np.empty((m, w), dtype=np.float32)
    d = np.empty((m, w), dtype=np.float32)
    l0, l1, l2, l3, l4, l5, l6, l7 = lo[0], lo[1], lo[2], lo[3], lo[4], lo[5], lo[6], lo[7]
    h0, h1, h2, h3, h4, h5, h6, h7 = hi[0], hi[1], hi[2], hi[3], hi[4], hi[5], hi[6], hi[7]
    for o in range(m):
        r = 2 * o + 1 + pad  # out[o] = sum_j f[j] * x[2o + 1 - j]
        x0, x1, x2, x3 = xp[r], xp[r - 1], xp[r - 2], xp[r - 3]
        x4, x5, x6, x7 = xp[r - 4], xp[r - 5], xp[r - 6], xp[r - 7]
        ao = a[o]
        do = d[o]
        for c in range(w):
            v0, v1, v2, v3 = x0[c], x1[c], x2[c], x3[c]
            v4, v5, v6, v7 = x4[c], x5[c], x6[c], x7[c]
            ao[c] = l0 * v0 + l1 * v1 + l2 * v2 + l3 * v3 + l4 * v4 + l5 * v5 + l6 * v6 + l7 * v7
            do[c] = h0 * v0 + h1 * v1 + h2 * v2 + h3 * v3 + h4 * v4 + h5 * v5 + h6 * v6 + h7 * v7
    return a, d


@njit(**_OPTS)
def _idwt_axis0(a, d, rlo, rhi):
    """Inverse of :func:`_dwt_axis0` (PyWavelets' idwt, 8 taps): (2m - 6)×w float32."""
    m, w = a.shape
    out = np.empty((2 * m - DWT_TAPS + 2, w), dtype=np.float32)
    e0, e1, e2, e3 = rlo[0], rlo[2], rlo[4], rlo[6]
    o0, o1, o2, o3 = rlo[1], rlo[3], rlo[5], rlo[7]
    f0, f1, f2, f3 = rhi[0], rhi[2], rhi[4], rhi[6]
    g0, g1, g2, g3 = rhi[1], rhi[3], rhi[5], rhi[7]
    for i in range(DWT_TAPS // 2 - 1, m):
        o = 2 * (i - DWT_TAPS // 2 + 1)
        a0, a1, a2, a3 = a[i], a[i - 1], a[i - 2], a[i - 3]
        d0, d1, d2, d3 = d[i], d[i - 1], d[i - 2], d[i - 3]
        even = out[o]
        odd = out[o + 1]
        for c in range(w):
            even[c] = (e0 * a0[c] + f0 * d0[c]) + (e1 * a1[c] + f1 * d1[c]) + (
                e2 * a2[c] + f2 * d2[c]) + (e3 * a3[c] + f3 * d3[c])
            odd[c] = (o0 * a0[c] + g0 * d0[c]) + (o1 * a1[c] + g1 * d1[c]) + (
                o2 * a2[c] + g2 * d2[c]) + (o3 * a3[c] + g3 * d3[c])
    return out


@njit(**_OPTS)
def dwt2_level(x, lo, hi):
    """One level of ``pywt.dwt2(x, mode="symmetric")`` on float32 ``x``.

    Returns ``(cA, cH_T, cV_T, cD_T)``: the approximation in image orientation and the three
    detail bands *transposed* (the adaptive Wiener shrink is transpose-invariant, so they stay
    that way until :func:`idwt2_level`).
    """
    lo_rows, hi_rows = _dwt_axis0(x, lo, hi)
    aa_t, ad_t = _dwt_axis0(_transpose(lo_rows), lo, hi)
    da_t, dd_t = _dwt_axis0(_transpose(hi_rows), lo, hi)
    return _transpose(aa_t), da_t, ad_t, dd_t


@njit(**_OPTS)
def idwt2_level(ca, ch_t, cv_t, cd_t, rlo, rhi):
    """Inverse of :func:`dwt2_level` (``pywt.idwt2``); ``ca`` is cropped to the details' size."""
    m1, m0 = ch_t.shape
    ca_t = _transpose(ca[:m0, :m1])
    lo_t = _idwt_axis0(ca_t, cv_t, rlo, rhi)
    hi_t = _idwt_axis0(ch_t, cd_t, rlo, rhi)
    return _idwt_axis0(_transpose(lo_t), _transpose(hi_t), rlo, rhi)


# --------------------------------------------------------------------------------------------
# Camera fingerprint (method §2): one pass per image for both running sums
# --------------------------------------------------------------------------------------------


@njit(**_OPTS)
def ml_accumulate(image, noise, rp_sum, nn_sum, knee, width, min_max):
    """Add one image to the running sums of the maximum-likelihood fingerprint, per channel.

    ``rp_sum += W·I/255`` and ``nn_sum += (s(I)·m(I))**2`` with ``s`` the intensity scale
    (``I/knee`` below ``knee``, ``exp(-(I-knee)**2/width)`` above) and ``m`` the saturation mask
    (0 where a pixel equals its channel's maximum, that maximum exceeds ``min_max``, and a
    4-neighbour with wrap-around equals it too).  ``image`` is H×W×C float32 (0..255), ``noise``
    C×H'×W' (cropped here), the sums C×H×W float32.
    """
    h, w, nch = image.shape
    inv255 = np.float32(1.0 / 255.0)
    inv_knee = np.float32(1.0 / knee)
    for c in range(nch):
        top = image[0, 0, c]
        for i in range(h):
            for j in range(w):
                top = max(top, image[i, j, c])
        masked = top > min_max
        for i in range(h):
            up = (i - 1) % h
            down = (i + 1) % h
            for j in range(w):
                v = image[i, j, c]
                rp_sum[c, i, j] += noise[c, i, j] * (v * inv255)
                if v < knee:
                    s = v * inv_knee
                else:
                    d = v - knee
                    s = np.float32(np.exp(-(d * d) / width))
                if masked and v == top:
                    left = (j - 1) % w
                    right = (j + 1) % w
                    if (
                        image[up, j, c] == top
                        or image[down, j, c] == top
                        or image[i, left, c] == top
                        or image[i, right, c] == top
                    ):
                        s = np.float32(0.0)
                nn_sum[c, i, j] += s * s


@njit(**_OPTS)
def wavelet_noise_plane(plane, lo, hi, rlo, rhi, noise_var, levels):
    """Steps 1–2 of method §1 on one float32 plane (every side >= len(lo) - 1), all in one call.

    ``levels`` DWT levels (:func:`dwt2_level`), the Wiener shrink of every detail band, the
    coarsest approximation set to zero, and the inverse (:func:`idwt2_level`).  Returns the
    reconstruction, one pixel larger than ``plane`` along an odd side (as PyWavelets).
    """
    details = []
    approx = plane
    for _ in range(levels):
        approx, ch_t, cv_t, cd_t = dwt2_level(approx, lo, hi)
        _shrink_plane(ch_t, noise_var)
        _shrink_plane(cv_t, noise_var)
        _shrink_plane(cd_t, noise_var)
        details.append((ch_t, cv_t, cd_t))
    rec = np.zeros_like(approx)
    for k in range(levels - 1, -1, -1):
        ch_t, cv_t, cd_t = details[k]
        rec = idwt2_level(rec, ch_t, cv_t, cd_t, rlo, rhi)
    return rec
