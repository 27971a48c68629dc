"""Tile sums of snapshots computed where the inversion ran (torch) against the host path (Numba)."""

from __future__ import annotations

import numpy as np
import pytest

from dippas_core.dip.inversion import Step
from dippas_core.run import RunDirectory, record
from dippas_core.snapshots import block_ncc_from_sums

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.filterwarnings("ignore:Level value of 4 is too high")


def _snapshots(photo: np.ndarray, K: np.ndarray, n: int) -> list[np.ndarray]:
    """Real photo with the fingerprint injected at varying strength, as float 0..255 snapshots."""
    rng = np.random.default_rng(5)
    base = photo.astype(np.float32)
    return [
        np.clip(base * (1 + a * K[..., None]) + rng.normal(0, 1.0, base.shape), 0, 255).astype(
            np.float32
        )
        for a in np.linspace(-0.8, 0.8, n)
    ]


def _record(path, photo, K, snaps, *, on_device: bool) -> RunDirectory:
    def steps():
        for i, snap in enumerate(snaps, 1):
            dev = torch.from_numpy(snap.copy()) if on_device else None
            yield Step(i, 0.01, 35.0, 0.0, snap, snapshot_device=dev)

    run = RunDirectory.create(path, photo, K, mode="aware", tile=32)
    record(run, steps())
    return RunDirectory.open(path)


def test_device_tile_sums_equal_the_host_ones(tmp_path, natural_photos):
    # a real photo crop with odd sides (edge tiles smaller than 32), a Gaussian stand-in for K
    photo = natural_photos[5][2][:150, :133]
    K = np.random.default_rng(2).normal(0, 0.02, photo.shape[:2]).astype(np.float32)
    snaps = _snapshots(photo, K, 6)
    host = _record(tmp_path / "host", photo, K, snaps, on_device=False)
    dev = _record(tmp_path / "dev", photo, K, snaps, on_device=True)
    assert dev.config["result"]["ingested_on_device"] == 6
    assert host.config["result"]["ingested_on_device"] == 0
    np.testing.assert_array_equal(dev.snapshots.frames, host.snapshots.frames)  # same store
    a, b = dev.tile_sums.array(), host.tile_sums.array()
    assert a.shape == b.shape == (6, 5, 5, 3)
    scale = np.abs(b).max(axis=(1, 2), keepdims=True)
    assert np.abs(a - b).max(axis=(1, 2), keepdims=True).max() <= 1e-4 * scale.max()
    np.testing.assert_allclose(a[..., 1:], b[..., 1:], rtol=1e-4)  # the energies, tile by tile
    # what assembly reads: block NCCs (B = 64) agree far below their spread across snapshots
    ncc_dev, ncc_host = block_ncc_from_sums(a, 2), block_ncc_from_sums(b, 2)
    assert np.abs(ncc_dev - ncc_host).max() <= 1e-4
    assert ncc_host.std(axis=0).min() > 1e-2


def test_ingest_on_device_equals_ingest_frames(tmp_path, natural_photos):
    photo = natural_photos[1][2][:64, :96]
    K = np.random.default_rng(3).normal(0, 0.02, photo.shape[:2]).astype(np.float32)
    snaps = _snapshots(photo, K, 3)
    run = RunDirectory.create(tmp_path / "mixed", photo, K, mode="aware", tile=32)
    frames = [run.snapshots.append(s, i, 35.0) for i, s in enumerate(snaps)]
    mixed = run.ingest_frames(np.stack(frames))
    on_dev = run.ingest_on_device(torch.from_numpy(np.stack(snaps)))
    np.testing.assert_allclose(on_dev[..., 1:], mixed[..., 1:], rtol=1e-4)
    run.close()


def test_a_batch_is_cut_into_runs_of_one_kind():
    from dippas_core.run import _same_kind_runs

    a, b = np.zeros(2), np.ones(2)
    t, u = torch.zeros(2), torch.ones(2)
    runs = _same_kind_runs([a, b, t, u, a, t])
    assert [len(r) for r in runs] == [2, 2, 1, 1]
    assert runs[1][0] is t and runs[2][0] is a
