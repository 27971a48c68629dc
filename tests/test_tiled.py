"""Whole photos on real Dresden crops: one tile, resume, region, fallback, seams, bounds.

Small on purpose: the tiny network, 64-pixel tiles overlapping by 32, a few dozen iterations.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dippas_core.cancel import CancelToken
from dippas_core.cli import main
from dippas_core.cli._outcome import output_name
from dippas_core.config import AnonymizeConfig
from dippas_core.cost import estimate_cost
from dippas_core.io import write_image
from dippas_core.pipeline import anonymize
from dippas_core.run import PhotoRun
from dippas_core.tiling import edge_jump_ratio, plan_tiles

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def d70(natural_photos, camera_fingerprints):
    """A Nikon D70 photo (centre 512×512) and its camera's fingerprint."""
    cam, _, photo = next(p for p in natural_photos if p[0] == "Nikon_D70_0")
    return photo, camera_fingerprints[cam].K


def _config(**changes) -> AnonymizeConfig:
    base = dict(
        tile_size=64,
        overlap=32,
        max_iter=25,
        lr=1e-2,
        record_psnr=12.0,
        stop_psnr=40.0,
        B=32,
        L=3,
        seed=0,
        torch_threads=1,
    )
    return AnonymizeConfig.preset("tiny", **{**base, **changes})


def _crop(d70, y, x, h, w):
    photo, K = d70
    return photo[y : y + h, x : x + w].copy(), K[y : y + h, x : x + w].copy()


def test_a_photo_that_fits_one_tile_takes_the_one_network_path(d70, tmp_path):
    from dippas_core.assembly import assemble
    from dippas_core.dip import invert
    from dippas_core.run import RunDirectory, record

    photo, K = _crop(d70, 140, 260, 64, 64)
    config = _config(tile_size=128)
    result = anonymize(photo, K, config, run_dir=tmp_path / "run")
    assert len(result.report["tiles"]) == 1
    # the run folder is today's run folder: re-assemblable as before
    assert RunDirectory.open(tmp_path / "run").n_ready == result.report["inversion"]["n_snapshots"]
    # the independent path: the inversion recorded and assembled by hand, same seed
    run = RunDirectory.create(tmp_path / "by-hand", photo, K, mode="aware", dip_config=config.dip)
    record(run, invert(photo, K, config.dip))
    by_hand = assemble(run, config.assembly.B, config.assembly.L, config.assembly_tau)
    assert by_hand.params["n_candidates"] > 0
    np.testing.assert_array_equal(result.image, by_hand.image)


def test_a_killed_photo_run_resumes_at_the_next_tile(d70, tmp_path):
    photo, K = _crop(d70, 100, 200, 96, 96)
    config = _config()
    whole = anonymize(photo, K, config, run_dir=tmp_path / "whole")
    assert len(whole.report["tiles"]) == 4 and not whole.report["partial"]

    current: list[int] = []

    def kill_in_tile_2(step):
        if current[-1] == 2 and step.iteration == 10:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        anonymize(
            photo,
            K,
            config,
            run_dir=tmp_path / "run",
            on_tile=lambda t, plan: current.append(t.index),
            on_step=kill_in_tile_2,
        )
    assert sorted(p.name for p in (tmp_path / "run" / "done").iterdir()) == [
        "0000.npz",
        "0001.npz",
    ]
    visited: list[int] = []
    resumed = anonymize(
        photo, K, config, run_dir=tmp_path / "run", on_tile=lambda t, p: visited.append(t.index)
    )
    assert visited == [2, 3]  # tiles 0 and 1 read back, tile 2 (half-done) redone
    assert resumed.report["resumed_tiles"] == [0, 1]
    np.testing.assert_array_equal(resumed.image, whole.image)
    # the finished tiles' runs were removed; only their records stay
    assert not any((tmp_path / "run" / "tiles").iterdir())


def test_stop_stitches_the_finished_tiles_and_says_which_are_not_anonymized(d70, tmp_path):
    photo, K = _crop(d70, 100, 200, 96, 96)
    config = _config()
    cancel = CancelToken()

    def stop_at_tile_1(tile, plan):
        if tile.index == 1:
            cancel.cancel()

    result = anonymize(
        photo, K, config, run_dir=tmp_path / "run", cancel=cancel, on_tile=stop_at_tile_1
    )
    rep = result.report
    assert rep["partial"] and rep["tiles_not_anonymized"] == [1, 2, 3]
    assert rep["inversion"]["stop_reason"] == "cancelled"
    plan = plan_tiles(photo.shape, 64, 32)
    # pixels that only unfinished tiles cover keep the original; tile 0 alone is anonymized
    np.testing.assert_array_equal(result.image[64:, 64:], photo[64:, 64:])
    assert not np.array_equal(result.image[:32, :32], photo[:32, :32])
    assert plan.tiles[0].to_dict() == {"y": 0, "x": 0, "h": 64, "w": 64}
    name = output_name(Path("out.png"), rep)
    assert name.name == "out-partial.png"


def test_region_is_the_anonymization_of_that_crop(d70):
    photo, K = d70
    config = _config(tile_size=128)
    region = (200, 300, 96, 96)
    result = anonymize(photo, K, config, region=region)
    y, x, h, w = region
    alone = anonymize(photo[y : y + h, x : x + w], K[y : y + h, x : x + w], config)
    assert result.image.shape == (96, 96, 3)
    np.testing.assert_array_equal(result.image, alone.image)
    r = result.report["region"]
    assert (r["y"], r["x"], r["h"], r["w"]) == region
    assert "still carries" in r["note"]


def test_tiles_that_never_reach_tau_are_assembled_from_their_best_outputs(d70, tmp_path):
    photo, K = _crop(d70, 100, 200, 96, 96)
    config = _config(record_psnr=60.0, stop_psnr=61.0)
    result = anonymize(photo, K, config)
    rep = result.report
    assert [d["tile"] for d in rep["below_tau"]] == [0, 1, 2, 3]
    for short, tile in zip(rep["below_tau"], rep["tiles"], strict=True):
        assert tile["n_snapshots"] == 0
        assert short["short_db"] == pytest.approx(60.0 - tile["best_psnr"])
        psnrs = tile["assembly"]["psnrs"]
        assert len(psnrs) == config.assembly.L and psnrs == sorted(psnrs, reverse=True)
        assert psnrs[0] == pytest.approx(tile["best_psnr"])
    assert result.image.shape == photo.shape and result.image.dtype == np.uint8
    assert rep["psnr"] > 10.0
    assert output_name(Path("o.png"), rep).name == "o-below-tau-t0,t1,t2,t3.png"


def test_no_seam_on_a_real_region(d70, tmp_path):
    from dippas_core.assembly import measure_block_ncc

    # two 128-pixel tiles: their edges (x = 96, 128) and the network's own 32-pixel grid lines
    # off the edges (x = 32, 64, 160, 192) to compare them with
    photo, K = _crop(d70, 100, 200, 128, 224)
    config = _config(tile_size=128, max_iter=40)
    result = anonymize(photo, K, config, run_dir=tmp_path / "run")
    plan = plan_tiles(photo.shape, 128, 32)
    assert plan.xs == (0, 96) and plan.ys == (0,)
    assert edge_jump_ratio(result.image, photo, plan) <= 1.25
    # the measure does fail on a seam: the tiles' own images pasted without feathering, the
    # second one 40 levels brighter (after 40 iterations the network's own 32-pixel grid lines
    # jump by ~13 levels, so a fainter seam hides among them at this fit)
    done, damaged = PhotoRun(tmp_path / "run", {}).read_done(plan, photo=photo)
    assert not damaged and sorted(done) == [0, 1]
    pasted = np.zeros(photo.shape)
    for t in plan.tiles:
        pasted[t.slices] = done[t.index][0] + 40.0 * t.index
    assert edge_jump_ratio(pasted, photo, plan) > 1.25
    # block NCC with the fingerprint: overlap blocks no higher than inside single tiles (32-px
    # blocks, where chance alone spreads |NCC| by ~0.03)
    ncc = np.abs(measure_block_ncc(result.image.astype(np.float32), K, 32))
    in_overlap = np.zeros(ncc.shape[1], bool)
    in_overlap[96 // 32 : 128 // 32] = True
    assert ncc[:, in_overlap].mean() <= ncc[:, ~in_overlap].mean() + 0.03


def test_disk_and_memory_stay_bounded_as_tiles_pass(d70, tmp_path):
    import resource

    photo, K = _crop(d70, 100, 200, 96, 160)
    config = _config(max_iter=20, record_psnr=0.0)  # every output kept: the worst case on disk
    rss: list[float] = []

    def note_rss(tile, plan):
        with open("/proc/self/statm") as fh:
            rss.append(int(fh.read().split()[1]) * resource.getpagesize() / 2**20)

    result = anonymize(photo, K, config, run_dir=tmp_path / "run", on_tile=note_rss)
    # docs/whole-photos.md: one tile's run (max_iter snapshots of T×T×3 uint16, their tile sums)
    # plus one finished record per tile (T×T×3 bytes), whatever the number of tiles
    T, n = 64, len(result.report["tiles"])
    bound = config.dip.max_iter * T * T * 3 * 2 * 1.1 + 64 * 1024 + n * (T * T * 3 + 4096)
    assert 0 < result.report["disk_peak_bytes"] <= bound
    assert max(rss[2:]) - min(rss[2:]) < 40  # MiB: flat once the first tiles have warmed up


def test_estimate_scales_with_the_number_of_tiles():
    config = _config(max_iter=100)
    est = estimate_cost((96, 160), config)
    assert est.n_tiles == 8 and est.iterations == 100
    assert est.seconds == pytest.approx(8 * 100 * est.seconds_per_iteration)
    assert "8 tiles × ~100 iterations" in est.text and "cpu" in est.text


def test_estimate_times_the_batch_the_run_will_step(monkeypatch, injected_probe_timings):
    # a given N: the batch step's time over its tiles (a real thread batch of two tiles)
    est = estimate_cost((96, 160), _config(max_iter=100, tiles_per_step=2))
    assert est.tiles_per_step == 2 and "2 tiles per step" in est.text
    assert est.seconds == pytest.approx(8 * 100 * est.seconds_per_iteration)
    # "auto" on the CPU: a batch of one tile per core beside the one-network path, the faster
    # taken as auto will take it (batch timings injected: no clock)
    monkeypatch.setattr("dippas_core.dip.device.usable_cpus", lambda: 2)
    auto = _config(max_iter=100, tiles_per_step="auto")
    calls = injected_probe_timings({2: 2e-6})
    fast = estimate_cost((96, 160), auto)
    assert calls == [2] and fast.tiles_per_step == 2
    assert fast.seconds_per_iteration == pytest.approx(1e-6)
    injected_probe_timings({2: 100.0})  # 50 s per tile: slower than one network
    slow = estimate_cost((96, 160), auto)
    assert slow.tiles_per_step == 1 and slow.seconds_per_iteration < 50
    assert "tiles per step" not in slow.text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tile", "100"], "--tile"),
        (["--overlap", "16"], "--overlap"),
        (["--tile", "64", "--overlap", "48"], "--overlap"),
        (["--region", "1,0,64,64"], "even"),
        (["--region", "0,0,64,9999"], "inside"),
        (["--region", "0,0,64"], "four integers"),
    ],
)
def test_bad_tiling_options_fail_before_any_work(d70, tmp_path, capsys, args, message):
    photo, _ = _crop(d70, 100, 200, 96, 160)
    write_image(tmp_path / "p.png", photo, bit_depth=8)
    out = tmp_path / "o.png"
    code = main(
        ["anonymize", str(tmp_path / "p.png"), "--preset", "tiny", "--out", str(out)] + args
    )
    assert code == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.png"]  # nothing written


def test_cli_writes_the_forensic_record_apart_from_the_image(d70, tmp_path, capsys):
    from dippas_core.fingerprint import Fingerprint

    photo, K = _crop(d70, 100, 200, 96, 96)
    write_image(tmp_path / "p.png", photo, bit_depth=8)
    Fingerprint(K=K, camera="Nikon_D70_0", n_images=10).save(tmp_path / "K.npz")
    out = tmp_path / "o.png"
    code = main(
        [
            "anonymize",
            str(tmp_path / "p.png"),
            "--fingerprint",
            str(tmp_path / "K.npz"),
            "--preset",
            "tiny",
            "--tile",
            "64",
            "--overlap",
            "32",
            "--max-iter",
            "15",
            "--lr",
            "0.01",
            "--record-psnr",
            "10",
            "--stop-psnr",
            "40",
            "-B",
            "32",
            "-L",
            "2",
            "--quiet",
            "--out",
            str(out),
            "--report",
            str(tmp_path / "forensic.json"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 0
    assert "tile plan: 4 tiles (2×2) of 64×64 px, overlap 32 px" in err
    assert "estimate: ≈ 4 tiles × ~15 iterations" in err
    record = json.loads((tmp_path / "forensic.json").read_text())
    assert record["source"]["file"] == "p.png" and len(record["source"]["sha256"]) == 64
    assert [(t["y"], t["x"], t["h"], t["w"]) for t in record["tiles"]] == [
        (0, 0, 64, 64),
        (0, 32, 64, 64),
        (32, 0, 64, 64),
        (32, 32, 64, 64),
    ]
    assert record["pce"]["decision_level"] == 60.0 and "block_ncc_after" in record["maps"]
    assert record["cost"]["estimate_s"] > 0 and record["cost"]["actual_s"] > 0
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert "source" not in sidecar and "tiles" not in sidecar
    assert "p.png" not in out.with_suffix(".json").read_text()
    # the default run folder beside OUT is removed once the photo is done
    assert not (tmp_path / "o.dippas-run").exists()


def test_assemble_names_a_photo_run_instead_of_failing_deep(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "photo-run.json").write_text("{}")
    code = main(["assemble", str(tmp_path / "run"), "--out", str(tmp_path / "o.png")])
    assert code == 2 and "whole-photo run" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_force_on_a_photo_run_folder_deletes_only_what_a_run_made(tmp_path):
    import hashlib

    from dippas_core.errors import InputError
    from dippas_core.run import MARKER

    def digest(folder: Path) -> dict:
        return {
            p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        }

    meta = {"format": "x", "plan": {"tile": 64}, "photo_sha256": "a"}
    # a user's folder that merely holds a config.json is never a run: refused even with force
    user = tmp_path / "user"
    user.mkdir()
    (user / "config.json").write_text("{}")
    (user / "notes.txt").write_text("mine")
    before = digest(user)
    with pytest.raises(InputError, match="not a photo run"):
        PhotoRun.open_or_create(user, meta, force=True)
    assert digest(user) == before
    # a photo run made here is marked; force replaces its own files and keeps the user's
    run = tmp_path / "run"
    PhotoRun.open_or_create(run, meta)
    assert (run / MARKER).is_file() and (run / PhotoRun.META).is_file()
    (run / "done" / "0000.npz").write_bytes(b"tile")
    (run / "notes.txt").write_text("mine")
    other = {**meta, "photo_sha256": "b"}
    with pytest.raises(InputError, match="another photo"):
        PhotoRun.open_or_create(run, other)
    _, resumed = PhotoRun.open_or_create(run, other, force=True)
    assert not resumed
    assert (run / "notes.txt").read_text() == "mine"
    assert not list((run / "done").iterdir())
    assert json.loads((run / PhotoRun.META).read_text())["photo_sha256"] == "b"


# --------------------------------------------------------------------------------------------------
# several tiles per optimiser step (dip.batched)


@pytest.fixture
def float64():
    """Networks in float64, as the batched equivalence tests (tests/test_dip_batched.py) run them:
    in float32 grouped and plain convolutions round differently and Adam amplifies it."""
    torch = pytest.importorskip("torch")
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


def test_tiles_per_step_gives_the_image_of_one_tile_at_a_time(d70, tmp_path, float64):
    photo, K = _crop(d70, 100, 200, 96, 96)
    photo = photo.astype(np.float32)  # float output: compared without uint8 rounding
    free = anonymize(photo, K, _config(), run_dir=tmp_path / "free").report["tiles"]
    # a stop threshold that two tiles reach before max_iter: they leave the batch and the
    # waiting tile takes their place (N=3 with four tiles)
    best = sorted((t["best_psnr"] for t in free), reverse=True)
    stop_psnr = (best[1] + best[2]) / 2
    one = anonymize(photo, K, _config(stop_psnr=stop_psnr), run_dir=tmp_path / "one")
    reps = {1: one.report}
    assert len({t["iterations"] for t in one.report["tiles"]}) >= 2  # tiles stop apart
    assert any(t["n_snapshots"] for t in one.report["tiles"])  # assembled, not only fallbacks
    for n in (2, 3):
        config_n = _config(stop_psnr=stop_psnr, tiles_per_step=n)
        many = anonymize(photo, K, config_n, run_dir=tmp_path / f"n{n}")
        reps[n] = many.report
        assert not many.report["partial"]
        assert _max_diff(many.image, one.image) <= 1e-4 * 255
        for a, b in zip(many.report["tiles"], one.report["tiles"], strict=True):
            assert (a["iterations"], a["n_snapshots"], a["stop_reason"]) == (
                b["iterations"], b["n_snapshots"], b["stop_reason"])
        # each tile was recorded in its own run folder, removed once assembled
        assert not any((tmp_path / f"n{n}" / "tiles").iterdir())
    assert {n: r["inversion"]["tiles_per_step"] for n, r in reps.items()} == {1: 1, 2: 2, 3: 3}
    assert reps[2]["environment"]["tiles_per_step_choice"] == "given"


def test_auto_tiles_per_step_is_measured_and_recorded(d70, tmp_path):
    photo, K = _crop(d70, 100, 200, 96, 96)
    result = anonymize(photo, K, _config(max_iter=3, tiles_per_step="auto"))
    inv = result.report["inversion"]
    assert inv["tiles_per_step"] in (1, 2, 4)
    assert inv["tiles_per_step_choice"].startswith("measured on the CPU")
    assert "N=1 (one network): " in inv["tiles_per_step_choice"]
    assert not result.report["partial"]


@pytest.mark.parametrize(("seconds", "chosen"), [({1: 1.0, 2: 2.5, 4: 6.0}, 1),
                                                 ({1: 1.0, 2: 1.5, 4: 4.0}, 2)])
def test_auto_runs_the_measured_fastest_path(d70, tmp_path, injected_probe_timings, seconds,
                                             chosen):
    # injected timings: when the plain one-network path measures fastest the photo runs tile by
    # tile through it; when a batch does, with that many tiles per step; the record says so
    injected_probe_timings(seconds)
    photo, K = _crop(d70, 100, 200, 96, 96)
    result = anonymize(photo, K, _config(max_iter=2, tiles_per_step="auto"))
    inv = result.report["inversion"]
    assert inv["tiles_per_step"] == chosen
    assert inv["tiles_per_step_choice"].endswith(f"fastest: N={chosen}")
    assert "N=4: " in inv["tiles_per_step_choice"]
    assert not result.report["partial"]


def test_a_stopped_batched_run_keeps_finished_tiles_and_resumes(d70, tmp_path, float64):
    photo, K = _crop(d70, 100, 200, 96, 96)
    config = _config(tiles_per_step=2)
    whole = anonymize(photo.astype(np.float32), K, config, run_dir=tmp_path / "whole")
    assert [t["iterations"] for t in whole.report["tiles"]] == [25] * 4
    cancel = CancelToken()
    n_steps = [0]

    def stop_in_the_second_batch(step):
        n_steps[0] += 1
        if n_steps[0] == 2 * 25 + 2 * 5:  # tiles 0 and 1 done, tiles 2 and 3 at iteration 5
            cancel.cancel()

    run = tmp_path / "run"
    stopped = anonymize(
        photo.astype(np.float32), K, config, run_dir=run, cancel=cancel,
        on_step=stop_in_the_second_batch,
    )
    rep = stopped.report
    assert rep["partial"] and rep["tiles_not_anonymized"] == [2, 3]
    assert rep["inversion"]["stop_reason"] == "cancelled"
    assert sorted(p.name for p in (run / "done").iterdir()) == ["0000.npz", "0001.npz"]
    assert not any((run / "tiles").iterdir())  # unfinished tiles' runs dropped too
    visited: list[int] = []
    resumed = anonymize(
        photo.astype(np.float32), K, config, run_dir=run,
        on_tile=lambda t, p: visited.append(t.index),
    )
    assert visited == [2, 3]
    assert resumed.report["resumed_tiles"] == [0, 1]
    assert not resumed.report["partial"] and resumed.report["inversion"]["tiles_per_step"] == 2
    assert _max_diff(resumed.image, whole.image) <= 1e-4 * 255


@pytest.mark.parametrize("per_step", [1, 2])
def test_each_step_says_its_tile(d70, per_step):
    """``on_step`` of a photo run gets each step with its tile's index (``Step.tile``): tiles
    stepped side by side interleave their steps, and a live curve draws one line per tile."""
    photo, K = _crop(d70, 100, 200, 96, 96)
    steps: list = []
    anonymize(photo, K, _config(max_iter=3, tiles_per_step=per_step), on_step=steps.append,
              workers=1)
    by_tile: dict[int, list[int]] = {}
    for step in steps:
        by_tile.setdefault(step.tile, []).append(step.iteration)
    assert by_tile == {t: [1, 2, 3] for t in range(4)}
    if per_step == 2:  # two tiles in one step: their steps interleave
        assert [s.tile for s in steps[:2]] == [0, 1]


@pytest.mark.parametrize("per_step", [1, 2])
def test_a_photo_runs_tiles_measure_the_bars_only_from_tau(d70, per_step, monkeypatch):
    # a tile keeps every output for its fallback, but only those at tau or above may be
    # recorded: the device bars are measured for those alone
    from dippas_core.dip import fitting

    photo, K = _crop(d70, 100, 200, 96, 96)
    looks = dict(output="linear", zero_head=True, low_pass_sigma=3.0, require_fidelity=True,
                 max_iter=6, stop_psnr=99.0, tiles_per_step=per_step)
    free: list = []
    anonymize(photo, K, _config(**looks), on_step=free.append, workers=1)
    tau = float(np.median([s.psnr for s in free]))
    calls: list[int] = []
    original = fitting.meets_local_bars
    monkeypatch.setattr(fitting, "meets_local_bars",
                        lambda s, t, r=None: calls.append(len(s)) or original(s, t, r))
    steps: list = []
    anonymize(photo, K, _config(**looks, record_psnr=tau, tau=tau), on_step=steps.append,
              workers=1)
    above = [s for s in steps if s.psnr >= tau]
    assert 0 < len(above) < len(steps) and sum(calls) == len(above)
    assert all(s.looks_same is None for s in steps if s.psnr < tau)
    assert all(isinstance(s.looks_same, bool) for s in above)


def test_a_tile_that_never_meets_the_required_bars_is_a_flagged_fallback():
    from dippas_core.config import AnonymizeConfig
    from dippas_core.pipeline import anonymize

    photo = np.full((64, 64, 3), 60, np.uint8)
    photo[:, 32:] = 180  # a sharp edge: the blurred first outputs move its 16×16 means
    cfg = AnonymizeConfig.preset(
        "tiny", output="linear", zero_head=True, low_pass_sigma=3.0, require_fidelity=True,
        record_psnr=20.0, stop_psnr=20.0, max_iter=2, tau=20.0, B=64, L=1,
    )
    result = anonymize(photo, np.zeros((64, 64), np.float32), cfg)
    (short,) = result.report["below_tau"]
    assert short["fidelity"] == "bars never met" and short["short_db"] == 0.0
    assert short["best_psnr"] >= 20.0
    assert "within the fidelity bars" in result.report["tiles"][0]["assembly"]["fallback"]
