"""The vision success detector on the built-in task: accuracy against the simulator, auto-label coverage.

Trains on the simulator's labels of scripted episodes that end in every way (success, a
grasp beside the block, the wrong block, none; `sim_bridge.pick_outcomes`), calibrates on a
held-out share of them, then judges fresh episodes of layouts it never saw, as the label
app would: accuracy of its guess against the simulator's label, and in auto mode the share
it labels on its own and how often those labels are right.

    python benchmarks/detector.py [--train 40000] [--test 1000] [--image-size 64] [key=value ...]

Saves benchmarks/results/detector.json.
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

from ript_robot.config import DetectorConfig, load_config
from ript_robot.data.store import EpisodeStore
from ript_robot.success.detector import DetectorService, episode_examples, fit_detector
from sim_bridge.pick_outcomes import outcome_episodes

RESULTS = Path(__file__).parent / "results"
CHUNK_SEED = 100  # training layouts come from seeds 100, 101, ...; the test's from seed 1


def filled_store(episodes: list, root: Path) -> EpisodeStore:
    store = EpisodeStore(root, create=True)
    writer = store.writer()
    for episode in episodes:
        store.write_episode(episode, writer)
    writer.close()
    return store.refresh()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=40000, help="labeled episodes to train and calibrate on")
    parser.add_argument("--test", type=int, default=1000, help="fresh episodes to judge")
    parser.add_argument("--image-size", type=int, default=64, help="the built-in task's camera side, pixels")
    parser.add_argument("overrides", nargs="*", help="DetectorConfig overrides (key=value)")
    args = parser.parse_args()
    config = load_config(DetectorConfig, None, [f"image_size={args.image_size}", "steps=4000", *args.overrides])
    work = Path(tempfile.mkdtemp(prefix="detector_"))
    start = time.monotonic()
    # made in chunks of 1000 episodes; only their final frames stay in memory (`ript detector` reads a store)
    chunks = range(CHUNK_SEED, CHUNK_SEED + -(-args.train // 1000))
    train = (e for seed in chunks for e in outcome_episodes(1000, args.image_size, seed=seed))
    data = episode_examples(itertools.islice(train, args.train), config, "top")
    detector, report = fit_detector(data, config, "top", seed=0)
    trained_s = time.monotonic() - start
    test_episodes = outcome_episodes(args.test, args.image_size, seed=1)
    truth = {e.meta.episode_id: e.meta.label.success for e in test_episodes}
    for episode in test_episodes:
        episode.meta.label = None  # committed unlabeled, as an arm's episodes are
    test_store = filled_store(test_episodes, work / "test")
    service = DetectorService(test_store, detector, "auto")
    guesses = {i: service.suggestion(i)["success"] for i in truth}
    auto = service.auto_label(test_store.records())
    test_store.refresh()
    auto_labels = {r.episode_id: r.meta.label.success for r in test_store.records() if r.meta.label is not None}
    result = {
        "accuracy": float(np.mean([guesses[i] == truth[i] for i in truth])),
        "auto_label_coverage": auto / len(truth),
        "auto_label_accuracy": float(np.mean([s == truth[i] for i, s in auto_labels.items()])) if auto_labels else None,
        "test_episodes": len(truth),
        "test_success_share": float(np.mean(list(truth.values()))),
        "train": report,
        "config": config.model_dump(mode="json"),
        "train_s": trained_s,
        "target_accuracy": 0.95,
        "machine": f"{os.cpu_count()} CPU cores, no GPU",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "detector.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
