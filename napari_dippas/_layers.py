"""How DIPPAS results become napari layers: colormaps, limits, scale/translate and metadata.

Everything here returns napari *layer data tuples* ``(data, kwargs, layer_type)`` and imports
neither napari nor Qt, so readers, sample data and widgets share one definition of each layer and
the rules can be tested without a viewer.  Every layer we make carries a ``metadata["dippas"]``
dict whose ``"kind"`` says what it is; widgets find their inputs by that kind, not by name.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "DIVERGING_COLORMAP",
    "LayerDataTuple",
    "anonymized_layer",
    "block_heatmap_layer",
    "block_placement",
    "dippas_kind",
    "fingerprint_layer",
    "photo_layer",
    "residual_layer",
    "snapshots_layer",
    "symmetric_limits",
]

#: Blue for negative, white at zero, red for positive correlation (matplotlib's name; napari
#: resolves matplotlib colormaps by name).
DIVERGING_COLORMAP = "RdBu_r"

LayerDataTuple = tuple[Any, dict[str, Any], str]


def symmetric_limits(values: np.ndarray, percentile: float = 100.0) -> tuple[float, float]:
    """Contrast limits ``(-m, m)`` centred on 0 so that white means "no correlation".

    Parameters
    ----------
    values : np.ndarray
        Any real array; non-finite entries are ignored.
    percentile : float
        ``m`` is this percentile of ``|values|`` (100 = the largest magnitude).  Below 100 a few
        outliers cannot wash the map out (fingerprints have heavy tails).

    Returns
    -------
    tuple of float
        ``(-m, m)`` with ``m > 0`` (a tiny positive value for an all-zero map, since napari rejects
        equal limits).
    """
    finite = np.abs(np.asarray(values, dtype=np.float64))
    finite = finite[np.isfinite(finite)]
    m = float(np.percentile(finite, percentile)) if finite.size else 0.0
    if not m > 0:
        m = 1e-6
    return (-m, m)


def block_placement(block_size: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """``(scale, translate)`` that put cell ``(i, j)`` of a block map over its ``B×B`` image block.

    napari centres data pixel ``i`` at world ``translate + i * scale``; block ``i`` covers image
    pixels ``i*B .. i*B + B - 1`` whose centre is ``i*B + (B - 1) / 2``.
    """
    b = float(block_size)
    return (b, b), ((b - 1.0) / 2.0, (b - 1.0) / 2.0)


def dippas_kind(metadata: dict[str, Any] | None) -> str | None:
    """The ``metadata["dippas"]["kind"]`` of a layer (None for layers we did not make)."""
    if not metadata:
        return None
    info = metadata.get("dippas")
    return info.get("kind") if isinstance(info, dict) else None


def photo_layer(photo: np.ndarray, name: str = "photo", **info: Any) -> LayerDataTuple:
    """An RGB (or gray) photo layer, shown as stored."""
    rgb = photo.ndim == 3 and photo.shape[-1] == 3
    meta = {"dippas": {"kind": "photo", **info}}
    return photo, {"name": name, "rgb": rgb, "metadata": meta}, "image"


def fingerprint_layer(
    K: np.ndarray, *, camera: str = "", n_images: int = 0, sigma: float = 5.0, version: str = "",
    name: str = "fingerprint", path: str | None = None,
) -> LayerDataTuple:
    """A camera fingerprint ``K`` with a diverging colormap and robust symmetric limits."""
    info = {
        "kind": "fingerprint", "camera": camera, "n_images": int(n_images),
        "sigma": float(sigma), "version": version,
    }
    if path is not None:
        info["path"] = str(path)
    kwargs = {
        "name": name,
        "colormap": DIVERGING_COLORMAP,
        "contrast_limits": symmetric_limits(K, 99.5),
        "metadata": {"dippas": info},
    }
    return np.asarray(K, dtype=np.float32), kwargs, "image"


def residual_layer(W: np.ndarray, *, sigma: float, name: str = "residual") -> LayerDataTuple:
    """A noise residual ``W`` (gray, zero-mean), diverging colormap, robust symmetric limits."""
    kwargs = {
        "name": name,
        "colormap": "gray",
        "contrast_limits": symmetric_limits(W, 99.5),
        "metadata": {"dippas": {"kind": "residual", "sigma": float(sigma)}},
    }
    return np.asarray(W, dtype=np.float32), kwargs, "image"


def block_heatmap_layer(
    values: np.ndarray,
    block_size: int,
    *,
    name: str = "block NCC",
    limit: float | None = None,
    image_shape: tuple[int, int] | None = None,
    opacity: float = 0.6,
    **info: Any,
) -> LayerDataTuple:
    """A per-block NCC map drawn over the photo, one cell per ``B×B`` block.

    Parameters
    ----------
    values : np.ndarray
        ``ceil(H/B) × ceil(W/B)`` map of block NCC values.
    block_size : int
        ``B``; sets the layer's scale and translate (see :func:`block_placement`).
    name : str
        Layer name.
    limit : float, optional
        Contrast limits are ``(-limit, limit)``; by default the map's largest magnitude.  Pass the
        "before" map's limit to the "after" map so both use the same colour scale.
    image_shape : tuple of int, optional
        ``(H, W)`` of the photo, stored in the metadata (edge blocks may be smaller than ``B``).
    opacity : float
        Layer opacity, so the photo shows through.
    **info
        Extra entries for ``metadata["dippas"]`` (e.g. ``stage="before"``).

    Returns
    -------
    LayerDataTuple
        An ``image`` layer; ``metadata["dippas"]["values"]`` holds the map as a float64 array.
    """
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"a block map must be 2-D, got shape {values.shape}")
    lims = symmetric_limits(values) if limit is None else (-float(limit), float(limit))
    scale, translate = block_placement(block_size)
    meta = {
        "kind": "block_ncc", "block_size": int(block_size), "values": values.astype(np.float64),
        "limit": lims[1], **info,
    }
    if image_shape is not None:
        meta["image_shape"] = tuple(int(s) for s in image_shape[:2])
    kwargs = {
        "name": name,
        "colormap": DIVERGING_COLORMAP,
        "contrast_limits": lims,
        "scale": scale,
        "translate": translate,
        "opacity": opacity,
        "interpolation2d": "nearest",
        "metadata": {"dippas": meta},
    }
    return values, kwargs, "image"


def snapshots_layer(stack: np.ndarray, *, name: str = "snapshots", **info: Any) -> LayerDataTuple:
    """The kept DIP outputs as one ``N×H×W×3`` RGB layer (a slider walks through them).

    ``stack`` is typically the snapshot store's uint16 memmap (value × 257), read from disk only
    for the frame on screen.
    """
    kwargs: dict[str, Any] = {
        "name": name,
        "rgb": True,
        "metadata": {"dippas": {"kind": "snapshots", **info}},
    }
    if stack.dtype == np.uint16:
        kwargs["contrast_limits"] = (0, 65535)
    return stack, kwargs, "image"


def anonymized_layer(
    image: np.ndarray,
    *,
    report: dict[str, Any] | None = None,
    name: str = "anonymized",
    **info: Any,
) -> LayerDataTuple:
    """The assembled image; its ``report`` is what the writer saves beside it as JSON."""
    meta = {"kind": "anonymized", **info}
    if report is not None:
        meta["report"] = report
    rgb = image.ndim == 3 and image.shape[-1] == 3
    return image, {"name": name, "rgb": rgb, "metadata": {"dippas": meta}}, "image"
