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
    from dippas_core.dip import DIPConfig, invert

    img, P = _photo(size)
    cfg = DIPConfig(
        device=str(device),
        max_iter=10**6,
        tau_psnr=float("inf"),
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
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(_memory_worker(json.loads(args.worker))))
        return 0

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


if __name__ == "__main__":
    sys.exit(main())
