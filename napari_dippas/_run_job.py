"""The worker-thread body of an Anonymize run, and how its end updates the job (no Qt).

:func:`anonymize_job` is what the Anonymize dock hands to its worker: it checks the trace,
runs :func:`dippas_core.pipeline.run_job` reporting plain events (see
:mod:`napari_dippas._run_state`) and keeps the run folder's provenance record up to date.
:func:`record_end` and :func:`record_failure` turn the run's result or error into the
:class:`~napari_dippas._models.AnonymizeJob` status and message the analyst reads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ._models import (
    AnonymizeJob,
    StepSummary,
    attribute,
    sha256_array,
    write_provenance,
)
from ._run_state import TileFinished, TilePrediction, TileStarted, TraceCheck

__all__ = ["anonymize_job", "record_end", "record_failure", "result_note"]


def anonymize_job(
    photo_job: Any, run_path: str | Path, cancel: Any, record: dict[str, Any],
) -> Callable[[Callable[[Any], None]], Any]:
    """The job of one run: ``job(report)`` runs it in the worker thread and returns its result.

    Parameters
    ----------
    photo_job : dippas_core.job.PhotoJob
        The prepared run (the cropped photo and fingerprint, the settings, the tile plan).
    run_path : path
        The run folder.
    cancel : dippas_core.cancel.CancelToken
        Stops the run.
    record : dict
        The provenance record (see :func:`~napari_dippas._models.run_provenance`); written into
        the run folder once it exists, and again with the outputs at the end.
    """
    written = threading.Event()

    def record_once() -> None:
        """The run folder exists (the tiles are about to run): say where it came from."""
        if not written.is_set():
            written.set()
            write_provenance(run_path, record)

    def job(report: Callable[[Any], None]) -> Any:
        from dippas_core.pipeline import run_job

        def tile_started(tile: Any, _plan: Any) -> None:
            record_once()
            report(TileStarted(tile.index))

        def tile_done(tile: Any, stats: dict[str, Any]) -> None:
            record_once()
            report(TileFinished.from_stats(tile.index, stats))

        def step_taken(step: Any) -> None:
            record_once()  # a one-tile run's folder exists from its first step on
            report(StepSummary.from_step(step))

        # flagged before the inversion: is there a trace to remove at all?
        photo, config = photo_job.photo, photo_job.config
        if photo_job.K is not None:  # (blind mode: the photo's own residual always "matches")
            check = attribute(photo, photo_job.K, sigma=config.sigma,
                              block_size=config.assembly.B)
            report(TraceCheck(check.pce, int(photo.shape[0] * photo.shape[1])))
        if photo_job.tiled:  # the ETA's base: each tile's iterations from its content
            from dippas_core.cost import predicts_iterations, tile_iterations

            its = tile_iterations(photo, config) if predicts_iterations(config) else {}
            report(TilePrediction(len(photo_job.plan), its))
        result = run_job(
            photo_job, run_dir=run_path, cancel=cancel, on_step=step_taken,
            on_tile=tile_started, on_tile_done=tile_done,
        )
        if result.report.get("partial"):
            record["partial"] = {"tiles_not_anonymized": result.report["tiles_not_anonymized"]}
        else:
            record.pop("partial", None)
            record["outputs"] = [{
                "what": "assembled by the run (B, L, tau of the run's settings)",
                "pixels_sha256": sha256_array(result.image),
            }]
        write_provenance(run_path, record)
        return result

    return job


def result_note(report: dict[str, Any]) -> str:
    """The image's PSNR and fidelity against the photo (and the bars it breaks), as the status
    shows them; empty for a stopped photo run (no image is shown) or a report without them."""
    from dippas_core.fidelity import describe

    fidelity = describe(report.get("fidelity"), " · ", " · ")
    if report.get("partial") or not fidelity:
        return ""
    return f"Result: PSNR {report['psnr']:.2f} dB · {fidelity}"


def record_end(job_model: AnonymizeJob, report: dict[str, Any], run_path: str | Path) -> None:
    """The run returned: finished, or stopped (a stopped photo run says what it kept)."""
    stop_reason = report.get("inversion", {}).get("stop_reason", "")
    update = {"status": "cancelled" if stop_reason == "cancelled" else "finished",
              "stop_reason": stop_reason, "result": result_note(report)}
    short = report.get("below_tau") or []
    if short and not report.get("partial"):
        tau = (report.get("assembly") or {}).get("tau")
        if tau is None and np.isfinite(job_model.record_psnr):
            tau = job_model.record_psnr  # (a one-tile run assembles at its recording threshold)
        worst = max(short, key=lambda d: d["short_db"])
        tiles = "" if len(report.get("tiles") or ()) < 2 else (
            f"{len(short)} of {len(report['tiles'])} tiles: ")
        update["message"] = (
            f"NOT anonymized to tau: {tiles}no output came within tau"
            + (f" = {tau:g} dB" if tau is not None else "")
            + f" of the photo (best {worst['best_psnr']:.1f} dB, {worst['short_db']:.1f} dB "
            "short). The image is the mean of the best outputs: its detail may be damaged, and "
            "its sidecar says below_tau. Raise max iterations or the learning rate, or lower "
            "tau, and run again."
        )
    if report.get("partial"):
        n, missing = len(report["tiles"]), len(report["tiles_not_anonymized"])
        update["message"] = (
            f"Stopped: {n - missing} of {n} tiles are anonymized and kept in "
            f"{Path(run_path).name}. Run again with the same photo, region and settings "
            "to resume from there; nothing is shown as anonymized until every tile is."
        ) if missing < n else (
            f"Stopped at iteration {job_model.iteration} of the first tile, before any "
            "tile was finished: nothing was kept. Run again and let at least one tile "
            "finish (a later Run resumes from the finished tiles)."
        )
    job_model.update(update)


def record_failure(
    job_model: AnonymizeJob, exc: BaseException, *, cancelled: bool, record_psnr: float
) -> None:
    """The run raised: nothing reached tau (stopped early, or not enough iterations), or failed."""
    from dippas_core.assembly import NoSnapshotsError

    if isinstance(exc.__cause__, NoSnapshotsError):
        if cancelled:  # stopped before tau: nothing kept, not a failure
            job_model.stopped_empty()
        else:
            job_model.update({"status": "failed", "message": (
                f"No output came within tau = {record_psnr:g} dB of the photo in "
                f"{job_model.iteration} iterations (best {job_model.best_psnr:.1f} dB): "
                "nothing was kept. Raise max iterations or the learning rate, or lower "
                "tau, and run again."
            )})
    else:
        job_model.update({"status": "failed", "message": str(exc)})
