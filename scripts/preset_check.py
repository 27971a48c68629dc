"""Does the viewer's network preset reach tau on small crops of a real photo, and when?

Runs the DIP inversion (no snapshots stored) on centre crops of a Dresden photo and prints, for
each crop size, the first iteration whose PSNR reaches tau, the best PSNR and the iterations
run.  Usage (one torch thread; minutes on a laptop CPU)::

    .venv/bin/python scripts/preset_check.py PHOTO [--preset tiny] [--lr 1e-2] [--sizes 64 128]
"""

from __future__ import annotations

import argparse
import sys
import time


def main(argv: list[str]) -> int:
    import numpy as np
    import torch

    from dippas_core.config import DIPConfig
    from dippas_core.dip import invert
    from dippas_core.io import center_crop, read_image
    from dippas_core.residual import residual

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photo")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    photo = read_image(args.photo)
    print(f"preset {args.preset}, lr {args.lr:g}, seed {args.seed}, photo {args.photo}")
    print(f"{'crop':>6s} {'tau':>5s} {'first it ≥ tau':>15s} {'best PSNR':>10s} {'iters':>6s} "
          f"{'stop':>9s} {'s':>6s}")
    for size in args.sizes:
        crop = np.ascontiguousarray(center_crop(photo, size))
        P = residual(crop.astype(np.float32), 5.0)  # blind reference: the crop's own residual
        cfg = DIPConfig.preset(args.preset, lr=args.lr, seed=args.seed)
        t0 = time.perf_counter()
        inversion = invert(crop, P, cfg)
        first, best, n = None, -np.inf, 0
        for step in inversion:
            n += 1
            best = max(best, step.psnr)
            if first is None and step.psnr >= cfg.record_psnr:
                first = step.iteration
        reason = inversion.result.stop_reason
        print(f"{size:>6d} {cfg.record_psnr:>5.1f} {str(first):>15s} {best:>10.2f} {n:>6d} "
              f"{reason:>9s} {time.perf_counter() - t0:>6.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
