"""What is published beside an anonymized image, and the full record that is not.

An anonymization's full report names the camera the photo was traced to, its NCC/PCE *before*,
the block-NCC map of the original and the run folder (whose name can name a person).  Published
beside the image, that would undo the anonymization's purpose.  So:

* :func:`published_sidecar` keeps an allow-list of harmless keys (quality, seed, settings,
  versions, device): the JSON that travels with the image;
* :func:`write_forensic_record` writes the full report (scores, maps, source, camera) into the
  run folder or a path the user names, never beside the published image.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

__all__ = [
    "FORENSIC_RECORD",
    "PUBLISHED_FORMAT",
    "published_sidecar",
    "write_forensic_record",
]

#: ``format`` of the published sidecar JSON.
PUBLISHED_FORMAT = "dippas-published-sidecar"
#: File name of the forensic record inside a run folder.
FORENSIC_RECORD = "forensic-record.json"

#: Top-level keys copied to the published sidecar (anything else is dropped).
_TOP = (
    "tool", "created", "mode", "psnr", "seed", "sigma", "crop", "device", "run_status",
    "bit_depth",
)
#: Keys of the nested sections that are copied (settings and counts, no score of the source).
_SECTIONS = {
    "assembly": (
        "B", "L", "tau", "psnr_threshold", "tile", "n_snapshots", "n_candidates", "n_averaged",
        "grid", "dtype", "elapsed_s",
    ),
    "inversion": (
        "status", "stop_reason", "n_iterations", "n_snapshots", "best_psnr", "final_gamma",
        "elapsed_s",
    ),
    "versions": (
        "python", "napari-dippas", "numpy", "scipy", "PyWavelets", "numba", "torch",
    ),
}
#: Settings sections, copied with their plain values (numbers, flags, short words).
_SETTINGS = ("config", "dip_config")


def _plain(value: Any) -> Any:
    """Numbers, flags, None, short words and lists of them; anything else is dropped (None)."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        # settings are short words ("cpu", "cuda:0"); a longer or path-like string could name
        # a person or a place
        return value if len(value) <= 32 and "/" not in value and "\\" not in value else None
    if isinstance(value, list | tuple):
        items = [_plain(v) for v in value]
        return items if all(v is not None for v in items) or not items else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if _plain(v) is not None}
    return None


def published_sidecar(report: dict[str, Any], *, image_name: str | None = None) -> dict[str, Any]:
    """The JSON published beside an anonymized image: an allow-list of ``report``'s keys.

    Kept: PSNR, seed, sigma, crop, the DIP and assembly settings and counts, run status, device,
    package versions.  Never kept: the camera or fingerprint, NCC/PCE (before or after),
    block-NCC maps, the photo's or run folder's name, the environment's free text.

    Parameters
    ----------
    report
        A full report (``anonymize``'s, ``dippas assemble``'s or the plugin's).
    image_name
        The published image's file name (the user chose it), recorded as ``output``.
    """
    from .run import jsonable

    report = jsonable(report)
    out: dict[str, Any] = {"format": PUBLISHED_FORMAT}
    if image_name is not None:
        out["output"] = Path(image_name).name
    for key in _TOP:
        value = _plain(report.get(key))
        if value is not None:
            out[key] = value
    if out.get("mode") not in (None, "aware", "blind"):
        out.pop("mode")
    for key, allowed in _SECTIONS.items():
        section = report.get(key)
        if isinstance(section, dict):
            kept = {k: _plain(section[k]) for k in allowed if k in section}
            out[key] = {k: v for k, v in kept.items() if v is not None}
    for key in _SETTINGS:
        if isinstance(report.get(key), dict):
            out[key] = _plain(report[key])
    return out


def write_forensic_record(
    report: dict[str, Any], path: str | os.PathLike, maps: dict[str, Any] | None = None
) -> Path:
    """Write the full ``report`` (and ``maps``) as JSON to ``path``, atomically; return ``path``.

    ``path`` is a file, or a run folder (then ``RUN/forensic-record.json``).  This record names
    the source camera and its scores: keep it private, never beside the published image.
    """
    from ._atomic import atomic_write_text
    from .run import jsonable

    path = Path(path)
    if path.is_dir():
        path = path / FORENSIC_RECORD
    payload = {**report, "maps": {k: jsonable(v) for k, v in (maps or {}).items()}}
    atomic_write_text(path, json.dumps(jsonable(payload), indent=1, allow_nan=True))
    return path
