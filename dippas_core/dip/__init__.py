"""DIP inversion (method §4): the Multi-Resolution U-Net and the inversion that fits it.

Names are resolved lazily: ``import dippas_core.dip`` does not import torch; :func:`invert`,
:class:`MultiResUNet` and friends import it on first use.  The inversion's settings,
:class:`~dippas_core.config.DIPConfig`, live in :mod:`dippas_core.config`.
"""

from __future__ import annotations

import lazy_loader

_API = {
    "invert": "inversion",
    "Inversion": "inversion",
    "StepSource": "inversion",
    "run_to_end": "inversion",
    "warm_up": "inversion",
    "Step": "inversion",
    "InversionResult": "inversion",
    "MultiResUNet": "network",
    "resolve_device": "device",
    "describe_devices": "device",
}

__all__ = list(_API)

__getattr__, __dir__, _ = lazy_loader.attach(
    __name__, submod_attrs={m: [n for n, mod in _API.items() if mod == m] for m in {*_API.values()}}
)
