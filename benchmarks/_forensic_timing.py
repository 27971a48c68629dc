"""Helpers shared by the benchmark scripts: timing and a note on the machine's load."""

from __future__ import annotations

import os
import time
from collections.abc import Callable


def best_of(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(wall, CPU) seconds of the fastest of ``repeat`` calls (after the caller's warm-up).

    CPU time is the process's, all threads together: on a loaded machine it is the steadier
    measure of the work done, while wall time also shows the parallel speed-up.
    """
    best = (float("inf"), float("inf"))
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if wall < best[0]:
            best = (wall, cpu)
    return best


def machine_note() -> str:
    """CPU count and load average: other processes on the machine skew the figures."""
    try:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "n/a"
    return f"{os.cpu_count()} CPU cores, load average {load}"


def row(label: str, ref: tuple[float, float], fast: tuple[float, float]) -> str:
    """One line: wall seconds of each path and their ratio, then the same for CPU seconds."""
    return (
        f"{label:<30} {ref[0]:>9.3f} s {fast[0]:>9.3f} s {ref[0] / fast[0]:>7.1f}×"
        f"   {ref[1]:>8.3f} s {fast[1]:>8.3f} s {ref[1] / fast[1]:>7.1f}×"
    )


HEADER = (
    f"{'':<30} {'wall: ref':>11} {'fast':>11} {'ratio':>8}"
    f"   {'CPU: ref':>10} {'fast':>10} {'ratio':>8}"
)
