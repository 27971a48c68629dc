"""Sample types and planes: 0..255 float, uint8, RGB from gray or RGBA."""

from __future__ import annotations

import numpy as np

from ..errors import InputError

__all__ = ["as_rgb", "drop_alpha", "to_float255", "to_uint8"]


def drop_alpha(image: np.ndarray) -> np.ndarray:
    """Gray or colour planes only: H×W×1 → H×W, gray + alpha → its gray plane, RGBA → RGB.

    Any other layout is returned as it is (a view, never a copy).
    """
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] in (1, 2):  # gray, or gray + alpha
        return arr[..., 0]
    if arr.ndim == 3 and arr.shape[2] == 4:  # RGBA
        return arr[..., :3]
    return arr


def as_rgb(image: np.ndarray, name: str = "image") -> np.ndarray:
    """``image`` as H×W×3: alpha dropped (:func:`drop_alpha`), a gray plane repeated three times.

    Raises
    ------
    InputError
        Neither gray nor colour (the message names ``name`` and the shape).
    """
    arr = drop_alpha(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise InputError(f"{name}: unsupported image shape {arr.shape} (need gray or RGB)")
    return arr



def to_float255(image) -> np.ndarray:
    """float32 copy of ``image`` in the 0..255 scale: uint16 is divided by 257, float is kept."""
    arr = np.asarray(image)
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) * np.float32(255.0 / 65535.0)
    if not (np.issubdtype(arr.dtype, np.number)) or arr.dtype == bool:
        raise InputError(f"image must be numeric, got dtype {arr.dtype}")
    return arr.astype(np.float32)


def to_uint8(image) -> np.ndarray:
    """``image`` as uint8: uint8 is returned as it is, uint16 scaled (:func:`to_float255`), other
    values (the 0..255 scale) rounded, never truncated, and clipped to 0..255."""
    arr = np.asarray(image)
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        arr = to_float255(arr)
    out = np.rint(arr)
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)
