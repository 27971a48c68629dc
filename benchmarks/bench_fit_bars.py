"""Two changes to the fit's fidelity bars, each against the code before it, side by side on the
speed levers' held-out tiles (issue 23's "cut what is not the network"; issue 22's bars).

``--lever gate`` (the default): the bars measured only from τ, against at every step.

A photo's tiles keep every output (their fallback is the best below τ), but only outputs at τ or
above may be recorded, so only those need the local fidelity bars
(:func:`dippas_core.dip.fitting.meets_local_bars`, 6–8 % of a 256-px iteration on a CPU).
``every``: the bars measured at every step (the code before the gate: ``bars_checked_from``
patched to ``-inf``); ``gated``: today's code.  The fit itself is the same, so both must give the
same iterations and the same image: the script checks it.  Last, one fit step and one check
of the bars on its output, timed side by side on the most textured tile: what the gate takes off
an iteration below τ.

Tiles: those of ``bench_speed_levers.py`` (256-px tiles of the held-out photos at evenly spaced
quantiles of start PSNR), the ``cpu`` preset of today, one torch thread, one tile at a time,
modes alternating tile by tile.  Time: this process's CPU seconds.  Per megapixel: a whole
3008×2000 photo's tile count (overlap 32) times the mean seconds per tile, over its 6.0 MP.

``--lever checker``: today's checkerboard (``own``: held against the photo's own fine detail,
a faint pattern counted by its energy) against the one of 16c6f85 (``flat``: a flat spectrum
only, however faint; both patched back).  Not the same
fit: the table gives both modes' iterations, CPU seconds and the bars their final images break
(today's measures for both).

``--lever upsample``: the generator's nearest-neighbour up-sampling (the paper's) against
``bilinear-top`` (bilinear into the full-resolution scale only); ``--lever bilinear``: against
bilinear at every scale.  Not the same fit either, the same table.  ``--tile PHOTO@Y,X`` adds
named tiles (e.g. the whole-photo tiles where nearest up-sampling drew row-period stripes).

Results go to ``--out`` as JSON lines, one per (tile, mode); a run resumes where it stopped::

    NUMBA_CACHE_DIR=/tmp/numba .venv/bin/python benchmarks/bench_fit_bars.py \\
        --data ../shared/data/prnu-python-testdata --fingerprints /tmp/fp --out gate.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_speed_levers import (  # noqa: E402
    TILE,
    append_row,
    bench_tiles,
    choose_tiles,
    read_rows,
    tile_arguments,
    tile_inputs,
    tile_key,
    tiles_per_megapixel,
)

#: Each lever: its two modes, the code before it first (patched back) and today's.
LEVERS = {"gate": ("every", "gated"), "checker": ("flat", "own"),
          "upsample": ("nearest", "bilinear-top"), "bilinear": ("nearest", "bilinear")}
#: Modes that set the generator's up-sampling rather than patch the code back.
SETTINGS = {mode: {"upsample": mode} for mode in ("nearest", "bilinear", "bilinear-top")}


@contextlib.contextmanager
def bars_at_every_step(on: bool):
    """With ``on``: the fit measures the bars at every step, as before the gate."""
    from dippas_core.dip import fitting
    from dippas_core.dip.batched import _stack

    saved = fitting.bars_checked_from
    if on:
        fitting.bars_checked_from = _stack.bars_checked_from = lambda *a, **k: -math.inf
    try:
        yield
    finally:
        fitting.bars_checked_from = _stack.bars_checked_from = saved


@contextlib.contextmanager
def checkerboard_against_a_flat_spectrum(on: bool):
    """With ``on``: the fit's checkerboard as at 16c6f85 — against a flat spectrum only
    (``checker_reference`` patched to ones) and however faint the pattern (the amplitude from
    which it counts in full patched to nearly 0)."""
    from dippas_core import fidelity

    saved = fidelity.checker_reference, fidelity.CHECKER_MIN_AMPLITUDE
    if on:
        fidelity.checker_reference = lambda photo, window=fidelity.CHECKER_WINDOW: np.ones(
            len(fidelity.checker_windows(np.shape(photo), window)[0]))
        fidelity.CHECKER_MIN_AMPLITUDE = 1e-9
    try:
        yield
    finally:
        fidelity.checker_reference, fidelity.CHECKER_MIN_AMPLITUDE = saved


#: The mode that patches the code back to before its lever.
BEFORE = {"every": bars_at_every_step, "flat": checkerboard_against_a_flat_spectrum}


def run_tile(data: Path, fps: Path, tile: dict[str, Any], mode: str, seed: int) -> dict[str, Any]:
    """One tile in one mode: CPU seconds, iterations (and how many at τ or above), the image."""
    from dippas_core.attribution import attribute
    from dippas_core.config import AnonymizeConfig
    from dippas_core.fidelity import fidelity
    from dippas_core.pipeline import anonymize

    photo, attack, unseen = tile_inputs(data, fps, tile)
    config = AnonymizeConfig.preset("cpu", seed=seed, tiles_per_step=1,
                                    **SETTINGS.get(mode, {}))
    tau = float(config.dip.record_psnr)
    steps: list[float] = []
    before = BEFORE.get(mode)
    with before(True) if before else contextlib.nullcontext():
        c0 = time.process_time()
        result = anonymize(photo, attack, config, on_step=lambda s: steps.append(s.psnr))
        cpu_s = time.process_time() - c0
    fid = fidelity(photo, result.image, block=int(config.assembly.B))  # today's measures
    after = attribute(np.asarray(result.image, np.float32), unseen, pce=False).ncc
    return {"tile": tile_key(tile), "start_psnr": tile["start_psnr"], "mode": mode,
            "cpu_s": cpu_s, "iterations": len(steps),
            "at_tau": int(sum(p >= tau for p in steps)),
            "image_sha256": hashlib.sha256(np.ascontiguousarray(result.image)).hexdigest(),
            "psnr": float(fid.psnr), "bars_broken": [f.split()[0] for f in fid.failures()],
            "ncc_after": float(after)}


def step_and_check_seconds(data: Path, tile: dict[str, Any], rounds: int = 3,
                           n: int = 20) -> list[tuple[float, float]]:
    """CPU seconds of one fit step and of one check of the bars on its output, ``rounds`` times
    ``n`` of each, side by side on ``tile`` (the cost the gate takes off an iteration below τ)."""
    from dippas_core.config import AnonymizeConfig
    from dippas_core.dip import invert
    from dippas_core.dip.fitting import meets_local_bars
    from dippas_core.io import read_image

    y, x = tile["y"], tile["x"]
    photo = read_image(data / "nat-jpg" / tile["photo"])[y : y + TILE, x : x + TILE]
    dip = AnonymizeConfig.preset("cpu", seed=0).dip.replace(
        record_psnr=-math.inf, stop_psnr=math.inf, max_iter=rounds * n + 1, torch_threads=1)
    inversion = invert(photo, np.zeros((TILE, TILE), np.float32), dip, fidelity_from=math.inf)
    steps = iter(inversion)
    next(steps)  # set-up and the first step
    fit = inversion._inverter  # the output the bars are checked on: the last step's
    out = []
    try:
        for _ in range(rounds):
            c0 = time.process_time()
            for _ in range(n):
                next(steps)
            step = (time.process_time() - c0) / n
            c0 = time.process_time()
            for _ in range(n):
                meets_local_bars(fit._shown, fit.target).item()
            out.append((step, (time.process_time() - c0) / n))
    finally:
        inversion.close()
    return out


def summary(rows: list[dict[str, Any]], lever: str = "gate") -> str:
    """Per tile and per megapixel: CPU seconds and iterations of both modes of ``lever``, their
    ratio, the same image or not (``gate``), the bars the final image breaks (``checker``)."""
    a, b = LEVERS[lever]
    by = {(r["tile"], r["mode"]): r for r in rows}
    tiles = [t for t in dict.fromkeys(r["tile"] for r in rows)
             if all((t, m) in by for m in (a, b))]
    if not tiles:
        return f"no tile has both modes of {lever} yet"
    lines = [f"{'tile':34} {'start':>6} {a + ' it':>8} {b + ' it':>8} {a + ' s':>8} "
             f"{b + ' s':>8} {'ratio':>6}  {'same image' if lever == 'gate' else 'bars broken'}"]
    for t in tiles:
        e, g = by[(t, a)], by[(t, b)]
        if lever == "gate":
            tail = "yes" if e["image_sha256"] == g["image_sha256"] and (
                e["iterations"] == g["iterations"]) else "NO"
        else:
            tail = (f"{a}: {','.join(e['bars_broken']) or '-'} ({e['psnr']:.2f} dB); "
                    f"{b}: {','.join(g['bars_broken']) or '-'} ({g['psnr']:.2f} dB)")
        lines.append(f"{t:34} {e['start_psnr']:6.1f} {e['iterations']:8d} {g['iterations']:8d} "
                     f"{e['cpu_s']:8.1f} {g['cpu_s']:8.1f} {e['cpu_s'] / g['cpu_s']:6.2f}  {tail}")
    per_mp = tiles_per_megapixel(32)
    tot = {m: float(np.mean([by[(t, m)]["cpu_s"] for t in tiles])) * per_mp for m in (a, b)}
    lines += ["", f"CPU-s per MP (a 3008×2000 photo's {per_mp:.2f} tiles/MP × the mean): "
              f"{a} {tot[a]:.0f}, {b} {tot[b]:.0f}, ratio {a}/{b} {tot[a] / tot[b]:.2f} "
              f"over {len(tiles)} tiles"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    tile_arguments(parser)
    parser.add_argument("--lever", choices=tuple(LEVERS), default="gate",
                        help="gate: the bars measured from τ only; checker: the checkerboard "
                             "held against the photo's own fine detail; upsample / bilinear: "
                             "nearest against bilinear-top / bilinear up-sampling")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    rows = read_rows(args.out)
    if not args.report_only:
        done = {(r["tile"], r["mode"]) for r in rows}
        for k, tile in enumerate(bench_tiles(args)):
            key = tile_key(tile)
            modes = LEVERS[args.lever]
            for mode in modes if k % 2 == 0 else modes[::-1]:  # alternate which goes first
                if (key, mode) in done:
                    continue
                row = run_tile(args.data, args.fingerprints, tile, mode, args.seed)
                rows.append(row)
                append_row(args.out, row)
                print(f"{key} {mode}: {row['cpu_s']:.1f} CPU s, {row['iterations']} it "
                      f"({row['at_tau']} at τ), {row['psnr']:.2f} dB", flush=True)
    print(summary(rows, args.lever))
    if args.lever == "gate" and not args.report_only:
        textured = min(choose_tiles(args.data, args.tiles), key=lambda t: t["start_psnr"])
        print(f"\none step against one check of the bars, side by side "
              f"({textured['photo']}@{textured['y']},{textured['x']}, CPU ms):")
        for step, check in step_and_check_seconds(args.data, textured):
            print(f"  step {1e3 * step:6.1f}  bars {1e3 * check:5.1f}  "
                  f"bars/step {check / step:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
