"""Run directories and recording: files on disk, cancel/interrupt/crash, back-pressure, errors."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from dippas_core.cancel import CancelToken
from dippas_core.dip.inversion import Step
from dippas_core.errors import DippasError, InputError
from dippas_core.run import RunDirectory, record
from dippas_core.snapshots import SCALE, SnapshotStore, tile_sums


def _inputs(rng, shape=(64, 48)):
    photo = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    K = rng.normal(0, 0.02, shape).astype(np.float32)
    return photo, K


def _steps(photo, n, rng, *, keep_from=3, log=None):
    """A stand-in for dip.invert: kept snapshots from iteration ``keep_from`` on."""
    try:
        for i in range(1, n + 1):
            snap = None
            if i >= keep_from:
                snap = np.clip(photo + rng.normal(0, 2, photo.shape), 0, 255).astype(np.float32)
                if log is not None:
                    log.append(snap)
            # gamma at 0 on the first two kept steps; gamma* = gamma - 0.0005
            gamma = 0.001 * max(i - 4, 0)
            yield Step(i, 1.0 / i, 30.0 + i, gamma, snap, gamma_star=gamma - 0.0005)
    finally:
        if log is not None:
            log.append("closed")


def test_record_writes_history_snapshots_and_tile_sums(tmp_path, rng):
    photo, K = _inputs(rng)
    run = RunDirectory.create(
        tmp_path / "run", photo, K, mode="aware", dip_config={"seed": 7, "tau_psnr": 33.0}
    )
    kept: list = []
    seen: list = []
    result = record(run, _steps(photo, 10, rng, log=kept), on_step=seen.append, batch_size=3)
    kept.pop()  # "closed"
    assert [s.iteration for s in seen] == list(range(1, 11))
    assert result.stop_reason == "ended" and result.n_snapshots == 8

    back = RunDirectory.open(tmp_path / "run")
    assert back.status == "finished" and back.mode == "aware" and back.config["seed"] == 7
    assert back.config["result"]["n_snapshots"] == 8 == back.n_ready
    np.testing.assert_array_equal(back.photo, photo)
    np.testing.assert_array_equal(back.reference, K)
    hist = back.history()
    assert hist["iteration"].tolist() == list(range(1, 11))
    np.testing.assert_allclose(hist["psnr"], 30.0 + np.arange(1, 11))
    assert hist["kept"].sum() == 8 and not hist["kept"][:2].any()
    np.testing.assert_allclose(hist["gamma_star"], hist["gamma"] - 0.0005)
    # the run record says how gamma did while snapshots were kept (iterations 3..10)
    gamma = back.config["result"]["gamma"]
    assert gamma["recording_iterations"] == 8
    assert gamma["at_bound_share"] == pytest.approx(2 / 8)  # iterations 3 and 4
    assert gamma["dead_share"] == 0.0  # gamma* is negative there: the clamp is the optimum
    assert gamma["median"] == pytest.approx(0.0025)  # of 0, 0, 0.001, ..., 0.006
    assert gamma["final"] == pytest.approx(0.006) and gamma["final_star"] == pytest.approx(0.0055)
    assert back.snapshots.iterations.tolist() == list(range(3, 11))
    for i, snap in enumerate(kept):
        np.testing.assert_array_equal(back.snapshots.frames[i], SnapshotStore.quantize(snap))
    # the tile sums the background thread wrote are those of the stored snapshots
    from dippas_core.residual import residual, rgb2gray

    sums = back.tile_sums.array()
    for i in (0, 7):
        img = back.snapshots.read(i)
        expect = tile_sums(residual(img), rgb2gray(img) * K, 32)
        np.testing.assert_allclose(sums[i], expect, rtol=1e-5, atol=1e-6)


def test_gamma_summary_tells_a_dead_injection_from_an_active_bound():
    from dippas_core.run import gamma_summary

    # six recorded iterations at the bound: three with gamma* > 0 (the injection held off
    # against the data), three with gamma* < 0 (the clamp is the constrained optimum)
    history = {
        "kept": [0, 1, 1, 1, 1, 1, 1, 1, 1],
        "gamma": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.002, 0.003],
        "gamma_star": [0.01, 0.001, 0.002, 0.003, -0.001, -0.002, -0.004, 0.002, 0.003],
    }
    g = gamma_summary(history)
    assert g["recording_iterations"] == 8
    assert g["at_bound_share"] == pytest.approx(6 / 8)
    assert g["dead_share"] == pytest.approx(3 / 8)
    # without gamma* (runs recorded before it existed) the dead share cannot be told
    assert "dead_share" not in gamma_summary({**history, "gamma_star": [np.nan] * 9})


def test_history_of_a_run_recorded_before_gamma_star(tmp_path, rng):
    """Runs recorded before ``gamma_star`` existed have no such column: it reads as NaN."""
    photo, K = _inputs(rng)
    run = RunDirectory.create(tmp_path / "run", photo, K, mode="aware")
    record(run, _steps(photo, 4, rng))
    old = "iteration,loss,psnr,gamma,kept\n1,1.0,30.0,0.0,0\n2,0.5,31.5,0.002,1\n"
    (tmp_path / "run" / RunDirectory.HISTORY).write_text(old)
    hist = RunDirectory.open(tmp_path / "run").history()
    np.testing.assert_array_equal(hist["gamma"], [0.0, 0.002])
    assert hist["kept"].tolist() == [False, True] and np.isnan(hist["gamma_star"]).all()


def test_run_dir_is_never_overwritten_without_force(tmp_path, rng):
    photo, K = _inputs(rng)
    RunDirectory.create(tmp_path / "r", photo, K, mode="blind")
    with pytest.raises(InputError, match="not empty"):
        RunDirectory.create(tmp_path / "r", photo, K, mode="blind")
    run = RunDirectory.create(tmp_path / "r", photo, K, mode="aware", force=True)
    assert run.mode == "aware"
    other = tmp_path / "mine"
    other.mkdir()
    (other / "thesis.txt").write_text("precious")
    with pytest.raises(InputError, match="not a dippas run"):
        RunDirectory.create(other, photo, K, mode="aware", force=True)
    assert (other / "thesis.txt").read_text() == "precious"
    with pytest.raises(InputError, match="not a dippas run"):
        RunDirectory.open(other)
    with pytest.raises(InputError, match="mode"):
        RunDirectory.create(tmp_path / "m", photo, K, mode="sideways")
    with pytest.raises(InputError, match="64×48"):
        RunDirectory.create(tmp_path / "s", photo, K[:32], mode="aware")


def test_cancel_stops_a_generator_that_ignores_the_token(tmp_path, rng):
    photo, K = _inputs(rng)
    run = RunDirectory.create(tmp_path / "r", photo, K, mode="aware")
    cancel = CancelToken()
    log: list = []

    def on_step(step):
        if step.iteration == 5:
            cancel.cancel()

    result = record(run, _steps(photo, 1000, rng, log=log), cancel, on_step)
    assert log[-1] == "closed"  # the generator's clean-up ran
    assert result.stop_reason == "cancelled"
    back = RunDirectory.open(run.path)
    assert back.status == "cancelled"
    n_iter = len(back.history()["iteration"])
    assert n_iter == 5  # the token is checked before the next step is taken, not 1000
    assert back.n_ready == len(back.snapshots) == n_iter - 2


def test_keyboard_interrupt_keeps_what_was_made(tmp_path, rng):
    photo, K = _inputs(rng)
    run = RunDirectory.create(tmp_path / "r", photo, K, mode="aware")

    def interrupted():
        yield from _steps(photo, 6, rng)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        record(run, interrupted())
    back = RunDirectory.open(run.path)
    assert back.status == "interrupted"
    assert len(back.snapshots) == back.n_ready == 4  # every kept snapshot was ingested


def test_ingest_failure_is_reported_not_swallowed(tmp_path, rng, monkeypatch):
    photo, K = _inputs(rng)
    run = RunDirectory.create(tmp_path / "r", photo, K, mode="aware")

    def broken(frames, **kw):
        raise MemoryError("no room for residuals")

    monkeypatch.setattr(run, "ingest_frames", broken)
    with pytest.raises(DippasError, match="no room for residuals"):
        record(run, _steps(photo, 50, rng), queue_size=2)
    back = RunDirectory.open(run.path)
    assert back.status == "failed" and len(back.tile_sums) == 0


def test_back_pressure_bounds_the_queue(tmp_path, rng, monkeypatch):
    """A slow consumer makes the inversion wait once it is queue_size snapshots behind."""
    photo, K = _inputs(rng)
    run = RunDirectory.create(tmp_path / "r", photo, K, mode="aware")
    gate = threading.Event()
    real = run.ingest_frames
    produced: list[int] = []

    def slow(frames, **kw):
        gate.wait(5)
        return real(frames, **kw)

    monkeypatch.setattr(run, "ingest_frames", slow)
    done = threading.Event()

    def go():
        record(
            run,
            _steps(photo, 20, rng, keep_from=1),
            on_step=lambda s: produced.append(1),
            queue_size=3,
            batch_size=1,
        )
        done.set()

    t = threading.Thread(target=go)
    t.start()
    time.sleep(0.5)
    # 1 being processed + 3 queued + 1 blocked in put: the producer is stuck at 5 steps at most
    assert len(produced) <= 5 and not done.is_set()
    gate.set()
    t.join(30)
    assert done.is_set() and len(produced) == 20
    assert RunDirectory.open(run.path).n_ready == 20


def test_killed_recording_opens_and_catches_up(tmp_path, rng):
    """SIGKILL a real recording process midway: the run opens, is completed and assembles."""
    from dippas_core.assembly import assemble

    photo, K = _inputs(rng)
    np.save(tmp_path / "photo.npy", photo)
    np.save(tmp_path / "K.npy", K)
    script = textwrap.dedent(f"""
        import time, numpy as np
        from dippas_core.dip.inversion import Step
        from dippas_core.run import RunDirectory, record
        photo = np.load({str(tmp_path / "photo.npy")!r}); K = np.load({str(tmp_path / "K.npy")!r})
        run = RunDirectory.create({str(tmp_path / "run")!r}, photo, K, mode="aware")
        rng = np.random.default_rng(0)
        def steps():
            for i in range(1, 100000):
                snap = np.clip(photo + rng.normal(0, 2, photo.shape), 0, 255).astype(np.float32)
                time.sleep(0.01)
                yield Step(i, 0.1, 35.0 + 1e-3 * i, 0.01, snap)
        record(run, steps(), queue_size=64)
    """)
    env = {**os.environ, "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", "/tmp/numba_cache")}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            idx = tmp_path / "run" / SnapshotStore.INDEX
            if idx.exists() and idx.stat().st_size >= 16 * 12:
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    run = RunDirectory.open(tmp_path / "run", writable=True)
    assert run.status == "recording"  # it never finished
    n = len(run.snapshots)
    assert n >= 12
    hist = run.history()
    assert len(hist["iteration"]) >= n - 1  # history is written right after each snapshot
    run.complete_tile_sums()
    assert len(run.tile_sums) == run.n_ready == n
    out = assemble(run, B=32, L=5, tau=35.0)
    assert out.image.shape == photo.shape and out.params["n_candidates"] == n


def test_config_records_reproducibility_fields(tmp_path, rng):
    from dippas_core.config import DIPConfig

    photo, K = _inputs(rng)
    cfg = DIPConfig.preset("tiny", seed=11)
    run = RunDirectory.create(
        tmp_path / "r", photo, K, mode="aware", dip_config=cfg, tile=16, sigma=3.0
    )
    conf = json.loads((run.path / "config.json").read_text())
    assert conf["seed"] == 11 and conf["tile"] == 16 and conf["sigma"] == 3.0
    assert DIPConfig.from_dict(conf["dip_config"]) == cfg
    assert {"numpy", "python"} <= set(conf["versions"])
    assert conf["photo"] == {"height": 64, "width": 48, "channels": 3, "dtype": "uint8"}
    assert conf["snapshot_storage"]["scale"] == SCALE


needs_flock = pytest.mark.skipif(
    importlib.util.find_spec("fcntl") is None, reason="advisory locks need fcntl"
)


def _half_ingested_run(tmp_path, rng, n=5, ready=3):
    """A writable run with ``n`` snapshots of which only the first ``ready`` have tile sums."""
    photo, K = _inputs(rng)
    run = RunDirectory.create(tmp_path / "r", photo, K, mode="aware", dip_config={"tau_psnr": 0})
    for i in range(n):
        snap = np.clip(photo + rng.normal(0, 2, photo.shape), 0, 255).astype(np.float32)
        frame = run.snapshots.append(snap, i + 1, 35.0 + i)
        if i < ready:
            run.tile_sums.append(run.ingest_frames(frame[None]))
    return run


@needs_flock
def test_assemble_leaves_a_live_recording_alone(tmp_path, rng, capsys):
    """`dippas assemble` on a run still being recorded: no back-fill, the ready part assembles."""
    from dippas_core.cli import main

    live = _half_ingested_run(tmp_path, rng)  # holds the run's lock, as record() does
    sums = live.path / "tilesums.f64"
    before = sums.read_bytes()

    reader = RunDirectory.open(live.path)
    assert reader.being_recorded() and reader.n_ready == 3 and reader.n_missing_tile_sums == 2
    assert reader.complete_tile_sums() == 0
    out = tmp_path / "out.png"
    argv = ["assemble", str(live.path), "-B", "32", "-L", "2", "--tau", "0", "--out", str(out)]
    assert main(argv) == 0
    assert "still being recorded" in capsys.readouterr().err
    assert sums.read_bytes() == before  # not one byte written beside the live ingest
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["assembly"]["n_snapshots"] == 3 and report["assembly"]["n_candidates"] == 3

    # a second writer is refused before it can truncate anything, and so is replacing the run
    with pytest.raises(InputError, match="being recorded"):
        RunDirectory.open(live.path, writable=True)
    photo, K = live.photo, live.reference
    with pytest.raises(InputError, match="being recorded"):
        RunDirectory.create(live.path, photo, K, mode="aware", force=True)
    assert len(RunDirectory.open(live.path).snapshots) == 5

    # once the recorder is gone (killed or closed) the back-fill runs
    live.close()
    assert not reader.being_recorded()
    assert reader.complete_tile_sums() == 2 and reader.n_ready == 5
    assert sums.read_bytes()[: len(before)] == before


@needs_flock
def test_recorder_holds_the_lock_until_config_is_written(tmp_path, rng):
    photo, K = _inputs(rng)
    run = RunDirectory.create(tmp_path / "r", photo, K, mode="aware")
    seen: list[bool] = []

    def on_step(step):
        seen.append(RunDirectory.open(run.path).being_recorded())

    record(run, _steps(photo, 4, rng), on_step=on_step)
    assert seen == [True] * 4
    back = RunDirectory.open(run.path)
    assert not back.being_recorded() and back.status == "finished"
    RunDirectory.open(run.path, writable=True).close()  # free again for a writer


def test_ingest_failure_after_the_last_snapshot_marks_the_run_failed(tmp_path, rng, monkeypatch):
    """The error surfaces only in ingest.finish(), after the body ended well: still 'failed'."""
    photo, K = _inputs(rng)
    run = RunDirectory.create(tmp_path / "r", photo, K, mode="aware")
    real = run.ingest_frames
    calls: list[int] = []

    def fails_on_the_last(frames, **kw):
        calls.append(len(frames))
        if sum(calls) == 5:  # the batch holding the fifth and last snapshot
            raise MemoryError("no room for the last residual")
        return real(frames, **kw)

    monkeypatch.setattr(run, "ingest_frames", fails_on_the_last)
    with pytest.raises(DippasError, match="no room for the last residual"):
        record(run, _steps(photo, 5, rng, keep_from=1), batch_size=1)
    back = RunDirectory.open(run.path)
    assert back.status == "failed"
    assert "no room" in back.config["result"]["error"]
    assert len(back.snapshots) == 5 and back.n_ready == 4  # the kept snapshots are all there


def test_ingest_failure_does_not_mask_the_inversion_error(tmp_path, rng, monkeypatch):
    photo, K = _inputs(rng)
    run = RunDirectory.create(tmp_path / "r", photo, K, mode="aware")

    def broken(frames, **kw):
        raise MemoryError("no room for residuals")

    def dies():
        yield from _steps(photo, 1, rng, keep_from=1)
        raise RuntimeError("the DIP broke")

    monkeypatch.setattr(run, "ingest_frames", broken)
    with pytest.raises(RuntimeError, match="the DIP broke") as info:
        record(run, dies())
    assert any("no room for residuals" in note for note in getattr(info.value, "__notes__", []))
    assert RunDirectory.open(run.path).status == "failed"


def test_cancelling_a_real_inversion_keeps_the_resolved_device(tmp_path, rng):
    """An inversion cancelled while recording stops at once: the run still names its device."""
    pytest.importorskip("torch")
    from dippas_core.config import DIPConfig
    from dippas_core.dip import invert

    photo, K = _inputs(rng)
    cfg = DIPConfig.preset("tiny", device="auto", max_iter=50, torch_threads=1)
    run = RunDirectory.create(tmp_path / "r", photo, K, mode="aware", dip_config=cfg)
    assert run.config["device"] == "auto"
    inversion = invert(photo, K, cfg.replace(record_psnr=-np.inf))  # every output a snapshot
    result = record(run, inversion, on_step=lambda s: s.iteration == 3 and inversion.cancel())
    assert result is inversion.result
    assert result.stop_reason == "cancelled" and result.n_iterations == 3  # the next check stops it
    back = RunDirectory.open(run.path)
    assert back.status == "cancelled" and back.n_ready == len(back.snapshots) == 3
    # the finished steps are all kept, in the run as in the result
    np.testing.assert_allclose(back.history()["psnr"], result.history["psnr"])
    np.testing.assert_allclose(back.snapshots.psnrs, result.history["psnr"], rtol=1e-6)
    device = back.config["device"]
    assert device != "auto" and device == result.environment["device"]
    env = back.config["result"]["environment"]
    assert env["device"] == device
    assert {"cudnn_benchmark", "deterministic", "amp_dtype"} <= set(env)


@pytest.mark.parametrize(
    ("cap", "dip_threads", "expect"),
    [("auto", None, "half"), (3, None, 3), (None, None, "untouched"), ("auto", 2, 2)],
)
def test_torch_threads_are_capped_while_recording_on_cpu(tmp_path, rng, cap, dip_threads, expect):
    """The inversion's steps run with the recorder's cap (the config's own setting wins); the
    caller's setting is back between steps and after."""
    torch = pytest.importorskip("torch")
    from dippas_core.config import DIPConfig
    from dippas_core.dip import invert

    before = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        photo, K = _inputs(rng)
        cfg = DIPConfig.preset("tiny", device="cpu", max_iter=2, torch_threads=dip_threads)
        run = RunDirectory.create(tmp_path / "run", photo, K, mode="aware", dip_config=cfg)
        between: list[int] = []
        result = record(run, invert(photo, K, cfg), torch_threads=cap,
                        on_step=lambda s: between.append(torch.get_num_threads()))
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    wanted = {"half": max(1, usable // 2), "untouched": 4}.get(expect, expect)
    assert result.environment["torch_threads"] == wanted  # what the steps ran with
    assert between == [4, 4] and after == 4  # the caller's setting comes back


def test_record_refuses_a_cancel_token_the_inversion_does_not_watch(tmp_path, rng):
    pytest.importorskip("torch")
    from dippas_core.config import DIPConfig
    from dippas_core.dip import invert

    photo, K = _inputs(rng)
    cfg = DIPConfig.preset("tiny", device="cpu", max_iter=2)
    run = RunDirectory.create(tmp_path / "r", photo, K, mode="aware", dip_config=cfg)
    with pytest.raises(InputError, match="own token"):
        record(run, invert(photo, K, cfg), CancelToken())
