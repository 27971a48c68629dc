"""Planning a batch (driver side): output names, params keys, and what an earlier run finished."""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import hmac
import json
import os
import re
import secrets
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_text
from ..errors import InputError
from ..fidelity import COLUMNS as FIDELITY_COLUMNS
from ..io import IMAGE_SUFFIXES, find_images
from ..targets import same_file
from .settings import STATE_DIR, STATUS_SKIPPED, BatchSettings, ImageRecord, ImageTask, Job

__all__ = [
    "finished_record",
    "output_names",
    "plan_batch",
    "remove_stale_temporaries",
    "sanitise_stem",
    "sha256_file",
]


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


def sha256_file(path: Path) -> str:
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
    from .. import __version__

    in_path, out_path = Path(in_dir), Path(out_dir)
    sources = find_images(in_path)
    if not sources:
        raise InputError(
            f"no images ({', '.join(IMAGE_SUFFIXES)}) in input folder {str(in_path)!r}"
        )
    if out_path.exists() and not out_path.is_dir():
        raise InputError(f"output {str(out_path)!r} exists and is not a folder")
    if same_file(out_path, in_path):
        raise InputError(
            "the output folder is the input folder; choose another one so inputs stay untouched"
        )
    salt_path = out_path / STATE_DIR / "salt"
    salt = _salt(out_path) if salt_path.exists() else secrets.token_bytes(32)
    names = output_names(
        sources,
        keep_names=settings.keep_names,
        salt=salt,
        suffix=settings.output_suffix,
    )
    _check_outputs(out_path, sources, names)  # before anything is written into the folder
    (out_path / STATE_DIR / "done").mkdir(parents=True, exist_ok=True)
    if not salt_path.exists():
        atomic_write_text(salt_path, salt.hex())
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
            content = sha256_file(src)
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


def _check_outputs(out_path: Path, sources: Sequence[Path], names: Sequence[str]) -> None:
    """Every file the batch writes into ``out_path`` (each image, its sidecar, the summaries),
    checked before any work: never an input, never a file it did not write (an image with an
    earlier batch's done-marker or forensic record is replaced by a resume)."""
    from ..targets import check_targets

    done = out_path / STATE_DIR / "done"
    records = out_path / STATE_DIR / "records"
    outputs: dict[str, Path] = {}
    ours: set[Path] = set()
    for src, name in zip(sources, names, strict=True):
        image = out_path / name
        outputs[f"the output of {src.name}"] = image
        outputs[f"the sidecar of the output of {src.name}"] = image.with_suffix(".json")
        # an earlier batch wrote it: its done-marker, or the record written just before it
        if (done / f"{name}.json").is_file() or (records / f"{image.stem}.json").is_file():
            ours.update((image, image.with_suffix(".json")))
    for name in ("summary.csv", "summary.json"):
        outputs[name] = out_path / name
        if done.is_dir():  # a batch's folder: its summaries are rewritten every time
            ours.add(out_path / name)
    try:
        check_targets(outputs, {"IN_DIR": sources}, replaceable=lambda p: p in ours)
    except InputError as exc:
        raise InputError(f"{exc} (a batch never replaces a file it did not write: move it, or "
                         "choose another output folder)") from None


def finished_record(task: ImageTask) -> ImageRecord | None:
    """The recorded result of ``task`` if its output is complete for the same key, else None."""
    marker, output = Path(task.marker), Path(task.output)
    try:
        done = json.loads(marker.read_text())
        if not isinstance(done, dict) or not isinstance(done.get("record", {}), dict):
            return None  # a damaged marker: redo the image
        if done.get("key") != task.key or not output.is_file():
            return None
        if done.get("output_sha256") != sha256_file(output):
            return None  # the output was replaced or damaged since: redo it
    except (OSError, ValueError):
        return None
    fields = {k: done.get("record", {}).get(k)
              for k in ("psnr", *FIDELITY_COLUMNS, "ncc_before", "ncc_after")}
    return ImageRecord(
        output=output.name,
        source=task.source_name,
        status=STATUS_SKIPPED,
        reason="done earlier with the same input and parameters",
        seconds=done.get("record", {}).get("seconds"),
        **fields,
    )


def remove_stale_temporaries(tasks: Sequence[ImageTask]) -> None:
    """Delete temporary files a killed run left beside the outputs (ours only, by name)."""
    for task in tasks:
        for path in (Path(task.output), Path(task.output).with_suffix(".json"), Path(task.marker)):
            for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.part*"):
                tmp.unlink(missing_ok=True)

