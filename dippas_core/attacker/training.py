"""Training the attacker: Adam on the training patches, the best validation epoch kept."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .config import AttackerConfig
from .data import PhotoSplit, _patch_set, data_sha256, split_photos
from .model import AttackerModel, _network, _threads
from .scoring import attribution_metrics

__all__ = ["train_attacker"]


def _epoch_metrics(model: AttackerModel, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    if not len(y):
        return {}
    m = attribution_metrics(model.patch_log_proba_of(x), y)
    return {"val_accuracy": m["accuracy"], "val_auc": m["auc"]}


def _train_epoch(
    net: Any, opt: Any, x: np.ndarray, y: np.ndarray, order: np.ndarray, batch_size: int,
    deadline: float,
) -> tuple[float, int, int, bool]:
    """One pass over the patches in ``order``: summed loss, hits, patches seen, and whether the
    deadline passed (the pass then ends early)."""
    import torch

    net.train()
    losses, hits, seen = 0.0, 0, 0
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        if len(idx) < 2:  # batch norm needs two samples
            continue
        # unsqueeze, not x[idx, None]: numpy gives the unit axis a stride that made
        # oneDNN's convolution backward crash (segfault) here
        xb = torch.from_numpy(x[idx]).unsqueeze(1)
        yb = torch.from_numpy(y[idx])
        logits = net(xb)
        loss = torch.nn.functional.cross_entropy(logits, yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses += loss.item() * len(idx)
        hits += int((logits.argmax(1) == yb).sum())
        seen += len(idx)
        if time.perf_counter() > deadline:
            return losses, hits, seen, True
    return losses, hits, seen, False


def train_attacker(
    data: str | Path,
    config: AttackerConfig | None = None,
    *,
    split: PhotoSplit | None = None,
    log: Callable[[str], None] | None = None,
) -> AttackerModel:
    """Train the classifier on the training side of ``split`` (default :func:`split_photos`).

    Stops after ``max_epochs`` or when ``max_minutes`` have passed (residuals included), and
    keeps the weights of the epoch with the best validation accuracy (the last when there is no
    validation side).  The model's ``meta`` records the split, the data hash, the seed, the
    versions and the per-epoch history.
    """
    import torch

    from ..run import environment_info

    config = config or AttackerConfig()
    say = log or (lambda _m: None)
    t_start, cpu_start = time.perf_counter(), time.process_time()
    deadline = t_start + 60.0 * config.max_minutes
    split = split or split_photos(data, val_flat_fields=config.val_flat_fields)
    cameras = list(split.cameras)
    if len(cameras) < 2:
        raise InputError(f"need at least 2 cameras to attribute, have {cameras}")
    x_tr, y_tr, _ = _patch_set(split.train, cameras, config, config.stride, say, "train")
    x_va, y_va, _ = _patch_set(split.validation, cameras, config, config.stride, say, "val")
    if not len(y_tr):
        raise InputError("no training patches")
    say(f"{len(y_tr)} training and {len(y_va)} validation patches of {config.patch} px, "
        f"{len(cameras)} cameras")

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    net = _network(len(cameras), config.width)
    model = AttackerModel(net, cameras, config)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    history: list[dict[str, Any]] = []
    best: tuple[float, dict[str, Any]] | None = None
    stopped = "epochs"
    with _threads(config.torch_threads):
        for epoch in range(1, config.max_epochs + 1):
            losses, hits, seen, late = _train_epoch(
                net, opt, x_tr, y_tr, rng.permutation(len(y_tr)), config.batch_size, deadline
            )
            stopped = "time" if late else stopped
            net.eval()
            row = {"epoch": epoch, "train_loss": losses / max(seen, 1),
                   "train_accuracy": hits / max(seen, 1), "patches": seen,
                   **_epoch_metrics(model, x_va, y_va),
                   "elapsed_s": round(time.perf_counter() - t_start, 1)}
            history.append(row)
            say("epoch {epoch}: loss {train_loss:.3f}, train acc {train_accuracy:.3f}".format(**row)
                + (f", val acc {row['val_accuracy']:.3f}" if "val_accuracy" in row else "")
                + f", {row['elapsed_s']:.0f} s")
            score = row.get("val_accuracy", float(epoch))
            if best is None or score > best[0]:
                best = (score, {k: v.detach().clone() for k, v in net.state_dict().items()})
            if stopped == "time" or time.perf_counter() > deadline:
                stopped = "time"
                break
    if best is not None:
        net.load_state_dict(best[1])
    net.eval()
    model.meta = {
        **_provenance(data, split, config),
        "n_train_patches": int(len(y_tr)),
        "n_val_patches": int(len(y_va)),
        "stopped_by": stopped,
        "train_seconds": round(time.perf_counter() - t_start, 1),
        # CPU time of this process: on a shared machine the wall-clock bound buys less of it
        "train_cpu_seconds": round(time.process_time() - cpu_start, 1),
        "history": history,
        "versions": environment_info(),
    }
    return model


def _provenance(data: str | Path, split: PhotoSplit, config: AttackerConfig) -> dict[str, Any]:
    """What a trained model was made from: the data, its split, the seed."""
    return {
        "trained_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "data": str(data),
        "data_sha256": data_sha256([*split.train, *split.validation]),
        "split": split.names(),
        "seed": config.seed,
    }
