"""A photo run's progress: one line per finished tile, one status line, an ETA that learns."""

from __future__ import annotations

import io
import re
from types import SimpleNamespace

import pytest

from dippas_core.progress import PhotoProgress


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _step(tile, iteration, psnr):
    return SimpleNamespace(tile=tile, iteration=iteration, psnr=psnr)


def test_eta_is_the_predicted_work_left_at_the_pace_of_the_finished_tiles():
    clock = Clock()
    # the estimate expects 100 s for tile 0, 50 s for tiles 1-3
    p = PhotoProgress(4, {0: 100.0, 1: 50.0, 2: 50.0, 3: 50.0}, clock=clock)
    assert p.eta_s() is None  # nothing finished: no pace yet
    p.step(_step(0, 1, 20.0))
    clock.t = 150.0
    p.finish(0, {"elapsed_s": 150.0, "iterations": 300, "best_psnr": 39.0})
    assert p.pace() == pytest.approx(1.5)  # 150 s for a predicted 100 s
    assert p.eta_s() == pytest.approx(1.5 * 150.0)  # three tiles of 50 s at that pace
    p.step(_step(1, 10, 30.0))
    clock.t = 160.0  # tile 1 has run 10 s of it
    assert p.eta_s() == pytest.approx(1.5 * 150.0 - 10.0)
    p.resume(3)  # read back from an earlier attempt: nothing left to do there
    assert p.eta_s() == pytest.approx(1.5 * 100.0 - 10.0)
    # a tile running past its own share takes nothing off the tiles still waiting, and is
    # expected to run as long again past it: 250 s run for 75 s expected, 175 s more
    clock.t = 400.0
    assert p.eta_s() == pytest.approx(1.5 * 50.0 + 175.0)


def test_a_long_running_tile_keeps_the_eta_from_running_out():
    # two tiles at a time; the waiting ones are quick, one running tile is far past its share:
    # the run cannot end before it does (the third photo said "about 30 s left" with a tile
    # running minutes)
    clock = Clock()
    p = PhotoProgress(6, {i: 10.0 for i in range(6)}, clock=clock)
    p.finish(0, {"elapsed_s": 10.0, "iterations": 20, "best_psnr": 39.0})
    p.step(_step(1, 1, 20.0))
    p.step(_step(2, 1, 21.0))
    clock.t = 5.0  # both running tiles half way through their share
    assert p.eta_s() == pytest.approx((5.0 + 5.0 + 3 * 10.0) / 2)
    p.finish(2, {"elapsed_s": 5.0, "iterations": 10, "best_psnr": 39.0})
    clock.t = 130.0  # tile 1 has run 130 s of an expected 7.5 (pace 15 s / 20 s)
    assert p.pace() == pytest.approx(0.75)
    # 122.5 s more for it; the waiting tiles' 3 × 7.5 s beside it do not end the run sooner
    assert p.eta_s() == pytest.approx(130.0 - 7.5)


def test_without_an_estimate_the_eta_is_the_mean_tile_times_the_tiles_left():
    clock = Clock()
    p = PhotoProgress(5, None, clock=clock)
    for i, seconds in enumerate((10.0, 30.0)):
        p.finish(i, {"elapsed_s": seconds, "iterations": 5, "best_psnr": 39.0})
    assert p.eta_s() == pytest.approx(20.0 * 3)


def test_tiles_seen_running_together_divide_the_eta():
    clock = Clock()
    p = PhotoProgress(5, {i: 10.0 for i in range(5)}, clock=clock)
    p.finish(0, {"elapsed_s": 10.0, "iterations": 5, "best_psnr": 39.0})
    p.step(_step(1, 1, 20.0))
    p.step(_step(2, 1, 21.0))
    assert p.parallel == 2
    assert p.eta_s() == pytest.approx(40.0 / 2)


def test_lines_say_each_tile_and_the_running_ones():
    clock = Clock()
    p = PhotoProgress(3, {0: 10.0, 1: 10.0, 2: 10.0}, clock=clock)
    p.step(_step(0, 12, 35.25))
    p.step(_step(1, 7, 31.5))
    assert p.status_line().startswith("0/3 tiles done · running #1 it 12 35.2 dB, #2 it 7 "
                                      "31.5 dB")
    clock.t = 20.0
    p.finish(0, {"elapsed_s": 20.0, "iterations": 12, "best_psnr": 39.04})
    line = p.tile_line(0)
    assert line.startswith("tile 1/3 done: 12 iterations, best 39.04 dB, 20 s  [1/3 done")
    assert "left]" in line


def test_tile_lines_never_interleave_two_tiles(capsys):
    from dippas_core.cli._progress import TileLines

    stream = io.StringIO()
    lines = TileLines(PhotoProgress(2, {}), stream=stream, min_interval=0.0)
    for it in range(1, 6):  # two tiles stepping together, as a thread batch does
        lines.step(_step(0, it, 30.0 + it))
        lines.step(_step(1, it, 20.0 + it))
    lines.done(SimpleNamespace(index=1), {"elapsed_s": 3.0, "iterations": 5, "best_psnr": 25.0})
    lines.step(_step(0, 6, 36.0))
    lines.done(SimpleNamespace(index=0), {"elapsed_s": 4.0, "iterations": 6, "best_psnr": 36.0})
    lines.close()
    text = stream.getvalue()
    # what a terminal shows: each \r returns to the line's start, so the last segment wins
    shown = [seg.split("\r")[-1].rstrip() for seg in text.split("\n")]
    done = [s for s in shown if " done: " in s]
    assert [d.split(":")[0] for d in done] == ["tile 2/2 done", "tile 1/2 done"]
    assert all(re.fullmatch(r"tile \d/2 done: \d+ iterations, best [\d.]+ dB, \d+ s  \[.*\]", d)
               for d in done)
    assert shown[-2].startswith("2/2 tiles done")


def test_a_multi_tile_run_prints_one_whole_line_per_tile(tmp_path):
    """``dippas anonymize`` on four tiles, two per step: its stderr read back line by line."""
    import os
    import subprocess
    import sys

    from dippas_core.io import write_image
    from dippas_core.sample import sample_data

    photo, fingerprint = sample_data()
    write_image(tmp_path / "photo.png", photo[:96, :96])
    fingerprint.region(0, 0, 96, 96).save(tmp_path / "K.npz")
    cmd = [sys.executable, "-m", "dippas_core", "anonymize", str(tmp_path / "photo.png"),
           "--fingerprint", str(tmp_path / "K.npz"), "--out", str(tmp_path / "out.png"),
           "--preset", "tiny", "--tile", "64", "--overlap", "32", "--max-iter", "6",
           "--record-psnr", "8", "--stop-psnr", "99", "--tiles-per-step", "2", "-B", "32",
           "--workers", "1"]
    env = {**os.environ, "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", "/tmp/numba_cache")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    shown = [seg.split("\r")[-1].rstrip() for seg in proc.stderr.split("\n")]
    done = [s for s in shown if re.match(r"tile \d/4 done", s)]
    assert sorted(d.split()[1] for d in done) == ["1/4", "2/4", "3/4", "4/4"]
    for d in done:
        assert re.fullmatch(r"tile \d/4 done: 6 iterations, best [\d.]+ dB, \d+ s  "
                            r"\[\d/4 done( · about .+ left)?\]", d), d
    assert not any("iter " in s for s in shown)  # no per-iteration lines of one tile
