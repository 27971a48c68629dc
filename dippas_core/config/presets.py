"""The one preset table: what ``paper``, ``cpu`` and ``tiny`` run, for every entry point.

Each preset names the DIP inversion's changes to :class:`~dippas_core.config.DIPConfig`'s
defaults, the assembly's B, L, tau (``tau`` None: the recording threshold) and the tiling of
whole photos.  :meth:`AnonymizeConfig.preset <dippas_core.config.AnonymizeConfig.preset>` builds
a configuration from it; ``dippas anonymize``, ``invert``, ``batch``, ``demo``, ``evaluate`` and
the viewer all start there.  Plain data: no import.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DEFAULT_PRESET", "LOOKS_THE_SAME", "PRESETS"]

#: The generator and recording settings that keep an output looking like the photo (method §4,
#: "Where we depart from the paper"; measured in docs/eval/2026-12-05-quality.md): no dead zone
#: at the output, the photo's low band restored and guiding the fit from the first iteration,
#: and only outputs within the local fidelity bars kept.  The ``paper`` preset keeps the paper's.
#: (Up-sampling stays the paper's nearest-neighbour: ``"bilinear-top"`` removes the stripes it
#: draws along soft edges but drew a faint ridge on a flat wall that no bar sees,
#: docs/eval/2026-12-06-stripes.md.)
LOOKS_THE_SAME: dict[str, Any] = {
    "output": "linear",
    "zero_head": True,
    "guide": True,
    "low_pass_sigma": 3.0,
    "require_fidelity": True,
}

#: The tiny network on a CPU thread, shared by the ``tiny`` and ``demo`` presets.
_TINY_NETWORK: dict[str, Any] = {
    "widths": (4, 8, 8, 16, 16),
    "z_channels": 8,
    "max_iter": 1500,
    "device": "cpu",
    "torch_threads": 1,
}

PRESETS: dict[str, dict[str, Any]] = {
    # the published setup: 512-channel z, U = 16…256, snapshots from 38 dB, stop at 39 dB
    "paper": {
        "dip": {},
        "assembly": {"B": 64, "L": 10, "tau": None},
        "tile_size": 512,
        "overlap": 64,
    },
    # a narrower network and a 32-channel z for a laptop CPU (docs/evaluation.md)
    "cpu": {
        "dip": {
            "widths": (8, 16, 32, 64, 128),
            "z_channels": 32,
            # lr 1e-2 reached 35.5 dB in 400 iterations where 1e-3 needed ~1400 (128-px crops)
            "lr": 1e-2,
            "max_iter": 1500,
            "device": "cpu",
            # two threads on a loaded 2-core machine ran ten times slower than one
            "torch_threads": 1,
            # measured against the one-network path on the first tile (docs/whole-photos.md)
            "tiles_per_step": "auto",
            **LOOKS_THE_SAME,
        },
        # the held-out grid's choice: lowest mean |NCC| at mean PSNR >= 38 dB over B 32/64/128,
        # L 1-25, tau 38/38.5 (scripts/assembly_grid.py --held-out; docs/evaluation.md)
        "assembly": {"B": 64, "L": 1, "tau": 38.5, "rule": "bounded"},
        "tile_size": 256,
        # the low band restored, tiles agree in colour: a 32-px overlap keeps their seams below
        # the bar (docs/eval/2026-12-05-whole-photos.md)
        "overlap": 32,
    },
    # tests: a 64×64 crop of a real photo reaches its (low) stop in seconds on 2 cores; the
    # paper's generator, so that the tests exercise the method as published
    "tiny": {
        "dip": {**_TINY_NETWORK, "record_psnr": 31.0, "stop_psnr": 33.5},
        "assembly": {"B": 32, "L": 5, "tau": None},
        "tile_size": 128,
        "overlap": 32,
    },
    # the README's demo: the tiny network at the paper's 38/39 dB, looking the same; its 64×64
    # sample reached tau after 511 iterations (docs/eval/2026-12-05-quality.md)
    "demo": {
        "dip": {**_TINY_NETWORK, "record_psnr": 38.0, "stop_psnr": 39.0, **LOOKS_THE_SAME},
        "assembly": {"B": 32, "L": 1, "tau": 38.5, "rule": "bounded"},
        "tile_size": 128,
        "overlap": 32,
    },
}

#: The preset of a configuration built without one (``AnonymizeConfig()``).
DEFAULT_PRESET = "paper"
