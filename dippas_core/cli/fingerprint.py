"""``dippas fingerprint``: estimate a camera fingerprint from flat-field images (method §2)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._checks import int_between, positive_float

__all__ = ["register"]



def _inputs(items: list[Path]) -> list[Path]:
    """Expand folders into their image files (sorted); keep files as given."""
    from ..errors import InputError
    from ..io import find_images

    files: list[Path] = []
    for item in items:
        if item.is_dir():
            found = find_images(item)
            if not found:
                raise InputError(f"{item}: no .jpg/.png/.tif images in this folder")
            files.extend(found)
        elif item.exists():
            files.append(item)
        else:
            raise InputError(f"{item}: no such file or folder")
    return files


def _run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..fingerprint import estimate_fingerprint
    from ..targets import check_targets

    if args.out.suffix.lower() != ".npz":
        raise InputError(f"--out {args.out}: a fingerprint file must end in .npz")
    files = _inputs(args.inputs)
    check_targets({"--out": args.out}, {"FF_DIR|FILE": files}, force=args.force)
    camera = args.camera if args.camera is not None else _common_label(files)
    fp = estimate_fingerprint(files, sigma=args.sigma, crop=args.crop, camera=camera)
    fp.save(args.out)
    h, w = fp.shape
    print(f"fingerprint of {camera or 'unnamed camera'}: {h}×{w} from {fp.n_images} images "
          f"-> {args.out}", file=sys.stdout)
    return 0


def _common_label(files: list[Path]) -> str:
    """Device label shared by all file names (the part before the last ``_``), else ''."""
    labels = {f.stem.rsplit("_", 1)[0] for f in files if "_" in f.stem}
    return labels.pop() if len(labels) == 1 and all("_" in f.stem for f in files) else ""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``dippas fingerprint``."""
    p = subparsers.add_parser(
        "fingerprint",
        help="estimate a camera fingerprint from flat-field images",
        description=(
            "Maximum-likelihood PRNU fingerprint of one camera from its flat-field shots (same "
            "size and orientation; pixels as stored, EXIF orientation ignored). Writes one .npz "
            "with K and its metadata."
        ),
    )
    p.add_argument("inputs", nargs="+", type=Path, metavar="FF_DIR|FILE",
                   help="a folder of flat-field images, or image files")
    p.add_argument("--out", type=Path, required=True, metavar="K.npz", help="fingerprint file")
    p.add_argument("--crop", type=int_between(1), default=None, metavar="N",
                   help="centre-crop every image to N×N first")
    p.add_argument("--camera", default=None, metavar="NAME",
                   help="camera label to store (default: the common file-name prefix)")
    p.add_argument("--sigma", type=positive_float, default=5.0,
                   help="residual noise level (default 5)")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    p.set_defaults(func=_run)
