"""Baselines of issue 6: inpainting (L2/TV), fingerprint subtraction, plain denoising.

Real Dresden crops come from Engineer A's session fixtures (centre 512×512 of the photos and the
fingerprints); the baselines run on 128×128 crops of them, where the untouched NCC with the true
camera is clearly positive.
"""

from __future__ import annotations

import numpy as np
import pytest

from dippas_core.baselines import (
    inpaint,
    inpaint_anonymize,
    lattice_holes,
    subtract_fingerprint,
    subtraction_alpha,
    wavelet_denoise,
)
from dippas_core.correlation import ncc
from dippas_core.errors import InputError
from dippas_core.metrics import psnr
from dippas_core.residual import residual

# two photos whose centre 128×128 crop matches its camera clearly (NCC 0.020 and 0.028)
PHOTOS = ("Nikon_D70s_0_21853.JPG", "Nikon_D70s_1_22760.JPG")
CENTRE = slice(192, 320)


@pytest.fixture(scope="module")
def real_crops(camera_fingerprints, natural_photos):
    """[(photo uint8 128×128×3, K 128×128)] of :data:`PHOTOS`."""
    out = []
    for cam, name, photo in natural_photos:
        if name in PHOTOS:
            out.append((photo[CENTRE, CENTRE].copy(), camera_fingerprints[cam].K[CENTRE, CENTRE]))
    assert len(out) == len(PHOTOS)
    return out


def _true_ncc(image, K) -> float:
    img8 = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return ncc(residual(img8), img8, K)


@pytest.mark.parametrize(
    ("name", "run", "min_psnr", "max_ratio"),
    [
        ("denoise", lambda p, K: wavelet_denoise(p), 38.0, 1.0),
        ("subtract", lambda p, K: subtract_fingerprint(p, K), 45.0, 0.2),
        ("inpaint_l2", lambda p, K: inpaint_anonymize(p, method="l2", lam=0.1), 30.0, 0.9),
        ("inpaint_tv", lambda p, K: inpaint_anonymize(p, method="tv", lam=2.0, iterations=100),
         30.0, 0.9),
    ],
)
def test_each_baseline_cuts_the_true_camera_ncc_and_keeps_quality(
    real_crops, name, run, min_psnr, max_ratio
):
    for photo, K in real_crops:
        before = _true_ncc(photo, K)
        out = run(photo, K)
        assert out.shape == photo.shape and out.dtype == np.float32
        assert 0.0 <= out.min() and out.max() <= 255.0
        after = _true_ncc(out, K)
        assert abs(after) < max_ratio * before, f"{name}: NCC {before:.4f} -> {after:.4f}"
        assert psnr(np.rint(out), photo) > min_psnr, name
    # inputs are never modified in place
    assert real_crops[0][0].dtype == np.uint8


def test_l2_inpainting_reproduces_a_linear_ramp_in_the_holes():
    y, x = np.mgrid[0:48, 0:56].astype(np.float32)
    ramp = 2.0 * x + 3.0 * y + 10.0
    holes = lattice_holes(ramp.shape, 3, (1, 2))
    filled = inpaint(np.where(holes, 0.0, ramp), holes, method="l2", lam=0.5, tol=1e-10,
                     iterations=2000)
    # Tikhonov with a Neumann boundary pulls the outermost pixels; the effect dies out within a
    # few pixels, so away from the border the holes are the ramp to float32 precision
    inner = (slice(12, -12), slice(12, -12))
    assert np.abs(filled - ramp)[inner][holes[inner]].max() < 2e-3
    assert np.array_equal(filled[~holes], ramp[~holes])


def test_tv_inpainting_keeps_kept_pixels_and_fills_flat_regions():
    img = np.full((40, 40, 3), 60.0, np.float32)
    holes = lattice_holes(img.shape[:2], 4, (1, 1))
    corrupted = np.where(holes[..., None], 255.0, img)  # hole values must never be read
    filled = inpaint(corrupted, holes, method="tv", lam=2.0, iterations=300)
    assert np.array_equal(filled[~holes], img[~holes])
    assert np.abs(filled[holes] - 60.0).max() < 1e-2  # a constant image is filled exactly
    img[:, 20:] = 180.0  # a vertical step
    corrupted = np.where(holes[..., None], 255.0, img)
    filled = inpaint(corrupted, holes, method="tv", lam=2.0, iterations=300)
    assert np.array_equal(filled[~holes], img[~holes])
    flat = holes.copy()
    flat[:, 17:23] = False
    # TV with a soft data term lowers a step's contrast by about lam / width (2/20 = 0.1 level)
    assert np.abs(filled[flat] - img[flat]).max() < 0.5
    step = holes.copy()
    step[:, :19] = step[:, 21:] = False
    assert np.all((filled[step] > 60.0) & (filled[step] < 180.0))


def test_every_pixel_is_reconstructed_from_its_neighbours_only():
    # a lone bright pixel on a flat image disappears: its own value never reaches the output
    img = np.full((30, 30), 100.0, np.float32)
    img[13, 17] = 250.0
    for method in ("l2", "tv"):
        out = inpaint_anonymize(img, step=3, method=method, lam=0.1 if method == "l2" else 2.0)
        assert out[13, 17] < 130.0, method


def test_edge_preserving_step_puts_the_denoised_original_on_edges(real_crops):
    from dippas_core.edges import edge_mask

    photo, _ = real_crops[0]
    plain = inpaint_anonymize(photo, method="l2", lam=0.1)
    kept = inpaint_anonymize(photo, method="l2", lam=0.1, edge_preserve=True)
    edges = edge_mask(photo)
    assert 0 < edges.mean() < 0.6
    np.testing.assert_array_equal(kept[edges], wavelet_denoise(photo, passes=2)[edges])
    np.testing.assert_array_equal(kept[~edges], plain[~edges])


def test_subtraction_alpha_minimises_abs_ncc_against_a_brute_force_grid(real_crops):
    photo, K = real_crops[1]
    photo = photo[:64, :64]
    K = K[:64, :64]
    fit = subtraction_alpha(photo, K)
    assert fit.alpha > 0 and abs(fit.ncc_after) < 0.2 * abs(fit.ncc_before)
    # brute force: the same 8-bit images (rounded), many weights around the one found
    img = photo.astype(np.float32)
    grid_abs = []
    for a in np.linspace(0.0, 3.0 * fit.alpha, 61):
        out = np.rint(np.clip(img - a * img * K[..., None], 0, 255))
        grid_abs.append(abs(ncc(residual(out), out, K)))
    # NCC of a rounded image is a step function of alpha: allow 5 % of the untouched NCC
    assert abs(fit.ncc_after) <= min(grid_abs) + 0.05 * abs(fit.ncc_before)
    # and the image it makes is the one scored, with integer levels
    out = subtract_fingerprint(photo, K, alpha=fit.alpha)
    assert np.array_equal(out, np.rint(out))
    assert abs(ncc(residual(out), out, K) - fit.ncc_after) < 1e-9


def test_a_negative_ncc_gets_a_negative_weight(real_crops):
    photo, K = real_crops[1]
    photo, K = photo[:64, :64], -K[:64, :64]  # the wrong sign: the NCC is negative
    fit = subtraction_alpha(photo, K)
    assert fit.ncc_before < 0 and fit.alpha < 0
    assert abs(fit.ncc_after) < 0.2 * abs(fit.ncc_before)


def test_baselines_reject_bad_input(real_crops):
    photo, K = real_crops[0]
    with pytest.raises(InputError, match="fingerprint is 64×64 but the photo is 128×128"):
        subtract_fingerprint(photo, K[:64, :64])
    with pytest.raises(InputError, match="grid step"):
        inpaint_anonymize(photo[:5, :5], step=3)
    with pytest.raises(InputError, match="unknown inpainting method"):
        inpaint_anonymize(photo, method="l3")
    with pytest.raises(InputError, match="NaN"):
        wavelet_denoise(np.full((8, 8), np.nan))
    with pytest.raises(InputError, match="lam"):
        inpaint_anonymize(photo, lam=-1.0)
