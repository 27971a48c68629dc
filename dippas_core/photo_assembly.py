"""Re-assemble a whole-photo run with another B, L, tau (``dippas assemble PHOTO_RUN``).

A photo run made with ``keep_tile_runs`` (``--keep-runs``) keeps every tile's run folder
(``tiles/NNNN/``: its snapshots and their tile sums).  :func:`assemble_photo_run` assembles each
tile from its run with the B, L, tau asked for, exactly as :func:`dippas_core.tiled.invert_tile`
did during the run, and stitches the tiles with the same feathered weights
(:func:`dippas_core.tiling.stitch`): with the run's own B, L, tau it gives the run's image.
No inversion runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

__all__ = ["PhotoAssembly", "assemble_photo_run", "is_photo_run"]


def is_photo_run(path: str | Path) -> bool:
    """Whether ``path`` is a whole-photo run folder (it holds ``photo-run.json``)."""
    from .run import PhotoRun

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
    tile_boxes: list[tuple[int, int, int, int]] = field(default_factory=list)


def _check_kept_runs(
    path: Path, meta: dict, plan: Any, config: Any
) -> dict[int, tuple[np.ndarray, dict]]:
    """Every tile finished and its run kept (returns the finished tiles' records), or an error
    that says what to do."""
    from .run import PhotoRun, RunDirectory

    prun = PhotoRun(path, meta)
    done, damaged = prun.read_done(plan)
    if damaged:
        raise InputError(
            f"{path}: the record of a finished tile is damaged ({damaged[0]}"
            f"{f', and {len(damaged) - 1} more' if len(damaged) > 1 else ''}); run the same "
            "dippas anonymize command again: it redoes the damaged tiles, then assemble"
        )
    missing = [t.index for t in plan.tiles if t.index not in done]
    if missing:
        raise InputError(
            f"{path} is a partial photo run ({len(missing)} of {len(plan)} tiles not finished: "
            f"{missing[:8]}{' ...' if len(missing) > 8 else ''}); resume it first with the same "
            "dippas anonymize command"
        )
    kept = bool(config.keep_tile_runs)
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


def _run_settings(path: Path, meta: dict) -> tuple[Any, str]:
    """The run's own ``AnonymizeConfig`` and mode, checked (a hand-edited plan is named)."""
    from .config import AnonymizeConfig
    from .errors import DippasError

    where = f"{path}/photo-run.json"
    settings = meta.get("config")
    if not isinstance(settings, dict):
        raise InputError(f"{where}: the run's settings (config) are not a JSON object, got "
                         f"{type(settings).__name__}")
    try:
        config = AnonymizeConfig.from_dict(settings)
    except (DippasError, TypeError, ValueError) as exc:
        raise InputError(f"{where}: the run's settings are damaged ({exc})") from None
    mode = meta.get("mode", "aware")
    if mode not in ("aware", "blind"):
        raise InputError(f"{where}: mode must be aware or blind, got {mode!r}")
    return config, mode


def _pasted(
    path: Path, meta: dict, plan: Any, done: dict, mode: str
) -> tuple[np.ndarray, np.ndarray | None, float]:
    """The photo (and, aware, the fingerprint) pasted back from the kept tile runs, and their
    sigma, each checked against what the run recorded: the whole photo's hash in
    ``photo-run.json``, each tile's photo and reference hashes in its record.  A mismatch names
    the file at fault."""
    from .run import PhotoRun, RunDirectory, photo_sha256

    prun = PhotoRun(path, meta)
    photo = reference = None
    sigma = 5.0
    hashes: dict[int, str] = {}
    references: dict[int, str] = {}
    for t in plan.tiles:
        run = RunDirectory.open(prun.tile_path(t.index))
        try:
            if photo is None:
                photo = np.zeros((*plan.shape, 3), run.photo.dtype)
                reference = np.zeros(plan.shape, np.float32) if mode == "aware" else None
                sigma = run.sigma
            if run.shape != (t.h, t.w) or run.photo.dtype != photo.dtype:
                raise InputError(f"{run.path}: the tile run is {run.photo.dtype} {run.shape}, its "
                                 f"tile {photo.dtype} {(t.h, t.w)}: not this photo run's tile")
            photo[t.slices] = run.photo
            hashes[t.index] = photo_sha256(run.photo)
            references[t.index] = photo_sha256(run.reference)
            if reference is not None:
                reference[t.slices] = run.reference
        finally:
            run.close()
    if meta.get("photo_sha256") != photo_sha256(photo):
        # the tile runs are not the recorded photo: name those that disagree with their record
        wrong = [prun.tile_path(t.index) / "photo.npy" for t in plan.tiles
                 if done[t.index][1]["photo_sha256"] != hashes[t.index]]
        raise InputError(
            f"{wrong[0]} is not the photo the tile was made from (its hash differs from the "
            "tile's record): refusing to assemble it" if wrong else
            f"{path}: the tiles' photos are not the photo the run recorded ({PhotoRun.META}'s "
            "photo_sha256 differs): refusing to assemble"
        )
    for t in plan.tiles:  # the photo is the recorded one: a record that disagrees is at fault
        if done[t.index][1]["photo_sha256"] != hashes[t.index]:
            raise InputError(
                f"{path / 'done' / f'{t.index:04d}.npz'}: made from other pixels than tile "
                f"{t.index} of the photo (a record copied from elsewhere?); run the same dippas "
                "anonymize command again: it redoes the damaged tiles, then assemble"
            )
        recorded = done[t.index][1].get("reference_sha256")
        if recorded is not None and recorded != references[t.index]:
            raise InputError(
                f"{prun.tile_path(t.index)}/reference.npy is not the reference the tile was made "
                "from (its hash differs from the tile's record): refusing to assemble it"
            )
    return photo, reference, sigma


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
    from .config import check_assembly_params
    from .run import PhotoRun, RunDirectory
    from .tiling import stitch

    path = Path(path)
    if not is_photo_run(path):
        raise InputError(f"{path} is not a whole-photo run folder (no {PhotoRun.META})")
    meta = PhotoRun.read_meta(path)
    plan = PhotoRun(path, meta).plan()
    config, mode = _run_settings(path, meta)
    done = _check_kept_runs(path, meta, plan, config)
    B = config.assembly.B if B is None else B
    L = config.assembly.L if L is None else L
    tau = config.assembly_tau if tau is None else tau
    grain = config.tile
    for shape in {(t.h, t.w) for t in plan.tiles}:
        check_assembly_params(shape, grain, B, L, tau)  # before any tile is assembled
    photo, reference, sigma = _pasted(path, meta, plan, done, mode)
    if dtype is None:
        dtype = "uint8" if photo.dtype == np.uint8 else "float32"
    images: dict[int, np.ndarray] = {}
    per_tile: list[dict[str, Any]] = []
    fallback: list[int] = []
    for t in plan.tiles:
        run = RunDirectory.open(PhotoRun(path, meta).tile_path(t.index))
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
    boxes = [(t.y, t.x, t.h, t.w) for t in plan.tiles]
    return PhotoAssembly(image, photo, reference, mode, params, sigma, boxes)
