#!/usr/bin/env bash
# Set up napari-dippas in ./.venv (Python 3.11): the CPU build of torch, the package with its
# napari/Qt extra and the test tools, and (as root, on Debian/Ubuntu) the virtual display the
# viewer tests need.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

if ! command -v Xvfb >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            xvfb libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 \
            libxcb-shape0 libxcb-xinerama0 libxcb-xkb1 libxkbcommon-x11-0 libxcb-cursor0 \
            libegl1 libgl1 libdbus-1-3 libfontconfig1 >/dev/null
    else
        echo "setup: Xvfb not found; install xvfb to run the viewer tests" >&2
    fi
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# Pinned: 2.13.0 is the CPU build; an unpinned torch pulls a multi-GB CUDA build.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[all,dev]"
echo "setup: done (.venv)"
