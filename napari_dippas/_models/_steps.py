"""Step-by-step progress of a run: throttled hand-over to the GUI, step summaries, curves."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from psygnal import Signal

__all__ = ["RunHistory", "StepSummary", "StepThrottle"]


class StepThrottle:
    """Hand items from a worker thread to the GUI thread without ever flooding it.

    The worker calls :meth:`offer` for every step.  It returns True when the worker should send
    one "items waiting" signal to the GUI thread; the GUI then calls :meth:`take` and gets
    everything that accumulated.  At most one signal is in flight at a time and two signals are
    at least ``min_interval`` apart, so the GUI gets at most ``1 / min_interval`` updates per
    second and never falls behind, however slow its handler is (a backlog of queued signals
    would make the display lag further and further behind the job).  Thread-safe.

    Parameters
    ----------
    min_interval : float
        Minimum seconds between two signals (100 ms keeps a viewer fluid).
    clock : callable
        Monotonic clock in seconds (replaceable in tests).
    """

    def __init__(self, min_interval: float = 0.1, clock: Callable[[], float] = time.monotonic):
        self.min_interval = float(min_interval)
        self._clock = clock
        self._pending: list[Any] = []
        self._in_flight = False
        self._last = -float("inf")
        self._lock = threading.Lock()

    def offer(self, item: Any) -> bool:
        """Queue ``item`` (worker thread); True means "send the GUI a signal now"."""
        with self._lock:
            self._pending.append(item)
            return self._arm(self._clock())

    def _arm(self, now: float) -> bool:
        if self._in_flight or now - self._last < self.min_interval:
            return False
        self._in_flight, self._last = True, now
        return True

    def take(self) -> list[Any]:
        """Everything queued so far (GUI thread, on the signal); re-arms the signal."""
        with self._lock:
            batch, self._pending = self._pending, []
            self._in_flight = False
            return batch

    def close(self) -> bool:
        """The job ended (worker thread): True if a last signal is needed for what is left."""
        with self._lock:
            if self._pending and not self._in_flight:
                self._in_flight = True
                return True
            return False


@dataclass(frozen=True)
class StepSummary:
    """What the GUI needs from one inversion step (the pixels stay in the snapshot store)."""

    iteration: int
    loss: float
    psnr: float
    gamma: float
    kept: bool
    gamma_star: float = float("nan")  # least-squares gamma of the step's output
    tile: int = 0  # the tile of a photo run the step belongs to

    @classmethod
    def from_step(cls, step: Any) -> StepSummary:
        """Summarise a :class:`dippas_core.dip.Step` (drops the snapshot array)."""
        tile = getattr(step, "tile", None)
        return cls(
            int(step.iteration), float(step.loss), float(step.psnr), float(step.gamma),
            step.snapshot is not None, float(getattr(step, "gamma_star", float("nan"))),
            int(tile) if tile is not None else 0,
        )


class RunHistory:
    """Growing per-iteration curves (PSNR, gamma, loss) plus sparse NCC points.

    ``changed`` is emitted once per :meth:`extend` / :meth:`add_ncc` batch, not once per step.
    """

    changed = Signal()

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        """Forget everything (a new run starts)."""
        keys = ("iteration", "loss", "psnr", "gamma", "gamma_star", "tile")
        self._columns: dict[str, list[float]] = {k: [] for k in keys}
        self._ncc: list[tuple[int, float]] = []

    def extend(self, steps: Iterable[StepSummary]) -> None:
        """Append a batch of steps."""
        for s in steps:
            for key in self._columns:
                self._columns[key].append(float(getattr(s, key)))
        self.changed.emit()

    def add_ncc(self, points: Sequence[tuple[int, float]]) -> None:
        """Append ``(iteration, ncc)`` points measured on kept snapshots."""
        if points:
            self._ncc.extend((int(i), float(v)) for i, v in points)
            self.changed.emit()

    def column(self, key: str) -> np.ndarray:
        """One curve as a float array: iteration, loss, psnr, gamma, gamma_star or tile."""
        return np.asarray(self._columns[key], dtype=np.float64)

    def curve(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """``(iterations, values)`` of one curve to draw, one line per tile of a photo run.

        Each tile's points are together and in their order, with a NaN (a break in the line)
        before the next tile's: tiles each start again at iteration 1, and those stepped side by
        side interleave their steps.  A one-tile run's curve is its columns as they are.
        """
        it, values, tile = self.column("iteration"), self.column(key), self.column("tile")
        if it.size < 2 or (np.all(tile == tile[0]) and np.all(np.diff(it) > 0)):
            return it, values
        order = np.argsort(tile, kind="stable")
        it, values, tile = it[order], values[order], tile[order]
        breaks = np.nonzero((np.diff(tile) != 0) | (np.diff(it) <= 0))[0] + 1
        return np.insert(it, breaks, np.nan), np.insert(values, breaks, np.nan)

    @property
    def ncc(self) -> tuple[np.ndarray, np.ndarray]:
        """``(iterations, ncc values)`` of the NCC points so far."""
        if not self._ncc:
            return np.empty(0), np.empty(0)
        it, v = zip(*self._ncc, strict=True)
        return np.asarray(it, dtype=np.float64), np.asarray(v, dtype=np.float64)

    def __len__(self) -> int:
        return len(self._columns["iteration"])

    def load(self, history: dict[str, np.ndarray]) -> None:
        """Replace the curves by a recorded history (``InversionResult.history``)."""
        self.clear()
        for key in self._columns:
            if key in history:
                self._columns[key] = [float(v) for v in np.asarray(history[key]).ravel()]
            else:  # e.g. gamma_star of a run recorded before it existed; one run is one tile
                fill = 0.0 if key == "tile" else float("nan")
                self._columns[key] = [fill] * len(self._columns["iteration"])
        self.changed.emit()
