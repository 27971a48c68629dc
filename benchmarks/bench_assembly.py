"""Assembly benchmark (issue 4): ingest cost per snapshot, assemble() vs the direct way, peak RAM.

A synthetic run (no DIP) of N snapshots at S×S×3, like a 512×512 DIPPAS run:

1. **Ingest**: residual + tile sums of real synthetic snapshots (``RunDirectory.ingest_frames``),
   seconds per snapshot with 1 worker and with every core, and the cores a GPU making 25 snapshots/s
   would need.
2. **Store**: the N snapshots are the ingested ones cycled (pixels copied, tile sums jittered by
   1e-3 so every snapshot ranks differently): assemble's cost depends on the counts, not the values.
3. **assemble(B, L)** for B in {32..S}, L in {1, 10, 100} (median of 3), the lazy measured block-NCC
   map of the result, and **assemble_direct** (a residual per snapshot, method §5 literally) on the
   ``--n-direct`` best snapshots, checked equal to assemble on the same subset, and scaled to N.
4. **Peak RAM** of assembling all N snapshots in a fresh process (VmHWM of /proc/self/status).

The machine is shared: other jobs may slow the timings; run it when the CPU is quiet.

    python benchmarks/bench_assembly.py             # 2000 × 512×512 (≈3 GB on disk, a few min)
    python benchmarks/bench_assembly.py --n 200     # quick
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("NUMBA_CACHE_DIR", "/tmp/numba_cache")

from dippas_core.assembly import assemble, assemble_direct  # noqa: E402
from dippas_core.run import RunDirectory  # noqa: E402
from dippas_core.snapshots import SnapshotStore, TileSums  # noqa: E402


def synthetic_inputs(size: int, n: int, rng: np.random.Generator):
    """A textured photo, a fingerprint-like K and n snapshots photo·(1 + a·K) + noise."""
    yy, xx = np.mgrid[0:size, 0:size]
    shade = (np.sin(xx / 23.0) * np.cos(yy / 31.0))[..., None] * np.array([70.0, 55.0, 40.0])
    photo = np.clip(np.rint(120 + shade + rng.normal(0, 6, (size, size, 3))), 0, 255)
    photo = photo.astype(np.uint8)
    K = rng.normal(0, 0.01, (size, size)).astype(np.float32)
    snaps = []
    for _ in range(n):
        a = rng.uniform(-1, 1) + np.sin(xx / 57.0 + rng.uniform(0, 6)) * np.cos(yy / 41.0)
        s = photo * (1 + a[..., None] * K[..., None]) + rng.normal(0, 2.0, photo.shape)
        snaps.append(SnapshotStore.quantize(np.clip(s, 0, 255)))
    return photo, K, snaps


def time_ingest(run: RunDirectory, frames: list[np.ndarray], workers: int, batch: int) -> float:
    """Seconds per snapshot of residual + tile sums, in batches like the background consumer."""
    run.ingest_frames(np.stack(frames[:batch]), workers=workers)  # warm-up (JIT, FFT plans)
    t0 = time.perf_counter()
    for i in range(0, len(frames), batch):
        run.ingest_frames(np.stack(frames[i : i + batch]), workers=workers)
    return (time.perf_counter() - t0) / len(frames)


def build_run(path: Path, photo, K, frames, n: int, exact_tail: int, rng) -> RunDirectory:
    """The run: frames cycled; tile sums jittered except for the last ``exact_tail`` snapshots
    (the subset the direct way is checked against, which must rank on true NCCs)."""
    run = RunDirectory.create(path, photo, K, mode="aware", dip_config={"record_psnr": 38.0})
    sums = run.ingest_frames(np.stack(frames), workers=os.cpu_count())
    store = SnapshotStore.open(path, writable=True)
    tiles = TileSums.open(path, writable=True)
    for i in range(n):
        j = i % len(frames)
        store.append_frame(frames[j], iteration=i + 1, psnr=38.0 + 1.5 * i / n)
        jitter = 0.0 if i >= n - exact_tail else 1e-3
        tiles.append(sums[j] * (1 + jitter * rng.standard_normal(sums[j].shape)))
    store.close()
    tiles.close()
    return RunDirectory.open(path)


def median_time(fn, repeat: int = 3) -> tuple[float, object]:
    """Median wall-clock seconds of ``fn()`` and its last result."""
    return median_times(fn, repeat)[0::2]


def median_times(fn, repeat: int = 3) -> tuple[float, float, object]:
    """Median wall-clock and CPU (this process, all threads) seconds of ``fn()``, last result.

    On a shared machine the wall clock includes waiting for a core; the CPU time does not.
    """
    walls, cpus, out = [], [], None
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return float(np.median(walls)), float(np.median(cpus)), out


PEAK_SCRIPT = """
import sys
from dippas_core.assembly import assemble
from dippas_core.run import RunDirectory

def hwm():  # this process's own peak RSS (ru_maxrss would carry the parent's over from fork)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
base = hwm()
run = RunDirectory.open(sys.argv[1])
for B, L in ((32, 100), (512, 100), (64, 10)):
    assemble(run, B, L, 0.0)
print(base, hwm())
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="snapshots in the run (2000)")
    ap.add_argument("--size", type=int, default=512, help="image side (512)")
    ap.add_argument("--n-ingest", type=int, default=16, help="snapshots really ingested (16)")
    ap.add_argument("--n-direct", type=int, default=6, help="snapshots for the direct way (6)")
    ap.add_argument("--keep", type=Path, default=None, help="keep the run in this folder")
    args = ap.parse_args()
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    rng = np.random.default_rng(0)
    n, size = args.n, args.size
    cores = os.cpu_count() or 1
    print(f"# bench_assembly: {n} snapshots at {size}×{size}×3, {cores} CPU cores (shared)")
    photo, K, frames = synthetic_inputs(size, args.n_ingest, rng)
    work = Path(tempfile.mkdtemp(prefix="bench-assembly-")) if args.keep is None else args.keep
    try:
        probe = RunDirectory.create(work / "probe", photo, K, mode="aware")
        t1 = time_ingest(probe, frames, workers=1, batch=4)
        tn = time_ingest(probe, frames, workers=cores, batch=4)
        print("\n## ingest (residual + tile sums) per snapshot")
        print(f"1 worker : {t1 * 1e3:7.1f} ms  -> {1 / t1:5.1f} snapshots/s")
        print(f"{cores} workers: {tn * 1e3:7.1f} ms  -> {1 / tn:5.1f} snapshots/s")
        print(
            f"cores needed to keep up with 25 snapshots/s: {25 * t1:.1f} "
            f"(budget 40 ms/snapshot; one core does {t1 * 1e3:.0f} ms)"
        )

        t0 = time.perf_counter()
        run = build_run(work / "run", photo, K, frames, n, min(args.n_direct, len(frames)), rng)
        gb = n * size * size * 6 / 1e9
        t_build = time.perf_counter() - t0
        print(f"\nbuilt the run: {n} snapshots ({gb:.2f} GB store) in {t_build:.1f} s")

        print("\n## assemble(run, B, L, tau=0) — median of 3, page cache warm")
        blocks = [b for b in (32, 64, 128, 256, 512) if b <= size]
        print("   B     L   wall_s  cpu_s | last run: rank_s  average_s | ncc_map_s (lazy, once)")
        worst = worst_cpu = 0.0
        for B in blocks:
            for L in (1, 10, 100):
                t, c, res = median_times(lambda B=B, L=L: assemble(run, B, L, 0.0))
                worst, worst_cpu = max(worst, t), max(worst_cpu, c)
                nm = ""
                if L == 10:
                    t_map, _ = median_time(lambda res=res: measure(res), repeat=1)
                    nm = f"{t_map:.3f}"
                print(
                    f"{B:5d} {L:5d}   {t:6.3f} {c:6.3f} |         {res.params['rank_s']:6.3f}  "
                    f"{res.params['average_s']:9.3f} | {nm}"
                )
        print(f"slowest assemble: {worst:.3f} s wall, {worst_cpu:.3f} s CPU (bar: < 1 s)")

        print(f"\n## direct way (residual per snapshot) on the {args.n_direct} best, scaled to {n}")
        tau = float(run.snapshots.psnrs[n - args.n_direct])
        for B in (blocks[0], blocks[-1]):
            t_dir, ref = median_time(lambda B=B: assemble_direct(run, B, 10, tau), repeat=1)
            t_fast, fast = median_time(lambda B=B: assemble(run, B, 10, tau))
            same = np.array_equal(ref.image, fast.image) and np.array_equal(ref.choice, fast.choice)
            scaled = t_dir * n / args.n_direct
            t_full, _ = median_time(lambda B=B: assemble(run, B, 10, 0.0))
            print(
                f"B={B:4d} L=10: direct {t_dir:.2f} s on {args.n_direct} (equal to assemble: "
                f"{same}) -> ~{scaled:.0f} s for {n}; assemble on {n}: {t_full:.3f} s "
                f"-> {scaled / t_full:.0f}× faster"
            )

        print("\n## peak RAM of assembling (fresh process, VmHWM)")
        env = {**os.environ, "NUMBA_CACHE_DIR": os.environ["NUMBA_CACHE_DIR"]}
        out = subprocess.run(
            [sys.executable, "-c", PEAK_SCRIPT, str(work / "run")],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        base, peak = float(out[0]), float(out[1])
        print(
            f"after imports {base:.0f} MB, peak over B=32/512/64 with L=100/100/10: {peak:.0f} MB "
            f"(store {gb * 1e3:.0f} MB; bar: < 1024 MB)"
        )
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


def measure(res) -> np.ndarray:
    res._ncc_map = None
    return res.ncc_map


if __name__ == "__main__":
    main()
