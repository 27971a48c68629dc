"""One piece of GUI work per turn of the event loop.

Adding a layer makes napari build its controls and visual and redraw the canvas (0.1–0.4 s each
without a GPU); a run's end adds four of them.  Done in one handler they held the GUI for
0.6–0.8 s; queued here, the viewer paints and answers between any two.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from qtpy.QtCore import QTimer


class Turns:
    """Calls run in order, each in a turn of its own, from the GUI thread."""

    def __init__(self) -> None:
        self._todo: deque[Callable[[], object]] = deque()
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(0)
        self._timer.timeout.connect(self._next)

    @property
    def pending(self) -> bool:
        """Whether some call waits for its turn."""
        return bool(self._todo)

    def add(self, call: Callable[[], object]) -> None:
        """Run ``call`` after those already queued (the next turn if none is)."""
        self._todo.append(call)
        if not self._timer.isActive():
            self._timer.start()

    def clear(self) -> None:
        """Drop the calls not run yet (the dock is closing)."""
        self._todo.clear()
        self._timer.stop()

    def _next(self) -> None:
        if not self._todo:
            return
        call = self._todo.popleft()
        try:
            call()
        finally:  # one failing step must not strand the others (its error still shows)
            if self._todo:
                self._timer.start()
