"""On-disk snapshot store and per-tile NCC sums (ARCHITECTURE: "block sums at the finest tile").

Two append-only stores live side by side in a run directory:

* :class:`SnapshotStore` keeps every kept DIP output ``I_phi`` (N×H×W×3) as **uint16 =
  value×257** in one flat file read through ``numpy.memmap``, plus an index of ``(iteration,
  psnr)`` per snapshot.  uint16×257 is exact for 8-bit values and has a step of 1/257 ≈ 0.004
  elsewhere on the 0..255 scale, so averaging L snapshots and rounding to 8 bits never sees a
  storage error (float16 has a step of 0.125 near 255, enough to flip a rounding); it also sums
  exactly in integers.
* :class:`TileSums` keeps, per snapshot and per ``tile×tile`` tile, the three sums that make up the
  NCC (method §3): ``Σ W·(I·P)``, ``Σ W²``, ``Σ (I·P)²`` (float64, N×Th×Tw×3).  The NCC of any block
  made of whole tiles is a ratio of sums of tile sums, so assembling with another B never touches a
  residual again.

Both are safe to read while a writer appends (readers see the records complete at their last
:meth:`refresh`) and after a writer was killed: the data record is written before its index record
and a trailing partial record is ignored.  Opening a *writer* drops such a trailing record, so only
one writer may exist at a time: in a run folder, the holder of the run's lock
(:class:`~dippas_core.run.RunDirectory`), never a second process beside a live recorder.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from .atomic import atomic_write_text
from .errors import InputError
from .jsonio import read_json

__all__ = [
    "SnapshotStore",
    "TileSums",
    "block_ncc_from_sums",
    "block_projection_from_sums",
    "tile_grid",
    "tile_sums",
]

#: uint16 = round(value × SCALE) maps 0..255 onto 0..65535 with 8-bit values exact.
SCALE = 257.0
_INDEX_DTYPE = np.dtype([("iteration", "<i8"), ("psnr", "<f8")])


def tile_grid(shape: tuple[int, int], tile: int) -> tuple[int, int]:
    """Number of tiles (rows, columns) covering an H×W image; edge tiles may be smaller."""
    h, w = shape
    return -(-h // tile), -(-w // tile)


def _read_json(path: Path, what: str) -> dict:
    try:
        return read_json(path)
    except FileNotFoundError as exc:
        raise InputError(f"{path.parent} has no {what} ({path.name} missing)") from exc
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {what} {path}: {exc}") from exc


class _AppendFile:
    """An append-only file of fixed-size records; counts only complete records."""

    def __init__(self, path: Path, record_bytes: int, writable: bool):
        self.path = path
        self.record_bytes = int(record_bytes)
        self._fh = None
        if writable:
            # a fresh writer on a file left by a killed one: drop its trailing partial record
            n = self.complete_records()
            if self.path.exists() and self.path.stat().st_size != n * self.record_bytes:
                with open(self.path, "r+b") as fh:
                    fh.truncate(n * self.record_bytes)
            self._fh = open(self.path, "ab")  # noqa: SIM115 - held open for the writer's life

    def complete_records(self) -> int:
        try:
            return self.path.stat().st_size // self.record_bytes
        except FileNotFoundError:
            return 0

    def append(self, data: bytes) -> None:
        if self._fh is None:
            raise InputError(f"{self.path} is open read-only")
        self._fh.write(data)
        self._fh.flush()  # visible to readers (and survives the process being killed)

    def close(self, sync: bool = True) -> None:
        if self._fh is not None:
            self._fh.flush()
            if sync:
                os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None

    @property
    def writable(self) -> bool:
        return self._fh is not None


class SnapshotStore:
    """Append-only N×H×W×3 store of snapshots on disk (uint16 = value×257), readable while it grows.

    Create with :meth:`create` (writer) or open with :meth:`open` (a reader or, with
    ``writable=True``, a writer that continues a store).  ``len(store)`` is the number of complete
    snapshots seen at the last :meth:`refresh`.
    """

    DATA = "snapshots.u16"
    INDEX = "snapshots.idx"
    META = "snapshots.json"

    def __init__(self, path: str | os.PathLike, *, writable: bool = False):
        self.path = Path(path)
        meta = _read_json(self.path / self.META, "snapshot store")
        self.shape: tuple[int, int] = (int(meta["height"]), int(meta["width"]))
        self.frame_shape = (*self.shape, 3)
        self.frame_bytes = int(np.prod(self.frame_shape)) * 2
        self._data = _AppendFile(self.path / self.DATA, self.frame_bytes, writable)
        self._index = _AppendFile(self.path / self.INDEX, _INDEX_DTYPE.itemsize, writable)
        if writable:  # index records without data (killed between the two writes): drop them
            n = min(self._data.complete_records(), self._index.complete_records())
            for f in (self._data, self._index):
                f._fh.truncate(n * f.record_bytes)
        self._n = 0
        self._frames: np.ndarray = np.empty((0, *self.frame_shape), np.uint16)
        self._records = np.empty(0, _INDEX_DTYPE)
        self.refresh()

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike, shape: tuple[int, int]) -> SnapshotStore:
        """Start an empty store for H×W×3 snapshots in folder ``path`` (created if needed)."""
        path = Path(path)
        h, w = (int(s) for s in shape[:2])
        if h < 1 or w < 1:
            raise InputError(f"snapshot size must be positive, got {h}×{w}")
        if (path / cls.META).exists():
            raise InputError(f"{path} already holds a snapshot store")
        path.mkdir(parents=True, exist_ok=True)
        meta = {"height": h, "width": w, "channels": 3, "dtype": "uint16", "scale": SCALE}
        atomic_write_text(path / cls.META, json.dumps(meta, indent=1))
        return cls(path, writable=True)

    @classmethod
    def open(cls, path: str | os.PathLike, *, writable: bool = False) -> SnapshotStore:
        """Open an existing store (a reader by default)."""
        return cls(path, writable=writable)

    # -- writing ------------------------------------------------------------------------------
    @staticmethod
    def quantize(snapshot: np.ndarray) -> np.ndarray:
        """float 0..255 H×W×3 → the stored uint16 frame (rounded, clipped)."""
        q = np.rint(np.asarray(snapshot, dtype=np.float32) * np.float32(SCALE))
        return np.clip(q, 0, 65535).astype(np.uint16)

    def append(self, snapshot: np.ndarray, iteration: int, psnr: float) -> np.ndarray:
        """Append one snapshot (float 0..255 H×W×3); return the stored uint16 frame."""
        snapshot = np.asarray(snapshot)
        if snapshot.shape != self.frame_shape:
            raise InputError(f"snapshot is {snapshot.shape}, the store holds {self.frame_shape}")
        frame = self.quantize(snapshot)
        self.append_frame(frame, iteration, psnr)
        return frame

    def append_frame(self, frame: np.ndarray, iteration: int, psnr: float) -> int:
        """Append an already-quantized uint16 frame; return its index."""
        frame = np.ascontiguousarray(frame, dtype=np.uint16)
        self._data.append(frame.tobytes())  # data first: an index record always has its data
        self._index.append(np.array([(iteration, psnr)], _INDEX_DTYPE).tobytes())
        self._n += 1
        self._records = np.append(self._records, np.array([(iteration, psnr)], _INDEX_DTYPE))
        return self._n - 1

    def close(self) -> None:
        """Flush and close the writer's files (readers need not call it)."""
        self._data.close()
        self._index.close()
        self.refresh()

    # -- reading ------------------------------------------------------------------------------
    def refresh(self) -> int:
        """Re-read how many complete snapshots are on disk; return that count."""
        n = min(self._data.complete_records(), self._index.complete_records())
        if n != len(self._records) or n != self._frames.shape[0]:
            self._records = np.fromfile(self.path / self.INDEX, _INDEX_DTYPE, count=n)
            self._frames = (
                np.memmap(self.path / self.DATA, np.uint16, "r", shape=(n, *self.frame_shape))
                if n
                else np.empty((0, *self.frame_shape), np.uint16)
            )
        self._n = n
        return n

    def __len__(self) -> int:
        return self._n

    @property
    def frames(self) -> np.ndarray:
        """Read-only N×H×W×3 uint16 memmap (value×257) of the snapshots seen at the last refresh."""
        if self._frames.shape[0] != self._n:
            self.refresh()
        return self._frames

    @property
    def iterations(self) -> np.ndarray:
        """DIP iteration (1-based) of each snapshot."""
        return self._records["iteration"][: self._n].copy()

    @property
    def psnrs(self) -> np.ndarray:
        """PSNR (dB) of each snapshot against the photo."""
        return self._records["psnr"][: self._n].copy()

    @contextlib.contextmanager
    def mapped(self) -> Iterator[tuple[np.ndarray, Callable[[], None]]]:
        """A private read-only N×H×W×3 map of the frames, and a function that drops its pages.

        Reading many scattered blocks through a map makes every touched page count in the
        process's resident memory; calling ``release()`` now and then (``madvise(DONTNEED)``:
        the pages stay in the OS page cache) keeps the peak RSS to what was read since.
        Index it with fancy indexing (copies); views must not outlive the ``with`` block.
        """
        n = self._n
        if n == 0:
            yield np.empty((0, *self.frame_shape), np.uint16), lambda: None
            return
        with open(self.path / self.DATA, "rb") as fh:
            mm = mmap.mmap(fh.fileno(), n * self.frame_bytes, access=mmap.ACCESS_READ)
        frames = np.frombuffer(mm, np.uint16).reshape(n, *self.frame_shape)
        dontneed = getattr(mmap, "MADV_DONTNEED", None)

        def release() -> None:
            if dontneed is not None:
                mm.madvise(dontneed)

        try:
            yield frames, release
        finally:
            del frames
            with contextlib.suppress(BufferError):  # a caller kept a view: the GC closes it
                mm.close()

    def read(self, i: int) -> np.ndarray:
        """Snapshot ``i`` as float32 H×W×3 on the 0..255 scale."""
        if not -self._n <= i < self._n:
            raise InputError(f"snapshot {i} out of range: the store holds {self._n}")
        return self.frames[i].astype(np.float32) / np.float32(SCALE)

    def __repr__(self) -> str:
        return f"SnapshotStore({str(self.path)!r}, n={self._n}, size={self.shape})"


def tile_sums(w: np.ndarray, ip: np.ndarray, tile: int) -> np.ndarray:
    """Per-tile ``Σ W·IP``, ``Σ W²``, ``Σ IP²`` (float64 …×Th×Tw×3) of residuals ``w`` (…×H×W).

    ``ip`` is the gray snapshot times the reference P, same shape as ``w``.  Edge tiles are smaller
    when H or W is not a multiple of ``tile`` (zero padding adds nothing to a sum).
    """
    w = np.asarray(w, dtype=np.float64)
    ip = np.asarray(ip, dtype=np.float64)
    h, wd = w.shape[-2:]
    th, tw = tile_grid((h, wd), tile)
    lead = w.shape[:-2]
    out = np.empty((*lead, th, tw, 3), np.float64)
    pad = [(0, 0)] * len(lead) + [(0, th * tile - h), (0, tw * tile - wd)]
    for k, prod in enumerate((w * ip, w * w, ip * ip)):
        if pad[-2][1] or pad[-1][1]:
            prod = np.pad(prod, pad)
        out[..., k] = prod.reshape(*lead, th, tile, tw, tile).sum(axis=(-3, -1))
    return out


def _block_sums(sums: np.ndarray, tiles_per_block: int) -> np.ndarray:
    """Tile sums (…×Th×Tw×3) added up over blocks of ``tiles_per_block``² tiles: …×Bh×Bw×3.

    Blocks at the bottom and right edges hold fewer tiles when the grid is not a multiple.
    """
    k = int(tiles_per_block)
    *lead, th, tw, _ = sums.shape
    bh, bw = -(-th // k), -(-tw // k)
    if (bh * k, bw * k) != (th, tw):
        pad = [(0, 0)] * len(lead) + [(0, bh * k - th), (0, bw * k - tw), (0, 0)]
        sums = np.pad(sums, pad)
    return sums.reshape(*lead, bh, k, bw, k, 3).sum(axis=(-4, -2))


def block_ncc_from_sums(sums: np.ndarray, tiles_per_block: int) -> np.ndarray:
    """NCC per block of ``tiles_per_block``² tiles from tile sums (…×Th×Tw×3) → …×Bh×Bw.

    Blocks at the bottom and right edges hold fewer tiles when the grid is not a multiple.  A block
    whose residual or reference is identically zero has NCC 0.
    """
    blocks = _block_sums(sums, tiles_per_block)
    num = blocks[..., 0]
    den = np.sqrt(blocks[..., 1] * blocks[..., 2])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def block_projection_from_sums(sums: np.ndarray, tiles_per_block: int) -> np.ndarray:
    """Projection of the residual on the unit reference per block: ``Σ W·IP / ‖IP‖`` (…×Bh×Bw).

    Unlike the NCC it is not divided by the residual's norm, so energy a snapshot adds that has
    nothing to do with the camera (a blob, a checkerboard) does not shrink it (method §5).  0 where
    the reference is identically zero.
    """
    blocks = _block_sums(sums, tiles_per_block)
    den = np.sqrt(blocks[..., 2])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, blocks[..., 0] / np.where(den > 0, den, 1.0), 0.0)


class TileSums:
    """Append-only N×Th×Tw×3 float64 tile sums on disk (see :func:`tile_sums`)."""

    DATA = "tilesums.f64"
    META = "tilesums.json"

    def __init__(self, path: str | os.PathLike, *, writable: bool = False):
        self.path = Path(path)
        meta = _read_json(self.path / self.META, "tile sums")
        self.shape: tuple[int, int] = (int(meta["height"]), int(meta["width"]))
        self.tile = int(meta["tile"])
        self.grid = tile_grid(self.shape, self.tile)
        self.record_shape = (*self.grid, 3)
        self._file = _AppendFile(
            self.path / self.DATA, int(np.prod(self.record_shape)) * 8, writable
        )
        self._n = 0
        self._cache = np.empty((0, *self.record_shape), np.float64)
        self.refresh()

    @classmethod
    def create(cls, path: str | os.PathLike, shape: tuple[int, int], tile: int = 32) -> TileSums:
        """Start empty tile sums for H×W images with ``tile``×``tile`` tiles in folder ``path``."""
        path = Path(path)
        tile = int(tile)
        if tile < 1:
            raise InputError(f"tile must be a positive number of pixels, got {tile}")
        if (path / cls.META).exists():
            raise InputError(f"{path} already holds tile sums")
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "height": int(shape[0]),
            "width": int(shape[1]),
            "tile": tile,
            "fields": ["sum_w_ip", "sum_w2", "sum_ip2"],
            "dtype": "float64",
        }
        atomic_write_text(path / cls.META, json.dumps(meta, indent=1))
        return cls(path, writable=True)

    @classmethod
    def open(cls, path: str | os.PathLike, *, writable: bool = False) -> TileSums:
        """Open existing tile sums (a reader by default)."""
        return cls(path, writable=writable)

    def append(self, sums: np.ndarray) -> None:
        """Append the tile sums of one or more snapshots (Th×Tw×3 or n×Th×Tw×3)."""
        sums = np.asarray(sums, dtype=np.float64)
        if sums.shape == self.record_shape:
            sums = sums[None]
        if sums.shape[1:] != self.record_shape:
            raise InputError(f"tile sums are {sums.shape[1:]}, expected {self.record_shape}")
        self._file.append(np.ascontiguousarray(sums).tobytes())
        self._n += sums.shape[0]

    def close(self) -> None:
        """Flush and close the writer's file."""
        self._file.close()
        self.refresh()

    def refresh(self) -> int:
        """Re-read how many complete records are on disk; return that count."""
        self._n = self._file.complete_records()
        return self._n

    def __len__(self) -> int:
        return self._n

    def array(self, n: int | None = None) -> np.ndarray:
        """The first ``n`` (default all) records as an in-RAM float64 n×Th×Tw×3 array."""
        n = self._n if n is None else min(int(n), self._n)
        if self._cache.shape[0] < n:  # read only what is new since the last call
            start = self._cache.shape[0]
            with open(self.path / self.DATA, "rb") as fh:
                fh.seek(start * self._file.record_bytes)
                new = np.fromfile(
                    fh, np.float64, count=(n - start) * int(np.prod(self.record_shape))
                )
            self._cache = np.concatenate([self._cache, new.reshape(-1, *self.record_shape)])
        return self._cache[:n]

    def block_ncc(self, block: int, indices: np.ndarray | None = None) -> np.ndarray:
        """NCC of every snapshot (or of ``indices``) on every B×B block: n×Bh×Bw float64."""
        if block % self.tile:
            raise InputError(f"block size {block} is not a multiple of the tile {self.tile}")
        sums = self.array()
        if indices is not None:
            sums = sums[indices]
        return block_ncc_from_sums(sums, block // self.tile)

    def __repr__(self) -> str:
        return f"TileSums({str(self.path)!r}, n={self._n}, grid={self.grid}, tile={self.tile})"
