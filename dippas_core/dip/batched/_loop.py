"""The batched fitting loop: tiles join the batch, step together and leave it as they stop."""

from __future__ import annotations

import contextlib
import dataclasses
from collections import deque
from collections.abc import Generator, Hashable, Iterable
from typing import TYPE_CHECKING, Any

from ...config import DIPConfig
from ...errors import DeviceError
from ..device import SpeedSettings, resolve_device, speed_settings, torch_threads
from ..inversion import (
    InversionResult,
    Step,
    drop_failed_frames,
    oom_message,
    restore_cuda_globals,
    run_environment,
    set_cuda_globals,
    snapshot_pair,
)
from ._auto import choose_tiles_per_step
from ._jobs import PreparedJob, TileDone, TileJob, TileStep, _prepare
from ._stack import _Batch, _Tile, _with_params

if TYPE_CHECKING:
    from ...cancel import CancelToken

__all__ = ["invert_tiles"]


def invert_tiles(
    jobs: Iterable[TileJob],
    config: DIPConfig | dict[str, Any] | None = None,
    *,
    tiles_per_step: int | str | None = None,
    cancel: CancelToken | None = None,
    fidelity_from: float | None = None,
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
    fidelity_from : float, optional
        As :func:`~dippas_core.dip.invert`'s: the PSNR from which each tile's outputs are checked
        against the local fidelity bars.

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
    prepared = _prepare(jobs, config, fidelity_from)
    n = config.tiles_per_step if tiles_per_step is None else tiles_per_step
    device = resolve_device(config.device)
    speed = speed_settings(config, device)
    return _run(prepared, config, device, speed, n, cancel)


def _run(
    jobs: list[PreparedJob],
    config: DIPConfig,
    device: Any,
    speed: SpeedSettings,
    tiles_per_step: int | str,
    cancel: CancelToken | None,
) -> Generator[TileStep | TileDone, None, dict[Hashable, InversionResult]]:
    import torch

    tile_speed = dataclasses.replace(speed, compile=False)  # the batch compiles its own forward
    saved = set_cuda_globals(speed) if device.type == "cuda" else None
    results: dict[Hashable, InversionResult] = {}
    batch = _Batch(device, speed)
    threads = config.torch_threads
    try:
        with torch_threads(threads):
            n, why = _resolve_tiles_per_step(tiles_per_step, jobs, config, device, tile_speed)
            environment = {
                **run_environment(device, speed),
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
                snapshot, on_device = snapshot_pair(kept)
                env = dict(environment) if tile.iteration == 1 else None
                yield TileStep(
                    tile.key,
                    Step(tile.iteration, loss, psnr, gamma, snapshot, env, on_device, star,
                         looks_same=tile.looks_same),
                )
                del snapshot, on_device, kept
                reason = (
                    "psnr" if tile.ends(psnr)
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
        drop_failed_frames(exc)
        raise DeviceError(_batch_oom_message(jobs, config, device)) from exc
    except RuntimeError as exc:
        if "out of memory" not in str(exc).lower():
            raise
        drop_failed_frames(exc)
        raise DeviceError(_batch_oom_message(jobs, config, device)) from exc
    finally:
        batch.release()
        if device.type == "cuda":
            with contextlib.suppress(Exception):
                torch.cuda.empty_cache()
            restore_cuda_globals(saved)
    return results


def _batch_oom_message(jobs: list[PreparedJob], config: DIPConfig, device: Any) -> str:
    base = oom_message(jobs[0].img01.shape, config, device)
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
    jobs: list[PreparedJob],
    config: DIPConfig,
    device: Any,
    speed: SpeedSettings,
) -> tuple[int, str]:
    if value != "auto":
        return int(value), "given"
    return choose_tiles_per_step(jobs[0].img01, jobs[0].P, config, device, speed, len(jobs))
