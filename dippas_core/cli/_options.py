"""Options shared by the commands that build an anonymization's configuration.

Every command starts from :meth:`AnonymizeConfig.preset <dippas_core.config.AnonymizeConfig.preset>`
and changes only what its options set (:func:`config_from_args`): ``dippas anonymize``,
``batch``, ``demo`` and ``invert`` with the same ``--preset`` run the same settings.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..config import GAMMA_MODES, PRESETS
from ._checks import finite_float, int_between, positive_float, seed, torch_threads

__all__ = [
    "add_assembly_options",
    "add_dip_arguments",
    "add_tiling_options",
    "config_from_args",
    "dip_changes_from_args",
    "preset_name",
]

#: Parse-time bounds of -B and -L (the photo's size bounds B again once it is known).
BLOCK = int_between(1, 2**20)
AVERAGED = int_between(1, 2**20)


def add_dip_arguments(
    p: argparse.ArgumentParser,
    *,
    preset_help: str = "network/stopping preset (default: 'paper' on a GPU, 'cpu' otherwise)",
    tiles_per_step: bool = False,
) -> None:
    """Options of the DIP inversion (preset and the fields people change most).

    ``tiles_per_step``: also offer ``--tiles-per-step`` (commands that invert several tiles).
    """
    g = p.add_argument_group("DIP inversion")
    g.add_argument(
        "--preset",
        choices=tuple(PRESETS),
        default=None,
        help=preset_help,
    )
    g.add_argument("--seed", type=seed, default=None, help="random seed (default 0)")
    g.add_argument(
        "--max-iter", type=int_between(1), default=None, help="stop after this many iterations"
    )
    g.add_argument(
        "--record-psnr",
        type=finite_float,
        default=None,
        help="the recording threshold: keep outputs with PSNR >= this as snapshots (dB)",
    )
    # the name older versions took
    g.add_argument("--tau-psnr", dest="record_psnr", type=finite_float, help=argparse.SUPPRESS)
    g.add_argument("--stop-psnr", type=finite_float, default=None, help="stop at this PSNR (dB)")
    g.add_argument(
        "--lr", type=positive_float, default=None, help="Adam learning rate (default: preset)"
    )
    g.add_argument(
        "--gamma-mode",
        choices=GAMMA_MODES,
        default=None,
        help="the injection strength gamma: 'lsq', the least-squares value of each output "
        "(default), or 'adam', learned with the weights (the old way; docs/evaluation.md "
        "compares them)",
    )
    g.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:1, mps")
    g.add_argument(
        "--torch-threads",
        type=torch_threads,
        default=None,
        help="torch CPU threads (default: 1 while residuals are computed beside it)",
    )
    if tiles_per_step:
        g.add_argument(
            "--tiles-per-step",
            type=_tiles_per_step,
            default=None,
            metavar="N|auto",
            help="tiles trained in one optimiser step, each its own network (default: the "
            "preset's, 'auto' for cpu, else 1; 'auto': from the free GPU memory, or a short "
            "measurement on the CPU, where a batch runs one tile per core)",
        )


def _tiles_per_step(text: str) -> int | str:
    """``--tiles-per-step`` value: a positive integer or ``auto``."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {text!r}")
    return value


def dip_config_from_args(args: argparse.Namespace, default_preset: str | None = None) -> Any:
    """The ``DIPConfig`` the options describe.

    Without ``--preset``: ``default_preset``, or else ``cpu`` on a CPU and ``paper`` elsewhere.
    """
    from ..dip.config import DIPConfig

    return DIPConfig.preset(preset_name(args, default_preset), **dip_changes_from_args(args))


def preset_name(args: argparse.Namespace, default_preset: str | None = None) -> str:
    """``--preset``, else ``default_preset``, else ``cpu`` on a CPU and ``paper`` elsewhere."""
    preset = args.preset or default_preset
    if preset is None:
        from ..dip.device import resolve_device

        preset = "cpu" if resolve_device(args.device or "auto").type == "cpu" else "paper"
    return preset


def dip_changes_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The DIP fields the options set (those left at their default are not included)."""
    changes = {
        "seed": args.seed,
        "max_iter": args.max_iter,
        "record_psnr": args.record_psnr,
        "stop_psnr": args.stop_psnr,
        "device": args.device,
        "torch_threads": args.torch_threads,
        "lr": getattr(args, "lr", None),
        "gamma_mode": getattr(args, "gamma_mode", None),
        "tiles_per_step": getattr(args, "tiles_per_step", None),
    }
    return {k: v for k, v in changes.items() if v is not None}


def add_assembly_options(p: argparse.ArgumentParser, what: str = "the preset's") -> Any:
    """-B, -L, --tau (each None unless given: the preset's); returns their group."""
    g = p.add_argument_group("assembly")
    g.add_argument("-B", type=BLOCK, default=None,
                   help=f"block size, a multiple of 32 (default: {what})")
    g.add_argument("-L", type=AVERAGED, default=None,
                   help=f"snapshots averaged per block (default: {what})")
    g.add_argument("--tau", type=finite_float, default=None,
                   help=f"PSNR threshold of the snapshots assembled (dB; default: {what})")
    return g


def add_tiling_options(g: Any) -> None:
    """--tile and --overlap of whole photos (None unless given: the preset's)."""
    g.add_argument(
        "--tile", type=int, default=None, metavar="T",
        help="tile side in pixels, a multiple of 32 (default: the preset's: "
        + ", ".join(f"{name} {p['tile_size']}" for name, p in PRESETS.items()) + ")",
    )
    g.add_argument(
        "--overlap", type=int, default=None, metavar="O",
        help="overlap of neighbouring tiles, a multiple of 32 >= 32 (default: the preset's)",
    )


def config_from_args(
    args: argparse.Namespace, default_preset: str | None = None, **changes: Any
) -> Any:
    """The :class:`~dippas_core.config.AnonymizeConfig` the options describe: the preset
    (:func:`preset_name`) with what the options set, B, L, tau and sigma included, and
    ``changes`` (None values are left out: the preset's)."""
    from ..config import AnonymizeConfig

    own = {key: getattr(args, key, None) for key in ("B", "L", "tau", "sigma")}
    given = {k: v for k, v in {**own, **changes}.items() if v is not None}
    return AnonymizeConfig.preset(
        preset_name(args, default_preset), **dip_changes_from_args(args), **given
    )
