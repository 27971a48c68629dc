"""NumPy files: headers checked before any data is read, objects (pickles) never loaded."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputError

__all__ = ["load_npy", "npy_header", "npz_header", "npz_headers"]


def _npy_header(fh, source: str) -> tuple[tuple[int, ...], np.dtype]:
    from numpy.lib import format as npformat

    try:
        version = npformat.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = npformat.read_array_header_1_0(fh)
        elif version in ((2, 0), (3, 0)):
            shape, _, dtype = npformat.read_array_header_2_0(fh)
        else:
            raise ValueError(f"unknown .npy format version {version}")
    except (ValueError, EOFError, OSError, SyntaxError) as exc:
        raise InputError(f"{source}: not a NumPy array file ({exc})") from None
    if dtype.hasobject:
        raise InputError(
            f"{source}: holds Python objects, not plain numbers; such files are never loaded "
            "(loading them could run code)"
        )
    return tuple(int(n) for n in shape), dtype


def npy_header(path: str | os.PathLike) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of a ``.npy`` file from its header alone.

    Raises
    ------
    InputError
        Not a ``.npy`` file, or one holding Python objects (never loaded).
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return _npy_header(fh, str(path))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None


def npz_header(path: str | os.PathLike, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of array ``name`` in a ``.npz`` archive, from its header alone.

    Only the first bytes of the member are inflated, so a small archive holding a huge array
    can be refused by size before its data is read.

    Raises
    ------
    InputError
        Not a zip archive, no member ``name``, or a member that is not a plain ``.npy`` array.
    """
    import zipfile

    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            if f"{name}.npy" not in zf.namelist():
                raise InputError(f"{path}: no array {name!r} in this .npz file")
            with zf.open(f"{name}.npy") as fh:
                return _npy_header(fh, f"{path} ({name})")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
        raise InputError(
            f"{path}: not a NumPy .npz archive (a zip of .npy arrays): {exc}"
        ) from None


def npz_headers(path: str | os.PathLike) -> dict[str, tuple[tuple[int, ...], np.dtype, int]]:
    """``name -> (shape, dtype, declared bytes)`` of every array in a ``.npz`` archive.

    Only each member's first bytes are inflated; the declared bytes are the size the zip says
    the member inflates to (what reading it would cost), so a small archive that inflates to
    gigabytes is refused before its data is read.

    Raises
    ------
    InputError
        Not a zip archive, a member that is not a plain ``.npy`` array (Python objects are never
        loaded), or a member whose declared size is smaller than its header says.
    """
    import math
    import zipfile

    path = Path(path)
    out: dict[str, tuple[tuple[int, ...], np.dtype, int]] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                name = info.filename.removesuffix(".npy")
                if name in out:
                    raise InputError(f"{path}: holds the array {name!r} twice")
                with zf.open(info) as fh:
                    shape, dtype = _npy_header(fh, f"{path} ({name})")
                    header = fh.tell()
                if info.file_size < header + math.prod(shape) * dtype.itemsize:
                    raise InputError(f"{path} ({name}): shorter than its header declares")
                out[name] = (shape, dtype, int(info.file_size))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError,
            RuntimeError) as exc:
        raise InputError(
            f"{path}: not a NumPy .npz archive (a zip of .npy arrays): {exc}"
        ) from None
    return out


def load_npy(
    path: str | os.PathLike, *, shape: tuple[int, ...] | None = None, what: str = "array"
) -> np.ndarray:
    """Load a plain numeric ``.npy`` array, its header checked first (objects never loaded).

    Parameters
    ----------
    path
        The ``.npy`` file.
    shape
        When given, the shape the array must have; checked from the header, before the data.
    what
        What the array is, for messages.
    """
    path = Path(path)
    found, dtype = npy_header(path)
    if shape is not None and found != tuple(shape):
        raise InputError(f"{path}: the {what} is {found}, expected {tuple(shape)}")
    if dtype.kind not in "uif" or dtype.itemsize > 8:
        raise InputError(f"{path}: the {what} holds {dtype}, not plain numbers")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path}: the {what} is damaged ({exc})") from None
