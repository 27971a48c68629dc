"""Per method and crop size: ROC AUCs, mean PSNR and fidelity, the trade-off C, NCC with the true
camera."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .methods import METHODS, method_order

__all__ = ["PSNR_CAP", "common_crops", "summarize"]

#: PSNR (dB) given to a crop a method left unchanged when averaging (it is infinite).
PSNR_CAP = 100.0


def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    from ..metrics import roc_auc

    ok = np.isfinite(scores)
    if ok.sum() == 0 or labels[ok].all() or not labels[ok].any():
        return float("nan")
    return float(roc_auc(scores[ok], labels[ok]))


def _top1_accuracy(rows: Sequence[dict[str, Any]], key: str) -> float:
    """Share of crops whose highest ``key`` score is the true camera's (NaN: no such scores)."""
    best: dict[str, tuple[float, bool]] = {}
    for r in rows:
        v = r.get(key)
        value = float(v) if v not in ("", None) else float("nan")
        if not np.isfinite(value):
            continue
        crop = str(r["crop"])
        if crop not in best or value > best[crop][0]:
            best[crop] = (value, str(r["label"]) in ("1", "True", "true"))
    return float(np.mean([hit for _, hit in best.values()])) if best else float("nan")


def _fidelity_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per method: the fidelity of its outputs (one per crop) beside the mean PSNR: mean SSIM,
    worst max |Δ|, mean share off, worst colour shift and seam ratio, how many outputs break a
    bar, over the ``n_fidelity`` outputs whose fidelity was measured (a ``scores.csv`` written
    before it was lacks it: NaN when none)."""
    measured: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r.get("ssim") not in ("", None):
            measured.setdefault(str(r["crop"]), r)

    def values(key: str) -> np.ndarray:
        v = np.array([float(r[key]) for r in measured.values() if r.get(key) not in ("", None)])
        return v[~np.isnan(v)]

    def stat(key: str, how) -> float:
        v = values(key)
        return float(how(v)) if v.size else float("nan")

    return {
        "n_fidelity": len(measured),
        "mean_ssim": stat("ssim", np.mean),
        "worst_max_abs": stat("max_abs", np.max),
        "mean_share_off": stat("share_off", np.mean),
        "worst_colour_shift": stat("colour_shift", np.max),
        "worst_seam_ratio": stat("seam_ratio", np.max),
        "n_bars_failed": sum(bool(r.get("bars_failed")) for r in measured.values()),
    }


def _mean_psnr(psnrs: np.ndarray) -> float:
    """The crops' mean PSNR, a crop left unchanged counting as :data:`PSNR_CAP` (not infinity);
    infinite when nothing changed at all (untouched), NaN without a crop."""
    if psnrs.size == 0:
        return float("nan")
    if np.isinf(psnrs).all():
        return float("inf")
    return float(np.minimum(psnrs, PSNR_CAP).mean())


def summarize(
    rows: Sequence[dict[str, Any]], *, crops: set[str] | None = None
) -> list[dict[str, Any]]:
    """Per (size, method): AUCs, mean PSNR, C, NCC with the true camera and its cut vs untouched.

    Parameters
    ----------
    rows : sequence of dict
        Score rows (:data:`SCORE_FIELDS`; the strings read back from ``scores.csv`` are accepted).
    crops : set of str, optional
        Use only these crop ids (e.g. the crops every method has, for a like-for-like table).

    Notes
    -----
    ``ncc_cut_vs_untouched`` is the untouched mean ``|NCC|`` with the true camera divided by the
    method's (higher: more removed).  ``mean_psnr`` averages the per-crop PSNR, a crop the method
    left unchanged counting as :data:`PSNR_CAP` dB; it is infinite only when no crop changed
    (untouched), and then ``C`` is left empty.  ``n_unchanged`` counts the unchanged crops.
    Beside the PSNR, the outputs' fidelity (``dippas_core.fidelity``): ``mean_ssim``,
    ``worst_max_abs``, ``mean_share_off``, ``worst_colour_shift``, ``worst_seam_ratio`` and
    ``n_bars_failed`` (outputs that break a bar), over the ``n_fidelity`` outputs whose fidelity
    was measured (rows of an older ``scores.csv`` have none).
    ``acc_ncc``, ``acc_pce`` and ``acc_attacker`` are top-1 accuracies: the share of crops whose
    highest score (over the fingerprints, or the learned attacker's camera probabilities) is the
    true camera's; ``auc_attacker`` pools the attacker's probabilities as ``auc_ncc`` pools NCCs.
    """
    from ..metrics import tradeoff_c

    def num(v):
        return float(v) if v not in ("", None) else float("nan")

    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for r in rows:
        if crops is None or str(r["crop"]) in crops:
            groups.setdefault((int(r["size"]), str(r["method"])), []).append(r)
    out = []
    ordered = sorted(groups.items(), key=lambda kv: (kv[0][0], method_order(kv[0][1])))
    for (size, method), rs in ordered:
        labels = np.array([str(r["label"]) in ("1", "True", "true") for r in rs])
        ncc = np.array([num(r["ncc"]) for r in rs])
        per_crop = {str(r["crop"]): (num(r["psnr"]), num(r["seconds"])) for r in rs}
        fidelity = _fidelity_summary(rs)
        psnrs = np.array([v[0] for v in per_crop.values()])
        psnrs = psnrs[~np.isnan(psnrs)]
        mean_psnr = _mean_psnr(psnrs)
        auc = _auc(ncc, labels)
        auc_e = _auc(np.array([num(r["ncc_edges"]) for r in rs]), labels)
        nan = float("nan")
        out.append(
            {
                "size": size,
                "method": method,
                "label": METHODS[method].label if method in METHODS else method,
                "n_crops": len(per_crop),
                "n_pairs": len(rs),
                "n_unchanged": int(np.isinf(psnrs).sum()),
                "mean_psnr": mean_psnr,
                **fidelity,
                "auc_ncc": auc,
                "auc_ncc_edges": auc_e,
                "auc_edges_rel_change": (auc_e - auc) / auc if auc > 0 else nan,
                "auc_pce": _auc(np.array([num(r["pce"]) for r in rs]), labels),
                "auc_attacker": _auc(np.array([num(r.get("attacker")) for r in rs]), labels),
                "acc_ncc": _top1_accuracy(rs, "ncc"),
                "acc_pce": _top1_accuracy(rs, "pce"),
                "acc_attacker": _top1_accuracy(rs, "attacker"),
                "C": float(tradeoff_c(mean_psnr, auc))
                if np.isfinite([mean_psnr, auc]).all()
                else nan,
                "mean_ncc_true": float(ncc[labels].mean()) if labels.any() else nan,
                "mean_abs_ncc_true": float(np.abs(ncc[labels]).mean()) if labels.any() else nan,
                "mean_seconds": float(np.mean([v[1] for v in per_crop.values()])),
            }
        )
    ref = {s["size"]: s["mean_abs_ncc_true"] for s in out if s["method"] == "untouched"}
    for s in out:
        mine = s["mean_abs_ncc_true"]
        s["ncc_cut_vs_untouched"] = ref.get(s["size"], nan) / mine if mine > 0 else float("inf")
    return out


def common_crops(rows: Sequence[dict[str, Any]], methods: Sequence[str]) -> set[str]:
    """Crop ids scored by every one of ``methods`` (for a like-for-like comparison)."""
    have: dict[str, set[str]] = {}
    for r in rows:
        have.setdefault(str(r["method"]), set()).add(str(r["crop"]))
    sets = [have.get(m, set()) for m in methods]
    return set.intersection(*sets) if sets else set()
