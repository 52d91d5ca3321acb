#!/usr/bin/env bash
# Issue 16, item 4: every GPU figure in one command, on a machine with an NVIDIA GPU.
#
#   here:  bash benchmarks/gpu_prepare.sh          (fetches .whl/ and .gl/, which the GPU machine lacks)
#   there: bash benchmarks/gpu_check.sh            (with the device tool: carry [".whl", ".gl"],
#                                                   timeout_s 590; results in $OUT, else ./gpu-results)
#
# Steps (each under its own time limit; a failing step is recorded and the next one runs):
#   1. nvidia-smi, versions
#   2. pv3d doctor --json          versions, devices, kernels compiled + self-checked on the GPU, the
#                                  CUDA-GL interop display vs the host upload (ms/frame), per-stage timings
#   3. the GPU tests               tests/test_cuda_kernels.py (GPU parity, NVRTC), test_kernel_check.py,
#                                  test_cpu_kernels.py, test_viewer_display.py, test_doctor.py
#   4. bench_kernels.py            the kernels vs the PyTorch renderer, per stage, batch 1 and 4
#   5. bench_generate.py --device cuda   512² fps, batch 1: full frame and cached planes (kernels, then PyTorch)
#   6. bench_fit.py --device cuda  the time of one portrait fit (embedded model; released config at 512²)
# Then summary.txt gathers the lines the issue asks for.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-results}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
T0=$(date +%s)

# what the image lacks: wheels (to /tmp/site) and the GL loader libraries (unpacked into /)
if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
if ls .gl/*.deb >/dev/null 2>&1 && command -v nvidia-smi >/dev/null; then   # only on the (disposable) GPU machine
    for f in .gl/*.deb; do dpkg -x "$f" / ; done
    ldconfig || true
    [ -f /usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json ] && \
        export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
fi
# the source tree as installed names: pv3d_core as it is, viewer/ as pv3d_viewer (no pip install: the
# image's torch is not the pinned one and nothing can be fetched there)
mkdir -p /tmp/pv3d-names && ln -sfn "$PWD/viewer" /tmp/pv3d-names/pv3d_viewer
export PYTHONPATH="$PWD:/tmp/pv3d-names${PYTHONPATH:+:$PYTHONPATH}"

step() {   # step NAME LIMIT_S COMMAND...
    local name=$1 limit=$2; shift 2
    local t=$(date +%s)
    echo "=== $name (limit ${limit}s): $*" | tee -a "$OUT/steps.txt"
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    echo "=== $name: exit $rc after $(( $(date +%s) - t ))s" | tee -a "$OUT/steps.txt"
    tail -n 40 "$OUT/$name.log"
}

step env 60 bash -c "nvidia-smi; $PY -c 'import sys, torch; print(sys.version); print(\"torch\", torch.__version__, torch.version.cuda, torch.cuda.get_device_name())'"
step doctor 150 "$PY" -m pv3d_core.cli doctor --json
"$PY" - "$OUT/doctor.log" > "$OUT/doctor.txt" 2>&1 <<'EOF'
import json, sys
from pv3d_core.cli.doctor import format_report
text = open(sys.argv[1]).read()
print(format_report(json.loads(text[text.index("{"):])))
EOF
cat "$OUT/doctor.txt"
step tests 200 "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_cuda_kernels.py tests/test_kernel_check.py \
    tests/test_cpu_kernels.py tests/test_viewer_display.py tests/test_doctor.py
step bench_kernels 120 "$PY" benchmarks/bench_kernels.py --batches 1,4 --runs 20
step bench_generate 120 bash -c "$PY benchmarks/bench_generate.py --device cuda --runs 20 --warmup 3 && \
    $PY benchmarks/bench_generate.py --device cuda --runs 20 --warmup 3 --renderer pytorch --configs pv3d-vox512"
step bench_fit 180 "$PY" benchmarks/bench_fit.py --device cuda

{
    echo "GPU figures (issue 16, item 4), $(date -u +%F) on $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null)"
    echo "- volume rendering / kernels:"; grep -E "kernels \(|REJECTED|UNAVAILABLE" "$OUT/doctor.txt" | head -6
    echo "- display (interop vs host, ms per frame):"; grep -E "CUDA-GL interop|host upload" "$OUT/doctor.txt"
    echo "- 512² fps, batch 1 (bench_generate; first block kernels, last PyTorch):"
    grep -E "^pv3d-vox512|frame, (no cache|cached)" "$OUT/bench_generate.log"
    echo "- kernels vs PyTorch (bench_kernels, ms per frame):"; grep -E "^batch|total|frame" "$OUT/bench_kernels.log"
    echo "- portrait fit:"; grep -E "fit in" "$OUT/bench_fit.log"
    echo "- tests:"; tail -n 3 "$OUT/tests.log"
    echo "- steps:"; grep -E "exit" "$OUT/steps.txt"
    echo "total $(( $(date +%s) - T0 ))s"
} > "$OUT/summary.txt" 2>&1
cat "$OUT/summary.txt"
