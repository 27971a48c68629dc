"""Many tiles in one optimiser step: N independent DIP inversions run as one batch.

A whole photograph is tens of tiles, each its own inversion (method §4).  One small tile per step
leaves a GPU mostly idle (and, on a CPU, pays the per-operation overhead once per tile); this
module steps ``N = tiles_per_step`` of them at once:

* every tile keeps everything one :func:`~dippas_core.dip.invert` run has (it *is* the same
  per-tile state, :class:`~dippas_core.dip.inversion.Inverter`): its own network weights built
  from its seed, input noise ``z`` and perturbation generator, gamma, Adam state, stopping rule
  and snapshots;
* the N networks run together by one of two engines, chosen by measurement (docs/dip.md):
  on a GPU ``"vmap"``, one forward over ``torch.func.vmap`` of ``torch.func.functional_call``:
  the per-tile weights are stacked (each step, from the tiles' own leaves, so gradients land on
  them) and vmap's batching rule turns every convolution into one grouped convolution over the N
  tiles.  Batch norm is per tile: each vmapped call normalises its own 1×C×H×W batch, exactly
  what the tile's own network does in training mode (running statistics are never used by DIP
  and are not tracked here).  On the CPU ``"threads"``: every tile runs its own step, the very
  step of :func:`~dippas_core.dip.invert`, in a pool of one thread per core with one torch
  thread each (torch releases the GIL inside its kernels, so the steps overlap); on 2 cores
  thread batches of the ``cpu`` network step 1.2–1.7× as fast as one network on both cores,
  where vmap's grouped convolutions ran at 0.3–0.75×;
* vmap: one backward of the sum of the N losses gives each tile its own gradient, then each
  tile's own optimiser steps and its gamma is updated by the same :meth:`Inverter.after_update`.

With the same seed a tile's images equal those of a separate ``invert`` run
(``tests/test_dip_batched.py``): with the threads engine bit for bit when that run also uses one
torch thread (float32 included); with vmap up to float rounding: in float64 over whole runs; in
float32 the first step agrees to
~1e-5 and then the pixels part within a few steps, as they do for ``invert`` itself under any
change of summation order (Adam amplifies rounding), while the PSNR histories stay together
(docs/dip.md, "Equivalence").  A tile that stops (PSNR reached, ``max_iter``) leaves the batch
at once and the next waiting tile of the same size takes its place.

A batch of one tile (N = 1, or the last tile left) runs that tile's own network, the plain
one-network forward of :func:`~dippas_core.dip.invert`: vmap gains nothing there.

``tiles_per_step="auto"`` measures: on a GPU, the memory one tile's step takes against the free
memory; on the CPU, a few steps of the plain path (N = 1) and of thread batches of N = 2, 4, 8: the
fastest wins, a batch only when it beats the plain path by :data:`AUTO_MARGIN`.  The choice and
every measured rate are recorded in every tile's ``environment``.

The modules: ``_jobs`` (the tiles and what is yielded), ``_stack`` (per-tile state and the
stacked forward), ``_loop`` (the fitting loop) and ``_auto`` (the ``"auto"`` choice of N).
"""

from __future__ import annotations

from ._auto import (
    AUTO_MARGIN,
    AUTO_MAX,
    AUTO_MEMORY_SHARE,
    AUTO_TIMED_STEPS,
    choose_tiles_per_step,
    fastest_tiles_per_step,
    make_probe,
    measure_tiles_per_step,
    probe_inputs,
)
from ._jobs import PreparedJob, TileDone, TileJob, TileStep
from ._loop import invert_tiles
from ._stack import _Batch as _Batch
from ._stack import _Tile as _Tile
from ._stack import _with_params as _with_params

__all__ = [
    "PreparedJob",
    "TileJob",
    "TileStep",
    "TileDone",
    "invert_tiles",
    "choose_tiles_per_step",
    "measure_tiles_per_step",
    "fastest_tiles_per_step",
    "make_probe",
    "probe_inputs",
    "AUTO_MAX",
    "AUTO_MEMORY_SHARE",
    "AUTO_MARGIN",
    "AUTO_TIMED_STEPS",
]
