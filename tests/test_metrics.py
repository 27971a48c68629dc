"""PSNR, ROC/AUC and the trade-off C, against hand computations and a brute-force count."""

from __future__ import annotations

import numpy as np
import pytest

from dippas_core.errors import InputError
from dippas_core.metrics import psnr, roc_auc, roc_curve, tradeoff_c


def test_psnr_by_hand():
    a = np.zeros((4, 5, 3), np.uint8)
    b = np.ones((4, 5, 3), np.float32)
    assert psnr(a, b) == pytest.approx(20 * np.log10(255.0))
    assert psnr(a, 2 * b) == pytest.approx(20 * np.log10(255.0) - 10 * np.log10(4))
    assert psnr(a, b, data_range=1.0) == pytest.approx(0.0)
    assert psnr(b, b) == float("inf")
    with pytest.raises(InputError, match="4×5 but b is 4×6"):
        psnr(a, np.zeros((4, 6, 3)))


def test_roc_by_hand_with_ties():
    fpr, tpr, thr = roc_curve([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0])
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])
    assert thr[0] == np.inf and list(thr[1:]) == [0.9, 0.8, 0.7, 0.6]
    assert roc_auc([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == pytest.approx(0.75)
    # a tie between a positive and a negative counts one half
    assert roc_auc([1.0, 1.0], [True, False]) == pytest.approx(0.5)
    fpr, tpr, _ = roc_curve([1.0, 1.0], [True, False])
    np.testing.assert_allclose(fpr, [0, 1])
    np.testing.assert_allclose(tpr, [0, 1])


def test_auc_equals_the_mann_whitney_count(rng):
    scores = rng.integers(0, 6, 60).astype(float)  # many ties
    labels = rng.random(60) < 0.4
    pos, neg = scores[labels], scores[~labels]
    count = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    assert roc_auc(scores, labels) == pytest.approx(count / (len(pos) * len(neg)))
    fpr, tpr, thr = roc_curve(scores, labels)
    assert (np.diff(fpr) >= 0).all() and (np.diff(tpr) >= 0).all() and (np.diff(thr) < 0).all()
    assert (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert roc_auc(-scores, labels) == pytest.approx(1 - roc_auc(scores, labels))


def test_roc_needs_both_classes_and_clean_labels():
    with pytest.raises(InputError, match="positive and one negative"):
        roc_auc([1, 2], [1, 1])
    with pytest.raises(InputError, match="0/1"):
        roc_auc([1, 2], [1, 2])
    with pytest.raises(InputError, match="entries"):
        roc_auc([1, 2, 3], [1, 0])
    with pytest.raises(InputError, match="NaN"):
        roc_auc([np.nan, 2], [1, 0])


def test_tradeoff_c():
    assert tradeoff_c(40.0, 0.5) == pytest.approx(40.0)
    assert tradeoff_c(40.0, 1.0) == pytest.approx(0.0)
    assert tradeoff_c(40.0, 0.0) == pytest.approx(0.0)
    assert tradeoff_c(38.0, 0.6) == pytest.approx(38.0 * 0.8)
    np.testing.assert_allclose(tradeoff_c(np.array([30.0, 40.0]), 0.75), [15.0, 20.0])
    with pytest.raises(InputError, match="auc"):
        tradeoff_c(40.0, 1.2)


def test_psnr_in_chunks_matches_the_whole_array_formula(monkeypatch):
    import dippas_core.metrics as metrics

    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (301, 77, 3), dtype=np.uint8)
    b = np.clip(a + rng.normal(0, 3, a.shape), 0, 255).astype(np.float32)
    whole = 10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b) ** 2))
    monkeypatch.setattr(metrics, "_PSNR_CHUNK", 1000)  # 4 rows per chunk: 76 chunks
    assert metrics.psnr(a, b) == pytest.approx(whole, rel=1e-12)
    b[290, 5, 1] = np.nan  # in a late chunk: still named
    with pytest.raises(InputError, match="b contains NaN"):
        metrics.psnr(a, b)
