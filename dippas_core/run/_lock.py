"""The run's advisory writer lock (``RUN/.lock``)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__: list[str] = []  # the run's writers take it through RunDirectory

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, the stores are simply not guarded
    fcntl = None


class _RunLock:
    """The exclusive advisory lock (``flock``) on ``RUN/.lock`` that the run's one writer holds.

    Where locks are unavailable (no ``fcntl``, or a file system that refuses them) :meth:`acquire`
    reports success without locking: the run then works as before, unguarded.
    """

    NAME = ".lock"

    def __init__(self, folder: Path):
        self.path = Path(folder) / self.NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> bool:
        """Take the lock without waiting; ``False`` when another writer holds it."""
        if self._fd is not None or fcntl is None:
            return True
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            try:  # a folder we may not write to: a lock file left by its writer still tells
                fd = os.open(self.path, os.O_RDONLY)
            except OSError:
                return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError:  # e.g. ENOLCK on some network file systems: degrade to no lock
            os.close(fd)
            return True
        self._fd = fd
        return True

    def release(self) -> None:
        """Drop the lock (closing the descriptor releases the flock)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __del__(self) -> None:  # a writer dropped without close() must not lock the run forever
        with contextlib.suppress(Exception):
            self.release()



def _busy_message(path: Path) -> str:
    return (
        f"run {path} is being recorded by another process (or is open for writing elsewhere); "
        "wait until it has finished"
    )


