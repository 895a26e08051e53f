#!/usr/bin/env bash
# GPU check: the accelerator sections of `python -m benchmarks`, cheapest and safest first (environment, eager
# throughput fp32 / TF32 / bf16, bf16 vs fp32, one training step, torch.compile last and bounded), paper config,
# random weights, one GPU. Runs from the working tree with any python3 that has torch (no install step, no venv);
# the report is written after every section and row, and on SIGTERM (a timeout), so a cut run keeps its numbers.
#
# Usage: bash benchmarks/gpu_check.sh [--output DIR_OR_FILE] [more `python -m benchmarks` options, any order]
#   Default output: $OUT/benchmarks.json when $OUT is set, else ./benchmarks.json. Later options override earlier
#   ones, e.g. `--device cpu --quick` (plumbing only), `--no-compile`, `--deadline-s 300`.
# Environment: PYTHON (default python3), GPU_CHECK_LIMIT_S (default 510: the whole run, then SIGTERM; SIGKILL 20 s
#   later), MALLOC_* (default: the CLI's glibc settings).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1
export MALLOC_MMAP_THRESHOLD_="${MALLOC_MMAP_THRESHOLD_:-2147483647}" MALLOC_TRIM_THRESHOLD_="${MALLOC_TRIM_THRESHOLD_:-2147483647}"
PYTHON="${PYTHON:-python3}"
limit="${GPU_CHECK_LIMIT_S:-510}"
deadline=$((limit > 180 ? limit - 90 : limit / 2)) # no compile row starts after this (seconds)
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "gpu_check: no interpreter '$PYTHON' (set PYTHON=/path/to/python)" >&2
    exit 2
fi
if ! "$PYTHON" -c "import torch" >/dev/null 2>&1; then
    echo "gpu_check: $PYTHON cannot import torch (set PYTHON to an interpreter that has torch)" >&2
    exit 2
fi
case " $* " in
*" --device "* | *" --device="*) ;;
*)
    if ! "$PYTHON" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
        echo "gpu_check: torch $("$PYTHON" -c 'import torch; print(torch.__version__)') sees no CUDA device" \
            "(pass --device cpu --quick to check the plumbing)" >&2
        exit 2
    fi
    ;;
esac
rc=0
timeout -k 20 "$limit" "$PYTHON" -m benchmarks --device cuda \
    --sections environment,throughput,bf16_vs_fp32,training_step,compile --deadline-s "$deadline" \
    --output "${OUT:-$PWD}/" "$@" || rc=$?
echo "gpu_check: exit status $rc (0: every section ran; 1: a section failed, see \"errors\"; 124/143: time limit)" >&2
exit "$rc"
