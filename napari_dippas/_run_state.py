"""The evented state of one anonymize run, fed by the run's callbacks (no Qt, no napari).

The run (in a worker thread) reports plain events: :class:`TraceCheck` once, a
:class:`~napari_dippas._models.StepSummary` per iteration, :class:`TilePrediction` once and
:class:`TileStarted` and :class:`TileFinished` per tile of a whole-photo run.  The GUI thread
folds each batch into one :class:`RunState` with :meth:`RunState.apply`; the dock widget only
listens to its events (the status line, the progress bar, the tile overlay).  A script drives
the same model without a viewer, as napari-animation's model is driven without Qt.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from psygnal import EventedModel, Signal

from dippas_core.cost import duration_text
from dippas_core.progress import PhotoProgress

from ._models import PROVENANCE_FILE, AnonymizeJob, StepSummary, sha256_array

__all__ = [
    "TILE_STATES",
    "RunState",
    "TilePlanState",
    "TileFinished",
    "TilePrediction",
    "TileStarted",
    "TraceCheck",
    "job_key",
    "resumable_run",
]

TileStateName = Literal["waiting", "running", "done", "fell short"]
#: the states a tile of a whole-photo run goes through (the overlay's colours)
TILE_STATES: tuple[str, ...] = ("waiting", "running", "done", "fell short")


@dataclass(frozen=True)
class TraceCheck:
    """Reported by a run before its inversion: the PCE of the input with its reference."""

    pce: float
    n_pixels: int


@dataclass(frozen=True)
class TilePrediction:
    """Reported by a whole-photo run before its tiles: what each tile is expected to cost (its
    iterations from its content, ``dippas_core.cost.tile_iterations``; empty when the settings
    predict none), the base of the run's ETA (``dippas_core.progress.PhotoProgress``)."""

    n_tiles: int
    iterations: dict[int, int]


@dataclass(frozen=True)
class TileStarted:
    """A tile's inversion starts (``index`` in the plan)."""

    index: int


@dataclass(frozen=True)
class TileFinished:
    """A tile is finished: inverted now, or read back from a stopped run (``resumed``).

    ``below_tau_db`` is how far its best PSNR stayed below tau (0 when reached): above 0 the
    tile "fell short" and is the mean of its best outputs.
    """

    index: int
    below_tau_db: float = 0.0
    resumed: bool = False
    #: the core's statistics of the tile (``elapsed_s``, ``iterations``, ``best_psnr``)
    stats: dict[str, Any] | None = field(default=None, compare=False)

    @classmethod
    def from_stats(cls, index: int, stats: dict[str, Any]) -> TileFinished:
        """From the core's per-tile statistics (``on_tile_done``'s second argument)."""
        below = float(stats.get("below_tau_db") or 0.0)
        kept = {k: stats.get(k) for k in ("elapsed_s", "iterations", "best_psnr")}
        return cls(int(index), below, bool(stats.get("resumed", False)), kept)


class TilePlanState(EventedModel):
    """The tiles of a whole-photo run and the state of each, in photo coordinates.

    ``rects`` are ``(y, x, h, w)`` in the anonymized image (the region), ``offset`` is the
    region's place on the photo.  ``n_started`` counts the tile inversions of this run (tiles
    read back from a stopped run are ``n_resumed``, never inverted again).
    """

    rects: tuple[tuple[int, int, int, int], ...] = ()
    states: tuple[TileStateName, ...] = ()
    offset: tuple[float, float] = (0.0, 0.0)
    n_started: int = 0
    n_resumed: int = 0

    def set_plan(self, plan: Any, offset: Sequence[float] = (0.0, 0.0)) -> None:
        """Show ``plan`` (a :class:`dippas_core.tiling.TilePlan`): every tile waiting."""
        rects = tuple((t.y, t.x, t.h, t.w) for t in plan.tiles)
        self.update(
            {"rects": rects, "states": ("waiting",) * len(rects),
             "offset": (float(offset[0]), float(offset[1])), "n_started": 0, "n_resumed": 0}
        )

    def _set(self, index: int, state: str) -> None:
        if not 0 <= index < len(self.states):
            raise IndexError(f"tile {index} is not in the plan of {len(self.states)} tiles")
        states = list(self.states)
        states[index] = state
        self.states = tuple(states)

    def start_tile(self, index: int) -> None:
        """A tile's inversion starts."""
        self._set(index, "running")
        self.n_started += 1

    def finish_tile(self, event: TileFinished) -> None:
        """A tile is finished (or read back)."""
        self._set(event.index, "fell short" if event.below_tau_db > 0 else "done")
        if event.resumed:
            self.n_resumed += 1

    def run_ended(self) -> None:
        """The run ended: a tile still running was stopped and waits for a resume."""
        if "running" in self.states:
            self.states = tuple("waiting" if s == "running" else s for s in self.states)

    def count(self, *states: str) -> int:
        """Tiles in any of ``states``."""
        return sum(s in states for s in self.states)

    @property
    def n_finished(self) -> int:
        """Tiles done or fell short (both are anonymized and kept)."""
        return self.count("done", "fell short")

    def describe(self) -> str:
        """``"tiles: 2 of 4 finished (1 read back from the stopped run), 1 running"``."""
        if len(self.states) < 2:
            return ""
        text = f"tiles: {self.n_finished} of {len(self.states)} finished"
        if self.n_resumed:
            text += f" ({self.n_resumed} read back from the stopped run)"
        short = self.count("fell short")
        if short:
            text += f", {short} fell short of tau"
        if self.count("running"):
            text += ", 1 running"
        return text


class RunState:
    """One run's state: the job (iterations, PSNR, snapshots, status) and its tiles.

    Attributes
    ----------
    job : AnonymizeJob
        Iteration, PSNR, best PSNR, snapshots kept, status and message (evented).
    tiles : TilePlanState
        The tile plan and each tile's state (evented).
    trace : TraceCheck or None
        The input's PCE with its reference, once the run measured it.
    progress : dippas_core.progress.PhotoProgress or None
        A whole-photo run's tiles finished and running and its ETA (the command line's figures),
        from the run's :class:`TilePrediction` on.
    """

    #: emitted with the :class:`TraceCheck` when the run reports it
    trace_checked = Signal(object)

    def __init__(self) -> None:
        self.job = AnonymizeJob()
        self.tiles = TilePlanState()
        self.trace: TraceCheck | None = None
        self.progress: PhotoProgress | None = None

    def eta_text(self) -> str:
        """``" · about 12 min left"`` while a whole-photo run has an ETA (after its first
        finished tile: the estimate's work left at the pace of the tiles finished so far)."""
        eta = None if self.progress is None else self.progress.eta_s()
        return "" if eta is None or eta <= 0 else f" · about {duration_text(eta)} left"

    def apply(self, batch: Iterable[Any]) -> list[StepSummary]:
        """Fold a batch of reported events in; returns its steps (for the live plot)."""
        steps: list[StepSummary] = []
        pending: list[StepSummary] = []  # steps not yet folded in (order matters across tiles)
        for item in batch:
            if isinstance(item, StepSummary):
                steps.append(item)
                pending.append(item)
                if self.progress is not None:
                    self.progress.step(item)
                continue
            if pending:
                self.job.apply(pending)
                pending = []
            if isinstance(item, TileStarted):
                self.tiles.start_tile(item.index)
                self._new_tile()
            elif isinstance(item, TileFinished):
                self.tiles.finish_tile(item)
                self._finish_progress(item)
            elif isinstance(item, TilePrediction):
                # relative costs: the ETA rescales them by the finished tiles' real seconds
                self.progress = PhotoProgress(item.n_tiles, {
                    i: float(n) for i, n in item.iterations.items()})
            elif isinstance(item, TraceCheck):
                self.trace = item
                self.trace_checked.emit(item)
        if pending:
            self.job.apply(pending)
        return steps

    def _finish_progress(self, item: TileFinished) -> None:
        if self.progress is None:
            return
        if item.resumed:
            self.progress.resume(item.index)
        else:
            self.progress.finish(item.index, dict(item.stats or {}))

    def _new_tile(self) -> None:
        """A tile's inversion starts at iteration 0: its own PSNR curve, its own speed."""
        self.job.update({"iteration": 0, "psnr": float("nan"), "best_psnr": float("nan"),
                         "first_iteration": 0, "first_elapsed_s": 0.0})


# --------------------------------------------------------------------------------------------
# resuming a stopped whole-photo run


def job_key(
    photo: np.ndarray, K: np.ndarray | None, region: dict[str, int], mode: str,
    config: dict[str, Any],
) -> str:
    """What makes two runs the same job (SHA-256): the pixels, the fingerprint, the region, the
    mode and the whole configuration.  Recorded as ``job_key`` in the run's viewer record."""
    job = {
        "photo": sha256_array(photo),
        "fingerprint": None if K is None else sha256_array(np.asarray(K)),
        "region": region,
        "mode": mode,
        "config": config,
    }
    text = json.dumps(job, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def resumable_run(root: Path, key: str, n_tiles: int) -> Path | None:
    """The newest stopped photo run of job ``key`` in the runs folder ``root`` (None if none).

    Only a run that finished some but not all of its ``n_tiles`` tiles: one stopped before its
    first tile saved nothing, and a new run (with its cost question) is the same.
    """
    from dippas_core.run import PhotoRun

    found = []
    for record in root.glob(f"*/{PROVENANCE_FILE}") if root.is_dir() else ():
        folder = record.parent
        if not (folder / PhotoRun.META).is_file():
            continue
        try:
            same = json.loads(record.read_text()).get("job_key") == key
        except (OSError, ValueError, AttributeError):
            continue
        if same and 0 < PhotoRun.count_done(folder) < n_tiles:
            found.append(folder)
    return max(found, key=lambda p: p.stat().st_mtime) if found else None
