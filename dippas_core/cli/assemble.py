"""``dippas assemble``: build the anonymized image from a run folder (any B, L, tau; no DIP).

A whole-photo run folder kept with ``dippas anonymize --keep-runs`` is re-assembled tile by tile
and stitched (:func:`dippas_core.photo_assembly.assemble_photo_run`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ._checks import finite_float
from ._options import AVERAGED, BLOCK
from ._outcome import EXIT_BELOW_TAU, EXIT_STATUSES, exit_status, output_name

__all__ = [
    "add_output_arguments",
    "check_output",
    "earlier_images",
    "image_outputs",
    "register",
    "say_fidelity",
    "warn_lowered_tau",
    "write_outputs",
]


def add_output_arguments(p: argparse.ArgumentParser) -> None:
    """--out, --bits, --force."""
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="OUT.png",
        help="anonymized image (.png/.tif; a JSON report is written beside it)",
    )
    p.add_argument(
        "--bits",
        type=int,
        choices=(8, 16),
        default=None,
        help="bit depth of OUT (default: that of the photo)",
    )
    p.add_argument("--force", action="store_true", help="overwrite OUT and its report")


def image_outputs(out: Path, what: str = "--out") -> dict[str, Path]:
    """The files an image output writes: the image and its published sidecar (``OUT.json``)."""
    return {what: out, f"the sidecar of {what}": out.with_suffix(".json")}


def earlier_images(*images: Path) -> Callable[[Path], bool]:
    """Which outputs a resume may replace without ``--force``: the images among ``images`` that a
    dippas command published (and their sidecars)."""
    from ..report import is_published_image

    ours = {p for image in images if is_published_image(image)
            for p in (image, image.with_suffix(".json"))}
    return lambda path: path in ours


def check_output(
    out: Path,
    force: bool,
    inputs: Mapping[str, Any] | None = None,
    *,
    run_dir: Path | None = None,
    others: Mapping[str, Path | None] | None = None,
    replaceable: Callable[[Path], bool] | None = None,
) -> Path:
    """Check OUT, the report beside it and the command's ``others`` outputs before any work
    (:func:`dippas_core.targets.check_targets`); return the report's path.

    Each is refused when it is a folder, an input, another output, one of a run's own files
    (``RUN/config.png`` would put its report over ``RUN/config.json``; ``run_dir`` is a run
    folder the command will create, which may not exist yet), existing without ``force``
    (``replaceable``: earlier results a resume replaces), or in a folder that cannot be written.
    """
    from ..errors import InputError
    from ..targets import check_targets

    if out.suffix.lower() not in (".png", ".tif", ".tiff"):
        raise InputError(f"--out {out}: use a .png or .tif file name")
    outputs = {**image_outputs(out), **(others or {})}
    check_targets(outputs, inputs, force=force, new_runs=[run_dir], replaceable=replaceable)
    return out.with_suffix(".json")


def write_outputs(
    out: Path,
    image: Any,
    bits: int,
    report: Any,
    maps: dict,
    *,
    forensic: Path | None = None,
) -> Path:
    """Write the image (no metadata, atomic) and its published JSON sidecar; return its path.

    ``report``: the :class:`~dippas_core.report.AnonymizationReport`.  The sidecar travels with
    the image, so it is the report's published part: nothing about the source camera, its scores
    or where the source and run live.  The full report and the block-NCC maps go to ``forensic``
    (a run folder or a file), when given.
    """
    from ..atomic import atomic_write_text
    from ..io import write_image
    from ..report import write_forensic_record

    write_image(out, image, bit_depth=bits)
    report_path = out.with_suffix(".json")
    report = report.with_(bit_depth=bits)
    atomic_write_text(report_path, json.dumps(report.sidecar(out.name), indent=1))
    if forensic is not None:
        try:
            write_forensic_record(report.with_(output=str(out)), forensic, maps)
        except OSError as exc:  # the image is written; say where the record could not go
            print(f"warning: could not write the forensic record to {forensic}: {exc}",
                  file=sys.stderr)
    return report_path


def warn_lowered_tau(tau: float, params: dict) -> None:
    """Say so when the assembly used a lower PSNR threshold than asked (no snapshot reached it)."""
    used = params.get("psnr_threshold")
    if used is not None and used < tau:
        print(
            f"warning: no snapshot reaches tau {tau:g} dB; the best snapshots, at {used:.2f} dB, "
            "were assembled instead",
            file=sys.stderr,
        )


def say_fidelity(report: Any, stream: Any = None) -> None:
    """The fidelity line of an image's report (beside its PSNR line; stderr by default): the
    measures and the bars they break (:func:`dippas_core.fidelity.describe`)."""
    from ..fidelity import describe

    line = describe(report.get("fidelity"))
    if line:
        print(f"fidelity: {line}", file=stream if stream is not None else sys.stderr)


def _run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..assembly import assemble
    from ..config import AssemblyParams
    from ..io import to_float255
    from ..photo_assembly import is_photo_run
    from ..report import AnonymizationReport, measure
    from ..run import RunDirectory, environment_info

    check_output(args.out, args.force, {"RUN_DIR": args.run_dir})
    if is_photo_run(args.run_dir):
        return _run_photo(args)
    args.B = 64 if args.B is None else args.B
    args.L = 10 if args.L is None else args.L
    run = RunDirectory.open(args.run_dir)
    # tau defaults to the run's recording threshold (every snapshot it kept); checked before work
    params = AssemblyParams(args.B, args.L, args.tau).fitted(run.shape, run.tile, run.record_psnr)
    missing = run.n_missing_tile_sums
    if missing and run.being_recorded():
        # its ingest thread is appending these very tile sums: computing them too would misalign
        # the file; use what is ready now
        print(
            f"{args.run_dir} is still being recorded: assembling the {run.n_ready} snapshots "
            "whose residuals are ready",
            file=sys.stderr,
        )
    elif missing:
        print(
            f"computing the residuals of {missing} snapshots the run did not finish ...",
            file=sys.stderr,
        )
        run.complete_tile_sums()  # skips by itself if a recorder started in the meantime
    photo = run.photo
    bits = args.bits or (16 if photo.dtype == np.uint16 else 8)
    asm = assemble(run, params, dtype="uint8" if bits == 8 else "float32")
    photo255 = to_float255(photo)
    measured, maps = measure(photo255, asm.image, run.reference, asm.block, run.sigma,
                             tau=asm.params.get("psnr_threshold"))
    report = AnonymizationReport.of(
        **measured,
        run_dir=str(run.path),
        mode=run.mode,
        reference=run.config.get("reference"),
        assembly=asm.params,
        seed=run.config.get("seed"),
        device=run.config.get("device"),
        run_status=run.status,
        sigma=run.sigma,
        dip_config=run.config.get("dip_config"),
        versions=environment_info(),
    )
    out = output_name(args.out, report, accept_below_tau=args.accept_below_tau)
    if out != args.out:  # short of tau: the name says so (an earlier such image is replaced)
        check_output(out, args.force, {"RUN_DIR": args.run_dir}, replaceable=earlier_images(out))
    write_outputs(out, asm.image, bits, report, maps, forensic=run.path)
    p = asm.params
    warn_lowered_tau(params.tau, p)
    print(
        f"assembled {out} from {p['n_candidates']} snapshots (PSNR >= "
        f"{p['psnr_threshold']:.2f} dB), B={p['B']} L={p['L']} in {p['elapsed_s']:.2f} s: "
        f"PSNR {report['psnr']:.2f} dB, NCC {report['ncc']['before']:.4f} -> "
        f"{report['ncc']['after']:.4f}, PCE ({report['pce']['kind']}) "
        f"{report['pce']['before']:.1f} -> {report['pce']['after']:.1f}; "
        f"report {out.with_suffix('.json')}",
        file=sys.stderr,
    )
    say_fidelity(report)
    return _said(report, out, args.accept_below_tau)


def _said(report: Any, out: Path, accept_below_tau: bool) -> int:
    """The exit status of a written image (:mod:`._outcome`), said in a line when not 0."""
    status = exit_status(report, accept_below_tau=accept_below_tau)
    if status == EXIT_BELOW_TAU:
        print(f"dippas assemble: below tau (exit status {status}): {out} is not assembled at "
              "tau everywhere (--accept-below-tau takes it as OUT, exit status 0)",
              file=sys.stderr)
    return status


def _run_photo(args: argparse.Namespace) -> int:
    """A whole-photo run kept with --keep-runs: every tile re-assembled, stitched, written."""
    import numpy as np

    from ..io import to_float255
    from ..photo_assembly import assemble_photo_run
    from ..report import AnonymizationReport, measure
    from ..residual import residual
    from ..run import environment_info
    bits = args.bits
    dtype = None if bits is None else ("uint8" if bits == 8 else "float32")
    asm = assemble_photo_run(args.run_dir, args.B, args.L, args.tau, dtype=dtype)
    bits = bits or (16 if asm.photo.dtype == np.uint16 else 8)
    photo255 = to_float255(asm.photo)
    P = asm.reference if asm.reference is not None else residual(photo255, asm.sigma)
    p = asm.params
    block = p["B"] if p["B"] % 32 == 0 else 64
    measured, maps = measure(photo255, asm.image, P, block, asm.sigma, tiles=asm.tile_boxes,
                             tau=p.get("tau"))
    report = AnonymizationReport.of(
        **measured,
        run_dir=str(args.run_dir),
        mode=asm.mode,
        assembly=p,
        below_tau=[{"tile": i, "kept_fallback": True} for i in p["kept_fallback"]],
        versions=environment_info(),
    )
    out = output_name(args.out, report, accept_below_tau=args.accept_below_tau)
    if out != args.out:  # named after what it is: checked again (an earlier one may be replaced)
        check_output(out, args.force, {"RUN_DIR": args.run_dir}, replaceable=earlier_images(out))
    write_outputs(out, asm.image, bits, report, maps, forensic=Path(args.run_dir))
    if p["kept_fallback"]:
        print(
            f"tiles {p['kept_fallback']} never reached the run's recording threshold (no snapshot "
            "kept): they keep the run's fallback image (the mean of their best outputs)",
            file=sys.stderr,
        )
    print(
        f"assembled {out} from {len(p['tiles'])} tiles' runs, B={p['B']} L={p['L']} "
        f"tau={p['tau']:g}: PSNR {report['psnr']:.2f} dB, NCC {report['ncc']['before']:.4f} -> "
        f"{report['ncc']['after']:.4f}, PCE ({report['pce']['kind']}) "
        f"{report['pce']['before']:.1f} -> {report['pce']['after']:.1f}",
        file=sys.stderr,
    )
    say_fidelity(report)
    return _said(report, out, args.accept_below_tau)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "assemble",
        help="assemble the anonymized image from a run folder",
        description=(
            "Rank every snapshot of RUN_DIR on each BxB block by its NCC with the reference and\n"
            "average the best L (method §5).  Fast: it reuses the tile sums recorded during the\n"
            "inversion.  A run that was stopped midway works too.  Writes OUT and its published\n"
            "sidecar OUT.json; a result short of the asked tau is OUT-below-tau.png (status 3)."
        ),
        epilog=EXIT_STATUSES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "run_dir",
        type=Path,
        metavar="RUN_DIR",
        help="a run folder, or a whole-photo run folder made with dippas anonymize --keep-runs "
        "(every tile re-assembled and stitched with the same feathered weights)",
    )
    p.add_argument(
        "-B",
        type=BLOCK,
        default=None,
        help="block size, a multiple of the tile (default 64; a photo run: the run's)",
    )
    p.add_argument(
        "-L",
        type=AVERAGED,
        default=None,
        help="snapshots averaged per block (default 10; a photo run: the run's)",
    )
    p.add_argument(
        "--tau",
        type=finite_float,
        default=None,
        help="PSNR threshold of the snapshots used (dB; default: the run's recording "
        "threshold record_psnr, i.e. every snapshot it kept; a photo run: its own assembly tau)",
    )
    add_output_arguments(p)
    p.add_argument(
        "--accept-below-tau",
        action="store_true",
        help="take a result short of tau as OUT and exit 0 (its sidecar still says below_tau)",
    )
    p.set_defaults(func=_run)
