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

Modules: :mod:`.config` (settings, file format), :mod:`.data` (split, residual patches),
:mod:`.model` (network, scoring, files), :mod:`.training` and :mod:`.scoring` (held-out
metrics).
"""

from __future__ import annotations

from .config import FORMAT, FORMAT_VERSION, AttackerConfig  # noqa: F401 - FORMAT_VERSION
from .data import (  # noqa: F401 - _patch_set: scripts/attacker_patch_size.py
    PhotoSplit,
    _patch_set,
    data_sha256,
    patch_grid,
    residual_patches,
    split_photos,
)
from .model import AttackerModel, _network  # noqa: F401 - _network: tests build one
from .scoring import attribution_metrics, held_out_report
from .training import train_attacker

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
