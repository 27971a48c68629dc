"""The learned attacker (PRNU-CNN, variant b): split, training, save/load, errors, CLI."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from dippas_core.attacker import (  # noqa: E402
    AttackerConfig,
    AttackerModel,
    PhotoSplit,
    attribution_metrics,
    patch_grid,
    split_photos,
    train_attacker,
)
from dippas_core.errors import InputError  # noqa: E402
from dippas_core.evaluation import camera_label  # noqa: E402

SIZE = 96
N_CAMERAS = 3
# tiny and fast: 32-pixel patches, a 4-channel ResNet
TINY = AttackerConfig(patch=32, stride=32, score_stride=32, region=0, width=4, batch_size=32,
                      lr=1e-2, max_epochs=10, max_minutes=2.0, seed=0, val_flat_fields=1)


def _camera_patterns(seed: int = 7) -> list[np.ndarray]:
    """One known PRNU pattern per synthetic camera: white noise coloured by a camera-specific
    random 3×3 kernel (a patch classifier that does not know where a patch lies on the sensor
    sees the texture of the noise, never its place), 3 % strength."""
    from scipy.ndimage import convolve

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(N_CAMERAS):
        kernel = rng.normal(0, 1, (3, 3))
        pattern = convolve(rng.normal(0, 1, (SIZE, SIZE)), kernel, mode="wrap")
        out.append((0.03 * pattern / pattern.std()).astype(np.float32))
    return out


def _smooth_photo(rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    a, b, c = rng.uniform(0.5, 3.0, 3)
    base = 128 + 50 * np.sin(a * np.pi * xx + c) * np.cos(b * np.pi * yy)
    return base[..., None] * rng.uniform(0.8, 1.1, 3)


def _write_cameras(root: Path, flats: int = 12, photos: int = 4, seed: int = 0) -> Path:
    """A prnu-python-style folder of synthetic cameras: ``photo · (1 + K_c) + noise``."""
    from dippas_core.io import write_image

    rng = np.random.default_rng(seed)
    patterns = _camera_patterns()
    for sub, n in (("ff-jpg", flats), ("nat-jpg", photos)):
        (root / sub).mkdir(parents=True)
        for c, K in enumerate(patterns):
            for i in range(n):
                scene = _smooth_photo(rng) if sub == "nat-jpg" else np.full((SIZE, SIZE, 3), 150.0)
                img = scene * (1 + K[..., None]) + rng.normal(0, 1.0, scene.shape)
                write_image(root / sub / f"Synth_{c}_{sub[:2]}{i:02d}.png", img)
    return root


@pytest.fixture(scope="module")
def cameras_dir(tmp_path_factory) -> Path:
    return _write_cameras(tmp_path_factory.mktemp("synthetic-cameras"))


@pytest.fixture(scope="module")
def trained(cameras_dir) -> AttackerModel:
    import torch

    torch.set_num_threads(1)
    return train_attacker(cameras_dir, TINY)


# ---- split -------------------------------------------------------------------------------------


def test_split_is_by_photo_and_holds_out_the_cpu_preset_photos(testdata):
    from dippas_core.evaluation import EvalConfig
    from dippas_core.photo_sets import list_images, select_photos

    split = split_photos(testdata)
    names = split.names()
    sides = [set(names[s]) for s in ("train", "validation", "test")]
    # no shot on two sides (so no photo's patches on both), and nothing lost
    assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
    every = {p.name for p in list_images(testdata / "ff-jpg")}
    every |= {p.name for p in list_images(testdata / "nat-jpg")}
    assert set().union(*sides) == every
    # the test photos are exactly those the cpu evaluation preset scores, one per camera
    scored = select_photos(list_images(testdata / "nat-jpg"),
                           EvalConfig.preset("cpu").photos_per_camera)
    assert sides[2] == {p.name for p in scored}
    assert sorted(camera_label(n) for n in sides[2]) == list(split.cameras)
    # every camera trains and validates on flat fields
    assert {camera_label(n) for n in names["validation"]} == set(split.cameras)


def test_split_refuses_a_shot_on_two_sides(tmp_path):
    a, b = tmp_path / "ff" / "Cam_0_1.png", tmp_path / "nat" / "Cam_0_1.png"
    with pytest.raises(InputError, match="Cam_0_1.png is on both"):
        PhotoSplit((a,), (), (b,))


def test_training_never_sees_the_test_patches(trained, cameras_dir):
    split = trained.meta["split"]
    assert not set(split["train"]) & set(split["test"])
    assert not set(split["validation"]) & set(split["test"])
    assert len(split["test"]) == N_CAMERAS  # one held-out photo per camera


def test_patch_grid_is_centred_and_in_bounds():
    cells = patch_grid(100, 70, 32, 16)
    assert all(0 <= t <= 100 - 32 and 0 <= s <= 70 - 32 for t, s in cells)
    tops, lefts = sorted({t for t, _ in cells}), sorted({s for _, s in cells})
    assert abs(tops[0] - (100 - 32 - tops[-1])) <= 1 and abs(lefts[0] - (70 - 32 - lefts[-1])) <= 1
    assert patch_grid(20, 70, 32, 16) == []


# ---- learning ----------------------------------------------------------------------------------


def test_fit_on_synthetic_cameras_attributes_held_out_images(trained, cameras_dir):
    """Held-out synthetic photos (never trained on) are attributed to their camera."""
    from dippas_core.io import read_image

    rng = np.random.default_rng(99)
    patterns = _camera_patterns()
    hits = []
    for c, K in enumerate(patterns):  # fresh scenes, same sensors
        for _ in range(5):
            img = _smooth_photo(rng) * (1 + K[..., None]) + rng.normal(0, 1.0, (SIZE, SIZE, 3))
            probs = trained.predict_proba(np.clip(np.rint(img), 0, 255).astype(np.uint8))
            assert abs(sum(probs.values()) - 1) < 1e-5
            hits.append(max(probs, key=probs.get) == f"Synth_{c}")
    for name in trained.meta["split"]["test"]:
        probs = trained.predict_proba(read_image(cameras_dir / "nat-jpg" / name))
        hits.append(max(probs, key=probs.get) == camera_label(name))
    assert np.mean(hits) >= 0.9, f"accuracy {np.mean(hits):.2f}"


def test_untrained_model_is_near_chance_on_the_same_images(cameras_dir):
    """The check above can fail: the same images with no training give chance-level answers."""
    import torch

    torch.set_num_threads(1)
    model = train_attacker(cameras_dir, AttackerConfig(**{**TINY.to_dict(), "lr": 1e-9,
                                                          "max_epochs": 1}))
    rng = np.random.default_rng(99)
    hits = []
    for c, K in enumerate(_camera_patterns()):
        for _ in range(5):
            img = _smooth_photo(rng) * (1 + K[..., None])
            probs = model.predict_proba(np.clip(np.rint(img), 0, 255).astype(np.uint8))
            hits.append(max(probs, key=probs.get) == f"Synth_{c}")
    assert np.mean(hits) < 0.9


def test_attribution_metrics_against_hand_counts():
    lp = np.log(np.array([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2], [0.1, 0.1, 0.8]]))
    m = attribution_metrics(lp, np.array([0, 1, 2]))
    assert m["accuracy"] == pytest.approx(2 / 3) and m["chance_accuracy"] == pytest.approx(1 / 3)
    # positives 0.7, 0.3, 0.8 vs negatives 0.2, 0.1, 0.5, 0.2, 0.1, 0.1: 17 of 18 pairs in order
    assert m["auc"] == pytest.approx((6 + 5 + 6) / 18)


# ---- files -------------------------------------------------------------------------------------


def test_save_load_round_trip_gives_identical_predictions(trained, cameras_dir, tmp_path):
    from dippas_core.io import read_image

    path = trained.save(tmp_path / "m.pt")
    back = AttackerModel.load(path)
    assert back.cameras == trained.cameras and back.config == trained.config
    assert back.meta["data_sha256"] == trained.meta["data_sha256"]
    assert back.meta["seed"] == 0 and "torch" in back.meta["versions"]
    img = read_image(cameras_dir / "nat-jpg" / trained.meta["split"]["test"][0])
    np.testing.assert_array_equal(back.patch_log_proba(img), trained.patch_log_proba(img))


def test_bad_model_files_give_clear_errors(trained, tmp_path):
    import torch

    with pytest.raises(InputError, match="no attacker model file"):
        AttackerModel.load(tmp_path / "missing.pt")
    good = trained.save(tmp_path / "good.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(good[: len(good) // 2])
    with pytest.raises(InputError, match="not a readable attacker model"):
        AttackerModel.load(tmp_path / "cut.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(InputError, match="not a readable attacker model"):
        AttackerModel.load(tmp_path / "text.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="not a dippas-attacker model"):
        AttackerModel.load(tmp_path / "other.pt")
    # a pickle that would run code is refused, never executed
    torch.save({"format": "dippas-attacker", "x": zipfile.ZipInfo("a")}, tmp_path / "pickle.pt")
    with pytest.raises(InputError, match="not a readable attacker model"):
        AttackerModel.load(tmp_path / "pickle.pt")
    # weights that do not fit the recorded cameras
    payload = torch.load(tmp_path / "good.pt", weights_only=True)
    torch.save({**payload, "cameras": [*payload["cameras"], "Extra_0"]}, tmp_path / "cams.pt")
    with pytest.raises(InputError, match="damaged attacker model"):
        AttackerModel.load(tmp_path / "cams.pt")
    torch.save({**payload, "format_version": 99}, tmp_path / "v99.pt")
    with pytest.raises(InputError, match="format version 99"):
        AttackerModel.load(tmp_path / "v99.pt")


def test_model_refuses_cameras_it_does_not_know(trained):
    with pytest.raises(InputError, match="knows cameras"):
        trained.check_cameras(["Synth_0", "Nikon_D70_0"])


def test_image_smaller_than_a_patch_is_refused(trained):
    with pytest.raises(InputError, match="at least 32×32"):
        trained.predict_proba(np.zeros((16, 40, 3), np.uint8))


# ---- evaluation and CLI ------------------------------------------------------------------------


def test_evaluation_scores_the_attacker_beside_ncc(trained, cameras_dir, tmp_path):
    from dippas_core.evaluation import EvalConfig, evaluate, load_dataset

    cfg = EvalConfig(crop_sizes=(64,), methods=("untouched", "denoise"), pce=False,
                     photos_per_camera=1)
    data = load_dataset(cameras_dir, cfg)
    summary = evaluate(cameras_dir, tmp_path / "ev", cfg, dataset=data, plots=False,
                       attacker=trained)
    rows = {s["method"]: s for s in summary}
    for s in rows.values():
        assert 0 <= s["acc_attacker"] <= 1 and 0 <= s["auc_attacker"] <= 1
        assert 0 <= s["acc_ncc"] <= 1
    # the scores file holds one probability per (crop, camera), summing to one per crop
    import csv

    with (tmp_path / "ev" / "scores.csv").open() as fh:
        scores = [r for r in csv.DictReader(fh) if r["method"] == "untouched"]
    per_crop: dict[str, float] = {}
    for r in scores:
        per_crop[r["crop"]] = per_crop.get(r["crop"], 0.0) + float(r["attacker"])
    assert all(abs(v - 1) < 1e-5 for v in per_crop.values())
    # resuming the same folder without the attacker is refused (the tables would mix)
    with pytest.raises(InputError, match="another attacker"):
        evaluate(cameras_dir, tmp_path / "ev", cfg, dataset=data, plots=False)


def test_evaluation_refuses_an_attacker_trained_on_scored_photos(trained, cameras_dir, tmp_path):
    from dippas_core.evaluation import EvalConfig, evaluate, load_dataset

    cfg = EvalConfig(crop_sizes=(64,), methods=("untouched",), pce=False)  # every photo
    data = load_dataset(cameras_dir, cfg)
    with pytest.raises(InputError, match="trained on"):
        evaluate(cameras_dir, tmp_path / "ev", cfg, dataset=data, attacker=trained)


def test_cli_train_attacker_smoke(cameras_dir, tmp_path, capsys):
    from dippas_core.cli import main

    out = tmp_path / "model.pt"
    rc = main(["train-attacker", str(cameras_dir), "--out", str(out), "--patch", "32",
               "--width", "4", "--region", "0", "--epochs", "2", "--max-minutes", "1",
               "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "held-out patch level: accuracy" in printed and "chance 0.333" in printed
    doc = json.loads((tmp_path / "model.pt.json").read_text())
    assert doc["config"]["patch"] == 32 and len(doc["history"]) <= 2
    assert doc["held_out"]["photo"]["n"] == N_CAMERAS
    assert AttackerModel.load(out).cameras == [f"Synth_{c}" for c in range(N_CAMERAS)]
    rc = main(["train-attacker", str(tmp_path / "nope"), "--out", str(out)])
    assert rc == 2 and "no data folder" in capsys.readouterr().err


def test_scoring_saved_outputs_matches_scoring_during_the_run(trained, cameras_dir, tmp_path):
    """Two paths to the attacker column: inline during the run, and later from the kept PNGs."""
    import csv

    from dippas_core.evaluation import EvalConfig, evaluate, load_dataset, score_saved_outputs

    cfg = EvalConfig(crop_sizes=(64,), methods=("untouched", "denoise"), pce=False,
                     photos_per_camera=1)
    data = load_dataset(cameras_dir, cfg)
    evaluate(cameras_dir, tmp_path / "inline", cfg, dataset=data, plots=False, attacker=trained)
    evaluate(cameras_dir, tmp_path / "later", cfg, dataset=data, plots=False, save_outputs=True)
    assert len(list((tmp_path / "later" / "outputs" / "denoise").glob("*.png"))) == N_CAMERAS
    summary = score_saved_outputs(tmp_path / "later", trained, plots=False)

    def column(folder):
        with (tmp_path / folder / "scores.csv").open() as fh:
            return [(r["method"], r["crop"], r["fingerprint"], float(r["attacker"]))
                    for r in csv.DictReader(fh)]

    inline, later = column("inline"), column("later")
    assert [r[:3] for r in inline] == [r[:3] for r in later]
    np.testing.assert_allclose([r[3] for r in inline], [r[3] for r in later], atol=1e-6)
    assert all(np.isfinite(s["auc_attacker"]) for s in summary)
    params = json.loads((tmp_path / "later" / "params.json").read_text())
    assert params["attacker"]["cameras"] == trained.cameras
