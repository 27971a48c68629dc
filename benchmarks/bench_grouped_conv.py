"""One convolution of N tiles, forward + backward: N plain convolutions against one grouped one.

The layer shapes of the ``cpu`` network at a 64-px tile (3×3 and 1×1, 8–84 channels), each with
N separate weights, as ``dip.batched`` needs them.  Three ways, side by side:

``plain_cl``
    N plain convolutions in channels-last (what N separate ``invert`` runs do on the CPU);
``grouped_cl``
    one ``groups=N`` convolution over the stacked channels, channels-last (a hand-written
    channel-group network would run this);
``grouped``
    the same in the contiguous layout (the kernel vmap's batching rule picks).

Times are CPU seconds of this process (``time.process_time``, one torch thread), the fastest of
five, so the load of other jobs on a shared machine barely moves them.  The last column is the
grouped channels-last weight gradient against the plain one (relative to its largest value).

Usage::

    .venv/bin/python benchmarks/bench_grouped_conv.py
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

SHAPES = ((32, 8, 3, 64), (13, 21, 3, 64), (26, 26, 1, 64), (42, 42, 3, 32), (84, 84, 3, 16))
CL = torch.channels_last


def _cpu_seconds(fn: Callable[[], None], reps: int = 5) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(reps):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def _row(n: int, c_in: int, c_out: int, k: int, size: int) -> str:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, c_in, size, size, generator=gen)
    w0 = torch.randn(n, c_out, c_in, k, k, generator=gen) * 0.1
    b = torch.zeros(n, c_out)
    gy = torch.randn(n, c_out, size, size, generator=gen)
    grads: dict[str, torch.Tensor] = {}

    def plain_cl() -> None:
        w = w0.clone().requires_grad_()
        ys = [
            F.conv2d(x[i : i + 1].contiguous(memory_format=CL), w[i].contiguous(memory_format=CL),
                     b[i], padding=k // 2)
            for i in range(n)
        ]
        (torch.cat(ys) * gy).sum().backward()
        grads["plain_cl"] = w.grad

    def grouped(layout: torch.memory_format, key: str) -> Callable[[], None]:
        def run() -> None:
            w = w0.clone().requires_grad_()
            xg = x.reshape(1, n * c_in, size, size).contiguous(memory_format=layout)
            wg = w.reshape(n * c_out, c_in, k, k).contiguous(memory_format=layout)
            y = F.conv2d(xg, wg, b.reshape(-1), padding=k // 2, groups=n)
            (y.reshape(n, c_out, size, size) * gy).sum().backward()
            grads[key] = w.grad

        return run

    t_plain = _cpu_seconds(plain_cl)
    t_gcl = _cpu_seconds(grouped(CL, "grouped_cl"))
    t_g = _cpu_seconds(grouped(torch.contiguous_format, "grouped"))
    err = float((grads["grouped_cl"] - grads["plain_cl"]).abs().max()
                / grads["plain_cl"].abs().max())
    return (f"{n:>3} {c_in:>4}->{c_out:<4} {k}×{k} {size:>4} px {t_plain * 1e3:9.1f} "
            f"{t_gcl * 1e3:11.1f} {t_g * 1e3:9.1f} {t_plain / t_gcl:12.2f} {err:9.1e}")


def main() -> int:
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread; CPU ms of forward + backward (best of 5)")
    print(f"{'N':>3} {'layer':<20} {'plain_cl':>9} {'grouped_cl':>11} {'grouped':>9} "
          f"{'plain/grp_cl':>12} {'wgrad err':>9}")
    for n in (4, 8):
        for shape in SHAPES:
            print(_row(n, *shape), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
