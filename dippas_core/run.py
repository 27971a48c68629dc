"""A run directory: the durable record of one DIP inversion, ready to be assembled and reopened.

Layout of a run folder::

    config.json      photo size, mode (aware/blind), DIP config, seed, tile, sigma, versions,
                     device, status (recording → finished | cancelled | interrupted | failed)
                     and the result
    photo.npy        the photo as given (uint8/uint16/float, exact)
    reference.npy    P, the NCC's reference (fingerprint K, or the photo's residual if blind)
    history.csv      iteration, loss, psnr, gamma, gamma_star, kept: one line per iteration,
                     appended (runs made before gamma_star existed lack that column)
    snapshots.*      the snapshot store (:class:`~dippas_core.snapshots.SnapshotStore`)
    tilesums.*       per-tile NCC sums of every snapshot (:class:`~dippas_core.snapshots.TileSums`)
    .lock            advisory lock held by the run's one writer (the live recorder)

Whole files are written atomically; the appended ones (history, snapshots, tile sums) only ever
count complete records, so a run killed midway opens and assembles from what it kept.  A writable
:class:`RunDirectory` (the recorder) holds an exclusive ``flock`` on ``.lock`` for its whole life,
so another process never truncates or back-fills the stores while they grow (where ``fcntl`` is
missing, e.g. on Windows, there is no such guard).

:func:`record` drives an ``invert`` generator: every kept snapshot is written to the store at once
and handed to a background *ingest* thread through a bounded queue; the thread computes residuals in
small batches (``residual_batch``, Numba, releases the GIL) and appends the tile sums; snapshots of
an inversion on a GPU are ingested on that GPU (torch residual), only their tile sums come back.
The inversion only waits when the thread is more than ``queue_size`` snapshots behind
(back-pressure).  On CPU, torch and Numba fighting over the same cores slow each other
several-fold, so while recording torch is capped to half the cores (one on a 2-core machine;
unless the DIP config sets ``torch_threads`` explicitly), the other half left to the ingest.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from ._atomic import atomic_path, atomic_write_text
from ._json import jsonable
from ._validation import as_image, as_plane, check_same_size
from .cancel import CancelToken
from .dip.device import usable_cpus
from .errors import DippasError, InputError
from .snapshots import SCALE, SnapshotStore, TileSums, tile_sums

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, the stores are simply not guarded
    fcntl = None

__all__ = [
    "MARKER",
    "RUN_FILES",
    "DamagedRunError",
    "RunDirectory",
    "check_run_target",
    "check_writable_folder",
    "clean_stale_temporary_runs",
    "temporary_run_folder",
    "environment_info",
    "gamma_summary",
    "is_run_file",
    "is_run_folder",
    "jsonable",
    "record",
]

FORMAT = "dippas-run"
FORMAT_VERSION = 1
HISTORY_FIELDS = ("iteration", "loss", "psnr", "gamma", "gamma_star", "kept")
#: The file only :meth:`RunDirectory.create` writes: ``--force`` replaces a folder only with it.
MARKER = ".dippas-run"
#: Every name a run owns inside its folder (``--force`` deletes these and nothing else; no
#: output may be written over them).
RUN_FILES = frozenset({
    MARKER, ".lock", "config.json", "photo.npy", "reference.npy", "history.csv",
    "snapshots.u16", "snapshots.idx", "snapshots.json", "tilesums.f64", "tilesums.json",
    "assembly.json", "forensic-record.json",
})


def environment_info() -> dict[str, str]:
    """Versions of Python and of the packages that change a result (no import of torch)."""
    info = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in ("napari-dippas", "numpy", "scipy", "PyWavelets", "numba", "torch"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            info[dist] = metadata.version(dist)
    return info


class _RunLock:
    """The exclusive advisory lock (``flock``) on ``RUN/.lock`` that the run's one writer holds.

    Where locks are unavailable (no ``fcntl``, or a file system that refuses them) :meth:`acquire`
    reports success without locking: the run then works as before, unguarded.
    """

    NAME = ".lock"

    def __init__(self, folder: Path):
        self.path = Path(folder) / self.NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> bool:
        """Take the lock without waiting; ``False`` when another writer holds it."""
        if self._fd is not None or fcntl is None:
            return True
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            try:  # a folder we may not write to: a lock file left by its writer still tells
                fd = os.open(self.path, os.O_RDONLY)
            except OSError:
                return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError:  # e.g. ENOLCK on some network file systems: degrade to no lock
            os.close(fd)
            return True
        self._fd = fd
        return True

    def release(self) -> None:
        """Drop the lock (closing the descriptor releases the flock)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __del__(self) -> None:  # a writer dropped without close() must not lock the run forever
        with contextlib.suppress(Exception):
            self.release()


def is_run_folder(folder: str | os.PathLike) -> bool:
    """True for a folder made by :meth:`RunDirectory.create` (its marker, or an older run's
    ``config.json`` with ``format: dippas-run``)."""
    folder = Path(folder)
    if (folder / MARKER).is_file():
        return True
    try:
        config = json.loads((folder / RunDirectory.CONFIG).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("format") == FORMAT


def is_run_file(path: str | os.PathLike) -> bool:
    """True when ``path`` names one of a run's own files (or their temporaries) in a run folder.

    Writing an output there would break the run: ``assemble RUN --out RUN/config.png`` would put
    its report over the run's ``config.json``.
    """
    path = Path(path)
    name = path.name
    owned = name in RUN_FILES or any(
        name.startswith(f".{own}.") and ".part" in name for own in RUN_FILES
    )
    return owned and is_run_folder(path.parent)


def check_run_target(path: str | os.PathLike, force: bool) -> bool:
    """Check that a run may be created in ``path``; True when a previous run will be replaced.

    Cheap (no file is written), so commands call it before any work.

    Raises
    ------
    InputError
        ``path`` is a file, or a non-empty folder without ``force``, or a non-empty folder that
        is not a run (no :data:`MARKER`) even with ``force``, or its nearest existing folder is
        not writable.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"run directory {path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()):
        if not force:
            raise InputError(
                f"run directory {path} already exists and is not empty; "
                "choose another folder or pass force=True (--force) to replace a previous run"
            )
        if not (path / MARKER).is_file():
            raise InputError(
                f"{path} is not empty and is not a dippas run folder (it lacks the {MARKER} "
                "marker only dippas writes): refusing to replace anything in it; choose a new "
                "or empty folder"
            )
        replace = True
    else:
        replace = False
    check_writable_folder(path if path.is_dir() else path.parent)
    return replace


def check_writable_folder(folder: str | os.PathLike) -> None:
    """Raise :class:`InputError` unless files can be created in ``folder`` (or, when it does not
    exist yet, in its nearest existing parent, which must be a folder)."""
    folder = Path(os.path.abspath(folder))
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"cannot create {folder}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"cannot write in {probe}: permission denied")


def _clear_previous_run(path: Path) -> _RunLock:
    """Delete a previous run's own files from ``path`` (others stay); return the held lock.

    Only a folder carrying :data:`MARKER` is touched, and of it only the names in
    :data:`RUN_FILES`: a user's files that happen to sit there (or a folder that merely holds a
    ``config.json``) are never deleted.
    """
    if not (path / MARKER).is_file():  # checked by check_run_target; never delete without it
        raise InputError(f"{path} is not a dippas run folder (no {MARKER}); nothing replaced")
    lock = _RunLock(path)
    if not lock.acquire():  # never delete a run that is still being recorded
        raise InputError(_busy_message(path))
    try:
        for entry in path.iterdir():
            if entry.name in RUN_FILES and entry.name != _RunLock.NAME and not entry.is_dir():
                entry.unlink()
    except BaseException:
        lock.release()
        raise
    return lock


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
        meta = json.loads((path / name).read_text())
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
    from .io import npy_header

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
    from .io import MAX_PIXELS

    if shape[0] * shape[1] > MAX_PIXELS:
        raise DamagedRunError(path, f"config.json declares a {shape[0]}×{shape[1]} photo, over "
                              f"the pixel limit of {MAX_PIXELS}")
    _check_store_meta(path, SnapshotStore.META, shape, None)
    _check_store_meta(path, TileSums.META, shape, tile)
    for name, want in ((RunDirectory.PHOTO, (*shape, 3)), (RunDirectory.REFERENCE, shape)):
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


def _load_part(run: RunDirectory, name: str, shape: tuple[int, ...], what: str) -> np.ndarray:
    from .io import load_npy

    try:
        return load_npy(run.path / name, shape=shape, what=what)
    except InputError as exc:
        raise DamagedRunError(run.path, str(exc)) from None


#: Name prefix of temporary run folders: ``dippas-run-<owner pid>-<random>`` in the temp folder.
TEMPORARY_PREFIX = "dippas-run-"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # exists but is someone else's (or cannot tell)
        return True
    return True


def clean_stale_temporary_runs(folder: str | os.PathLike | None = None) -> list[Path]:
    """Delete temporary run folders whose owner process is gone; return those deleted.

    A run killed mid-way (power cut, ``kill -9``) leaves its temporary folder, which holds the
    un-anonymized photo.  Only folders named ``dippas-run-<pid>-*`` in ``folder`` (default: the
    system's temp folder), owned by this user, whose process ``<pid>`` no longer runs, are
    cleared, and of them only a run's own files (:data:`RUN_FILES`): anything else keeps the
    folder.
    """
    import tempfile

    base = Path(folder if folder is not None else tempfile.gettempdir())
    removed = []
    for entry in base.glob(f"{TEMPORARY_PREFIX}*-*"):
        pid_text = entry.name[len(TEMPORARY_PREFIX):].split("-", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        try:
            mine = not hasattr(os, "getuid") or entry.stat().st_uid == os.getuid()
            if not entry.is_dir() or entry.is_symlink() or not mine:
                continue
            if _process_alive(int(pid_text)):
                continue
            for part in entry.iterdir():
                owned = part.name in RUN_FILES or any(
                    part.name.startswith(f".{own}.") for own in RUN_FILES
                )
                if owned and part.is_file() and not part.is_symlink():
                    part.unlink()
            entry.rmdir()  # fails (kept) when anything else is inside
        except OSError:
            continue
        removed.append(entry)
    return removed


def temporary_run_folder() -> Path:
    """A new, empty temporary run folder named after this process (see
    :func:`clean_stale_temporary_runs`, which runs first)."""
    import tempfile

    clean_stale_temporary_runs()
    return Path(tempfile.mkdtemp(prefix=f"{TEMPORARY_PREFIX}{os.getpid()}-"))


def _busy_message(path: Path) -> str:
    return (
        f"run {path} is being recorded by another process (or is open for writing elsewhere); "
        "wait until it has finished"
    )


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        np.save(tmp, array)


class RunDirectory:
    """A run folder (see the module docstring).  Use :meth:`create` or :meth:`open`."""

    CONFIG = "config.json"
    PHOTO = "photo.npy"
    REFERENCE = "reference.npy"
    HISTORY = "history.csv"

    def __init__(
        self, path: Path, config: dict, *, writable: bool, lock: _RunLock | None = None
    ):
        self.path = path
        self.config = config
        self.writable = writable
        self._lock: _RunLock | None = None
        if writable:
            # before the stores open: a writer truncates their trailing partial records, which
            # would cut the record a live recorder is writing
            lock = lock if lock is not None else _RunLock(path)
            if not lock.acquire():
                raise InputError(_busy_message(path))
            self._lock = lock
        self.snapshots = SnapshotStore(path, writable=writable)
        self.tile_sums = TileSums(path, writable=writable)
        self._photo: np.ndarray | None = None
        self._reference: np.ndarray | None = None
        self._reference_on: dict[str, Any] = {}  # the reference as a tensor, per device

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        photo: np.ndarray,
        P: np.ndarray,
        *,
        mode: str,
        dip_config: Any = None,
        tile: int = 32,
        sigma: float = 5.0,
        force: bool = False,
        extra: dict | None = None,
    ) -> RunDirectory:
        """Start a new run in folder ``path`` (a writer).

        Parameters
        ----------
        path
            Folder to create.  An existing non-empty folder is refused unless ``force`` is true,
            and even then only a previous run's own files are replaced (the folder must carry
            the marker :data:`MARKER` that only this method writes); other files stay.
        photo
            The photo being anonymized (H×W×3, uint8/uint16 as read or float 0..255); saved as is.
        P
            Reference H×W (the fingerprint K in aware mode, the photo's residual in blind mode).
        mode
            ``"aware"`` or ``"blind"``.
        dip_config
            The DIP configuration (a ``DIPConfig`` or a dict); recorded in ``config.json``.
        tile
            Finest tile of the per-tile NCC sums (assembly blocks are multiples of it).
        sigma
            Noise level of the residuals (method §1).
        extra
            More JSON-able fields for ``config.json`` (e.g. fingerprint metadata).
        """
        path = Path(path)
        if mode not in ("aware", "blind"):
            raise InputError(f"mode must be 'aware' or 'blind', got {mode!r}")
        photo_f = as_image(photo, "photo")
        if photo_f.ndim != 3:
            raise InputError(f"photo must be a colour image H×W×3, got shape {photo_f.shape}")
        P = as_plane(P, "reference P")
        check_same_size(photo_f, P, "photo", "reference P")
        tile = int(tile)
        if tile < 1:
            raise InputError(f"tile must be a positive number of pixels, got {tile}")
        lock = None
        if check_run_target(path, force):
            lock = _clear_previous_run(path)
        path.mkdir(parents=True, exist_ok=True)
        if lock is None:
            lock = _RunLock(path)
            if not lock.acquire():  # another process created this folder at the same moment
                raise InputError(_busy_message(path))
        atomic_write_text(path / MARKER, json.dumps({"format": FORMAT}) + "\n")

        photo = np.asarray(photo)
        _save_npy(path / cls.PHOTO, photo)
        _save_npy(path / cls.REFERENCE, P)
        h, w = P.shape
        SnapshotStore.create(path, (h, w)).close()
        TileSums.create(path, (h, w), tile).close()
        dip = jsonable(dip_config) if dip_config is not None else {}
        config = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "status": "recording",
            "mode": mode,
            "reference": "fingerprint K" if mode == "aware" else "photo residual (blind)",
            "photo": {"height": h, "width": w, "channels": 3, "dtype": str(photo.dtype)},
            "tile": tile,
            "sigma": float(sigma),
            "snapshot_storage": {"dtype": "uint16", "scale": SCALE},
            "dip_config": dip,
            "seed": dip.get("seed") if isinstance(dip, dict) else None,
            "device": dip.get("device") if isinstance(dip, dict) else None,
            "versions": environment_info(),
            **jsonable(extra or {}),
        }
        atomic_write_text(path / cls.CONFIG, json.dumps(config, indent=1))
        atomic_write_text(path / cls.HISTORY, ",".join(HISTORY_FIELDS) + "\n")
        return cls(path, config, writable=True, lock=lock)

    @classmethod
    def open(cls, path: str | os.PathLike, *, writable: bool = False) -> RunDirectory:
        """Open an existing run (finished or not, killed midway included); a reader by default.

        A writer takes the run's lock: :class:`InputError` when a live recorder holds it.
        """
        path = Path(path)
        cfg_path = path / cls.CONFIG
        if not cfg_path.is_file():
            raise InputError(f"{path} is not a dippas run directory (no {cls.CONFIG})")
        try:
            config = json.loads(cfg_path.read_text())
        except (OSError, ValueError) as exc:
            raise DamagedRunError(path, f"cannot read {cls.CONFIG} ({exc})") from None
        if not isinstance(config, dict) or config.get("format") != FORMAT:
            raise InputError(f"{cfg_path} is not a dippas run configuration")
        _check_run(path, config)
        try:
            return cls(path, config, writable=writable)
        except (KeyError, TypeError, ValueError) as exc:  # InputError passes (it is a ValueError)
            if isinstance(exc, InputError):
                raise
            raise DamagedRunError(path, f"{type(exc).__name__}: {exc}") from None

    # -- properties ---------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        """H×W of the photo."""
        return self.snapshots.shape

    @property
    def mode(self) -> str:
        return self.config["mode"]

    @property
    def tile(self) -> int:
        return int(self.config["tile"])

    @property
    def sigma(self) -> float:
        return float(self.config["sigma"])

    @property
    def status(self) -> str:
        return self.config.get("status", "recording")

    @property
    def photo(self) -> np.ndarray:
        """The photo exactly as given to :meth:`create`."""
        if self._photo is None:
            self._photo = _load_part(self, self.PHOTO, (*self.shape, 3), "photo")
        return self._photo

    @property
    def reference(self) -> np.ndarray:
        """P (float32 H×W)."""
        if self._reference is None:
            self._reference = _load_part(self, self.REFERENCE, self.shape, "reference")
        return self._reference

    def refresh(self) -> int:
        """Re-read the growing stores; return the number of snapshots with tile sums."""
        self.snapshots.refresh()
        self.tile_sums.refresh()
        return self.n_ready

    @property
    def n_ready(self) -> int:
        """Snapshots that have both their pixels and their tile sums on disk."""
        return min(len(self.snapshots), len(self.tile_sums))

    @property
    def n_missing_tile_sums(self) -> int:
        """Snapshots without tile sums (a run killed before the ingest caught up)."""
        return max(len(self.snapshots) - len(self.tile_sums), 0)

    def being_recorded(self) -> bool:
        """True while another writer (a live recorder) holds the run's lock.

        Always False where advisory locks are unavailable (see the module docstring).
        """
        if self._lock is not None and self._lock.held:
            return False  # we are the writer
        probe = _RunLock(self.path)
        free = probe.acquire()
        probe.release()
        return not free

    def history(self) -> dict[str, np.ndarray]:
        """Per-iteration history read from ``history.csv``: one array per :data:`HISTORY_FIELDS`.

        A trailing partial line (a run killed while writing) is ignored.  A column the run's file
        lacks (``gamma_star`` in runs recorded before it existed) comes back as NaN.
        """
        text = (self.path / self.HISTORY).read_text()
        header, *lines = text.split("\n")[:-1]  # the piece after the last newline is incomplete
        names = header.split(",")
        try:
            rows = np.array([[float(v) for v in ln.split(",")] for ln in lines if ln], np.float64)
            rows = rows.reshape(-1, len(names))
        except ValueError as exc:
            raise DamagedRunError(self.path, f"{self.HISTORY} is garbled ({exc})") from None
        out = {k: rows[:, names.index(k)] if k in names else np.full(len(rows), np.nan)
               for k in HISTORY_FIELDS}
        out["iteration"] = out["iteration"].astype(np.int64)
        out["kept"] = out["kept"].astype(bool)
        return out

    # -- writing ------------------------------------------------------------------------------
    def update_config(self, **fields: Any) -> None:
        """Merge ``fields`` into ``config.json`` (atomic rewrite)."""
        self.config.update(jsonable(fields))
        atomic_write_text(self.path / self.CONFIG, json.dumps(self.config, indent=1))

    def ingest_frames(self, frames: np.ndarray, *, workers: int | None = None) -> np.ndarray:
        """Tile sums (n×Th×Tw×3) of stored uint16 frames (n×H×W×3): residual + products + sums."""
        from .residual import rgb2gray

        images = np.asarray(frames, dtype=np.float32) / np.float32(SCALE)
        w = _residuals(images, self.sigma, workers)
        gray = np.stack([rgb2gray(im) for im in images]).astype(np.float64)
        ip = gray * self.reference  # in float64, like correlation.ncc
        return tile_sums(w, ip, self.tile)

    def ingest_on_device(self, snapshots: Any) -> np.ndarray:
        """Tile sums (n×Th×Tw×3) of snapshots still on the inversion's device.

        ``snapshots`` is an n×H×W×3 float tensor (0..255) on any device.  Each is quantized as
        the snapshot store quantizes it, and its residual (``residual_torch``), gray product with
        the reference and tile sums are computed on that device: only the sums come back.  They
        equal :meth:`ingest_frames` of the stored frames up to float rounding.
        """
        import torch

        from .residual_torch import gray_torch, residual_torch, tile_sums_torch

        device = snapshots.device
        reference = self._reference_on.get(str(device))
        if reference is None:
            reference = torch.from_numpy(np.asarray(self.reference, np.float64)).to(device)
            self._reference_on = {str(device): reference}  # one device per run: keep only it
        with torch.no_grad():
            frames = torch.clamp(torch.round(snapshots.to(torch.float32) * SCALE), 0, 65535)
            images = frames / SCALE  # what ingest_frames reads back from the store
            w = residual_torch(images, self.sigma)
            ip = gray_torch(images.permute(0, 3, 1, 2)).to(torch.float64) * reference
            return tile_sums_torch(w, ip, self.tile).cpu().numpy()

    def complete_tile_sums(
        self,
        *,
        batch_size: int = 4,
        workers: int | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Compute the tile sums a killed run did not finish; return how many were added.

        When a live recorder holds the run's lock nothing is computed (its ingest thread is still
        appending the same records) and 0 is returned: assemble from :attr:`n_ready` snapshots.
        """
        probe = None
        if not (self._lock is not None and self._lock.held):
            probe = _RunLock(self.path)
            if not probe.acquire():
                return 0
        try:
            return self._complete_tile_sums(batch_size, workers, on_progress)
        finally:
            if probe is not None:
                probe.release()

    def _complete_tile_sums(
        self,
        batch_size: int,
        workers: int | None,
        on_progress: Callable[[int, int], None] | None,
    ) -> int:
        self.refresh()
        start, stop = len(self.tile_sums), len(self.snapshots)
        if start >= stop:
            return 0
        writer = (
            self.tile_sums if self.tile_sums._file.writable else TileSums(self.path, writable=True)
        )
        try:
            for i in range(start, stop, batch_size):
                j = min(i + batch_size, stop)
                writer.append(self.ingest_frames(self.snapshots.frames[i:j], workers=workers))
                if on_progress is not None:
                    on_progress(j - start, stop - start)
        finally:
            writer.close()
        self.tile_sums.refresh()
        return stop - start

    def close(self) -> None:
        """Flush and close the stores' files; a writer then releases the run's lock."""
        self.snapshots.close()
        self.tile_sums.close()
        self._release_lock()

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __repr__(self) -> str:
        return (
            f"RunDirectory({str(self.path)!r}, status={self.status!r}, mode={self.mode!r}, "
            f"snapshots={len(self.snapshots)}, tile_sums={len(self.tile_sums)})"
        )


def _residuals(images: np.ndarray, sigma: float, workers: int | None) -> np.ndarray:
    """Residuals of n×H×W×3 images with the batch path when it exists (both cores)."""
    from .residual import residual_batch

    return np.asarray(residual_batch(images, sigma, workers=workers), dtype=np.float32)


_STOP = object()


class _Ingest:
    """Background consumer: stored frames in, tile sums out, through a bounded queue."""

    def __init__(self, run: RunDirectory, *, queue_size: int, batch_size: int, workers: int | None):
        self.run = run
        self.batch_size = max(1, int(batch_size))
        self.workers = workers
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, int(queue_size)))
        self.error: BaseException | None = None
        self.busy_s = 0.0  # seconds spent computing residuals and tile sums
        self.wait_s = 0.0  # seconds the inversion waited for room in the queue
        self.n_done = 0
        self.n_on_device = 0  # of them, ingested where the inversion ran (not on the host)
        self.thread = threading.Thread(target=self._loop, name="dippas-ingest", daemon=True)
        self.thread.start()

    def put(self, frame: Any) -> None:
        """Queue one frame; blocks only while the queue is full (back-pressure).

        A stored uint16 frame (numpy) is ingested on the host (:meth:`RunDirectory.ingest_frames`);
        a float snapshot tensor on a GPU is ingested there (:meth:`RunDirectory.ingest_on_device`).
        """
        t0 = time.perf_counter()
        try:
            while True:
                self._raise_if_failed()
                try:
                    self.queue.put(frame, timeout=0.25)
                    return
                except queue.Full:
                    continue
        finally:
            if frame is not _STOP:
                self.wait_s += time.perf_counter() - t0

    def finish(self) -> None:
        """Process everything queued, stop the thread, re-raise its error if it had one."""
        if self.thread.is_alive():
            self.put(_STOP)
            self.thread.join()
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            raise DippasError(
                f"computing snapshot residuals failed: {self.error!r}"
            ) from self.error

    def _loop(self) -> None:
        try:
            stop = False
            while not stop:
                item = self.queue.get()
                if item is _STOP:
                    break
                batch = [item]
                while len(batch) < self.batch_size:  # take what is already waiting, no more
                    try:
                        item = self.queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        stop = True
                        break
                    batch.append(item)
                t0 = time.perf_counter()
                for group in _same_kind_runs(batch):
                    self.run.tile_sums.append(self._sums(group))
                self.busy_s += time.perf_counter() - t0
                self.n_done += len(batch)
        except BaseException as exc:  # noqa: BLE001 - handed to the producer
            self.error = exc
            with contextlib.suppress(queue.Empty):  # unblock a producer waiting on a full queue
                while True:
                    self.queue.get_nowait()


    def _sums(self, group: list) -> np.ndarray:
        if isinstance(group[0], np.ndarray):
            return self.run.ingest_frames(np.stack(group), workers=self.workers)
        import torch

        self.n_on_device += len(group)
        return self.run.ingest_on_device(torch.stack(group))


def _same_kind_runs(batch: list) -> list[list]:
    """``batch`` cut into consecutive runs of host frames (numpy) and device tensors, in order."""
    runs: list[list] = []
    for item in batch:
        host = isinstance(item, np.ndarray)
        if runs and isinstance(runs[-1][0], np.ndarray) == host:
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs


@contextlib.contextmanager
def _torch_threads(limit: int | None) -> Iterator[Callable[[], None]]:
    """Cap torch's intra-op threads while recording; yields a function that re-applies the cap."""
    torch = sys.modules.get("torch")
    if torch is None or not limit:
        yield lambda: None
        return
    previous = torch.get_num_threads()

    def apply() -> None:
        if torch.get_num_threads() != limit:
            torch.set_num_threads(limit)

    apply()
    try:
        yield apply
    finally:
        torch.set_num_threads(previous)


def _device_is_cpu(dip_config: dict) -> bool:
    spec = str(dip_config.get("device", "auto"))
    if spec.startswith("cpu"):
        return True
    if spec != "auto":
        return False
    torch = sys.modules.get("torch")
    if torch is None:
        return True
    mps = getattr(torch.backends, "mps", None)
    return not (torch.cuda.is_available() or (mps is not None and mps.is_available()))


def gamma_summary(history: dict[str, Any]) -> dict[str, Any]:
    """How the injection strength gamma behaved while snapshots were recorded.

    Over the recording phase (the iterations whose output was kept, PSNR >= ``tau_psnr``): their
    number, the share with gamma at its bound (0: the injection switched off, the network alone
    explains the photo, camera pattern included), the medians of gamma and of the least-squares
    gamma* (NaN for runs recorded before gamma* existed); and both at the last iteration.
    """
    kept = np.asarray(history["kept"], dtype=bool)
    gamma = np.asarray(history["gamma"], dtype=np.float64)
    star = np.asarray(history.get("gamma_star", np.full(len(gamma), np.nan)), dtype=np.float64)

    def value(a: np.ndarray) -> float | None:
        return float(a) if np.isfinite(a) else None

    out: dict[str, Any] = {"recording_iterations": int(kept.sum())}
    if kept.any():
        out["at_bound_share"] = float(np.mean(gamma[kept] <= 0.0))
        out["median"] = float(np.median(gamma[kept]))
        out["median_star"] = value(np.median(star[kept]))
    if len(gamma):
        out["final"] = float(gamma[-1])
        out["final_star"] = value(star[-1])
    return out


def _make_result(
    history: dict[str, list],
    n_snapshots: int,
    stop_reason: str,
    run: RunDirectory,
    elapsed_s: float,
    environment: dict | None = None,
) -> Any:
    """An ``InversionResult`` for a generator that did not return one (cancelled or closed).

    ``environment`` is the one the generator reported on its first step (resolved device, speed
    settings); without it, the package versions.
    """
    hist = {k: np.asarray(v) for k, v in history.items()}
    fields = dict(
        history=hist,
        n_snapshots=n_snapshots,
        stop_reason=stop_reason,
        seed=run.config.get("seed"),
        config=run.config.get("dip_config", {}),
        environment=dict(environment) if environment else run.config.get("versions", {}),
        elapsed_s=elapsed_s,
    )
    try:
        from .dip import InversionResult

        return InversionResult(**fields)
    except (ImportError, TypeError):
        from types import SimpleNamespace

        return SimpleNamespace(**fields)


def record(
    run_dir: RunDirectory | str | os.PathLike,
    generator: Iterator,
    cancel: CancelToken | None = None,
    on_step: Callable[[Any], None] | None = None,
    *,
    queue_size: int = 16,
    batch_size: int = 4,
    workers: int | None = None,
    torch_threads: int | None | str = "auto",
    device_ingest: bool = True,
) -> Any:
    """Drive an ``invert`` generator, streaming its kept snapshots into ``run_dir``.

    Parameters
    ----------
    run_dir
        A writable :class:`RunDirectory` (from :meth:`RunDirectory.create`) or its path.
    generator
        The generator of :func:`dippas_core.dip.invert`: yields ``Step`` objects
        (``iteration, loss, psnr, gamma, snapshot``) and returns an ``InversionResult``.
    cancel
        When set, recording stops: the generator (which should share the token) finishes its
        iteration and returns; if it keeps going it is closed.
    on_step
        Called with each ``Step`` after it is recorded (progress bars, live plots).
    queue_size
        Snapshots the ingest thread may lag behind before the inversion waits for it.
    batch_size
        Largest number of snapshots whose residuals are computed in one ``residual_batch`` call.
    workers
        Threads for ``residual_batch`` (default: its own).
    torch_threads
        Cap of torch's threads while recording on CPU: ``"auto"`` is half the usable cores (at
        least 1; the ingest's residuals use the rest), ``None`` leaves torch alone.  An explicit
        ``torch_threads`` in the DIP config wins.
    device_ingest
        Compute the residuals and tile sums of snapshots that the inversion ran on a GPU there
        (``Step.snapshot_device``; torch residual) rather than on the host (Numba).  Snapshots
        made on the CPU are always ingested on the host.

    Returns
    -------
    InversionResult
        The generator's result (or one built from the history when it was cancelled or closed).
        ``config.json`` records the status and the result.  A ``KeyboardInterrupt`` is re-raised
        after the run has been written (status ``"interrupted"``).

    Raises
    ------
    InputError
        ``run_dir`` is open read-only, or another process is recording into it.
    DippasError
        Computing the residuals of the snapshots failed (status ``"failed"``); when the
        inversion itself failed too, its exception is raised instead, with a note.

    Notes
    -----
    The run's lock (``.lock``) is held until ``config.json`` says how the recording ended, so
    ``dippas assemble`` run meanwhile uses the ready snapshots and never back-fills tile sums.
    """
    run = (
        run_dir if isinstance(run_dir, RunDirectory) else RunDirectory.open(run_dir, writable=True)
    )
    if not run.writable:
        raise InputError(f"run {run.path} is open read-only; record into a new RunDirectory.create")
    dip_cfg = run.config.get("dip_config") or {}
    limit = max(1, usable_cpus() // 2) if torch_threads == "auto" else torch_threads
    if dip_cfg.get("torch_threads") or not _device_is_cpu(dip_cfg):
        limit = None
    history: dict[str, list] = {k: [] for k in HISTORY_FIELDS}
    n_kept = len(run.snapshots)
    status, result = "failed", None
    env_seen: dict | None = None  # the generator's environment, reported on its first step
    body_error: BaseException | None = None
    t0 = time.perf_counter()
    ingest = _Ingest(run, queue_size=queue_size, batch_size=batch_size, workers=workers)
    hist_fh = open(run.path / run.HISTORY, "a", encoding="utf-8")  # noqa: SIM115
    grace = 2  # steps a cancelled generator may still yield before it is closed
    try:
        with _torch_threads(limit) as reapply:
            while True:
                try:
                    step = next(generator)
                except StopIteration as stop:
                    result = stop.value
                    break
                if step.iteration == 1 or len(history["iteration"]) == 0:
                    reapply()  # the generator may set torch's threads on its first step
                if env_seen is None and getattr(step, "environment", None):
                    env_seen = step.environment
                kept = step.snapshot is not None
                if kept:
                    frame = run.snapshots.append(step.snapshot, step.iteration, step.psnr)
                    on_device = getattr(step, "snapshot_device", None)
                    # a snapshot still on a GPU is ingested there: only its tile sums come back
                    ingest.put(frame if on_device is None or not device_ingest else on_device)
                    n_kept += 1
                row = (
                    int(step.iteration),
                    float(step.loss),
                    float(step.psnr),
                    float(step.gamma),
                    float(getattr(step, "gamma_star", float("nan"))),
                    int(kept),
                )
                for k, v in zip(HISTORY_FIELDS, row, strict=True):
                    history[k].append(v)
                hist_fh.write(",".join(repr(v) for v in row) + "\n")
                hist_fh.flush()
                if on_step is not None:
                    on_step(step)
                if cancel is not None and cancel.cancelled:
                    grace -= 1
                    if grace < 0:
                        generator.close()
                        break
        if result is None:  # closed after a cancel, or a generator that returns nothing
            reason = "cancelled" if cancel is not None and cancel.cancelled else "ended"
            result = _make_result(
                history, n_kept, reason, run, time.perf_counter() - t0, env_seen
            )
        status = "cancelled" if getattr(result, "stop_reason", "") == "cancelled" else "finished"
    except BaseException as exc:
        body_error = exc
        if isinstance(exc, KeyboardInterrupt):
            status = "interrupted"
        with contextlib.suppress(Exception):
            generator.close()  # its clean-up (device memory) runs now, not at some GC
        raise
    finally:
        hist_fh.close()
        ingest_error: BaseException | None = None
        try:
            ingest.finish()
        except BaseException as exc:  # noqa: BLE001 - recorded below, raised after config
            ingest_error = exc
            if body_error is None:
                # the last tile sums are missing: the run did not finish, whatever the DIP did
                status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            else:
                # the body's exception is the one that explains the run; keep it on top
                body_error.add_note(f"(also: {exc})")
        try:
            run.snapshots.close()  # the stores are complete: reopen them as readers
            run.tile_sums.close()
            run.snapshots = SnapshotStore(run.path)
            run.tile_sums = TileSums(run.path)
            run.writable = False
            info: dict[str, Any] = {
                "n_iterations": len(history["iteration"]),
                "n_snapshots": len(run.snapshots),
                "n_tile_sums": len(run.tile_sums),
                "best_psnr": max(history["psnr"]) if history["psnr"] else None,
                "gamma": gamma_summary(history),
                "elapsed_s": time.perf_counter() - t0,
                "ingest_busy_s": ingest.busy_s,
                "ingest_wait_s": ingest.wait_s,
                "ingested_on_device": ingest.n_on_device,
            }
            if ingest_error is not None:
                info["error"] = str(ingest_error)
            env = (getattr(result, "environment", None) if result is not None else None) or (
                env_seen or {}
            )
            if result is not None:
                info["stop_reason"] = getattr(result, "stop_reason", None)
                if getattr(result, "seed", None) is not None:
                    run.config["seed"] = result.seed
            if env:
                info["environment"] = env
            if isinstance(env, dict) and env.get("device"):
                run.config["device"] = env["device"]  # the resolved device, never "auto"
            run.update_config(status=status, result=info, versions=environment_info())
        finally:
            run._release_lock()  # held until config.json says how the recording ended
        if ingest_error is not None and body_error is None:
            raise ingest_error
    return result
