"""How long each policy family's act() takes on this CPU, at batch 1 (a robot) and batch 8 (simulators).

A robot re-plans every chunk inside one control tick, so act() at batch 1 has to fit in a
few milliseconds beside the camera and the safety filter. Each family is built with the
configuration the quickstart uses for the built-in task (64x64 camera, 3-d state and
action, chunks of 8), timed over many calls after a warm-up, on one torch thread as on the
robot's busy CPU. The oft family runs on a tiny random VLM (`policies.tiny_vlm`: 2 + 2
layers, width 64, 32x32 vision input) built here: what its figure measures is the family's
own overhead (resizing, prompt, one parallel-decoding pass), not a 7B backbone's speed.
The openvla_oft family runs on a tiny random checkpoint in the released layout
(`policies.tiny_openvla`: DINOv2 and SigLIP towers 128 and 144 wide, 3 blocks each, Llama
width 64, 64x64 input with 8-pixel patches, one camera): again the family's own work (two towers, a
bidirectional pass over patches, prompt and H x A action slots), not 7B's.

    python benchmarks/policy_latency.py [--calls 300] [--smoke]

Prints the figures and saves benchmarks/results/policy_latency.json (--smoke: 3 calls, saves nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ript_robot.config import OftConfig, OpenVlaOftConfig, PolicyConfig
from ript_robot.envs.pick import PickEnv, make_contexts
from ript_robot.policies import FAMILIES, make_policy
from ript_robot.policies.tiny_openvla import save_tiny_openvla_oft
from ript_robot.policies.tiny_vlm import save_tiny_vlm

RESULTS = Path(__file__).parent / "results"
TARGET_MS = 10.0  # act() at batch 1 for the light families


def time_act(config: PolicyConfig, batch: int, calls: int) -> dict[str, float]:
    env = PickEnv(image_size=64)
    policy = make_policy(config, env.spec)
    observations = [env.reset(c) for c in make_contexts("workcell", range(batch))[:batch]]
    for _ in range(min(20, calls)):
        policy.act(observations)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        policy.act(observations)
        times.append(time.perf_counter() - start)
    ms = np.array(times) * 1e3
    return {"p50_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=300, help="timed act() calls per family and batch size")
    parser.add_argument("--smoke", action="store_true", help="3 calls per family, save nothing (CI)")
    args = parser.parse_args()
    calls = 3 if args.smoke else args.calls
    torch.set_num_threads(1)
    result: dict[str, object] = {"machine": f"{os.cpu_count()} CPU cores, 1 torch thread", "target_ms": TARGET_MS}
    scratch = Path(tempfile.mkdtemp(prefix="policy_latency_"))
    backbone = save_tiny_vlm(scratch / "vlm")
    released = save_tiny_openvla_oft(scratch / "openvla", image_size=64)
    for family in FAMILIES:
        oft = OftConfig(backbone=str(released if family == "openvla_oft" else backbone))
        config = PolicyConfig(family=family, oft=oft, openvla_oft=OpenVlaOftConfig(cameras=["top"]))
        result[family] = {f"batch_{b}": time_act(config, b, calls) for b in (1, 8)}
        print(family, json.dumps(result[family]))
    for family in FAMILIES:
        if family != "chunked":
            ratio = result[family]["batch_1"]["p50_ms"] / result["chunked"]["batch_1"]["p50_ms"]
            result[f"{family}_over_chunked_batch_1"] = ratio
    if args.smoke:
        return
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "policy_latency.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
