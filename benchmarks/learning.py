"""Learning benchmark: SFT from one demo per task, then RIPT, with and without dynamic sampling.

Runs the main job on its embedded defaults, then the same RIPT budget (iterations, groups,
K) from the same SFT checkpoint with dynamic sampling off. Prints the figures and saves
them to benchmarks/results/learning.json, with both curves in learning.png.

    python benchmarks/learning.py [--smoke] [key.sub=value ...]

--smoke: a main job of one short iteration (SMOKE below), saves nothing.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from ript_robot.config import QuickstartConfig, load_config
from ript_robot.train.logging import plot_success
from ript_robot.train.quickstart import run_quickstart

RESULTS = Path(__file__).parent / "results"
# a main job in seconds, for smoke runs: little pretraining and SFT, one RIPT iteration of two small groups
SMOKE = [
    "ript.iterations=1",
    "pretrain_demos_per_task=5",
    "pretrain.steps=50",
    "sft.steps=50",
    "ript.groups_per_iteration=2",
    "ript.rollouts_per_context=2",
]


def main(overrides: list[str]) -> dict:
    smoke = "--smoke" in overrides
    overrides = [*SMOKE, *(o for o in overrides if o != "--smoke")] if smoke else overrides
    work = Path(tempfile.mkdtemp(prefix="ript-learning-"))
    cfg = load_config(QuickstartConfig, None, [f"output_dir={work / 'ript'}", *overrides])
    start = time.monotonic()
    with_ds = run_quickstart(cfg, progress=not smoke)
    no_ds_cfg = cfg.model_copy(
        update={
            "output_dir": work / "no_dynamic_sampling",
            "init_checkpoint": Path(with_ds["final_checkpoint"]).parent / "iter_000",
            "ript": cfg.ript.model_copy(update={"dynamic_sampling": False}),
        }
    )
    without_ds = run_quickstart(no_ds_cfg, progress=not smoke)
    result = {
        "sft_success": with_ds["sft_success"],
        "ript_success": with_ds["ript_success"],
        "iterations": with_ds["iterations"],
        "iterations_to_90": with_ds["iterations_to_90"],
        "wall_clock_s": with_ds["wall_clock_s"],
        "heldout_sft_success": with_ds["heldout_sft_success"],
        "heldout_ript_success": with_ds["heldout_ript_success"],
        "no_dynamic_sampling_success": without_ds["ript_success"],
        "no_dynamic_sampling_heldout_success": without_ds["heldout_ript_success"],
        "rollout_episodes": with_ds["rollout_episodes"],
        "no_dynamic_sampling_rollout_episodes": without_ds["rollout_episodes"],
        "success_per_iteration": with_ds["success_per_iteration"],
        "no_dynamic_sampling_success_per_iteration": without_ds["success_per_iteration"],
        "eval_mode": with_ds["eval_mode"],
        "train_contexts": with_ds["train_contexts"],
        "heldout_contexts": with_ds["heldout_contexts"],
        "benchmark_wall_clock_s": time.monotonic() - start,
        "overrides": overrides,
    }
    for key in (
        "sft_success",
        "ript_success",
        "heldout_sft_success",
        "heldout_ript_success",
        "no_dynamic_sampling_success",
    ):
        print(f"{key:32s} {result[key]:.1%}")
    print(f"{'iterations (to 90%)':32s} {result['iterations']} ({result['iterations_to_90']})")
    print(f"{'wall_clock_s':32s} {result['wall_clock_s']:.0f}")
    if smoke:
        return result
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "learning.json").write_text(json.dumps(result, indent=2))
    plot_success(
        list(range(len(result["success_per_iteration"]))),
        {
            "RIPT (dynamic sampling)": result["success_per_iteration"],
            "RIPT without dynamic sampling": result["no_dynamic_sampling_success_per_iteration"],
        },
        RESULTS / "learning.png",
        title="Training-context success, one demo per task + RIPT",
    )
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
