"""A run folder on disk: :class:`RunDirectory` owns every file of the run format."""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .._validation import as_image, as_plane, check_same_size
from ..atomic import atomic_path, atomic_write_text
from ..errors import InputError
from ..jsonio import read_json
from ..snapshots import SCALE, SnapshotStore, TileSums, tile_sums
from ._lock import _busy_message, _RunLock
from .checks import DamagedRunError, _check_run, _load_part
from .folders import _clear_previous_run, check_run_target
from .format import (
    ASSEMBLY,
    CONFIG,
    FORMAT,
    FORMAT_VERSION,
    HISTORY,
    HISTORY_FIELDS,
    MARKER,
    PHOTO,
    REFERENCE,
    environment_info,
    jsonable,
)

__all__ = ["RunDirectory"]


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        np.save(tmp, array)


class RunDirectory:
    """A run folder (see the module docstring).  Use :meth:`create` or :meth:`open`."""

    CONFIG = CONFIG
    PHOTO = PHOTO
    REFERENCE = REFERENCE
    HISTORY = HISTORY
    ASSEMBLY = ASSEMBLY

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
        config = _new_config(mode, photo, tile, sigma, dip_config, extra)
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
            config = read_json(cfg_path)
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
    def record_psnr(self) -> float:
        """The recording threshold (dB): the DIP config's ``record_psnr``, every snapshot at or
        above it was kept.  Not the assembly's ``tau``
        (:class:`~dippas_core.config.AssemblyParams`), which picks among them.  38 dB (the DIP
        default) when the run does not say."""
        dip = self.config.get("dip_config")
        dip = dip if isinstance(dip, dict) else {}
        value = dip.get("record_psnr", dip.get("tau_psnr"))  # (older runs: tau_psnr)
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            return 38.0
        return float(value)

    @property
    def photo(self) -> np.ndarray:
        """The photo exactly as given to :meth:`create`."""
        if self._photo is None:
            self._photo = _load_part(self.path, self.PHOTO, (*self.shape, 3), "photo")
        return self._photo

    @property
    def reference(self) -> np.ndarray:
        """P (float32 H×W)."""
        if self._reference is None:
            self._reference = _load_part(self.path, self.REFERENCE, self.shape, "reference")
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

    def write_assembly(self, params: Any) -> None:
        """Remember the assembly parameters last used (``assembly.json``, atomic), so that the run
        reopens with the same result.  ``params``: an ``AssemblyParams`` or ``{"B", "L", "tau"}``.

        Allowed on a run open read-only: the file is no part of the recording.
        """
        from ..config import AssemblyParams

        if not isinstance(params, AssemblyParams):
            params = AssemblyParams.from_dict(params)
        atomic_write_text(self.path / self.ASSEMBLY, json.dumps(params.to_dict(), indent=1))

    def read_assembly(self) -> Any:
        """The ``AssemblyParams`` last written by :meth:`write_assembly`.

        A field that is missing or garbled (a hand-edited or half-written file) takes its default
        (B 64, L 10, tau the run's :attr:`record_psnr`): it never stops the run from opening.
        """
        from ..config import AssemblyParams

        record = self.record_psnr
        params = AssemblyParams(tau=record if np.isfinite(record) else 38.0)
        try:
            saved = read_json(self.path / self.ASSEMBLY)
        except (OSError, ValueError):
            saved = None
        if not isinstance(saved, dict):
            return params
        for name in ("B", "L", "tau", "rule"):
            if saved.get(name) is not None:
                try:
                    params = params.replace(**{name: saved[name]})
                except InputError:
                    continue  # this one keeps its default
        return params

    def ingest_frames(self, frames: np.ndarray, *, workers: int | None = None) -> np.ndarray:
        """Tile sums (n×Th×Tw×3) of stored uint16 frames (n×H×W×3): residual + products + sums."""
        from ..residual import rgb2gray

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

        from ..residual_torch import gray_torch, residual_torch, tile_sums_torch

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
    from ..residual import residual_batch

    return np.asarray(residual_batch(images, sigma, workers=workers), dtype=np.float32)


def _new_config(
    mode: str, photo: np.ndarray, tile: int, sigma: float, dip_config: Any, extra: dict | None
) -> dict[str, Any]:
    """A new run's ``config.json``: what it records, the photo, the settings, the versions."""
    dip = jsonable(dip_config) if dip_config is not None else {}
    h, w = photo.shape[:2]
    return {
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
