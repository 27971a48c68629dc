"""RAM and disk of a whole 24-MP photo run, measured beside the bound docs/whole-photos.md states.

A real Dresden photo (``Nikon_D70_0_19445.JPG``, 3008×2000) is upsampled ×2 (each pixel
repeated) and cut to 6000×4000 = 24 MP; its fingerprint is a random 24-MP plane (its values do
not change what is held in memory or on disk).  The photo goes through :func:`anonymize` with the
``cpu`` preset's tile plan (651 tiles of 256 px, overlap 64):

- ``--mode dry`` (default): the DIP network is replaced by a stub that yields ``--snapshots``
  outputs per tile (the tile plus noise, all above tau).  Everything else is the real code path:
  the photo run folder, each tile's run folder (snapshot store, the ingest thread's residuals and
  tile sums), the per-tile assembly, the ``done/`` records, the resumable bookkeeping, the
  feathered stitching, the whole-photo NCC/PCE and block-NCC measurement and the PNG writing.
  What it does not exercise: the network's own memory (one network of one tile at a time, the
  same for every tile; measured separately with ``--mode net``).
- ``--mode net``: the real network, ``--max-iter`` iterations per tile (slow on a CPU: ~1 s
  per tile and iteration).

Printed: peak RSS (``ru_maxrss``) and RSS as tiles pass (first, middle, last), peak of the run
folder on disk, each beside the documented bound computed for this run; the wall time (under
load on a shared machine: timing figures are only indicative).

Usage::

    python benchmarks/bench_photo_memory.py [--mode dry|net] [--shape 4000,6000]
        [--preset cpu] [--snapshots 5] [--max-iter 1]
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(
    os.environ.get("DIPPAS_TESTDATA", REPO.parent / "shared" / "data" / "prnu-python-testdata")
)
MiB = 2**20


def rss_mib() -> float:
    """Current resident set size of this process (MiB)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / MiB


class RssSampler:
    """RSS every ``period`` seconds in a thread: ``(time.perf_counter(), MiB)`` samples."""

    def __init__(self, period: float = 0.05) -> None:
        import threading

        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._period = period
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), rss_mib()))
            self._stop.wait(self._period)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def peak(self, start: float, end: float) -> float:
        inside = [m for t, m in self.samples if start <= t <= end]
        return max(inside) if inside else float("nan")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def stub_invert(n_snapshots: int):
    """An ``invert`` stand-in: ``n_snapshots`` outputs (the tile plus noise), no network.

    It returns a :class:`~dippas_core.run.StepStream` (the step source ``record`` takes for
    steps computed elsewhere), as ``invert`` returns an ``Inversion``.
    """
    from dippas_core.dip.inversion import Step
    from dippas_core.run import StepStream

    def steps(photo, config):
        rng = np.random.default_rng(int(config.seed))
        img = np.asarray(photo, np.float32)
        if img.max() > 255:
            img = img / 257.0
        for i in range(1, n_snapshots + 1):
            snap = np.clip(img + rng.normal(0, 2.0, img.shape).astype(np.float32), 0, 255)
            yield Step(i, 1e-3, 40.0 + 0.1 * i, 0.0, snap)

    def invert(photo, P, config, cancel=None, **_):
        return StepStream(steps(photo, config), cancel)

    return invert


def documented_bounds(n_px: int, plan, iterations: int, network: bool) -> dict[str, float]:
    """The bounds docs/whole-photos.md states, for this photo, plan and iterations (bytes).

    Disk: one tile's run (``iterations`` uint16 outputs, its photo and reference) plus one record
    per tile (its uint8 image and ~4 KiB of npz header and statistics).  RAM: the rule fitted on
    this benchmark's 6- and 24-MP runs (0.6 GiB + 100 bytes per pixel, and 0.2 GiB more for
    torch and one network), not derived independently.
    """
    T = plan.tile
    tile_px = sum(t.h * t.w for t in plan.tiles)
    disk = iterations * T * T * 6 + T * T * 7 + tile_px * 3 + len(plan) * 4096
    ram = 0.6 * 2**30 + 100 * n_px + (0.2 * 2**30 if network else 0)
    return {"disk": disk, "ram": ram}


class PhaseMarks:
    """Start and end times of the stitching and of the whole-photo NCC/PCE measurement.

    Taken by wrapping ``dippas_core.tiling.stitch`` and ``dippas_core.report.measure`` (the tiled
    run looks both up at call time).
    """

    def __init__(self) -> None:
        import dippas_core.report as report
        import dippas_core.tiling as tiling

        self.marks: dict[str, list[float]] = {"stitch": [], "measure": []}
        tiling.stitch = self._wrap(tiling.stitch, "stitch")
        report.measure = self._wrap(report.measure, "measure")

    def _wrap(self, fn, name):
        def timed(*args, **kwargs):
            self.marks[name].append(time.perf_counter())
            try:
                return fn(*args, **kwargs)
            finally:
                self.marks[name].append(time.perf_counter())

        return timed

    def window(self, name: str) -> tuple[float, float]:
        return min(self.marks[name]), max(self.marks[name])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("dry", "net"), default="dry")
    ap.add_argument("--shape", default="4000,6000", help="H,W of the photo (default 24 MP)")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--snapshots", type=int, default=5, help="dry mode: outputs per tile")
    ap.add_argument("--max-iter", type=int, default=1, help="net mode: iterations per tile")
    ap.add_argument("--photo", default="Nikon_D70_0_19445.JPG")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    import dippas_core.dip as dip_module
    from dippas_core.config import AnonymizeConfig
    from dippas_core.io import read_image, write_image
    from dippas_core.pipeline import anonymize
    from dippas_core.tiling import plan_tiles

    t_start = time.perf_counter()
    H, W = (int(v) for v in args.shape.split(","))
    rss_start = rss_mib()
    src = read_image(DATA / "nat-jpg" / args.photo)
    reps = (math.ceil(H / src.shape[0]), math.ceil(W / src.shape[1]))
    photo = np.ascontiguousarray(
        np.repeat(np.repeat(src, reps[0], axis=0), reps[1], axis=1)[:H, :W]
    )
    del src
    K = np.random.default_rng(0).normal(0, 0.01, (H, W)).astype(np.float32)
    rss_loaded = rss_mib()
    if args.mode == "dry":
        iterations = args.snapshots
        dip_module.invert = stub_invert(args.snapshots)  # the network only is stubbed out
        changes = {"max_iter": iterations, "record_psnr": 30.0}
    else:
        iterations = args.max_iter
        changes = {"max_iter": iterations, "record_psnr": 0.0, "stop_psnr": 99.0}
    config = AnonymizeConfig.preset(args.preset, seed=0, torch_threads=1, **changes)
    plan = plan_tiles(photo.shape, config.tile_size, config.overlap)
    print(f"photo {args.photo} upsampled to {H}×{W} ({H * W / 1e6:.1f} MP); tile plan: "
          f"{plan.describe()}; mode {args.mode} ({iterations} outputs kept per tile)")
    samples: list[tuple[int, float]] = []
    tile_times: list[float] = []

    def on_tile(tile, plan_):
        tile_times.append(time.perf_counter())
        samples.append((tile.index, rss_mib()))
        if tile.index % 100 == 0:
            print(f"  tile {tile.index}/{len(plan_)}: RSS {samples[-1][1]:.0f} MiB", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-photo-memory-") as tmp:
        marks = PhaseMarks()
        sampler = RssSampler()
        t0 = time.perf_counter()
        result = anonymize(photo, K, config, run_dir=Path(tmp) / "run", on_tile=on_tile,
                           workers=1)
        t_end = time.perf_counter()
        sampler.stop()
        t_run = t_end - t0
        rss_after_run = rss_mib()
        peak_run = peak_rss_mib()
        out = Path(tmp) / "out.png"
        write_image(out, result.image, bit_depth=8)
        out_bytes = out.stat().st_size
    peak = peak_rss_mib()
    rep = result.report
    bounds = documented_bounds(H * W, plan, iterations, network=args.mode == "net")
    first, middle, last = samples[0][1], samples[len(samples) // 2][1], samples[-1][1]
    print(f"wall time {time.perf_counter() - t_start:.0f} s (anonymize {t_run:.0f} s; stitch "
          f"{rep['timing_s']['stitch']:.1f} s, NCC/PCE {rep['timing_s']['measurement']:.1f} s); "
          "under load (shared machine)")
    print(f"RSS: at start {rss_start:.0f} MiB, photo + K loaded {rss_loaded:.0f} MiB; as tiles "
          f"pass: first {first:.0f}, middle {middle:.0f}, last {last:.0f} MiB (drift "
          f"{last - first:+.0f} MiB over {len(samples)} tiles); after the run {rss_after_run:.0f}")
    stitch0, stitch1 = marks.window("stitch")
    measure0, measure1 = marks.window("measure")
    phases = {
        "before the first tile": sampler.peak(t0, tile_times[0]),
        "tiles": sampler.peak(tile_times[0], stitch0),
        "stitching": sampler.peak(stitch0, stitch1),
        "between": sampler.peak(stitch1, measure0),
        "whole-photo NCC/PCE": sampler.peak(measure0, measure1),
        "after": sampler.peak(measure1, t_end),
    }
    print("peak RSS by phase (sampled every 50 ms): "
          + ", ".join(f"{k} {v:.0f} MiB" for k, v in phases.items()))
    print(f"peak RSS: {peak_run:.0f} MiB during anonymize, {peak:.0f} MiB with the PNG "
          f"({out_bytes / MiB:.0f} MiB) written")
    print(f"  docs/whole-photos.md's RAM rule (0.6 GiB + 100 B/px, +0.2 GiB with the network; "
          f"fitted on this benchmark at 6 and 24 MP): {bounds['ram'] / MiB:.0f} MiB; measured "
          f"peak {peak:.0f} MiB")
    print(f"disk peak of the run folder: {rep['disk_peak_bytes'] / MiB:.1f} MiB; documented bound "
          f"for {iterations} kept outputs per tile (T²·6 bytes each, one tile's run at a time, "
          f"T²·3 + 4 KiB per finished tile): {bounds['disk'] / MiB:.1f} MiB")
    print(f"PSNR {rep['psnr']:.2f} dB (stub outputs: the tile plus noise, not anonymized)"
          if args.mode == "dry" else f"PSNR {rep['psnr']:.2f} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
