"""Residual (method §1): reference path vs fast path, side by side in one run.

Usage::

    NUMBA_CACHE_DIR=/tmp/numba_cache .venv/bin/python benchmarks/bench_residual.py [--batch 64]

Prints seconds for each path and the ratio (reference / fast) for one 512×512×3 image, one
1024×1024×3 image, and a batch of N 512×512×3 images (throughput: the reference path one image
after another, the fast path through ``residual_batch`` on all cores).  Times are the best of a few
runs after a warm-up (Numba compilation and caches excluded).  CPU seconds (all threads) are
printed beside the wall seconds: on a shared machine they are the steadier figure.  Images are
random uint8 (the cost does not depend on content).  The load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _forensic_timing import HEADER, best_of, machine_note, row  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="images in the batch (default 64)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (best is kept)")
    parser.add_argument("--profile", action="store_true",
                        help="also print where the time goes, stage by stage (CPU ms, 1 thread)")
    args = parser.parse_args()

    from dippas_core.residual import residual, residual_batch, residual_reference

    rng = np.random.default_rng(0)
    img512 = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
    img1024 = rng.integers(0, 256, (1024, 1024, 3), dtype=np.uint8)
    batch = rng.integers(0, 256, (args.batch, 512, 512, 3), dtype=np.uint8)

    residual(img512[:64, :64])  # warm-up: load the compiled kernels
    residual_batch(batch[:2, :64, :64])
    print(f"residual benchmark — {machine_note()}")
    print(HEADER)
    ref = best_of(lambda: residual_reference(img512), args.repeat)
    fast = best_of(lambda: residual(img512), args.repeat * 3)
    print(row("one 512×512×3", ref, fast), flush=True)
    ref = best_of(lambda: residual_reference(img1024), args.repeat)
    fast = best_of(lambda: residual(img1024), args.repeat * 3)
    print(row("one 1024×1024×3", ref, fast), flush=True)
    ref = best_of(lambda: [residual_reference(im) for im in batch], 1)
    fast = best_of(lambda: residual_batch(batch), args.repeat)
    label = f"batch of {args.batch} × 512×512×3"
    print(row(label, ref, fast), flush=True)
    print(f"{'  throughput (images/s, wall)':<30} {args.batch / ref[0]:>11.1f} "
          f"{args.batch / fast[0]:>11.1f}")
    if args.profile:
        profile(img512)
    print(f"after: {machine_note()}")
    return 0


def profile(image: np.ndarray, repeat: int = 20) -> None:
    """CPU milliseconds of each stage of both paths on one image, in this thread only."""
    import importlib
    import time

    from scipy import fft

    res = importlib.import_module("dippas_core.residual")
    kernels = importlib.import_module("dippas_core._kernels")

    def cpu_ms(fn, n=repeat):
        fn()
        t0 = time.thread_time()
        for _ in range(n):
            fn()
        return (time.thread_time() - t0) / n * 1e3

    x = res._as_float255(image)
    planes = res._planes(x)
    lo, hi, rlo, rhi = res._filters()
    noise = res._wavelet_noise_fast(x, 5.0, threaded=False)
    gray, std = kernels.gray_zero_mean(noise, res.GRAY_WEIGHTS, *x.shape[:2])
    spectrum = fft.rfft2(gray)
    details, approx = [], planes[0]
    for _ in range(res.LEVELS):
        approx, *bands = kernels.dwt2_level(approx, lo, hi)
        details.append(bands)

    def dwt():
        a = planes[0]
        for _ in range(res.LEVELS):
            a = kernels.dwt2_level(a, lo, hi)[0]

    def shrink():
        for bands in details:
            for band in bands:
                kernels.wiener_shrink_inplace(band.copy()[np.newaxis], 25.0)

    def idwt():
        rec = np.zeros_like(approx)
        for bands in reversed(details):
            rec = kernels.idwt2_level(rec, *bands, rlo, rhi)

    h, w = x.shape[:2]
    stages = [
        ("input: uint8 to float32 channel planes", lambda: res._planes(res._validated(image))),
        ("DWT, 4 levels (per channel)", dwt),
        ("Wiener shrink of 12 bands (per channel)", shrink),
        ("inverse DWT (per channel)", idwt),
        ("one channel, steps 1-2 in one kernel", lambda: res._wavelet_noise_plane_fast(
            planes[0], 25.0)),
        ("gray + zero-mean + std", lambda: kernels.gray_zero_mean(noise, res.GRAY_WEIGHTS, h, w)),
        ("rfft2", lambda: fft.rfft2(gray)),
        ("Fourier-domain Wiener gain", lambda: kernels.dft_wiener_gain(
            spectrum.copy(), h, w, std * std)),
        ("irfft2", lambda: fft.irfft2(spectrum, s=(h, w))),
        ("whole fast residual, 1 thread", lambda: res._residual_fast(x, 5.0, threaded=False)),
    ]
    print(f"\nwhere the time goes, {h}×{w}×3, CPU ms in one thread (best of {repeat}):")
    for label, fn in stages:
        print(f"  fast  {label:<42} {cpu_ms(fn):8.2f}")
    ref_stages = [
        ("DWT + 4 box filters per band + IDWT (per channel)",
         lambda: res._wavelet_noise_channel_reference(planes[0], 5.0)),
        ("gray + zero-mean", lambda: res.zero_mean(res.rgb2gray(noise.transpose(1, 2, 0)))),
        ("Fourier-domain Wiener filter (fft2)", lambda: res.wiener_dft(gray)),
        ("whole reference residual", lambda: res.residual_reference(x)),
    ]
    for label, fn in ref_stages:
        print(f"  ref   {label:<42} {cpu_ms(fn, 3):8.2f}")


if __name__ == "__main__":
    sys.exit(main())
