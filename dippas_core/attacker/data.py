"""The attacker's data: the photo-level split and standardised residual patches."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from .config import AttackerConfig

__all__ = ["PhotoSplit", "data_sha256", "patch_grid", "residual_patches", "split_photos"]


@dataclass(frozen=True)
class PhotoSplit:
    """Which shots train, validate and test: lists of file paths, disjoint by construction.

    Every entry is one whole shot, so no photo can give patches to two sides.
    """

    train: tuple[Path, ...]
    validation: tuple[Path, ...]
    test: tuple[Path, ...]
    cameras: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for side in ("train", "validation", "test"):
            for p in getattr(self, side):
                key = Path(p).name
                if key in seen:
                    raise InputError(f"{key} is on both the {seen[key]} and the {side} side")
                seen[key] = side

    def names(self) -> dict[str, list[str]]:
        """File names per side (what a model file records)."""
        return {s: [Path(p).name for p in getattr(self, s)]
                for s in ("train", "validation", "test")}


def split_photos(
    data: str | Path,
    *,
    val_flat_fields: int = 1,
    flat_dir: str = "ff-jpg",
    photo_dir: str = "nat-jpg",
) -> PhotoSplit:
    """The fixed photo-level split of a prnu-python-style folder (see the module docstring).

    The test photos are exactly those the evaluation's ``cpu`` preset scores, so the attacker can
    be scored on them before and after anonymization without having seen them.
    """
    from ..photo_sets import camera_label, list_images, select_photos

    data = Path(data)
    if not data.is_dir():
        raise InputError(f"no data folder at {data}")
    flats = list_images(data / flat_dir)
    photos = list_images(data / photo_dir)
    test = select_photos(photos, photos_per_camera=1)  # what the evaluation's cpu preset scores
    test_names = {p.name for p in test}
    by_cam: dict[str, list[Path]] = {}
    for p in flats:
        by_cam.setdefault(camera_label(p), []).append(p)
    train: list[Path] = []
    val: list[Path] = []
    n_val = int(val_flat_fields)
    for _cam, paths in sorted(by_cam.items()):
        cut = len(paths) - n_val if len(paths) > n_val else len(paths)
        train.extend(paths[:cut])
        val.extend(paths[cut:])
    train.extend(p for p in photos if p.name not in test_names)
    cameras = sorted({camera_label(p) for p in [*flats, *photos]})
    missing = sorted({camera_label(p) for p in photos} - set(by_cam))
    if missing:
        raise InputError(f"no flat-field shots in {data / flat_dir} for camera(s) {missing}")
    return PhotoSplit(tuple(train), tuple(val), tuple(test), tuple(cameras))


def data_sha256(paths: Sequence[str | Path]) -> str:
    """SHA-256 over the names and bytes of ``paths`` (name order): identifies the training data."""
    digest = hashlib.sha256()
    for p in sorted((Path(p) for p in paths), key=lambda p: p.name):
        digest.update(p.name.encode())
        digest.update(hashlib.sha256(p.read_bytes()).digest())
    return digest.hexdigest()


def patch_grid(height: int, width: int, patch: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corners of ``patch``-pixel squares every ``stride`` pixels, centred in the image
    (the margin left over is split evenly).  Empty when the image is smaller than a patch."""
    if height < patch or width < patch:
        return []
    ny, nx = (height - patch) // stride + 1, (width - patch) // stride + 1
    oy = (height - (patch + (ny - 1) * stride)) // 2
    ox = (width - (patch + (nx - 1) * stride)) // 2
    return [(oy + i * stride, ox + j * stride) for i in range(ny) for j in range(nx)]


def residual_patches(image: np.ndarray, sigma: float, patch: int, stride: int) -> np.ndarray:
    """Standardised residual patches of ``image``: float32 ``(n, patch, patch)``.

    The residual is computed on the whole image first, then cut (fewer border effects).
    """
    from ..residual import residual

    arr = np.asarray(image)
    if arr.ndim not in (2, 3) or min(arr.shape[:2]) < patch:
        raise InputError(
            f"need an image of at least {patch}×{patch} pixels (H×W or H×W×3), got {arr.shape}"
        )
    w = residual(arr, sigma)
    cells = patch_grid(w.shape[0], w.shape[1], patch, stride)
    out = np.stack([w[t : t + patch, s : s + patch] for t, s in cells]).astype(np.float32)
    out -= out.mean(axis=(1, 2), keepdims=True)
    out /= out.std(axis=(1, 2), keepdims=True) + 1e-6
    return out


def _shot_patches(path: Path, config: AttackerConfig, stride: int) -> np.ndarray:
    from ..io import center_crop, read_image

    image = read_image(path)
    if config.region:
        if min(image.shape[:2]) < config.region:
            raise InputError(f"{path.name} is smaller than the {config.region} px region")
        image = center_crop(image, config.region)
    return residual_patches(image, config.sigma, config.patch, stride)


def _patch_set(
    paths: Sequence[Path], cameras: Sequence[str], config: AttackerConfig, stride: int,
    say: Callable[[str], None], what: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patches, camera indices and shot indices of ``paths``."""
    from ..photo_sets import camera_label

    index = {c: i for i, c in enumerate(cameras)}
    xs, ys, gs = [], [], []
    t0 = time.perf_counter()
    for k, p in enumerate(paths):
        cam = camera_label(p)
        if cam not in index:
            raise InputError(f"{p.name}: camera {cam} is not one of {list(cameras)}")
        x = _shot_patches(p, config, stride)
        xs.append(x)
        ys.append(np.full(len(x), index[cam], np.int64))
        gs.append(np.full(len(x), k, np.int64))
        say(f"{what} residuals {k + 1}/{len(paths)} ({p.name}, {len(x)} patches, "
            f"{time.perf_counter() - t0:.0f} s)")
    if not xs:
        empty = np.zeros((0, config.patch, config.patch), np.float32)
        return empty, np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(gs)
