"""``dippas score``: how strongly a photo carries a camera's fingerprint (NCC, PCE, verdict)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..attribution import PCE_DECISION_LEVEL
from ._checks import finite_float, int_between

__all__ = ["register", "PCE_THRESHOLD"]

#: The PCE decision threshold (Goljan et al. 2009): the core's one decision level.
PCE_THRESHOLD = PCE_DECISION_LEVEL


def _run(args: argparse.Namespace) -> int:
    from ..attribution import attribute
    from ..correlation import DEFAULT_EXCLUSION
    from ..errors import ShapeMismatchError
    from ..fingerprint import Fingerprint
    from ..io import center_crop, read_image
    from ..run import environment_info
    from ..tiling import check_region, parse_region

    region = parse_region(args.region) if args.region is not None else None  # before any read
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
    if region is not None:  # the photo's region and the same pixels of the fingerprint
        y, x, h, w = check_region(region, photo.shape)
        photo = photo[y : y + h, x : x + w]
        fp = fp.region(y, x, h, w)
    scores = attribute(
        photo, fp.K, sigma=fp.sigma, pce_shift_range=None if args.search_shifts else (0, 0)
    )
    verdict = "match" if scores.pce >= args.threshold else "no match"
    result = {
        "photo": str(args.photo),
        "fingerprint": str(args.fingerprint),
        "camera": fp.camera,
        "size": list(fp.shape),
        "region": None if region is None else dict(zip("yxhw", (y, x, h, w), strict=True)),
        "ncc": scores.ncc,
        "pce": scores.pce,
        "pce_kind": scores.pce_kind,
        "pce_shift": list(scores.pce_shift),
        "threshold": args.threshold,
        "verdict": verdict,
        # how the scores were made, so that they can be reproduced
        "sigma": fp.sigma,
        "pce_exclusion": DEFAULT_EXCLUSION,
        "versions": environment_info(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        where = "" if region is None else f" on region y={y}, x={x}, {h}×{w}"
        at = f", at shift {scores.pce_shift}" if args.search_shifts else ""
        print(f"NCC {scores.ncc:+.5f}  PCE {scores.pce:.1f} ({scores.pce_kind}{at}){where}  "
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
            "NCC (paper eq. 2) and PCE, aligned (at zero shift, as dippas anonymize and the "
            "viewer report it) unless --search-shifts; the verdict is 'match' when PCE reaches "
            "the threshold. Photo and fingerprint must have the same size (or use --crop); "
            "--region scores one region of both."
        ),
    )
    p.add_argument("photo", type=Path, metavar="PHOTO")
    p.add_argument("--fingerprint", type=Path, required=True, metavar="K.npz")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--crop", type=int_between(1), default=None, metavar="N",
                       help="centre-crop both the photo and the fingerprint to N×N")
    where.add_argument("--region", default=None, metavar="Y,X,H,W",
                       help="score this region of the photo against the same region of the "
                       "fingerprint (as dippas anonymize --region takes it)")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--aligned", action="store_true",
                      help="PCE at zero shift only: the photo and the fingerprint are aligned "
                      "(the default, the PCE dippas anonymize reports)")
    kind.add_argument("--search-shifts", action="store_true",
                      help="PCE of the highest peak over every shift (a photo that may be "
                      "shifted against the fingerprint, as the evaluation scores; on a "
                      "no-match photo it runs higher than the aligned PCE)")
    p.add_argument("--threshold", type=finite_float, default=PCE_THRESHOLD,
                   help=f"PCE decision threshold (default {PCE_THRESHOLD:g})")
    p.add_argument("--json", action="store_true", help="print one JSON line")
    p.set_defaults(func=_run)
