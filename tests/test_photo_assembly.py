"""``dippas assemble PHOTO_RUN``: a whole-photo run kept with --keep-runs, re-assembled.

The tiny network on a real Nikon D70 crop of four 64-pixel tiles (overlap 32).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from dippas_core.cancel import CancelToken
from dippas_core.cli import main
from dippas_core.fidelity import bars_for, describe, fidelity
from dippas_core.io import read_image
from dippas_core.metrics import psnr
from dippas_core.pipeline import anonymize

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def kept(d70_four_tiles, tmp_path_factory, four_tile_config):
    """A finished photo run with every tile's run kept, and its result."""
    photo, K = d70_four_tiles
    run = tmp_path_factory.mktemp("kept") / "run"
    result = anonymize(photo, K, four_tile_config(keep_tile_runs=True), run_dir=run, workers=1)
    assert not result.report["partial"] and not result.report["below_tau"]
    return run, result


def _assemble(run, out, *options) -> int:
    return main(["assemble", str(run), "--out", str(out), *options])


def test_the_runs_own_settings_give_back_the_runs_image(kept, tmp_path, capsys):
    run, result = kept
    assert _assemble(run, tmp_path / "same.png", "-B", "32", "-L", "3", "--tau", "12") == 0
    np.testing.assert_array_equal(read_image(tmp_path / "same.png"), result.image)
    # without -B/-L/--tau the run's own are taken
    assert _assemble(run, tmp_path / "default.png") == 0
    np.testing.assert_array_equal(read_image(tmp_path / "default.png"), result.image)
    err = capsys.readouterr().err
    assert "from 4 tiles' runs, B=32 L=3 tau=12" in err
    # the JSON beside the image is the published sidecar: no run folder, no scores of the camera
    sidecar = (tmp_path / "same.json").read_text()
    assert str(run) not in sidecar and "pce" not in json.loads(sidecar)
    # the same image, the same fidelity as the run's own report: seams on the tiles' edges too
    fid = json.loads(sidecar)["fidelity"]
    assert fid == result.report["fidelity"] and fid["seam_ratio"] is not None
    assert f"fidelity: {describe(fid)}" in err.splitlines()


def test_other_settings_give_another_valid_image(kept, d70_four_tiles, tmp_path):
    from dippas_core.assembly import assemble

    run, result = kept
    photo, _ = d70_four_tiles
    assert _assemble(run, tmp_path / "other.png", "-B", "64", "-L", "1", "--tau", "14") == 0
    other = read_image(tmp_path / "other.png")
    assert other.shape == photo.shape and other.dtype == np.uint8
    assert not np.array_equal(other, result.image)
    assert psnr(photo.astype(np.float32), other.astype(np.float32)) > 12.0
    # its fidelity is the image's, seams on the tiles' edges as well as on the 64-px blocks
    boxes = [(t["y"], t["x"], t["h"], t["w"]) for t in result.report["tiles"]]
    direct = fidelity(photo, other, block=64, tiles=boxes)
    published = json.loads((tmp_path / "other.json").read_text())["fidelity"]
    # (the PSNR bar of an assembly at --tau 14 is 14 dB)
    assert published == {**direct.to_dict(), "bars_failed": direct.failures(bars_for(14.0))}
    assert direct.seam_ratio != fidelity(photo, other, block=64).seam_ratio  # 32: a tile edge
    # where one tile alone covers the photo (weight 1) the pixels are that tile's own assembly
    # with the new settings, made here from its kept run
    tile0 = assemble(run / "tiles" / "0000", 64, 1, 14.0)
    np.testing.assert_array_equal(other[:32, :32], tile0.image[:32, :32])
    tile3 = assemble(run / "tiles" / "0003", 64, 1, 14.0)
    np.testing.assert_array_equal(other[64:, 64:], tile3.image[32:, 32:])


def test_a_run_without_keep_runs_is_refused_and_nothing_written(
    d70_four_tiles, tmp_path, capsys, four_tile_config
):
    photo, K = d70_four_tiles
    run = tmp_path / "run"
    anonymize(photo, K, four_tile_config(), run_dir=run, workers=1)
    before = sorted(p.relative_to(run).as_posix() for p in run.rglob("*"))
    out = tmp_path / "o.png"
    assert _assemble(run, out, "-B", "64") == 2
    err = capsys.readouterr().err
    assert "made without --keep-runs" in err and "again with --keep-runs" in err
    assert not out.exists() and not out.with_suffix(".json").exists()
    assert sorted(p.relative_to(run).as_posix() for p in run.rglob("*")) == before


def test_a_partial_run_is_refused_until_resumed(d70_four_tiles, tmp_path, capsys, four_tile_config):
    photo, K = d70_four_tiles
    cancel = CancelToken()

    def stop_at_tile_1(tile, plan):
        if tile.index == 1:
            cancel.cancel()

    run = tmp_path / "run"
    anonymize(photo, K, four_tile_config(keep_tile_runs=True), run_dir=run, cancel=cancel,
              on_tile=stop_at_tile_1, workers=1)
    assert _assemble(run, tmp_path / "o.png") == 2
    assert "partial photo run" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_bad_settings_fail_before_any_tile_is_assembled(kept, tmp_path, capsys):
    run, _ = kept
    assert _assemble(run, tmp_path / "o.png", "-B", "48") == 2
    assert "B" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()
