"""``dippas anonymize``: the whole job on one photo (inversion, assembly, image + JSON report)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._checks import MAX_THREADS, int_between, positive_float
from ._options import (
    add_assembly_options,
    add_dip_arguments,
    add_tiling_options,
    config_from_args,
)
from ._outcome import (
    EXIT_BELOW_TAU,
    EXIT_INTERRUPTED,
    EXIT_PARTIAL,
    EXIT_STATUSES,
    exit_status,
    is_below_tau,
    output_name,
    remove_stale_partials,
)
from .assemble import (
    add_output_arguments,
    check_output,
    earlier_images,
    image_outputs,
    say_fidelity,
    warn_lowered_tau,
    write_outputs,
)
from .invert import add_input_arguments

if TYPE_CHECKING:
    from ..job import PhotoJob

__all__ = [
    "build_config",
    "keep_temporary_run",
    "print_summary",
    "register",
    "run_anonymize",
]


def add_assembly_arguments(p: argparse.ArgumentParser) -> None:
    g = add_assembly_options(p)
    g.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="keep the run here (re-assemble a one-tile run later; resume a photo run: the "
        "same command goes on from the first unfinished tile)",
    )
    t = p.add_argument_group("whole photos")
    add_tiling_options(t)
    t.add_argument(
        "--region",
        default=None,
        metavar="Y,X,H,W",
        help="anonymize only this region (written alone; the rest of the photo keeps the "
        "camera's trace)",
    )
    t.add_argument(
        "--keep-runs",
        action="store_true",
        help="keep every tile's snapshots in the run folder (to re-assemble with other B, L, tau)",
    )
    t.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="run the tiles as Dask tasks on this scheduler (tcp://host:8786; the run folder must "
        "be on a file system the workers share); default: a local cluster when more than one "
        "worker helps, else this process",
    )
    t.add_argument(
        "--workers",
        type=int_between(1, MAX_THREADS),
        default=None,
        metavar="N",
        help="run the tiles on a local cluster of N worker processes (1: in this process; at "
        "most the cores, and no more than the tiles to run are started)",
    )
    t.add_argument(
        "--report",
        type=Path,
        default=None,
        metavar="PATH",
        help="write the forensic record (tile plan, per-tile stats, NCC/PCE, block-NCC map, the "
        "input's name and SHA-256) here; it never travels with the image",
    )


def run_anonymize(
    job: PhotoJob,
    *,
    run_dir: Path | None,
    force: bool,
    quiet: bool = False,
    estimate: Any = None,
) -> tuple[Any, bool]:
    """:func:`~dippas_core.pipeline.run_job` with a progress line; first Ctrl-C stops early.

    Returns the ``AnonymizeResult`` and whether the inversion really stopped because of the
    Ctrl-C (not merely whether one was pressed, perhaps after the last iteration).  Tiles on a
    Dask cluster stream no steps: there is a line per tile only.
    """
    from ..cancel import CancelToken
    from ..pipeline import run_job
    from ..progress import PhotoProgress
    from ._progress import ProgressLine, TileLines, sigint_cancels

    cancel = CancelToken()
    resumed: list[int] = []
    said: list[bool] = []
    if job.tiled:
        predicted = dict(estimate.tile_seconds) if getattr(estimate, "tile_seconds", None) else {}
        lines: Any = TileLines(PhotoProgress(len(job.plan), predicted))
    else:
        lines = ProgressLine(job.config.dip.max_iter)
    follow_steps = not quiet and not job.execution.on_cluster

    def on_tile_done(tile: Any, stats: dict) -> None:
        if stats.get("resumed"):  # read back: they all come before the first tile runs
            resumed.append(tile.index)
            if job.tiled:
                lines.progress.resume(tile.index)
        elif job.tiled and not quiet:
            lines.done(tile, stats)

    def say_resumed() -> None:
        # said once the run folder took the resume (a refused one never says "resuming")
        if resumed and not said:
            said.append(True)
            print(f"resuming: {len(resumed)} tile(s) already finished in {run_dir}",
                  file=sys.stderr)

    def on_tile(tile: Any, plan: Any) -> None:
        say_resumed()

    with sigint_cancels(cancel):
        try:
            result = run_job(
                job,
                run_dir=run_dir,
                cancel=cancel,
                on_step=lines.step if job.tiled and follow_steps else
                (lines.update if follow_steps else None),
                on_tile=on_tile,
                on_tile_done=on_tile_done,
                force=force,
                estimate=estimate,
            )
        finally:
            if not quiet:
                lines.close()
    say_resumed()  # (every tile was already finished)
    return result, result.report["inversion"]["stop_reason"] == "cancelled"


def print_summary(report: dict, out: Path, stream: Any = None) -> None:
    """A few lines a person reads: PSNR and the fidelity measures (and the bars they break), NCC
    and PCE before/after, snapshots, time."""
    s = stream if stream is not None else sys.stdout
    inv, asm = report["inversion"], report["assembly"]
    what = (
        "PARTIAL image (some tiles not anonymized)" if report.get("partial")
        else "image BELOW TAU (not every tile reached it)" if is_below_tau(report)
        else "anonymized image"
    )
    print(f"{what}: {out}  (published settings: {out.with_suffix('.json')})", file=s)
    print(f"mode: {report['mode']} (reference: {report['reference']})", file=s)
    print(f"PSNR vs original: {report['psnr']:.2f} dB", file=s)
    say_fidelity(report, s)
    print(
        f"NCC with the fingerprint: {report['ncc']['before']:.4f} -> {report['ncc']['after']:.4f}",
        file=s,
    )
    print(
        f"PCE ({report['pce']['kind']}): {report['pce']['before']:.1f} -> "
        f"{report['pce']['after']:.1f} (decision level 60)",
        file=s,
    )
    g = inv.get("gamma", {})
    if g.get("recording_iterations"):
        star = g.get("median_star")
        print(
            f"gamma while recording: median {g['median']:.5f} (least squares "
            f"{star if star is not None else float('nan'):.5f}), at 0 in "
            f"{100 * g['at_bound_share']:.0f} % of {g['recording_iterations']} iterations"
            + (f" (although gamma* > 0 in {100 * g['dead_share']:.0f} %)"
               if g.get("dead_share") is not None else ""),
            file=s,
        )
    best = inv.get("best_psnr")
    best_text = f"{best:.2f} dB" if best is not None else "n/a"
    tiles = report.get("tiles") or [{"done": True}]
    n_tiles, n_done = len(tiles), sum(bool(t.get("done", True)) for t in tiles)
    print(
        f"inversion: {n_done}/{n_tiles} tile(s), {inv['n_iterations']} iterations "
        f"({inv['stop_reason']}), lowest best PSNR of a tile {best_text}, "
        f"{inv['n_snapshots']} snapshots; assembly B={asm.get('B')} L={asm.get('L')}",
        file=s,
    )
    for short in report.get("below_tau") or []:
        print(
            f"tile {short['tile']} never reached the recording threshold: best "
            f"{short['best_psnr']:.2f} dB, {short['short_db']:.2f} dB short (assembled from its "
            "best outputs)",
            file=s,
        )
    if report.get("partial"):
        missing = report["tiles_not_anonymized"]
        shown = ", ".join(map(str, missing[:8])) + (", ..." if len(missing) > 8 else "")
        print(
            f"PARTIAL: {len(missing)} of {n_tiles} tiles are not anonymized (original pixels: "
            f"{shown}); run the same command again to resume",
            file=s,
        )
    if report.get("region"):
        r = report["region"]
        print(
            f"region y={r['y']}, x={r['x']}, {r['h']}×{r['w']}: the rest of the photo still "
            "carries the camera's trace",
            file=s,
        )
    t = report["timing_s"]
    cost = report.get("cost")
    est = f" (estimated {cost['estimate_s']:.0f} s)" if cost else ""
    print(
        f"time: {t['total']:.1f} s{est}, inversion {t['inversion']:.1f} s, on "
        f"{report['device']}, seed {report['seed']}",
        file=s,
    )


def _source(path: Path) -> dict:
    """The source file's name and SHA-256, for the forensic record (never the published sidecar)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return {"file": path.name, "sha256": digest.hexdigest()}


def _planned_shape(args: argparse.Namespace, region: Any) -> tuple[int, int]:
    """The size of what will be anonymized, from the photo's header (nothing decoded): the
    photo, its ``--crop`` and ``--region`` (checked here; the crop again once read)."""
    from ..io import image_size
    from ..tiling import check_region

    h, w = image_size(args.photo)
    if args.crop is not None:
        h, w = min(args.crop, h), min(args.crop, w)
    if region is not None:
        h, w = check_region(region, (h, w))[2:]
    return h, w


def _check_outputs(
    args: argparse.Namespace, inputs: dict, plan: Any, run_dir: Path | None
) -> None:
    """Every file the command will write, checked before any work (``dippas_core.targets``):
    OUT and its sidecar, the partial image a stopped photo run writes instead, ``--report``, and
    the run folder (a photo run there is resumed, or started over with ``--force``)."""
    from ..report import FORENSIC_RECORD, is_forensic_record
    from ..run import check_run_target, is_photo_run_folder

    others: dict[str, Path | None] = {}
    if len(plan) > 1:
        others.update(image_outputs(output_name(args.out, {"partial": True}),
                                    "the partial image of --out"))
    report = args.report
    if report is not None and report.is_dir():
        report = report / FORENSIC_RECORD  # where the record of a folder goes
    others["--report"] = report
    earlier = earlier_images(*(p for p in others.values() if p is not None))
    source = _source(args.photo)["sha256"] if report is not None and report.is_file() else None

    def replaceable(path: Path) -> bool:  # what a resume of this photo replaces
        return earlier(path) or (path == report and is_forensic_record(path, source))

    check_output(args.out, args.force, inputs, run_dir=run_dir, others=others,
                 replaceable=replaceable)
    if run_dir is not None and not (len(plan) > 1 and is_photo_run_folder(run_dir)):
        check_run_target(run_dir, args.force)  # a photo run there is resumed (or forced)


def keep_temporary_run(folder: Path) -> Path:
    """Rename a temporary run so that :func:`~dippas_core.run.clean_stale_temporary_runs` leaves
    it alone (the user is told where it is); return its new path."""
    import os

    kept = folder.with_name(folder.name.replace("dippas-run-", "dippas-kept-run-", 1))
    try:
        os.rename(folder, kept)
    except OSError:
        return folder
    return kept


def build_config(args: argparse.Namespace) -> Any:
    """The :class:`~dippas_core.config.AnonymizeConfig` the options describe (the preset and
    what the options change)."""
    return config_from_args(
        args, tile_size=args.tile, overlap=args.overlap, keep_tile_runs=args.keep_runs or None
    )


def _prepare(args: argparse.Namespace) -> tuple[Any, Path | None]:
    """Every argument and every output checked, the photo read and the job prepared (before
    the first iteration); the plan and a resume said.

    Returns the job and its run folder (a photo run's: beside OUT unless ``--run-dir``; None for
    one tile without ``--run-dir``).
    """
    from ..execution import check_execution
    from ..job import prepare
    from ..tiling import check_region, parse_region, plan_tiles
    from .invert import load_photo_and_fingerprint, warn_without_trace

    region = parse_region(args.region) if args.region is not None else None
    config = build_config(args)  # checked, before the photo is even read
    check_execution(args.scheduler, args.workers)  # a scheduler that does not answer, too
    # the plan from the photo's header: every output is checked before anything is read
    planned = plan_tiles(_planned_shape(args, region), config.tile_size, config.overlap)
    run_dir = args.run_dir
    if run_dir is None and len(planned) > 1:
        # a photo run is resumable: it lives beside OUT until the photo is done
        run_dir = args.out.with_name(args.out.stem + ".dippas-run")
    _check_outputs(args, _inputs(args), planned, run_dir)
    photo, fingerprint = load_photo_and_fingerprint(args)
    if region is not None:
        region = check_region(region, photo.shape)
    warn_without_trace("anonymize", photo, fingerprint, config.sigma, region)
    job = prepare(
        photo, fingerprint, config, region=region, scheduler=args.scheduler,
        workers=args.workers, run_dir=None if args.force else run_dir,
    )
    if not job.tiled:
        run_dir = args.run_dir
    _say_plan(job, run_dir)
    return job, run_dir


def _inputs(args: argparse.Namespace) -> dict[str, Path | None]:
    """The files the command reads (never written over)."""
    return {"PHOTO": args.photo, "--fingerprint": args.fingerprint}


def _say_plan(job: Any, run_dir: Path | None) -> None:
    plan = job.plan
    print(f"tile plan: {plan.describe()}", file=sys.stderr)
    if job.tiled:
        for t in plan.tiles:
            print(f"  tile {t.index}: y={t.y} x={t.x} {t.h}×{t.w}", file=sys.stderr)
        print(f"run folder (resumable): {run_dir}", file=sys.stderr)



def _say_cost(job: Any) -> Any:
    """The estimate, timed now, and where the tiles run; returns the estimate."""
    from ..cost import duration_text

    estimate = job.estimate()
    print(f"estimate: {estimate.text}", file=sys.stderr)
    execution = job.execution
    if job.tiled:
        share = (
            f"; ≈ {duration_text(estimate.seconds / execution.workers)} with "
            f"{execution.workers} workers side by side"
            if execution.workers > 1
            else ""
        )
        print(f"tiles run: {execution.kind} ({execution.reason}){share}", file=sys.stderr)
    return estimate


def _run(args: argparse.Namespace) -> int:
    import shutil

    from ..errors import DippasError, InputError
    from ..run import PhotoRun, remove_run_folder, temporary_run_folder

    job, run_dir = _prepare(args)
    estimate = _say_cost(job)
    # a temporary run is kept until the outputs are written: a late failure loses no work
    temporary = run_dir is None
    if temporary:
        run_dir = temporary_run_folder()
    try:
        result, interrupted = run_anonymize(
            job, run_dir=run_dir, force=args.force, quiet=args.quiet, estimate=estimate
        )
    except (OSError, DippasError) as exc:
        if temporary:
            shutil.rmtree(run_dir, ignore_errors=True)
        if temporary or not job.tiled or isinstance(exc, InputError):
            raise
        # a photo run failed midway (a device, a full disk): what it finished stays
        n = PhotoRun.count_done(run_dir)
        raise DippasError(
            f"{exc}; the run folder {run_dir} keeps its {n} finished tile(s): run the same "
            "command again to resume from them"
        ) from exc
    except BaseException:
        if temporary:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    report = result.report.with_(crop=args.crop, source=_source(args.photo))
    if temporary:
        report = report.with_(run_dir=None)
    partial = bool(report.get("partial"))
    if partial and len(report["tiles_not_anonymized"]) == len(job.plan):
        # nothing was anonymized: no "-partial" image that is the original photo bit for bit
        print(
            f"dippas anonymize: interrupted before any tile was finished: nothing was written; "
            f"the same command starts the run in {run_dir} again",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    out = _write(args, job, result, report, run_dir, temporary)
    if not partial:  # the run is complete: an earlier attempt's "-partial" files are stale
        for stale in remove_stale_partials(args.out):
            print(f"removed {stale.name} (a stopped attempt's partial result)", file=sys.stderr)
        if args.run_dir is None and job.tiled and not args.keep_runs and result.run_dir:
            remove_run_folder(result.run_dir)  # what the run wrote, by name: a user's files stay
    if interrupted and not partial:
        print("dippas anonymize: interrupted; the image was assembled from the snapshots kept "
              "so far", file=sys.stderr)
        return EXIT_INTERRUPTED
    return _say_outcome(args, report, out)


def _write(
    args: argparse.Namespace, job: Any, result: Any, report: Any, run_dir: Path,
    temporary: bool,
) -> Path:
    """The image and its sidecar (and the forensic record), under the name that says what the
    image is; a summary.  Returns that name."""
    import shutil

    import numpy as np

    from ..errors import DippasError
    from ..report import write_forensic_record

    config = job.config
    bits = args.bits or (16 if job.photo.dtype == np.uint16 else 8)
    out = output_name(args.out, report, accept_below_tau=args.accept_below_tau)
    try:
        if out != args.out:  # named after what it is: an earlier image of that name is replaced
            check_output(out, args.force, _inputs(args), replaceable=earlier_images(out))
        if args.report is not None:
            write_forensic_record(report, args.report, result.maps)
        # the sidecar beside the image is the report's published part: nothing of the source;
        # the full record goes into a run folder that is kept
        kept_run = None if temporary or result.run_dir is None else result.run_dir
        write_outputs(out, result.image, bits, report, result.maps, forensic=kept_run)
    except (OSError, DippasError) as exc:
        if temporary:  # out of the stale-temporary pattern: the next start keeps it
            run_dir = keep_temporary_run(Path(run_dir))
        how = (  # a photo run is resumed by the same command (its tiles are read back)
            "run the same command again to write the image (its finished tiles are read back, "
            "not redone)" if job.tiled else
            f"assemble it with dippas assemble {run_dir} -B {config.assembly.B} "
            f"-L {config.assembly.L} --out OUT.png"
        )
        raise DippasError(f"{exc}; the run is kept in {run_dir}: {how}") from exc
    if temporary:
        shutil.rmtree(run_dir, ignore_errors=True)
    if not job.tiled:
        warn_lowered_tau(config.assembly_tau, report["assembly"])
    print_summary(report, out)
    return out


def _say_outcome(args: argparse.Namespace, report: Any, out: Path) -> int:
    """The exit status (:func:`~dippas_core.cli._outcome.exit_status`) and what it means."""
    status = exit_status(report, accept_below_tau=args.accept_below_tau)
    if status == EXIT_PARTIAL:
        print(f"dippas anonymize: partial (exit status {status}): the finished tiles were "
              f"stitched into {out}, the others keep the photo's pixels; resume with the same "
              "command", file=sys.stderr)
    elif status == EXIT_BELOW_TAU:
        print(f"dippas anonymize: below tau (exit status {status}): {out} is not anonymized to "
              "tau everywhere; raise --max-iter or --lr, or lower --record-psnr / --tau, and run "
              "again (--accept-below-tau takes such a result as OUT, exit status 0)",
              file=sys.stderr)
    elif args.accept_below_tau and is_below_tau(report):
        print(f"dippas anonymize: below tau, accepted (--accept-below-tau): {out}; its sidecar "
              "says below_tau", file=sys.stderr)
    return status


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "anonymize",
        help="remove the camera fingerprint from a photo (DIP inversion + assembly)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Anonymize PHOTO with DIPPAS: PRNU-aware with --fingerprint, PRNU-blind without.\n"
            "Writes OUT (no metadata from PHOTO) and the published sidecar OUT.json (PSNR, the\n"
            "parameters, seed, counts, versions, device, the flags partial and below_tau:\n"
            "nothing about the source camera).  NCC/PCE before and after, the block-NCC maps,\n"
            "the tiles and the source file's name and SHA-256 go to the private forensic record\n"
            "(--report, or forensic-record.json in a kept run folder), never beside OUT.\n"
            "Before the work starts, a PHOTO (or --region) with no detectable trace of the\n"
            "camera (aligned PCE < 60) is said so.  Ctrl-C stops the inversion: a whole photo\n"
            "keeps its finished tiles (OUT-partial.png; the same command resumes), one tile is\n"
            "assembled from the snapshots kept so far."
        ),
        epilog=EXIT_STATUSES,
    )
    add_input_arguments(p, blind_flag=False)
    add_output_arguments(p)
    add_assembly_arguments(p)
    p.add_argument(
        "--accept-below-tau",
        action="store_true",
        help="take a result short of tau as OUT and exit 0 (its sidecar still says below_tau); "
        "without it such a result is OUT-below-tau-....png and the exit status is 3",
    )
    p.add_argument(
        "--sigma", type=positive_float, default=5.0, help="residual noise level (default 5)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress line")
    add_dip_arguments(p, tiles_per_step=True)
    p.set_defaults(func=_run)
