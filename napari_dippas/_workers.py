"""``thread_worker`` glue: run a long job off the GUI thread, with throttled progress and errors
shown as napari notifications.

A job is a plain function that takes a ``report`` callback.  It runs in a napari
:class:`~napari.qt.threading.FunctionWorker`; whatever it passes to ``report`` goes through a
:class:`~napari_dippas._models.StepThrottle` and reaches the main thread in batches through a queued
Qt signal: at most one signal per ``min_interval`` seconds and never more than one waiting, so a
slow handler makes batches bigger instead of making the display lag.  Handlers therefore always
run on the main thread, the only thread allowed to touch layers.

A job given a cancel token stops when the worker is asked to quit: napari asks every worker to
quit when the application closes and then waits for them, which for a plain function worker that
ignores the request would mean waiting for the whole job.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from napari.qt.threading import FunctionWorker, create_worker
from qtpy.QtCore import QObject, Signal

from ._models import StepThrottle

__all__ = ["JobCancelled", "JobError", "start_job"]


class JobError(RuntimeError):
    """A job failed; the message names the job and the cause (``__cause__`` holds the original).

    napari's workers show errors as notifications; this message is what the user reads there.
    """


class JobCancelled(Exception):
    """Raised by a job that noticed its cancel token; never shown as an error notification."""


class _Cancellable(Protocol):
    def cancel(self) -> None: ...


class _CancellableWorker(FunctionWorker):
    """A function worker whose :meth:`quit` also cancels its job (through the job's token).

    superqt leaves honouring ``quit`` to the worker; a plain function worker cannot, so
    ``await_workers`` (napari's quit) would block until the job ends on its own.
    """

    _dippas_cancel: _Cancellable | None = None

    def quit(self) -> None:
        """Ask the job to stop: through its cancel token when it has one, else superqt's way.

        With a token the abort flag stays down: superqt drops the result of an aborted worker,
        and a cancelled job still returns one worth having (a cancelled run is recorded and
        assembled from the snapshots it kept).  napari calls this when its window closes (the
        worker is a registered task) and when the application quits.
        """
        if self._dippas_cancel is None:
            super().quit()
        else:
            self._dippas_cancel.cancel()


class _Relay(QObject):
    """Lives in the main thread: an emit from a worker thread is queued to the main thread."""

    ready = Signal()


def _notify(exc: BaseException) -> None:
    """Show ``exc`` as a napari error notification (its traceback one click away, not printed)."""
    from napari.utils.notifications import notification_manager

    notification_manager.receive_error(type(exc), exc, exc.__traceback__)


def start_job(
    job: Callable[..., Any],
    *,
    on_progress: Callable[[list[Any]], None] | None = None,
    on_returned: Callable[[Any], None] | None = None,
    on_errored: Callable[[BaseException], None] | None = None,
    on_finished: Callable[[], None] | None = None,
    what: str = "DIPPAS job",
    min_interval: float = 0.1,
    quiet: tuple[type[BaseException], ...] = (),
    cancel: _Cancellable | None = None,
) -> FunctionWorker:
    """Start ``job(report)`` in a worker thread.

    Parameters
    ----------
    job : callable
        ``job(report) -> result``; it calls ``report(item)`` as often as it likes.
    on_progress : callable, optional
        Main thread: receives the list of items reported since its last call, at most every
        ``min_interval`` seconds (the remainder arrives before ``on_returned``).
    on_returned : callable, optional
        Main thread: receives the job's return value.
    on_errored : callable, optional
        Main thread: receives the :class:`JobError` (already shown as a notification).
    on_finished : callable, optional
        Main thread: called last, whatever happened.
    what : str
        Names the job in error notifications ("Anonymize failed: …").
    min_interval : float
        Seconds between two progress batches.
    quiet : tuple of exception types
        Failures caused by these are expected (e.g. "no snapshot yet" while a run starts):
        ``on_errored`` still gets them, but no notification pops up (:class:`JobCancelled`
        is always quiet).
    cancel : CancelToken, optional
        The job's cancel token: ``worker.quit()`` (napari calls it on quit) cancels it.

    Returns
    -------
    FunctionWorker
        Already started; ``worker.await_workers()`` or ``qtbot.waitUntil`` wait for it.
    """
    relay = _Relay()
    throttle = StepThrottle(min_interval)
    if on_progress is not None:

        def deliver() -> None:
            batch = throttle.take()
            if batch:
                on_progress(batch)

        relay.ready.connect(deliver)

    def report(item: Any) -> None:
        if throttle.offer(item):
            relay.ready.emit()

    def run() -> Any:
        try:
            return job(report)
        except Exception as exc:
            raise JobError(f"{what} failed: {exc}") from exc
        finally:
            if throttle.close():  # queued before "returned": the GUI sees every item first
                relay.ready.emit()

    worker = create_worker(
        run, _start_thread=False, _ignore_errors=True, _worker_class=_CancellableWorker
    )
    worker._dippas_relay = relay  # keep the relay alive as long as the worker
    worker._dippas_cancel = cancel
    quiet = (*quiet, JobCancelled)
    # napari's FunctionWorker means to relay errors to the notification manager, but in napari
    # 0.9 its mixin's __init__ is never reached (superqt's __init__ does not chain): do it here
    worker.errored.connect(
        lambda exc: None if isinstance(exc.__cause__, quiet) else _notify(exc)
    )
    if on_errored is not None:
        worker.errored.connect(on_errored)
    if on_returned is not None:
        worker.returned.connect(on_returned)
    if on_finished is not None:
        worker.finished.connect(on_finished)
    worker.start()
    return worker
