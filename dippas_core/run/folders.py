"""Where runs live: recognising run folders and files, checking targets, temporary folders."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from ..errors import InputError
from ..jsonio import read_json
from ._lock import _busy_message, _RunLock
from .format import (
    CONFIG,
    FORMAT,
    MARKER,
    PHOTO_RUN_DIRS,
    PHOTO_RUN_FORMAT,
    PHOTO_RUN_META,
    RUN_FILES,
)

__all__ = [
    "TEMPORARY_PREFIX",
    "check_run_target",
    "check_writable_folder",
    "clean_stale_temporary_runs",
    "clear_run_files",
    "is_photo_run_folder",
    "is_run_file",
    "is_run_folder",
    "remove_run_folder",
    "run_owning",
    "temporary_run_folder",
]

#: Every name a run (one inversion's, or a whole photo's) owns in its folder.
_OWNED = RUN_FILES | {PHOTO_RUN_META}
#: A finished tile's record in a photo run's ``done/`` (``NNNN.npz``), or the temporary of one
#: that a kill left (``.NNNN.npz.x1y2.part.npz``).
_DONE_RECORD = re.compile(r"\d{4}\.npz|\.\d{4}\.npz\..*\.part.*")
#: A tile's run folder in a photo run's ``tiles/`` (``NNNN``).
_TILE_RUN = re.compile(r"\d{4}")


def is_run_folder(folder: str | os.PathLike) -> bool:
    """True for a folder made by :meth:`RunDirectory.create` or a whole-photo run (their marker,
    or an older run's ``config.json`` with ``format: dippas-run``)."""
    folder = Path(folder)
    if (folder / MARKER).is_file():
        return True
    try:
        config = read_json(folder / CONFIG)
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("format") == FORMAT


def is_photo_run_folder(folder: str | os.PathLike) -> bool:
    """True for a whole-photo run folder (its ``photo-run.json``, or its marker's format)."""
    folder = Path(folder)
    if (folder / PHOTO_RUN_META).is_file():
        return True
    try:
        marker = read_json(folder / MARKER)
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("format") == PHOTO_RUN_FORMAT


def _owned_name(name: str) -> bool:
    """One of a run's own file names, or the temporary of one (``.config.json.x1y2.part.json``)."""
    return name in _OWNED or any(
        name.startswith(f".{own}.") and ".part" in name for own in _OWNED
    )


def _where(path: str | os.PathLike) -> Path:
    """The absolute path a write to ``path`` lands on: its folder's symbolic links resolved, the
    name itself kept (an atomic write replaces a link, not what it points to)."""
    path = Path(os.path.abspath(path))
    return Path(os.path.realpath(path.parent)) / path.name


def run_owning(
    path: str | os.PathLike, new_runs: Iterable[str | os.PathLike | None] = ()
) -> Path | None:
    """The run folder ``path`` belongs to, if writing it would break a run; else None.

    That is one of a run's own files (or their temporaries) in a run folder, or anything inside
    a whole-photo run's ``tiles/`` or ``done/``.  ``new_runs``: run folders the command is about
    to create or fill, which may not exist yet (their names are reserved alike).
    """
    target = _where(path)
    news = {_where(r) for r in new_runs if r is not None}
    parent = target.parent
    if _owned_name(target.name) and (parent in news or is_run_folder(parent)):
        return parent
    for folder in target.parents:
        inside = target.relative_to(folder).parts
        if len(inside) > 1 and inside[0] in PHOTO_RUN_DIRS and (
            folder in news or is_photo_run_folder(folder)
        ):
            return folder
    return None


def is_run_file(path: str | os.PathLike) -> bool:
    """True when writing ``path`` would break a run (:func:`run_owning`): ``assemble RUN --out
    RUN/config.png`` would put its report over the run's ``config.json``, ``--out
    RUN/photo-run.png`` over a photo run's plan."""
    return run_owning(path) is not None


def clear_run_files(path: str | os.PathLike, *, keep: Iterable[str] = ()) -> None:
    """Delete, by name, every file a run (one inversion's or a whole photo's) wrote in ``path``.

    Only a run's own names go (:data:`RUN_FILES`, ``photo-run.json``, their temporaries), of a
    photo run's ``done/`` only the tiles' records (``NNNN.npz``) and of its ``tiles/`` only the
    tile runs' own files; a folder is removed only once empty, so a user's files anywhere in the
    run folder stay.  ``keep``: names to leave (the lock the caller holds).

    Raises
    ------
    InputError
        A tile run inside is being recorded by another process (nothing is deleted).
    """
    path = Path(path)
    keep = set(keep)
    tiles = path / "tiles"
    tile_runs = sorted(
        p for p in (tiles.iterdir() if tiles.is_dir() and not tiles.is_symlink() else ())
        if _TILE_RUN.fullmatch(p.name) and p.is_dir() and not p.is_symlink()
    )
    mine = [path] if _RunLock.NAME not in keep else []  # (a caller keeping the lock holds it)
    for run in [*mine, *tile_runs]:  # never delete a run another process is recording
        probe = _RunLock(run)
        if (run / _RunLock.NAME).exists() and not probe.acquire():
            raise InputError(_busy_message(run))
        probe.release()
    for run in tile_runs:
        _unlink_owned(run, set())
        _rmdir_if_empty(run)
    if tiles.is_dir() and not tiles.is_symlink():
        _rmdir_if_empty(tiles)
    done = path / "done"
    if done.is_dir() and not done.is_symlink():
        for entry in done.iterdir():
            if _DONE_RECORD.fullmatch(entry.name) and (entry.is_symlink() or entry.is_file()):
                entry.unlink()
        _rmdir_if_empty(done)
    _unlink_owned(path, keep)


def remove_run_folder(path: str | os.PathLike) -> None:
    """Delete a finished run's folder: its own files by name (:func:`clear_run_files`), then the
    folder if nothing else is in it (a user's files keep it)."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        clear_run_files(path)
        _rmdir_if_empty(path)


def _unlink_owned(folder: Path, keep: set[str]) -> None:
    # the marker last: a folder a kill leaves half-cleared is still recognised as a run's
    for entry in sorted(folder.iterdir(), key=lambda e: e.name == MARKER):
        if _owned_name(entry.name) and entry.name not in keep and (
            entry.is_symlink() or entry.is_file()
        ):
            entry.unlink()


def _rmdir_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty: a user's files are in it
        pass


def _previous_run(path: Path) -> bool:
    """A previous run's folder: its marker, or nothing but what a run makes before its marker
    (its lock, a temporary of one of its files: a start killed at once), which ``--force``
    replaces like a run."""
    if (path / MARKER).is_file():
        return True
    entries = list(path.iterdir())
    return bool(entries) and all(
        (e.name == _RunLock.NAME or (e.name.startswith(".") and _owned_name(e.name)
                                     and e.name not in _OWNED))
        and e.is_file() and not e.is_symlink()
        for e in entries
    )


def check_run_target(path: str | os.PathLike, force: bool) -> bool:
    """Check that a run may be created in ``path``; True when a previous run will be replaced.

    Cheap (no file is written), so commands call it before any work.

    Raises
    ------
    InputError
        ``path`` is a file, or a non-empty folder without ``force``, or a non-empty folder that
        is not a run (no :data:`MARKER`) even with ``force``, or its nearest existing folder is
        not writable.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"run directory {path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()):
        if not force:
            raise InputError(
                f"run directory {path} already exists and is not empty; "
                "choose another folder or pass force=True (--force) to replace a previous run"
            )
        if not _previous_run(path):
            raise InputError(
                f"{path} is not empty and is not a dippas run folder (it lacks the {MARKER} "
                "marker only dippas writes): refusing to replace anything in it; choose a new "
                "or empty folder"
            )
        replace = True
    else:
        replace = False
    check_writable_folder(path if path.is_dir() else path.parent)
    return replace


def check_writable_folder(folder: str | os.PathLike) -> None:
    """Raise :class:`InputError` unless files can be created in ``folder`` (or, when it does not
    exist yet, in its nearest existing parent, which must be a folder)."""
    folder = Path(os.path.abspath(folder))
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"cannot create {folder}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"cannot write in {probe}: permission denied")


def _clear_previous_run(path: Path) -> _RunLock:
    """Delete a previous run's own files from ``path`` (others stay); return the held lock.

    Only a folder carrying :data:`MARKER` is touched, and of it only what a run wrote
    (:func:`clear_run_files`, a whole-photo run's too): a user's files that happen to sit there
    (or a folder that merely holds a ``config.json``) are never deleted.
    """
    if not _previous_run(path):  # checked by check_run_target; never delete without it
        raise InputError(f"{path} is not a dippas run folder (no {MARKER}); nothing replaced")
    lock = _RunLock(path)
    if not lock.acquire():  # never delete a run that is still being recorded
        raise InputError(_busy_message(path))
    try:
        clear_run_files(path, keep=(_RunLock.NAME,))
    except BaseException:
        lock.release()
        raise
    return lock



TEMPORARY_PREFIX = "dippas-run-"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # exists but is someone else's (or cannot tell)
        return True
    return True


def clean_stale_temporary_runs(folder: str | os.PathLike | None = None) -> list[Path]:
    """Delete temporary run folders whose owner process is gone; return those deleted.

    A run killed mid-way (power cut, ``kill -9``) leaves its temporary folder, which holds the
    un-anonymized photo.  Only folders named ``dippas-run-<pid>-*`` in ``folder`` (default: the
    system's temp folder), owned by this user, whose process ``<pid>`` no longer runs, are
    cleared, and of them only a run's own files (:func:`clear_run_files`): anything else keeps the
    folder.
    """
    import tempfile

    base = Path(folder if folder is not None else tempfile.gettempdir())
    removed = []
    for entry in base.glob(f"{TEMPORARY_PREFIX}*-*"):
        pid_text = entry.name[len(TEMPORARY_PREFIX):].split("-", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        try:
            mine = not hasattr(os, "getuid") or entry.stat().st_uid == os.getuid()
            if not entry.is_dir() or entry.is_symlink() or not mine:
                continue
            if _process_alive(int(pid_text)):
                continue
            clear_run_files(entry)
            entry.rmdir()  # fails (kept) when anything else is inside
        except (OSError, InputError):  # InputError: a tile run in it is still being recorded
            continue
        removed.append(entry)
    return removed


def temporary_run_folder() -> Path:
    """A new, empty temporary run folder named after this process (see
    :func:`clean_stale_temporary_runs`, which runs first)."""
    import tempfile

    clean_stale_temporary_runs()
    return Path(tempfile.mkdtemp(prefix=f"{TEMPORARY_PREFIX}{os.getpid()}-"))


