"""Nothing lost, nothing trusted (issue 26): photo runs, report paths, model files, knob bounds.

Every case writes hostile files around real Dresden data (a Nikon D70 photo's 96×96 crop, four
64-pixel tiles, and its camera's fingerprint) and asserts the exact outcome: the exit status, the
message naming the problem, and the inputs (and a run folder's files) hashed before and after.
Memory bombs are read in a fresh process whose peak RSS is measured.  One section per class of
the issue:

1. data loss through paths: every output against every input, every other output, a run's own
   files (a photo run's included) and existing files; ``--force`` deletes only what a run wrote;
2. nothing read back is trusted: a photo run's records, plan and tiles' photos;
3. attacker model files: declared sizes bounded before a network is built or a tensor inflated;
4. every knob bounded;
5. checked before work, and the way on said after a failure.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from test_hostile import RSS_LIMIT_MB, run_measured, write_zip

from dippas_core.cli import main
from dippas_core.errors import InputError
from dippas_core.fingerprint import Fingerprint
from dippas_core.io import read_image, write_image

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: The tiny network on 64-pixel tiles overlapping by 32: a 96×96 crop is four tiles, ~1 s.
FAST = ["--preset", "tiny", "--tile", "64", "--overlap", "32", "--max-iter", "8", "--lr", "0.01",
        "--tau-psnr", "10", "--stop-psnr", "40", "-B", "32", "-L", "2", "--seed", "0",
        "--torch-threads", "1", "--quiet"]


# ------------------------------------------------------------------------------------------------
# helpers and real data


def digest(path: Path) -> str:
    """One SHA-256 of a file, or of every file (hidden ones too) under a folder, names included."""
    h = hashlib.sha256()
    if path.is_file():
        h.update(path.read_bytes())
        return h.hexdigest()
    for p in sorted(path.rglob("*")):
        h.update(str(p.relative_to(path)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def cli(argv: list, capsys) -> tuple[int, str]:
    """Exit status and stderr of ``dippas ARGV`` (argparse's refusals exit via SystemExit)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def real(natural_photos, camera_fingerprints, tmp_path_factory) -> dict[str, Path]:
    """A real D70 crop (PNG) and its camera's fingerprint (.npz), plus the flat fields' folder."""
    folder = tmp_path_factory.mktemp("real")
    cam, _, photo = next(p for p in natural_photos if p[0] == "Nikon_D70_0")
    K = camera_fingerprints[cam].K
    write_image(folder / "photo.png", photo[100:196, 200:296].copy(), bit_depth=8)
    write_image(folder / "other.png", photo[300:396, 100:196].copy(), bit_depth=8)
    Fingerprint(K=K[100:196, 200:296].copy(), camera=cam, n_images=10).save(folder / "K.npz")
    return {"photo": folder / "photo.png", "other": folder / "other.png", "K": folder / "K.npz",
            "dir": folder}


@pytest.fixture(scope="module")
def data_dir(testdata, tmp_path_factory) -> Path:
    """A camera folder of two Dresden Nikons (links to the real files): what train-attacker
    reads.  Its files are the inputs no output may replace."""
    folder = tmp_path_factory.mktemp("data")
    for sub in ("ff-jpg", "nat-jpg"):
        (folder / sub).mkdir()
        for path in sorted((testdata / sub).glob("Nikon_D70_0_*")) + sorted(
            (testdata / sub).glob("Nikon_D200_0_*")
        ):
            (folder / sub / path.name).symlink_to(path)
    return folder


#: train-attacker, as small as it goes (only reached when a check fails to refuse).
TRAIN_FAST = ["--patch", "32", "--region", "64", "--width", "4", "--epochs", "1",
              "--max-minutes", "0.05", "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def clean_run(real, tmp_path_factory) -> dict[str, Path]:
    """A finished four-tile photo run kept with --keep-runs, and the image it made."""
    folder = tmp_path_factory.mktemp("clean")
    code = main([str(a) for a in ["anonymize", real["photo"], "--fingerprint", real["K"],
                                  "--run-dir", folder / "run", "--keep-runs",
                                  "--out", folder / "anon.png", *FAST]])
    assert code == 0
    return {"run": folder / "run", "image": folder / "anon.png"}


@pytest.fixture
def run_copy(clean_run, tmp_path) -> Path:
    """A fresh copy of the finished photo run to spoil."""
    shutil.copytree(clean_run["run"], tmp_path / "run")
    return tmp_path / "run"


def anonymize_args(real, out: Path, *more) -> list:
    return ["anonymize", real["photo"], "--fingerprint", real["K"], "--out", out, *FAST, *more]


# ------------------------------------------------------------------------------------------------
# 1. data loss through paths


def _hard_link(src: Path, dst: Path) -> Path:
    os.link(src, dst)
    return dst


@pytest.mark.parametrize(
    "case",
    ["report-is-photo", "report-is-fingerprint", "out-is-photo-forced", "out-hard-link-of-photo",
     "report-hard-link-of-fingerprint", "report-symlink-to-photo"],
)
def test_anonymize_never_writes_over_an_input(real, tmp_path, capsys, case):
    inputs = {p: digest(real[p]) for p in ("photo", "K")}
    out, more = tmp_path / "anon.png", []
    if case == "report-is-photo":
        more = ["--report", real["photo"]]
    elif case == "report-is-fingerprint":
        more = ["--report", real["K"], "--force"]
    elif case == "out-is-photo-forced":
        out, more = real["photo"], ["--force"]
    elif case == "out-hard-link-of-photo":
        out, more = _hard_link(real["photo"], tmp_path / "linked.png"), ["--force"]
    elif case == "report-hard-link-of-fingerprint":
        more = ["--report", _hard_link(real["K"], tmp_path / "k-link.json"), "--force"]
    else:
        (tmp_path / "r.json").symlink_to(real["photo"])
        more = ["--report", tmp_path / "r.json", "--force"]
    before = sorted(p.name for p in tmp_path.iterdir())
    code, err = cli(anonymize_args(real, out, *more), capsys)
    assert code == 2 and "is the input file itself" in err, err
    assert {p: digest(real[p]) for p in ("photo", "K")} == inputs
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, no run folder


@pytest.mark.parametrize("case", ["report-is-sidecar", "report-is-out", "report-case-of-sidecar"])
def test_anonymize_outputs_never_land_on_each_other(real, tmp_path, capsys, case):
    out = tmp_path / "anon.png"
    report = {"report-is-sidecar": tmp_path / "anon.json", "report-is-out": out,
              "report-case-of-sidecar": tmp_path / "ANON.json"}[case]
    code, err = cli(anonymize_args(real, out, "--report", report), capsys)
    assert code == 2 and "are the same file" in err, err
    assert list(tmp_path.iterdir()) == []


def _writers(real, data_dir, run: Path, target: str, tmp_path: Path) -> list[list]:
    """Every command whose output lands on ``run/target`` (directly, or as a sidecar)."""
    path = run / target
    argvs = [
        anonymize_args(real, tmp_path / "a.png", "--report", path, "--force"),
        ["train-attacker", data_dir, "--out", path, "--force", *TRAIN_FAST],
    ]
    if path.suffix == ".json":  # the sidecar of an image, of a model
        argvs += [["assemble", run, "--out", path.with_suffix(".png"), "--force"],
                  ["train-attacker", data_dir, "--out", path.with_suffix(""), "--force",
                   *TRAIN_FAST]]
    if path.suffix == ".npz":
        argvs.append(["fingerprint", real["photo"], real["other"], "--out", path, "--force"])
    if "/" in target:  # inside the run's own folders: a new file, run or folder there
        argvs += [["assemble", run, "--out", path.with_name("new.png")],
                  ["demo", "--out", path.with_name("demo"), "--max-iter", "2", "--quiet"],
                  ["evaluate", "--data", data_dir, "--out", path.with_name("eval"),
                   "--max-photos", "1"],
                  ["invert", real["photo"], "--blind", "--out", path.with_name("new-run"),
                   "--preset", "tiny", "--max-iter", "2", "--quiet"],
                  anonymize_args(real, tmp_path / "b.png", "--run-dir", path.with_name("r"))]
    return argvs


@pytest.mark.parametrize(
    "target",
    ["photo-run.json", ".dippas-run", "forensic-record.json", "done/0001.npz",
     "tiles/0002/config.json", "tiles/0002/photo.npy"],
)
def test_no_output_lands_on_a_photo_runs_own_files(real, data_dir, run_copy, tmp_path, capsys,
                                                   target):
    before = digest(run_copy)
    for argv in _writers(real, data_dir, run_copy, target, tmp_path):
        code, err = cli(argv, capsys)
        assert code == 2 and "run folder" in err and "Traceback" not in err, (argv, err)
    assert digest(run_copy) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_the_writer_never_writes_over_a_photo_runs_files(run_copy):
    pytest.importorskip("napari")
    from napari_dippas._writer import CannotSaveLayer, write_image_layer

    before = digest(run_copy)
    meta = {"metadata": {"dippas": {"kind": "anonymized", "report": {"psnr": 40.0}}}}
    image = np.load(run_copy / "tiles" / "0000" / "photo.npy")
    for target in ("photo-run.png", "done/0000.png", "tiles/0001/config.png"):
        with pytest.raises(CannotSaveLayer, match="run folder's own files"):
            write_image_layer(str(run_copy / target), image, meta)
    assert digest(run_copy) == before


@pytest.mark.parametrize("layer", ["nan-pixels", "report-a-list", "bit-depth-garbled"])
def test_the_writer_refuses_a_bad_layer_before_writing(real, tmp_path, layer):
    pytest.importorskip("napari")
    from napari_dippas._writer import CannotSaveLayer, write_image_layer

    image = read_image(real["photo"]).astype(np.float32)
    info = {"kind": "anonymized", "report": {"psnr": 40.0, "seed": 0}}
    if layer == "nan-pixels":
        image[5, 5] = np.nan
    elif layer == "report-a-list":
        info["report"] = ["not", "a", "report"]
    else:
        info["bit_depth"] = "sixteen"
    target = tmp_path / "export.png"
    if layer == "bit-depth-garbled":  # the layer's own dtype decides: it is saved, 8-bit
        write_image_layer(str(target), image, {"metadata": {"dippas": info}})
        assert read_image(target).dtype == np.uint8
        return
    with pytest.raises(CannotSaveLayer, match="cannot save export.png"):
        write_image_layer(str(target), image, {"metadata": {"dippas": info}})
    assert list(tmp_path.iterdir()) == []  # neither the image nor a sidecar


@pytest.mark.parametrize("record", ["region-nan", "region-huge", "not-json", "64-MiB"])
def test_the_reader_never_trusts_a_runs_viewer_record(real, tmp_path, capsys, record):
    pytest.importorskip("napari")
    from napari_dippas._reader import read_run

    run = tmp_path / "run"
    code, err = cli(["invert", real["photo"], "--fingerprint", real["K"], "--out", run,
                     "--preset", "tiny", "--max-iter", "3", "--tau-psnr", "0", "--quiet"], capsys)
    assert code == 0, err
    path = run / "viewer-record.json"
    if record == "region-nan":
        path.write_text(json.dumps({"source": {"name": "x"}, "region": {"y": "nan", "x": 2}}))
    elif record == "region-huge":
        path.write_text(json.dumps({"source": {"name": "x" * 10**6}, "region": {"y": 1e308}}))
    elif record == "not-json":
        path.write_text("{half")
    else:  # sparse: 64 MiB of zeros costs no disk
        with open(path, "wb") as fh:
            fh.truncate(65 << 20)
    layers = read_run(str(run))
    assert layers and all(np.all(np.isfinite(kw.get("translate") or (0.0, 0.0)))
                          and np.all(np.abs(kw.get("translate") or (0.0, 0.0)) < 1e6)
                          for _, kw, _ in layers)
    assert all(len(kw["name"]) < 300 for _, kw, _ in layers)


def test_existing_outputs_are_refused_before_work_without_force(real, data_dir, tmp_path, capsys):
    """A user's file where an output goes is never replaced without --force: OUT's partial
    image, --report, train-attacker's model and its sidecar; refused before any inversion."""
    user = {name: tmp_path / name for name in ("anon-partial.png", "notes.json", "m.pt.json")}
    for path in user.values():
        path.write_text("the user's own")
    before = digest(tmp_path)
    for argv, what in (
        (anonymize_args(real, tmp_path / "anon.png"), "the partial image of --out"),
        (anonymize_args(real, tmp_path / "b.png", "--report", user["notes.json"]), "--report"),
        (["train-attacker", data_dir, "--out", tmp_path / "m.pt", *TRAIN_FAST],
         "the sidecar of --out"),
    ):
        code, err = cli(argv, capsys)
        assert code == 2 and what in err and "already exists" in err and "--force" in err, err
    assert digest(tmp_path) == before  # not even a run folder


def test_a_resume_replaces_only_its_own_earlier_results(real, tmp_path, capsys):
    """Without --force the same photo's forensic record and its earlier partial image are
    replaced (what a resume rewrites); another photo's record is not."""
    record = tmp_path / "record.json"
    code, err = cli(anonymize_args(real, tmp_path / "a.png", "--report", record), capsys)
    assert code == 0, err
    # the partial image of a stopped attempt, as dippas published it
    shutil.copy(tmp_path / "a.png", tmp_path / "b-partial.png")
    sidecar = json.loads((tmp_path / "a.json").read_text())
    (tmp_path / "b-partial.json").write_text(json.dumps({**sidecar, "output": "b-partial.png"}))
    code, err = cli(anonymize_args(real, tmp_path / "b.png", "--report", record), capsys)
    assert code == 0, err
    other = ["anonymize", real["other"], "--out", tmp_path / "c.png", *FAST, "--report", record]
    before = digest(record)
    code, err = cli(other, capsys)
    assert code == 2 and "--report" in err and "already exists" in err, err
    assert digest(record) == before


def _user_files(run: Path) -> dict[Path, str]:
    """A user's notes in every corner of a photo run folder, as someone might leave them."""
    files = {run / "notes.txt": "mine", run / "done" / "my-tile-notes.txt": "mine too",
             run / "tiles" / "README.md": "about the tiles",
             run / "photos" / "original.jpg": "a copy of mine"}
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return {p: digest(p) for p in files}


@pytest.mark.parametrize("command", ["anonymize-force", "invert-force", "finished-default-run"])
def test_force_deletes_only_what_the_run_wrote(real, run_copy, tmp_path, capsys, command):
    user = _user_files(run_copy)
    if command == "anonymize-force":  # another photo over the photo run: started over
        code, err = cli(["anonymize", real["other"], "--run-dir", run_copy, "--out",
                         tmp_path / "b.png", *FAST, "--force"], capsys)
        assert code == 0, err
        assert json.loads((run_copy / "photo-run.json").read_text())["mode"] == "blind"
    elif command == "invert-force":  # a single run replaces the photo run
        code, err = cli(["invert", real["photo"], "--blind", "--out", run_copy, "--max-iter", "3",
                         "--preset", "tiny", "--record-psnr", "8", "--quiet", "--force"], capsys)
        assert code == 0, err
        assert not (run_copy / "photo-run.json").exists() and (run_copy / "config.json").is_file()
        assert not list((run_copy / "done").glob("*.npz"))
    else:  # the default run folder beside OUT, removed once the photo is done
        run = tmp_path / "anon.dippas-run"
        shutil.copytree(run_copy, run)
        user = _user_files(run)
        (run / "photo-run.json").unlink()  # a run killed before its plan: started afresh
        (run / ".dippas-run").write_text(json.dumps({"format": "dippas-photo-run"}))
        code, err = cli(anonymize_args(real, tmp_path / "anon.png", "--force"), capsys)
        assert code == 0, err
        assert not (run / "photo-run.json").exists() and not (run / "done" / "0000.npz").exists()
    assert {p: digest(p) for p in user} == user  # every file of the user's is still there


@pytest.mark.parametrize("leftover", ["lock-only", "half-deleted-tile", "part-record", "all"])
def test_a_kill_between_two_tiles_does_not_block_the_resume(real, clean_run, tmp_path, capsys,
                                                            leftover):
    """What a kill between two tiles leaves: a tile run created up to its lock, a tile run half
    deleted, a record's temporary; the same command resumes and makes the same image."""
    run = tmp_path / "run"
    shutil.copytree(clean_run["run"], run)
    for name in ("0002.npz", "0003.npz"):
        (run / "done" / name).unlink()
    for index in ("0002", "0003"):
        shutil.rmtree(run / "tiles" / index)
    if leftover in ("lock-only", "all"):
        (run / "tiles" / "0002").mkdir()
        (run / "tiles" / "0002" / ".lock").write_bytes(b"")
    if leftover in ("half-deleted-tile", "all"):  # a removal killed after the marker went
        shutil.copytree(clean_run["run"] / "tiles" / "0003", run / "tiles" / "0003")
        for name in (".dippas-run", "config.json", "snapshots.json"):
            (run / "tiles" / "0003" / name).unlink()
    if leftover in ("part-record", "all"):
        (run / "done" / ".0002.npz.k1ll3d.part.npz").write_bytes(b"PK\x03\x04 half a zip")
    out = tmp_path / "anon.png"
    code, err = cli(anonymize_args(real, out, "--run-dir", run, "--keep-runs"), capsys)
    assert code == 0, err
    assert "resuming: 2 tile(s)" in err
    np.testing.assert_array_equal(read_image(out), read_image(clean_run["image"]))
    assert not list((run / "done").glob(".*part*"))


# ------------------------------------------------------------------------------------------------
# 2. nothing read back is trusted


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _spoil_record(record: Path, how: str, run: Path) -> None:
    """Damage one finished tile's record ``done/NNNN.npz`` of a real photo run."""
    if not record.exists():  # (the benchmark's bare plan: a record made up)
        record.write_bytes(_npz(image=np.zeros((64, 64, 3), np.uint8), stats=np.array("{}")))
    with np.load(record) as data:
        image, stats = np.array(data["image"]), json.loads(str(data["stats"]))
    text = np.array(json.dumps(stats))
    if how == "black-tile":  # the right shape and dtype, every pixel 0: its hash says otherwise
        record.write_bytes(_npz(image=np.zeros_like(image), stats=text))
    elif how == "white-tile-rehashed":  # made from other pixels, its own hash made to match
        from dippas_core.run import photo_sha256

        white = np.full_like(image, 255)
        record.write_bytes(_npz(image=white, stats=np.array(json.dumps(
            {**stats, "image_sha256": photo_sha256(white), "photo_sha256": "0" * 64}))))
    elif how == "nan":
        record.write_bytes(_npz(image=np.full(image.shape, np.nan, np.float32), stats=text))
    elif how == "out-of-range":
        record.write_bytes(_npz(image=np.full(image.shape, 300.0, np.float32), stats=text))
    elif how == "wrong-shape":
        record.write_bytes(_npz(image=image[:32], stats=text))
    elif how == "wrong-dtype":
        record.write_bytes(_npz(image=image.astype(np.int64), stats=text))
    elif how == "no-stats":
        record.write_bytes(_npz(image=image))
    elif how == "stats-not-json":
        record.write_bytes(_npz(image=image, stats=np.array("{not json")))
    elif how == "stats-without-hashes":  # as an older version wrote them
        stats.pop("photo_sha256")
        record.write_bytes(_npz(image=image, stats=np.array(json.dumps(stats))))
    elif how == "pickled-stats":
        record.write_bytes(_npz(image=image, stats=np.array([{"a": 1}], dtype=object)))
    elif how == "another-tiles-record":  # a valid record of tile 0 copied over tile 1's
        shutil.copy(run / "done" / "0000.npz", record)
    elif how == "record-of-other-settings":  # a valid record of the same tile, another seed
        from dippas_core.run import job_sha256

        meta = json.loads((run / "photo-run.json").read_text())
        other = {**meta, "config": {**meta["config"], "dip": {**meta["config"]["dip"], "seed": 7}}}
        record.write_bytes(_npz(image=image, stats=np.array(json.dumps(
            {**stats, "job_sha256": job_sha256(other)}))))
    elif how == "truncated":
        record.write_bytes(record.read_bytes()[:300])
    elif how == "not-a-zip":
        record.write_text("just some text")
    elif how == "inflates-to-1-GiB":  # the image declares 1 GiB of zeros in a 1 MB file
        header = _npy_header_bytes((16384, 16384, 4), "|u1")
        write_zip(record, {"image.npy": (header, 1 << 30), "stats.npy": (_npy(text), 0)})
    else:
        raise AssertionError(how)


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _npy_header_bytes(shape: tuple, descr: str) -> bytes:
    from numpy.lib import format as npformat

    buf = io.BytesIO()
    npformat.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


DAMAGES = ["black-tile", "white-tile-rehashed", "nan", "out-of-range", "wrong-shape",
           "wrong-dtype", "no-stats", "stats-not-json", "stats-without-hashes", "pickled-stats",
           "another-tiles-record", "record-of-other-settings", "truncated", "not-a-zip",
           "inflates-to-1-GiB"]


@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_tile_record_is_redone_never_stitched(real, clean_run, tmp_path, capsys, how):
    """The same command resumes: the damaged record is named, its tile redone; the image is the
    clean run's, bit for bit (never a black, white or NaN tile in an image that exits 0)."""
    run = tmp_path / "run"
    shutil.copytree(clean_run["run"], run)
    _spoil_record(run / "done" / "0001.npz", how, run)
    out = tmp_path / "anon.png"
    code, err = cli(anonymize_args(real, out, "--run-dir", run, "--keep-runs"), capsys)
    assert code == 0, err
    assert "done/0001.npz" in err and "tile 1 is redone" in err and "Traceback" not in err, err
    np.testing.assert_array_equal(read_image(out), read_image(clean_run["image"]))
    report = json.loads(out.with_suffix(".json").read_text())
    assert report.get("partial") in (None, False)


@pytest.mark.parametrize("how", ["black-tile", "another-tiles-record", "inflates-to-1-GiB"])
def test_assemble_refuses_a_damaged_record_naming_it(run_copy, tmp_path, capsys, how):
    _spoil_record(run_copy / "done" / "0002.npz", how, run_copy)
    before = digest(run_copy)
    code, err = cli(["assemble", run_copy, "--out", tmp_path / "o.png"], capsys)
    assert code == 2 and "done/0002.npz" in err and "dippas anonymize" in err, err
    assert not (tmp_path / "o.png").exists() and digest(run_copy) == before


def test_a_record_outside_the_plan_is_refused(run_copy, tmp_path, capsys):
    shutil.copy(run_copy / "done" / "0000.npz", run_copy / "done" / "0099.npz")
    code, err = cli(["assemble", run_copy, "--out", tmp_path / "o.png"], capsys)
    assert code == 2 and "done/0099.npz" in err and "not in the run's plan of 4 tiles" in err


@pytest.mark.parametrize("part", ["photo", "reference"])
def test_a_tile_run_swapped_for_other_pixels_is_refused(real, run_copy, tmp_path, capsys, part):
    """A kept tile run whose photo (or fingerprint) is another real crop of the same size."""
    other = read_image(real["other"])[:64, :64]
    if part == "photo":
        np.save(run_copy / "tiles" / "0003" / "photo.npy", other)
    else:
        np.save(run_copy / "tiles" / "0003" / "reference.npy",
                np.asarray(Fingerprint.load(real["K"]).K[32:, :64][::-1], np.float32).copy())
    code, err = cli(["assemble", run_copy, "--out", tmp_path / "o.png"], capsys)
    assert code == 2 and f"tiles/0003/{part}.npy" in err and "hash" in err, err
    assert not (tmp_path / "o.png").exists()


def _edit_plan(run: Path, change) -> None:
    path = run / "photo-run.json"
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


PLANS = {
    "huge-shape": (lambda m: {**m, "plan": {**m["plan"], "shape": [10**6, 10**6]}},
                   "over the pixel limit"),
    "negative-shape": (lambda m: {**m, "plan": {**m["plan"], "shape": [-96, 96]}},
                       "two positive whole numbers"),
    "tile-zero": (lambda m: {**m, "plan": {**m["plan"], "tile": 0}}, "tile size"),
    "tiles-not-the-plan": (lambda m: {**m, "plan": {**m["plan"], "tiles": m["plan"]["tiles"][:2]}},
                           "do not match"),
    "config-a-list": (lambda m: {**m, "config": [1, 2]}, "settings (config) are not a JSON"),
    "mode-unknown": (lambda m: {**m, "mode": "sideways"}, "mode"),
    "B-a-string": (lambda m: {**m, "config": {**m["config"], "B": "64"}}, "B must be"),
    "other-photo-hash": (lambda m: {**m, "photo_sha256": "0" * 64}, "another photo or plan"),
}


@pytest.mark.parametrize("damage", list(PLANS))
def test_a_damaged_plan_is_named_by_assemble(run_copy, tmp_path, capsys, damage):
    change, match = PLANS[damage]
    _edit_plan(run_copy, change)
    code, err = cli(["assemble", run_copy, "--out", tmp_path / "o.png"], capsys)
    assert code == 2 and match in err and "Traceback" not in err, err
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("damage", ["huge-shape", "config-a-list", "not-json"])
def test_a_damaged_plan_stops_the_resume_cleanly(real, run_copy, tmp_path, capsys, damage):
    if damage == "not-json":
        (run_copy / "photo-run.json").write_text("{half")
    else:
        _edit_plan(run_copy, PLANS[damage][0])
    before = digest(run_copy)
    code, err = cli(anonymize_args(real, tmp_path / "a.png", "--run-dir", run_copy), capsys)
    assert code == 2 and "photo run of another photo or other settings" in err, err
    assert digest(run_copy) == before and not (tmp_path / "a.png").exists()


def photo_run_bomb(folder: Path, kind: str) -> Path:
    """A photo run folder with nothing but its plan (and, ``kind="record"``, one finished tile's
    record): ``"plan"`` declares a 100000×100000 photo, ``"record"`` a valid 96×96 plan whose
    ``done/0000.npz`` inflates to 1 GiB.  For ``benchmarks/bench_bomb_memory.py``."""
    from dippas_core.tiling import plan_tiles

    plan = plan_tiles((96, 96), 64, 32).to_dict()
    if kind == "plan":
        plan = {**plan, "shape": [100_000, 100_000], "tile": 16384, "overlap": 64,
                "tiles": [{"y": 0, "x": 0, "h": 100_000, "w": 100_000}]}
    (folder / "done").mkdir(parents=True)
    (folder / ".dippas-run").write_text(json.dumps({"format": "dippas-photo-run"}))
    (folder / "photo-run.json").write_text(json.dumps({
        "format": "dippas-photo-run", "plan": plan, "mode": "aware", "photo_sha256": "0" * 64,
        "config": {"B": 32, "L": 2, "tile": 32, "keep_tile_runs": True}}))
    if kind == "record":
        _spoil_record(folder / "done" / "0000.npz", "inflates-to-1-GiB", folder)
    return folder


@pytest.mark.parametrize("damage", ["done-is-a-file", "tiles-is-a-link", "done-is-a-link"])
def test_a_run_folder_of_the_wrong_shape_stops_the_resume_cleanly(real, run_copy, tmp_path,
                                                                  capsys, damage):
    """A file (or a link to a user's folder) where the run's folders go: refused before any
    tile, naming it, with or without --force (never a loop of "run the same command again")."""
    user = tmp_path / "users-folder"
    user.mkdir()
    (user / "holiday.jpg").write_text("a user's photo")
    name = damage.split("-")[0]
    shutil.rmtree(run_copy / name)
    if damage.endswith("file"):
        (run_copy / name).write_text("something else")
    else:
        (run_copy / name).symlink_to(user, target_is_directory=True)
    before = digest(user)
    for more in ([], ["--force"]):
        code, err = cli(anonymize_args(real, tmp_path / "a.png", "--run-dir", run_copy, *more),
                        capsys)
        assert code == 2 and f"{run_copy / name} is not the photo run's own folder" in err, err
        assert "run the same command again" not in err
    assert digest(user) == before and not (tmp_path / "a.png").exists()


def test_a_plan_declaring_a_huge_photo_is_refused_within_memory(run_copy, tmp_path):
    """photo-run.json declares a 100000×100000 photo in 16384-pixel tiles (36 tiles): refused
    by the pixel limit before any tile, stitch or photo is allocated, in a fresh process."""
    _edit_plan(run_copy, lambda m: {**m, "plan": {
        "shape": [100_000, 100_000], "tile": 16384, "overlap": 64,
        "ys": [0], "xs": [0], "tiles": [{"y": 0, "x": 0, "h": 100_000, "w": 100_000}]}})
    out, peak = run_measured(
        f"""
        from dippas_core.cli import main
        print("EXIT", main(["assemble", {str(run_copy)!r}, "--out", {str(tmp_path / "o.png")!r}]))
        """,
        tmp_path,
    )
    assert "EXIT 2" in out and peak < RSS_LIMIT_MB, (out, peak)


def test_a_record_inflating_to_1_gib_is_refused_within_memory(run_copy, tmp_path):
    _spoil_record(run_copy / "done" / "0000.npz", "inflates-to-1-GiB", run_copy)
    assert (run_copy / "done" / "0000.npz").stat().st_size < 2 << 20
    out, peak = run_measured(
        f"""
        from dippas_core.cli import main
        print("EXIT", main(["assemble", {str(run_copy)!r}, "--out", {str(tmp_path / "o.png")!r}]))
        """,
        tmp_path,
    )
    assert "EXIT 2" in out and peak < RSS_LIMIT_MB, (out, peak)


# ------------------------------------------------------------------------------------------------
# 3. attacker model files


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """A valid attacker model file for two Dresden Nikons (the smallest network; its weights are
    those of a fresh network: the file format, not the accuracy, is what is attacked here)."""
    from dippas_core.attacker import AttackerConfig, AttackerModel
    from dippas_core.attacker.model import _network

    config = AttackerConfig(patch=32, stride=32, score_stride=32, region=0, width=4)
    model = AttackerModel(_network(2, 4), ["Nikon_D200_0", "Nikon_D70_0"], config, {"seed": 0})
    return model.save(tmp_path_factory.mktemp("model") / "attacker.pt")


def _payload(model_file: Path) -> dict:
    import torch

    return torch.load(model_file, map_location="cpu", weights_only=True)


def _resave(payload: dict, path: Path) -> Path:
    import torch

    torch.save(payload, path)
    return path


def _with_config(model_file: Path, path: Path, **changes) -> Path:
    payload = _payload(model_file)
    payload["config"] = json.dumps({**json.loads(payload["config"]), **changes})
    return _resave(payload, path)


def _deflated_bomb(model_file: Path, path: Path, n_mib: int = 2048) -> Path:
    """The model file with one tensor's storage replaced by a deflated member that declares (and
    inflates to) ``n_mib`` MiB of zeros, in a file of about 2 MB."""
    with zipfile.ZipFile(model_file) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    storage = next(n for n in members if "/data/" in n and not n.endswith(".pkl"))
    del members[storage]
    rest = path.with_suffix(".rest")
    with zipfile.ZipFile(rest, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    bomb = path.with_suffix(".bomb")
    write_zip(bomb, {storage: (b"", n_mib << 20)})
    # one archive: the bomb's member first, then the others (central directory rebuilt by hand)
    _concat_zips([bomb, rest], path)
    return path


def _concat_zips(parts: list[Path], path: Path) -> None:
    """Join the members of zips into one, offsets and directory fixed (raw bytes, no inflation)."""
    import struct

    local, central, count = b"", b"", 0
    for part in parts:
        data = part.read_bytes()
        end = data.rindex(b"PK\x05\x06")
        n, size, offset = struct.unpack("<HII", data[end + 10: end + 20])
        pos = offset
        for _ in range(n):
            header = data[pos: pos + 46]
            name_len, extra_len, comment_len = struct.unpack("<HHH", header[28:34])
            local_offset = struct.unpack("<I", header[42:46])[0]
            entry = data[pos: pos + 46 + name_len + extra_len + comment_len]
            central += entry[:42] + struct.pack("<I", local_offset + len(local)) + entry[46:]
            pos += 46 + name_len + extra_len + comment_len
            count += 1
        local += data[:offset]
    end = b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, count, count, len(central), len(local), 0)
    path.write_bytes(local + central + end)


def _hostile_model(model_file: Path, tmp_path: Path, case: str) -> tuple[Path, str]:
    """A hostile model file and the words its refusal must hold."""
    import torch

    path = tmp_path / f"{case}.pt"
    payload = _payload(model_file)
    if case == "huge-width":
        return _with_config(model_file, path, width=10**6), "width must be"
    if case == "huge-threads":
        return _with_config(model_file, path, torch_threads=10**7), "torch_threads must be"
    if case == "huge-patch":
        return _with_config(model_file, path, patch=10**6, region=0), "patch must be"
    if case == "deflated-storage":
        return _deflated_bomb(model_file, path), "compressed"
    if case == "tensor-of-other-shape":
        payload["state_dict"]["0.weight"] = torch.zeros(5, 1, 3, 3)
        return _resave(payload, path), "0.weight is torch.float32 (5, 1, 3, 3)"
    if case == "nan-weights":
        payload["state_dict"]["0.weight"] = torch.full((4, 1, 3, 3), float("nan"))
        return _resave(payload, path), "NaN"
    if case == "extra-tensor":
        payload["state_dict"]["spare"] = torch.zeros(10**6)
        return _resave(payload, path), "differing names"
    if case == "million-cameras":
        payload["cameras"] = [f"cam_{i}" for i in range(10**5)]
        return _resave(payload, path), "cameras must be"
    if case == "code-in-pickle":
        payload["meta"] = zipfile.ZipInfo("runs code when unpickled")
        return _resave(payload, path), "never loaded"
    if case == "settings-not-json":
        payload["config"] = "{width: 8"
        return _resave(payload, path), "damaged attacker model"
    raise AssertionError(case)


MODEL_CASES = ["huge-width", "huge-threads", "huge-patch", "deflated-storage",
               "tensor-of-other-shape", "nan-weights", "extra-tensor", "million-cameras",
               "code-in-pickle", "settings-not-json"]


@pytest.mark.parametrize("case", MODEL_CASES)
def test_a_hostile_model_file_is_refused_with_its_reason(model_file, tmp_path, case):
    from dippas_core.attacker import AttackerModel

    path, words = _hostile_model(model_file, tmp_path, case)
    before = digest(path)
    with pytest.raises(InputError) as info:
        AttackerModel.load(path)
    message = str(info.value)
    assert words in message and path.name in message, message
    assert "weights_only" not in message and "Weights only" not in message
    assert digest(path) == before


def test_evaluate_refuses_a_hostile_model_before_any_work(model_file, data_dir, tmp_path,
                                                          capsys):
    """The command line says it in one line: no traceback, no torch advice to unpickle."""
    path, _ = _hostile_model(model_file, tmp_path, "code-in-pickle")
    code, err = cli(["evaluate", "--data", data_dir, "--attacker", path, "--out",
                     tmp_path / "out", "--preset", "cpu", "--max-photos", "1"], capsys)
    assert code == 2 and "never loaded" in err and "weights_only" not in err, err
    assert "Traceback" not in err and not (tmp_path / "out").exists()  # before the fingerprints


def test_the_valid_model_file_scores_a_real_photo(model_file, real):
    """The file the hostile ones were made from loads and scores (the checks refuse no model
    that save() writes), with torch threads bounded by this machine's cores."""
    from dippas_core.attacker import AttackerModel

    model = AttackerModel.load(model_file)
    proba = model.predict_proba(read_image(real["photo"]))
    assert set(proba) == {"Nikon_D200_0", "Nikon_D70_0"} and abs(sum(proba.values()) - 1) < 1e-5


@pytest.mark.parametrize("case", ["huge-width", "deflated-storage", "extra-tensor"])
def test_model_bombs_are_refused_within_memory(model_file, tmp_path, case):
    path, words = _hostile_model(model_file, tmp_path, case)
    out, peak = run_measured(
        f"""
        from dippas_core.attacker import AttackerModel
        from dippas_core.errors import InputError
        try:
            AttackerModel.load({str(path)!r})
        except InputError as exc:
            print("REFUSED", exc)
        """,
        tmp_path,
    )
    assert "REFUSED" in out and words in out and peak < RSS_LIMIT_MB, (out, peak)


# ------------------------------------------------------------------------------------------------
# 4. every knob bounded


@pytest.mark.parametrize(
    "argv, option",
    [
        (["anonymize", "{photo}", "--out", "{tmp}/a.png", "--workers", "100000"], "--workers"),
        (["anonymize", "{photo}", "--out", "{tmp}/a.png", "--torch-threads", "100000"],
         "--torch-threads"),
        (["batch", "{dir}", "--blind", "--out", "{tmp}/b", "--workers", "100000"], "--workers"),
        (["batch", "{dir}", "--blind", "--out", "{tmp}/b", "--max-pixels", str(10**12)],
         "--max-pixels"),
        (["batch", "{dir}", "--blind", "--out", "{tmp}/b", "--torch-threads", "100000"],
         "--torch-threads"),
        (["invert", "{photo}", "--blind", "--out", "{tmp}/r", "--torch-threads", "100000"],
         "--torch-threads"),
        (["demo", "--out", "{tmp}/d", "--torch-threads", "100000"], "--torch-threads"),
        (["train-attacker", "{data}", "--out", "{tmp}/m.pt", "--threads", "100000"], "--threads"),
        (["train-attacker", "{data}", "--out", "{tmp}/m.pt", "--width", "100000"], "--width"),
        (["train-attacker", "{data}", "--out", "{tmp}/m.pt", "--stride", "0"], "--stride"),
        (["train-attacker", "{data}", "--out", "{tmp}/m.pt", "--score-stride", "0"],
         "--score-stride"),
        (["train-attacker", "{data}", "--out", "{tmp}/m.pt", "--patch", "1000000"], "--patch"),
        (["train-attacker", "{data}", "--out", "{tmp}/m.pt", "--epochs", "0"], "--epochs"),
        (["train-attacker", "{data}", "--out", "{tmp}/m.pt", "--max-minutes", "inf"],
         "--max-minutes"),
        (["train-attacker", "{data}", "--out", "{tmp}/m.pt", "--seed", str(2**64)], "--seed"),
    ],
)
def test_every_knob_is_bounded_while_parsing(real, data_dir, tmp_path, capsys, argv, option):
    names = {"photo": real["photo"], "dir": real["dir"], "data": data_dir, "tmp": tmp_path}
    code, err = cli([a.format(**names) for a in argv], capsys)
    assert code == 2 and f"argument {option}" in err and "between" in err or "finite" in err, err
    assert list(tmp_path.iterdir()) == []


def test_absurd_thread_counts_never_crash_natively(data_dir, tmp_path):
    """The case that crashed with SIGSEGV: a clean refusal (exit 2) in a fresh process."""
    proc = subprocess.run(
        [sys.executable, "-m", "dippas_core", "train-attacker", str(data_dir), "--out",
         str(tmp_path / "m.pt"), "--threads", "2147483647"],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert proc.returncode == 2 and "--threads" in proc.stderr, proc.stderr


def test_the_apis_bound_their_knobs_too(model_file, four_tile_config):
    from dippas_core.attacker import AttackerConfig, AttackerModel
    from dippas_core.batch import BatchSettings
    from dippas_core.cluster import local_cluster
    from dippas_core.execution import choose_execution

    for bad in ({"torch_threads": 10**6}, {"width": 0}, {"stride": 0}, {"batch_size": 1},
                {"lr": float("nan")}, {"patch": 2.5}):
        with pytest.raises(InputError, match=next(iter(bad))):
            AttackerConfig(**bad)
    with pytest.raises(InputError, match="torch_threads"):
        BatchSettings(torch_threads=10**6)
    with pytest.raises(InputError, match="number of workers"):
        local_cluster(10**6)
    # --workers bounded by the tiles: no worker started only to idle
    assert choose_execution(four_tile_config(), 2, workers=2).workers == 2
    one = choose_execution(four_tile_config(), 1, workers=2)
    assert one.workers == 1 and "1 tile(s) to run" in one.reason
    # a model made on a larger machine scores with at most this machine's cores
    model = AttackerModel.load(model_file)
    model.config = AttackerConfig(**{**model.config.to_dict(), "torch_threads": 4096})
    assert model.patch_log_proba_of(np.zeros((2, 32, 32), np.float32)).shape == (2, 2)


# ------------------------------------------------------------------------------------------------
# 5. checked before work, and the way on said after a failure


def test_evaluate_refuses_an_out_that_is_a_file(data_dir, tmp_path, capsys):
    (tmp_path / "results").write_text("the user's notes")
    before = digest(tmp_path)
    code, err = cli(["evaluate", "--data", data_dir, "--out", tmp_path / "results"], capsys)
    assert code == 2 and "is a file" in err and "Traceback" not in err, err
    assert digest(tmp_path) == before


def test_train_attacker_checks_its_outputs_before_training(data_dir, tmp_path, capsys):
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "folder.pt").mkdir()
    for out, words in ((tmp_path / "a-file" / "m.pt", "is a file, not a folder"),
                       (tmp_path / "folder.pt", "is a folder"),
                       (data_dir / "nat-jpg" / "Nikon_D70_0_19445.JPG", "input file itself")):
        code, err = cli(["train-attacker", data_dir, "--out", out, "--force", *TRAIN_FAST[:-1]],
                        capsys)
        assert code == 2 and words in err, err
        assert "patches" not in err and "epoch" not in err  # no training began
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "folder.pt"]


@pytest.mark.parametrize("where", ["under-a-file", "a-single-run", "the-new-run-folder"])
def test_the_report_is_checked_before_the_inversion(real, tmp_path, capsys, where):
    (tmp_path / "a-file").write_text("x")
    run = tmp_path / "single-run"
    code, err = cli(["invert", real["photo"], "--blind", "--out", run, "--preset", "tiny",
                     "--max-iter", "2", "--record-psnr", "8", "--quiet"], capsys)
    assert code == 0, err
    report = {"under-a-file": tmp_path / "a-file" / "r.json",
              "a-single-run": run,  # a folder: its forensic-record.json, the run's own file
              "the-new-run-folder": tmp_path / "anon.dippas-run" / "forensic-record.json"}[where]
    before = digest(tmp_path)
    code, err = cli(anonymize_args(real, tmp_path / "anon.png", "--report", report), capsys)
    assert code == 2 and "Traceback" not in err, err
    assert ("is a file, not a folder" if where == "under-a-file" else "run folder's own") in err
    assert "tile plan" not in err and digest(tmp_path) == before  # no run folder, no output


class _FakeScheduler:
    """A TCP server on localhost that is not a Dask scheduler: it says ``reply`` (or nothing)."""

    def __init__(self, reply: bytes | None):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = f"tcp://127.0.0.1:{self.sock.getsockname()[1]}"
        self.reply = reply
        self.open: list[socket.socket] = []  # kept open: a silent peer never hangs up
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.reply is not None:
                conn.sendall(self.reply)
            self.open.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.open:
            conn.close()


def _closed_port() -> str:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return f"tcp://127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize("peer", ["closed-port", "web-server", "huge-frame", "silent", "malformed"])
@pytest.mark.parametrize("command", ["anonymize", "batch"])
def test_the_scheduler_is_checked_before_the_photo_is_read(real, tmp_path, capsys, monkeypatch,
                                                           peer, command):
    import dippas_core.cluster as cluster

    monkeypatch.setattr(cluster, "SCHEDULER_PROBE_S", 0.5)
    server = None
    if peer == "closed-port":
        address, words = _closed_port(), "no Dask scheduler answers"
    elif peer == "malformed":
        address, words = "tcp://host:port", "not a Dask scheduler address"
    else:
        reply = {"web-server": b"HTTP/1.1 400 Bad Request\r\n\r\n", "silent": None,
                 "huge-frame": b"\xff" * 64}[peer]
        server = _FakeScheduler(reply)
        address, words = server.address, "not as a Dask scheduler"
    try:
        # a photo that is not there: were it read first, the error would name it
        missing = tmp_path / "not-there.png"
        argv = (["anonymize", missing, "--out", tmp_path / "a.png", *FAST] if command ==
                "anonymize" else ["batch", tmp_path / "nothing", "--blind", "--out",
                                  tmp_path / "b"])
        code, err = cli([*argv, "--scheduler", address], capsys)
    finally:
        if server is not None:
            server.close()
    assert code == 2 and words in err and "not-there" not in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []  # no run folder, no output folder


def test_a_failure_when_writing_says_the_same_command_finishes(real, clean_run, tmp_path, capsys,
                                                               monkeypatch):
    import dippas_core.io as io_module

    real_write = io_module.write_image

    def disk_full(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io_module, "write_image", disk_full)
    out = tmp_path / "anon.png"
    code, err = cli(anonymize_args(real, out), capsys)
    assert code == 2 and "No space left" in err, err
    assert "run the same command again" in err and "dippas assemble" not in err
    run = tmp_path / "anon.dippas-run"
    assert sorted(p.name for p in (run / "done").iterdir()) == [f"000{i}.npz" for i in range(4)]
    monkeypatch.setattr(io_module, "write_image", real_write)
    code, err = cli(anonymize_args(real, out), capsys)
    assert code == 0 and "resuming: 4 tile(s)" in err, err
    np.testing.assert_array_equal(read_image(out), read_image(clean_run["image"]))
    assert not run.exists()  # finished: the default run folder went


def test_a_failure_midway_says_the_same_command_resumes(real, clean_run, tmp_path, capsys,
                                                        monkeypatch):
    import dippas_core.tiled.executors as photo_module  # where the in-process tiles run
    from dippas_core.errors import DeviceError

    real_invert = photo_module.invert_tile
    calls: list[int] = []

    def out_of_memory_at_tile_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise DeviceError("the device ran out of memory")
        return real_invert(*args, **kwargs)

    monkeypatch.setattr(photo_module, "invert_tile", out_of_memory_at_tile_2)
    out = tmp_path / "anon.png"
    code, err = cli(anonymize_args(real, out), capsys)
    run = tmp_path / "anon.dippas-run"
    assert code == 2 and "ran out of memory" in err, err
    assert f"{run} keeps its 2 finished tile(s): run the same command again to resume" in err
    monkeypatch.setattr(photo_module, "invert_tile", real_invert)
    code, err = cli(anonymize_args(real, out), capsys)
    assert code == 0 and "resuming: 2 tile(s)" in err, err
    np.testing.assert_array_equal(read_image(out), read_image(clean_run["image"]))
