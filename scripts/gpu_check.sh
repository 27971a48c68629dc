#!/usr/bin/env bash
# The GPU check of issue 13, in at most ~8 minutes on one CUDA GPU:
#   1. the CUDA tests (pytest -m cuda: device choice, AMP bf16/fp16 + GradScaler, channels-last,
#      torch.compile, memory given back, out of memory as a DeviceError, torch residual and tile
#      sums on the GPU, the recorder's device ingest, N tiles per step against separate runs);
#   2. benchmarks/bench_dip.py --tiles 1,4,16 at 512×512 with the paper network, AMP on and off;
#   3. `dippas anonymize` of one whole 3008×2000 Dresden photo (Nikon D70) with the paper preset,
#      when the tiled path exists (`--tile`): wall time, the run's estimate against it, PSNR, and
#      the whole-photo PCE with the camera's fingerprint before and after.
#
# Everything printed is also written under $OUT (or /tmp/dippas-gpu-check).  Python: the repo's
# .venv when its torch sees CUDA, else the machine's python3 with the repo on PYTHONPATH;
# PyWavelets, when missing there, is installed from wheels in .whl/ (fetch them where pip works:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --platform manylinux_2_17_x86_64 -d .whl PyWavelets==1.8.0
# ).  Camera data: $DIPPAS_TESTDATA, else .gpucheck/testdata, else ../shared/data/...; copy
# nat-jpg/ and ff-jpg/Nikon_D70_0_* into .gpucheck/testdata to take them to a GPU machine.
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR="${OUT:-/tmp/dippas-gpu-check}"
mkdir -p "$OUTDIR"
exec > >(tee "$OUTDIR/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1 NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-/tmp/numba-gpu-check}"

PY=""
for candidate in .venv/bin/python python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c \
        "import sys, torch; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
        PY="$candidate"; break
    fi
done
if [ -z "$PY" ]; then
    echo "gpu_check: no Python here whose torch sees a CUDA GPU; nothing to check"; exit 1
fi
if ! "$PY" -c "import pywt" 2>/dev/null; then
    if ls .whl/*.whl >/dev/null 2>&1; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/dippas-site .whl/*.whl || exit 2
        export PYTHONPATH="/tmp/dippas-site${PYTHONPATH:+:$PYTHONPATH}"
    else
        echo "gpu_check: PyWavelets is missing and there is no .whl/ (see the header)"; exit 2
    fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -z "${DIPPAS_TESTDATA:-}" ]; then
    for d in .gpucheck/testdata ../shared/data/prnu-python-testdata; do
        [ -d "$d/nat-jpg" ] && export DIPPAS_TESTDATA="$PWD/$d" && break
    done
fi
date -u +"gpu_check: %Y-%m-%d %H:%M UTC"
"$PY" - <<'EOF'
import torch
p = torch.cuda.get_device_properties(0)
print(f"gpu_check: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, "
      f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
EOF
echo "gpu_check: data ${DIPPAS_TESTDATA:-none}"

echo; echo "== 1. CUDA tests"
timeout 200 "$PY" -m pytest -m cuda tests/test_cuda.py -q -p no:cacheprovider -p no:xvfb \
    -o addopts="" 2>&1 | tail -25
echo "tests exit status: ${PIPESTATUS[0]}"

echo; echo "== 2. tiles per step, 512×512, paper network"
timeout 200 "$PY" benchmarks/bench_dip.py --tiles 1,4,16 --sizes 512 --preset paper \
    --amp auto,off --iters 5 --region-iters 5
echo "benchmark exit status: $?"

echo; echo "== 3. one whole photo, paper preset"
PHOTO="${DIPPAS_TESTDATA:-}/nat-jpg/Nikon_D70_0_19445.JPG"
if ! "$PY" -m dippas_core anonymize --help 2>/dev/null | grep -q -- "--tile "; then
    echo "skipped: this dippas anonymize has no --tile option (no tiled whole-photo path yet)"
elif [ ! -f "$PHOTO" ]; then
    echo "skipped: $PHOTO not found"
else
    W="$OUTDIR/photo"; mkdir -p "$W"
    timeout 60 "$PY" -m dippas_core fingerprint "$DIPPAS_TESTDATA"/ff-jpg/Nikon_D70_0_*.JPG \
        --out "$W/K.npz" --force
    "$PY" -m dippas_core score "$PHOTO" --fingerprint "$W/K.npz" --json | tee "$W/before.json"
    start=$(date +%s)
    timeout 240 "$PY" -m dippas_core anonymize "$PHOTO" --fingerprint "$W/K.npz" \
        --preset paper --out "$W/anon.png" --force --quiet
    status=$?
    echo "anonymize exit status $status, wall $(( $(date +%s) - start )) s (cut at 240 s)"
    if [ -f "$W/anon.png" ]; then
        "$PY" -m dippas_core score "$W/anon.png" --fingerprint "$W/K.npz" --json \
            | tee "$W/after.json"
        "$PY" - "$PHOTO" "$W/anon.png" <<'EOF'
import json, sys
from pathlib import Path
from dippas_core.io import read_image
from dippas_core.metrics import psnr
a, b = read_image(sys.argv[1]), read_image(sys.argv[2])
print(f"PSNR anonymized vs photo: {psnr(a, b):.2f} dB")
report = Path(sys.argv[2]).with_suffix(".json")
if report.is_file():
    flat = json.dumps(json.loads(report.read_text()))
    for key in ("estimate", "elapsed", "n_tiles", "tiles_per_step"):
        print(key, "in report:", key in flat)
    print(flat[:3000])
EOF
    fi
fi
echo; echo "gpu_check: done"
