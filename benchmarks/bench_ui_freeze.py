"""How long the viewer freezes during an anonymize run: the longest gap between two ticks of a
10 ms QTimer on the GUI thread (issue 14: "the UI froze up to 1.6 s under load").

A real napari viewer (run it under a display: ``xvfb-run -a``) with the bundled Dresden sample.
First, in the fresh process, what a user does before any run (issue 25: "36 s right after the
Anonymize dock first opened, 9–10 s opening it and on the first Draw"):

* ``open``: the Anonymize dock opened as from the Plugins menu, then the next seconds (its
  warm-up runs meanwhile);
* ``draw``: its Draw button, a rectangle drawn a second later, then the next seconds;

each the longest gap between two ticks, the click itself included.  Then, the dock opened as from
the Plugins menu, on the ``tiny`` network, one run of each kind:

* ``region``: a 64×64 region, one tile (the live snapshots layer and plot update as it runs);
* ``tiles``: a 96×96 region cut into 2×2 tiles of 64 px (the tile overlay changes state).

For each it prints how long the click on Run held the GUI (checks, the plan, the plot's first
draw, the run's layers), then, during the run, the number of ticks, the longest gap between ticks
(wall clock) and the longest stretch the GUI thread itself was busy (its CPU time between ticks:
what the plugin's handlers cost, whatever the machine's load), beside the 10 ms a tick should
take::

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


def watch(app, seconds: float, *actions: tuple[float, object]) -> tuple[float, float]:
    """Longest gap (ms) between ticks of the event loop for ``seconds``, and the GUI thread's
    longest busy stretch (its CPU time between two ticks, whatever the load); each
    ``(at_s, action)`` is called from the event loop ``at_s`` seconds in, as a click would be."""
    from qtpy.QtCore import QTimer

    ticks = [(time.perf_counter(), time.thread_time())]
    timer = QTimer()
    timer.setInterval(TICK_MS)
    timer.timeout.connect(lambda: ticks.append((time.perf_counter(), time.thread_time())))
    timer.start()
    done: list[object] = []
    for at_s, action in actions:
        QTimer.singleShot(int(at_s * 1000), lambda a=action: (a(), done.append(a)))
    end = ticks[0][0] + seconds
    # (an action that held the loop longer than ``seconds`` still has the ones after it run)
    while time.perf_counter() < end or len(done) < len(actions):
        app.processEvents()
        time.sleep(0.001)
    timer.stop()
    ticks.append((time.perf_counter(), time.thread_time()))
    wall, busy = np.diff(np.asarray(ticks), axis=0).T * 1e3
    return float(wall.max()), float(busy.max())


def before_any_run(viewer, app, seconds: float) -> dict[str, float]:
    """The dock's first opening and its first Draw, in a process that has not run anything."""
    import sys

    opened: dict = {}

    def open_dock() -> None:
        opened["dock"], opened["widget"] = viewer.window.add_plugin_dock_widget(
            "napari-dippas", "Anonymize"
        )

    torch_before = "torch" in sys.modules
    open_ms, open_busy = watch(app, seconds, (0.0, open_dock))
    widget = opened["widget"]
    layer: dict = {}

    def draw() -> None:
        widget.region.draw()
        layer["region"] = viewer.layers["region"]

    def rectangle() -> None:  # what the mouse adds: a 128×128 rectangle
        layer["region"].add_rectangles(np.array([[64.0, 32.0], [191.0, 159.0]]))

    draw_ms, draw_busy = watch(app, seconds / 2, (0.0, draw), (1.0, rectangle))
    region = widget.region.region((256, 256))
    if (region.y, region.x, region.h, region.w) != (64, 32, 128, 128):
        raise RuntimeError(f"the drawn rectangle did not reach the fields: {region}")
    viewer.layers.remove(layer["region"])
    viewer.window.remove_dock_widget(opened["dock"])
    return {"open_ms": open_ms, "open_busy": open_busy, "draw_ms": draw_ms,
            "draw_busy": draw_busy, "warm": widget.warm.is_set(),
            "torch_in_viewer": "torch" in sys.modules and not torch_before,
            "load": os.getloadavg()[0]}


def measure(viewer, app, kind: str, folder: Path, max_iter: int) -> dict[str, float]:
    """One run of ``kind``; the event loop's ticks while it runs."""
    from qtpy.QtCore import QTimer

    from napari_dippas._layers import Region
    from napari_dippas._models import AnonymizeSettings

    y, x, h, w, tile = RUNS[kind]
    # opened as a user opens it (Plugins menu): the dock gets napari's proxy of the viewer
    dock, widget = viewer.window.add_plugin_dock_widget("napari-dippas", "Anonymize")
    settings = AnonymizeSettings(mode="aware", device="cpu", seed=3, preset="tiny",
                                 record_psnr=20.0, stop_psnr=60.0, max_iter=max_iter, lr=1e-2)
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
    every: list[tuple[float, float]] = []  # till the result's layers are shown

    def tick() -> None:
        now = (time.perf_counter(), time.thread_time())
        every.append(now)
        if widget.job.status == "running":
            ticks.append(now)

    timer.timeout.connect(tick)
    load = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), time.thread_time()
    widget.start()  # the click: checks, the plan, the plot's first draw, the run's layers
    click_ms = (time.perf_counter() - t0) * 1e3
    click_busy = (time.thread_time() - c0) * 1e3
    timer.start()  # then the run itself
    while widget.job.status in ("running", "stopping"):
        app.processEvents()
        time.sleep(0.001)
    while not widget.settled:  # the result's layers, one per turn of the event loop
        app.processEvents()
        time.sleep(0.001)
    end = time.perf_counter() + 1.0
    while time.perf_counter() < end:  # and the ticks after them
        app.processEvents()
        time.sleep(0.001)
    timer.stop()
    if widget.job.status != "finished":
        raise RuntimeError(f"{kind} run ended {widget.job.status}: {widget.status.text()}")
    wall, busy = np.diff(np.asarray(ticks), axis=0).T
    end_wall, end_busy = np.diff(np.asarray(every), axis=0).T
    viewer.window.remove_dock_widget(dock)
    return {"click_ms": click_ms, "click_busy": click_busy, "ticks": len(ticks),
            "wall_ms": wall.max() * 1e3, "busy_ms": busy.max() * 1e3,
            "p99_ms": float(np.percentile(wall, 99)) * 1e3,
            "end_ms": end_wall.max() * 1e3, "end_busy_ms": end_busy.max() * 1e3, "load": load}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-iter", type=int, default=150, help="iterations per tile")
    parser.add_argument("--runs", nargs="*", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--watch", type=float, default=20.0,
                        help="seconds watched after the dock's first opening (half after Draw)")
    parser.add_argument("--no-opening", action="store_true",
                        help="skip the dock's first opening and first Draw")
    args = parser.parse_args()

    import napari
    from qtpy.QtWidgets import QApplication

    from dippas_core.sample import sample_data

    photo, fp = sample_data()
    viewer = napari.Viewer(show=True)
    viewer.add_image(photo, rgb=True, name="photo")
    viewer.add_image(fp.K, name="fingerprint", metadata={"dippas": {
        "kind": "fingerprint", "camera": fp.camera}})
    app = QApplication.instance()
    print(f"tick every {TICK_MS} ms; machine load (1 min) on {os.cpu_count()} cores shown per run")
    if not args.no_opening:
        r = before_any_run(viewer, app, args.watch)
        print(
            f"open    the dock's first opening and the next {args.watch:g} s: longest gap "
            f"{r['open_ms']:.0f} ms (GUI busy {r['open_busy']:.0f} ms) | its first Draw and a "
            f"rectangle: longest gap {r['draw_ms']:.0f} ms (busy {r['draw_busy']:.0f} ms) | "
            f"warm-up process done: {r['warm']}, torch loaded in the "
            f"viewer: {r['torch_in_viewer']} | load {r['load']:.1f}"
        )
    import torch  # the runs: one torch thread

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.runs:
            r = measure(viewer, app, kind, Path(tmp), args.max_iter)
            print(
                f"{kind:7} click on Run {r['click_ms']:5.0f} ms (busy {r['click_busy']:.0f}) | "
                f"during the run: "
                f"{r['ticks']} ticks, longest gap {r['wall_ms']:.0f} ms "
                f"({r['wall_ms'] / TICK_MS:.0f}× a tick), p99 {r['p99_ms']:.0f} ms, GUI busy at "
                f"most {r['busy_ms']:.0f} ms | with the result's layers at the end: longest gap "
                f"{r['end_ms']:.0f} ms, busy {r['end_busy_ms']:.0f} ms | load {r['load']:.1f}"
            )
    viewer.close()


if __name__ == "__main__":
    main()
