"""The settings of an evaluation run and its named presets."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from .._validation import check_known_fields
from ..errors import InputError
from .methods import METHODS

__all__ = ["PRESETS", "REFERENCES", "EvalConfig"]


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
    dip_preset : str
        :meth:`dippas_core.dip.DIPConfig.preset` name for the DIPPAS methods.
    dip_changes : dict
        Fields of that preset to change (e.g. ``{"max_iter": 600}``).
    block, top_l, tau : int, int, float
        DIPPAS assembly (method §5): block size ``B``, ``L`` and ``tau_psnr``.
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
    dip_preset: str = "cpu"
    dip_changes: dict = field(default_factory=dict)
    block: int = 64
    top_l: int = 10
    tau: float = 38.0
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

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalConfig:
        """Inverse of :meth:`to_dict` (unknown keys are an error)."""
        check_known_fields(cls, data, "evaluation setting(s)")
        return cls(**data)

    def replace(self, **changes: Any) -> EvalConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def preset(cls, name: str, **changes: Any) -> EvalConfig:
        """``"cpu"`` (6 crops, < 30 min on 2 cores), ``"cpu-full"`` (all photos), ``"paper"``
        (512×512, full network, a GPU) or ``"tiny"`` (tests)."""
        if name not in PRESETS:
            raise InputError(
                f"unknown evaluation preset {name!r}; choose one of {', '.join(PRESETS)}"
            )
        return cls(**{**PRESETS[name], **changes})


#: Which fingerprint the aware methods get (see :class:`EvalConfig`).
REFERENCES = ("same", "split")

#: Named settings (see docs/evaluation.md for measured times and AUCs).
#: ``cpu-full``: every photo, 128×128 centre crops (untouched NCC AUC 0.74 there; 0.96 at 512),
#: the small ``cpu`` DIP network, lr 1e-2, at most 1500 iterations.  ``cpu``: the same on one
#: photo per camera (6 crops), sized for < 30 min on an idle 2-core machine (about 2 CPU-minutes
#: per DIPPAS crop measured here).  ``paper``: the journal's setup (512×512, full network; a GPU).
_CPU: dict[str, Any] = {
    "crop_sizes": (128,),
    "crops_per_photo": 1,
    "dip_preset": "cpu",
    # lr 1e-2: on this CPU it reached 35.5 dB in 400 iterations where 1e-3 needed ~1400; one
    # torch thread (two threads on a loaded 2-core machine ran ten times slower)
    "dip_changes": {"max_iter": 1500, "torch_threads": 1, "lr": 1e-2},
    "fingerprint_region": 512,
    # chosen on the 10 photos the cpu preset leaves out, with the least-squares gamma
    # (scripts/assembly_grid.py --held-out --gamma-mode lsq, 2026-11-30; docs/evaluation.md): the
    # lowest mean |NCC| with the true camera at mean PSNR >= 38 dB, over B 32/64/128, L 1-25,
    # tau 38/38.5 (before, with Adam's gamma, the same rule picked B 128, L 2, tau 38)
    "block": 64,
    "top_l": 1,
    "tau": 38.5,
}
PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {**_CPU, "photos_per_camera": 1},
    "cpu-full": dict(_CPU),
    "paper": {
        "crop_sizes": (512,),
        "crops_per_photo": 1,
        "dip_preset": "paper",
        "dip_changes": {},
        "block": 64,
        "top_l": 10,
        "tau": 38.0,
    },
    "tiny": {
        "crop_sizes": (64,),
        "crops_per_photo": 2,
        "methods": ("untouched", "denoise", "subtract", "inpaint_l2"),
        "dip_preset": "tiny",
        "block": 32,
        "top_l": 5,
        "tau": 30.0,
        "tv_iterations": 50,
        "pce": True,
    },
}
