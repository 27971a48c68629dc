"""``dippas train-attacker``: train the learned camera-attribution attacker on a camera dataset.

Example::

    dippas train-attacker ../shared/data/prnu-python-testdata --out attacker.pt
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ._checks import int_between, positive_float, seed, torch_threads

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``dippas train-attacker``."""
    from ..attacker import AttackerConfig

    d = AttackerConfig()
    p = subparsers.add_parser(
        "train-attacker",
        help="train a ResNet camera classifier on residual patches (a second, learned attacker)",
        description=(
            "Train on DATA/ff-jpg (flat fields; the last of each camera validates) and the "
            "natural photos of DATA/nat-jpg that the cpu evaluation preset does not score; then "
            "report accuracy and AUC on those held-out photos. Writes MODEL and MODEL.json "
            "(settings, split, data hash, history and the held-out figures)."
        ),
    )
    p.add_argument("data", type=Path, metavar="DATA", help="folder with ff-jpg/ and nat-jpg/")
    p.add_argument("--out", type=Path, required=True, metavar="MODEL", help="model file to write")
    p.add_argument("--force", action="store_true", help="replace MODEL and MODEL.json")
    p.add_argument("--max-minutes", type=positive_float, default=d.max_minutes,
                   help=f"wall-clock bound of the training (default {d.max_minutes:g})")
    p.add_argument("--epochs", type=_bounded("max_epochs"), default=d.max_epochs,
                   help="at most this many epochs")
    p.add_argument("--patch", type=_bounded("patch"), default=d.patch, help="patch size (pixels)")
    p.add_argument("--stride", type=_bounded("stride"), default=None,
                   help="training patch step (default: patch)")
    p.add_argument("--score-stride", type=_bounded("score_stride"), default=None,
                   help="patch step when scoring (default: patch/2)")
    p.add_argument("--region", type=_bounded("region"), default=d.region,
                   help="centred square of each shot to use (0: whole shot)")
    p.add_argument("--width", type=_bounded("width"), default=d.width,
                   help="channels of the first stage")
    p.add_argument("--threads", type=torch_threads, default=d.torch_threads,
                   help="torch threads (at most the cores of this machine)")
    p.add_argument("--seed", type=seed, default=d.seed)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def _bounded(name: str):
    """The command-line type of an attacker setting: a whole number within its bounds."""
    from ..attacker.config import LIMITS

    return int_between(*LIMITS[name])


def run(args: argparse.Namespace) -> int:
    from ..atomic import atomic_write_text
    from ..attacker import AttackerConfig, held_out_report, split_photos, train_attacker
    from ..targets import check_targets

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    config = AttackerConfig(
        patch=args.patch,
        stride=args.stride if args.stride is not None else args.patch,
        score_stride=args.score_stride if args.score_stride is not None else max(
            1, args.patch // 2),
        region=args.region,
        width=args.width,
        max_epochs=args.epochs,
        max_minutes=args.max_minutes,
        seed=args.seed,
        torch_threads=args.threads,
    )
    split = split_photos(args.data, val_flat_fields=config.val_flat_fields)
    sidecar = args.out.with_name(args.out.name + ".json")
    # both files, before the training: never over a training photo, each other or a run's file
    check_targets(
        {"--out": args.out, "the sidecar of --out": sidecar},
        {"DATA": [*split.train, *split.validation, *split.test]},
        force=args.force,
    )
    model = train_attacker(args.data, config, split=split, log=log)
    # non-overlapping patches for the held-out figures (the scoring stride only adds overlap)
    report = held_out_report(model, split.test, stride=config.patch, log=log)
    model.meta["held_out"] = report
    model.save(args.out)
    doc = {"cameras": model.cameras, "config": config.to_dict(), **model.meta}
    atomic_write_text(sidecar, json.dumps(doc, indent=2) + "\n")
    chance = report["patch"]["chance_accuracy"]
    for level in ("patch", "photo"):
        m = report[level]
        print(f"held-out {level:5s} level: accuracy {m['accuracy']:.3f} (chance {chance:.3f}), "
              f"AUC {m['auc']:.3f} (chance 0.5), n={m['n']}")
    print(f"model in {args.out}, details in {sidecar}", file=sys.stderr)
    return 0
