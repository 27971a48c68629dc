"""Anonymize a whole folder of photographs on a Dask cluster (a local one by default).

The driver (:func:`run_batch`) lists the images, decides which are already done, submits one task
per remaining image and collects the results as they finish.  Each task (:func:`process_image`)
runs on a worker: it reads the photo, normalises it (gray → RGB, 16-bit → 0..255 float, size
limits), runs the per-image *job* (:func:`anonymize_job` = the DIPPAS pipeline by default), then
writes

1. the anonymized image (atomic, no metadata: :func:`dippas_core.io.write_image`),
2. its JSON report beside it (atomic),
3. last, a *done-marker* under ``OUT_DIR/.dippas-batch/done/`` (atomic) holding a key that hashes
   the input bytes, the fingerprint and every parameter.

Because the marker is written after the output, a batch killed at any moment restarts where it
stopped, and a task that Dask re-runs (its worker died after the task finished but before the
result reached the driver) finds the marker and returns the recorded result instead of computing
again.  Changing a parameter changes the key, so the image is redone.

Failures are per image: a file that cannot be read, an image of the wrong size, a job that raises,
or a worker that dies repeatedly on one image cost that image only; the record says why.

Output names never carry the source directory.  By default they are ``anon-<12 hex>`` where the
hex is an HMAC of the source file name with a random key kept in ``OUT_DIR/.dippas-batch/salt``
(stable across restarts, unlinkable to the source name without the operator's ledger);
``keep_names=True`` uses the sanitised source stem instead.  ``summary.csv``/``summary.json`` in
``OUT_DIR`` are the operator's ledger: they map outputs to source *file names* (never folders).
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import hashlib
import hmac
import io as _io
import json
import math
import os
import re
import secrets
import sys
import time
import unicodedata
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._atomic import atomic_write_text
from .dip.device import usable_cpus
from .errors import DippasError, InputError, ShapeMismatchError
from .io import IMAGE_SUFFIXES, find_images

__all__ = [
    "BatchResult",
    "BatchSettings",
    "IMAGE_SUFFIXES",
    "ImageRecord",
    "ImageTask",
    "anonymize_job",
    "find_images",
    "format_table",
    "local_cluster",
    "output_names",
    "plan_batch",
    "prepare_photo",
    "process_image",
    "run_batch",
    "sanitise_stem",
    "write_summary",
]

#: File suffixes (compared case-insensitively) that a batch picks up.
#: Folder inside ``OUT_DIR`` holding the batch's bookkeeping (salt, done-markers).
STATE_DIR = ".dippas-batch"
_OUTPUT_SUFFIXES = {"png": ".png", "tiff": ".tif", "tif": ".tif"}
_STATUS_OK, _STATUS_SKIPPED = "ok", "skipped"
_STATUS_FAILED, _STATUS_CANCELLED = "failed", "cancelled"
_SUMMARY_FIELDS = (
    "output",
    "source",
    "status",
    "psnr",
    "ncc_before",
    "ncc_after",
    "seconds",
    "reason",
)

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
        if self.torch_threads is not None and int(self.torch_threads) < 1:
            raise InputError(f"torch_threads must be >= 1, got {self.torch_threads}")

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
    ncc_before: float | None = None
    ncc_after: float | None = None
    seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with the summary's columns."""
        return {name: getattr(self, name) for name in _SUMMARY_FIELDS}


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
        return [r for r in self.records if r.status == _STATUS_FAILED]

    @property
    def ok(self) -> bool:
        """True when every image is anonymized (now or by an earlier run)."""
        return all(r.status in (_STATUS_OK, _STATUS_SKIPPED) for r in self.records)


# ----------------------------------------------------------------------------------------------
# planning (driver side)


def sanitise_stem(stem: str, *, max_length: int = 80) -> str:
    """A file-name-safe version of ``stem``: ASCII letters, digits, ``_`` and ``-`` only.

    Separators, dots and anything else become ``_``, so no result can climb out of a folder
    (``..``, ``/``, ``\\``, drive letters) or hide itself (leading dot).

    Examples
    --------
    >>> sanitise_stem("../../etc/passwd")
    'etc_passwd'
    >>> sanitise_stem("Photo été 01")
    'Photo_ete_01'
    """
    ascii_stem = unicodedata.normalize("NFKD", str(stem)).encode("ascii", "ignore").decode("ascii")
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", ascii_stem).strip("_-")
    return safe[:max_length].rstrip("_-") or "image"


def _salt(out_dir: Path) -> bytes:
    """The batch's random naming key, created once per output folder."""
    path = out_dir / STATE_DIR / "salt"
    if not path.exists():
        atomic_write_text(path, secrets.token_hex(32))
    return bytes.fromhex(path.read_text().strip())


_RESERVED_STEMS = {"summary"}


def output_names(
    sources: Sequence[Path], *, keep_names: bool, salt: bytes, suffix: str = ".png"
) -> list[str]:
    """Output file names for ``sources``: unique, stable, free of any directory part.

    ``keep_names=False``: ``anon-<HMAC(salt, file name)[:12]>``; ``True``: the sanitised stem, with
    the source suffix (then a short HMAC) appended where two sources would collide
    (``a.jpg``/``a.png``, or names that differ only in case).
    """

    def tag(p: Path, n: int) -> str:
        return hmac.new(salt, p.name.encode("utf-8", "surrogateescape"), "sha256").hexdigest()[:n]

    if not keep_names:
        stems = [f"anon-{tag(p, 12)}" for p in sources]
    else:
        stems = [sanitise_stem(p.stem) for p in sources]
        folded = [s.lower() for s in stems]
        stems = [
            f"{s}_{sanitise_stem(p.suffix)}" if folded.count(s.lower()) > 1 else s
            for s, p in zip(stems, sources, strict=True)
        ]
    # the batch's own files (summary.csv/.json) must never share a stem with an image's report
    stems = [
        f"{s}-{tag(p, 8)}" if s.lower() in _RESERVED_STEMS else s
        for s, p in zip(stems, sources, strict=True)
    ]
    seen: dict[str, int] = {}
    for s in stems:
        seen[s.lower()] = seen.get(s.lower(), 0) + 1
    names = [
        f"{s}-{tag(p, 8)}" if seen[s.lower()] > 1 else s
        for s, p in zip(stems, sources, strict=True)
    ]
    if len({n.lower() for n in names}) != len(names):  # pragma: no cover - needs an HMAC collision
        raise InputError("could not give every image a distinct output name")
    return [n + suffix for n in names]


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _describe(obj: Any) -> Any:
    """A JSON-able, deterministic description of a config object (for the params hash)."""
    if hasattr(obj, "to_dict"):
        return _describe(obj.to_dict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            "__type__": type(obj).__qualname__,
            **{f.name: _describe(getattr(obj, f.name)) for f in dataclasses.fields(obj)},
        }
    if isinstance(obj, dict):
        return {str(k): _describe(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, list | tuple):
        return [_describe(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    return repr(obj)


def _job_name(job: Job) -> str:
    return f"{getattr(job, '__module__', '?')}.{getattr(job, '__qualname__', repr(job))}"


def plan_batch(
    in_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    fingerprint_sha: str | None,
    config: Any,
    settings: BatchSettings,
    job: Job,
) -> list[ImageTask]:
    """One :class:`ImageTask` per image of ``in_dir``, with its output name and params key.

    Raises
    ------
    InputError
        ``in_dir`` missing or empty of images, ``out_dir`` is the input folder or a file.
    """
    from . import __version__

    in_path, out_path = Path(in_dir), Path(out_dir)
    sources = find_images(in_path)
    if not sources:
        raise InputError(
            f"no images ({', '.join(IMAGE_SUFFIXES)}) in input folder {str(in_path)!r}"
        )
    if out_path.exists() and not out_path.is_dir():
        raise InputError(f"output {str(out_path)!r} exists and is not a folder")
    if out_path.resolve() == in_path.resolve():
        raise InputError(
            "the output folder is the input folder; choose another one so inputs stay untouched"
        )
    (out_path / STATE_DIR / "done").mkdir(parents=True, exist_ok=True)
    names = output_names(
        sources,
        keep_names=settings.keep_names,
        salt=_salt(out_path),
        suffix=settings.output_suffix,
    )
    params = json.dumps(
        {
            "fingerprint": fingerprint_sha or "blind",
            "config": _describe(config),
            "crop": settings.crop,
            "format": settings.output_format,
            "job": _job_name(job),
            "version": __version__,
        },
        sort_keys=True,
    )
    tasks = []
    for src, name in zip(sources, names, strict=True):
        try:
            content = _sha256_file(src)
        except OSError:
            # unreadable now (permissions, removed since listing): its task fails with the
            # reader's own message and costs only this image
            content = f"unreadable {src.name}"
        key = hashlib.sha256(f"{content}\n{params}".encode()).hexdigest()
        tasks.append(
            ImageTask(
                source=str(src.resolve()),
                output=str((out_path / name).resolve()),
                marker=str((out_path / STATE_DIR / "done" / f"{name}.json").resolve()),
                key=key,
                source_name=src.name,
            )
        )
    return tasks


def _finished_record(task: ImageTask) -> ImageRecord | None:
    """The recorded result of ``task`` if its output is complete for the same key, else None."""
    marker, output = Path(task.marker), Path(task.output)
    try:
        done = json.loads(marker.read_text())
        if not isinstance(done, dict) or not isinstance(done.get("record", {}), dict):
            return None  # a damaged marker: redo the image
        if done.get("key") != task.key or not output.is_file():
            return None
        if done.get("output_sha256") != _sha256_file(output):
            return None  # the output was replaced or damaged since: redo it
    except (OSError, ValueError):
        return None
    fields = {k: done.get("record", {}).get(k) for k in ("psnr", "ncc_before", "ncc_after")}
    return ImageRecord(
        output=output.name,
        source=task.source_name,
        status=_STATUS_SKIPPED,
        reason="done earlier with the same input and parameters",
        seconds=done.get("record", {}).get("seconds"),
        **fields,
    )


def _remove_stale_temporaries(tasks: Sequence[ImageTask]) -> None:
    """Delete temporary files a killed run left beside the outputs (ours only, by name)."""
    for task in tasks:
        for path in (Path(task.output), Path(task.output).with_suffix(".json"), Path(task.marker)):
            for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.part*"):
                tmp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------
# one image (worker side)


def _refuse_oversized_file(path: str, settings: BatchSettings, name: str) -> None:
    """Refuse a photo over ``max_pixels`` from its header alone, before decoding all of it.

    Only without ``crop`` (a crop may bring a big photo under the limit); files whose header
    cannot be read are left to :func:`~dippas_core.io.read_image`, which names the problem.
    """
    from .errors import ImageReadError
    from .io import image_size

    if settings.crop is not None:
        return
    try:
        # the declared size, whatever it is: a decompression bomb's header must not be
        # swallowed here (read_image would refuse it too, but only by its own, larger limit)
        h, w = image_size(path)
    except ImageReadError:  # unreadable: read_image reports it properly
        return
    if h * w > settings.max_pixels:
        raise InputError(
            f"{name} is {h}×{w} = {h * w / 1e6:.1f} MP, over the batch limit of "
            f"{settings.max_pixels / 1e6:.1f} MP; crop it (--crop) or raise --max-pixels"
        )


def prepare_photo(photo: np.ndarray, settings: BatchSettings, *, name: str = "image") -> np.ndarray:
    """Bring a photo as read to what the anonymizer takes: H×W×3, uint8 or float32 0..255.

    * gray (H×W, or H×W×1) → three equal channels; gray+alpha (H×W×2) → its gray plane;
      RGBA → RGB (alpha dropped);
    * 16-bit → float32 in 0..255 at full precision (:func:`process_image` writes 16-bit output);
    * ``settings.crop`` → centre crop; then the size limits ``min_size`` and ``max_pixels``.

    Raises
    ------
    InputError
        The photo has an unusable shape or dtype, or breaks a size limit (the message says which).
    """
    from .io import center_crop, to_float255

    arr = np.asarray(photo)
    if arr.ndim == 3 and arr.shape[2] in (1, 2):
        arr = arr[..., 0]
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[..., :3]
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise InputError(f"{name}: unsupported image shape {arr.shape} (need gray or RGB)")
    if arr.dtype != np.uint8:
        if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.number):
            raise InputError(f"{name}: unsupported pixel type {arr.dtype}")
        arr = to_float255(arr)
    if settings.crop is not None:
        ch, cw = settings.crop
        if ch > arr.shape[0] or cw > arr.shape[1]:
            raise InputError(
                f"{name} is {arr.shape[0]}×{arr.shape[1]}, smaller than the crop {ch}×{cw}"
            )
        arr = center_crop(arr, (ch, cw))
    h, w = arr.shape[:2]
    if min(h, w) < settings.min_size:
        raise InputError(
            f"{name} is {h}×{w}, smaller than the minimum {settings.min_size}×{settings.min_size} "
            "(one assembly block)"
        )
    if h * w > settings.max_pixels:
        raise InputError(
            f"{name} is {h}×{w} = {h * w / 1e6:.1f} MP, over the batch limit of "
            f"{settings.max_pixels / 1e6:.1f} MP; crop it (--crop) or raise --max-pixels"
        )
    return np.ascontiguousarray(arr)


def _prepare_fingerprint(fingerprint: Any, photo: np.ndarray, settings: BatchSettings, name: str):
    """Crop the fingerprint like the photo and check that their sizes agree."""
    if fingerprint is None:
        return None
    fp = fingerprint
    if settings.crop is not None and tuple(fp.shape) != tuple(photo.shape[:2]):
        ch, cw = settings.crop
        if fp.shape[0] < ch or fp.shape[1] < cw:
            raise ShapeMismatchError(
                f"fingerprint is {fp.shape[0]}×{fp.shape[1]}, smaller than the crop {ch}×{cw}"
            )
        fp = fp.center_crop((ch, cw))
    if tuple(fp.shape) != tuple(photo.shape[:2]):
        raise ShapeMismatchError(
            f"{name} is {photo.shape[0]}×{photo.shape[1]} but the fingerprint is "
            f"{fp.shape[0]}×{fp.shape[1]}; use photos from the fingerprint's camera at full size "
            "(or --crop the same size from both)"
        )
    return fp


def _json_safe(obj: Any) -> Any:
    """``obj`` with arrays dropped and NumPy scalars made plain, for the per-image report."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items() if not isinstance(v, np.ndarray)}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj if not isinstance(v, np.ndarray)]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    return repr(obj)


def _metric(report: dict, *paths: str) -> float | None:
    """The first of ``paths`` (dotted keys into ``report``) that holds a number."""
    for path in paths:
        node: Any = report
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, int | float | np.number) and not isinstance(node, bool):
            return float(node)
    return None


def _worker_gpu_device() -> str | None:
    """``cuda:<i>`` for a Dask worker that advertises a GPU resource, else None.

    Workers of :func:`local_cluster` are named 0..n-1 (one per GPU); a worker elsewhere that owns
    one GPU (``CUDA_VISIBLE_DEVICES`` set per worker, as dask-cuda does) gets ``cuda:0``.
    """
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None
    if not worker.state.total_resources.get("GPU"):
        return None
    import torch

    count = torch.cuda.device_count()
    if count == 0:
        return None
    index = worker.name if isinstance(worker.name, int) else 0
    return f"cuda:{index % count}"


def anonymize_job(photo: np.ndarray, fingerprint: Any, config: Any, *, cancel=None) -> Any:
    """The default per-image job: :func:`dippas_core.pipeline.anonymize`.

    On a GPU worker the inversion is pinned to that worker's GPU; ``config.dip.torch_threads``
    (when unset) is filled in from the worker's share of the CPU by :func:`process_image`.
    """
    from .pipeline import anonymize

    device = _worker_gpu_device()
    dip = getattr(config, "dip", None)
    if device is not None and dip is not None and getattr(dip, "device", None) == "auto":
        config = dataclasses.replace(config, dip=dataclasses.replace(dip, device=device))
    return anonymize(photo, fingerprint, config, cancel=cancel)


def _with_torch_threads(config: Any, threads: int | None) -> Any:
    dip = getattr(config, "dip", None)
    if threads is None or dip is None or getattr(dip, "torch_threads", "n/a") is not None:
        return config
    return dataclasses.replace(config, dip=dataclasses.replace(dip, torch_threads=threads))


def _quality_notes(report: dict[str, Any]) -> str:
    """What an ``ok`` image did not reach: a lowered assembly tau, tiles short of tau_psnr.

    On a Dask worker a warning would reach nobody: the summary's ``reason`` column says it.
    """
    notes = []
    asm = report.get("assembly") if isinstance(report.get("assembly"), dict) else {}
    used, tau = asm.get("psnr_threshold"), asm.get("tau")
    if isinstance(used, int | float) and isinstance(tau, int | float) and used < tau:
        notes.append(
            f"no snapshot reached tau {tau:g} dB: assembled from the best, at {used:.2f} dB"
        )
    for short in report.get("below_tau") or []:
        notes.append(
            f"tile {short.get('tile')} never reached tau_psnr (best {short.get('best_psnr'):.2f} "
            "dB): assembled from its best outputs"
        )
    return "; ".join(notes)


def process_image(
    task: ImageTask,
    fingerprint: Any,
    config: Any,
    settings: BatchSettings,
    job: Job | None = None,
) -> ImageRecord:
    """Anonymize one image and write its output, report and done-marker (runs on a Dask worker).

    Idempotent: when the done-marker already matches ``task.key`` (Dask re-ran a task that had
    finished on a worker that then died), the recorded result is returned and nothing is computed
    or written.  Every error is caught and becomes a ``failed`` record naming the reason.
    """
    from .io import read_image, write_image

    job = anonymize_job if job is None else job
    done = _finished_record(task)
    if done is not None:
        return done
    output = Path(task.output)
    start = time.perf_counter()
    record = ImageRecord(output=output.name, source=task.source_name, status=_STATUS_FAILED)
    try:
        _refuse_oversized_file(task.source, settings, task.source_name)
        raw = read_image(task.source)
        # 16-bit in, 16-bit out: the photo goes in as 0..255 float at full precision
        bit_depth = 16 if raw.dtype == np.uint16 else 8
        photo = prepare_photo(raw, settings, name=task.source_name)
        del raw
        fp = _prepare_fingerprint(fingerprint, photo, settings, task.source_name)
        result = job(photo, fp, _with_torch_threads(config, settings.torch_threads))
        image = np.asarray(result.image)
        if image.shape != photo.shape or not (
            image.dtype == np.uint8 or np.issubdtype(image.dtype, np.floating)
        ):
            raise DippasError(
                f"the job returned a {image.dtype} image of shape {image.shape}, "
                f"expected uint8 or float {photo.shape}"
            )
        report = _json_safe(dict(getattr(result, "report", None) or {}))
        record.psnr = _metric(report, "psnr", "psnr_db", "metrics.psnr")
        record.ncc_before = _metric(report, "ncc_before", "ncc.before", "before.ncc")
        record.ncc_after = _metric(report, "ncc_after", "ncc.after", "after.ncc")
        record.seconds = round(time.perf_counter() - start, 3)
        record.status = _STATUS_OK
        record.reason = _quality_notes(report)
        write_image(output, image, bit_depth=bit_depth)
        from .report import published_sidecar, write_forensic_record

        # beside the image only the published part; the full report (camera, scores before)
        # goes to the batch's state folder, with the done-markers
        write_forensic_record(
            {**report, "output": output.name}, Path(task.marker).parent.parent / "records"
            / f"{output.stem}.json",
        )
        atomic_write_text(
            output.with_suffix(".json"),
            json.dumps(
                {
                    "output": output.name,
                    # what the batch did before the pipeline (no source size: it names the camera)
                    "batch": {"crop": settings.crop, "bit_depth": bit_depth},
                    "report": published_sidecar(report),
                },
                indent=2,
                allow_nan=False,
            ),
        )
        # the marker goes last: its presence means output and report are complete
        atomic_write_text(
            Path(task.marker),
            json.dumps(
                {
                    "key": task.key,
                    "output": output.name,
                    "output_sha256": _sha256_file(output),
                    "record": record.to_dict(),
                },
                indent=2,
            ),
        )
    except DippasError as exc:
        record.status, record.reason = _STATUS_FAILED, str(exc)
    except MemoryError:
        record.status, record.reason = _STATUS_FAILED, "out of memory while processing this image"
    except Exception as exc:  # noqa: BLE001 - one image's bug must not stop the batch
        record.status, record.reason = _STATUS_FAILED, f"{type(exc).__name__}: {exc}"
    if record.seconds is None:
        record.seconds = round(time.perf_counter() - start, 3)
    # the summary names sources by file name only, never by their folder
    record.reason = record.reason.replace(task.source, task.source_name)
    return record


# ----------------------------------------------------------------------------------------------
# the cluster and the driver


def _cuda_device_count() -> int:
    """CUDA devices seen by this process (0 when torch is missing or CPU-only)."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def local_cluster(n_workers: int | None = None, *, gpus: int | None = None, **kwargs: Any):
    """A :class:`distributed.LocalCluster` sized to this machine for DIPPAS inversions.

    Worker processes (one thread each, one task at a time, so a worker that crashes takes only
    the image it was running with it).  With
    CUDA devices: one worker per GPU, each advertising the resource ``GPU=1`` (tasks ask for it,
    so at most one inversion runs per GPU).  Without: one worker per CPU core by default.  Each
    worker's native thread pools (Numba, OpenMP, BLAS) are capped to its share of the cores.
    Extra keyword arguments go to :class:`~distributed.LocalCluster`.

    Returns
    -------
    cluster : distributed.LocalCluster
    torch_threads : int
        Each worker's share of the CPU cores, for ``torch.set_num_threads``.
    """
    import logging

    import dask
    from distributed import LocalCluster

    gpus = _cuda_device_count() if gpus is None else int(gpus)
    cpus = usable_cpus()
    if n_workers is None:
        n_workers = gpus if gpus else cpus
    n_workers = int(n_workers)
    if n_workers < 1:
        raise InputError(f"the number of workers must be >= 1, got {n_workers}")
    threads = max(1, cpus // n_workers)
    options: dict[str, Any] = {
        "n_workers": n_workers,
        "threads_per_worker": 1,
        "processes": True,
        "scheduler_kwargs": {"dashboard": False},
        "silence_logs": logging.ERROR,
    }
    if gpus:
        options["resources"] = {"GPU": 1}
    options.update(kwargs)
    if options["processes"]:
        # native thread pools (Numba kernels, BLAS) get the worker's share too, not every core each
        options.setdefault(
            "env",
            {
                name: str(threads)
                for name in (
                    "NUMBA_NUM_THREADS",
                    "OMP_NUM_THREADS",
                    "MKL_NUM_THREADS",
                    "OPENBLAS_NUM_THREADS",
                )
            },
        )
    # one task per worker at a time: a worker that dies takes down only the image it was running
    with dask.config.set({"distributed.scheduler.worker-saturation": 1.0}):
        cluster = LocalCluster(**options)
    return cluster, threads


#: How long to wait for a ``--scheduler`` to answer.
SCHEDULER_TIMEOUT_S = 20


def _connect(address: str):
    """A client of the scheduler at ``address``, or a DippasError that says why not."""
    from distributed import Client

    try:
        return Client(address, timeout=f"{SCHEDULER_TIMEOUT_S}s")
    except ValueError as exc:
        raise InputError(f"--scheduler {address!r} is not a Dask scheduler address: {exc}") from exc
    except (OSError, TimeoutError) as exc:
        raise DippasError(f"cannot reach the Dask scheduler at {address}: {exc}") from exc


def _cluster_has_gpus(client: Any) -> bool:
    workers = client.scheduler_info().get("workers", {})
    return any(w.get("resources", {}).get("GPU") for w in workers.values())


def _load_fingerprint(fingerprint: Any):
    """``(Fingerprint or None, sha256)``: a path is loaded (errors name the file)."""
    if fingerprint is None:
        return None, None
    if isinstance(fingerprint, str | os.PathLike):
        from .fingerprint import Fingerprint

        fingerprint = Fingerprint.load(fingerprint)
    K = np.asarray(fingerprint.K)
    if not np.isfinite(K).all():
        raise InputError("the fingerprint contains NaN or infinite values")
    digest = hashlib.sha256(f"{K.shape}{K.dtype}".encode() + K.tobytes()).hexdigest()
    return fingerprint, digest


def _hold(value: Any) -> Any:
    """Identity task: keeps a value on the cluster and recomputable from the graph if lost."""
    return value


def _failure_reason(exc: BaseException) -> str:
    from distributed import KilledWorker

    if isinstance(exc, KilledWorker):
        return (
            "the worker processing this image died repeatedly (crashed, killed or out of memory); "
            "see the worker logs"
        )
    return f"{type(exc).__name__}: {exc}"


def _print_progress(done: int, total: int, record: ImageRecord, counts: dict[str, int]) -> None:
    detail = (f"psnr {record.psnr:.2f} dB" if record.psnr is not None else "") + (
        f"  ncc {record.ncc_before:.4f} -> {record.ncc_after:.4f}"
        if record.ncc_before is not None and record.ncc_after is not None
        else ""
    )
    if record.status == _STATUS_FAILED:
        detail = record.reason
    tally = ", ".join(f"{k} {v}" for k, v in counts.items() if v)
    print(
        f"[{done}/{total}] {record.status:<7} {record.output}  {detail}  "
        f"({record.seconds or 0:.1f} s)  [{tally}]",
        file=sys.stderr,
        flush=True,
    )


def write_summary(out_dir: str | os.PathLike, records: Sequence[ImageRecord]) -> tuple[Path, Path]:
    """Write ``summary.csv`` and ``summary.json`` (a row per image) atomically into ``out_dir``."""
    out = Path(out_dir)
    rows = [r.to_dict() for r in records]
    buffer = _io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(_SUMMARY_FIELDS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    csv_path, json_path = out / "summary.csv", out / "summary.json"
    atomic_write_text(csv_path, buffer.getvalue())
    atomic_write_text(json_path, json.dumps(rows, indent=2))
    return csv_path, json_path


def format_table(records: Sequence[ImageRecord]) -> str:
    """The summary as an aligned text table."""

    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    header = ("output", "status", "PSNR dB", "NCC before", "NCC after", "time s", "reason")
    rows = [
        (
            r.output,
            r.status,
            num(r.psnr, ".2f"),
            num(r.ncc_before, ".4f"),
            num(r.ncc_after, ".4f"),
            num(r.seconds, ".1f"),
            r.reason,
        )
        for r in records
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]
    return "\n".join(lines)


def run_batch(
    in_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    fingerprint: Any = None,
    config: Any = None,
    settings: BatchSettings | None = None,
    job: Job | None = None,
    client: Any = None,
    n_workers: int | None = None,
    progress: Callable[[int, int, ImageRecord, dict[str, int]], None] | None = _print_progress,
    cancel: Any = None,
) -> BatchResult:
    """Anonymize every image of ``in_dir`` into ``out_dir`` on a Dask cluster.

    Parameters
    ----------
    in_dir, out_dir : path
        Input folder (read only, never modified) and output folder (created).
    fingerprint : path, Fingerprint or None
        The camera fingerprint (PRNU-aware mode); None for blind mode.
    config : object
        The job's configuration (default job: a :class:`dippas_core.pipeline.AnonymizeConfig`;
        None → ``AnonymizeConfig()``).  It is part of every image's params key.
    settings : BatchSettings
        Size limits, cropping and output naming.
    job : callable ``job(photo, fingerprint, config) -> obj with .image, .report``
        The per-image work; :func:`anonymize_job` by default.  Must be importable (or
        cloudpickle-able) on the workers.
    client : distributed.Client, str or None
        An existing client, a scheduler address (``tcp://host:8786``), or None to start a
        :func:`local_cluster` with ``n_workers`` workers for the duration of the batch.
    progress : callable or None
        Called after every finished image with ``(done, total, record, counts)``; the default
        prints one line to stderr.
    cancel : CancelToken or None
        Stops submitting and cancels pending images; finished ones stay done.

    Returns
    -------
    BatchResult
        Records in input order; ``summary.csv``/``summary.json`` are written to ``out_dir`` too.
    """

    start = time.perf_counter()
    settings = settings or BatchSettings()
    job = anonymize_job if job is None else job
    if config is None and job is anonymize_job:
        from .pipeline import AnonymizeConfig

        config = AnonymizeConfig()
    fp, fp_sha = _load_fingerprint(fingerprint)
    # a scheduler address is checked before anything is written
    connected = _connect(client) if isinstance(client, str) else None
    try:
        tasks = plan_batch(
            in_dir, out_dir, fingerprint_sha=fp_sha, config=config, settings=settings, job=job
        )
        _remove_stale_temporaries(tasks)
        records: dict[str, ImageRecord] = {}
        todo = []
        for task in tasks:
            done = _finished_record(task)
            if done is None:
                todo.append(task)
            else:
                records[task.output] = done
        counts = {_STATUS_OK: 0, _STATUS_SKIPPED: len(records), _STATUS_FAILED: 0}
        if progress is not None and records:
            print(
                f"{len(records)} of {len(tasks)} images already done; {len(todo)} to go",
                file=sys.stderr,
                flush=True,
            )
        workers_used = None
        try:
            if todo:
                workers_used = _run_tasks(
                    connected or client,
                    todo,
                    records,
                    counts,
                    total=len(tasks),
                    fingerprint=fp,
                    config=config,
                    settings=settings,
                    job=job,
                    n_workers=n_workers,
                    progress=progress,
                    cancel=cancel,
                )
        finally:  # interrupted or not: the summary tells what is done
            ordered = [records[t.output] for t in tasks if t.output in records]
            summary_paths = write_summary(out_dir, ordered)
    finally:
        if connected is not None:
            connected.close()
    return BatchResult(
        records=ordered,
        out_dir=Path(out_dir),
        wall_s=time.perf_counter() - start,
        n_workers=workers_used,
        summary_paths=tuple(summary_paths),
        counts=counts,
    )


def _run_tasks(
    client: Any,
    todo: list[ImageTask],
    records: dict[str, ImageRecord],
    counts: dict[str, int],
    *,
    total: int,
    fingerprint: Any,
    config: Any,
    settings: BatchSettings,
    job: Job,
    n_workers: int | None,
    progress: Callable[..., None] | None,
    cancel: Any,
) -> int:
    """Submit ``todo``, fill ``records``/``counts`` as images finish; return the worker count.

    ``client=None`` starts a :func:`local_cluster` for the duration of the call.
    """
    from distributed import Client, as_completed

    cluster = None
    if client is None:
        cluster, threads = local_cluster(min(n_workers or _default_workers(), len(todo)))
        if settings.torch_threads is None:
            settings = dataclasses.replace(settings, torch_threads=threads)
        client = Client(cluster)
    futures: dict[Any, ImageTask] = {}
    try:
        n_workers_seen = len(client.scheduler_info().get("workers", {}))
        submit_options = {"resources": {"GPU": 1}} if _cluster_has_gpus(client) else {}
        fp_future = None
        if fingerprint is not None:
            # embedded once in the graph (not scattered): if the worker holding it dies, the
            # scheduler can recompute it, which scattered data cannot survive
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*[Ll]arge object")
                fp_future = client.submit(_hold, fingerprint, pure=False)
        run_id = secrets.token_hex(6)  # fresh keys: never collide with a cancelled run's
        for task in todo:
            fut = client.submit(
                process_image,
                task,
                fp_future,
                config,
                settings,
                job,
                key=f"dippas-{Path(task.output).name}-{run_id}",
                pure=False,
                **submit_options,
            )
            futures[fut] = task
        finished = total - len(todo)
        for fut in as_completed(list(futures)):
            task = futures.pop(fut)
            record = _record_of(fut, task)
            fut.release()
            records[task.output] = record
            counts[record.status] = counts.get(record.status, 0) + 1
            finished += 1
            if progress is not None:
                progress(finished, total, record, counts)
            if cancel is not None and cancel.cancelled and futures:
                client.cancel(list(futures))
    except BaseException:
        if futures:
            client.cancel(list(futures))
        raise
    finally:
        if cluster is not None:
            client.close()
            cluster.close()
    return n_workers_seen


def _record_of(fut: Any, task: ImageTask) -> ImageRecord:
    """The record of a finished, failed or cancelled future."""
    name = Path(task.output).name
    if fut.status == "finished":
        record = fut.result()
        if record.status == _STATUS_SKIPPED:
            # not done when planned, so an attempt of this run finished it before its worker
            # died; Dask re-ran the task and the done-marker stopped a redo
            record.status = _STATUS_OK
            record.reason = "recovered from an attempt whose worker died afterwards"
        return record
    if fut.status == "cancelled":
        reason = "the batch was cancelled before this image finished"
        return ImageRecord(name, task.source_name, _STATUS_CANCELLED, reason=reason)
    # the summary names sources by file name only, never by their folder
    reason = _failure_reason(fut.exception()).replace(task.source, task.source_name)
    return ImageRecord(name, task.source_name, _STATUS_FAILED, reason=reason)


def _default_workers() -> int:
    gpus = _cuda_device_count()
    return gpus if gpus else usable_cpus()
