"""A cancel token shared by every long-running job (inversion, ingest, batch, viewer workers)."""

from __future__ import annotations

import threading

__all__ = ["CancelToken"]


class CancelToken:
    """Thread-safe flag: a job checks :attr:`cancelled` between steps and stops cleanly."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        """Ask the job to stop at its next check."""
        self._event.set()

    @property
    def cancelled(self) -> bool:
        """True once :meth:`cancel` has been called."""
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until cancelled or ``timeout`` seconds pass; return :attr:`cancelled`."""
        return self._event.wait(timeout)
