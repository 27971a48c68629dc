"""Scriptable, evented state behind the dock widgets (no Qt, no napari).

The widgets are thin views: each one edits a settings model and watches a job model.  Everything a
user can do from a widget can be done from a script with these classes, and they are tested without
a display.  Evented models come from :mod:`psygnal` (the event system napari itself uses): every
field has a signal, ``model.events.<field>``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from psygnal import EventedModel, Signal

from dippas_core.attribution import Attribution

__all__ = [
    "COST_BUDGET",
    "DECISION_LEVEL_PCE",
    "PROVENANCE_FILE",
    "AnonymizeJob",
    "AnonymizeSettings",
    "AssemblySettings",
    "AttributionResult",
    "RunHistory",
    "StepSummary",
    "StepThrottle",
    "AssemblyOutcome",
    "RunSession",
    "ResultsTable",
    "RunCost",
    "attribute",
    "attribution_verdict",
    "estimate_run_cost",
    "pce_verdict",
    "run_provenance",
    "sha256_array",
    "sha256_file",
    "trace_warning",
    "add_output_to_provenance",
    "write_provenance",
]

#: The PCE decision level of forensic practice (Goljan, Fridrich & Filler 2009): a photo whose
#: PCE with a camera's fingerprint reaches 60 is attributed to that camera.  Editable in the
#: widgets; our PCE is taken at zero shift, so 60 is conservative (false alarms ≈ Q(√60) ≈ 5e-15).
DECISION_LEVEL_PCE = 60.0

#: Work (pixels × iterations) above which Run asks first: the ``cpu`` network on a 256×256
#: crop for its 3000 iterations, minutes on a laptop CPU.
COST_BUDGET = 256 * 256 * 3000

#: The forensic record the viewer writes into each run folder it starts (never beside an
#: exported image: that one carries nothing about the source).
PROVENANCE_FILE = "viewer-record.json"

JobStatus = Literal["idle", "running", "stopping", "finished", "cancelled", "failed"]


def _duration(seconds: float) -> str:
    """``"40 s"``, ``"12 min"``, ``"3.5 h"``: a remaining time in the analyst's words."""
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# --------------------------------------------------------------------------------------------
# throttling: the worker produces one step per iteration, the GUI wants a handful per second


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

    @classmethod
    def from_step(cls, step: Any) -> StepSummary:
        """Summarise a :class:`dippas_core.dip.Step` (drops the snapshot array)."""
        return cls(
            int(step.iteration), float(step.loss), float(step.psnr), float(step.gamma),
            step.snapshot is not None, float(getattr(step, "gamma_star", float("nan"))),
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
        keys = ("iteration", "loss", "psnr", "gamma", "gamma_star")
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
        """One curve as a float array: iteration, loss, psnr, gamma or gamma_star."""
        return np.asarray(self._columns[key], dtype=np.float64)

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
            else:  # e.g. gamma_star of a run recorded before it existed
                self._columns[key] = [float("nan")] * len(self._columns["iteration"])
        self.changed.emit()


# --------------------------------------------------------------------------------------------
# anonymize


class AnonymizeSettings(EventedModel):
    """Everything the Anonymize widget lets the user choose.

    ``preset`` picks a :meth:`dippas_core.dip.DIPConfig.preset` (network size and defaults); the
    other fields override it.
    """

    mode: Literal["aware", "blind"] = "aware"
    device: str = "auto"
    seed: int = 0
    tau_psnr: float = 38.0
    stop_psnr: float = 39.0
    #: the cpu preset's measured budget (dippas_core.pipeline.PRESETS, docs/evaluation.md)
    max_iter: int = 1500
    preset: Literal["tiny", "cpu", "paper"] = "cpu"
    #: Adam learning rate; None keeps the preset's (cpu: the measured 1e-2; the paper: 1e-3)
    lr: float | None = None

    def dip_config(self) -> Any:
        """The :class:`dippas_core.dip.DIPConfig` these settings describe."""
        from dippas_core.dip import DIPConfig
        from dippas_core.pipeline import PRESETS

        lr = self.lr if self.lr is not None else PRESETS[self.preset]["dip"].get("lr")
        return DIPConfig.preset(
            self.preset,
            seed=int(self.seed),
            tau_psnr=float(self.tau_psnr),
            stop_psnr=float(self.stop_psnr),
            max_iter=int(self.max_iter),
            device=self.device,
            **({} if lr is None else {"lr": float(lr)}),
        )


class AnonymizeJob(EventedModel):
    """Live state of one inversion run, updated from throttled step batches."""

    status: JobStatus = "idle"
    iteration: int = 0
    max_iter: int = 0
    psnr: float = float("nan")
    best_psnr: float = float("nan")
    gamma: float = 0.0
    ncc: float = float("nan")
    n_snapshots: int = 0
    stop_reason: str = ""
    message: str = ""
    run_dir: str = ""
    #: seconds since the run started (set with each batch of steps)
    elapsed_s: float = 0.0
    #: iterations done when the first batch arrived, and the time then: the speed is measured
    #: from there on (the first iterations include loading the network)
    first_iteration: int = 0
    first_elapsed_s: float = 0.0
    #: the snapshot threshold (tau) of the run, for the "nothing was kept" message
    tau_psnr: float = float("nan")

    def start(self, max_iter: int, run_dir: str = "", tau_psnr: float = float("nan")) -> None:
        """Reset for a new run."""
        self.update(
            {
                "status": "running", "iteration": 0, "max_iter": int(max_iter),
                "psnr": float("nan"), "best_psnr": float("nan"), "gamma": 0.0,
                "ncc": float("nan"), "n_snapshots": 0, "stop_reason": "", "message": "",
                "run_dir": str(run_dir), "elapsed_s": 0.0, "first_iteration": 0,
                "first_elapsed_s": 0.0, "tau_psnr": float(tau_psnr),
            }
        )

    def tick(self, elapsed_s: float) -> None:
        """Note the time since the start (the GUI calls it with each batch)."""
        if self.first_elapsed_s == 0.0 and self.iteration > 0:
            self.update({"first_iteration": self.iteration, "first_elapsed_s": float(elapsed_s)})
        self.elapsed_s = float(elapsed_s)

    @property
    def seconds_per_iteration(self) -> float:
        """Measured speed since the first batch (nan until two batches arrived)."""
        done = self.iteration - self.first_iteration
        spent = self.elapsed_s - self.first_elapsed_s
        return spent / done if done > 0 and spent > 0 else float("nan")

    @property
    def remaining_s(self) -> float:
        """Seconds left at the measured speed if the run goes to ``max_iter`` (an upper bound:
        it stops earlier when the PSNR reaches the stop level)."""
        return max(self.max_iter - self.iteration, 0) * self.seconds_per_iteration

    def stopped_empty(self) -> None:
        """The run was stopped before any output reached tau: nothing was kept (not a failure)."""
        best = f"{self.best_psnr:.1f} dB" if np.isfinite(self.best_psnr) else "no PSNR yet"
        self.update(
            {
                "status": "cancelled", "stop_reason": "cancelled",
                "message": (
                    f"Stopped at iteration {self.iteration}, before any output came within "
                    f"tau = {self.tau_psnr:g} dB of the photo (best so far: {best}): nothing "
                    "was kept and there is nothing to assemble. Run again and let it reach tau "
                    "(or lower tau, or raise the learning rate)."
                ),
            }
        )

    def apply(self, steps: Sequence[StepSummary]) -> None:
        """Fold a batch of steps into the state (one event per changed field)."""
        if not steps:
            return
        last = steps[-1]
        best = max(s.psnr for s in steps)
        if np.isfinite(self.best_psnr):
            best = max(best, self.best_psnr)
        self.update(
            {
                "iteration": last.iteration,
                "psnr": last.psnr,
                "gamma": last.gamma,
                "best_psnr": best,
                "n_snapshots": self.n_snapshots + sum(s.kept for s in steps),
            }
        )

    @property
    def progress(self) -> float:
        """Fraction done (0..1): of ``max_iter`` while running, 1 once the run ended."""
        if self.status in ("finished", "cancelled"):
            return 1.0
        return min(1.0, self.iteration / self.max_iter) if self.max_iter else 0.0

    def describe(self) -> str:
        """One line for the status label."""
        if self.status == "idle":
            return "Ready."
        if self.status == "failed":
            return f"Failed: {self.message}"
        if self.status == "cancelled" and self.message:
            return self.message
        psnr = f"{self.psnr:.2f} dB" if np.isfinite(self.psnr) else "–"
        text = (
            f"iteration {self.iteration}/{self.max_iter} · PSNR {psnr} · gamma {self.gamma:.4f}"
            f" · {self.n_snapshots} snapshots"
        )
        left = self.remaining_s
        if self.status == "running" and np.isfinite(left):
            text += f" · at most {_duration(left)} left"
        if self.status in ("finished", "cancelled"):
            reason = {"psnr": "reached the stop PSNR", "max_iter": "reached max iterations",
                      "cancelled": "stopped by the user"}.get(self.stop_reason, self.stop_reason)
            text = f"Done ({reason}): {text}"
        elif self.status == "stopping":
            text = f"Stopping… {text}"
        return text


# --------------------------------------------------------------------------------------------
# assembly


class AssemblySettings(EventedModel):
    """Assembly parameters (method §5): block size ``B``, snapshots averaged ``L``, PSNR floor."""

    block_size: int = 64
    n_average: int = 10
    tau_psnr: float = 38.0


# --------------------------------------------------------------------------------------------
# attribution


#: Residual and scores of one photo against one fingerprint (the core's one result type).
AttributionResult = Attribution


def attribute(
    photo: np.ndarray,
    K: np.ndarray,
    *,
    sigma: float = 5.0,
    block_size: int = 64,
    W: np.ndarray | None = None,
) -> AttributionResult:
    """Residual, NCC, PCE and block-NCC map of ``photo`` against fingerprint ``K``.

    Calls :mod:`dippas_core` for every number (method §1, §3).  The PCE is computed between the
    residual and ``I_gray * K`` (the two terms of the NCC) at zero shift only: the photo and the
    fingerprint are aligned, and searching every shift would turn the largest of H×W noise peaks
    into a "match".  Under no match the zero-shift PCE is about chi-square with one degree of
    freedom, so a threshold ``t`` has a false-alarm rate of about ``Q(sqrt(t))``.

    Parameters
    ----------
    photo : np.ndarray
        H×W×3 or H×W: uint8, float on the 0..255 scale, or uint16 (brought to 0..255 here, so
        a 16-bit photo is scored like its 8-bit version).
    K : np.ndarray
        H×W fingerprint (or, in blind mode, the reference residual).
    sigma : float
        Noise level of the residual (method §1).
    block_size : int
        ``B`` of the block-NCC map.
    W : np.ndarray, optional
        The photo's residual when already known (skips the expensive step).

    Raises
    ------
    dippas_core.errors.ShapeMismatchError
        If the photo and the fingerprint differ in size.
    """
    from dippas_core.attribution import attribute as score

    return score(photo, K, sigma=sigma, block_size=block_size, residual=W)


def attribution_verdict(score: Literal["PCE", "NCC"], value: float, threshold: float) -> str:
    """A plain-words verdict: does the photo carry the camera's fingerprint?

    Parameters
    ----------
    score : {"PCE", "NCC"}
        Which score is compared.
    value : float
        The score.
    threshold : float
        The decision threshold (PCE 60 is the usual forensic choice).
    """
    if not np.isfinite(value):
        return f"No verdict: the {score} could not be computed."
    if value >= threshold:
        return (
            f"Match: this photo carries the camera's fingerprint "
            f"({score} {value:.4g} ≥ threshold {threshold:.4g})."
        )
    return (
        f"No match: the camera's fingerprint is not detected "
        f"({score} {value:.4g} < threshold {threshold:.4g})."
    )


def pce_verdict(pce: float, level: float = DECISION_LEVEL_PCE) -> str:
    """The forensic verdict on the PCE (the NCC gets none: its scale depends on the size)."""
    return attribution_verdict("PCE", pce, level)


def trace_warning(pce_before: float, level: float = DECISION_LEVEL_PCE,
                  n_pixels: int | None = None) -> str | None:
    """A warning when the photo (or region) carries no detectable trace of the camera at all.

    Anonymizing it, or scoring it "after", then proves nothing: the fingerprint was not
    detectable to begin with.  None when the trace is there (PCE at or above ``level``).
    """
    if np.isfinite(pce_before) and pce_before >= level:
        return None
    size = f" ({n_pixels:,} pixels)" if n_pixels else ""
    return (
        f"This region{size} carries no detectable trace of the camera even before anonymizing "
        f"(PCE {pce_before:.1f} < decision level {level:g}): a before/after comparison on it "
        "proves nothing. Choose a larger region (a few hundred pixels on a side, with texture "
        "but not saturated) or the whole photo."
    )


@dataclass(frozen=True)
class RunCost:
    """How much work a run is, before it starts (pixels × iterations against a budget)."""

    pixels: int
    max_iter: int
    device: str

    @property
    def work(self) -> int:
        """Pixels × iterations."""
        return self.pixels * self.max_iter

    @property
    def ratio(self) -> float:
        """Work as a multiple of :data:`COST_BUDGET`."""
        return self.work / COST_BUDGET

    @property
    def needs_confirmation(self) -> bool:
        """Above the budget (on any device: no GPU speed was measured for this budget)."""
        return self.ratio > 1.0

    def warning(self) -> str:
        """The confirmation question, in the analyst's words."""
        on_gpu = self.device.startswith(("cuda", "mps"))
        advice = (
            "Try a region first (Draw, then a rectangle a few hundred pixels on a side)"
            + ("." if on_gpu else " or run on a GPU.")
        )
        return (
            f"This run is large: {self.pixels / 1e6:.2f} megapixels for up to {self.max_iter} "
            f"iterations, about {self.ratio:.0f}× the work of a 256×256 preview (which takes "
            f"minutes on a laptop CPU). On {self.device} it may take hours and many GB of "
            "memory, and Stop keeps only the snapshots reached by then.\n\n"
            f"{advice} Start the whole run anyway?"
        )


def estimate_run_cost(shape: tuple[int, ...], max_iter: int, device: str = "cpu") -> RunCost:
    """The :class:`RunCost` of inverting an image of ``shape`` for ``max_iter`` iterations."""
    return RunCost(int(shape[0]) * int(shape[1]), int(max_iter), str(device))


# --------------------------------------------------------------------------------------------
# results table: photos × cameras


class ResultsTable:
    """Scores of photos against fingerprints, one row per (photo, camera, region).

    Scoring the same photo against the same camera and region again replaces its row; anything
    else adds one.  ``changed`` is emitted after every change.
    """

    changed = Signal()
    COLUMNS = ("photo", "camera", "region", "pixels", "NCC", "PCE", "decision level", "verdict")

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(
        self, photo: str, camera: str, ncc: float, pce: float, level: float,
        region: str = "whole photo", pixels: int = 0,
    ) -> dict[str, Any]:
        """Add (or update) the row of ``photo`` × ``camera`` on ``region``; returns it."""
        verdict = "match" if np.isfinite(pce) and pce >= level else "no match"
        row = {
            "photo": photo, "camera": camera, "region": region, "pixels": int(pixels),
            "NCC": float(ncc), "PCE": float(pce), "decision level": float(level),
            "verdict": verdict,
        }
        key = (photo, camera, region)
        self.rows = [r for r in self.rows if (r["photo"], r["camera"], r["region"]) != key]
        self.rows.append(row)
        self.changed.emit()
        return row

    def relevel(self, level: float) -> None:
        """Re-decide every row at a new decision level."""
        for row in self.rows:
            row["decision level"] = float(level)
            row["verdict"] = "match" if row["PCE"] >= level else "no match"
        self.changed.emit()

    def to_csv(self, path: str | Path) -> Path:
        """Write the table as CSV (atomically; numbers in full precision)."""
        import csv
        import io

        from dippas_core._atomic import atomic_write_text

        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(self.COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(path, buffer.getvalue())
        return Path(path)


# --------------------------------------------------------------------------------------------
# provenance: the forensic record of a run started from the viewer


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file's bytes (read in 1 MiB chunks)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_array(array: np.ndarray) -> str:
    """SHA-256 of an image's pixels, shape and dtype (two equal images hash alike)."""
    import hashlib

    a = np.ascontiguousarray(array)
    return hashlib.sha256(f"{a.shape}|{a.dtype}|".encode() + a.tobytes()).hexdigest()


def run_provenance(
    *,
    source_name: str,
    source_path: str | None,
    photo: np.ndarray,
    region: Any,
    fingerprint: dict[str, Any] | None,
    settings: dict[str, Any],
) -> dict[str, Any]:
    """The record of where a run's input came from (written into the run folder).

    Parameters
    ----------
    source_name : str
        The photo layer's name.
    source_path : str, optional
        The file it was opened from (its SHA-256 is recorded), if any.
    photo : np.ndarray
        The whole photo as shown (its pixels' SHA-256 is recorded).
    region : Region
        The part that was anonymized (``y, x, h, w``; the whole photo is a region too).
    fingerprint : dict, optional
        The fingerprint's camera, number of shots, sigma, version (None in blind mode).
    settings : dict
        Everything the user chose.
    """
    import datetime as dt

    from dippas_core.run import environment_info

    from . import __version__

    return {
        "tool": f"napari-dippas {__version__}",
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "source": {
            "name": source_name,
            "file": Path(source_path).name if source_path else None,
            "file_sha256": sha256_file(source_path) if source_path else None,
            "pixels_sha256": sha256_array(photo),
            "height": int(photo.shape[0]),
            "width": int(photo.shape[1]),
            "dtype": str(photo.dtype),
        },
        "region": region.as_dict(),
        "fingerprint": fingerprint,
        "settings": settings,
        "versions": environment_info(),
        "outputs": [],
    }


def write_provenance(run_dir: str | Path, record: dict[str, Any]) -> Path:
    """Write (or replace) the run folder's :data:`PROVENANCE_FILE` atomically."""
    import json

    from dippas_core._atomic import atomic_write_text
    from dippas_core.run import jsonable

    path = Path(run_dir) / PROVENANCE_FILE
    atomic_write_text(path, json.dumps(jsonable(record), indent=2))
    return path


def add_output_to_provenance(run_dir: str | Path, output: dict[str, Any]) -> bool:
    """Append an output (its name and SHA-256) to the run's record; False if it has none."""
    import json

    path = Path(run_dir) / PROVENANCE_FILE
    if not path.is_file():
        return False
    record = json.loads(path.read_text())
    record.setdefault("outputs", []).append(output)
    write_provenance(run_dir, record)
    return True


# --------------------------------------------------------------------------------------------
# a recorded run: scores before, assembly, scores after, report


@dataclass(frozen=True)
class AssemblyOutcome:
    """One assembly of a run with its scores and the report exported beside the image.

    ``image`` is uint8, or float32 on the 0..255 scale for a 16-bit photo (``bit_depth`` 16: the
    writer saves it 16-bit).
    """

    image: np.ndarray
    before: AttributionResult
    after: AttributionResult
    psnr: float
    params: dict[str, Any]
    report: dict[str, Any]
    bit_depth: int = 8


class RunSession:
    """A recorded run opened for assembly: caches what does not depend on ``(B, L, tau)``.

    Parameters
    ----------
    run : dippas_core.run.RunDirectory or path
        The run (finished, cancelled, or still recording).
    """

    def __init__(self, run: Any) -> None:
        from dippas_core.run import RunDirectory

        self.run = run if isinstance(run, RunDirectory) else RunDirectory.open(run)
        self._photo_residual: np.ndarray | None = None
        self._before: dict[int, AttributionResult] = {}

    @property
    def path(self) -> str:
        """The run folder."""
        return str(self.run.path)

    @property
    def bit_depth(self) -> int:
        """16 for a 16-bit photo (assembled in float, saved 16-bit), else 8."""
        return 16 if np.asarray(self.run.photo).dtype == np.uint16 else 8

    def valid_block_sizes(self) -> list[int]:
        """Block sizes the run supports: multiples of its tile up to the image size."""
        tile = self.run.tile
        top = max(self.run.shape)
        sizes = [b for b in (32, 64, 128, 256, 512, 1024) if b % tile == 0 and b < top]
        whole = -(-top // tile) * tile
        return sorted(set(sizes + [whole]))

    def before(self, block_size: int) -> AttributionResult:
        """Scores of the photo against the run's reference (cached per ``B``)."""
        if block_size not in self._before:
            from dippas_core.io import to_float255
            from dippas_core.residual import residual

            photo = to_float255(self.run.photo)  # a 16-bit photo is scored on the 0..255 scale
            if self._photo_residual is None:
                self._photo_residual = residual(photo, self.run.sigma)
            self._before[block_size] = attribute(
                photo, self.run.reference, sigma=self.run.sigma, block_size=block_size,
                W=self._photo_residual,
            )
        return self._before[block_size]

    def assemble(self, settings: AssemblySettings) -> AssemblyOutcome:
        """Assemble with ``settings`` and score the result (one residual of the result)."""
        from dippas_core.assembly import assemble
        from dippas_core.io import to_float255
        from dippas_core.metrics import psnr

        if self.run.status == "recording":  # re-read config.json: the run may have ended
            from dippas_core.run import RunDirectory

            self.run = RunDirectory.open(self.run.path)
        B = int(settings.block_size)
        bits = self.bit_depth
        # a 16-bit photo keeps its precision: assembled in float (as the CLI does), saved 16-bit
        result = assemble(
            self.run, B, int(settings.n_average), float(settings.tau_psnr),
            dtype="float32" if bits == 16 else "uint8",
        )
        before = self.before(B)
        after = attribute(result.image, self.run.reference, sigma=self.run.sigma, block_size=B)
        quality = float(
            psnr(np.asarray(result.image, np.float32), to_float255(self.run.photo))
        )
        params = dict(result.params)
        report = self._report(params, before, after, quality)
        report["bit_depth"] = bits
        return AssemblyOutcome(result.image, before, after, quality, params, report, bits)

    def _report(
        self, params: dict[str, Any], before: AttributionResult, after: AttributionResult,
        quality: float,
    ) -> dict[str, Any]:
        import datetime as dt

        from . import __version__

        cfg = self.run.config
        result = cfg.get("result") or {}
        # the same keys as dippas_core.pipeline.anonymize's report, plus the maps themselves
        return {
            "tool": f"napari-dippas {__version__}",
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "mode": cfg.get("mode"),
            "reference": cfg.get("reference"),
            "fingerprint": cfg.get("fingerprint"),
            "photo": cfg.get("photo"),
            "psnr": quality,
            "ncc": {"before": before.ncc, "after": after.ncc},
            "pce": {"before": before.pce, "after": after.pce, "shift_search": "zero shift"},
            "block_ncc": {
                "B": after.block_size,
                "mean_abs_before": float(np.abs(before.block_ncc).mean()),
                "mean_abs_after": float(np.abs(after.block_ncc).mean()),
                "max_abs_after": float(np.abs(after.block_ncc).max()),
                "before": before.block_ncc.tolist(),
                "after": after.block_ncc.tolist(),
            },
            "inversion": {
                "status": cfg.get("status"),
                "stop_reason": result.get("stop_reason"),
                "n_iterations": result.get("n_iterations"),
                "n_snapshots": result.get("n_snapshots"),
                "best_psnr": result.get("best_psnr"),
                "elapsed_s": result.get("elapsed_s"),
            },
            "assembly": params,
            "dip_config": cfg.get("dip_config"),
            "sigma": self.run.sigma,
            "seed": cfg.get("seed"),
            "device": cfg.get("device"),
            "environment": result.get("environment"),
            "versions": cfg.get("versions"),
            # the folder's name only: the report travels with the image, and a full path tells
            # where the run lives (a folder name can identify a person; as the CLI's reports)
            "run_dir": Path(self.path).name,
        }
