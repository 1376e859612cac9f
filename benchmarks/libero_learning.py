"""RIPT on a LIBERO task: success before and after, from scripted-expert demonstrations.

Runs `ript sim-train` (configs/libero.yaml plus the budget below): the scripted expert's
demonstrations, SFT, then RIPT iterations with the store trainer and a LIBERO actor. The
figures: the sampled rollouts' success per policy version (from the store: every rollout
the actor ran for that version), and deterministic success on held-out initial states
before and after RIPT, with wall clock. Every version is reported with its counts, and
whether RIPT's versions succeed more often than the SFT policy is tested: Fisher's exact test,
two-sided, of version 0 against versions 1 and later pooled. On this machine's 2 CPU cores the
budget is small; `--iterations` and the overrides scale it on a bigger machine.

    python benchmarks/libero_learning.py [--iterations 5] [--smoke] [key.sub=value ...]

Saves benchmarks/results/libero_learning.json (--smoke: one iteration at 32x32, 16 steps; saves nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from scipy.stats import fisher_exact

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
SMOKE = [
    "libero.suite=libero_object",
    "libero.image_size=32",
    "libero.max_steps=16",
    "libero.train_inits=2",
    "libero.heldout_inits=1",
    "libero.demos_per_task=1",
    "sft.steps=10",
    "ript.rollouts_per_context=2",
    "ript.groups_per_iteration=1",
    "ript.episode_budget=4",  # an untrained policy's groups may all fail: stop after two groups either way
]


def significance(success: dict, episodes: dict) -> dict:
    """Per-version counts and Fisher's exact test (two-sided) of version 0 against all later versions pooled."""
    counts = {int(v): (round(success[v] * episodes[v]), int(episodes[v])) for v in episodes}
    s0, n0 = counts.get(0, (0, 0))
    later = [c for v, c in counts.items() if v > 0]
    s1, n1 = sum(c[0] for c in later), sum(c[1] for c in later)
    p = fisher_exact([[s0, n0 - s0], [s1, n1 - s1]]).pvalue if n0 and n1 else None
    return {
        "rollout_counts_per_version": {v: {"successes": c[0], "episodes": c[1]} for v, c in sorted(counts.items())},
        "sft_vs_ript_rollouts": {"sft": [s0, n0], "ript_versions_pooled": [s1, n1], "fisher_exact_p": p},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=5, help="RIPT iterations")
    parser.add_argument("--smoke", action="store_true", help="a tiny run that saves nothing (CI)")
    parser.add_argument("overrides", nargs="*", help="further config overrides (key.sub=value)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="libero_learning_"))
    overrides = [
        *CPU_BUDGET,
        *(SMOKE if args.smoke else []),
        f"ript.iterations={1 if args.smoke else args.iterations}",
        f"store.uri={work / 'store'}",
        f"trainer.output_dir={work / 'run'}",
        *args.overrides,
    ]
    cfg = load_config(QuickstartConfig, LIBERO_CONFIG, overrides)
    summary = run_sim_train(cfg, progress=not args.smoke)
    per_version = summary["rollout_success_per_version"]
    result = {
        **summary,
        **significance(per_version, summary["rollout_episodes_per_version"]),
        "sft_rollout_success": per_version.get(0),
        "last_rollout_success": per_version[max(per_version)] if per_version else None,
        "overrides": overrides,
        "run_dir": str(work / "run"),
        "machine": f"{os.cpu_count()} CPU cores, no GPU (none was lent to this task)",
    }
    print(json.dumps(result, indent=2))
    if args.smoke:
        return
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "libero_learning.json").write_text(json.dumps(result, indent=2) + "\n")
    if (work / "run" / "success.png").is_file():
        (RESULTS / "libero_learning.png").write_bytes((work / "run" / "success.png").read_bytes())


if __name__ == "__main__":
    main()
