"""Checks that need a CUDA GPU (``pytest -m cuda``; ``scripts/gpu_check.sh`` runs them).

Skipped where torch sees no CUDA device.  Real Dresden crops, the tiny network unless a check
needs more: device choice, mixed precision (bf16, fp16 with a gradient scaler), channels-last,
``torch.compile``, device memory given back after a run, out of memory as a clear
:class:`~dippas_core.errors.DeviceError`, the torch residual and tile sums on the GPU, the
recorder ingesting GPU snapshots there, and N tiles per step against separate runs.
"""

from __future__ import annotations

import numpy as np
import pytest

from dippas_core.errors import DeviceError

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.filterwarnings("ignore:Level value of 4 is too high"),
]

FREE = {"record_psnr": -np.inf, "stop_psnr": np.inf}


@pytest.fixture(scope="module")
def crop(natural_photos):
    """A real 128×128 crop and a reference P for it."""
    photo = natural_photos[4][2][100:228, 200:328]
    P = np.random.default_rng(4).normal(0, 0.02, photo.shape[:2]).astype(np.float32)
    return photo, P


def _run(crop, **changes):
    from dippas_core.config import DIPConfig
    from dippas_core.dip import invert

    cfg = DIPConfig.preset("tiny", device="cuda", torch_threads=None, **FREE, **changes)
    inversion = invert(*crop, cfg)
    steps = list(inversion)
    return steps, inversion.result


def test_auto_picks_the_gpu():
    from dippas_core.dip.device import describe_devices, resolve_device

    dev = resolve_device("auto")
    assert dev.type == "cuda"
    assert torch.cuda.get_device_name(dev) in describe_devices()[0]


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_trains(crop, amp):
    steps, result = _run(crop, amp=amp, max_iter=40)
    env = result.environment
    assert env["amp_dtype"] == {"bf16": "bfloat16", "fp16": "float16"}[amp]
    assert env["grad_scaler"] == (amp == "fp16")
    loss = result.history["loss"]
    assert np.isfinite(loss).all() and loss[-5:].mean() < loss[:5].mean()
    assert steps[-1].snapshot.dtype == np.float32  # snapshots are float32 whatever the AMP


def test_channels_last_and_default_layout_agree_on_the_first_output(crop):
    first = {cl: _run(crop, channels_last=cl, amp=False, max_iter=1)[0][0] for cl in ("on", "off")}
    assert first["on"].environment["channels_last"] and not first["off"].environment[
        "channels_last"]
    # the same z (drawn in each layout's memory order), so not equal pixels: same statistics
    a, b = first["on"].snapshot, first["off"].snapshot
    assert abs(float(a.mean()) - float(b.mean())) < 5.0


def test_compile_runs(crop):
    _, result = _run(crop, compile=True, max_iter=3)
    assert result.environment["compile"] and result.n_iterations == 3


def test_memory_is_given_back(crop):
    from dippas_core.config import DIPConfig
    from dippas_core.dip import invert

    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    _run(crop, max_iter=5)
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() <= before + 1024
    inversion = invert(*crop, DIPConfig.preset("tiny", device="cuda", **FREE))
    next(inversion)
    inversion.close()  # a consumer that stops early
    assert torch.cuda.memory_allocated() <= before + 1024


def test_out_of_memory_is_a_device_error(natural_photos):
    from dippas_core.config import DIPConfig
    from dippas_core.dip import invert, run_to_end

    photo = natural_photos[0][2]
    fraction = 0.002  # of the GPU: far too little for the paper network on 512×512
    torch.cuda.set_per_process_memory_fraction(fraction)
    try:
        before = torch.cuda.memory_allocated()
        with pytest.raises(DeviceError, match="out of memory") as info:
            run_to_end(invert(photo, np.zeros(photo.shape[:2], np.float32),
                              DIPConfig(device="cuda", max_iter=2, **FREE)))
        assert "crop the image" in str(info.value)
        assert torch.cuda.memory_allocated() <= before + 1024
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()


def test_torch_residual_and_tile_sums_on_the_gpu(natural_photos):
    from dippas_core.residual import residual, rgb2gray
    from dippas_core.residual_torch import residual_torch, tile_sums_torch
    from dippas_core.snapshots import tile_sums

    crops = np.stack([p[:301, :415] for _, _, p in natural_photos[:4]]).astype(np.float32)
    w = residual_torch(torch.from_numpy(crops).cuda())
    assert w.is_cuda
    for i in range(4):
        fast = residual(crops[i])
        assert np.abs(w[i].cpu().numpy() - fast).max() <= 1e-4 * np.abs(fast).max()
    P = np.random.default_rng(1).normal(0, 0.02, crops.shape[1:3])
    ip = np.stack([rgb2gray(c) for c in crops]).astype(np.float64) * P
    ours = tile_sums_torch(w, torch.from_numpy(ip).cuda(), 32).cpu().numpy()
    np.testing.assert_allclose(ours, tile_sums(w.cpu().numpy(), ip, 32), rtol=1e-9, atol=1e-9)


def test_recorder_ingests_gpu_snapshots_on_the_gpu(tmp_path, crop):
    from dippas_core.config import DIPConfig
    from dippas_core.dip import invert
    from dippas_core.run import RunDirectory, record

    photo, P = crop
    cfg = DIPConfig.preset("tiny", device="cuda", max_iter=6, **FREE)
    run = RunDirectory.create(tmp_path / "run", photo, P, mode="aware", dip_config=cfg)
    record(run, invert(photo, P, cfg))
    run = RunDirectory.open(tmp_path / "run")
    assert run.config["result"]["ingested_on_device"] == 6 == len(run.tile_sums)
    host = run.ingest_frames(run.snapshots.frames[:])  # the host path on the stored frames
    np.testing.assert_allclose(run.tile_sums.array()[..., 1:], host[..., 1:], rtol=1e-4)


def test_tiles_per_step_on_the_gpu_matches_separate_runs(natural_photos):
    from dippas_core.config import DIPConfig
    from dippas_core.dip import invert
    from dippas_core.dip.batched import TileJob, TileStep, invert_tiles

    photo = natural_photos[7][2]
    tiles = [photo[y : y + 64, x : x + 64] for y in (0, 64) for x in (0, 64, 128)]
    rng = np.random.default_rng(9)
    Ps = [rng.normal(0, 0.02, (64, 64)).astype(np.float32) for _ in tiles]
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # no TF32, no rounding-driven drift
    try:
        cfg = DIPConfig.preset("tiny", device="cuda", max_iter=6, amp=False, **FREE)
        separate = [[s.snapshot for s in invert(t, P, cfg.replace(seed=i))]
                    for i, (t, P) in enumerate(zip(tiles, Ps, strict=True))]
        got: dict = {i: [] for i in range(len(tiles))}
        jobs = [TileJob(i, t, P, seed=i) for i, (t, P) in enumerate(zip(tiles, Ps, strict=True))]
        for event in invert_tiles(jobs, cfg, tiles_per_step=4):
            if isinstance(event, TileStep):
                got[event.key].append(event.step.snapshot)
    finally:
        torch.set_default_dtype(before)
    for i, ref in enumerate(separate):
        assert max(np.abs(a - b).max() for a, b in zip(got[i], ref, strict=True)) <= 1e-4 * 255


def test_auto_tiles_per_step_reads_the_free_memory(crop):
    from dippas_core.config import DIPConfig
    from dippas_core.dip.batched import choose_tiles_per_step
    from dippas_core.dip.device import resolve_device, speed_settings
    from dippas_core.dip.inversion import image_to_unit

    cfg = DIPConfig.preset("paper", device="cuda")
    dev = resolve_device("cuda")
    n, why = choose_tiles_per_step(
        image_to_unit(crop[0], 16), crop[1], cfg, dev, speed_settings(cfg, dev), 64
    )
    assert 1 <= n <= 64 and "MiB per tile" in why
