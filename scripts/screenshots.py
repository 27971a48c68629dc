"""Drive each DIPPAS dock on a whole Dresden photo and a region of it; screenshot each step.

Run under a virtual display (CI has no screen)::

    NUMBA_CACHE_DIR=/tmp/numba_cache xvfb-run -a -s "-screen 0 1280x800x24" \
        .venv/bin/python scripts/screenshots.py

Writes ``docs/screenshots/{fingerprint,attribution,anonymize,assemble,export,tiles,partial,
below_tau,docks}.png`` from a 1280×800 window (``--size``). Needs the Dresden files
(``DIPPAS_TESTDATA`` or ``../shared/data/...``): the fingerprint of Nikon_D70_0 from its full-frame
flat fields, the whole 3008×2000 photo ``Nikon_D70_0_19445.JPG`` scored against it and against
another camera's fingerprint, then a region of that photo anonymized with the ``tiny`` network on
the CPU (a short run that stops at the preset's stop PSNR: enough to show the live plot, the layers
placed over the photo and the assembly), then a larger region in 2×2 tiles: its plan and time
estimate, and the tiles coloured by state mid-run and the partial run Stop leaves; a region's run
that never reaches tau (what the dock says, how the layer is named); the export of the whole photo
with the region replaced. The last screenshot has all four docks open at once (tabs of one dock
area, each the window's height; their contents scroll).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTDATA = Path(
    os.environ.get("DIPPAS_TESTDATA", REPO.parent / "shared" / "data" / "prnu-python-testdata")
)
CAMERA = "Nikon_D70_0"
OTHER = "Nikon_D70s_0"
PHOTO = "Nikon_D70_0_19445.JPG"
DONE = ("finished", "cancelled", "failed")


def wait(app, condition, timeout: float = 900.0) -> None:
    """Run the Qt event loop until ``condition()`` is true."""
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError("the widget did not finish in time")
        app.processEvents()
        time.sleep(0.01)


def settle(app, seconds: float = 0.5) -> None:
    """Let the viewer repaint."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    parser.add_argument("--size", type=int, nargs=2, default=(1280, 800), metavar=("W", "H"))
    parser.add_argument("--region", type=int, nargs=4, default=(900, 1500, 128, 128),
                        metavar=("Y", "X", "H", "W"), help="region of the photo to anonymize")
    parser.add_argument("--tiled-region", type=int, nargs=4, default=(700, 1100, 224, 224),
                        metavar=("Y", "X", "H", "W"),
                        help="region anonymized in tiles (tiny preset: 2×2 tiles of 128 px)")
    parser.add_argument("--iterations", type=int, default=None,
                        help="max iterations (default: the tiny preset's)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    import napari
    import numpy as np
    import torch
    from qtpy.QtWidgets import QApplication

    from dippas_core.fingerprint import estimate_fingerprint
    from napari_dippas._layers import Region

    torch.set_num_threads(2)
    viewer = napari.Viewer(title="napari-dippas")
    app = QApplication.instance()
    window = viewer.window._qt_window
    window.resize(*args.size)
    viewer.open(str(TESTDATA / "nat-jpg" / PHOTO))
    settle(app)
    viewer.reset_view()  # fit the photo to the resized window
    work = Path(tempfile.mkdtemp(prefix="dippas-screens-"))

    def shoot(name: str, prepare=None) -> None:
        settle(app, 0.8)
        if prepare is not None:  # last touches, right before the picture (a run may move on)
            prepare()
            settle(app, 0.2)
        path = args.out / f"{name}.png"
        viewer.screenshot(str(path), canvas_only=False)
        size = f"{window.width()}×{window.height()}"
        print("wrote", path.relative_to(REPO) if path.is_relative_to(REPO) else path, size)

    def dock(title: str):
        return viewer.window.add_plugin_dock_widget("napari-dippas", title)

    def named(what: str):
        """The newest layer called ``what`` (each run's layers are named by the run)."""
        return next(layer for layer in reversed(viewer.layers)
                    if layer.name == what or layer.name.startswith(f"{what} — "))

    # 1. Fingerprint from the camera's full-frame flat-field shots
    dock_w, widget = dock("Fingerprint")
    widget.folder.set_path(TESTDATA / "ff-jpg")
    widget.pattern.setText(f"{CAMERA}_*")
    widget.output.set_path(work / f"{CAMERA}.npz")
    widget.start()
    wait(app, lambda: widget.layer is not None and widget.run_button.isEnabled())
    fingerprint = widget.layer
    fingerprint.visible = False
    viewer.layers.selection.active = fingerprint
    shoot("fingerprint")
    viewer.window.remove_dock_widget(dock_w)

    # 2. Residual & attribution of the whole photo: its camera, then another camera
    other = estimate_fingerprint(sorted((TESTDATA / "ff-jpg").glob(f"{OTHER}_*"))[:5],
                                 camera=OTHER)
    viewer.add_image(other.K, name=f"fingerprint — {OTHER}", visible=False, colormap="RdBu_r",
                     metadata={"dippas": {"kind": "fingerprint", "camera": OTHER,
                                          "n_images": other.n_images}})
    dock_w, widget = dock("Residual & attribution")
    widget.photo.select(PHOTO.rsplit(".", 1)[0])
    for name in (f"fingerprint — {OTHER}", fingerprint.name):
        widget.fingerprint.select(name)
        widget.start()
        wait(app, lambda: widget.result is not None and widget.run_button.isEnabled())
    for layer in viewer.layers:
        if layer.name.startswith("residual"):
            layer.visible = False
        if layer.name.startswith("block NCC") and OTHER in layer.name:
            layer.visible = False
    viewer.layers.selection.active = viewer.layers[-1]
    viewer.reset_view()
    shoot("attribution")
    viewer.window.remove_dock_widget(dock_w)
    for layer in list(viewer.layers):
        if layer.name.startswith(("residual", "block NCC")) or OTHER in layer.name:
            viewer.layers.remove(layer)

    # 3. Anonymize a region (tiny network, CPU), screenshot mid-run, zoomed on the region
    region = Region(*args.region)
    dock_w, widget = dock("Anonymize")
    widget.settings.preset = "tiny"
    widget.settings.update({"device": "cpu", "seed": 1})
    if args.iterations:
        widget.settings.max_iter = args.iterations
    widget.runs_folder.set_path(work / "runs")
    widget.region.set_region(region)
    viewer.add_shapes([region.corners()], shape_type="rectangle", name="region",
                      edge_color="#00e5ff", face_color="transparent", edge_width=3)

    def zoom_on(place: Region, zoom: float = 1.6):
        def centre() -> None:
            """Centre the view on the region, with some of the photo around it (napari resets
            the view when the snapshots layer adds a dimension)."""
            camera = getattr(viewer, "scene", viewer).camera  # napari 0.9 moved it to the scene
            camera.center = (place.y + place.h / 2, place.x + place.w / 2)
            camera.zoom = zoom

        return centre

    zoom_on_region = zoom_on(region)

    widget.start()
    # the tiny network reaches tau (31 dB) on a 128×128 region after about 300 iterations
    wait(app, lambda: widget.job.n_snapshots >= 5 or widget.job.status != "running")
    shoot("anonymize", zoom_on_region)
    wait(app, lambda: widget.job.status in DONE and widget.settled)
    if widget.job.status == "failed":
        raise SystemExit(f"anonymize failed: {widget.job.message}")
    viewer.window.remove_dock_widget(dock_w)

    # 4. Assemble & export the region: before/after scores, the maps over the photo
    named("snapshots").visible = False
    dock_w, widget = dock("Assemble & export")
    wait(app, lambda: widget.outcome is not None)
    widget.settings.update({"B": 64, "L": 2})
    wait(app, lambda: widget.outcome is not None and widget.outcome.params["L"] == 2
         and widget.outcome.params["B"] == 64)
    named("block NCC").visible = False
    viewer.layers.selection.active = named("NCC after")
    widget.export_path.set_path(work / "anonymized.png")
    shoot("assemble", zoom_on_region)
    # the export: the whole photo with the region replaced, and what that means, said
    from napari_dippas._widgets._assemble import WHOLE_PHOTO

    widget.export_what.setCurrentText(WHOLE_PHOTO)
    written = widget.export(work / "whole-photo.png")
    print("exported:", [Path(p).name for p in written], "|", widget.status.text())
    named("NCC after").visible = False
    viewer.layers.selection.active = named("anonymized")
    widget.scroll.verticalScrollBar().setValue(widget.scroll.verticalScrollBar().maximum())
    shoot("export", zoom_on(region, 0.8))
    viewer.window.remove_dock_widget(dock_w)

    # 5. A larger region in tiles: the plan and the time estimate, then the tiles by state
    tiled = Region(*args.tiled_region)
    dock_w, widget = dock("Anonymize")
    widget.settings.preset = "tiny"
    widget.settings.update({"device": "cpu", "seed": 1})
    widget.runs_folder.set_path(work / "runs")
    widget.region.set_region(tiled)
    viewer.layers["region"].visible = False  # the plan's rectangles show where it is
    widget.plan_button.click()
    wait(app, lambda: widget.plan_button.isEnabled() and "timing" not in widget.estimate.text())
    print("estimate:", widget.estimate.text().replace("\n", " "))
    widget.start()
    wait(app, lambda: widget.state.tiles.n_finished >= 1 or widget.job.status != "running")
    shoot("tiles", zoom_on(tiled, 1.2))
    widget.stop()
    wait(app, lambda: widget.job.status in DONE and widget.settled)
    print("partial:", widget.status.text().replace("\n", " | "))
    shoot("partial", zoom_on(tiled, 1.2))  # Stop kept the finished tiles; nothing shown as done
    viewer.window.remove_dock_widget(dock_w)

    # 5b. A region's run that never reaches tau: said as such, named as such
    short = Region(region.y + 160, region.x, 96, 96)
    dock_w, widget = dock("Anonymize")
    widget.settings.preset = "tiny"
    widget.settings.update({"device": "cpu", "seed": 1, "record_psnr": 45.0,
                            "stop_psnr": 46.0, "max_iter": 150})
    widget.runs_folder.set_path(work / "runs")
    widget.region.set_region(short)
    widget.start()
    wait(app, lambda: widget.job.status in DONE and widget.settled)
    print("below tau:", widget.status.text().replace("\n", " | "))
    for what in ("NCC after", "block NCC"):  # the image itself, as the status describes it
        named(what).visible = False
    viewer.layers.selection.active = named("anonymized (below tau)")
    shoot("below_tau", zoom_on(short, 1.6))
    viewer.window.remove_dock_widget(dock_w)

    # 6. All four docks at once: each scrolls inside the window
    docks = [dock(title)[0] for title in ("Fingerprint", "Residual & attribution", "Anonymize",
                                          "Assemble & export")]
    # tabs of one dock area: each has the window's height, the last opened in front
    print("dock heights:", [d.height() for d in docks],
          "tabified:", len(window.tabifiedDockWidgets(docks[-1])))
    viewer.reset_view()
    shoot("docks")
    print("anonymized region mean |change|:",
          float(np.abs(named("difference (after − before)").data).mean()))
    viewer.close()


if __name__ == "__main__":
    main()
