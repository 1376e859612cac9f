"""Episodes of the built-in task with every kind of outcome, for success detectors.

A detector must tell a grasp on the named block from one beside it, on the wrong block, or
none at all, so it learns from episodes that end all those ways. Training a policy until it
fails in every way takes minutes; these scripted arms take a second. Each episode draws one
behaviour:
- `expert`: the scripted expert (reaches through the scene's hand-eye error; succeeds);
- `uncorrected`: reaches as if the camera marker were the gripper, the mistake of a policy
  pretrained in other scenes: succeeds near the arena centre, closes beside the block further out;
- `wrong_block`: reaches for another block;
- `sloppy`: the expert's reach with an aim error of a few centimetres (either outcome);
- `wander`: never closes and runs out of time.
The simulator labels every episode; they are stored as rollouts, as a robot would.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ript_robot.envs.demos import record_demonstrations
from ript_robot.envs.pick import PickEnv, make_contexts, reach_action
from ript_robot.types import Episode

BEHAVIOURS = ("expert", "uncorrected", "wrong_block", "sloppy", "wander")


def behaviour(name: str, rng: np.random.Generator) -> Callable[[PickEnv], np.ndarray]:
    """The scripted arm of one behaviour (see the module docstring), its randomness drawn from `rng`."""
    if name not in BEHAVIOURS:
        raise ValueError(f"unknown behaviour {name!r}; known: {BEHAVIOURS}")
    aim = rng.normal(0.0, 0.05, size=2) if name == "sloppy" else np.zeros(2)
    other = int(rng.integers(1, 4))
    wander = rng.uniform(-1.0, 1.0, size=2)

    def act(env: PickEnv) -> np.ndarray:
        if name == "wander":
            return np.array([*np.clip(wander + rng.normal(0, 0.3, 2), -1, 1), -1.0], dtype=np.float32)
        if name == "wrong_block":
            blocks = env.block_positions
            return reach_action(env, blocks[(env.target_index + other) % len(blocks)])
        return reach_action(env, env.target_position + aim, hand_eye=name != "uncorrected")

    return act


def outcome_episodes(
    n: int, image_size: int = 64, scene: str = "workcell", seed: int = 0, max_steps: int = 50
) -> list[Episode]:
    """`n` sim-labeled episodes, behaviours drawn uniformly, on layouts seeded from `seed`."""
    rng = np.random.default_rng(seed)
    env = PickEnv(image_size, max_steps)
    contexts = make_contexts(scene, range(seed * 100_000, seed * 100_000 + n))
    episodes = []
    for i in rng.permutation(len(contexts))[:n]:
        name = BEHAVIOURS[int(rng.integers(len(BEHAVIOURS)))]
        (episode,) = record_demonstrations(env, [contexts[i]], behaviour(name, rng), successful_only=False)
        episode.meta.kind = "rollout"
        episode.meta.robot_id = f"scripted-{name}"
        episodes.append(episode)
    return episodes
