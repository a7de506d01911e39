#!/usr/bin/env bash
# The GPU run, prepared for an H100 or H200: checks the analytic latency model against measured
# torch-CUDA latency, measures GPU-planned slim models against Torch-Pruning at equal MACs, times
# the Triton BSR kernel against dense fp16, and writes one JSON (benchmarks/gpu/driver.py says how).
#
#   benchmarks/gpu/run.sh            # on the GPU machine, from a checkout set up as the README says
#   benchmarks/gpu/run.sh --dry      # the same code on the CPU, tiny sizes, no CUDA (tests/ run this)
#
# Within 8 minutes: the driver gives each part a time budget and stops starting work when it is
# spent, writing the JSON after every part; the timeout below is the backstop.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-python}"
dry=0
for arg in "$@"; do [[ "$arg" == "--dry" ]] && dry=1; done
if [[ $dry == 0 ]]; then
    # the clocks the run starts with (the driver records them in the JSON too)
    nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem,power.limit,driver_version --format=csv || true
fi
if [[ $dry == 1 ]]; then
    exec "$PYTHON" benchmarks/gpu/driver.py "$@"  # no time limit: the CPU it runs on may be shared and slow
fi
exec timeout --signal=INT --kill-after=20 470 "$PYTHON" benchmarks/gpu/driver.py "$@"
