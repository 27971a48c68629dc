"""Pieces shared by the dock widgets, re-exported from their focused modules.

- :mod:`napari_dippas._layer_updates`: adding and updating layers (no Qt);
- :mod:`._forms`: the dock base, layer pickers, region and path fields;
- :mod:`._plots`: the matplotlib canvases.
"""

from __future__ import annotations

from .._layer_updates import (
    add_new_layer,
    layer_source_path,
    same_path,
    show_rectangles,
    upsert_layer,
    upsert_run_layer,
)
from ._forms import (
    REGION_LAYER,
    WIDGET_MIN_WIDTH,
    DockWidget,
    LayerChoice,
    PathEdit,
    RegionPicker,
)
from ._plots import ColorbarCanvas, LivePlot

__all__ = [
    "REGION_LAYER", "WIDGET_MIN_WIDTH", "ColorbarCanvas", "DockWidget", "LayerChoice", "LivePlot",
    "PathEdit", "RegionPicker", "add_new_layer", "layer_source_path", "same_path",
    "show_rectangles", "upsert_layer", "upsert_run_layer",
]
