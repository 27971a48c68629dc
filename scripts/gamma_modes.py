"""Which way of fitting gamma keeps the PRNU injection alive?  (issue 17's measurement)

Runs DIPPAS aware on held-out crops of an evaluation preset (the photos the preset leaves out,
as ``assembly_grid.py --held-out``; same seeds and DIP settings) once per way of fitting gamma:

* ``adam``: gamma learned by Adam with the weights, one learning rate (the old behaviour);
* ``scaled``: the same, but the parameter is ``g`` with ``gamma = s·g``,
  ``s = 1 / (255·rms(P))`` (``g`` is then the injected pattern's amplitude in gray levels, O(1);
  the history's ``gamma`` column holds ``g``);
* ``group``: gamma in its own Adam parameter group, learning rate ``--gamma-lr``;
* ``lsq``: the clamped least-squares gamma of each iteration's output, a constant to autograd;
* ``lsq_attached``: the same with the gradient flowing through the closed form.

Per run: the share of recording-phase iterations (PSNR >= tau) with gamma at its bound (0),
median gamma and gamma* there, the mean NCC with K of the snapshots, of the output and of the
photo, the output's PSNR.  Usage::

    NUMBA_CACHE_DIR=/tmp/numba .venv/bin/python scripts/gamma_modes.py \\
        --data ../shared/data/prnu-python-testdata --out gm --crops 0 --modes adam,lsq
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

MODES = ("adam", "scaled", "group", "lsq", "lsq_attached")


def _inverter_class(mode: str, gamma_lr: float):
    """An ``Inverter`` that fits gamma the ``mode`` way (the library has ``lsq`` and ``adam``)."""
    from dippas_core.dip import inversion

    class Inverter(inversion.Inverter):
        def _allocate(self, img01, P, speed):
            super()._allocate(img01, P, speed)
            config, device = self.config, self.device
            self.scale = 1.0
            if mode == "scaled":
                self.scale = 1.0 / (255.0 * float(np.sqrt(np.mean(np.square(P)))))
            if mode == "group":
                groups = [
                    {"params": list(self.model.parameters())},
                    {"params": [self.gamma], "lr": gamma_lr},
                ]
                self.optimizer = inversion._adam(groups, config.lr, device)

        def _gammas(self, i_phi):
            gamma, star = super()._gammas(i_phi)
            if mode == "lsq_attached":
                attached = inversion.least_squares_gamma(i_phi, self.P, self.target)
                return attached.clamp(min=0.0)[0], star
            if mode == "scaled":
                return self.gamma * self.scale, star
            return gamma, star

    return Inverter


def main(argv: list[str] | None = None) -> int:
    import torch

    from dippas_core.dip import inversion
    from dippas_core.evaluation import EvalConfig, load_dataset
    from dippas_core.photo_sets import select_photos
    from dippas_core.pipeline import anonymize
    from dippas_core.run import RunDirectory
    from dippas_core.snapshots import block_ncc_from_sums

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--preset", default="cpu")
    p.add_argument("--crops", default="0", help="indices among the held-out crops")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--gamma-lr", type=float, default=1e-4)
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    config = EvalConfig.preset(args.preset)
    ds = load_dataset(args.data, config.replace(photos_per_camera=None, max_photos=None),
                      cache_dir=args.out / "fingerprints")
    used = {q.name for q in select_photos([Path(n) for n in ds.files["photos"]],
                                        config.photos_per_camera, config.max_photos)}
    held_out = [c for c in ds.crops if c.photo not in used]
    original = inversion.Inverter
    rows = []
    for index in [int(v) for v in args.crops.split(",")]:
        crop = held_out[index]
        K = ds.fingerprint_crop(crop.camera, crop)
        seed = config.seed + index
        for mode in args.modes.split(","):
            lib_mode = "lsq" if mode.startswith("lsq") else "adam"
            conf = config.anonymize_config(seed).replace(gamma_mode=lib_mode)
            run_dir = args.out / f"{index}_{mode}"
            inversion.Inverter = _inverter_class(mode, args.gamma_lr)
            t = time.perf_counter()
            try:
                report = anonymize(crop.image, K, conf, run_dir=run_dir, force=True).report
            except Exception as exc:  # noqa: BLE001 - e.g. never reached tau
                print(f"{crop.crop_id} {mode}: {exc}", flush=True)
                continue
            finally:
                inversion.Inverter = original
            run = RunDirectory.open(run_dir)
            hist = run.history()
            rec = hist["psnr"] >= config.dippas.assembly_tau
            sums = run.tile_sums.array()
            snap_ncc = block_ncc_from_sums(sums, max(sums.shape[1:3]))[:, 0, 0]
            row = {
                "crop": crop.crop_id, "mode": mode, "seconds": time.perf_counter() - t,
                "iterations": len(hist["iteration"]), "recording": int(rec.sum()),
                "at_bound": float(np.mean(hist["gamma"][rec] <= 0)) if rec.any() else None,
                "gamma_med": float(np.median(hist["gamma"][rec])) if rec.any() else None,
                "gamma_star_med": float(np.median(hist["gamma_star"][rec])) if rec.any() else None,
                "snap_ncc_mean": float(snap_ncc.mean()) if len(snap_ncc) else None,
                "ncc_photo": report["ncc"]["before"], "ncc_out": report["ncc"]["after"],
                "psnr": report["psnr"],
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gamma_modes.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
