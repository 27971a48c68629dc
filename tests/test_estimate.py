"""The estimate of a photo run: iterations from each tile's content, on injected timings."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from dippas_core.config import AnonymizeConfig
from dippas_core.cost import (
    ITERATION_MODEL,
    CostEstimate,
    _predicted,
    expected_iterations,
    plan_cost,
    predicts_iterations,
    start_psnr,
    tile_iterations,
)
from dippas_core.errors import InputError


def _config(**changes):
    base = dict(zero_head=True, low_pass_sigma=3.0, output="linear", tile_size=64, overlap=32,
                stop_psnr=39.0, record_psnr=38.5, max_iter=1500)
    return AnonymizeConfig.preset("cpu", **{**base, **changes})


def test_start_psnr_is_the_low_bands_own():
    flat = np.full((32, 32, 3), 128, np.uint8)
    assert start_psnr(flat, 3.0) == math.inf
    yy, xx = np.mgrid[0:64, 0:64]
    board = 128 + 10.0 * (-1.0) ** (xx + yy)  # all of it above the low band's frequencies
    tile = np.repeat(board[..., None], 3, axis=2)
    # the low band of a ±10 checkerboard is (almost exactly) flat grey: the error is the board
    assert start_psnr(tile, 3.0) == pytest.approx(10 * math.log10(255**2 / 100.0), abs=0.01)


def test_expected_iterations_grow_with_the_gap_and_stay_in_bounds():
    config = _config()
    # a low band well above the stop is good enough at once; a little above, detail must come back
    above = ITERATION_MODEL["offset"]
    assert expected_iterations(39.0 + above, config) == 1
    assert expected_iterations(60.0, config) == 1
    assert expected_iterations(39.0 + above / 2, config) > 1
    its = [expected_iterations(39.0 - gap, config) for gap in (1, 3, 6, 10, 15)]
    assert its == sorted(its) and len(set(its)) == len(its)
    gap = 10.0
    assert its[-2] == round(ITERATION_MODEL["scale"] * (gap + above) ** ITERATION_MODEL["power"])
    assert expected_iterations(-100.0, config) == config.dip.max_iter


def test_prediction_on_injected_timings_adds_up(rng):
    config = _config()
    photo = np.clip(128 + rng.normal(0, 8, (96, 160, 3)), 0, 255).astype(np.uint8)
    photo[:, :64] = 100  # flat tiles on the left
    planned = plan_cost(photo.shape, config)
    timed = dataclasses.replace(planned, seconds_per_iteration=0.25, tiles_per_step=2)
    est = _predicted(timed, photo, config, setup=1.5)
    assert est.predicted and len(est.tile_iterations) == planned.n_tiles
    from dippas_core.tiling import plan_tiles

    plan = plan_tiles(photo.shape[:2], config.tile_size, config.overlap)
    for t in plan.tiles:
        its = expected_iterations(start_psnr(photo[t.slices], 3.0), config)
        assert est.tile_iterations[t.index] == its
        # a tile in a batch of two: two tiles' worth of time per iteration
        assert est.tile_seconds[t.index] == pytest.approx(1.5 + its * 0.25 * 2)
    assert est.seconds == pytest.approx(sum(est.tile_seconds.values()) / 2)
    assert est.low_s == pytest.approx(est.seconds * ITERATION_MODEL["low"])
    assert est.high_s == pytest.approx(est.seconds * ITERATION_MODEL["high"])
    assert est.tile_iterations[0] == 1  # the flat corner
    # the viewer's ETA reads the same per-tile figures (no timing needed)
    assert tile_iterations(photo, config) == est.tile_iterations
    assert tile_iterations(photo, config, first=2) == {
        i: n for i, n in est.tile_iterations.items() if i >= 2}
    assert "expected from their content" in est.text


def test_a_resumed_run_counts_only_the_tiles_left(rng):
    config = _config()
    photo = np.clip(128 + rng.normal(0, 8, (96, 160, 3)), 0, 255).astype(np.uint8)
    planned = plan_cost(photo.shape, config, n_tiles=3)
    est = _predicted(dataclasses.replace(planned, seconds_per_iteration=0.1), photo, config, 0.0)
    n = plan_cost(photo.shape, config).n_tiles
    assert sorted(est.tile_iterations) == list(range(n - 3, n))


def test_only_fits_from_the_low_band_are_predicted():
    assert predicts_iterations(_config())
    assert not predicts_iterations(_config(zero_head=False))
    assert not predicts_iterations(AnonymizeConfig.preset("paper"))
    # an upper bound then: every tile to max_iter
    est = CostEstimate(n_tiles=4, iterations=100, tile_shape=(64, 64), pixels=1,
                       device="cpu", seconds_per_iteration=0.5)
    assert not est.predicted and est.seconds == est.high_s == 4 * 100 * 0.5


def test_the_iteration_model_fitted_to_tiles_gives_their_mean_and_their_total(rng):
    # tiles drawn from a known model with a heavy spread at each gap (a gamma-Poisson mixture,
    # as real tiles are): the fit finds the model and its total is the tiles' total, where a fit
    # of the logs (the median) would fall short
    from dippas_core.cost import fit_iteration_model, iterations_for_gap

    truth = {"scale": 12.0, "power": 1.5, "offset": 2.0}
    gaps = rng.uniform(-6.0, 12.0, 4000)
    mean = np.array([iterations_for_gap(g, 10**9, truth) for g in gaps], float)
    its = np.maximum(1, rng.poisson(mean * rng.gamma(1.0, 1.0, gaps.size)))
    model = fit_iteration_model(gaps, its)
    assert model["power"] == pytest.approx(1.5, abs=0.15)
    assert model["offset"] == pytest.approx(2.0, abs=0.75)
    predicted = np.array([iterations_for_gap(g, 10**9, model) for g in gaps])
    assert predicted.sum() == pytest.approx(its.sum(), rel=0.01)
    logs = np.polyfit(np.log(gaps[gaps > -1.0] + 2.0), np.log(its[gaps > -1.0]), 1)
    median_fit = np.exp(logs[1]) * (gaps[gaps > -1.0] + 2.0) ** logs[0]
    assert median_fit.sum() < 0.8 * its[gaps > -1.0].sum()  # why the mean is fitted
    assert model["low"] < 1.0 < model["high"]  # the per-tile spread
    with pytest.raises(InputError, match="iterations"):
        fit_iteration_model([1.0, 2.0], [3])
    with pytest.raises(InputError, match="too few"):
        fit_iteration_model([-20.0, -30.0, 5.0], [1, 1, 40])


def test_a_resume_predicts_the_tiles_left_wherever_they_lie(rng, tmp_path, monkeypatch):
    # a run folder that lost a tile in the middle (a damaged record removed) runs that tile:
    # the estimate predicts its content, not the plan's last tile's
    from dippas_core import cost
    from dippas_core.job import prepare

    config = _config()
    photo = np.clip(128 + rng.normal(0, 8, (96, 160, 3)), 0, 255).astype(np.uint8)
    photo[:, 96:] = 100  # the plan's last tiles are flat, the first ones noisy
    planned = plan_cost(photo.shape, config, n_tiles=2)
    est = _predicted(dataclasses.replace(planned, seconds_per_iteration=0.1), photo, config, 0.0,
                     tiles=[0, 1])
    assert est.tile_iterations == tile_iterations(photo, config, indices=[0, 1])
    n = plan_cost(photo.shape, config).n_tiles
    assert est.tile_iterations != tile_iterations(photo, config, first=n - 2)  # not the last two
    done = tmp_path / "run" / "done"
    done.mkdir(parents=True)
    for i in range(2, n):
        (done / f"{i:04d}.npz").write_bytes(b"")  # names only: prepare counts, reads nothing
    job = prepare(photo, None, config, run_dir=tmp_path / "run")
    assert job.done_tiles == frozenset(range(2, n)) and job.n_todo == 2
    seen = {}

    def predicted(timed, photo, config, setup, tiles=None):
        seen["tiles"] = tiles
        return timed

    monkeypatch.setattr(cost, "_predicted", predicted)
    assert job.estimate().n_tiles == 2  # (a few iterations timed at 64 px)
    assert seen["tiles"] == [0, 1]
