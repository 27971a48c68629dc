"""Settings of the learned attacker and the identity of its model files."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from .._validation import check_known_fields
from ..errors import InputError

__all__ = ["FORMAT", "FORMAT_VERSION", "LIMITS", "AttackerConfig"]

#: The ``format`` entry of every model file (a file without it is refused).
FORMAT = "dippas-attacker"
FORMAT_VERSION = 1

#: Bounds of the whole-number settings, ``name -> (low, high)``: what the command line accepts and
#: what a model file may declare (checked before a network is built: the network's size grows
#: with the square of ``width``).  ``torch_threads`` is bounded by the cores when used.
LIMITS: dict[str, tuple[int, int]] = {
    "patch": (16, 1024),
    "stride": (1, 1 << 16),
    "score_stride": (1, 1 << 16),
    "region": (0, 1 << 16),
    "width": (1, 128),
    "batch_size": (2, 4096),
    "max_epochs": (1, 100_000),
    "seed": (0, 2**63 - 1),
    "torch_threads": (1, 4096),
    "val_flat_fields": (0, 1000),
}


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
        for name, (low, high) in LIMITS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise InputError(
                    f"attacker {name} must be a whole number between {low} and {high}, "
                    f"got {value!r}"
                )
        if self.region and self.region < self.patch:
            raise InputError(f"region {self.region} is smaller than the patch {self.patch}")
        for name, high in (("max_minutes", 1e6), ("sigma", 255.0), ("lr", 10.0),
                           ("weight_decay", 10.0)):
            value = getattr(self, name)
            low_ok = value >= 0 if name == "weight_decay" else value > 0
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                math.isfinite(value) and low_ok and value <= high
            ):
                raise InputError(f"attacker {name} must be a finite number in "
                                 f"{'[0' if name == 'weight_decay' else '(0'}, {high:g}], "
                                 f"got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AttackerConfig:
        """Inverse of :meth:`to_dict` (unknown keys are an error, every value is checked)."""
        if not isinstance(data, dict):
            raise InputError(f"attacker settings must be a JSON object, got {type(data).__name__}")
        check_known_fields(cls, data, "attacker setting(s)")
        return cls(**data)
