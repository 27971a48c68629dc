"""The evaluation's data: a fingerprint per camera and the square crops of the natural photos."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..photo_sets import camera_label, list_images, select_photos
from .config import EvalConfig

__all__ = ["Crop", "Dataset", "crop_layout", "load_dataset", "make_crops"]


@dataclass(frozen=True)
class Crop:
    """One square crop of a photo: its place in the centred region shared with the fingerprints."""

    crop_id: str
    photo: str
    camera: str
    size: int
    top: int
    left: int
    image: np.ndarray = field(repr=False, compare=False)


@dataclass
class Dataset:
    """Fingerprints (one per camera, all ``region`` × ``region``, centred) and the crops.

    ``fingerprints`` are the detector's; ``attack_fingerprints``, when given, are what the aware
    methods get instead (``reference="split"``).
    """

    region: int
    fingerprints: dict[str, np.ndarray]
    crops: list[Crop]
    files: dict[str, list[str]]
    attack_fingerprints: dict[str, np.ndarray] | None = None

    @property
    def cameras(self) -> list[str]:
        return sorted(self.fingerprints)

    def fingerprint_crop(self, camera: str, crop: Crop, *, attack: bool = False) -> np.ndarray:
        """``K`` of ``camera`` at the crop's place: the detector's, or with ``attack`` the one
        the aware methods get (the same unless the dataset has ``attack_fingerprints``)."""
        use_attack = attack and self.attack_fingerprints is not None
        K = (self.attack_fingerprints if use_attack else self.fingerprints)[camera]
        return K[crop.top : crop.top + crop.size, crop.left : crop.left + crop.size]


def _grid(n: int) -> int:
    return math.ceil(math.sqrt(n))


def crop_layout(size: int, n: int, region: int) -> list[tuple[int, int]]:
    """``n`` non-overlapping ``size``-pixel cells of a grid centred in a ``region`` square, nearest
    the centre first; returns (top, left) in region coordinates."""
    g = _grid(n)
    if g * size > region:
        raise InputError(f"{n} crops of {size} px need a {g * size} px region, have {region}")
    origin = (region - g * size) // 2
    cells = [(r, c) for r in range(g) for c in range(g)]
    mid = (g - 1) / 2
    cells.sort(key=lambda rc: ((rc[0] - mid) ** 2 + (rc[1] - mid) ** 2, rc))
    return [(origin + r * size, origin + c * size) for r, c in cells[:n]]


def make_crops(
    photos, sizes: Sequence[int], crops_per_photo: int, region: int
) -> list[Crop]:
    """Crops of in-memory photos: ``photos`` yields ``(camera, name, image)`` with ``image`` the
    centred ``region`` × ``region`` square of an RGB photo (the fingerprints' region)."""
    crops: list[Crop] = []
    for camera, name, photo in photos:
        photo = np.asarray(photo)
        if photo.ndim != 3 or photo.shape[:2] != (region, region):
            raise InputError(
                f"{name}: need the centred {region}×{region} region of an RGB photo, "
                f"got shape {photo.shape}"
            )
        stem = Path(name).stem
        for size in sizes:
            for k, (top, left) in enumerate(crop_layout(size, crops_per_photo, region)):
                img = np.array(photo[top : top + size, left : left + size], copy=True)
                crops.append(Crop(f"{stem}@{size}#{k}", name, camera, size, top, left, img))
    return crops


def _camera_fingerprint(
    cam: str,
    paths: Sequence[Path],
    role: str,
    *,
    region: int,
    sigma: float,
    cache_dir: str | Path | None,
    log: Callable[[str], None],
) -> np.ndarray:
    """``K`` of camera ``cam`` from the flat fields ``paths`` (the cached one when there is)."""
    from ..fingerprint import Fingerprint, estimate_fingerprint

    suffix = f"_{role}" if role else ""
    cached = Path(cache_dir) / f"{cam}_{region}_s{sigma:g}{suffix}.npz" if cache_dir else None
    if cached is not None and cached.is_file():
        fp = Fingerprint.load(cached)
    else:
        t0 = time.perf_counter()
        fp = estimate_fingerprint(paths, sigma=sigma, crop=region, camera=cam)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            fp.save(cached)
        log(f"fingerprint {cam}{suffix}: {len(paths)} flat fields, "
            f"{time.perf_counter() - t0:.1f} s")
    return np.asarray(fp.K, dtype=np.float32)


def load_dataset(
    data: str | Path,
    config: EvalConfig,
    *,
    cache_dir: str | Path | None = None,
    flat_dir: str = "ff-jpg",
    photo_dir: str = "nat-jpg",
    log: Callable[[str], None] | None = None,
) -> Dataset:
    """Fingerprints and crops from a folder laid out like the prnu-python test data.

    ``data/ff-jpg`` holds flat-field shots and ``data/nat-jpg`` natural photos; the camera of a
    file is :func:`camera_label` of its name.  Fingerprints are estimated (method §2) on the centred
    ``region`` square of the flat fields that holds every crop, and cached in ``cache_dir``.
    With ``config.reference == "split"`` the detector's fingerprint of a camera comes from its
    2nd, 4th, … flat field (name order) and the methods' from the 1st, 3rd, ….
    """
    from ..io import center_crop, read_image

    say = log or (lambda _msg: None)
    data = Path(data)
    flats = list_images(data / flat_dir)
    photos = select_photos(
        list_images(data / photo_dir), config.photos_per_camera, config.max_photos
    )
    region = max(
        max(_grid(config.crops_per_photo) * s for s in config.crop_sizes),
        int(config.fingerprint_region or 0),
    )
    cams = sorted({camera_label(p) for p in photos})
    flats_by_cam: dict[str, list[Path]] = {}
    for p in flats:
        flats_by_cam.setdefault(camera_label(p), []).append(p)
    missing = [c for c in cams if c not in flats_by_cam]
    if missing:
        raise InputError(f"no flat-field shots in {data / flat_dir} for camera(s) {missing}")

    split = config.reference == "split"
    short = [c for c, v in flats_by_cam.items() if len(v) < 2] if split else []
    if short:
        raise InputError(
            f"reference 'split' needs at least 2 flat-field shots per camera; {short} have one"
        )

    estimate = functools.partial(
        _camera_fingerprint, region=region, sigma=config.sigma, cache_dir=cache_dir, log=say
    )
    fingerprints: dict[str, np.ndarray] = {}
    attack: dict[str, np.ndarray] | None = {} if split else None
    files: dict[str, list[str]] = {"flat_fields": [p.name for p in flats]}
    for cam, paths in sorted(flats_by_cam.items()):
        if split:
            fingerprints[cam] = estimate(cam, paths[1::2], "detector")
            attack[cam] = estimate(cam, paths[0::2], "attack")
            files.setdefault("flat_fields_detector", []).extend(p.name for p in paths[1::2])
            files.setdefault("flat_fields_attack", []).extend(p.name for p in paths[0::2])
        else:
            fingerprints[cam] = estimate(cam, paths, "")

    crops = make_crops(
        ((camera_label(p), p.name, center_crop(read_image(p), region)) for p in photos),
        config.crop_sizes,
        config.crops_per_photo,
        region,
    )
    files["photos"] = [p.name for p in photos]
    return Dataset(region, fingerprints, crops, files, attack)
