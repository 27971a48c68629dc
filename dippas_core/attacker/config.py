"""Settings of the learned attacker and the identity of its model files."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .._validation import check_known_fields
from ..errors import InputError

__all__ = ["FORMAT", "FORMAT_VERSION", "AttackerConfig"]

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
