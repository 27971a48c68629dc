"""``dippas invert``: run the DIP inversion of a photo into a run folder (snapshots + tile sums).

Also home of the options shared by the commands that run an inversion (``anonymize``, ``demo``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..dip.config import GAMMA_MODES
from ._checks import finite_float, int_between, positive_float, seed, torch_threads

__all__ = ["register", "add_dip_arguments", "dip_config_from_args", "load_photo_and_fingerprint"]

EXIT_INTERRUPTED = 130


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
        choices=("paper", "cpu", "tiny"),
        default=None,
        help=preset_help,
    )
    g.add_argument("--seed", type=seed, default=None, help="random seed (default 0)")
    g.add_argument(
        "--max-iter", type=int_between(1), default=None, help="stop after this many iterations"
    )
    g.add_argument(
        "--tau-psnr",
        type=finite_float,
        default=None,
        help="keep outputs with PSNR >= this as snapshots (dB)",
    )
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
        "tau_psnr": args.tau_psnr,
        "stop_psnr": args.stop_psnr,
        "device": args.device,
        "torch_threads": args.torch_threads,
        "lr": getattr(args, "lr", None),
        "gamma_mode": getattr(args, "gamma_mode", None),
        "tiles_per_step": getattr(args, "tiles_per_step", None),
    }
    return {k: v for k, v in changes.items() if v is not None}


def add_input_arguments(p: argparse.ArgumentParser, *, blind_flag: bool) -> None:
    """PHOTO, --fingerprint (and --blind), --crop."""
    p.add_argument("photo", type=Path, metavar="PHOTO", help="photo to anonymize (PNG/TIFF/JPEG)")
    if blind_flag:
        m = p.add_mutually_exclusive_group(required=True)
        m.add_argument(
            "--fingerprint", type=Path, metavar="K.npz", help="camera fingerprint (PRNU-aware mode)"
        )
        m.add_argument(
            "--blind",
            action="store_true",
            help="no fingerprint: use the photo's own residual (PRNU-blind mode)",
        )
    else:
        p.add_argument(
            "--fingerprint",
            type=Path,
            metavar="K.npz",
            help="camera fingerprint (PRNU-aware); without it: PRNU-blind mode",
        )
    p.add_argument(
        "--crop",
        type=int_between(1),
        default=None,
        metavar="N",
        help="work on the central N×N crop of the photo (and of the fingerprint)",
    )


def load_photo_and_fingerprint(args: argparse.Namespace) -> tuple[Any, Any]:
    """Read PHOTO and --fingerprint (cropped with --crop); the fingerprint is None in blind mode."""
    from ..errors import InputError
    from ..fingerprint import Fingerprint, check_fingerprint_file
    from ..io import center_crop, image_size, read_image, warn_if_turned

    # sizes from the headers first: a fingerprint of the wrong size (or a huge one) is refused
    # before either file's data is read
    size = image_size(args.photo)
    if args.fingerprint:
        check_fingerprint_file(args.fingerprint, shape=None if args.crop else size)
    if args.crop is not None and args.crop > min(size):
        raise InputError(f"--crop {args.crop} is larger than the photo's smaller side {min(size)}")
    photo = read_image(args.photo)
    warn_if_turned(args.photo)
    if photo.ndim != 3:
        raise InputError(f"{args.photo} is a gray image; DIPPAS needs a colour (RGB) photo")
    fingerprint = Fingerprint.load(args.fingerprint) if args.fingerprint else None
    if args.crop is not None:
        if args.crop < 16 or args.crop > min(photo.shape[:2]):
            raise InputError(
                f"--crop {args.crop} must lie between 16 and the photo's smaller side "
                f"{min(photo.shape[:2])}"
            )
        photo = center_crop(photo, args.crop).copy()
        if fingerprint is not None:
            fingerprint = fingerprint.center_crop(args.crop)
    if fingerprint is not None and fingerprint.shape != photo.shape[:2]:
        raise InputError(
            f"the photo is {photo.shape[0]}×{photo.shape[1]} but the fingerprint "
            f"{args.fingerprint} is {fingerprint.shape[0]}×{fingerprint.shape[1]}; "
            "use --crop N to work on matching central crops"
        )
    return photo, fingerprint


def run_inversion(
    photo: Any,
    P: Any,
    dip: Any,
    run: Any,
    *,
    quiet: bool = False,
    steps: Any = None,
    cancel: Any = None,
) -> tuple[Any, bool]:
    """Record an inversion into ``run`` with a progress line; returns (result, interrupted).

    Parameters
    ----------
    photo, P, dip
        The inversion's photo, reference and ``DIPConfig``.
    run
        The writable ``RunDirectory`` to record into.
    quiet
        No progress line.
    steps, cancel
        An ``Inversion`` made beforehand (so its input checks ran before ``run`` was
        created) and the ``CancelToken`` it shares; by default both are made here.

    Returns
    -------
    tuple
        The ``InversionResult`` and whether the inversion really stopped because of a Ctrl-C
        (a Ctrl-C that lands after the last iteration does not make a finished run interrupted).
    """
    from ..cancel import CancelToken
    from ..dip import invert
    from ..run import record
    from ._progress import ProgressLine, sigint_cancels

    if cancel is None:
        cancel = CancelToken()
    if steps is None:
        steps = invert(photo, P, dip, cancel=cancel)
    bar = ProgressLine(dip.max_iter, stream=sys.stderr)
    on_step = None if quiet else bar.update
    with sigint_cancels(cancel):
        try:
            result = record(run, steps, cancel, on_step)
        finally:
            if not quiet:
                bar.close()
    return result, getattr(result, "stop_reason", None) == "cancelled"


def _run(args: argparse.Namespace) -> int:
    from ..cancel import CancelToken
    from ..dip import invert
    from ..errors import InputError
    from ..residual import residual
    from ..run import RunDirectory, check_run_target

    check_run_target(args.out, args.force)  # before any work, as every argument
    photo, fingerprint = load_photo_and_fingerprint(args)
    if args.tile > max(photo.shape[:2]):
        raise InputError(
            f"--tile {args.tile} is larger than the photo ({photo.shape[0]}×{photo.shape[1]})"
        )
    dip = dip_config_from_args(args)
    if fingerprint is None:
        P, mode = residual(photo, args.sigma), "blind"
    else:
        P, mode = fingerprint.K, "aware"
    fp = {"camera": fingerprint.camera, "file": args.fingerprint.name} if fingerprint else None
    # invert() checks the photo, P and the device now: on failure no run folder is left behind
    # (and no previous one replaced by --force)
    cancel = CancelToken()
    steps = invert(photo, P, dip, cancel=cancel)
    run = RunDirectory.create(
        args.out,
        photo,
        P,
        mode=mode,
        dip_config=dip,
        tile=args.tile,
        sigma=args.sigma,
        force=args.force,
        extra={"source": args.photo.name, "fingerprint": fp},
    )
    print(
        f"inverting {args.photo} ({photo.shape[1]}×{photo.shape[0]}, {mode}) into {args.out}: "
        f"tau_psnr {dip.tau_psnr} dB, stop at {dip.stop_psnr} dB or {dip.max_iter} iterations",
        file=sys.stderr,
    )
    try:
        result, interrupted = run_inversion(
            photo, P, dip, run, quiet=args.quiet, steps=steps, cancel=cancel
        )
    except KeyboardInterrupt:
        run = RunDirectory.open(args.out)
        print(
            f"dippas invert: aborted; {len(run.snapshots)} snapshots kept in {args.out} "
            f"(assemble them with: dippas assemble {args.out} --out OUT.png)",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    n = len(run.snapshots)
    summary = (
        f"{result.stop_reason}: {len(result.history['iteration'])} iterations, "
        f"{n} snapshots kept in {args.out}"
    )
    if interrupted:
        print(
            f"dippas invert: interrupted ({summary}); assemble what was kept with: "
            f"dippas assemble {args.out} --out OUT.png",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    print(summary, file=sys.stderr)
    print(
        f"next: dippas assemble {args.out} -B 64 -L 10 --tau {dip.tau_psnr:g} --out OUT.png",
        file=sys.stderr,
    )
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "invert",
        help="run the DIP inversion of a photo into a run folder",
        description=(
            "Fit the DIP network to PHOTO with the fingerprint injected (PRNU-aware, "
            "--fingerprint) or the photo's own residual (--blind), streaming every kept "
            "snapshot and its per-tile NCC sums into RUN_DIR.  Ctrl-C stops cleanly and keeps "
            "what was made; assemble the result with 'dippas assemble RUN_DIR'."
        ),
    )
    add_input_arguments(p, blind_flag=True)
    p.add_argument(
        "--out", type=Path, required=True, metavar="RUN_DIR", help="run folder to create"
    )
    p.add_argument("--force", action="store_true", help="replace a previous run in RUN_DIR")
    p.add_argument(
        "--tile",
        type=int_between(1),
        default=32,
        help="finest assembly block (pixels, default 32)",
    )
    p.add_argument(
        "--sigma", type=positive_float, default=5.0, help="residual noise level (default 5)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress line")
    add_dip_arguments(p)
    p.set_defaults(func=_run)
