#!/usr/bin/env bash
# GPU evidence in one run on the lent GPU machine (at most 8 minutes on an H200): benchmarks/device/gpu.py.
# There, nothing can be downloaded: python3 holds torch, transformers and peft; the rest of what ript-robot
# imports travels as wheels in .whl (see /work/.library/device/README.md), installed here into /tmp/site.
# LIBERO's part needs LIBERO, robosuite, MuJoCo and their assets: without them it records why it was skipped.
#   benchmarks/device/run.sh            # writes benchmarks/results/gpu.json
#   benchmarks/device/run.sh --smoke    # tiny sizes on any machine, a few seconds, writes nothing (CI runs this)
set -euo pipefail
cd "$(dirname "$0")/../.."
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
exec python3 benchmarks/device/gpu.py "$@"
