"""Input checks shared by the public entry points."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import InputError, ShapeMismatchError

__all__ = ["as_image", "as_plane", "check_same_size", "check_positive", "check_known_fields"]


def check_known_fields(cls: type, data: Mapping[str, Any], what: str) -> None:
    """Refuse keys of ``data`` that are no field of the dataclass ``cls`` (likely typos).

    The error reads ``unknown {what}: a, b`` (keys sorted).
    """
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise InputError(f"unknown {what}: {', '.join(unknown)}")


def as_image(x, name: str = "image", *, min_size: int = 1) -> np.ndarray:
    """Return ``x`` as float32 H×W or H×W×3 (a copy only when needed), or raise InputError."""
    try:
        arr = np.asarray(x)
    except Exception as exc:  # noqa: BLE001 - anything not array-like
        raise InputError(f"{name} is not an array: {type(x).__name__}") from exc
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.number)):
        raise InputError(f"{name} must be numeric, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise InputError(f"{name} must be real, got dtype {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise InputError(f"{name} must be H×W or H×W×3, got shape {arr.shape}")
    if min(arr.shape[:2]) < min_size:
        raise InputError(
            f"{name} is {arr.shape[0]}×{arr.shape[1]}, "
            f"smaller than the minimum {min_size}×{min_size}"
        )
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise InputError(f"{name} contains NaN or infinite values")
    return arr


def as_plane(x, name: str = "array", *, min_size: int = 1) -> np.ndarray:
    """Return ``x`` as a finite float32 H×W array, or raise InputError."""
    arr = as_image(x, name, min_size=min_size)
    if arr.ndim != 2:
        raise InputError(f"{name} must be 2-D (H×W), got shape {arr.shape}")
    return arr


def check_same_size(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    """Raise ShapeMismatchError naming both sizes unless ``a`` and ``b`` share H×W."""
    if a.shape[:2] != b.shape[:2]:
        raise ShapeMismatchError(
            f"{name_a} is {a.shape[0]}×{a.shape[1]} but {name_b} is {b.shape[0]}×{b.shape[1]}; "
            "crop them to the same size explicitly (e.g. dippas_core.io.center_crop)"
        )


def check_positive(value: float, name: str) -> float:
    """Return ``value`` as float if it is finite and > 0, else raise InputError."""
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be a number, got {value!r}") from exc
    if not np.isfinite(v) or v <= 0:
        raise InputError(f"{name} must be a finite number > 0, got {value!r}")
    return v
