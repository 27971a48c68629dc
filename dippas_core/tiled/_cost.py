"""What a photo run will cost: a few DIP iterations timed at the tile size, scaled to the run."""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["CostEstimate", "estimate_cost"]


@dataclass
class CostEstimate:
    """What a run will cost: ``n_tiles × iterations × seconds_per_iteration``.

    ``seconds_per_iteration`` is per tile: with ``tiles_per_step`` > 1 it is a batch step's time
    over the tiles in it.
    """

    n_tiles: int
    iterations: int
    seconds_per_iteration: float
    tile_shape: tuple[int, int]
    device: str
    threads: int
    tiles_per_step: int = 1

    @property
    def seconds(self) -> float:
        return self.n_tiles * self.iterations * self.seconds_per_iteration

    @property
    def text(self) -> str:
        where = self.device
        if "thread" not in where:
            where += f" ({self.threads} thread{'s' if self.threads != 1 else ''})"
        if self.tiles_per_step > 1:
            where += f", {self.tiles_per_step} tiles per step"
        return (
            f"≈ {self.n_tiles} tiles × ~{self.iterations} iterations (at most) × "
            f"{self.seconds_per_iteration * 1e3:.0f} ms ≈ {_duration(self.seconds)} on {where}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "seconds": self.seconds, "text": self.text}


def _duration(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def estimate_cost(
    photo_shape: tuple[int, ...],
    config: Any,
    device: str | None = None,
    *,
    iterations: int = 3,
    n_tiles: int | None = None,
) -> CostEstimate:
    """Time a few DIP iterations at the tile size on the chosen device; scale to the whole run.

    With several tiles per step (``config.dip.tiles_per_step``) a batch of them is timed as
    well: a given N > 1 is the batch's time per tile; ``"auto"`` on the CPU times a thread batch
    of one tile per core beside the one-network path and takes the faster, as ``auto`` will.
    (``"auto"`` on a GPU sizes its batch by free memory: the one-network time stays, an upper
    bound.)

    Parameters
    ----------
    photo_shape
        H×W(×3) of the photo (or region) to anonymize.
    config
        The ``AnonymizeConfig`` of the run.
    device
        Overrides ``config.dip.device``.
    iterations
        Iterations timed after one warm-up iteration.
    n_tiles
        Tiles still to run (a resumed run); default every tile of the plan.
    """
    from ..dip import invert
    from ..tiling import plan_tiles

    plan = plan_tiles(photo_shape[:2], config.tile_size, config.overlap)
    first = plan.tiles[0]
    dip = config.dip.replace(max_iter=int(iterations) + 1, record_psnr=math.inf, stop_psnr=math.inf)
    if device is not None:
        dip = dip.replace(device=device)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (first.h, first.w, 3), dtype=np.uint8)
    gen = invert(img, np.zeros((first.h, first.w), np.float32), dip)
    try:
        step = next(gen)  # set-up and the first iteration (kernels loaded, caches warm)
        env = step.environment or {}
        t0 = time.perf_counter()
        for _ in range(int(iterations)):
            next(gen)
        per_it = (time.perf_counter() - t0) / max(1, int(iterations))
    finally:
        gen.close()
    n_run = len(plan) if n_tiles is None else int(n_tiles)
    n_step = _planned_tiles_per_step(dip, env, n_run)
    if n_step > 1:
        per_tile = _batch_seconds_per_tile(img, dip, n_step, int(iterations))
        if dip.tiles_per_step == "auto" and per_tile >= per_it:
            n_step = 1  # auto will keep the one-network path
        else:
            per_it = per_tile
    return CostEstimate(
        n_tiles=n_run,
        iterations=int(config.dip.max_iter),
        seconds_per_iteration=per_it,
        tile_shape=(first.h, first.w),
        device=str(env.get("device", dip.device)),
        threads=int(env.get("torch_threads", 1)),
        tiles_per_step=n_step,
    )


def _planned_tiles_per_step(dip: Any, env: dict, n_tiles: int) -> int:
    """The N a run will step: a given N, or for ``"auto"`` on the CPU one tile per core."""
    from ..dip.device import usable_cpus

    if dip.tiles_per_step != "auto":
        return max(1, min(int(dip.tiles_per_step), n_tiles))
    if not str(env.get("device", dip.device)).startswith("cpu"):
        return 1
    return max(1, min(usable_cpus(), n_tiles))


def _batch_seconds_per_tile(img: np.ndarray, dip: Any, n: int, iterations: int) -> float:
    """Median seconds of a batch step of ``n`` throw-away tiles, over ``n``."""
    from ..dip.batched._auto import _make_probe
    from ..dip.batched._jobs import _PreparedJob
    from ..dip.device import torch_threads
    from ._batched import _probe_inputs, _tile_threads

    img01, device, speed = _probe_inputs(img, dip)
    job = _PreparedJob("estimate", img01, np.zeros(img.shape[:2], np.float32), dip)
    with torch_threads(_tile_threads(dip)):  # as the run's batch will be timed and run
        probe = _make_probe(n, job, dip, device, speed)  # one warm-up step
        try:
            times = [probe.step_seconds() for _ in range(max(1, iterations))]
        finally:
            probe.release()
    return float(np.median(times)) / n
