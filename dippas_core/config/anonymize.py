"""Every parameter of one anonymization: :class:`AnonymizeConfig` (DIP, assembly, tiling)."""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError
from .assembly import _ALIASES, AssemblyParams
from .dip import DIPConfig
from .presets import DEFAULT_PRESET, PRESETS

__all__ = ["AnonymizeConfig"]

#: Fields of the assembly a change may name (``AnonymizeConfig.preset(name, B=32)``).
_ASSEMBLY_FIELDS = frozenset(f.name for f in dataclasses.fields(AssemblyParams))
_DIP_FIELDS = frozenset(f.name for f in dataclasses.fields(DIPConfig))


def _preset_assembly(name: str) -> AssemblyParams:
    return AssemblyParams(**PRESETS[name]["assembly"])


@dataclass(frozen=True)
class AnonymizeConfig:
    """Every parameter of :func:`~dippas_core.pipeline.anonymize`, frozen and checked.

    Build it from a preset plus the changes a user asked for::

        AnonymizeConfig.preset("cpu", max_iter=800, L=3, tile_size=512)

    A change goes to the field it names: this class's own, the assembly's (``B``, ``L``,
    ``tau``) or the DIP inversion's (:class:`DIPConfig`: ``seed``, ``lr``, ``record_psnr`` …).
    ``AnonymizeConfig()`` is the ``paper`` preset.  JSON round trip: :meth:`to_dict`,
    :meth:`from_dict` (which also reads what older versions wrote).

    Parameters
    ----------
    dip : DIPConfig
        The DIP inversion: network, stopping rule, recording threshold, device, seed.
    assembly : AssemblyParams
        B, L and the assembly's tau (``None``: the recording threshold, every snapshot kept).
    tile_size, overlap : int
        Whole photos larger than ``tile_size`` are cut into ``tile_size``-pixel tiles overlapping
        by ``overlap`` pixels (:mod:`dippas_core.tiling`), each inverted by its own network.
    sigma : float
        Noise level of the residuals (method §1).
    tile : int
        Finest block of the per-tile NCC sums (B is a multiple of it).
    keep_run : bool
        Keep the temporary run folder :func:`anonymize` makes when given none (it can be large).
    keep_tile_runs : bool
        Keep every tile's run folder (all snapshots) in a photo run, so ``dippas assemble`` can
        redo a tile with another B, L, tau; by default a tile's run is removed once assembled.

    Raises
    ------
    InputError
        A field out of its range (the message names it), an unknown change.
    """

    dip: DIPConfig = field(default_factory=lambda: DIPConfig.preset(DEFAULT_PRESET))
    assembly: AssemblyParams = field(default_factory=lambda: _preset_assembly(DEFAULT_PRESET))
    tile_size: int = PRESETS[DEFAULT_PRESET]["tile_size"]
    overlap: int = PRESETS[DEFAULT_PRESET]["overlap"]
    sigma: float = 5.0
    tile: int = 32
    keep_run: bool = False
    keep_tile_runs: bool = False

    def __post_init__(self) -> None:
        from ..tiling import check_tiling

        if isinstance(self.dip, dict):
            object.__setattr__(self, "dip", DIPConfig.from_dict(self.dip))
        if isinstance(self.assembly, dict):
            object.__setattr__(self, "assembly", AssemblyParams.from_dict(self.assembly))
        if not isinstance(self.dip, DIPConfig) or not isinstance(self.assembly, AssemblyParams):
            raise InputError("dip must be a DIPConfig and assembly an AssemblyParams (or dicts)")
        if isinstance(self.tile, bool) or not isinstance(self.tile, numbers.Integral) or (
            self.tile < 1
        ):
            raise InputError(f"tile must be a whole number of pixels >= 1, got {self.tile!r}")
        size, overlap = check_tiling(self.tile_size, self.overlap)
        object.__setattr__(self, "tile_size", size)
        object.__setattr__(self, "overlap", overlap)
        if isinstance(self.sigma, bool) or not isinstance(self.sigma, numbers.Real) or not (
            self.sigma > 0
        ):
            raise InputError(f"sigma must be a number > 0, got {self.sigma!r}")

    # -- building ----------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **changes: Any) -> AnonymizeConfig:
        """The preset ``name`` (:data:`~dippas_core.config.PRESETS`: ``"paper"``, ``"cpu"``,
        ``"tiny"``) with ``changes`` (see the class docstring)."""
        if name not in PRESETS:
            raise InputError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        base = PRESETS[name]
        return cls(
            dip=DIPConfig.preset(name),
            assembly=_preset_assembly(name),
            tile_size=base["tile_size"],
            overlap=base["overlap"],
        ).replace(**changes)

    def replace(self, **changes: Any) -> AnonymizeConfig:
        """A copy with some fields changed: this class's, the assembly's or the DIP's."""
        own = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - own - _ASSEMBLY_FIELDS - _DIP_FIELDS)
        if unknown:
            raise InputError(f"unknown setting(s) {', '.join(unknown)}")
        mine = {k: v for k, v in changes.items() if k in own}
        assembly = {k: v for k, v in changes.items() if k in _ASSEMBLY_FIELDS}
        dip = {k: v for k, v in changes.items() if k not in own and k not in _ASSEMBLY_FIELDS}
        if assembly:
            mine["assembly"] = mine.get("assembly", self.assembly).replace(**assembly)
        if dip:
            mine["dip"] = mine.get("dip", self.dip).replace(**dip)
        return dataclasses.replace(self, **mine)

    # -- what it means -----------------------------------------------------------------------
    @property
    def seed(self) -> int:
        """The DIP inversion's seed (``dip.seed``)."""
        return int(self.dip.seed)

    @property
    def assembly_tau(self) -> float:
        """The assembly's threshold in dB: ``assembly.tau``, else ``dip.record_psnr``."""
        tau = self.assembly.tau
        return float(self.dip.record_psnr if tau is None else tau)

    # -- (de)serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["dip"] = self.dip.to_dict()
        out["assembly"] = self.assembly.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AnonymizeConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error.

        Also reads what older versions wrote: B, L, tau (or ``block``, ``top_l`` …) beside
        ``dip`` rather than in ``assembly``, a ``seed`` outside ``dip``, the DIP's ``tau_psnr``.
        """
        if not isinstance(data, dict):
            raise InputError(f"a config must be a mapping, got {type(data).__name__}")
        data = dict(data)
        flat = {k: data.pop(k) for k in [*_ASSEMBLY_FIELDS, *_ALIASES] if k in data}
        seed = data.pop("seed", None)
        own = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - own)
        if unknown:
            raise InputError(f"unknown AnonymizeConfig field(s): {', '.join(unknown)}")
        dip = data.get("dip", {})
        dip = DIPConfig.from_dict(dip) if isinstance(dip, dict) else dip
        if seed is not None:
            dip = dip.replace(seed=int(seed))
        assembly = data.get("assembly", {})
        if flat:
            base = assembly.to_dict() if isinstance(assembly, AssemblyParams) else assembly
            assembly = AssemblyParams.from_dict({"tau": None, **base, **flat})
        elif isinstance(assembly, dict):
            assembly = AssemblyParams.from_dict({"tau": None, **assembly})
        return cls(**{**data, "dip": dip, "assembly": assembly})
