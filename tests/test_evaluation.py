"""The evaluation protocol (issue 6): crops, scores, ROC/AUC, PSNR, C, edges, files, CLI."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from dippas_core.errors import InputError
from dippas_core.evaluation import (
    METHODS,
    Dataset,
    EvalConfig,
    Method,
    camera_label,
    crop_layout,
    evaluate,
    make_crops,
    register_method,
)

CAMERAS = ("Nikon_D70_1", "Nikon_D70s_1")


def _mann_whitney_auc(scores, labels) -> float:
    """AUC as P(score of a positive > score of a negative), ties counting one half."""
    pos = np.asarray(scores)[np.asarray(labels)]
    neg = np.asarray(scores)[~np.asarray(labels)]
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (pos.size * neg.size))


@pytest.fixture(scope="module")
def tiny_dataset(camera_fingerprints, natural_photos):
    """2 cameras × 2 photos, two 48×48 crops each, inside the centre 96×96 of the 512 crops."""
    region = 96
    sl = slice(256 - region // 2, 256 + region // 2)
    photos = []
    for cam in CAMERAS:
        mine = [(c, n, p[sl, sl]) for c, n, p in natural_photos if c == cam][:2]
        photos.extend(mine)
    crops = make_crops(photos, (48,), 2, region)
    fps = {cam: camera_fingerprints[cam].K[sl, sl].copy() for cam in CAMERAS}
    return Dataset(region, fps, crops, {"photos": [n for _, n, _ in photos]})


def test_crop_layout_is_non_overlapping_centred_and_inside():
    cells = crop_layout(64, 4, 160)
    assert len(cells) == 4 and len(set(cells)) == 4
    occupied = np.zeros((160, 160), int)
    for top, left in cells:
        occupied[top : top + 64, left : left + 64] += 1
    assert occupied.max() == 1
    assert crop_layout(64, 1, 160) == [(48, 48)]  # one crop: the centre
    with pytest.raises(InputError, match="region"):
        crop_layout(64, 5, 160)  # 3×3 grid of 64 does not fit in 160


def test_camera_label_is_the_name_before_the_last_underscore():
    assert camera_label("x/Nikon_D70s_1_23136.JPG") == "Nikon_D70s_1"
    with pytest.raises(InputError, match="camera"):
        camera_label("nounderscore.png")


def test_unknown_method_and_preset_are_named():
    with pytest.raises(InputError, match="no_such"):
        EvalConfig(methods=("untouched", "no_such"))
    with pytest.raises(InputError, match="preset"):
        EvalConfig.preset("gpu9000")
    assert EvalConfig.preset("paper").crop_sizes == (512,)
    cfg = EvalConfig.preset("cpu")
    assert EvalConfig.from_dict(cfg.to_dict()) == cfg


def test_protocol_on_a_tiny_set_writes_consistent_results(tiny_dataset, tmp_path):
    calls = []

    def halve_contrast(photo, K, ctx):
        calls.append(ctx.crop_id)
        return 128 + (photo.astype(np.float32) - 128) * 0.5

    register_method(Method("halve_contrast", halve_contrast, "contrast × 0.5"))
    try:
        cfg = EvalConfig.preset(
            "tiny", crop_sizes=(48,), methods=("untouched", "denoise", "subtract", "halve_contrast")
        )
        out = tmp_path / "eval"
        summary = evaluate("in-memory", out, cfg, dataset=tiny_dataset)
        assert [s["method"] for s in summary] == list(cfg.methods)
        n_crops = len(tiny_dataset.crops)
        assert n_crops == 8 and len(calls) == n_crops

        for name in ("scores.csv", "summary.csv", "summary_common.csv", "summary.json",
                     "params.json", "roc_48.png", "auc_vs_psnr_48.png"):
            assert (out / name).is_file(), name
        for png in ("roc_48.png", "auc_vs_psnr_48.png"):
            assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with (out / "scores.csv").open() as fh:
            rows = list(csv.DictReader(fh))
        assert len(rows) == 4 * n_crops * 2  # methods × crops × fingerprints
        doc = json.loads((out / "summary.json").read_text())
        by_method = {s["method"]: s for s in doc["all_crops"]}

        for method, s in by_method.items():
            mine = [r for r in rows if r["method"] == method]
            labels = np.array([r["label"] == "1" for r in mine])
            assert labels.sum() == n_crops  # each crop once against its own camera
            auc = _mann_whitney_auc([float(r["ncc"]) for r in mine], labels)
            assert s["auc_ncc"] == pytest.approx(auc, abs=1e-9), method
            auc_pce = _mann_whitney_auc([float(r["pce"]) for r in mine], labels)
            assert s["auc_pce"] == pytest.approx(auc_pce, abs=1e-9), method
            psnrs = {r["crop"]: float(r["psnr"]) for r in mine}
            if method != "untouched":
                capped = np.minimum(list(psnrs.values()), 100.0)
                assert s["mean_psnr"] == pytest.approx(capped.mean(), rel=1e-6)
                assert s["n_unchanged"] == int(np.isinf(list(psnrs.values())).sum())
                assert s["C"] == pytest.approx(
                    s["mean_psnr"] * (1 - 2 * abs(s["auc_ncc"] - 0.5)), rel=1e-6
                )
        assert by_method["untouched"]["mean_psnr"] is None  # infinite: JSON null
        assert by_method["untouched"]["ncc_cut_vs_untouched"] == pytest.approx(1.0)
        # a contrast change scales W and I alike: the NCC barely moves, the PSNR drops a lot
        assert by_method["halve_contrast"]["mean_psnr"] < 20
        params = json.loads((out / "params.json").read_text())
        assert params["partial"] is False and params["config"]["seed"] == cfg.seed
        assert params["n_crops"] == n_crops and "numpy" in params["versions"]
        assert "subtract" in params["method_notes"]  # the alpha of every crop is recorded

        # re-reporting from scores.csv alone gives the same summary
        before = (out / "summary.json").read_text()
        (out / "summary.json").unlink()
        evaluate("in-memory", out, cfg, compute=False)
        assert (out / "summary.json").read_text() == before

        # resuming with one more method runs only that method
        calls.clear()
        cfg2 = cfg.replace(methods=(*cfg.methods, "inpaint_l2"))
        evaluate("in-memory", out, cfg2, dataset=tiny_dataset)
        assert calls == []
        with (out / "scores.csv").open() as fh:
            assert len(list(csv.DictReader(fh))) == 5 * n_crops * 2
    finally:
        METHODS.pop("halve_contrast", None)


def test_untouched_auc_on_512_centre_crops_reaches_the_standard_level(
    camera_fingerprints, natural_photos, tmp_path
):
    fps = {cam: fp.K for cam, fp in camera_fingerprints.items()}
    crops = make_crops(natural_photos, (512,), 1, 512)
    dataset = Dataset(512, fps, crops, {})
    cfg = EvalConfig(crop_sizes=(512,), methods=("untouched",), pce=False)
    summary = evaluate("in-memory", tmp_path, cfg, dataset=dataset, plots=False)
    (row,) = summary
    assert row["n_crops"] == 16 and row["n_pairs"] == 96
    assert row["auc_ncc"] >= 0.95  # measured 0.963 (SPEC §6: prnu-python reports ~0.98 on 20)


def test_cli_runs_on_a_folder_of_files(camera_fingerprints, flatfield_crops, natural_photos,
                                       tmp_path):
    from dippas_core.cli import main
    from dippas_core.io import write_image

    data = tmp_path / "data"
    (data / "ff-jpg").mkdir(parents=True)
    (data / "nat-jpg").mkdir()
    sl = slice(224, 288)
    for cam in CAMERAS:
        for i, ff in enumerate(flatfield_crops[cam][:4]):
            write_image(data / "ff-jpg" / f"{cam}_{i}.png", ff[sl, sl])
    for cam, name, photo in natural_photos:
        if cam in CAMERAS:
            stem = name.rsplit("_", 1)[1][:-4]
            write_image(data / "nat-jpg" / f"{cam}_{stem}.png", photo[sl, sl])
    out = tmp_path / "out"
    rc = main(["evaluate", "--preset", "tiny", "--data", str(data), "--out", str(out),
               "--methods", "untouched,denoise", "--sizes", "32", "--crops-per-photo", "1",
               "--quiet"])
    assert rc == 0
    doc = json.loads((out / "summary.json").read_text())
    assert [s["method"] for s in doc["all_crops"]] == ["untouched", "denoise"]
    assert doc["all_crops"][0]["n_crops"] == 9  # 4 + 5 photos of the two cameras
    assert sorted(p.name for p in (out / "fingerprints").iterdir()) == [
        f"{cam}_32_s5.npz" for cam in CAMERAS
    ]
    # bad input gets an error line, not a traceback
    rc = main(["evaluate", "--data", str(tmp_path / "nope"), "--out", str(out)])
    assert rc == 2
