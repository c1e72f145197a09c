#!/usr/bin/env bash
# The GPU session in one call, on a lent GPU machine (H200, 16 cores, torch/torchvision/timm/opencv preinstalled, no
# network), from the repository root:
#
#     bash benchmarks/gpu_session.sh            # results under $OUT (default ./gpu_session_out)
#
# 1. installs the wheels the session carries in wheels/ (pycocotools, faster-coco-eval, ...: pip install --no-index),
#    then visiontune itself (pip install -e . --no-deps);
# 2. runs benchmarks/gpu_throughput.py for the three tasks at the GPU shapes (trainer vs bare PyTorch loop);
# 3. runs the CUDA tests: pytest -m cuda.
# Every step has a time limit (about 8 minutes in all) and a failed step does not stop the next one; the exit status
# is the number of failed steps. Files: session.log (everything), environment.txt, throughput.txt, throughput.jsonl,
# cuda_tests.txt, cuda_junit.xml, steps.txt (one "step status seconds" line each).
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_session_out}"
mkdir -p "$OUT"
PYTHON="${PYTHON:-python}"
failures=0
: > "$OUT/steps.txt"

step() {  # step NAME TIMEOUT_S COMMAND...: run with a limit, log output and status
    local name="$1" limit="$2"
    shift 2
    local started=$SECONDS
    echo "=== [$(date +%T)] $name (limit ${limit}s): $*" | tee -a "$OUT/session.log"
    if [ "$(type -t "$1")" = function ]; then  # a function of this script: run it in a child bash under timeout
        set -- bash -c "$(declare -f "$1"); PYTHON='$PYTHON'; $1"
    fi
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$OUT/session.log" "$OUT/$name.txt"
    local status=${PIPESTATUS[0]}
    echo "$name $status $((SECONDS - started))" >> "$OUT/steps.txt"
    echo "=== $name: status $status after $((SECONDS - started)) s" | tee -a "$OUT/session.log"
    [ "$status" -eq 0 ] || failures=$((failures + 1))
}

environment() {
    nvidia-smi || true
    "$PYTHON" - <<'PY'
import platform, sys
import torch
print("python", sys.version.split()[0], platform.platform())
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())
print("device", torch.cuda.get_device_name() if torch.cuda.is_available() else "NO CUDA DEVICE",
      "bf16", torch.cuda.is_available() and torch.cuda.is_bf16_supported())
for name in ("torchvision", "timm", "cv2", "pycocotools", "faster_coco_eval", "onnx", "onnxruntime"):
    try:
        module = __import__(name)
        print(name, getattr(module, "__version__", "installed"))
    except ImportError:
        print(name, "MISSING")
PY
    nproc
}

install() {
    if compgen -G "wheels/*.whl" > /dev/null; then
        "$PYTHON" -m pip install --no-index --find-links wheels/ wheels/*.whl || return 1
    else
        echo "no wheels/ folder: installing nothing extra (pycocotools is needed by instance segmentation)"
    fi
    "$PYTHON" -m pip install --no-index --no-deps --no-build-isolation -e . || "$PYTHON" -m pip install --no-deps -e .
}

if [ -z "${SKIP_INSTALL:-}" ]; then step install 120 install; fi  # SKIP_INSTALL=1: already installed
step environment 60 environment
for task in classification face_detection instance_segmentation; do
    step "throughput_$task" 110 "$PYTHON" benchmarks/gpu_throughput.py --task "$task" --device cuda \
        --json "$OUT/throughput.jsonl"
done
grep -h "img/s" "$OUT"/throughput_*.txt > "$OUT/throughput.txt" 2>/dev/null || true
step cuda_tests 200 "$PYTHON" -m pytest -m cuda -q -p no:cacheprovider -rA --junitxml="$OUT/cuda_junit.xml"
echo "=== done: $failures failed step(s)" | tee -a "$OUT/session.log"
cat "$OUT/steps.txt" "$OUT/throughput.txt"
exit "$failures"
