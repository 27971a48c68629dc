"""``dippas score``: how strongly a photo carries a camera's fingerprint (NCC, PCE, verdict)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._checks import finite_float, int_between

__all__ = ["register", "PCE_THRESHOLD"]

#: The usual PCE decision threshold of the PRNU literature (Goljan et al. 2009).
PCE_THRESHOLD = 60.0


def _run(args: argparse.Namespace) -> int:
    from ..attribution import attribute
    from ..correlation import DEFAULT_EXCLUSION
    from ..errors import ShapeMismatchError
    from ..fingerprint import Fingerprint
    from ..io import center_crop, read_image
    from ..run import environment_info

    fp = Fingerprint.load(args.fingerprint)
    photo = read_image(args.photo)
    if args.crop:
        photo = center_crop(photo, args.crop)
        fp = fp.center_crop(args.crop)
    if photo.shape[:2] != fp.shape:
        raise ShapeMismatchError(
            f"{args.photo} is {photo.shape[0]}×{photo.shape[1]} but the fingerprint is "
            f"{fp.shape[0]}×{fp.shape[1]}; pass --crop N to score centre crops of one size"
        )
    scores = attribute(
        photo, fp.K, sigma=fp.sigma, pce_shift_range=(0, 0) if args.aligned else None
    )
    verdict = "match" if scores.pce >= args.threshold else "no match"
    result = {
        "photo": str(args.photo),
        "fingerprint": str(args.fingerprint),
        "camera": fp.camera,
        "size": list(fp.shape),
        "ncc": scores.ncc,
        "pce": scores.pce,
        "pce_shift": list(scores.pce_shift),
        "threshold": args.threshold,
        "verdict": verdict,
        # how the scores were made, so that they can be reproduced
        "sigma": fp.sigma,
        "pce_exclusion": DEFAULT_EXCLUSION,
        "pce_shift_search": "aligned" if args.aligned else "all shifts",
        "versions": environment_info(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"NCC {scores.ncc:+.5f}  PCE {scores.pce:.1f} (peak at shift {scores.pce_shift})  "
              f"-> {verdict} with {fp.camera or 'the fingerprint'} (PCE threshold "
              f"{args.threshold:g})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``dippas score``."""
    p = subparsers.add_parser(
        "score",
        help="NCC and PCE of a photo against a camera fingerprint",
        description=(
            "Residual of PHOTO (pixels as stored) against its gray image times the fingerprint: "
            "NCC (paper eq. 2) and PCE; the verdict is 'match' when PCE reaches the threshold. "
            "Photo and fingerprint must have the same size (or use --crop)."
        ),
    )
    p.add_argument("photo", type=Path, metavar="PHOTO")
    p.add_argument("--fingerprint", type=Path, required=True, metavar="K.npz")
    p.add_argument("--crop", type=int_between(1), default=None, metavar="N",
                   help="centre-crop both the photo and the fingerprint to N×N")
    p.add_argument("--aligned", action="store_true",
                   help="score PCE at zero shift only (photo known to be aligned)")
    p.add_argument("--threshold", type=finite_float, default=PCE_THRESHOLD,
                   help=f"PCE decision threshold (default {PCE_THRESHOLD:g})")
    p.add_argument("--json", action="store_true", help="print one JSON line")
    p.set_defaults(func=_run)
