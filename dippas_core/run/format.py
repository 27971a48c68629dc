"""The run format's names: its files, its version, and the JSON helpers every file of it uses."""

from __future__ import annotations

import contextlib
import platform
from importlib import metadata

from ..jsonio import jsonable

__all__ = [
    "ASSEMBLY",
    "CONFIG",
    "FORMAT",
    "FORMAT_VERSION",
    "HISTORY",
    "HISTORY_FIELDS",
    "MARKER",
    "PHOTO",
    "PHOTO_RUN_DIRS",
    "PHOTO_RUN_FORMAT",
    "PHOTO_RUN_META",
    "REFERENCE",
    "RUN_FILES",
    "VIEWER_RECORD",
    "environment_info",
    "jsonable",
]

CONFIG = "config.json"
PHOTO = "photo.npy"
REFERENCE = "reference.npy"
HISTORY = "history.csv"
#: The B, L, tau last used to assemble the run (written by :meth:`RunDirectory.write_assembly`).
ASSEMBLY = "assembly.json"

FORMAT = "dippas-run"
FORMAT_VERSION = 1
HISTORY_FIELDS = ("iteration", "loss", "psnr", "gamma", "gamma_star", "kept")
#: The file only :meth:`RunDirectory.create` writes: ``--force`` replaces a folder only with it.
MARKER = ".dippas-run"
#: The record of where a run started from the viewer came from (napari-dippas writes it).
VIEWER_RECORD = "viewer-record.json"
#: Every name a run owns inside its folder (``--force`` deletes these and nothing else; no
#: output may be written over them).
RUN_FILES = frozenset({
    MARKER, ".lock", "config.json", "photo.npy", "reference.npy", "history.csv",
    "snapshots.u16", "snapshots.idx", "snapshots.json", "tilesums.f64", "tilesums.json",
    "assembly.json", "forensic-record.json", VIEWER_RECORD,
})

#: A whole-photo run folder (:mod:`dippas_core.tiled`): its marker's format, its plan and
#: settings, and its two folders (``tiles/NNNN/``, each tile's run; ``done/NNNN.npz``, each
#: finished tile's record).  Besides these it owns the names of :data:`RUN_FILES`.
PHOTO_RUN_FORMAT = "dippas-photo-run"
PHOTO_RUN_META = "photo-run.json"
PHOTO_RUN_DIRS = ("tiles", "done")


def environment_info() -> dict[str, str]:
    """Versions of Python and of the packages that change a result (no import of torch)."""
    info = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in ("napari-dippas", "numpy", "scipy", "PyWavelets", "numba", "torch"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            info[dist] = metadata.version(dist)
    return info
