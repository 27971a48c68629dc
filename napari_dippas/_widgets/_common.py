"""Pieces shared by the dock widgets: layer pickers, layer upsert, matplotlib canvases."""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from qtpy.QtCore import QEvent, Qt, QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .._layers import DIVERGING_COLORMAP, LayerDataTuple, Region, dippas_kind

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer

    from .._models import RunHistory

__all__ = [
    "REGION_LAYER", "WIDGET_MIN_WIDTH", "ColorbarCanvas", "DockWidget", "LayerChoice", "LivePlot",
    "PathEdit", "RegionPicker", "add_new_layer", "layer_source_path", "same_path",
    "show_rectangles", "upsert_layer", "upsert_run_layer",
]

#: name of the Shapes layer where the analyst draws the region to work on
REGION_LAYER = "region"

#: pixels; wide enough for the dock titles ("Assemble & export (napari-dippas)") and the plots
WIDGET_MIN_WIDTH = 340


def _theme_colors(viewer: napari.Viewer | None) -> tuple[str, str]:
    """(background, text) colours of the viewer's theme, so plots sit well in the dock."""
    try:
        from napari.utils.theme import get_theme

        theme = get_theme(viewer.theme if viewer is not None else "dark")
        return theme.background.as_hex(), theme.text.as_hex()
    except (AttributeError, KeyError, ValueError):
        return "#262930", "#f0f1f2"


def upsert_layer(viewer: napari.Viewer, data_tuple: LayerDataTuple) -> Layer:
    """Add the layer, or update the same-named image layer in place (keeps the user's view)."""
    data, kwargs, layer_type = data_tuple
    name = kwargs["name"]
    if name in viewer.layers:
        layer = viewer.layers[name]
        # __class__, not type(): a plugin dock's viewer hands out napari's PublicOnlyProxy,
        # whose type is the proxy (every update would then replace the layer)
        same_kind = layer.__class__.__name__.lower() == layer_type and (
            getattr(layer, "rgb", False) == kwargs.get("rgb", getattr(layer, "rgb", False))
        )
        if same_kind and np.ndim(layer.data) == np.ndim(data):
            for key in ("scale", "translate"):  # before data so the new extent is right at once
                if key in kwargs and not np.allclose(getattr(layer, key), kwargs[key]):
                    setattr(layer, key, kwargs[key])
            layer.data = data
            # each setter re-renders the layer: only call those whose value changed
            if "colormap" in kwargs and layer.colormap.name != kwargs["colormap"]:
                layer.colormap = kwargs["colormap"]
            if "contrast_limits" in kwargs and not np.allclose(
                layer.contrast_limits, kwargs["contrast_limits"]
            ):
                layer.contrast_limits = kwargs["contrast_limits"]
            if "opacity" in kwargs and layer.opacity != kwargs["opacity"]:
                layer.opacity = kwargs["opacity"]
            if "metadata" in kwargs:
                layer.metadata = kwargs["metadata"]
            return layer
        viewer.layers.remove(name)
    return getattr(viewer, f"add_{layer_type}")(data, **kwargs)


def add_new_layer(viewer: napari.Viewer, data_tuple: LayerDataTuple) -> Layer:
    """Add the layer under a name no other layer has (``name (2)``, ...): never replaces one."""
    data, kwargs, layer_type = data_tuple
    base = name = kwargs["name"]
    k = 1
    while name in viewer.layers:
        k += 1
        name = f"{base} ({k})"
    return getattr(viewer, f"add_{layer_type}")(data, **{**kwargs, "name": name})


def show_rectangles(viewer: napari.Viewer, data_tuple: LayerDataTuple) -> Layer:
    """Show :func:`~napari_dippas._layers.rectangles_layer` rectangles: add the Shapes layer, or
    recolour it in place when the same rectangles are already shown (a tile changed state).

    A plan with other rectangles replaces the layer's shapes (same layer, same name).
    """
    data, kwargs, _ = data_tuple
    name = kwargs["name"]
    layer = viewer.layers[name] if name in viewer.layers else None
    if layer is None or layer.__class__.__name__ != "Shapes":  # (__class__: see upsert_layer)
        active = viewer.layers.selection.active  # a status overlay must not take the focus
        layer = viewer.add_shapes(data, **kwargs)
        if active is not None:
            viewer.layers.selection.active = active
        return layer
    same = len(layer.data) == len(data) and all(
        np.allclose(a, b) for a, b in zip(layer.data, data, strict=True)
    )
    if not same:
        layer.data = data
        layer.shape_type = kwargs["shape_type"]
    layer.features = kwargs["features"]
    layer.edge_color = kwargs["edge_color"]
    layer.metadata = kwargs["metadata"]
    return layer


def layer_source_path(layer: Layer) -> str | None:
    """The file a layer was opened from (None for layers made in the session)."""
    path = getattr(getattr(layer, "source", None), "path", None)
    return str(path) if path and Path(path).is_file() else None


def same_path(a: str | Path | None, b: str | Path | None) -> bool:
    """Whether two paths name the same file or folder (spelled differently or not)."""
    if not a or not b:
        return False
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def _same_role(metadata: dict[str, Any] | None, info: dict[str, Any]) -> bool:
    """A layer playing the same part of the same run: kind, stage and run folder agree."""
    mine = (metadata or {}).get("dippas")
    if not isinstance(mine, dict) or mine.get("kind") != info.get("kind"):
        return False
    return mine.get("stage") == info.get("stage") and same_path(
        mine.get("run_dir"), info.get("run_dir")
    )


def upsert_run_layer(viewer: napari.Viewer, data_tuple: LayerDataTuple) -> Layer:
    """:func:`upsert_layer` for a layer of one run, found by its role rather than by its name.

    Two runs open at once have clashing names (napari calls the second ``anonymized [1]``):
    this run's layer is updated whatever its name, and another run's layer of the same name is
    left alone (the new one is added beside it).
    """
    data, kwargs, layer_type = data_tuple
    info = kwargs["metadata"]["dippas"]
    mine = [layer for layer in viewer.layers if _same_role(layer.metadata, info)]
    if mine:
        return upsert_layer(viewer, (data, {**kwargs, "name": mine[-1].name}, layer_type))
    name = kwargs["name"]
    if name in viewer.layers and dippas_kind(viewer.layers[name].metadata) == info.get("kind"):
        return getattr(viewer, f"add_{layer_type}")(data, **kwargs)  # napari renames it
    return upsert_layer(viewer, data_tuple)


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
                self._docked = True
            elif self._docked:
                self.close_down()
        return super().event(event)

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
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._viewer = viewer
        self._accept = accept
        self._prefer = prefer
        #: the listed layers, one per item (weak: the box must not keep a removed layer alive)
        self._items: list[weakref.ref[Layer]] = []
        self._chosen: weakref.ref[Layer] | None = None
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(12)
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
        self.addItems([layer.name for layer in layers])
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
        if isinstance(layer, str):
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
        self.fields = {}
        grid = QGridLayout(self)  # two rows: fits the dock's width
        grid.setContentsMargins(0, 0, 0, 0)
        for i, key in enumerate(("Y", "X", "H", "W")):
            spin = QSpinBox(minimum=0, maximum=99_999)  # five digits: narrow enough for a dock
            spin.setToolTip({"Y": "top row", "X": "left column", "H": "height (0: whole photo)",
                             "W": "width (0: whole photo)"}[key])
            spin.setButtonSymbols(QSpinBox.ButtonSymbols.NoButtons)
            self.fields[key] = spin
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
        if layer is None or not len(layer.data):
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
        for key, value in zip(("Y", "X", "H", "W"), values, strict=True):
            self.fields[key].setValue(int(value))

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


class _ThemedCanvas(FigureCanvasQTAgg):
    def __init__(self, viewer: napari.Viewer | None, width: float, height: float) -> None:
        self.background, self.text = _theme_colors(viewer)
        fig = Figure(figsize=(width, height), dpi=100, facecolor=self.background)
        super().__init__(fig)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setFixedHeight(int(height * 100))

    def _style(self, ax: Any) -> None:
        ax.set_facecolor(self.background)
        ax.tick_params(colors=self.text, labelsize=8)
        for spine in ax.spines.values():
            spine.set_color(self.text)
        ax.xaxis.label.set_color(self.text)
        ax.yaxis.label.set_color(self.text)


class ColorbarCanvas(_ThemedCanvas):
    """A horizontal colorbar for a heatmap layer (diverging, limits symmetric around 0)."""

    def __init__(self, viewer: napari.Viewer | None = None, label: str = "block NCC") -> None:
        super().__init__(viewer, 3.2, 0.75)
        self.label = label
        self.ax = self.figure.add_axes((0.06, 0.55, 0.88, 0.25))
        self.limit = 1.0
        self.set_limit(1.0)

    def set_limit(self, limit: float, label: str | None = None) -> None:
        """Show the colormap on ``[-limit, limit]``."""
        from matplotlib.colorbar import ColorbarBase

        self.limit = float(limit)
        if label is not None:
            self.label = label
        self.ax.clear()
        ColorbarBase(
            self.ax, cmap=DIVERGING_COLORMAP, norm=Normalize(-self.limit, self.limit),
            orientation="horizontal",
        )
        self._style(self.ax)
        # five ticks at most, symmetric: labels of "−0.05 … 0.05" never run into each other
        self.ax.set_xticks(np.linspace(-self.limit, self.limit, 5))
        self.ax.xaxis.set_major_formatter(lambda v, _: f"{v:+.3g}" if v else "0")
        self.ax.set_xlabel(self.label, fontsize=8, labelpad=1)
        self.draw_idle()


class LivePlot(_ThemedCanvas):
    """PSNR, NCC and gamma against iteration, three stacked panels sharing the x axis.

    The gamma panel also shows the least-squares gamma* of each output (dashed; negative values
    leave the panel at its bottom): gamma stuck at 0 below a positive gamma* is a dead injection.

    Live updates are blitted: only the lines are redrawn (a few ms) while the data stay inside
    the axes' limits; the limits grow geometrically, so the full redraw (ticks and labels) happens
    a handful of times per run, and at most every ``full_redraw_s`` seconds.  During a run that
    redraw is done off screen one panel per turn of the event loop (a whole figure takes up to
    ~100 ms of the GUI thread here, a panel a third of it) and swapped in when complete.
    """

    def __init__(self, viewer: napari.Viewer | None = None, full_redraw_s: float = 2.0) -> None:
        super().__init__(viewer, 3.2, 2.8)
        axes = self.figure.subplots(3, 1, sharex=True)
        self.figure.subplots_adjust(left=0.24, right=0.97, top=0.97, bottom=0.15, hspace=0.14)
        self.axes = dict(zip(("psnr", "ncc", "gamma"), axes, strict=True))
        colors = {"psnr": "#4fc3f7", "ncc": "#ff8a65", "gamma": "#aed581"}
        labels = {"psnr": "PSNR (dB)", "ncc": "NCC", "gamma": "gamma"}
        self.lines = {}
        for key, ax in self.axes.items():
            self._style(ax)
            ax.set_ylabel(labels[key], fontsize=8)
            ax.yaxis.set_label_coords(-0.2, 0.5)  # aligned labels, clear of the tick labels
            ax.locator_params(axis="y", nbins=4)
            style = "o" if key == "ncc" else "-"
            (self.lines[key],) = ax.plot(
                [], [], style, color=colors[key], lw=1.2, ms=2.5, animated=True
            )
        # gamma* shares gamma's panel
        (self.lines["gamma_star"],) = self.axes["gamma"].plot(
            [], [], "--", color=colors["gamma"], lw=0.8, alpha=0.7, animated=True
        )
        self.tau_line = self.axes["psnr"].axhline(np.nan, color=self.text, lw=0.6, ls="--")
        self.axes["ncc"].axhline(0.0, color=self.text, lw=0.5, alpha=0.5)
        axes[-1].set_xlabel("iteration", fontsize=8)
        self.full_redraw_s = float(full_redraw_s)
        self.n_full_draws = 0
        self._last_full = -np.inf
        self._background = None
        self._offscreen: list[Any] | None = None  # [renderer, panels left] while redrawing
        self.mpl_connect("draw_event", self._on_draw)
        self._set_limits({"x": (0, 100), "psnr": (0, 40), "ncc": (-0.01, 0.01), "gamma": (0, 0.1)})

    def _on_draw(self, event: Any) -> None:
        """After a full draw: keep the empty axes as background, then paint the lines on it."""
        self._background = self.copy_from_bbox(self.figure.bbox)
        self.n_full_draws += 1
        self._draw_lines()

    def _draw_lines(self) -> None:
        for line in self.lines.values():
            line.axes.draw_artist(line)

    def _set_limits(self, limits: dict[str, tuple[float, float]]) -> None:
        self.axes["gamma"].set_xlim(*limits["x"])
        for key in ("psnr", "ncc", "gamma"):
            self.axes[key].set_ylim(*limits[key])

    def _needed_limits(self, history: RunHistory) -> dict[str, tuple[float, float]] | None:
        """New limits when the data left the current ones (with room to grow), else None."""
        it = history.column("iteration")
        if not it.size:
            return None
        current = {"x": self.axes["gamma"].get_xlim()}
        current.update({k: self.axes[k].get_ylim() for k in ("psnr", "ncc", "gamma")})
        data = {
            "x": it, "psnr": history.column("psnr"), "ncc": history.ncc[1],
            "gamma": np.concatenate(
                [history.column("gamma"), np.clip(history.column("gamma_star"), 0.0, None)]
            ),
        }
        new, changed = dict(current), False
        for key, values in data.items():
            values = values[np.isfinite(values)]
            if not values.size:
                continue
            lo, hi = current[key]
            vmin, vmax = float(values.min()), float(values.max())
            if key == "x" and vmax > hi:
                new[key], changed = (0, vmax * 1.6), True
            elif key == "ncc" and max(abs(vmin), abs(vmax)) > hi:
                m = max(abs(vmin), abs(vmax)) * 1.5
                new[key], changed = (-m, m), True
            elif key in ("psnr", "gamma") and (vmin < lo or vmax > hi):
                span = max(vmax - min(vmin, lo), 1e-6)
                bottom = min(lo, vmin - 0.1 * span) if key == "psnr" else 0.0
                new[key], changed = (bottom, vmax + 0.5 * span), True
        return new if changed else None

    def show_history(
        self, history: RunHistory, tau: float | None = None, *, final: bool = False
    ) -> None:
        """Update from ``history``: a blit, or a full redraw when the limits must grow.

        ``final=True`` (the run ended) fits the limits and redraws whatever the time.
        """
        it = history.column("iteration")
        self.lines["psnr"].set_data(it, history.column("psnr"))
        self.lines["gamma"].set_data(it, history.column("gamma"))
        self.lines["gamma_star"].set_data(it, history.column("gamma_star"))
        self.lines["ncc"].set_data(*history.ncc)
        full = self._background is None
        if tau is not None and self.tau_line.get_ydata()[0] != tau:
            self.tau_line.set_ydata([tau, tau])
            full = True
        limits = self._needed_limits(history)
        now = time.monotonic()
        if limits is not None and (final or now - self._last_full >= self.full_redraw_s):
            self._set_limits(limits)
            full = True
        if full and (final or self._background is None):
            self._offscreen = None
            self._last_full = now
            self.draw()  # _on_draw paints the lines
        elif full:
            self._last_full = now
            self._start_offscreen_redraw()
        elif self._offscreen is None:  # mid-redraw, the old background has the old limits
            self._blit_lines()

    def _blit_lines(self) -> None:
        self.restore_region(self._background)
        self._draw_lines()
        self.blit(self.figure.bbox)

    def _start_offscreen_redraw(self) -> None:
        from matplotlib.backends.backend_agg import RendererAgg

        w, h = self.figure.bbox.size
        renderer = RendererAgg(w, h, self.figure.dpi)
        self.figure.patch.draw(renderer)
        self._offscreen = [renderer, list(self.axes.values())]
        QTimer.singleShot(0, self._offscreen_step)

    def _offscreen_step(self) -> None:
        """Draw one more panel off screen; after the last, swap it in as the background."""
        if self._offscreen is None:  # a full draw overtook this one
            return
        renderer, panels = self._offscreen
        panels.pop(0).draw(renderer)  # animated lines are left out, as in a full draw
        if panels:
            QTimer.singleShot(0, self._offscreen_step)
            return
        self._offscreen = None
        self._background = renderer.copy_from_bbox(self.figure.bbox)
        self.n_full_draws += 1
        self._blit_lines()
