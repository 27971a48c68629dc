"""The Dask cluster that batches and the tiles of a photo run on: a local one sized to this
machine, or a scheduler's; and what a task learns about the worker it runs on."""

from __future__ import annotations

import sys
from typing import Any

from .dip.device import usable_cpus
from .errors import DippasError, InputError

__all__ = [
    "SCHEDULER_PROBE_S",
    "SCHEDULER_TIMEOUT_S",
    "check_scheduler",
    "connect",
    "cuda_device_count",
    "default_workers",
    "has_gpus",
    "local_cluster",
    "max_local_workers",
    "on_dask_worker",
    "worker_gpu_device",
]

#: How long a ``--scheduler`` address may take to accept a connection when it is checked.
SCHEDULER_PROBE_S = 5.0
#: Dask's default scheduler port (an address without one means it).
_DASK_PORT = 8786
#: Schemes of Dask's communication layer (an address without one is ``tcp``).
_SCHEMES = ("tcp", "tls", "ws", "wss", "ucx", "inproc")


def cuda_device_count() -> int:
    """CUDA devices seen by this process (0 when torch is missing or CPU-only)."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def max_local_workers() -> int:
    """The most local workers that run side by side here: one per core (a GPU worker needs a
    core too).  More would only share the cores, each with its own copy of the photo."""
    import os

    return max(usable_cpus(), os.cpu_count() or 1)


def check_scheduler(address: str, *, probe: bool = True) -> None:
    """Refuse a ``--scheduler`` address that is malformed or (``probe``) where no Dask scheduler
    answers, before any work (a photo read, a run folder written): a TCP connection is tried,
    and its greeting read, for at most :data:`SCHEDULER_PROBE_S` seconds.

    Raises
    ------
    InputError
        Naming the address and what is wrong with it.
    """
    import socket

    text = address.strip()
    if not text:
        raise InputError("--scheduler needs a Dask scheduler address, e.g. tcp://host:8786")
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "tcp", text
    if scheme not in _SCHEMES:
        raise InputError(f"--scheduler {address!r} is not a Dask scheduler address: unknown "
                         f"protocol {scheme!r} (Dask speaks {', '.join(_SCHEMES)}; e.g. "
                         "tcp://host:8786)")
    if scheme in ("inproc", "ucx"):
        return  # no TCP address to check
    host, port_text = rest, ""
    if rest.startswith("["):  # [IPv6]:port
        host, _, tail = rest[1:].partition("]")
        port_text = tail.removeprefix(":")
    elif rest.count(":") == 1:
        host, port_text = rest.split(":")
    host = host.rstrip("/")
    try:
        port = int(port_text.rstrip("/")) if port_text else _DASK_PORT
    except ValueError:
        port = -1
    if not host or "/" in host or not 0 < port < 65536:
        raise InputError(f"--scheduler {address!r} is not a Dask scheduler address "
                         "(protocol://host:port, e.g. tcp://10.0.0.5:8786)")
    if not probe:
        return
    try:
        with socket.create_connection((host, port), timeout=SCHEDULER_PROBE_S) as sock:
            greeting = _dask_greeting(sock) if scheme == "tcp" else True
    except OSError as exc:
        why = exc.strerror or str(exc) or type(exc).__name__
        raise InputError(
            f"no Dask scheduler answers at {address} ({why}); start one there (dask scheduler) "
            "or leave --scheduler out"
        ) from None
    if not greeting:
        raise InputError(
            f"{address} answers, but not as a Dask scheduler (no Dask greeting within "
            f"{SCHEDULER_PROBE_S:g} s); check the address and port (dask scheduler listens on "
            f"{_DASK_PORT} by default)"
        )


def _dask_greeting(sock: Any) -> bool:
    """Whether the peer greets as a Dask scheduler does: on a connection it first sends its
    handshake, one small message (an 8-byte length, then msgpack naming ``pickle-protocol``).
    At most 64 KiB is read: a peer that is something else costs no memory."""
    import struct

    def read(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                break
            data += chunk
        return data

    try:
        head = read(8)
        if len(head) < 8:
            return False
        (size,) = struct.unpack("<Q", head)
        return 0 < size <= 1 << 16 and b"pickle-protocol" in read(size)
    except (OSError, TimeoutError):
        return False


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

    gpus = cuda_device_count() if gpus is None else int(gpus)
    cpus = usable_cpus()
    if n_workers is None:
        n_workers = gpus if gpus else cpus
    n_workers = int(n_workers)
    if not 1 <= n_workers <= max_local_workers():
        raise InputError(f"the number of workers must be between 1 and {max_local_workers()} "
                         f"on this machine (its cores), got {n_workers}")
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
    except Exception as exc:  # noqa: BLE001 - a peer that is no scheduler garbles the handshake
        raise DippasError(f"the Dask scheduler at {address} could not be spoken to "
                          f"({type(exc).__name__}: {str(exc)[:200]})") from exc


def has_gpus(client: Any) -> bool:
    """True when a worker of the client's cluster advertises a GPU resource."""
    workers = client.scheduler_info().get("workers", {})
    return any(w.get("resources", {}).get("GPU") for w in workers.values())


def default_workers() -> int:
    """One worker per CUDA device, else one per usable CPU core."""
    gpus = cuda_device_count()
    return gpus if gpus else usable_cpus()


def on_dask_worker() -> bool:
    """Whether this code runs as a task on a Dask worker."""
    if "distributed" not in sys.modules:  # a worker has it loaded; importing it costs ~0.7 s
        return False
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return False
    return True


def worker_gpu_device() -> str | None:
    """``cuda:<i>`` for a Dask worker that advertises a GPU resource, else None.

    Workers of :func:`local_cluster` are named 0..n-1 (one per GPU); a worker elsewhere that owns
    one GPU (``CUDA_VISIBLE_DEVICES`` set per worker, as dask-cuda does) gets ``cuda:0``.
    """
    if "distributed" not in sys.modules:
        return None
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None
    if not worker.state.total_resources.get("GPU"):
        return None
    import torch

    count = torch.cuda.device_count()
    if count == 0:
        return None
    index = worker.name if isinstance(worker.name, int) else 0
    return f"cuda:{index % count}"
