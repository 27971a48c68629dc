"""Anonymize a whole folder of photographs on a Dask cluster (a local one by default).

The driver (:func:`run_batch`) lists the images, decides which are already done, submits one task
per remaining image and collects the results as they finish.  Each task (:func:`process_image`)
runs on a worker: it reads the photo, normalises it (gray → RGB, 16-bit → 0..255 float, size
limits), runs the per-image *job* (:func:`anonymize_job` = the DIPPAS pipeline by default), then
writes

1. the anonymized image (atomic, no metadata: :func:`dippas_core.io.write_image`),
2. its JSON report beside it (atomic),
3. last, a *done-marker* under ``OUT_DIR/.dippas-batch/done/`` (atomic) holding a key that hashes
   the input bytes, the fingerprint and every parameter.

Because the marker is written after the output, a batch killed at any moment restarts where it
stopped, and a task that Dask re-runs (its worker died after the task finished but before the
result reached the driver) finds the marker and returns the recorded result instead of computing
again.  Changing a parameter changes the key, so the image is redone.

Failures are per image: a file that cannot be read, an image of the wrong size, a job that raises,
or a worker that dies repeatedly on one image cost that image only; the record says why.

Output names never carry the source directory.  By default they are ``anon-<12 hex>`` where the
hex is an HMAC of the source file name with a random key kept in ``OUT_DIR/.dippas-batch/salt``
(stable across restarts, unlinkable to the source name without the operator's ledger);
``keep_names=True`` uses the sanitised source stem instead.  ``summary.csv``/``summary.json`` in
``OUT_DIR`` are the operator's ledger: they map outputs to source *file names* (never folders).

Modules: :mod:`.settings` (what a batch is told and reports), :mod:`.plan` (names, keys, what is
done), :mod:`.worker` (one image), :mod:`.table` (the ledger and its text), :mod:`.driver`
(:func:`run_batch`); the Dask cluster is :mod:`dippas_core.cluster`'s.  The library prints
nothing: the command line passes callbacks that do.
"""

from __future__ import annotations

from ..cluster import SCHEDULER_TIMEOUT_S, local_cluster, worker_gpu_device
from ..io import IMAGE_SUFFIXES, find_images
from .driver import Progress, run_batch
from .plan import output_names, plan_batch, sanitise_stem
from .settings import STATE_DIR, BatchResult, BatchSettings, ImageRecord, ImageTask, Job
from .table import format_progress, format_table, write_summary
from .worker import (  # noqa: F401 - the private one: tests check it on its own
    _refuse_oversized_file,
    anonymize_job,
    prepare_photo,
    process_image,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "SCHEDULER_TIMEOUT_S",
    "STATE_DIR",
    "BatchResult",
    "BatchSettings",
    "ImageRecord",
    "ImageTask",
    "Job",
    "Progress",
    "anonymize_job",
    "worker_gpu_device",
    "find_images",
    "format_progress",
    "format_table",
    "local_cluster",
    "output_names",
    "plan_batch",
    "prepare_photo",
    "process_image",
    "run_batch",
    "sanitise_stem",
    "write_summary",
]
