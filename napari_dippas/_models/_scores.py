"""Attribution in the viewer: scores of a photo against a fingerprint, verdicts, results table."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from psygnal import Signal

from dippas_core.attribution import Attribution

__all__ = [
    "DECISION_LEVEL_PCE", "AttributionResult", "ResultsTable", "attribute",
    "attribution_verdict", "pce_verdict", "trace_warning",
]

#: The PCE decision level of forensic practice (Goljan, Fridrich & Filler 2009): a photo whose
#: PCE with a camera's fingerprint reaches 60 is attributed to that camera.  Editable in the
#: widgets; our PCE is taken at zero shift, so 60 is conservative (false alarms ≈ Q(√60) ≈ 5e-15).
DECISION_LEVEL_PCE = 60.0

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


def trace_warning(pce_before: float, level: float = DECISION_LEVEL_PCE,
                  n_pixels: int | None = None) -> str | None:
    """A warning when the photo (or region) carries no detectable trace of the camera at all.

    Anonymizing it, or scoring it "after", then proves nothing: the fingerprint was not
    detectable to begin with.  None when the trace is there (PCE at or above ``level``).
    """
    if np.isfinite(pce_before) and pce_before >= level:
        return None
    size = f" ({n_pixels:,} pixels)" if n_pixels else ""
    return (
        f"This region{size} carries no detectable trace of the camera even before anonymizing "
        f"(PCE {pce_before:.1f} < decision level {level:g}): a before/after comparison on it "
        "proves nothing. Choose a larger region (a few hundred pixels on a side, with texture "
        "but not saturated) or the whole photo."
    )


class ResultsTable:
    """Scores of photos against fingerprints, one row per (photo, camera, region).

    Scoring the same photo against the same camera and region again replaces its row; anything
    else adds one.  ``changed`` is emitted after every change.
    """

    changed = Signal()
    COLUMNS = ("photo", "camera", "region", "pixels", "NCC", "PCE", "decision level", "verdict")

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(
        self, photo: str, camera: str, ncc: float, pce: float, level: float,
        region: str = "whole photo", pixels: int = 0,
    ) -> dict[str, Any]:
        """Add (or update) the row of ``photo`` × ``camera`` on ``region``; returns it."""
        verdict = "match" if np.isfinite(pce) and pce >= level else "no match"
        row = {
            "photo": photo, "camera": camera, "region": region, "pixels": int(pixels),
            "NCC": float(ncc), "PCE": float(pce), "decision level": float(level),
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

        from dippas_core._atomic import atomic_write_text

        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(self.COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(path, buffer.getvalue())
        return Path(path)
