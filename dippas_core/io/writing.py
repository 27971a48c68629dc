"""Writing images: PNG or TIFF, atomically, with no metadata; floats rounded, never truncated."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..errors import InputError
from ._formats import TIFF_SUFFIXES

__all__ = ["write_image"]


def _to_integer(array, bit_depth: int) -> np.ndarray:
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise InputError(f"image to write must be H×W or H×W×3, got shape {arr.shape}")
    if arr.size == 0:
        raise InputError("image to write is empty")
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise InputError(f"image to write must be real numbers, got dtype {arr.dtype}")
    if bit_depth == 8:
        if arr.dtype == np.uint8:
            return arr
        if arr.dtype == np.uint16:
            arr = arr.astype(np.float64) / 257.0
        scaled = arr.astype(np.float64)
        top = 255.0
    else:
        if arr.dtype == np.uint16:
            return arr
        scaled = arr.astype(np.float64) * (65535.0 / 255.0)  # float/uint8 are 0..255 scale
        top = 65535.0
    if not np.isfinite(scaled).all():
        raise InputError("image to write contains NaN or infinite values")
    out = np.clip(np.rint(scaled), 0, top)
    return out.astype(np.uint8 if bit_depth == 8 else np.uint16)


def write_image(path: str | os.PathLike, array, *, bit_depth: int = 8) -> Path:
    """Write ``array`` as PNG or TIFF (by suffix), atomically and with no metadata.

    Parameters
    ----------
    path : str or path-like
        ``.png``, ``.tif`` or ``.tiff``.  An existing file is replaced only once the new one is
        complete.
    array : array_like
        H×W or H×W×3: uint8, uint16 or float in the 0..255 scale.  Float values are rounded to the
        nearest integer (``np.rint``) and clipped, never truncated.
    bit_depth : {8, 16}
        Sample depth of the file; 16-bit scales 0..255 to 0..65535.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".png", *TIFF_SUFFIXES):
        raise InputError(f"{path}: can only write .png, .tif or .tiff, not {path.suffix!r}")
    if bit_depth not in (8, 16):
        raise InputError(f"bit_depth must be 8 or 16, got {bit_depth!r}")
    arr = np.ascontiguousarray(_to_integer(array, bit_depth))
    with atomic_path(path) as tmp:
        if suffix in TIFF_SUFFIXES:
            import tifffile

            tifffile.imwrite(
                tmp,
                arr,
                photometric="rgb" if arr.ndim == 3 else "minisblack",
                metadata=None,
                software=False,
            )
        elif bit_depth == 16:
            import imagecodecs  # libpng: IHDR, IDAT and IEND only (Pillow cannot write 16-bit RGB)

            tmp.write_bytes(imagecodecs.png_encode(arr.reshape(*arr.shape[:2], -1)))
        else:
            from PIL import Image

            Image.fromarray(arr).save(tmp, format="PNG")  # Pillow adds no ancillary chunks
    return path
