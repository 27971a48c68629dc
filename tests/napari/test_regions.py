"""The viewer on real photos: regions in place, PCE verdicts, comparison, provenance, docks."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from napari_dippas._layers import (
    BLOCK_NCC_LIMIT,
    RECT_STATE_COLORS,
    Region,
    block_heatmap_layer,
    rectangles_layer,
)
from napari_dippas._widgets import (
    AnonymizeWidget,
    AssembleWidget,
    AttributionWidget,
    FingerprintWidget,
)

DONE = ("finished", "cancelled", "failed")


# --- models (no viewer) ------------------------------------------------------------------------


def test_region_crops_and_places_what_it_crops():
    photo = np.arange(20 * 30 * 3).reshape(20, 30, 3)
    region = Region(5, 7, 10, 12).check(photo.shape)
    crop = region.crop(photo)
    assert crop.shape == (10, 12, 3) and crop[0, 0, 0] == photo[5, 7, 0]
    assert region.translate == (5.0, 7.0)
    # a rectangle drawn over pixels 5..14 × 7..18 (edges on pixel borders) is that region
    assert Region.from_corners(region.corners(), photo.shape) == region
    # clipped to the photo
    assert Region.from_corners(np.array([[-9, -9], [40, 50]]), photo.shape) == Region.whole(
        photo.shape
    )
    with pytest.raises(ValueError, match="Y \\+ H ≤ 20"):
        Region(15, 0, 10, 10).check(photo.shape)


@pytest.mark.parametrize("shape", [(200, 296), (2000, 3008), (257, 130)])
def test_block_map_ends_exactly_at_the_photo(shape):
    """No overhang: the map's world extent is the photo's, each pixel shows its block's value."""
    B = 64
    H, W = shape
    rows, cols = -(-H // B), -(-W // B)
    values = np.arange(rows * cols, dtype=np.float32).reshape(rows, cols)
    data, kwargs, _ = block_heatmap_layer(values, B, image_shape=shape, offset=(10, 20))
    g = int(kwargs["scale"][0])
    assert data.shape == (H // g, W // g) and H % g == 0 and W % g == 0
    # world position of the first and last pixel covered (cells span ±g/2 around their centre)
    first = np.asarray(kwargs["translate"]) - (g - 1) / 2
    last = np.asarray(kwargs["translate"]) + np.subtract(data.shape, 1) * g + (g - 1) / 2
    np.testing.assert_allclose(first, (10, 20))
    np.testing.assert_allclose(last, (10 + H - 1, 20 + W - 1))
    # pixel (y, x) of the photo falls in the cell of block (y // B, x // B)
    for y, x in [(0, 0), (H - 1, W - 1), (B, B - 1), (H - 1, 0)]:
        assert data[y // g, x // g] == values[y // B, x // B]
    assert kwargs["contrast_limits"] == (-BLOCK_NCC_LIMIT, BLOCK_NCC_LIMIT)


def test_rectangles_layer_states():
    rects = [(0, 0, 64, 64), (0, 48, 64, 64), (48, 0, 64, 64)]
    states = ["done", "running", "fell short"]
    data, kwargs, kind = rectangles_layer(rects, states, offset=(100, 200))
    assert kind == "shapes" and len(data) == 3
    np.testing.assert_allclose(data[1].min(axis=0), (100 - 0.5, 248 - 0.5))
    np.testing.assert_allclose(data[1].max(axis=0), (164 - 0.5, 312 - 0.5))
    assert kwargs["edge_color"] == [RECT_STATE_COLORS[s] for s in states]
    with pytest.raises(ValueError, match="unknown state"):
        rectangles_layer(rects[:1], ["lost"])
    with pytest.raises(ValueError, match="1 rectangles but 2 states"):
        rectangles_layer(rects[:1], ["done", "done"])


def test_cost_asks_only_for_big_inputs():
    from dippas_core.config import AnonymizeConfig
    from dippas_core.cost import plan_cost

    config = AnonymizeConfig.preset("cpu", max_iter=3000)
    assert not plan_cost((256, 256), config, "cpu").needs_confirmation
    whole = plan_cost((2000, 3008), config, "cpu")
    assert whole.needs_confirmation and whole.ratio == pytest.approx(2000 * 3008 / 256**2)
    assert "region" in whole.question() and "GPU" in whole.question()
    on_gpu = plan_cost((2000, 3008), config, "cuda")
    assert on_gpu.needs_confirmation and "GPU" not in on_gpu.question()


def test_progress_and_remaining_time_from_measured_speed():
    from napari_dippas._models import AnonymizeJob, StepSummary

    job = AnonymizeJob()
    job.start(1000, record_psnr=31.0)
    job.apply([StepSummary(10, 0.1, 20.0, 0.0, False)])
    job.tick(5.0)  # the first batch: start-up time, not speed
    job.apply([StepSummary(110, 0.1, 25.0, 0.0, False)])
    job.tick(15.0)  # 100 iterations in 10 s
    assert job.seconds_per_iteration == pytest.approx(0.1)
    assert job.remaining_s == pytest.approx(890 * 0.1)
    assert "at most 89 s left" in job.describe()
    job.update({"status": "finished", "stop_reason": "psnr"})
    assert job.progress == 1.0  # done is 100 %, whatever max_iter was
    job.start(1000, record_psnr=31.0)
    job.apply([StepSummary(40, 0.1, 24.5, 0.0, False)])
    job.stopped_empty()
    assert job.status == "cancelled" and "nothing was kept" in job.describe()
    assert "24.5 dB" in job.describe() and "Failed" not in job.describe()


def test_trace_warning_and_pce_verdict():
    from napari_dippas._models import DECISION_LEVEL_PCE, pce_verdict, trace_warning

    assert DECISION_LEVEL_PCE == 60
    assert pce_verdict(448.0).startswith("Match") and pce_verdict(59.9).startswith("No match")
    assert trace_warning(448.0) is None
    warning = trace_warning(0.2, n_pixels=64 * 64)
    assert "no detectable trace" in warning and "proves nothing" in warning


def test_results_table_csv_round_trip(tmp_path):
    from napari_dippas._models import ResultsTable

    table = ResultsTable()
    table.add("IMG_1", "Nikon_D70_0", 0.0086, 448.0, 60.0)
    table.add("IMG_1", "Nikon_D200_0", 0.0001, 1.4, 60.0)
    table.add("IMG_1", "Nikon_D70_0", 0.0087, 450.0, 60.0)  # the same pair again: one row
    assert len(table.rows) == 2
    rows = list(csv.DictReader(table.to_csv(tmp_path / "t.csv").open()))
    assert [(r["camera"], r["verdict"]) for r in rows] == [
        ("Nikon_D200_0", "no match"), ("Nikon_D70_0", "match")
    ]
    assert float(rows[1]["PCE"]) == 450.0 and rows[1]["PCE kind"] == "aligned"
    table.relevel(500.0)
    assert [r["verdict"] for r in table.rows] == ["no match", "no match"]


# --- in a real viewer ----------------------------------------------------------------------------


def _wait_scores(qtbot, widget, timeout=120_000):
    qtbot.waitUntil(lambda: widget.run_button.isEnabled(), timeout=timeout)


def test_region_attribution_sits_over_the_region(viewer, qtbot, sample):
    """A typed region crops photo and fingerprint; the residual and map sit at its place."""
    from dippas_core.residual import residual

    photo, fp = sample
    viewer.open_sample("napari-dippas", "dresden")
    widget = AttributionWidget(viewer)
    region = Region(64, 96, 128, 160)
    widget.region.set_region(region)
    widget.block.setValue(64)
    widget.start()
    _wait_scores(qtbot, widget)
    res = viewer.layers["residual — photo [y 64, x 96, 128×160]"]
    assert tuple(res.translate) == (64, 96)
    np.testing.assert_allclose(res.data, residual(region.crop(photo).astype(np.float32)),
                               atol=1e-4)
    heat = viewer.layers["block NCC — photo × " + fp.camera + " [y 64, x 96, 128×160]"]
    # the first pixel of the map is the region's first pixel, the last its last
    assert np.allclose(heat.data_to_world((0, 0)) - (heat.scale - 1) / 2, (64, 96))
    end = np.subtract(heat.data.shape, 1)
    assert np.allclose(heat.data_to_world(end) + (heat.scale - 1) / 2, (64 + 127, 96 + 159))
    assert tuple(heat.contrast_limits) == (-BLOCK_NCC_LIMIT, BLOCK_NCC_LIMIT)
    # the scores are those of the crop (an independent call on the cropped arrays)
    from napari_dippas._models import attribute

    direct = attribute(region.crop(photo), region.crop(fp.K), block_size=64)
    assert widget.result.pce == pytest.approx(direct.pce, rel=1e-5)
    assert widget.results.rows[-1]["region"] == region.label()


def test_region_drawn_as_a_rectangle_fills_the_fields(viewer, sample):
    photo, _ = sample
    viewer.add_image(photo, rgb=True, name="photo")
    widget = AttributionWidget(viewer)
    widget.region.draw()
    layer = viewer.layers["region"]
    assert layer.mode == "add_rectangle"
    layer.add_rectangles(Region(10, 20, 30, 40).corners())
    assert widget.region.region(photo.shape) == Region(10, 20, 30, 40)
    # a region outside the photo is refused in words, before any work
    widget.region.set_region(Region(200, 200, 100, 100))
    viewer.add_image(np.zeros((256, 256), np.float32), name="K",
                     metadata={"dippas": {"kind": "fingerprint"}})
    widget.start()
    assert widget.worker is None and "does not fit" in widget.verdict.text()


def test_a_typed_region_moves_the_drawn_rectangle(viewer, sample):
    """The fields and the rectangle say the same region, whichever was changed."""
    photo, _ = sample
    viewer.add_image(photo, rgb=True, name="photo")
    widget = AttributionWidget(viewer)
    widget.region.draw()
    layer = viewer.layers["region"]
    layer.add_rectangles(Region(10, 20, 30, 40).corners())
    widget.region.fields["Y"].setValue(100)  # typed
    widget.region.fields["W"].setValue(64)
    assert len(layer.data) == 1
    drawn = Region.from_corners(layer.data[0], photo.shape)
    assert drawn == Region(100, 20, 30, 64) == widget.region.region(photo.shape)
    widget.region.set_region(Region(64, 96, 128, 128))  # four fields at once: one move
    assert Region.from_corners(layer.data[0], photo.shape) == Region(64, 96, 128, 128)
    widget.region.clear()  # the whole photo: no rectangle
    assert len(layer.data) == 0 and widget.region.region(photo.shape) == Region.whole(photo.shape)


def test_scoring_more_photos_and_cameras_adds_layers_and_rows(viewer, qtbot, sample, tmp_path):
    """No silent replacement: each photo × camera keeps its layers; the table has every pair."""
    photo, fp = sample
    viewer.add_image(photo, rgb=True, name="IMG_A")
    viewer.add_image(np.ascontiguousarray(photo[::-1, ::-1]), rgb=True, name="IMG_B")
    viewer.add_image(fp.K, name="fingerprint — cam1",
                     metadata={"dippas": {"kind": "fingerprint", "camera": "cam1"}})
    # neither a photo nor a residual nor a map is offered as a fingerprint
    viewer.add_image(np.zeros((256, 256), np.uint8), name="gray photo")
    widget = AttributionWidget(viewer)
    items = [widget.fingerprint.itemText(i) for i in range(widget.fingerprint.count())]
    # (the list of fingerprints shows the camera: "fingerprint — " is the list's own label)
    assert items == ["cam1"] and widget.fingerprint.toolTip() == "fingerprint — cam1"
    # the bundled sample is a 256×256 crop: its PCE with its camera (≈35) is below the
    # whole-photo level of 60, so this test decides at 25
    widget.threshold.setValue(25.0)
    for name in ("IMG_A", "IMG_B"):
        widget.photo.select(name)
        widget.start()
        _wait_scores(qtbot, widget)
    names = {layer.name for layer in viewer.layers}
    assert {"residual — IMG_A", "residual — IMG_B", "block NCC — IMG_A × cam1",
            "block NCC — IMG_B × cam1"} <= names
    items = [widget.fingerprint.itemText(i) for i in range(widget.fingerprint.count())]
    assert items == ["cam1"]  # the new residuals and maps are not offered
    rows = {r["photo"]: r for r in widget.results.rows}
    assert rows["IMG_A"]["verdict"] == "match"
    assert rows["IMG_B"]["verdict"] == "no match"  # flipped: not aligned with the fingerprint
    out = widget.export_csv(tmp_path / "scores.csv")
    assert [r["photo"] for r in csv.DictReader(out.open())] == ["IMG_A", "IMG_B"]
    # an error clears the previous scores instead of leaving them on screen
    viewer.add_image(fp.K[:32, :32], name="small K", metadata={"dippas": {"kind": "fingerprint"}})
    widget.fingerprint.select("small K")
    widget.start()
    assert widget.result is None and widget.scores.text() == "PCE (aligned) –    NCC –"
    assert "256×256" in widget.verdict.text() and "dippas_core" not in widget.verdict.text()


def test_pce_verdict_on_a_whole_real_photo(viewer, qtbot, testdata):
    """A whole 3008×2000 Dresden photo: PCE far above 60 for its camera, below for another."""
    from dippas_core.fingerprint import estimate_fingerprint
    from dippas_core.io import read_image

    flat = sorted((testdata / "ff-jpg").glob("Nikon_D70_0_*.JPG"))[:5]
    other = sorted((testdata / "ff-jpg").glob("Nikon_D70s_0_*.JPG"))[:5]
    true_fp = estimate_fingerprint(flat, camera="Nikon_D70_0")
    wrong_fp = estimate_fingerprint(other, camera="Nikon_D70s_0")
    photo = read_image(testdata / "nat-jpg" / "Nikon_D70_0_19445.JPG")
    assert photo.shape[:2] == true_fp.K.shape == wrong_fp.K.shape
    viewer.add_image(photo, rgb=True, name="Nikon_D70_0_19445")
    widget = AttributionWidget(viewer)
    for fp in (true_fp, wrong_fp):
        viewer.add_image(fp.K, name=f"fingerprint — {fp.camera}",
                         metadata={"dippas": {"kind": "fingerprint", "camera": fp.camera}})
        widget.fingerprint.select(f"fingerprint — {fp.camera}")
        widget.start()
        _wait_scores(qtbot, widget, 300_000)
        if fp is true_fp:
            assert widget.verdict.text().startswith("Match") and widget.result.pce > 60
            heat = viewer.layers["block NCC — Nikon_D70_0_19445 × Nikon_D70_0"]
            # the map covers the photo's pixels 0..1999 × 0..3007 exactly (no overhang)
            half = (heat.scale - 1) / 2
            assert np.allclose(heat.data_to_world((0, 0)) - half, (0, 0))
            end = np.subtract(heat.data.shape, 1)
            assert np.allclose(heat.data_to_world(end) + half, (1999, 3007))
    rows = {r["camera"]: r for r in widget.results.rows}
    assert rows["Nikon_D70_0"]["verdict"] == "match"
    assert rows["Nikon_D70s_0"]["verdict"] == "no match" and rows["Nikon_D70s_0"]["PCE"] < 60
    print(f"\nwhole photo PCE: true {rows['Nikon_D70_0']['PCE']:.1f}, "
          f"other {rows['Nikon_D70s_0']['PCE']:.1f}")


def test_docks_scroll_and_fit_a_small_window(viewer, qtbot):
    """Each dock's contents scroll: the contents are taller than a small viewport."""
    widgets = [cls(viewer) for cls in (FingerprintWidget, AttributionWidget, AnonymizeWidget,
                                       AssembleWidget)]
    for widget in widgets:
        viewer.window.add_dock_widget(widget, area="right")
    viewer.window._qt_window.resize(1280, 800)
    viewer.window._qt_window.show()
    qtbot.wait(50)
    for widget in widgets:
        assert widget.scroll.widget() is widget.body
        assert widget.body.minimumSizeHint().height() > 150
        # nothing is cut off on the right: the contents fit the dock's width
        print(type(widget).__name__, widget.body.minimumSizeHint().width(),
              widget.scroll.viewport().width())
        assert widget.body.minimumSizeHint().width() <= widget.scroll.viewport().width()
        # the dock asks for almost no height: its scroll area takes what is left
        assert widget.minimumSizeHint().height() < 150
    assert viewer.window._qt_window.height() <= 800
    # all four open at once are tabs of one dock area: each has the window's height (stacked,
    # two of them got 50 px), the last opened in front
    from qtpy.QtWidgets import QDockWidget

    def dock_of(widget):
        parent = widget.parentWidget()
        while not isinstance(parent, QDockWidget):
            parent = parent.parentWidget()
        return parent

    docks = [dock_of(widget) for widget in widgets]
    window = viewer.window._qt_window
    assert set(window.tabifiedDockWidgets(docks[-1])) == set(docks[:-1])
    assert not widgets[-1].visibleRegion().isEmpty() and docks[-1].height() > 600
    docks[1].raise_()  # the Attribution tab: its whole height, too
    qtbot.wait(50)
    assert docks[1].height() > 600 and widgets[1].scroll.viewport().height() > 500
    widgets[2].close_down()  # no run, but its warm-up process


def test_a_region_run_sits_over_the_photo_and_records_provenance(
    viewer, qtbot, sample, tiny_settings, configure, tmp_path, layer_of):
    """Anonymize a 64×64 region: layers at its place, the record in the run folder, export hash."""
    from dippas_core.io import write_image
    from napari_dippas._models import PROVENANCE_FILE, sha256_array, sha256_file

    photo, fp = sample
    source = write_image(tmp_path / "IMG_0012.png", photo)
    (layer,) = viewer.open(str(source))
    viewer.add_image(fp.K, name="fingerprint — cam",
                     metadata={"dippas": {"kind": "fingerprint", "camera": "cam",
                                          "n_images": 7}})
    anon = AnonymizeWidget(viewer)
    configure(anon, tiny_settings)
    anon.runs_folder.set_path(tmp_path / "runs")
    region = Region(96, 128, 64, 64)
    anon.region.set_region(region)
    asked = []
    anon.confirm = lambda text: asked.append(text) or True
    active = viewer.layers.selection.active
    dims_seen = []  # what the dims show while the run goes: one slider, named, never "-3"
    anon.job.events.n_snapshots.connect(
        lambda *_: dims_seen.append((viewer.dims.ndim, tuple(viewer.dims.axis_labels)))
    )
    anon.start()
    assert viewer.layers.selection.active is active  # the snapshots placeholder stays unselected
    qtbot.waitUntil(lambda: anon.job.status in DONE and anon.settled, timeout=180_000)
    assert anon.job.status == "finished", anon.job.message
    assert dims_seen and all(ndim == 3 and labels[0] == "snapshot" and not any(
        label.startswith("-") for label in labels) for ndim, labels in dims_seen), dims_seen
    # the result is selected (its controls show), not the snapshots layer
    assert viewer.layers.selection.active is layer_of(viewer, "anonymized")
    # a region that fits one tile is one tile, done, drawn over the region
    tiles = viewer.layers["tiles"]
    assert list(tiles.features["state"]) in (["done"], ["fell short"])
    np.testing.assert_allclose(np.asarray(tiles.extent.world), [(95.5, 127.5), (159.5, 191.5)])
    assert not asked  # 64×64 is no big run
    assert anon.progress.value() == anon.progress.maximum()  # 100 % when done
    assert "PCE" in anon.trace_note
    for name in ("anonymized", "block NCC", "NCC after", "difference (after − before)"):
        shown = layer_of.named(viewer, name)  # each run's layers are named by the run
        assert tuple(shown.data_to_world((0, 0)))[-2:] == pytest.approx(
            (96 + (shown.scale[-1] - 1) / 2,) * 1 + (128 + (shown.scale[-1] - 1) / 2,)
        ), name
    assert tuple(layer_of(viewer, "snapshots").translate)[-2:] == (96, 128)
    assert viewer.dims.axis_labels[-3] == "snapshot"  # the slider says what it walks through
    record = json.loads((anon.run_path / PROVENANCE_FILE).read_text())
    assert record["source"]["name"] == "IMG_0012" and record["source"]["file"] == "IMG_0012.png"
    assert record["source"]["file_sha256"] == sha256_file(source)
    assert record["source"]["pixels_sha256"] == sha256_array(photo)
    assert record["region"] == {"y": 96, "x": 128, "h": 64, "w": 64}
    assert record["fingerprint"]["camera"] == "cam" and record["fingerprint"]["n_images"] == 7
    assert record["settings"]["seed"] == tiny_settings.seed and record["versions"]
    anonymized = layer_of(viewer, "anonymized").data
    assert record["outputs"][0]["pixels_sha256"] == sha256_array(anonymized)

    asm = AssembleWidget(viewer)
    qtbot.waitUntil(lambda: asm.outcome is not None, timeout=60_000)
    # a region without a detectable trace says so beside its before/after scores
    untraceable = asm.outcome.before.pce < 60
    assert ("no detectable trace" in asm.status.text()) == untraceable
    written = asm.export(tmp_path / "out" / "anon.png")
    record = json.loads((anon.run_path / PROVENANCE_FILE).read_text())
    hashes = {o.get("file"): o.get("sha256") for o in record["outputs"]}
    assert hashes["anon.png"] == sha256_file(Path(written[0]))
    assert str(tmp_path) not in (tmp_path / "out" / "anon.json").read_text()
    assert tuple(layer_of(viewer, "anonymized").translate)[-2:] == (96, 128)
    # a region's run: Export says which of the two it writes; the region alone by default
    from dippas_core.io import read_image
    from napari_dippas._widgets._assemble import WHOLE_PHOTO

    assert not asm.export_what.isHidden()
    assert "Writes the 64×64 region (y 96, x 128) only" in asm.export_note.text()
    assert "the 64×64 region only" in asm.status.text()
    assert json.loads((tmp_path / "out" / "anon.json").read_text())["scope"] == "region only"
    np.testing.assert_array_equal(read_image(written[0]), layer_of(viewer, "anonymized").data)
    # ... or the whole photo with the region replaced, saying the rest still carries the camera
    asm.export_what.setCurrentText(WHOLE_PHOTO)
    assert "still carries the camera's trace" in asm.export_note.text()
    whole = asm.export(tmp_path / "out" / "whole.png")
    assert "still carries the camera's trace" in asm.status.text()
    image = read_image(whole[0])
    assert image.shape == photo.shape
    np.testing.assert_array_equal(image[96:160, 128:192], layer_of(viewer, "anonymized").data)
    outside = np.ones(photo.shape[:2], bool)
    outside[96:160, 128:192] = False
    np.testing.assert_array_equal(image[outside], photo[outside])
    side = json.loads((tmp_path / "out" / "whole.json").read_text())
    assert side["scope"] == "whole photo, region replaced" and side["partial"] is False

    # reopened from the folder (File → Open), the run's layers sit over the region again
    from napari_dippas._reader import read_run

    reopened = {kwargs["name"].split(" — ")[0]: (data, kwargs)
                for data, kwargs, _ in read_run(str(anon.run_path))}
    for name in ("photo", "snapshots", "anonymized"):
        assert tuple(reopened[name][1]["translate"])[-2:] == (96, 128), name
    for name in ("block NCC", "NCC after"):  # the block placement's half-block shift on top
        data, kwargs = reopened[name]
        assert np.all(np.asarray(kwargs["translate"])[-2:] >= (96, 128)), name
        assert np.asarray(kwargs["translate"])[-2:] == pytest.approx(
            layer_of.named(viewer, name).translate[-2:]), name


def test_a_large_run_asks_first_and_stop_before_tau_keeps_nothing_quietly(
    viewer, qtbot, sample, tiny_settings, configure, tmp_path, layer_of):
    from napari.utils.notifications import notification_manager

    photo, fp = sample
    viewer.add_image(photo, rgb=True, name="photo")
    anon = AnonymizeWidget(viewer)
    configure(anon, tiny_settings.model_copy(update={"mode": "blind", "record_psnr": 60.0,
                                                     "stop_psnr": 61.0, "max_iter": 200_000}))
    anon.runs_folder.set_path(tmp_path)
    asked = []
    anon.confirm = lambda text: asked.append(text) or False
    anon.start()  # a large run: a few iterations are timed first, then the question says how long
    qtbot.waitUntil(lambda: bool(asked), timeout=120_000)
    assert "region" in asked[0] and anon.job.status == "idle"
    assert "Not started" in anon.status.text()
    from dippas_core.cost import duration_text

    measured = anon._estimate[1]
    assert f"Measured on {measured.device}: about {duration_text(measured.seconds)}" in asked[0]
    assert "may take hours" not in asked[0]
    anon.confirm = lambda text: True
    asm = AssembleWidget(viewer)  # follows the run's placeholder layer
    n_before = len(notification_manager.records)
    anon.start()
    qtbot.waitUntil(lambda: anon.job.iteration >= 3, timeout=120_000)
    anon.stop()
    qtbot.waitUntil(lambda: anon.job.status in DONE and anon.settled, timeout=60_000)
    assert anon.job.status == "cancelled"
    assert "nothing was kept" in anon.status.text() and "Failed" not in anon.status.text()
    assert len(notification_manager.records) == n_before  # no red error
    assert layer_of(viewer, "snapshots") is None
    # Assemble does not wait for a run that never kept anything
    assert asm.session is None and "Waiting" not in asm.status.text(), asm.status.text()


def test_rectangles_with_states_as_a_shapes_layer(viewer, sample):
    """A plan of rectangles drawn over the photo; a state change recolours the same layer."""
    from napari.utils.colormaps.standardize_color import transform_color

    from napari_dippas._widgets._common import show_rectangles

    photo, _ = sample
    viewer.add_image(photo, rgb=True, name="photo")
    rects = [(0, 0, 128, 128), (0, 112, 128, 144), (112, 0, 144, 128), (112, 112, 144, 144)]
    states = ["done", "running", "waiting", "fell short"]
    layer = show_rectangles(viewer, rectangles_layer(rects, states))
    assert type(layer).__name__ == "Shapes" and len(layer.data) == 4
    assert viewer.layers.selection.active is viewer.layers["photo"]  # focus stays on the photo
    np.testing.assert_allclose(layer.edge_color, transform_color(
        [RECT_STATE_COLORS[s] for s in states]))
    # the rectangles cover their pixels: world extent of the plan is the photo's
    lo, hi = np.asarray(layer.extent.world)
    np.testing.assert_allclose(lo, (-0.5, -0.5))
    np.testing.assert_allclose(hi, (255.5, 255.5))
    states[1] = "done"
    again = show_rectangles(viewer, rectangles_layer(rects, states))
    assert again is layer and list(layer.features["state"]) == states
    np.testing.assert_allclose(layer.edge_color[1], transform_color(RECT_STATE_COLORS["done"])[0])


def test_fingerprint_estimate_can_be_cancelled(viewer, qtbot, small, tmp_path, monkeypatch):
    """Cancel stops before the next shot: no layer, nothing saved, the reason in words."""
    import threading

    import dippas_core.io
    from dippas_core.io import read_image, write_image

    clicked = threading.Event()

    def read_after_the_click(path):  # the first shot is read only once Cancel was clicked
        clicked.wait(30)
        return read_image(path)

    monkeypatch.setattr(dippas_core.io, "read_image", read_after_the_click)

    _, fp = small
    flat = tmp_path / "evidence"
    flat.mkdir()
    for i in range(3):
        write_image(flat / f"ff_{i}.png", np.full((*fp.K.shape, 3), 120 + i, np.uint8))
    widget = FingerprintWidget(viewer)
    widget.folder.set_path(flat)
    # the proposed file is outside the flat-field (evidence) folder
    assert flat not in widget.output.path().parents
    widget.output.set_path(tmp_path / "K.npz")
    widget.start()
    assert widget.cancel_button.isEnabled()
    widget.cancel_button.click()  # while the worker reads the first shot
    clicked.set()
    qtbot.waitUntil(lambda: widget.run_button.isEnabled(), timeout=60_000)
    assert "Cancelled" in widget.status.text() and widget.layer is None
    assert not (tmp_path / "K.npz").exists() and not widget.cancel_button.isEnabled()
    assert sorted(p.name for p in flat.iterdir()) == ["ff_0.png", "ff_1.png", "ff_2.png"]
