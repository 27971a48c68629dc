"""How far N tiles per step drift from N separate ``invert`` runs, iteration by iteration.

Each pair runs the same real crops (64×64 tiles of a Dresden photo) with the same seeds and
prints, at chosen iterations, the largest difference of the snapshots ``I_phi`` (max over tiles of
max |Δ| / 255), the mean absolute one, and the largest PSNR gap (dB):

``batched``
    ``dip.batched.invert_tiles(N)`` against separate :func:`dippas_core.dip.invert` runs (each in
    its default layout: channels-last on the CPU), float32.
``layout``
    The plain path against itself: the same runs with the network in the contiguous layout
    instead of channels-last, and the input noise drawn in the same order for both, so only the
    kernels' summation order differs.  This is float32's own noise floor for DIP.
``batched64``
    ``batched`` with torch's default dtype float64.

Usage (from the repository root; tens of seconds per 10 iterations on a loaded 2-core CPU)::

    NUMBA_CACHE_DIR=/tmp/numba .venv/bin/python scripts/batched_divergence.py --iters 300
    NUMBA_CACHE_DIR=/tmp/numba .venv/bin/python scripts/batched_divergence.py --first-step
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
TESTDATA = Path(
    os.environ.get("DIPPAS_TESTDATA", REPO.parent / "shared" / "data" / "prnu-python-testdata")
)
PHOTO = "Nikon_D200_0_14902.JPG"
MARKS = (1, 2, 3, 5, 10, 20, 30, 50, 100, 200, 300, 500, 1000)


def crops(size: int, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` neighbouring size×size tiles from the photo's centre, each with a P."""
    from dippas_core.io import read_image

    photo = np.asarray(read_image(TESTDATA / "nat-jpg" / PHOTO))
    cols = max(1, count // 2)
    h0, w0 = photo.shape[0] // 2 - size, photo.shape[1] // 2 - cols * size // 2
    rng = np.random.default_rng(11)
    out = []
    for k in range(count):
        r, c = divmod(k, cols)
        tile = photo[h0 + r * size : h0 + (r + 1) * size, w0 + c * size : w0 + (c + 1) * size]
        out.append((tile, rng.normal(0, 0.02, tile.shape[:2]).astype(np.float32)))
    return out


def separate(tiles, cfg) -> list[np.ndarray]:
    """Every iteration's snapshot of each tile, one :func:`invert` run per tile."""
    from dippas_core.dip import invert

    return [
        np.stack([s.snapshot for s in invert(img, P, cfg.replace(seed=100 + i))])
        for i, (img, P) in enumerate(tiles)
    ]


def batched(tiles, cfg, n: int) -> list[np.ndarray]:
    """The same, the tiles ``n`` per optimiser step."""
    from dippas_core.dip.batched import TileJob, TileStep, invert_tiles

    jobs = [TileJob(i, img, P, seed=100 + i) for i, (img, P) in enumerate(tiles)]
    snaps: dict[int, list] = {i: [] for i in range(len(tiles))}
    for event in invert_tiles(jobs, cfg, tiles_per_step=n):
        if isinstance(event, TileStep):
            snaps[event.key].append(event.step.snapshot)
    return [np.stack(snaps[i]) for i in range(len(tiles))]


def gaps(a, b, tiles) -> dict[str, np.ndarray]:
    """Per iteration: max and mean |Δ snapshot| / 255 and |Δ PSNR| (dB), each the max over tiles."""

    def psnr(snaps: np.ndarray, ref: np.ndarray) -> np.ndarray:
        mse = ((snaps - ref[None]) ** 2).reshape(len(snaps), -1).mean(1)
        return 10 * np.log10(255.0**2 / mse)

    out: dict[str, list] = {"max": [], "mean": [], "psnr": []}
    for x, y, (img, _) in zip(a, b, tiles, strict=True):
        d = np.abs(x.astype(np.float64) - y).reshape(len(x), -1) / 255
        ref = img.astype(np.float64)
        out["max"].append(d.max(1))
        out["mean"].append(d.mean(1))
        out["psnr"].append(np.abs(psnr(x, ref) - psnr(y, ref)))
    return {k: np.max(v, axis=0) for k, v in out.items()}


def _same_noise_order() -> Callable[[], None]:
    """Draw z and its perturbations in NCHW order whatever the layout; returns the undo."""
    import torch

    from dippas_core.dip import inversion

    original = inversion.Inverter._randn

    def nchw(self, shape, layout):
        x = torch.randn(shape, generator=self.generator, device=self.device)
        return x.contiguous(memory_format=layout)

    inversion.Inverter._randn = nchw

    def undo() -> None:
        inversion.Inverter._randn = original

    return undo


def run_pair(pair: str, tiles, cfg, n: int) -> dict[str, np.ndarray]:
    import torch

    if pair == "batched":
        return gaps(batched(tiles, cfg, n), separate(tiles, cfg), tiles)
    if pair == "layout":
        undo = _same_noise_order()
        try:
            return gaps(
                separate(tiles, cfg.replace(channels_last=False)),
                separate(tiles, cfg.replace(channels_last=True)),
                tiles,
            )
        finally:
            undo()
    if pair == "batched64":
        before = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            return gaps(batched(tiles, cfg, n), separate(tiles, cfg), tiles)
        finally:
            torch.set_default_dtype(before)
    raise SystemExit(f"unknown pair {pair!r}")


def first_step(tiles, cfg) -> str:
    """How one batched step's Adam updates differ from the separate runs' (contiguous layout).

    Adam's first update is ``lr · g / (|g| + eps)``: counted per parameter, over all tiles.
    """

    from dippas_core.dip.batched import PreparedJob, _Batch, _Tile, _with_params
    from dippas_core.dip.device import resolve_device, speed_settings
    from dippas_core.dip.inversion import Inverter, image_to_unit

    cfg = cfg.replace(channels_last=False)
    device = resolve_device("cpu")
    speed = speed_settings(cfg, device)
    batch, alone = _Batch(device, speed), []
    for i, (img, P) in enumerate(tiles):
        c = cfg.replace(seed=100 + i)
        img01 = image_to_unit(img, 2 ** (len(cfg.widths) - 1))
        alone.append(Inverter(img01, P, c, device, speed))
        batch.add(_with_params(_Tile(PreparedJob(i, img01, P, c), c, device, speed)))
    size = tiles[0][0].shape[:2]
    for inv in alone:
        inv.perturb()
        inv.loss_of(inv.forward(inv.noisy_z, size).float()).backward()
    for t in batch.tiles:
        t.perturb()
    out = batch.forward().float()
    sum(t.loss_of(out[i : i + 1]) for i, t in enumerate(batch.tiles)).backward()
    total = above_tenth = above_lr = 0
    names: set[str] = set()
    for inv, t in zip(alone, batch.tiles, strict=True):
        for (name, p), q in zip(inv.model.named_parameters(), t.model.parameters(), strict=True):
            d = (p.grad / (p.grad.abs() + 1e-8) - q.grad / (q.grad.abs() + 1e-8)).abs()
            total += d.numel()
            above_tenth += int((d > 0.1).sum())
            above_lr += int((d > 1).sum())
            if bool((d > 1).any()):
                names.add(name)
    out = out.detach()
    diff = max(
        float((out[i : i + 1] - inv.forward(inv.noisy_z, size).detach()).abs().max())
        for i, inv in enumerate(alone)
    )
    return (f"first step, {len(tiles)} tiles, contiguous layout: outputs differ by {diff:.1e}; "
            f"of {total} parameters, {above_tenth} get Adam first steps differing by > 0.1·lr, "
            f"{above_lr} by > lr ({', '.join(sorted(names)) or 'none'})")


LABELS = {
    "batched": "batched N vs separate, float32",
    "layout": "separate: contiguous vs channels-last, f32",
    "batched64": "batched N vs separate, float64",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--tiles", type=int, default=4, help="tiles, all in one step (N)")
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--pairs", default="batched,layout,batched64")
    parser.add_argument(
        "--first-step", action="store_true", help="only how the first Adam steps differ"
    )
    args = parser.parse_args(argv)

    import torch

    from dippas_core.config import DIPConfig

    torch.set_num_threads(1)
    tiles = crops(args.size, args.tiles)
    cfg = DIPConfig.preset(
        args.preset, max_iter=args.iters, record_psnr=-np.inf, stop_psnr=np.inf, torch_threads=1
    )
    marks = [k for k in MARKS if k <= args.iters]
    if args.first_step:
        print(first_step(tiles, cfg))
        return 0
    print(
        f"preset {args.preset!r}, {args.tiles} tiles {args.size}×{args.size} of {PHOTO}, "
        f"N={args.tiles}, torch {torch.__version__}; at iteration:"
    )
    print(f"{'':<46}" + "".join(f"{k:>9}" for k in marks))
    for pair in args.pairs.split(","):
        g = run_pair(pair, tiles, cfg, args.tiles)
        print(LABELS[pair])
        for key, label, fmt in (
            ("max", "max |Δ snapshot| / 255", "9.1e"),
            ("mean", "mean |Δ snapshot| / 255", "9.1e"),
            ("psnr", "|Δ PSNR| (dB)", "9.3f"),
        ):
            print(f"  {label:<44}" + "".join(f"{g[key][k - 1]:{fmt}}" for k in marks))
        above = np.nonzero(g["max"] > 1e-4)[0]
        first = above[0] + 1 if above.size else "none"
        print(f"  first iteration with max |Δ| > 1e-4: {first}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
