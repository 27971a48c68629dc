"""Checks that a run folder's files agree with each other before anything is loaded."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..jsonio import read_json
from ..snapshots import SnapshotStore, TileSums
from .format import PHOTO, REFERENCE

__all__ = ["DamagedRunError"]


class DamagedRunError(InputError):
    """A run folder whose files contradict each other or miss what a run needs."""

    def __init__(self, path: str | os.PathLike, problem: str):
        super().__init__(
            f"damaged run folder {path}: {problem}; it cannot be opened or assembled "
            "(run the inversion again into a new folder)"
        )


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check_store_meta(path: Path, name: str, shape: tuple[int, int], tile: int | None) -> None:
    """The snapshot store's or tile sums' JSON agrees with ``config.json``."""
    try:
        meta = read_json(path / name)
    except FileNotFoundError:
        raise DamagedRunError(path, f"{name} is missing") from None
    except (OSError, ValueError) as exc:
        raise DamagedRunError(path, f"{name} cannot be read ({exc})") from None
    if not isinstance(meta, dict):
        raise DamagedRunError(path, f"{name} is not a JSON object")
    for key in ("height", "width") + (("tile",) if tile is not None else ()):
        if not _positive_int(meta.get(key)):
            raise DamagedRunError(
                path, f"{name}: {key} must be a positive whole number, got {meta.get(key)!r}"
            )
    if (meta["height"], meta["width"]) != shape:
        raise DamagedRunError(
            path, f"{name} says {meta['height']}×{meta['width']} but config.json says "
            f"{shape[0]}×{shape[1]}"
        )
    if tile is not None and meta["tile"] != tile:
        raise DamagedRunError(path, f"{name} says tile {meta['tile']}, config.json {tile}")


def _check_run(path: Path, config: dict) -> None:
    """Raise :class:`DamagedRunError` naming the first thing a run folder lacks or garbles.

    Only headers and small JSON files are read: the photo, reference and stores are checked by
    their declared shapes, never loaded here.
    """
    from ..io import npy_header

    if config.get("mode") not in ("aware", "blind"):
        raise DamagedRunError(path, f"config.json: mode must be aware or blind, "
                              f"got {config.get('mode')!r}")
    tile = config.get("tile")
    if not _positive_int(tile):
        raise DamagedRunError(path, f"config.json: tile must be a positive whole number, "
                              f"got {tile!r}")
    sigma = config.get("sigma")
    if isinstance(sigma, bool) or not isinstance(sigma, int | float) or not sigma > 0 or (
        not np.isfinite(sigma)
    ):
        raise DamagedRunError(path, f"config.json: sigma must be a positive number, got {sigma!r}")
    photo = config.get("photo")
    if not isinstance(photo, dict) or not all(
        _positive_int(photo.get(k)) for k in ("height", "width")
    ):
        raise DamagedRunError(path, f"config.json: photo height and width missing or not "
                              f"positive ({photo!r})")
    shape = (photo["height"], photo["width"])
    from ..io import limits

    if shape[0] * shape[1] > limits.MAX_PIXELS:
        raise DamagedRunError(path, f"config.json declares a {shape[0]}×{shape[1]} photo, over "
                              f"the pixel limit of {limits.MAX_PIXELS}")
    _check_store_meta(path, SnapshotStore.META, shape, None)
    _check_store_meta(path, TileSums.META, shape, tile)
    for name, want in ((PHOTO, (*shape, 3)), (REFERENCE, shape)):
        if not (path / name).is_file():
            raise DamagedRunError(path, f"{name} is missing")
        try:
            found, dtype = npy_header(path / name)
        except InputError as exc:
            raise DamagedRunError(path, str(exc)) from None
        if found != want or dtype.kind not in "uif":
            raise DamagedRunError(
                path, f"{name} is {dtype} {found}, expected a numeric array of shape {want}"
            )


def _load_part(path: Path, name: str, shape: tuple[int, ...], what: str) -> np.ndarray:
    """The run folder ``path``'s array ``name`` (photo, reference), checked as it is read."""
    from ..io import load_npy

    try:
        return load_npy(path / name, shape=shape, what=what)
    except InputError as exc:
        raise DamagedRunError(path, str(exc)) from None


#: Name prefix of temporary run folders: ``dippas-run-<owner pid>-<random>`` in the temp folder.
