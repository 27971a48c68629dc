"""The Anonymize dock's warm-up, in a process of its own: the viewer never holds the GIL for it.

A first run loads torch and its lazy parts (``torch._dynamo`` at the first optimiser step, the
first convolution's kernels) and compiles the Numba kernels of the residual; the first rectangle
drawn compiles napari's triangulation kernels.  Done in a thread of the viewer's process, that
held the GIL in stretches of seconds: the GUI froze for 36 s right after the dock opened (under
load).  A child process does the torch part instead, at low priority: it compiles the residual's
Numba kernels into their on-disk cache, reads torch's libraries into the OS file cache, and reports
the devices torch finds; the viewer's own process loads torch lazily, in a run's (or a time
estimate's) worker thread, at the first Run.  napari's triangulation kernels (a first Draw, the
tile plan) load in the viewer's process, in a background thread: Numba's set-up is Python (the GIL
is shared in slices) and LLVM is called through ctypes, without the GIL.

No Qt and no viewer here: :class:`WarmUp` starts the child and follows it from a thread that
only waits on a pipe.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable

__all__ = ["WarmUp", "main"]


class WarmUp:
    """The warm-up child process of one dock.

    Attributes
    ----------
    done : threading.Event
        Set when the child ended (warmed up, failed, or stopped).
    devices : list of str
        The devices torch finds (``dippas_core.dip.device.describe_devices``), once reported.
    error : str
        The child's last words when it failed ("" otherwise).
    """

    def __init__(self, on_devices: Callable[[list[str]], None] | None = None) -> None:
        self.done = threading.Event()
        self.devices: list[str] = []
        self.error = ""
        self._on_devices = on_devices
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        try:
            self._proc: subprocess.Popen | None = subprocess.Popen(
                [sys.executable, "-m", "napari_dippas._warmup"], env=env,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                stdin=subprocess.DEVNULL,
            )
        except OSError as exc:
            self._proc = None
            self.error = str(exc)
            self.done.set()
            return
        threading.Thread(target=self._follow, name="dippas-warm-up", daemon=True).start()
        # napari's kernels load in this process, off the GUI thread, from the start
        threading.Thread(target=_load_shape_kernels, name="dippas-shapes", daemon=True).start()

    def _follow(self) -> None:
        """Read the child's reports (a thread waiting on a pipe holds no GIL meanwhile)."""
        proc = self._proc
        try:
            for line in proc.stdout:
                try:
                    report = json.loads(line)
                except ValueError:
                    continue
                if "devices" in report:
                    self.devices = [str(d) for d in report["devices"]]
                    if self._on_devices is not None:
                        self._on_devices(self.devices)
            proc.wait()
            if proc.returncode:
                lines = (proc.stderr.read() or "").strip().splitlines()
                self.error = lines[-1] if lines else f"exit status {proc.returncode}"
        finally:
            self.done.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the child to end; whether it did."""
        return self.done.wait(timeout)

    def stop(self) -> None:
        """End the child now (the dock closed)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()


def _load_shape_kernels() -> None:
    """napari's triangulation kernels (a first Shapes layer: Draw, the tile plan) and Numba's
    CPU target, loaded (compiled the first time, then from their on-disk cache) in the calling
    thread."""
    import contextlib

    with contextlib.suppress(ImportError):
        from napari.layers.shapes import _accelerated_triangulate_dispatch as shapes
        from napari.layers.utils import layer_utils

        # napari's lazy pandas, which a Shapes layer's feature table loads (0.3 s): loaded now
        _ = layer_utils.pd.DataFrame

        shapes.warmup_numba_cache()
        shapes.warmup_universal_numba()


def main() -> None:
    """The child: compile the residual's kernels into their on-disk cache, report the devices,
    load what a first run would load."""
    import contextlib

    import numpy as np

    from dippas_core.residual import residual

    residual(np.zeros((32, 32, 3), np.float32))  # the residual's Numba kernels
    with contextlib.suppress(OSError, AttributeError):
        os.nice(10)  # torch: the viewer and the user's runs come first
    from dippas_core.dip.device import describe_devices

    print(json.dumps({"devices": describe_devices()}), flush=True)
    from dippas_core.dip.inversion import warm_up

    warm_up()
    print(json.dumps({"done": True}), flush=True)


if __name__ == "__main__":
    main()
