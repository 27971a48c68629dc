"""Recording an inversion into a run folder: :func:`record` and the gamma summary."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Generator, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..cancel import CancelToken
from ..dip.device import recording_share
from ..errors import InputError
from ..snapshots import SnapshotStore, TileSums
from .directory import RunDirectory
from .format import HISTORY_FIELDS, environment_info
from .ingest import _Ingest

if TYPE_CHECKING:
    from ..dip.inversion import InversionResult, Step, StepSource

__all__ = ["StepStream", "gamma_summary", "record"]


def gamma_summary(history: dict[str, Any]) -> dict[str, Any]:
    """How the injection strength gamma behaved while snapshots were recorded.

    Over the recording phase (the iterations whose output was kept, PSNR >= ``record_psnr``): their
    number, the share with gamma at its bound (0: the injection switched off, the network alone
    explains the photo, camera pattern included), the share at the bound *although* gamma* > 0
    (``dead_share``: the injection held off against the data, the failure a learned gamma showed;
    at the bound with gamma* <= 0 the clamp is the constrained optimum), the medians of gamma and
    of the least-squares gamma* (NaN for runs recorded before gamma* existed); and both at the
    last iteration.
    """
    kept = np.asarray(history["kept"], dtype=bool)
    gamma = np.asarray(history["gamma"], dtype=np.float64)
    star = np.asarray(history.get("gamma_star", np.full(len(gamma), np.nan)), dtype=np.float64)

    def value(a: np.ndarray) -> float | None:
        return float(a) if np.isfinite(a) else None

    out: dict[str, Any] = {"recording_iterations": int(kept.sum())}
    if kept.any():
        out["at_bound_share"] = float(np.mean(gamma[kept] <= 0.0))
        if np.isfinite(star[kept]).all():
            out["dead_share"] = float(np.mean((gamma[kept] <= 0.0) & (star[kept] > 0.0)))
        out["median"] = float(np.median(gamma[kept]))
        out["median_star"] = value(np.median(star[kept]))
    if len(gamma):
        out["final"] = float(gamma[-1])
        out["final_star"] = value(star[-1])
    return out


def _make_result(
    history: dict[str, list],
    n_snapshots: int,
    stop_reason: str,
    run: RunDirectory,
    elapsed_s: float,
    environment: dict | None = None,
) -> InversionResult:
    """An ``InversionResult`` for a step source that has none (a plain iterable of steps).

    ``environment`` is the one reported on the first step (resolved device, speed settings);
    without it, the package versions.
    """
    hist = {k: np.asarray(v) for k, v in history.items()}
    fields = dict(
        history=hist,
        n_snapshots=n_snapshots,
        stop_reason=stop_reason,
        seed=run.config.get("seed"),
        config=run.config.get("dip_config", {}),
        environment=dict(environment) if environment else run.config.get("versions", {}),
        elapsed_s=elapsed_s,
    )
    from ..dip.inversion import InversionResult

    return InversionResult(**fields)


class StepStream:
    """Any iterable of :class:`~dippas_core.dip.inversion.Step` as a step source for
    :func:`record` (stand-ins in tests, replays, a queue fed by another thread).

    It has no result of its own (:func:`record` builds one from the history it wrote), checks
    its cancel token before taking each step and, once cancelled, closes a generator it wraps.
    """

    def __init__(self, steps: Iterable[Step], cancel: CancelToken | None = None) -> None:
        self._steps = iter(steps)
        self.cancel_token = cancel if cancel is not None else CancelToken()
        self.result: InversionResult | None = None

    def __iter__(self) -> StepStream:
        return self

    def __next__(self) -> Step:
        if self.cancel_token.cancelled:
            self.close()
            raise StopIteration
        return next(self._steps)

    def cancel(self) -> None:
        self.cancel_token.cancel()

    def close(self) -> None:
        """Close the wrapped generator (its clean-up runs now, not at some garbage collection)."""
        if isinstance(self._steps, Generator):
            self._steps.close()

    def share_cpu(self, threads: int | None) -> None:
        """Nothing to share: these steps were computed elsewhere."""


def _as_source(steps: StepSource | Iterable[Step], cancel: CancelToken | None) -> StepSource:
    """``steps`` as a step source that stops when ``cancel`` is set (checked in one place)."""
    from ..dip.inversion import StepSource

    if not isinstance(steps, StepSource):
        return StepStream(steps, cancel)
    if cancel is not None and cancel is not steps.cancel_token:
        raise InputError(
            "record: cancel must be the inversion's own token (invert(..., cancel=token)) or "
            "None; stop the inversion with inversion.cancel()"
        )
    return steps


def record(
    run_dir: RunDirectory | str | os.PathLike,
    steps: StepSource | Iterable[Step],
    cancel: CancelToken | None = None,
    on_step: Callable[[Step], None] | None = None,
    *,
    queue_size: int = 16,
    batch_size: int = 4,
    workers: int | None = None,
    torch_threads: int | None | str = "auto",
    device_ingest: bool = True,
) -> InversionResult:
    """Run an inversion, streaming its kept snapshots into ``run_dir``.

    The run's lock (``.lock``) is held until ``config.json`` says how the recording ended, so
    ``dippas assemble`` run meanwhile uses the ready snapshots and never back-fills tile sums.

    Parameters
    ----------
    run_dir
        A writable :class:`RunDirectory` (from :meth:`RunDirectory.create`) or its path.
    steps
        The :class:`~dippas_core.dip.inversion.Inversion` of :func:`dippas_core.dip.invert`
        (or another :class:`~dippas_core.dip.inversion.StepSource`), or any iterable of ``Step``
        objects (``iteration, loss, psnr, gamma, snapshot``).
    cancel
        The token that stops the recording: an inversion's own (``invert(..., cancel=token)``;
        the inversion checks it before each iteration), or, for a plain iterable, one checked
        before each step is taken.  ``None``: the source's own (``inversion.cancel()``).
    on_step
        Called with each ``Step`` after it is recorded (progress bars, live plots).
    queue_size, batch_size, workers
        Snapshots the ingest thread may lag behind before the inversion waits for it; most
        snapshots per ``residual_batch`` call; its threads (default: its own).
    torch_threads
        Torch threads of the inversion's steps on the CPU (:meth:`Inversion.share_cpu`):
        ``"auto"`` is :func:`~dippas_core.dip.device.recording_share`, ``None`` leaves torch
        alone.  An explicit ``torch_threads`` in the DIP config wins.
    device_ingest
        Residuals and tile sums of the snapshots made on a GPU computed there (torch) rather
        than on the host (Numba); snapshots made on the CPU are always ingested on the host.

    Returns
    -------
    InversionResult
        The inversion's (for a plain iterable, one built from the history), recorded with the
        status in ``config.json``.  A ``KeyboardInterrupt`` is re-raised after the run has been
        written (status ``"interrupted"``).

    Raises
    ------
    InputError
        ``run_dir`` is open read-only, or another process is recording into it, or ``cancel``
        is not the inversion's own token.
    DippasError
        Computing the residuals of the snapshots failed (status ``"failed"``); when the
        inversion itself failed too, its exception is raised instead, with a note.
    """
    run, source = _writable(run_dir), _as_source(steps, cancel)
    source.share_cpu(recording_share() if torch_threads == "auto" else torch_threads)
    history: dict[str, list] = {k: [] for k in HISTORY_FIELDS}
    n_before, env_seen = len(run.snapshots), {}  # (a reopened run holds some already)
    status, result, body_error, t0 = "failed", None, None, time.perf_counter()
    ingest = _Ingest(run, queue_size=queue_size, batch_size=batch_size, workers=workers)
    hist_fh = open(run.path / run.HISTORY, "a", encoding="utf-8")  # noqa: SIM115
    try:
        _stream(source, run, ingest, history, hist_fh, device_ingest, on_step, env_seen)
        result = source.result
        if result is None:  # a plain iterable of steps: the result is what was recorded
            result = _result_of(source, history, n_before, run, t0, env_seen or None)
        status = "cancelled" if result.stop_reason == "cancelled" else "finished"
    except BaseException as exc:
        body_error, status = exc, "interrupted" if isinstance(exc, KeyboardInterrupt) else status
        with contextlib.suppress(Exception):
            source.close()  # its clean-up (device memory) runs now, not at some GC
        raise
    finally:
        hist_fh.close()
        _finish_recording(run, ingest, history, status, result, env_seen or None, body_error, t0)
    return result


def _writable(run_dir: RunDirectory | str | os.PathLike) -> RunDirectory:
    """The run to record into, opened for writing when given as a path (a read-only one is an
    error: its lock belongs to no recording)."""
    run = (
        run_dir if isinstance(run_dir, RunDirectory) else RunDirectory.open(run_dir, writable=True)
    )
    if not run.writable:
        raise InputError(f"run {run.path} is open read-only; record into a new RunDirectory.create")
    return run


def _stream(
    source: Any, run: RunDirectory, ingest: Any, history: dict, hist_fh: Any,
    device_ingest: bool, on_step: Callable[[Step], None] | None, env_seen: dict,
) -> None:
    """Record every step of ``source``; ``env_seen`` takes the inversion's environment (reported
    on its first step) as soon as it comes, so a failure later still records it."""
    for step in source:
        if not env_seen and step.environment:
            env_seen.update(step.environment)
        _record_step(run, step, ingest, history, hist_fh, device_ingest)
        if on_step is not None:
            on_step(step)


def _result_of(
    source: Any, history: dict, n_before: int, run: RunDirectory, t0: float, env: dict | None
) -> InversionResult:
    """A plain iterable of steps has no result: the result is what was recorded."""
    reason = "cancelled" if source.cancel_token.cancelled else "ended"
    n_kept = n_before + int(np.sum(history["kept"]))
    return _make_result(history, n_kept, reason, run, time.perf_counter() - t0, env)


def _record_step(
    run: RunDirectory,
    step: Step,
    ingest: _Ingest,
    history: dict[str, list],
    hist_fh: Any,
    device_ingest: bool,
) -> None:
    """Store the step's snapshot (if kept), queue it for its tile sums, append its history row."""
    kept = step.snapshot is not None
    if kept:
        frame = run.snapshots.append(step.snapshot, step.iteration, step.psnr)
        on_device = step.snapshot_device
        # a snapshot still on a GPU is ingested there: only its tile sums come back
        ingest.put(frame if on_device is None or not device_ingest else on_device)
    row = (
        int(step.iteration),
        float(step.loss),
        float(step.psnr),
        float(step.gamma),
        float(step.gamma_star),
        int(kept),
    )
    for k, v in zip(HISTORY_FIELDS, row, strict=True):
        history[k].append(v)
    hist_fh.write(",".join(repr(v) for v in row) + "\n")
    hist_fh.flush()


def _finish_recording(
    run: RunDirectory,
    ingest: _Ingest,
    history: dict[str, list],
    status: str,
    result: InversionResult | None,
    env_seen: dict | None,
    body_error: BaseException | None,
    t0: float,
) -> None:
    """Wait for the ingest, write how the recording ended into ``config.json``, drop the lock.

    Raises the ingest's error when it failed and the recording itself did not.
    """
    ingest_error: BaseException | None = None
    try:
        ingest.finish()
    except BaseException as exc:  # noqa: BLE001 - recorded below, raised after config
        ingest_error = exc
        if body_error is None:
            # the last tile sums are missing: the run did not finish, whatever the DIP did
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        else:
            # the body's exception is the one that explains the run; keep it on top
            body_error.add_note(f"(also: {exc})")
    try:
        run.snapshots.close()  # the stores are complete: reopen them as readers
        run.tile_sums.close()
        run.snapshots = SnapshotStore(run.path)
        run.tile_sums = TileSums(run.path)
        run.writable = False
        info: dict[str, Any] = {
            "n_iterations": len(history["iteration"]),
            "n_snapshots": len(run.snapshots),
            "n_tile_sums": len(run.tile_sums),
            "best_psnr": max(history["psnr"]) if history["psnr"] else None,
            "gamma": gamma_summary(history),
            "elapsed_s": time.perf_counter() - t0,
            "ingest_busy_s": ingest.busy_s,
            "ingest_wait_s": ingest.wait_s,
            "ingested_on_device": ingest.n_on_device,
        }
        if ingest_error is not None:
            info["error"] = str(ingest_error)
        env = (result.environment if result is not None else None) or env_seen or {}
        if result is not None:
            info["stop_reason"] = result.stop_reason
            if result.seed is not None:
                run.config["seed"] = result.seed
        if env:
            info["environment"] = env
        if isinstance(env, dict) and env.get("device"):
            run.config["device"] = env["device"]  # the resolved device, never "auto"
        run.update_config(status=status, result=info, versions=environment_info())
    finally:
        run._release_lock()  # held until config.json says how the recording ended
    if ingest_error is not None and body_error is None:
        raise ingest_error
