"""Whole photographs: one DIP inversion per tile, a resumable photo run folder, the cost estimate.

A photo run folder holds::

    photo-run.json    the tile plan, the anonymize config, the mode and the photo's SHA-256
    tiles/NNNN/       the tile's run folder (a RunDirectory), removed once the tile is assembled
                      unless ``keep_tile_runs`` (then ``dippas assemble`` can redo any tile)
    done/NNNN.npz     the tile's assembled image and its statistics, written atomically: a tile
                      with this record is finished and is read back, never recomputed
    forensic-record.json  the forensic record of the last run (written by the CLI)

A run killed after k tiles restarts at tile k + 1 when :func:`anonymize` is called again with the
same photo, config and folder; a tile whose record is missing (half-written) is redone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import heapq
import io
import json
import math
import shutil
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InputError
from .run import MARKER, RUN_FILES

if TYPE_CHECKING:
    from .fingerprint import Fingerprint

__all__ = [
    "TileOutcome",
    "PhotoRun",
    "CostEstimate",
    "estimate_cost",
    "invert_tile",
    "photo_sha256",
    "PHOTO_RUN_FORMAT",
]

PHOTO_RUN_FORMAT = "dippas-photo-run"


def photo_sha256(photo: np.ndarray) -> str:
    """SHA-256 of the photo's pixels (shape and dtype included): identifies it for a resume."""
    arr = np.ascontiguousarray(photo)
    h = hashlib.sha256(f"{arr.shape}|{arr.dtype}".encode())
    h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------
# one tile


@dataclass
class TileOutcome:
    """What :func:`invert_tile` made of one tile.

    Attributes
    ----------
    image
        The tile's anonymized image (uint8 or float32 0..255), ``None`` when no iteration ran.
    stats
        ``iterations``, ``best_psnr``, ``n_snapshots``, ``stop_reason``, ``below_tau_db`` (how
        far the best PSNR stayed below the recording threshold, 0 when reached) and
        ``assembly`` (the assembly's parameters, or the fallback's).
    inversion, run, assembly
        The ``InversionResult``, the (closed) ``RunDirectory`` and the ``AssemblyResult``
        (``None`` for the fallback).
    """

    image: np.ndarray | None
    stats: dict[str, Any]
    inversion: Any = field(repr=False, default=None)
    run: Any = field(repr=False, default=None)
    assembly: Any = field(repr=False, default=None)


class _KeepBestBelow:
    """A step source: an inversion's steps, snapshots below ``tau`` dropped after the ``keep`` best.

    The inversion runs with every output as a snapshot; only those at or above ``tau`` reach the
    recorder.  Until one does, the ``keep`` best by PSNR stay in ``best`` (a heap of
    ``(psnr, iteration, image)``): the tile's fallback when it never reaches ``tau``.  Its result
    counts only the snapshots passed on.
    """

    def __init__(self, source: Any, tau: float, keep: int, best: list) -> None:
        self.source = source
        self.tau = tau
        self.keep = keep
        self.best = best
        self._reached = False
        self._n_passed = 0

    @property
    def cancel_token(self) -> Any:
        return self.source.cancel_token

    @property
    def result(self) -> Any:
        result = self.source.result
        if result is not None:
            result.n_snapshots = self._n_passed
        return result

    def __iter__(self) -> _KeepBestBelow:
        return self

    def __next__(self) -> Any:
        step = next(self.source)
        snap = step.snapshot
        if snap is not None and step.psnr < self.tau:
            if not self._reached:
                item = (float(step.psnr), -int(step.iteration), snap)
                if len(self.best) < self.keep:
                    heapq.heappush(self.best, item)
                elif item[:2] > self.best[0][:2]:
                    heapq.heapreplace(self.best, item)
            step = dataclasses.replace(step, snapshot=None)
        elif snap is not None:
            self._reached = True
            self._n_passed += 1
            self.best.clear()
        return step

    def cancel(self) -> None:
        self.source.cancel()

    def close(self) -> None:
        self.source.close()

    def share_cpu(self, threads: int | None) -> None:
        self.source.share_cpu(threads)


def invert_tile(
    photo: np.ndarray,
    P: np.ndarray,
    config: Any,
    path: Path,
    *,
    mode: str,
    cancel: Any = None,
    on_step: Callable[[Any], None] | None = None,
    force: bool = False,
    extra: dict | None = None,
) -> TileOutcome:
    """Invert one tile into the run folder ``path``, then assemble it (B, L, tau of ``config``).

    The one call per tile (:func:`_invert_tiles_batched` steps several tiles at once).  When no
    snapshot reaches ``config.dip.tau_psnr``, the tile is the mean of its ``L`` best outputs
    by PSNR instead of an error (``stats["below_tau_db"]`` says by how much it fell short).
    """
    from .dip import invert
    from .run import record

    dip = config.dip
    # every output comes out of the network; the filter passes on those >= tau_psnr
    inversion = invert(photo, P, dip.replace(tau_psnr=-math.inf), cancel=cancel)
    best: list = []
    filtered = _KeepBestBelow(inversion, float(dip.tau_psnr), int(config.L), best)
    try:
        run = _create_tile_run(path, photo, P, config, mode=mode, force=force, extra=extra)
    except BaseException:
        inversion.close()
        raise
    try:
        inv = record(run, filtered, cancel, on_step)
    finally:
        run.close()
    return _tile_outcome(run, inv, best, config, photo.dtype)


def _create_tile_run(
    path: Path, photo: np.ndarray, P: np.ndarray, config: Any, *, mode: str, force: bool,
    extra: dict | None,
) -> Any:
    from .run import RunDirectory

    return RunDirectory.create(
        path,
        photo,
        P,
        mode=mode,
        dip_config=config.dip,
        tile=config.tile,
        sigma=config.sigma,
        force=force,
        extra=extra,
    )


def _tile_outcome(run: Any, inv: Any, best: list, config: Any, photo_dtype: Any) -> TileOutcome:
    """A recorded tile's image: its assembly, or the mean of its best outputs below tau."""
    from .assembly import assemble

    dtype = "uint8" if photo_dtype == np.uint8 else "float32"
    tau_rec = float(config.dip.tau_psnr)
    hist = inv.history
    best_psnr = float(np.max(hist["psnr"])) if len(hist["psnr"]) else None
    stats: dict[str, Any] = {
        "iterations": int(len(hist["iteration"])),
        "best_psnr": best_psnr,
        "n_snapshots": int(len(run.snapshots)),
        "stop_reason": inv.stop_reason,
        "below_tau_db": 0.0,
        "elapsed_s": float(inv.elapsed_s),
    }
    asm = None
    if len(run.snapshots):
        asm = assemble(run, config.assembly, dtype=dtype)
        image = asm.image
        stats["assembly"] = asm.params
    elif best:
        ranked = sorted(best, reverse=True)
        mean = np.mean([np.asarray(b[2], np.float64) for b in ranked], axis=0)
        from .io import to_uint8

        image = to_uint8(mean) if dtype == "uint8" else mean.astype(np.float32)
        stats["below_tau_db"] = float(tau_rec - best_psnr)
        stats["assembly"] = {
            "fallback": f"mean of the {len(ranked)} best outputs by PSNR (none reached tau)",
            "L": len(ranked),
            "psnrs": [float(b[0]) for b in ranked],
            "iterations": [-int(b[1]) for b in ranked],
        }
    else:
        image = None
    return TileOutcome(image, stats, inversion=inv, run=run, assembly=asm)


# --------------------------------------------------------------------------------------------------
# several tiles per optimiser step


class _QueuedSteps:
    """A step source fed through a queue: one tile's steps as the batched inversion makes them.

    Cancelling is the batch's job (it ends every tile with a cancelled result), so this source
    only passes on what it is given: ``("step", Step)`` items, then ``("end", result)`` (the
    tile's ``InversionResult``, or ``None`` when the batch was aborted).
    """

    def __init__(self, size: int, cancel: Any) -> None:
        import queue

        from .cancel import CancelToken

        self.queue: queue.Queue = queue.Queue(maxsize=size)
        self.cancel_token = cancel if cancel is not None else CancelToken()
        self.result: Any = None

    def __iter__(self) -> _QueuedSteps:
        return self

    def __next__(self) -> Any:
        kind, item = self.queue.get()
        if kind == "step":
            return item
        self.result = item
        raise StopIteration

    def cancel(self) -> None:
        self.cancel_token.cancel()

    def close(self) -> None:
        """Nothing to release: the batch owns the device state."""

    def share_cpu(self, threads: int | None) -> None:
        """Torch's threads are set once for the whole batch by its caller."""


class _TileRecorder:
    """One tile's :func:`~dippas_core.run.record` in a thread, fed the tile's steps one by one.

    The batched inversion yields the steps of N tiles interleaved; each tile's recorder drives
    the same filter and ``record`` as :func:`invert_tile` from a small bounded queue (the
    inversion waits when a tile's ingest lags behind, as it does for one tile).
    """

    _QUEUE = 16

    def __init__(self, run: Any, config: Any, cancel: Any) -> None:
        import threading

        self.run = run
        self.best: list = []
        self.result: Any = None
        self.error: BaseException | None = None
        self._steps = _QueuedSteps(self._QUEUE, cancel)
        self._queue = self._steps.queue
        filtered = _KeepBestBelow(self._steps, float(config.dip.tau_psnr), int(config.L), self.best)
        self._thread = threading.Thread(
            target=self._record, args=(filtered, cancel), name=f"record {run.path.name}",
            daemon=True,
        )
        self._thread.start()

    def _record(self, filtered: _KeepBestBelow, cancel: Any) -> None:
        from .run import record

        try:
            # torch's threads are set once for the whole batch by the caller
            self.result = record(self.run, filtered, cancel, torch_threads=None)
        except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
            self.error = exc
        finally:
            self.run.close()

    def _put(self, item: tuple[str, Any]) -> None:
        import queue

        while self._thread.is_alive():  # a recorder that stopped (cancel, error) takes no more
            try:
                self._queue.put(item, timeout=0.05)
                return
            except queue.Full:
                continue
        if self.error is not None:
            raise self.error

    def put(self, step: Any) -> None:
        self._put(("step", step))

    def finish(self, result: Any) -> Any:
        """End the tile with the inversion's ``result``; the recorded result (after the ingest)."""
        self._put(("end", result))
        self._thread.join()
        if self.error is not None:
            raise self.error
        return self.result

    def abort(self) -> None:
        """End the recording without a result (the tile is redone on a resume)."""
        with contextlib.suppress(BaseException):
            self._put(("end", None))
        self._thread.join()


def _choose_tiles_per_step(
    image: np.ndarray, P: np.ndarray, config: Any, n_tiles: int
) -> tuple[int, str]:
    """``tiles_per_step="auto"`` resolved on the first tile to run: ``(N, reason)``.

    Resolved here rather than in the batch so that N = 1 takes :func:`invert_tile`, the plain
    one-network path, tile after tile.  On the CPU the choice is measured: that plain path
    against batches of N = 2, 4, 8 (:func:`~dippas_core.dip.batched.choose_tiles_per_step`);
    the reason, with every measured rate, goes into the photo's run record.
    """
    from .dip.batched import choose_tiles_per_step
    from .dip.device import resolve_device, speed_settings, torch_threads
    from .dip.inversion import _image_to_unit

    dip = config.dip
    device = resolve_device(dip.device)
    speed = dataclasses.replace(speed_settings(dip, device), compile=False)
    img01 = _image_to_unit(image, min_size=2 ** (len(dip.widths) - 1))
    # measured with the threads the tiles will run with (record's cap, as in the batched path)
    with torch_threads(_tile_threads(dip)):
        return choose_tiles_per_step(img01, np.asarray(P, np.float32), dip, device, speed, n_tiles)


def _tile_threads(dip: Any) -> int | None:
    """Torch threads of a tile's inversion: the config's, else half the CPUs on the CPU.

    The rule of :func:`_invert_tiles_batched` and of ``record`` (one tile at a time).
    """
    from .run import _device_is_cpu, usable_cpus

    if not dip.torch_threads and _device_is_cpu({"device": dip.device}):
        return max(1, usable_cpus() // 2)  # what record caps one tile's inversion at
    return dip.torch_threads


def _invert_tiles_batched(
    jobs: list[tuple[Any, np.ndarray, np.ndarray]],
    config: Any,
    tiles_per_step: int,
    prun: PhotoRun,
    *,
    mode: str,
    extra: Callable[[Any], dict],
    cancel: Any = None,
    on_step: Callable[[Any], None] | None = None,
    on_tile: Callable[[Any], None] | None = None,
) -> Generator[tuple[Any, TileOutcome], None, None]:
    """:func:`invert_tile` for several tiles, ``tiles_per_step`` of them per optimiser step.

    ``jobs`` are ``(tile, image, P)``.  Yields ``(tile, outcome)`` as each tile leaves the
    batch, in the order they finish; the tiles' run folders, filter, fallback and assembly are
    those of :func:`invert_tile`.
    """
    from .dip.batched import TileDone, TileJob, invert_tiles
    from .run import _device_is_cpu, usable_cpus

    dip = config.dip
    threads = dip.torch_threads
    if not threads and _device_is_cpu({"device": dip.device}):
        threads = max(1, usable_cpus() // 2)  # what record caps one tile's inversion at
    by_key = {tile.index: (tile, image, P) for tile, image, P in jobs}
    events = invert_tiles(
        [TileJob(tile.index, image, P) for tile, image, P in jobs],
        dip.replace(tau_psnr=-math.inf, torch_threads=threads),
        tiles_per_step=tiles_per_step,
        cancel=cancel,
    )
    recorders: dict[Any, _TileRecorder] = {}
    try:
        for event in events:
            key = event.key
            tile, image, P = by_key[key]
            if isinstance(event, TileDone):
                rec = recorders.pop(key, None)
                if rec is None:  # cancelled before its first step
                    continue
                inv = rec.finish(event.result)
                yield tile, _tile_outcome(rec.run, inv, rec.best, config, image.dtype)
                continue
            rec = recorders.get(key)
            if rec is None:
                if on_tile is not None:
                    on_tile(tile)
                run = _create_tile_run(
                    prun.tile_path(key), image, P, config, mode=mode, force=True,
                    extra=extra(tile),
                )
                rec = recorders[key] = _TileRecorder(run, config, cancel)
            rec.put(event.step)
            if on_step is not None:
                on_step(event.step)
    finally:
        events.close()
        for rec in recorders.values():
            rec.abort()


# --------------------------------------------------------------------------------------------------
# the photo run folder


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
        from ._atomic import atomic_write_text

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
        from ._atomic import atomic_write_bytes
        from .run import jsonable

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
    # keeping or dropping runs does not change the result
    strip = ("keep_run", "keep_tile_runs")
    a = {k: v for k, v in (old.get("config") or {}).items() if k not in strip}
    b = {k: v for k, v in (new.get("config") or {}).items() if k not in strip}
    return json.loads(json.dumps(a)) == json.loads(json.dumps(b))


# --------------------------------------------------------------------------------------------------
# cost


@dataclass
class CostEstimate:
    """What a run will cost: ``n_tiles × iterations × seconds_per_iteration``."""

    n_tiles: int
    iterations: int
    seconds_per_iteration: float
    tile_shape: tuple[int, int]
    device: str
    threads: int

    @property
    def seconds(self) -> float:
        return self.n_tiles * self.iterations * self.seconds_per_iteration

    @property
    def text(self) -> str:
        where = self.device
        if "thread" not in where:
            where += f" ({self.threads} thread{'s' if self.threads != 1 else ''})"
        return (
            f"≈ {self.n_tiles} tiles × ~{self.iterations} iterations (at most) × "
            f"{self.seconds_per_iteration * 1e3:.0f} ms ≈ {_duration(self.seconds)} on {where}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "seconds": self.seconds, "text": self.text}


def _duration(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def estimate_cost(
    photo_shape: tuple[int, ...],
    config: Any,
    device: str | None = None,
    *,
    iterations: int = 3,
    n_tiles: int | None = None,
) -> CostEstimate:
    """Time a few DIP iterations at the tile size on the chosen device; scale to the whole run.

    Parameters
    ----------
    photo_shape
        H×W(×3) of the photo (or region) to anonymize.
    config
        The ``AnonymizeConfig`` of the run.
    device
        Overrides ``config.dip.device``.
    iterations
        Iterations timed after one warm-up iteration.
    n_tiles
        Tiles still to run (a resumed run); default every tile of the plan.
    """
    from .dip import invert
    from .tiling import plan_tiles

    plan = plan_tiles(photo_shape[:2], config.tile_size, config.overlap)
    first = plan.tiles[0]
    dip = config.dip.replace(max_iter=int(iterations) + 1, tau_psnr=math.inf, stop_psnr=math.inf)
    if device is not None:
        dip = dip.replace(device=device)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (first.h, first.w, 3), dtype=np.uint8)
    gen = invert(img, np.zeros((first.h, first.w), np.float32), dip)
    try:
        step = next(gen)  # set-up and the first iteration (kernels loaded, caches warm)
        env = step.environment or {}
        t0 = time.perf_counter()
        for _ in range(int(iterations)):
            next(gen)
        per_it = (time.perf_counter() - t0) / max(1, int(iterations))
    finally:
        gen.close()
    return CostEstimate(
        n_tiles=len(plan) if n_tiles is None else int(n_tiles),
        iterations=int(config.dip.max_iter),
        seconds_per_iteration=per_it,
        tile_shape=(first.h, first.w),
        device=str(env.get("device", dip.device)),
        threads=int(env.get("torch_threads", 1)),
    )


# --------------------------------------------------------------------------------------------------
# the whole photo


def anonymize_tiled(
    raw: np.ndarray,
    fingerprint: Fingerprint | np.ndarray | None,
    config: Any,
    plan: Any,
    *,
    run_dir: str | Path | None,
    cancel: Any = None,
    on_step: Callable[[Any], None] | None = None,
    on_tile: Callable[[Any, Any], None] | None = None,
    on_tile_done: Callable[[Any, dict], None] | None = None,
    force: bool = False,
    scheduler: Any = None,
    workers: int | None = None,
) -> Any:
    """:func:`~dippas_core.pipeline.anonymize` of a photo that needs several tiles.

    Checks were done by the caller (photo, fingerprint size, plan, B, L, tau).  ``on_tile_done``
    gets ``(tile, stats)`` for each finished tile: first the tiles a resume reads back (their
    stats say ``resumed: True``), then each tile as it is written.  ``scheduler`` and
    ``workers``: where the tiles run (:func:`dippas_core.photo_cluster.choose_execution`).
    """
    from .photo_cluster import choose_execution, invert_tiles_on_cluster
    from .pipeline import (
        AnonymizeResult,
        _below_tau,
        _block_summary,
        _reference,
        _report_head,
        _to_float255,
        attribution_scores,
    )
    from .residual import residual
    from .run import environment_info, temporary_run_folder
    from .tiling import stitch

    t_start = time.perf_counter()
    img255 = _to_float255(raw)
    mode, K, fp_info = _reference(img255, fingerprint, config.sigma)
    dtype = "uint8" if raw.dtype == np.uint8 else "float32"
    meta = {
        "format": PHOTO_RUN_FORMAT,
        "plan": plan.to_dict(),
        "mode": mode,
        "photo_sha256": photo_sha256(raw),
        "fingerprint_sha256": photo_sha256(K) if K is not None else None,
        "region": None,
        "config": config.to_dict(),
        "fingerprint": fp_info,
    }
    temporary = run_dir is None
    path = temporary_run_folder() if temporary else Path(run_dir)
    prun, resumed = PhotoRun.open_or_create(path, meta, force=force or temporary)
    done = {i: v for i, v in prun.read_done().items() if i < len(plan)}
    resumed_tiles = sorted(done)
    if on_tile_done is not None:
        for tile in plan.tiles:
            if tile.index in done:
                on_tile_done(tile, {**done[tile.index][1], "resumed": True})
    disk_peak = prun.disk_bytes()
    t_inv = 0.0
    env: dict = {}
    stopped = False
    todo = [t for t in plan.tiles if t.index not in done]
    execution = choose_execution(
        config, len(todo), scheduler=scheduler, workers=workers, watched=on_step is not None
    )
    n_per_step, n_choice = config.dip.tiles_per_step, "given"
    if execution.on_cluster:
        n_per_step, n_choice = 1, "one tile per Dask task (the workers run tiles side by side)"
    elif n_per_step == "auto" and len(todo) > 1 and not (cancel is not None and cancel.cancelled):
        first = todo[0]
        P0 = K[first.slices] if K is not None else residual(img255[first.slices], config.sigma)
        n_per_step, n_choice = _choose_tiles_per_step(raw[first.slices], P0, config, len(todo))
    batched = n_per_step != 1 and len(todo) > 1

    def job(tile: Any) -> tuple[Any, np.ndarray, np.ndarray]:
        P = K[tile.slices] if K is not None else residual(img255[tile.slices], config.sigma)
        return tile, raw[tile.slices], P

    def extra(tile: Any) -> dict:
        return {"photo_tile": tile.to_dict(), "fingerprint": fp_info}

    def one_at_a_time() -> Generator[tuple[Any, TileOutcome], None, None]:
        for tile in todo:
            if cancel is not None and cancel.cancelled:
                return
            if on_tile is not None:
                on_tile(tile, plan)
            _, tile_raw, P = job(tile)
            yield tile, invert_tile(
                tile_raw,
                P,
                config,
                prun.tile_path(tile.index),
                mode=mode,
                cancel=cancel,
                on_step=on_step,
                force=True,  # a half-written tile of an earlier attempt is redone
                extra=extra(tile),
            )

    try:
        t0 = time.perf_counter()
        if execution.on_cluster:
            outcomes = invert_tiles_on_cluster(
                (job(t) for t in todo),
                config,
                path,
                execution,
                mode=mode,
                extra=extra,
                cancel=cancel,
                on_tile=None if on_tile is None else (lambda tile: on_tile(tile, plan)),
            )
        elif not batched:
            outcomes = one_at_a_time()
        elif cancel is not None and cancel.cancelled:
            outcomes = iter(())
        else:
            outcomes = _invert_tiles_batched(
                [job(t) for t in todo],
                config,
                n_per_step,
                prun,
                mode=mode,
                extra=extra,
                cancel=cancel,
                on_step=on_step,
                on_tile=None if on_tile is None else (lambda tile: on_tile(tile, plan)),
            )
        for tile, out in outcomes:
            env = env or dict(getattr(out.inversion, "environment", {}) or {})
            disk_peak = max(disk_peak, prun.disk_bytes())
            if out.image is None or out.stats["stop_reason"] == "cancelled":
                # an unfinished tile is not anonymized: redone on resume
                if not config.keep_tile_runs:
                    prun.drop_tile_run(tile.index)
                stopped = True
                if batched or execution.on_cluster:
                    continue  # the batch's other tiles end too; any that finished is kept
                break
            # written as soon as it is finished: a resume or a Stop keeps it
            prun.write_done(tile.index, out.image, out.stats)
            if not config.keep_tile_runs:
                prun.drop_tile_run(tile.index)
            done[tile.index] = (out.image, out.stats)
            if on_tile_done is not None:
                on_tile_done(tile, out.stats)
            del out
        t_inv = time.perf_counter() - t0
        stopped = stopped or (cancel is not None and cancel.cancelled)
        missing = [t.index for t in plan.tiles if t.index not in done]
        t0 = time.perf_counter()
        image = stitch(plan, {i: v[0] for i, v in done.items()}, fill=img255, dtype=dtype)
        t_stitch = time.perf_counter() - t0
        t0 = time.perf_counter()
        P_full = K if K is not None else residual(img255, config.sigma)
        block = int(config.B) if int(config.B) % int(config.tile) == 0 else 64
        before, map_before = attribution_scores(img255, P_full, block, config.sigma)
        after, map_after = attribution_scores(image, P_full, block, config.sigma)
        t_meas = time.perf_counter() - t0
    except BaseException:
        if temporary:
            shutil.rmtree(path, ignore_errors=True)
        raise
    tiles_report = []
    for t in plan.tiles:
        st = done[t.index][1] if t.index in done else {"done": False}
        tiles_report.append({**t.to_dict(), "index": t.index, "done": t.index in done, **st})
    below = _below_tau([(i, done[i][1]) for i in sorted(done)])
    keep = not temporary or config.keep_run
    report = {
        **_report_head(mode, fp_info, raw, img255, image, before, after),
        "block_ncc": _block_summary(block, map_before, map_after),
        "partial": bool(missing),
        "tiles_not_anonymized": missing,
        "below_tau": below,
        "tiles": tiles_report,
        "resumed_tiles": resumed_tiles,
        "inversion": {
            "stop_reason": "cancelled" if stopped and missing else "finished",
            "n_iterations": int(sum(v[1]["iterations"] for v in done.values())),
            "n_snapshots": int(sum(v[1]["n_snapshots"] for v in done.values())),
            "best_psnr": min((v[1]["best_psnr"] for v in done.values()), default=None),
            "elapsed_s": t_inv,
            "tiles_per_step": int(n_per_step) if batched else 1,
            "tiles_per_step_choice": n_choice if batched or n_per_step == 1 else "one tile to run",
            "execution": execution.to_dict(),
        },
        "assembly": {
            "B": int(config.B),
            "L": int(config.L),
            "tau": config.assembly_tau,
            "per_tile": True,
            "stitch": "feathered linear ramps in the overlaps",
        },
        "config": config.to_dict(),
        "seed": int(config.dip.seed),
        "timing_s": {
            "inversion": t_inv,
            "stitch": t_stitch,
            "measurement": t_meas,
            "total": time.perf_counter() - t_start,
        },
        "disk_peak_bytes": int(disk_peak),
        "device": env.get("device", config.dip.device),
        "environment": env,
        "versions": environment_info(),
        "run_dir": str(path) if keep else None,
    }
    if not keep:
        shutil.rmtree(path, ignore_errors=True)
    return AnonymizeResult(
        image=image,
        report=report,
        maps={"block_ncc_before": map_before, "block_ncc_after": map_after},
        run_dir=path if keep else None,
    )
