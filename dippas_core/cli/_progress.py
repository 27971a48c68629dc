"""Shared pieces of the long-running commands: a one-line progress bar and Ctrl-C handling."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, TextIO

from ..cancel import CancelToken

__all__ = ["ProgressLine", "TileLines", "sigint_cancels"]


class ProgressLine:
    """A plain ``\\r`` status line on stderr: iteration, PSNR, gamma, kept snapshots, speed.

    Redrawn at most every ``min_interval`` seconds (and always on the last step) so a fast loop
    does not spend its time printing.
    """

    def __init__(
        self, total: int | None = None, *, stream: TextIO | None = None, min_interval: float = 0.2
    ):
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.min_interval = float(min_interval)
        self.kept = 0
        self.best_psnr = float("-inf")
        self._start = time.perf_counter()
        self._last_draw = 0.0
        self._width = 0
        self._last: Any = None

    def update(self, step: Any) -> None:
        """Account for one DIP ``Step`` and redraw if it is time."""
        self.kept += step.snapshot is not None
        self.best_psnr = max(self.best_psnr, float(step.psnr))
        self._last = step
        now = time.perf_counter()
        if now - self._last_draw >= self.min_interval or step.iteration == self.total:
            self._draw(step, now)

    def line(self, step: Any, now: float | None = None) -> str:
        """The status text for ``step``."""
        elapsed = (time.perf_counter() if now is None else now) - self._start
        total = f"/{self.total}" if self.total else ""
        rate = step.iteration / elapsed if elapsed > 0 else 0.0
        return (
            f"iter {step.iteration}{total}  PSNR {step.psnr:6.2f} dB (best {self.best_psnr:.2f})  "
            f"gamma {step.gamma:.4f} (lsq {getattr(step, 'gamma_star', float('nan')):.4f})  "
            f"kept {self.kept}  {rate:.1f} it/s  {elapsed:.0f} s"
        )

    def _draw(self, step: Any, now: float) -> None:
        self._width = _redraw(self.stream, self.line(step, now), self._width)
        self._last_draw = now

    def close(self) -> None:
        """Draw the final state and end the line."""
        if self._last is not None:
            self._draw(self._last, time.perf_counter())
            self.stream.write("\n")
            self.stream.flush()


@contextlib.contextmanager
def sigint_cancels(cancel: CancelToken, *, stream: TextIO | None = None) -> Iterator[CancelToken]:
    """First Ctrl-C cancels ``cancel`` (the job stops cleanly); a second one interrupts at once.

    Outside the main thread (no signal handling there) it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield cancel
        return
    out = stream if stream is not None else sys.stderr
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        if cancel.cancelled:
            raise KeyboardInterrupt
        cancel.cancel()
        out.write(
            "\nstopping after this iteration and saving what was made "
            "(Ctrl-C again to abort at once)\n"
        )
        out.flush()

    signal.signal(signal.SIGINT, handler)
    try:
        yield cancel
    finally:
        signal.signal(signal.SIGINT, previous)


class TileLines:
    """A photo run on a terminal: a line per finished tile, one status line for those running.

    Fed with the run's steps (:meth:`step`) and finished tiles (:meth:`done`); the numbers and
    words are :class:`~dippas_core.progress.PhotoProgress`'s, so the viewer says the same.  The
    status line is redrawn in place (``\\r``) at most every ``min_interval`` seconds; a finished
    tile's line is printed above it, whole, so lines never run into each other.
    """

    def __init__(self, progress: Any, *, stream: TextIO | None = None,
                 min_interval: float = 0.5) -> None:
        self.progress = progress
        self.stream = stream if stream is not None else sys.stderr
        self.min_interval = float(min_interval)
        self._width = 0
        self._last_draw = float("-inf")

    def step(self, step: Any) -> None:
        self.progress.step(step)
        now = time.perf_counter()
        if now - self._last_draw >= self.min_interval:
            self._draw(now)

    def done(self, tile: Any, stats: dict) -> None:
        self.progress.finish(tile.index, stats)
        self._clear()
        self.stream.write(self.progress.tile_line(tile.index) + "\n")
        self._draw(time.perf_counter())

    def _clear(self) -> None:
        if self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self._width = 0

    def _draw(self, now: float) -> None:
        self._width = _redraw(self.stream, self.progress.status_line(), self._width)
        self._last_draw = now

    def close(self) -> None:
        """End the status line (the last state stays on screen)."""
        if self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0


def _redraw(stream: Any, text: str, width: int) -> int:
    """Write ``text`` over the status line of ``width`` characters; returns the new width."""
    stream.write("\r" + text + " " * max(0, width - len(text)))
    stream.flush()
    return len(text)
