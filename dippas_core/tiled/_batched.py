"""Several tiles of a photo per optimiser step (:mod:`dippas_core.dip.batched`), each recorded.

Each tile's steps go through the same filter and ``record`` as
:func:`~dippas_core.tiled.invert_tile`, in a recorder thread of its own fed from the interleaved
steps of the batch.  The step batch executor (:mod:`dippas_core.tiled.executors`) runs it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

import numpy as np

from ._tile import TileOutcome, TileTask, _create_tile_run, _KeepBestBelow, _tile_outcome

if TYPE_CHECKING:
    from ..run import PhotoRun

__all__ = ["invert_tiles_batched", "measured_tiles_per_step"]


class _QueuedSteps:
    """A step source fed through a queue: one tile's steps as the batched inversion makes them.

    Cancelling is the batch's job (it ends every tile with a cancelled result), so this source
    only passes on what it is given: ``("step", Step)`` items, then ``("end", result)`` (the
    tile's ``InversionResult``, or ``None`` when the batch was aborted).
    """

    def __init__(self, size: int, cancel: Any) -> None:
        import queue

        from ..cancel import CancelToken

        self.queue: queue.Queue = queue.Queue(maxsize=size)
        self.cancel_token = cancel if cancel is not None else CancelToken()
        self.result: Any = None

    def __iter__(self) -> _QueuedSteps:
        return self

    def __next__(self) -> Any:
        kind, item = self.queue.get()
        if kind == "step":
            return item
        self.result = item
        raise StopIteration

    def cancel(self) -> None:
        self.cancel_token.cancel()

    def close(self) -> None:
        """Nothing to release: the batch owns the device state."""

    def share_cpu(self, threads: int | None) -> None:
        """Torch's threads are set once for the whole batch by its caller."""


class _TileRecorder:
    """One tile's :func:`~dippas_core.run.record` in a thread, fed the tile's steps one by one.

    The batched inversion yields the steps of N tiles interleaved; each tile's recorder drives
    the same filter and ``record`` as :func:`invert_tile` from a small bounded queue (the
    inversion waits when a tile's ingest lags behind, as it does for one tile).
    """

    _QUEUE = 16

    def __init__(self, run: Any, config: Any, cancel: Any) -> None:
        import threading

        self.run = run
        self.best: list = []
        self.result: Any = None
        self.error: BaseException | None = None
        self._steps = _QueuedSteps(self._QUEUE, cancel)
        self._queue = self._steps.queue
        filtered = _KeepBestBelow(
            self._steps, float(config.dip.record_psnr), int(config.assembly.L), self.best
        )
        self._thread = threading.Thread(
            target=self._record, args=(filtered, cancel), name=f"record {run.path.name}",
            daemon=True,
        )
        self._thread.start()

    def _record(self, filtered: _KeepBestBelow, cancel: Any) -> None:
        from ..run import record

        try:
            # torch's threads are set once for the whole batch by the caller
            self.result = record(self.run, filtered, cancel, torch_threads=None)
        except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
            self.error = exc
        finally:
            self.run.close()

    def _put(self, item: tuple[str, Any]) -> None:
        import queue

        while self._thread.is_alive():  # a recorder that stopped (cancel, error) takes no more
            try:
                self._queue.put(item, timeout=0.05)
                return
            except queue.Full:
                continue
        if self.error is not None:
            raise self.error

    def put(self, step: Any) -> None:
        self._put(("step", step))

    def finish(self, result: Any) -> Any:
        """End the tile with the inversion's ``result``; the recorded result (after the ingest)."""
        self._put(("end", result))
        self._thread.join()
        if self.error is not None:
            raise self.error
        return self.result

    def abort(self) -> None:
        """End the recording without a result (the tile is redone on a resume)."""
        with contextlib.suppress(BaseException):
            self._put(("end", None))
        self._thread.join()


def measured_tiles_per_step(task: TileTask, config: Any, n_tiles: int) -> tuple[int, str]:
    """``tiles_per_step="auto"`` resolved on the first tile to run: ``(N, reason)``.

    Resolved before the tiles run, so that N = 1 takes :func:`invert_tile`, the plain
    one-network path, tile after tile.  On the CPU the choice is measured: that plain path
    against batches of N = 2, 4, 8 (:func:`~dippas_core.dip.batched.choose_tiles_per_step`);
    the reason, with every measured rate, goes into the photo's run record.
    """
    from ..dip.batched import choose_tiles_per_step, probe_inputs
    from ..dip.device import recording_threads, torch_threads

    dip = config.dip
    img01, device, speed = probe_inputs(task.image, dip)
    P = np.asarray(task.reference, np.float32)
    # measured with the threads the tiles will run with (record's cap, as in the batched path)
    with torch_threads(recording_threads(dip)):
        return choose_tiles_per_step(img01, P, dip, device, speed, n_tiles)


def invert_tiles_batched(
    tasks: list[TileTask],
    config: Any,
    tiles_per_step: int,
    prun: PhotoRun,
    *,
    mode: str,
    cancel: Any = None,
    on_step: Callable[[Any], None] | None = None,
    on_tile: Callable[[Any], None] | None = None,
) -> Generator[tuple[Any, TileOutcome], None, None]:
    """:func:`invert_tile` for several tiles, ``tiles_per_step`` of them per optimiser step.

    Yields ``(tile, outcome)`` as each tile leaves the batch, in the order they finish; the
    tiles' run folders, filter, fallback and assembly are those of :func:`invert_tile`.
    """
    from ..dip.batched import TileDone, TileJob, invert_tiles
    from ..dip.device import recording_threads

    dip = config.dip
    by_key = {task.index: task for task in tasks}
    events = invert_tiles(
        [TileJob(task.index, task.image, task.reference) for task in tasks],
        dip.replace(record_psnr=-math.inf, torch_threads=recording_threads(dip)),
        tiles_per_step=tiles_per_step,
        cancel=cancel,
        fidelity_from=float(dip.record_psnr),
    )
    recorders: dict[Any, _TileRecorder] = {}
    try:
        for event in events:
            task = by_key[event.key]
            if isinstance(event, TileDone):
                rec = recorders.pop(event.key, None)
                if rec is None:  # cancelled before its first step
                    continue
                inv = rec.finish(event.result)
                yield task.tile, _tile_outcome(rec.run, inv, rec.best, config, task.image.dtype)
                continue
            rec = recorders.get(event.key)
            if rec is None:
                if on_tile is not None:
                    on_tile(task.tile)
                run = _create_tile_run(prun.tile_path(task.index), task, config, mode=mode,
                                       force=True)
                rec = recorders[event.key] = _TileRecorder(run, config, cancel)
            rec.put(event.step)
            if on_step is not None:
                on_step(dataclasses.replace(event.step, tile=task.index))
    finally:
        events.close()
        for rec in recorders.values():
            rec.abort()
