"""The attacker's network and :class:`AttackerModel`: scoring, saving and loading."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_path
from ..errors import InputError
from .config import FORMAT, FORMAT_VERSION, AttackerConfig
from .data import residual_patches

__all__ = ["AttackerModel"]


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

    from ..dip.device import torch_threads, usable_cpus

    n = max(1, min(int(n), usable_cpus()))  # a model made on a larger machine: its cores here
    return contextlib.nullcontext() if torch.get_num_threads() == n else torch_threads(n)


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
        """Read a model file written by :meth:`save`; a clear :class:`InputError` otherwise.

        Nothing in the file is trusted: the archive's declared sizes are checked before torch
        reads it (a compressed member, or more than :data:`MAX_MODEL_BYTES`, is refused, so a
        small file cannot inflate to gigabytes), torch reads tensors and plain values only
        (never code), and the settings, the cameras and every tensor's shape are checked against
        the network they declare, built on torch's ``meta`` device (no memory), before the real
        one is built and filled.
        """
        import torch

        path = Path(path)
        if not path.is_file():
            raise InputError(f"no attacker model file at {path}")
        _check_archive(path)
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated zip, a pickle with code, not a torch file at all
            raise InputError(f"{path} is not a readable attacker model: {_why(exc)}") from None
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise InputError(f"{path} is a torch file but not a {FORMAT} model")
        if payload.get("format_version") != FORMAT_VERSION:
            raise InputError(f"{path} has model format version {payload.get('format_version')!r}, "
                             f"this version reads {FORMAT_VERSION}")
        try:
            cameras = payload["cameras"]
            if not (isinstance(cameras, list) and 2 <= len(cameras) <= MAX_CAMERAS
                    and all(isinstance(c, str) and len(c) <= 256 for c in cameras)):
                raise InputError(f"its cameras must be 2 to {MAX_CAMERAS} names")
            config = AttackerConfig.from_dict(json.loads(payload["config"]))
            meta = json.loads(payload["meta"])
            if not isinstance(meta, dict):
                raise InputError("its provenance is not a JSON object")
            state = payload["state_dict"]
            _check_state(state, len(cameras), config.width)
            net = _network(len(cameras), config.width)
            net.load_state_dict(state)
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from None
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise InputError(f"{path}: damaged attacker model ({type(exc).__name__}: "
                             f"{_first_line(exc)})") from None
        return cls(net, cameras, config, meta)


#: Largest model file read: every byte torch would load (the default model is ~0.5 MB, the widest
#: network the settings allow ~60 MB).
MAX_MODEL_BYTES = 256 << 20
#: The pickled part of a model file (settings, provenance, names): small.
MAX_PICKLE_BYTES = 16 << 20
#: Most cameras a model may tell apart.
MAX_CAMERAS = 4096


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def _why(exc: BaseException) -> str:
    """What torch's failure to read a file means, in our words: never torch's advice to load it
    with ``weights_only=False`` (that would run whatever code the file holds)."""
    import pickle

    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError) or "weights_only" in text or "Weights only" in text:
        return ("it holds Python objects other than tensors and plain values, which are never "
                "loaded (loading them could run code)")
    return f"corrupt, truncated or another format ({type(exc).__name__}: {_first_line(exc)})"


def _check_archive(path: Path) -> None:
    """Refuse, from the zip's directory alone, a model file that would inflate too far."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as exc:
        raise InputError(f"{path} is not a readable attacker model: not a torch model archive "
                         f"({_first_line(exc)})") from None
    total = 0
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED:
            raise InputError(
                f"{path}: {info.filename} is compressed (inflating to {info.file_size} bytes); "
                "torch stores a model's tensors uncompressed, so this is no model file of ours"
            )
        total += info.file_size
        if info.filename.endswith("data.pkl") and info.file_size > MAX_PICKLE_BYTES:
            raise InputError(f"{path}: its pickled settings declare {info.file_size} bytes, "
                             f"more than {MAX_PICKLE_BYTES >> 20} MiB")
    if total > MAX_MODEL_BYTES:
        raise InputError(f"{path} declares {total} bytes of data, more than an attacker model "
                         f"holds ({MAX_MODEL_BYTES >> 20} MiB at most)")


def _check_state(state: Any, n_classes: int, width: int) -> None:
    """The tensors are those of the declared network: names, shapes, dtypes, finite values."""
    import torch

    damaged = "damaged attacker model: its weights"
    if not isinstance(state, dict):
        raise InputError(f"{damaged} are not a dictionary of tensors")
    with torch.device("meta"):  # shapes only: nothing allocated
        want = _network(n_classes, width).state_dict()
    if set(state) != set(want):
        odd = sorted(set(state) ^ set(want))[:4]
        raise InputError(f"{damaged} are not those of a width-{width} network ({len(odd)}+ "
                         f"differing names, e.g. {odd})")
    for name, tensor in state.items():
        ref = want[name]
        if not isinstance(tensor, torch.Tensor) or tensor.shape != ref.shape or (
            tensor.dtype != ref.dtype
        ):
            got = (f"{tensor.dtype} {tuple(tensor.shape)}" if isinstance(tensor, torch.Tensor)
                   else type(tensor).__name__)
            raise InputError(f"{damaged}: {name} is {got}, the network's is "
                             f"{ref.dtype} {tuple(ref.shape)}")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise InputError(f"{damaged}: {name} holds NaN or infinite values")
