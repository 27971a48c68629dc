"""Whole photographs: one DIP inversion per tile, wherever the tiles run, stitched and reported.

The tiles' folder is a :class:`dippas_core.run.PhotoRun`: a run killed after k tiles restarts at
tile k + 1 when the same job runs again on the same folder.  The modules: ``_tile`` (one tile's
task and inversion), ``executors`` (where the tiles run, behind one interface), ``_batched`` (the
step batch's recorders), ``_cluster`` (the Dask tasks) and ``_photo`` (the whole photo: resume,
the loop over the executor, stitching and the report).
"""

from __future__ import annotations

from ._photo import anonymize_tiled
from ._tile import TileOutcome, TileTask, invert_tile
from .executors import InProcess, OnCluster, StepBatch, TileExecutor, executor_for

__all__ = [
    "InProcess",
    "OnCluster",
    "StepBatch",
    "TileExecutor",
    "TileOutcome",
    "TileTask",
    "anonymize_tiled",
    "executor_for",
    "invert_tile",
]
