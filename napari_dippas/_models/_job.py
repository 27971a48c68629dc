"""The Anonymize widget's models: its settings and the live state of a run.

(A run's cost is the core's one cost model: :meth:`dippas_core.job.PhotoJob.cost`.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from psygnal import EventedModel

from ._steps import StepSummary

__all__ = ["AnonymizeJob", "AnonymizeSettings", "JobStatus"]

JobStatus = Literal["idle", "running", "stopping", "finished", "cancelled", "failed"]


def _preset_values(name: str) -> dict[str, Any]:
    """The fields of :class:`AnonymizeSettings` the preset ``name`` sets (the one table)."""
    from dippas_core.config import AnonymizeConfig

    config = AnonymizeConfig.preset(name)
    dip = config.dip
    return {
        "device": dip.device, "record_psnr": dip.record_psnr, "stop_psnr": dip.stop_psnr,
        "max_iter": dip.max_iter, "lr": dip.lr, "tile_size": config.tile_size,
        "overlap": config.overlap,
    }


_DEFAULT_PRESET = "cpu"
_DEFAULTS = _preset_values(_DEFAULT_PRESET)


class AnonymizeSettings(EventedModel):
    """Everything the Anonymize widget lets the user choose.

    A run's configuration is the preset's (:meth:`dippas_core.config.AnonymizeConfig.preset`)
    with the fields below as changes: those the user did not touch hold the preset's values
    (:meth:`use_preset` puts them back), so only what the user changed differs from
    ``dippas anonymize --preset NAME``.
    """

    mode: Literal["aware", "blind"] = "aware"
    preset: Literal["tiny", "demo", "cpu", "paper"] = _DEFAULT_PRESET
    seed: int = 0
    device: str = _DEFAULTS["device"]
    #: the recording threshold: outputs at least this close to the photo are kept as snapshots
    record_psnr: float = _DEFAULTS["record_psnr"]
    stop_psnr: float = _DEFAULTS["stop_psnr"]
    max_iter: int = _DEFAULTS["max_iter"]
    #: Adam learning rate
    lr: float = _DEFAULTS["lr"]
    #: a photo (or region) larger than ``tile_size`` is cut into tiles overlapping by ``overlap``
    #: pixels, each inverted on its own
    tile_size: int = _DEFAULTS["tile_size"]
    overlap: int = _DEFAULTS["overlap"]

    def use_preset(self, name: str) -> None:
        """Choose the preset ``name``: every field it sets goes back to its value."""
        self.update({"preset": name, **_preset_values(name)})

    def anonymize_config(self) -> Any:
        """The :class:`dippas_core.config.AnonymizeConfig` of a run with these settings."""
        from dippas_core.config import AnonymizeConfig

        return AnonymizeConfig.preset(
            self.preset, seed=int(self.seed), device=self.device,
            record_psnr=float(self.record_psnr), stop_psnr=float(self.stop_psnr),
            max_iter=int(self.max_iter), lr=float(self.lr), tile_size=int(self.tile_size),
            overlap=int(self.overlap),
        )

    def dip_config(self) -> Any:
        """The :class:`dippas_core.config.DIPConfig` of a run with these settings."""
        return self.anonymize_config().dip


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
    #: the finished image's PSNR and fidelity against the photo, and the bars it breaks
    result: str = ""
    run_dir: str = ""
    #: seconds since the run started (set with each batch of steps)
    elapsed_s: float = 0.0
    #: iterations done when the first batch arrived, and the time then: the speed is measured
    #: from there on (the first iterations include loading the network)
    first_iteration: int = 0
    first_elapsed_s: float = 0.0
    #: the recording threshold of the run, for the "nothing was kept" message
    record_psnr: float = float("nan")

    def start(self, max_iter: int, run_dir: str = "", record_psnr: float = float("nan")) -> None:
        """Reset for a new run."""
        self.update(
            {
                "status": "running", "iteration": 0, "max_iter": int(max_iter),
                "psnr": float("nan"), "best_psnr": float("nan"), "gamma": 0.0,
                "ncc": float("nan"), "n_snapshots": 0, "stop_reason": "", "message": "",
                "result": "",
                "run_dir": str(run_dir), "elapsed_s": 0.0, "first_iteration": 0,
                "first_elapsed_s": 0.0, "record_psnr": float(record_psnr),
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
                    f"tau = {self.record_psnr:g} dB of the photo (best so far: {best}): nothing "
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
            from dippas_core.cost import duration_text

            text += f" · at most {duration_text(left)} left"
        if self.status in ("finished", "cancelled"):
            reason = {"psnr": "reached the stop PSNR", "max_iter": "reached max iterations",
                      "cancelled": "stopped by the user"}.get(self.stop_reason, self.stop_reason)
            text = f"Done ({reason}): {text}"
            if self.message:  # e.g. a result short of tau: said first, not hinted at
                text = f"{self.message}\n{text}"
        elif self.status == "stopping":
            text = f"Stopping… {text}"
        return text
