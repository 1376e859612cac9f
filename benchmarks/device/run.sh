#!/usr/bin/env bash
# GPU evidence in one run on the lent GPU machine (at most 8 minutes on an H200): benchmarks/device/gpu.py.
# There, nothing can be downloaded: python3 (3.12) holds torch, transformers, peft, safetensors, numpy, yaml and
# tqdm; the 7B part also imports pydantic, so carry it as wheels in .whl (installed here into /tmp/site):
#   echo /.whl/ >> .git/info/exclude; python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     pydantic pydantic-core annotated-types typing-inspection      # then run(carry=[".whl"])
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
