"""What an anonymization reports: one typed report with a published part and a forensic part.

A full report names the camera the photo was traced to, its NCC/PCE *before*, the block-NCC map of
the original and the run folder (whose name can name a person).  Published beside the image, that
would undo the anonymization's purpose.  So :class:`AnonymizationReport` keeps two parts:

* :class:`Published`: what travels with the image (:meth:`AnonymizationReport.sidecar`):
  settings, quality, counts, versions, flags about the image itself; nothing about the source
  photo or its camera;
* :class:`Forensic`: the rest (reference, fingerprint, scores, tiles, timings, environment, the
  source file, the run folder), written by :func:`write_forensic_record` into the run folder or a
  path the user names, never beside the published image.

Every report (``anonymize``, the tiled photo run, ``dippas assemble``, the viewer, a batch) is an
:class:`AnonymizationReport`; its keys are written only here (:meth:`~AnonymizationReport.to_dict`,
:meth:`~AnonymizationReport.sidecar`).  A new field is one line in :class:`Published` or
:class:`Forensic`.  The report reads like the dict it writes (``report["psnr"]``) but is not
changed through it: :meth:`~AnonymizationReport.with_` makes a changed copy.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .attribution import PCE_DECISION_LEVEL

__all__ = [
    "DECISION_LEVEL_PCE",
    "FORENSIC_RECORD",
    "PUBLISHED_FORMAT",
    "UNSET",
    "AnonymizationReport",
    "Forensic",
    "Published",
    "below_tau",
    "describe_input",
    "is_forensic_record",
    "is_published_image",
    "measure",
    "short_of_tau",
    "write_forensic_record",
]

#: ``format`` of the published sidecar JSON.
PUBLISHED_FORMAT = "dippas-published-sidecar"
#: File name of the forensic record inside a run folder.
FORENSIC_RECORD = "forensic-record.json"
#: PCE above which a photo is attributed to the camera (the report's decision level): the one
#: decision level of every entry point (:data:`dippas_core.attribution.PCE_DECISION_LEVEL`).
DECISION_LEVEL_PCE = PCE_DECISION_LEVEL

#: Keys of the report's sections that are published: settings and counts of the image's own
#: making, never a score of the source.  The other keys of a section are forensic.
_PUBLISHED_KEYS = {
    "inversion": (
        "status", "stop_reason", "n_iterations", "n_snapshots", "best_psnr", "final_gamma",
        "elapsed_s",
    ),
    "assembly": (
        "B", "L", "tau", "rule", "psnr_threshold", "tile", "n_snapshots", "n_candidates",
        "n_averaged", "blocks_outside_bound", "grid", "dtype", "elapsed_s",
    ),
    "versions": ("python", "napari-dippas", "numpy", "scipy", "PyWavelets", "numba", "torch"),
}
#: Settings about this machine's disk, not about the image: never published.
_LOCAL_SETTINGS = ("keep_run", "keep_tile_runs")
#: Sections split between the two parts (the rest of a section is forensic).
_SECTIONS = tuple(_PUBLISHED_KEYS)


class _Unset:
    """The value of a report field that was not reported (None is a value: "none")."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


@dataclass
class Published:
    """What is published beside the image: how it was made and how close it is, nothing about
    the source photo or its camera.  A field left :data:`UNSET` is not reported."""

    #: ``"aware"`` (a fingerprint was given) or ``"blind"``
    mode: str | None = UNSET
    #: PSNR of the image against the original, dB
    psnr: float | None = UNSET
    #: how close it looks beyond PSNR (``dippas_core.fidelity``: SSIM, max |Δ|, share of pixels
    #: off by > 20 levels, local colour shift, seam ratio, checkerboard) and the bars it breaks
    fidelity: dict[str, Any] | None = UNSET
    seed: int | None = UNSET
    sigma: float | None = UNSET
    #: the centre crop the command made of the photo
    crop: Any = UNSET
    device: str | None = UNSET
    #: a run folder's state when it was assembled (``"finished"``, ``"cancelled"`` …)
    run_status: str | None = UNSET
    bit_depth: int | None = UNSET
    #: the program that wrote the report and when (the viewer's exports)
    tool: str | None = UNSET
    created: str | None = UNSET
    #: what the image covers when a region was anonymized: ``"region only"`` (the region's
    #: pixels alone), or ``"whole photo, region replaced"`` (the rest keeps the camera's trace)
    scope: str | None = UNSET
    #: the settings: an ``AnonymizeConfig`` (``config``) or a run's DIP settings (``dip_config``)
    config: dict[str, Any] | None = UNSET
    dip_config: dict[str, Any] | None = UNSET
    #: the counts of the inversion, the assembly, the package versions (see ``_PUBLISHED_KEYS``)
    inversion: dict[str, Any] | None = UNSET
    assembly: dict[str, Any] | None = UNSET
    versions: dict[str, Any] | None = UNSET


@dataclass
class Forensic:
    """What names the source, its camera and where the work lives: the forensic record only."""

    #: what the scores are taken against, in words
    reference: str | None = UNSET
    #: the fingerprint's camera and metadata
    fingerprint: dict[str, Any] | None = UNSET
    #: the photo's size and sample type
    photo: dict[str, Any] | None = UNSET
    ncc: dict[str, Any] | None = UNSET
    pce: dict[str, Any] | None = UNSET
    pce_detail: dict[str, Any] | None = UNSET
    block_ncc: dict[str, Any] | None = UNSET
    #: a photo run stopped before every tile was finished, and the tiles left with their pixels
    partial: bool | None = UNSET
    tiles_not_anonymized: list[int] | None = UNSET
    #: the tiles whose inversion never reached the recording threshold, and by how much
    below_tau: list[dict[str, Any]] | None = UNSET
    tiles: list[dict[str, Any]] | None = UNSET
    resumed_tiles: list[int] | None = UNSET
    tile_plan: dict[str, Any] | None = UNSET
    region: dict[str, Any] | None = UNSET
    cost: dict[str, Any] | None = UNSET
    timing_s: dict[str, float] | None = UNSET
    disk_peak_bytes: int | None = UNSET
    environment: dict[str, Any] | None = UNSET
    run_dir: str | None = UNSET
    #: the source file's name and SHA-256
    source: dict[str, Any] | None = UNSET
    output: str | None = UNSET
    #: the forensic keys of the split sections (inversion, assembly, versions)
    inversion: dict[str, Any] | None = UNSET
    assembly: dict[str, Any] | None = UNSET
    versions: dict[str, Any] | None = UNSET
    #: keys of a report this class does not know (a custom batch job's): never published
    extra: dict[str, Any] | None = UNSET


_PUBLISHED = frozenset(f.name for f in dataclasses.fields(Published))
_FORENSIC = frozenset(f.name for f in dataclasses.fields(Forensic)) - {"extra"}


@dataclass(frozen=True, eq=False)
class AnonymizationReport(Mapping):
    """The report of one anonymized image: :attr:`published` and :attr:`forensic`.

    Build it with :meth:`of` (each value goes to the part its name belongs to; the sections
    ``inversion``, ``assembly`` and ``versions`` are split between them), change it with
    :meth:`with_`, write it with :meth:`to_dict` (the full record) and :meth:`sidecar` (the
    published JSON).  Read it as a mapping of :meth:`to_dict`'s keys.
    """

    published: Published = field(default_factory=Published)
    forensic: Forensic = field(default_factory=Forensic)

    @classmethod
    def of(cls, **values: Any) -> AnonymizationReport:
        """A report of ``values`` (names of :class:`Published` or :class:`Forensic` fields)."""
        return cls().with_(**values)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AnonymizationReport:
        """A report of a dict :meth:`to_dict` wrote (or any report-like dict: a key neither part
        knows stays forensic, in ``extra``)."""
        if isinstance(data, AnonymizationReport):
            return data
        known = {k: v for k, v in data.items() if k in _PUBLISHED | _FORENSIC}
        extra = {k: v for k, v in data.items() if k not in known}
        return cls.of(**known, extra=extra or UNSET)

    def with_(self, **changes: Any) -> AnonymizationReport:
        """A copy with the fields ``changes`` names set (a split section replaces both halves)."""
        published: dict[str, Any] = {}
        forensic: dict[str, Any] = {}
        for key, value in changes.items():
            if key in _SECTIONS:
                published[key], forensic[key] = _split(key, value)
            elif key in _PUBLISHED:
                published[key] = value
            elif key in _FORENSIC or key == "extra":
                forensic[key] = value
            else:
                raise KeyError(f"no report field {key!r}")
        return AnonymizationReport(
            dataclasses.replace(self.published, **published),
            dataclasses.replace(self.forensic, **forensic),
        )

    # -- writing ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The full report as JSON-ready data: both parts (the forensic record's content)."""
        from .jsonio import jsonable

        out = _fields(self.published)
        forensic = _fields(self.forensic)
        extra = forensic.pop("extra", None) or {}
        for key, value in forensic.items():
            if key in _SECTIONS and isinstance(out.get(key), dict):
                out[key] = {**value, **out[key]}
            else:
                out[key] = value
        return jsonable({**extra, **out})

    def sidecar(self, image_name: str | None = None) -> dict[str, Any]:
        """The JSON published beside the image: :class:`Published` only, each value a plain
        number, flag, short word or a list or mapping of them (a path-like or long string, which
        could name a person or a place, is left out).

        ``image_name``: the published image's file name (the user chose it), as ``output``.
        """
        from .jsonio import jsonable

        out: dict[str, Any] = {"format": PUBLISHED_FORMAT}
        if image_name is not None:
            out["output"] = Path(image_name).name
        for key, value in _fields(self.published).items():
            kept = _plain(jsonable(value))
            if kept is not None:
                out[key] = kept
        if out.get("mode") not in (None, "aware", "blind"):
            out.pop("mode")
        if isinstance(out.get("config"), dict):
            # whether run folders were kept is about this machine's disk, not about the image
            # (a demo's kept run said "keep_run": false): the forensic record has the folder
            out["config"] = {k: v for k, v in out["config"].items() if k not in _LOCAL_SETTINGS}
        # what the image is, said where it travels (nothing about the source): not every tile
        # anonymized, or not every tile at tau (the file name and the exit status say it too)
        out["partial"] = bool(self.get("partial"))
        out["below_tau"] = short_of_tau(self)
        return out

    # -- reading as a mapping of to_dict ------------------------------------------------------
    def _dict(self) -> dict[str, Any]:
        cached = self.__dict__.get("_cached")
        if cached is None:
            cached = self.to_dict()
            object.__setattr__(self, "_cached", cached)
        return cached

    def __getitem__(self, key: str) -> Any:
        return self._dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict())

    def __len__(self) -> int:
        return len(self._dict())


def _fields(part: Any) -> dict[str, Any]:
    """A part's fields that were reported."""
    return {f.name: getattr(part, f.name) for f in dataclasses.fields(part)
            if getattr(part, f.name) is not UNSET}


def _split(section: str, value: Any) -> tuple[Any, Any]:
    """A section's published keys and the rest (UNSET when there is no rest)."""
    if value is None or value is UNSET:
        return value, UNSET
    mine = _PUBLISHED_KEYS[section]
    published = {k: v for k, v in dict(value).items() if k in mine}
    rest = {k: v for k, v in dict(value).items() if k not in mine}
    return published, rest or UNSET


def _plain(value: Any) -> Any:
    """Numbers, flags, None, short words and lists of them; anything else is dropped (None)."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        # settings are short words ("cpu", "cuda:0"); a longer or path-like string could name
        # a person or a place
        return value if len(value) <= 32 and "/" not in value and "\\" not in value else None
    if isinstance(value, list | tuple):
        items = [_plain(v) for v in value]
        return items if all(v is not None for v in items) or not items else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if _plain(v) is not None}
    return None


def short_of_tau(report: Mapping[str, Any]) -> bool:
    """Whether the image is short of tau: a tile whose inversion never reached the recording
    threshold (``below_tau``), or an assembly that had to use a lower threshold than asked
    (its ``psnr_threshold`` under its ``tau``)."""
    if report.get("below_tau"):
        return True
    asm = report.get("assembly") or {}
    used, asked = asm.get("psnr_threshold"), asm.get("tau")
    return used is not None and asked is not None and float(used) < float(asked) - 1e-9


def describe_input(mode: str, fingerprint: dict[str, Any] | None, photo: np.ndarray
                   ) -> dict[str, Any]:
    """The report fields that say what was anonymized against what (for
    :meth:`AnonymizationReport.of`): the mode, the reference in words, the fingerprint's
    metadata and the photo's size and sample type."""
    return {
        "mode": mode,
        "reference": (
            "fingerprint K"
            if mode == "aware"
            else "photo residual (blind: no fingerprint given; NCC/PCE are against the "
            "photo's own noise residual)"
        ),
        "fingerprint": fingerprint,
        "photo": {"height": int(photo.shape[0]), "width": int(photo.shape[1]),
                  "dtype": str(photo.dtype)},
    }


def below_tau(tiles: list[tuple[int, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The report's ``below_tau``: the tiles (``(index, stats)``) whose inversion never kept a
    snapshot — never reached the recording threshold (by how much, dB), or (``fidelity``) never
    with an output that met the local fidelity bars its config required."""
    return [
        {"tile": i, "short_db": float(st["below_tau_db"]), "best_psnr": st["best_psnr"],
         **({"fidelity": "bars never met"} if st.get("fidelity_unmet") else {})}
        for i, st in tiles
        if st.get("below_tau_db", 0.0) > 0 or st.get("fidelity_unmet")
    ]


def measure(
    photo255: np.ndarray,
    image: np.ndarray,
    reference: np.ndarray,
    B: int,
    sigma: float = 5.0,
    *,
    before: Any = None,
    after: Any = None,
    tiles: list[tuple[int, int, int, int]] | None = None,
    tau: float | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The report's measurements of ``image`` against the photo: PSNR and the fidelity measures
    (:func:`dippas_core.fidelity.fidelity`, seams on the B×B blocks of each tile), NCC and PCE
    before and after (against ``reference``, aligned), the block-NCC summary on B×B blocks.

    Returns the report fields (for :meth:`AnonymizationReport.of`) and the block-NCC maps
    ``{"block_ncc_before", "block_ncc_after"}``.  ``before``/``after``: the photo's and the
    image's :class:`~dippas_core.attribution.Attribution` on B×B blocks when already made.
    ``tiles``: the ``(y, x, h, w)`` of a whole photo's tiles, whose edges are seams too.
    ``tau``: the run's assembly threshold (the PSNR bar of a preset below 38 dB,
    :func:`~dippas_core.fidelity.bars_for`).
    """
    from .attribution import attribute
    from .fidelity import bars_for, fidelity
    from .metrics import psnr

    if before is None:
        before = attribute(photo255, reference, sigma=sigma, block_size=B)
    if after is None:
        after = attribute(image, reference, sigma=sigma, block_size=B)
    map_before, map_after = before.block_ncc, after.block_ncc
    fid = fidelity(photo255, image, block=int(B), tiles=tiles)
    values = {
        "psnr": float(psnr(np.asarray(photo255, np.float32), np.asarray(image, np.float32))),
        "fidelity": {**fid.to_dict(), "bars_failed": fid.failures(bars_for(tau))},
        "ncc": {"before": before.ncc, "after": after.ncc},
        "pce": {"before": before.pce, "after": after.pce, "decision_level": DECISION_LEVEL_PCE,
                "kind": after.pce_kind},
        "pce_detail": {"before": before.scores(), "after": after.scores()},
        "block_ncc": {
            "B": int(B),
            "mean_abs_before": float(np.abs(map_before).mean()),
            "mean_abs_after": float(np.abs(map_after).mean()),
            "max_abs_after": float(np.abs(map_after).max()),
        },
    }
    return values, {"block_ncc_before": map_before, "block_ncc_after": map_after}


def write_forensic_record(
    report: Mapping[str, Any], path: str | os.PathLike, maps: dict[str, Any] | None = None
) -> Path:
    """Write the full ``report`` (and ``maps``) as JSON to ``path``, atomically; return ``path``.

    ``path`` is a file, or a run folder (then ``RUN/forensic-record.json``).  This record names
    the source camera and its scores: keep it private, never beside the published image.
    """
    from .atomic import atomic_write_text
    from .jsonio import jsonable

    path = Path(path)
    if path.is_dir():
        path = path / FORENSIC_RECORD
    full = AnonymizationReport.from_dict(report).to_dict()
    payload = {**full, "maps": {k: jsonable(v) for k, v in (maps or {}).items()}}
    atomic_write_text(path, json.dumps(jsonable(payload), indent=1, allow_nan=True))
    return path


def _json_object(path: Path) -> dict | None:
    from .jsonio import read_json

    try:
        data = read_json(path)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_published_image(image_path: str | os.PathLike) -> bool:
    """Whether ``image_path`` is an image a dippas command published: the sidecar beside it is a
    published sidecar naming it (a resume may replace it without ``--force``)."""
    image_path = Path(image_path)
    sidecar = _json_object(image_path.with_suffix(".json"))
    return (
        image_path.is_file() and sidecar is not None
        and sidecar.get("format") == PUBLISHED_FORMAT and sidecar.get("output") == image_path.name
    )


def is_forensic_record(path: str | os.PathLike, source_sha256: str) -> bool:
    """Whether ``path`` is the forensic record of the source with this SHA-256 (what
    :func:`write_forensic_record` wrote for it: its maps, and the source's hash): a resume of the
    same photo may replace it without ``--force``."""
    record = _json_object(Path(path))
    if record is None or not isinstance(record.get("maps"), dict):
        return False
    source = record.get("source")
    return isinstance(source, dict) and source.get("sha256") == source_sha256
