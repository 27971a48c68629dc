"""``dippas invert``: run the DIP inversion of a photo into a run folder (snapshots + tile sums).

Also home of the photo and fingerprint inputs shared with ``anonymize``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ._checks import int_between, positive_float
from ._options import add_dip_arguments, config_from_args
from ._outcome import EXIT_BELOW_TAU, EXIT_INTERRUPTED

__all__ = ["build_config", "register", "add_input_arguments", "load_photo_and_fingerprint"]


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


def warn_without_trace(
    command: str, photo: Any, fingerprint: Any, sigma: float, region: Any = None
) -> float | None:
    """Say on stderr, before any work, when PHOTO (or its region) carries no detectable trace
    of the fingerprint's camera (the viewer's warning, :func:`~dippas_core.attribution.
    trace_warning`): removing it then proves nothing.  Returns the aligned PCE (None blind)."""
    from ..attribution import attribute, trace_warning

    if fingerprint is None:  # blind: the photo's own residual always "matches"
        return None
    K = fingerprint.K
    if region is not None:
        y, x, h, w = region
        photo, K = photo[y : y + h, x : x + w], K[y : y + h, x : x + w]
    pce = attribute(photo, K, sigma=sigma).pce
    warning = trace_warning(
        pce, n_pixels=int(photo.shape[0] * photo.shape[1]),
        what="This photo" if region is None else "This region",
    )
    if warning is not None:
        print(f"dippas {command}: warning: {warning}", file=sys.stderr)
    return pce


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


def build_config(args: argparse.Namespace) -> Any:
    """The :class:`~dippas_core.config.AnonymizeConfig` the options describe (its DIP part,
    sigma and tile are what ``invert`` runs), as ``dippas anonymize`` builds it."""
    return config_from_args(args, tile=args.tile)


def _run(args: argparse.Namespace) -> int:
    from ..cancel import CancelToken
    from ..dip import invert
    from ..errors import InputError
    from ..residual import residual
    from ..run import RunDirectory, check_run_target
    from ..targets import check_targets

    check_run_target(args.out, args.force)  # before any work, as every argument
    # the run folder's files are replaced: never an input among them
    check_targets({}, {"PHOTO": args.photo, "--fingerprint": args.fingerprint},
                  new_runs=[args.out])
    photo, fingerprint = load_photo_and_fingerprint(args)
    if args.tile > max(photo.shape[:2]):
        raise InputError(
            f"--tile {args.tile} is larger than the photo ({photo.shape[0]}×{photo.shape[1]})"
        )
    config = build_config(args)
    dip = config.dip
    warn_without_trace("invert", photo, fingerprint, config.sigma)
    if fingerprint is None:
        P, mode = residual(photo, config.sigma), "blind"
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
        tile=config.tile,
        sigma=config.sigma,
        force=args.force,
        extra={"source": args.photo.name, "fingerprint": fp},
    )
    print(
        f"inverting {args.photo} ({photo.shape[1]}×{photo.shape[0]}, {mode}) into {args.out}: "
        f"record from {dip.record_psnr} dB, stop at {dip.stop_psnr} dB or {dip.max_iter} "
        "iterations",
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
    return _say_outcome(args, config, result, len(run.snapshots), interrupted)


def _say_outcome(
    args: argparse.Namespace, config: Any, result: Any, n: int, interrupted: bool
) -> int:
    """What the inversion kept and what to do next; the exit status."""
    dip = config.dip
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
    if n == 0:  # nothing reached the recording threshold: there is nothing to assemble
        import numpy as np

        print(
            f"dippas invert: below tau (exit status {EXIT_BELOW_TAU}): no output came within "
            f"{dip.record_psnr:g} dB of the photo (best "
            f"{float(np.max(result.history['psnr'], initial=-np.inf)):.2f} dB); raise "
            "--max-iter or --lr, or lower --record-psnr, and run again",
            file=sys.stderr,
        )
        return EXIT_BELOW_TAU
    print(
        f"next: dippas assemble {args.out} -B {config.assembly.B} -L {config.assembly.L} "
        f"--tau {config.assembly_tau:g} --out OUT.png",
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
