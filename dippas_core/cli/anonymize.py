"""``dippas anonymize``: the whole job on one photo (inversion, assembly, image + JSON report)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .assemble import add_output_arguments, check_output, write_outputs
from .invert import EXIT_INTERRUPTED, add_dip_arguments, add_input_arguments, dip_config_from_args

__all__ = ["register", "run_anonymize", "print_summary"]


def add_assembly_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("assembly")
    g.add_argument("-B", type=int, default=64, help="block size, a multiple of 32 (default 64)")
    g.add_argument("-L", type=int, default=10, help="snapshots averaged per block (default 10)")
    g.add_argument(
        "--tau",
        type=float,
        default=None,
        help="PSNR threshold of the snapshots assembled (dB; default: --tau-psnr)",
    )
    g.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="keep the run (snapshots, tile sums) here to re-assemble it later",
    )


def run_anonymize(
    photo: Any,
    fingerprint: Any,
    config: Any,
    *,
    run_dir: Path | None,
    force: bool,
    quiet: bool = False,
) -> tuple[Any, bool]:
    """:func:`~dippas_core.pipeline.anonymize` with a progress line; first Ctrl-C stops early.

    Returns the ``AnonymizeResult`` and whether the inversion really stopped because of the
    Ctrl-C (not merely whether one was pressed, perhaps after the last iteration).
    """
    from ..cancel import CancelToken
    from ..pipeline import anonymize
    from ._progress import ProgressLine, sigint_cancels

    cancel = CancelToken()
    bar = ProgressLine(config.dip.max_iter)
    with sigint_cancels(cancel):
        try:
            result = anonymize(
                photo,
                fingerprint,
                config,
                run_dir=run_dir,
                cancel=cancel,
                on_step=None if quiet else bar.update,
                force=force,
            )
        finally:
            if not quiet:
                bar.close()
    return result, result.report["inversion"]["stop_reason"] == "cancelled"


def print_summary(report: dict, out: Path, stream: Any = None) -> None:
    """A few lines a person reads: PSNR, NCC and PCE before/after, snapshots, time."""
    s = stream if stream is not None else sys.stdout
    inv, asm = report["inversion"], report["assembly"]
    print(f"anonymized image: {out}  (report: {out.with_suffix('.json')})", file=s)
    print(f"mode: {report['mode']} (reference: {report['reference']})", file=s)
    print(f"PSNR vs original: {report['psnr']:.2f} dB", file=s)
    print(
        f"NCC with the fingerprint: {report['ncc']['before']:.4f} -> {report['ncc']['after']:.4f}",
        file=s,
    )
    print(f"PCE: {report['pce']['before']:.1f} -> {report['pce']['after']:.1f}", file=s)
    print(
        f"inversion: {inv['n_iterations']} iterations ({inv['stop_reason']}), best PSNR "
        f"{inv['best_psnr']:.2f} dB, {inv['n_snapshots']} snapshots; assembly B={asm['B']} "
        f"L={asm['L']} from {asm['n_candidates']} snapshots",
        file=s,
    )
    g, sn = inv.get("gamma", {}), inv.get("snapshot_ncc", {})
    if g.get("recording_iterations"):
        print(
            f"gamma while recording: median {g['median']:.5f} (least squares "
            f"{g['median_star'] if g['median_star'] is not None else float('nan'):.5f}), at 0 in "
            f"{100 * g['at_bound_share']:.0f} % of {g['recording_iterations']} iterations; "
            f"snapshots' NCC {sn.get('mean', float('nan')):.4f} (photo {sn['photo']:.4f})",
            file=s,
        )
    t = report["timing_s"]
    print(
        f"time: {t['total']:.1f} s (inversion {t['inversion']:.1f} s, assembly "
        f"{t['assembly'] * 1e3:.0f} ms) on {report['device']}, seed {report['seed']}",
        file=s,
    )


def _run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..pipeline import AnonymizeConfig
    from .invert import load_photo_and_fingerprint

    check_output(args.out, args.force, args.photo)
    photo, fingerprint = load_photo_and_fingerprint(args)
    config = AnonymizeConfig(
        dip=dip_config_from_args(args), B=args.B, L=args.L, tau=args.tau, sigma=args.sigma
    )
    result, interrupted = run_anonymize(
        photo, fingerprint, config, run_dir=args.run_dir, force=args.force, quiet=args.quiet
    )
    bits = args.bits or (16 if photo.dtype == np.uint16 else 8)
    # the report travels with the image: it names no file or folder of the source
    report = {**result.report, "crop": args.crop}
    write_outputs(args.out, result.image, bits, report, result.maps)
    print_summary(report, args.out)
    if interrupted:
        print(
            "dippas anonymize: interrupted; the image was assembled from the snapshots kept so far",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "anonymize",
        help="remove the camera fingerprint from a photo (DIP inversion + assembly)",
        description=(
            "Anonymize PHOTO with DIPPAS: PRNU-aware with --fingerprint, PRNU-blind without. "
            "Writes OUT (no metadata from PHOTO) and OUT.json (PSNR, NCC/PCE before and after, "
            "parameters, seed, timing, versions, device).  Ctrl-C stops the inversion and "
            "assembles what was kept."
        ),
    )
    add_input_arguments(p, blind_flag=False)
    add_output_arguments(p)
    add_assembly_arguments(p)
    p.add_argument("--sigma", type=float, default=5.0, help="residual noise level (default 5)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    add_dip_arguments(p, tiles_per_step=True)
    p.set_defaults(func=_run)
