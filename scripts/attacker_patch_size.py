"""Choose the learned attacker's patch size: a short training per size, scored on validation.

Each candidate (patch, width) trains for ``--minutes`` on the training side of the fixed split
(one torch thread) and is scored on the validation flat fields (never trained on): patch-level
accuracy, and the accuracy of 128×128 crops (the evaluation's crop size) pooled over their patches.

    python scripts/attacker_patch_size.py ../shared/data/prnu-python-testdata --minutes 3
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def crop_accuracy(model, paths, size: int = 128, per_shot: int = 16) -> float:
    """Accuracy of ``size`` crops of each shot's centred region (score-stride patches pooled)."""
    from dippas_core.evaluation import camera_label, crop_layout
    from dippas_core.io import center_crop, read_image

    hits = []
    for p in paths:
        img = center_crop(read_image(p), 512)
        for top, left in crop_layout(size, per_shot, 512):
            probs = model.predict_proba(img[top : top + size, left : left + size])
            hits.append(max(probs, key=probs.get) == camera_label(p))
    return float(np.mean(hits))


def main(argv=None) -> int:
    import torch

    from dippas_core.attacker import (
        AttackerConfig,
        _patch_set,
        attribution_metrics,
        train_attacker,
    )

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("data", type=Path)
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--candidates", default="32:16,64:8,128:4", help="patch:width,...")
    ap.add_argument("--region", type=int, default=1024)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    results = []
    for cand in args.candidates.split(","):
        patch, width = (int(v) for v in cand.split(":"))
        cfg = AttackerConfig(patch=patch, stride=patch, score_stride=patch // 2, width=width,
                             region=args.region, max_minutes=args.minutes)
        t0 = time.perf_counter()
        model = train_attacker(args.data, cfg)
        val = list(map(Path, model.meta["split"]["validation"]))
        val = [args.data / "ff-jpg" / p for p in val]
        x, y, _ = _patch_set(val, model.cameras, cfg, patch, lambda m: None, "val")
        m = attribution_metrics(model.patch_log_proba_of(x), y)
        row = {"patch": patch, "width": width, "epochs": len(model.meta["history"]),
               "train_patches_seen": sum(h["patches"] for h in model.meta["history"]),
               "val_patch_accuracy": m["accuracy"], "val_patch_auc": m["auc"],
               "val_crop128_accuracy": crop_accuracy(model, val),
               "seconds": round(time.perf_counter() - t0, 1)}
        results.append(row)
        print(json.dumps(row), flush=True)
    print("patch  width  epochs  seen     val patch acc  val AUC  val 128-crop acc")
    for r in results:
        print(f"{r['patch']:5d}  {r['width']:5d}  {r['epochs']:6d}  {r['train_patches_seen']:7d}"
              f"  {r['val_patch_accuracy']:13.3f}  {r['val_patch_auc']:7.3f}"
              f"  {r['val_crop128_accuracy']:16.3f}")
    print("chance accuracy 1/6 = 0.167, chance AUC 0.5 (timings under load, shared machine)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
