"""JSON in and out: one converter from NumPy-laden reports and settings to what :mod:`json`
writes, and JSON files read within a size bound."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MAX_JSON_BYTES", "jsonable", "read_json"]

#: Largest JSON file read back (a run's settings, a plan, a record): far above any dippas writes,
#: so a file inflated by hand cannot cost the reader gigabytes.
MAX_JSON_BYTES = 64 << 20


def read_json(path: str | Path, *, limit: int = MAX_JSON_BYTES) -> Any:
    """The JSON in ``path``, read within ``limit`` bytes.

    Raises
    ------
    OSError
        The file cannot be read.
    ValueError
        It is larger than ``limit`` or not JSON (``json.JSONDecodeError`` is a ValueError).
    """
    import json

    with open(path, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{path} is larger than {limit >> 20} MiB, more than dippas ever writes")
    return json.loads(data)


def jsonable(value: Any, *, strict: bool = False, arrays: bool = True) -> Any:
    """``value`` made JSON-ready, recursively.

    Objects with ``to_dict`` become that dict, mapping keys strings, tuples lists, NumPy scalars
    Python numbers, arrays lists and paths strings.

    Parameters
    ----------
    value : Any
        A report, a setting or a value of one.
    strict : bool
        Also make it valid strict JSON: NaN and infinities become ``None`` and any other object
        its ``repr``, so ``json.dumps(..., allow_nan=False)`` cannot fail.
    arrays : bool
        ``False`` leaves arrays out (mapping entries and list items) instead of writing them out.

    Examples
    --------
    >>> jsonable({"a": np.float32(0.5), 1: (np.int64(2), float("nan"))}, strict=True)
    {'a': 0.5, '1': [2, None]}
    """

    def convert(v: Any) -> Any:
        if hasattr(v, "to_dict"):
            return convert(v.to_dict())
        if isinstance(v, dict):
            return {str(k): convert(x) for k, x in v.items() if arrays or not _is_array(x)}
        if isinstance(v, list | tuple):
            return [convert(x) for x in v if arrays or not _is_array(x)]
        if isinstance(v, np.ndarray):
            return convert(v.tolist())
        if isinstance(v, np.generic):
            return convert(v.item())
        if isinstance(v, Path):
            return str(v)
        if not strict:
            return v
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if v is None or isinstance(v, bool | int | float | str):
            return v
        return repr(v)

    return convert(value)


def _is_array(value: Any) -> bool:
    return isinstance(value, np.ndarray)
