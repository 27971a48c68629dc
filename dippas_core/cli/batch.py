"""``dippas batch``: anonymize every image of a folder on a Dask cluster (local by default)."""

from __future__ import annotations

import argparse
import sys

from ..errors import InputError
from ..io.limits import MAX_PIXELS
from ._checks import MAX_THREADS, int_between
from ._options import (
    add_assembly_options,
    add_dip_arguments,
    add_tiling_options,
    config_from_args,
)
from ._outcome import EXIT_BELOW_TAU

__all__ = ["register", "run"]

_EPILOG = """\
examples:
  dippas batch photos/ --fingerprint nikon.npz --out anonymized/
  dippas batch photos/ --blind --out anonymized/ --preset cpu --crop 512 --workers 2 --seed 7
  dippas batch photos/ --fingerprint nikon.npz --out anonymized/ --scheduler tcp://10.0.0.5:8786

Re-running the same command resumes: images already done with the same input and parameters are
skipped.  Exit status: 0 every image anonymized at tau; 1 some images failed or were cancelled
(see summary.csv); 2 bad arguments; 3 none failed but some are short of tau (status "below-tau"
in summary.csv, "below_tau": true in their sidecar: a tile never reached tau or the assembly used
a lower threshold).
"""


def _size(text: str) -> int | tuple[int, int]:
    """``512`` or ``512x384`` (height x width)."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {text!r}") from None
    if len(values) not in (1, 2) or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive N or HxW, got {text!r}")
    return values[0] if len(values) == 1 else (values[0], values[1])


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``batch`` subcommand."""
    p = subparsers.add_parser(
        "batch",
        help="anonymize every image of a folder (Dask, resumable)",
        description=(
            "Anonymize every .jpg/.jpeg/.png/.tif/.tiff image of IN_DIR into OUT_DIR on a Dask "
            "cluster: a local one sized to this machine by default, or an existing one "
            "(--scheduler).  Outputs carry no metadata and, unless --keep-names, no part of the "
            "source name."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("in_dir", metavar="IN_DIR", help="folder of photos (read only)")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--fingerprint", metavar="K", help="camera fingerprint .npz (PRNU-aware)")
    mode.add_argument(
        "--blind", action="store_true", help="no fingerprint: each photo's own residual"
    )
    p.add_argument("--out", required=True, metavar="OUT_DIR", help="output folder (created)")
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="address of a running Dask scheduler (tcp://host:8786); default: a local cluster",
    )
    p.add_argument(
        "--workers",
        type=int_between(1, MAX_THREADS),
        metavar="N",
        help="local cluster workers (default: one per GPU, else one per CPU core; at most the "
        "cores)",
    )
    add_dip_arguments(p, tiles_per_step=True)
    add_assembly_options(p)
    add_tiling_options(p.add_argument_group("whole photos"))
    p.add_argument("--crop", type=_size, metavar="N|HxW", help="centre-crop photos (and K) first")
    p.add_argument(
        "--max-pixels",
        type=int_between(1, MAX_PIXELS),
        default=16_000_000,
        metavar="N",
        help=f"refuse larger images (default 16000000, at most {MAX_PIXELS}: the readers' "
        "own limit)",
    )
    p.add_argument(
        "--keep-names",
        action="store_true",
        help="name outputs after the (sanitised) source stem instead of anon-<hex>",
    )
    p.add_argument("--format", choices=("png", "tiff"), default="png", help="output format")
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace):
    """The :class:`~dippas_core.config.AnonymizeConfig` the options describe: the preset and
    what the options change, as ``dippas anonymize`` builds it."""
    return config_from_args(args, tile_size=args.tile, overlap=args.overlap)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Run the batch; exit status 0 when every image is anonymized at tau, 1 when some failed,
    3 (the anonymize command's "below tau") when none failed but some are short of tau."""
    from ..batch import BatchSettings, format_progress, format_table, run_batch
    from ..batch.settings import STATUS_BELOW_TAU
    from ..cluster import check_scheduler

    if args.scheduler and args.workers:
        raise InputError("--workers sizes the local cluster; with --scheduler the cluster decides")
    if args.scheduler is not None:
        check_scheduler(args.scheduler)  # before the fingerprint or any photo is read
    settings = BatchSettings(
        max_pixels=args.max_pixels,
        crop=args.crop,
        keep_names=args.keep_names,
        output_format=args.format,
    )
    result = run_batch(
        args.in_dir,
        args.out,
        fingerprint=None if args.blind else args.fingerprint,
        config=build_config(args),
        settings=settings,
        client=args.scheduler,
        n_workers=args.workers,
        progress=lambda *state: _say(format_progress(*state)),
        log=_say,
    )
    print(format_table(result.records))
    counts = ", ".join(f"{k} {v}" for k, v in result.counts.items() if v)
    print(
        f"{len(result.records)} images in {result.wall_s:.1f} s ({counts}); "
        f"summary: {result.summary_paths[0]}",
        file=sys.stderr,
    )
    status = batch_exit_status(result.records)
    if status == EXIT_BELOW_TAU:
        short = [r.output for r in result.records if r.status == STATUS_BELOW_TAU]
        print(f"dippas batch: below tau (exit status {status}): {len(short)} image(s) are short "
              f"of tau ({', '.join(short[:5])}{', ...' if len(short) > 5 else ''}): see the "
              "reason column", file=sys.stderr)
    return status


def batch_exit_status(records: list) -> int:
    """0 every image anonymized at tau (now or earlier); 1 some failed or were cancelled; else 3
    when some are short of tau (written, status "below-tau")."""
    from ..batch.settings import STATUS_BELOW_TAU, STATUS_OK, STATUS_SKIPPED

    if any(r.status not in (STATUS_OK, STATUS_SKIPPED, STATUS_BELOW_TAU) for r in records):
        return 1
    return EXIT_BELOW_TAU if any(r.status == STATUS_BELOW_TAU for r in records) else 0
