"""The driver: plan the batch, skip what is done, run the rest on a Dask cluster, write the ledger.

It reports through callbacks only (``progress`` per finished image, ``log`` for messages): the
command line prints them, a library caller decides.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import secrets
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..cluster import connect, default_workers, has_gpus, local_cluster
from ..errors import InputError
from .plan import finished_record, plan_batch, remove_stale_temporaries
from .settings import (
    STATUS_CANCELLED,
    STATUS_FAILED,
    STATUS_OK,
    STATUS_SKIPPED,
    BatchResult,
    BatchSettings,
    ImageRecord,
    ImageTask,
    Job,
)
from .table import write_summary
from .worker import anonymize_job, process_image

if TYPE_CHECKING:
    from ..fingerprint import Fingerprint

__all__ = ["Progress", "run_batch"]

#: ``progress(done, total, record, counts)``: called after every finished image.
Progress = Callable[[int, int, ImageRecord, dict[str, int]], None]


def _load_fingerprint(
    fingerprint: Fingerprint | str | os.PathLike | None,
) -> tuple[Fingerprint | None, str | None]:
    """``(Fingerprint or None, sha256)``: a path is loaded (errors name the file)."""
    from ..fingerprint import Fingerprint

    if fingerprint is None:
        return None, None
    if isinstance(fingerprint, str | os.PathLike):
        fingerprint = Fingerprint.load(fingerprint)
    if not isinstance(fingerprint, Fingerprint):
        raise InputError(
            "the batch's fingerprint must be a Fingerprint or the path of its .npz file, "
            f"not {type(fingerprint).__name__}"
        )
    K = np.asarray(fingerprint.K)
    if not np.isfinite(K).all():
        raise InputError("the fingerprint contains NaN or infinite values")
    digest = hashlib.sha256(f"{K.shape}{K.dtype}".encode() + K.tobytes()).hexdigest()
    return fingerprint, digest


def _hold(value: Any) -> Any:
    """Identity task: keeps a value on the cluster and recomputable from the graph if lost."""
    return value


def _failure_reason(exc: BaseException) -> str:
    from distributed import KilledWorker

    if isinstance(exc, KilledWorker):
        return (
            "the worker processing this image died repeatedly (crashed, killed or out of memory); "
            "see the worker logs"
        )
    return f"{type(exc).__name__}: {exc}"


def run_batch(
    in_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    fingerprint: Fingerprint | str | os.PathLike | None = None,
    config: Any = None,
    settings: BatchSettings | None = None,
    job: Job | None = None,
    client: Any = None,
    n_workers: int | None = None,
    progress: Progress | None = None,
    log: Callable[[str], None] | None = None,
    cancel: Any = None,
) -> BatchResult:
    """Anonymize every image of ``in_dir`` into ``out_dir`` on a Dask cluster.

    Parameters
    ----------
    in_dir, out_dir : path
        Input folder (read only, never modified) and output folder (created).
    fingerprint : path, Fingerprint or None
        The camera fingerprint (PRNU-aware mode); None for blind mode.
    config : object
        The job's configuration (default job: a :class:`dippas_core.config.AnonymizeConfig`;
        None → ``AnonymizeConfig()``).  It is part of every image's params key.
    settings : BatchSettings
        Size limits, cropping and output naming.
    job : callable ``job(photo, fingerprint, config) -> obj with .image, .report``
        The per-image work; :func:`anonymize_job` by default.  Must be importable (or
        cloudpickle-able) on the workers.
    client : distributed.Client, str or None
        An existing client, a scheduler address (``tcp://host:8786``), or None to start a
        :func:`local_cluster` with ``n_workers`` workers for the duration of the batch.
    progress : callable or None
        Called after every finished image with ``(done, total, record, counts)``
        (:func:`~dippas_core.batch.format_progress` makes it a line of text).
    log : callable or None
        Called with messages about the batch as a whole (how many images an earlier run did).
    cancel : CancelToken or None
        Stops submitting and cancels pending images; finished ones stay done.

    Returns
    -------
    BatchResult
        Records in input order; ``summary.csv``/``summary.json`` are written to ``out_dir`` too.
    """

    start = time.perf_counter()
    settings = settings or BatchSettings()
    job = anonymize_job if job is None else job
    if config is None and job is anonymize_job:
        config = _default_config()
    fp, fp_sha = _load_fingerprint(fingerprint)
    # a scheduler address is checked before anything is written
    connected = connect(client) if isinstance(client, str) else None
    try:
        tasks = plan_batch(
            in_dir, out_dir, fingerprint_sha=fp_sha, config=config, settings=settings, job=job
        )
        records, todo = _done_and_todo(tasks)
        counts = {STATUS_OK: 0, STATUS_SKIPPED: len(records), STATUS_FAILED: 0}
        if log is not None and records:
            log(f"{len(records)} of {len(tasks)} images already done; {len(todo)} to go")
        workers_used = None
        try:
            if todo:
                workers_used = _run_tasks(
                    connected or client, todo, records, counts, total=len(tasks),
                    fingerprint=fp, config=config, settings=settings, job=job,
                    n_workers=n_workers, progress=progress, cancel=cancel,
                )
        finally:  # interrupted or not: the summary tells what is done
            ordered = [records[t.output] for t in tasks if t.output in records]
            summary_paths = write_summary(out_dir, ordered)
    finally:
        if connected is not None:
            connected.close()
    return BatchResult(records=ordered, out_dir=Path(out_dir), wall_s=time.perf_counter() - start,
                       n_workers=workers_used, summary_paths=tuple(summary_paths), counts=counts)


def _default_config() -> Any:
    """The anonymizer's configuration when none is given: :class:`AnonymizeConfig`'s default."""
    from ..config import AnonymizeConfig

    return AnonymizeConfig()


def _done_and_todo(tasks: list[ImageTask]) -> tuple[dict[str, ImageRecord], list[ImageTask]]:
    """The records of the images an earlier run finished, and the tasks still to run (what a
    killed run left half-written is removed first)."""
    remove_stale_temporaries(tasks)
    records: dict[str, ImageRecord] = {}
    todo = []
    for task in tasks:
        done = finished_record(task)
        if done is None:
            todo.append(task)
        else:
            records[task.output] = done
    return records, todo


def _run_tasks(
    client: Any,
    todo: list[ImageTask],
    records: dict[str, ImageRecord],
    counts: dict[str, int],
    *,
    total: int,
    fingerprint: Any,
    config: Any,
    settings: BatchSettings,
    job: Job,
    n_workers: int | None,
    progress: Progress | None,
    cancel: Any,
) -> int:
    """Submit ``todo``, fill ``records``/``counts`` as images finish; return the worker count.

    ``client=None`` starts a :func:`local_cluster` for the duration of the call.
    """
    from distributed import Client, as_completed

    cluster = None
    if client is None:
        cluster, threads = local_cluster(min(n_workers or default_workers(), len(todo)))
        if settings.torch_threads is None:
            settings = dataclasses.replace(settings, torch_threads=threads)
        client = Client(cluster)
    futures: dict[Any, ImageTask] = {}
    try:
        n_workers_seen = len(client.scheduler_info().get("workers", {}))
        submit_options = {"resources": {"GPU": 1}} if has_gpus(client) else {}
        fp_future = None
        if fingerprint is not None:
            # embedded once in the graph (not scattered): if the worker holding it dies, the
            # scheduler can recompute it, which scattered data cannot survive
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*[Ll]arge object")
                fp_future = client.submit(_hold, fingerprint, pure=False)
        run_id = secrets.token_hex(6)  # fresh keys: never collide with a cancelled run's
        for task in todo:
            fut = client.submit(
                process_image,
                task,
                fp_future,
                config,
                settings,
                job,
                key=f"dippas-{Path(task.output).name}-{run_id}",
                pure=False,
                **submit_options,
            )
            futures[fut] = task
        finished = total - len(todo)
        for fut in as_completed(list(futures)):
            task = futures.pop(fut)
            record = _record_of(fut, task)
            fut.release()
            records[task.output] = record
            counts[record.status] = counts.get(record.status, 0) + 1
            finished += 1
            if progress is not None:
                progress(finished, total, record, counts)
            if cancel is not None and cancel.cancelled and futures:
                client.cancel(list(futures))
    except BaseException:
        if futures:
            client.cancel(list(futures))
        raise
    finally:
        if cluster is not None:
            client.close()
            cluster.close()
    return n_workers_seen


def _record_of(fut: Any, task: ImageTask) -> ImageRecord:
    """The record of a finished, failed or cancelled future."""
    name = Path(task.output).name
    if fut.status == "finished":
        record = fut.result()
        if record.status == STATUS_SKIPPED:
            # not done when planned, so an attempt of this run finished it before its worker
            # died; Dask re-ran the task and the done-marker stopped a redo
            record.status = STATUS_OK
            record.reason = "recovered from an attempt whose worker died afterwards"
        return record
    if fut.status == "cancelled":
        reason = "the batch was cancelled before this image finished"
        return ImageRecord(name, task.source_name, STATUS_CANCELLED, reason=reason)
    # the summary names sources by file name only, never by their folder
    reason = _failure_reason(fut.exception()).replace(task.source, task.source_name)
    return ImageRecord(name, task.source_name, STATUS_FAILED, reason=reason)

