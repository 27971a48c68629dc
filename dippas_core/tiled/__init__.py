"""Whole photographs: one DIP inversion per tile, a resumable photo run folder, the cost estimate.

A photo run folder holds::

    photo-run.json    the tile plan, the anonymize config, the mode and the photo's SHA-256
    tiles/NNNN/       the tile's run folder (a RunDirectory), removed once the tile is assembled
                      unless ``keep_tile_runs`` (then ``dippas assemble`` can redo any tile)
    done/NNNN.npz     the tile's assembled image and its statistics, written atomically: a tile
                      with this record is finished and is read back, never recomputed
    forensic-record.json  the forensic record of the last run (written by the CLI)

A run killed after k tiles restarts at tile k + 1 when :func:`anonymize` is called again with the
same photo, config and folder; a tile whose record is missing (half-written) is redone.

The modules: ``_photo_run`` (the folder), ``_tile`` (one tile), ``_batched`` (several tiles per
optimiser step), ``_cost`` (the estimate) and ``_photo`` (the whole photo, stitched and reported).
"""

from __future__ import annotations

from ._cost import CostEstimate, estimate_cost
from ._cost import _duration as _duration  # the CLI's duration format
from ._photo import anonymize_tiled
from ._photo_run import PHOTO_RUN_FORMAT, PhotoRun, job_sha256, photo_sha256
from ._tile import TileOutcome, invert_tile

__all__ = [
    "TileOutcome",
    "PhotoRun",
    "CostEstimate",
    "estimate_cost",
    "invert_tile",
    "job_sha256",
    "photo_sha256",
    "PHOTO_RUN_FORMAT",
    "anonymize_tiled",
]
