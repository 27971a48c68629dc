"""How well the attacker attributes: accuracy and AUC, per patch and per photo."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .data import _shot_patches
from .model import AttackerModel, _log_softmax_rows

__all__ = ["attribution_metrics", "held_out_report"]


def attribution_metrics(log_proba: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy (arg-max camera) and pooled one-vs-rest AUC of camera scores.

    ``log_proba`` is ``(n, C)``; ``labels`` the true class of each row.  The AUC pools every
    (sample, camera) pair, positives being the true camera's, as the evaluation protocol does for
    NCC; chance is ``1/C`` for accuracy and 0.5 for the AUC.
    """
    from ..metrics import roc_auc

    lp = np.asarray(log_proba, np.float64)
    y = np.asarray(labels, np.int64)
    if lp.ndim != 2 or len(lp) != len(y) or not len(y):
        raise InputError(f"need (n, C) scores and n labels, got {lp.shape} and {y.shape}")
    onehot = np.zeros(lp.shape, bool)
    onehot[np.arange(len(y)), y] = True
    auc = float(roc_auc(lp.ravel(), onehot.ravel())) if lp.shape[1] > 1 else math.nan
    return {"accuracy": float((lp.argmax(1) == y).mean()), "auc": auc, "n": int(len(y)),
            "chance_accuracy": 1.0 / lp.shape[1], "chance_auc": 0.5}


def held_out_report(
    model: AttackerModel, paths: Sequence[Path], *, stride: int | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Patch- and photo-level accuracy and AUC of ``model`` on untouched shots ``paths``
    (their centred ``region`` square), with the chance levels and each photo's verdict."""
    from ..photo_sets import camera_label

    say = log or (lambda _m: None)
    model.check_cameras([camera_label(p) for p in paths])
    index = {c: i for i, c in enumerate(model.cameras)}
    step = int(stride or model.config.score_stride)
    patch_lp, patch_y, photo_lp, photo_y, photos = [], [], [], [], []
    for p in paths:
        x = _shot_patches(Path(p), model.config, step)
        lp = model.patch_log_proba_of(x)
        y = index[camera_label(p)]
        patch_lp.append(lp)
        patch_y.append(np.full(len(lp), y))
        pooled = _log_softmax_rows(lp.mean(axis=0))
        photo_lp.append(pooled)
        photo_y.append(y)
        photos.append({"photo": Path(p).name, "camera": model.cameras[y],
                       "predicted": model.cameras[int(pooled.argmax())],
                       "p_true": float(np.exp(pooled[y])), "patches": int(len(lp))})
        say(f"held-out {Path(p).name}: predicted {photos[-1]['predicted']} "
            f"(p(true) {photos[-1]['p_true']:.3f})")
    return {
        "patch": attribution_metrics(np.concatenate(patch_lp), np.concatenate(patch_y)),
        "photo": attribution_metrics(np.stack(photo_lp), np.array(photo_y)),
        "photos": photos,
        "stride": step,
        "region": model.config.region,
    }
