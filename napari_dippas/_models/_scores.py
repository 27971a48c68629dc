"""Attribution in the viewer: scores of a photo against a fingerprint, verdicts, results table."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from psygnal import Signal

from dippas_core.attribution import PCE_ALIGNED, PCE_DECISION_LEVEL, Attribution, trace_warning

__all__ = [
    "DECISION_LEVEL_PCE", "AttributionResult", "ResultsTable", "attribute",
    "attribution_verdict", "pce_verdict", "trace_warning",
]

#: The PCE decision level (60, Goljan et al. 2009): the core's, one for every entry point.
DECISION_LEVEL_PCE = PCE_DECISION_LEVEL

#: Residual and scores of one photo against one fingerprint (the core's one result type).
AttributionResult = Attribution


def attribute(
    photo: np.ndarray,
    K: np.ndarray,
    *,
    sigma: float = 5.0,
    block_size: int = 64,
    W: np.ndarray | None = None,
) -> AttributionResult:
    """Residual, NCC, PCE and block-NCC map of ``photo`` against fingerprint ``K``.

    Calls :mod:`dippas_core` for every number (method §1, §3).  The PCE is computed between the
    residual and ``I_gray * K`` (the two terms of the NCC) at zero shift only: the photo and the
    fingerprint are aligned, and searching every shift would turn the largest of H×W noise peaks
    into a "match".  Under no match the zero-shift PCE is about chi-square with one degree of
    freedom, so a threshold ``t`` has a false-alarm rate of about ``Q(sqrt(t))``.

    Parameters
    ----------
    photo : np.ndarray
        H×W×3 or H×W: uint8, float on the 0..255 scale, or uint16 (brought to 0..255 here, so
        a 16-bit photo is scored like its 8-bit version).
    K : np.ndarray
        H×W fingerprint (or, in blind mode, the reference residual).
    sigma : float
        Noise level of the residual (method §1).
    block_size : int
        ``B`` of the block-NCC map.
    W : np.ndarray, optional
        The photo's residual when already known (skips the expensive step).

    Raises
    ------
    dippas_core.errors.ShapeMismatchError
        If the photo and the fingerprint differ in size.
    """
    from dippas_core.attribution import attribute as score

    return score(photo, K, sigma=sigma, block_size=block_size, residual=W)


def attribution_verdict(score: Literal["PCE", "NCC"], value: float, threshold: float) -> str:
    """A plain-words verdict: does the photo carry the camera's fingerprint?

    Parameters
    ----------
    score : {"PCE", "NCC"}
        Which score is compared.
    value : float
        The score.
    threshold : float
        The decision threshold (PCE 60 is the usual forensic choice).
    """
    if not np.isfinite(value):
        return f"No verdict: the {score} could not be computed."
    if value >= threshold:
        return (
            f"Match: this photo carries the camera's fingerprint "
            f"({score} {value:.4g} ≥ threshold {threshold:.4g})."
        )
    return (
        f"No match: the camera's fingerprint is not detected "
        f"({score} {value:.4g} < threshold {threshold:.4g})."
    )


def pce_verdict(pce: float, level: float = DECISION_LEVEL_PCE) -> str:
    """The forensic verdict on the PCE (the NCC gets none: its scale depends on the size)."""
    return attribution_verdict("PCE", pce, level)


class ResultsTable:
    """Scores of photos against fingerprints, one row per (photo, camera, region).

    Scoring the same photo against the same camera and region again replaces its row; anything
    else adds one.  ``changed`` is emitted after every change.
    """

    changed = Signal()
    COLUMNS = ("photo", "camera", "region", "pixels", "NCC", "PCE", "PCE kind", "decision level",
               "verdict")

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(
        self, photo: str, camera: str, ncc: float, pce: float, level: float,
        region: str = "whole photo", pixels: int = 0, pce_kind: str = PCE_ALIGNED,
    ) -> dict[str, Any]:
        """Add (or update) the row of ``photo`` × ``camera`` on ``region``; returns it.

        ``pce_kind``: which PCE it is (:func:`dippas_core.attribution.pce_kind`)."""
        verdict = "match" if np.isfinite(pce) and pce >= level else "no match"
        row = {
            "photo": photo, "camera": camera, "region": region, "pixels": int(pixels),
            "NCC": float(ncc), "PCE": float(pce), "PCE kind": pce_kind,
            "decision level": float(level),
            "verdict": verdict,
        }
        key = (photo, camera, region)
        self.rows = [r for r in self.rows if (r["photo"], r["camera"], r["region"]) != key]
        self.rows.append(row)
        self.changed.emit()
        return row

    def relevel(self, level: float) -> None:
        """Re-decide every row at a new decision level."""
        for row in self.rows:
            row["decision level"] = float(level)
            row["verdict"] = "match" if row["PCE"] >= level else "no match"
        self.changed.emit()

    def to_csv(self, path: str | Path) -> Path:
        """Write the table as CSV (atomically; numbers in full precision)."""
        import csv
        import io

        from dippas_core.atomic import atomic_write_text

        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(self.COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(path, buffer.getvalue())
        return Path(path)
