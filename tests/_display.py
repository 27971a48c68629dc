"""The viewer tests' virtual display, and a test run that one Ctrl-C stops, leaving nothing behind.

pytest-xvfb starts Xvfb in pytest's own process group: a Ctrl-C in the terminal (SIGINT to the
whole foreground group) kills the display first, and the Qt tests then hang on a display that is
gone instead of stopping; a SIGTERM ends pytest without its ``atexit``, and Xvfb keeps running.
So the suite starts its own Xvfb in a session of its own (a Ctrl-C reaches pytest, not the
display), stops it at exit (and, on Linux, the kernel stops it if pytest is killed outright), and
turns SIGTERM and SIGHUP into the same orderly stop as a Ctrl-C.
A Ctrl-C that lands inside a Qt callback (where pytest-qt records it as the test's error and goes
on) ends the run after the current test.
"""

from __future__ import annotations

import atexit
import os
import select
import shutil
import signal
import subprocess
import sys
from typing import Any

#: the screen of the viewer tests (pytest-xvfb's default size)
SCREEN = "800x600x16"

_state: dict[str, Any] = {"xvfb": None, "interrupted": False}


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM when pytest dies, even of a SIGKILL."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def start_display(screen: str = SCREEN, timeout_s: float = 30.0) -> str | None:
    """Start Xvfb in a session of its own; set and return ``DISPLAY`` (None without Xvfb)."""
    exe = shutil.which("Xvfb")
    if exe is None:
        return None
    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen(
            [exe, "-displayfd", str(write_fd), "-screen", "0", screen, "-nolisten", "tcp",
             "-br"],
            pass_fds=[write_fd], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C goes to pytest's group, not to the display
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
    finally:
        os.close(write_fd)
    _state["xvfb"] = proc
    atexit.register(stop_display)
    text = b""
    try:
        while not text.endswith(b"\n"):
            ready, _, _ = select.select([read_fd], [], [], timeout_s)
            chunk = os.read(read_fd, 16) if ready else b""
            if not chunk:
                stop_display()
                raise RuntimeError(f"Xvfb did not start within {timeout_s:g} s")
            text += chunk
    finally:
        os.close(read_fd)
    display = f":{int(text)}"
    os.environ["DISPLAY"] = display
    return display


def stop_display() -> None:
    """Stop the Xvfb :func:`start_display` started (idempotent)."""
    proc = _state["xvfb"]
    _state["xvfb"] = None
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _interrupt(signum: int, frame: Any) -> None:
    _state["interrupted"] = True
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def stop_on_signals() -> None:
    """SIGINT, SIGTERM and SIGHUP: a KeyboardInterrupt now, and the run ends after this test."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)


def interrupted() -> bool:
    """Whether a stop was asked for (even if a Qt callback swallowed its KeyboardInterrupt)."""
    return bool(_state["interrupted"])
