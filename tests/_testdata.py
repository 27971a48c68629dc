"""The camera test data, found through a registry of files with their SHA-256 (pooch).

The files are the Dresden subset shipped with prnu-python; ``testdata-registry.txt`` beside this
module lists each one with its hash (pooch's registry format).  Where they are looked for, first
to last:

1. ``$DIPPAS_TESTDATA``;
2. ``../shared/data/prnu-python-testdata`` beside the repository;
3. only when ``DIPPAS_TESTDATA_DOWNLOAD=1``: pooch downloads the missing files from prnu-python's
   repository into pooch's cache folder, checking each hash.  (Not exercised here: the development
   machine has no network.)

A file whose bytes differ from the registry raises :class:`DataFileError` naming the file, before
any test reads it.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pooch

__all__ = ["DataFileError", "data_folder", "data_pooch", "fetch", "registered", "verify"]

REPO = Path(__file__).resolve().parents[1]
REGISTRY = Path(__file__).with_name("testdata-registry.txt")
LOCAL = REPO.parent / "shared" / "data" / "prnu-python-testdata"
#: prnu-python's test data at the commit the registry was made from.
UPSTREAM = "https://github.com/polimi-ispl/prnu-python/raw/91e1585/test/data/"
ENV = "DIPPAS_TESTDATA"
DOWNLOAD_ENV = "DIPPAS_TESTDATA_DOWNLOAD"


class DataFileError(RuntimeError):
    """A registered test-data file is missing or its SHA-256 is not the registry's."""


def data_pooch() -> pooch.Pooch:
    """The registry as a :class:`pooch.Pooch`: ``$DIPPAS_TESTDATA``, else the local folder.

    With ``DIPPAS_TESTDATA_DOWNLOAD=1`` and neither folder present, pooch's cache folder.
    """
    path = LOCAL
    if not os.environ.get(ENV) and not LOCAL.is_dir() and os.environ.get(DOWNLOAD_ENV) == "1":
        path = pooch.os_cache("napari-dippas") / "prnu-python-testdata"
    data = pooch.create(path=path, base_url=UPSTREAM, env=ENV, registry=None)
    data.load_registry(REGISTRY)
    return data


def data_folder() -> Path:
    """The folder the test data is looked for in (it may not exist)."""
    return Path(data_pooch().abspath)


def registered(prefix: str = "") -> list[str]:
    """Registered file names (relative paths) that start with ``prefix``, sorted."""
    return sorted(name for name in data_pooch().registry if name.startswith(prefix))


@functools.cache
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    return pooch.file_hash(path, alg="sha256")


def verify(names: list[str] | None = None, folder: Path | None = None) -> None:
    """Check that each registered file (all by default) is in ``folder`` with its registry hash.

    Raises
    ------
    DataFileError
        Naming every missing or damaged file.
    """
    data = data_pooch()
    folder = Path(folder) if folder is not None else Path(data.abspath)
    problems = []
    for name in registered() if names is None else names:
        expected = data.registry[name].split(":")[-1]
        path = folder / name
        if not path.is_file():
            problems.append(f"{name} is missing from {folder}")
            continue
        stat = path.stat()
        got = _sha256(str(path), stat.st_size, stat.st_mtime_ns)
        if got != expected:
            problems.append(
                f"{name} is damaged: its SHA-256 is {got[:16]}…, the registry says "
                f"{expected[:16]}… ({path}); replace it with prnu-python's file"
            )
    if problems:
        raise DataFileError("camera test data: " + "; ".join(problems))


def fetch(name: str) -> Path:
    """Path of the registered file ``name``, checked against its hash (downloaded if allowed)."""
    data = data_pooch()
    path = Path(data.abspath) / name
    if not path.is_file() and os.environ.get(DOWNLOAD_ENV) == "1":
        return Path(data.fetch(name))
    verify([name])
    return path
