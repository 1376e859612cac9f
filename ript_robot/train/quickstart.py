"""The main job on the built-in task: pretrain, SFT from one demonstration per task, then RIPT.

It mirrors the RIPT-VLA one-demonstration setting in one process on a CPU: the policy is
pretrained on plentiful scripted demonstrations in other scenes, fine-tuned on a single
demonstration of each task in the target scene (where the arm's grasp point is offset from
what the camera shows), and then post-trained with RIPT from binary success alone. Every
stage writes to `output_dir`: `config.yaml`, `metrics.jsonl`, `tensorboard/`, a checkpoint
per iteration under `checkpoints/`, `success.png` and `summary.json`.
"""

from __future__ import annotations

import json
import time
from functools import partial
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ript_robot.config import QuickstartConfig, dump_config
from ript_robot.envs.demos import record_demonstrations
from ript_robot.envs.pick import (
    PRETRAIN_DEMO_SEEDS,
    TARGET_DEMO_SEEDS,
    PickEnv,
    context_sets,
    expert_action,
    make_contexts,
)
from ript_robot.policies import Policy, load_policy, make_policy
from ript_robot.rl.sampling import context_pool
from ript_robot.rl.sft import behaviour_cloning, chunk_dataset
from ript_robot.train.logging import MetricsLogger, plot_success
from ript_robot.train.ript import RIPTLearner
from sim_bridge.rollouts import builtin_rollouts, scripted_operator


def place(policy: Policy, cfg: QuickstartConfig) -> None:
    """Move the policy to `trainer.device` when set (pretraining, SFT and RIPT then run there); a CheckpointError
    naming the setting when this machine lacks that device."""
    if cfg.trainer.device:
        policy.place(cfg.trainer.device, "trainer.device")


def pretrain_and_sft(cfg: QuickstartConfig, log: MetricsLogger, progress: bool = True) -> Policy:
    """Pretrain on the pretraining scenes, then SFT on one demonstration per task of the target."""
    env = PickEnv(cfg.task.image_size, cfg.task.max_steps)
    policy = make_policy(cfg.policy, env.spec)
    place(policy, cfg)
    n = cfg.pretrain_demos_per_task
    pretrained = n > 0 and cfg.pretrain.steps > 0
    if pretrained:
        seeds = range(PRETRAIN_DEMO_SEEDS, PRETRAIN_DEMO_SEEDS + n)
        contexts = [c for scene in cfg.task.pretrain_scenes for c in make_contexts(scene, seeds)]
        demos = record_demonstrations(env, contexts, expert_action)
        losses = behaviour_cloning(policy, chunk_dataset(policy, demos), cfg.pretrain, cfg.seed, "pretrain", progress)
        log.log("pretrain", cfg.pretrain.steps, {"demos": len(demos), "bc_loss": float(np.mean(losses[-50:]))})
    seeds = range(TARGET_DEMO_SEEDS, TARGET_DEMO_SEEDS + cfg.target_demos_per_task)
    demos = record_demonstrations(env, make_contexts(cfg.task.target_scene, seeds), expert_action)
    losses = behaviour_cloning(
        policy, chunk_dataset(policy, demos), cfg.sft, cfg.seed + 1, "SFT", progress, finetune=pretrained
    )
    log.log("sft", cfg.sft.steps, {"demos": len(demos), "bc_loss": float(np.mean(losses[-50:])) if losses else 0.0})
    return policy


def run_quickstart(cfg: QuickstartConfig, progress: bool = True) -> dict[str, Any]:
    """Run the whole job; returns (and writes as summary.json) the figures of the run."""
    start = time.monotonic()
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    out = cfg.output_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(dump_config(cfg))
    log = MetricsLogger(out)
    train, heldout = context_sets(cfg.task)
    sim = builtin_rollouts(cfg)

    if cfg.init_checkpoint is not None:
        policy = load_policy(cfg.init_checkpoint)
        place(policy, cfg)
        policy.version = 0
    else:
        policy = pretrain_and_sft(cfg, log, progress)
    policy.save(out / "checkpoints" / "iter_000")
    sft_train = sim.evaluate(policy, train, cfg.eval)
    sft_heldout = sim.evaluate(policy, heldout, cfg.eval)
    log.log("eval", 0, {"train_success": sft_train.success_rate, "heldout_success": sft_heldout.success_rate})
    if progress:
        tqdm.write(f"after SFT   train {sft_train}\n            held-out {sft_heldout}")

    learner = RIPTLearner(policy, context_pool(train, cfg.ript, cfg.seed), cfg.ript, cfg.seed)
    rollout = partial(sim, policy, intervener=scripted_operator(cfg))
    curve_train, curve_rollout = [sft_train.success_rate], [float("nan")]
    last = 0
    bar = tqdm(range(1, cfg.ript.iterations + 1), desc="RIPT", disable=not progress)
    for it in bar:
        if learner.spent:
            tqdm.write(f"ript.episode_budget ({cfg.ript.episode_budget}) spent after {learner.episodes} episodes")
            break
        metrics = learner.step(rollout)
        last = it
        result = sim.evaluate(policy, train, cfg.eval)
        metrics["train_success"] = result.success_rate
        metrics["elapsed_s"] = time.monotonic() - start
        log.log("ript", it, metrics)
        policy.save(out / "checkpoints" / f"iter_{it:03d}")
        curve_train.append(result.success_rate)
        curve_rollout.append(metrics["rollout_success"])
        bar.set_postfix(
            success=f"{result.success_rate:.0%}",
            rollouts=f"{metrics['rollout_success']:.0%}",
            groups=f"{metrics['groups_accepted']}/{metrics['groups_accepted'] + metrics['groups_rejected']}",
            kl=f"{metrics.get('approx_kl', float('nan')):.3f}",
        )
    final_heldout = sim.evaluate(policy, heldout, cfg.eval)
    sim.close()
    log.log("eval", last, {"train_success": curve_train[-1], "heldout_success": final_heldout.success_rate})
    mode = "deterministic" if cfg.eval.deterministic else "sampled"
    plot_success(
        list(range(len(curve_train))),
        {f"training contexts ({mode})": curve_train, "RIPT rollouts (sampled)": curve_rollout},
        out / "success.png",
        title=f"RIPT on the built-in task, scene '{cfg.task.target_scene}'",
    )
    log.close()
    reached = next((i for i, s in enumerate(curve_train) if s >= 0.9), None)
    summary = {
        "sft_success": sft_train.success_rate,
        "ript_success": curve_train[-1],
        "heldout_sft_success": sft_heldout.success_rate,
        "heldout_ript_success": final_heldout.success_rate,
        "iterations": last,
        "iterations_to_90": reached,
        "success_per_iteration": curve_train,
        "rollout_episodes": learner.episodes,
        "eval_mode": mode,
        "train_contexts": len(train),
        "heldout_contexts": len(heldout),
        "wall_clock_s": time.monotonic() - start,
        "final_checkpoint": str(out / "checkpoints" / f"iter_{last:03d}"),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if progress:
        tqdm.write(f"after RIPT  train {curve_train[-1]:.1%}\n            held-out {final_heldout}")
        tqdm.write(f"wrote {out}/ (success.png, metrics.jsonl, tensorboard/, checkpoints/)")
    return summary
