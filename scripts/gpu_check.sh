#!/usr/bin/env bash
# The GPU check of issue 13, in 8-10 minutes on one CUDA GPU (each step cut by a timeout: tests
# 150 s, benchmark 150 s, fingerprint 60 s, anonymize 180 s then a Ctrl-C that keeps what finished):
#   1. the CUDA tests (pytest -m cuda: device choice, AMP bf16/fp16 + GradScaler, channels-last,
#      torch.compile, memory given back, out of memory as a DeviceError, torch residual and tile
#      sums on the GPU, the recorder's device ingest, N tiles per step against separate runs);
#   2. benchmarks/bench_dip.py --tiles 1,4,16 at 512×512 with the paper network, AMP on and off;
#   3. `dippas anonymize --tiles-per-step auto` of one whole 3008×2000 Dresden photo (Nikon D70)
#      with the paper preset, when the tiled path exists (`--tile`): wall time, the run's estimate
#      against it, PSNR, the whole-photo PCE with the camera's fingerprint before and after, and
#      the N that auto chose with its reason.
#
# Everything printed is also written under $OUT (or /tmp/dippas-gpu-check).  Python: the repo's
# .venv when its torch sees CUDA, else the machine's python3 with the repo on PYTHONPATH;
# PyWavelets, when missing there, is installed from wheels in .whl/ (fetch them where pip works:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --platform manylinux_2_17_x86_64 -d .whl PyWavelets==1.8.0
# ).  Camera data: $DIPPAS_TESTDATA, else .gpucheck/testdata, else ../shared/data/...; copy
# nat-jpg/ and ff-jpg/Nikon_D70_0_* into .gpucheck/testdata to take them to a GPU machine.
#
# `scripts/gpu_check.sh --dry` runs every step on the CPU, shrunk (the tests collected and run,
# which skip without CUDA; the benchmark at 32 px with the tiny network; the photo's central
# 128×128 crop with the tiny preset, 2 iterations): it checks that the commands, their options
# and the report parsing still work, so that the first GPU session does not find out.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
[ "${1:-}" = "--dry" ] && DRY=1
OUTDIR="${OUT:-/tmp/dippas-gpu-check}"
mkdir -p "$OUTDIR"
exec > >(tee "$OUTDIR/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1 NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-/tmp/numba-gpu-check}"

if [ "$DRY" = 1 ]; then
    NEED="import torch"  # any torch: the dry run stays on the CPU
    BENCH=(--tiles 1,2 --sizes 32 --preset tiny --amp auto,off --iters 1 --region-iters 1
           --device cpu)
    ANON=(--preset tiny --crop 128 --tile 64 --max-iter 2 --device cpu --torch-threads 1)
    SCORE=(--crop 128)
    FP_TIMEOUT=300  # ten flat fields on a loaded 2-core CPU
    echo "gpu_check: DRY RUN on the CPU (shrunk steps; no figure here is a GPU figure)"
else
    NEED="import sys, torch; sys.exit(not torch.cuda.is_available())"
    BENCH=(--tiles 1,4,16 --sizes 512 --preset paper --amp auto,off --iters 5 --region-iters 5)
    ANON=(--preset paper)
    SCORE=()
    FP_TIMEOUT=60
fi
PY=""
for candidate in .venv/bin/python python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c "$NEED" 2>/dev/null; then
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
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"gpu_check: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, "
          f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
else:
    print(f"gpu_check: no CUDA device, torch {torch.__version__}")
EOF
echo "gpu_check: data ${DIPPAS_TESTDATA:-none}"

echo; echo "== 1. CUDA tests"
timeout 150 "$PY" -m pytest -m cuda tests/test_cuda.py -q -rs -p no:cacheprovider -p no:xvfb \
    -p no:warnings \
    -o addopts="" 2>&1 | tail -25
echo "tests exit status: ${PIPESTATUS[0]}"

echo; echo "== 2. tiles per step: bench_dip.py ${BENCH[*]}"
timeout 150 "$PY" benchmarks/bench_dip.py "${BENCH[@]}"
echo "benchmark exit status: $?"

echo; echo "== 3. one whole photo: ${ANON[*]} --tiles-per-step auto"
PHOTO="${DIPPAS_TESTDATA:-}/nat-jpg/Nikon_D70_0_19445.JPG"
if ! "$PY" -m dippas_core anonymize --help 2>/dev/null | grep -q -- "--tile "; then
    echo "skipped: this dippas anonymize has no --tile option (no tiled whole-photo path yet)"
elif [ ! -f "$PHOTO" ]; then
    echo "skipped: $PHOTO not found"
else
    W="$OUTDIR/photo"; mkdir -p "$W"
    rm -f "$W/K.npz"
    timeout "$FP_TIMEOUT" "$PY" -m dippas_core fingerprint \
        "$DIPPAS_TESTDATA"/ff-jpg/Nikon_D70_0_*.JPG \
        --out "$W/K.npz" --force
    echo "fingerprint exit status $?"
fi
if [ -f "${W:-/nonexistent}/K.npz" ]; then
    "$PY" -m dippas_core score "$PHOTO" --fingerprint "$W/K.npz" --json "${SCORE[@]}" \
        | tee "$W/before.json"
    rm -f "$W"/anon*.png "$W"/anon*.json "$W/report.json"
    start=$(date +%s)
    # --tiles-per-step auto: N from the free GPU memory (on the CPU: the measured choice).
    # Cut by SIGINT, as a Ctrl-C: the finished tiles are stitched into anon-partial….png and
    # the report still says how far it got against the estimate
    timeout -s INT -k 30 180 "$PY" -m dippas_core anonymize "$PHOTO" --fingerprint "$W/K.npz" \
        "${ANON[@]}" --tiles-per-step auto --out "$W/anon.png" --report "$W/report.json" \
        --force --quiet
    status=$?
    echo "anonymize exit status $status, wall $(( $(date +%s) - start )) s (cut at 180 s)"
    # a tile below tau or a partial run renames the output (anon-below-tau-….png, -partial)
    IMG=$(ls -t "$W"/anon*.png 2>/dev/null | head -1)
    if [ -n "$IMG" ]; then
        echo "output: $IMG"
        "$PY" -m dippas_core score "$IMG" --fingerprint "$W/K.npz" --json \
            "${SCORE[@]}" | tee "$W/after.json"
        "$PY" - "$W/report.json" <<'EOF'
import json, sys
from pathlib import Path
report = Path(sys.argv[1])
if not report.is_file():
    sys.exit(f"no report at {report}")
r = json.loads(report.read_text())
inv, cost = r["inversion"], r.get("cost") or {}
print(f"PSNR anonymized vs photo: {r['psnr']:.2f} dB; PCE {r['pce']['before']:.1f} -> "
      f"{r['pce']['after']:.1f}; tiles {len(r.get('tiles') or [])}")
print(f"time: {r['timing_s']}; estimate {cost.get('estimate_s')} s")
print(f"tiles per step: {inv['tiles_per_step']} ({inv['tiles_per_step_choice']})")
EOF
    fi
fi
echo; echo "gpu_check: done"
