"""Open napari with the sample data, drive each DIPPAS widget and save a screenshot of each.

Run under a virtual display (CI has no screen)::

    NUMBA_CACHE_DIR=/tmp/numba_cache xvfb-run -a .venv/bin/python scripts/screenshots.py

Writes ``docs/screenshots/{fingerprint,attribution,anonymize,assemble}.png``.  The Fingerprint
step needs the Dresden flat-field shots (``DIPPAS_TESTDATA`` or ``../shared/data/...``); the other
steps use only the sample bundled in the package.  The inversion is a short CPU run (the ``tiny``
network on a 128×128 crop): enough to show the live plot and the assembly, not a real result.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TESTDATA = Path(
    os.environ.get("DIPPAS_TESTDATA", REPO.parent / "shared" / "data" / "prnu-python-testdata")
)
CAMERA = "Nikon_D70s_0"


def wait(app, condition, timeout: float = 600.0) -> None:
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
    parser.add_argument("--crop", type=int, default=128, help="photo crop for the inversion")
    parser.add_argument("--iterations", type=int, default=260)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    import napari
    import torch
    from qtpy.QtWidgets import QApplication

    from dippas_core.io import center_crop

    torch.set_num_threads(2)
    viewer = napari.Viewer(title="napari-dippas")
    app = QApplication.instance()
    viewer.window._qt_window.resize(1500, 1040)
    viewer.open_sample("napari-dippas", "dresden")
    settle(app)

    def shoot(name: str) -> None:
        settle(app, 0.8)
        path = args.out / f"{name}.png"
        viewer.screenshot(str(path), canvas_only=False)
        print("wrote", path.relative_to(REPO) if path.is_relative_to(REPO) else path)

    def dock(title: str):
        return viewer.window.add_plugin_dock_widget("napari-dippas", title)

    # 1. Fingerprint from the camera's flat-field shots, centre-cropped like the sample
    ff = TESTDATA / "ff-jpg"
    dock_w, widget = dock("Fingerprint")
    if ff.is_dir():
        widget.folder.set_path(ff)
        widget.pattern.setText(f"{CAMERA}_*")
        widget.crop.setValue(256)
        widget.output.set_path(Path(tempfile.mkdtemp()) / f"{CAMERA}.npz")
        widget.start()
        wait(app, lambda: widget.run_button.isEnabled() and widget.progress.value() > 0)
        viewer.layers.selection.active = viewer.layers["fingerprint"]
    else:
        print(f"flat-field shots not found at {ff}: the Fingerprint screenshot shows the form only")
    shoot("fingerprint")
    viewer.window.remove_dock_widget(dock_w)

    # 2. Residual & attribution: verdict, scores, block-NCC heatmap over the photo
    dock_w, widget = dock("Residual & attribution")
    widget.block.setValue(32)
    widget.start()
    wait(app, lambda: widget.result is not None and widget.run_button.isEnabled())
    viewer.layers["residual"].visible = False
    viewer.layers["fingerprint"].visible = False
    viewer.layers.selection.active = viewer.layers["block NCC"]
    shoot("attribution")
    viewer.window.remove_dock_widget(dock_w)

    # 3. Anonymize a crop (tiny network, CPU), screenshot mid-run
    photo = np.ascontiguousarray(center_crop(viewer.layers["photo"].data, args.crop))
    K = np.ascontiguousarray(center_crop(viewer.layers["fingerprint"].data, args.crop))
    viewer.layers.clear()
    viewer.add_image(photo, rgb=True, name="photo")
    viewer.add_image(K, name="fingerprint", colormap="RdBu_r", visible=False,
                     metadata={"dippas": {"kind": "fingerprint", "camera": CAMERA}})
    dock_w, widget = dock("Anonymize")
    widget.settings.preset = "tiny"
    widget.settings.update(
        {"device": "cpu", "seed": 1, "tau_psnr": 27.0, "stop_psnr": 40.0,
         "max_iter": args.iterations, "lr": 0.01}
    )
    widget.runs_folder.set_path(Path(tempfile.mkdtemp(prefix="dippas-screens-")))
    widget.start()
    wait(app, lambda: widget.job.n_snapshots >= 25 or widget.job.status != "running")
    viewer.layers.selection.active = viewer.layers["snapshots"]
    shoot("anonymize")
    wait(app, lambda: widget.job.status in ("finished", "cancelled", "failed"))
    if widget.job.status == "failed":
        raise SystemExit(f"anonymize failed: {widget.job.message}")
    viewer.window.remove_dock_widget(dock_w)

    # 4. Assemble & export: B = 32, L = 5, before/after scores, NCC-after heatmap
    for name in ("snapshots", "fingerprint"):
        viewer.layers[name].visible = False
    dock_w, widget = dock("Assemble & export")
    widget.settings.update({"block_size": 32, "n_average": 5})
    wait(app, lambda: widget.outcome is not None and widget.outcome.params["L"] == 5
         and widget.outcome.params["B"] == 32)
    viewer.layers["block NCC"].visible = False
    viewer.layers["photo"].visible = False
    viewer.layers.selection.active = viewer.layers["NCC after"]
    widget.export_path.set_path(Path(tempfile.mkdtemp()) / "anonymized.png")
    shoot("assemble")
    viewer.close()


if __name__ == "__main__":
    main()
