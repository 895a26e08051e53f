#!/usr/bin/env bash
# GPU readiness check: the accelerator sections of `python -m benchmarks` (throughput per batch in fp32 / bf16 with
# torch.compile off and on, bf16 vs fp32, one training step), paper config, random weights, one GPU, < 8 minutes.
# Usage: bash benchmarks/gpu_check.sh [OUTPUT.json] [extra `python -m benchmarks` options, e.g. --device cpu --quick]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu_check.json}"
shift || true
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1
export MALLOC_MMAP_THRESHOLD_="${MALLOC_MMAP_THRESHOLD_:-2147483647}" MALLOC_TRIM_THRESHOLD_="${MALLOC_TRIM_THRESHOLD_:-2147483647}"
PYTHON="${PYTHON:-python}"
if [[ " $* " != *" --device "* ]] && ! "$PYTHON" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "gpu_check: no CUDA device (pass --device cpu --quick to check the plumbing)" >&2
    exit 2
fi
timeout 480 "$PYTHON" -m benchmarks --device cuda --sections throughput,bf16_vs_fp32,training_step \
    --output "$out" "$@"
echo "wrote $out"
