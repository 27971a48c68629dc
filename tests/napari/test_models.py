"""Model tests: the widgets' logic without a viewer (throttling, job state, layers, verdicts)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_dippas._layers import (
    block_heatmap_layer,
    block_placement,
    fingerprint_layer,
    symmetric_limits,
)
from napari_dippas._models import (
    AnonymizeJob,
    AnonymizeSettings,
    RunHistory,
    StepSummary,
    StepThrottle,
    attribute,
    attribution_verdict,
)


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _steps(n: int, start: int = 1, kept_from: int = 10**9) -> list[StepSummary]:
    return [
        StepSummary(i, 1.0 / i, 10.0 + i / 10, i / 1000, i >= kept_from)
        for i in range(start, start + n)
    ]


def test_throttle_signals_at_most_every_interval_and_loses_nothing():
    clock = FakeClock()
    throttle = StepThrottle(0.1, clock=clock)
    received, signal_times = [], []
    for i in range(1000):  # the worker: one item per millisecond for one second
        clock.t = i * 0.001
        if throttle.offer(i):
            signal_times.append(clock.t)
            received.extend(throttle.take())  # a GUI that handles the signal at once
    if throttle.close():
        received.extend(throttle.take())
    assert received == list(range(1000))  # order kept, nothing lost or repeated
    assert np.min(np.diff(signal_times)) >= 0.1 - 1e-9
    assert len(signal_times) <= 11
    assert throttle.take() == [] and not throttle.close()


def test_throttle_never_queues_a_second_signal_for_a_slow_gui():
    clock = FakeClock()
    throttle = StepThrottle(0.1, clock=clock)
    signals = 0
    for i in range(100):  # the GUI is busy for the whole second: it never takes
        clock.t = i * 0.01
        signals += throttle.offer(i)
    assert signals == 1  # one signal in flight, not ten waiting in the event queue
    assert not throttle.close()  # the signal in flight will collect the rest
    assert throttle.take() == list(range(100))
    clock.t = 2.0
    assert throttle.offer(100) and throttle.take() == [100]


def test_job_folds_batches_and_describes_itself():
    job = AnonymizeJob()
    seen = []
    job.events.iteration.connect(seen.append)
    job.start(max_iter=200, run_dir="/tmp/x")
    job.apply(_steps(30, kept_from=25))
    job.apply(_steps(20, start=31, kept_from=25))
    assert job.iteration == 50 and job.n_snapshots == 6 + 20
    assert job.best_psnr == pytest.approx(15.0)
    assert job.progress == pytest.approx(0.25)
    assert seen == [30, 50]  # one event per batch, not per step
    assert "iteration 50/200" in job.describe() and "26 snapshots" in job.describe()
    job.update({"status": "cancelled", "stop_reason": "cancelled"})
    assert job.describe().startswith("Done (stopped by the user)")
    job.update({"status": "failed", "message": "photo is 64×64, fingerprint 32×32"})
    assert "64×64" in job.describe()


def test_history_curves_and_ncc_points():
    history = RunHistory()
    changes = []
    history.changed.connect(lambda: changes.append(1))
    history.extend(_steps(5))
    history.add_ncc([(3, 0.01), (5, -0.002)])
    history.add_ncc([])
    assert len(history) == 5 and len(changes) == 2
    np.testing.assert_array_equal(history.column("iteration"), [1, 2, 3, 4, 5])
    it, v = history.ncc
    np.testing.assert_array_equal(it, [3, 5])
    np.testing.assert_allclose(v, [0.01, -0.002])
    history.load({"iteration": np.arange(1, 4), "psnr": np.ones(3), "gamma": np.zeros(3),
                  "loss": np.ones(3)})
    assert len(history) == 3 and history.ncc[0].size == 0
    # a run recorded before gamma* existed: the curve is there, all NaN
    assert np.isnan(history.column("gamma_star")).sum() == 3


def test_settings_map_onto_the_preset():
    from dippas_core.config import AnonymizeConfig

    settings = AnonymizeSettings()
    settings.use_preset("tiny")
    settings.update({"seed": 7, "record_psnr": 20.0, "stop_psnr": 25.0, "max_iter": 42})
    # the preset and what the user changed: nothing else
    assert settings.anonymize_config() == AnonymizeConfig.preset(
        "tiny", seed=7, record_psnr=20.0, stop_psnr=25.0, max_iter=42
    )
    settings.use_preset("paper")  # a preset brings back its own values (the seed is kept)
    assert settings.anonymize_config() == AnonymizeConfig.preset("paper", seed=7)


def test_viewer_defaults_are_the_cli_cpu_preset():
    from dippas_core.config import AnonymizeConfig

    assert AnonymizeSettings().anonymize_config() == AnonymizeConfig.preset("cpu")


def test_symmetric_limits():
    assert symmetric_limits(np.array([[-0.2, 0.05], [0.1, np.nan]])) == (-0.2, 0.2)
    lo, hi = symmetric_limits(np.zeros((3, 3)))
    assert lo == -hi and hi > 0
    values = np.r_[np.linspace(-1, 1, 999), 100.0]
    assert symmetric_limits(values, 99.0)[1] < 2.0  # one outlier does not set the scale


@pytest.mark.parametrize("B", [16, 32, 64])
def test_heatmap_cells_sit_over_their_blocks(B):
    H, W = 3 * B - 5, 2 * B  # a smaller edge block
    values = np.arange(6, dtype=np.float32).reshape(3, 2) - 2.5
    # without the image's shape the map is drawn one B×B cell per block (with it the cells end
    # exactly at the photo: tests/napari/test_regions.py); limit=None: the map's own scale
    data, kwargs, kind = block_heatmap_layer(values, B, limit=None, stage="before")
    scale, translate = block_placement(B)
    assert kind == "image" and kwargs["scale"] == scale and kwargs["translate"] == translate
    for i in range(3):
        for j in range(2):
            # napari: world = translate + index * scale; the cell spans ±scale/2 around it
            centre = np.add(translate, np.multiply((i, j), scale))
            first, last = centre - np.divide(scale, 2) + 0.5, centre + np.divide(scale, 2) - 0.5
            np.testing.assert_allclose(first, (i * B, j * B))  # first pixel of block (i, j)
            np.testing.assert_allclose(last, (i * B + B - 1, j * B + B - 1))
    lo, hi = kwargs["contrast_limits"]
    assert lo == -hi == -2.5
    meta = kwargs["metadata"]["dippas"]
    np.testing.assert_array_equal(meta["values"], values)
    assert meta["block_size"] == B and "image_shape" not in meta
    _, kwargs, _ = block_heatmap_layer(values, B, image_shape=(H, W))
    assert kwargs["metadata"]["dippas"]["image_shape"] == (H, W)
    assert kwargs["colormap"] == "RdBu_r"


def test_fingerprint_layer_is_diverging_and_symmetric(small):
    _, fp = small
    _, kwargs, _ = fingerprint_layer(fp.K, camera=fp.camera)
    lo, hi = kwargs["contrast_limits"]
    assert lo == -hi > -np.abs(fp.K).max() - 1e-9
    assert kwargs["metadata"]["dippas"]["camera"] == fp.camera


def test_verdict_words():
    assert attribution_verdict("PCE", 812.0, 60.0).startswith("Match")
    assert attribution_verdict("PCE", 12.0, 60.0).startswith("No match")
    assert "threshold 0.01" in attribution_verdict("NCC", 0.002, 0.01)
    assert attribution_verdict("NCC", float("nan"), 0.01).startswith("No verdict")


def test_attribution_tells_the_right_camera_from_another(sample):
    from dippas_core.correlation import ncc

    photo, fp = sample
    right = attribute(photo, fp.K, block_size=64)
    wrong_K = np.roll(fp.K, (17, 29), axis=(0, 1))  # a fingerprint unrelated to this photo
    wrong = attribute(photo, wrong_K, block_size=64, W=right.residual)
    # a 256×256 crop: its own camera's PCE (≈35) is below the whole-photo level 60 but far
    # above chance (≈ chi-square with one degree of freedom)
    assert right.pce > 25 > abs(wrong.pce)
    assert right.ncc > 3 * abs(wrong.ncc)
    assert right.ncc == pytest.approx(ncc(right.residual, photo, fp.K))
    assert right.block_ncc.shape == (4, 4)
    # most blocks of the right camera correlate positively
    assert (right.block_ncc > 0).mean() > 0.7


def test_attribution_names_a_size_mismatch(sample):
    from dippas_core.errors import ShapeMismatchError

    photo, fp = sample
    with pytest.raises(ShapeMismatchError, match="256"):
        attribute(photo[:128], fp.K)


def test_a_finished_run_shows_its_fidelity_beside_psnr(sample):
    """The Anonymize dock's status: the image's PSNR and fidelity from its report (the bars it
    breaks named); nothing for a stopped photo run, whose image is not shown."""
    from dippas_core.fidelity import describe, fidelity
    from dippas_core.report import AnonymizationReport, measure
    from napari_dippas._run_job import record_end

    photo, fp = sample
    out = photo.astype(np.float32)
    out[10:12, 20:22, 2] = 255.0  # stuck pixels
    out = np.clip(out + np.random.default_rng(0).normal(0, 1.0, out.shape), 0, 255)
    measured, _ = measure(photo, out, fp.K, 64)
    report = AnonymizationReport.of(**measured, inversion={"stop_reason": "psnr"}).to_dict()
    job = AnonymizeJob()
    job.start(max_iter=10)
    record_end(job, report, "/tmp/run")
    direct = fidelity(photo, out, block=64)
    assert job.status == "finished"
    assert job.result == (f"Result: PSNR {direct.psnr:.2f} dB · "
                          f"{describe(report['fidelity'], ' · ', ' · ')}")
    assert f"SSIM {direct.ssim:.4f}" in job.result and "bars broken: max_abs" in job.result
    job.start(max_iter=10)
    assert job.result == ""  # a new run forgets the last result
    partial = {**report, "partial": True, "tiles": [{}, {}], "tiles_not_anonymized": [1]}
    record_end(job, partial, "/tmp/run")
    assert job.result == "" and "Stopped" in job.message


# --- issue 25: what the viewer says happened ---------------------------------------------------
def test_the_psnr_curve_is_one_line_per_tile():
    """A photo run's tiles each start at iteration 1 (and tiles stepped side by side interleave
    their steps): the curve never draws a line from one tile's end to the next one's start."""
    history = RunHistory()
    one = [StepSummary(i, 1.0, 10.0 + i, 0.0, False) for i in (1, 2, 3)]
    history.extend(one)
    it, psnr = history.curve("psnr")
    np.testing.assert_array_equal(it, [1, 2, 3])  # one tile: the columns as they are
    history.extend([StepSummary(i, 1.0, 20.0 + i, 0.0, False, tile=1) for i in (1, 2)])
    it, psnr = history.curve("psnr")
    np.testing.assert_array_equal(it, [1, 2, 3, np.nan, 1, 2])
    np.testing.assert_array_equal(psnr, [11, 12, 13, np.nan, 21, 22])
    # two tiles per step: their points interleave; each tile is its own line
    both = RunHistory()
    both.extend([StepSummary(i, 1.0, 10.0 * (t + 1) + i, 0.0, False, tile=t)
                 for i in (1, 2, 3) for t in (2, 3)])
    it, psnr = both.curve("psnr")
    np.testing.assert_array_equal(it, [1, 2, 3, np.nan, 1, 2, 3])
    np.testing.assert_array_equal(psnr, [31, 32, 33, np.nan, 41, 42, 43])
    # a recorded run read back has no tile column: one line
    loaded = RunHistory()
    loaded.load({"iteration": np.arange(1, 5), "psnr": np.arange(4.0)})
    assert not np.isnan(loaded.curve("psnr")[0]).any()


def test_a_step_says_its_tile():
    from dippas_core.dip.inversion import Step

    assert StepSummary.from_step(Step(3, 0.1, 30.0, 0.01, tile=5)).tile == 5
    assert StepSummary.from_step(Step(3, 0.1, 30.0, 0.01)).tile == 0


def test_the_fingerprint_that_goes_with_the_photo():
    """Of the photo's size; of its camera when its name says one (the longest camera name that
    fits, never another unit of the same model); else the newest of its size."""
    from types import SimpleNamespace as NS

    from napari_dippas._widgets._attribution import matching_fingerprint

    def fp(camera, shape=(200, 300)):
        return NS(name=f"fingerprint — {camera}", data=np.zeros(shape, np.float32),
                  metadata={"dippas": {"kind": "fingerprint", "camera": camera}})

    def photo(name, shape=(200, 300, 3), path=None):
        return NS(name=name, data=np.zeros(shape, np.uint8), source=NS(path=path))

    d70_0, d70_1, d70, small = fp("Nikon_D70_0"), fp("Nikon_D70_1"), fp("Nikon_D70"), fp(
        "Nikon_D70_1", (100, 100))
    layers = [d70_1, d70_0, d70, small]  # the newest (D70_0's) would be the old choice
    assert matching_fingerprint(photo("Nikon_D70_1_20543"), layers) is d70_1
    assert matching_fingerprint(photo("IMG", path="/x/Nikon_D70_0_19445.JPG"), layers) is d70_0
    assert matching_fingerprint(photo("Nikon_D70_10_1"), layers) is d70  # not Nikon_D70_1
    assert matching_fingerprint(photo("IMG_0001"), [d70_1, d70_0]) is d70_0  # the newest
    assert matching_fingerprint(photo("IMG", (64, 64, 3)), layers) is None  # none of its size


def test_the_large_run_question_says_how_long_in_its_unit():
    """Worded from the measured estimate: weeks are weeks, never "may take hours"."""
    import dataclasses

    from dippas_core.cost import CostEstimate, duration_text

    assert [duration_text(s) for s in (40, 720, 3.5 * 3600, 3 * 86400, 3 * 7 * 86400)] == [
        "40 s", "12 min", "3.5 h", "3.0 days", "3.0 weeks"]
    plan = CostEstimate(n_tiles=130, iterations=1500, tile_shape=(256, 256),
                        pixels=2000 * 3008, device="cpu")
    assert plan.needs_confirmation
    unmeasured = plan.question()
    assert "no time was measured on this device" in unmeasured and "hours" not in unmeasured
    per_it = 3.2 * 7 * 86400 / (130 * 1500)
    timed = dataclasses.replace(plan, seconds_per_iteration=per_it)
    question = timed.question()
    assert "Measured on cpu: about 3.2 weeks (≈ 130 tiles × ~1500 iterations" in question
    assert "hours" not in question and "in 130 tiles" in question
    assert "Stop keeps the tiles finished by then" in question


def test_a_run_short_of_tau_is_never_just_done():
    from napari_dippas._run_job import record_end

    job = AnonymizeJob()
    job.start(1500, "run", 38.0)
    report = {"inversion": {"stop_reason": "max_iter"}, "assembly": {"tau": None},
              "below_tau": [{"tile": 0, "short_db": 7.8, "best_psnr": 30.2}]}
    record_end(job, report, "run")
    text = job.describe()
    assert job.status == "finished" and text.startswith("NOT anonymized to tau")
    assert "best 30.2 dB, 7.8 dB short" in text and "below_tau" in text
    assert "within tau = 38 dB" in text  # (a one-tile run: its recording threshold)
    fine = AnonymizeJob()
    fine.start(1500, "run", 38.0)
    record_end(fine, {"inversion": {"stop_reason": "psnr"}, "below_tau": []}, "run")
    assert fine.describe().startswith("Done (reached the stop PSNR)")


def test_the_warm_up_runs_in_a_process_of_its_own():
    """The dock's warm-up: a child process compiles the kernels and reports the devices; this
    process only waits on a pipe."""
    import os

    from napari_dippas._warmup import WarmUp

    seen = []
    warm = WarmUp(on_devices=seen.append)
    assert warm._proc is not None and warm._proc.pid != os.getpid()
    assert warm.wait(300), "the warm-up process did not end"
    assert warm.error == "" and warm._proc.returncode == 0
    assert seen and seen[0] == warm.devices and any(d.startswith("cpu") for d in warm.devices)
