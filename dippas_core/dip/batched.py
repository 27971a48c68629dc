"""Many tiles in one optimiser step: N independent DIP inversions run as one batch.

A whole photograph is tens of tiles, each its own inversion (method §4).  One small tile per step
leaves a GPU mostly idle (and, on a CPU, pays the per-operation overhead once per tile); this
module steps ``N = tiles_per_step`` of them at once:

* every tile keeps everything one :func:`~dippas_core.dip.invert` run has (it *is* the same
  per-tile state, :class:`~dippas_core.dip.inversion._Inverter`): its own network weights built
  from its seed, input noise ``z`` and perturbation generator, gamma, Adam state, stopping rule
  and snapshots;
* one forward runs the N networks together with ``torch.func.vmap`` over
  ``torch.func.functional_call``: the per-tile weights are stacked (each step, from the tiles'
  own leaves, so gradients land on them) and vmap's batching rule turns every convolution into
  one grouped convolution over the N tiles.  Batch norm is per tile: each vmapped call normalises
  its own 1×C×H×W batch, exactly what the tile's own network does in training mode (running
  statistics are never used by DIP and are not tracked here);
* one backward of the sum of the N losses gives each tile its own gradient, then each tile's own
  optimiser steps and its gamma is updated by the same :meth:`_Inverter.after_update`.

With the same seed a tile's images equal those of a separate ``invert`` run up to float rounding
(``tests/test_dip_batched.py``): in float64 over whole runs; in float32 the first step agrees to
~1e-5 and then the pixels part within a few steps, as they do for ``invert`` itself under any
change of summation order (Adam amplifies rounding), while the PSNR histories stay together
(docs/dip.md, "Equivalence").  A tile that stops (PSNR reached, ``max_iter``) leaves the batch
at once and the next waiting tile of the same size takes its place.

A batch of one tile (N = 1, or the last tile left) runs that tile's own network, the plain
one-network forward of :func:`~dippas_core.dip.invert`: vmap gains nothing there.

``tiles_per_step="auto"`` measures: on a GPU, the memory one tile's step takes against the free
memory; on the CPU, a few steps of the plain path (N = 1) and of batches of N = 2, 4, 8: the
fastest wins, a batch only when it beats the plain path by :data:`AUTO_MARGIN`.  The choice and
every measured rate are recorded in every tile's ``environment``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import time
from collections import deque
from collections.abc import Generator, Hashable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .._validation import as_plane, check_same_size
from ..errors import DeviceError, InputError
from .config import DIPConfig
from .device import SpeedSettings, resolve_device, speed_settings, torch_threads
from .inversion import (
    InversionResult,
    Step,
    _drop_failed_frames,
    _environment,
    _image_to_unit,
    _Inverter,
    _oom_message,
    _restore_cuda_globals,
    _set_cuda_globals,
    _snapshot_pair,
)

if TYPE_CHECKING:
    import torch

    from ..cancel import CancelToken

__all__ = [
    "TileJob",
    "TileStep",
    "TileDone",
    "invert_tiles",
    "choose_tiles_per_step",
    "measure_tiles_per_step",
    "fastest_tiles_per_step",
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


@dataclass
class TileJob:
    """One tile to invert.

    Attributes
    ----------
    key : hashable
        Names the tile in what :func:`invert_tiles` yields (e.g. its position in the photo).
    image : array_like
        The tile, H×W×3 (uint8, uint16 or float 0..255).
    P : array_like
        Its reference (fingerprint or residual), H×W.
    seed : int or None
        The tile's seed; ``None`` takes the config's.
    """

    key: Hashable
    image: Any = field(repr=False)
    P: Any = field(repr=False)
    seed: int | None = None


@dataclass
class TileStep:
    """One iteration of one tile: its ``key`` and the :class:`~dippas_core.dip.Step`."""

    key: Hashable
    step: Step


@dataclass
class TileDone:
    """A tile that has left the batch, with its :class:`~dippas_core.dip.InversionResult`."""

    key: Hashable
    result: InversionResult


class _Tile(_Inverter):
    """The state of one tile: an ``_Inverter`` whose CUDA globals the batch sets once."""

    def __init__(self, job: _PreparedJob, config: DIPConfig, device: Any, speed: Any) -> None:
        self.device = device
        self.config = config
        self.key = job.key
        self.height, self.width = job.img01.shape[:2]
        self._saved_globals = None  # the batch sets (and restores) them for all tiles
        self.iteration = 0
        self.history: dict[str, list] = {
            k: [] for k in ("iteration", "loss", "psnr", "gamma", "gamma_star")
        }
        self.n_snapshots = 0
        self.started = time.perf_counter()
        try:
            self._allocate(job.img01, job.P, speed)
        except BaseException as exc:
            _drop_failed_frames(exc)
            self.release()
            raise

    def result(self, stop_reason: str, environment: dict[str, Any]) -> InversionResult:
        hist = {
            k: np.asarray(v, dtype=np.int64 if k == "iteration" else np.float64)
            for k, v in self.history.items()
        }
        return InversionResult(
            history=hist,
            n_snapshots=self.n_snapshots,
            stop_reason=stop_reason,
            seed=int(self.config.seed),
            config=self.config.to_dict(),
            environment=dict(environment),
            elapsed_s=time.perf_counter() - self.started,
        )


@dataclass
class _PreparedJob:
    key: Hashable
    img01: np.ndarray
    P: np.ndarray
    config: DIPConfig

    @property
    def size(self) -> tuple[int, int]:
        return self.img01.shape[0], self.img01.shape[1]


def _prepare(jobs: Iterable[TileJob], config: DIPConfig) -> list[_PreparedJob]:
    multiple = 2 ** (len(config.widths) - 1)
    out = []
    keys = set()
    for job in jobs:
        if not isinstance(job, TileJob):
            raise InputError(f"jobs must be TileJob objects, got {type(job).__name__}")
        if job.key in keys:
            raise InputError(f"two tiles have the key {job.key!r}; keys must be unique")
        keys.add(job.key)
        img01 = _image_to_unit(job.image, min_size=multiple)
        plane = as_plane(job.P, "P")
        check_same_size(img01, plane, f"tile {job.key!r}", "P")
        cfg = config if job.seed is None else config.replace(seed=int(job.seed))
        out.append(_PreparedJob(job.key, img01, plane, cfg))
    if not out:
        raise InputError("no tiles to invert")
    return out


class _Batch:
    """The tiles stepping together (all of one size) and the vmapped forward of their networks."""

    def __init__(self, device: Any, speed: SpeedSettings) -> None:
        self.device = device
        self.speed = speed
        self.tiles: list[_Tile] = []
        self._forward = None
        self.amp_dtype = None
        self.scaler = None
        self._names: list[str] = []
        self._size: tuple[int, int] | None = None

    def add(self, tile: _Tile) -> None:
        import torch

        size = (tile.height, tile.width)
        if self.tiles and size != (self.tiles[0].height, self.tiles[0].width):
            raise InputError("all tiles of a batch must have the same size")
        if self._size != size:  # built once per tile size, kept while tiles come and go
            self._build(tile)
            self._size = size
        if self.scaler is None and tile.scaler is not None:
            self.scaler = torch.amp.GradScaler("cuda")  # one loss scale for the batch
        tile.scaler = None
        self.tiles.append(tile)

    def _build(self, tile: _Tile) -> None:
        import torch
        from torch.func import functional_call, replace_all_batch_norm_modules_, vmap

        # the architecture only (weights come from the tiles); batch norm in training mode
        # without running statistics, which DIP never reads and vmap cannot update in place
        template = copy.deepcopy(tile.model)
        replace_all_batch_norm_modules_(template)
        self._names = [name for name, _ in template.named_parameters()]
        size = (tile.height, tile.width)

        def one(params: dict, z: torch.Tensor) -> torch.Tensor:
            return functional_call(template, params, (z[None], size))[0]

        run = vmap(one)
        self._forward = torch.compile(run) if self.speed.compile else run
        self.amp_dtype = tile.amp_dtype

    def forward(self) -> torch.Tensor:
        """N×3×H×W outputs of the tiles' networks on their perturbed inputs."""
        import torch

        # the stacked weights and inputs in the default layout: on the CPU (torch 2.13) vmap's
        # grouped convolutions over channels-last tensors give wrong weight gradients.  (Each
        # tile still draws z in its config's layout, so its noise is the one invert draws.)
        params = {
            name: torch.stack([t.params[name] for t in self.tiles]).contiguous()
            for name in self._names
        }
        z = torch.cat([t.noisy_z for t in self.tiles]).contiguous()
        with torch.autocast(
            self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None
        ):
            return self._forward(params, z)

    def forward_one(self) -> torch.Tensor:
        """1×3×H×W output of a lone tile's own network: the plain one-network forward.

        A batch of one gains nothing from vmap (whose grouped kernels are slower on the CPU), and
        this way N = 1 is exactly :func:`~dippas_core.dip.invert`'s computation.
        """
        import torch

        tile = self.tiles[0]
        with torch.autocast(
            self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None
        ):
            return tile.forward(tile.noisy_z, (tile.height, tile.width))

    def step(self) -> list[tuple[float, float, float, float, Any]]:
        """One optimiser step of every tile: (loss, psnr, gamma, gamma*, snapshot or None) each."""
        import torch

        for t in self.tiles:
            t.perturb()
        out = self.forward_one() if len(self.tiles) == 1 else self.forward()
        out = out.float()
        i_phis = [out[i : i + 1] for i in range(len(self.tiles))]
        losses = [t.loss_of(i_phi) for t, i_phi in zip(self.tiles, i_phis, strict=True)]
        for t in self.tiles:
            t.optimizer.zero_grad(set_to_none=True)
        total = torch.stack(losses).sum()  # d(sum)/d(tile's weights) = d(tile's loss)/d(them)
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            for t in self.tiles:
                self.scaler.step(t.optimizer)
            self.scaler.update()
        else:
            total.backward()
            for t in self.tiles:
                t.optimizer.step()
        for t in self.tiles:
            t.after_update()
        # one host synchronisation for the whole batch
        scalars = torch.stack(
            [t.report(i_phi, loss) for t, i_phi, loss in zip(self.tiles, i_phis, losses,
                                                             strict=True)]
        ).tolist()
        return [
            (loss_v, psnr_v, gamma_v, star_v, t.snapshot(i_phi) if psnr_v >= t.tau else None)
            for t, i_phi, (loss_v, psnr_v, gamma_v, star_v) in zip(
                self.tiles, i_phis, scalars, strict=True
            )
        ]

    def remove(self, tile: _Tile) -> None:
        self.tiles.remove(tile)
        tile.release()

    def release(self) -> None:
        for t in list(self.tiles):
            self.remove(t)
        self._forward = None
        self._size = None


def _with_params(tile: _Tile) -> _Tile:
    tile.params = dict(tile.model.named_parameters())
    return tile


def invert_tiles(
    jobs: Iterable[TileJob],
    config: DIPConfig | dict[str, Any] | None = None,
    *,
    tiles_per_step: int | str | None = None,
    cancel: CancelToken | None = None,
) -> Generator[TileStep | TileDone, None, dict[Hashable, InversionResult]]:
    """Invert many tiles, ``tiles_per_step`` of them in each optimiser step.

    Parameters
    ----------
    jobs : iterable of TileJob
        The tiles (any sizes; a batch holds tiles of one size, taken in the given order).
    config : DIPConfig or dict, optional
        Shared by all tiles (each takes its own seed from its job when set).
    tiles_per_step : int or "auto", optional
        N; default ``config.tiles_per_step``.  ``"auto"``: see :func:`choose_tiles_per_step`.
    cancel : CancelToken, optional
        Checked before every step; once cancelled every running tile ends with
        ``stop_reason == "cancelled"`` and the waiting ones never start.

    Returns
    -------
    generator
        Yields a :class:`TileStep` per tile per iteration (its ``step`` as :func:`invert` would
        yield it, snapshot included) and a :class:`TileDone` when a tile leaves the batch.  Its
        return value maps each started tile's key to its :class:`InversionResult`.

    Raises
    ------
    InputError
        Bad tiles or config (raised here, before the generator starts).
    DeviceError
        Unknown device (here) or out of device memory (by the generator).
    """
    config = DIPConfig.coerce(config)
    prepared = _prepare(jobs, config)
    n = config.tiles_per_step if tiles_per_step is None else tiles_per_step
    device = resolve_device(config.device)
    speed = speed_settings(config, device)
    return _run(prepared, config, device, speed, n, cancel)


def _run(
    jobs: list[_PreparedJob],
    config: DIPConfig,
    device: Any,
    speed: SpeedSettings,
    tiles_per_step: int | str,
    cancel: CancelToken | None,
) -> Generator[TileStep | TileDone, None, dict[Hashable, InversionResult]]:
    import torch

    tile_speed = dataclasses.replace(speed, compile=False)  # the batch compiles its own forward
    saved = _set_cuda_globals(speed) if device.type == "cuda" else None
    results: dict[Hashable, InversionResult] = {}
    batch = _Batch(device, speed)
    threads = config.torch_threads
    try:
        with torch_threads(threads):
            n, why = _resolve_tiles_per_step(tiles_per_step, jobs, config, device, tile_speed)
            environment = {
                **_environment(device, speed),
                "tiles_per_step": n,
                "tiles_per_step_choice": why,
            }
        waiting = deque(jobs)
        while batch.tiles or waiting:
            if cancel is not None and cancel.cancelled:
                break
            with torch_threads(threads):
                _fill(batch, waiting, n, device, tile_speed)
                outcomes = batch.step()
            for tile, (loss, psnr, gamma, star, kept) in zip(
                list(batch.tiles), outcomes, strict=True
            ):
                tile.iteration += 1
                row = (tile.iteration, loss, psnr, gamma, star)
                for k, v in zip(tile.history, row, strict=True):
                    tile.history[k].append(v)
                tile.n_snapshots += kept is not None
                snapshot, on_device = _snapshot_pair(kept)
                env = dict(environment) if tile.iteration == 1 else None
                yield TileStep(
                    tile.key,
                    Step(tile.iteration, loss, psnr, gamma, snapshot, env, on_device, star),
                )
                del snapshot, on_device, kept
                reason = (
                    "psnr" if psnr >= tile.config.stop_psnr
                    else "max_iter" if tile.iteration >= tile.config.max_iter
                    else None
                )
                if reason is not None:
                    key = tile.key
                    results[key] = tile.result(reason, environment)
                    batch.remove(tile)  # releases the tile's state
                    yield TileDone(key, results[key])
        for tile in list(batch.tiles):  # cancelled
            key = tile.key
            results[key] = tile.result("cancelled", environment)
            batch.remove(tile)
            yield TileDone(key, results[key])
    except getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError) as exc:
        _drop_failed_frames(exc)
        raise DeviceError(_batch_oom_message(jobs, config, device)) from exc
    except RuntimeError as exc:
        if "out of memory" not in str(exc).lower():
            raise
        _drop_failed_frames(exc)
        raise DeviceError(_batch_oom_message(jobs, config, device)) from exc
    finally:
        batch.release()
        if device.type == "cuda":
            with contextlib.suppress(Exception):
                torch.cuda.empty_cache()
            _restore_cuda_globals(saved)
    return results


def _batch_oom_message(jobs: list[_PreparedJob], config: DIPConfig, device: Any) -> str:
    base = _oom_message(jobs[0].img01.shape, config, device)
    return base + "; or step fewer tiles at once (tiles_per_step)"


def _fill(batch: _Batch, waiting: deque, n: int, device: Any, speed: SpeedSettings) -> None:
    """Start waiting tiles of the batch's size (the next size once the batch is empty)."""
    if not waiting or len(batch.tiles) >= n:
        return
    size = (batch.tiles[0].height, batch.tiles[0].width) if batch.tiles else waiting[0].size
    for job in [j for j in waiting if j.size == size][: n - len(batch.tiles)]:
        waiting.remove(job)
        batch.add(_with_params(_Tile(job, job.config, device, speed)))


def _resolve_tiles_per_step(
    value: int | str,
    jobs: list[_PreparedJob],
    config: DIPConfig,
    device: Any,
    speed: SpeedSettings,
) -> tuple[int, str]:
    if value != "auto":
        return int(value), "given"
    return choose_tiles_per_step(jobs[0].img01, jobs[0].P, config, device, speed, len(jobs))


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
    batches of N = 2, 4, 8; the fastest wins (:func:`fastest_tiles_per_step`).  The reason
    names every measured rate.  Never more than ``n_tiles`` nor :data:`AUTO_MAX`.
    """
    job = _PreparedJob("auto", img01, P, config)
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
        "the one-network path stepping in turn with each): "
        f"{measured}; fastest: N={best}"
    )


def _choose_by_memory(
    job: _PreparedJob, config: DIPConfig, device: Any, speed: SpeedSettings, cap: int
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
    job: _PreparedJob, config: DIPConfig, device: Any, speed: SpeedSettings, cap: int
) -> dict[int, float]:
    """Pixel-iterations per second of N = 1, 2, 4, 8 (at most ``cap``) tiles per step.

    N = 1 is the plain one-network path (what :func:`~dippas_core.dip.invert` runs); N > 1 the
    vmapped batch, each on throw-away tiles (:func:`_make_probe`).  The plain probe lives
    through the whole measurement and steps in turn with each batch, so that other jobs' load
    hits both alike.  A batch's rate comes from the fastest of its :data:`AUTO_TIMED_STEPS`
    steps; the plain path's from the median over the batches of its fastest step beside each
    (as many steps per figure as a batch has: a minimum over more steps would favour it).  Once
    a batch is slower than the batch of half its size, larger ones are not tried.
    """
    h, w = job.size
    plain = _make_probe(1, job, config, device, speed)
    plain_best: list[float] = []  # the plain path's fastest step beside each batch
    rates: dict[int, float] = {}
    try:
        for n in [c for c in _CPU_CANDIDATES if 1 < c <= cap]:
            probe = _make_probe(n, job, config, device, speed)
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
        self, n: int, job: _PreparedJob, config: DIPConfig, device: Any, speed: SpeedSettings
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


def _make_probe(
    n: int, job: _PreparedJob, config: DIPConfig, device: Any, speed: SpeedSettings
) -> _Probe:
    """A :class:`_Probe` (the one seam where tests inject timings)."""
    return _Probe(n, job, config, device, speed)
