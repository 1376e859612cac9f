"""Integrity benchmark: generated store damage, API fuzzing, kill -9 at random points, and what verify costs.

- damages_tried / damages_detected: `ript_robot.data.faults.random_damage` applied to committed
  episodes (on a local directory and on moto's S3-compatible server), each checked by
  `verify.check_episode` (detected: the episode is reported with the damaged object named) and by
  `read_episode` (refused), then restored. damages_read_refused counts the refusals; a damage of
  only the group's label mirror is detected by verify and harmless to reading (the index holds labels).
- api_requests_fuzzed / api_server_errors: the tablet app fuzzed from its OpenAPI schema
  (`benchmarks/api_fuzz.py`), against the real server on loopback.
- kills / committed_lost: writers, trainers and actors killed with SIGKILL at random points
  (`benchmarks/kill_drill.py`); committed_partial counts committed episodes found damaged after.
- verify_seconds_per_1000_episodes: `EpisodeStore.verify` over a store of 64-step episodes with two
  64x64 cameras, scaled to 1,000 episodes; verify_vs_read_ratio is its time over reading every
  episode back with `read_episode` in the same run (what verify cost before manifests).

    python benchmarks/integrity.py           # the full run (about 10 minutes on 2 cores)
    python benchmarks/integrity.py --smoke   # seconds of each part, writes nothing under results/
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from api_fuzz import fuzz_api
from kill_drill import kill_trials  # puts tests/ on the path: the suite's synthetic episodes
from synthetic import synthetic_episode
from tqdm import tqdm

from ript_robot.data import EpisodeCorrupt, EpisodeStore
from ript_robot.data.faults import random_damage, restore, snapshot
from ript_robot.data.integrity import GROUP_METADATA
from ript_robot.data.local_s3 import create_bucket, s3_environment, start_s3_server
from ript_robot.data.verify import check_episode

RESULTS = Path(__file__).resolve().parent / "results"


def committed_store(uri: str, episodes: int, steps: int, image_size: int, cameras: int = 1) -> EpisodeStore:
    store = EpisodeStore(uri)
    with store.writer(chunk_frames=16, flush_frames=32) as writer:
        for i in tqdm(range(episodes), desc=f"write {episodes} episodes", leave=False):
            episode = synthetic_episode(f"ctx{i % 7}", steps=steps, seed=i, image_size=image_size)
            if cameras > 1:  # a second camera, as arms have a wrist camera beside the scene's
                for step in episode.steps:
                    step.observation.images["wrist"] = step.observation.images["top"][::-1].copy()
            store.write_episode(episode, writer)
    return store.refresh()


def damage_trials(uri: str, trials: int, seed: int) -> dict[str, Any]:
    """Damage random episodes of a small store `trials` times; count what verify and the reader catch."""
    rng = np.random.default_rng(seed)
    store = committed_store(uri, 6, 40, 32)
    ids = sorted(store.index.episodes)
    originals = {i: snapshot(store.backend, f"episodes/{i}/") for i in ids}
    tried, detected, refused, mirror_only = Counter(), Counter(), 0, 0
    misses: list[str] = []
    for _ in tqdm(range(trials), desc=f"damages on {uri.split(':')[0] if '://' in uri else 'disk'}", leave=False):
        victim = ids[int(rng.integers(len(ids)))]
        folder = f"episodes/{victim}/"
        damage = random_damage(rng, originals[victim])
        while not damage.changes(originals[victim]):
            damage = random_damage(rng, originals[victim])
        damage.apply(store.backend, folder, originals[victim])
        try:
            problem = check_episode(store, victim) or ""
            tried[damage.kind] += 1
            if victim in problem and any(f"'{name}'" in problem for name in damage.names):
                detected[damage.kind] += 1
            else:
                misses.append(f"{damage}: {problem or 'not detected'}")
            try:
                store.read_episode(victim)
                mirror_only += damage.names == (GROUP_METADATA,) and "label" in problem
            except EpisodeCorrupt:
                refused += 1
        finally:
            restore(store.backend, folder, originals[victim])
    return {
        "tried": sum(tried.values()),
        "detected": sum(detected.values()),
        "read_refused": refused,
        "label_mirror_only": mirror_only,
        "per_kind": {kind: [detected[kind], n] for kind, n in sorted(tried.items())},
        "misses": misses[:10],
    }


def verify_speed(root: Path, episodes: int) -> dict[str, float]:
    store = committed_store(str(root / "verify"), episodes, 64, 64, cameras=2)
    start = time.perf_counter()
    report = EpisodeStore(store.uri).verify()
    verify_s = time.perf_counter() - start
    assert report.ok and report.checked == episodes, report.problems[:3]
    start = time.perf_counter()
    for episode_id in store.index.episodes:
        store.read_episode(episode_id)
    read_s = time.perf_counter() - start
    return {
        "verify_seconds_per_1000_episodes": verify_s * 1000 / episodes,
        "read_seconds_per_1000_episodes": read_s * 1000 / episodes,
        "verify_vs_read_ratio": verify_s / read_s,
        "verify_store_mb": sum(m["size"] for m in store.backend.list("episodes/")) / 1e6,
        "verify_episodes": episodes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds; writes nothing under results/")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    local_damages, s3_damages = (40, 10) if args.smoke else (1000, 200)
    kills = {"writer": 2, "trainer": 1, "actor": 1} if args.smoke else {"writer": 20, "trainer": 15, "actor": 15}
    root = Path(tempfile.mkdtemp(prefix="integrity_"))
    proc, endpoint = start_s3_server()
    try:
        os.environ.update(s3_environment(endpoint))
        create_bucket(endpoint, "integrity")
        local = damage_trials(str(root / "damage"), local_damages, args.seed)
        s3 = damage_trials("s3://integrity/damage", s3_damages, args.seed + 1)
    finally:
        proc.terminate()
    api = fuzz_api(50 if args.smoke else 5000, args.seed)
    with tqdm(total=sum(kills.values()), desc="kill -9") as bar:
        killed = kill_trials(kills, root, args.seed, bar)
    speed = verify_speed(root, 20 if args.smoke else 300)
    result = {
        "damages_tried": local["tried"] + s3["tried"],
        "damages_detected": local["detected"] + s3["detected"],
        "damages_read_refused": local["read_refused"] + s3["read_refused"],
        "damages_label_mirror_only": local["label_mirror_only"] + s3["label_mirror_only"],
        "damages_on_s3": s3["tried"],
        "damages_per_kind_local": local["per_kind"],
        "damages_per_kind_s3": s3["per_kind"],
        "damage_misses": local["misses"] + s3["misses"],
        "api_requests_fuzzed": api["api_requests_fuzzed"],
        "api_server_errors": api["api_server_errors"],
        "api_unauthorized_state_changes": api["unauthorized_state_changes"],
        **killed,
        **speed,
        "smoke": args.smoke,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
    }
    print(json.dumps(result, indent=2))
    if not args.smoke:
        (RESULTS / "integrity.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
