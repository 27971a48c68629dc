"""Camera fingerprint (method §2): estimate, running sums, errors, file round trip, CLI."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from dippas_core.cli import main as cli_main
from dippas_core.errors import InputError, ShapeMismatchError
from dippas_core.fingerprint import (
    Fingerprint,
    estimate_fingerprint,
    intensity_scale,
    saturation_mask,
)
from dippas_core.io import write_image

pytestmark = pytest.mark.filterwarnings("ignore:Level value of 4 is too high")


def _flat_fields(rng, n, shape=(48, 64), k_true=None, level=150.0):
    """Synthetic flat-field shots ``level·(1 + K) + noise`` of one 'camera'."""
    if k_true is None:
        k_true = rng.normal(0, 0.02, shape)
    shots = []
    for _ in range(n):
        shot = level * (1 + k_true)[..., None] * np.array([0.9, 1.0, 0.8])
        shot = shot + rng.normal(0, 2, shot.shape)
        shots.append(np.clip(np.rint(shot), 0, 255).astype(np.uint8))
    return shots, k_true


def test_estimate_recovers_a_synthetic_fingerprint(rng):
    shots, k_true = _flat_fields(rng, 8)
    fp = estimate_fingerprint(shots, camera="synthetic")
    assert fp.K.dtype == np.float32 and fp.shape == k_true.shape
    assert fp.n_images == 8 and fp.camera == "synthetic" and fp.sigma == 5.0
    corr = np.corrcoef(fp.K.ravel(), k_true.ravel())[0, 1]
    assert corr > 0.5
    other, _ = _flat_fields(rng, 8)
    corr_other = np.corrcoef(estimate_fingerprint(other).K.ravel(), k_true.ravel())[0, 1]
    assert abs(corr_other) < 0.1


def test_fast_and_reference_paths_agree(rng):
    shots, _ = _flat_fields(rng, 3, shape=(41, 58))
    shots[0][5:9, 7:12] = 255  # a saturated patch exercises the mask
    fast = estimate_fingerprint(shots)
    ref = estimate_fingerprint(shots, method="reference")
    assert np.abs(fast.K - ref.K).max() <= 1e-4 * np.abs(ref.K).max()


def test_ml_formula_on_one_channel_by_hand(rng):
    # gray input: K = zm/wiener of (sum W_i I_i / 255) / (sum (s m)^2 + 1), each step public
    from dippas_core.residual import wavelet_noise, wiener_dft, zero_mean

    shots = [rng.integers(60, 200, (32, 40)).astype(np.uint8) for _ in range(3)]
    num = sum(wavelet_noise(s, method="reference") * s / 255.0 for s in shots)
    den = sum((np.asarray(s, float) / 252.0) ** 2 for s in shots) + 1
    expected = wiener_dft(zero_mean((num / den).astype(np.float32)))
    got = estimate_fingerprint(shots, method="reference").K
    np.testing.assert_allclose(got, expected, atol=1e-6 * np.abs(expected).max())


def test_intensity_scale_by_hand():
    s = intensity_scale(np.array([0, 126, 251, 252, 255], dtype=np.uint8))
    np.testing.assert_allclose(s, [0, 0.5, 251 / 252, 1.0, np.exp(-9 / 6)], rtol=1e-6)


def test_saturation_mask_by_hand():
    img = np.full((5, 6, 3), 100, np.uint8)
    img[2, 2:4, 0] = 255  # flat saturated pair: masked
    img[4, 5, 0] = 255  # isolated maximum: kept
    img[0, 0, 1] = img[4, 0, 1] = 251  # neighbours only through wrap-around: masked
    img[1, 1, 2] = img[1, 2, 2] = 250  # channel max 250: no mask at all
    m = saturation_mask(img)
    assert m.dtype == bool and m.shape == img.shape
    expected0 = np.ones((5, 6), bool)
    expected0[2, 2:4] = False
    np.testing.assert_array_equal(m[..., 0], expected0)
    expected1 = np.ones((5, 6), bool)
    expected1[0, 0] = expected1[4, 0] = False
    np.testing.assert_array_equal(m[..., 1], expected1)
    assert m[..., 2].all()


@pytest.mark.parametrize("method", ["fast", "reference"])
def test_memory_does_not_grow_with_the_number_of_images(rng, method):
    # tracemalloc sees NumPy's allocations (not Numba's): the reference path allocates everything
    # through NumPy, and both paths would keep the fresh input copies if they held on to them
    shots, _ = _flat_fields(rng, 1, shape=(96, 128))

    def peak(n):
        estimate_fingerprint((shots[0].copy() for _ in range(1)), method=method)  # warm up
        tracemalloc.start()
        estimate_fingerprint((shots[0].copy() for _ in range(n)), method=method)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    assert peak(16) < 1.3 * peak(2)


def test_mismatched_inputs_are_reported_not_averaged(tmp_path, rng):
    a = rng.integers(0, 256, (20, 30, 3)).astype(np.uint8)
    wide = r"images\[1\] is 20×31×3 but images\[0\] is 20×30×3"
    with pytest.raises(ShapeMismatchError, match=wide):
        estimate_fingerprint([a, a[:, :1].repeat(31, axis=1)])
    with pytest.raises(ShapeMismatchError, match="rotated"):
        estimate_fingerprint([a, a.transpose(1, 0, 2)])
    first = write_image(tmp_path / "first.png", a)
    second = write_image(tmp_path / "second.png", a[:18])
    named = r"second.png is 18×30×3 but .*first.png is 20×30×3"
    with pytest.raises(ShapeMismatchError, match=named):
        estimate_fingerprint([first, second])
    with pytest.raises(InputError, match="no images"):
        estimate_fingerprint([])
    with pytest.raises(InputError, match="N×H×W×3"):
        estimate_fingerprint(a)  # one image, not a stack of them


def test_paths_and_arrays_give_the_same_fingerprint(tmp_path, rng):
    shots, _ = _flat_fields(rng, 3, shape=(40, 50))
    paths = [write_image(tmp_path / f"ff_{i}.png", s) for i, s in enumerate(shots)]
    from_files = estimate_fingerprint(paths, crop=(32, 40))
    from_arrays = estimate_fingerprint([s[4:36, 5:45] for s in shots])
    np.testing.assert_array_equal(from_files.K, from_arrays.K)
    from_stack = estimate_fingerprint(np.stack([s[4:36, 5:45] for s in shots]))
    np.testing.assert_array_equal(from_stack.K, from_arrays.K)
    assert from_files.crop == (32, 40) and from_arrays.crop is None


def test_save_and_load_round_trip(tmp_path, rng):
    fp = Fingerprint(rng.normal(0, 0.01, (12, 17)).astype(np.float32), camera="cam A",
                     n_images=10, sigma=3.0, crop=(12, 17))
    path = fp.save(tmp_path / "k.npz")
    back = Fingerprint.load(path)
    np.testing.assert_array_equal(back.K, fp.K)
    assert (back.camera, back.n_images, back.sigma, back.crop, back.version) == (
        "cam A", 10, 3.0, (12, 17), fp.version)
    half = Fingerprint.load(fp.save(tmp_path / "k16.npz", dtype=np.float16))
    assert half.K.dtype == np.float32
    np.testing.assert_allclose(half.K, fp.K, atol=1e-3 * np.abs(fp.K).max())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.npz", "k16.npz"]
    crop = back.center_crop(8)
    np.testing.assert_array_equal(crop.K, fp.K[2:10, 4:12])
    assert crop.shape == (8, 8) and crop.camera == "cam A"


def test_load_rejects_bad_files(tmp_path):
    bad = tmp_path / "nan.npz"
    np.savez(bad, K=np.full((3, 3), np.nan, np.float32), metadata=np.array("{}"))
    with pytest.raises(InputError, match="nan.npz.*NaN"):
        Fingerprint.load(bad)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="junk.npz"):
        Fingerprint.load(junk)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(InputError, match="not a dippas fingerprint"):
        Fingerprint.load(other)
    with pytest.raises(InputError, match="no such"):
        Fingerprint.load(tmp_path / "missing.npz")
    for meta in ('{"n_images": null}', '{"crop": [4]}', '{"sigma": "high"}', '{"shape": 3}'):
        damaged = tmp_path / "damaged.npz"
        np.savez(damaged, K=np.zeros((3, 3), np.float32), metadata=np.array(meta))
        with pytest.raises(InputError, match="damaged.npz"):
            Fingerprint.load(damaged)
    with pytest.raises(InputError, match=".npz"):
        Fingerprint(np.zeros((2, 2))).save(tmp_path / "k.txt")
    with pytest.raises(InputError, match="NaN"):
        Fingerprint(np.array([[np.inf]]))


def test_cli_fingerprint_and_score(tmp_path, rng, capsys):
    shots, k_true = _flat_fields(rng, 4, shape=(64, 64))
    ff_dir = tmp_path / "ff"
    for i, s in enumerate(shots):
        write_image(ff_dir / f"Cam_X_{i}.png", s)
    # what a Mac or an editor leaves in a folder is not a flat-field shot
    (ff_dir / "._Cam_X_0.png").write_bytes(b"AppleDouble")
    (ff_dir / "sub.png").mkdir()
    out = tmp_path / "k.npz"
    assert cli_main(["fingerprint", str(ff_dir), "--out", str(out)]) == 0
    fp = Fingerprint.load(out)
    assert fp.camera == "Cam_X" and fp.n_images == 4 and fp.method == "fast"
    assert cli_main(["fingerprint", str(ff_dir), "--out", str(out)]) == 2  # exists, no --force
    # an output folder that cannot be made is an error message, not a traceback
    (tmp_path / "a_file").write_text("")
    assert cli_main(["fingerprint", str(ff_dir), "--out", str(tmp_path / "a_file/k.npz")]) == 2
    assert "a_file" in capsys.readouterr().err
    # a photo of this camera: textured scene with the same PRNU
    yy, xx = np.mgrid[0:64, 0:64]
    scene = 120 + 60 * np.sin(xx / 5.0) * np.cos(yy / 7.0)
    photo = np.clip(np.rint((scene * (1 + k_true))[..., None].repeat(3, 2)), 0, 255)
    photo_path = write_image(tmp_path / "photo.png", photo)
    capsys.readouterr()
    assert cli_main(["score", str(photo_path), "--fingerprint", str(out), "--json"]) == 0
    import json

    result = json.loads(capsys.readouterr().out)
    from dippas_core.correlation import ncc
    from dippas_core.io import read_image
    from dippas_core.residual import residual

    img = read_image(photo_path)
    assert result["ncc"] == pytest.approx(ncc(residual(img), img, fp.K))
    assert result["ncc"] > 0.05 and result["verdict"] == "match"
    assert result["sigma"] == fp.sigma and result["versions"]["numpy"] == np.__version__
    assert cli_main(["score", str(photo_path), "--fingerprint", str(out), "--crop", "80"]) == 2
    assert "cannot crop 80×80" in capsys.readouterr().err


def test_a_fingerprint_parameter_is_a_fingerprint_its_k_or_none(tmp_path):
    """One function tells the accepted kinds apart; anything else is refused by name, before a
    run folder is made."""
    from types import SimpleNamespace

    from dippas_core.config import AnonymizeConfig
    from dippas_core.fingerprint import Fingerprint, fingerprint_parts
    from dippas_core.pipeline import anonymize

    K = np.random.default_rng(3).normal(0, 0.01, (32, 32)).astype(np.float64)
    fp = Fingerprint(K=K, camera="Nikon_D70_0", n_images=10, sigma=4.0)
    got, info = fingerprint_parts(fp)
    assert got.dtype == np.float32 and np.array_equal(got, K.astype(np.float32))
    assert info == {"camera": "Nikon_D70_0", "n_images": 10, "sigma": 4.0, "version": fp.version}
    bare, bare_info = fingerprint_parts(K)  # K alone: no metadata to report
    assert np.array_equal(bare, got) and bare_info == {}
    assert fingerprint_parts(None) == (None, None)  # blind mode
    with pytest.raises(InputError, match="fingerprint K .*NaN|fingerprint K.*finite"):
        fingerprint_parts(np.full((4, 4), np.nan))
    lookalike = SimpleNamespace(K=K)  # once probed with getattr(fingerprint, "K", ...)
    with pytest.raises(InputError, match="Fingerprint, its K as an H×W array, or None.*"
                                         "got SimpleNamespace"):
        fingerprint_parts(lookalike)
    photo = np.full((32, 32, 3), 128, np.uint8)
    with pytest.raises(InputError, match="got SimpleNamespace"):
        anonymize(photo, lookalike, AnonymizeConfig.preset("tiny"), run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()
