"""Where the tiles of a photo run: chosen once, before the run (:func:`choose_execution`).

- ``scheduler`` (an address such as ``tcp://host:8786``, or a ``distributed.Client``): on that
  cluster, one Dask task per tile;
- ``workers=N``: a local cluster of N worker processes (:func:`dippas_core.cluster.local_cluster`);
  ``workers=1`` runs the tiles one after the other in this process;
- neither: a local cluster when more than one worker helps and the caller does not follow
  every DIP step (``watched``: the viewer's live plot needs the steps, which a task on a worker
  does not stream).  On CPUs one tile's inversion keeps ``2 × t`` cores busy (``t`` torch
  threads, as many for the recording's ingest thread, which computes each kept snapshot's
  residual: :func:`~dippas_core.dip.device.recording_share`), so ``usable cores // (2 t)``
  workers, at most one per tile; with GPUs one worker per GPU.  A single worker means this
  process: no cluster to start.

In this process, the tiles run one network at a time or several per optimiser step
(``tiles_per_step``); :mod:`dippas_core.tiled` runs them behind one interface whatever the choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InputError

__all__ = ["IN_PROCESS", "Execution", "check_execution", "choose_execution"]

#: ``Execution.kind`` of tiles run in this process.
IN_PROCESS = "in-process"


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


def _wants_gpu(config: Any) -> bool:
    device = str(config.dip.device)
    return device == "auto" or device.startswith("cuda")


def check_execution(scheduler: Any, workers: Any, *, probe: bool = True) -> None:
    """Refuse a bad ``scheduler``/``workers`` pair before any work (:class:`InputError`).

    ``probe``: also check that a scheduler address answers as a Dask scheduler
    (:func:`~dippas_core.cluster.check_scheduler`; malformed addresses are refused
    either way).
    """
    from .cluster import check_scheduler, max_local_workers

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
    from .cluster import cuda_device_count, on_dask_worker
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
    if on_dask_worker():
        return Execution(IN_PROCESS, 1, "already a task on a Dask worker: no cluster inside it")
    if watched:
        return Execution(
            IN_PROCESS, 1, "automatic: the caller follows every step (on_step), which only a "
            "run in this process gives"
        )
    cpus = usable_cpus() if cpus is None else int(cpus)
    gpus = (cuda_device_count() if _wants_gpu(config) else 0) if gpus is None else int(gpus)
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
