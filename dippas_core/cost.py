"""What a run will cost, before it starts: the one cost model of the command line and the viewer.

:class:`CostEstimate` says it at two levels of knowledge.  The *work* (pixels × iterations, at
most) needs only the plan (:func:`plan_cost`): the viewer asks before a large run from it.  The
*time* needs a few DIP iterations timed at the tile size on the device the run will use
(:func:`estimate_cost`).  Given the photo's pixels, and with a configuration whose fit starts from
the photo's low band (``zero_head`` and ``low_pass_sigma``, the ``cpu`` preset), the iterations
each tile needs are predicted from its content (:func:`expected_iterations`: how far the low band
alone is below the stopping PSNR), so the time is an expectation with a range
(``low_s``..``high_s``); otherwise it is the upper bound ``n_tiles × max_iter × seconds``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "ITERATION_MODEL",
    "WORK_BUDGET",
    "CostEstimate",
    "duration_text",
    "estimate_cost",
    "expected_iterations",
    "fit_iteration_model",
    "iterations_for_gap",
    "plan_cost",
    "start_psnr",
    "tile_iterations",
]

#: Work (pixels × iterations) above which the viewer asks before a run: the ``cpu`` network on a
#: 256×256 crop for 3000 iterations, minutes on a laptop CPU.
WORK_BUDGET = 256 * 256 * 3000

#: Iterations a tile needs against its *gap*, how far below the stopping PSNR its own low band
#: lies (:func:`start_psnr`), plus ``offset`` dB (a tile whose low band is a little above the
#: stop still needs some iterations: its detail must come back within the fidelity bars):
#: ``scale · (gap + offset) ** power`` (at least 1), the mean iterations at that gap
#: (:func:`fit_iteration_model`).  Fitted with the ``cpu`` preset on 392 tiles: three whole
#: photos of three cameras, two 4-tile regions and the speed benchmark's six held-out tiles
#: (``scripts/calibrate_estimate.py --leave-one-out``;
#: docs/eval/2026-12-06-estimate-and-fit-bars.md).  Each of those left out of the fit came out
#: at 0.80–1.24 times the prediction, and the seconds per iteration measured before a run at
#: 0.9–1.35 times what the run took: hence the printed range, ``low``–``high`` times the expected
#: time.  The run's ETA (``progress.PhotoProgress``) corrects it by the pace of the finished
#: tiles.
ITERATION_MODEL = {"scale": 1.445, "power": 2.05, "offset": 8.5, "low": 0.7, "high": 2.0}


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
    tile_seconds
        Expected seconds of each tile still to run, by its index in the plan, as it runs (in a
        batch of ``tiles_per_step``: its wall time there); empty when the iterations are not
        predicted (then every tile is counted at ``iterations``).
    tile_iterations
        Expected iterations of each tile still to run (empty: not predicted).
    high_factor
        With predicted iterations: the longest the run takes, as a multiple of the expectation.
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
    tile_seconds: dict[int, float] = dataclasses.field(default_factory=dict)
    tile_iterations: dict[int, int] = dataclasses.field(default_factory=dict)
    high_factor: float = 1.0

    # -- the time (once timed) ---------------------------------------------------------------
    @property
    def predicted(self) -> bool:
        """Whether the iterations of each tile were predicted from the photo's content."""
        return bool(self.tile_seconds)

    @property
    def seconds(self) -> float | None:
        """The expected time (s): the predicted tiles, else every tile to ``iterations``; None
        until timed."""
        if self.seconds_per_iteration is None:
            return None
        if self.predicted:
            return sum(self.tile_seconds.values()) / max(1, self.tiles_per_step)
        return self.high_s

    @property
    def high_s(self) -> float | None:
        """The longest the run takes (None until timed): every tile to ``iterations``, or with
        predicted iterations the expectation times :attr:`high_factor`."""
        if self.seconds_per_iteration is None:
            return None
        if self.predicted:
            return self.seconds * self.high_factor
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
        if self.predicted:
            its = sum(self.tile_iterations.values())
            return (
                f"≈ {duration_text(self.seconds)} on {where} (between "
                f"{duration_text(self.low_s or 0.0)} and {duration_text(self.high_s)}): "
                f"{self.n_tiles} tiles, {its} iterations expected from their content "
                f"(at most {self.n_tiles * self.iterations}) × "
                f"{self.seconds_per_iteration * 1e3:.0f} ms"
            )
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
                "text": self.text,
                "tile_seconds": {str(k): v for k, v in self.tile_seconds.items()},
                "tile_iterations": {str(k): v for k, v in self.tile_iterations.items()}}


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


def start_psnr(tile: np.ndarray, sigma: float) -> float:
    """PSNR (dB) of a tile's own low band (a Gaussian of ``sigma`` pixels, mirrored borders, as
    the fit restores it) against the tile: where a fit that starts from the low band starts."""
    from scipy.ndimage import gaussian_filter

    from .io import to_float255

    t = to_float255(np.asarray(tile)).astype(np.float64)
    t = t if t.ndim == 3 else t[..., None]
    mse = 0.0
    for c in range(t.shape[2]):
        low = gaussian_filter(t[..., c], sigma, mode="mirror", truncate=3.0)
        mse += float(np.mean((low - t[..., c]) ** 2))
    mse /= t.shape[2]
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def expected_iterations(start: float, config: Any) -> int:
    """Iterations a tile whose low band alone reaches ``start`` dB is expected to need
    (:data:`ITERATION_MODEL`), at least 1 and at most the DIP's ``max_iter``."""
    gap = float(config.dip.stop_psnr) - float(start)
    return iterations_for_gap(gap, int(config.dip.max_iter))


def iterations_for_gap(gap: float, max_iter: int, model: dict[str, float] | None = None) -> int:
    """:data:`ITERATION_MODEL` (or ``model``) at ``gap`` dB, at least 1, at most ``max_iter``."""
    m = ITERATION_MODEL if model is None else model
    x = gap + m.get("offset", 0.0)
    if not x > 0:
        return 1
    return int(min(max(1, round(m["scale"] * x ** m["power"])), max_iter))


def fit_iteration_model(gaps: Any, iterations: Any) -> dict[str, float]:
    """:data:`ITERATION_MODEL`'s ``scale``, ``power`` and ``offset`` fitted to finished tiles (their
    gap in dB and the iterations they took), by Poisson likelihood; ``low``/``high``: the 10 %
    and 90 % quantiles of actual over predicted per tile.

    The estimate is a sum over tiles, so the model must give a tile's *mean* iterations at its
    gap, not the median (a least-squares fit of the logs): at one gap tiles take from one to
    hundreds of iterations.  For each ``offset`` (a grid of quarter dB, 0–16) and ``power`` (a grid
    of 0.05, 0.2–3) the likelihood's ``scale`` is exact — the iterations of the tiles with
    ``gap + offset > 0`` (less one per tile below, predicted one iteration each) over the sum of
    ``(gap + offset) ** power`` — so the predicted total is the actual total of the fitted tiles
    (before the cap of ``max_iter``); the pair of least Poisson deviance is kept.

    Raises
    ------
    InputError
        Fewer than three tiles with ``gap + offset > 0`` for every offset, or mismatched lengths.
    """
    from .errors import InputError

    g = np.asarray(gaps, dtype=np.float64).ravel()
    y = np.asarray(iterations, dtype=np.float64).ravel()
    if g.shape != y.shape or not np.all(np.isfinite(g)) or np.any(y < 1):
        raise InputError("gaps and iterations must be finite, of one length, iterations >= 1")
    best: tuple[float, dict[str, float]] | None = None
    for offset in np.arange(0.0, 16.001, 0.25):
        x = g + offset
        use = x > 0
        if use.sum() < 3:
            continue
        for power in np.arange(0.2, 3.001, 0.05):
            scale = (y[use].sum() - (~use).sum()) / np.sum(x[use] ** power)
            if not scale > 0:
                continue
            mu = np.ones_like(y)
            mu[use] = np.maximum(scale * x[use] ** power, 1.0)
            deviance = float(2.0 * np.sum(y * np.log(y / mu) - (y - mu)))
            if best is None or deviance < best[0]:
                best = (deviance, {"scale": float(scale), "power": round(float(power), 2),
                                   "offset": float(offset)})
    if best is None:
        raise InputError("too few tiles below the stopping PSNR to fit the iteration model")
    model = best[1]
    predicted = np.array([iterations_for_gap(v, 10**9, model) for v in g], dtype=np.float64)
    model["low"], model["high"] = (float(q) for q in np.quantile(y / predicted, [0.1, 0.9]))
    return model


def predicts_iterations(config: Any) -> bool:
    """Whether :func:`expected_iterations` describes this configuration's fits: they start from
    the photo's low band (``zero_head`` with ``low_pass_sigma``), as the model was fitted."""
    dip = config.dip
    return bool(dip.zero_head and dip.low_pass_sigma)


def estimate_cost(
    photo_shape: tuple[int, ...],
    config: Any,
    device: str | None = None,
    *,
    iterations: int = 3,
    n_tiles: int | None = None,
    photo: np.ndarray | None = None,
    tiles: Sequence[int] | None = None,
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
        Tiles still to run (a resumed run: the last ``n_tiles`` of the plan); default every tile.
    tiles
        The plan's indices of the tiles still to run, wherever they lie (a resumed run whose
        folder lost a tile in the middle); their content is predicted, ``n_tiles`` is their count.
    photo
        The photo (or region) itself: with a configuration that starts from its low band
        (:func:`predicts_iterations`), each tile's iterations are predicted from its content
        (:func:`expected_iterations`) and the estimate is an expectation with a range.
    """
    from .dip import invert

    if tiles is not None:
        n_tiles = len(tiles)
    planned = plan_cost(photo_shape, config, device, n_tiles=n_tiles)
    h, w = planned.tile_shape
    dip = config.dip.replace(max_iter=int(iterations) + 1, record_psnr=math.inf, stop_psnr=math.inf)
    if device is not None:
        dip = dip.replace(device=device)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    # timed with the fidelity bars measured at every step, as above the recording threshold
    gen = invert(img, np.zeros((h, w), np.float32), dip, fidelity_from=-math.inf)
    try:
        t0 = time.perf_counter()
        step = next(gen)  # set-up and the first iteration (kernels loaded, caches warm)
        setup = time.perf_counter() - t0
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
    timed = dataclasses.replace(
        planned,
        seconds_per_iteration=per_it,
        device=str(env.get("device", dip.device)),
        threads=int(env.get("torch_threads", 1)),
        tiles_per_step=n_step,
    )
    if photo is None or not predicts_iterations(config):
        return timed
    return _predicted(timed, photo, config, setup, tiles)


def tile_iterations(photo: np.ndarray, config: Any, first: int = 0,
                    indices: Sequence[int] | None = None) -> dict[int, int]:
    """Each tile's expected iterations (:func:`expected_iterations` of its content), by index,
    for the tiles of ``config``'s plan of ``photo`` from ``first`` on (or those of ``indices``)."""
    from .tiling import plan_tiles

    plan = plan_tiles(photo.shape[:2], config.tile_size, config.overlap)
    sigma = float(config.dip.low_pass_sigma)
    chosen = plan.tiles[first:] if indices is None else [plan.tiles[i] for i in indices]
    return {t.index: expected_iterations(start_psnr(photo[t.slices], sigma), config)
            for t in chosen}


def _predicted(timed: CostEstimate, photo: np.ndarray, config: Any, setup: float,
               tiles: Sequence[int] | None = None) -> CostEstimate:
    """``timed`` with each tile's iterations and seconds predicted from its content: the tiles
    of ``tiles``, else the plan's last ``timed.n_tiles``."""
    from .tiling import plan_tiles

    n_plan = len(plan_tiles(photo.shape[:2], config.tile_size, config.overlap))
    its = tile_iterations(photo, config, first=n_plan - timed.n_tiles, indices=tiles)
    n = max(1, timed.tiles_per_step)
    # a tile in a batch of n advances one iteration per batch step: n × the per-tile time
    seconds = {i: setup + k * timed.seconds_per_iteration * n for i, k in its.items()}
    expected = sum(seconds.values()) / n
    return dataclasses.replace(
        timed, tile_iterations=its, tile_seconds=seconds,
        low_s=expected * ITERATION_MODEL["low"],
        high_factor=ITERATION_MODEL["high"],
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
    job = PreparedJob("estimate", img01, np.zeros(img.shape[:2], np.float32), dip,
                      fidelity_from=-math.inf)  # the bars measured, as in estimate_cost
    with torch_threads(recording_threads(dip)):  # as the run's batch will be timed and run
        probe = make_probe(n, job, dip, device, speed)  # one warm-up step
        try:
            times = [probe.step_seconds() for _ in range(max(1, iterations))]
        finally:
            probe.release()
    return float(np.median(times)) / n
