"""Settings of an anonymization, with the one preset table every entry point starts from.

No torch here: the command line, the viewer and reports read these without loading the network.

- :mod:`.presets`: :data:`PRESETS`, what ``paper``, ``cpu`` and ``tiny`` run;
- :mod:`.dip`: :class:`DIPConfig`, the DIP inversion's parameters;
- :mod:`.assembly`: :class:`AssemblyParams`, the assembly's B, L, tau;
- :mod:`.anonymize`: :class:`AnonymizeConfig`, all of them with the tiling of whole photos.
"""

from __future__ import annotations

from .anonymize import AnonymizeConfig
from .assembly import MAX_DEVIATION, RULES, AssemblyParams, check_assembly_params
from .dip import GAMMA_MODES, MIN_WIDTH, DIPConfig
from .presets import DEFAULT_PRESET, PRESETS

__all__ = [
    "DEFAULT_PRESET",
    "GAMMA_MODES",
    "MAX_DEVIATION",
    "MIN_WIDTH",
    "PRESETS",
    "RULES",
    "AnonymizeConfig",
    "AssemblyParams",
    "DIPConfig",
    "check_assembly_params",
]
