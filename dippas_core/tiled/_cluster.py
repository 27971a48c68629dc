"""The tiles of a photo as Dask tasks, one per tile, on a local cluster or a scheduler's.

The tiles of a photo run are independent inversions, so they can run side by side (where they run
is chosen once: :func:`dippas_core.execution.choose_execution`).  Each task inverts its tile into
the photo run folder's ``tiles/NNNN/`` and writes the tile's ``done/NNNN.npz`` record itself (so
a run whose driver dies keeps what its workers finished; the driver writes the record again if its
own view of the folder lacks it, as on a machine without the shared file system).  The driver
stitches.  With the same seed the image is the one the in-process path makes (tested with a real
two-process cluster).
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable, Generator, Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ..cancel import CancelToken
from ..errors import DippasError
from ._tile import TileOutcome, TileTask, invert_tile

__all__ = ["invert_tiles_on_cluster"]

#: How often (s) a task on a worker asks the scheduler whether the run was stopped.
CANCEL_POLL_S = 1.0


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


def _on_this_worker(config: Any, share: int | None) -> Any:
    """The config as a task on this worker runs it: ``device="auto"`` pinned to the worker's GPU
    when it advertises one (as the batch's jobs are pinned); torch capped at the config's threads,
    else at the recording's share of the worker's cores."""
    from distributed import get_worker

    from ..cluster import worker_gpu_device
    from ..dip.device import recording_share, usable_cpus

    device = worker_gpu_device() if config.dip.device == "auto" else None
    if device is not None:
        config = config.replace(device=device)
    if config.dip.torch_threads:
        return config
    if share is None:
        share = max(1, usable_cpus() // max(1, get_worker().state.nthreads))
    return config.replace(torch_threads=recording_share(share))


def invert_tile_task(
    run_path: str,
    task: TileTask,
    config: Any,
    mode: str,
    share: int | None,
    cancel_name: str,
) -> dict[str, Any]:
    """One tile on a Dask worker: invert into ``RUN/tiles/NNNN``, record ``RUN/done/NNNN.npz``.

    Returns ``{"image", "stats", "environment", "worker"}``; ``image`` is None for a tile
    stopped before it finished (not recorded: redone on a resume).
    """
    from distributed import get_worker

    from ..run import PhotoRun

    cancel = _ClusterCancel(cancel_name)
    worker = get_worker().address
    if cancel.cancelled:
        return {"image": None, "stats": {"stop_reason": "cancelled"}, "worker": worker}
    prun = PhotoRun(Path(run_path), {})
    prun.tile_path(task.index).parent.mkdir(parents=True, exist_ok=True)
    (prun.path / "done").mkdir(exist_ok=True)
    config = _on_this_worker(config, share)
    out = invert_tile(task, config, prun.tile_path(task.index), mode=mode, cancel=cancel,
                      force=True)
    out.stats["worker"] = worker
    finished = out.image is not None and out.stats["stop_reason"] != "cancelled"
    if finished:
        prun.write_done(task.index, out.image, out.stats)
    if not config.keep_tile_runs:
        prun.drop_tile_run(task.index)
    env = dict(getattr(out.inversion, "environment", {}) or {})
    return {
        "image": out.image if finished else None,
        "stats": out.stats,
        "environment": {**env, "worker": worker},
        "worker": worker,
    }


# --------------------------------------------------------------------------------------------------
# the driver


def _open_client(execution: Any) -> tuple[Any, Any, int | None]:
    """``(client, cluster or None, cores per task or None)`` for ``execution``."""
    from distributed import Client

    from ..cluster import connect, local_cluster

    if execution.kind == "local cluster":
        cluster, share = local_cluster(execution.workers)
        return Client(cluster), cluster, share
    if isinstance(execution.scheduler, str):
        return connect(execution.scheduler), None, None
    return execution.scheduler, None, None


def invert_tiles_on_cluster(
    tasks: Iterable[TileTask],
    config: Any,
    run_path: Path,
    execution: Any,
    *,
    mode: str,
    cancel: Any = None,
    on_tile: Callable[[Any], None] | None = None,
) -> Generator[tuple[Any, TileOutcome], None, None]:
    """The ``tasks`` as Dask tasks on ``execution``'s cluster; yields ``(tile, TileOutcome)``.

    ``tasks`` is read lazily: at most two tasks per worker are on the cluster at a time, so
    neither this process nor the scheduler holds every tile of a large photo.  Tiles come back
    in the order they finish; ``on_tile(tile)`` is called as each comes back (a task's progress
    is not streamed).  A ``cancel`` submits no more tiles and stops the running tasks at their
    next poll (:data:`CANCEL_POLL_S`); their tiles come back with no image.
    ``execution.workers`` and ``execution.torch_threads`` are filled in.
    """
    from distributed import Event, wait

    client, cluster, share = _open_client(execution)
    futures: dict[Any, Any] = {}
    stop = None
    try:
        options = _take_workers(client, execution, config, share)
        token = secrets.token_hex(6)  # fresh keys and event: never those of a stopped run
        stop = Event(f"dippas-photo-stop-{token}", client=client)
        queue = iter(tasks)
        in_flight = 2 * execution.workers
        stopping = cancel is not None and cancel.cancelled  # stopped before it began: send none

        def submit_next() -> bool:
            task = next(queue, None)
            if task is None:
                return False
            fut = client.submit(
                invert_tile_task, str(run_path), task, config, mode, share, stop.name,
                key=f"dippas-tile-{task.index:04d}-{token}", pure=False, **options,
            )
            futures[fut] = task.tile
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
        _close(client, cluster, execution, futures, stop)


def _take_workers(client: Any, execution: Any, config: Any, share: int | None) -> dict:
    """Fill in ``execution``'s workers and torch threads from the cluster; the submit options
    (a task asks for a GPU where the workers advertise them)."""
    from ..cluster import has_gpus
    from ..dip.device import recording_share

    workers_info = client.scheduler_info().get("workers", {})
    if not workers_info:
        raise DippasError("the Dask cluster has no workers to run the tiles")
    execution.workers = len(workers_info)
    execution.torch_threads = config.dip.torch_threads or (
        recording_share(share) if share is not None else None
    )
    return {"resources": {"GPU": 1}} if has_gpus(client) else {}


def _close(client: Any, cluster: Any, execution: Any, futures: dict, stop: Any) -> None:
    """Stop what still runs (an error, a second Ctrl-C) and close what this run opened."""
    if futures:
        if stop is not None:
            with contextlib.suppress(Exception):
                stop.set()
        client.cancel(list(futures))
    if cluster is not None:
        client.close()
        cluster.close()
    elif isinstance(execution.scheduler, str):
        client.close()
