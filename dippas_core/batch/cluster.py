"""The Dask cluster a batch runs on: a local one sized to this machine, or a scheduler's."""

from __future__ import annotations

from typing import Any

from ..dip.device import usable_cpus
from ..errors import DippasError, InputError

__all__ = ["SCHEDULER_TIMEOUT_S", "connect", "default_workers", "has_gpus", "local_cluster"]


def _cuda_device_count() -> int:
    """CUDA devices seen by this process (0 when torch is missing or CPU-only)."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def local_cluster(n_workers: int | None = None, *, gpus: int | None = None, **kwargs: Any):
    """A :class:`distributed.LocalCluster` sized to this machine for DIPPAS inversions.

    Worker processes (one thread each, one task at a time, so a worker that crashes takes only
    the image it was running with it).  With
    CUDA devices: one worker per GPU, each advertising the resource ``GPU=1`` (tasks ask for it,
    so at most one inversion runs per GPU).  Without: one worker per CPU core by default.  Each
    worker's native thread pools (Numba, OpenMP, BLAS) are capped to its share of the cores.
    Extra keyword arguments go to :class:`~distributed.LocalCluster`.

    Returns
    -------
    cluster : distributed.LocalCluster
    torch_threads : int
        Each worker's share of the CPU cores, for ``torch.set_num_threads``.
    """
    import logging

    import dask
    from distributed import LocalCluster

    gpus = _cuda_device_count() if gpus is None else int(gpus)
    cpus = usable_cpus()
    if n_workers is None:
        n_workers = gpus if gpus else cpus
    n_workers = int(n_workers)
    if n_workers < 1:
        raise InputError(f"the number of workers must be >= 1, got {n_workers}")
    threads = max(1, cpus // n_workers)
    options: dict[str, Any] = {
        "n_workers": n_workers,
        "threads_per_worker": 1,
        "processes": True,
        "scheduler_kwargs": {"dashboard": False},
        "silence_logs": logging.ERROR,
    }
    if gpus:
        options["resources"] = {"GPU": 1}
    options.update(kwargs)
    if options["processes"]:
        # native thread pools (Numba kernels, BLAS) get the worker's share too, not every core each
        options.setdefault(
            "env",
            {
                name: str(threads)
                for name in (
                    "NUMBA_NUM_THREADS",
                    "OMP_NUM_THREADS",
                    "MKL_NUM_THREADS",
                    "OPENBLAS_NUM_THREADS",
                )
            },
        )
    # one task per worker at a time: a worker that dies takes down only the image it was running
    with dask.config.set({"distributed.scheduler.worker-saturation": 1.0}):
        cluster = LocalCluster(**options)
    return cluster, threads


#: How long to wait for a ``--scheduler`` to answer.
SCHEDULER_TIMEOUT_S = 20


def connect(address: str):
    """A client of the scheduler at ``address``, or a DippasError that says why not."""
    from distributed import Client

    try:
        return Client(address, timeout=f"{SCHEDULER_TIMEOUT_S}s")
    except ValueError as exc:
        raise InputError(f"--scheduler {address!r} is not a Dask scheduler address: {exc}") from exc
    except (OSError, TimeoutError) as exc:
        raise DippasError(f"cannot reach the Dask scheduler at {address}: {exc}") from exc


def has_gpus(client: Any) -> bool:
    """True when a worker of the client's cluster advertises a GPU resource."""
    workers = client.scheduler_info().get("workers", {})
    return any(w.get("resources", {}).get("GPU") for w in workers.values())



def default_workers() -> int:
    """One worker per CUDA device, else one per usable CPU core."""
    gpus = _cuda_device_count()
    return gpus if gpus else usable_cpus()
