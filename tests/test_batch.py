"""Batch anonymization on Dask: resumable, idempotent, fault-isolated (issue 7).

Most tests drive :func:`dippas_core.batch.run_batch` with a stand-in job (fast, deterministic, and
it logs every execution to files, so "none twice" is counted, not assumed); one test runs the real
tiny DIPPAS anonymizer end to end through the CLI.  One two-worker cluster serves the module.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from dippas_core.batch import (
    BatchSettings,
    ImageRecord,
    ImageTask,
    output_names,
    plan_batch,
    process_image,
    run_batch,
    sanitise_stem,
)
from dippas_core.errors import InputError
from dippas_core.fidelity import COLUMNS as FIDELITY_COLUMNS
from dippas_core.fidelity import bars_for, fidelity
from dippas_core.io import read_image
from dippas_core.metrics import psnr

distributed = pytest.importorskip("distributed")
cloudpickle = pytest.importorskip("cloudpickle")
# Workers cannot import this test module by name: ship the stand-in jobs by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

TAG_BLOCK = 8


# ------------------------------------------------------------------------------------------------
# helpers


def tagged_image(tag: int, size=(64, 64), *, seed: int = 0) -> np.ndarray:
    """An RGB uint8 photo whose top-left block encodes ``tag`` (survives JPEG: it is flat)."""
    rng = np.random.default_rng(seed + tag)
    img = rng.integers(40, 200, size=(*size, 3), dtype=np.uint8)
    img[:TAG_BLOCK, :TAG_BLOCK] = tag * 10
    return img


def photo_tag(photo: np.ndarray) -> int:
    return int(
        round(float(np.asarray(photo, dtype=np.float32)[:TAG_BLOCK, :TAG_BLOCK].mean()) / 10)
    )


def standin_transform(photo: np.ndarray) -> np.ndarray:
    """uint8 for uint8 photos, float 0..255 for float ones (as anonymize does)."""
    out = np.asarray(photo, np.float32) * 0.5 + 10
    return np.round(out).astype(np.uint8) if np.asarray(photo).dtype == np.uint8 else out


def standin_job(photo, fingerprint, config):
    """Deterministic stand-in for anonymize; logs start/finish as files in config["log"]."""
    log = Path(config["log"])
    tag = photo_tag(photo)
    token = uuid.uuid4().hex
    (log / f"start-{tag}-{os.getpid()}-{token}").touch()
    if tag == config.get("exit_on"):
        os._exit(1)  # a crash that takes the whole worker process down
    if tag == config.get("raise_on"):
        raise RuntimeError("stand-in job exploded")
    time.sleep(config.get("sleep", 0.0))
    out = standin_transform(photo)
    (log / f"done-{tag}-{token}").touch()
    report = {
        "psnr": float(tag),
        "ncc_before": 0.25,
        "ncc_after": np.float32(0.01),
        "block_map": np.zeros((2, 2)),  # arrays must not reach the JSON report
        "fingerprint_used": fingerprint is not None,
    }
    return SimpleNamespace(image=out, report=report)


def executions(log: Path, kind: str = "done") -> dict[int, int]:
    counts: dict[int, int] = {}
    for p in log.glob(f"{kind}-*"):
        tag = int(p.name.split("-")[1])
        counts[tag] = counts.get(tag, 0) + 1
    return counts


def folder_digest(folder: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(folder)): (
            hashlib.sha256(p.read_bytes()).hexdigest(),
            p.stat().st_mtime_ns,
        )
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def make_inputs(folder: Path, tags, *, names=None) -> dict[int, str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = names or [f"img{t:02d}.png" for t in tags]
    for tag, name in zip(tags, names, strict=True):
        img = tagged_image(tag)
        if name.lower().endswith((".jpg", ".jpeg")):
            Image.fromarray(img).save(folder / name, quality=95)
        else:
            Image.fromarray(img).save(folder / name)
    return dict(zip(tags, names, strict=True))


def read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@pytest.fixture(scope="module")
def client():
    """Two single-threaded worker processes; a task may be retried once after its worker dies."""
    import dask

    from dippas_core.batch import local_cluster

    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        cluster, _ = local_cluster(2, gpus=0)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def quiet(*_args):
    """A progress callback that prints nothing."""


# ------------------------------------------------------------------------------------------------
# names


@pytest.mark.parametrize(
    ("stem", "expected"),
    [
        ("../../etc/passwd", "etc_passwd"),
        ("..", "image"),
        ("C:\\Users\\ana\\DSC 0001", "C_Users_ana_DSC_0001"),
        (".hidden", "hidden"),
        ("Photo été", "Photo_ete"),
        ("a" * 300, "a" * 80),
    ],
)
def test_sanitise_stem_cannot_escape_the_folder(stem, expected):
    assert sanitise_stem(stem) == expected


def test_output_names_are_opaque_stable_and_distinct(tmp_path):
    sources = [tmp_path / n for n in ("Nikon_D70_0_1.JPG", "Nikon_D70_0_1.png", "x.tif")]
    salt = b"k" * 32
    anon = output_names(sources, keep_names=False, salt=salt)
    assert anon == output_names(sources, keep_names=False, salt=salt)  # stable across runs
    assert anon != output_names(sources, keep_names=False, salt=b"other salt")
    assert len(set(anon)) == 3
    for name in anon:
        assert name.startswith("anon-") and name.endswith(".png")
        assert "Nikon" not in name and "D70" not in name
        assert "/" not in name and ".." not in name
    kept = output_names(sources, keep_names=True, salt=salt, suffix=".tif")
    # a.JPG and a.png would collide: the source suffix keeps them apart
    assert kept == ["Nikon_D70_0_1_JPG.tif", "Nikon_D70_0_1_png.tif", "x.tif"]
    # a photo called summary.* must not put its report where the batch writes summary.json
    (reserved,) = output_names([tmp_path / "Summary.jpg"], keep_names=True, salt=salt)
    assert reserved.lower().startswith("summary-") and reserved.endswith(".png")


# ------------------------------------------------------------------------------------------------
# the whole batch


def test_the_library_prints_nothing_its_callbacks_get_the_news(tmp_path, client, capsys):
    """run_batch reports through ``progress`` and ``log`` only (the CLI prints them)."""
    from dippas_core.batch import format_progress

    src, out, log = tmp_path / "in", tmp_path / "out", tmp_path / "log"
    log.mkdir()
    make_inputs(src, [1, 2])
    config = {"log": str(log)}
    events, messages = [], []
    capsys.readouterr()
    run_batch(src, out, config=config, job=standin_job, client=client,
              progress=lambda *state: events.append(state), log=messages.append)
    run_batch(src, out, config=config, job=standin_job, client=client,
              progress=lambda *state: events.append(state), log=messages.append)
    printed = capsys.readouterr()
    assert printed.out == "" and printed.err == ""
    assert [(done, total, rec.status) for done, total, rec, _ in events] == [
        (1, 2, "ok"), (2, 2, "ok")
    ]  # the second run had nothing left to do: no image event, one message
    assert messages == ["2 of 2 images already done; 0 to go"]
    done, total, record, counts = events[-1]
    assert format_progress(done, total, record, counts).startswith(f"[2/2] ok      {record.output}")


def test_batch_runs_every_image_once_and_resumes(tmp_path, client):
    src, out, log = tmp_path / "in", tmp_path / "out", tmp_path / "log"
    log.mkdir()
    names = ["kiwi1.JPG", "lime2.jpeg", "mango3.PNG", "nut4.tif", "olive5.TIFF", "pear6.png"]
    make_inputs(src, [1, 2, 3, 4, 5, 6], names=names)
    (src / "notes.txt").write_text("not an image")
    (src / ".hidden.png").write_bytes(b"ignored")
    (src / "sub").mkdir()
    make_inputs(src / "sub", [7])  # not recursive
    before = folder_digest(src)
    config = {"log": str(log)}

    result = run_batch(src, out, config=config, job=standin_job, client=client, progress=quiet)

    assert result.ok and [r.status for r in result.records] == ["ok"] * 6
    assert executions(log) == {t: 1 for t in range(1, 7)}
    assert folder_digest(src) == before  # inputs untouched
    # each output is the job's result on the decoded input, under an opaque name
    outputs = sorted(out.glob("anon-*.png"))
    assert len(outputs) == 6
    by_source = {r.source: out / r.output for r in result.records}
    for name in names:
        if name.lower().endswith((".png", ".tif", ".tiff")):
            np.testing.assert_array_equal(
                read_rgb(by_source[name]), standin_transform(read_rgb(src / name))
            )
        assert Path(name).stem not in by_source[name].name
    # summary in CSV and JSON, per-image JSON report without arrays
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [r["source"] for r in rows] == names
    assert {r["status"] for r in rows} == {"ok"}
    assert [float(r["psnr"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert json.loads((out / "summary.json").read_text())[0]["ncc_after"] == pytest.approx(0.01)
    report = json.loads(by_source["mango3.PNG"].with_suffix(".json").read_text())["report"]
    assert report["psnr"] == 3.0 and "block_map" not in report
    assert not list(out.rglob("*.part*"))

    # second run: nothing is redone
    again = run_batch(src, out, config=config, job=standin_job, client=client, progress=quiet)
    assert [r.status for r in again.records] == ["skipped"] * 6
    assert again.records[2].psnr == 3.0
    assert executions(log) == {t: 1 for t in range(1, 7)}

    # a changed parameter, a changed input, a deleted output: only those are redone
    (src / "mango3.PNG").write_bytes((src / "mango3.PNG").read_bytes())  # same bytes: still done
    Image.fromarray(tagged_image(4, seed=9)).save(src / "nut4.tif")
    by_source["pear6.png"].unlink()
    third = run_batch(src, out, config=config, job=standin_job, client=client, progress=quiet)
    assert [r.status for r in third.records] == ["skipped"] * 3 + ["ok", "skipped", "ok"]
    assert executions(log) == {1: 1, 2: 1, 3: 1, 4: 2, 5: 1, 6: 2}
    changed = run_batch(
        src, out, config={**config, "variant": 2}, job=standin_job, client=client, progress=quiet
    )
    assert [r.status for r in changed.records] == ["ok"] * 6
    assert executions(log) == {1: 2, 2: 2, 3: 2, 4: 3, 5: 2, 6: 3}


def test_bad_files_cost_one_image_each(tmp_path, client):
    """Corrupt, truncated, empty, fake, tiny, huge, gray, 16-bit, a crashing job: the rest runs."""
    src, out, log = tmp_path / "in", tmp_path / "out", tmp_path / "log"
    log.mkdir()
    make_inputs(src, [1, 2, 3], names=["good1.png", "good2.jpg", "boom.png"])
    good = (src / "good1.png").read_bytes()
    (src / "truncated.png").write_bytes(good[: len(good) // 2])
    (src / "empty.png").write_bytes(b"")
    (src / "corrupt.jpg").write_bytes(np.random.default_rng(0).bytes(4000))
    (src / "text.tif").write_text("this is not a TIFF")
    Image.fromarray(tagged_image(4, size=(16, 16))).save(src / "tiny.png")
    Image.fromarray(tagged_image(5, size=(100, 100))).save(src / "huge.png")
    gray = tagged_image(6)[..., 0]
    Image.fromarray(gray).save(src / "gray.png")
    deep = tagged_image(7)[..., 1].astype(np.uint16) * 257  # 16-bit gray PNG
    Image.fromarray(deep).save(src / "deep16.png")
    before = folder_digest(src)
    config = {"log": str(log), "raise_on": 3}
    settings = BatchSettings(max_pixels=80 * 80, min_size=32)

    result = run_batch(
        src, out, config=config, settings=settings, job=standin_job, client=client, progress=quiet
    )

    status = {r.source: (r.status, r.reason) for r in result.records}
    assert {k for k, v in status.items() if v[0] == "ok"} == {
        "good1.png",
        "good2.jpg",
        "gray.png",
        "deep16.png",
    }
    expected = {
        "truncated.png": r"truncated\.png",
        "empty.png": r"empty\.png",
        "corrupt.jpg": r"corrupt\.jpg",
        "text.tif": r"text\.tif",
        "tiny.png": r"16×16, smaller than the minimum 32×32",
        "huge.png": r"100×100 = 0\.0 MP, over the batch limit",
        "boom.png": r"RuntimeError: stand-in job exploded",
    }
    for source, pattern in expected.items():
        state, reason = status[source]
        assert state == "failed", source
        assert reason and __import__("re").search(pattern, reason), (source, reason)
    # gray → three equal channels; 16-bit processed at full precision (here exactly /257)
    records = {r.source: r for r in result.records}
    gray_out = read_rgb(out / records["gray.png"].output)
    np.testing.assert_array_equal(gray_out, standin_transform(np.repeat(gray[..., None], 3, 2)))
    deep_out = read_image(out / records["deep16.png"].output)  # 16-bit in, 16-bit out
    assert deep_out.dtype == np.uint16 and deep_out.shape == (64, 64, 3)
    expected = standin_transform(np.repeat((deep / 257.0)[..., None], 3, 2).astype(np.float32))
    np.testing.assert_allclose(deep_out / 257.0, expected, atol=0.5 / 257 + 1e-6)
    # failed images leave nothing behind under their names; inputs untouched
    written = {p.name for p in out.iterdir() if p.suffix == ".png"}
    assert written == {
        records[s].output for s in ("good1.png", "good2.jpg", "gray.png", "deep16.png")
    }
    assert not list(out.rglob("*.part*"))
    assert folder_digest(src) == before
    assert not result.ok and len(result.failed) == 7


def test_fingerprint_of_the_wrong_size_costs_only_those_images(tmp_path, client):
    from dippas_core.fingerprint import Fingerprint

    src, out, log = tmp_path / "in", tmp_path / "out", tmp_path / "log"
    log.mkdir()
    make_inputs(src, [1, 2])
    Image.fromarray(tagged_image(3, size=(80, 64))).save(src / "other_camera.png")
    K = np.random.default_rng(1).normal(0, 0.01, (64, 64)).astype(np.float32)
    fp = Fingerprint(K=K, camera="test", n_images=5, sigma=5.0)
    fp_path = tmp_path / "k.npz"
    fp.save(fp_path)
    result = run_batch(
        src,
        out,
        fingerprint=fp_path,
        config={"log": str(log)},
        job=standin_job,
        client=client,
        progress=quiet,
    )
    status = {r.source: r for r in result.records}
    assert status["img01.png"].status == status["img02.png"].status == "ok"
    bad = status["other_camera.png"]
    assert bad.status == "failed"
    assert "80×64" in bad.reason and "fingerprint is 64×64" in bad.reason
    # --crop takes the same centre from photo and fingerprint: now all three fit
    cropped = run_batch(
        src,
        tmp_path / "out2",
        fingerprint=fp_path,
        config={"log": str(log)},
        job=standin_job,
        settings=BatchSettings(crop=48, min_size=32),
        client=client,
        progress=quiet,
    )
    assert cropped.ok and all(r.status == "ok" for r in cropped.records)
    out_img = read_rgb(tmp_path / "out2" / cropped.records[2].output)
    assert out_img.shape == (48, 48, 3)
    # a bare K array is not a camera's fingerprint: said before any image runs, nothing written
    with pytest.raises(InputError, match="Fingerprint or the path of its .npz file, not ndarray"):
        run_batch(src, tmp_path / "out3", fingerprint=K, config={"log": str(log)},
                  job=standin_job, client=client, progress=quiet)
    assert not (tmp_path / "out3").exists()


def test_a_worker_killed_mid_batch_costs_nothing_and_nothing_runs_twice(tmp_path, client):
    """Kill (SIGKILL, by pid) the worker running image 2 mid-job: every image still ends up done,
    each output written exactly once; image 2 is restarted once on a live worker."""
    src, out, log = tmp_path / "in", tmp_path / "out", tmp_path / "log"
    log.mkdir()
    tags = list(range(1, 7))
    make_inputs(src, tags)
    victim = 2
    killed: list[int] = []

    def kill_when_started():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            starts = list(log.glob(f"start-{victim}-*"))
            if starts:
                pid = int(starts[0].name.split("-")[2])
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.02)

    watcher = threading.Thread(target=kill_when_started, daemon=True)
    watcher.start()
    result = run_batch(
        src,
        out,
        config={"log": str(log), "sleep": 0.6},
        job=standin_job,
        client=client,
        progress=quiet,
    )
    watcher.join(timeout=5)

    assert killed, "the watcher never saw image 2 start"
    assert [r.status for r in result.records] == ["ok"] * 6, [r.reason for r in result.records]
    assert executions(log, "done") == {t: 1 for t in tags}  # none twice
    assert executions(log, "start")[victim] == 2  # killed mid-job, retried once
    assert len(list(out.glob("*.png"))) == 6
    client.wait_for_workers(2, timeout=60)  # the nanny brought the worker back


def test_a_job_that_always_kills_its_worker_fails_that_image_only(tmp_path, client):
    src, out, log = tmp_path / "in", tmp_path / "out", tmp_path / "log"
    log.mkdir()
    make_inputs(src, [1, 2, 3])
    result = run_batch(
        src,
        out,
        config={"log": str(log), "exit_on": 2},
        job=standin_job,
        client=client,
        progress=quiet,
    )
    status = {r.source: r for r in result.records}
    assert status["img01.png"].status == status["img03.png"].status == "ok"
    assert status["img02.png"].status == "failed"
    assert "worker processing this image died repeatedly" in status["img02.png"].reason
    assert executions(log, "start")[2] == 2  # allowed-failures=1: tried twice, then given up
    client.wait_for_workers(2, timeout=60)


def test_a_rerun_of_a_finished_task_returns_the_record_without_recomputing(tmp_path):
    """What Dask does when the worker holding a finished result dies: the task runs again."""
    src, out, log = tmp_path / "in", tmp_path / "out", tmp_path / "log"
    log.mkdir()
    make_inputs(src, [1])
    config, settings = {"log": str(log)}, BatchSettings()
    (task,) = plan_batch(
        src, out, fingerprint_sha=None, config=config, settings=settings, job=standin_job
    )
    first = process_image(task, None, config, settings, standin_job)
    output = Path(task.output)
    stamp = output.stat().st_mtime_ns
    second = process_image(task, None, config, settings, standin_job)
    assert (first.status, second.status) == ("ok", "skipped")
    assert second.psnr == first.psnr == 1.0
    assert executions(log) == {1: 1} and output.stat().st_mtime_ns == stamp
    # an output that was damaged after the fact is redone, and never half-written
    output.write_bytes(b"garbage")
    third = process_image(task, None, config, settings, standin_job)
    assert third.status == "ok" and executions(log) == {1: 2}
    np.testing.assert_array_equal(read_rgb(output), standin_transform(tagged_image(1)))
    # a stale key (other params) does not count as done
    stale = ImageTask(task.source, task.output, task.marker, "0" * 64, task.source_name)
    assert process_image(stale, None, config, settings, standin_job).status == "ok"
    # a damaged done-marker (valid JSON, wrong shape) means "redo", not a crash
    for damaged in ("null", "[]", '{"key": 1, "record": []}'):
        Path(task.marker).write_text(damaged)
        assert process_image(task, None, config, settings, standin_job).status == "ok"


def test_an_image_short_of_tau_says_so_in_its_summary_row(tmp_path):
    """tau lowered by the assembly or tiles short of the recording threshold: never silent, even
    on a worker."""
    src, out, log = tmp_path / "in", tmp_path / "out", tmp_path / "log"
    log.mkdir()
    make_inputs(src, [1, 2])

    def short_job(photo, fingerprint, config):
        result = standin_job(photo, fingerprint, config)
        if photo_tag(photo) == 1:
            result.report["assembly"] = {"tau": 38.0, "psnr_threshold": 36.5}
            result.report["below_tau"] = [{"tile": 3, "short_db": 1.5, "best_psnr": 36.5}]
        else:
            result.report["assembly"] = {"tau": 38.0, "psnr_threshold": 38.0}
        return result

    config, settings = {"log": str(log)}, BatchSettings()
    tasks = plan_batch(src, out, fingerprint_sha=None, config=config, settings=settings,
                       job=short_job)
    records = {r.source: r for r in (process_image(t, None, config, settings, short_job)
                                     for t in tasks)}
    short, fine = records["img01.png"], records["img02.png"]
    # written, but never called "ok": its own status, its sidecar's flag, the batch's exit status
    assert (short.status, fine.status) == ("below-tau", "ok")
    sidecars = {r.source: json.loads((out / r.output).with_suffix(".json").read_text())["report"]
                for r in (short, fine)}
    assert sidecars["img01.png"]["below_tau"] is True
    assert sidecars["img02.png"]["below_tau"] is False
    assert sidecars["img02.png"]["partial"] is False
    from dippas_core.cli.batch import batch_exit_status

    assert batch_exit_status([fine]) == 0 and batch_exit_status([short, fine]) == 3
    failed = ImageRecord("x.png", "x.png", "failed", reason="broken")
    assert batch_exit_status([short, fine, failed]) == 1
    assert "no snapshot reached tau 38 dB: assembled from the best, at 36.50 dB" in short.reason
    assert "tile 3 never reached the recording threshold (best 36.50 dB)" in short.reason
    assert fine.reason == ""


def test_an_interrupted_batch_restarts_where_it_stopped(tmp_path, client):
    from dippas_core.cancel import CancelToken

    src, out, log = tmp_path / "in", tmp_path / "out", tmp_path / "log"
    log.mkdir()
    make_inputs(src, list(range(1, 9)))
    config = {"log": str(log), "sleep": 0.2}
    token = CancelToken()

    def stop_after_three(done, total, record, counts):
        if done >= 3:
            token.cancel()

    first = run_batch(
        src,
        out,
        config=config,
        job=standin_job,
        client=client,
        progress=stop_after_three,
        cancel=token,
    )
    finished = {r.source for r in first.records if r.status == "ok"}
    assert 3 <= len(finished) < 8
    assert {r.status for r in first.records} <= {"ok", "cancelled"}
    # images already running when the batch stopped still finish (and are kept): let them land.
    # Dask's cancel is asynchronous, so a worker may still start an image it had queued after
    # run_batch returned: wait until nothing has started or finished for a second, every start done
    def landed() -> tuple[int, int]:
        return len(list((out / ".dippas-batch" / "done").glob("*"))), sum(
            executions(log, "start").values()
        )

    deadline, last, quiet_since = time.monotonic() + 60, None, time.monotonic()
    while time.monotonic() < deadline:
        now = landed()
        if now != last:
            last, quiet_since = now, time.monotonic()
        elif now[0] >= now[1] and time.monotonic() - quiet_since > 1.0:
            break
        time.sleep(0.05)
    # what a SIGKILL can leave behind: a temporary file, an output whose marker was never written
    done_tags = sorted(executions(log))
    some = next(r for r in first.records if r.status == "ok")
    (out / ".dippas-batch" / "done" / f"{some.output}.json").unlink()
    (out / f".{some.output}.abc123.part.png").write_bytes(b"half")

    second = run_batch(src, out, config=config, job=standin_job, client=client, progress=quiet)
    assert second.ok
    counts = executions(log)
    assert set(counts) == set(range(1, 9))
    redone = {t for t, n in counts.items() if n == 2}
    assert redone == {int(some.source[3:5])}  # only the image without a marker runs again
    assert all(counts[t] == 1 for t in done_tags if t not in redone)
    assert not list(out.rglob("*.part*"))


def test_a_process_without_dask_is_no_worker_and_does_not_load_dask():
    # the viewer asks at every Run: loading distributed to answer held its GUI for 0.7 s
    code = ("import sys; from dippas_core.cluster import on_dask_worker, worker_gpu_device; "
            "print(on_dask_worker(), worker_gpu_device(), 'distributed' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "None", "False"]


def test_default_local_cluster_and_gpu_resources(tmp_path):
    """client=None starts (and closes) a LocalCluster; a cluster advertising GPUs gets tasks that
    ask for one GPU each (one inversion per GPU)."""
    from dippas_core.batch import local_cluster, worker_gpu_device
    from dippas_core.cluster import on_dask_worker

    src, log = tmp_path / "in", tmp_path / "log"
    log.mkdir()
    make_inputs(src, [1, 2])
    result = run_batch(
        src,
        tmp_path / "out",
        config={"log": str(log)},
        job=standin_job,
        n_workers=1,
        progress=quiet,
    )
    assert result.ok and result.n_workers == 1
    cluster, threads = local_cluster(1, gpus=1, processes=False)  # threads: quick to start
    assert threads >= 1
    with distributed.Client(cluster) as c:
        info = c.scheduler_info()["workers"]
        assert [w["resources"] for w in info.values()] == [{"GPU": 1}]
        # the worker finds its GPU resource; this CPU-only torch has no device to pin it to
        assert c.submit(worker_gpu_device, resources={"GPU": 1}).result() is None
        assert c.submit(on_dask_worker).result() is True
        gpu_run = run_batch(
            src,
            tmp_path / "out_gpu",
            config={"log": str(log)},
            job=standin_job,
            client=c,
            progress=quiet,
        )
    cluster.close()
    assert gpu_run.ok


def test_cli_batch_with_the_real_tiny_anonymizer(tmp_path, client, capsys, testdata):
    """`dippas batch --fingerprint K --crop 64 --preset tiny` on the shipped real Dresden sample
    (and a crop of another camera's photo), through --scheduler: the real job on real workers."""
    from dippas_core.cli import main
    from dippas_core.io import center_crop
    from dippas_core.sample import sample_data

    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    photo, fingerprint = sample_data()
    Image.fromarray(photo).save(src / "sample.png")
    other = read_image(testdata / "nat-jpg" / "Nikon_D200_0_14902.JPG")
    Image.fromarray(np.ascontiguousarray(center_crop(other, photo.shape[:2]))).save(
        src / "other.png"
    )
    fingerprint.save(tmp_path / "k.npz")
    before = folder_digest(src)
    args = ["batch", str(src), "--fingerprint", str(tmp_path / "k.npz"), "--out", str(out)]
    # a short inversion (quality is not the point here: the real job on real workers is)
    args += ["--crop", "64", "--preset", "tiny", "--seed", "3", "--max-iter", "20"]
    args += ["--record-psnr", "5", "--stop-psnr", "99", "-B", "32", "-L", "3"]
    code = main([*args, "--scheduler", client.scheduler.address])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "[2/2] ok" in captured.err and "PSNR dB" in captured.out
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [r["source"] for r in rows] == ["other.png", "sample.png"]
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert "SSIM" in captured.out and "bars broken" in captured.out
    summary = {r["output"]: r for r in json.loads((out / "summary.json").read_text())}
    for row in rows:
        img = read_image(out / row["output"])
        original = center_crop(read_image(src / row["source"]), 64)
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8
        published = json.loads((out / row["output"]).with_suffix(".json").read_text())["report"]
        assert "fingerprint" not in published and "ncc" not in published  # nothing of the source
        stem = Path(row["output"]).stem
        report = json.loads((out / ".dippas-batch" / "records" / f"{stem}.json").read_text())
        # the summary's figures are the pipeline's, and they describe this very output
        assert report["mode"] == "aware" and report["fingerprint"]["camera"] == "Nikon_D70s_0"
        assert published["psnr"] == report["psnr"]
        assert float(row["psnr"]) == pytest.approx(report["psnr"])
        assert report["psnr"] == pytest.approx(psnr(original, img), abs=0.01)
        assert float(row["ncc_before"]) == pytest.approx(report["ncc"]["before"])
        assert float(row["ncc_after"]) == pytest.approx(report["ncc"]["after"])
        # beside the PSNR, the fidelity of this very output against its input
        direct = fidelity(original, img, block=32)
        for name in ("ssim", "max_abs", "share_off", "colour_shift", "checkerboard"):
            assert float(row[name]) == pytest.approx(getattr(direct, name)), name
        assert float(row["seam_ratio"] or "nan") == pytest.approx(direct.seam_ratio or np.nan,
                                                                 nan_ok=True)
        # the PSNR bar of a run recorded from 5 dB is its own threshold, not 38 dB
        bars = bars_for(5.0)
        assert row["bars_failed"] == "; ".join(direct.failures(bars))
        assert summary[row["output"]]["bars_failed"] == direct.failures(bars)
        assert not any(b.startswith("psnr") for b in direct.failures(bars))
        assert report["seed"] == 3 and report["config"]["assembly"]["B"] == 32
        batch_info = json.loads((out / row["output"]).with_suffix(".json").read_text())["batch"]
        assert batch_info == {"crop": [64, 64], "bit_depth": 8}
    assert folder_digest(src) == before
    # the same command again redoes nothing, and its summary keeps every figure
    assert main([*args, "--scheduler", client.scheduler.address]) == 0
    assert "2 of 2 images already done" in capsys.readouterr().err
    again = list(csv.DictReader((out / "summary.csv").open()))
    assert [r["status"] for r in again] == ["skipped", "skipped"]
    assert [{k: r[k] for k in FIDELITY_COLUMNS} for r in again] == [
        {k: r[k] for k in FIDELITY_COLUMNS} for r in rows
    ]


_DRIVER = """
import sys
sys.path.insert(0, {tests!r})
import test_batch as tb
from distributed import Client, LocalCluster
from dippas_core.batch import run_batch

cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                       scheduler_kwargs={{"dashboard": False}})
run_batch({src!r}, {out!r}, config={config!r}, job=tb.standin_job, client=Client(cluster),
          progress=None)
"""


def test_a_batch_killed_with_sigkill_restarts_where_it_stopped(tmp_path, client):
    """SIGKILL the whole driver (its in-process workers die with it) after two images are done;
    the same batch run again redoes none of the finished images."""
    import subprocess

    src, out, log = tmp_path / "in", tmp_path / "out", tmp_path / "log"
    log.mkdir()
    tags = list(range(1, 9))
    make_inputs(src, tags)
    config = {"log": str(log), "sleep": 0.4}
    script = _DRIVER.format(
        tests=str(Path(__file__).parent), src=str(src), out=str(out), config=config
    )
    markers = out / ".dippas-batch" / "done"
    driver = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 120
        while len(list(markers.glob("[!.]*.json"))) < 2 and driver.poll() is None:
            assert time.monotonic() < deadline, "the driver never finished two images"
            time.sleep(0.05)
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.wait(timeout=30)
    assert driver.returncode == -signal.SIGKILL  # killed mid-batch, not finished
    finished = {p.name.removesuffix(".json") for p in markers.glob("[!.]*.json")}
    assert 2 <= len(finished) < len(tags)
    done_before = executions(log)

    again = run_batch(src, out, config=config, job=standin_job, client=client, progress=quiet)

    assert again.ok
    status = {r.output: r.status for r in again.records}
    assert {name for name, s in status.items() if s == "skipped"} == finished
    counts = executions(log)
    assert set(counts) == set(tags)
    # a finished image never runs again; only the one in flight at the kill may have run twice
    twice = {t for t, n in counts.items() if n > 1}
    assert len(twice) <= 1 and all(counts[t] == 1 for t in done_before if t not in twice)
    assert sum(1 for r in again.records if r.status == "skipped") == len(finished)
    assert not list(out.rglob("*.part*"))
