"""``dippas evaluate``: score anonymization methods on real cameras (ROC/AUC, PSNR, C, edges).

Example::

    dippas evaluate --preset cpu --data ../shared/data/prnu-python-testdata --out eval-out
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ._checks import finite_float, int_between, seed

__all__ = ["build_config", "register"]


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _sizes(text: str) -> list[int]:
    """Comma-separated crop sizes, each a whole number >= 16."""
    sizes = [int_between(16, 1 << 16)(t) for t in _csv_list(text)]
    if not sizes:
        raise argparse.ArgumentTypeError(f"expected sizes such as 128,256, got {text!r}")
    return sizes


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..evaluation import EVAL_PRESETS, METHODS
    from ._options import AVERAGED, BLOCK

    p = subparsers.add_parser(
        "evaluate",
        help="compare anonymization methods on real cameras (AUC, PSNR, fidelity, trade-off C)",
        description=(
            "Estimate each camera's fingerprint from DATA/ff-jpg, crop the photos of DATA/nat-jpg, "
            "run every method and score every output against every fingerprint. Writes "
            "scores.csv, summary.csv/json, params.json, roc_<size>.png and auc_vs_psnr_<size>.png "
            "into OUT (re-running the same command resumes)."
        ),
    )
    p.add_argument("--data", type=Path, default=None,
                   help="folder with ff-jpg/ and nat-jpg/ (not needed with --report-only)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--preset", choices=tuple(EVAL_PRESETS), default="cpu",
                   help="settings (default cpu)")
    p.add_argument(
        "--methods",
        type=_csv_list,
        default=None,
        help=f"comma-separated subset of: {', '.join(METHODS)}",
    )
    p.add_argument(
        "--sizes",
        type=_sizes,
        default=None,
        help="crop sizes, e.g. 128,256",
    )
    p.add_argument("--crops-per-photo", type=int_between(1), default=None)
    p.add_argument("--max-photos", type=int_between(1), default=None)
    p.add_argument("--photos-per-camera", type=int_between(1), default=None)
    p.add_argument("--seed", type=seed, default=None)
    p.add_argument("--max-iter", type=int_between(1), default=None, help="cap on DIP iterations")
    # (--block and --top-l: the names older versions took)
    p.add_argument("-B", "--block", dest="B", type=BLOCK, default=None,
                   help="DIPPAS assembly block size (default: the preset's)")
    p.add_argument("-L", "--top-l", dest="L", type=AVERAGED, default=None,
                   help="DIPPAS snapshots averaged per block (default: the preset's)")
    p.add_argument("--tau", type=finite_float, default=None,
                   help="DIPPAS assembly threshold, dB (default: the preset's)")
    p.add_argument(
        "--reference", choices=("same", "split"), default=None,
        help="same: aware methods get the detector's fingerprint (the paper); split: they get one "
             "from the other half of the flat fields",
    )
    p.add_argument("--attacker", type=Path, default=None, metavar="MODEL",
                   help="also score every output with a learned attacker (dippas train-attacker)")
    p.add_argument("--save-outputs", action="store_true",
                   help="keep every output as OUT/outputs/METHOD/CROP.png (lossless)")
    p.add_argument("--no-pce", action="store_true", help="skip PCE")
    p.add_argument("--fresh", action="store_true", help="ignore earlier results in OUT")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: summarise and plot what OUT/scores.csv holds (with "
                        "--attacker: score the outputs a --save-outputs run kept)")
    p.add_argument("--merge-from", type=_csv_list, default=None, metavar="DIR,DIR",
                   help="with --report-only: first merge the scores.csv of these run folders")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace):
    """The :class:`~dippas_core.evaluation.EvalConfig` the options describe: the evaluation
    preset (which names the anonymizer's preset) and what the options change."""
    from ..evaluation import EvalConfig

    changes: dict = {}
    if args.methods is not None:
        changes["methods"] = tuple(args.methods)
    if args.sizes is not None:
        changes["crop_sizes"] = tuple(args.sizes)
    # (B, L, tau and max_iter change the DIPPAS methods' AnonymizeConfig)
    for key in ("crops_per_photo", "max_photos", "photos_per_camera", "seed", "B", "L", "tau",
                "max_iter", "reference"):
        if getattr(args, key) is not None:
            changes[key] = getattr(args, key)
    if args.no_pce:
        changes["pce"] = False
    return EvalConfig.preset(args.preset, **changes)


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..evaluation import evaluate, merge_scores, score_saved_outputs
    from ..targets import check_targets

    if args.out.exists() and not args.out.is_dir():
        raise InputError(f"--out {args.out} is a file; name the evaluation's folder")
    check_targets({}, new_runs=[args.out])  # never inside a run's own folders
    if args.data is None and not args.report_only:
        raise InputError("--data DIR is required (a folder with ff-jpg/ and nat-jpg/)")
    config = build_config(args)

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, flush=True)

    if args.merge_from:
        if not args.report_only:
            raise InputError("--merge-from needs --report-only")
        merge_scores(args.merge_from, args.out)
    if args.report_only and args.attacker:  # score the outputs a finished run kept
        summary = score_saved_outputs(args.out, args.attacker, log=log)
    else:
        summary = evaluate(
            args.data, args.out, config, resume=not args.fresh, log=log,
            compute=not args.report_only, attacker=args.attacker,
            save_outputs=args.save_outputs,
        )
    cols = (
        "size",
        "method",
        "n_crops",
        "mean_psnr",
        "auc_ncc",
        "auc_ncc_edges",
        "auc_pce",
        "C",
        "ncc_cut_vs_untouched",
        "acc_ncc",
        *(("auc_attacker", "acc_attacker") if args.attacker else ()),
    )
    _print_table(summary, cols)
    # beside the PSNR, how close the outputs look (dippas_core.fidelity; docs/method.md#fidelity)
    print()
    _print_table(summary, ("size", "method", "n_fidelity", "mean_psnr", "mean_ssim",
                           "worst_max_abs", "mean_share_off", "worst_colour_shift",
                           "worst_seam_ratio", "n_bars_failed"))
    print(f"results in {args.out}", file=sys.stderr)
    return 0


def _print_table(summary: list[dict[str, Any]], cols: tuple[str, ...]) -> None:
    """The summary's ``cols`` as right-aligned columns (at least 12 characters wide)."""
    widths = [max(12, len(c)) for c in cols]
    print("  ".join(f"{c:>{w}s}" for c, w in zip(cols, widths, strict=True)))
    for s in summary:
        print("  ".join(
            f"{s[c]:{w}.4f}" if isinstance(s[c], float) else f"{s[c]!s:>{w}s}"
            for c, w in zip(cols, widths, strict=True)
        ))
