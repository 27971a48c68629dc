"""The whole job in one call: :func:`anonymize` (prepare, DIP inversion, recording, assembly,
report), or :func:`run_job` for a job :func:`~dippas_core.job.prepare` made beforehand."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .cancel import CancelToken
from .config import AnonymizeConfig
from .job import AnonymizeResult, PhotoJob, prepare

if TYPE_CHECKING:
    from .cost import CostEstimate
    from .fingerprint import Fingerprint

__all__ = ["AnonymizeResult", "anonymize", "run_job"]


def anonymize(
    photo: np.ndarray,
    fingerprint: Fingerprint | np.ndarray | None = None,
    config: AnonymizeConfig | None = None,
    *,
    region: tuple[int, int, int, int] | None = None,
    scheduler: Any = None,
    workers: int | None = None,
    **run: Any,
) -> AnonymizeResult:
    """Remove the camera fingerprint from ``photo`` with DIPPAS.

    :func:`~dippas_core.job.prepare` (which checks everything before any work and says where the
    tiles run: ``photo``, ``fingerprint``, ``config``, ``region``, ``scheduler``, ``workers``),
    then :func:`run_job` (the keyword arguments ``run``: ``run_dir``, ``cancel``, ``on_step``,
    ``on_tile``, ``on_tile_done``, ``force``, ``estimate``).  By default the tiles run in this
    process when ``on_step`` is given (only there are the steps), else wherever more than one
    worker helps.

    A photo larger than ``config.tile_size`` is cut into overlapping tiles, each inverted by its
    own network and assembled with the same B, L, tau, then stitched with feathered weights
    (docs/whole-photos.md).  PRNU-blind without a fingerprint: the reference is the photo's own
    residual (and the NCC/PCE "with the fingerprint" in the report are taken against it).

    Returns
    -------
    AnonymizeResult
    """
    force = bool(run.get("force", False))
    job = prepare(
        photo, fingerprint, config, region=region, scheduler=scheduler, workers=workers,
        watched=run.get("on_step") is not None, run_dir=None if force else run.get("run_dir"),
    )
    return run_job(job, **run)


def run_job(
    job: PhotoJob,
    *,
    run_dir: str | os.PathLike | None = None,
    cancel: CancelToken | None = None,
    on_step: Callable[[Any], None] | None = None,
    on_tile: Callable[[Any, Any], None] | None = None,
    on_tile_done: Callable[[Any, dict], None] | None = None,
    force: bool = False,
    estimate: CostEstimate | None = None,
) -> AnonymizeResult:
    """Run a prepared :class:`~dippas_core.job.PhotoJob`.

    Parameters
    ----------
    job
        What :func:`~dippas_core.job.prepare` made.
    run_dir
        Folder for the run so it can be re-assembled (one tile) or resumed (several tiles: the
        same job on the same folder goes on from the first unfinished tile); by default a
        temporary folder removed at the end (``config.keep_run`` keeps it).
    cancel
        Stops the inversion early.  One tile: the image is assembled from the snapshots kept so
        far.  Several: the finished tiles are stitched, the others keep the original pixels and
        the report says ``partial`` (and which tiles are not anonymized).
    on_step
        Called with each DIP ``Step`` (progress; not for tiles on a Dask cluster); in a photo
        run ``step.tile`` is its tile's index (several tiles per step interleave their steps).
    on_tile
        Called with ``(tile, plan)`` before each tile's inversion (several tiles only; on a
        cluster as each tile comes back).
    on_tile_done
        Called with ``(tile, stats)`` for each finished tile (several tiles only): first those a
        resume reads back (``stats["resumed"]`` is True), then each as it is written.
    force
        Replace a previous run in ``run_dir`` (instead of resuming it).
    estimate
        A :class:`~dippas_core.cost.CostEstimate` made beforehand, recorded next to the real time.

    Raises
    ------
    DeviceError
        The device asked for does not exist (raised before the run folder is made), or it ran out
        of memory.
    NoSnapshotsError
        A one-tile inversion stopped before any output reached the recording threshold.
    """
    from .tiled import anonymize_tiled

    if job.tiled:
        result = anonymize_tiled(
            job, run_dir=run_dir, cancel=cancel, on_step=on_step, on_tile=on_tile,
            on_tile_done=on_tile_done, force=force,
        )
    else:
        result = _anonymize_one(job, run_dir=run_dir, cancel=cancel, on_step=on_step, force=force)
    extra: dict[str, Any] = {
        "tile_plan": {k: v for k, v in job.plan.to_dict().items() if k != "tiles"}
    }
    if job.region is not None:
        extra["region"] = {
            **job.region,
            "note": "only this region was anonymized; the rest of the photo still carries the "
            "camera's trace",
        }
    if estimate is not None:
        extra["cost"] = {
            "estimate_s": estimate.seconds,
            "estimate": estimate.to_dict(),
            "actual_s": float(result.report["timing_s"]["total"]),
        }
    result.report = result.report.with_(**extra)
    return result


def _anonymize_one(
    job: PhotoJob,
    *,
    run_dir: str | os.PathLike | None,
    cancel: CancelToken | None,
    on_step: Callable[[Any], None] | None,
    force: bool,
) -> AnonymizeResult:
    """A photo that fits in one tile: one inversion, one run folder (re-assemblable)."""
    from .io import to_float255
    from .residual import residual
    from .run import temporary_run_folder
    from .tiled import TileTask, invert_tile

    t_start = time.perf_counter()
    config = job.config
    img255 = to_float255(job.photo)
    P = job.K if job.K is not None else residual(img255, config.sigma)
    temporary = run_dir is None
    path = temporary_run_folder() if temporary else Path(run_dir)
    try:
        extra = {"anonymize_config": config.to_dict(), "fingerprint": job.fingerprint_info}
        t0 = time.perf_counter()
        out = invert_tile(
            TileTask(job.plan.tiles[0], job.photo, P, extra), config, path, mode=job.mode,
            cancel=cancel, on_step=on_step, force=force,
        )
        t_inv = time.perf_counter() - t0
        _check_kept(out, config)
        image, report, maps = _one_tile_report(job, out, img255, P, temporary, path)
        report = report.with_(timing_s={
            "inversion": t_inv,
            "assembly": float(out.stats["assembly"].get("elapsed_s", 0.0)),
            "measurement": report["timing_s"]["measurement"],
            "total": time.perf_counter() - t_start,
        })
    except BaseException:
        if temporary:
            shutil.rmtree(path, ignore_errors=True)
        raise
    if temporary and not config.keep_run:
        shutil.rmtree(path, ignore_errors=True)
    return AnonymizeResult(
        image=image,
        report=report,
        maps=maps,
        run_dir=Path(report["run_dir"]) if report["run_dir"] else None,
        assembly=out.assembly,
    )


def _check_kept(out: Any, config: AnonymizeConfig) -> None:
    """A run stopped before any output reached the recording threshold is not anonymized (as an
    unfinished tile of a photo run is not): its best-PSNR fallback is only for runs that ended."""
    from .assembly import NoSnapshotsError

    stopped_short = out.stats["stop_reason"] == "cancelled" and out.assembly is None
    if out.image is None or stopped_short:
        raise NoSnapshotsError(
            "the inversion was stopped before its first iteration"
            if out.image is None
            else f"the inversion was stopped before any output reached tau = "
            f"{config.dip.record_psnr:g} dB (best {out.stats['best_psnr']:.2f} dB): nothing "
            "was kept"
        )


def _one_tile_report(
    job: PhotoJob, out: Any, img255: np.ndarray, P: np.ndarray, temporary: bool, path: Path
) -> tuple[np.ndarray, Any, dict[str, np.ndarray]]:
    """The image, its :class:`~dippas_core.report.AnonymizationReport` and its block maps."""
    from .report import AnonymizationReport, below_tau, describe_input, measure
    from .run import environment_info, gamma_summary

    config, asm, st, inv = job.config, out.assembly, out.stats, out.inversion
    raw = job.photo
    block = asm.block if asm is not None else int(min(config.assembly.B, max(raw.shape[:2])))
    t0 = time.perf_counter()
    measured, maps = measure(img255, out.image, P, block, config.sigma, tau=config.assembly_tau)
    if asm is not None:  # the same measurement; spare a second residual
        asm._ncc_map = maps["block_ncc_after"]
    env = dict(getattr(inv, "environment", {}) or {})
    report = AnonymizationReport.of(
        **describe_input(job.mode, job.fingerprint_info, raw),
        **measured,
        inversion={
            "stop_reason": st["stop_reason"],
            "n_iterations": st["iterations"],
            "n_snapshots": st["n_snapshots"],
            "best_psnr": st["best_psnr"],
            "final_gamma": float(inv.history["gamma"][-1]) if inv.n_iterations else None,
            # gamma over the recording phase: at its bound, medians of gamma and gamma*
            "gamma": gamma_summary(out.run.history()),  # history.csv marks kept iterations
            "elapsed_s": float(inv.elapsed_s),
        },
        below_tau=below_tau([(0, st)]),
        tiles=[{"y": 0, "x": 0, "h": int(raw.shape[0]), "w": int(raw.shape[1]), **st}],
        assembly=st["assembly"],
        config=config.to_dict(),
        seed=int(config.dip.seed),
        sigma=float(config.sigma),
        timing_s={"measurement": time.perf_counter() - t0},
        device=env.get("device", config.dip.device),
        environment=env,
        versions=environment_info(),
        run_dir=None if temporary and not config.keep_run else str(path),
    )
    return out.image, report, maps
