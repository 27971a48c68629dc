"""Fidelity measures (dippas_core.fidelity) against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dippas_core.errors import InputError, ShapeMismatchError
from dippas_core.fidelity import (
    BARS,
    Fidelity,
    bars_for,
    checkerboard_energy,
    colour_shift,
    fidelity,
    grid_lines,
    seam_ratio,
    share_off,
    ssim,
    window_starts,
)


@pytest.fixture
def photo(rng) -> np.ndarray:
    """A smooth 64×64 colour ramp with some noise, 0..255 floats (a realistic flat region)."""
    yy, xx = np.mgrid[0:64, 0:64]
    base = np.stack([60 + xx, 80 + yy, 100 + 0.5 * (xx + yy)], axis=-1).astype(np.float64)
    return np.clip(base + rng.normal(0, 2, base.shape), 0, 255)


def test_an_unchanged_image_is_perfect(photo):
    f = fidelity(photo, photo.copy(), block=32)
    assert f.psnr == math.inf and f.ssim == pytest.approx(1.0)
    assert f.max_abs == 0 and f.share_off == 0 and f.colour_shift == 0
    assert f.seam_ratio is None or f.seam_ratio == 1.0
    assert f.checkerboard == 0
    assert f.failures() == []
    assert f.to_dict()["psnr"] is None  # JSON has no inf


def test_stuck_pixels_are_seen_by_max_abs_and_share_off_not_by_psnr(photo):
    out = photo.copy()
    out[10:12, 20:22, 2] = 254.0  # four saturated blue pixels, as in the demo of issue 22
    f = fidelity(photo, out)
    expected_max = float(np.max(254.0 - photo[10:12, 20:22, 2]))
    assert f.max_abs == pytest.approx(expected_max)
    assert f.share_off == pytest.approx(4 / 64**2)
    assert f.psnr > 30  # PSNR hardly notices: the point of the other measures
    fails = f.failures()
    assert any(x.startswith("max_abs") for x in fails)
    assert any(x.startswith("share_off") for x in fails)


def test_share_off_counts_pixels_not_channels():
    d = np.zeros((10, 10, 3))
    d[0, 0] = [25, -25, 30]  # one pixel, three channels off
    d[1, 1, 0] = 20.0  # exactly 20 is not "more than 20"
    assert share_off(d) == pytest.approx(1 / 100)


def test_colour_shift_is_the_largest_window_mean_of_one_channel():
    d = np.zeros((40, 40, 3))
    d[5:21, 7:23, 1] = 3.0  # a 16×16 green tint of 3 levels
    d[30:40, 30:40, 0] = -6.0  # a 10×10 red one: 100 of a window's 256 pixels
    assert colour_shift(d) == pytest.approx(3.0)
    d[5:21, 7:23, 1] = 0
    assert colour_shift(d) == pytest.approx(6.0 * 100 / 256)
    # an image smaller than the window is one window: its mean
    small = np.full((8, 12, 3), 1.5)
    assert colour_shift(small) == pytest.approx(1.5)


def test_colour_shift_of_noise_is_small_of_a_tint_is_not(rng):
    noise = rng.normal(0, 5, (128, 128, 3))
    assert colour_shift(noise) < 2.0  # 5 / 16 per window, a few sigma at most
    tinted = noise.copy()
    tinted[64:, 64:] += [0, 3, -3]
    assert colour_shift(tinted) > 2.5


def test_grid_lines_of_blocks_and_tiles():
    assert grid_lines((128, 128), 64) == ([64], [64])
    assert grid_lines((100, 130), 32) == ([32, 64, 96], [32, 64, 96, 128])
    assert grid_lines((128, 128), None) == ([], [])
    # two tiles side by side overlapping by 16, B = 32 inside each
    rows, cols = grid_lines((48, 80), 32, [(0, 0, 48, 48), (0, 32, 48, 48)])
    assert rows == [32]
    assert cols == [32, 48, 64]


def test_seam_ratio_by_hand():
    d = np.zeros((4, 6, 1))
    d[:, 3:, 0] = 2.0  # a step of 2 at column 3
    d[:, 5:, 0] = 2.5  # a step of 0.5 at column 5
    d[:, 1, 0] = 1.0  # and a bump at column 1: jumps of 1 at columns 1 and 2
    # vertical lines 1..5 jump [1, 1, 2, 0, 0.5]; no horizontal seam, so no row is compared
    assert seam_ratio(d, [], [3], period=1) == pytest.approx(2.0 / ((1 + 1 + 0 + 0.5) / 4))
    # period 2: column 3 is compared with columns 1 and 5 only
    assert seam_ratio(d, [], [3], period=2) == pytest.approx(2.0 / ((1 + 0.5) / 2))
    assert seam_ratio(d, [], []) is None


def test_seam_ratio_compares_with_the_jpeg_grid_not_all_lines(rng):
    # a JPEG-like photo change: jumps every 8 pixels, larger ones every 16 (the macroblocks);
    # block edges at 64 sit on that grid
    yy, xx = np.mgrid[0:128, 0:128]
    stairs = 3.0 * (xx // 8 + yy // 8) + 2.0 * (xx // 16 + yy // 16)  # jumps of 3, 5 on 16s
    d = rng.normal(0, 1, (128, 128, 3)) + stairs[..., None]
    lines = grid_lines(d.shape, 64)
    assert seam_ratio(d, *lines) == pytest.approx(1.0, abs=0.25)
    assert seam_ratio(d, *lines, period=1) > 2  # against every line the JPEG grid looks a seam
    assert seam_ratio(d, *lines, period=8) > 1.25  # the macroblock edges jump more


def test_seam_ratio_sees_tinted_blocks(rng):
    d = rng.normal(0, 3, (128, 128, 3))
    plain = seam_ratio(d, *grid_lines(d.shape, 64))
    assert plain == pytest.approx(1.0, abs=0.1)
    tinted = d.copy()
    tinted[:64, :64] += 4.0
    tinted[64:, 64:] -= 4.0
    assert seam_ratio(tinted, *grid_lines(d.shape, 64)) > BARS["seam_ratio"]


def test_checkerboard_energy_sees_a_pixel_period_pattern(rng):
    yy, xx = np.mgrid[0:128, 0:128]
    smooth_change = np.repeat((3 * np.cos(yy / 15.0))[..., None], 3, axis=2)
    assert checkerboard_energy(smooth_change) < 0.01
    white = rng.normal(0, 3, (128, 128, 3))
    assert checkerboard_energy(white) == pytest.approx(1.0, abs=0.5)
    disc = ((yy - 40) ** 2 + (xx - 90) ** 2 < 15**2).astype(float)
    board = (6.0 * (-1.0) ** (xx + yy) * disc)[..., None].repeat(3, axis=2)
    assert checkerboard_energy(white + board) > 5
    lines = (4.0 * (-1.0) ** xx)[..., None].repeat(3, axis=2)  # a column-period grid
    assert checkerboard_energy(white + lines) > 5
    assert checkerboard_energy(np.full((64, 64, 3), 7.0)) == 0.0


def test_checkerboard_energy_by_hand_on_one_window():
    # a pure (½, ½) checkerboard: every bit of energy in the band
    yy, xx = np.mgrid[0:64, 0:64]
    board = ((-1.0) ** (xx + yy))[..., None]
    spec_band_share = 1.0  # all of the energy
    radius = 2  # 64 / 32
    fy = np.abs(np.fft.fftfreq(64) * 64)
    ny, zero = np.abs(fy - 32) <= radius, fy <= radius
    band = (
        (ny[:, None] & ny[None, :]) | (ny[:, None] & zero[None, :]) | (zero[:, None] & ny[None, :])
    )
    share = spec_band_share / band.mean()
    # at ±4 levels it counts in full (the Hann taper leaks a few parts in 1e5 outside the band)
    assert checkerboard_energy(4.0 * board) == pytest.approx(share, rel=1e-4)
    # fainter than ±2 levels, the part above 1 in proportion to the energy beyond a flat
    # spectrum's share: amplitude² / 2² · (1 − 1/share)
    for amplitude in (1.0, 0.5):
        faint = 1.0 + (share - 1.0) * amplitude**2 / 4.0 * (1.0 - 1.0 / share)
        assert checkerboard_energy(amplitude * board) == pytest.approx(faint, rel=1e-3)
    assert checkerboard_energy(1.0 * board) > BARS["checkerboard"]  # ±1 level on a flat: seen
    assert checkerboard_energy(0.25 * board) < BARS["checkerboard"]  # a quarter level: not


def test_checkerboard_energy_does_not_depend_on_where_the_grid_begins(rng):
    # a patch of pixel-period lines centred on a window corner of a grid a whole window apart
    # was split over four windows, each diluting it; half a window apart, one window holds it
    white = rng.normal(0, 1, (192, 192, 3))
    yy, xx = np.mgrid[0:192, 0:192]
    patch = ((np.abs(yy - 64) < 12) & (np.abs(xx - 64) < 12)) * 6.0 * (-1.0) ** xx
    moved = ((np.abs(yy - 96) < 12) & (np.abs(xx - 96) < 12)) * 6.0 * (-1.0) ** xx
    on_corner = checkerboard_energy(white + patch[..., None])
    inside = checkerboard_energy(white + moved[..., None])
    assert on_corner > BARS["checkerboard"]
    assert on_corner == pytest.approx(inside, rel=0.25)
    assert window_starts(192, 64) == [0, 32, 64, 96, 128]
    assert window_starts(100, 64) == [0, 32, 36]  # the last ends at the border
    assert window_starts(40, 64) == [0]


def test_checkerboard_holds_a_change_against_the_photos_own_fine_detail(rng):
    # a lattice in the scene (the photo's own detail at the pixel period) and a change that
    # follows it — the fit giving back a little less of it — is no pattern of the anonymizer's;
    # the same change on a sky, where the photo has none, is
    from dippas_core.fidelity import _white_share, checker_reference

    yy, xx = np.mgrid[0:128, 0:128]
    sky = 120 + 10 * np.sin(yy / 40.0)[..., None] + rng.normal(0, 2, (128, 128, 3))
    pattern = ((-1.0) ** (yy + xx) * (xx > 40))[..., None] * np.array([25.0, 20.0, 15.0])
    lattice = sky + pattern
    follows = -0.1 * pattern + rng.normal(0, 1.0, sky.shape)
    assert np.all(checker_reference(sky) == 1.0)  # noise-like detail: a flat spectrum
    assert checker_reference(lattice).max() > 10
    alone = checkerboard_energy(follows)
    assert alone > BARS["checkerboard"]  # against a flat spectrum it reads as a checkerboard
    assert checkerboard_energy(follows, photo=lattice) < BARS["checkerboard"]
    assert checkerboard_energy(follows, photo=sky) == pytest.approx(alone)
    assert fidelity(lattice, lattice + follows).checkerboard == pytest.approx(
        checkerboard_energy(follows.astype(np.float32), photo=lattice), rel=1e-4)
    assert fidelity(sky, sky + follows).checkerboard > BARS["checkerboard"]
    # the reference by hand on one window: the high band's share over white noise's through
    # the same high-pass, which a long white-noise draw reproduces
    noise = rng.normal(0, 10, (64, 64, 3))
    from scipy.ndimage import gaussian_filter

    high = noise - gaussian_filter(noise, (1.0, 1.0, 0), mode="mirror", truncate=3.0)
    by_hand = _nyquist_share_of(high) / _white_share(64, 64, 2, 1.0)
    assert by_hand == pytest.approx(1.0, abs=0.35)
    assert checker_reference(noise)[0] == max(1.0, by_hand / 1.5) == 1.0
    # the lattice's last window by hand (filtered alone: its top and left 3 px differ a little
    # from the whole image's filter, where the Hann taper is all but zero)
    assert checker_reference(lattice)[-1] == pytest.approx(
        _nyquist_share_of(lattice[64:, 64:] - gaussian_filter(
            lattice[64:, 64:], (1.0, 1.0, 0), mode="mirror", truncate=3.0)) / (
            1.5 * _white_share(64, 64, 2, 1.0)), rel=1e-6)


def test_checker_reference_window_by_window_is_the_whole_images_filter(rng):
    # each window is high-passed with its own 3-px margin (a whole photo is never copied as
    # float64): the same numbers as filtering the whole image first, borders included
    from scipy.ndimage import gaussian_filter

    from dippas_core.fidelity import (
        _nyquist_share,
        _white_share,
        checker_reference,
        checker_windows,
    )

    yy, xx = np.mgrid[0:150, 0:170]
    photo = rng.uniform(0, 255, (150, 170, 3)) + 30 * ((-1.0) ** (yy + xx) * (xx > 80))[..., None]
    high = photo - gaussian_filter(photo, (1.0, 1.0, 0), mode="mirror", truncate=3.0)
    corners, wy, wx, radius = checker_windows(photo.shape, 64)
    whole = np.maximum(1.0, np.array(
        [_nyquist_share(high[y : y + wy, x : x + wx], radius) for y, x in corners])
        / _white_share(wy, wx, radius, 1.0) / 1.5)
    np.testing.assert_array_equal(checker_reference(photo), whole)
    assert whole.max() > 2 and whole.min() == 1.0  # the lattice's windows and the noise's


def _nyquist_share_of(x: np.ndarray) -> float:
    """The Nyquist share of one 64×64 window by hand: Hann taper, mean removed, radius 2."""
    taper = np.outer(np.hanning(64), np.hanning(64))[..., None]
    spec = np.abs(np.fft.fft2((x - x.mean(axis=(0, 1))) * taper, axes=(0, 1))) ** 2
    f = np.abs(np.fft.fftfreq(64) * 64)
    ny, zero = np.abs(f - 32) <= 2, f <= 2
    band = ((ny[:, None] & ny[None, :]) | (ny[:, None] & zero[None, :])
            | (zero[:, None] & ny[None, :]))
    return float(spec[band].sum() / spec.sum() / band.mean())


def test_ssim_in_strips_is_scikit_images(rng):
    from skimage.metrics import structural_similarity

    a = rng.uniform(0, 255, (1100, 40, 3))  # taller than a strip: several strips
    b = np.clip(a + rng.normal(0, 10, a.shape), 0, 255)
    ref = structural_similarity(a, b, data_range=255.0, channel_axis=-1)
    assert ssim(a, b) == pytest.approx(ref, rel=1e-9)


def test_bad_input_is_named(photo):
    with pytest.raises(ShapeMismatchError, match="fidelity compares"):
        fidelity(photo, photo[:32])
    bad = photo.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        fidelity(photo, bad)


def test_bars_are_fields_and_failures_name_them():
    assert set(BARS) <= {f for f in Fidelity.__dataclass_fields__}
    f = Fidelity(psnr=37.0, ssim=0.9, max_abs=10, share_off=0, colour_shift=2.5,
                 seam_ratio=None, checkerboard=1.0)
    assert f.failures() == ["psnr 37 < 38", "colour_shift 2.5 > 2"]
    # a preset with its own lower threshold (tiny: 31 dB) is held to that; the others stay
    assert f.failures(bars_for(31.0)) == ["colour_shift 2.5 > 2"]
    assert bars_for(38.5) == BARS and bars_for(None) == BARS
    assert f.failures(bars_for(37.5)) == ["psnr 37 < 37.5", "colour_shift 2.5 > 2"]
    # a pixel-period grid of lines in a quiet area (as a whole photo's dark tile showed) breaks
    # the checkerboard bar; the photo's own noise-like change does not
    rng = np.random.default_rng(3)
    photo = np.clip(rng.normal(60, 4, (128, 128, 3)), 0, 255)
    lines = photo + 3.0 * (-1.0) ** np.mgrid[0:128, 0:128][0][..., None]
    assert any(m.startswith("checkerboard") for m in fidelity(photo, lines).failures())
    grain = photo + rng.normal(0, 3, photo.shape)
    assert not any(m.startswith("checkerboard") for m in fidelity(photo, grain).failures())


def test_seam_ratio_holds_a_seam_line_against_the_photos_own_edge(rng):
    # a photo with an edge along column 64 (a block edge); an output that follows it softer
    # changes most there, without any seam: held against the photo's own jump there (×4 the
    # other lines'), that line counts a quarter
    photo = rng.normal(100, 1, (128, 128, 3))
    photo[:, 64:] += 8.0  # the photo jumps by ~8.5 across column 64, ~1.1 elsewhere
    d = rng.normal(0, 1, photo.shape)
    d[:, 63] += 1.5  # the output softens the edge: Δ steps across it
    d[:, 64] -= 1.5
    lines = grid_lines(d.shape, 64)
    jumps_c = np.abs(np.diff(d, axis=1)).mean(axis=(0, 2))
    jumps_r = np.abs(np.diff(d, axis=0)).mean(axis=(1, 2))
    own_c = np.abs(np.diff(photo, axis=1)).mean(axis=(0, 2))
    own_r = np.abs(np.diff(photo, axis=0)).mean(axis=(1, 2))
    same = [16, 32, 48, 80, 96, 112]  # lines of the same phase mod 16, in both directions

    def held(jumps, own):  # line 64's jump over max(1, the photo's own jump there, relative)
        return jumps[63] / max(1.0, own[63] / np.mean([own[v - 1] for v in same]))

    assert own_c[63] / np.mean([own_c[v - 1] for v in same]) > 4
    off = np.mean([jumps_c[c - 1] for c in same] + [jumps_r[r - 1] for r in same])
    by_hand = (held(jumps_c, own_c) + held(jumps_r, own_r)) / 2 / off
    assert seam_ratio(d, *lines, photo=photo) == pytest.approx(by_hand, rel=1e-6)
    assert seam_ratio(d, *lines) > BARS["seam_ratio"]  # without the photo: a "seam"
    assert seam_ratio(d, *lines, photo=photo) < BARS["seam_ratio"]
    # where the photo has no edge on the line its reference is 1: nothing changes
    flat = rng.normal(100, 1, photo.shape)
    assert seam_ratio(d, *lines, photo=flat) == pytest.approx(seam_ratio(d, *lines), rel=0.05)
    # a tint between blocks beside the photo's edge still reads as a seam (its row line)
    tinted = d.copy()
    tinted[:64] += 4.0
    assert seam_ratio(tinted, *lines, photo=photo) > BARS["seam_ratio"]
