"""Crops of the first two axes of an image, as views."""

from __future__ import annotations

import numpy as np

from ..errors import InputError

__all__ = ["center_crop", "crop_at"]


def _size2(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        try:
            h, w = (int(s) for s in size)
        except (TypeError, ValueError) as exc:
            raise InputError(f"crop size must be an int or (height, width), got {size!r}") from exc
    if h <= 0 or w <= 0:
        raise InputError(f"crop size must be positive, got {h}×{w}")
    return h, w


def center_crop(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Centre crop (a view) of ``size`` (int for a square, or (h, w)); first two axes only.

    The top-left corner is ``((H - h) // 2, (W - w) // 2)``, as in prnu-python's ``cut_ctr``.
    """
    arr = np.asarray(image)
    if arr.ndim < 2:
        raise InputError(f"image must be at least 2-D, got shape {arr.shape}")
    h, w = _size2(size)
    H, W = arr.shape[:2]
    if h > H or w > W:
        raise InputError(f"cannot crop {h}×{w} from an image of {H}×{W}")
    top, left = (H - h) // 2, (W - w) // 2
    return arr[top : top + h, left : left + w]


def crop_at(image: np.ndarray, top: int, left: int, h: int, w: int) -> np.ndarray:
    """Crop (a view) of h×w at (top, left); raises InputError if it does not fit."""
    arr = np.asarray(image)
    H, W = arr.shape[:2]
    try:
        top, left, h, w = (int(v) for v in (top, left, h, w))
    except (TypeError, ValueError) as exc:
        raise InputError(f"crop position and size must be integers, got {top!r}, {left!r}, "
                         f"{h!r}, {w!r}") from exc
    if h <= 0 or w <= 0 or top < 0 or left < 0 or top + h > H or left + w > W:
        raise InputError(f"crop {h}×{w} at ({top}, {left}) does not fit in an image of {H}×{W}")
    return arr[top : top + h, left : left + w]
