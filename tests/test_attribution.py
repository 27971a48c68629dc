"""One attribution score (issue 11): :func:`dippas_core.attribution.attribute` against independent
NumPy formulas on real Dresden photos, and every caller giving the very same numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dippas_core.attribution import Attribution, attribute
from dippas_core.errors import ShapeMismatchError
from dippas_core.residual import residual

#: centre crop scored here: big enough for a clear match, small enough for a quick test
SIZE = 256
#: MATLAB's rgb2gray weights (ITU-R BT.601), written out independently of the library
BT601 = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])


def _centre(a: np.ndarray) -> np.ndarray:
    top, left = (a.shape[0] - SIZE) // 2, (a.shape[1] - SIZE) // 2
    return np.ascontiguousarray(a[top : top + SIZE, left : left + SIZE])


@pytest.fixture(scope="module")
def pairs(camera_fingerprints, natural_photos):
    """(photo, its camera's K, another camera's K) for two real photos of different cameras."""
    cams = sorted(camera_fingerprints)
    out = []
    for cam in cams[:2]:
        photo = next(p for c, _, p in natural_photos if c == cam)
        other = next(c for c in cams if c != cam)
        out.append(
            (
                _centre(photo),
                _centre(camera_fingerprints[cam].K),
                _centre(camera_fingerprints[other].K),
            )
        )
    return out


def _numpy_ncc(W: np.ndarray, photo: np.ndarray, K: np.ndarray) -> float:
    """Paper eq. 2 in plain float64 NumPy: <W, I_g K> / (|W| |I_g K|)."""
    x = (photo.astype(np.float64) @ BT601) * K.astype(np.float64)
    w = W.astype(np.float64)
    return float((w * x).sum() / np.sqrt((w * w).sum() * (x * x).sum()))


def _numpy_pce_at_zero(W: np.ndarray, photo: np.ndarray, K: np.ndarray, excl: int = 11) -> float:
    """PCE at zero shift: circular cross-correlation by FFT, energy outside an 11×11 square."""
    a = W.astype(np.float64)
    b = (photo.astype(np.float64) @ BT601) * K.astype(np.float64)
    a, b = a - a.mean(), b - b.mean()
    cc = np.real(np.fft.ifft2(np.fft.fft2(a) * np.conj(np.fft.fft2(b))))
    half = excl // 2
    keep = np.ones(cc.shape, bool)
    idx = np.arange(-half, excl - half)
    keep[np.ix_(idx % cc.shape[0], idx % cc.shape[1])] = False
    peak = cc[0, 0]
    return float(np.sign(peak) * peak**2 / np.mean(cc[keep] ** 2))


def test_attribute_agrees_with_the_numpy_formulas_on_real_photos(pairs):
    for photo, K, wrong in pairs:
        result = attribute(photo, K, block_size=64)
        W = residual(photo, 5.0)
        assert isinstance(result, Attribution)
        assert np.array_equal(result.residual, W)
        assert result.ncc == pytest.approx(_numpy_ncc(W, photo, K), rel=1e-5)
        assert result.pce == pytest.approx(_numpy_pce_at_zero(W, photo, K), rel=1e-4)
        assert result.pce_shift == (0, 0)
        # the block map: each 64×64 block's NCC is eq. 2 on that block
        assert result.block_ncc.shape == (SIZE // 64, SIZE // 64)
        sl = np.s_[64:128, 128:192]
        assert result.block_ncc[1, 2] == pytest.approx(
            _numpy_ncc(W[sl], photo[sl], K[sl]), rel=1e-5
        )
        # the residual handed back scores the photo against another camera without recomputing
        other = attribute(photo, wrong, residual=result.residual)
        assert other.ncc != result.ncc
        assert other.ncc == pytest.approx(_numpy_ncc(W, photo, wrong), rel=1e-5, abs=1e-9)


def test_attribute_scores_16_bit_like_8_bit_and_the_edges_mask(pairs):
    photo, K, _ = pairs[0]
    as16 = photo.astype(np.uint16) * 257
    assert attribute(as16, K).ncc == pytest.approx(attribute(photo, K).ncc, rel=1e-6)
    everywhere = attribute(photo, K, edges=np.ones(photo.shape[:2], bool))
    assert everywhere.ncc_edges == pytest.approx(everywhere.ncc, rel=1e-9)
    assert np.isnan(attribute(photo, K, edges=np.zeros(photo.shape[:2], bool)).ncc_edges)
    assert np.isnan(attribute(photo, K, pce=False).pce)
    with pytest.raises(ShapeMismatchError):
        attribute(photo[:128], K)


def test_every_caller_gives_the_same_numbers(pairs, tmp_path, capsys):
    """The pipeline's report, ``dippas score``, the evaluation and the viewer score through one
    function: for one photo and fingerprint their NCC and PCE are identical."""
    from dippas_core.cli import main
    from dippas_core.evaluation import score_output
    from dippas_core.fingerprint import Fingerprint
    from dippas_core.io import write_image
    from dippas_core.report import measure

    photo, K, _ = pairs[1]
    ref = attribute(photo, K, block_size=64)

    measured, maps = measure(photo, photo, K, 64, 5.0)
    assert measured["pce_detail"]["after"] == {"ncc": ref.ncc, "pce": ref.pce,
                                               "pce_peak": ref.pce_peak, "pce_kind": "aligned"}
    assert (measured["ncc"]["after"], measured["pce"]["after"]) == (ref.ncc, ref.pce)
    assert measured["pce"]["kind"] == "aligned"
    assert np.array_equal(maps["block_ncc_after"], ref.block_ncc)

    write_image(tmp_path / "photo.png", photo)
    Fingerprint(K=K.astype(np.float32), sigma=5.0).save(tmp_path / "k.npz")
    capsys.readouterr()
    argv = ["score", str(tmp_path / "photo.png"), "--fingerprint", str(tmp_path / "k.npz")]
    # dippas score's PCE is anonymize's and the viewer's: aligned, by default or asked for
    for flags in ([], ["--aligned"]):
        assert main([*argv, *flags, "--json"]) == 0
        cli = json.loads(capsys.readouterr().out)
        assert (cli["ncc"], cli["pce"], cli["pce_shift"]) == (ref.ncc, ref.pce, [0, 0])
        assert cli["pce_kind"] == "aligned"
    # with --search-shifts, dippas score and the evaluation search every shift: the same peak
    assert main([*argv, "--search-shifts", "--json"]) == 0
    searched = attribute(photo, K, pce_shift_range=None)
    cli = json.loads(capsys.readouterr().out)
    assert (cli["pce"], cli["pce_kind"]) == (searched.pce, "peak over shifts")
    quality, per_fp = score_output(photo, photo, {"cam": K}, np.ones(photo.shape[:2], bool))
    assert np.isinf(quality.psnr) and quality.failures() == []
    assert per_fp["cam"]["ncc"] == ref.ncc and per_fp["cam"]["pce"] == searched.pce
    assert per_fp["cam"]["ncc_edges"] == pytest.approx(ref.ncc, rel=1e-9)

    models = pytest.importorskip("napari_dippas._models")
    viewer = models.attribute(photo, K, block_size=64)
    assert (viewer.ncc, viewer.pce) == (ref.ncc, ref.pce)
    assert np.array_equal(viewer.block_ncc, ref.block_ncc)


def test_score_region_crops_photo_and_fingerprint_together(pairs, tmp_path, capsys):
    """``dippas score --region Y,X,H,W``: the photo's region against the same pixels of the
    fingerprint, equal to scoring the two crops made by hand; the PCE says its kind."""
    from dippas_core.cli import main
    from dippas_core.fingerprint import Fingerprint
    from dippas_core.io import write_image

    photo, K, _ = pairs[0]
    write_image(tmp_path / "photo.png", photo)
    Fingerprint(K=K.astype(np.float32), sigma=5.0, camera="cam").save(tmp_path / "k.npz")
    argv = ["score", str(tmp_path / "photo.png"), "--fingerprint", str(tmp_path / "k.npz")]
    capsys.readouterr()
    y, x, h, w = 64, 32, 128, 192
    assert main([*argv, "--region", f"{y},{x},{h},{w}", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    by_hand = attribute(photo[y : y + h, x : x + w], K[y : y + h, x : x + w])
    assert (got["ncc"], got["pce"], got["pce_kind"]) == (by_hand.ncc, by_hand.pce, "aligned")
    assert got["region"] == {"y": y, "x": x, "h": h, "w": w} and got["size"] == [h, w]
    # the fingerprint was cut at the photo's place: another place of K scores otherwise
    elsewhere = attribute(photo[y : y + h, x : x + w], K[y + 2 : y + 2 + h, x : x + w])
    assert got["pce"] != elsewhere.pce
    assert main([*argv, "--region", f"{y},{x},{h},{w}"]) == 0
    line = capsys.readouterr().out
    assert f"PCE {by_hand.pce:.1f} (aligned) on region y={y}, x={x}, {h}×{w}" in line
    assert main([*argv, "--region", f"{y},{x},{h},{w}", "--search-shifts"]) == 0
    assert "(peak over shifts, at shift (" in capsys.readouterr().out
    # refused in one line: outside the photo, odd origin, with --crop
    for bad, match in ((f"{y},{x},{h},{SIZE}", "does not lie inside"), ("1,0,64,64", "even")):
        assert main([*argv, "--region", bad]) == 2
        assert match in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--region", "0,0,64,64", "--crop", "128"])
    assert stop.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_the_no_trace_warning_is_one_function():
    """The viewer and ``dippas anonymize``/``invert`` warn with the same words: no warning at
    or above the decision level, one naming the pixels and the aligned PCE below it."""
    from dippas_core.attribution import PCE_DECISION_LEVEL, trace_warning

    assert trace_warning(PCE_DECISION_LEVEL) is None and trace_warning(900.0) is None
    text = trace_warning(1.9, n_pixels=128 * 128, what="This photo")
    assert text.startswith("This photo (16,384 pixels) carries no detectable trace")
    assert "PCE (aligned) 1.9 < decision level 60" in text
    assert "no detectable trace" in trace_warning(float("nan"))
    models = pytest.importorskip("napari_dippas._models")
    assert models.trace_warning is trace_warning
