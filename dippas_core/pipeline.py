"""The whole job in one call: :func:`anonymize` (DIP inversion, recording, assembly, report)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._validation import as_image, check_same_size
from .cancel import CancelToken
from .config import AnonymizeConfig
from .errors import InputError
from .fingerprint import Fingerprint, fingerprint_parts
from .io import to_float255
from .report import AnonymizationReport, below_tau, describe_input, measure

__all__ = [
    "AnonymizeResult",
    "anonymize",
    "estimate_cost",
]

@dataclass
class AnonymizeResult:
    """What :func:`anonymize` returns.

    Attributes
    ----------
    image
        The anonymized photo: uint8 H×W×3 for 8-bit input, float32 0..255 otherwise (write it with
        ``io.write_image(..., bit_depth=16)``).
    report
        The :class:`~dippas_core.report.AnonymizationReport` (PSNR, NCC/PCE before and after,
        parameters, seed, timing, versions, device), read like a dict; its published part is
        what may travel with the image.
    maps
        ``block_ncc_before`` / ``block_ncc_after`` (Bh×Bw float64), kept out of the report.
    run_dir
        The run folder (``None`` when it was temporary and removed).
    assembly
        The :class:`~dippas_core.assembly.AssemblyResult` (choices per block, timings).
    """

    image: np.ndarray
    report: AnonymizationReport
    maps: dict[str, np.ndarray]
    run_dir: Path | None
    assembly: Any = field(repr=False, default=None)


def estimate_cost(
    photo_shape: tuple[int, ...],
    config: AnonymizeConfig,
    device: str | None = None,
    *,
    n_tiles: int | None = None,
) -> Any:
    """Time a few iterations at the tile size; see :func:`dippas_core.tiled.estimate_cost`."""
    from .tiled import estimate_cost as _estimate

    return _estimate(photo_shape, config, device, n_tiles=n_tiles)


def _reference(
    img255: np.ndarray, fingerprint: Fingerprint | np.ndarray | None, sigma: float
) -> tuple[str, np.ndarray | None, dict | None]:
    """Mode, the reference K (``None`` in blind mode: per tile) and the fingerprint's metadata."""
    P, info = fingerprint_parts(fingerprint)
    if P is None:
        return "blind", None, None
    check_same_size(img255, P, "photo", "fingerprint")
    return "aware", P, info


def anonymize(
    photo: np.ndarray,
    fingerprint: Fingerprint | np.ndarray | None = None,
    config: AnonymizeConfig | None = None,
    *,
    run_dir: str | os.PathLike | None = None,
    cancel: CancelToken | None = None,
    on_step: Callable[[Any], None] | None = None,
    on_tile: Callable[[Any, Any], None] | None = None,
    on_tile_done: Callable[[Any, dict], None] | None = None,
    force: bool = False,
    region: tuple[int, int, int, int] | None = None,
    estimate: Any = None,
    scheduler: Any = None,
    workers: int | None = None,
) -> AnonymizeResult:
    """Remove the camera fingerprint from ``photo`` with DIPPAS.

    Parameters
    ----------
    photo
        H×W×3 photo of any size: uint8, uint16 or float on the 0..255 scale.  Never modified.
        A photo larger than ``config.tile_size`` is cut into overlapping tiles, each inverted by
        its own network and assembled with the same B, L, tau, then stitched with feathered
        weights (docs/whole-photos.md).
    fingerprint
        The camera's :class:`~dippas_core.fingerprint.Fingerprint` (or its ``K`` array), same H×W as
        the photo: PRNU-aware mode.  ``None``: PRNU-blind mode, the reference is the photo's own
        residual (and the NCC/PCE "with the fingerprint" in the report are taken against it).
    config
        :class:`AnonymizeConfig` (default: the paper's setup).
    run_dir
        Folder for the run so it can be re-assembled (one tile) or resumed (several tiles: the
        same call on the same folder goes on from the first unfinished tile); by default a
        temporary folder removed at the end (``config.keep_run`` keeps it).
    cancel
        Stops the inversion early.  One tile: the image is assembled from the snapshots kept so
        far.  Several: the finished tiles are stitched, the others keep the original pixels and
        the report says ``partial`` (and which tiles are not anonymized).
    on_step
        Called with each DIP ``Step`` (progress).
    on_tile
        Called with ``(tile, plan)`` before each tile's inversion (several tiles only).
    on_tile_done
        Called with ``(tile, stats)`` for each finished tile (several tiles only): first those a
        resume reads back (``stats["resumed"]`` is True), then each as it is written.
    force
        Replace a previous run in ``run_dir`` (instead of resuming it).
    region
        ``(y, x, h, w)``: anonymize only that region (with the matching fingerprint region) and
        return just it.  The rest of the photo still carries the camera's trace.
    estimate
        A :class:`~dippas_core.tiled.CostEstimate` made beforehand, recorded next to the real time.
    scheduler, workers
        Where the tiles of a photo that needs several run: a Dask scheduler address (or
        ``distributed.Client``), one Dask task per tile; or ``workers`` local worker processes
        (1: in this process).  By default a local cluster when more than one worker helps and
        no ``on_step`` is given (:func:`dippas_core.photo_cluster.choose_execution`; the choice
        and why are in
        ``report["inversion"]["execution"]``).  On a cluster ``on_step`` is not called and
        ``on_tile`` is called as each tile comes back.  Same seed, same image either way.

    Returns
    -------
    AnonymizeResult

    Raises
    ------
    InputError, ShapeMismatchError
        Bad photo or fingerprint, fingerprint of another size, bad region, tile size or overlap,
        or assembly parameters (B, L, tau) that do not fit: all raised before any run folder is
        made or any inversion starts.
    DeviceError
        The device asked for does not exist (raised before the run folder is made), or it ran out
        of memory.
    NoSnapshotsError
        The inversion was stopped before its first iteration.
    """
    from .photo_cluster import check_execution
    from .tiling import check_region, plan_tiles

    config = AnonymizeConfig() if config is None else config
    if not isinstance(config, AnonymizeConfig):
        raise InputError(f"config must be an AnonymizeConfig, got {type(config).__name__}")
    raw = np.asarray(photo)
    img = as_image(raw, "photo")
    if img.ndim != 3:
        raise InputError(
            f"photo must be a colour H×W×3 image, got shape {raw.shape}; stack a gray photo into "
            "three channels first"
        )
    K, _ = fingerprint_parts(fingerprint)
    if K is not None:
        check_same_size(img, K, "photo", "fingerprint")
    offset = None
    if region is not None:
        y, x, h, w = check_region(region, raw.shape)
        offset = {"y": y, "x": x, "h": h, "w": w}
        raw = raw[y : y + h, x : x + w]
        if fingerprint is not None:
            fingerprint = _crop_fingerprint(fingerprint, y, x, h, w)
    plan = plan_tiles(raw.shape, config.tile_size, config.overlap)
    check_execution(scheduler, workers)
    # B, L and tau are only used after the inversions: refuse bad ones now, not hours later
    for shape in {(t.h, t.w) for t in plan.tiles}:
        config.assembly.fitted(shape, config.tile, config.dip.record_psnr)
    if len(plan) == 1:
        result = _anonymize_one(
            raw, fingerprint, config, run_dir=run_dir, cancel=cancel, on_step=on_step, force=force
        )
    else:
        from .tiled import anonymize_tiled

        result = anonymize_tiled(
            raw,
            fingerprint,
            config,
            plan,
            run_dir=run_dir,
            cancel=cancel,
            on_step=on_step,
            on_tile=on_tile,
            on_tile_done=on_tile_done,
            force=force,
            scheduler=scheduler,
            workers=workers,
        )
    extra: dict[str, Any] = {
        "tile_plan": {k: v for k, v in plan.to_dict().items() if k != "tiles"}
    }
    if offset is not None:
        extra["region"] = {
            **offset,
            "note": "only this region was anonymized; the rest of the photo still carries the "
            "camera's trace",
        }
    if estimate is not None:
        extra["cost"] = {
            "estimate_s": float(estimate.seconds),
            "estimate": estimate.to_dict(),
            "actual_s": float(result.report["timing_s"]["total"]),
        }
    result.report = result.report.with_(**extra)
    return result


def _crop_fingerprint(
    fingerprint: Fingerprint | np.ndarray, y: int, x: int, h: int, w: int
) -> Fingerprint | np.ndarray:
    """The fingerprint's (y, x, h, w) region (a Fingerprint keeps its metadata)."""
    if isinstance(fingerprint, Fingerprint):
        return fingerprint.region(y, x, h, w)
    return np.asarray(fingerprint)[y : y + h, x : x + w]


def _anonymize_one(
    raw: np.ndarray,
    fingerprint: Fingerprint | np.ndarray | None,
    config: AnonymizeConfig,
    *,
    run_dir: str | os.PathLike | None,
    cancel: CancelToken | None,
    on_step: Callable[[Any], None] | None,
    force: bool,
) -> AnonymizeResult:
    """A photo that fits in one tile: one inversion, one run folder (re-assemblable)."""
    from .residual import residual
    from .run import environment_info, gamma_summary, temporary_run_folder
    from .tiled import invert_tile

    t_start = time.perf_counter()
    img255 = to_float255(raw)
    mode, P, fp_info = _reference(img255, fingerprint, config.sigma)
    if P is None:
        P = residual(img255, config.sigma)
    temporary = run_dir is None
    path = temporary_run_folder() if temporary else Path(run_dir)
    try:
        t0 = time.perf_counter()
        out = invert_tile(
            raw,
            P,
            config,
            path,
            mode=mode,
            cancel=cancel,
            on_step=on_step,
            force=force,
            extra={"anonymize_config": config.to_dict(), "fingerprint": fp_info},
        )
        t_inv = time.perf_counter() - t0
        stopped_short = out.stats["stop_reason"] == "cancelled" and out.assembly is None
        if out.image is None or stopped_short:
            from .assembly import NoSnapshotsError

            # a run stopped before any output reached tau is not anonymized (as an unfinished
            # tile of a photo run is not): its best-PSNR fallback is only for runs that ended
            raise NoSnapshotsError(
                "the inversion was stopped before its first iteration"
                if out.image is None
                else f"the inversion was stopped before any output reached tau = "
                f"{config.dip.record_psnr:g} dB (best {out.stats['best_psnr']:.2f} dB): nothing "
                "was kept"
            )
        asm = out.assembly
        block = asm.block if asm is not None else int(min(config.assembly.B, max(raw.shape[:2])))
        t0 = time.perf_counter()
        measured, maps = measure(img255, out.image, P, block, config.sigma)
        if asm is not None:  # the same measurement; spare a second residual
            asm._ncc_map = maps["block_ncc_after"]
        t_meas = time.perf_counter() - t0
        inv = out.inversion
        env = dict(getattr(inv, "environment", {}) or {})
        st = out.stats
        report = AnonymizationReport.of(
            **describe_input(mode, fp_info, raw),
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
            timing_s={
                "inversion": t_inv,
                "assembly": float(st["assembly"].get("elapsed_s", 0.0)),
                "measurement": t_meas,
                "total": time.perf_counter() - t_start,
            },
            device=env.get("device", config.dip.device),
            environment=env,
            versions=environment_info(),
            run_dir=None if temporary and not config.keep_run else str(path),
        )
    except BaseException:
        if temporary:
            shutil.rmtree(path, ignore_errors=True)
        raise
    if temporary and not config.keep_run:
        shutil.rmtree(path, ignore_errors=True)
    return AnonymizeResult(
        image=out.image,
        report=report,
        maps=maps,
        run_dir=Path(report["run_dir"]) if report["run_dir"] else None,
        assembly=asm,
    )
