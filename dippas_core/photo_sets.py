"""Folders of camera photos as the Dresden/prnu-python test data lays them out.

``ff-jpg/`` holds each camera's flat fields and ``nat-jpg/`` its natural photos, every file named
``CAMERA_N_….JPG``.  The evaluation and the learned attacker read them alike: the camera of a file,
the images of a folder, and which photos of each camera are used.
"""

from __future__ import annotations

from pathlib import Path

from .errors import InputError

__all__ = ["camera_label", "list_images", "select_photos"]


def camera_label(path: str | Path) -> str:
    """Device label of a Dresden-style file name: the part of the stem before the last ``_``."""
    stem = Path(path).stem
    if "_" not in stem:
        raise InputError(f"cannot tell the camera of {Path(path).name!r}: no '_' in its name")
    return stem.rsplit("_", 1)[0]


def list_images(folder: Path) -> list[Path]:
    """The images of ``folder`` (sorted by name); an error when there is none."""
    from .io import find_images

    files = find_images(folder)
    if not files:
        raise InputError(f"no images in {folder}")
    return files


def select_photos(
    files: list[Path], photos_per_camera: int | None = None, max_photos: int | None = None
) -> list[Path]:
    """The first ``photos_per_camera`` photos of each camera (all: None), cameras interleaved so
    that a ``max_photos`` cut keeps every camera represented."""
    by_cam: dict[str, list[Path]] = {}
    for p in files:
        by_cam.setdefault(camera_label(p), []).append(p)
    if photos_per_camera is not None:
        by_cam = {c: v[: int(photos_per_camera)] for c, v in by_cam.items()}
    order: list[Path] = []
    queues = [list(v) for _, v in sorted(by_cam.items())]
    while any(queues):
        for q in queues:
            if q:
                order.append(q.pop(0))
    if max_photos is not None:
        order = order[: int(max_photos)]
    return order
