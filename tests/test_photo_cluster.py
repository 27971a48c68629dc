"""Whole photos on a real two-process Dask cluster: same image as in process, resume, choice.

The tiny network on a real Nikon D70 crop of four 64-pixel tiles, torch at one thread everywhere.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from dippas_core.cancel import CancelToken
from dippas_core.errors import InputError
from dippas_core.execution import IN_PROCESS, choose_execution
from dippas_core.pipeline import anonymize

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cluster():
    """A real LocalCluster of two worker processes (one core's share each)."""
    pytest.importorskip("distributed")
    from dippas_core.batch import local_cluster

    cluster, _ = local_cluster(2)
    yield cluster
    cluster.close()


@pytest.fixture(scope="module")
def here(d70_four_tiles, tmp_path_factory, four_tile_config):
    """The crop anonymized in this process, one tile after the other."""
    photo, K = d70_four_tiles
    result = anonymize(photo, K, four_tile_config(),
                       run_dir=tmp_path_factory.mktemp("here") / "run", workers=1)
    assert result.report["inversion"]["execution"]["kind"] == IN_PROCESS
    return result


def test_tiles_on_a_cluster_give_the_in_process_image(
    d70_four_tiles, cluster, here, tmp_path, four_tile_config
):
    photo, K = d70_four_tiles
    config = four_tile_config()
    came_back: list[int] = []
    there = anonymize(
        photo, K, config, run_dir=tmp_path / "there", scheduler=cluster.scheduler_address,
        on_tile=lambda t, plan: came_back.append(t.index),
    )
    ex = there.report["inversion"]["execution"]
    assert ex["kind"] == "scheduler" and ex["workers"] == 2
    assert sorted(came_back) == [0, 1, 2, 3]
    assert not there.report["partial"]
    np.testing.assert_array_equal(there.image, here.image)
    for a, b in zip(there.report["tiles"], here.report["tiles"], strict=True):
        assert (a["iterations"], a["n_snapshots"], a["best_psnr"]) == (
            b["iterations"], b["n_snapshots"], b["best_psnr"])
    # the tasks ran in both worker processes and recorded their tiles in the run folder
    assert len({t["worker"] for t in there.report["tiles"]}) == 2
    done = sorted(p.name for p in (tmp_path / "there" / "done").iterdir())
    assert done == ["0000.npz", "0001.npz", "0002.npz", "0003.npz"]
    assert not any((tmp_path / "there" / "tiles").iterdir())  # tile runs removed once done


def test_workers_start_a_local_cluster_for_the_run(
    d70_four_tiles, here, tmp_path, four_tile_config
):
    photo, K = d70_four_tiles
    result = anonymize(photo, K, four_tile_config(), run_dir=tmp_path / "run", workers=2)
    ex = result.report["inversion"]["execution"]
    assert (ex["kind"], ex["workers"], ex["torch_threads_per_tile"]) == ("local cluster", 2, 1)
    np.testing.assert_array_equal(result.image, here.image)


def test_a_stopped_in_process_run_resumes_on_the_cluster(
    d70_four_tiles, cluster, here, tmp_path, four_tile_config
):
    photo, K = d70_four_tiles
    config = four_tile_config()
    cancel = CancelToken()

    def stop_at_tile_2(tile, plan):
        if tile.index == 2:
            cancel.cancel()

    run = tmp_path / "run"
    partial = anonymize(photo, K, config, run_dir=run, cancel=cancel, on_tile=stop_at_tile_2,
                        workers=1)
    assert partial.report["tiles_not_anonymized"] == [2, 3]
    came_back: list[int] = []
    resumed = anonymize(photo, K, config, run_dir=run, scheduler=cluster.scheduler_address,
                        on_tile=lambda t, plan: came_back.append(t.index))
    assert sorted(came_back) == [2, 3]  # tiles 0 and 1 read back, never sent to a worker
    assert resumed.report["resumed_tiles"] == [0, 1] and not resumed.report["partial"]
    np.testing.assert_array_equal(resumed.image, here.image)


def test_cli_scheduler_runs_the_tiles_there_and_says_so(
    d70_four_tiles, cluster, here, tmp_path, capsys
):
    from dippas_core.cli import main
    from dippas_core.fingerprint import Fingerprint
    from dippas_core.io import read_image, write_image

    photo, K = d70_four_tiles
    write_image(tmp_path / "p.png", photo, bit_depth=8)
    Fingerprint(K=K, camera="Nikon_D70_0", n_images=10).save(tmp_path / "K.npz")
    options = ["--preset", "tiny", "--tile", "64", "--overlap", "32", "--max-iter", "25",
               "--lr", "0.01", "--record-psnr", "12", "--stop-psnr", "40", "-B", "32", "-L", "3",
               "--seed", "0", "--torch-threads", "1", "--quiet"]
    code = main(["anonymize", str(tmp_path / "p.png"), "--fingerprint", str(tmp_path / "K.npz"),
                 *options, "--out", str(tmp_path / "o.png"), "--report", str(tmp_path / "f.json"),
                 "--scheduler", cluster.scheduler_address])
    assert code == 0
    assert "tiles run: scheduler (a Dask scheduler was given)" in capsys.readouterr().err
    np.testing.assert_array_equal(read_image(tmp_path / "o.png"), here.image)
    record = json.loads((tmp_path / "f.json").read_text())
    assert record["inversion"]["execution"]["workers"] == 2
    # --workers 0 (a usage error), or both options: refused before any work, nothing written
    out = tmp_path / "bad.png"
    with pytest.raises(SystemExit) as usage:
        main(["anonymize", str(tmp_path / "p.png"), *options, "--out", str(out), "--workers", "0"])
    assert usage.value.code == 2
    both = ["--workers", "2", "--scheduler", "tcp://h:1"]
    code = main(["anonymize", str(tmp_path / "p.png"), *options, "--out", str(out), *both])
    assert code == 2 and "not both" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "bad.dippas-run").exists()


def test_a_stop_reaches_the_tasks_on_the_workers(
    d70_four_tiles, cluster, tmp_path, four_tile_config
):
    import threading

    photo, K = d70_four_tiles
    cancel = CancelToken()
    # far more iterations than the stop leaves them: a task that missed the stop would finish
    # its tile and record it
    config = four_tile_config(max_iter=100_000, stop_psnr=99.0)
    timer = threading.Timer(3.0, cancel.cancel)
    timer.start()
    try:
        result = anonymize(photo, K, config, run_dir=tmp_path / "run", cancel=cancel,
                           scheduler=cluster.scheduler_address)
    finally:
        timer.cancel()
    rep = result.report
    assert rep["partial"] and rep["tiles_not_anonymized"] == [0, 1, 2, 3]
    assert rep["inversion"]["stop_reason"] == "cancelled"
    np.testing.assert_array_equal(result.image, photo)  # nothing anonymized, nothing pretended
    assert not any((tmp_path / "run" / "done").iterdir())
    assert not any((tmp_path / "run" / "tiles").iterdir())  # the stopped tiles' runs removed


def test_the_automatic_choice_follows_the_cores_a_tile_keeps_busy(four_tile_config):
    one = four_tile_config()  # one torch thread per tile, as many for the recording's residuals
    assert choose_execution(one, 10, cpus=2, gpus=0).kind == IN_PROCESS
    four = choose_execution(one, 10, cpus=8, gpus=0)
    assert (four.kind, four.workers) == ("local cluster", 4)
    assert "8 usable CPU core(s), 2 per tile" in four.reason
    assert choose_execution(one, 3, cpus=64, gpus=0).workers == 3  # never more than the tiles
    assert choose_execution(four_tile_config(torch_threads=2), 10, cpus=16, gpus=0).workers == 4
    gpu = choose_execution(one, 10, cpus=2, gpus=3)
    assert (gpu.kind, gpu.workers) == ("local cluster", 3)
    # a caller that follows every step (the viewer's live plot) keeps the tiles in process
    watched = choose_execution(one, 10, cpus=8, gpus=0, watched=True)
    assert watched.kind == IN_PROCESS and "on_step" in watched.reason
    assert choose_execution(one, 10, workers=1).kind == IN_PROCESS
    assert choose_execution(one, 10, scheduler="tcp://h:8786").kind == "scheduler"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"workers": 0}, "workers"), ({"workers": 2, "scheduler": "tcp://h:1"}, "not both"),
     ({"scheduler": " "}, "address")],
)
def test_bad_scheduler_options_fail_before_any_work(
    d70_four_tiles, tmp_path, kwargs, message, four_tile_config
):
    photo, K = d70_four_tiles
    with pytest.raises(InputError, match=message):
        anonymize(photo, K, four_tile_config(), run_dir=tmp_path / "run", **kwargs)
    assert not (tmp_path / "run").exists()
