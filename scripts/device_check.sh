#!/usr/bin/env bash
# The GPU checks of issue 16 in one short run, for a lent GPU machine (the `device` tool runs it in a copy
# of this tree; what it writes under $OUT comes back). About 8 minutes on an H100-class machine:
#   1. the CUDA-only tests (compact buffer batches on cuda, frames in GPU memory, a GPU run resumed on CPU);
#   2. bench_throughput on cuda: plain SB3 (b), the default (c), replay frames in GPU memory, 8 games on
#      ALE's vector env, each a ratio against (b) in the same run; the targets: c/b >= 1.5 with one game,
#      >= 4 x 220 agent steps/s (RL Zoo's own Breakout DQN run) with 8 games.
# Usage: bash scripts/device_check.sh            (OUT defaults to ./device_out)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-device_out}
mkdir -p "$OUT"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; lscpu | grep "Model name"; nproc; } \
  > "$OUT/machine.txt" 2>&1
# The machine has no network: torch with CUDA must be there already; the other packages (SB3, sb3-contrib,
# RL Zoo, ale-py, optuna, pytest-xdist, zstandard) travel as wheels in `carry` (see the device tool's
# README) and are put on PYTHONPATH before this script runs.
export PYTHONPATH=".:${PYTHONPATH:-}"
python() { python3 "$@"; }
python -c "import torch; print(torch.__version__, torch.cuda.is_available(), torch.cuda.get_device_name(0))" \
  >> "$OUT/machine.txt" 2>&1
timeout 240 python -m pytest -q -n 0 -p no:cacheprovider -rs tests/test_device_buffer.py tests/test_buffers.py \
  tests/test_train.py -k "cuda or gpu or device" > "$OUT/cuda_tests.txt" 2>&1
echo "cuda tests: exit $?" >> "$OUT/machine.txt"
timeout 420 python scripts/bench_throughput.py --device cuda --steps 3000 --warmup 500 --threads 4 --env-steps 0 \
  --only b c c-gpu-frames c-n8 c-ale-n8 > "$OUT/bench_throughput_cuda.txt" 2>&1
echo "bench: exit $?" >> "$OUT/machine.txt"
cat "$OUT/machine.txt"; tail -n 15 "$OUT/bench_throughput_cuda.txt"
