"""Learning per robot-hour: the labeled episodes a RIPT recipe spends before the policy reaches 90%.

On an arm every rollout costs its steps at the control rate, a scene reset and an operator's
label; iterations cost nothing by themselves. This benchmark starts where the main job does
(pretraining in three scenes, SFT on one demonstration per task in `workcell`: the same start
for every recipe of a seed, built once and cached) and runs RIPT with a recipe (config
overrides), counting every sampled rollout it commits, those of dropped groups included. After
the first update that brings `--eval-every` (100) new episodes it evaluates deterministically on
the training contexts (not counted: it is how the stop is decided here) and stops when success
first reaches 90%, or at `--max-episodes`; so a recipe is charged at most one evaluation interval
beyond the point it crossed 90%. Then it measures the 100 held-out contexts.

Figures per seed and their median over seeds: episodes_to_90, robot_hours_to_90 (steps at the
control rate plus 20 s of reset and label per counted episode), sft_success, success_at_stop,
heldout_success_at_stop, iterations_to_90 (updates), intervened_step_share (of the counted episodes'
steps, the share a scripted operator commanded: every rescued episode still counts in full). A run with
`--name` is saved under `recipes` in benchmarks/results/robot_budget.json. Two names are configs/robot.yaml's
figures and must be run from it: `robot`, the recipe as a robot runs it, a person labeling and taking over
rollouts about to fail (here the scripted operator, `task.scripted_operator=true`), gives the top-level keys;
`robot_ript_alone`, the same with nobody taking over, gives the *_ript_alone keys. `--table` prints the saved
recipes.

    python benchmarks/robot_budget.py --name robot --config configs/robot.yaml --seeds 0 1 2 3 4 \
        --max-episodes 8000 task.scripted_operator=true                      # the headline: configs/robot.yaml
    python benchmarks/robot_budget.py --name robot_ript_alone --config configs/robot.yaml \
        --seeds 0 1 2 3 4 --max-episodes 8000                                 # the same, nobody takes over
    python benchmarks/robot_budget.py --name k4 ript.rollouts_per_context=4  # an ablation (main job otherwise)
    python benchmarks/robot_budget.py --table                               # every saved recipe, markdown
    python benchmarks/robot_budget.py --smoke                               # seconds; writes nothing
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ript_robot.config import QuickstartConfig, load_config
from ript_robot.envs.pick import PickEnv, context_sets
from ript_robot.policies import load_policy
from ript_robot.rl.sampling import context_pool
from ript_robot.train.logging import MetricsLogger
from ript_robot.train.quickstart import pretrain_and_sft
from ript_robot.train.ript import RIPTLearner
from ript_robot.types import Context, Episode
from sim_bridge.rollouts import builtin_rollouts, scripted_operator

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RESET_AND_LABEL_S = 20.0
TARGET = 0.9
RIPT_TIME_POLICY = ("binary_dims",)  # policy settings only RIPT's scoring reads: a recipe may change them, same SFT
ROBOT_CONFIG = "robot.yaml"
HEADLINE_SEEDS, HEADLINE_CAP = [0, 1, 2, 3, 4], 8000  # how configs/robot.yaml's figures are measured
# configs/robot.yaml's figures: name -> (whether a person takes over, the suffix of its top-level keys)
ROBOT_RECIPES = {"robot": (True, ""), "robot_ript_alone": (False, "_ript_alone")}
# every recipe's figures (medians over seeds); configs/robot.yaml's are also the file's top-level keys
FIGURES = ("episodes_to_90", "robot_hours_to_90", "iterations_to_90", "sft_success", "success_at_stop")
FIGURES += ("heldout_success_at_stop", "intervened_step_share")
CACHE = Path(tempfile.gettempdir()) / "ript_robot_budget_sft"
SMOKE = ["pretrain.steps=20", "sft.steps=20", "pretrain_demos_per_task=2", "task.train_contexts_per_task=2"]
SMOKE += ["task.heldout_contexts_per_task=2", "ript.groups_per_iteration=2", "ript.rollouts_per_context=2"]


def sft_policy(cfg: QuickstartConfig, smoke: bool) -> Path:
    """The SFT checkpoint every recipe of this seed starts from (built once, then cached)."""
    recipe = cfg.model_dump(
        include={"seed", "pretrain_demos_per_task", "target_demos_per_task", "task", "policy"},
        exclude={  # RIPT-time settings: SFT never reads them
            "policy": set(RIPT_TIME_POLICY),
            "task": {"scripted_operator", "train_contexts_per_task", "heldout_contexts_per_task"},
        },
    )
    recipe.update(cfg.model_dump(include={"pretrain", "sft"}))
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:12]
    path = CACHE / f"{'smoke' if smoke else 'full'}-seed{cfg.seed}-{key}"  # a new SFT when what builds it changes
    if not (path / "model.safetensors").exists():
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        policy = pretrain_and_sft(cfg, MetricsLogger(Path(tempfile.mkdtemp())), progress=False)
        policy.save(path)
    return path


def run_seed(
    seed: int, config: Path | None, overrides: list[str], max_episodes: int, smoke: bool, eval_every: int
) -> dict[str, Any]:
    """One seed of one recipe (`config`, then `overrides`): RIPT until deterministic training success first
    reaches TARGET."""
    torch.set_num_threads(1)
    cfg = load_config(QuickstartConfig, config, [f"seed={seed}", *(SMOKE if smoke else []), *overrides])
    start = sft_policy(cfg, smoke)
    policy = load_policy(start)
    policy.config = policy.config.model_copy(update={k: getattr(cfg.policy, k) for k in RIPT_TIME_POLICY})
    policy.version = 0
    torch.manual_seed(seed)
    np.random.seed(seed)
    train, heldout = context_sets(cfg.task)
    sim = builtin_rollouts(cfg)
    hz = PickEnv(cfg.task.image_size, cfg.task.max_steps).spec.control_hz
    counted = {"episodes": 0, "steps": 0, "intervened_steps": 0}
    operator = scripted_operator(cfg)

    def rollout(contexts: list[Context]) -> list[Episode]:
        episodes = sim(policy, contexts, intervener=operator)
        counted["episodes"] += len(episodes)
        counted["steps"] += sum(len(e.steps) for e in episodes)
        counted["intervened_steps"] += sum(e.meta.intervened_steps for e in episodes)
        return episodes

    learner = RIPTLearner(policy, context_pool(train, cfg.ript, seed), cfg.ript, seed)
    curve = [(0, sim.evaluate(policy, train, cfg.eval).success_rate)]
    began = time.monotonic()
    while curve[-1][1] < TARGET and counted["episodes"] < max_episodes:
        learner.step(rollout)
        if counted["episodes"] - curve[-1][0] >= eval_every:
            curve.append((counted["episodes"], sim.evaluate(policy, train, cfg.eval).success_rate))
    heldout_success = sim.evaluate(policy, heldout, cfg.eval).success_rate
    sim.close()
    reached = curve[-1][1] >= TARGET
    hours = (counted["steps"] / hz + RESET_AND_LABEL_S * counted["episodes"]) / 3600
    return {
        "seed": seed,
        "reached_90": reached,
        "episodes_to_90": counted["episodes"] if reached else None,
        "robot_hours_to_90": hours if reached else None,
        "episodes_counted": counted["episodes"],
        "robot_hours_counted": hours,
        "iterations_to_90": learner.iteration if reached else None,
        "sft_success": curve[0][1],
        "success_at_stop": curve[-1][1],
        "heldout_success_at_stop": heldout_success,
        "curve": curve,
        "ript_seconds": time.monotonic() - began,
        "intervened_step_share": counted["intervened_steps"] / max(counted["steps"], 1),
    }


def check_robot_recipe(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse a run under one of configs/robot.yaml's names that is not that recipe, measured as the README's
    figures are (seeds 0-4, at least the 8,000-episode cap): it would overwrite the file's top-level keys."""
    name, config = args.name, args.config
    if config is None or config.resolve() != (ROOT / "configs" / ROBOT_CONFIG).resolve():
        parser.error(f"--name {name} is configs/{ROBOT_CONFIG}'s figure: give --config configs/{ROBOT_CONFIG}")
    takes_over = ROBOT_RECIPES[name][0]
    wanted = ["task.scripted_operator=true"] if takes_over else []
    if args.overrides != wanted:
        parser.error(
            f"--name {name} is configs/{ROBOT_CONFIG} with {'a person' if takes_over else 'nobody'} taking over "
            f"and nothing else changed: give exactly {wanted or 'no overrides'} (another recipe: another --name)"
        )
    if not args.smoke and (args.seeds != HEADLINE_SEEDS or args.max_episodes < HEADLINE_CAP):
        parser.error(
            f"--name {name} is measured on --seeds {' '.join(map(str, HEADLINE_SEEDS))} with "
            f"--max-episodes {HEADLINE_CAP} or more"
        )


def median(values: list[float | None]) -> float | None:
    """The median, counting a seed that never reached the target as worse than every one that did."""
    ordered = sorted(values, key=lambda v: float("inf") if v is None else v)
    return ordered[len(ordered) // 2] if len(ordered) % 2 else _mid(ordered)


def _mid(ordered: list[float | None]) -> float | None:
    a, b = ordered[len(ordered) // 2 - 1], ordered[len(ordered) // 2]
    return None if a is None or b is None else (a + b) / 2


def table(saved: dict[str, Any]) -> str:
    """The recipes side by side as a markdown table: episodes to 90% and success where each stopped."""

    def spread(values: list[float | None], fmt: str) -> str:
        shown = ["-" if v is None else format(v, fmt) for v in values]
        middle = median(values)
        return f"{'not reached' if middle is None else format(middle, fmt)} ({' / '.join(shown)})"

    rows = [
        "| recipe | config | overrides | cap | episodes to 90% | success at stop | held-out at stop |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, recipe in saved["recipes"].items():
        runs = recipe["per_seed"]
        cap = max(r["episodes_counted"] for r in runs)
        rows.append(
            f"| {name} | {recipe.get('config') or '(main job)'} | {' '.join(recipe['overrides']) or '-'} | {cap:,} "
            f"| {spread([r['episodes_to_90'] for r in runs], ',')} "
            f"| {spread([r['success_at_stop'] for r in runs], '.0%')} "
            f"| {spread([r['heldout_success_at_stop'] for r in runs], '.0%')} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("overrides", nargs="*", help="the recipe: config overrides such as ript.rollouts_per_context=4")
    parser.add_argument("--config", type=Path, help="a config file whose settings the recipe starts from")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--name", default="default", help="the recipe's name in robot_budget.json (robot: headline)")
    parser.add_argument("--max-episodes", type=int, default=12_000, help="give up on a seed after this many")
    parser.add_argument("--workers", type=int, default=2, help="seeds run in parallel processes")
    parser.add_argument(
        "--eval-every", type=int, default=100, help="evaluate after the first update that brings this many new episodes"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds; writes nothing under results/")
    parser.add_argument("--table", action="store_true", help="print the saved recipes as a markdown table; run nothing")
    args = parser.parse_args()
    path = RESULTS / "robot_budget.json"
    if args.table:
        print(table(json.loads(path.read_text())))
        return
    if args.name in ROBOT_RECIPES:
        check_robot_recipe(parser, args)
    if args.smoke:
        args.seeds, args.max_episodes = args.seeds[:1], 16
    with ProcessPoolExecutor(args.workers) as pool:
        runs = list(
            pool.map(
                partial(
                    run_seed,
                    config=args.config,
                    overrides=args.overrides,
                    max_episodes=args.max_episodes,
                    smoke=args.smoke,
                    eval_every=args.eval_every,
                ),
                args.seeds,
            )
        )
    recipe = {key: median([r.get(key) for r in runs]) for key in FIGURES}
    config = None if args.config is None else args.config.name
    recipe.update(config=config, overrides=args.overrides, seeds=args.seeds, max_episodes=args.max_episodes)
    recipe["per_seed"] = runs
    for r in runs:
        print(
            f"seed {r['seed']}: {r['sft_success']:.0%} -> {r['success_at_stop']:.0%} after {r['episodes_counted']} "
            f"episodes (held-out {r['heldout_success_at_stop']:.0%}), {r['ript_seconds']:.0f} s"
        )
    print(json.dumps({k: v for k, v in recipe.items() if k != "per_seed"}, indent=2))
    if args.smoke:
        return
    saved = json.loads(path.read_text()) if path.exists() else {"recipes": {}}
    saved["recipes"][args.name] = recipe
    if args.name in ROBOT_RECIPES:
        suffix = ROBOT_RECIPES[args.name][1]
        saved.update({key + suffix: recipe[key] for key in FIGURES}, **{f"eval_every{suffix}": args.eval_every})
        if not suffix:  # the headline: which run the top-level keys come from
            saved.update(recipe=args.name, **{key: recipe[key] for key in ("config", "overrides", "seeds")})
    path.write_text(json.dumps(saved, indent=2) + "\n")


if __name__ == "__main__":
    main()
