#!/usr/bin/env bash
# One short GPU check (at most ~5 minutes), for a lent GPU machine: the training input paths at the
# papers' size (ResNet-50 Pyramid, 384x128, batch 64) against the bare step, with GPU utilisation.
# Run from the repository root:  bash benchmarks/device.sh   (results in $OUT, else benchmarks/results)
#   bash benchmarks/device.sh --dry-run   the same script path on the CPU in seconds (the test suite)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-benchmarks/results}"
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
if ! "$PY" -c "import reidkit" 2>/dev/null; then
    "$PY" -m pip install -q -c constraints.txt -e . >/dev/null
fi
if [ "${1:-}" = "--dry-run" ]; then
    exec "$PY" benchmarks/bench_input_path.py --device cpu --preset tiny --backbone resnet18 \
        --height 96 --width 48 --batch 8 --workers 0 --steps 1 --warmup 1 \
        --out "$OUT_DIR/input_path_dry_run.md"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT_DIR/device_gpu.txt"
timeout 280 "$PY" benchmarks/bench_input_path.py --device cuda --backbone resnet50 --height 384 \
    --width 128 --batch 64 --workers 8 --steps 40 --warmup 8 --channels-last --amp-dtype bfloat16 \
    --out "$OUT_DIR/input_path_cuda.md"
