"""The batch's ledger: ``summary.csv``/``summary.json`` and the text a terminal shows."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

from ..atomic import atomic_write_text
from ..fidelity import bar_names
from .settings import STATUS_FAILED, SUMMARY_FIELDS, ImageRecord

__all__ = ["format_progress", "format_table", "write_summary"]


def format_progress(done: int, total: int, record: ImageRecord, counts: dict[str, int]) -> str:
    """One line saying how far the batch is and what happened to ``record``'s image."""
    detail = (f"psnr {record.psnr:.2f} dB" if record.psnr is not None else "") + (
        f"  ssim {record.ssim:.4f}  max |Δ| {_number(record.max_abs, '.0f')}  colour shift "
        f"{_number(record.colour_shift, '.2f')}  seam {_number(record.seam_ratio, '.2f')}  "
        f"{_bars(record.bars_failed, 'fidelity bars met', 'bars broken: ')}"
        if record.ssim is not None
        else ""
    ) + (
        f"  ncc {record.ncc_before:.4f} -> {record.ncc_after:.4f}"
        if record.ncc_before is not None and record.ncc_after is not None
        else ""
    )
    if record.status == STATUS_FAILED:
        detail = record.reason
    tally = ", ".join(f"{k} {v}" for k, v in counts.items() if v)
    return (
        f"[{done}/{total}] {record.status:<7} {record.output}  {detail}  "
        f"({record.seconds or 0:.1f} s)  [{tally}]"
    )


def _number(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _bars(broken: list[str] | None, met: str, lead: str = "") -> str:
    """The bars an image breaks, by name (``-``: not measured)."""
    if broken is None:
        return "-"
    return lead + bar_names(broken) if broken else met


def write_summary(out_dir: str | os.PathLike, records: Sequence[ImageRecord]) -> tuple[Path, Path]:
    """Write ``summary.csv`` and ``summary.json`` (a row per image) atomically into ``out_dir``."""
    out = Path(out_dir)
    rows = [r.to_dict() for r in records]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(SUMMARY_FIELDS), lineterminator="\n")
    writer.writeheader()
    # a cell per bar broken would not fit a column: "name value (bound)" joined by "; "
    writer.writerows(
        {**r, "bars_failed": "; ".join(r["bars_failed"] or ())} for r in rows
    )
    csv_path, json_path = out / "summary.csv", out / "summary.json"
    atomic_write_text(csv_path, buffer.getvalue())
    atomic_write_text(json_path, json.dumps(rows, indent=2))
    return csv_path, json_path


def format_table(records: Sequence[ImageRecord]) -> str:
    """The summary as an aligned text table."""
    header = ("output", "status", "PSNR dB", "SSIM", "max |Δ|", "shift", "seam", "bars broken",
              "NCC before", "NCC after", "time s", "reason")
    rows = [
        (
            r.output,
            r.status,
            _number(r.psnr, ".2f"),
            _number(r.ssim, ".4f"),
            _number(r.max_abs, ".0f"),
            _number(r.colour_shift, ".2f"),
            _number(r.seam_ratio, ".2f"),
            _bars(r.bars_failed, "none"),
            _number(r.ncc_before, ".4f"),
            _number(r.ncc_after, ".4f"),
            _number(r.seconds, ".1f"),
            r.reason,
        )
        for r in records
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]
    return "\n".join(lines)
