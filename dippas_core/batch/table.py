"""The batch's ledger: ``summary.csv``/``summary.json`` and the text a terminal shows."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

from .._atomic import atomic_write_text
from .settings import STATUS_FAILED, SUMMARY_FIELDS, ImageRecord

__all__ = ["format_progress", "format_table", "write_summary"]


def format_progress(done: int, total: int, record: ImageRecord, counts: dict[str, int]) -> str:
    """One line saying how far the batch is and what happened to ``record``'s image."""
    detail = (f"psnr {record.psnr:.2f} dB" if record.psnr is not None else "") + (
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


def write_summary(out_dir: str | os.PathLike, records: Sequence[ImageRecord]) -> tuple[Path, Path]:
    """Write ``summary.csv`` and ``summary.json`` (a row per image) atomically into ``out_dir``."""
    out = Path(out_dir)
    rows = [r.to_dict() for r in records]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(SUMMARY_FIELDS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    csv_path, json_path = out / "summary.csv", out / "summary.json"
    atomic_write_text(csv_path, buffer.getvalue())
    atomic_write_text(json_path, json.dumps(rows, indent=2))
    return csv_path, json_path


def format_table(records: Sequence[ImageRecord]) -> str:
    """The summary as an aligned text table."""

    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    header = ("output", "status", "PSNR dB", "NCC before", "NCC after", "time s", "reason")
    rows = [
        (
            r.output,
            r.status,
            num(r.psnr, ".2f"),
            num(r.ncc_before, ".4f"),
            num(r.ncc_after, ".4f"),
            num(r.seconds, ".1f"),
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
