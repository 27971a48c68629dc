"""Edge masks (method §6 / DIPPAS paper Table 4) and the edge-restricted NCC."""

from __future__ import annotations

import numpy as np
import pytest

from dippas_core.correlation import ncc
from dippas_core.edges import edge_mask, masked_ncc
from dippas_core.errors import InputError
from dippas_core.residual import residual


def _step_image(rng, noise=2.0):
    img = np.full((64, 64, 3), 50.0, np.float32)
    img[:, 32:] = 200.0
    return np.clip(img + rng.normal(0, noise, img.shape), 0, 255).astype(np.float32)


def test_the_mask_of_a_step_image_lies_on_the_step(rng):
    mask = edge_mask(_step_image(rng), dilate=1)
    cols = np.nonzero(mask.any(axis=0))[0]
    # the step is between columns 31 and 32: seeds there, one pixel of dilation, smoothing
    assert cols.min() >= 28 and cols.max() <= 35
    assert mask[:, 31].all() and mask[:, 32].all()  # the whole step, top to bottom
    assert not mask[:, :26].any() and not mask[:, 38:].any()


def test_noise_alone_makes_no_edges(rng):
    flat = np.clip(120.0 + rng.normal(0, 3.0, (48, 48, 3)), 0, 255)
    assert not edge_mask(flat).any()
    assert not edge_mask(np.full((20, 20), 7.0)).any()


def test_fraction_bounds_the_share_of_seed_pixels(natural_photos):
    photo = natural_photos[3][2][:256, :256]
    for fraction in (0.05, 0.2):
        seeds = edge_mask(photo, fraction=fraction, dilate=0)
        assert 0 < seeds.mean() <= fraction + 1e-3
    grown = edge_mask(photo, fraction=0.05, dilate=2)
    assert grown.mean() > edge_mask(photo, fraction=0.05, dilate=0).mean()


def test_masked_ncc_with_a_full_mask_is_the_ncc(natural_photos, camera_fingerprints):
    cam, _, photo = natural_photos[0]
    photo = photo[:128, :128]
    K = camera_fingerprints[cam].K[:128, :128]
    W = residual(photo)
    full = np.ones(K.shape, bool)
    assert masked_ncc(W, photo, K, full) == pytest.approx(ncc(W, photo, K), rel=1e-6)
    half = np.zeros(K.shape, bool)
    half[:64] = True
    assert masked_ncc(W, photo, K, half) == pytest.approx(
        ncc(W[:64], photo[:64], K[:64]), rel=1e-6
    )
    assert masked_ncc(W, photo, K, np.zeros(K.shape, bool)) == 0.0


def test_bad_arguments_are_named():
    img = np.zeros((16, 16))
    with pytest.raises(InputError, match="fraction"):
        edge_mask(img, fraction=0.0)
    with pytest.raises(InputError, match="dilate"):
        edge_mask(img, dilate=-1)
    with pytest.raises(InputError, match="mask"):
        masked_ncc(np.zeros((4, 4)), np.zeros((4, 4)), np.zeros((4, 4)), np.ones((3, 3), bool))
