"""The plugin's writer: an image layer to PNG/TIFF, bit-exact, with no metadata from its source.

File → Save Selected Layer(s) and the Assemble & export widget's button both end here.  Pixels go
through :func:`dippas_core.io.write_image` (atomic, rounds floats, writes no metadata); if the layer
carries a DIPPAS report (``metadata["dippas"]["report"]``), only its published part
(:meth:`dippas_core.report.AnonymizationReport.sidecar`: settings, seed, PSNR, versions; nothing
about the source camera, its scores or the run folder) is written beside the image as JSON, and
the full report goes into the run folder as its forensic record.  A JSON file already beside the
image is replaced only when it is a sidecar an earlier export wrote; a run's own files are never
written over.  Fingerprints, residuals and block-NCC maps are refused: they are small signed values
that an 8-bit image would turn black.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from dippas_core.errors import DippasError

__all__ = ["SUFFIXES", "CannotSaveLayer", "report_path", "write_image_layer"]

SUFFIXES = (".png", ".tif", ".tiff")

#: DIPPAS layer kinds that are measurements, not pictures (what to use instead, for the message)
_NOT_PICTURES = {
    "fingerprint": "save a fingerprint from the Fingerprint widget (.npz)",
    "residual": "a residual is a map of small signed values, not a picture",
    "block_ncc": "a block-NCC map is a table of scores, kept in the JSON report",
}


class CannotSaveLayer(DippasError, RuntimeError):
    """The writer refuses a layer; the message says why and what to do instead.

    Deliberately not a ``ValueError``: npe2 swallows those from a writer and napari would then
    tell the user only that the plugin "is not a valid writer".
    """


def report_path(image_path: str | Path) -> Path:
    """Where the JSON report of an exported image goes: same folder and stem, ``.json``."""
    return Path(image_path).with_suffix(".json")


def write_image_layer(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one image layer; napari's single-layer writer signature.

    Parameters
    ----------
    path : str
        Destination ``.png``, ``.tif`` or ``.tiff``.
    data : array_like
        H×W or H×W×3; uint8/uint16 are written exactly, floats (0..255 scale) are rounded.
    meta : dict
        The layer state napari passes (``metadata`` is read for a DIPPAS report).

    Returns
    -------
    list of str
        The files written (the image, then the report if there is one).

    Raises
    ------
    CannotSaveLayer
        Another suffix, not one 2-D gray/RGB image, or a fingerprint, residual or block-NCC
        layer.
    """
    from dippas_core.io import write_image

    target = Path(path)
    if target.suffix.lower() not in SUFFIXES:
        raise CannotSaveLayer(f"cannot save {target.name}: use one of {', '.join(SUFFIXES)}")
    info = (meta.get("metadata") or {}).get("dippas")
    info = info if isinstance(info, dict) else {}
    kind = info.get("kind")
    if kind in _NOT_PICTURES:
        name = meta.get("name") or kind
        raise CannotSaveLayer(
            f"cannot save the {kind} layer {name!r} as an image ({_NOT_PICTURES[kind]}); "
            "select the photo or the anonymized layer"
        )
    array = np.asarray(data)
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] != 3):
        raise CannotSaveLayer(
            f"cannot save a layer of shape {array.shape} as {target.suffix}: "
            "select one 2-D gray or RGB image layer"
        )
    # 16-bit sources stay 16-bit (their float assembly included); everything else is 8-bit
    bit_depth = info.get("bit_depth")
    if bit_depth not in (8, 16):  # none, or garbled metadata: the layer's own dtype decides
        bit_depth = 16 if array.dtype == np.uint16 else 8
    report = info.get("report")
    _check_targets(target, with_sidecar=report is not None)
    try:
        # the sidecar is made before anything is written: a report it cannot carry writes nothing
        sidecar = None
        if report is not None:
            from dippas_core.report import AnonymizationReport

            report = AnonymizationReport.from_dict(report).with_(bit_depth=bit_depth)
            sidecar = json.dumps(report.sidecar(target.name), indent=1)
        written = [str(write_image(target, array, bit_depth=bit_depth))]
    except (DippasError, AttributeError, KeyError, TypeError, ValueError) as exc:  # NaN, ...
        raise CannotSaveLayer(f"cannot save {target.name}: {exc}") from None
    if sidecar is not None:
        from dippas_core.atomic import atomic_write_text

        out = report_path(target)
        atomic_write_text(out, sidecar)
        written.append(str(out))
        _keep_forensic_record(report, info.get("run_dir"), target)
    return written


def _check_targets(target: Path, *, with_sidecar: bool) -> None:
    """Refuse, before anything is written, to write over a run's own files (a photo run's too),
    to write the sidecar over the image, or over a JSON file that is not an earlier export's
    sidecar (napari asked the user about the image only): :func:`dippas_core.targets.check_targets`.
    """
    from dippas_core.errors import InputError
    from dippas_core.report import PUBLISHED_FORMAT
    from dippas_core.targets import check_targets

    sidecar = report_path(target)
    outputs = {"the image": target, "its sidecar": sidecar if with_sidecar else None}
    try:
        check_targets(outputs, force=True)  # napari asked before replacing the image
    except InputError as exc:
        raise CannotSaveLayer(f"cannot save {target.name}: {exc}") from None
    if with_sidecar and sidecar.exists():
        try:
            ours = json.loads(sidecar.read_text()).get("format") == PUBLISHED_FORMAT
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise CannotSaveLayer(
                f"cannot save {target.name}: {sidecar.name} already exists beside it and is not "
                "a DIPPAS export's sidecar, which would be replaced; choose another name"
            )


def _keep_forensic_record(report: Any, run_dir: Any, target: Path) -> None:
    """The full report (camera, scores, maps) into the run folder, never beside the image."""
    import contextlib

    from dippas_core.report import write_forensic_record
    from dippas_core.run import is_run_folder

    if run_dir and is_run_folder(run_dir):
        with contextlib.suppress(OSError):  # a read-only run folder: the export still stands
            write_forensic_record(report.with_(output=str(target)), Path(str(run_dir)))

