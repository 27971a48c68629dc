"""Where a command may write: every output checked against every input, every other output,
a run's own files and what already exists, before any work.

One function, :func:`check_targets`, that each command (and the viewer's job and writer) calls
with every path it reads and every path it will write, each with the name a user knows it by
(``--out``, ``the sidecar of --out``, ``PHOTO``).  An output is refused when it

- is a folder;
- is one of the inputs (the same file by path, symbolic link or hard link; names that differ
  only in case count as the same, as they are on the disks of macOS and Windows);
- is another output of the same command;
- belongs to a run: one of a run folder's own files (``config.json``, ``photo-run.json``, ...)
  or anything inside a whole-photo run's ``tiles/`` or ``done/``, of an existing run or of one
  the command is about to create (:func:`~dippas_core.run.run_owning`);
- exists, unless ``force`` (or ``replaceable`` says it is an earlier result of the same kind);
- cannot be created (its folder is a file, or not writable).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from .errors import InputError

__all__ = ["check_targets", "same_file"]

PathLike = str | os.PathLike


def _absolute(path: PathLike) -> Path:
    path = Path(os.path.abspath(path))
    return Path(os.path.realpath(path.parent)) / path.name


def _identity(path: Path) -> tuple[str, tuple[int, int] | None]:
    """``(name key, (device, inode) or None)``: an existing file is known by its inode (links
    included); a missing one by its absolute path, folders' links resolved, case ignored (a name
    that differs only in case is the same file on the disks of macOS and Windows)."""
    try:
        st = os.stat(path)
        inode = (st.st_dev, st.st_ino)
    except (OSError, ValueError):
        inode = None
    where = Path(os.path.realpath(path)) if path.is_symlink() else _absolute(path)
    return str(where).casefold(), inode


def same_file(a: PathLike, b: PathLike) -> bool:
    """Whether writing ``a`` would land on the file ``b`` (or the other way round).

    Two existing paths are compared as files (symbolic and hard links included); a missing one
    by its absolute path, its folders' links resolved, ignoring case.
    """
    key_a, inode_a = _identity(Path(a))
    key_b, inode_b = _identity(Path(b))
    if inode_a is not None or inode_b is not None:
        return inode_a == inode_b
    return key_a == key_b


class _Seen:
    """Paths already named, found again by inode (existing files) or by name key (missing)."""

    def __init__(self) -> None:
        self._by_inode: dict[tuple[int, int], tuple[str, Path]] = {}
        self._by_key: dict[str, tuple[str, Path]] = {}

    def find(self, path: Path) -> tuple[str, Path] | None:
        key, inode = _identity(path)
        return self._by_inode.get(inode) if inode is not None else self._by_key.get(key)

    def add(self, what: str, path: Path) -> None:
        key, inode = _identity(path)
        if inode is not None:
            self._by_inode.setdefault(inode, (what, path))
        else:
            self._by_key.setdefault(key, (what, path))


def _check_output(
    what: str, path: Path, sources: _Seen, written: _Seen, new_runs: list[Path], force: bool,
    replaceable: Callable[[Path], bool] | None,
) -> None:
    """One output against the inputs, the outputs before it, the run folders and what exists."""
    from .run import run_owning

    if path.is_dir():
        raise InputError(f"{what} {path} is a folder; name a file")
    source = sources.find(path)
    if source is not None:
        source_what, source_path = source
        same = "" if path == source_path else f" {source_path}"
        raise InputError(
            f"{what} {path} is the input file itself ({source_what}{same}): writing it "
            "would destroy an input; choose another name"
        )
    other = written.find(path)
    if other is not None:
        raise InputError(
            f"{what} {path} and {other[0]} {other[1]} are the same file; one would "
            "overwrite the other: choose another name"
        )
    written.add(what, path)
    owner = run_owning(path, new_runs)
    if owner is not None:
        raise InputError(
            f"{what} {path} is one of the run folder's own files (the run in {owner} owns "
            "it, or the folder it is in); writing it would break the run: choose another "
            "name or folder"
        )
    if (path.exists() or path.is_symlink()) and not force and not (
        replaceable is not None and replaceable(path)
    ):
        raise InputError(f"{what} {path} already exists; choose another name or pass --force")


def check_targets(
    outputs: Mapping[str, PathLike | None],
    inputs: Mapping[str, PathLike | Iterable[PathLike] | None] | None = None,
    *,
    force: bool = False,
    new_runs: Iterable[PathLike | None] = (),
    replaceable: Callable[[Path], bool] | None = None,
) -> None:
    """Refuse, before any work, an output that would destroy something (see the module
    docstring).

    Parameters
    ----------
    outputs
        ``what -> path`` of every file the command will write (None: not written this time).
        ``what`` is how the user knows it: ``"--out"``, ``"the sidecar of --out"``.
    inputs
        ``what -> path`` (or several paths, e.g. a folder's images) of every file it reads.
    force
        Existing outputs may be replaced (never an input, another output or a run's file).
    new_runs
        Run folders the command will create or fill (they may not exist yet).
    replaceable
        Says whether an existing output may be replaced without ``force`` (an earlier result
        the same command made, which a resume replaces).

    Raises
    ------
    InputError
        Naming the output, what it collides with, and what to do.
    """
    from .run import check_writable_folder, run_owning

    new_runs = [Path(r) for r in new_runs if r is not None]
    for run in new_runs:
        owner = run_owning(run)
        if owner is not None:
            raise InputError(
                f"the run folder {run} would be inside the run folder {owner}'s own folders "
                "(or be one of its files); choose a folder outside it"
            )
    sources = _Seen()
    source_list: list[tuple[str, Path]] = []
    for what, value in (inputs or {}).items():
        if value is None:
            continue
        for p in [value] if isinstance(value, str | os.PathLike) else value:
            sources.add(what, Path(p))
            source_list.append((what, Path(p)))
    written = _Seen()
    folders_checked: set[Path] = set()
    for what, path in ((w, Path(p)) for w, p in outputs.items() if p is not None):
        _check_output(what, path, sources, written, new_runs, force, replaceable)
        if path.parent not in folders_checked:
            check_writable_folder(path.parent)
            folders_checked.add(path.parent)
    if new_runs:  # a run folder's own files are replaced: never an input among them
        for source_what, source in source_list:
            owner = run_owning(source, new_runs)
            if owner is not None and any(same_file(owner, r) for r in new_runs):
                raise InputError(
                    f"{source_what} {source} is one of the files of the run folder {owner}, "
                    "which this command writes; copy it elsewhere first"
                )
