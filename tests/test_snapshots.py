"""Snapshot store and per-tile NCC sums: round trips, growth, crash tolerance, tile maths."""

from __future__ import annotations

import numpy as np
import pytest

from dippas_core.errors import InputError
from dippas_core.snapshots import (
    SCALE,
    SnapshotStore,
    TileSums,
    block_ncc_from_sums,
    tile_grid,
    tile_sums,
)


def _snap(rng, shape=(20, 24)):
    return rng.uniform(0, 255, (*shape, 3)).astype(np.float32)


def test_quantization_is_exact_for_8bit_and_fine_elsewhere(rng):
    eight_bit = np.arange(256, dtype=np.float32).reshape(16, 16)
    img = np.stack([eight_bit] * 3, axis=-1)
    q = SnapshotStore.quantize(img)
    assert np.array_equal(q / SCALE, img)  # 8-bit values survive exactly
    x = rng.uniform(0, 255, (32, 32, 3)).astype(np.float32)
    err = np.abs(SnapshotStore.quantize(x) / SCALE - x)
    assert err.max() <= 0.5 / SCALE + 1e-4
    # out-of-range values are clipped, never wrapped
    assert SnapshotStore.quantize(np.full((2, 2, 3), 300.0)).max() == 65535
    assert SnapshotStore.quantize(np.full((2, 2, 3), -4.0)).min() == 0


def test_store_grows_and_a_reader_follows(tmp_path, rng):
    writer = SnapshotStore.create(tmp_path, (20, 24))
    reader = SnapshotStore.open(tmp_path)
    assert len(reader) == 0 and reader.frames.shape == (0, 20, 24, 3)
    snaps = [_snap(rng) for _ in range(5)]
    for i, s in enumerate(snaps[:3]):
        writer.append(s, iteration=10 + i, psnr=38.0 + i)
    assert len(reader) == 0  # a reader sees new records only when it refreshes
    assert reader.refresh() == 3
    for i, s in enumerate(snaps[3:], start=3):
        writer.append(s, iteration=10 + i, psnr=38.0 + i)
    writer.close()
    assert reader.refresh() == 5
    assert reader.iterations.tolist() == [10, 11, 12, 13, 14]
    assert reader.psnrs.tolist() == [38.0, 39.0, 40.0, 41.0, 42.0]
    for i, s in enumerate(snaps):
        np.testing.assert_allclose(reader.read(i), s, atol=0.5 / SCALE + 1e-4)
    with pytest.raises(InputError, match="out of range"):
        reader.read(5)
    with pytest.raises(InputError, match="read-only"):
        reader.append(snaps[0], 1, 40.0)
    with pytest.raises(InputError, match=r"\(20, 24, 3\)"):
        SnapshotStore.open(tmp_path, writable=True).append(np.zeros((4, 4, 3)), 1, 40.0)


def test_killed_writer_leaves_a_readable_store(tmp_path, rng):
    writer = SnapshotStore.create(tmp_path, (8, 8))
    for i in range(3):
        writer.append(_snap(rng, (8, 8)), i + 1, 40.0)
    first = SnapshotStore.open(tmp_path).frames.copy()
    # a writer killed in the middle of the 4th snapshot's data, before its index record
    with open(tmp_path / SnapshotStore.DATA, "ab") as fh:
        fh.write(b"\x01" * 100)
    store = SnapshotStore.open(tmp_path)
    assert len(store) == 3 and np.array_equal(store.frames, first)
    # killed after the data, in the middle of the index record
    with open(tmp_path / SnapshotStore.DATA, "ab") as fh:
        fh.write(b"\x01" * (store.frame_bytes - 100))
    with open(tmp_path / SnapshotStore.INDEX, "ab") as fh:
        fh.write(b"\x02" * 5)
    assert SnapshotStore.open(tmp_path).refresh() == 3
    # a new writer drops the partial records and appends after the last complete one
    again = SnapshotStore.open(tmp_path, writable=True)
    again.append(np.full((8, 8, 3), 7.0), 99, 41.0)
    again.close()
    store = SnapshotStore.open(tmp_path)
    assert len(store) == 4 and store.iterations.tolist() == [1, 2, 3, 99]
    assert np.array_equal(store.frames[:3], first)
    assert np.all(store.read(3) == 7.0)


def test_tile_sums_of_edge_tiles_are_plain_sums(rng):
    h, w, t = 70, 45, 32  # edge tiles of 6 rows and 13 columns
    wres = rng.normal(size=(h, w))
    ip = rng.normal(size=(h, w))
    sums = tile_sums(wres, ip, t)
    assert sums.shape == (*tile_grid((h, w), t), 3) == (3, 2, 3)
    for ty in range(3):
        for tx in range(2):
            sl = np.s_[ty * t : (ty + 1) * t, tx * t : (tx + 1) * t]
            a, b = wres[sl], ip[sl]
            np.testing.assert_allclose(sums[ty, tx], [(a * b).sum(), (a * a).sum(), (b * b).sum()])
    # a batch gives the same as one at a time
    batch = tile_sums(np.stack([wres, ip]), np.stack([ip, wres]), t)
    np.testing.assert_allclose(batch[0], sums)


@pytest.mark.parametrize("shape", [(128, 128), (100, 72)])
def test_block_ncc_from_tile_sums_matches_direct_block_ncc(shape, rng):
    """The NCC of any multiple of the tile, from tile sums, equals block_ncc on the block itself."""
    from dippas_core.correlation import block_ncc
    from dippas_core.residual import residual, rgb2gray

    h, w = shape
    K = rng.normal(0, 0.02, (h, w)).astype(np.float32)
    base = rng.uniform(40, 220, (h, w, 3)).astype(np.float32)
    image = np.clip(base * (1 + K[..., None]), 0, 255).astype(np.float32)
    W = residual(image)
    sums = tile_sums(W, rgb2gray(image) * K, 32)
    for B in (32, 64, 96):
        from_sums = block_ncc_from_sums(sums, B // 32)
        direct = block_ncc(W, image, K, B)
        assert from_sums.shape == direct.shape == (-(-h // B), -(-w // B))
        np.testing.assert_allclose(from_sums, direct, rtol=1e-4, atol=1e-6)
    # the whole image as one block is the image's NCC
    from dippas_core.correlation import ncc

    whole = block_ncc_from_sums(sums, max(sums.shape[:2]))
    assert whole.shape == (1, 1)
    np.testing.assert_allclose(whole[0, 0], ncc(W, image, K), rtol=1e-4)


def test_zero_reference_block_has_ncc_zero():
    sums = np.zeros((2, 2, 3))
    sums[0, 0] = (1.0, 4.0, 1.0)
    out = block_ncc_from_sums(sums, 1)
    assert out[0, 0] == pytest.approx(0.5) and np.all(out.ravel()[1:] == 0)


def test_tile_sums_store_appends_and_reopens(tmp_path, rng):
    ts = TileSums.create(tmp_path, (70, 45), tile=32)
    a, b = rng.normal(size=(3, 2, 3)), rng.normal(size=(2, 3, 2, 3))
    ts.append(a)
    ts.append(b)
    ts.close()
    back = TileSums.open(tmp_path)
    assert len(back) == 3 and back.grid == (3, 2) and back.tile == 32
    np.testing.assert_array_equal(back.array(), np.concatenate([a[None], b]))
    with pytest.raises(InputError, match="multiple of the tile"):
        back.block_ncc(48)
    with pytest.raises(InputError, match="already holds"):
        TileSums.create(tmp_path, (70, 45))


def test_mapped_view_reads_the_same_frames_and_releases(tmp_path, rng):
    store = SnapshotStore.create(tmp_path, (16, 12))
    with store.mapped() as (frames, release):
        assert frames.shape == (0, 16, 12, 3)
    for i in range(4):
        store.append(_snap(rng, (16, 12)), i + 1, 40.0)
    store.close()
    with store.mapped() as (frames, release):
        picked = frames[[0, 2, 3], 4:9, 1:7]  # fancy indexing copies: safe after the block
        release()  # pages dropped from this process, the data is still there
        np.testing.assert_array_equal(frames, store.frames)
    np.testing.assert_array_equal(picked, store.frames[[0, 2, 3], 4:9, 1:7])
