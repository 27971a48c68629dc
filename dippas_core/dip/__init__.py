"""DIP inversion (method §4): the Multi-Resolution U-Net and the generator loop that fits it.

Names are resolved lazily: ``import dippas_core.dip`` and :class:`DIPConfig` do not import torch;
:func:`invert`, :class:`MultiResUNet` and friends import it on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_API = {
    "DIPConfig": "config",
    "PRESETS": "config",
    "invert": "inversion",
    "run_to_end": "inversion",
    "warm_up": "inversion",
    "Step": "inversion",
    "InversionResult": "inversion",
    "MultiResUNet": "network",
    "resolve_device": "device",
    "describe_devices": "device",
}

__all__ = list(_API)


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
