"""Batch anonymization on 1 and 2 local Dask workers: wall time and scaling ratio, side by side.

32 real 64×64 crops (two per Dresden photo of the test data; smooth synthetic pictures when the
data is missing) go through the real pipeline (``dippas_core.pipeline.anonymize``) with the tiny
network, once on a one-worker and once on a two-worker ``LocalCluster``.  Each cluster is started
and warmed (torch, Numba kernels) before its clock starts, so the timed part is the batch itself;
start-up is printed apart.  Each run writes into a fresh output folder (nothing is skipped).

Usage::

    NUMBA_CACHE_DIR=/tmp/numba_cache .venv/bin/python benchmarks/bench_batch.py
    .venv/bin/python benchmarks/bench_batch.py --images 8 --max-iter 10     # quick

The ideal ratio on two free cores is 2×; other jobs on a shared machine pull it down (the load
average is printed with the figures).  "s/image on its worker" rising from 1 to 2 workers means
the workers were fighting for cores rather than the batch machinery costing time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TESTDATA = Path(
    os.environ.get("DIPPAS_TESTDATA", REPO.parent / "shared" / "data" / "prnu-python-testdata")
)


def machine_note() -> str:
    """CPU cores and load average (other jobs on a shared machine skew the figures)."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} CPU cores, load average {load}"


def make_inputs(folder: Path, n: int, size: int) -> str:
    """Write ``n`` PNG crops into ``folder``; return where they came from."""
    import numpy as np
    from PIL import Image

    from dippas_core.io import crop_at, read_image

    folder.mkdir(parents=True)
    photos = sorted((TESTDATA / "nat-jpg").glob("*.JPG"))
    if photos:
        for i in range(n):
            photo = read_image(photos[i % len(photos)])
            h, w = photo.shape[:2]
            k = i // len(photos)  # a different place in the same photo on the next lap
            top, left = h // 3 + k * size, w // 3 + k * size
            crop = crop_at(photo, top, left, size, size)
            Image.fromarray(np.ascontiguousarray(crop)).save(folder / f"crop{i:03d}.png")
        return f"{n} crops of {size}×{size} from {len(photos)} Dresden photos"
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n):
        f = rng.uniform(5, 15, 3)
        img = np.stack(
            [
                120 + 60 * np.sin(xx / f[0]),
                110 + 50 * np.cos(yy / f[1]),
                100 + 40 * np.sin((xx + yy) / f[2]),
            ],
            -1,
        )
        Image.fromarray(img.astype(np.uint8)).save(folder / f"synthetic{i:03d}.png")
    return f"{n} synthetic {size}×{size} pictures (test data not found)"


def _warm() -> None:
    """Import torch and compile every kernel on a worker (one 2-step anonymize) before timing."""
    import numpy as np

    from dippas_core.config import AnonymizeConfig
    from dippas_core.pipeline import anonymize

    photo = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    anonymize(photo, None, AnonymizeConfig.preset("tiny", max_iter=2, record_psnr=0.0, B=32))


def time_batch(
    n_workers: int, in_dir: Path, out_dir: Path, config
) -> tuple[float, float, int, float]:
    """(start-up s, batch wall s, images ok, mean s per image on its worker), fresh cluster."""
    from distributed import Client

    from dippas_core.batch import local_cluster, run_batch

    t0 = time.perf_counter()
    cluster, threads = local_cluster(n_workers, gpus=0)
    client = Client(cluster)
    client.run(_warm)
    startup = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        result = run_batch(in_dir, out_dir, config=config, client=client, progress=None)
        wall = time.perf_counter() - t0
    finally:
        client.close()
        cluster.close()
    ok = sum(r.status == "ok" for r in result.records)
    for r in result.failed:
        print(f"  failed: {r.output}: {r.reason}", file=sys.stderr)
    per_image = sum(r.seconds or 0.0 for r in result.records) / max(1, len(result.records))
    return startup, wall, ok, per_image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--max-iter", type=int, default=30, help="DIP iterations per image")
    args = parser.parse_args(argv)

    from dippas_core.config import AnonymizeConfig

    config = AnonymizeConfig.preset(
        "tiny", max_iter=args.max_iter, record_psnr=0.0, stop_psnr=99.0, B=32, L=5, seed=0
    )
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        tmp_path = Path(tmp)
        what = make_inputs(tmp_path / "in", args.images, args.size)
        print(f"batch of {what}; tiny network, {args.max_iter} iterations each")
        print(f"machine: {machine_note()} (shared: other jobs skew absolute times)")
        rows = {}
        for n in (1, 2):
            rows[n] = time_batch(n, tmp_path / "in", tmp_path / f"out{n}", config)
        print(
            f"{'workers':>8} {'start-up':>10} {'batch wall':>11} {'images/s':>9} {'ok':>5} "
            f"{'s/image on its worker':>22}"
        )
        for n, (startup, wall, ok, per_image) in rows.items():
            print(
                f"{n:>8} {startup:>9.1f}s {wall:>10.1f}s {ok / wall:>9.2f} {ok:>5} "
                f"{per_image:>21.2f}s"
            )
        ratio = rows[1][1] / rows[2][1]
        print(
            f"scaling 1 → 2 workers: {ratio:.2f}× faster (ideal 2.00×; efficiency {ratio / 2:.0%})"
        )
        print(f"machine after: {machine_note()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
