"""One tile of a photo: its task, its inversion recorded into its own run folder, its assembly.

The tile's steps pass through :class:`_KeepBestBelow`, which keeps the few best outputs below the
recording threshold as the tile's fallback when none reaches it.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TileOutcome", "TileTask", "invert_tile"]


@dataclass
class TileTask:
    """One tile to invert and everything its inversion takes.

    Every executor (:mod:`dippas_core.tiled.executors`) hands the task whole to the tile's
    inversion (:func:`invert_tile` in this process or on a Dask worker, the step batch's tiles):
    an input added here (the initial weights of a warm start, say) reaches every tile without
    changing an executor.

    Attributes
    ----------
    tile
        Where the tile is in the photo (:class:`~dippas_core.tiling.Tile`).
    image
        The tile's pixels (uint8, uint16 or float 0..255, h×w×3).
    reference
        Its reference P: the fingerprint's tile (aware) or the tile's own residual (blind).
    extra
        Written into the tile's run folder (``config.json``): where the tile is, the fingerprint.
    """

    tile: Any
    image: np.ndarray = field(repr=False)
    reference: np.ndarray = field(repr=False)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def index(self) -> int:
        return int(self.tile.index)


@dataclass
class TileOutcome:
    """What :func:`invert_tile` made of one tile.

    Attributes
    ----------
    image
        The tile's anonymized image (uint8 or float32 0..255), ``None`` when no iteration ran.
    stats
        ``iterations``, ``best_psnr``, ``n_snapshots``, ``stop_reason``, ``below_tau_db`` (how
        far the best PSNR stayed below the recording threshold, 0 when reached) and
        ``assembly`` (the assembly's parameters, or the fallback's).
    inversion, run, assembly
        The ``InversionResult``, the (closed) ``RunDirectory`` and the ``AssemblyResult``
        (``None`` for the fallback).
    """

    image: np.ndarray | None
    stats: dict[str, Any]
    inversion: Any = field(repr=False, default=None)
    run: Any = field(repr=False, default=None)
    assembly: Any = field(repr=False, default=None)


class _KeepBestBelow:
    """A step source: an inversion's steps, snapshots below ``tau`` dropped after the ``keep`` best.

    The inversion runs with every output as a snapshot; only those at or above ``tau`` (and, where
    the config requires them, within the local fidelity bars: ``Step.looks_same``) reach the
    recorder.  Until one does, the ``keep`` best by PSNR stay in ``best`` (a heap of
    ``(psnr, iteration, image)``): the tile's fallback when it never reaches ``tau``.  Its result
    counts only the snapshots passed on.
    """

    def __init__(self, source: Any, tau: float, keep: int, best: list) -> None:
        self.source = source
        self.tau = tau
        self.keep = keep
        self.best = best
        self._reached = False
        self._n_passed = 0

    @property
    def cancel_token(self) -> Any:
        return self.source.cancel_token

    @property
    def result(self) -> Any:
        result = self.source.result
        if result is not None:
            result.n_snapshots = self._n_passed
        return result

    def __iter__(self) -> _KeepBestBelow:
        return self

    def __next__(self) -> Any:
        step = next(self.source)
        snap = step.snapshot
        # below tau, or (where the config requires it) off the local fidelity bars: no snapshot
        if snap is not None and (step.psnr < self.tau or not step.looks_same):
            if not self._reached:
                item = (float(step.psnr), -int(step.iteration), snap)
                if len(self.best) < self.keep:
                    heapq.heappush(self.best, item)
                elif item[:2] > self.best[0][:2]:
                    heapq.heapreplace(self.best, item)
            step = dataclasses.replace(step, snapshot=None)
        elif snap is not None:
            self._reached = True
            self._n_passed += 1
            self.best.clear()
        return step

    def cancel(self) -> None:
        self.source.cancel()

    def close(self) -> None:
        self.source.close()

    def share_cpu(self, threads: int | None) -> None:
        self.source.share_cpu(threads)


def invert_tile(
    task: TileTask,
    config: Any,
    path: Path,
    *,
    mode: str,
    cancel: Any = None,
    on_step: Callable[[Any], None] | None = None,
    force: bool = False,
) -> TileOutcome:
    """Invert one tile into the run folder ``path``, then assemble it (B, L, tau of ``config``).

    When no snapshot reaches ``config.dip.record_psnr``, the tile is the mean of its ``L`` best
    outputs by PSNR instead of an error (``stats["below_tau_db"]`` says by how much it fell
    short).  (:func:`~dippas_core.tiled.executors.StepBatch` runs several tiles per optimiser
    step through the same filter, record and assembly.)
    """
    from ..dip import invert
    from ..run import record

    dip = config.dip
    # every output comes out of the network; the filter passes on those >= record_psnr, and
    # only those need the fidelity bars
    inversion = invert(task.image, task.reference, dip.replace(record_psnr=-math.inf),
                       cancel=cancel, fidelity_from=float(dip.record_psnr))
    best: list = []
    filtered = _KeepBestBelow(inversion, float(dip.record_psnr), int(config.assembly.L), best)
    try:
        run = _create_tile_run(path, task, config, mode=mode, force=force)
    except BaseException:
        inversion.close()
        raise
    try:
        inv = record(run, filtered, cancel, on_step)
    finally:
        run.close()
    return _tile_outcome(run, inv, best, config, task.image.dtype)


def _create_tile_run(path: Path, task: TileTask, config: Any, *, mode: str, force: bool) -> Any:
    from ..run import RunDirectory, is_photo_run_folder, remove_run_folder

    if force and path.parent.name == "tiles" and is_photo_run_folder(path.parent.parent):
        # a photo run's tile folder is the photo run's: what a killed attempt left in it (a lock,
        # a half-deleted run) is cleared by name, so that it never blocks the resume
        remove_run_folder(path)
    return RunDirectory.create(
        path,
        task.image,
        task.reference,
        mode=mode,
        dip_config=config.dip,
        tile=config.tile,
        sigma=config.sigma,
        force=force,
        extra=task.extra,
    )


def _tile_outcome(run: Any, inv: Any, best: list, config: Any, photo_dtype: Any) -> TileOutcome:
    """A recorded tile's image: its assembly, or the mean of its best outputs below tau."""
    from ..assembly import assemble
    from ..run import photo_sha256

    dtype = "uint8" if photo_dtype == np.uint8 else "float32"
    tau_rec = float(config.dip.record_psnr)
    hist = inv.history
    best_psnr = float(np.max(hist["psnr"])) if len(hist["psnr"]) else None
    stats: dict[str, Any] = {
        "iterations": int(len(hist["iteration"])),
        "best_psnr": best_psnr,
        "n_snapshots": int(len(run.snapshots)),
        "stop_reason": inv.stop_reason,
        "below_tau_db": 0.0,
        "elapsed_s": float(inv.elapsed_s),
        # what the tile was made from: a photo run's record is checked against them when read
        "photo_sha256": photo_sha256(run.photo),
        "reference_sha256": photo_sha256(run.reference),
    }
    asm = None
    if len(run.snapshots):
        asm = assemble(run, config.assembly, dtype=dtype)
        image = asm.image
        stats["assembly"] = asm.params
    elif best:
        ranked = sorted(best, reverse=True)
        mean = np.mean([np.asarray(b[2], np.float64) for b in ranked], axis=0)
        from ..io import to_uint8

        image = to_uint8(mean) if dtype == "uint8" else mean.astype(np.float32)
        stats["below_tau_db"] = max(float(tau_rec - best_psnr), 0.0)
        if best_psnr >= tau_rec:  # tau reached, but never by an output within the bars
            stats["fidelity_unmet"] = True
        stats["assembly"] = {
            "fallback": f"mean of the {len(ranked)} best outputs by PSNR (none reached tau"
            + (" within the fidelity bars)" if best_psnr >= tau_rec else ")"),
            "L": len(ranked),
            "psnrs": [float(b[0]) for b in ranked],
            "iterations": [-int(b[1]) for b in ranked],
        }
    else:
        image = None
    return TileOutcome(image, stats, inversion=inv, run=run, assembly=asm)
