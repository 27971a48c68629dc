"""The torch residual (the GPU snapshot path) against PyWavelets and the Numba/NumPy paths."""

from __future__ import annotations

import numpy as np
import pytest

from dippas_core.residual import residual, residual_reference, rgb2gray
from dippas_core.snapshots import tile_sums

torch = pytest.importorskip("torch")

from dippas_core.residual_torch import (  # noqa: E402
    _bank,
    _dwt2,
    _idwt2,
    residual_torch,
    tile_sums_torch,
)

pytestmark = pytest.mark.filterwarnings("ignore:Level value of 4 is too high")


def _rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got.astype(np.float64) - ref).max() / np.abs(ref).max())


# sides shorter than the 8-tap filter (2, 5) need more than one reflection of the signal
@pytest.mark.parametrize("shape", [(5, 6), (2, 9), (37, 53), (64, 129)])
def test_one_dwt_level_is_pywavelets(rng, shape):
    import pywt

    x = rng.normal(0, 1, shape)
    c_a, (c_h, c_v, c_d) = pywt.dwt2(x, "db4", mode="symmetric")
    dec, rec = _bank("cpu", "float64")
    ours = _dwt2(torch.from_numpy(x)[None, None], dec)[0].numpy()
    for band, theirs in zip(ours, (c_a, c_v, c_h, c_d), strict=True):
        np.testing.assert_allclose(band, theirs, atol=1e-12)
    back = _idwt2(torch.from_numpy(ours)[None], rec)[0, 0].numpy()
    np.testing.assert_allclose(back, pywt.idwt2((c_a, (c_h, c_v, c_d)), "db4", "symmetric"),
                               atol=1e-12)
    np.testing.assert_allclose(back[: shape[0], : shape[1]], x, atol=1e-10)  # reconstructs


@pytest.mark.parametrize("size", [(512, 512), (301, 415), (128, 97), (65, 64)])
def test_torch_matches_the_default_on_real_photos(natural_photos, size):
    # three cameras, several sizes (odd ones too), uint8 as read
    for _, name, photo in natural_photos[::6]:
        crop = photo[: size[0], : size[1]]
        fast = residual(crop)
        got = residual(crop, method="torch")
        assert got.dtype == np.float32 and got.shape == size
        assert _rel_err(got, fast) <= 1e-4, name


def test_float64_torch_matches_the_reference_closely(natural_photos):
    crop = natural_photos[3][2][:200, :171]
    ref = residual_reference(crop)
    got = residual_torch(torch.from_numpy(crop[None]).to(torch.float64))[0].numpy()
    assert _rel_err(got, ref) <= 1e-6  # float64 all through: only rounding differs


def test_batch_equals_one_by_one_and_leaves_the_input(natural_photos):
    crops = np.stack([p[100:196, 50:170] for _, _, p in natural_photos[:5]]).astype(np.float32)
    batch = torch.from_numpy(crops)
    before = batch.clone()
    out = residual_torch(batch)
    assert out.shape == (5, 96, 120) and out.dtype == torch.float32
    assert torch.equal(batch, before)
    for i in range(5):
        assert _rel_err(out[i].numpy(), residual(crops[i])) <= 1e-4
    gray = residual_torch(batch[..., 1])  # N×H×W gray input
    assert _rel_err(gray[2].numpy(), residual(crops[2][..., 1])) <= 1e-4


def test_constant_and_uint16_inputs():
    assert np.abs(residual(np.full((40, 56, 3), 117.0), method="torch")).max() < 1e-4
    rng = np.random.default_rng(7)
    image16 = rng.integers(0, 65536, (30, 41, 3)).astype(np.uint16)
    assert _rel_err(residual(image16, method="torch"), residual(image16)) <= 1e-4


def test_tile_sums_in_torch_equal_the_host_ones(natural_photos):
    rng = np.random.default_rng(3)
    snaps = np.stack([p[:150, :130] for _, _, p in natural_photos[:3]]).astype(np.float32)
    reference = rng.normal(0, 0.02, (150, 130)).astype(np.float32)
    w = residual_torch(torch.from_numpy(snaps))
    ip = torch.stack([torch.from_numpy(rgb2gray(s)) for s in snaps]).double() * torch.from_numpy(
        reference
    ).double()
    for tile in (32, 64):  # 150×130 leaves smaller edge tiles
        ours = tile_sums_torch(w, ip, tile).numpy()
        host = tile_sums(w.numpy(), ip.numpy(), tile)
        assert ours.shape == host.shape
        np.testing.assert_allclose(ours, host, rtol=1e-10, atol=1e-10)
