"""A whole photo, tile by tile: resume, the tiles behind one executor, stitching, the report."""

from __future__ import annotations

import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import NoteWarning
from ._tile import TileTask

if TYPE_CHECKING:
    from ..job import AnonymizeResult, PhotoJob
    from ..run import PhotoRun

__all__ = ["anonymize_tiled"]


@dataclass
class _TileRun:
    """A photo run in progress: its folder, the finished tiles, what the loop saw."""

    job: PhotoJob
    prun: PhotoRun
    temporary: bool
    done: dict[int, tuple[np.ndarray, dict]]
    resumed: list[int]
    img255: np.ndarray = field(repr=False)
    disk_peak: int = 0
    environment: dict = field(default_factory=dict)
    stopped: bool = False

    @property
    def todo(self) -> list[Any]:
        return [t for t in self.job.plan.tiles if t.index not in self.done]

    def task(self, tile: Any) -> TileTask:
        """The tile's pixels, its reference (the fingerprint's tile, or its own residual) and
        what its run folder records."""
        from ..residual import residual

        job = self.job
        P = (job.K[tile.slices] if job.K is not None
             else residual(self.img255[tile.slices], job.config.sigma))
        extra = {"photo_tile": tile.to_dict(), "fingerprint": job.fingerprint_info}
        return TileTask(tile, job.photo[tile.slices], P, extra)

    def tasks(self) -> Iterator[TileTask]:
        """The tiles still to run, made one by one (a cluster reads them as workers free up)."""
        return (self.task(t) for t in self.todo)

    def keep(self, tile: Any, out: Any, on_tile_done: Callable | None) -> None:
        """Record a tile the executor gave back: finished (kept at once, so a resume or a Stop
        keeps it) or not (redone on a resume)."""
        config = self.job.config
        self.environment = self.environment or dict(
            getattr(out.inversion, "environment", {}) or {})
        self.disk_peak = max(self.disk_peak, self.prun.disk_bytes())
        finished = out.image is not None and out.stats["stop_reason"] != "cancelled"
        if finished:
            self.prun.write_done(tile.index, out.image, out.stats)
            self.done[tile.index] = (out.image, out.stats)
        else:
            self.stopped = True
        if not config.keep_tile_runs:
            self.prun.drop_tile_run(tile.index)
        if finished and on_tile_done is not None:
            on_tile_done(tile, out.stats)


def anonymize_tiled(
    job: PhotoJob,
    *,
    run_dir: str | Path | None,
    cancel: Any = None,
    on_step: Callable[[Any], None] | None = None,
    on_tile: Callable[[Any, Any], None] | None = None,
    on_tile_done: Callable[[Any, dict], None] | None = None,
    force: bool = False,
) -> AnonymizeResult:
    """Run a :class:`~dippas_core.job.PhotoJob` of several tiles (see
    :func:`~dippas_core.pipeline.run_job`).

    ``on_tile_done`` gets ``(tile, stats)`` for each finished tile: first the tiles a resume
    reads back (their stats say ``resumed: True``), then each tile as it is written.
    """
    from .executors import executor_for

    t_start = time.perf_counter()
    state = _open(job, run_dir, force)
    if on_tile_done is not None:
        for tile in job.plan.tiles:
            if tile.index in state.done:
                on_tile_done(tile, {**state.done[tile.index][1], "resumed": True})
    try:
        todo = state.todo
        first = state.task(todo[0]) if todo else None
        executor = executor_for(
            job, state.prun, first, len(todo), cancel=cancel, on_step=on_step,
            on_tile=None if on_tile is None else (lambda tile: on_tile(tile, job.plan)),
        )
        t0 = time.perf_counter()
        for tile, out in executor.run(state.tasks()):
            state.keep(tile, out, on_tile_done)
            del out
        t_inv = time.perf_counter() - t0
        state.stopped = state.stopped or (cancel is not None and cancel.cancelled)
        return _finish(state, executor.describe(), t_inv, t_start)
    except BaseException:
        if state.temporary:
            shutil.rmtree(state.prun.path, ignore_errors=True)
        raise


def _open(job: PhotoJob, run_dir: str | Path | None, force: bool) -> _TileRun:
    """The photo run folder (made, or resumed when it holds this very job) and its state."""
    from ..io import to_float255
    from ..run import PHOTO_RUN_FORMAT, PhotoRun, photo_sha256, temporary_run_folder

    meta = {
        "format": PHOTO_RUN_FORMAT,
        "plan": job.plan.to_dict(),
        "mode": job.mode,
        "photo_sha256": photo_sha256(job.photo),
        "fingerprint_sha256": photo_sha256(job.K) if job.K is not None else None,
        "region": None,
        "config": job.config.to_dict(),
        "fingerprint": job.fingerprint_info,
    }
    temporary = run_dir is None
    path = temporary_run_folder() if temporary else Path(run_dir)
    prun, _ = PhotoRun.open_or_create(path, meta, force=force or temporary)
    dtype = np.uint8 if job.photo.dtype == np.uint8 else np.float32
    done, damaged = prun.read_done(job.plan, dtype=np.dtype(dtype), photo=job.photo)
    if damaged:  # never trusted: each is said, deleted (ours, by name) and its tile redone
        for record in damaged:
            warnings.warn(f"{path}: {record}; tile {record.index} is redone", NoteWarning,
                          stacklevel=3)
        prun.discard(damaged)
    return _TileRun(job, prun, temporary, done, sorted(done), to_float255(job.photo),
                    disk_peak=prun.disk_bytes())


def _finish(state: _TileRun, execution: dict, t_inv: float, t_start: float) -> AnonymizeResult:
    """Stitch the finished tiles (the others keep the photo's pixels), measure, report."""
    from ..job import AnonymizeResult
    from ..report import measure
    from ..residual import residual
    from ..tiling import stitch

    job, done = state.job, state.done
    config = job.config
    t0 = time.perf_counter()
    dtype = "uint8" if job.photo.dtype == np.uint8 else "float32"
    image = stitch(job.plan, {i: v[0] for i, v in done.items()}, fill=state.img255, dtype=dtype)
    t_stitch = time.perf_counter() - t0
    t0 = time.perf_counter()
    P_full = job.K if job.K is not None else residual(state.img255, config.sigma)
    block = int(config.assembly.B) if int(config.assembly.B) % int(config.tile) == 0 else 64
    measured, maps = measure(
        state.img255, image, P_full, block, config.sigma,
        tiles=[(t.y, t.x, t.h, t.w) for t in job.plan.tiles], tau=config.assembly_tau,
    )
    timing = {"inversion": t_inv, "stitch": t_stitch, "measurement": time.perf_counter() - t0,
              "total": time.perf_counter() - t_start}
    keep = not state.temporary or config.keep_run
    report = _report(state, measured, execution, timing, keep)
    if not keep:
        shutil.rmtree(state.prun.path, ignore_errors=True)
    return AnonymizeResult(
        image=image, report=report, maps=maps, run_dir=state.prun.path if keep else None
    )


def _report(state: _TileRun, measured: dict, execution: dict, timing: dict, keep: bool) -> Any:
    from ..report import AnonymizationReport, below_tau, describe_input
    from ..run import environment_info

    job, done = state.job, state.done
    config = job.config
    missing = [t.index for t in job.plan.tiles if t.index not in done]
    tiles = []
    for t in job.plan.tiles:
        st = done[t.index][1] if t.index in done else {"done": False}
        tiles.append({**t.to_dict(), "index": t.index, "done": t.index in done, **st})
    stats = [v[1] for v in done.values()]
    return AnonymizationReport.of(
        **describe_input(job.mode, job.fingerprint_info, job.photo),
        **measured,
        partial=bool(missing),
        tiles_not_anonymized=missing,
        below_tau=below_tau([(i, done[i][1]) for i in sorted(done)]),
        tiles=tiles,
        resumed_tiles=state.resumed,
        inversion={
            "stop_reason": "cancelled" if state.stopped and missing else "finished",
            "n_iterations": int(sum(st["iterations"] for st in stats)),
            "n_snapshots": int(sum(st["n_snapshots"] for st in stats)),
            "best_psnr": min((st["best_psnr"] for st in stats), default=None),
            "elapsed_s": timing["inversion"],
            **execution,
        },
        assembly={
            "B": int(config.assembly.B),
            "L": int(config.assembly.L),
            "tau": config.assembly_tau,
            "per_tile": True,
            "stitch": "feathered linear ramps in the overlaps",
        },
        config=config.to_dict(),
        seed=int(config.dip.seed),
        sigma=float(config.sigma),
        timing_s=timing,
        disk_peak_bytes=int(state.disk_peak),
        device=state.environment.get("device", config.dip.device),
        environment=state.environment,
        versions=environment_info(),
        run_dir=str(state.prun.path) if keep else None,
    )
