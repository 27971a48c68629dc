"""The tiles to invert and what the batched inversion yields for them."""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..._validation import as_plane, check_same_size
from ...config import DIPConfig
from ...errors import InputError
from ..inversion import InversionResult, Step, image_to_unit

__all__ = ["TileDone", "TileJob", "TileStep"]


@dataclass
class TileJob:
    """One tile to invert.

    Attributes
    ----------
    key : hashable
        Names the tile in what :func:`invert_tiles` yields (e.g. its position in the photo).
    image : array_like
        The tile, H×W×3 (uint8, uint16 or float 0..255).
    P : array_like
        Its reference (fingerprint or residual), H×W.
    seed : int or None
        The tile's seed; ``None`` takes the config's.
    """

    key: Hashable
    image: Any = field(repr=False)
    P: Any = field(repr=False)
    seed: int | None = None


@dataclass
class TileStep:
    """One iteration of one tile: its ``key`` and the :class:`~dippas_core.dip.Step`."""

    key: Hashable
    step: Step


@dataclass
class TileDone:
    """A tile that has left the batch, with its :class:`~dippas_core.dip.InversionResult`."""

    key: Hashable
    result: InversionResult


@dataclass
class PreparedJob:
    """A tile as the batch works on it: its key, its image on the 0..1 scale (padded to the
    network's multiple), its reference, the DIP config it runs with and the PSNR from which its
    outputs are checked against the local fidelity bars (``None``: the config's, see
    :func:`~dippas_core.dip.fitting.bars_checked_from`)."""

    key: Hashable
    img01: np.ndarray
    P: np.ndarray
    config: DIPConfig
    fidelity_from: float | None = None

    @property
    def size(self) -> tuple[int, int]:
        return self.img01.shape[0], self.img01.shape[1]


def _prepare(
    jobs: Iterable[TileJob], config: DIPConfig, fidelity_from: float | None = None
) -> list[PreparedJob]:
    multiple = 2 ** (len(config.widths) - 1)
    out = []
    keys = set()
    for job in jobs:
        if not isinstance(job, TileJob):
            raise InputError(f"jobs must be TileJob objects, got {type(job).__name__}")
        if job.key in keys:
            raise InputError(f"two tiles have the key {job.key!r}; keys must be unique")
        keys.add(job.key)
        img01 = image_to_unit(job.image, min_size=multiple)
        plane = as_plane(job.P, "P")
        check_same_size(img01, plane, f"tile {job.key!r}", "P")
        cfg = config if job.seed is None else config.replace(seed=int(job.seed))
        out.append(PreparedJob(job.key, img01, plane, cfg, fidelity_from))
    if not out:
        raise InputError("no tiles to invert")
    return out
