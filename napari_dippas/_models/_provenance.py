"""Provenance: the forensic record of a run started from the viewer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "PROVENANCE_FILE", "add_output_to_provenance", "run_provenance", "sha256_array",
    "sha256_file", "write_provenance",
]

#: The forensic record the viewer writes into each run folder it starts (never beside an
#: exported image: that one carries nothing about the source).
PROVENANCE_FILE = "viewer-record.json"


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file's bytes (read in 1 MiB chunks)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_array(array: np.ndarray) -> str:
    """SHA-256 of an image's pixels, shape and dtype (two equal images hash alike)."""
    import hashlib

    a = np.ascontiguousarray(array)
    return hashlib.sha256(f"{a.shape}|{a.dtype}|".encode() + a.tobytes()).hexdigest()


def run_provenance(
    *,
    source_name: str,
    source_path: str | None,
    photo: np.ndarray,
    region: Any,
    fingerprint: dict[str, Any] | None,
    settings: dict[str, Any],
) -> dict[str, Any]:
    """The record of where a run's input came from (written into the run folder).

    Parameters
    ----------
    source_name : str
        The photo layer's name.
    source_path : str, optional
        The file it was opened from (its SHA-256 is recorded), if any.
    photo : np.ndarray
        The whole photo as shown (its pixels' SHA-256 is recorded).
    region : Region
        The part that was anonymized (``y, x, h, w``; the whole photo is a region too).
    fingerprint : dict, optional
        The fingerprint's camera, number of shots, sigma, version (None in blind mode).
    settings : dict
        Everything the user chose.
    """
    import datetime as dt

    from dippas_core.run import environment_info

    from .. import __version__

    return {
        "tool": f"napari-dippas {__version__}",
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "source": {
            "name": source_name,
            "file": Path(source_path).name if source_path else None,
            "file_sha256": sha256_file(source_path) if source_path else None,
            "pixels_sha256": sha256_array(photo),
            "height": int(photo.shape[0]),
            "width": int(photo.shape[1]),
            "dtype": str(photo.dtype),
        },
        "region": region.as_dict(),
        "fingerprint": fingerprint,
        "settings": settings,
        "versions": environment_info(),
        "outputs": [],
    }


def write_provenance(run_dir: str | Path, record: dict[str, Any]) -> Path:
    """Write (or replace) the run folder's :data:`PROVENANCE_FILE` atomically."""
    import json

    from dippas_core.atomic import atomic_write_text
    from dippas_core.run import jsonable

    path = Path(run_dir) / PROVENANCE_FILE
    atomic_write_text(path, json.dumps(jsonable(record), indent=2))
    return path


def add_output_to_provenance(run_dir: str | Path, output: dict[str, Any]) -> bool:
    """Append an output (its name and SHA-256) to the run's record; False if it has none."""
    import json

    path = Path(run_dir) / PROVENANCE_FILE
    if not path.is_file():
        return False
    record = json.loads(path.read_text())
    record.setdefault("outputs", []).append(output)
    write_provenance(run_dir, record)
    return True
