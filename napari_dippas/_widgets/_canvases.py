"""Matplotlib canvases of the dock widgets, in the viewer's theme: a colorbar, the live plot.

Importing this module imports matplotlib (over a second of the importing thread): the docks hold
the lazy stand-ins of :mod:`._plots`, which import it in a background thread.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QSizePolicy

from .._layers import DIVERGING_COLORMAP

if TYPE_CHECKING:
    import napari

    from .._models import RunHistory

__all__ = ["ColorbarFigure", "LiveFigure"]


def _theme_colors(viewer: napari.Viewer | None) -> tuple[str, str]:
    """(background, text) colours of the viewer's theme, so plots sit well in the dock."""
    try:
        from napari.utils.theme import get_theme

        theme = get_theme(viewer.theme if viewer is not None else "dark")
        return theme.background.as_hex(), theme.text.as_hex()
    except (AttributeError, KeyError, ValueError):
        return "#262930", "#f0f1f2"


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


class ColorbarFigure(_ThemedCanvas):
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


class LiveFigure(_ThemedCanvas):
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
        # one line per tile of a photo run: never one from a tile's end back to the next's start
        for key in ("psnr", "gamma", "gamma_star"):
            self.lines[key].set_data(*history.curve(key))
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
