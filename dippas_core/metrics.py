"""Image quality and detection metrics: PSNR, ROC/AUC and the DIPPAS trade-off ``C`` (method §3)."""

from __future__ import annotations

import numpy as np

from ._validation import check_positive, check_same_size
from .errors import InputError

__all__ = ["psnr", "roc_auc", "roc_curve", "tradeoff_c"]


def _numeric(x, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise InputError(f"{name} must be real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise InputError(f"{name} contains NaN or infinite values")
    return arr


#: Elements per float64 chunk of :func:`psnr` (8 MiB): a whole photo is never copied at once.
_PSNR_CHUNK = 1 << 20


def _real(x, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise InputError(f"{name} must be real numbers, got dtype {arr.dtype}")
    return arr


def psnr(a, b, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB, ``10·log10(data_range² / MSE)``; inf for identical inputs.

    ``a`` and ``b`` must share their shape (H×W or H×W×3, any numeric dtype, same scale).  The
    squared differences are summed in float64 over chunks of rows, so a 24-MP photo costs a few
    MiB here instead of four float64 copies of it (2.3 GB).
    """
    x = _real(a, "a")
    y = _real(b, "b")
    if x.shape != y.shape:
        check_same_size(x, y, "a", "b")
        raise InputError(f"a has shape {x.shape} but b has shape {y.shape}")
    if x.size == 0:
        raise InputError("psnr of empty arrays")
    data_range = check_positive(data_range, "data_range")
    x2 = x.reshape(x.shape[0], -1) if x.ndim else x.reshape(1, 1)
    y2 = y.reshape(x2.shape)
    rows = max(1, _PSNR_CHUNK // max(1, x2.shape[1]))
    total = 0.0
    for i in range(0, x2.shape[0], rows):
        xs = x2[i : i + rows].astype(np.float64)
        ys = y2[i : i + rows].astype(np.float64)
        for arr, name in ((xs, "a"), (ys, "b")):
            if not np.isfinite(arr).all():
                raise InputError(f"{name} contains NaN or infinite values")
        xs -= ys
        total += float(np.einsum("ij,ij->", xs, xs))
    mse = total / x.size
    return float("inf") if mse == 0 else float(10.0 * np.log10(data_range**2 / mse))


def _scores_labels(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = _numeric(scores, "scores").ravel()
    lab = np.asarray(labels).ravel()
    if lab.shape != s.shape:
        raise InputError(f"scores has {s.size} entries but labels has {lab.size}")
    if lab.dtype != bool:
        uniq = np.unique(lab)
        if not np.isin(uniq, [0, 1]).all():
            raise InputError(f"labels must be boolean or 0/1, got values {uniq[:5].tolist()}")
        lab = lab.astype(bool)
    if lab.all() or not lab.any():
        raise InputError("ROC needs at least one positive and one negative label")
    return s, lab


def roc_curve(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve of ``scores`` (higher = more likely positive) against boolean ``labels``.

    Every distinct score is one threshold (``score >= threshold`` is called positive), so tied
    scores move the curve diagonally.  The first point is ``(0, 0)`` at threshold ``+inf``.

    Returns
    -------
    fpr, tpr, thresholds : numpy.ndarray
        Non-decreasing rates and decreasing thresholds, same length.
    """
    s, lab = _scores_labels(scores, labels)
    order = np.argsort(-s, kind="mergesort")
    s, lab = s[order], lab[order]
    # last index of each run of equal scores
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tp = np.cumsum(lab)[last]
    fp = (last + 1) - tp
    tpr = np.r_[0.0, tp / lab.sum()]
    fpr = np.r_[0.0, fp / (~lab).sum()]
    thresholds = np.r_[np.inf, s[last]]
    return fpr, tpr, thresholds


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve (trapezoids; ties count one half, as Mann–Whitney U)."""
    fpr, tpr, _ = roc_curve(scores, labels)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def tradeoff_c(psnr_db, auc):
    """DIPPAS trade-off ``C = PSNR · (1 − 2·|AUC − 0.5|)`` (journal version); arrays broadcast."""
    p = _numeric(psnr_db, "psnr")
    a = _numeric(auc, "auc")
    if np.any((a < 0) | (a > 1)):
        raise InputError(f"auc must lie in [0, 1], got {auc!r}")
    c = p * (1.0 - 2.0 * np.abs(a - 0.5))
    return float(c) if c.ndim == 0 else c
