"""Re-assemble a whole-photo run with another B, L, tau (``dippas assemble PHOTO_RUN``).

A photo run made with ``keep_tile_runs`` (``--keep-runs``) keeps every tile's run folder
(``tiles/NNNN/``: its snapshots and their tile sums).  :func:`assemble_photo_run` assembles each
tile from its run with the B, L, tau asked for, exactly as :func:`dippas_core.tiled.invert_tile`
did during the run, and stitches the tiles with the same feathered weights
(:func:`dippas_core.tiling.stitch`): with the run's own B, L, tau it gives the run's image.
No inversion runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

__all__ = ["PhotoAssembly", "assemble_photo_run", "is_photo_run"]


def is_photo_run(path: str | Path) -> bool:
    """Whether ``path`` is a whole-photo run folder (it holds ``photo-run.json``)."""
    from .tiled import PhotoRun

    return (Path(path) / PhotoRun.META).is_file()


@dataclass
class PhotoAssembly:
    """What :func:`assemble_photo_run` made.

    Attributes
    ----------
    image
        The stitched photo: uint8, or float32 0..255 (``dtype="float32"``).
    photo
        The photo the run anonymized, pasted back from its tiles' runs (as stored: uint8/uint16).
    reference
        The fingerprint K over the whole photo (aware mode), or None (blind mode).
    mode
        ``"aware"`` or ``"blind"``.
    params
        B, L, tau and, per tile, the assembly's parameters (``tiles``); ``kept_fallback`` lists
        the tiles that never reached the run's ``record_psnr`` (no snapshot kept): their image is
        the run's fallback (the mean of their best outputs), whatever B, L, tau.
    sigma
        The residuals' noise level of the run.
    """

    image: np.ndarray
    photo: np.ndarray
    reference: np.ndarray | None
    mode: str
    params: dict[str, Any] = field(default_factory=dict)
    sigma: float = 5.0


def _read_meta(path: Path) -> dict:
    from .tiled import PhotoRun

    try:
        return json.loads((path / PhotoRun.META).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is not a readable whole-photo run: {exc}") from None


def _plan_of(meta: dict, path: Path) -> Any:
    from .tiling import plan_tiles

    try:
        p = meta["plan"]
        plan = plan_tiles(p["shape"], p["tile"], p["overlap"])
    except (KeyError, TypeError) as exc:
        raise InputError(f"{path}: the whole-photo run's plan is incomplete ({exc})") from None
    if [t.to_dict() for t in plan.tiles] != p.get("tiles"):
        raise InputError(f"{path}: the photo run's tile plan does not match its shape and tiling")
    return plan


def _check_kept_runs(path: Path, meta: dict, plan: Any) -> dict[int, tuple[np.ndarray, dict]]:
    """Every tile finished and its run kept (returns the finished tiles' records), or an error
    that says what to do."""
    from .run import RunDirectory
    from .tiled import PhotoRun

    prun = PhotoRun(path, meta)
    done = prun.read_done()
    missing = [t.index for t in plan.tiles if t.index not in done]
    if missing:
        raise InputError(
            f"{path} is a partial photo run ({len(missing)} of {len(plan)} tiles not finished: "
            f"{missing[:8]}{' ...' if len(missing) > 8 else ''}); resume it first with the same "
            "dippas anonymize command"
        )
    kept = bool((meta.get("config") or {}).get("keep_tile_runs"))
    no_run = [
        t.index for t in plan.tiles
        if not (prun.tile_path(t.index) / RunDirectory.CONFIG).is_file()
    ]
    if not kept and no_run:
        raise InputError(
            f"{path} was made without --keep-runs: only each tile's assembled image was kept, "
            "not its snapshots, so it cannot be re-assembled. Run dippas anonymize again with "
            "--keep-runs (in a new --run-dir, or with --force), or with the -B/-L/--tau you want"
        )
    if no_run:
        raise InputError(
            f"{path}: tiles {no_run[:8]}{' ...' if len(no_run) > 8 else ''} have no kept run "
            "(finished by an invocation without --keep-runs); run dippas anonymize again with "
            "--keep-runs in a new --run-dir (or with --force) to re-assemble the whole photo"
        )
    return done


def assemble_photo_run(
    path: str | Path,
    B: int | None = None,
    L: int | None = None,
    tau: float | None = None,
    *,
    dtype: str | None = None,
) -> PhotoAssembly:
    """Assemble every tile of a kept photo run with ``B``, ``L``, ``tau`` and stitch the photo.

    Parameters
    ----------
    path
        A photo run folder made with ``keep_tile_runs=True`` (``--keep-runs``), every tile
        finished.
    B, L, tau
        Assembly block size, snapshots averaged, PSNR threshold; None: the run's own.
    dtype
        ``"uint8"`` or ``"float32"``; default: uint8 for an 8-bit photo, float32 otherwise (as
        the run did).

    Raises
    ------
    InputError
        Not a photo run, a partial one, one made without ``--keep-runs``, or B, L, tau that do
        not fit a tile: all before any tile is assembled.
    """
    from .assembly import assemble
    from .config import AnonymizeConfig, check_assembly_params
    from .run import RunDirectory
    from .tiled import PhotoRun
    from .tiling import stitch

    path = Path(path)
    if not is_photo_run(path):
        raise InputError(f"{path} is not a whole-photo run folder (no {PhotoRun.META})")
    meta = _read_meta(path)
    plan = _plan_of(meta, path)
    done = _check_kept_runs(path, meta, plan)
    config = AnonymizeConfig.from_dict(meta.get("config") or {})
    B = config.assembly.B if B is None else B
    L = config.assembly.L if L is None else L
    tau = config.assembly_tau if tau is None else tau
    grain = config.tile
    for shape in {(t.h, t.w) for t in plan.tiles}:
        check_assembly_params(shape, grain, B, L, tau)  # before any tile is assembled
    images: dict[int, np.ndarray] = {}
    per_tile: list[dict[str, Any]] = []
    fallback: list[int] = []
    photo = reference = None
    mode, sigma = meta.get("mode", "aware"), 5.0
    for t in plan.tiles:
        run = RunDirectory.open(PhotoRun(path, meta).tile_path(t.index))
        if photo is None:
            photo = np.zeros((*plan.shape, 3), run.photo.dtype)
            reference = np.zeros(plan.shape, np.float32) if mode == "aware" else None
            sigma = run.sigma
            if dtype is None:
                dtype = "uint8" if run.photo.dtype == np.uint8 else "float32"
        photo[t.slices] = run.photo
        if reference is not None:
            reference[t.slices] = run.reference
        if not len(run.snapshots):  # never reached the recording threshold: its fallback stays
            images[t.index] = done[t.index][0]
            fallback.append(t.index)
            per_tile.append({"tile": t.index, **(done[t.index][1].get("assembly") or {})})
            continue
        if run.n_missing_tile_sums:
            run.complete_tile_sums()
        asm = assemble(run, B, L, tau, dtype=dtype)
        images[t.index] = asm.image
        per_tile.append({"tile": t.index, **asm.params})
    image = stitch(plan, images, dtype=dtype)
    params = {
        "B": int(B),
        "L": int(L),
        "tau": float(tau),
        "per_tile": True,
        "stitch": "feathered linear ramps in the overlaps",
        "kept_fallback": fallback,
        "tiles": per_tile,
    }
    return PhotoAssembly(image, photo, reference, mode, params, sigma)
