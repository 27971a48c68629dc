"""The settings of an evaluation run and its named presets.

What the DIPPAS methods run is an :class:`~dippas_core.config.AnonymizeConfig` built from the
one preset table (:data:`dippas_core.config.PRESETS`): an evaluation preset names the
anonymizer's preset, it does not redefine it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from .._validation import check_known_fields
from ..config import AnonymizeConfig
from ..errors import InputError
from .methods import METHODS

__all__ = ["EVAL_PRESETS", "REFERENCES", "EvalConfig"]


@dataclass(frozen=True)
class EvalConfig:
    """Parameters of one evaluation run (JSON-serialisable with :meth:`to_dict`).

    Parameters
    ----------
    crop_sizes : tuple of int
        Square crop sizes (pixels); each is evaluated separately.
    crops_per_photo : int
        Non-overlapping crops per photo and size, the cells of a centred grid nearest the centre.
    methods : tuple of str
        Names in :data:`METHODS` (``untouched`` is always scored first: it is the reference).
    max_photos : int or None
        Use only the first photos (sorted by name, spread over cameras); ``None``: all.
    photos_per_camera : int or None
        At most this many photos per camera; ``None``: all.
    sigma : float
        Residual noise level (method §1).
    seed : int
        Base seed; the DIP run of crop ``i`` uses ``seed + i``.
    dippas : AnonymizeConfig
        What the DIPPAS methods run (:meth:`AnonymizeConfig.preset` and its changes; its
        ``sigma`` and seed are this evaluation's).
    inpaint_step : int
        Grid step of the inpainting baseline.
    inpaint_lambda : dict
        Regularisation weight per inpainting variant name.
    tv_iterations : int
        Chambolle–Pock iterations of the TV inpainting.
    edge_options : dict
        Keyword arguments of :func:`dippas_core.edges.edge_mask`.
    pce : bool
        Also compute PCE (costs an FFT per pair).
    fingerprint_region : int or None
        Estimate the fingerprints on at least this centred square (the residual of a small
        region suffers from border effects); crops stay centred in it.
    reference : {"same", "split"}
        ``"same"`` (the paper's protocol): the aware methods get the very fingerprint every output
        is scored against.  ``"split"``: each camera's flat fields are halved (alternately, in
        name order); the methods get the estimate from one half, the detector scores with the
        other, as when an analyst's reference was made from shots the anonymizer never saw.
    """

    crop_sizes: tuple[int, ...] = (128,)
    crops_per_photo: int = 1
    methods: tuple[str, ...] = (
        "untouched",
        "denoise",
        "subtract",
        "inpaint_l2",
        "inpaint_tv",
        "inpaint_l2_edges",
        "dippas_aware",
        "dippas_blind",
    )
    max_photos: int | None = None
    photos_per_camera: int | None = None
    sigma: float = 5.0
    seed: int = 0
    dippas: AnonymizeConfig = field(default_factory=lambda: AnonymizeConfig.preset("cpu"))
    inpaint_step: int = 3
    inpaint_lambda: dict = field(default_factory=lambda: {"l2": 0.1, "tv": 2.0})
    tv_iterations: int = 200
    edge_options: dict = field(default_factory=dict)
    pce: bool = True
    fingerprint_region: int | None = None
    reference: str = "same"

    def __post_init__(self) -> None:
        sizes = tuple(int(s) for s in self.crop_sizes)
        object.__setattr__(self, "crop_sizes", sizes)
        object.__setattr__(self, "methods", tuple(str(m) for m in self.methods))
        if isinstance(self.dippas, dict):
            object.__setattr__(self, "dippas", AnonymizeConfig.from_dict(self.dippas))
        if not sizes or min(sizes) < 16:
            raise InputError(f"crop sizes must be >= 16 pixels, got {self.crop_sizes!r}")
        if int(self.crops_per_photo) < 1:
            raise InputError(f"crops_per_photo must be >= 1, got {self.crops_per_photo!r}")
        if self.reference not in REFERENCES:
            raise InputError(
                f"reference must be one of {', '.join(REFERENCES)}, got {self.reference!r}"
            )
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise InputError(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(METHODS)}")

    def anonymize_config(self, seed: int) -> AnonymizeConfig:
        """What a DIPPAS method runs on a crop: :attr:`dippas` with this ``sigma`` and ``seed``."""
        return self.dippas.replace(sigma=self.sigma, seed=int(seed))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["dippas"] = self.dippas.to_dict()
        return json.loads(json.dumps(out))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalConfig:
        """Inverse of :meth:`to_dict` (unknown keys are an error).

        Also reads the settings older versions wrote for the DIPPAS methods: ``dip_preset`` and
        ``dip_changes``, ``block``, ``top_l``, ``tau``.
        """
        data = dict(data)
        old = {k: data.pop(k) for k in _OLD_DIPPAS if k in data}
        if old:
            changes = dict(old.get("dip_changes") or {})
            if "tau_psnr" in changes:
                changes["record_psnr"] = changes.pop("tau_psnr")
            assembly = {"block": "B", "top_l": "L", "tau": "tau"}
            changes.update({new: old[k] for k, new in assembly.items() if k in old})
            data["dippas"] = AnonymizeConfig.preset(old.get("dip_preset", "cpu"), **changes)
        check_known_fields(cls, data, "evaluation setting(s)")
        return cls(**data)

    def replace(self, **changes: Any) -> EvalConfig:
        """A copy with some fields changed; a name that is no field of this class changes
        :attr:`dippas` (``max_iter=600``, ``B=32``, ``L=3`` …)."""
        own = {f.name for f in dataclasses.fields(self)}
        mine = {k: v for k, v in changes.items() if k in own}
        dippas = {k: v for k, v in changes.items() if k not in own}
        if dippas:
            mine["dippas"] = mine.get("dippas", self.dippas).replace(**dippas)
        return dataclasses.replace(self, **mine)

    @classmethod
    def preset(cls, name: str, **changes: Any) -> EvalConfig:
        """``"cpu"`` (6 crops, < 30 min on 2 cores), ``"cpu-full"`` (all photos), ``"paper"``
        (512×512, full network, a GPU) or ``"tiny"`` (tests); ``changes`` as :meth:`replace`."""
        if name not in EVAL_PRESETS:
            raise InputError(
                f"unknown evaluation preset {name!r}; choose one of {', '.join(EVAL_PRESETS)}"
            )
        base = dict(EVAL_PRESETS[name])
        base["dippas"] = AnonymizeConfig.preset(base.pop("anonymize_preset"))
        return cls(**base).replace(**changes)


#: Which fingerprint the aware methods get (see :class:`EvalConfig`).
REFERENCES = ("same", "split")

#: The DIPPAS settings older versions wrote into an evaluation's ``params.json``.
_OLD_DIPPAS = ("dip_preset", "dip_changes", "block", "top_l", "tau")

#: Named evaluations (see docs/evaluation.md for measured times and AUCs); each names the
#: anonymizer's preset (:data:`dippas_core.config.PRESETS`) its DIPPAS methods run.
#: ``cpu-full``: every photo, 128×128 centre crops (untouched NCC AUC 0.74 there; 0.96 at 512),
#: the ``cpu`` preset.  ``cpu``: the same on one photo per camera (6 crops), sized for < 30 min on
#: an idle 2-core machine (about 2 CPU-minutes per DIPPAS crop measured here).  ``paper``: the
#: journal's setup (512×512, full network; a GPU).
_CPU: dict[str, Any] = {
    "crop_sizes": (128,),
    "crops_per_photo": 1,
    "anonymize_preset": "cpu",
    "fingerprint_region": 512,
}
EVAL_PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {**_CPU, "photos_per_camera": 1},
    "cpu-full": dict(_CPU),
    "paper": {"crop_sizes": (512,), "crops_per_photo": 1, "anonymize_preset": "paper"},
    "tiny": {
        "crop_sizes": (64,),
        "crops_per_photo": 2,
        "methods": ("untouched", "denoise", "subtract", "inpaint_l2"),
        "anonymize_preset": "tiny",
        "tv_iterations": 50,
        "pce": True,
    },
}
