"""Many tiles per optimiser step (dip.batched) against separate ``invert`` runs, on real crops."""

from __future__ import annotations

import numpy as np
import pytest

from dippas_core.cancel import CancelToken
from dippas_core.config import DIPConfig
from dippas_core.dip import invert
from dippas_core.errors import DeviceError, InputError

torch = pytest.importorskip("torch")

from dippas_core.dip.batched import (  # noqa: E402
    TileDone,
    TileJob,
    TileStep,
    choose_tiles_per_step,
    invert_tiles,
)

FREE = {"record_psnr": -np.inf, "stop_psnr": np.inf}


@pytest.fixture(scope="module")
def tiles(natural_photos):
    """Five real 64×64 tiles (two photos) and one 64×96 tile, each with a reference P."""
    rng = np.random.default_rng(11)
    a, b = natural_photos[2][2], natural_photos[10][2]
    crops = [a[:64, :64], a[64:128, :64], a[200:264, 300:364], b[:64, 100:164], b[300:364, :64],
             b[100:164, 200:296]]
    return [(c, rng.normal(0, 0.02, c.shape[:2]).astype(np.float32)) for c in crops]


@pytest.fixture(params=["vmap", "threads"])
def engine(request, monkeypatch):
    """Run the batches with each engine (the CPU's default is threads; vmap is the GPU's)."""
    monkeypatch.setattr(
        "dippas_core.dip.batched._stack.batch_engine", lambda device: request.param
    )
    return request.param


@pytest.fixture
def vmap_engine(monkeypatch):
    monkeypatch.setattr("dippas_core.dip.batched._stack.batch_engine", lambda device: "vmap")


def _separate(tiles, cfg):
    out = {}
    for i, (img, P) in enumerate(tiles):
        inversion = invert(img, P, cfg.replace(seed=100 + i))
        steps = list(inversion)
        out[i] = (steps, inversion.result)
    return out


def _batched(tiles, cfg, n, cancel=None, after=None):
    jobs = [TileJob(i, img, P, seed=100 + i) for i, (img, P) in enumerate(tiles)]
    steps: dict = {i: [] for i in range(len(tiles))}
    done = {}
    order = []
    gen = invert_tiles(jobs, cfg, tiles_per_step=n, cancel=cancel)
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return steps, done, order, stop.value
        if isinstance(event, TileStep):
            steps[event.key].append(event.step)
            order.append(event.key)
            if after is not None:
                after(len(order))
        else:
            assert isinstance(event, TileDone)
            done[event.key] = event.result


def _first_hit(psnr: np.ndarray, threshold: float) -> int | None:
    hit = np.nonzero(psnr >= threshold)[0]
    return int(hit[0]) + 1 if hit.size else None


def test_same_seed_same_images_as_separate_runs(tiles, float64, engine):
    cfg = DIPConfig.preset("tiny", max_iter=8, **FREE)
    # a stop threshold that some tiles reach at different iterations and others never: those
    # leave the batch early and waiting tiles take their place
    free = _separate(tiles, cfg)
    psnrs = {i: r.history["psnr"] for i, (_, r) in free.items()}
    threshold = next(
        t for t in np.sort(np.concatenate(list(psnrs.values())))[::-1]
        if len({_first_hit(p, t) for p in psnrs.values()}) >= 3
    )
    cfg = cfg.replace(stop_psnr=float(threshold), record_psnr=float(threshold) - 3.0)
    separate = _separate(tiles, cfg)
    assert len({r.n_iterations for _, r in separate.values()}) >= 2  # tiles stop at different steps
    steps, done, order, results = _batched(tiles, cfg, n=3)
    assert set(done) == set(results) == set(separate)
    for i, (ref_steps, ref) in separate.items():
        got = steps[i]
        assert [s.iteration for s in got] == list(range(1, ref.n_iterations + 1))
        assert results[i].stop_reason == ref.stop_reason
        assert results[i].n_snapshots == ref.n_snapshots
        np.testing.assert_allclose(results[i].history["psnr"], ref.history["psnr"], atol=1e-6)
        np.testing.assert_allclose(results[i].history["loss"], ref.history["loss"], rtol=1e-6)
        for a, b in zip(got, ref_steps, strict=True):
            assert (a.snapshot is None) == (b.snapshot is None)
            if a.snapshot is not None:
                assert np.abs(a.snapshot - b.snapshot).max() <= 1e-4 * 255
    # never more than three tiles in one step; the last tile (64×96) runs in its own batch
    per_step = np.diff([0, *[k for k in range(1, len(order)) if order[k] <= order[k - 1]],
                        len(order)])
    assert per_step.max() == 3
    env = results[0].environment
    assert env["tiles_per_step"] == 3 and env["tiles_per_step_choice"] == "given"


def test_float32_first_outputs_match_separate_runs(tiles, vmap_engine):
    # Every tile's state is its own (seeded weights, noise stream, batch-norm statistics, Adam
    # state, gamma): the first step's outputs, losses and PSNRs agree to float32 rounding.
    # From the second step on float32 trajectories part (docs/dip.md, "Equivalence"): vmap's
    # grouped convolutions and batch norm sum in another order (~1e-7 relative per operation)
    # and Adam's normalised first steps amplify that, exactly as the plain path does when only
    # its memory layout changes (scripts/batched_divergence.py)
    cfg = DIPConfig.preset("tiny", max_iter=1, **FREE)
    separate = _separate(tiles[:4], cfg)
    steps, *_ = _batched(tiles[:4], cfg, n=4)
    for i, (ref_steps, _) in separate.items():
        got, ref = steps[i][0], ref_steps[0]
        assert np.abs(got.snapshot - ref.snapshot).max() <= 1e-4 * 255
        assert got.loss == pytest.approx(ref.loss, rel=1e-5)
        assert got.psnr == pytest.approx(ref.psnr, abs=1e-4)
        assert got.gamma_star == pytest.approx(ref.gamma_star, rel=1e-4, abs=1e-6)


def test_float32_psnr_histories_follow_separate_runs(tiles, vmap_engine):
    # what does hold in float32 over many steps: the pixels part from iteration 2 on (as they
    # do for the plain path under a mere change of memory layout), but each tile fits its photo
    # as fast as its separate run.  How far float32 trajectories wander is the kernels' doing
    # (AVX-512 or AVX2, oneDNN or not: 0.7-7.9 % of the gain over 10 iterations, docs/dip.md),
    # so the bound is measured side by side: the plain path against itself with nothing but
    # its memory layout changed, on the same tiles, on this CPU's kernels
    cfg = DIPConfig.preset("tiny", max_iter=10, lr=1e-2, **FREE)
    separate = _separate(tiles[:4], cfg)
    relaid = _separate(tiles[:4], cfg.replace(channels_last=not cfg.channels_last))
    _, _, _, results = _batched(tiles[:4], cfg, n=4)
    batched_gap, layout_gap = [], []
    for i, (_, ref) in separate.items():
        want = ref.history["psnr"]
        gain = want[-1] - want[0]
        assert gain > 1.0  # the fit is under way
        batched_gap.append(np.abs(results[i].history["psnr"] - want).max() / gain)
        layout_gap.append(np.abs(relaid[i][1].history["psnr"] - want).max() / gain)
    # twice float32's own wander, never less than 5 % of the gain (a tile fitting another
    # tile's photo, or sharing another's state, is tens of dB off)
    assert max(batched_gap) <= max(2 * max(layout_gap), 0.05)


def test_one_tile_per_step_is_the_plain_path_exactly(tiles):
    # N = 1 (and a batch's last tile) runs the tile's own network, not vmap: bit for bit what
    # invert computes, in float32 too
    cfg = DIPConfig.preset("tiny", max_iter=4, **FREE)
    separate = _separate(tiles[:2], cfg)
    steps, _, _, results = _batched(tiles[:2], cfg, n=1)
    for i, (ref_steps, ref) in separate.items():
        for a, b in zip(steps[i], ref_steps, strict=True):
            assert np.array_equal(a.snapshot, b.snapshot)
        assert np.array_equal(results[i].history["loss"], ref.history["loss"])


def test_threads_engine_is_bit_for_bit_the_separate_runs_in_float32(tiles, monkeypatch):
    # the CPU's engine runs each tile's own step (invert's) in a pool thread with one torch
    # thread: with the tiles' separate runs also on one thread (the tiny preset's), every
    # snapshot and loss is bit for bit theirs, tiles leaving the batch and joining it included
    import threading

    from dippas_core.dip.fitting import Inverter

    cfg = DIPConfig.preset("tiny", max_iter=5, **FREE)
    assert cfg.torch_threads == 1
    separate = _separate(tiles[:5], cfg)
    ran_in: set[str] = set()
    step = Inverter.step

    def spy(self):
        ran_in.add(threading.current_thread().name)
        return step(self)

    monkeypatch.setattr(Inverter, "step", spy)
    steps, _, _, results = _batched(tiles[:5], cfg, n=3)
    assert all(name.startswith("dippas-tile") for name in ran_in) and len(ran_in) >= 2
    for i, (ref_steps, ref) in separate.items():
        for a, b in zip(steps[i], ref_steps, strict=True):
            assert np.array_equal(a.snapshot, b.snapshot)
        assert np.array_equal(results[i].history["loss"], ref.history["loss"])
        assert np.array_equal(results[i].history["gamma_star"], ref.history["gamma_star"])


def test_the_pools_one_thread_setting_stays_in_the_pool(tiles):
    # without a torch_threads of its own the batch sets nothing around its steps: neither the
    # caller nor threads started later (a viewer's next worker) inherit the pool's one thread
    import threading

    def in_a_new_thread() -> int:
        seen: list[int] = []
        t = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        t.start()
        t.join()
        return seen[0]

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _batched(tiles[:2], DIPConfig.preset("tiny", torch_threads=None, max_iter=2, **FREE), n=2)
        assert torch.get_num_threads() == 2
        assert in_a_new_thread() == 2
    finally:
        torch.set_num_threads(before)


def test_an_unknown_engine_is_an_input_error():
    from dippas_core.dip.batched import _Batch
    from dippas_core.dip.device import resolve_device, speed_settings

    device = resolve_device("cpu")
    with pytest.raises(InputError, match="engine"):
        _Batch(device, speed_settings(DIPConfig.preset("tiny"), device), engine="processes")


def test_one_step_gradients_are_each_tiles_own(tiles, float64):
    # N networks in one backward: each tile's weights get exactly its own loss's gradient.
    # Compared in float64, where equality is the point: in float32 another kernel's rounding of
    # the forward pass moves the first convolution's gradient by up to 4e-3 of its largest
    # value on one real tile (AVX2 or oneDNN off), float32's doing, not the batch's
    from dippas_core.dip.batched import PreparedJob, _Batch, _Tile, _with_params
    from dippas_core.dip.device import resolve_device, speed_settings
    from dippas_core.dip.inversion import Inverter, image_to_unit

    cfg = DIPConfig.preset("tiny", channels_last=False)
    device = resolve_device("cpu")
    speed = speed_settings(cfg, device)
    batch = _Batch(device, speed, engine="vmap")
    alone = []
    for i, (img, P) in enumerate(tiles[:3]):
        c = cfg.replace(seed=i)
        img01 = image_to_unit(img, 16)
        alone.append(Inverter(img01, P, c, device, speed))
        batch.add(_with_params(_Tile(PreparedJob(i, img01, P, c), c, device, speed)))
    for inv in alone:
        inv.perturb()
        inv.loss_of(inv.forward(inv.noisy_z, (64, 64))).backward()
    for t in batch.tiles:
        t.perturb()
    out = batch.forward()
    sum(t.loss_of(out[i : i + 1]) for i, t in enumerate(batch.tiles)).backward()
    for inv, t in zip(alone, batch.tiles, strict=True):
        ref = [p.grad for p in inv.model.parameters()]
        got = [p.grad for p in t.model.parameters()]
        top = max(float(g.abs().max()) for g in ref)
        assert ref[0].dtype == torch.float64
        # measured 2.4e-14 of the largest on every kernel tried; a shared gradient is O(1)
        assert max(float((a - b).abs().max()) for a, b in zip(got, ref, strict=True)) <= 1e-10 * top
        inv.release()
    batch.release()


def test_cancel_ends_running_tiles_and_never_starts_waiting_ones(tiles, engine):
    cfg = DIPConfig.preset("tiny", max_iter=50, **FREE)
    token = CancelToken()

    def after(n_steps: int) -> None:
        if n_steps == 6:  # two steps of the first batch of three
            token.cancel()

    steps, done, _, results = _batched(tiles[:5], cfg, n=3, cancel=token, after=after)
    assert set(results) == {0, 1, 2} == set(done)
    assert all(r.stop_reason == "cancelled" and r.n_iterations == 2 for r in results.values())
    assert steps[3] == steps[4] == []


def test_auto_measures_on_the_cpu_and_records_its_choice(tiles):
    from dippas_core.dip.device import resolve_device, speed_settings
    from dippas_core.dip.inversion import image_to_unit

    cfg = DIPConfig.preset("tiny")
    device = resolve_device("cpu")
    img01 = image_to_unit(tiles[0][0], 16)
    n, why = choose_tiles_per_step(img01, tiles[0][1], cfg, device, speed_settings(cfg, device), 3)
    # the plain path against a batch of two; never N = 4 for three tiles
    assert n in (1, 2) and "N=1 (one network)" in why and "N=2" in why and "N=4" not in why
    assert why.endswith(f"fastest: N={n}")
    _, _, _, results = _batched(tiles[:2], cfg.replace(max_iter=1), n="auto")
    assert results[0].environment["tiles_per_step"] in (1, 2)
    assert "measured" in results[0].environment["tiles_per_step_choice"]


@pytest.mark.parametrize(
    ("seconds", "cap", "measured", "chosen"),
    [
        # the plain path is fastest: batches only cost (the slowdown seen on this CPU at 128 px)
        ({1: 1.0, 2: 2.4, 4: 5.0, 8: 9.0}, 8, [1, 2, 4], 1),
        # batches win, more and more: the largest is tried and taken
        ({1: 1.0, 2: 1.8, 4: 3.0, 8: 5.0}, 8, [1, 2, 4, 8], 8),
        # N = 2 loses to the plain path but N = 4 wins: a batch of two alone does not end it
        ({1: 1.0, 2: 2.2, 4: 3.2, 8: 7.0}, 8, [1, 2, 4, 8], 4),
        # past the best batch (N = 4 slower than N = 2): N = 8 is not tried
        ({1: 1.0, 2: 1.5, 4: 3.5, 8: 1.0}, 8, [1, 2, 4], 2),
        # a batch only 2 % faster than the plain path is noise: the plain path stays
        ({1: 1.0, 2: 1.96}, 2, [1, 2], 1),
        # never more tiles per step than tiles
        ({1: 1.0, 2: 1.0, 4: 1.0}, 3, [1, 2], 2),
    ],
)
def test_auto_picks_the_fastest_of_the_plain_path_and_the_batches(
    tiles, injected_probe_timings, seconds, cap, measured, chosen
):
    from dippas_core.dip.device import resolve_device, speed_settings
    from dippas_core.dip.inversion import image_to_unit

    calls = injected_probe_timings(seconds)  # no clock
    cfg = DIPConfig.preset("tiny")
    device = resolve_device("cpu")
    img01 = image_to_unit(tiles[0][0], 16)
    n, why = choose_tiles_per_step(img01, tiles[0][1], cfg, device, speed_settings(cfg, device),
                                   cap)
    assert calls == measured
    assert n == chosen
    for k in measured:  # every measured rate is in the record: N·H·W / seconds
        assert f"N={k}{' (one network)' if k == 1 else ''}: {k * 64 * 64 / seconds[k] / 1e3:.1f}" \
            in why
    assert why.endswith(f"fastest: N={chosen}")


def test_out_of_memory_is_a_device_error_with_advice(tiles, monkeypatch):
    from dippas_core.dip import batched

    def boom(self):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(batched._Batch, "step", boom)
    with pytest.raises(DeviceError, match="tiles_per_step"):
        _batched(tiles[:2], DIPConfig.preset("tiny", max_iter=2), n=2)


def test_bad_jobs_and_settings_are_input_errors(tiles):
    img, P = tiles[0]
    with pytest.raises(InputError, match="key"):
        invert_tiles([TileJob("a", img, P), TileJob("a", img, P)], DIPConfig.preset("tiny"))
    with pytest.raises(InputError, match="no tiles"):
        invert_tiles([], DIPConfig.preset("tiny"))
    with pytest.raises(InputError, match="P"):
        invert_tiles([TileJob(0, img, P[:10])], DIPConfig.preset("tiny"))
    for bad in (0, -2, "many", 1.5, True):
        with pytest.raises(InputError, match="tiles_per_step"):
            DIPConfig(tiles_per_step=bad)
    assert DIPConfig(tiles_per_step="auto").tiles_per_step == "auto"


def test_cli_tiles_per_step_option(capsys):
    from dippas_core.cli import build_parser
    from dippas_core.cli.anonymize import build_config

    def dip_config_from_args(args):
        return build_config(args).dip

    parser = build_parser()
    base = ["anonymize", "photo.png", "--out", "out.png", "--preset", "tiny"]
    for value, expected in (("4", 4), ("auto", "auto"), ("AUTO", "auto")):
        args = parser.parse_args([*base, "--tiles-per-step", value])
        assert dip_config_from_args(args).tiles_per_step == expected
    assert dip_config_from_args(parser.parse_args(base)).tiles_per_step == 1
    assert dip_config_from_args(parser.parse_args(base)).gamma_mode == "lsq"
    assert dip_config_from_args(
        parser.parse_args([*base, "--gamma-mode", "adam"])
    ).gamma_mode == "adam"
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--gamma-mode", "free"])
    assert "--gamma-mode" in capsys.readouterr().err
    for bad in ("0", "-1", "many"):
        with pytest.raises(SystemExit):
            parser.parse_args([*base, "--tiles-per-step", bad])
        assert "positive integer or 'auto'" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # one photo, one network: no such option for invert
        parser.parse_args(["invert", "photo.png", "--blind", "--out", "run",
                           "--tiles-per-step", "2"])


def test_batched_tiles_measure_the_bars_from_the_threshold_given(tiles, engine, monkeypatch):
    # a photo's tiles keep every output (record_psnr = -inf) and filter them at tau: the bars
    # are measured from tau only, in either engine, and the steps are those of a full check
    from dippas_core.dip import fitting

    cfg = DIPConfig.preset("tiny", max_iter=10, require_fidelity=True, output="linear",
                           zero_head=True, low_pass_sigma=3.0, **FREE)
    two = tiles[:2]
    free = _separate(two, cfg)
    tau = float(np.median(np.concatenate([r.history["psnr"] for _, r in free.values()])))
    calls: list[int] = []
    original = fitting.meets_local_bars
    monkeypatch.setattr(fitting, "meets_local_bars",
                        lambda s, t, r=None: calls.append(len(s)) or original(s, t, r))
    jobs = [TileJob(i, img, P, seed=100 + i) for i, (img, P) in enumerate(two)]
    gated = [e.step for e in invert_tiles(jobs, cfg, tiles_per_step=2, fidelity_from=tau)
             if isinstance(e, TileStep)]
    above = sum(s.psnr >= tau for s in gated)
    assert 0 < above < len(gated) and sum(calls) == above
    calls.clear()
    every = [e.step for e in invert_tiles(jobs, cfg, tiles_per_step=2) if isinstance(e, TileStep)]
    assert sum(calls) == len(every) == len(gated)
    for a, b in zip(every, gated, strict=True):
        assert a.psnr == b.psnr and (a.snapshot is None) == (b.snapshot is None)
        assert b.looks_same is (a.looks_same if b.psnr >= tau else None)
