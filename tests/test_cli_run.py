"""`dippas invert | assemble | anonymize | demo` on a crop of the real sample, tiny DIP preset."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from dippas_core.cli import main
from dippas_core.io import center_crop, read_image, write_image
from dippas_core.run import RunDirectory
from dippas_core.snapshots import SnapshotStore

# fast, low thresholds: these tests check the plumbing, test_pipeline checks the quality
FAST = ["--preset", "tiny", "--record-psnr", "8", "--stop-psnr", "99", "--torch-threads", "1"]


def _says_its_fidelity(text: str, report: dict, photo, image, block: int) -> None:
    """The published report's fidelity is fidelity() of the written image against the photo,
    and the command said it in its fidelity line, with the bars it breaks."""
    from dippas_core.fidelity import bars_for, describe, fidelity

    direct = fidelity(photo, image, block=block)
    measured, expected = dict(report["fidelity"]), direct.to_dict()
    # the PSNR bar: 38 dB, or the run's own threshold where that is lower (a tiny run's)
    tau = (report.get("assembly") or {}).get("psnr_threshold")
    assert measured.pop("bars_failed") == direct.failures(bars_for(tau))
    for key, value in expected.items():  # (the published sidecar leaves a None out)
        assert measured.get(key) == (value if value is None else pytest.approx(value)), key
    line = next(x for x in text.splitlines() if x.startswith("fidelity: "))
    assert line == f"fidelity: {describe(report['fidelity'])}"
    assert line.endswith("all fidelity bars met") != bool(direct.failures())


def test_invert_ctrl_c_keeps_the_run_then_assemble(sample_files, tmp_path, capsys):
    photo, K = sample_files
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "dippas_core",
        "invert",
        str(photo),
        "--fingerprint",
        str(K),
        "--crop",
        "32",
        "--out",
        str(run_dir),
        *FAST,
        "--max-iter",
        "100000",
    ]
    env = {**os.environ, "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", "/tmp/numba_cache")}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 120
        index = run_dir / SnapshotStore.INDEX
        while time.time() < deadline and proc.poll() is None:
            if index.exists() and index.stat().st_size >= 16 * 5:
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "dippas assemble" in err
    assert "iter " in err and "PSNR" in err and "gamma" in err and "kept" in err  # progress line
    run = RunDirectory.open(run_dir)
    assert run.status == "cancelled" and run.config["result"]["stop_reason"] == "cancelled"
    assert len(run.snapshots) >= 5 and run.n_ready == len(run.snapshots)
    assert run.config["fingerprint"]["camera"] == "Nikon_D70s_0"

    out = tmp_path / "out.png"
    assert (
        main(["assemble", str(run_dir), "-B", "32", "-L", "3", "--tau", "8", "--out", str(out)])
        == 0
    )
    image = read_image(out)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["assembly"]["B"] == 32 and report["assembly"]["n_averaged"] == 3
    _says_its_fidelity(capsys.readouterr().err, report, run.photo, image, 32)
    assert report["run_status"] == "cancelled" and "psnr" in report
    # the scores against the camera stay in the run's forensic record, not beside the image
    assert "ncc" not in report and "fingerprint" not in report
    record = json.loads((run_dir / "forensic-record.json").read_text())
    assert record["psnr"] == report["psnr"] and set(record["ncc"]) == {"before", "after"}
    assert np.asarray(record["maps"]["block_ncc_before"]).shape == (1, 1)
    # never overwrite without --force, never reuse a run folder
    capsys.readouterr()
    assert main(["assemble", str(run_dir), "-B", "32", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:  # refused while the command line is parsed
        main(["assemble", str(run_dir), "-L", "0", "--out", str(out), "--force"])
    assert usage.value.code == 2 and "argument -L" in capsys.readouterr().err
    assert (
        main(
            [
                "invert",
                str(photo),
                "--blind",
                "--crop",
                "32",
                "--out",
                str(run_dir),
                *FAST,
                "--max-iter",
                "2",
            ]
        )
        == 2
    )
    assert "not empty" in capsys.readouterr().err


def test_anonymize_writes_image_and_report(sample_files, tmp_path, capsys):
    photo, K = sample_files
    out = tmp_path / "anon.png"
    rc = main(
        [
            "anonymize",
            str(photo),
            "--fingerprint",
            str(K),
            "--crop",
            "32",
            "--out",
            str(out),
            "-B",
            "32",
            "-L",
            "3",
            "--seed",
            "5",
            "--quiet",
            *FAST,
            "--max-iter",
            "40",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "PSNR vs original" in text and "NCC with the fingerprint" in text
    _says_its_fidelity(text, json.loads(out.with_suffix(".json").read_text()),
                       center_crop(read_image(photo), 32), read_image(out), 32)
    # gamma's bound told apart: at 0 with gamma* > 0 is a dead injection, with gamma* <= 0 the
    # clamp's optimum
    gamma_line = next(line for line in text.splitlines() if "gamma while recording" in line)
    assert "% of 40 iterations (although gamma* > 0 in " in gamma_line
    assert read_image(out).shape == (32, 32, 3)
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["seed"] == 5 and report["mode"] == "aware" and report["output"] == "anon.png"
    assert str(photo.parent) not in out.with_suffix(".json").read_text()  # no source folder
    assert report["inversion"]["n_iterations"] == 40
    assert "maps" not in report and "ncc" not in report and "fingerprint" not in report
    assert main(["anonymize", str(photo), "--out", str(photo), "--force", *FAST]) == 2
    assert "input file itself" in capsys.readouterr().err
    gray = tmp_path / "gray.png"
    write_image(gray, read_image(photo)[..., 0])
    assert main(["anonymize", str(gray), "--out", str(tmp_path / "g.png"), *FAST]) == 2
    assert "colour" in capsys.readouterr().err
    assert (
        main(
            [
                "anonymize",
                str(photo),
                "--fingerprint",
                str(K),
                "--crop",
                "8",
                "--out",
                str(tmp_path / "c.png"),
                *FAST,
            ]
        )
        == 2
    )
    assert "--crop 8" in capsys.readouterr().err


def test_demo_runs_small(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--crop", "32", "--quiet", *FAST, "--max-iter", "30"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "PSNR vs original" in text and "NCC with the fingerprint" in text
    for name in ("original.png", "anonymized.png", "anonymized.json"):
        assert (out / name).is_file()
    report = json.loads((out / "anonymized.json").read_text())
    _says_its_fidelity(text, report, read_image(out / "original.png"),
                       read_image(out / "anonymized.png"), report["assembly"]["B"])
    assert RunDirectory.open(out / "run").status == "finished"
    assert main(["demo", "--out", str(out), "--crop", "32", *FAST]) == 2  # not empty


def _fake_record(stop_reason):
    """A stand-in for run.record: the inversion ends with ``stop_reason``, then Ctrl-C lands."""
    from types import SimpleNamespace

    def record(run, steps, cancel, on_step=None):
        steps.close()
        cancel.cancel()  # the user's Ctrl-C, after the last iteration
        return SimpleNamespace(stop_reason=stop_reason, history={"iteration": np.arange(3)})

    return record


@pytest.mark.parametrize("stop_reason, interrupted", [("psnr", False), ("cancelled", True)])
def test_invert_reports_interrupted_only_when_the_cancel_stopped_it(
    monkeypatch, stop_reason, interrupted
):
    import dippas_core.run as run_module
    from dippas_core.cli.invert import run_inversion
    from dippas_core.config import DIPConfig

    monkeypatch.setattr(run_module, "record", _fake_record(stop_reason))
    photo = np.full((32, 32, 3), 128, np.uint8)
    result, was_interrupted = run_inversion(
        photo, np.zeros((32, 32), np.float32), DIPConfig.preset("tiny"), run=None, quiet=True
    )
    assert result.stop_reason == stop_reason and was_interrupted is interrupted


@pytest.mark.parametrize("stop_reason, interrupted", [("max_iter", False), ("cancelled", True)])
def test_anonymize_reports_interrupted_only_when_the_cancel_stopped_it(
    monkeypatch, stop_reason, interrupted
):
    from types import SimpleNamespace

    import dippas_core.pipeline as pipeline
    from dippas_core.cli.anonymize import run_anonymize
    from dippas_core.config import AnonymizeConfig
    from dippas_core.execution import IN_PROCESS, Execution

    def fake_run_job(job, *, cancel, **kw):
        cancel.cancel()  # Ctrl-C while the image is being assembled, after the inversion
        return SimpleNamespace(report={"inversion": {"stop_reason": stop_reason}})

    monkeypatch.setattr(pipeline, "run_job", fake_run_job)
    job = SimpleNamespace(config=AnonymizeConfig.preset("tiny"), tiled=False,
                          execution=Execution(IN_PROCESS, 1, "test"))
    _, was_interrupted = run_anonymize(job, run_dir=None, force=False, quiet=True)
    assert was_interrupted is interrupted


def test_invert_with_a_missing_device_leaves_no_run(sample_files, tmp_path, capsys):
    photo, K = sample_files
    run_dir = tmp_path / "run"
    argv = ["invert", str(photo), "--fingerprint", str(K), "--crop", "32", "--out", str(run_dir)]
    assert main([*argv, *FAST, "--device", "cuda:99"]) == 2
    assert "cuda:99" in capsys.readouterr().err
    assert not run_dir.exists()  # no run left behind saying "recording"
