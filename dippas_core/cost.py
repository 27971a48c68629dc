"""What a run will cost, before it starts: the one cost model of the command line and the viewer.

:class:`CostEstimate` says it at two levels of knowledge.  The *work* (pixels × iterations, at
most) needs only the plan (:func:`plan_cost`): the viewer asks before a large run from it.  The
*time* needs a few DIP iterations timed at the tile size on the device the run will use
(:func:`estimate_cost`): ``n_tiles × iterations × seconds per iteration``, an upper bound (a tile
stops at its PSNR well before ``max_iter``), with the range it is sure of in ``low_s``/``high_s``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["WORK_BUDGET", "CostEstimate", "duration_text", "estimate_cost", "plan_cost"]

#: Work (pixels × iterations) above which the viewer asks before a run: the ``cpu`` network on a
#: 256×256 crop for 3000 iterations, minutes on a laptop CPU.
WORK_BUDGET = 256 * 256 * 3000


@dataclass(frozen=True)
class CostEstimate:
    """What a run will cost.

    Attributes
    ----------
    n_tiles, tile_shape
        Tiles still to run and the first one's H×W.
    iterations
        Iterations of a tile at most (the DIP's ``max_iter``).
    pixels
        Pixels of the photo (or region) to anonymize.
    device
        Where the tiles run (the device timed, once timed).
    seconds_per_iteration
        Per tile (with ``tiles_per_step`` > 1 a batch step's time over its tiles); None until
        timed (:func:`estimate_cost`).
    threads, tiles_per_step
        Torch threads of a tile and tiles per optimiser step, as timed.
    low_s
        The shortest the run can take, where something says so (None: not known).
    """

    n_tiles: int
    iterations: int
    tile_shape: tuple[int, int]
    pixels: int
    device: str
    seconds_per_iteration: float | None = None
    threads: int = 1
    tiles_per_step: int = 1
    low_s: float | None = None

    # -- the time (once timed) ---------------------------------------------------------------
    @property
    def seconds(self) -> float | None:
        """The expected time (s): every tile to ``iterations``; None until timed."""
        return self.high_s

    @property
    def high_s(self) -> float | None:
        """The longest the run takes: every tile to ``iterations`` (None until timed)."""
        if self.seconds_per_iteration is None:
            return None
        return self.n_tiles * self.iterations * self.seconds_per_iteration

    @property
    def text(self) -> str:
        """One line: the terms of the estimate and its time."""
        if self.seconds_per_iteration is None:
            return (f"{self.n_tiles} tiles × ~{self.iterations} iterations (at most), "
                    f"{self.pixels / 1e6:.2f} MP: not timed")
        where = self.device
        if "thread" not in where:
            where += f" ({self.threads} thread{'s' if self.threads != 1 else ''})"
        if self.tiles_per_step > 1:
            where += f", {self.tiles_per_step} tiles per step"
        return (
            f"≈ {self.n_tiles} tiles × ~{self.iterations} iterations (at most) × "
            f"{self.seconds_per_iteration * 1e3:.0f} ms ≈ {duration_text(self.seconds)} on "
            f"{where}"
        )

    # -- the work (from the plan alone) ------------------------------------------------------
    @property
    def work(self) -> int:
        """Pixels × iterations."""
        return self.pixels * self.iterations

    @property
    def ratio(self) -> float:
        """Work as a multiple of :data:`WORK_BUDGET`."""
        return self.work / WORK_BUDGET

    @property
    def needs_confirmation(self) -> bool:
        """Above the budget (on any device: no GPU speed was measured for this budget)."""
        return self.ratio > 1.0

    def question(self) -> str:
        """The confirmation question of a large run, in the analyst's words: worded from the
        timed estimate when there is one (its time in the unit it is read in: minutes, hours,
        days, weeks), never a guessed "hours"."""
        on_gpu = self.device.startswith(("cuda", "mps"))
        advice = (
            "Try a region first (Draw, then a rectangle a few hundred pixels on a side)"
            + ("." if on_gpu else " or run on a GPU.")
        )
        size = f"{self.pixels / 1e6:.2f} megapixels" + (
            f" in {self.n_tiles} tiles" if self.n_tiles > 1 else "")
        if self.seconds is not None:
            when = f"Measured on {self.device}: about {duration_text(self.seconds)} ({self.text})."
        else:
            when = (
                f"That is about {self.ratio:.0f}× the work of a 256×256 preview (minutes on a "
                "laptop CPU); no time was measured on this device."
            )
        keeps = (
            "Stop keeps the tiles finished by then, and Run resumes from them."
            if self.n_tiles > 1 else "Stop keeps only the snapshots reached by then."
        )
        return (
            f"This run is large: {size} for up to {self.iterations} iterations. {when} {keeps}"
            f"\n\n{advice} Start the whole run anyway?"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "seconds": self.seconds, "high_s": self.high_s,
                "text": self.text}


def duration_text(seconds: float) -> str:
    """``"40 s"``, ``"12 min"``, ``"3.5 h"``, ``"2.3 days"``, ``"3.1 weeks"``: a time in a
    person's words, in the unit it is read in (weeks are never "hours")."""
    if seconds < 120:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds < 14 * 86400:
        return f"{seconds / 86400:.1f} days"
    return f"{seconds / (7 * 86400):.1f} weeks"


def plan_cost(
    photo_shape: tuple[int, ...], config: Any, device: str | None = None, *,
    n_tiles: int | None = None,
) -> CostEstimate:
    """The work of a run, from its plan alone (nothing is timed).

    Parameters
    ----------
    photo_shape
        H×W(×3) of the photo (or region) to anonymize.
    config
        The ``AnonymizeConfig`` of the run.
    device
        Where it runs (default ``config.dip.device``).
    n_tiles
        Tiles still to run (a resumed run); default every tile of the plan.
    """
    from .tiling import plan_tiles

    plan = plan_tiles(photo_shape[:2], config.tile_size, config.overlap)
    first = plan.tiles[0]
    return CostEstimate(
        n_tiles=len(plan) if n_tiles is None else int(n_tiles),
        iterations=int(config.dip.max_iter),
        tile_shape=(first.h, first.w),
        pixels=int(photo_shape[0]) * int(photo_shape[1]),
        device=str(config.dip.device if device is None else device),
    )


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
    from .dip import invert

    planned = plan_cost(photo_shape, config, device, n_tiles=n_tiles)
    h, w = planned.tile_shape
    dip = config.dip.replace(max_iter=int(iterations) + 1, record_psnr=math.inf, stop_psnr=math.inf)
    if device is not None:
        dip = dip.replace(device=device)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    gen = invert(img, np.zeros((h, w), np.float32), dip)
    try:
        step = next(gen)  # set-up and the first iteration (kernels loaded, caches warm)
        env = step.environment or {}
        t0 = time.perf_counter()
        for _ in range(int(iterations)):
            next(gen)
        per_it = (time.perf_counter() - t0) / max(1, int(iterations))
    finally:
        gen.close()
    n_step = _planned_tiles_per_step(dip, env, planned.n_tiles)
    if n_step > 1:
        per_tile = _batch_seconds_per_tile(img, dip, n_step, int(iterations))
        if dip.tiles_per_step == "auto" and per_tile >= per_it:
            n_step = 1  # auto will keep the one-network path
        else:
            per_it = per_tile
    return dataclasses.replace(
        planned,
        seconds_per_iteration=per_it,
        device=str(env.get("device", dip.device)),
        threads=int(env.get("torch_threads", 1)),
        tiles_per_step=n_step,
    )


def _planned_tiles_per_step(dip: Any, env: dict, n_tiles: int) -> int:
    """The N a run will step: a given N, or for ``"auto"`` on the CPU one tile per core."""
    from .dip.device import usable_cpus

    if dip.tiles_per_step != "auto":
        return max(1, min(int(dip.tiles_per_step), n_tiles))
    if not str(env.get("device", dip.device)).startswith("cpu"):
        return 1
    return max(1, min(usable_cpus(), n_tiles))


def _batch_seconds_per_tile(img: np.ndarray, dip: Any, n: int, iterations: int) -> float:
    """Median seconds of a batch step of ``n`` throw-away tiles, over ``n``."""
    from .dip.batched import PreparedJob, make_probe, probe_inputs
    from .dip.device import recording_threads, torch_threads

    img01, device, speed = probe_inputs(img, dip)
    job = PreparedJob("estimate", img01, np.zeros(img.shape[:2], np.float32), dip)
    with torch_threads(recording_threads(dip)):  # as the run's batch will be timed and run
        probe = make_probe(n, job, dip, device, speed)  # one warm-up step
        try:
            times = [probe.step_seconds() for _ in range(max(1, iterations))]
        finally:
            probe.release()
    return float(np.median(times)) / n
