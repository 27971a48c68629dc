"""The assembly's parameters (method §5): block size B, snapshots averaged L, threshold tau.

One set of names for the API, the command line, configs and run files; the names older versions
wrote (``block``, ``block_size``, ``top_l``, ``n_average``) are read by
:meth:`AssemblyParams.from_dict`.  No run is needed to check them: a caller refuses bad ones
before it spends an inversion.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError

__all__ = ["AssemblyParams", "MAX_DEVIATION", "RULES", "check_assembly_params"]

#: How a block's snapshots are chosen (method §5).  ``"paper"``: every candidate ranked by its
#: block NCC.  ``"bounded"``: only the candidates that keep the block within the fidelity bound
#: (block PSNR >= tau, no pixel more than :data:`MAX_DEVIATION` levels off), ranked by the
#: projection of their residual on the reference, which added artefact energy cannot shrink.
RULES = ("paper", "bounded")
#: The bounded rule's deviation bound: no pixel of a chosen block further than this from the
#: photo, in levels (0..255) of any channel (also the fidelity bar ``max_abs``).
MAX_DEVIATION = 40.0


#: Names older versions wrote for B and L (evaluation presets, the viewer), read by
#: :meth:`AssemblyParams.from_dict`.  ``tau_psnr`` is not one: it named the recording threshold.
_ALIASES = {"block": "B", "block_size": "B", "top_l": "L", "n_average": "L"}


@dataclass(frozen=True)
class AssemblyParams:
    """The assembly's parameters (method §5), one set for the API, the CLI, configs and run files.

    Parameters
    ----------
    B : int
        Block side in pixels: a multiple of the run's tile, or at least the image's larger side
        (one block).  Whether it fits a given run is checked by :meth:`fitted`.
    L : int
        Snapshots averaged per block (all the candidates when fewer), ``>= 1``.
    tau : float or None
        The *assembly* threshold (dB): the snapshots with PSNR ``>= min(tau, best PSNR)`` are the
        candidates.  ``None``: the run's *recording* threshold (``DIPConfig.record_psnr``, every
        snapshot it kept; :attr:`~dippas_core.run.RunDirectory.record_psnr`).
    rule : {"paper", "bounded"}
        How each block's snapshots are chosen among the candidates (:data:`RULES`).

    Raises
    ------
    InputError
        B or L not a whole number ``>= 1``, tau not a finite number (nor ``None``), an unknown
        rule.
    """

    B: int = 64
    L: int = 10
    tau: float | None = 38.0
    rule: str = "paper"

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise InputError(f"assembly rule must be one of {RULES}, got {self.rule!r}")
        object.__setattr__(self, "B", _whole(self.B, "B", "block size B"))
        object.__setattr__(self, "L", _whole(self.L, "L", "L (snapshots averaged per block)"))
        if self.tau is not None:
            object.__setattr__(self, "tau", _finite_db(self.tau))

    def fitted(self, shape: tuple[int, int], tile: int, record_psnr: float | None = None
               ) -> AssemblyParams:
        """These parameters checked against an H×W photo and a run tile (B capped at the image).

        ``tau=None`` becomes ``record_psnr`` (the run's recording threshold).  Needs no run, so
        a caller checks them before it spends an inversion on one.

        Raises
        ------
        InputError
            B neither a multiple of ``tile`` nor at least the image's larger side; ``tau`` is
            ``None`` and ``record_psnr`` is not a finite number.
        """
        tau = self.tau if self.tau is not None else record_psnr
        B, L, tau = check_assembly_params(shape, tile, self.B, self.L, tau)
        return AssemblyParams(B, L, tau, self.rule)

    def replace(self, **changes: Any) -> AssemblyParams:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {"B": self.B, "L": self.L, "tau": self.tau, "rule": self.rule}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AssemblyParams:
        """From ``{"B", "L", "tau", "rule"}`` (also the older names ``block``/``block_size`` and
        ``top_l``/``n_average``); missing keys take the defaults (a file written before rules
        existed was assembled by the paper's)."""
        if not isinstance(data, dict):
            raise InputError(f"assembly parameters must be a mapping, got {type(data).__name__}")
        known = {"B", "L", "tau", "rule", *_ALIASES}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(
                f"unknown assembly parameter(s) {', '.join(map(repr, unknown))}; "
                "expected B, L, tau, rule"
            )
        values: dict[str, Any] = {}
        for key, value in data.items():
            name = _ALIASES.get(key, key)
            if name in values and values[name] != value:
                raise InputError(f"assembly parameter {name} given twice, as {values[name]!r} "
                                 f"and {value!r}")
            values[name] = value
        return cls(**values)

    @classmethod
    def coerce(cls, B: Any = 64, L: Any = 10, tau: Any = 38.0, rule: str = "paper"
               ) -> AssemblyParams:
        """``AssemblyParams`` from ``B, L, tau, rule``, or ``B`` itself when it already is one."""
        if isinstance(B, AssemblyParams):
            return B
        return cls(B, L, tau, rule)


def _whole(value: Any, name: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InputError(f"{what} must be an integer >= 1, got {name}={value!r}")
    return int(value)


def _finite_db(value: Any) -> float:
    if isinstance(value, bool):
        raise InputError(f"tau (PSNR threshold, dB) must be a number, got {value!r}")
    try:
        tau = float(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"tau (PSNR threshold, dB) must be a number, got {value!r}") from exc
    if isinstance(value, bool) or not math.isfinite(tau):
        raise InputError(f"tau (PSNR threshold, dB) must be finite, got {value!r}")
    return tau


def check_assembly_params(
    shape: tuple[int, int], tile: int, B: Any, L: Any, tau: Any
) -> tuple[int, int, float]:
    """Validate the assembly's B, L and tau for an H×W photo and a run tile; return them.

    Needs no run, so a caller checks them before it spends an inversion on a run.

    Raises
    ------
    InputError
        B neither a multiple of ``tile`` nor at least the image's larger side, L < 1, tau not a
        finite number.  A B larger than the whole image (rounded up to the tile) comes back as
        that size: it is the same single block.
    """
    h, w = (int(v) for v in shape[:2])
    tile = int(tile)
    if tile < 1:
        raise InputError(f"tile must be a positive number of pixels, got {tile}")
    if isinstance(B, bool) or not isinstance(B, int | np.integer):
        raise InputError(f"block size B must be an integer >= 1, got {B!r}")
    B = int(B)
    whole = B >= max(h, w)
    if B < tile or (B % tile and not whole):
        raise InputError(
            f"block size B={B} must be a multiple of the run's tile {tile} "
            f"({tile}, {2 * tile}, {4 * tile}, ...) or at least the image size {max(h, w)}"
        )
    # any B beyond the whole image (rounded up to the tile) is that same single block: use it,
    # never pad the tile sums to an absurd B (-B 10**9 tried to allocate petabytes)
    B = min(B, max(-(-max(h, w) // tile) * tile, max(h, w)))
    if isinstance(L, bool) or not isinstance(L, int | np.integer) or L < 1:
        raise InputError(f"L (snapshots averaged per block) must be an integer >= 1, got {L!r}")
    try:
        tau = float(tau)
    except (TypeError, ValueError) as exc:
        raise InputError(f"tau (PSNR threshold, dB) must be a number, got {tau!r}") from exc
    if not math.isfinite(tau):
        raise InputError(f"tau (PSNR threshold, dB) must be finite, got {tau!r}")
    return B, int(L), tau
