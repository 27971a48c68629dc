"""Whole photographs on several processes or machines: one Dask task per tile.

The tiles of a photo run (:mod:`dippas_core.tiled`) are independent inversions, so they can run
side by side.  :func:`choose_execution` decides where they run:

- ``scheduler`` (an address such as ``tcp://host:8786``, or a ``distributed.Client``): on that
  cluster, one task per tile;
- ``workers=N``: a local cluster of N worker processes (:func:`dippas_core.batch.local_cluster`);
  ``workers=1`` runs the tiles one after the other in this process;
- neither: a local cluster when more than one worker helps and the caller does not follow
  every DIP step (``on_step``: the viewer's live plot needs the steps, which a task on a worker
  does not stream).  On CPUs one tile's inversion keeps
  ``2 × t`` cores busy (``t`` torch threads, as many for the recording's ingest thread, which
  computes each kept snapshot's residual; the rule :func:`~dippas_core.run.record` applies), so
  ``usable cores // (2 t)`` workers, at most one per tile; with GPUs one worker per GPU.  A
  single worker means this process: no cluster to start.

Each task inverts its tile into the photo run folder's ``tiles/NNNN/`` and writes the tile's
``done/NNNN.npz`` record itself (so a run whose driver dies keeps what its workers finished; the
driver writes the record again if its own view of the folder lacks it, as on a machine without
the shared file system).  The driver stitches.  With the same seed the image is the one the
in-process path makes (tested with a real two-process cluster).
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from .cancel import CancelToken
from .errors import DippasError, InputError

__all__ = [
    "Execution",
    "IN_PROCESS",
    "check_execution",
    "choose_execution",
    "invert_tiles_on_cluster",
]

#: ``Execution.kind`` of tiles run one after the other in this process.
IN_PROCESS = "in-process"

#: How often (s) a task on a worker asks the scheduler whether the run was stopped.
CANCEL_POLL_S = 1.0


@dataclass
class Execution:
    """Where a photo run's tiles run.

    Attributes
    ----------
    kind
        ``"in-process"``, ``"local cluster"`` or ``"scheduler"``.
    workers
        Worker processes (1 in process; for a scheduler, the workers it had at the start).
    reason
        How the choice was made, in words (recorded in the run report).
    scheduler
        The address or ``distributed.Client`` given, else None.
    torch_threads
        Torch threads per tile on a worker (None: the config's, or the worker's share).
    """

    kind: str
    workers: int
    reason: str
    scheduler: Any = None
    torch_threads: int | None = None

    @property
    def on_cluster(self) -> bool:
        return self.kind != IN_PROCESS

    def to_dict(self) -> dict[str, Any]:
        where = self.scheduler if isinstance(self.scheduler, str) else None
        return {
            "kind": self.kind,
            "workers": self.workers,
            "reason": self.reason,
            "scheduler": where,
            "torch_threads_per_tile": self.torch_threads,
        }


def _on_dask_worker() -> bool:
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return False
    return True


def _cuda_devices() -> int:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _wants_gpu(config: Any) -> bool:
    device = str(config.dip.device)
    return device == "auto" or device.startswith("cuda")


def check_execution(scheduler: Any, workers: Any, *, probe: bool = True) -> None:
    """Refuse a bad ``scheduler``/``workers`` pair before any work (:class:`InputError`).

    ``probe``: also check that a scheduler address answers as a Dask scheduler
    (:func:`~dippas_core.batch.cluster.check_scheduler`; malformed addresses are refused
    either way).
    """
    from .batch.cluster import check_scheduler, max_local_workers

    if workers is not None:
        if isinstance(workers, bool) or not isinstance(workers, int | np.integer) or workers < 1:
            raise InputError(f"workers (--workers) must be an integer >= 1, got {workers!r}")
        if scheduler is not None:
            raise InputError("give either a scheduler address (--scheduler) or a number of "
                             "local workers (--workers), not both")
        most = max_local_workers() if workers > 1 else 1
        if workers > most:
            raise InputError(f"workers (--workers) {workers} is more than this machine runs "
                             f"side by side ({most}: its cores)")
    if isinstance(scheduler, str):
        check_scheduler(scheduler, probe=probe)  # before the photo is read or a run folder made


def choose_execution(
    config: Any,
    n_tiles: int,
    *,
    scheduler: Any = None,
    workers: int | None = None,
    cpus: int | None = None,
    gpus: int | None = None,
    watched: bool = False,
) -> Execution:
    """Where the ``n_tiles`` tiles still to run go (see the module docstring).

    Parameters
    ----------
    config
        The run's ``AnonymizeConfig`` (its DIP device and ``torch_threads``).
    n_tiles
        Tiles still to run.
    scheduler
        A Dask scheduler address or ``distributed.Client``: always used when given.
    workers
        Local cluster workers; 1 = in process; None = the automatic choice.
    cpus, gpus
        The machine's usable CPU cores and CUDA devices (default: measured).
    watched
        The caller follows every DIP step (``on_step``: the viewer's live plot, a progress
        bar): the automatic choice keeps the tiles in this process, where the steps are.

    Raises
    ------
    InputError
        ``workers`` below 1 or above what the machine runs side by side, given together with
        ``scheduler``, or a scheduler address that is malformed or does not answer.
    """
    from .dip.device import usable_cpus

    check_execution(scheduler, workers, probe=False)  # the caller's check tried the address
    if n_tiles < 1:
        return Execution(IN_PROCESS, 1, "no tile left to run")
    if scheduler is not None:
        return Execution("scheduler", 0, "a Dask scheduler was given", scheduler=scheduler)
    if workers is not None:
        n = min(int(workers), n_tiles)  # a worker more than the tiles would only idle
        asked = f"{int(workers)} local workers asked for" + (
            f", {n_tiles} tile(s) to run" if n < int(workers) else "")
        if n == 1:
            return Execution(IN_PROCESS, 1, f"{asked}: tiles run in this process")
        return Execution("local cluster", n, asked)
    if _on_dask_worker():
        return Execution(IN_PROCESS, 1, "already a task on a Dask worker: no cluster inside it")
    if watched:
        return Execution(
            IN_PROCESS, 1, "automatic: the caller follows every step (on_step), which only a "
            "run in this process gives"
        )
    cpus = usable_cpus() if cpus is None else int(cpus)
    gpus = (_cuda_devices() if _wants_gpu(config) else 0) if gpus is None else int(gpus)
    if gpus:
        n = min(gpus, n_tiles)
        why = f"{gpus} GPU(s), one worker per GPU, {n_tiles} tile(s) to run"
    else:
        t = int(config.dip.torch_threads or 1)
        per_tile = 2 * t
        n = max(1, min(cpus // per_tile, n_tiles))
        why = (
            f"{cpus} usable CPU core(s), {per_tile} per tile ({t} torch thread(s) and as many for "
            f"the recording's residuals), {n_tiles} tile(s) to run"
        )
    if n <= 1:
        return Execution(IN_PROCESS, 1, f"automatic: {why} -> 1 worker: tiles run in this process")
    return Execution("local cluster", n, f"automatic: {why} -> a local cluster of {n} workers")


# --------------------------------------------------------------------------------------------------
# the task on a worker


class _ClusterCancel(CancelToken):
    """The run's stop as a task on a worker sees it: a :class:`CancelToken` that is also set by
    a ``distributed.Event``, polled at most once a second (each poll asks the scheduler)."""

    def __init__(self, name: str) -> None:
        from distributed import Event

        super().__init__()
        self._stop = Event(name)
        self._checked = 0.0

    @property
    def cancelled(self) -> bool:
        if super().cancelled:
            return True
        now = time.monotonic()
        if now - self._checked >= CANCEL_POLL_S:
            self._checked = now
            try:
                stopped = bool(self._stop.is_set())
            except Exception:  # noqa: BLE001 - a lost scheduler: stop rather than run on
                stopped = True
            if stopped:
                self.cancel()
        return super().cancelled


def _worker_device(config: Any) -> Any:
    """On a worker that advertises a GPU resource, pin ``device="auto"`` to its GPU (as the
    batch's jobs are pinned)."""
    from .batch.worker import worker_gpu_device

    device = worker_gpu_device() if config.dip.device == "auto" else None
    if device is None:
        return config
    return dataclasses.replace(config, dip=config.dip.replace(device=device))


def _worker_threads(config: Any, share: int | None) -> Any:
    """Cap torch on a worker: the config's threads, else half the worker's share of the cores."""
    from distributed import get_worker

    from .dip.device import usable_cpus

    if config.dip.torch_threads:
        return config
    if share is None:
        share = max(1, usable_cpus() // max(1, get_worker().state.nthreads))
    return dataclasses.replace(config, dip=config.dip.replace(torch_threads=max(1, share // 2)))


def invert_tile_task(
    run_path: str,
    tile: Any,
    tile_raw: np.ndarray,
    P: np.ndarray,
    config: Any,
    mode: str,
    extra: dict,
    share: int | None,
    cancel_name: str,
) -> dict[str, Any]:
    """One tile on a Dask worker: invert into ``RUN/tiles/NNNN``, record ``RUN/done/NNNN.npz``.

    Returns ``{"image", "stats", "environment", "worker"}``; ``image`` is None for a tile
    stopped before it finished (not recorded: redone on a resume).
    """
    from distributed import get_worker

    from .tiled import PhotoRun, invert_tile

    cancel = _ClusterCancel(cancel_name)
    worker = get_worker().address
    if cancel.cancelled:
        return {"image": None, "stats": {"stop_reason": "cancelled"}, "worker": worker}
    prun = PhotoRun(Path(run_path), {})
    prun.tile_path(tile.index).parent.mkdir(parents=True, exist_ok=True)
    (prun.path / "done").mkdir(exist_ok=True)
    config = _worker_threads(_worker_device(config), share)
    out = invert_tile(
        tile_raw, P, config, prun.tile_path(tile.index), mode=mode, cancel=cancel,
        force=True, extra=extra,
    )
    out.stats["worker"] = worker
    finished = out.image is not None and out.stats["stop_reason"] != "cancelled"
    if finished:
        prun.write_done(tile.index, out.image, out.stats)
    if not config.keep_tile_runs:
        prun.drop_tile_run(tile.index)
    env = dict(getattr(out.inversion, "environment", {}) or {})
    return {
        "image": out.image if finished else None,
        "stats": out.stats,
        "environment": {**env, "worker": worker},
        "worker": worker,
    }


# --------------------------------------------------------------------------------------------------
# the driver


def _open_client(execution: Execution, config: Any) -> tuple[Any, Any, int | None]:
    """``(client, cluster or None, cores per task or None)`` for ``execution``."""
    from distributed import Client

    from .batch.cluster import connect, local_cluster

    if execution.kind == "local cluster":
        cluster, share = local_cluster(execution.workers)
        return Client(cluster), cluster, share
    if isinstance(execution.scheduler, str):
        return connect(execution.scheduler), None, None
    return execution.scheduler, None, None


def invert_tiles_on_cluster(
    jobs: Iterable[tuple[Any, np.ndarray, np.ndarray]],
    config: Any,
    run_path: Path,
    execution: Execution,
    *,
    mode: str,
    extra: Callable[[Any], dict],
    cancel: Any = None,
    on_tile: Callable[[Any], None] | None = None,
) -> Generator[tuple[Any, Any], None, None]:
    """The tiles ``jobs`` (``(tile, image, P)``) as Dask tasks; yields ``(tile, TileOutcome)``.

    ``jobs`` is read lazily: at most two tasks per worker are on the cluster at a time, so
    neither this process nor the scheduler holds every tile of a large photo.  Tiles come back
    in the order they finish; ``on_tile(tile)`` is called as each comes back (a task's progress
    is not streamed).  A ``cancel`` submits no more tiles and stops the running tasks at their
    next poll (:data:`CANCEL_POLL_S`); their tiles come back with no image.
    ``execution.workers`` and ``execution.torch_threads`` are filled in.
    """
    from distributed import Event, wait

    from .batch.cluster import has_gpus
    from .tiled import TileOutcome

    client, cluster, share = _open_client(execution, config)
    futures: dict[Any, Any] = {}
    stop = None
    try:
        workers_info = client.scheduler_info().get("workers", {})
        if not workers_info:
            raise DippasError("the Dask cluster has no workers to run the tiles")
        execution.workers = len(workers_info)
        execution.torch_threads = config.dip.torch_threads or (
            max(1, share // 2) if share is not None else None
        )
        options = {"resources": {"GPU": 1}} if has_gpus(client) else {}
        token = secrets.token_hex(6)  # fresh keys and event: never those of a stopped run
        stop = Event(f"dippas-photo-stop-{token}", client=client)
        queue = iter(jobs)
        in_flight = 2 * execution.workers
        stopping = cancel is not None and cancel.cancelled  # stopped before it began: send none

        def submit_next() -> bool:
            job = next(queue, None)
            if job is None:
                return False
            tile, image, P = job
            fut = client.submit(
                invert_tile_task, str(run_path), tile, image, P, config, mode, extra(tile),
                share, stop.name, key=f"dippas-tile-{tile.index:04d}-{token}", pure=False,
                **options,
            )
            futures[fut] = tile
            return True

        while not stopping and len(futures) < in_flight and submit_next():
            pass
        while futures:
            if not stopping and cancel is not None and cancel.cancelled:
                stopping = True
                stop.set()  # running tasks stop at their next poll
            try:
                finished = wait(list(futures), timeout=0.5, return_when="FIRST_COMPLETED").done
            except TimeoutError:
                continue
            for fut in finished:
                tile = futures.pop(fut)
                res = fut.result()  # a task's error is the run's error, as in process
                fut.release()
                if not stopping:
                    submit_next()
                if on_tile is not None:
                    on_tile(tile)
                inv = SimpleNamespace(environment=res.get("environment") or {})
                yield tile, TileOutcome(res["image"], res["stats"], inversion=inv)
    finally:
        if futures:  # stopped early (an error, a second Ctrl-C): running tasks stop too
            if stop is not None:
                with contextlib.suppress(Exception):
                    stop.set()
            client.cancel(list(futures))
        if cluster is not None:
            client.close()
            cluster.close()
        elif isinstance(execution.scheduler, str):
            client.close()
