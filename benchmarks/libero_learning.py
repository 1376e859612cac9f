"""RIPT on a LIBERO task: success before and after, from scripted-expert demonstrations.

Runs `ript sim-train` (configs/libero.yaml plus the budget below): the scripted expert's
demonstrations, SFT, then RIPT iterations with the store trainer and a LIBERO actor. The
figures: the sampled rollouts' success per policy version (from the store: every rollout
the actor ran for that version), and deterministic success on held-out initial states
before and after RIPT, with wall clock. On this machine's 2 CPU cores the budget is small;
`--iterations` and the overrides scale it on a bigger machine.

    python benchmarks/libero_learning.py [--iterations 5] [key.sub=value ...]

Saves benchmarks/results/libero_learning.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from ript_robot.cli import LIBERO_CONFIG
from ript_robot.config import QuickstartConfig, load_config
from ript_robot.train.sim_train import run_sim_train

RESULTS = Path(__file__).parent / "results"
CPU_BUDGET = [
    "libero.image_size=64",
    "libero.train_inits=30",
    "libero.heldout_inits=10",
    "libero.demos_per_task=10",
    "ript.groups_per_iteration=4",
    "ript.max_sampling_rounds=2",
    "torch_threads=1",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=5, help="RIPT iterations")
    parser.add_argument("overrides", nargs="*", help="further config overrides (key.sub=value)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="libero_learning_"))
    overrides = [
        *CPU_BUDGET,
        f"ript.iterations={args.iterations}",
        f"store.uri={work / 'store'}",
        f"trainer.output_dir={work / 'run'}",
        *args.overrides,
    ]
    cfg = load_config(QuickstartConfig, LIBERO_CONFIG, overrides)
    summary = run_sim_train(cfg, progress=True)
    per_version = summary["rollout_success_per_version"]
    result = {
        **summary,
        "sft_rollout_success": per_version.get(0),
        "last_rollout_success": per_version[max(per_version)] if per_version else None,
        "overrides": overrides,
        "run_dir": str(work / "run"),
        "machine": f"{os.cpu_count()} CPU cores, no GPU (none was lent to this task)",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "libero_learning.json").write_text(json.dumps(result, indent=2) + "\n")
    if (work / "run" / "success.png").is_file():
        (RESULTS / "libero_learning.png").write_bytes((work / "run" / "success.png").read_bytes())
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
