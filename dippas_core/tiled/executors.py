"""Where the tiles of a photo run, behind one interface: ``run(todo)`` yields ``(tile, outcome)``.

- :class:`InProcess`: one network at a time in this process (:func:`invert_tile`, tile after tile);
- :class:`StepBatch`: several tiles per optimiser step in this process, each its own network
  (:mod:`dippas_core.dip.batched`: a thread per tile on the CPU, ``vmap`` on a GPU);
- :class:`OnCluster`: one Dask task per tile on a local cluster or a scheduler's.

:func:`executor_for` chooses once, from the job's :class:`~dippas_core.execution.Execution` and
its ``tiles_per_step`` (``"auto"``: measured on the first tile to run).  Every executor takes
:class:`~dippas_core.tiled.TileTask` s and hands each one whole to the tile's inversion; tiles come
back in the order they finish, with ``outcome.image`` None for a tile stopped before it finished.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ._tile import TileOutcome, TileTask, invert_tile

if TYPE_CHECKING:
    from ..job import PhotoJob
    from ..run import PhotoRun

__all__ = ["InProcess", "OnCluster", "StepBatch", "TileExecutor", "executor_for"]


class TileExecutor(Protocol):
    """Runs tiles somewhere; :meth:`describe` says where and how, for the run's report."""

    def run(self, todo: Iterable[TileTask]) -> Iterator[tuple[Any, TileOutcome]]: ...

    def describe(self) -> dict[str, Any]: ...


@dataclass
class _Where:
    """What every executor is given: the job, its photo run folder and the run's callbacks."""

    job: PhotoJob
    prun: PhotoRun
    cancel: Any = None
    on_step: Callable[[Any], None] | None = None
    on_tile: Callable[[Any], None] | None = None
    #: why the run steps the tiles as it does (the tiles-per-step choice), for the report
    why: str = "given"

    def _cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.cancelled

    def _report(self, n: int) -> dict[str, Any]:
        return {"tiles_per_step": n, "tiles_per_step_choice": self.why,
                "execution": self.job.execution.to_dict()}


@dataclass
class InProcess(_Where):
    """One tile after the other in this process, each its own network."""

    def run(self, todo: Iterable[TileTask]) -> Iterator[tuple[Any, TileOutcome]]:
        for task in todo:
            if self._cancelled():
                return
            if self.on_tile is not None:
                self.on_tile(task.tile)
            yield task.tile, invert_tile(
                task, self.job.config, self.prun.tile_path(task.index), mode=self.job.mode,
                cancel=self.cancel, on_step=_tagged(self.on_step, task.index),
                force=True,  # a half-written tile of an earlier attempt is redone
            )

    def describe(self) -> dict[str, Any]:
        return self._report(1)


@dataclass
class StepBatch(_Where):
    """``n`` tiles per optimiser step in this process, each its own network."""

    n: int = 2

    def run(self, todo: Iterable[TileTask]) -> Iterator[tuple[Any, TileOutcome]]:
        from ._batched import invert_tiles_batched

        if self._cancelled():
            return iter(())
        return invert_tiles_batched(
            list(todo), self.job.config, self.n, self.prun, mode=self.job.mode,
            cancel=self.cancel, on_step=self.on_step, on_tile=self.on_tile,
        )

    def describe(self) -> dict[str, Any]:
        return self._report(int(self.n))


@dataclass
class OnCluster(_Where):
    """One Dask task per tile (the tasks write their tiles' records themselves)."""

    why: str = "one tile per Dask task (the workers run tiles side by side)"

    def run(self, todo: Iterable[TileTask]) -> Iterator[tuple[Any, TileOutcome]]:
        from ._cluster import invert_tiles_on_cluster

        return invert_tiles_on_cluster(
            todo, self.job.config, self.prun.path, self.job.execution, mode=self.job.mode,
            cancel=self.cancel, on_tile=self.on_tile,
        )

    def describe(self) -> dict[str, Any]:
        return self._report(1)


def executor_for(
    job: PhotoJob,
    prun: PhotoRun,
    first: TileTask | None,
    n_todo: int,
    *,
    cancel: Any = None,
    on_step: Callable[[Any], None] | None = None,
    on_tile: Callable[[Any], None] | None = None,
) -> TileExecutor:
    """The executor of the ``n_todo`` tiles still to run, ``first`` the first of them.

    The job's execution decides a cluster; in this process ``tiles_per_step`` does (``"auto"``
    is measured on ``first``: :func:`~dippas_core.tiled._batched.measured_tiles_per_step`).
    """
    where = {"job": job, "prun": prun, "cancel": cancel, "on_step": on_step, "on_tile": on_tile}
    if job.execution.on_cluster:
        return OnCluster(**where)
    n, why = job.config.dip.tiles_per_step, "given"
    stopped = cancel is not None and cancel.cancelled
    if n == "auto" and n_todo > 1 and first is not None and not stopped:
        from ._batched import measured_tiles_per_step

        n, why = measured_tiles_per_step(first, job.config, n_todo)
    if n == "auto" or (int(n) > 1 and n_todo <= 1):
        return InProcess(**where, why="one tile to run" if n_todo <= 1 else "stopped before it")
    if int(n) == 1:
        return InProcess(**where, why=why)
    return StepBatch(**where, why=why, n=int(n))


def _tagged(on_step: Callable[[Any], None] | None, index: int) -> Callable[[Any], None] | None:
    """``on_step`` given each step with its tile's index (``Step.tile``; StepBatch tags its
    interleaved steps the same way)."""
    if on_step is None:
        return None
    return lambda step: on_step(dataclasses.replace(step, tile=index))
