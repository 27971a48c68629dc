"""``dippas assemble``: build the anonymized image from a run folder (any B, L, tau; no DIP)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["register", "add_output_arguments", "check_output", "write_outputs"]


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


def check_output(out: Path, force: bool, *inputs: Path | None) -> Path:
    """Refuse to overwrite an input, or OUT/OUT.json without --force; return OUT.json's path."""
    from ..errors import InputError

    report = out.with_suffix(".json")
    for src in inputs:
        if src is not None and Path(src).exists() and out.exists() and out.samefile(src):
            raise InputError(f"--out {out} is the input file itself; choose another name")
    if out.suffix.lower() not in (".png", ".tif", ".tiff"):
        raise InputError(f"--out {out}: use a .png or .tif file name")
    for path in (out, report):
        if path.exists() and not force:
            raise InputError(f"{path} already exists; choose another name or pass --force")
    return report


def write_outputs(out: Path, image: Any, bits: int, report: dict, maps: dict) -> Path:
    """Write the image (no metadata, atomic) and its JSON report; return the report's path.

    The report travels with the image, so paths in it are cut to their last component: it must
    not tell where the source or the run lives (a folder name can identify a person).
    """
    from .._atomic import atomic_write_text
    from ..io import write_image
    from ..run import jsonable

    write_image(out, image, bit_depth=bits)
    report_path = out.with_suffix(".json")
    payload = {
        **report,
        "run_dir": Path(report["run_dir"]).name if report.get("run_dir") else None,
        "output": out.name,
        "bit_depth": bits,
        "maps": {k: jsonable(v) for k, v in maps.items()},
    }
    atomic_write_text(report_path, json.dumps(jsonable(payload), indent=1, allow_nan=True))
    return report_path


def _run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..assembly import assemble
    from ..metrics import psnr
    from ..pipeline import _to_float255, attribution_scores
    from ..run import RunDirectory

    report_path = check_output(args.out, args.force)
    run = RunDirectory.open(args.run_dir)
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
    tau = (
        args.tau
        if args.tau is not None
        else (run.config.get("dip_config") or {}).get("tau_psnr", 38.0)
    )
    asm = assemble(run, args.B, args.L, tau, dtype="uint8" if bits == 8 else "float32")
    photo255 = _to_float255(photo)
    before, map_before = attribution_scores(photo255, run.reference, asm.block, run.sigma)
    after, map_after = attribution_scores(asm.image, run.reference, asm.block, run.sigma)
    report = {
        "run_dir": str(run.path),
        "mode": run.mode,
        "reference": run.config.get("reference"),
        "psnr": float(psnr(photo255, np.asarray(asm.image, np.float32))),
        "ncc": {"before": before["ncc"], "after": after["ncc"]},
        "pce": {"before": before["pce"], "after": after["pce"]},
        "assembly": asm.params,
        "seed": run.config.get("seed"),
        "device": run.config.get("device"),
        "run_status": run.status,
    }
    write_outputs(
        args.out,
        asm.image,
        bits,
        report,
        {"block_ncc_before": map_before, "block_ncc_after": map_after},
    )
    p = asm.params
    print(
        f"assembled {args.out} from {p['n_candidates']} snapshots (PSNR >= "
        f"{p['psnr_threshold']:.2f} dB), B={p['B']} L={p['L']} in {p['elapsed_s']:.2f} s: "
        f"PSNR {report['psnr']:.2f} dB, NCC {before['ncc']:.4f} -> {after['ncc']:.4f}; "
        f"report {report_path}",
        file=sys.stderr,
    )
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "assemble",
        help="assemble the anonymized image from a run folder",
        description=(
            "Rank every snapshot of RUN_DIR on each BxB block by its NCC with the reference and "
            "average the best L (method §5).  Fast: it reuses the tile sums recorded during the "
            "inversion.  A run that was stopped midway works too."
        ),
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("-B", type=int, default=64, help="block size, a multiple of the tile (64)")
    p.add_argument("-L", type=int, default=10, help="snapshots averaged per block (10)")
    p.add_argument(
        "--tau",
        type=float,
        default=None,
        help="PSNR threshold of the snapshots used (dB; default: the run's tau_psnr)",
    )
    add_output_arguments(p)
    p.set_defaults(func=_run)
