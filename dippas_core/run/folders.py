"""Where runs live: recognising run folders and files, checking targets, temporary folders."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import InputError
from ._lock import _busy_message, _RunLock
from .format import CONFIG, FORMAT, MARKER, RUN_FILES

__all__ = [
    "TEMPORARY_PREFIX",
    "check_run_target",
    "check_writable_folder",
    "clean_stale_temporary_runs",
    "is_run_file",
    "is_run_folder",
    "temporary_run_folder",
]


def is_run_folder(folder: str | os.PathLike) -> bool:
    """True for a folder made by :meth:`RunDirectory.create` (its marker, or an older run's
    ``config.json`` with ``format: dippas-run``)."""
    folder = Path(folder)
    if (folder / MARKER).is_file():
        return True
    try:
        config = json.loads((folder / CONFIG).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("format") == FORMAT


def is_run_file(path: str | os.PathLike) -> bool:
    """True when ``path`` names one of a run's own files (or their temporaries) in a run folder.

    Writing an output there would break the run: ``assemble RUN --out RUN/config.png`` would put
    its report over the run's ``config.json``.
    """
    path = Path(path)
    name = path.name
    owned = name in RUN_FILES or any(
        name.startswith(f".{own}.") and ".part" in name for own in RUN_FILES
    )
    return owned and is_run_folder(path.parent)


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
        if not (path / MARKER).is_file():
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

    Only a folder carrying :data:`MARKER` is touched, and of it only the names in
    :data:`RUN_FILES`: a user's files that happen to sit there (or a folder that merely holds a
    ``config.json``) are never deleted.
    """
    if not (path / MARKER).is_file():  # checked by check_run_target; never delete without it
        raise InputError(f"{path} is not a dippas run folder (no {MARKER}); nothing replaced")
    lock = _RunLock(path)
    if not lock.acquire():  # never delete a run that is still being recorded
        raise InputError(_busy_message(path))
    try:
        for entry in path.iterdir():
            if entry.name in RUN_FILES and entry.name != _RunLock.NAME and not entry.is_dir():
                entry.unlink()
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
    cleared, and of them only a run's own files (:data:`RUN_FILES`): anything else keeps the
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
            for part in entry.iterdir():
                owned = part.name in RUN_FILES or any(
                    part.name.startswith(f".{own}.") for own in RUN_FILES
                )
                if owned and part.is_file() and not part.is_symlink():
                    part.unlink()
            entry.rmdir()  # fails (kept) when anything else is inside
        except OSError:
            continue
        removed.append(entry)
    return removed


def temporary_run_folder() -> Path:
    """A new, empty temporary run folder named after this process (see
    :func:`clean_stale_temporary_runs`, which runs first)."""
    import tempfile

    clean_stale_temporary_runs()
    return Path(tempfile.mkdtemp(prefix=f"{TEMPORARY_PREFIX}{os.getpid()}-"))


