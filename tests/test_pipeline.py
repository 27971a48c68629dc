"""anonymize(): the real thing end to end on CPU (tiny DIP preset, crop of the real sample)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dippas_core.assembly import assemble
from dippas_core.config import PRESETS, AnonymizeConfig
from dippas_core.errors import InputError, ShapeMismatchError
from dippas_core.io import center_crop
from dippas_core.pipeline import anonymize
from dippas_core.run import RunDirectory
from dippas_core.sample import sample_data


@pytest.fixture(scope="module")
def sample64():
    photo, fingerprint = sample_data()
    return center_crop(photo, 64).copy(), fingerprint.center_crop(64)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_anonymize_aware_end_to_end(sample64, tmp_path):
    photo, fingerprint = sample64
    original = photo.copy()
    # the tiny network reaches ~30 dB on this crop in ~600 iterations on one CPU thread
    config = AnonymizeConfig.preset(
        "tiny", seed=3, max_iter=900, record_psnr=29.0, stop_psnr=31.0, B=32, L=5
    )
    steps: list = []
    res = anonymize(photo, fingerprint, config, run_dir=tmp_path / "run", on_step=steps.append)
    np.testing.assert_array_equal(photo, original)  # input untouched
    rep = res.report
    json.dumps(rep.to_dict())  # its JSON form

    assert res.image.dtype == np.uint8 and res.image.shape == photo.shape
    assert rep["mode"] == "aware" and rep["seed"] == 3 and rep["device"].startswith("cpu")
    assert rep["inversion"]["stop_reason"] in ("psnr", "max_iter")
    kept = sum(s.snapshot is not None for s in steps)
    assert kept == rep["inversion"]["n_snapshots"] > 0
    assert rep["psnr"] > 28.0  # an average of snapshots that each have PSNR >= 29 dB
    # the point of it all: the fingerprint's trace is weaker in the result than in the photo
    assert abs(rep["ncc"]["after"]) < abs(rep["ncc"]["before"])
    assert res.maps["block_ncc_before"].shape == res.maps["block_ncc_after"].shape == (2, 2)
    assert rep["block_ncc"]["mean_abs_after"] < rep["block_ncc"]["mean_abs_before"]
    assert {"inversion", "assembly", "total"} <= set(rep["timing_s"])
    assert "numpy" in rep["versions"] and rep["config"]["dip"]["record_psnr"] == 29.0

    # the run folder reopens and re-assembles to the very same image without the DIP
    run = RunDirectory.open(res.run_dir)
    assert run.status == "finished" and run.n_ready == kept
    assert np.all(run.snapshots.psnrs >= 29.0)
    again = assemble(run, 32, 5, 29.0)
    np.testing.assert_array_equal(again.image, res.image)
    # the run record says how gamma behaved while snapshots were kept
    gamma = run.config["result"]["gamma"]
    assert gamma["recording_iterations"] == kept and 0.0 <= gamma["at_bound_share"] <= 1.0
    assert res.report["inversion"]["gamma"] == gamma  # the report says what the run recorded
    np.testing.assert_allclose(again.ncc_map, res.maps["block_ncc_after"], rtol=1e-5, atol=1e-8)


def test_anonymize_blind_uses_the_photo_residual(sample64, tmp_path):
    from dippas_core.residual import residual

    photo = sample64[0][:32, :32]
    config = AnonymizeConfig.preset(
        "tiny", max_iter=120, record_psnr=10.0, stop_psnr=99.0, B=32, L=3
    )
    res = anonymize(photo, None, config, run_dir=tmp_path / "run")
    assert res.report["mode"] == "blind" and "photo residual" in res.report["reference"]
    run = RunDirectory.open(res.run_dir)
    np.testing.assert_allclose(run.reference, residual(photo), rtol=1e-5, atol=1e-6)
    assert res.report["inversion"]["stop_reason"] == "max_iter"


def test_temporary_run_is_removed_and_bad_inputs_are_named(sample64):
    photo, fingerprint = sample64
    config = AnonymizeConfig.preset("tiny", max_iter=20, record_psnr=0.0, B=32, L=2)
    res = anonymize(center_crop(photo, 32), fingerprint.center_crop(32), config)
    assert res.run_dir is None and res.report["run_dir"] is None
    with pytest.raises(ShapeMismatchError, match="64×64"):
        anonymize(photo, fingerprint.center_crop(32), config)
    with pytest.raises(InputError, match="colour"):
        anonymize(photo[..., 0], None, config)
    with pytest.raises(InputError, match="AnonymizeConfig"):
        anonymize(photo, None, {"B": 32})


def test_config_round_trip():
    cfg = AnonymizeConfig.preset("cpu", seed=9, B=128, L=25, max_iter=50)
    back = AnonymizeConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and back.dip.seed == 9 and back.dip.max_iter == 50
    assert back.assembly.B == 128
    assert back.assembly_tau == cfg.assembly_tau == PRESETS["cpu"]["assembly"]["tau"]
    with pytest.raises(InputError, match="unknown"):
        AnonymizeConfig.from_dict({"Bee": 3})


def test_sixteen_bit_photo_gives_a_float_result(sample64):
    photo = center_crop(sample64[0], 32).astype(np.uint16) * 257  # the same picture, 16 bits
    config = AnonymizeConfig.preset("tiny", max_iter=30, record_psnr=0.0, B=32, L=3)
    res = anonymize(photo, sample64[1].center_crop(32), config)
    assert res.image.dtype == np.float32 and res.image.shape == (32, 32, 3)
    assert 0.0 <= res.image.min() and res.image.max() <= 255.0
    assert res.report["photo"]["dtype"] == "uint16" and np.isfinite(res.report["psnr"])


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"B": 48}, "B=48.*multiple of the run's tile 32"),
        ({"B": 16}, "B=16"),
        ({"L": 0}, "L .*>= 1"),
        ({"tau": float("nan")}, "tau .*finite"),
        ({"tau": None, "record_psnr": -np.inf}, "tau .*finite"),  # the recording threshold
    ],
)
def test_bad_assembly_parameters_fail_before_any_run_exists(
    sample64, tmp_path, monkeypatch, changes, match
):
    """B, L, tau are checked (by the config, or against the photo) before a folder is made or
    the DIP starts."""
    import dippas_core.dip as dip
    import dippas_core.run as run_module

    photo, fingerprint = sample64
    made: list = []
    monkeypatch.setattr(run_module, "temporary_run_folder", lambda: made.append(1) or "/nowhere")
    monkeypatch.setattr(dip, "invert", lambda *a, **k: pytest.fail("the inversion started"))
    with pytest.raises(InputError, match=match):
        anonymize(photo, fingerprint, AnonymizeConfig.preset("tiny", max_iter=5, **changes))
    with pytest.raises(InputError, match=match):
        config = AnonymizeConfig.preset("tiny", max_iter=5, **changes)
        anonymize(photo, fingerprint, config, run_dir=tmp_path / "run")
    assert made == [] and not (tmp_path / "run").exists()


def test_whole_image_block_is_accepted_up_front(sample64):
    photo, fingerprint = sample64
    small = center_crop(photo, 48)  # 48 is no multiple of the tile, but B >= the image is one block
    config = AnonymizeConfig.preset("tiny", max_iter=3, record_psnr=0.0, B=64, L=2)
    res = anonymize(small, fingerprint.center_crop(48), config)
    assert res.assembly.params["grid"] == [1, 1]


def test_failed_inversion_checks_leave_a_previous_run_alone(sample64, tmp_path):
    """invert() refuses the device: no run is left 'recording', a --force target is not replaced."""
    from dippas_core.errors import DeviceError

    photo, fingerprint = sample64
    small, K = center_crop(photo, 32), fingerprint.center_crop(32)
    previous = AnonymizeConfig.preset("tiny", max_iter=10, record_psnr=0.0, B=32, L=2)
    anonymize(small, K, previous, run_dir=tmp_path / "run")
    before = RunDirectory.open(tmp_path / "run")
    n_before = len(before.snapshots)
    assert before.status == "finished" and n_before > 0

    bad = AnonymizeConfig.preset("tiny", max_iter=10, record_psnr=0.0, B=32, device="cuda:99")
    with pytest.raises(DeviceError, match="cuda:99"):
        anonymize(small, K, bad, run_dir=tmp_path / "run", force=True)
    after = RunDirectory.open(tmp_path / "run")
    assert after.status == "finished" and len(after.snapshots) == n_before
    with pytest.raises(DeviceError, match="cuda:99"):
        anonymize(small, K, bad, run_dir=tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()
