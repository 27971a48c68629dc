"""The docks' plots, ready at once: matplotlib is imported off the GUI thread.

Importing matplotlib (:mod:`._canvases`) holds the importing thread for over a second; done on the
GUI thread when a dock first opened, it froze the viewer.  :class:`LivePlot` and
:class:`ColorbarCanvas` are stand-ins of the canvases' size, shown at once: the first one asks a
background thread to import matplotlib (plain Python mostly: the GUI thread keeps getting the GIL
every few milliseconds), and each stand-in puts its canvas in place on the GUI thread when the
import is done, replaying the last update it was given meanwhile.  Once matplotlib is loaded, a
stand-in builds its canvas at once.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QLabel, QSizePolicy, QVBoxLayout, QWidget

if TYPE_CHECKING:
    import napari

    from .._models import RunHistory

__all__ = ["ColorbarCanvas", "LivePlot", "canvases_loaded"]

_MODULE = "napari_dippas._widgets._canvases"


class _Loader(QObject):
    """Imports :mod:`._canvases` once, in a background thread; ``loaded`` on the GUI thread."""

    loaded = Signal()

    def __init__(self) -> None:
        super().__init__()
        self._started = False
        self._waiting: list[Callable[[Any], None]] = []
        self.loaded.connect(self._call_waiting)

    def when_loaded(self, build: Callable[[Any], None]) -> None:
        """Call ``build(module)`` on the GUI thread once the module is imported (now if it is)."""
        if _MODULE in sys.modules and not self._waiting:
            build(sys.modules[_MODULE])
            return
        self._waiting.append(build)
        if not self._started:
            self._started = True
            threading.Thread(target=self._load, name="dippas-matplotlib", daemon=True).start()

    def _load(self) -> None:
        importlib.import_module(_MODULE)
        self.loaded.emit()  # queued to the GUI thread (this object lives there)

    def _call_waiting(self) -> None:
        module = sys.modules[_MODULE]
        waiting, self._waiting = self._waiting, []
        for build in waiting:
            build(module)


_loader: _Loader | None = None


def _the_loader() -> _Loader:
    global _loader
    if _loader is None:
        _loader = _Loader()
    return _loader


def canvases_loaded() -> bool:
    """Whether matplotlib and the canvases are imported (every stand-in then has its canvas)."""
    return _MODULE in sys.modules and (_loader is None or not _loader._waiting)


class _StandIn(QWidget):
    """A placeholder of the canvas's height; the canvas goes in when matplotlib is loaded."""

    _figure = ""
    _height = 100

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.canvas: Any = None
        self._pending: tuple[str, tuple, dict] | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self._placeholder = QLabel("")
        layout.addWidget(self._placeholder)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setFixedHeight(self._height)
        self._args, self._kwargs = args, kwargs
        _the_loader().when_loaded(self._build)

    def _build(self, module: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the dock may have gone meanwhile
            self.canvas = getattr(module, self._figure)(*self._args, **self._kwargs)
            self._placeholder.deleteLater()
            self.layout().addWidget(self.canvas)
            if self._pending is not None:
                name, args, kwargs = self._pending
                self._pending = None
                getattr(self.canvas, name)(*args, **kwargs)

    def _call(self, name: str, *args: Any, **kwargs: Any) -> None:
        """The canvas's method now, or (only the last such call) once it is there."""
        if self.canvas is None:
            self._pending = (name, args, kwargs)
        else:
            getattr(self.canvas, name)(*args, **kwargs)


class ColorbarCanvas(_StandIn):
    """A horizontal colorbar for a heatmap layer (:class:`._canvases.ColorbarFigure`)."""

    _figure = "ColorbarFigure"
    _height = 75

    def __init__(self, viewer: napari.Viewer | None = None, label: str = "block NCC") -> None:
        self.limit = 1.0
        self.label = label
        super().__init__(viewer, label)

    def set_limit(self, limit: float, label: str | None = None) -> None:
        """Show the colormap on ``[-limit, limit]``."""
        self.limit = float(limit)
        if label is not None:
            self.label = label
        self._call("set_limit", self.limit, self.label)


class LivePlot(_StandIn):
    """PSNR, NCC and gamma against iteration (:class:`._canvases.LiveFigure`)."""

    _figure = "LiveFigure"
    _height = 280

    def __init__(self, viewer: napari.Viewer | None = None, full_redraw_s: float = 2.0) -> None:
        super().__init__(viewer, full_redraw_s)

    def show_history(
        self, history: RunHistory, tau: float | None = None, *, final: bool = False
    ) -> None:
        """Update from ``history`` (see :meth:`._canvases.LiveFigure.show_history`)."""
        self._call("show_history", history, tau, final=final)

    def stop_redrawing(self) -> None:
        """No more off-screen redraw steps (the dock is closing)."""
        self._pending = None
        if self.canvas is not None:
            self.canvas._offscreen = None
