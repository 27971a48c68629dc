"""Whole photos on a real two-process Dask cluster: same image as in process, resume, choice.

The tiny network on a real Nikon D70 crop of four 64-pixel tiles, torch at one thread everywhere.
"""

from __future__ import annotations

import numpy as np
import pytest

from dippas_core.cancel import CancelToken
from dippas_core.errors import InputError
from dippas_core.photo_cluster import IN_PROCESS, choose_execution
from dippas_core.pipeline import AnonymizeConfig, anonymize

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def crop(natural_photos, camera_fingerprints):
    """A real off-centre 96×96 crop of a Nikon D70 photo (four tiles) and its fingerprint."""
    cam, _, photo = next(p for p in natural_photos if p[0] == "Nikon_D70_0")
    K = camera_fingerprints[cam].K
    return photo[100:196, 200:296].copy(), K[100:196, 200:296].copy()


@pytest.fixture(scope="module")
def cluster():
    """A real LocalCluster of two worker processes (one core's share each)."""
    pytest.importorskip("distributed")
    from dippas_core.batch import local_cluster

    cluster, _ = local_cluster(2)
    yield cluster
    cluster.close()


def _config(**changes) -> AnonymizeConfig:
    base = dict(tile_size=64, overlap=32, max_iter=25, lr=1e-2, tau_psnr=12.0, stop_psnr=40.0,
                B=32, L=3, seed=0, torch_threads=1)
    return AnonymizeConfig.preset("tiny", **{**base, **changes})


def test_tiles_on_a_cluster_give_the_in_process_image(crop, cluster, tmp_path):
    photo, K = crop
    config = _config()
    here = anonymize(photo, K, config, run_dir=tmp_path / "here", workers=1)
    assert here.report["inversion"]["execution"]["kind"] == IN_PROCESS
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


def test_a_stopped_in_process_run_resumes_on_the_cluster(crop, cluster, tmp_path):
    photo, K = crop
    config = _config()
    whole = anonymize(photo, K, config, run_dir=tmp_path / "whole", workers=1)
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
    np.testing.assert_array_equal(resumed.image, whole.image)


def test_a_stop_reaches_the_tasks_on_the_workers(crop, cluster, tmp_path):
    photo, K = crop
    cancel = CancelToken()
    cancel.cancel()  # stopped before any tile came back: every task ends before its inversion
    result = anonymize(photo, K, _config(), run_dir=tmp_path / "run", cancel=cancel,
                       scheduler=cluster.scheduler_address)
    rep = result.report
    assert rep["partial"] and rep["tiles_not_anonymized"] == [0, 1, 2, 3]
    np.testing.assert_array_equal(result.image, photo)  # nothing anonymized, nothing pretended
    assert not any((tmp_path / "run" / "done").iterdir())


def test_the_automatic_choice_follows_the_cores_a_tile_keeps_busy():
    one = _config()  # one torch thread per tile, as many for the recording's residuals
    assert choose_execution(one, 10, cpus=2, gpus=0).kind == IN_PROCESS
    four = choose_execution(one, 10, cpus=8, gpus=0)
    assert (four.kind, four.workers) == ("local cluster", 4)
    assert "8 usable CPU core(s), 2 per tile" in four.reason
    assert choose_execution(one, 3, cpus=64, gpus=0).workers == 3  # never more than the tiles
    assert choose_execution(_config(torch_threads=2), 10, cpus=16, gpus=0).workers == 4
    gpu = choose_execution(one, 10, cpus=2, gpus=3)
    assert (gpu.kind, gpu.workers) == ("local cluster", 3)
    assert choose_execution(one, 10, workers=1).kind == IN_PROCESS
    assert choose_execution(one, 10, scheduler="tcp://h:8786").kind == "scheduler"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"workers": 0}, "workers"), ({"workers": 2, "scheduler": "tcp://h:1"}, "not both"),
     ({"scheduler": " "}, "address")],
)
def test_bad_scheduler_options_fail_before_any_work(crop, tmp_path, kwargs, message):
    photo, K = crop
    with pytest.raises(InputError, match=message):
        anonymize(photo, K, _config(), run_dir=tmp_path / "run", **kwargs)
    assert not (tmp_path / "run").exists()
