"""Argument types that refuse a bad value while the command line is parsed, before any work.

Each is an ``argparse`` ``type=``: a bad value ends the command at once with exit status 2 and
``error: argument --sigma: ...``, instead of hours later (or with a traceback, or a crash: a
seed beyond 64 bits, ``--torch-threads 100000``).
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable

__all__ = [
    "MAX_SEED",
    "MAX_THREADS",
    "finite_float",
    "int_between",
    "positive_float",
    "seed",
    "torch_threads",
]

#: Largest seed: torch and NumPy both take it (torch's generator is 64-bit, signed on input).
MAX_SEED = 2**63 - 1
#: Largest torch thread count accepted: more threads than cores only slows a run down, and
#: torch crashes on absurd counts.
MAX_THREADS = max(1, os.cpu_count() or 1)


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def finite_float(text: str) -> float:
    """A finite number (no NaN, no infinity, nothing that overflows to one)."""
    value = _number(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def int_between(low: int, high: int | None = None) -> Callable[[str], int]:
    """A whole number in ``[low, high]`` (``high=None``: no upper bound)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low or (high is not None and value > high):
            upper = f" and {high}" if high is not None else ""
            what = f"between {low}{upper}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"expected a whole number {what}, got {value}")
        return value

    parse.__name__ = "int"
    return parse


def seed(text: str) -> int:
    """A random seed in ``[0, 2**63 - 1]``."""
    return int_between(0, MAX_SEED)(text)


def torch_threads(text: str) -> int:
    """A torch thread count in ``[1, cores of this machine]``."""
    return int_between(1, MAX_THREADS)(text)
