"""Adding and updating the plugin's layers in a viewer (napari only, no Qt).

Layers are matched by ``layer.__class__``, never ``type(layer)``: a dock opened through the
Plugins menu gets napari's ``PublicOnlyProxy`` viewer, whose layers' type is the proxy.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._layers import LayerDataTuple, dippas_kind

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer

__all__ = [
    "add_new_layer", "layer_source_path", "same_path", "show_rectangles", "upsert_layer",
    "upsert_run_layer",
]


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
