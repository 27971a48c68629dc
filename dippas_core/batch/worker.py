"""One image of a batch, on a Dask worker: read, normalise, run the job, write, mark done."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..atomic import atomic_write_text
from ..errors import DippasError, InputError, ShapeMismatchError
from ..fidelity import MEASURES
from ..jsonio import jsonable
from ..report import short_of_tau
from .plan import finished_record, sha256_file
from .settings import (
    STATUS_BELOW_TAU,
    STATUS_FAILED,
    STATUS_OK,
    BatchSettings,
    ImageRecord,
    ImageTask,
    Job,
)

if TYPE_CHECKING:
    from ..fingerprint import Fingerprint

__all__ = ["anonymize_job", "prepare_photo", "process_image"]


def _refuse_oversized_file(path: str, settings: BatchSettings, name: str) -> None:
    """Refuse a photo over ``max_pixels`` from its header alone, before decoding all of it.

    Only without ``crop`` (a crop may bring a big photo under the limit); files whose header
    cannot be read are left to :func:`~dippas_core.io.read_image`, which names the problem.
    """
    from ..errors import ImageReadError
    from ..io import image_size

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
    from ..io import as_rgb, center_crop, to_float255

    arr = as_rgb(photo, name)
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


def _prepare_fingerprint(
    fingerprint: Fingerprint | None, photo: np.ndarray, settings: BatchSettings, name: str
) -> Fingerprint | None:
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


def _metric(report: dict, *paths: str) -> float | None:
    """The first of ``paths`` (dotted keys into ``report``) that holds a number."""
    for path in paths:
        node: Any = report
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, int | float | np.number) and not isinstance(node, bool):
            return float(node)
    return None


def _fidelity(report: dict) -> dict[str, Any]:
    """The summary's fidelity columns from the report's ``fidelity`` section (none: a custom job
    that measured none)."""
    section = report.get("fidelity")
    if not isinstance(section, dict):
        return {}
    values: dict[str, Any] = {name: _metric(section, name) for name in MEASURES}
    broken = section.get("bars_failed")
    values["bars_failed"] = [str(b) for b in broken] if isinstance(broken, list) else None
    return values


def anonymize_job(
    photo: np.ndarray, fingerprint: Fingerprint | None, config: Any, *, cancel=None
) -> Any:
    """The default per-image job: :func:`dippas_core.pipeline.anonymize`.

    On a GPU worker the inversion is pinned to that worker's GPU; ``config.dip.torch_threads``
    (when unset) is filled in from the worker's share of the CPU by :func:`process_image`.
    """
    from ..cluster import worker_gpu_device
    from ..pipeline import anonymize

    device = worker_gpu_device()
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
    """What an ``ok`` image did not reach: a lowered assembly tau, tiles short of the recording
    threshold.

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
            f"tile {short.get('tile')} never reached the recording threshold (best "
            f"{short.get('best_psnr'):.2f} dB): assembled from its best outputs"
        )
    return "; ".join(notes)


def _write(
    task: ImageTask, output: Path, image: np.ndarray, bit_depth: int, report: dict,
    record: ImageRecord, settings: BatchSettings,
) -> None:
    """The image, its published sidecar, its forensic record, and last the done-marker."""
    from ..io import write_image
    from ..report import AnonymizationReport, write_forensic_record

    write_image(output, image, bit_depth=bit_depth)
    # beside the image only the published part; the full report (camera, scores before)
    # goes to the batch's state folder, with the done-markers (a custom job's keys too)
    full = AnonymizationReport.from_dict(report).with_(output=output.name)
    write_forensic_record(
        full, Path(task.marker).parent.parent / "records" / f"{output.stem}.json"
    )
    atomic_write_text(
        output.with_suffix(".json"),
        json.dumps(
            {
                "output": output.name,
                # what the batch did before the pipeline (no source size: it names the camera)
                "batch": {"crop": settings.crop, "bit_depth": bit_depth},
                "report": full.sidecar(),
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
                "output_sha256": sha256_file(output),
                "record": record.to_dict(),
            },
            indent=2,
        ),
    )


def process_image(
    task: ImageTask,
    fingerprint: Fingerprint | None,
    config: Any,
    settings: BatchSettings,
    job: Job | None = None,
) -> ImageRecord:
    """Anonymize one image and write its output, report and done-marker (runs on a Dask worker).

    Idempotent: when the done-marker already matches ``task.key`` (Dask re-ran a task that had
    finished on a worker that then died), the recorded result is returned and nothing is computed
    or written.  Every error is caught and becomes a ``failed`` record naming the reason.
    """
    from ..io import read_image

    job = anonymize_job if job is None else job
    done = finished_record(task)
    if done is not None:
        return done
    output = Path(task.output)
    start = time.perf_counter()
    record = ImageRecord(output=output.name, source=task.source_name, status=STATUS_FAILED)
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
        report = jsonable(dict(getattr(result, "report", None) or {}), strict=True, arrays=False)
        record.psnr = _metric(report, "psnr", "psnr_db", "metrics.psnr")
        for name, value in _fidelity(report).items():
            setattr(record, name, value)
        record.ncc_before = _metric(report, "ncc_before", "ncc.before", "before.ncc")
        record.ncc_after = _metric(report, "ncc_after", "ncc.after", "after.ncc")
        record.seconds = round(time.perf_counter() - start, 3)
        # an image short of tau is written, but never called "ok" (its sidecar says below_tau)
        record.status = STATUS_BELOW_TAU if short_of_tau(report) else STATUS_OK
        record.reason = _quality_notes(report)
        _write(task, output, image, bit_depth, report, record, settings)
    except DippasError as exc:
        record.status, record.reason = STATUS_FAILED, str(exc)
    except MemoryError:
        record.status, record.reason = STATUS_FAILED, "out of memory while processing this image"
    except Exception as exc:  # noqa: BLE001 - one image's bug must not stop the batch
        record.status, record.reason = STATUS_FAILED, f"{type(exc).__name__}: {exc}"
    if record.seconds is None:
        record.seconds = round(time.perf_counter() - start, 3)
    # the summary names sources by file name only, never by their folder
    record.reason = record.reason.replace(task.source, task.source_name)
    return record

