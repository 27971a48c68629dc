"""How long the viewer freezes during an anonymize run: the longest gap between two ticks of a
10 ms QTimer on the GUI thread (issue 14: "the UI froze up to 1.6 s under load").

A real napari viewer (run it under a display: ``xvfb-run -a``) with the bundled Dresden sample,
the Anonymize dock on the ``tiny`` network, and one run of each kind:

* ``region``: a 64×64 region, one tile (the live snapshots layer and plot update as it runs);
* ``tiles``: a 96×96 region cut into 2×2 tiles of 64 px (the tile overlay changes state).

For each it prints the number of ticks, the longest gap between ticks (wall clock) and the
longest stretch the GUI thread itself was busy (its CPU time between ticks: what the plugin's
handlers cost, whatever the machine's load), beside the 10 ms a tick should take::

    NUMBA_CACHE_DIR=/tmp/numba xvfb-run -a .venv/bin/python benchmarks/bench_ui_freeze.py

Torch runs with one thread.  On a shared machine the wall-clock gap depends on the load (the OS
decides when the GUI thread runs): label such figures "under load".
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

TICK_MS = 10
RUNS = {"region": (96, 128, 64, 64, 128), "tiles": (64, 96, 96, 96, 64)}


def measure(viewer, app, kind: str, folder: Path, max_iter: int) -> dict[str, float]:
    """One run of ``kind``; the event loop's ticks while it runs."""
    from qtpy.QtCore import QTimer

    from napari_dippas._layers import Region
    from napari_dippas._models import AnonymizeSettings
    from napari_dippas._widgets import AnonymizeWidget

    y, x, h, w, tile = RUNS[kind]
    widget = AnonymizeWidget(viewer)
    settings = AnonymizeSettings(mode="aware", device="cpu", seed=3, preset="tiny",
                                 tau_psnr=20.0, stop_psnr=60.0, max_iter=max_iter, lr=1e-2)
    widget.settings.preset = settings.preset
    widget.settings.update(settings.model_dump(exclude={"preset"}))
    widget.settings.update({"tile_size": tile, "overlap": 32})
    widget.confirm = lambda question: True
    widget.region.set_region(Region(y, x, h, w))
    widget.runs_folder.set_path(folder / kind)
    while not widget.warm.is_set():  # torch loaded, as after a user's first minute
        app.processEvents()
        time.sleep(0.01)

    ticks: list[tuple[float, float]] = []
    timer = QTimer()
    timer.setInterval(TICK_MS)
    timer.timeout.connect(lambda: ticks.append((time.perf_counter(), time.thread_time())))
    load = os.getloadavg()[0]
    timer.start()
    widget.start()
    while widget.job.status in ("running", "stopping"):
        app.processEvents()
        time.sleep(0.001)
    timer.stop()
    if widget.job.status != "finished":
        raise RuntimeError(f"{kind} run ended {widget.job.status}: {widget.status.text()}")
    wall, busy = np.diff(np.asarray(ticks), axis=0).T
    widget.close_down()
    return {"ticks": len(ticks), "wall_ms": wall.max() * 1e3, "busy_ms": busy.max() * 1e3,
            "p99_ms": float(np.percentile(wall, 99)) * 1e3, "load": load}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-iter", type=int, default=150, help="iterations per tile")
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    args = parser.parse_args()

    import napari
    import torch
    from qtpy.QtWidgets import QApplication

    from dippas_core.sample import sample_data

    torch.set_num_threads(1)
    photo, fp = sample_data()
    viewer = napari.Viewer(show=True)
    viewer.add_image(photo, rgb=True, name="photo")
    viewer.add_image(fp.K, name="fingerprint", metadata={"dippas": {
        "kind": "fingerprint", "camera": fp.camera}})
    app = QApplication.instance()
    print(f"{'run':8} {'ticks':>6} {'longest gap':>12} {'p99 gap':>8} {'GUI busy':>9} "
          f"{'vs tick':>8}  load (1 min, {os.cpu_count()} cores)")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.runs:
            r = measure(viewer, app, kind, Path(tmp), args.max_iter)
            print(f"{kind:8} {r['ticks']:6d} {r['wall_ms']:9.0f} ms {r['p99_ms']:5.0f} ms "
                  f"{r['busy_ms']:6.0f} ms {r['wall_ms'] / TICK_MS:7.0f}×  {r['load']:.1f}")
    viewer.close()


if __name__ == "__main__":
    main()
