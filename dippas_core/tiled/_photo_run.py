"""The photo run folder: its tile plan and settings, finished tiles' records, resume checks.

See :mod:`dippas_core.tiled` for the folder's layout.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..run import MARKER, RUN_FILES

__all__ = ["PHOTO_RUN_FORMAT", "PhotoRun", "photo_sha256"]

PHOTO_RUN_FORMAT = "dippas-photo-run"


def photo_sha256(photo: np.ndarray) -> str:
    """SHA-256 of the photo's pixels (shape and dtype included): identifies it for a resume."""
    arr = np.ascontiguousarray(photo)
    h = hashlib.sha256(f"{arr.shape}|{arr.dtype}".encode())
    h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


class PhotoRun:
    """A resumable photo run folder (see the module docstring)."""

    META = "photo-run.json"
    #: Files of a photo run besides a tile run's own (``RUN_FILES``).
    OWN_FILES = frozenset({META})

    def __init__(self, path: Path, meta: dict):
        self.path = path
        self.meta = meta

    @classmethod
    def open_or_create(
        cls, path: str | Path, meta: dict, *, force: bool = False
    ) -> tuple[PhotoRun, bool]:
        """Resume the run in ``path`` when its plan, config, mode and photo match ``meta``.

        Returns the run and whether it was resumed.  Another run there is replaced only with
        ``force``; a folder that is no dippas run is never deleted.
        """
        from .._atomic import atomic_write_text

        path = Path(path)
        meta_path = path / cls.META
        if meta_path.is_file():
            try:
                old = json.loads(meta_path.read_text())
            except (OSError, ValueError):
                old = None
            if old is not None and _same_job(old, meta) and not force:
                return cls(path, old), True
            if not force:
                raise InputError(
                    f"{path} holds a photo run of another photo or other settings; choose "
                    "another folder or pass force=True (--force) to start it over"
                )
            cls._clear(path)
        elif path.is_dir() and any(path.iterdir()):
            if not (force and (path / MARKER).is_file()):
                raise InputError(
                    f"run directory {path} already exists and is not a photo run; choose another "
                    "folder" + (" or pass force=True (--force)" if not force else "")
                )
            cls._clear(path)
        (path / "tiles").mkdir(parents=True, exist_ok=True)
        (path / "done").mkdir(exist_ok=True)
        atomic_write_text(path / MARKER, json.dumps({"format": PHOTO_RUN_FORMAT}) + "\n")
        atomic_write_text(meta_path, json.dumps(meta, indent=1))
        return cls(path, meta), False

    @classmethod
    def _clear(cls, path: Path) -> None:
        """Delete what a previous (photo) run made in ``path``; a user's other files stay."""
        for name in ("tiles", "done"):
            shutil.rmtree(path / name, ignore_errors=True)
        for entry in path.iterdir():
            if entry.is_file() and (entry.name in RUN_FILES or entry.name in cls.OWN_FILES):
                entry.unlink()

    def tile_path(self, index: int) -> Path:
        return self.path / "tiles" / f"{index:04d}"

    def _done_path(self, index: int) -> Path:
        return self.path / "done" / f"{index:04d}.npz"

    def write_done(self, index: int, image: np.ndarray, stats: dict) -> None:
        """Record a finished tile (atomic: a killed write leaves no record)."""
        from .._atomic import atomic_write_bytes
        from ..run import jsonable

        buf = io.BytesIO()
        np.savez(buf, image=image, stats=np.array(json.dumps(jsonable(stats))))
        atomic_write_bytes(self._done_path(index), buf.getvalue())

    @staticmethod
    def count_done(path: str | Path) -> int:
        """Finished tiles recorded in the photo run folder ``path`` (0 when there is none)."""
        done = Path(path) / "done"
        return len(list(done.glob("*.npz"))) if done.is_dir() else 0

    def read_done(self) -> dict[int, tuple[np.ndarray, dict]]:
        """Every finished tile: index -> (image, stats); unreadable records are ignored."""
        out: dict[int, tuple[np.ndarray, dict]] = {}
        for p in sorted((self.path / "done").glob("*.npz")):
            try:
                with np.load(p) as data:
                    out[int(p.stem)] = (data["image"], json.loads(str(data["stats"])))
            except (OSError, ValueError, KeyError):
                continue  # redone
        return out

    def drop_tile_run(self, index: int) -> None:
        shutil.rmtree(self.tile_path(index), ignore_errors=True)

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())


def _same_job(old: dict, new: dict) -> bool:
    keys = ("format", "plan", "mode", "photo_sha256", "region", "fingerprint_sha256")
    if any(old.get(k) != new.get(k) for k in keys):
        return False
    settings = _job_settings(old.get("config"))
    return settings is not None and settings == _job_settings(new.get("config"))


def _job_settings(config: dict | None) -> dict | None:
    """A run's config as today's names write it (a run of an older version resumes), less
    what does not change the result (keeping or dropping runs); None when it does not parse."""
    from ..config import AnonymizeConfig
    from ..errors import DippasError

    try:
        parsed = AnonymizeConfig.from_dict(json.loads(json.dumps(config or {})))
    except (DippasError, TypeError, ValueError):
        return None
    return parsed.replace(keep_run=False, keep_tile_runs=False).to_dict()
