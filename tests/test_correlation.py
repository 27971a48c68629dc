"""Attribution scores (method §3): NCC, block NCC maps, PCE."""

from __future__ import annotations

import numpy as np
import pytest

from dippas_core.correlation import block_ncc, cross_correlation, ncc, pce
from dippas_core.errors import InputError, ShapeMismatchError
from dippas_core.residual import rgb2gray


def _direct_ncc(w, gray, k):
    w = np.asarray(w, np.float64)
    x = np.asarray(gray, np.float64) * np.asarray(k, np.float64)
    return float((w * x).sum() / np.sqrt((w * w).sum() * (x * x).sum()))


@pytest.fixture
def triple(rng):
    h, w = 70, 45
    image = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
    k = rng.normal(0, 0.02, (h, w)).astype(np.float32)
    res = (rng.normal(0, 1, (h, w)) + 5 * rgb2gray(image) * k).astype(np.float32)
    return res, image, k


def test_ncc_equals_the_direct_formula_on_gray_of_the_image(triple):
    w, image, k = triple
    gray = rgb2gray(image)
    value = ncc(w, image, k)
    assert value == pytest.approx(_direct_ncc(w, gray, k), rel=1e-9)
    assert value == pytest.approx(ncc(w, gray, k), rel=1e-12)
    assert ncc(3 * w, image, k) == pytest.approx(value, rel=1e-9)
    assert ncc(w, image, -k) == pytest.approx(-value, rel=1e-9)
    assert ncc(np.zeros_like(w), image, k) == 0.0


def test_ncc_refuses_a_fingerprint_of_another_size(triple):
    w, image, k = triple
    with pytest.raises(ShapeMismatchError, match="70×45 but the fingerprint K is 64×45"):
        ncc(w, image, k[:64])
    with pytest.raises(ShapeMismatchError, match="70×40 but the image I is 70×45"):
        ncc(w[:, :40], image, k)


def test_block_ncc_blocks_equal_ncc_on_the_crops_edge_blocks_kept(triple):
    w, image, k = triple
    gray = rgb2gray(image)
    B = 32
    m = block_ncc(w, image, k, B)
    assert m.shape == (3, 2)  # ceil(70/32) × ceil(45/32): edge blocks are smaller, not dropped
    for by in range(3):
        for bx in range(2):
            sl = np.s_[by * B : (by + 1) * B, bx * B : (bx + 1) * B]
            assert m[by, bx] == pytest.approx(_direct_ncc(w[sl], gray[sl], k[sl]), rel=1e-9)
    whole = block_ncc(w, image, k, 100)
    assert whole.shape == (1, 1) and whole[0, 0] == pytest.approx(ncc(w, image, k), rel=1e-9)


def test_sliding_block_ncc_equals_ncc_on_each_window(triple):
    w, image, k = triple
    gray = rgb2gray(image)
    B, S = 20, 8
    m = block_ncc(w, image, k, B, stride=S)
    assert m.shape == ((70 - B) // S + 1, (45 - B) // S + 1)
    for iy in range(m.shape[0]):
        for ix in range(m.shape[1]):
            sl = np.s_[iy * S : iy * S + B, ix * S : ix * S + B]
            assert m[iy, ix] == pytest.approx(_direct_ncc(w[sl], gray[sl], k[sl]), rel=1e-7)
    with pytest.raises(InputError, match="stride"):
        block_ncc(w, image, k, B, stride=0)
    with pytest.raises(InputError, match="larger than the image"):
        block_ncc(w, image, k, 80, stride=4)


@pytest.mark.parametrize("shift", [(0, 0), (3, -5), (-7, 11), (20, 0)])
def test_pce_finds_the_shift_of_a_shifted_copy(rng, shift):
    b = rng.normal(0, 1, (64, 80))
    a = np.roll(b, shift, axis=(0, 1)) + rng.normal(0, 0.5, b.shape)
    result = pce(a, b)
    assert result.shift == shift
    assert result.pce > 1000 and result.peak > 0
    unrelated = pce(rng.normal(0, 1, b.shape), b)
    assert unrelated.pce < 40
    # scored at zero shift only, an aligned anti-correlated copy gives a large negative PCE
    aligned = np.roll(a, (-shift[0], -shift[1]), axis=(0, 1))
    negative = pce(-aligned, b, shift_range=(0, 0))
    assert negative.pce < -1000 and negative.shift == (0, 0) and negative.peak < 0


def test_pce_shift_range_and_exclusion_against_a_direct_computation(rng):
    a = rng.normal(0, 1, (24, 30))
    b = np.roll(a, (2, 3), axis=(0, 1)) + rng.normal(0, 1, a.shape)
    a_before, b_before = a.copy(), b.copy()
    # independent cross-correlation: numpy's complex FFT
    fa, fb = np.fft.fft2(a - a.mean()), np.fft.fft2(b - b.mean())
    cc = np.real(np.fft.ifft2(fa * np.conj(fb)))
    np.testing.assert_allclose(cross_correlation(a, b), cc, atol=1e-9)
    # aligned only: the peak is cc[0, 0]; 5×5 exclusion around it, wrapping around the corner
    result = pce(a, b, shift_range=(0, 0), exclusion=5)
    mask = np.ones(cc.shape, bool)
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            mask[dy % 24, dx % 30] = False
    energy = np.mean(cc[mask] ** 2)
    assert result.shift == (0, 0) and result.peak == pytest.approx(cc[0, 0])
    assert result.pce == pytest.approx(np.sign(cc[0, 0]) * cc[0, 0] ** 2 / energy)
    assert result.energy == pytest.approx(energy)
    # the full search finds the true shift (a is b moved by (-2, -3))
    assert pce(a, b).shift == (-2, -3)
    np.testing.assert_array_equal(a, a_before)
    np.testing.assert_array_equal(b, b_before)
    with pytest.raises(InputError, match="exclusion"):
        pce(a, b, exclusion=0)
    with pytest.raises(ShapeMismatchError, match="24×30 but b is 24×29"):
        pce(a, b[:, :29])


def test_inputs_are_never_modified(triple):
    w, image, k = triple
    copies = [x.copy() for x in triple]
    ncc(w, image, k)
    block_ncc(w, image, k, 16)
    block_ncc(w, image, k, 16, stride=5)
    pce(w, rgb2gray(image) * k)
    for before, after in zip(copies, (w, image, k), strict=True):
        np.testing.assert_array_equal(before, after)
