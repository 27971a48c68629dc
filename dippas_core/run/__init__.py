"""A run directory: the durable record of one DIP inversion, ready to be assembled and reopened.

Layout of a run folder::

    config.json      photo size, mode (aware/blind), DIP config, seed, tile, sigma, versions,
                     device, status (recording → finished | cancelled | interrupted | failed)
                     and the result
    photo.npy        the photo as given (uint8/uint16/float, exact)
    reference.npy    P, the NCC's reference (fingerprint K, or the photo's residual if blind)
    history.csv      iteration, loss, psnr, gamma, gamma_star, kept: one line per iteration,
                     appended (runs made before gamma_star existed lack that column)
    snapshots.*      the snapshot store (:class:`~dippas_core.snapshots.SnapshotStore`)
    tilesums.*       per-tile NCC sums of every snapshot (:class:`~dippas_core.snapshots.TileSums`)
    assembly.json    the B, L, tau last used to assemble it (:meth:`RunDirectory.write_assembly`)
    .lock            advisory lock held by the run's one writer (the live recorder)

Whole files are written atomically; the appended ones (history, snapshots, tile sums) only ever
count complete records, so a run killed midway opens and assembles from what it kept.  A writable
:class:`RunDirectory` (the recorder) holds an exclusive ``flock`` on ``.lock`` for its whole life,
so another process never truncates or back-fills the stores while they grow (where ``fcntl`` is
missing, e.g. on Windows, there is no such guard).

:func:`record` runs an :class:`~dippas_core.dip.inversion.Inversion`: every kept snapshot is
written to the store at once and handed to a background *ingest* thread through a bounded queue;
the thread computes residuals in small batches (``residual_batch``, Numba, releases the GIL) and
appends the tile sums; snapshots of an inversion on a GPU are ingested on that GPU (torch
residual), only their tile sums come back.  The inversion only waits when the thread is more than
``queue_size`` snapshots behind (back-pressure).  On CPU, torch and Numba fighting over the same
cores slow each other several-fold, so while recording the inversion's steps use half the cores
(one on a 2-core machine; unless the DIP config sets ``torch_threads`` explicitly), the other half
left to the ingest (:func:`dippas_core.dip.device.recording_share`).

The package's modules: :mod:`.format` (file names, version, JSON helpers), :mod:`.folders` (run
folders, targets, temporary folders), :mod:`.checks` (a damaged run's errors),
:mod:`.directory` (:class:`RunDirectory`), :mod:`.ingest` and :mod:`.recorder` (:func:`record`),
:mod:`.photo` (:class:`PhotoRun`, a whole photo's folder of tile runs).
"""

from __future__ import annotations

from ..dip.device import usable_cpus
from .checks import DamagedRunError
from .directory import RunDirectory
from .folders import (
    TEMPORARY_PREFIX,
    check_run_target,
    check_writable_folder,
    clean_stale_temporary_runs,
    clear_run_files,
    is_photo_run_folder,
    is_run_file,
    is_run_folder,
    remove_run_folder,
    run_owning,
    temporary_run_folder,
)
from .format import (
    ASSEMBLY,
    FORMAT,
    FORMAT_VERSION,
    HISTORY_FIELDS,
    MARKER,
    PHOTO_RUN_DIRS,
    PHOTO_RUN_FORMAT,
    PHOTO_RUN_META,
    RUN_FILES,
    VIEWER_RECORD,
    environment_info,
    jsonable,
)
from .ingest import _same_kind_runs as _same_kind_runs  # tests look at the batching
from .photo import DamagedRecord, PhotoRun, job_sha256, photo_sha256
from .recorder import StepStream, gamma_summary, record

__all__ = [
    "DamagedRecord",
    "PhotoRun",
    "job_sha256",
    "photo_sha256",
    "ASSEMBLY",
    "FORMAT",
    "FORMAT_VERSION",
    "HISTORY_FIELDS",
    "MARKER",
    "PHOTO_RUN_DIRS",
    "PHOTO_RUN_FORMAT",
    "PHOTO_RUN_META",
    "RUN_FILES",
    "VIEWER_RECORD",
    "TEMPORARY_PREFIX",
    "DamagedRunError",
    "RunDirectory",
    "StepStream",
    "check_run_target",
    "check_writable_folder",
    "clean_stale_temporary_runs",
    "clear_run_files",
    "environment_info",
    "gamma_summary",
    "is_photo_run_folder",
    "is_run_file",
    "is_run_folder",
    "jsonable",
    "record",
    "remove_run_folder",
    "run_owning",
    "temporary_run_folder",
    "usable_cpus",
]
