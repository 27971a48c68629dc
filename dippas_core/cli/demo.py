"""``dippas demo``: anonymize the embedded sample photo with its camera's fingerprint (CPU)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ._checks import int_between
from ._options import add_assembly_options, add_dip_arguments, config_from_args
from ._outcome import EXIT_INTERRUPTED, exit_status, output_name

__all__ = ["register", "build_config", "DEMO_PRESET", "DEMO_CROP"]

#: The demo runs the ``demo`` preset (the tiny network, looking the same, at the paper's 38/39 dB)
#: on the central crop of the sample.
DEMO_PRESET = "demo"
DEMO_CROP = 64


#: What a demo writes into its folder (``--force`` replaces these and nothing else).
DEMO_FILES = ("original.png", "anonymized.png", "anonymized.json")


def _check_demo_folder(out: Path, force: bool) -> None:
    """A new or empty folder, or (with ``force``) one that holds a previous demo and no more."""
    from ..errors import InputError
    from ..run import MARKER, check_writable_folder
    from ..targets import check_targets

    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; --out names the demo's folder")
    check_targets({}, new_runs=[out / "run"])  # never inside another run's own folders
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise InputError(
                f"{out} already exists and is not empty; choose another folder or --force"
            )
        others = sorted(
            p.name for p in out.iterdir()
            if p.name not in (*DEMO_FILES, "run") and not p.name.startswith("anonymized-below-tau")
        )
        if others or not (out / "run" / MARKER).is_file():
            raise InputError(
                f"{out} does not hold a previous demo (or holds other files too: "
                f"{', '.join(others[:5]) or 'no run/'}); --force replaces only a demo's own "
                "files: choose a new or empty folder"
            )
    check_writable_folder(out)


def build_config(args: argparse.Namespace) -> Any:
    """The demo's :class:`~dippas_core.config.AnonymizeConfig`: its preset (``demo`` unless
    ``--preset``) and what the options change, as ``dippas anonymize`` builds it."""
    return config_from_args(args, DEMO_PRESET)


def _run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..io import center_crop, write_image
    from ..job import prepare
    from ..sample import sample_data
    from .anonymize import print_summary, run_anonymize
    from .assemble import write_outputs
    from .invert import warn_without_trace

    out: Path = args.out
    _check_demo_folder(out, args.force)
    photo, fingerprint = sample_data()
    crop = args.crop if args.crop is not None else DEMO_CROP
    if not 16 <= crop <= min(photo.shape[:2]):
        raise InputError(f"--crop {crop} must lie between 16 and {min(photo.shape[:2])}")
    photo, fingerprint = center_crop(photo, crop).copy(), fingerprint.center_crop(crop)
    preset = args.preset or DEMO_PRESET
    config = build_config(args)
    print(
        f"dippas demo: anonymizing the sample photo ({crop}×{crop} crop, camera "
        f"{fingerprint.camera}) with its fingerprint: preset {preset!r}, snapshots from "
        f"{config.dip.record_psnr} dB, stop at {config.dip.stop_psnr} dB or "
        f"{config.dip.max_iter} iterations",
        file=sys.stderr,
    )
    warn_without_trace("demo", photo, fingerprint, config.sigma)
    job = prepare(photo, fingerprint, config)
    result, interrupted = run_anonymize(
        job, run_dir=out / "run", force=args.force, quiet=args.quiet
    )
    write_image(out / "original.png", photo)
    report = result.report.with_(crop=crop)
    image_path = output_name(out / "anonymized.png", report)  # short of tau: named so
    write_outputs(image_path, result.image, 8, report, result.maps, forensic=out / "run")
    print_summary(report, image_path)
    print(
        f"re-assemble with other settings: dippas assemble {out / 'run'} -B 32 -L 25 "
        f"--out {out / 'B32-L25.png'}"
    )
    if interrupted:
        return EXIT_INTERRUPTED
    status = exit_status(report)
    if status:
        print(f"dippas demo: below tau (exit status {status}): not every block reached tau; "
              "raise --max-iter or lower --record-psnr", file=sys.stderr)
    return status


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo",
        help="anonymize the embedded sample photo (a minute or two on a CPU)",
        description=(
            "Anonymize a crop of the sample Dresden photo shipped with the package with its "
            "camera's fingerprint and write DIR/original.png, DIR/anonymized.png, "
            "DIR/anonymized.json and the run folder DIR/run; prints PSNR and NCC before/after."
        ),
    )
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    p.add_argument(
        "--crop",
        type=int_between(1),
        default=None,
        help=f"central crop of the 256×256 sample (default {DEMO_CROP})",
    )
    p.add_argument("--force", action="store_true", help="replace a previous demo in DIR")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    add_dip_arguments(
        p,
        preset_help="DIP preset (default: 'demo', the tiny network looking the same: snapshots "
        "from 38 dB, stop at 39 dB or 1500 iterations)",
    )
    add_assembly_options(p, "the preset's, demo: B 32, L 1, tau 38.5")
    p.set_defaults(func=_run)
