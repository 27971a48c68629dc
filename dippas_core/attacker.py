"""A learned camera-attribution attacker: a ResNet-style classifier on noise-residual patches.

This follows variant (b) of De Magistris et al., "New Approaches Based on PRNU-CNN for Image
Camera Source Attribution in Forensic Investigations": the noise residual ``W`` of a photo
(:func:`dippas_core.residual.residual`) is cut into square patches, each patch is standardised
(zero mean, unit variance: the PRNU term is multiplicative, so the scene's brightness would
otherwise set the scale) and a small residual network predicts the camera of every patch.  A
photo's score pools its patches: the mean of the patch log-probabilities, renormalised.

Unlike the correlation detector (NCC/PCE against a fingerprint ``K``), which DIPPAS is tuned
against, this attacker never sees ``K``: it learns whatever separates the cameras in the residual
(sensor noise, but also demosaicing and JPEG traces).  The evaluation protocol scores it beside
NCC/PCE (``dippas evaluate --attacker MODEL``).

Data split (by photo, never by patch): every flat field is a training shot except the last
``val_flat_fields`` per camera (validation, for monitoring); the natural photos that the
evaluation's ``cpu`` preset scores (the first per camera, name order) are the held-out test
photos; the other natural photos train.

A model file is one ``torch.save`` of plain containers (tensors, strings, numbers), read back with
``weights_only=True`` so loading never runs pickled code.  torch is imported inside functions.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._atomic import atomic_path
from ._validation import check_known_fields
from .errors import InputError

__all__ = [
    "FORMAT",
    "AttackerConfig",
    "AttackerModel",
    "PhotoSplit",
    "attribution_metrics",
    "data_sha256",
    "held_out_report",
    "patch_grid",
    "residual_patches",
    "split_photos",
    "train_attacker",
]

#: The ``format`` entry of every model file (a file without it is refused).
FORMAT = "dippas-attacker"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class AttackerConfig:
    """Training and scoring settings of the learned attacker (JSON-serialisable).

    Parameters
    ----------
    patch : int
        Side of the square residual patches (pixels).
    stride : int
        Step between training patches (``stride == patch``: no overlap).
    score_stride : int
        Step between patches when a photo is scored.
    region : int
        Centred square of each training/test shot that patches are cut from (``0``: whole shot).
    sigma : float
        Noise level of the residual's wavelet Wiener shrink (0..255 scale).
    width : int
        Channels of the first stage (doubled at every downsampling stage).
    batch_size, lr, weight_decay : int, float, float
        Adam mini-batch size, learning rate and weight decay.
    max_epochs : int
        Passes over the training patches at most.
    max_minutes : float
        Wall-clock bound of the whole training (residuals included); training stops there.
    seed : int
        Seeds the weight initialisation and the patch order.
    torch_threads : int
        torch intra-op threads during training and scoring.
    val_flat_fields : int
        Flat fields per camera kept out of training for validation.
    """

    # 64-pixel patches, width 8: the best validation accuracy of the short patch-size
    # measurement (scripts/attacker_patch_size.py, docs/attacker.md)
    patch: int = 64
    stride: int = 64
    score_stride: int = 32
    region: int = 1024
    sigma: float = 5.0
    width: int = 8
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    max_epochs: int = 30
    max_minutes: float = 12.0
    seed: int = 0
    torch_threads: int = 1
    val_flat_fields: int = 1

    def __post_init__(self) -> None:
        for name in ("patch", "stride", "score_stride", "width", "batch_size", "max_epochs",
                     "torch_threads"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"attacker {name} must be >= 1, got {getattr(self, name)!r}")
        if int(self.patch) < 16:
            raise InputError(f"attacker patch must be >= 16 pixels, got {self.patch}")
        if int(self.region) and int(self.region) < int(self.patch):
            raise InputError(f"region {self.region} is smaller than the patch {self.patch}")
        if not (self.max_minutes > 0 and self.sigma > 0 and self.lr > 0):
            raise InputError("max_minutes, sigma and lr must be > 0")
        if int(self.val_flat_fields) < 0:
            raise InputError(f"val_flat_fields must be >= 0, got {self.val_flat_fields}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AttackerConfig:
        """Inverse of :meth:`to_dict` (unknown keys are an error)."""
        check_known_fields(cls, data, "attacker setting(s)")
        return cls(**data)


# --------------------------------------------------------------------------------------------------
# data


@dataclass(frozen=True)
class PhotoSplit:
    """Which shots train, validate and test: lists of file paths, disjoint by construction.

    Every entry is one whole shot, so no photo can give patches to two sides.
    """

    train: tuple[Path, ...]
    validation: tuple[Path, ...]
    test: tuple[Path, ...]
    cameras: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for side in ("train", "validation", "test"):
            for p in getattr(self, side):
                key = Path(p).name
                if key in seen:
                    raise InputError(f"{key} is on both the {seen[key]} and the {side} side")
                seen[key] = side

    def names(self) -> dict[str, list[str]]:
        """File names per side (what a model file records)."""
        return {s: [Path(p).name for p in getattr(self, s)]
                for s in ("train", "validation", "test")}


def split_photos(
    data: str | Path,
    *,
    val_flat_fields: int = 1,
    flat_dir: str = "ff-jpg",
    photo_dir: str = "nat-jpg",
) -> PhotoSplit:
    """The fixed photo-level split of a prnu-python-style folder (see the module docstring).

    The test photos are exactly those the evaluation's ``cpu`` preset scores, so the attacker can
    be scored on them before and after anonymization without having seen them.
    """
    from .evaluation import EvalConfig, _list_images, _select_photos, camera_label

    data = Path(data)
    if not data.is_dir():
        raise InputError(f"no data folder at {data}")
    flats = _list_images(data / flat_dir)
    photos = _list_images(data / photo_dir)
    test = _select_photos(photos, EvalConfig(photos_per_camera=1))
    test_names = {p.name for p in test}
    by_cam: dict[str, list[Path]] = {}
    for p in flats:
        by_cam.setdefault(camera_label(p), []).append(p)
    train: list[Path] = []
    val: list[Path] = []
    n_val = int(val_flat_fields)
    for _cam, paths in sorted(by_cam.items()):
        cut = len(paths) - n_val if len(paths) > n_val else len(paths)
        train.extend(paths[:cut])
        val.extend(paths[cut:])
    train.extend(p for p in photos if p.name not in test_names)
    cameras = sorted({camera_label(p) for p in [*flats, *photos]})
    missing = sorted({camera_label(p) for p in photos} - set(by_cam))
    if missing:
        raise InputError(f"no flat-field shots in {data / flat_dir} for camera(s) {missing}")
    return PhotoSplit(tuple(train), tuple(val), tuple(test), tuple(cameras))


def data_sha256(paths: Sequence[str | Path]) -> str:
    """SHA-256 over the names and bytes of ``paths`` (name order): identifies the training data."""
    digest = hashlib.sha256()
    for p in sorted((Path(p) for p in paths), key=lambda p: p.name):
        digest.update(p.name.encode())
        digest.update(hashlib.sha256(p.read_bytes()).digest())
    return digest.hexdigest()


def patch_grid(height: int, width: int, patch: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corners of ``patch``-pixel squares every ``stride`` pixels, centred in the image
    (the margin left over is split evenly).  Empty when the image is smaller than a patch."""
    if height < patch or width < patch:
        return []
    ny, nx = (height - patch) // stride + 1, (width - patch) // stride + 1
    oy = (height - (patch + (ny - 1) * stride)) // 2
    ox = (width - (patch + (nx - 1) * stride)) // 2
    return [(oy + i * stride, ox + j * stride) for i in range(ny) for j in range(nx)]


def residual_patches(image: np.ndarray, sigma: float, patch: int, stride: int) -> np.ndarray:
    """Standardised residual patches of ``image``: float32 ``(n, patch, patch)``.

    The residual is computed on the whole image first, then cut (fewer border effects).
    """
    from .residual import residual

    arr = np.asarray(image)
    if arr.ndim not in (2, 3) or min(arr.shape[:2]) < patch:
        raise InputError(
            f"need an image of at least {patch}×{patch} pixels (H×W or H×W×3), got {arr.shape}"
        )
    w = residual(arr, sigma)
    cells = patch_grid(w.shape[0], w.shape[1], patch, stride)
    out = np.stack([w[t : t + patch, s : s + patch] for t, s in cells]).astype(np.float32)
    out -= out.mean(axis=(1, 2), keepdims=True)
    out /= out.std(axis=(1, 2), keepdims=True) + 1e-6
    return out


def _shot_patches(path: Path, config: AttackerConfig, stride: int) -> np.ndarray:
    from .io import center_crop, read_image

    image = read_image(path)
    if config.region:
        if min(image.shape[:2]) < config.region:
            raise InputError(f"{path.name} is smaller than the {config.region} px region")
        image = center_crop(image, config.region)
    return residual_patches(image, config.sigma, config.patch, stride)


def _patch_set(
    paths: Sequence[Path], cameras: Sequence[str], config: AttackerConfig, stride: int,
    say: Callable[[str], None], what: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patches, camera indices and shot indices of ``paths``."""
    from .evaluation import camera_label

    index = {c: i for i, c in enumerate(cameras)}
    xs, ys, gs = [], [], []
    t0 = time.perf_counter()
    for k, p in enumerate(paths):
        cam = camera_label(p)
        if cam not in index:
            raise InputError(f"{p.name}: camera {cam} is not one of {list(cameras)}")
        x = _shot_patches(p, config, stride)
        xs.append(x)
        ys.append(np.full(len(x), index[cam], np.int64))
        gs.append(np.full(len(x), k, np.int64))
        say(f"{what} residuals {k + 1}/{len(paths)} ({p.name}, {len(x)} patches, "
            f"{time.perf_counter() - t0:.0f} s)")
    if not xs:
        empty = np.zeros((0, config.patch, config.patch), np.float32)
        return empty, np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(gs)


# --------------------------------------------------------------------------------------------------
# the network


def _network(n_classes: int, width: int):
    """A small ResNet: a full-resolution stem (the PRNU lives in single pixels), then residual
    blocks that halve the resolution and double the channels three times, global average pooling
    and a linear layer."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, c_in: int, c_out: int, stride: int) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False),
                nn.BatchNorm2d(c_out),
            )
            self.skip = (
                nn.Identity()
                if stride == 1 and c_in == c_out
                else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                   nn.BatchNorm2d(c_out))
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.body(x) + self.skip(x))

    w = int(width)
    return nn.Sequential(
        nn.Conv2d(1, w, 3, 1, 1, bias=False),
        nn.BatchNorm2d(w),
        nn.ReLU(inplace=True),
        Block(w, w, 1),
        Block(w, 2 * w, 2),
        Block(2 * w, 4 * w, 2),
        Block(4 * w, 4 * w, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * w, int(n_classes)),
    )


# --------------------------------------------------------------------------------------------------
# the model


def _threads(n: int):
    """torch's thread count set to ``n`` inside the block; nothing is touched when it already is
    (no nested re-setting while scoring inside training)."""
    import contextlib

    import torch

    from .dip.device import torch_threads

    return contextlib.nullcontext() if torch.get_num_threads() == int(n) else torch_threads(n)


def _log_softmax_rows(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


class AttackerModel:
    """A trained attacker: the network, its cameras (class order), settings and provenance.

    Parameters
    ----------
    net : torch.nn.Module
        The classifier (:func:`_network`), in eval mode after construction.
    cameras : sequence of str
        Camera labels, in the network's output order.
    config : AttackerConfig
        The settings it was trained and scores with.
    meta : dict
        Provenance: data hash, split, seed, versions, training history.
    """

    def __init__(self, net: Any, cameras: Sequence[str], config: AttackerConfig,
                 meta: dict[str, Any] | None = None) -> None:
        self.net = net.eval()
        self.cameras = [str(c) for c in cameras]
        self.config = config
        self.meta = dict(meta or {})

    # ---- scoring ----------------------------------------------------------------------------

    def patch_log_proba_of(self, patches: np.ndarray, batch: int = 256) -> np.ndarray:
        """Per-patch camera log-probabilities of standardised patches ``(n, p, p)``: ``(n, C)``."""
        import torch

        x = np.asarray(patches, np.float32)
        if x.ndim != 3 or x.shape[1:] != (self.config.patch, self.config.patch):
            raise InputError(f"need patches of shape (n, {self.config.patch}, "
                             f"{self.config.patch}), got {x.shape}")
        out = []
        with _threads(self.config.torch_threads), torch.inference_mode():
            for i in range(0, len(x), batch):
                xb = torch.from_numpy(np.ascontiguousarray(x[i : i + batch])).unsqueeze(1)
                logits = self.net(xb)
                out.append(torch.log_softmax(logits, 1).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.cameras)), np.float32)

    def patch_log_proba(self, image: np.ndarray, stride: int | None = None) -> np.ndarray:
        """Camera log-probabilities of every patch of ``image`` (any size ≥ one patch)."""
        step = int(stride or self.config.score_stride)
        return self.patch_log_proba_of(
            residual_patches(image, self.config.sigma, self.config.patch, step)
        )

    def predict_proba(self, image: np.ndarray, stride: int | None = None) -> dict[str, float]:
        """Photo-level probability per camera: patch log-probabilities averaged, renormalised."""
        pooled = _log_softmax_rows(self.patch_log_proba(image, stride).mean(axis=0))
        return dict(zip(self.cameras, np.exp(pooled).tolist(), strict=True))

    def check_cameras(self, cameras: Sequence[str]) -> None:
        """Raise :class:`InputError` unless every one of ``cameras`` is a class of this model."""
        unknown = sorted(set(cameras) - set(self.cameras))
        if unknown:
            raise InputError(
                f"the attacker model knows cameras {self.cameras}, not {unknown}: "
                "train it on data with these cameras"
            )

    # ---- files ------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the model file atomically (state dict + JSON of settings and provenance)."""
        import torch

        path = Path(path)
        payload = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "cameras": list(self.cameras),
            "config": json.dumps(self.config.to_dict()),
            "meta": json.dumps(self.meta),
            "state_dict": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
        return path

    @classmethod
    def load(cls, path: str | Path) -> AttackerModel:
        """Read a model file written by :meth:`save`; a clear :class:`InputError` otherwise."""
        import torch

        path = Path(path)
        if not path.is_file():
            raise InputError(f"no attacker model file at {path}")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated zip, a pickle with code, not a torch file at all
            raise InputError(
                f"{path} is not a readable attacker model (corrupt, truncated or another "
                f"format): {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            ) from None
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise InputError(f"{path} is a torch file but not a {FORMAT} model")
        if payload.get("format_version") != FORMAT_VERSION:
            raise InputError(f"{path} has model format version {payload.get('format_version')!r}, "
                             f"this version reads {FORMAT_VERSION}")
        try:
            cameras = [str(c) for c in payload["cameras"]]
            config = AttackerConfig.from_dict(json.loads(payload["config"]))
            meta = json.loads(payload["meta"])
            net = _network(len(cameras), config.width)
            net.load_state_dict(payload["state_dict"])
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from None
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise InputError(f"{path}: damaged attacker model ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
        return cls(net, cameras, config, meta)


# --------------------------------------------------------------------------------------------------
# metrics


def attribution_metrics(log_proba: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy (arg-max camera) and pooled one-vs-rest AUC of camera scores.

    ``log_proba`` is ``(n, C)``; ``labels`` the true class of each row.  The AUC pools every
    (sample, camera) pair, positives being the true camera's, as the evaluation protocol does for
    NCC; chance is ``1/C`` for accuracy and 0.5 for the AUC.
    """
    from .metrics import roc_auc

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
    from .evaluation import camera_label

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


# --------------------------------------------------------------------------------------------------
# training


def _epoch_metrics(model: AttackerModel, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    if not len(y):
        return {}
    m = attribution_metrics(model.patch_log_proba_of(x), y)
    return {"val_accuracy": m["accuracy"], "val_auc": m["auc"]}


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

    from .run import environment_info

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
            net.train()
            order = rng.permutation(len(y_tr))
            losses, hits, seen = 0.0, 0, 0
            for i in range(0, len(order), config.batch_size):
                idx = order[i : i + config.batch_size]
                if len(idx) < 2:  # batch norm needs two samples
                    continue
                # unsqueeze, not x[idx, None]: numpy gives the unit axis a stride that made
                # oneDNN's convolution backward crash (segfault) here
                xb = torch.from_numpy(x_tr[idx]).unsqueeze(1)
                yb = torch.from_numpy(y_tr[idx])
                logits = net(xb)
                loss = torch.nn.functional.cross_entropy(logits, yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses += loss.item() * len(idx)
                hits += int((logits.argmax(1) == yb).sum())
                seen += len(idx)
                if time.perf_counter() > deadline:
                    stopped = "time"
                    break
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
        "trained_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "data": str(data),
        "data_sha256": data_sha256([*split.train, *split.validation]),
        "split": split.names(),
        "seed": config.seed,
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
