"""What a batch is told and what it reports: settings, one image's task and record, the result."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..fidelity import COLUMNS as FIDELITY_COLUMNS

__all__ = [
    "STATE_DIR",
    "STATUS_BELOW_TAU",
    "STATUS_CANCELLED",
    "STATUS_FAILED",
    "STATUS_OK",
    "STATUS_SKIPPED",
    "SUMMARY_FIELDS",
    "BatchResult",
    "BatchSettings",
    "ImageRecord",
    "ImageTask",
    "Job",
]

#: Folder inside ``OUT_DIR`` holding the batch's bookkeeping (salt, done-markers).
STATE_DIR = ".dippas-batch"
_OUTPUT_SUFFIXES = {"png": ".png", "tiff": ".tif", "tif": ".tif"}
STATUS_OK, STATUS_SKIPPED = "ok", "skipped"
STATUS_FAILED, STATUS_CANCELLED = "failed", "cancelled"
#: written, but short of tau (a tile never reached it, or the assembly used a lower threshold):
#: not "ok", and the image's sidecar says below_tau
STATUS_BELOW_TAU = "below-tau"
#: The columns of ``summary.csv`` (a row per image): beside the PSNR, the fidelity measures of the
#: image's report and the bars it breaks (``dippas_core.fidelity``).
SUMMARY_FIELDS = (
    "output",
    "source",
    "status",
    "psnr",
    *FIDELITY_COLUMNS,
    "ncc_before",
    "ncc_after",
    "seconds",
    "reason",
)

#: A per-image job: ``job(photo, fingerprint, config) -> obj with .image, .report``.
Job = Callable[..., Any]


@dataclass(frozen=True)
class BatchSettings:
    """How a batch treats its inputs and names its outputs (everything but the anonymizer's config).

    Parameters
    ----------
    max_pixels : int
        Images with more pixels (after ``crop``) are refused with a clear reason rather than risking
        a worker running out of memory.  Default 16 MP (a 4896×3264 photo fits).
    min_size : int
        Images whose shorter side is below this are refused (one assembly block, 64 px, by default).
    crop : int or (int, int) or None
        Centre-crop every photo (and the fingerprint, at the same place) to this size first.
    keep_names : bool
        Name outputs after the sanitised source stem instead of an opaque ``anon-<hex>`` name.
    output_format : {"png", "tiff"}
        Lossless output format (8-bit; 16-bit for 16-bit photos).
    torch_threads : int or None
        Threads each inversion may use (the worker's share of the machine); ``None`` leaves torch's
        setting alone.
    """

    max_pixels: int = 16_000_000
    min_size: int = 64
    crop: int | tuple[int, int] | None = None
    keep_names: bool = False
    output_format: str = "png"
    torch_threads: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.max_pixels, bool) or not isinstance(self.max_pixels, int | np.integer):
            raise InputError(f"max_pixels must be an integer, got {self.max_pixels!r}")
        if self.max_pixels < 1:
            raise InputError(f"max_pixels must be >= 1, got {self.max_pixels}")
        if isinstance(self.min_size, bool) or not isinstance(self.min_size, int | np.integer):
            raise InputError(f"min_size must be an integer, got {self.min_size!r}")
        if self.min_size < 1:
            raise InputError(f"min_size must be >= 1, got {self.min_size}")
        if self.crop is not None:
            sizes = (self.crop, self.crop) if np.isscalar(self.crop) else tuple(self.crop)
            if len(sizes) != 2 or any(
                isinstance(s, bool) or not isinstance(s, int | np.integer) or s < 1 for s in sizes
            ):
                raise InputError(
                    f"crop must be a positive int or (height, width), got {self.crop!r}"
                )
            object.__setattr__(self, "crop", (int(sizes[0]), int(sizes[1])))
        if self.output_format not in _OUTPUT_SUFFIXES:
            raise InputError(
                f"output_format must be one of {sorted(_OUTPUT_SUFFIXES)}, "
                f"got {self.output_format!r}"
            )
        if self.torch_threads is not None:
            from ..dip.device import usable_cpus

            most = max(usable_cpus(), os.cpu_count() or 1)
            if isinstance(self.torch_threads, bool) or not isinstance(
                self.torch_threads, int | np.integer
            ) or not 1 <= self.torch_threads <= most:
                raise InputError(f"torch_threads must be a whole number between 1 and {most} (the "
                                 f"cores), got {self.torch_threads!r}")

    @property
    def output_suffix(self) -> str:
        """File suffix of the anonymized images."""
        return _OUTPUT_SUFFIXES[self.output_format]


@dataclass(frozen=True)
class ImageTask:
    """One image of a batch, as shipped to a worker (plain strings: picklable and small)."""

    source: str
    output: str
    marker: str
    key: str
    source_name: str


@dataclass
class ImageRecord:
    """What happened to one image; a row of the summary table."""

    output: str
    source: str
    status: str
    reason: str = ""
    psnr: float | None = None
    ssim: float | None = None
    max_abs: float | None = None
    share_off: float | None = None
    colour_shift: float | None = None
    seam_ratio: float | None = None
    checkerboard: float | None = None
    #: the fidelity bars the image breaks (empty: all met; None: not measured)
    bars_failed: list[str] | None = None
    ncc_before: float | None = None
    ncc_after: float | None = None
    seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with the summary's columns."""
        return {name: getattr(self, name) for name in SUMMARY_FIELDS}


@dataclass
class BatchResult:
    """Every image's :class:`ImageRecord` plus the batch's totals."""

    records: list[ImageRecord]
    out_dir: Path
    wall_s: float
    n_workers: int | None = None
    summary_paths: tuple[Path, ...] = ()
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> list[ImageRecord]:
        """Records of the images that could not be anonymized."""
        return [r for r in self.records if r.status == STATUS_FAILED]

    @property
    def ok(self) -> bool:
        """True when every image is anonymized at tau (now or by an earlier run)."""
        return all(r.status in (STATUS_OK, STATUS_SKIPPED) for r in self.records)

    @property
    def below_tau(self) -> list[ImageRecord]:
        """Records of the images written short of tau."""
        return [r for r in self.records if r.status == STATUS_BELOW_TAU]
