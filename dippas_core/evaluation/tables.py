"""The run's files: ``scores.csv`` (read back with checks), the summary tables, merging runs."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..errors import InputError
from ..fidelity import COLUMNS as FIDELITY_COLUMNS
from ..fidelity import MEASURES
from ..jsonio import jsonable
from .config import EvalConfig
from .summary import common_crops, summarize

__all__ = [
    "SCORE_FIELDS",
    "check_resumable",
    "merge_scores",
    "read_scores",
    "rows_to_csv",
    "write_summaries",
]

#: The columns of ``scores.csv``: a row per (method, crop, fingerprint).  Beside the PSNR, the
#: output's fidelity measures (``dippas_core.fidelity``; the same for every fingerprint) and the
#: bars it breaks (``"; "``-joined): a ``scores.csv`` written before they were measured lacks
#: those columns, and its rows read back with them empty.
SCORE_FIELDS = (
    "size",
    "crop",
    "photo",
    "camera",
    "top",
    "left",
    "method",
    "fingerprint",
    "label",
    "ncc",
    "ncc_edges",
    "pce",
    "psnr",
    *FIDELITY_COLUMNS,
    "seconds",
    "attacker",
)



def rows_to_csv(rows: Sequence[dict[str, Any]], fields: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (repr(float(v)) if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def read_scores(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``scores.csv``, each checked (InputError naming the line and column)."""
    if not path.is_file():
        return []
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            have = reader.fieldnames or ()
            missing = [f for f in SCORE_FIELDS if f not in have and f not in FIDELITY_COLUMNS]
            if missing:
                raise InputError(
                    f"{path} is not a scores file of dippas evaluate: no column "
                    f"{', '.join(missing)}"
                )
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path} is not a readable CSV file ({exc})") from None
    for line, row in enumerate(rows, start=2):
        _check_score_row(path, line, row, have)
        for f in FIDELITY_COLUMNS:  # scored before fidelity was measured: not measured
            row.setdefault(f, "")
    return rows


def _check_score_row(path: Path, line: int, row: dict[str, Any], have: Sequence[str]) -> None:
    def bad(column: str, why: str) -> InputError:
        return InputError(f"{path}, line {line}: {column} {row.get(column)!r} {why}")

    if None in row or any(row.get(f) is None for f in SCORE_FIELDS if f in have):
        raise InputError(f"{path}, line {line}: wrong number of columns")
    try:
        size = int(row["size"])
    except ValueError:
        raise bad("size", "is not a whole number") from None
    if size < 1:
        raise bad("size", "must be >= 1")
    if not row["method"] or not row["crop"]:
        raise InputError(f"{path}, line {line}: method and crop must not be empty")
    if row["label"] not in ("0", "1", "True", "False", "true", "false"):
        raise bad("label", "is not 0/1")
    numbers = ("ncc", "ncc_edges", "pce", "psnr", "seconds", *MEASURES)
    for column in (c for c in numbers if c in have):
        if row[column] == "":
            continue  # a score that was not computed (e.g. --no-pce)
        try:
            float(row[column])  # nan and inf are written by evaluate itself
        except ValueError:
            raise bad(column, "is not a number") from None


def write_summaries(
    rows: Sequence[dict[str, Any]], methods: Sequence[str], out: Path
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], set[str]]:
    """Write summary.csv, summary_common.csv and summary.json; return (all, common, crops)."""
    summary = summarize(rows)
    present = [m for m in methods if any(r["method"] == m for r in rows)]
    keep = common_crops(rows, present)
    common = summarize(rows, crops=keep)
    fields = list(summary[0]) if summary else ["size", "method"]
    atomic_write_text(out / "summary.csv", rows_to_csv(summary, fields))
    atomic_write_text(out / "summary_common.csv", rows_to_csv(common, fields))
    doc = {"all_crops": summary, "common_crops": common, "methods_in_common": present}
    text = json.dumps(jsonable(doc, strict=True), indent=2) + "\n"
    atomic_write_text(out / "summary.json", text)
    return summary, common, keep


#: Settings that change every score: results made with others are not put into one table.
_SCORING_SETTINGS = ("reference", "sigma", "fingerprint_region")


def _scoring_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The :data:`_SCORING_SETTINGS` of a saved config (defaults for keys it predates)."""
    defaults = EvalConfig()
    return {key: config.get(key, getattr(defaults, key)) for key in _SCORING_SETTINGS}


def check_resumable(earlier: dict[str, Any], config: EvalConfig, out: Path) -> None:
    """Refuse to add to ``out`` scores made with other :data:`_SCORING_SETTINGS`."""
    before, now = _scoring_settings(earlier), _scoring_settings(config.to_dict())
    for key in _SCORING_SETTINGS:
        if before[key] != now[key]:
            raise InputError(
                f"{out} holds results made with {key}={before[key]!r}, this run has "
                f"{key}={now[key]!r}: use another --out, or --fresh to start over"
            )


def merge_scores(sources: Sequence[str | Path], out: str | Path) -> int:
    """Merge the ``scores.csv`` of runs made side by side (e.g. one per method) into
    ``out/scores.csv``; a (method, crop, fingerprint) already seen is kept from the first source.
    Sources whose ``params.json`` differ in a setting that changes every score (the reference,
    sigma, the fingerprint region) are refused.  Returns the number of rows written."""
    seen: set[tuple[str, str, str]] = set()
    merged: list[dict[str, Any]] = []
    first: tuple[Path, dict[str, Any]] | None = None
    for src in sources:
        path = Path(src) / "scores.csv" if Path(src).is_dir() else Path(src)
        if not path.is_file():
            raise InputError(f"no scores file at {path}")
        params = path.parent / "params.json"
        if params.is_file():
            settings = _scoring_settings(json.loads(params.read_text()).get("config") or {})
            if first is None:
                first = (path.parent, settings)
            elif settings != first[1]:
                raise InputError(
                    f"not merging {path.parent} ({settings}) with {first[0]} ({first[1]}): "
                    "their scores are not comparable"
                )
        for r in read_scores(path):
            key = (r["method"], r["crop"], r["fingerprint"])
            if key not in seen:
                seen.add(key)
                merged.append(r)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "scores.csv", rows_to_csv(merged, SCORE_FIELDS))
    return len(merged)
