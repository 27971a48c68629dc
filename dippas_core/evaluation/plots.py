"""The evaluation's figures: ROC curves and AUC against mean PSNR (paper Fig. 10), as PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_path

__all__ = ["auc_axis_limits", "write_plots"]


def auc_axis_limits(aucs: Sequence[float]) -> tuple[float, float]:
    """AUC axis of the AUC-vs-PSNR plot: 0.3 … 1.02, widened so that no plotted AUC falls off."""
    low = min([0.3, *(float(a) - 0.03 for a in aucs if np.isfinite(a))])
    return max(low, -0.02), 1.02


def write_plots(
    rows: Sequence[dict[str, Any]], summary: Sequence[dict[str, Any]], out: Path
) -> list[Path]:
    """ROC curves (NCC, one figure per crop size) and AUC vs mean PSNR (paper Fig. 10) as PNG.

    Uses a bare :class:`matplotlib.figure.Figure` (Agg canvas), never pyplot, so it changes no
    global backend (safe inside napari).
    """
    from matplotlib.figure import Figure

    from ..metrics import roc_curve

    written = []
    sizes = sorted({int(s["size"]) for s in summary})
    for size in sizes:
        fig = Figure(figsize=(5.2, 4.6), dpi=110)
        ax = fig.add_subplot()
        for s in (s for s in summary if s["size"] == size):
            rs = [r for r in rows if int(r["size"]) == size and r["method"] == s["method"]]
            scores = np.array([float(r["ncc"]) for r in rs])
            labels = np.array([str(r["label"]) in ("1", "True", "true") for r in rs])
            if labels.all() or not labels.any():
                continue
            fpr, tpr, _ = roc_curve(scores, labels)
            ax.plot(fpr, tpr, label=f"{s['label']} (AUC {s['auc_ncc']:.3f})")
        ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--")
        ax.set(
            xlabel="false positive rate",
            ylabel="true positive rate",
            title=f"ROC, NCC, {size}×{size} crops",
        )
        if ax.get_legend_handles_labels()[0]:  # no curve when a size has one camera only
            ax.legend(fontsize=7, loc="lower right")
        path = out / f"roc_{size}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, bbox_inches="tight")
        written.append(path)

        fig = Figure(figsize=(5.2, 4.6), dpi=110)
        ax = fig.add_subplot()
        plotted = []
        for s in (s for s in summary if s["size"] == size):
            if not np.isfinite([s["mean_psnr"], s["auc_ncc"]]).all():
                continue
            (pt,) = ax.plot(s["mean_psnr"], s["auc_ncc"], "o", label=s["label"])
            plotted.append(s["auc_ncc"])
            if np.isfinite(s["auc_ncc_edges"]):
                ax.plot(s["mean_psnr"], s["auc_ncc_edges"], "^", mfc="none", color=pt.get_color())
                plotted.append(s["auc_ncc_edges"])
        ax.axhline(0.5, color="0.6", lw=0.8, ls="--")
        ref = [s for s in summary if s["size"] == size and s["method"] == "untouched"]
        if ref and np.isfinite(ref[0]["auc_ncc"]):
            ax.axhline(ref[0]["auc_ncc"], color="k", lw=0.8, ls=":", label="untouched AUC")
        ax.set(
            xlabel="mean PSNR [dB]",
            ylabel="AUC (NCC)",
            ylim=auc_axis_limits(plotted),
            title=f"AUC vs PSNR, {size}×{size} (●: whole, △: edges)",
        )
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
        path = out / f"auc_vs_psnr_{size}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, bbox_inches="tight")
        written.append(path)
    return written

