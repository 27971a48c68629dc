"""The plugin's reader: fingerprint ``.npz`` files and DIPPAS run directories.

A run directory reopens with all its layers: the photo, the reference it was anonymized against
(the fingerprint, or the photo's own residual in blind mode), the block-NCC map before, the
``snapshots`` stack (backed by the on-disk store, not loaded in RAM) and, when the run kept
snapshots, the ``anonymized`` image re-assembled with the run's last assembly parameters and its
``NCC after`` map.
"""

from __future__ import annotations

import contextlib
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dippas_core.jsonio import read_json

from ._layers import (
    LayerDataTuple,
    anonymized_layer,
    block_heatmap_layer,
    fingerprint_layer,
    named_by_run,
    photo_layer,
    rectangles_layer,
    residual_layer,
    run_title,
    snapshots_layer,
)
from ._models import PROVENANCE_FILE, AssemblyOutcome, AssemblySettings, RunSession

__all__ = [
    "assembly_layers",
    "get_reader",
    "is_photo_run_directory",
    "is_run_directory",
    "last_assembly_params",
    "read_fingerprint",
    "read_photo_run",
    "read_run",
    "run_label",
    "run_layers",
    "run_offset",
    "save_assembly_params",
    "shifted",
]

#: Where the Assemble widget remembers the last (B, L, tau) of a run, inside the run folder.
ASSEMBLY_FILE = "assembly.json"


def is_run_directory(path: str | Path) -> bool:
    """True for a folder holding a DIPPAS run (``config.json`` with ``format: dippas-run``)."""
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return False
    try:
        config = read_json(cfg)  # within a size bound: napari asks about every folder opened
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("format") == "dippas-run"


def is_photo_run_directory(path: str | Path) -> bool:
    """True for a whole-photo run folder (``photo-run.json``, ``dippas anonymize`` or the
    Anonymize dock on a photo larger than a tile)."""
    from dippas_core.run import PhotoRun

    return (Path(path) / PhotoRun.META).is_file()


def _is_fingerprint_file(path: Path) -> bool:
    """A ``.npz`` holding ``K`` and ``metadata``, as ``Fingerprint.load`` needs (peeks at the
    archive's names; loads nothing): any other ``.npz`` is left to other readers."""
    if path.suffix.lower() != ".npz" or not path.is_file():
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            return {"K.npy", "metadata.npy"} <= set(zf.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def get_reader(path: str | list[str]) -> Callable[[str], list[LayerDataTuple]] | None:
    """napari reader hook: a reader for our files, or None so napari asks another plugin."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    if p.is_dir() and is_run_directory(p):
        return read_run
    if p.is_dir() and is_photo_run_directory(p):
        return read_photo_run
    if _is_fingerprint_file(p):
        return read_fingerprint
    return None


def read_fingerprint(path: str | list[str]) -> list[LayerDataTuple]:
    """A fingerprint file as one ``fingerprint`` layer (camera and estimate info in metadata)."""
    from dippas_core.fingerprint import Fingerprint

    path = path[0] if isinstance(path, list) else path
    fp = Fingerprint.load(path)
    name = f"fingerprint {fp.camera}" if fp.camera else "fingerprint"
    return [
        fingerprint_layer(
            fp.K, camera=fp.camera, n_images=fp.n_images, sigma=fp.sigma, version=fp.version,
            name=name, path=str(path),
        )
    ]


def read_run(path: str | list[str]) -> list[LayerDataTuple]:
    """All the layers of a run directory (see the module docstring).

    A damaged run raises :class:`~dippas_core.run.DamagedRunError` naming what is wrong (napari
    shows the message), never a bare ``KeyError`` from deep inside.
    """
    from dippas_core.errors import DippasError
    from dippas_core.run import DamagedRunError

    path = path[0] if isinstance(path, list) else path
    try:
        return run_layers(RunSession(path))
    except DippasError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError) as exc:
        raise DamagedRunError(path, f"{type(exc).__name__}: {exc}") from exc


def read_photo_run(path: str | list[str]) -> list[LayerDataTuple]:
    """A whole-photo run folder as layers: the finished tiles stitched (``anonymized`` when every
    tile is done; ``anonymized (partial: k of n tiles)`` otherwise, the tiles not done left
    transparent, never the photo's pixels passed off as anonymized) and the tile plan coloured
    by state (done, fell short of tau, waiting), at the run's place over its photo.

    The image carries the run's report with ``partial`` and ``below_tau``: exported, its
    published sidecar says what it is.
    """
    from dippas_core.errors import InputError
    from dippas_core.run import PhotoRun
    from dippas_core.tiling import stitch

    path = Path(path[0] if isinstance(path, list) else path)
    run = PhotoRun(path, PhotoRun.read_meta(path))  # read within its bounds (InputError)
    meta, plan = run.meta, run.plan()  # checked against the pixel limit before anything is made
    done, _damaged = run.read_done(plan)  # a damaged record's tile is not finished
    if not done:
        raise InputError(
            f"{path}: no tile of this photo run is finished yet, there is nothing to show; "
            "resume the run (the same command, or Run in the Anonymize dock)"
        )
    h, w = plan.shape
    zeros = np.zeros((h, w, 3), np.float32)
    image = stitch(plan, {i: v[0] for i, v in done.items()}, fill=zeros, dtype="float32")
    states, below = [], []
    for t in plan.tiles:
        stats = done[t.index][1] if t.index in done else None
        short = float((stats or {}).get("below_tau_db") or 0.0)
        states.append("waiting" if stats is None else ("fell short" if short > 0 else "done"))
        if short > 0:
            below.append({"tile": t.index, "short_db": short,
                          "best_psnr": (stats or {}).get("best_psnr")})
    missing = [t.index for t in plan.tiles if t.index not in done]
    photo8 = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    if missing:  # the tiles not done are transparent: where they reach, nothing is shown
        ones = {i: np.full((t.h, t.w, 3), 255.0, np.float32)
                for i, t in enumerate(plan.tiles) if i in done}
        cover = stitch(plan, ones, fill=zeros, dtype="float32")[..., 0]
        alpha = np.where(cover >= 254.5, 255, 0).astype(np.uint8)
        photo8 = np.concatenate([photo8, alpha[..., None]], axis=-1)
    report = {
        "mode": meta.get("mode"), "config": meta.get("config"), "partial": bool(missing),
        "tiles_not_anonymized": missing, "below_tau": below,
        "tile_plan": {k: v for k, v in plan.to_dict().items() if k != "tiles"},
    }
    info = {"run_dir": str(path)}
    name = ("anonymized" if not missing
            else f"anonymized (partial: {len(done)} of {len(plan)} tiles)")
    if below and not missing:
        name = "anonymized (below tau)"
    layers = [
        anonymized_layer(photo8, report=report, name=name, **info),
        rectangles_layer([(t.y, t.x, t.h, t.w) for t in plan.tiles], states, **info),
    ]
    photo = None
    with contextlib.suppress(OSError, ValueError, AttributeError, KeyError, TypeError):
        photo = read_json(path / PROVENANCE_FILE)["source"]["name"]
    camera = (meta.get("fingerprint") or {}).get("camera") if isinstance(
        meta.get("fingerprint"), dict) else None
    label = run_title(path.name, photo or "", camera or ("blind" if meta.get("mode") == "blind"
                                                         else ""))
    offset = run_offset(path)
    return [named_by_run(shifted(layer, offset), label) for layer in layers]


def last_assembly_params(session: RunSession) -> AssemblySettings:
    """The ``(B, L, tau)`` last used on this run (``assembly.json``), else method §5's defaults.

    ``B`` is snapped to the nearest block size the run supports (its tile, small images).  A
    garbled value (a hand-edited or half-written file) falls back to its default: it must not
    stop the run from opening.
    """
    params = session.run.read_assembly()
    sizes = session.valid_block_sizes()
    B = min(sizes, key=lambda b: (abs(b - params.B), b))
    return AssemblySettings(B=B, L=params.L, tau=params.tau)


def _number(value: Any, convert: Callable[[Any], Any], default: Any) -> Any:
    """``convert(value)``, or ``default`` when the value is missing or garbled."""
    try:
        return convert(value)
    except (ValueError, TypeError, OverflowError):
        return default


def _finite(value: Any) -> float:
    """``float(value)``, refusing NaN and infinities (ValueError)."""
    number = float(value)
    if not np.isfinite(number):
        raise ValueError(f"not a finite number: {value!r}")
    return number


def save_assembly_params(session: RunSession, settings: AssemblySettings) -> None:
    """Remember ``(B, L, tau)`` in the run folder: reopening the run shows the same result."""
    from dippas_core.config import AssemblyParams

    session.run.write_assembly(
        AssemblyParams(settings.B, settings.L, settings.tau)
    )


def assembly_layers(outcome: AssemblyOutcome, **info: Any) -> list[LayerDataTuple]:
    """The ``anonymized`` image and its ``NCC after`` map (on the "before" map's colour scale)."""
    B = outcome.after.block_size
    limit = float(np.max(np.abs(outcome.before.block_ncc))) or None
    return [
        anonymized_layer(
            outcome.image, report=outcome.report, assembly=outcome.params,
            bit_depth=outcome.bit_depth, **info,
        ),
        block_heatmap_layer(
            outcome.after.block_ncc, B, name="NCC after", limit=limit,
            image_shape=outcome.image.shape[:2], stage="after", **info,
        ),
    ]


def run_label(session: RunSession) -> str:
    """What names a run's layers (:func:`~napari_dippas._layers.run_title`):
    ``"IMG_0012 × Nikon_D70_0 (run-…-seed0)"``, as the Anonymize dock names a run's layers.

    The photo's name comes from the record the viewer wrote into the run folder, the camera from
    the run's fingerprint.  A run made elsewhere (the command line) is named by its folder alone.
    """
    path = Path(session.path)
    photo = None
    with contextlib.suppress(OSError, ValueError, AttributeError, KeyError, TypeError):
        photo = read_json(path / PROVENANCE_FILE)["source"]["name"]
        photo = photo if isinstance(photo, str) and len(photo) <= 256 else None
    info = session.run.config.get("fingerprint")
    camera = info.get("camera") if isinstance(info, dict) else None
    return run_title(path.name, photo or "", camera or "")


def run_offset(run_dir: str | Path) -> tuple[float, float]:
    """Where a run's layers go over the whole photo: its region's ``(y, x)`` (0, 0 if none).

    Read from the record the viewer wrote into the run folder (runs made elsewhere have none:
    they cover their whole photo).
    """
    path = Path(run_dir) / PROVENANCE_FILE
    try:
        region = read_json(path).get("region") or {}
        y, x = float(region.get("y", 0)), float(region.get("x", 0))
    except (OSError, ValueError, AttributeError, TypeError, OverflowError):
        return 0.0, 0.0
    # a hand-edited record must not fling the layers away (or to NaN): whole, inside a photo
    ok = all(np.isfinite(v) and 0 <= v <= 1 << 20 and v == int(v) for v in (y, x))
    return (y, x) if ok else (0.0, 0.0)


def shifted(data_tuple: Any, offset: tuple[float, float]) -> Any:
    """A layer data tuple moved by ``offset`` (its own translate kept, e.g. a heatmap's)."""
    data, kwargs, kind = data_tuple
    if not any(offset):
        return data_tuple
    ndim = np.ndim(data) - (1 if kwargs.get("rgb") else 0)
    base = np.zeros(ndim) if kwargs.get("translate") is None else np.asarray(kwargs["translate"])
    base = base.astype(float)
    base[-2:] += offset
    return data, {**kwargs, "translate": tuple(base)}, kind

def run_layers(session: RunSession) -> list[LayerDataTuple]:
    """Layers for an opened run (see the module docstring), named by :func:`run_label`: two
    runs open at once never clash (napari would number them, ``photo [1]``); a region's run
    sits at the region's place over its photo (:func:`run_offset`)."""
    label, offset = run_label(session), run_offset(session.path)
    return [named_by_run(shifted(layer, offset), label) for layer in _run_layers(session)]


def _run_layers(session: RunSession) -> list[LayerDataTuple]:
    from dippas_core.assembly import NoSnapshotsError

    run = session.run
    base = {"run_dir": session.path, "mode": run.mode}
    layers: list[LayerDataTuple] = [photo_layer(run.photo, "photo", **base)]
    if run.mode == "aware":
        info = run.config.get("fingerprint")
        info = info if isinstance(info, dict) else {}
        layers.append(
            fingerprint_layer(
                run.reference, camera=str(info.get("camera", "")),
                n_images=_number(info.get("n_images"), int, 0),
                sigma=_number(info.get("sigma"), _finite, float(run.sigma)),
                version=str(info.get("version", "")),
            )
        )
    else:
        layers.append(
            residual_layer(run.reference, sigma=run.sigma, name="reference (photo residual)")
        )
    settings = last_assembly_params(session)
    before = session.before(settings.B)
    layers.append(
        block_heatmap_layer(
            before.block_ncc, settings.B, image_shape=run.shape, stage="before", **base
        )
    )
    n = run.refresh()
    if n:
        layers.append(snapshots_layer(run.snapshots.frames[:n], **base, status=run.status))
        with contextlib.suppress(NoSnapshotsError):
            layers.extend(assembly_layers(session.assemble(settings), **base))
    return layers
