"""The test run's own display (tests/_display.py): a Ctrl-C reaches the run, not the display,
and the display never outlives the run (Ctrl-C, SIGTERM, or killed outright)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("Xvfb") is None, reason="needs Xvfb")

RUN = f"""
import sys, time
sys.path.insert(0, {str(Path(__file__).parent)!r})
import _display
_display.stop_on_signals()
display = _display.start_display()
try:  # (the signal may come as soon as the line is out)
    print(display, _display._state["xvfb"].pid, flush=True)
    time.sleep(60)
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie is no display either
        return fh.read().split(")")[-1].split()[0] != "Z"


def _gone(pid: int, within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def _start() -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-c", RUN], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)  # as a terminal's foreground group
    display, xvfb = proc.stdout.readline().split()
    assert display.startswith(":") and _alive(int(xvfb))
    return proc, int(xvfb)


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm", "sigkill"])
def test_the_display_never_outlives_the_run(how):
    proc, xvfb = _start()
    try:
        # out of the run's process group: a terminal's Ctrl-C reaches the run, not the display
        # (pytest-xvfb's died of it, under Qt tests still running)
        assert os.getpgid(xvfb) != os.getpgid(proc.pid)
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)  # the whole group, as a terminal sends it
            assert proc.stdout.readline().strip() == "interrupted"
        elif how == "sigterm":
            proc.terminate()
            assert proc.stdout.readline().strip() == "interrupted"  # the same orderly stop
        else:
            proc.kill()
        proc.wait(timeout=30)
        assert _gone(xvfb)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if _alive(xvfb):
            os.kill(xvfb, signal.SIGKILL)
