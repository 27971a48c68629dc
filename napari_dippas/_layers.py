"""How DIPPAS results become napari layers: colormaps, limits, scale/translate and metadata.

Everything here returns napari *layer data tuples* ``(data, kwargs, layer_type)`` and imports
neither napari nor Qt, so readers, sample data and widgets share one definition of each layer and
the rules can be tested without a viewer.  Every layer we make carries a ``metadata["dippas"]``
dict whose ``"kind"`` says what it is; widgets find their inputs by that kind, not by name.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "BLOCK_NCC_LIMIT",
    "DIVERGING_COLORMAP",
    "LayerDataTuple",
    "RECT_STATE_COLORS",
    "Region",
    "anonymized_layer",
    "block_heatmap_layer",
    "block_placement",
    "difference_layer",
    "dippas_kind",
    "fingerprint_layer",
    "layer_title",
    "named_by_run",
    "photo_layer",
    "rectangles_layer",
    "residual_layer",
    "run_title",
    "snapshots_layer",
    "symmetric_limits",
]

#: Blue for negative, white at zero, red for positive correlation (matplotlib's name; napari
#: resolves matplotlib colormaps by name).
DIVERGING_COLORMAP = "RdBu_r"

LayerDataTuple = tuple[Any, dict[str, Any], str]

#: One colour scale for every block-NCC map: ``(-0.05, 0.05)``.  A map scaled to its own largest
#: value makes a match and a non-match look alike; with one fixed scale, chance-level blocks
#: (their NCC spreads about ``1/B``: ±0.016 for B = 64) stay pale and a fingerprint that is
#: present shows red.  Values beyond ±0.05 saturate; the exact numbers are in the layer's
#: ``metadata["dippas"]["values"]``.
BLOCK_NCC_LIMIT = 0.05

#: Edge colours of the states a rectangle (a tile of a whole-photo run) can be in.
RECT_STATE_COLORS = {
    "waiting": "#42a5f5",  # blue: grey vanished on a grey sky
    "running": "#ffb300",
    "done": "#43a047",
    "fell short": "#e53935",
}


@dataclass(frozen=True)
class Region:
    """A rectangle of a photo, in pixels: top ``y``, left ``x``, height ``h``, width ``w``.

    A region crops the photo and the fingerprint together; every layer computed on the crop is
    drawn at :attr:`translate` so that it sits over the region of the photo.
    """

    y: int
    x: int
    h: int
    w: int

    @classmethod
    def whole(cls, shape: tuple[int, ...]) -> Region:
        """The whole of an image of ``shape`` (H, W, ...)."""
        return cls(0, 0, int(shape[0]), int(shape[1]))

    @classmethod
    def from_corners(cls, corners: np.ndarray, shape: tuple[int, ...]) -> Region:
        """The pixels inside a drawn rectangle (world corners as napari stores them), clipped.

        A napari rectangle's corners are in world coordinates where pixel ``i`` is centred at
        ``i``; the pixels whose centres fall inside are kept.

        Raises
        ------
        ValueError
            If the rectangle holds no pixel of the image.
        """
        pts = np.asarray(corners, dtype=np.float64)[:, -2:]
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        y0, x0 = (int(v) for v in np.maximum(np.ceil(lo), 0))
        y1 = min(int(np.floor(hi[0])) + 1, int(shape[0]))
        x1 = min(int(np.floor(hi[1])) + 1, int(shape[1]))
        if y1 <= y0 or x1 <= x0:
            raise ValueError("the rectangle does not cover any pixel of the photo")
        return cls(y0, x0, y1 - y0, x1 - x0)

    def check(self, shape: tuple[int, ...]) -> Region:
        """``self`` if it lies inside an image of ``shape``.

        Raises
        ------
        ValueError
            With the analyst's words: what is wrong and what fits.
        """
        H, W = int(shape[0]), int(shape[1])
        if self.h < 1 or self.w < 1:
            raise ValueError(f"the region must be at least 1×1 pixels (got {self.h}×{self.w})")
        if self.y < 0 or self.x < 0 or self.y + self.h > H or self.x + self.w > W:
            raise ValueError(
                f"the region Y {self.y}, X {self.x}, H {self.h}, W {self.w} does not fit "
                f"in the {H}×{W} photo: keep Y + H ≤ {H} and X + W ≤ {W}"
            )
        return self

    def crop(self, array: np.ndarray) -> np.ndarray:
        """The region of ``array`` (H×W or H×W×C), contiguous (a copy, the input is untouched)."""
        return np.ascontiguousarray(array[self.y : self.y + self.h, self.x : self.x + self.w])

    @property
    def translate(self) -> tuple[float, float]:
        """Where a layer computed on the crop must be drawn (its ``translate``)."""
        return (float(self.y), float(self.x))

    def is_whole(self, shape: tuple[int, ...]) -> bool:
        """Whether the region is the whole image."""
        return self == Region.whole(shape)

    def label(self) -> str:
        """Short text for layer names: ``y 100, x 200, 128×128``."""
        return f"y {self.y}, x {self.x}, {self.h}×{self.w}"

    def corners(self) -> np.ndarray:
        """The rectangle's 4 corners as a napari Shapes rectangle (pixel edges included)."""
        y0, x0 = self.y - 0.5, self.x - 0.5
        y1, x1 = y0 + self.h, x0 + self.w
        return np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], dtype=np.float64)

    def as_dict(self) -> dict[str, int]:
        """``{"y", "x", "h", "w"}`` for records."""
        return {"y": self.y, "x": self.x, "h": self.h, "w": self.w}


def layer_title(what: str, photo: str = "", camera: str = "", region: Region | None = None) -> str:
    """A layer name that says what it is and of which photo and camera.

    ``layer_title("block NCC", "IMG_0012", "Nikon_D70_0")`` is ``"block NCC — IMG_0012 ×
    Nikon_D70_0"``; a region adds its place: ``"… [y 100, x 200, 128×128]"``.
    """
    subject = " × ".join(part for part in (photo, camera) if part)
    name = f"{what} — {subject}" if subject else what
    return f"{name} [{region.label()}]" if region is not None else name


def run_title(folder: str, photo: str = "", camera: str = "") -> str:
    """What names a run's layers: ``"IMG_0012 × Nikon_D70_0 (run-…-seed0)"``.

    The photo and the camera say what was anonymized, the run folder's name keeps two runs of
    one photo apart; the folder alone when neither is known (a run made at the command line).
    """
    who = " × ".join(str(part) for part in (photo, camera) if part)
    return f"{who} ({folder})" if who else str(folder)


def named_by_run(data_tuple: LayerDataTuple, label: str) -> LayerDataTuple:
    """The layer named ``"<its name> — <label>"`` (:func:`run_title`): each run's layers keep
    their own names, and a second run never replaces nor numbers the first's (``… [1]``)."""
    data, kwargs, kind = data_tuple
    return data, {**kwargs, "name": f"{kwargs['name']} — {label}"}, kind


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


def residual_layer(
    W: np.ndarray, *, sigma: float, name: str = "residual", offset: Sequence[float] = (0.0, 0.0),
    **info: Any,
) -> LayerDataTuple:
    """A noise residual ``W`` (gray, zero-mean), robust symmetric limits, at ``offset``."""
    kwargs = {
        "name": name,
        "colormap": "gray",
        "contrast_limits": symmetric_limits(W, 99.5),
        "translate": tuple(float(v) for v in offset),
        "metadata": {"dippas": {"kind": "residual", "sigma": float(sigma), **info}},
    }
    return np.asarray(W, dtype=np.float32), kwargs, "image"


def _exact_cells(
    values: np.ndarray, block_size: int, image_shape: tuple[int, int] | None
) -> tuple[np.ndarray, int]:
    """``(cells, g)``: the map on a grid of ``g×g``-pixel cells that ends exactly at the image.

    A block map has ``ceil(H/B)`` rows; drawn with ``B``-pixel cells its last row would hang
    ``B - H % B`` pixels below a photo whose edge blocks are smaller.  With ``g = gcd(B, H, W)``
    each block is ``B/g`` cells and the grid is ``H/g × W/g``: the same colours, ending exactly
    at the photo's edges (``g = B`` when the photo is a multiple of ``B``: nothing changes).
    """
    if image_shape is None:
        return values, int(block_size)
    H, W = (int(s) for s in image_shape[:2])
    g = math.gcd(int(block_size), H, W)
    k = int(block_size) // g
    cells = np.repeat(np.repeat(values, k, axis=0), k, axis=1) if k > 1 else values
    return np.ascontiguousarray(cells[: H // g, : W // g]), g


def block_heatmap_layer(
    values: np.ndarray,
    block_size: int,
    *,
    name: str = "block NCC",
    limit: float | None = BLOCK_NCC_LIMIT,
    image_shape: tuple[int, int] | None = None,
    opacity: float = 0.6,
    offset: Sequence[float] = (0.0, 0.0),
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
    limit : float or None
        Contrast limits are ``(-limit, limit)``: by default :data:`BLOCK_NCC_LIMIT`, the one
        scale shared by every block-NCC map; ``None`` takes the map's largest magnitude.
    image_shape : tuple of int, optional
        ``(H, W)`` of the photo (or region) the map was measured on: the map then ends exactly
        at its edges (edge blocks smaller than ``B``, see :func:`_exact_cells`).
    opacity : float
        Layer opacity, so the photo shows through.
    offset : tuple of float
        ``(y, x)`` of the region the map was measured on (:attr:`Region.translate`).
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
    cells, g = _exact_cells(values, block_size, image_shape)
    scale, translate = block_placement(g)
    translate = (translate[0] + float(offset[0]), translate[1] + float(offset[1]))
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
    return cells, kwargs, "image"


def rectangles_layer(
    rects: Sequence[tuple[int, int, int, int]],
    states: Sequence[str],
    *,
    name: str = "tiles",
    offset: Sequence[float] = (0.0, 0.0),
    **info: Any,
) -> LayerDataTuple:
    """Rectangles ``(y, x, h, w)`` with a state each, as a Shapes layer (e.g. a run's tile plan).

    The edge colour tells the state (:data:`RECT_STATE_COLORS`: waiting, running, done, fell
    short); the faces stay transparent so the photo shows through.  Each rectangle covers its
    pixels exactly (edges on the pixel borders).

    Raises
    ------
    ValueError
        If the counts differ or a state is unknown.
    """
    if len(rects) != len(states):
        raise ValueError(f"{len(rects)} rectangles but {len(states)} states")
    unknown = sorted(set(states) - set(RECT_STATE_COLORS))
    if unknown:
        raise ValueError(
            f"unknown state {unknown[0]!r}; use one of {', '.join(RECT_STATE_COLORS)}"
        )
    oy, ox = (float(v) for v in offset)
    data = [Region(int(y) + int(oy), int(x) + int(ox), int(h), int(w)).corners()
            for y, x, h, w in rects]
    kwargs = {
        "name": name,
        "shape_type": "rectangle",
        "edge_color": [RECT_STATE_COLORS[s] for s in states],
        "face_color": "transparent",
        "edge_width": 4,
        "features": {"state": list(states)},
        "metadata": {"dippas": {"kind": "rectangles", **info}},
    }
    return data, kwargs, "shapes"


def snapshots_layer(stack: np.ndarray, *, name: str = "snapshots", **info: Any) -> LayerDataTuple:
    """The kept DIP outputs as one ``N×H×W×3`` RGB layer (a slider walks through them).

    ``stack`` is typically the snapshot store's uint16 memmap (value × 257), read from disk only
    for the frame on screen.
    """
    kwargs: dict[str, Any] = {
        "name": name,
        "rgb": True,
        # the slider walks through snapshots: it says so (napari's default label is "-3"), and
        # the label is the layer's, so napari keeps it whenever the dims are rebuilt
        "axis_labels": ("snapshot", "y", "x"),
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
    offset: Sequence[float] = (0.0, 0.0),
    **info: Any,
) -> LayerDataTuple:
    """The assembled image at ``offset``; its ``report`` is what the writer saves beside it."""
    meta = {"kind": "anonymized", **info}
    if report is not None:
        meta["report"] = dict(report)  # (an AnonymizationReport is read as the dict it writes)
    rgb = image.ndim == 3 and image.shape[-1] == 3
    kwargs = {"name": name, "rgb": rgb, "metadata": {"dippas": meta}}
    if any(offset):
        kwargs["translate"] = tuple(float(v) for v in offset)
    return image, kwargs, "image"


def difference_layer(
    after: np.ndarray, before: np.ndarray, *, name: str = "difference",
    offset: Sequence[float] = (0.0, 0.0), **info: Any,
) -> LayerDataTuple:
    """What anonymizing changed: ``after − before`` (gray, both on the 0..255 scale), at ``offset``.

    A before/after view: zero is mid-gray, the limits are symmetric (99.5th percentile of the
    change), so the fine noise DIPPAS replaced shows wherever it is.
    """
    from dippas_core.io import to_float255
    from dippas_core.residual import rgb2gray

    a, b = to_float255(np.asarray(after)), to_float255(np.asarray(before))
    diff = a - b
    if diff.ndim == 3:
        diff = rgb2gray(diff)
    kwargs = {
        "name": name,
        "colormap": "gray",
        "contrast_limits": symmetric_limits(diff, 99.5),
        "translate": tuple(float(v) for v in offset),
        "visible": False,
        "metadata": {"dippas": {"kind": "difference", **info}},
    }
    return np.asarray(diff, dtype=np.float32), kwargs, "image"
