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
    """What a run will cost: ``n_tiles × iterations × seconds_per_iteration``."""

    n_tiles: int
    iterations: int
    seconds_per_iteration: float
    tile_shape: tuple[int, int]
    device: str
    threads: int

    @property
    def seconds(self) -> float:
        return self.n_tiles * self.iterations * self.seconds_per_iteration

    @property
    def text(self) -> str:
        where = self.device
        if "thread" not in where:
            where += f" ({self.threads} thread{'s' if self.threads != 1 else ''})"
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
    dip = config.dip.replace(max_iter=int(iterations) + 1, tau_psnr=math.inf, stop_psnr=math.inf)
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
    return CostEstimate(
        n_tiles=len(plan) if n_tiles is None else int(n_tiles),
        iterations=int(config.dip.max_iter),
        seconds_per_iteration=per_it,
        tile_shape=(first.h, first.w),
        device=str(env.get("device", dip.device)),
        threads=int(env.get("torch_threads", 1)),
    )
