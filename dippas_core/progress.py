"""How far a photo run is: tiles finished and running, and when it will end (an ETA).

:class:`PhotoProgress` follows a run of many tiles through three events — a tile's iteration
(:meth:`~PhotoProgress.step`, a ``Step`` whose ``tile`` says which), a finished tile
(:meth:`~PhotoProgress.finish`) and a resumed one (:meth:`~PhotoProgress.resume`) — and says it
in the words the command line prints and the viewer shows: one line per finished tile
(:meth:`~PhotoProgress.tile_line`) and one status line for the tiles running
(:meth:`~PhotoProgress.status_line`).

The ETA is the estimate's work still to do (:class:`~dippas_core.cost.CostEstimate`'s iterations
per tile, from the photo's content) at the pace the finished tiles actually went: once a tile has
finished, its real seconds over its predicted ones rescale every tile still to run.  Without an
estimate it is the mean time of a finished tile, times the tiles left.  A running tile past its
expected time is expected to run as long again past it, and the run to last at least as long
as its longest running tile.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .cost import duration_text

__all__ = ["PhotoProgress", "RunningTile"]


@dataclass
class RunningTile:
    """A tile being inverted: its last iteration and PSNR, its best, when it started."""

    index: int
    iteration: int = 0
    psnr: float = float("nan")
    best: float = float("-inf")
    started: float = field(default_factory=time.perf_counter)


class PhotoProgress:
    """The progress of a photo run of ``n_tiles`` tiles (see the module docstring).

    Parameters
    ----------
    n_tiles
        Tiles in the plan.
    predicted
        Seconds the estimate expects each tile to take, by tile index (``CostEstimate.
        tile_seconds``); empty or None without an estimate.
    parallel
        Tiles that run at the same time (tiles per step, cluster workers): the ETA divides the
        work left by it.  Raised to the most tiles seen running together.
    clock
        The time source (tests give their own).
    """

    def __init__(
        self,
        n_tiles: int,
        predicted: dict[int, float] | None = None,
        *,
        parallel: int = 1,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.n_tiles = int(n_tiles)
        self.predicted = dict(predicted or {})
        self.parallel = max(1, int(parallel))
        self.clock = clock
        self.started = clock()
        self.running: dict[int, RunningTile] = {}
        #: finished tile index -> (seconds it took, iterations, best PSNR); resumed ones excluded
        self.finished: dict[int, tuple[float, int, float | None]] = {}
        self.resumed: set[int] = set()

    # -- events -----------------------------------------------------------------------------
    def resume(self, index: int) -> None:
        """A tile a resume read back: done, but no time of this run."""
        self.resumed.add(int(index))

    def step(self, step: Any) -> None:
        """One iteration of the tile ``step.tile``."""
        index = getattr(step, "tile", None)
        index = -1 if index is None else int(index)
        tile = self.running.get(index)
        if tile is None:
            tile = self.running[index] = RunningTile(index, started=self.clock())
        tile.iteration = int(step.iteration)
        tile.psnr = float(step.psnr)
        tile.best = max(tile.best, tile.psnr)
        # tiles seen running together: the ETA's parallelism, whatever was planned
        self.parallel = max(self.parallel, sum(t.index >= 0 for t in self.running.values()))

    def finish(self, index: int, stats: dict[str, Any]) -> None:
        """Tile ``index`` finished with ``stats`` (``elapsed_s``, ``iterations``, ``best_psnr``)."""
        index = int(index)
        tile = self.running.pop(index, None)
        self.running.pop(-1, None)  # steps that did not say their tile (one at a time)
        seconds = stats.get("elapsed_s")
        if seconds is None:
            seconds = self.clock() - (tile.started if tile is not None else self.started)
        self.finished[index] = (float(seconds), int(stats.get("iterations") or 0),
                                stats.get("best_psnr"))

    # -- what it says ----------------------------------------------------------------------
    @property
    def n_done(self) -> int:
        return len(self.finished) + len(self.resumed)

    @property
    def elapsed_s(self) -> float:
        return self.clock() - self.started

    def pace(self) -> float | None:
        """Real seconds per predicted second over the finished tiles (None: nothing to say)."""
        pairs = [(s, self.predicted[i]) for i, (s, _, _) in self.finished.items()
                 if self.predicted.get(i)]
        if not pairs:
            return None
        return sum(s for s, _ in pairs) / sum(p for _, p in pairs)

    def eta_s(self) -> float | None:
        """Seconds until the last tile finishes (None until one tile has finished)."""
        left = [i for i in range(self.n_tiles)
                if i not in self.finished and i not in self.resumed]
        if not left:
            return 0.0
        if not self.finished:
            return None
        pace = self.pace()
        if pace is not None and all(i in self.predicted for i in left):
            cost = {i: pace * self.predicted[i] for i in left}
        else:
            mean = sum(s for s, _, _ in self.finished.values()) / len(self.finished)
            cost = dict.fromkeys(left, mean)
        # a running tile has done part of its own work already (never of the others'); one
        # past its expected share is a long one (tiles at one gap take from one iteration to
        # hundreds): it is expected to run as long again past it
        now = self.clock()
        running = [t.index for t in self.running.values() if t.index in cost]
        for i in running:
            cost[i] = abs(cost[i] - (now - self.running[i].started))
        # the run ends no sooner than its longest running tile
        longest = max((cost[i] for i in running), default=0.0)
        return max(sum(cost.values()) / self.parallel, longest)

    def tile_line(self, index: int) -> str:
        """One line for a finished tile: its number, iterations, best PSNR, time, and the ETA."""
        seconds, its, best = self.finished[int(index)]
        best_text = f"{best:.2f} dB" if best is not None else "no PSNR"
        return (f"tile {int(index) + 1}/{self.n_tiles} done: {its} iterations, best "
                f"{best_text}, {duration_text(seconds)}  [{self.n_done}/{self.n_tiles} done"
                f"{self._eta_text()}]")

    def status_line(self) -> str:
        """One line for the tiles running now and the run as a whole."""
        running = ", ".join(
            f"#{t.index + 1} it {t.iteration} {t.psnr:.1f} dB" if t.index >= 0
            else f"it {t.iteration} {t.psnr:.1f} dB"
            for t in sorted(self.running.values(), key=lambda t: t.index)
        )
        return (f"{self.n_done}/{self.n_tiles} tiles done"
                + (f" · running {running}" if running else "")
                + f" · {duration_text(self.elapsed_s)} elapsed{self._eta_text()}")

    def _eta_text(self) -> str:
        eta = self.eta_s()
        return "" if eta is None else f" · about {duration_text(eta)} left"
