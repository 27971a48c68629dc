"""A whole photo, tile by tile: resume, where the tiles run, stitching and the run's report."""

from __future__ import annotations

import shutil
import time
import warnings
from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import NoteWarning
from ._batched import _choose_tiles_per_step, _invert_tiles_batched
from ._photo_run import PHOTO_RUN_FORMAT, PhotoRun, photo_sha256
from ._tile import TileOutcome, invert_tile

if TYPE_CHECKING:
    from ..fingerprint import Fingerprint

__all__ = ["anonymize_tiled"]


def anonymize_tiled(
    raw: np.ndarray,
    fingerprint: Fingerprint | np.ndarray | None,
    config: Any,
    plan: Any,
    *,
    run_dir: str | Path | None,
    cancel: Any = None,
    on_step: Callable[[Any], None] | None = None,
    on_tile: Callable[[Any, Any], None] | None = None,
    on_tile_done: Callable[[Any, dict], None] | None = None,
    force: bool = False,
    scheduler: Any = None,
    workers: int | None = None,
) -> Any:
    """:func:`~dippas_core.pipeline.anonymize` of a photo that needs several tiles.

    Checks were done by the caller (photo, fingerprint size, plan, B, L, tau).  ``on_tile_done``
    gets ``(tile, stats)`` for each finished tile: first the tiles a resume reads back (their
    stats say ``resumed: True``), then each tile as it is written.  ``scheduler`` and
    ``workers``: where the tiles run (:func:`dippas_core.photo_cluster.choose_execution`).
    """
    from ..io import to_float255
    from ..photo_cluster import choose_execution, invert_tiles_on_cluster
    from ..pipeline import AnonymizeResult, _reference
    from ..report import AnonymizationReport, below_tau, describe_input, measure
    from ..residual import residual
    from ..run import environment_info, temporary_run_folder
    from ..tiling import stitch

    t_start = time.perf_counter()
    img255 = to_float255(raw)
    mode, K, fp_info = _reference(img255, fingerprint, config.sigma)
    dtype = "uint8" if raw.dtype == np.uint8 else "float32"
    meta = {
        "format": PHOTO_RUN_FORMAT,
        "plan": plan.to_dict(),
        "mode": mode,
        "photo_sha256": photo_sha256(raw),
        "fingerprint_sha256": photo_sha256(K) if K is not None else None,
        "region": None,
        "config": config.to_dict(),
        "fingerprint": fp_info,
    }
    temporary = run_dir is None
    path = temporary_run_folder() if temporary else Path(run_dir)
    prun, resumed = PhotoRun.open_or_create(path, meta, force=force or temporary)
    done, damaged = prun.read_done(plan, dtype=np.dtype(dtype), photo=raw)
    if damaged:  # never trusted: each is said, deleted (ours, by name) and its tile redone
        for record in damaged:
            warnings.warn(f"{path}: {record}; tile {record.index} is redone", NoteWarning,
                          stacklevel=2)
        prun.discard(damaged)
    resumed_tiles = sorted(done)
    if on_tile_done is not None:
        for tile in plan.tiles:
            if tile.index in done:
                on_tile_done(tile, {**done[tile.index][1], "resumed": True})
    disk_peak = prun.disk_bytes()
    t_inv = 0.0
    env: dict = {}
    stopped = False
    todo = [t for t in plan.tiles if t.index not in done]
    execution = choose_execution(
        config, len(todo), scheduler=scheduler, workers=workers, watched=on_step is not None
    )
    n_per_step, n_choice = config.dip.tiles_per_step, "given"
    if execution.on_cluster:
        n_per_step, n_choice = 1, "one tile per Dask task (the workers run tiles side by side)"
    elif n_per_step == "auto" and len(todo) > 1 and not (cancel is not None and cancel.cancelled):
        first = todo[0]
        P0 = K[first.slices] if K is not None else residual(img255[first.slices], config.sigma)
        n_per_step, n_choice = _choose_tiles_per_step(raw[first.slices], P0, config, len(todo))
    batched = n_per_step != 1 and len(todo) > 1

    def job(tile: Any) -> tuple[Any, np.ndarray, np.ndarray]:
        P = K[tile.slices] if K is not None else residual(img255[tile.slices], config.sigma)
        return tile, raw[tile.slices], P

    def extra(tile: Any) -> dict:
        return {"photo_tile": tile.to_dict(), "fingerprint": fp_info}

    def one_at_a_time() -> Generator[tuple[Any, TileOutcome], None, None]:
        for tile in todo:
            if cancel is not None and cancel.cancelled:
                return
            if on_tile is not None:
                on_tile(tile, plan)
            _, tile_raw, P = job(tile)
            yield tile, invert_tile(
                tile_raw,
                P,
                config,
                prun.tile_path(tile.index),
                mode=mode,
                cancel=cancel,
                on_step=on_step,
                force=True,  # a half-written tile of an earlier attempt is redone
                extra=extra(tile),
            )

    try:
        t0 = time.perf_counter()
        if execution.on_cluster:
            outcomes = invert_tiles_on_cluster(
                (job(t) for t in todo),
                config,
                path,
                execution,
                mode=mode,
                extra=extra,
                cancel=cancel,
                on_tile=None if on_tile is None else (lambda tile: on_tile(tile, plan)),
            )
        elif not batched:
            outcomes = one_at_a_time()
        elif cancel is not None and cancel.cancelled:
            outcomes = iter(())
        else:
            outcomes = _invert_tiles_batched(
                [job(t) for t in todo],
                config,
                n_per_step,
                prun,
                mode=mode,
                extra=extra,
                cancel=cancel,
                on_step=on_step,
                on_tile=None if on_tile is None else (lambda tile: on_tile(tile, plan)),
            )
        for tile, out in outcomes:
            env = env or dict(getattr(out.inversion, "environment", {}) or {})
            disk_peak = max(disk_peak, prun.disk_bytes())
            if out.image is None or out.stats["stop_reason"] == "cancelled":
                # an unfinished tile is not anonymized: redone on resume
                if not config.keep_tile_runs:
                    prun.drop_tile_run(tile.index)
                stopped = True
                if batched or execution.on_cluster:
                    continue  # the batch's other tiles end too; any that finished is kept
                break
            # written as soon as it is finished: a resume or a Stop keeps it
            prun.write_done(tile.index, out.image, out.stats)
            if not config.keep_tile_runs:
                prun.drop_tile_run(tile.index)
            done[tile.index] = (out.image, out.stats)
            if on_tile_done is not None:
                on_tile_done(tile, out.stats)
            del out
        t_inv = time.perf_counter() - t0
        stopped = stopped or (cancel is not None and cancel.cancelled)
        missing = [t.index for t in plan.tiles if t.index not in done]
        t0 = time.perf_counter()
        image = stitch(plan, {i: v[0] for i, v in done.items()}, fill=img255, dtype=dtype)
        t_stitch = time.perf_counter() - t0
        t0 = time.perf_counter()
        P_full = K if K is not None else residual(img255, config.sigma)
        block = int(config.assembly.B) if int(config.assembly.B) % int(config.tile) == 0 else 64
        measured, maps = measure(
            img255, image, P_full, block, config.sigma,
            tiles=[(t.y, t.x, t.h, t.w) for t in plan.tiles],
        )
        t_meas = time.perf_counter() - t0
    except BaseException:
        if temporary:
            shutil.rmtree(path, ignore_errors=True)
        raise
    tiles_report = []
    for t in plan.tiles:
        st = done[t.index][1] if t.index in done else {"done": False}
        tiles_report.append({**t.to_dict(), "index": t.index, "done": t.index in done, **st})
    keep = not temporary or config.keep_run
    report = AnonymizationReport.of(
        **describe_input(mode, fp_info, raw),
        **measured,
        partial=bool(missing),
        tiles_not_anonymized=missing,
        below_tau=below_tau([(i, done[i][1]) for i in sorted(done)]),
        tiles=tiles_report,
        resumed_tiles=resumed_tiles,
        inversion={
            "stop_reason": "cancelled" if stopped and missing else "finished",
            "n_iterations": int(sum(v[1]["iterations"] for v in done.values())),
            "n_snapshots": int(sum(v[1]["n_snapshots"] for v in done.values())),
            "best_psnr": min((v[1]["best_psnr"] for v in done.values()), default=None),
            "elapsed_s": t_inv,
            "tiles_per_step": int(n_per_step) if batched else 1,
            "tiles_per_step_choice": n_choice if batched or n_per_step == 1 else "one tile to run",
            "execution": execution.to_dict(),
        },
        assembly={
            "B": int(config.assembly.B),
            "L": int(config.assembly.L),
            "tau": config.assembly_tau,
            "per_tile": True,
            "stitch": "feathered linear ramps in the overlaps",
        },
        config=config.to_dict(),
        seed=int(config.dip.seed),
        sigma=float(config.sigma),
        timing_s={
            "inversion": t_inv,
            "stitch": t_stitch,
            "measurement": t_meas,
            "total": time.perf_counter() - t_start,
        },
        disk_peak_bytes=int(disk_peak),
        device=env.get("device", config.dip.device),
        environment=env,
        versions=environment_info(),
        run_dir=str(path) if keep else None,
    )
    if not keep:
        shutil.rmtree(path, ignore_errors=True)
    return AnonymizeResult(
        image=image,
        report=report,
        maps=maps,
        run_dir=path if keep else None,
    )
