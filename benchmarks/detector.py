"""The vision success detector on the built-in task: accuracy against the simulator, auto-label coverage.

Trains on the simulator's labels of scripted episodes that end in every way (success, a
grasp beside the block, the wrong block, none; `sim_bridge.pick_outcomes`), calibrates on a
held-out share of them, then judges, as the label app would, two test sets it never saw:
fresh scripted episodes, and what it will judge in use: rollouts of the main job's policies
(the SFT policy and three RIPT checkpoints of a main-job run made here, sampled, on training
and held-out layouts), whose failures are the policy's own. For each: accuracy of its guess
against the simulator's label, and in auto mode the share it labels on its own and how often
those labels are right.

    python benchmarks/detector.py [--train 40000] [--test 1000] [--rollouts 1000] [--train-rollouts 0] [--smoke]

--train-rollouts N adds N sampled rollouts of the same policies, on layouts of their own, to the training set
(`--out benchmarks/results/detector_with_rollouts.json` keeps the scripted-only figures).

Saves benchmarks/results/detector.json (--smoke: tiny sizes, saves nothing).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from learning import SMOKE

from ript_robot.config import DetectorConfig, QuickstartConfig, load_config
from ript_robot.data.store import EpisodeStore
from ript_robot.envs.pick import TASKS, context_sets, make_contexts
from ript_robot.policies import load_policy
from ript_robot.success.detector import DetectorService, SuccessDetector, episode_examples, fit_detector
from ript_robot.train.quickstart import run_quickstart
from ript_robot.types import Episode
from sim_bridge.pick_outcomes import outcome_episodes
from sim_bridge.rollouts import builtin_rollouts

RESULTS = Path(__file__).parent / "results"
CHUNK_SEED = 100  # training layouts come from seeds 100, 101, ...; the test's from seed 1
FRESH_SEED = 50_000  # layouts of the policy rollouts trained on: none of the main job's own


def filled_store(episodes: list, root: Path) -> EpisodeStore:
    store = EpisodeStore(root, create=True)
    writer = store.writer()
    for episode in episodes:
        store.write_episode(episode, writer)
    writer.close()
    return store.refresh()


def judge(detector: SuccessDetector, episodes: list[Episode], root: Path) -> dict[str, float | int | None]:
    """Accuracy of the detector's guesses against the simulator's labels, auto-label coverage and accuracy."""
    truth = {e.meta.episode_id: e.meta.label.success for e in episodes}
    for episode in episodes:
        episode.meta.label = None  # committed unlabeled, as an arm's episodes are
    store = filled_store(episodes, root)
    service = DetectorService(store, detector, "auto")
    guesses = {i: service.suggestion(i)["success"] for i in truth}
    auto = service.auto_label(store.records())
    store.refresh()
    auto_labels = {r.episode_id: r.meta.label.success for r in store.records() if r.meta.label is not None}
    return {
        "accuracy": float(np.mean([guesses[i] == truth[i] for i in truth])),
        "auto_label_coverage": auto / len(truth),
        "auto_label_accuracy": float(np.mean([s == truth[i] for i, s in auto_labels.items()])) if auto_labels else None,
        "episodes": len(truth),
        "success_share": float(np.mean(list(truth.values()))),
    }


def policy_rollouts(n: int, train_n: int, work: Path, smoke: bool) -> tuple[list[Episode], list[Episode], list[str]]:
    """Sampled rollouts of the main job's policies (SFT and three RIPT checkpoints of a run made here), labeled by
    the simulator: n on its training and held-out layouts (the test set), train_n on fresh layouts (to train on);
    and the checkpoints' names."""
    short = SMOKE if smoke else []
    cfg = load_config(QuickstartConfig, None, [f"output_dir={work / 'main'}", "torch_threads=1", *short])
    run_quickstart(cfg, progress=False)
    checkpoints = sorted((work / "main" / "checkpoints").iterdir())
    picks = [checkpoints[round(i * (len(checkpoints) - 1) / 3)] for i in range(4)]
    train, heldout = context_sets(cfg.task)
    contexts = [*train, *heldout]
    fresh = make_contexts(cfg.task.target_scene, range(FRESH_SEED, FRESH_SEED + -(-train_n // len(TASKS))))
    sim = builtin_rollouts(cfg, robot_id="detector-benchmark")
    test: list[Episode] = []
    to_train: list[Episode] = []
    for k, checkpoint in enumerate(picks):
        policy = load_policy(checkpoint)
        test += sim(policy, [contexts[(k * n // 4 + i) % len(contexts)] for i in range(n // 4)], deterministic=False)
        if train_n:
            to_train += sim(policy, fresh[k * train_n // 4 : (k + 1) * train_n // 4], deterministic=False)
    sim.close()
    return test, to_train, [p.name for p in picks]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=40000, help="labeled episodes to train and calibrate on")
    parser.add_argument("--test", type=int, default=1000, help="fresh episodes to judge")
    parser.add_argument("--image-size", type=int, default=64, help="the built-in task's camera side, pixels")
    parser.add_argument("--rollouts", type=int, default=1000, help="policy rollouts to judge (the main job's)")
    parser.add_argument(
        "--train-rollouts", type=int, default=0, help="policy rollouts, on fresh layouts, to train on too"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "detector.json", help="where the figures go")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, save nothing (CI)")
    parser.add_argument("overrides", nargs="*", help="DetectorConfig overrides (key=value)")
    args = parser.parse_args()
    if args.smoke:
        args.train, args.test, args.rollouts, args.train_rollouts = 300, 40, 40, 40
    steps = 50 if args.smoke else 4000
    config = load_config(DetectorConfig, None, [f"image_size={args.image_size}", f"steps={steps}", *args.overrides])
    work = Path(tempfile.mkdtemp(prefix="detector_"))
    start = time.monotonic()
    # made in chunks of 1000 episodes; only their final frames stay in memory (`ript detector` reads a store)
    chunks = range(CHUNK_SEED, CHUNK_SEED + -(-args.train // 1000))
    train = (e for seed in chunks for e in outcome_episodes(1000, args.image_size, seed=seed))
    rollouts, train_rollouts, checkpoints = policy_rollouts(args.rollouts, args.train_rollouts, work, args.smoke)
    data = episode_examples(itertools.chain(itertools.islice(train, args.train), train_rollouts), config, "top")
    detector, report = fit_detector(data, config, "top", seed=0)
    trained_s = time.monotonic() - start
    scripted = judge(detector, outcome_episodes(args.test, args.image_size, seed=1), work / "test")
    on_rollouts = judge(detector, rollouts, work / "rollouts")
    result = {
        "accuracy": scripted["accuracy"],
        "auto_label_coverage": scripted["auto_label_coverage"],
        "auto_label_accuracy": scripted["auto_label_accuracy"],
        "test_episodes": scripted["episodes"],
        "test_success_share": scripted["success_share"],
        "rollout_accuracy": on_rollouts["accuracy"],
        "rollout_auto_label_coverage": on_rollouts["auto_label_coverage"],
        "rollout_auto_label_accuracy": on_rollouts["auto_label_accuracy"],
        "rollout_episodes": on_rollouts["episodes"],
        "rollout_success_share": on_rollouts["success_share"],
        "rollout_policies": checkpoints,
        "trained_on_rollouts": len(train_rollouts),
        "train": report,
        "config": config.model_dump(mode="json"),
        "train_s": trained_s,
        "target_accuracy": 0.95,
        "machine": f"{os.cpu_count()} CPU cores, no GPU",
    }
    print(json.dumps(result, indent=2))
    if not args.smoke:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
