#!/usr/bin/env bash
# The checks a lent GPU is for (benchmarks/device_check.py): the 7B and 3B steps in bf16 with the memory
# model's error, and the paper's 7B step timed; one table, at most 8 minutes. Never run in CI.
#   benchmarks/device_check.sh [--pixels] [--batch-size N]
set -euo pipefail
cd "$(dirname "$0")/.."
python=.venv/bin/python
[ -x "$python" ] || python=python3
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec timeout --signal=INT --kill-after=20 480 "$python" benchmarks/device_check.py "$@"
