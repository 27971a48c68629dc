"""Tiles that step together: each tile's own state, and how their networks run together."""

from __future__ import annotations

import copy
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from ...config import DIPConfig
from ...errors import InputError
from ..device import SpeedSettings, usable_cpus
from ..fitting import bars_checked_from
from ..inversion import InversionResult, Inverter, drop_failed_frames

if TYPE_CHECKING:
    import torch

    from ._jobs import PreparedJob

__all__: list[str] = []

#: How the tiles of a batch run together: ``"vmap"`` (one vmapped forward of the stacked
#: networks: grouped convolutions) or ``"threads"`` (each tile's own network stepped in its own
#: thread with one torch thread).  Chosen by measurement (docs/dip.md, "Tiles per step on this
#: CPU"): on a 2-core CPU vmap's grouped convolutions ran 0.3–0.75× the plain path's speed while
#: thread batches run 1.2–1.7× of it; on a GPU one vmapped kernel fills the device.
ENGINES = ("vmap", "threads")


def batch_engine(device: Any) -> str:
    """The engine a batch uses on ``device``: threads on the CPU, vmap on a GPU."""
    return "threads" if device.type == "cpu" else "vmap"


def _one_torch_thread() -> None:
    import torch

    # OpenMP's thread count is per calling thread (torch's CPU builds): this pins the pool
    # thread alone, the caller keeps its own
    torch.set_num_threads(1)


def _restore_default_threads() -> None:
    """Make the calling thread's count torch's default again for threads started later.

    A pool thread's ``set_num_threads(1)`` also becomes the count every thread started after it
    inherits (a viewer's next worker); the caller's own count is untouched by the pool.
    """
    import torch

    torch.set_num_threads(torch.get_num_threads())


class _Tile(Inverter):
    """The state of one tile: an ``Inverter`` whose CUDA globals the batch sets once."""

    def __init__(self, job: PreparedJob, config: DIPConfig, device: Any, speed: Any) -> None:
        self.device = device
        self.config = config
        self.fidelity_from = bars_checked_from(config, job.fidelity_from)
        self.key = job.key
        self.height, self.width = job.img01.shape[:2]
        self._saved_globals = None  # the batch sets (and restores) them for all tiles
        self.iteration = 0
        self.history: dict[str, list] = {
            k: [] for k in ("iteration", "loss", "psnr", "gamma", "gamma_star")
        }
        self.n_snapshots = 0
        self.started = time.perf_counter()
        self.looks_same = True
        try:
            self._allocate(job.img01, job.P, speed)
        except BaseException as exc:
            drop_failed_frames(exc)
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


class _Batch:
    """The tiles stepping together (all of one size) and how their networks run together.

    ``engine="vmap"``: one vmapped forward of the stacked weights and one backward of the summed
    losses.  ``engine="threads"`` (CPU): every tile runs :meth:`Inverter.step`, the very step of
    :func:`~dippas_core.dip.invert`, in a pool of at most :func:`usable_cpus` threads with one
    torch thread each; torch releases the GIL inside its kernels, so the tiles' steps overlap.
    Default: :func:`batch_engine` of the device.
    """

    def __init__(self, device: Any, speed: SpeedSettings, engine: str | None = None) -> None:
        self.device = device
        self.speed = speed
        self.engine = batch_engine(device) if engine is None else engine
        if self.engine not in ENGINES:
            raise InputError(f"unknown batch engine {self.engine!r}; choose one of {ENGINES}")
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0
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
        if self.engine == "threads":  # each tile steps its own network with its own scaler
            self.tiles.append(tile)
            return
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
        if len(self.tiles) > 1 and self.engine == "threads":
            return self._step_threads()
        return self._step_stacked()

    def _step_threads(self) -> list[tuple[float, float, float, float, Any]]:
        want = min(len(self.tiles), usable_cpus())
        if self._pool is None or self._pool_size < want:  # grows with the batch, never shrinks
            if self._pool is not None:
                self._pool.shutdown()
            self._pool = ThreadPoolExecutor(
                want, thread_name_prefix="dippas-tile", initializer=_one_torch_thread
            )
            self._pool_size = want
        try:
            return list(self._pool.map(_Tile.step, self.tiles))
        finally:
            _restore_default_threads()

    def _step_stacked(self) -> list[tuple[float, float, float, float, Any]]:
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
        # one host synchronisation for the whole batch (and one for the bars where measured)
        scalars = torch.stack(
            [t.report(i_phi, loss) for t, i_phi, loss in zip(self.tiles, i_phis, losses,
                                                             strict=True)]
        ).tolist()
        checked = [t for t, row in zip(self.tiles, scalars, strict=True) if t.measures_bars(row[1])]
        for t in self.tiles:
            t.looks_same = t.unmeasured_bars()
        if checked:
            looks = torch.stack([t.bars() for t in checked]).tolist()
            for t, ok in zip(checked, looks, strict=True):
                t.looks_same = bool(ok)
        out = []
        for t, i_phi, (loss_v, psnr_v, gamma_v, star_v) in zip(
            self.tiles, i_phis, scalars, strict=True
        ):
            out.append((loss_v, psnr_v, gamma_v, star_v, t.snapshot(i_phi) if t.keeps(psnr_v)
                        else None))
        return out

    def remove(self, tile: _Tile) -> None:
        self.tiles.remove(tile)
        tile.release()

    def release(self) -> None:
        for t in list(self.tiles):
            self.remove(t)
        if self._pool is not None:
            self._pool.shutdown()  # joined: no pool thread can start (and pin itself) after this
            self._pool, self._pool_size = None, 0
            _restore_default_threads()
        self._forward = None
        self._size = None


def _with_params(tile: _Tile) -> _Tile:
    tile.params = dict(tile.model.named_parameters())
    return tile
