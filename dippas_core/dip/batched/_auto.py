"""``tiles_per_step="auto"``: how many tiles step together, by memory (CUDA) or by measurement."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ...config import DIPConfig
from ..device import SpeedSettings
from ._jobs import PreparedJob
from ._stack import _Batch, _Tile, _with_params, batch_engine

__all__ = [
    "AUTO_MARGIN",
    "AUTO_MAX",
    "AUTO_MEMORY_SHARE",
    "AUTO_TIMED_STEPS",
    "choose_tiles_per_step",
    "fastest_tiles_per_step",
    "make_probe",
    "measure_tiles_per_step",
    "probe_inputs",
]

#: Largest N that ``"auto"`` picks (beyond it a GPU gains little and a slow tile delays more).
AUTO_MAX = 64
#: Share of the free GPU memory that ``"auto"`` plans to use.
AUTO_MEMORY_SHARE = 0.7
#: A batch must be this much faster than the one-network path for ``"auto"`` to pick it.
AUTO_MARGIN = 1.05
#: Timed steps per candidate N of the CPU measurement (after one warm-up step).
AUTO_TIMED_STEPS = 2
_CPU_CANDIDATES = (1, 2, 4, 8)


def choose_tiles_per_step(
    img01: np.ndarray,
    P: np.ndarray,
    config: DIPConfig,
    device: Any,
    speed: SpeedSettings,
    n_tiles: int,
) -> tuple[int, str]:
    """N for ``tiles_per_step="auto"``, and why: ``(N, reason)``.

    On CUDA: the memory one step of one tile takes (measured on a throw-away tile) against
    :data:`AUTO_MEMORY_SHARE` of the free device memory.  On the CPU (and MPS): a short
    measurement, :func:`measure_tiles_per_step`, of the plain one-network path (N = 1) against
    batches of N = 2, 4, 8 (on the CPU the threads engine: each tile's network in its own
    thread); the fastest wins (:func:`fastest_tiles_per_step`).  The reason
    names every measured rate.  Never more than ``n_tiles`` nor :data:`AUTO_MAX`.
    """
    job = PreparedJob("auto", img01, P, config)
    cap = max(1, min(int(n_tiles), AUTO_MAX))
    if cap == 1:
        return 1, "one tile"
    if device.type == "cuda":
        return _choose_by_memory(job, config, device, speed, cap)
    rates = measure_tiles_per_step(job, config, device, speed, cap)
    best = fastest_tiles_per_step(rates)
    measured = ", ".join(
        f"N={n}{' (one network)' if n == 1 else ''}: {rate / 1e3:.1f} kpx·it/s"
        for n, rate in rates.items()
    )
    return best, (
        f"measured on the CPU ({AUTO_TIMED_STEPS} timed steps per batch after 1 warm-up, "
        f"batches by {batch_engine(device)}, "
        "the one-network path stepping in turn with each): "
        f"{measured}; fastest: N={best}"
    )


def _choose_by_memory(
    job: PreparedJob, config: DIPConfig, device: Any, speed: SpeedSettings, cap: int
) -> tuple[int, str]:
    import torch

    torch.cuda.synchronize(device)
    free, _total = torch.cuda.mem_get_info(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    # two tiles, so that the probe runs the vmapped forward (a lone tile runs its own network,
    # which needs less than a tile of a batch)
    probe = _Batch(device, speed)
    try:
        for _ in range(2):
            probe.add(_with_params(_Tile(job, config, device, speed)))
        probe.step()
        torch.cuda.synchronize(device)
        per_tile = max((torch.cuda.max_memory_allocated(device) - before) // 2, 1)
    finally:
        probe.release()
    n = int(AUTO_MEMORY_SHARE * free // per_tile)
    n = max(1, min(n, cap))
    return n, f"memory: {per_tile / 2**20:.0f} MiB per tile, {free / 2**30:.1f} GiB free"


def measure_tiles_per_step(
    job: PreparedJob, config: DIPConfig, device: Any, speed: SpeedSettings, cap: int
) -> dict[int, float]:
    """Pixel-iterations per second of N = 1, 2, 4, 8 (at most ``cap``) tiles per step.

    N = 1 is the plain one-network path (what :func:`~dippas_core.dip.invert` runs); N > 1 a
    batch in the device's engine (:func:`~dippas_core.dip.batched._stack.batch_engine`), each on
    throw-away tiles (:func:`make_probe`).  The plain probe lives
    through the whole measurement and steps in turn with each batch, so that other jobs' load
    hits both alike.  A batch's rate comes from the fastest of its :data:`AUTO_TIMED_STEPS`
    steps; the plain path's from the median over the batches of its fastest step beside each
    (as many steps per figure as a batch has: a minimum over more steps would favour it).  Once
    a batch is slower than the batch of half its size, larger ones are not tried.
    """
    h, w = job.size
    plain = make_probe(1, job, config, device, speed)
    plain_best: list[float] = []  # the plain path's fastest step beside each batch
    rates: dict[int, float] = {}
    try:
        for n in [c for c in _CPU_CANDIDATES if 1 < c <= cap]:
            probe = make_probe(n, job, config, device, speed)
            plain_times, times = [], []
            try:
                for _ in range(AUTO_TIMED_STEPS):
                    plain_times.append(plain.step_seconds())
                    times.append(probe.step_seconds())
            finally:
                probe.release()
            plain_best.append(min(plain_times))
            rates[n] = n * h * w / min(times)
            if n > 2 and rates[n] < rates[n // 2]:
                break  # past the best batch
        if not plain_best:  # no batch to try (cap 1)
            plain_best.append(min(plain.step_seconds() for _ in range(AUTO_TIMED_STEPS)))
    finally:
        plain.release()
    return {1: h * w / float(np.median(plain_best)), **rates}


def fastest_tiles_per_step(rates: dict[int, float]) -> int:
    """The N of the highest rate; a batch must beat the one-network rate by :data:`AUTO_MARGIN`.

    The margin keeps the plain path when a batch is only as fast within measurement noise (a
    batch also delays every tile's snapshots until its slowest step).
    """
    plain = rates.get(1, 0.0)
    batched = {n: r for n, r in rates.items() if n > 1}
    if not batched:
        return 1
    best = max(batched, key=batched.__getitem__)
    return best if batched[best] > AUTO_MARGIN * plain else 1


class _Probe:
    """A throw-away batch of ``n`` copies of one tile, warmed up by one step."""

    def __init__(
        self, n: int, job: PreparedJob, config: DIPConfig, device: Any, speed: SpeedSettings
    ) -> None:
        self.n = n
        self.batch = _Batch(device, speed)
        try:
            for _ in range(n):
                self.batch.add(_with_params(_Tile(job, config, device, speed)))
            self.batch.step()  # warm-up: first-call set-up of the kernels
        except BaseException:
            self.batch.release()
            raise

    def step_seconds(self) -> float:
        """Wall seconds of one more step."""
        t0 = time.perf_counter()
        self.batch.step()
        return time.perf_counter() - t0

    def release(self) -> None:
        self.batch.release()


def make_probe(
    n: int, job: PreparedJob, config: DIPConfig, device: Any, speed: SpeedSettings
) -> _Probe:
    """A :class:`_Probe` (the one seam where tests inject timings)."""
    return _Probe(n, job, config, device, speed)


def probe_inputs(image: np.ndarray, config: DIPConfig) -> tuple[np.ndarray, Any, SpeedSettings]:
    """What a throw-away batch of tiles like ``image`` needs: ``(img01, device, speed)``.

    The batch compiles nothing (its tiles' own networks are not compiled either).
    """
    import dataclasses

    from ..device import resolve_device, speed_settings
    from ..inversion import image_to_unit

    device = resolve_device(config.device)
    speed = dataclasses.replace(speed_settings(config, device), compile=False)
    return image_to_unit(image, min_size=2 ** (len(config.widths) - 1)), device, speed
