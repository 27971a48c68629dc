"""Noise residual (method §1): the fast Numba path against the readable reference path."""

from __future__ import annotations

import numpy as np
import pytest

from dippas_core import _kernels
from dippas_core.errors import InputError, ShapeMismatchError
from dippas_core.residual import (
    _wiener_shrink_reference,
    residual,
    residual_batch,
    residual_reference,
    rgb2gray,
    wavelet_noise,
    wiener_dft,
    zero_mean,
)

pytestmark = pytest.mark.filterwarnings("ignore:Level value of 4 is too high")


def _rel_err(fast: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(fast.astype(np.float64) - ref).max() / np.abs(ref).max())


# (5, 6, 3): smaller than the db4 filter, the fast path falls back to PyWavelets' DWT
@pytest.mark.parametrize("shape", [(37, 53, 3), (101, 64), (64, 129, 3), (130, 97), (5, 6, 3)])
def test_fast_matches_reference_on_odd_random_images(rng, shape):
    image = rng.uniform(0, 255, shape).astype(np.float32)
    ref = residual_reference(image)
    fast = residual(image)
    assert fast.dtype == np.float32 and fast.shape == shape[:2]
    assert _rel_err(fast, ref) <= 1e-4


def test_fast_matches_reference_on_real_photos(natural_photos):
    # two real photos of different cameras, one cropped to an odd size
    for (_, name, photo), size in zip(natural_photos[::9], [(512, 512), (301, 415)], strict=True):
        crop = photo[: size[0], : size[1]]
        ref = residual_reference(crop)
        fast = residual(crop)
        assert _rel_err(fast, ref) <= 1e-4, name


def test_constant_image_has_zero_residual():
    for method in ("fast", "reference"):
        for image in (np.full((40, 56, 3), 117.0), np.full((33, 31), 3, dtype=np.uint8)):
            w = residual(image, method=method)
            assert np.abs(w).max() < 1e-4


def test_residual_of_noise_is_mostly_noise(rng):
    # a smooth picture plus white noise: the residual is close to the noise, far from the picture
    yy, xx = np.mgrid[0:128, 0:128]
    smooth = 100 + 50 * np.sin(xx / 20.0) * np.cos(yy / 15.0)
    noise = rng.normal(0, 3, smooth.shape)
    w = residual(smooth + noise).astype(np.float64)
    corr_noise = np.corrcoef(w.ravel(), noise.ravel())[0, 1]
    corr_picture = abs(np.corrcoef(w.ravel(), smooth.ravel())[0, 1])
    assert corr_noise > 0.5 and corr_picture < 0.05


@pytest.mark.parametrize("shape", [(6, 8), (7, 9), (33, 20)])
def test_zero_mean_zeroes_row_and_column_means_per_lattice(rng, shape):
    w = rng.normal(5, 2, shape).astype(np.float32) + np.arange(shape[1], dtype=np.float32)
    fast = w.copy()
    _kernels.zero_mean_inplace(fast)
    for out in (zero_mean(w), fast):
        for i in (0, 1):
            for j in (0, 1):
                sub = out[i::2, j::2].astype(np.float64)
                assert np.abs(sub.mean(axis=0)).max() < 1e-4
                assert np.abs(sub.mean(axis=1)).max() < 1e-4
    assert np.abs(fast - zero_mean(w)).max() < 1e-4


def test_wiener_shrink_kernel_matches_scipy_box_filters(rng):
    for shape in [(1, 1), (3, 5), (38, 70), (257, 129)]:
        band = (rng.normal(0, 1, shape) * rng.uniform(0.1, 20, shape)).astype(np.float32)
        ref = _wiener_shrink_reference(band, 25.0)
        fast = band.copy()[np.newaxis]
        _kernels.wiener_shrink_inplace(fast, 25.0)
        assert np.abs(fast[0] - ref).max() <= 1e-5 * max(np.abs(ref).max(), 1.0)


@pytest.mark.parametrize("shape", [(64, 64), (37, 50), (50, 37), (31, 33)])
def test_real_fft_wiener_matches_full_complex_fft(rng, shape):
    # the fast path filters the half spectrum with the Hermitian part of the gain: check it is the
    # same as real(ifft2(F * gain)) on the full spectrum
    from dippas_core.residual import _gray_zero_mean_wiener_dft

    w = zero_mean(rng.normal(0, 2, shape).astype(np.float32) * rng.uniform(0.2, 3, shape))
    ref = wiener_dft(w)
    fast = _gray_zero_mean_wiener_dft(w[np.newaxis], *shape)  # zero-mean again is a no-op
    assert _rel_err(fast, ref) <= 1e-4


def test_wavelet_noise_paths_agree_per_channel(rng):
    image = rng.uniform(0, 255, (45, 62, 3)).astype(np.float32)
    ref = wavelet_noise(image, method="reference")
    fast = wavelet_noise(image)
    assert fast.shape == ref.shape == image.shape
    assert np.abs(fast - ref).max() <= 1e-4 * np.abs(ref).max()


def test_rgb2gray_uses_matlab_weights():
    image = np.zeros((2, 2, 3), np.float32)
    image[0, 0] = (255, 0, 0)
    image[0, 1] = (0, 255, 0)
    image[1, 0] = (0, 0, 255)
    gray = rgb2gray(image)
    np.testing.assert_allclose(gray[0], [0.29893602 * 255, 0.58704307 * 255], rtol=1e-6)
    np.testing.assert_allclose(gray[1], [0.11402090 * 255, 0.0], rtol=1e-6, atol=1e-6)


def test_batch_equals_single_images(rng):
    images = rng.integers(0, 256, (5, 40, 52, 3)).astype(np.uint8)
    single = np.stack([residual(im) for im in images])
    for workers in (1, 2):
        np.testing.assert_array_equal(residual_batch(images, workers=workers), single)
    np.testing.assert_array_equal(residual_batch(list(images)), single)
    gray = images[..., 1]
    np.testing.assert_array_equal(residual_batch(gray)[2], residual(gray[2]))


def test_inputs_are_not_modified_and_uint16_is_rescaled(rng):
    image16 = rng.integers(0, 65536, (30, 41, 3)).astype(np.uint16)
    before = image16.copy()
    w16 = residual(image16)
    np.testing.assert_array_equal(image16, before)
    w_float = residual(image16.astype(np.float32) * np.float32(255 / 65535))
    np.testing.assert_allclose(w16, w_float, atol=1e-6)
    floats = rng.uniform(0, 255, (5, 30, 41, 3)).astype(np.float32)
    fbefore = floats.copy()
    residual_batch(floats)
    np.testing.assert_array_equal(floats, fbefore)


def test_bad_input_is_reported(rng):
    with pytest.raises(InputError, match="H×W or H×W×3"):
        residual(np.zeros((10, 10, 4)))
    with pytest.raises(InputError, match="NaN"):
        residual(np.full((10, 10), np.nan))
    with pytest.raises(InputError, match="sigma"):
        residual(np.zeros((10, 10)), sigma=0)
    with pytest.raises(InputError, match="method"):
        residual(np.zeros((10, 10)), method="slow")
    with pytest.raises(ShapeMismatchError, match=r"images\[1\] is 10×12 but images\[0\] is 10×10"):
        residual_batch([np.zeros((10, 10, 3)), np.zeros((10, 12, 3))])
    with pytest.raises(InputError, match="empty"):
        residual_batch([])


def test_the_package_name_residual_stays_the_function_after_importing_the_submodule(rng):
    # ``residual`` names both a submodule and its main function; importing the submodule by
    # name (as `from dippas_core.residual import ...` does) must not rebind the package's name
    import importlib
    import subprocess
    import sys

    code = (
        "import dippas_core.residual, importlib, dippas_core as dc; "
        "importlib.import_module('dippas_core.residual'); "
        "from dippas_core import residual; import types; "
        "assert callable(residual) and not isinstance(residual, types.ModuleType); "
        "assert dc.residual is residual"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    module = importlib.import_module("dippas_core.residual")
    image = rng.uniform(0, 255, (20, 24, 3))
    np.testing.assert_array_equal(module.residual(image), residual(image))


def test_every_kernel_releases_the_gil():
    # a GUI worker thread (and residual_batch's threads) can only run beside others if it does
    from numba.core.registry import CPUDispatcher

    kernels = [v for v in vars(_kernels).values() if isinstance(v, CPUDispatcher)]
    assert len(kernels) >= 8
    for kernel in kernels:
        assert kernel.targetoptions.get("nogil") is True, kernel.py_func.__name__
