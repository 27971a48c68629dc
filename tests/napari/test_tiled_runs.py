"""Whole-photo (tiled) runs in a real viewer: the tile plan over the photo, tile states live,
Stop then resume, the time estimate on the chosen device."""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.colormaps.standardize_color import transform_color

from napari_dippas._layers import RECT_STATE_COLORS, Region
from napari_dippas._widgets import AnonymizeWidget

DONE = ("finished", "cancelled", "failed")
#: a 96×96 region cut into 2×2 tiles of 64 px overlapping by 32: four tiny runs of seconds
REGION = Region(64, 96, 96, 96)


@pytest.fixture
def tiled(viewer, sample, tiny_settings, configure, tmp_path):
    """``make(runs_folder)``: an Anonymize widget on the sample photo, the region, 64-px tiles."""
    photo, fp = sample
    viewer.add_image(photo, rgb=True, name="photo")
    viewer.add_image(fp.K, name="fingerprint — cam",
                     metadata={"dippas": {"kind": "fingerprint", "camera": "cam"}})

    def make(folder: str) -> AnonymizeWidget:
        widget = AnonymizeWidget(viewer)
        configure(widget, tiny_settings.model_copy(update={"max_iter": 40}))
        widget.tile_size.setValue(64)  # through the form, as a user would
        widget.overlap.setValue(32)
        widget.region.set_region(REGION)
        widget.runs_folder.set_path(tmp_path / folder)
        return widget

    return make


def _states(viewer) -> list[str]:
    return list(viewer.layers["tiles"].features["state"])


def test_plan_drawn_over_the_region_with_a_time_estimate(viewer, qtbot, tiled):
    anon = tiled("runs")
    active = viewer.layers.selection.active
    anon.plan_button.click()
    layer = viewer.layers["tiles"]
    assert type(layer).__name__ == "Shapes" and len(layer.data) == 4
    assert _states(viewer) == ["waiting"] * 4
    assert viewer.layers.selection.active is active  # the overlay does not take the focus
    # the plan covers the region's pixels exactly, at the region's place on the photo
    lo, hi = np.asarray(layer.extent.world)
    np.testing.assert_allclose(lo, (63.5, 95.5))
    np.testing.assert_allclose(hi, (159.5, 191.5))
    # the estimate times this device (the CPU here, with its threads) for this plan
    assert not anon.plan_button.isEnabled()  # while it times the device
    qtbot.waitUntil(anon.plan_button.isEnabled, timeout=120_000)
    text = anon.estimate.text()
    assert "4 tiles (2×2) of 64×64 px" in text and "4 tiles ×" in text, text
    assert "on cpu" in text and "thread" in text, text
    # the plan on screen follows the settings; the estimate, now stale, goes
    anon.tile_size.setValue(128)
    assert len(viewer.layers["tiles"].data) == 1 and anon.estimate.text() == ""
    anon.region.set_region(Region(0, 0, 256, 192))
    assert len(viewer.layers["tiles"].data) == 6  # 3 rows × 2 columns of 128 px
    anon.close_down()


def test_tile_states_live_then_stop_and_resume_equals_an_uninterrupted_run(
    viewer, qtbot, tiled, layer_of):
    anon = tiled("runs")
    seen: list[list[str]] = []
    # what the user sees, sampled at each change: the layer's states and its edge colours
    anon.state.tiles.events.states.connect(lambda *_: seen.append(_states(viewer)))
    anon.run_button.click()
    assert anon.run_button.text() == "Stop"
    layer = viewer.layers["tiles"]
    qtbot.waitUntil(lambda: "done" in _states(viewer) or "fell short" in _states(viewer),
                    timeout=180_000)
    anon.run_button.click()  # Stop after the first finished tile
    qtbot.waitUntil(lambda: anon.job.status in DONE and anon.settled, timeout=120_000)
    assert anon.job.status == "cancelled", anon.status.text()
    kept = sum(s in ("done", "fell short") for s in _states(viewer))
    assert 1 <= kept < 4
    assert f"Stopped: {kept} of 4 tiles" in anon.status.text()
    assert "running" not in _states(viewer)  # the stopped tile waits for the resume
    assert anon.progress.value() == kept
    assert "anonymized" not in viewer.layers  # a partial photo is never shown as anonymized
    # live: a tile was running before it was done, and the colours follow the states
    assert ["running"] + ["waiting"] * 3 in seen
    np.testing.assert_allclose(
        layer.edge_color, transform_color([RECT_STATE_COLORS[s] for s in _states(viewer)])
    )
    folder = anon.run_path

    anon.run_button.click()  # the same photo, region and settings: resumes
    assert "Resuming the stopped run" in anon.status.text()
    assert f"{kept} of 4 tiles are already done" in anon.status.text()
    qtbot.waitUntil(lambda: anon.job.status in DONE and anon.settled, timeout=180_000)
    assert anon.job.status == "finished", anon.status.text()
    assert anon.run_path == folder
    assert all(s in ("done", "fell short") for s in _states(viewer))
    # the finished tiles were read back, not inverted again
    assert anon.state.tiles.n_resumed == kept and anon.state.tiles.n_started == 4 - kept
    assert anon.progress.value() == anon.progress.maximum() == 4
    resumed = np.array(layer_of(viewer, "anonymized").data)
    assert tuple(layer_of(viewer, "anonymized").translate)[-2:] == (64, 96)
    assert viewer.layers.selection.active is layer_of(viewer, "anonymized")
    anon.close_down()

    # the same job, uninterrupted, in another runs folder
    fresh = tiled("fresh")
    fresh.start()
    assert "Resuming" not in fresh.status.text()
    qtbot.waitUntil(lambda: fresh.job.status in DONE and fresh.settled, timeout=180_000)
    assert fresh.job.status == "finished", fresh.status.text()
    assert fresh.state.tiles.n_started == 4 and fresh.state.tiles.n_resumed == 0
    (output,) = [layer for layer in viewer.layers
                 if layer.metadata.get("dippas", {}).get("kind") == "anonymized"
                 and layer.metadata["dippas"].get("run_dir") == str(fresh.run_path)]
    np.testing.assert_array_equal(output.data, resumed)
    fresh.close_down()


def test_in_a_plugin_dock_layers_are_updated_in_place(viewer, qtbot, small, tiny_settings,
                                                      configure, tmp_path, layer_of):
    """A dock opened from the Plugins menu gets napari's proxy of the viewer: the run's layers
    must still be updated in place (one ``tiles``, one ``snapshots`` layer), never re-added."""
    photo, fp = small
    viewer.add_image(photo, rgb=True, name="photo")
    viewer.add_image(fp.K, name="fingerprint",
                     metadata={"dippas": {"kind": "fingerprint", "camera": "cam"}})
    _, anon = viewer.window.add_plugin_dock_widget("napari-dippas", "Anonymize")
    configure(anon, tiny_settings)
    anon.runs_folder.set_path(tmp_path)
    inserted = []
    viewer.layers.events.inserted.connect(lambda event: inserted.append(event.value.name))
    anon.start()
    qtbot.waitUntil(lambda: layer_of(viewer, "snapshots") is not None)  # the turn after Run's
    snapshots = layer_of(viewer, "snapshots")
    qtbot.waitUntil(lambda: anon.job.status in DONE and anon.settled, timeout=180_000)
    assert anon.job.status == "finished", anon.status.text()
    assert layer_of(viewer, "snapshots") is snapshots and snapshots.data.shape[0] > 1
    assert inserted.count("tiles") == 1, inserted
    assert [name.split(" — ")[0] for name in inserted].count("snapshots") == 1, inserted
    assert not any(name.endswith("]") for name in inserted), inserted
    assert list(viewer.layers["tiles"].features["state"]) in (["done"], ["fell short"])
    assert viewer.layers.selection.active is layer_of(viewer, "anonymized")
    anon.close_down()


def test_the_reader_opens_a_whole_photo_run(d70_four_tiles, four_tile_config, tmp_path):
    """File → Open of a photo run folder: the stitched tiles, named what they are, and the
    plan coloured by state; a stopped run's missing tiles are transparent, never the photo's
    pixels passed off as anonymized, and its sidecar, exported, says partial."""
    from dippas_core.cancel import CancelToken
    from dippas_core.pipeline import anonymize
    from napari_dippas._reader import get_reader

    photo, K = d70_four_tiles
    config = four_tile_config(max_iter=6)
    whole = anonymize(photo, K, config, run_dir=tmp_path / "whole")
    reader = get_reader(str(tmp_path / "whole"))
    assert reader is not None
    (image, kwargs, kind), (rects, tiles, _) = reader(str(tmp_path / "whole"))
    short = bool(whole.report["below_tau"])
    assert kind == "image" and kwargs["name"].startswith(
        "anonymized (below tau) — " if short else "anonymized — ")
    np.testing.assert_array_equal(image, whole.image)
    assert kwargs["metadata"]["dippas"]["report"]["partial"] is False
    assert len(rects) == 4 and tiles["name"].startswith("tiles — ")
    assert set(tiles["features"]["state"]) <= {"done", "fell short"}

    cancel = CancelToken()
    stopped = anonymize(photo, K, config, run_dir=tmp_path / "stopped", cancel=cancel,
                        on_tile=lambda t, p: t.index == 2 and cancel.cancel())
    assert stopped.report["tiles_not_anonymized"] == [2, 3]
    (image, kwargs, _), (_, tiles, _) = get_reader(str(tmp_path / "stopped"))(
        str(tmp_path / "stopped"))
    assert kwargs["name"].startswith("anonymized (partial: 2 of 4 tiles) — ")
    assert image.shape == (*photo.shape[:2], 4)  # RGBA: the tiles not done are transparent
    alpha = image[..., 3]
    assert alpha[:32, :32].min() == 255 and alpha[64:, :].max() == 0  # rows of tiles 2, 3
    np.testing.assert_array_equal(image[:32, :32, :3], stopped.image[:32, :32])
    assert list(tiles["features"]["state"])[2:] == ["waiting", "waiting"]
    assert kwargs["metadata"]["dippas"]["report"]["partial"] is True
    from dippas_core.report import AnonymizationReport

    report = AnonymizationReport.from_dict(kwargs["metadata"]["dippas"]["report"])
    assert report.sidecar()["partial"] is True
