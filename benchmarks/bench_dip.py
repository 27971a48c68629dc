"""Seconds per DIP iteration and peak memory, with each speed switch on and off, side by side.

The DEFAULT network (512-channel z, U = 16…256, ≈2.2 M parameters) on random-but-smooth photos at
128×128 and 256×256 on the CPU (and 512×512 when CUDA is present).

Timing: all configurations of one size live in one process and take their iterations in turn
(round-robin), so load from other jobs on a shared machine hits each of them alike and the ratios
hold even when absolute times wander. Memory: each configuration then runs alone, two iterations, in
a fresh subprocess: peak resident memory (``VmHWM``, torch's own ~350 MB included) on the CPU,
``torch.cuda.max_memory_allocated`` on CUDA.

The baseline is a plain eager float32 PyTorch loop of the same network and loss, written the way a
first DIP script is (``.item()`` per scalar, PSNR on the host). The bar (issue 3): ``invert`` at
128×128 on the CPU is no slower than that loop (ratio ≤ 1).

Usage::

    NUMBA_CACHE_DIR=/tmp/numba_cache .venv/bin/python benchmarks/bench_dip.py            # all
    .venv/bin/python benchmarks/bench_dip.py --sizes 128 --iters 3 --no-memory            # quick
    .venv/bin/python benchmarks/bench_dip.py --compile     # add torch.compile rows on the CPU too

Other jobs share this machine's CPU: the defaults keep the run to a few minutes.

Tiles per step (``--tiles 1,2,4,8``): N tiles of a real Dresden photo trained in one optimiser
step (``dippas_core.dip.batched``), every N side by side (round-robin, so the machine's load hits
all alike): pixel-iterations per second per N and its ratio to N = 1.  Then the ``auto`` choice
(its own short measurement) and, on a real multi-tile region, the wall time of ``invert_tiles``
with N = 1 and with the auto N, end to end (measurement included and not)::

    .venv/bin/python benchmarks/bench_dip.py --tiles 1,2,4,8 --sizes 64 128        # this CPU
    .venv/bin/python benchmarks/bench_dip.py --tiles 1,4,16 --sizes 512 --amp auto,off  # a GPU
    .venv/bin/python benchmarks/bench_dip.py --tiles 1,4 --sizes 64 --preset cpu --profile
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

WARMUP = 2


def _photo(size: int):
    import numpy as np

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / (size / 6)
    base = np.stack([np.sin(xx) + yy / 3, np.cos(yy), np.sin(xx + yy)], axis=-1)
    base = (base - base.min()) / np.ptp(base)
    img = np.clip(30 + 190 * base + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8)
    P = rng.normal(0, 0.01, (size, size)).astype(np.float32)
    return img, P


def _peak_memory_mb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # VmHWM is this process image's own high-water mark; ru_maxrss would carry the parent's peak
    # across fork/exec on Linux
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _plain_loop(size: int, threads: int, device) -> Iterator[None]:
    """The baseline: the loop one writes first, eager float32, host sync on every scalar."""
    import numpy as np
    import torch

    from dippas_core.dip.network import MultiResUNet

    img, P = _photo(size)
    torch.manual_seed(0)
    net = MultiResUNet(in_channels=512).to(device)
    target = torch.from_numpy(img.transpose(2, 0, 1)[None] / 255.0).float().to(device)
    p = torch.from_numpy(P)[None, None].to(device)
    z = torch.randn(1, 512, size, size, device=device) * 0.1
    gamma = torch.zeros((), device=device, requires_grad=True)
    opt = torch.optim.Adam([*net.parameters(), gamma], lr=1e-3, amsgrad=True)
    ref = img.astype(np.float64) / 255.0
    while True:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        out = net(z + 0.1 * torch.randn_like(z))
        loss = torch.nn.functional.mse_loss(out * (1 + gamma * p), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            gamma.clamp_(min=0)
        out_np = out.detach().cpu().numpy()[0].transpose(1, 2, 0)
        _psnr = 10 * np.log10(1.0 / np.mean((out_np - ref) ** 2))
        _loss, _gamma = loss.item(), gamma.item()
        torch.set_num_threads(before)
        yield


def _invert_loop(size: int, threads: int, device, switches: dict) -> Iterator[None]:
    from dippas_core.config import DIPConfig
    from dippas_core.dip import invert

    img, P = _photo(size)
    cfg = DIPConfig(
        device=str(device),
        max_iter=10**6,
        record_psnr=float("inf"),
        stop_psnr=float("inf"),
        torch_threads=threads,
        **switches,
    )
    yield from (None for _ in invert(img, P, cfg))


def _variant(kind: str, size: int, threads: int, device, switches: dict) -> Iterator[None]:
    if kind == "plain":
        return _plain_loop(size, threads, device)
    return _invert_loop(size, threads, device, switches)


def _time_side_by_side(rows, size: int, iters: int, device) -> list[tuple[float, float, float]]:
    """(best wall, median wall, median CPU) seconds per iteration of each row, round-robin.

    Other jobs share this CPU; interleaving spreads their load over every row alike. The CPU
    seconds this process spent on the iteration (all its threads) barely depend on that load: for
    rows with the same thread count they are the steadiest figure to compare by.
    """
    import numpy as np
    import torch

    loops = [_variant(kind, size, threads, device, sw) for _, kind, sw, threads in rows]
    times: list[list[float]] = [[] for _ in rows]
    cpu: list[list[float]] = [[] for _ in rows]
    for _ in range(WARMUP + iters):
        for loop, record, record_cpu in zip(loops, times, cpu, strict=True):
            t, c = time.perf_counter(), time.process_time()
            next(loop)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            record.append(time.perf_counter() - t)
            record_cpu.append(time.process_time() - c)
    for loop in loops:
        loop.close()
    return [
        (float(np.min(t[WARMUP:])), float(np.median(t[WARMUP:])), float(np.median(c[WARMUP:])))
        for t, c in zip(times, cpu, strict=True)
    ]


def _memory_worker(spec: dict) -> dict:
    import torch

    from dippas_core.dip.device import resolve_device

    device = resolve_device(spec["device"])
    loop = _variant(spec["kind"], spec["size"], spec["threads"], device, spec["switches"])
    for _ in range(2):
        next(loop)
    loop.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return {"peak_mb": _peak_memory_mb(device)}


def _peak_in_subprocess(spec: dict, timeout: float) -> str:
    """Peak memory of one row run alone in a fresh process (2 iterations), as table text."""
    env = dict(os.environ, NUMBA_CACHE_DIR=os.environ.get("NUMBA_CACHE_DIR", "/tmp/numba_cache"))
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    if proc.returncode != 0:
        return "failed"
    return f"{json.loads(proc.stdout.strip().splitlines()[-1])['peak_mb']:.0f}"


def _configs(cuda: bool, compile_: bool, max_threads: int) -> list[tuple[str, str, dict, int]]:
    """(label, kind, switches, threads); the first row is the baseline."""
    if cuda:
        rows = [
            ("plain eager fp32 loop", "plain", {}, 1),
            ("invert, defaults (bf16/fp16, channels_last, TF32)", "invert", {}, 1),
            ("invert, amp off", "invert", {"amp": False}, 1),
            ("invert, channels_last off", "invert", {"channels_last": False}, 1),
            ("invert, amp and channels_last off", "invert", {"amp": False, "channels_last": False},
             1),
        ]
        if compile_:
            rows.append(("invert, defaults + torch.compile", "invert", {"compile": True}, 1))
        return rows
    rows = [
        ("plain eager fp32 loop, 1 thread", "plain", {}, 1),
        ("invert, defaults (fp32, channels_last), 1 thread", "invert", {}, 1),
        ("invert, amp=bf16", "invert", {"amp": "bf16"}, 1),
        ("invert, channels_last off", "invert", {"channels_last": False}, 1),
    ]
    if compile_:
        rows.append(("invert, compile=True", "invert", {"compile": True}, 1))
    if max_threads > 1:
        rows.append((f"plain eager fp32 loop, {max_threads} threads", "plain", {}, max_threads))
        rows.append((f"invert, defaults, {max_threads} threads", "invert", {}, max_threads))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", help="image sides (default 128 256 [512])")
    parser.add_argument("--iters", type=int, default=4, help="timed iterations per config")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add torch.compile rows (default: CUDA only; compiling on a small CPU takes minutes)",
    )
    parser.add_argument(
        "--compile-sizes", type=int, nargs="+", default=[128, 512], help="sizes with a compile row"
    )
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument(
        "--tiles", help="tiles-per-step mode: comma-separated N values (e.g. 1,2,4,8)"
    )
    parser.add_argument("--preset", default="paper", help="DIP preset of the tiles mode (paper)")
    parser.add_argument(
        "--amp", default=None, help="tiles mode: comma-separated amp settings (default: off on "
        "the CPU, auto,off on CUDA)"
    )
    parser.add_argument(
        "--region-iters", type=int, default=3, help="tiles mode: iterations per tile of the region"
    )
    parser.add_argument(
        "--profile", action="store_true",
        help="tiles mode: instead of auto and the region, the ops that take each N's step time",
    )
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(_memory_worker(json.loads(args.worker))))
        return 0
    if args.tiles:
        return _tiles_main(args)

    import torch

    from dippas_core.dip.device import device_name, resolve_device

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    sizes = args.sizes or ([128, 256, 512] if cuda else [128, 256])
    print(f"device: {device_name(device)}   torch {torch.__version__}   cpus: {os.cpu_count()}")
    print(
        f"default network (z 512 channels, U 16..256); {args.iters} timed iterations after "
        f"{WARMUP} warm-up, rows interleaved; peak memory: each row alone in a fresh process "
        + ("(torch.cuda.max_memory_allocated)" if cuda else "(VmHWM, torch's ~350 MB included)")
    )
    header = (
        f"{'size':>5}  {'configuration':<50} {'best s':>7} {'× plain':>8} {'median s':>8} "
        f"{'CPU s':>7} {'× plain':>8} {'peak MB':>8}"
    )
    print(header)
    print("-" * len(header))
    for size in sizes:
        want_compile = cuda if args.compile is None else args.compile
        compile_here = want_compile and size in args.compile_sizes
        rows = _configs(cuda, compile_here, args.threads)
        seconds = _time_side_by_side(rows, size, args.iters, device)
        base, base_cpu = seconds[0][0], seconds[0][2]
        for (label, kind, switches, threads), (sec, med, cpu) in zip(rows, seconds, strict=True):
            spec = {
                "kind": kind,
                "size": size,
                "threads": threads,
                "device": str(device),
                "switches": switches,
            }
            peak = _peak_in_subprocess(spec, timeout=1800) if not args.no_memory else "-"
            print(
                f"{size:>5}  {label:<50} {sec:7.3f} {sec / base:8.2f} {med:8.3f} "
                f"{cpu:7.3f} {cpu / base_cpu:8.2f} {peak:>8}",
                flush=True,
            )
    print(
        "best s: fastest timed iteration (wall); median s: median wall; CPU s: median CPU seconds\n"
        "of this process per iteration (all threads; on CUDA mostly launch overhead);\n"
        "× plain: over the first row's figure (lower = faster)"
    )
    return 0


# ------------------------------------------------------------------------------------------
# Tiles per step
# ------------------------------------------------------------------------------------------

TESTDATA = Path(
    os.environ.get("DIPPAS_TESTDATA", REPO.parent / "shared" / "data" / "prnu-python-testdata")
)


def _region(size: int, count: int):
    """``count`` size×size tiles of a real photo (a 2-row region), and a reference P each."""
    import numpy as np

    from dippas_core.io import read_image
    from dippas_core.residual import residual

    photos = sorted((TESTDATA / "nat-jpg").glob("*.JPG"))
    if photos:
        photo, source = np.asarray(read_image(photos[0])), photos[0].name
    else:  # no camera data here: the smooth synthetic picture (said in the output)
        photo, source = _photo(size * max(2, count))[0], "synthetic"
    cols = -(-count // 2)
    h0, w0 = (photo.shape[0] - 2 * size) // 2, (photo.shape[1] - cols * size) // 2
    region = photo[h0 : h0 + 2 * size, w0 : w0 + cols * size]
    tiles = [
        region[r * size : (r + 1) * size, c * size : (c + 1) * size]
        for r in range(2)
        for c in range(cols)
    ][:count]
    return [(t, residual(t)) for t in tiles], source


def _batch_of(n: int, tiles, config, device):
    from dippas_core.dip.batched import PreparedJob, _Batch, _Tile, _with_params
    from dippas_core.dip.device import speed_settings
    from dippas_core.dip.inversion import image_to_unit

    speed = speed_settings(config, device)
    batch = _Batch(device, speed)
    multiple = 2 ** (len(config.widths) - 1)
    for i in range(n):
        img, P = tiles[i % len(tiles)]
        c = config.replace(seed=i)
        job = PreparedJob(i, image_to_unit(img, multiple), P, c)
        batch.add(_with_params(_Tile(job, c, device, speed)))
    return batch


def _time_tiles(ns, tiles, config, device, iters: int) -> dict[int, tuple[float, float]]:
    """(median wall, median CPU) seconds of one step of each N, the Ns in turn (round-robin).

    The CPU seconds of this process barely depend on other jobs' load: on a shared machine they
    show what a batch costs in core-seconds, while the wall seconds show what it gains.
    """
    import numpy as np
    import torch

    batches = {n: _batch_of(n, tiles, config, device) for n in ns}
    times: dict[int, list[float]] = {n: [] for n in ns}
    cpu: dict[int, list[float]] = {n: [] for n in ns}
    try:
        for _ in range(1 + iters):  # one warm-up step
            for n, batch in batches.items():
                t0, c0 = time.perf_counter(), time.process_time()
                batch.step()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times[n].append(time.perf_counter() - t0)
                cpu[n].append(time.process_time() - c0)
    finally:
        for batch in batches.values():
            batch.release()
    return {n: (float(np.median(times[n][1:])), float(np.median(cpu[n][1:]))) for n in ns}


def _profile_tiles(ns, tiles, config, device, top: int = 6) -> None:
    """Where one step's time goes, per N: the ops with the most self time (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    for n in ns:
        batch = _batch_of(n, tiles, config, device)
        try:
            batch.step()  # warm-up
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(2):
                    batch.step()
        finally:
            batch.release()
        events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in events) / 2 / 1e6
        ops = ", ".join(
            f"{e.key} {e.self_cpu_time_total / 2 / 1e6:.3f}" for e in events[:top]
        )
        print(f"  profile N={n}: {total:.3f} s/step ({total / n:.3f} per tile); "
              f"most self time (s/step): {ops}", flush=True)


def _run_region(tiles, config, n) -> float:
    """Wall seconds to invert every tile: N = 1 as separate ``invert`` runs, else batched."""
    from dippas_core.dip import invert, run_to_end
    from dippas_core.dip.batched import TileJob, invert_tiles

    t0 = time.perf_counter()
    if n == 1:  # the plain one-network path, tile after tile
        for i, (img, P) in enumerate(tiles):
            run_to_end(invert(img, P, config.replace(seed=i)))
        return time.perf_counter() - t0
    jobs = [TileJob(i, img, P, seed=i) for i, (img, P) in enumerate(tiles)]
    for _ in invert_tiles(jobs, config, tiles_per_step=n):
        pass
    return time.perf_counter() - t0


def _tiles_main(args) -> int:
    import torch

    from dippas_core.config import DIPConfig
    from dippas_core.dip.batched import choose_tiles_per_step
    from dippas_core.dip.device import device_name, resolve_device, speed_settings, usable_cpus
    from dippas_core.dip.inversion import image_to_unit

    sys.path.insert(0, str(Path(__file__).parent))
    from _forensic_timing import machine_note

    # N = 1 gets every core (torch's intra-op threads); a thread batch runs one tile per core
    torch.set_num_threads(usable_cpus())
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    ns = [int(v) for v in args.tiles.split(",")]
    sizes = args.sizes or ([512] if cuda else [64, 128])
    amps = (args.amp or ("auto,off" if cuda else "off")).split(",")
    label = "" if cuda else "  [timings under load (shared machine)]"
    print(f"device: {device_name(device)}   torch {torch.__version__}   {machine_note()}{label}")
    print(f"tiles per step, preset {args.preset!r}; median of {args.iters} steps after 1 warm-up, "
          "the Ns interleaved; px·it/s = N·H·W / seconds per step; × N=1: rate over N=1's; "
          f"N=1 is the plain one-network path (what invert runs) on {torch.get_num_threads()} "
          "torch threads; on the CPU a batch steps one tile per core, one torch thread each "
          "(the threads engine); CPU: this process's CPU seconds")
    for amp in amps:
        for size in sizes:
            config = DIPConfig.preset(
                args.preset, device=str(device), amp=amp, max_iter=args.region_iters,
                record_psnr=float("inf"), stop_psnr=float("inf"), torch_threads=None,
            )
            tiles, source = _region(size, max(8, max(ns)))
            seconds = _time_tiles(ns, tiles, config, device, args.iters)
            print(f"\n{size}×{size} px, amp={amp}, tiles from {source}")
            print(f"{'N':>4} {'s/step':>9} {'kpx·it/s':>9} {'× N=1':>7} {'CPU s/step':>11} "
                  f"{'× N=1 (CPU)':>12}")
            one = seconds.get(1)
            for n in ns:
                wall, cpu = seconds[n]
                rate = n * size * size / wall
                ratio = f"{one[0] * n / wall:7.2f}" if one else "      -"
                ratio_cpu = f"{one[1] * n / cpu:12.2f}" if one else "           -"
                print(f"{n:>4} {wall:9.3f} {rate / 1e3:9.1f} {ratio} {cpu:11.3f} {ratio_cpu}",
                      flush=True)
            if args.profile:
                _profile_tiles(ns, tiles, config, device)
                continue
            multiple = 2 ** (len(config.widths) - 1)
            speed = speed_settings(config, device)
            region = tiles[:8]
            t0 = time.perf_counter()
            n_auto, why = choose_tiles_per_step(
                image_to_unit(region[0][0], multiple), region[0][1], config, device, speed,
                len(region),
            )
            t_choose = time.perf_counter() - t0
            print(f"auto: N={n_auto} ({why}; {t_choose:.1f} s)", flush=True)
            # N = 1, the auto N and the table's fastest batch (when auto kept the plain path)
            fastest = max((n for n in ns if n > 1), key=lambda n: n / seconds[n][0], default=1)
            runs: dict[int, list[float]] = {n: [] for n in dict.fromkeys((1, n_auto, fastest))}
            for _ in range(2):  # alternate, best of two: the machine's load hits all alike
                for n in runs:
                    runs[n].append(_run_region(region, config, n))
            best = {n: min(t) for n, t in runs.items()}
            t1, tn = best[1], best[n_auto]
            print(f"region of {len(region)} tiles × {args.region_iters} iterations (best of 2): "
                  + ", ".join(f"N={n} {t:.2f} s" for n, t in best.items())
                  + f"; N=1 = separate invert runs; auto N={n_auto}: speed-up {t1 / tn:.2f}× "
                  f"({t1 / (tn + t_choose):.2f}× counting the auto measurement)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
