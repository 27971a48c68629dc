"""The recorder's background ingest: stored frames in, tile sums out, through a bounded queue."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from typing import Any

import numpy as np

from ..errors import DippasError
from .directory import RunDirectory

__all__: list[str] = []  # used by the recorder only

_STOP = object()


class _Ingest:
    """Background consumer: stored frames in, tile sums out, through a bounded queue."""

    def __init__(self, run: RunDirectory, *, queue_size: int, batch_size: int, workers: int | None):
        self.run = run
        self.batch_size = max(1, int(batch_size))
        self.workers = workers
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, int(queue_size)))
        self.error: BaseException | None = None
        self.busy_s = 0.0  # seconds spent computing residuals and tile sums
        self.wait_s = 0.0  # seconds the inversion waited for room in the queue
        self.n_done = 0
        self.n_on_device = 0  # of them, ingested where the inversion ran (not on the host)
        self.thread = threading.Thread(target=self._loop, name="dippas-ingest", daemon=True)
        self.thread.start()

    def put(self, frame: Any) -> None:
        """Queue one frame; blocks only while the queue is full (back-pressure).

        A stored uint16 frame (numpy) is ingested on the host (:meth:`RunDirectory.ingest_frames`);
        a float snapshot tensor on a GPU is ingested there (:meth:`RunDirectory.ingest_on_device`).
        """
        t0 = time.perf_counter()
        try:
            while True:
                self._raise_if_failed()
                try:
                    self.queue.put(frame, timeout=0.25)
                    return
                except queue.Full:
                    continue
        finally:
            if frame is not _STOP:
                self.wait_s += time.perf_counter() - t0

    def finish(self) -> None:
        """Process everything queued, stop the thread, re-raise its error if it had one."""
        if self.thread.is_alive():
            self.put(_STOP)
            self.thread.join()
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            raise DippasError(
                f"computing snapshot residuals failed: {self.error!r}"
            ) from self.error

    def _loop(self) -> None:
        try:
            stop = False
            while not stop:
                item = self.queue.get()
                if item is _STOP:
                    break
                batch = [item]
                while len(batch) < self.batch_size:  # take what is already waiting, no more
                    try:
                        item = self.queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        stop = True
                        break
                    batch.append(item)
                t0 = time.perf_counter()
                for group in _same_kind_runs(batch):
                    self.run.tile_sums.append(self._sums(group))
                self.busy_s += time.perf_counter() - t0
                self.n_done += len(batch)
        except BaseException as exc:  # noqa: BLE001 - handed to the producer
            self.error = exc
            with contextlib.suppress(queue.Empty):  # unblock a producer waiting on a full queue
                while True:
                    self.queue.get_nowait()


    def _sums(self, group: list) -> np.ndarray:
        if isinstance(group[0], np.ndarray):
            return self.run.ingest_frames(np.stack(group), workers=self.workers)
        import torch

        self.n_on_device += len(group)
        return self.run.ingest_on_device(torch.stack(group))


def _same_kind_runs(batch: list) -> list[list]:
    """``batch`` cut into consecutive runs of host frames (numpy) and device tensors, in order."""
    runs: list[list] = []
    for item in batch:
        host = isinstance(item, np.ndarray)
        if runs and isinstance(runs[-1][0], np.ndarray) == host:
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs


