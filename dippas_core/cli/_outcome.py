"""What a command says happened: its exit status and the name of what it wrote.

A script reads two things: ``$?`` and the file name.  Both tell the truth:

=====  ==========================================================================================
 0     ``OUT`` is written and is a complete anonymization at tau (every tile, every block from
       outputs that reached the threshold asked for)
 2     nothing was done: bad input or arguments, or a failure (the message says how to go on)
 3     **below tau**: ``OUT-below-tau-….png`` is written, but some tile never reached tau (its
       pixels are the mean of its best outputs) or no snapshot reached the assembly's tau (the
       best ones were used); ``--accept-below-tau`` writes ``OUT`` and exits 0 instead
 4     **partial**: ``OUT-partial.png`` is written, some tiles of the photo are not anonymized
       (they keep the original pixels); the same command resumes the run
 130   interrupted (Ctrl-C): nothing was anonymized and nothing written (a run folder kept says
       how to go on); a one-tile run assembled from the snapshots it had kept writes ``OUT``
=====  ==========================================================================================

The published sidecar says the same in its flags ``partial`` and ``below_tau``
(:meth:`dippas_core.report.AnonymizationReport.sidecar`).  When a run completes, the
``OUT-partial`` files an earlier, stopped attempt wrote beside ``OUT`` are removed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "EXIT_STATUSES",
    "EXIT_BELOW_TAU",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "exit_status",
    "is_below_tau",
    "output_name",
    "remove_stale_partials",
]

EXIT_OK = 0
EXIT_BELOW_TAU = 3
EXIT_PARTIAL = 4
EXIT_INTERRUPTED = 130

#: The exit statuses in a command's --help (its epilog).
EXIT_STATUSES = """\
exit status:
  0    OUT is written and is a complete anonymization at tau
  2    nothing was done: bad input or arguments, or a failure (the message says how to go on)
  3    below tau: OUT-below-tau-....png is written; some tile never reached tau (its pixels are
       the mean of its best outputs) or no snapshot reached the assembly's tau
       (--accept-below-tau: OUT is written and the status is 0; its sidecar says below_tau)
  4    partial: OUT-partial.png is written; some tiles keep the photo's pixels (the same command
       resumes the run; when it completes, the OUT-partial files are removed)
  130  interrupted (Ctrl-C) before anything was anonymized: nothing is written
       (a one-tile run stopped after reaching tau writes OUT from the snapshots it kept)
The published sidecar OUT.json says "partial" and "below_tau" (true or false)."""

#: The suffixes of results that are not what was asked for (``OUT-partial.png`` …).
PARTIAL = "-partial"
BELOW_TAU = "-below-tau"


def is_below_tau(report: Mapping[str, Any]) -> bool:
    """Whether the image is short of tau (:func:`dippas_core.report.short_of_tau`)."""
    from ..report import short_of_tau

    return short_of_tau(report)


def output_name(out: Path, report: Mapping[str, Any], *, accept_below_tau: bool = False) -> Path:
    """``OUT``, or ``OUT-partial`` / ``OUT-below-tau-t…`` when the image is not what was asked
    (``accept_below_tau``: a result short of tau is taken as ``OUT``)."""
    stem = out.stem
    if report.get("partial"):
        stem += PARTIAL
    if is_below_tau(report) and not accept_below_tau:
        short = [d["tile"] for d in report.get("below_tau") or [] if "tile" in d]
        listed = ",".join(f"t{i}" for i in short[:6]) + (
            f"+{len(short) - 6}" if len(short) > 6 else ""
        )
        stem += BELOW_TAU + (f"-{listed}" if listed else "")
    return out.with_name(stem + out.suffix)


def exit_status(report: Mapping[str, Any], *, accept_below_tau: bool = False) -> int:
    """The status of a written image (see the module docstring): partial first, then short of
    tau, else 0."""
    if report.get("partial"):
        return EXIT_PARTIAL
    if is_below_tau(report) and not accept_below_tau:
        return EXIT_BELOW_TAU
    return EXIT_OK


def remove_stale_partials(out: Path) -> list[Path]:
    """Remove the ``OUT-partial…`` images and sidecars an earlier, stopped attempt wrote beside
    ``out`` (only images a dippas command published: a user's own files stay); their paths."""
    from ..report import is_published_image

    removed = []
    for image in sorted(out.parent.glob(f"{out.stem}{PARTIAL}*{out.suffix}")):
        if not is_published_image(image):
            continue
        for path in (image, image.with_suffix(".json")):
            if path.is_file():
                path.unlink()
                removed.append(path)
    return removed
