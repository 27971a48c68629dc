"""One report: its published part travels with the image, its forensic part never does."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from dippas_core.report import (
    PUBLISHED_FORMAT,
    UNSET,
    AnonymizationReport,
    Forensic,
    Published,
)

#: What only the forensic record may say: the camera, its scores, the source, the places.
SOURCE_KEYS = {"reference", "fingerprint", "photo", "ncc", "pce", "pce_detail", "block_ncc",
               "tiles", "environment", "run_dir", "source", "region", "timing_s"}


def _full_report() -> AnonymizationReport:
    return AnonymizationReport.of(
        mode="aware", psnr=38.2, seed=3, sigma=5.0, device="cpu", crop=64,
        config={"dip": {"seed": 3}, "assembly": {"B": 64, "L": 1, "tau": 38.5}},
        inversion={"stop_reason": "psnr", "n_iterations": 90, "gamma": {"median": 0.001},
                   "execution": {"kind": "in-process"}},
        assembly={"B": 64, "L": 1, "tau": 38.5, "per_tile": True},
        versions={"numpy": "2.0", "platform": "Linux-6.1-host42"},
        reference="fingerprint K", fingerprint={"camera": "Nikon_D70_1"},
        photo={"height": 64, "width": 64, "dtype": "uint8"},
        ncc={"before": 0.05, "after": 0.001}, pce={"before": 300.0, "after": 0.4},
        block_ncc={"B": 64}, tiles=[{"index": 0}], environment={"device": "cpu"},
        run_dir="/home/alice/runs/r1", source={"file": "alice.jpg", "sha256": "ab"},
        region={"y": 0, "x": 0, "h": 64, "w": 64}, timing_s={"total": 3.0},
    )


def test_the_two_parts_are_apart_and_every_field_is_in_one():
    published = {f.name for f in dataclasses.fields(Published)}
    forensic = {f.name for f in dataclasses.fields(Forensic)}
    # only the split sections have a half on each side
    assert published & forensic == {"inversion", "assembly", "versions"}
    assert not SOURCE_KEYS & published


def test_the_sidecar_is_the_published_part_and_nothing_of_the_source():
    report = _full_report()
    sidecar = report.sidecar("/home/alice/out.png")
    assert sidecar["format"] == PUBLISHED_FORMAT and sidecar["output"] == "out.png"
    assert not SOURCE_KEYS & set(sidecar)
    assert sidecar["inversion"] == {"stop_reason": "psnr", "n_iterations": 90}
    assert sidecar["assembly"] == {"B": 64, "L": 1, "tau": 38.5}
    assert sidecar["versions"] == {"numpy": "2.0"}  # not the platform: it names a machine
    text = json.dumps(sidecar)
    for secret in ("Nikon", "alice", "host42", "0.05", "300"):
        assert secret not in text, secret


def test_to_dict_is_the_whole_record_and_reads_back():
    report = _full_report()
    full = report.to_dict()
    assert full["inversion"] == {"stop_reason": "psnr", "n_iterations": 90,
                                 "gamma": {"median": 0.001}, "execution": {"kind": "in-process"}}
    assert full["fingerprint"] == {"camera": "Nikon_D70_1"} and full["pce"]["before"] == 300.0
    assert full["versions"] == {"numpy": "2.0", "platform": "Linux-6.1-host42"}
    back = AnonymizationReport.from_dict(json.loads(json.dumps(full)))
    assert back == report and back.forensic.extra is UNSET
    # it reads as the dict it writes, and is not changed through it
    assert report["psnr"] == 38.2 and report.get("partial") is None and "ncc" in report
    with pytest.raises(TypeError):
        report["psnr"] = 1.0  # type: ignore[index]
    changed = report.with_(crop=128, run_dir=None, inversion={"stop_reason": "max_iter"})
    assert changed["crop"] == 128 and changed["run_dir"] is None and report["crop"] == 64
    assert changed["inversion"] == {"stop_reason": "max_iter"}
    with pytest.raises(KeyError, match="no report field"):
        report.with_(camera="Nikon")


def test_keys_a_report_does_not_know_are_never_published():
    report = AnonymizationReport.from_dict({"psnr": 40.0, "camera": "Nikon", "owner": "alice"})
    # (and every sidecar says whether the image is partial or short of tau)
    assert report.sidecar() == {"format": PUBLISHED_FORMAT, "psnr": 40.0, "partial": False,
                                "below_tau": False}
    assert report.to_dict() == {"psnr": 40.0, "camera": "Nikon", "owner": "alice"}


def test_the_sidecar_flags_what_the_image_is_and_nothing_of_the_source():
    """``partial`` and ``below_tau`` are published (flags about the image itself); which tiles,
    and their PSNRs, stay in the forensic record.  Below tau: a tile short of the recording
    threshold, or an assembly that had to use a lower threshold than its tau."""
    partial = AnonymizationReport.of(psnr=30.0, partial=True, tiles_not_anonymized=[2, 3])
    side = partial.sidecar()
    assert (side["partial"], side["below_tau"]) == (True, False)
    assert "tiles_not_anonymized" not in side and "2" not in json.dumps(side)
    short = AnonymizationReport.of(below_tau=[{"tile": 0, "short_db": 2.5, "best_psnr": 35.5}])
    assert short.sidecar()["below_tau"] is True and "35.5" not in json.dumps(short.sidecar())
    lowered = AnonymizationReport.of(assembly={"B": 32, "L": 1, "tau": 38.0,
                                               "psnr_threshold": 36.2})
    assert lowered.sidecar()["below_tau"] is True
    at_tau = AnonymizationReport.of(assembly={"B": 32, "L": 1, "tau": 38.0,
                                              "psnr_threshold": 38.0})
    assert at_tau.sidecar()["below_tau"] is False
    # the settings of this machine's disk are not the image's
    kept = AnonymizationReport.of(config={"keep_run": True, "keep_tile_runs": False, "B": 32})
    assert kept.sidecar()["config"] == {"B": 32}


@pytest.mark.usefixtures("one_torch_thread")
def test_what_every_producer_writes_is_a_known_field(synthetic_run, tmp_path):
    """The pipeline (one tile and a tiled photo), ``dippas assemble`` and the viewer's session
    all build the one report type: no key of theirs falls outside it."""
    from dippas_core.cli import main
    from dippas_core.config import AnonymizeConfig
    from dippas_core.io import center_crop
    from dippas_core.pipeline import anonymize
    from dippas_core.sample import sample_data

    photo, fingerprint = sample_data()
    photo, fingerprint = center_crop(photo, 64).copy(), fingerprint.center_crop(64)
    config = AnonymizeConfig.preset("tiny", max_iter=4, record_psnr=0.0, B=32, L=2)
    reports = {"one tile": anonymize(photo, fingerprint, config).report}
    tiled = config.replace(tile_size=64, overlap=32)
    crop = np.ascontiguousarray(np.pad(photo, ((0, 32), (0, 32), (0, 0)), mode="reflect"))
    reports["tiles"] = anonymize(crop, None, tiled).report
    run = synthetic_run(n=4, shape=(64, 64), tau=30.0)
    assert main(["assemble", str(run.path), "-B", "32", "-L", "2", "--out",
                 str(tmp_path / "a.png")]) == 0
    reports["dippas assemble"] = json.loads((run.path / "forensic-record.json").read_text())
    reports["dippas assemble"].pop("maps")
    pytest.importorskip("psygnal")
    from napari_dippas._models import AssemblySettings, RunSession

    reports["viewer"] = RunSession(run.path).assemble(AssemblySettings(B=32, L=2)).report
    for who, report in reports.items():
        parsed = AnonymizationReport.from_dict(dict(report))
        assert parsed.forensic.extra is UNSET, (who, parsed.forensic.extra)
        assert not SOURCE_KEYS & set(parsed.sidecar()), who


def test_every_report_measures_fidelity_beside_psnr_and_publishes_it(natural_photos,
                                                                     camera_fingerprints):
    from dippas_core.fidelity import fidelity
    from dippas_core.report import measure

    cam, _, photo = natural_photos[0]
    crop = photo[:128, :128].astype(np.float32)
    K = camera_fingerprints[cam].K[:128, :128]
    out = crop + np.random.default_rng(0).normal(0, 2, crop.shape).astype(np.float32)
    out[10:12, 20:22, 2] = 255.0  # stuck pixels
    out[64:, :64] += 3.0  # a tinted block
    values, _ = measure(crop, np.clip(out, 0, 255), K, 64)
    direct = fidelity(crop, np.clip(out, 0, 255), block=64)
    assert values["fidelity"] == {**direct.to_dict(), "bars_failed": direct.failures()}
    assert any(b.startswith("colour_shift") for b in values["fidelity"]["bars_failed"])
    sidecar = AnonymizationReport.of(**values).sidecar("out.png")
    assert sidecar["fidelity"]["max_abs"] == pytest.approx(direct.max_abs)
    assert sidecar["fidelity"]["seam_ratio"] == pytest.approx(direct.seam_ratio)
    assert "ncc" not in sidecar  # the scores stay forensic
