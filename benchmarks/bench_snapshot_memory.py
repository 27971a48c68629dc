"""Peak RAM of recording a run is flat in the number of snapshots (issue 3, item 5).

Each case runs in a fresh process and reports its own peak RSS (VmHWM):

* ``many``: ``--iters`` iterations, every one a kept snapshot, recorded with ``run.record``
  (snapshot store on disk + background residuals/tile sums);
* ``few``: the same iterations, one snapshot kept every 100;
* ``list``: the naive way for comparison: every snapshot kept in a Python list.

The inversion is a fast stand-in generator (the recording is what is measured); ``--dip`` uses the
real tiny DIP network instead (slower).  The machine is shared: timings vary, memory does not.

    python benchmarks/bench_snapshot_memory.py              # 3000 iterations at 64×64
    python benchmarks/bench_snapshot_memory.py --dip --iters 600
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

CASE = r"""
import sys, tempfile, time
import numpy as np
from dippas_core.dip.inversion import Step
from dippas_core.run import RunDirectory, record

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

case, iters, size, use_dip = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
rng = np.random.default_rng(0)
photo = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
K = rng.normal(0, 0.01, (size, size)).astype(np.float32)
every = 1 if case in ("many", "list") else 100

def fake():
    for i in range(1, iters + 1):
        snap = None
        if i % every == 0:
            snap = np.clip(photo + rng.normal(0, 2, photo.shape), 0, 255).astype(np.float32)
        yield Step(i, 0.01, 40.0, 0.01, snap)

def dip():
    from dippas_core.config import DIPConfig
    from dippas_core.dip import invert
    cfg = DIPConfig.preset("tiny", max_iter=iters, record_psnr=0.0, stop_psnr=1e9)
    for step in invert(photo, K, cfg):
        if step.iteration % every:
            step.snapshot = None  # 'few': keep one in `every`
        yield step

gen = dip() if use_dip else fake()
# warm up the residual kernels so their one-off memory is in the baseline
from dippas_core.residual import residual_batch
residual_batch(np.zeros((2, size, size, 3), np.float32))
base = hwm()
t0 = time.perf_counter()
if case == "list":
    kept = [s.snapshot for s in gen if s.snapshot is not None]
    n = len(kept)
else:
    run = RunDirectory.create(tempfile.mkdtemp() + "/run", photo, K, mode="aware")
    record(run, gen)
    n = len(RunDirectory.open(run.path).snapshots)
print(n, base, hwm(), time.perf_counter() - t0)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=3000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--dip", action="store_true", help="the real tiny DIP instead of a stand-in")
    args = ap.parse_args()
    env = {**os.environ, "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", "/tmp/numba_cache")}
    print(
        f"# bench_snapshot_memory: {args.iters} iterations at {args.size}×{args.size}×3, "
        f"{'tiny DIP' if args.dip else 'stand-in generator'}; one snapshot = "
        f"{args.size * args.size * 3 * 4 / 1024:.0f} KiB as float32"
    )
    print(" case   snapshots  baseline_MB  peak_MB  growth_MB  growth_KiB/snapshot  seconds")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case in ("few", "many", "list"):
            out = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    CASE,
                    case,
                    str(args.iters),
                    str(args.size),
                    "1" if args.dip else "0",
                ],
                env={**env, "TMPDIR": tmp},
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            n, base, peak, secs = int(out[0]), float(out[1]), float(out[2]), float(out[3])
            rows[case] = (n, peak - base)
            per = (peak - base) * 1024 / max(n, 1)
            print(
                f" {case:5s} {n:10d} {base:12.0f} {peak:8.0f} {peak - base:10.1f} "
                f"{per:20.2f} {secs:8.1f}"
            )
    (n_few, g_few), (n_many, g_many) = rows["few"], rows["many"]
    g_list = rows["list"][1]
    print(
        f"recording {n_many} vs {n_few} snapshots: peak RSS {g_many - g_few:+.1f} MB; "
        f"keeping them in a list instead: {g_list - g_few:+.1f} MB"
    )

if __name__ == "__main__":
    main()
