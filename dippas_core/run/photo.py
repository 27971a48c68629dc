"""The photo run folder: a whole photo's tile runs, its plan and settings, the finished tiles.

A photo run folder holds::

    photo-run.json    the tile plan, the anonymize config, the mode and the photo's SHA-256
    tiles/NNNN/       the tile's run folder (a RunDirectory), removed once the tile is assembled
                      unless ``keep_tile_runs`` (then ``dippas assemble`` can redo any tile)
    done/NNNN.npz     the tile's assembled image and its statistics, written atomically: a tile
                      with this record is finished and is read back, never recomputed
    forensic-record.json  the forensic record of the last run (written by the CLI)

A run killed after k tiles restarts at tile k + 1 when the same photo, config and folder are run
again; a tile whose record is missing (half-written) is redone (:mod:`dippas_core.tiled`).

Nothing read back from the folder is trusted: ``photo-run.json`` is read within a size bound and
its plan checked against the pixel limit before anything is allocated (:meth:`PhotoRun.read_meta`,
:meth:`PhotoRun.plan`), and each ``done/NNNN.npz`` record is checked (:meth:`PhotoRun.read_done`:
its members' declared sizes before they are inflated, keys, shape, dtype, finite values in
0..255, its index within the plan, the hashes of its image and of the tile's photo) before its
tile counts as finished.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .folders import clear_run_files, remove_run_folder
from .format import MARKER, PHOTO_RUN_DIRS, PHOTO_RUN_FORMAT, PHOTO_RUN_META

__all__ = ["DamagedRecord", "PhotoRun", "job_sha256", "photo_sha256"]

#: Largest ``photo-run.json`` read: a plan of the largest photo allowed is far smaller.
MAX_META_BYTES = 32 << 20
#: Largest statistics JSON of a finished tile's record.
MAX_STATS_BYTES = 1 << 20
_RECORD = re.compile(r"(\d{4})\.npz")
_RECORD_TEMPORARY = re.compile(r"\.\d{4}\.npz\..*\.part.*")
#: What a finished tile's statistics must hold, and of which types.
_STATS_TYPES: dict[str, tuple[type, ...]] = {
    "iterations": (int,),
    "n_snapshots": (int,),
    "stop_reason": (str,),
    "best_psnr": (int, float, type(None)),
    "photo_sha256": (str,),
    "image_sha256": (str,),
    "job_sha256": (str, type(None)),
}


def photo_sha256(photo: np.ndarray) -> str:
    """SHA-256 of the photo's pixels (shape and dtype included): identifies it for a resume."""
    arr = np.ascontiguousarray(photo)
    h = hashlib.sha256(f"{arr.shape}|{arr.dtype}".encode())
    h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


@dataclass(frozen=True)
class DamagedRecord:
    """A finished tile's record that cannot be trusted: the file, its tile and what is wrong."""

    path: Path
    index: int | None
    problem: str

    def __str__(self) -> str:
        return f"{self.path.parent.name}/{self.path.name}: {self.problem}"


class PhotoRun:
    """A resumable photo run folder (see the module docstring)."""

    META = PHOTO_RUN_META

    def __init__(self, path: Path, meta: dict):
        self.path = path
        self.meta = meta

    @classmethod
    def read_meta(cls, path: str | Path) -> dict:
        """``photo-run.json`` of the run in ``path`` (read within :data:`MAX_META_BYTES`).

        Raises
        ------
        InputError
            Missing, unreadable, too large or not a JSON object; the message names the file.
        """
        from ..jsonio import read_json

        meta_path = Path(path) / cls.META
        try:
            meta = read_json(meta_path, limit=MAX_META_BYTES)
        except (OSError, ValueError) as exc:
            raise InputError(f"{meta_path} cannot be read as a photo run's plan ({exc})") from None
        if not isinstance(meta, dict):
            raise InputError(f"{meta_path} is not a JSON object")
        return meta

    def plan(self) -> Any:
        """The run's :class:`~dippas_core.tiling.TilePlan`, its shape checked against the pixel
        limit and its tiles against its shape and tiling before any is made.

        Raises
        ------
        InputError
            Naming ``photo-run.json`` and what is wrong with its plan.
        """
        from ..io import limits
        from ..tiling import check_tiling, plan_tiles

        where = f"{self.path / self.META}: the whole-photo run's plan"
        p = self.meta.get("plan")
        if not isinstance(p, dict):
            raise InputError(f"{where} is missing")
        shape = p.get("shape")
        if not (
            isinstance(shape, list) and len(shape) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)
        ):
            raise InputError(f"{where}: its shape must be two positive whole numbers, got "
                             f"{shape!r}")
        if shape[0] * shape[1] > limits.MAX_PIXELS:
            raise InputError(f"{where} declares a {shape[0]}×{shape[1]} photo, over the pixel "
                             f"limit of {limits.MAX_PIXELS}")
        try:
            check_tiling(p.get("tile"), p.get("overlap"))
            plan = plan_tiles(shape, p["tile"], p["overlap"])
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None
        if [t.to_dict() for t in plan.tiles] != p.get("tiles"):
            raise InputError(f"{where}: its tiles do not match its shape and tiling")
        return plan

    @classmethod
    def open_or_create(
        cls, path: str | Path, meta: dict, *, force: bool = False
    ) -> tuple[PhotoRun, bool]:
        """Resume the run in ``path`` when its plan, config, mode and photo match ``meta``.

        Returns the run and whether it was resumed.  Another run there is replaced only with
        ``force``, and then only the files a run wrote are deleted (by name); a folder that is no
        dippas run is never touched.
        """
        from ..atomic import atomic_write_text

        path = Path(path)
        meta_path = path / cls.META
        for name in PHOTO_RUN_DIRS:  # a file (or a link) there is no run's: never replaced
            sub = path / name
            if sub.is_symlink() or (sub.exists() and not sub.is_dir()):
                raise InputError(
                    f"{sub} is not the photo run's own folder (a file or a link has its name); "
                    "move it away, or choose another run folder"
                )
        if meta_path.is_file():
            try:
                old = cls.read_meta(path)
            except InputError:
                old = None
            if old is not None and _same_job(old, meta) and not force:
                return cls(path, old), True
            if not force:
                raise InputError(
                    f"{path} holds a photo run of another photo or other settings; choose "
                    "another folder or pass force=True (--force) to start it over"
                )
            clear_run_files(path)
        elif path.is_dir() and any(path.iterdir()):
            if not (force and (path / MARKER).is_file()):
                raise InputError(
                    f"run directory {path} already exists and is not a photo run; choose another "
                    "folder" + (" or pass force=True (--force)" if not force else "")
                )
            clear_run_files(path)
        (path / "tiles").mkdir(parents=True, exist_ok=True)
        (path / "done").mkdir(exist_ok=True)
        atomic_write_text(path / MARKER, json.dumps({"format": PHOTO_RUN_FORMAT}) + "\n")
        atomic_write_text(meta_path, json.dumps(meta, indent=1))
        return cls(path, meta), False

    def tile_path(self, index: int) -> Path:
        return self.path / "tiles" / f"{index:04d}"

    def _done_path(self, index: int) -> Path:
        return self.path / "done" / f"{index:04d}.npz"

    def write_done(self, index: int, image: np.ndarray, stats: dict) -> None:
        """Record a finished tile (atomic: a killed write leaves no record).

        ``stats`` carries the hashes :meth:`read_done` checks (``photo_sha256`` of the tile's
        photo, from :func:`~dippas_core.tiled.invert_tile`); the image's own is added here.
        """
        from ..atomic import atomic_write_bytes
        from .format import jsonable

        meta = self.meta or self.read_meta(self.path)  # (a Dask task's PhotoRun has none)
        stats = {**stats, "image_sha256": photo_sha256(image), "job_sha256": job_sha256(meta)}
        buf = io.BytesIO()
        np.savez(buf, image=image, stats=np.array(json.dumps(jsonable(stats))))
        atomic_write_bytes(self._done_path(index), buf.getvalue())

    @staticmethod
    def count_done(path: str | Path) -> int:
        """Records of finished tiles in the photo run folder ``path`` (0 when there is none);
        not yet checked (:meth:`read_done` does)."""
        return len(PhotoRun.done_indices(path))

    @staticmethod
    def done_indices(path: str | Path) -> frozenset[int]:
        """The indices of the tiles whose records the photo run folder ``path`` holds (none when
        there is no folder); not yet checked (:meth:`read_done` does)."""
        done = Path(path) / "done"
        if not done.is_dir():
            return frozenset()
        return frozenset(int(p.name[:4]) for p in done.iterdir() if _RECORD.fullmatch(p.name))

    def read_done(
        self, plan: Any, *, dtype: Any = None, photo: np.ndarray | None = None
    ) -> tuple[dict[int, tuple[np.ndarray, dict]], list[DamagedRecord]]:
        """Every finished tile's record that passes its checks, and those that do not.

        Parameters
        ----------
        plan
            The run's tile plan: a record's index must be one of its tiles, its image that
            tile's size.
        dtype
            The dtype the tiles' images must have (uint8 for an 8-bit photo, else float32);
            None: either.
        photo
            The photo being resumed: each record's ``photo_sha256`` must be its tile's.

        Returns
        -------
        records, damaged
            ``index -> (image, stats)``, and a :class:`DamagedRecord` per record refused (its
            tile is not finished).  Temporaries a killed write left are deleted.
        """
        done_dir = self.path / "done"
        records: dict[int, tuple[np.ndarray, dict]] = {}
        damaged: list[DamagedRecord] = []
        if not done_dir.is_dir():
            return records, damaged
        tiles = {t.index: t for t in plan.tiles}
        job = job_sha256(self.meta) if self.meta else None
        for p in sorted(done_dir.iterdir()):
            if _RECORD_TEMPORARY.fullmatch(p.name) and p.is_file():
                p.unlink(missing_ok=True)  # a write killed before its rename: ours, by name
                continue
            match = _RECORD.fullmatch(p.name)
            if not match:
                continue
            index = int(match.group(1))
            tile = tiles.get(index)
            if tile is None:
                damaged.append(DamagedRecord(
                    p, index, f"tile {index} is not in the run's plan of {len(tiles)} tiles"))
                continue
            want = photo_sha256(photo[tile.slices]) if photo is not None else None
            try:
                records[index] = _read_record(p, (tile.h, tile.w, 3), dtype, want)
            except _BadRecord as exc:
                damaged.append(DamagedRecord(p, index, str(exc)))
                continue
            if job is not None and records[index][1]["job_sha256"] != job:
                del records[index]
                damaged.append(DamagedRecord(p, index, "it was made by a run of other settings "
                                                       "(or of another photo or plan)"))
        return records, damaged

    def discard(self, damaged: list[DamagedRecord]) -> None:
        """Delete damaged records (ours, by name) so that their tiles are redone."""
        for record in damaged:
            if record.path.parent == self.path / "done" and _RECORD.fullmatch(record.path.name):
                record.path.unlink(missing_ok=True)

    def drop_tile_run(self, index: int) -> None:
        """Delete a tile's run folder: its own files by name, the folder once empty."""
        remove_run_folder(self.tile_path(index))

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())


class _BadRecord(Exception):
    """What is wrong with one finished tile's record."""


def _read_record(
    path: Path, shape: tuple[int, int, int], dtype: Any, photo_hash: str | None
) -> tuple[np.ndarray, dict]:
    """A finished tile's ``(image, stats)``, every declared size checked before it is inflated.

    Raises
    ------
    _BadRecord
        Saying what is wrong.
    """
    from ..io import npz_headers

    allowed = (np.dtype(np.uint8), np.dtype(np.float32)) if dtype is None else (np.dtype(dtype),)
    try:
        headers = npz_headers(path)
        if set(headers) != {"image", "stats"}:
            raise _BadRecord(f"holds {sorted(headers)}, not image and stats")
        found, kind, size = headers["image"]
        if found != shape or kind not in allowed:
            raise _BadRecord(f"its image is {kind} {found}, expected "
                             f"{' or '.join(str(a) for a in allowed)} {shape}")
        # the declared sizes, before anything is inflated: a small archive may hold gigabytes
        if size > math.prod(shape) * kind.itemsize + 4096:
            raise _BadRecord(f"its image declares {size} bytes, more than a "
                             f"{shape[0]}×{shape[1]} tile holds")
        s_shape, s_kind, s_size = headers["stats"]
        if s_shape != () or s_kind.kind != "U" or s_size > MAX_STATS_BYTES:
            raise _BadRecord(f"its statistics are {s_kind} {s_shape} ({s_size} bytes), not one "
                             "JSON text of at most 1 MiB")
        with np.load(path, allow_pickle=False) as data:
            image = np.array(data["image"])
            text = str(data["stats"])
    except InputError as exc:
        raise _BadRecord(str(exc).replace(f"{path}: ", "").replace(f"{path} ", "")) from None
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zipfile.LargeZipFile,
            NotImplementedError, RuntimeError) as exc:
        raise _BadRecord(f"cannot be read ({type(exc).__name__}: {exc})") from None
    try:
        stats = json.loads(text)
    except ValueError as exc:
        raise _BadRecord(f"its statistics are not JSON ({exc})") from None
    if not isinstance(stats, dict):
        raise _BadRecord("its statistics are not a JSON object")
    for key, types in _STATS_TYPES.items():
        value = stats.get(key)
        if key not in stats or isinstance(value, bool) or not isinstance(value, types):
            raise _BadRecord(f"its statistics lack a valid {key!r} (got {value!r}); records "
                             "written by an older version carry no hashes")
    if not np.isfinite(image).all() or image.min() < 0 or image.max() > 255:
        raise _BadRecord("its image holds values outside 0..255 (or NaN)")
    if stats["image_sha256"] != photo_sha256(image):
        raise _BadRecord("its image is not the one it recorded (the hash differs)")
    if photo_hash is not None and stats["photo_sha256"] != photo_hash:
        raise _BadRecord("it was made from other pixels than this tile of the photo")
    return image, stats


def job_sha256(meta: dict) -> str | None:
    """SHA-256 of what a tile's result depends on: the plan, mode, photo, region, fingerprint and
    settings (not whether runs are kept).  Each finished tile's record carries it, so a record of
    another run (other settings) is never taken for this one's.  None: settings that do not
    parse."""
    settings = _job_settings(meta.get("config"))
    if settings is None:
        return None
    keys = ("format", "plan", "mode", "photo_sha256", "region", "fingerprint_sha256")
    job = {**{k: meta.get(k) for k in keys}, "config": settings}
    return hashlib.sha256(json.dumps(job, sort_keys=True, default=str).encode()).hexdigest()


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
