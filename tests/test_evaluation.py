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


def test_the_dippas_methods_run_the_anonymizer_preset_and_old_params_still_open():
    from dippas_core.config import AnonymizeConfig

    for name, anonymizer in (("cpu", "cpu"), ("cpu-full", "cpu"), ("paper", "paper"),
                             ("tiny", "tiny")):
        assert EvalConfig.preset(name).dippas == AnonymizeConfig.preset(anonymizer)
    cfg = EvalConfig.preset("cpu", sigma=4.0, B=32, max_iter=7)
    run = cfg.anonymize_config(seed=12)
    assert run == AnonymizeConfig.preset("cpu", B=32, max_iter=7, sigma=4.0, seed=12)
    # a params.json of an older version: the DIPPAS settings under their old names
    old = {**EvalConfig.preset("cpu").to_dict(), "dip_preset": "cpu", "block": 128, "top_l": 2,
           "tau": 38.0, "dip_changes": {"max_iter": 1500, "lr": 0.01, "tau_psnr": 37.0}}
    old.pop("dippas")
    back = EvalConfig.from_dict(old)
    assert back.dippas == AnonymizeConfig.preset("cpu", B=128, L=2, tau=38.0, record_psnr=37.0)


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
    assert row["auc_ncc"] >= 0.95  # measured 0.963 (method §6: prnu-python reports ~0.98 on 20)


@pytest.fixture(scope="module")
def data_folder(camera_fingerprints, flatfield_crops, natural_photos, tmp_path_factory):
    """A folder laid out like the test data: 4 flat fields and the photos of two cameras, 64×64."""
    from dippas_core.io import write_image

    data = tmp_path_factory.mktemp("evaldata")
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
    return data


def test_cli_runs_on_a_folder_of_files(data_folder, tmp_path):
    from dippas_core.cli import main

    data = data_folder
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


def test_split_reference_gives_methods_and_detector_disjoint_halves_of_the_flat_fields(
    data_folder, tmp_path
):
    from dippas_core.evaluation import load_dataset
    from dippas_core.fingerprint import estimate_fingerprint

    cfg = EvalConfig.preset("tiny", crop_sizes=(32,), crops_per_photo=1, reference="split")
    ds = load_dataset(data_folder, cfg, cache_dir=tmp_path)
    assert ds.attack_fingerprints is not None
    for cam in CAMERAS:
        flats = sorted((data_folder / "ff-jpg").glob(f"{cam}_*.png"))
        detector = estimate_fingerprint(flats[1::2], crop=32).K
        attack = estimate_fingerprint(flats[0::2], crop=32).K
        np.testing.assert_allclose(ds.fingerprints[cam], detector, atol=1e-6)
        np.testing.assert_allclose(ds.attack_fingerprints[cam], attack, atol=1e-6)
        # different shots, different estimates (the same shots would correlate 1)
        r = np.corrcoef(detector.ravel(), attack.ravel())[0, 1]
        assert r < 0.5, r
        crop = next(c for c in ds.crops if c.camera == cam)
        np.testing.assert_array_equal(ds.fingerprint_crop(cam, crop, attack=True), attack)
    det, att = set(ds.files["flat_fields_detector"]), set(ds.files["flat_fields_attack"])
    assert not det & att and det | att == set(ds.files["flat_fields"])
    # the plain protocol uses all shots for one fingerprint that both sides share
    same = load_dataset(data_folder, cfg.replace(reference="same"), cache_dir=tmp_path / "same")
    assert same.attack_fingerprints is None
    crop = same.crops[0]
    np.testing.assert_array_equal(
        same.fingerprint_crop(crop.camera, crop, attack=True),
        same.fingerprint_crop(crop.camera, crop),
    )


def test_aware_methods_get_the_attack_fingerprint_and_scores_use_the_detectors(
    tiny_dataset, tmp_path
):
    from dippas_core.correlation import ncc
    from dippas_core.residual import residual

    swapped = {CAMERAS[0]: tiny_dataset.fingerprints[CAMERAS[1]],
               CAMERAS[1]: tiny_dataset.fingerprints[CAMERAS[0]]}
    ds = Dataset(tiny_dataset.region, tiny_dataset.fingerprints, tiny_dataset.crops,
                 tiny_dataset.files, attack_fingerprints=swapped)
    given = {}

    def remember_k(photo, K, ctx):
        given[ctx.crop_id] = K
        return photo

    register_method(Method("remember_k", remember_k, "remember K", needs_fingerprint=True))
    try:
        cfg = EvalConfig(methods=("untouched", "remember_k"), reference="split", pce=False)
        evaluate("in-memory", tmp_path, cfg, dataset=ds, plots=False)
    finally:
        METHODS.pop("remember_k", None)
    for crop in ds.crops:
        other = CAMERAS[1 - CAMERAS.index(crop.camera)]
        np.testing.assert_array_equal(given[crop.crop_id], ds.fingerprint_crop(other, crop))
    with open(tmp_path / "scores.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["method"] == "remember_k"]
    assert len(rows) == len(ds.crops) * len(CAMERAS)
    by_id = {c.crop_id: c for c in ds.crops}
    for r in rows:
        crop = by_id[r["crop"]]
        K = ds.fingerprint_crop(r["fingerprint"], crop)
        expected = ncc(residual(crop.image, 5.0), crop.image, K)
        assert float(r["ncc"]) == pytest.approx(expected, abs=1e-9)


def test_results_made_with_another_reference_are_not_resumed_into_one_table(
    tiny_dataset, tmp_path
):
    cfg = EvalConfig(methods=("untouched",), pce=False)
    evaluate("in-memory", tmp_path, cfg, dataset=tiny_dataset, plots=False)
    with pytest.raises(InputError, match="reference='same'"):
        evaluate("in-memory", tmp_path, cfg.replace(reference="split"), dataset=tiny_dataset,
                 plots=False)
    # a fresh start is allowed
    evaluate("in-memory", tmp_path, cfg.replace(reference="split"), dataset=tiny_dataset,
             plots=False, resume=False)
    with pytest.raises(InputError, match="reference"):
        EvalConfig(reference="other")
    # nor merged into one
    from dippas_core.evaluation import merge_scores

    same = tmp_path / "same"
    evaluate("in-memory", same, cfg, dataset=tiny_dataset, plots=False)
    with pytest.raises(InputError, match="not comparable"):
        merge_scores([same, tmp_path], tmp_path / "merged")
    assert merge_scores([same, same], tmp_path / "merged") > 0


def test_cli_split_reference_caches_both_halves(data_folder, tmp_path):
    from dippas_core.cli import main

    out = tmp_path / "out"
    rc = main(["evaluate", "--preset", "tiny", "--data", str(data_folder), "--out", str(out),
               "--methods", "untouched,subtract", "--sizes", "32", "--crops-per-photo", "1",
               "--reference", "split", "--no-pce", "--quiet"])
    assert rc == 0
    names = sorted(p.name for p in (out / "fingerprints").iterdir())
    assert names == sorted(f"{cam}_32_s5_{role}.npz" for cam in CAMERAS
                           for role in ("attack", "detector"))
    params = json.loads((out / "params.json").read_text())
    assert params["config"]["reference"] == "split"
    assert len(params["files"]["flat_fields_attack"]) == 4


def test_auc_plot_axis_keeps_every_point_in_view():
    from dippas_core.evaluation import auc_axis_limits

    assert auc_axis_limits([0.5, 0.84]) == (0.3, 1.02)
    low, high = auc_axis_limits([0.244, 0.6, float("nan")])  # the split run's TV inpainting
    assert low < 0.244 and high > 1.0
    assert auc_axis_limits([0.0])[0] <= 0.0


def test_a_dippas_run_that_never_reaches_tau_is_a_failure_not_a_scored_output(tiny_dataset):
    """The protocol compares methods at the quality bar: the whole-photo threshold fallback (an
    image from the best outputs below tau) must not enter the tables."""
    from dippas_core.assembly import NoSnapshotsError
    from dippas_core.evaluation import MethodContext

    photo = tiny_dataset.crops[0].image
    cfg = EvalConfig.preset(
        "tiny", crop_sizes=(48,), B=48, L=2, tau=60.0,
        max_iter=3, record_psnr=60.0, stop_psnr=61.0, torch_threads=1,
    )
    ctx = MethodContext(config=cfg, seed=0, crop_id="c0")
    with pytest.raises(NoSnapshotsError, match="never reached tau = 60 dB"):
        METHODS["dippas_blind"].run(photo, None, ctx)


def test_the_library_prints_nothing_its_log_gets_the_news(tiny_dataset, tmp_path, capsys):
    """evaluate reports through ``log`` only (the CLI passes one that prints); a resumed run
    skips what is done and says nothing about it."""
    cfg = EvalConfig.preset("tiny", crop_sizes=(48,), methods=("untouched", "denoise"))
    messages: list[str] = []
    capsys.readouterr()
    evaluate("in-memory", tmp_path, cfg, dataset=tiny_dataset, plots=False, log=messages.append)
    printed = capsys.readouterr()
    assert printed.out == "" and printed.err == ""
    n = len(tiny_dataset.crops)
    assert messages[0] == f"{n} crops, 2 cameras, region 96 px"
    scored = [m for m in messages[1:] if " PSNR " in m]
    assert len(scored) == 2 * n and len(messages) == 1 + 2 * n
    assert sorted(m.split()[0] for m in scored) == ["denoise"] * n + ["untouched"] * n
    again: list[str] = []
    evaluate("in-memory", tmp_path, cfg, dataset=tiny_dataset, plots=False, log=again.append)
    assert again == messages[:1] and capsys.readouterr().err == ""


def test_every_output_has_its_fidelity_beside_psnr_and_old_scores_still_summarise(
    tiny_dataset, tmp_path
):
    """Per output the fidelity measures of the 8-bit output against the crop (fidelity() itself),
    per method their summary; a scores.csv written before they were measured still resumes and
    summarises, its rows without them."""
    from dippas_core.fidelity import BARS, COLUMNS, bars_for, fidelity
    from dippas_core.io import to_uint8

    def blemish(photo, K, ctx):  # stuck pixels and a tinted corner: bars broken
        out = photo.astype(np.float32)
        out[4:6, 4:6, 2] = 255.0
        out[24:, 24:] += 3.0
        return np.clip(out, 0, 255)

    def grain(photo, K, ctx):  # 34.8 dB of fine noise: under 38 dB, above the tiny preset's tau
        noise = np.random.default_rng(ctx.seed).uniform(-8, 8, photo.shape)
        return np.clip(photo.astype(np.float32) + noise, 0, 255)

    register_method(Method("blemish", blemish, "stuck pixels + tint"))
    register_method(Method("grain", grain, "fine noise"))
    try:
        cfg = EvalConfig.preset("tiny", crop_sizes=(48,),
                                methods=("untouched", "blemish", "grain"))
        out = tmp_path / "eval"
        evaluate("in-memory", out, cfg, dataset=tiny_dataset, plots=False)
        with (out / "scores.csv").open() as fh:
            rows = list(csv.DictReader(fh))
        block = min(cfg.dippas.assembly.B, 48)  # the DIPPAS methods' block: one grid for all
        bars = bars_for(cfg.anonymize_config(0).assembly_tau)  # the preset's own tau: < 38 dB
        assert bars["psnr"] < BARS["psnr"]
        expected = {}
        for crop in tiny_dataset.crops:
            direct = fidelity(crop.image, to_uint8(blemish(crop.image, None, None)), block=block)
            expected[crop.crop_id] = direct
            mine = [r for r in rows if r["method"] == "blemish" and r["crop"] == crop.crop_id]
            assert len(mine) == 2  # one per fingerprint, the same output
            for r in mine:
                assert float(r["psnr"]) == direct.psnr
                for name in ("ssim", "max_abs", "share_off", "colour_shift", "seam_ratio",
                             "checkerboard"):
                    assert float(r[name]) == getattr(direct, name), name
                assert r["bars_failed"] == "; ".join(direct.failures(bars))
                assert "max_abs" in r["bars_failed"] and "colour_shift" in r["bars_failed"]
        # held to the preset's tau, not to 38 dB: the grain's PSNR breaks no bar
        grained = [r for r in rows if r["method"] == "grain"]
        assert grained and all(31.0 < float(r["psnr"]) < 38.0 for r in grained)
        assert all(r["bars_failed"] == "" for r in grained)
        doc = json.loads((out / "summary.json").read_text())
        by_method = {s["method"]: s for s in doc["all_crops"]}
        s, n = by_method["blemish"], len(tiny_dataset.crops)
        assert s["n_fidelity"] == s["n_bars_failed"] == n
        assert s["mean_ssim"] == pytest.approx(np.mean([f.ssim for f in expected.values()]))
        assert s["worst_max_abs"] == max(f.max_abs for f in expected.values())
        assert s["mean_share_off"] == pytest.approx(
            np.mean([f.share_off for f in expected.values()]))
        assert s["worst_colour_shift"] == max(f.colour_shift for f in expected.values())
        assert s["worst_seam_ratio"] == max(f.seam_ratio for f in expected.values())
        untouched = by_method["untouched"]
        assert untouched["n_bars_failed"] == 0 and untouched["mean_ssim"] == pytest.approx(1.0)
        assert untouched["worst_max_abs"] == 0

        # the same run made before fidelity was measured: no such columns in its scores.csv
        old_fields = [f for f in rows[0] if f not in COLUMNS]
        with (out / "scores.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=old_fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        evaluate("in-memory", out, cfg, compute=False, plots=False)  # report only
        old = {s["method"]: s for s in json.loads((out / "summary.json").read_text())["all_crops"]}
        assert old["blemish"]["n_fidelity"] == old["blemish"]["n_bars_failed"] == 0
        assert old["blemish"]["mean_ssim"] is None  # not measured: empty, not a number
        assert old["blemish"]["mean_psnr"] == pytest.approx(s["mean_psnr"])
        # resumed with one more method: only that one is scored, and only it has fidelity
        evaluate("in-memory", out, cfg.replace(methods=(*cfg.methods, "denoise")),
                 dataset=tiny_dataset, plots=False)
        with (out / "scores.csv").open() as fh:
            resumed = list(csv.DictReader(fh))
        assert all(r["ssim"] == "" for r in resumed if r["method"] != "denoise")
        assert all(r["ssim"] != "" for r in resumed if r["method"] == "denoise")
        doc = json.loads((out / "summary.json").read_text())
        now = {s["method"]: s for s in doc["all_crops"]}
        assert now["blemish"]["n_fidelity"] == 0 and now["denoise"]["n_fidelity"] == n
        assert 0 < now["denoise"]["mean_ssim"] < 1
    finally:
        METHODS.pop("blemish", None)
        METHODS.pop("grain", None)
