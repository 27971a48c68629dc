"""Form pieces shared by the dock widgets: the dock base, layer pickers, region and path fields."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QEvent, Qt, QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QDockWidget,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .._layers import Region, dippas_kind

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer

__all__ = [
    "REGION_LAYER", "WIDGET_MIN_WIDTH", "DockWidget", "LayerChoice", "PathEdit", "RegionPicker",
    "without_kind",
]

#: name of the Shapes layer where the analyst draws the region to work on
REGION_LAYER = "region"

#: pixels; wide enough for the dock titles ("Assemble & export (napari-dippas)") and the plots
WIDGET_MIN_WIDTH = 340


class DockWidget(QWidget):
    """Base of the plugin's dock widgets: :meth:`close_down` runs once when one leaves napari.

    napari removes a dock (its close button) with ``setParent(None)`` and destroys docked widgets
    with the viewer's window; neither sends a ``closeEvent``, and a ``hideEvent`` also comes when a
    dock is merely tabbed away.  So both are caught here: the parent change, and ``destroyed``.
    Subclasses stop their jobs and timers in :meth:`_close_down`; the viewer's layer events are
    disconnected from every :class:`LayerChoice` attribute here.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer the widget works on (:attr:`viewer`).
    """

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.setMinimumWidth(WIDGET_MIN_WIDTH)
        #: the widget's contents (subclasses lay out into it): it scrolls inside
        #: :attr:`scroll`, so four docks open at once fit a 1280×800 window
        self.body = QWidget()
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        self.scroll.setWidget(self.body)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.scroll)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Ignored)
        self.viewer = napari_viewer
        #: True once the widget left napari: late job results then stay off the viewer
        self.closed = False
        self._docked = False
        ref = weakref.ref(self)  # a strong reference from the connection would keep it alive
        self.destroyed.connect(lambda *_: (w := ref()) is not None and w.close_down())

    def event(self, event: QEvent) -> bool:
        """Watch parent changes: docked, then undocked by napari, means closed."""
        if event.type() == QEvent.Type.ParentChange:
            if self.parent() is not None:
                if not self._docked:
                    QTimer.singleShot(0, self._join_other_docks)  # once napari has placed it
                self._docked = True
            elif self._docked:
                self.close_down()
        return super().event(event)

    def _join_other_docks(self) -> None:
        """Go in as a tab beside the plugin's other docks in the same area, and show.

        Stacked, four docks split a 1280×800 window into slivers (two got 50 px each): as tabs
        each has the whole height, and its contents scroll inside it.
        """
        dock = self.parentWidget()
        while dock is not None and not isinstance(dock, QDockWidget):
            dock = dock.parentWidget()
        window = dock.parentWidget() if dock is not None else None
        if not isinstance(window, QMainWindow) or dock.isFloating():
            return
        area = window.dockWidgetArea(dock)
        ours = [
            other for other in window.findChildren(QDockWidget)
            if other is not dock and not other.isFloating() and other.isVisible()
            and window.dockWidgetArea(other) == area
            and any(isinstance(w, DockWidget) for w in other.findChildren(QWidget))
        ]
        if ours:
            window.tabifyDockWidget(ours[-1], dock)
            dock.show()
            dock.raise_()

    def close_down(self) -> None:
        """Stop whatever runs and stop listening to the viewer (idempotent).

        Called automatically when napari removes the dock or the viewer closes; scripts that
        drop a widget they never docked can call it themselves.
        """
        if self.closed:
            return
        self.closed = True
        # the Qt side may already be gone (destroyed): only Python-side clean-up may fail softly
        with contextlib.suppress(RuntimeError):
            self._close_down()
        for value in list(vars(self).values()):
            if isinstance(value, LayerChoice | RegionPicker):
                value.disconnect_viewer()

    def _close_down(self) -> None:
        """Subclass hook: cancel jobs, stop timers, drop layer-event handlers."""


def without_kind(kind: str) -> Callable[[Layer], str]:
    """A layer's name without its kind in front, for a list that already says the kind:
    ``"fingerprint — Nikon_D70_1"`` shows as ``"Nikon_D70_1"`` in the fingerprint list (whole in
    a narrow dock, where the name was cut to "fingerprint — Nikon_D7")."""
    return lambda layer: layer.name.removeprefix(f"{kind} — ") or layer.name


class LayerChoice(QComboBox):
    """A combo box of the viewer's layers accepted by ``accept``, kept in sync with the viewer.

    The chosen layer is tracked as an object (a weak reference), not by its name: after the user
    renames or moves it, it stays chosen and the box shows its new name.  Another layer is chosen
    only when it left the viewer (or no longer passes ``accept``).

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer whose layers are listed.
    accept : callable
        ``accept(layer) -> bool`` filters the list.
    prefer : str, optional
        A ``metadata["dippas"]["kind"]``; the newest layer of that kind is selected when the
        chosen layer is gone (or nothing was chosen yet), e.g. the ``fingerprint`` layer.
    parent : QWidget, optional
        The Qt parent.
    """

    def __init__(
        self, viewer: napari.Viewer, accept: Callable[[Layer], bool], prefer: str | None = None,
        parent: QWidget | None = None, shown: Callable[[Layer], str] | None = None,
    ) -> None:
        super().__init__(parent)
        self._viewer = viewer
        self._accept = accept
        self._prefer = prefer
        #: the text shown for a layer (its name; a shorter one where the dock is narrow)
        self._shown = shown or (lambda layer: layer.name)
        #: the listed layers, one per item (weak: the box must not keep a removed layer alive)
        self._items: list[weakref.ref[Layer]] = []
        self._chosen: weakref.ref[Layer] | None = None
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(12)
        # as wide as the dock lets it be; a name longer still is whole in the tooltip
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.currentTextChanged.connect(
            lambda *_: self.setToolTip(layer.name if (layer := self.layer()) else "")
        )
        # a pick by the user (or by setCurrentIndex/Text) becomes the chosen layer
        self.currentIndexChanged.connect(self._remember)
        for event in ("inserted", "removed", "moved", "changed"):
            getattr(viewer.layers.events, event).connect(self.refresh)
        viewer.layers.events.inserted.connect(self._watch_name)
        for layer in viewer.layers:
            layer.events.name.connect(self.refresh)
        self.refresh()

    def _watch_name(self, event: Any) -> None:
        event.value.events.name.connect(self.refresh)

    def _remember(self, index: int) -> None:
        self._chosen = self._items[index] if 0 <= index < len(self._items) else None

    def disconnect_viewer(self) -> None:
        """Stop following the viewer's layers (the widget holding this box is closing)."""
        layers = self._viewer.layers
        for event in ("inserted", "removed", "moved", "changed"):
            with contextlib.suppress(TypeError, ValueError, RuntimeError):
                getattr(layers.events, event).disconnect(self.refresh)
        with contextlib.suppress(TypeError, ValueError, RuntimeError):
            layers.events.inserted.disconnect(self._watch_name)
        for layer in layers:
            with contextlib.suppress(TypeError, ValueError, RuntimeError):
                layer.events.name.disconnect(self.refresh)

    def refresh(self, *_: Any) -> None:
        """Rebuild the list, keeping the chosen layer (by identity) while it is still there.

        ``currentTextChanged`` is emitted when the shown name or the chosen layer changed.
        """
        before_text, before_layer = self.currentText(), self.layer()
        layers = [layer for layer in self._viewer.layers if self._accept(layer)]
        chosen = self._chosen() if self._chosen is not None else None
        # identity, not equality or name: two layers may share a name for a moment
        index = next((i for i, layer in enumerate(layers) if layer is chosen), -1)
        if index < 0 and layers:  # the chosen layer was removed (or none yet): fall back
            index = 0
            if self._prefer is not None:
                kinds = [
                    i for i, la in enumerate(layers) if dippas_kind(la.metadata) == self._prefer
                ]
                index = kinds[-1] if kinds else 0
        self.blockSignals(True)
        self.clear()
        self._items = [weakref.ref(layer) for layer in layers]
        self.addItems([self._shown(layer) for layer in layers])
        self.setCurrentIndex(index)
        self.blockSignals(False)
        self._remember(index)
        if self.currentText() != before_text or self.layer() is not before_layer:
            self.currentTextChanged.emit(self.currentText())

    def layer(self) -> Layer | None:
        """The chosen layer (None when the list is empty or the layer left the viewer)."""
        layer = self._chosen() if self._chosen is not None else None
        if layer is None or not any(la is layer for la in self._viewer.layers):
            return None
        return layer

    def select(self, layer: str | Layer) -> None:
        """Choose ``layer``: a layer of the list, or the name of one."""
        self.refresh()
        if isinstance(layer, str):  # a layer's name (the text shown may be shorter)
            index = next((i for i, ref in enumerate(self._items)
                          if (la := ref()) is not None and la.name == layer), -1)
            if index >= 0:
                self.setCurrentIndex(index)
            else:
                self.setCurrentText(layer)
        else:
            index = next((i for i, ref in enumerate(self._items) if ref() is layer), -1)
            if index >= 0:
                self.setCurrentIndex(index)


class RegionPicker(QWidget):
    """Where to work: the whole photo, or a region typed as Y, X, H, W or drawn as a rectangle.

    "Draw region" adds (or selects) the :data:`REGION_LAYER` Shapes layer in rectangle mode; the
    last rectangle drawn there fills the four fields.  :meth:`region` is what the widgets use.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer (the rectangle is drawn there).
    photo_shape : callable, optional
        Returns the shape of the photo the region is for (a drawn rectangle is clipped to it).
    """

    def __init__(
        self, viewer: napari.Viewer,
        photo_shape: Callable[[], tuple[int, ...] | None] = lambda: None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._viewer = viewer
        self._photo_shape = photo_shape
        self._layer: Any = None
        self._filling = False  # the fields and the rectangle are being set from each other
        self.fields = {}
        grid = QGridLayout(self)  # two rows: fits the dock's width
        grid.setContentsMargins(0, 0, 0, 0)
        for i, key in enumerate(("Y", "X", "H", "W")):
            spin = QSpinBox(minimum=0, maximum=99_999)  # five digits: narrow enough for a dock
            spin.setToolTip({"Y": "top row", "X": "left column", "H": "height (0: whole photo)",
                             "W": "width (0: whole photo)"}[key])
            spin.setButtonSymbols(QSpinBox.ButtonSymbols.NoButtons)
            self.fields[key] = spin
            spin.valueChanged.connect(self._typed)
            grid.addWidget(QLabel(key), i // 2, 2 * (i % 2))
            grid.addWidget(spin, i // 2, 2 * (i % 2) + 1)
        self.draw_button = QPushButton("Draw")
        self.draw_button.setToolTip("draw a rectangle on the photo (the 'region' layer)")
        self.draw_button.clicked.connect(self.draw)
        self.whole_button = QPushButton("Whole")
        self.whole_button.setToolTip("work on the whole photo")
        self.whole_button.clicked.connect(self.clear)
        grid.addWidget(self.draw_button, 0, 4)
        grid.addWidget(self.whole_button, 1, 4)
        # a region layer drawn through another dock (or already there) is followed too
        viewer.layers.events.inserted.connect(self._layer_added)
        if REGION_LAYER in viewer.layers:
            self._watch(viewer.layers[REGION_LAYER])

    def _layer_added(self, event: Any) -> None:
        if event.value.name == REGION_LAYER and self._layer is None:
            self._watch(event.value)

    def draw(self) -> None:
        """Add (or pick) the region layer and switch it to drawing rectangles."""
        layers = self._viewer.layers
        if REGION_LAYER in layers:
            layer = layers[REGION_LAYER]
        else:
            layer = self._viewer.add_shapes(
                name=REGION_LAYER, edge_color="#00e5ff", face_color="transparent",
                edge_width=3, metadata={"dippas": {"kind": "region"}},
            )
        if self._layer is not layer:
            self._unwatch()
            self._watch(layer)
        layers.selection.active = layer
        layer.mode = "add_rectangle"

    def _watch(self, layer: Any) -> None:
        layer.events.data.connect(self._drawn)
        self._layer = layer

    def _unwatch(self) -> None:
        if self._layer is not None:
            with contextlib.suppress(TypeError, ValueError, RuntimeError):
                self._layer.events.data.disconnect(self._drawn)
            self._layer = None

    def _drawn(self, *_: Any) -> None:
        layer = self._layer
        if layer is None or not len(layer.data) or self._filling:
            return
        corners = np.asarray(layer.data[-1]) + np.asarray(layer.translate)[-2:]
        shape = self._photo_shape()
        try:
            region = Region.from_corners(corners, shape if shape else (10**9, 10**9))
        except ValueError:
            return
        self.set_region(region)

    def set_region(self, region: Region | None) -> None:
        """Fill the fields (None: the whole photo)."""
        values = (0, 0, 0, 0) if region is None else (region.y, region.x, region.h, region.w)
        self._filling = True  # one move of the rectangle for the four fields, at the end
        try:
            for key, value in zip(("Y", "X", "H", "W"), values, strict=True):
                self.fields[key].setValue(int(value))
        finally:
            self._filling = False
        self._typed()

    def _typed(self, *_: Any) -> None:
        """The fields changed (typed, or filled): the drawn rectangle follows them (the whole
        photo: no rectangle).  A drawing that filled them is already where they say."""
        layer = self._layer
        if self._filling or layer is None or layer not in self._viewer.layers:
            return
        y, x, h, w = (self.fields[k].value() for k in ("Y", "X", "H", "W"))
        if h == 0 or w == 0:
            rects = []
        else:
            # pixel i is centred at i: the rectangle around pixels y..y+h-1 (Region.from_corners)
            y0, x0 = np.array([y, x], float) - 0.5 - np.asarray(layer.translate)[-2:]
            rects = [np.array([[y0, x0], [y0, x0 + w], [y0 + h, x0 + w], [y0 + h, x0]])]
        now = [np.asarray(d)[:, -2:] for d in layer.data[-1:]]
        same = len(now) == len(rects) and all(
            np.allclose(a, b) for a, b in zip(now, rects, strict=True)
        )
        if same:
            return  # (the rectangle that filled the fields)
        self._filling = True  # the layer's data event must not refill the fields
        try:
            layer.data = rects
            if rects:
                layer.shape_type = ["rectangle"]
        finally:
            self._filling = False

    def clear(self) -> None:
        """Back to the whole photo."""
        self.set_region(None)

    def region(self, shape: tuple[int, ...]) -> Region:
        """The region to work on in a photo of ``shape``: the whole photo when H or W is 0.

        Raises
        ------
        ValueError
            If the region does not fit in the photo (the message says what fits).
        """
        y, x, h, w = (self.fields[k].value() for k in ("Y", "X", "H", "W"))
        if h == 0 or w == 0:
            return Region.whole(shape)
        return Region(y, x, h, w).check(shape)

    def disconnect_viewer(self) -> None:
        """Stop watching the viewer's layers and the region layer."""
        with contextlib.suppress(TypeError, ValueError, RuntimeError):
            self._viewer.layers.events.inserted.disconnect(self._layer_added)
        self._unwatch()


class PathEdit(QWidget):
    """A path field with a "…" button that opens a file or folder dialog."""

    def __init__(
        self, mode: str = "open_file", file_filter: str = "", placeholder: str = "",
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._mode = mode
        self._filter = file_filter
        self.edit = QLineEdit()
        self.edit.setPlaceholderText(placeholder)
        button = QPushButton("…")
        button.setFixedWidth(28)
        button.setToolTip("Browse")
        button.clicked.connect(self._browse)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.edit)
        row.addWidget(button)

    def _browse(self) -> None:
        start = self.edit.text()
        if self._mode == "folder":
            chosen = QFileDialog.getExistingDirectory(self, "Choose a folder", start)
        elif self._mode == "save_file":
            chosen, _ = QFileDialog.getSaveFileName(self, "Save as", start, self._filter)
        else:
            chosen, _ = QFileDialog.getOpenFileName(self, "Open", start, self._filter)
        if chosen:
            self.edit.setText(chosen)

    def path(self) -> Path | None:
        """The path typed or chosen (None when empty)."""
        text = self.edit.text().strip()
        return Path(text).expanduser() if text else None

    def set_path(self, path: str | Path) -> None:
        self.edit.setText(str(path))
