"""LIBERO behind RobotEnv: suites and contexts, rendering on demand, and real episodes through the
runtime, a worker process and the episode store."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import h5py
import numpy as np
import pytest

from ript_robot.config import PolicyConfig, RuntimeConfig
from ript_robot.data import EpisodeStore
from ript_robot.envs.demos import record_demonstrations
from ript_robot.policies import make_policy
from ript_robot.rl.sft import chunk_dataset
from ript_robot.runtime.loop import run_episodes
from sim_bridge.libero_demos import demo_file, read_libero_demos
from sim_bridge.libero_env import MAX_STEPS, SUITES, LiberoEnv, libero_contexts
from sim_bridge.libero_expert import LiberoExpert
from sim_bridge.workers import WorkerEnv

TINY = PolicyConfig(hidden_dim=32, channels=4, keypoints=4, chunk_size=8)


@pytest.fixture(scope="module")
def env():
    env = LiberoEnv("libero_spatial", image_size=64, max_steps=24)
    yield env
    env.close()


def test_every_suite_lists_its_tasks_and_fixed_initial_states() -> None:
    tasks = {suite: len({c.scene for c in libero_contexts(suite, inits=[0])}) for suite in SUITES}
    assert tasks == {"libero_spatial": 10, "libero_object": 10, "libero_goal": 10, "libero_10": 10, "libero_90": 90}
    contexts = libero_contexts("libero_object", tasks=[2])
    assert len(contexts) == 50 and contexts[7].context_id == "libero_object/2/7" and contexts[7].seed == 7
    assert contexts[0].instruction.startswith("pick up the") and "basket" in contexts[0].instruction
    assert LiberoEnv.__init__.__defaults__ is not None and MAX_STEPS["libero_10"] == 520
    with pytest.raises(ValueError, match="unknown LIBERO suite 'libero_space'"):
        libero_contexts("libero_space")
    with pytest.raises(ValueError, match=r"has tasks 0\.\.9, not 12"):
        libero_contexts("libero_goal", tasks=[12])


def test_a_context_resets_to_the_same_scene_and_images_come_only_when_asked(env: LiberoEnv) -> None:
    context, other = libero_contexts("libero_spatial", tasks=[0], inits=[3, 4])
    first = env.reset(context)
    bowl = env.object_position("akita_black_bowl_1")
    assert env.spec.cameras == {"agentview": (64, 64), "wrist": (64, 64)} and first.state.shape == (8,)
    assert first.instruction == context.instruction
    for image in first.images.values():
        assert image.dtype == np.uint8 and image.shape == (64, 64, 3) and image.std() > 10  # a scene, not a blank
    # upright: the table (bright wood) fills the bottom of the agent view, the dark background its top
    assert first.images["agentview"][-8:].mean() > first.images["agentview"][:8].mean()
    blind = env.step(np.zeros(7), render=False)
    assert blind.observation.images == {} and blind.observation.state.shape == (8,)
    assert env.step(np.zeros(7)).observation.images.keys() == {"agentview", "wrist"}
    env.reset(other)
    assert not np.allclose(env.object_position("akita_black_bowl_1"), bowl)  # another initial state
    again = env.reset(context)  # K rollouts of a context start from one scene (the cabinet may settle a pixel apart)
    np.testing.assert_allclose(env.object_position("akita_black_bowl_1"), bowl, atol=1e-6)
    np.testing.assert_allclose(again.state, first.state, atol=1e-3)  # within a millimetre (gripper fingers)
    with pytest.raises(ValueError, match="not a libero_spatial context"):
        env.reset(libero_contexts("libero_goal", tasks=[0], inits=[0])[0])
    with pytest.raises(ValueError, match="finite action of shape"):
        env.step(np.full(7, np.nan))


def test_a_real_libero_episode_runs_in_a_worker_through_the_runtime_into_the_store(tmp_path: Path) -> None:
    """What CI runs of LIBERO: two short episodes, physics in a worker process, committed with the sim's label."""
    worker = WorkerEnv(partial(LiberoEnv, "libero_object", image_size=64, max_steps=20), "libero_object")
    contexts = libero_contexts("libero_object", tasks=[0], inits=[0])
    store = EpisodeStore(tmp_path / "store")
    policy = make_policy(TINY, worker.spec)
    try:
        with store.writer() as writer:
            (episode,) = run_episodes([worker], contexts, policy, RuntimeConfig(frame_every=4), writer, robot_id="w")
    finally:
        worker.close()
    assert episode.meta.num_steps == 20 and episode.meta.end_reason == "timeout"  # a random policy fails
    stored = store.refresh().read_episode(episode.meta.episode_id)
    assert stored.meta.label is not None and stored.meta.label.success is False and stored.meta.label.source == "sim"
    assert [s.step for s in stored.steps if s.observation.images] == [0, 4, 8, 12, 16]
    assert [c.images["wrist"].shape for c in stored.chunk_observations] == [(64, 64, 3)] * 3
    np.testing.assert_array_equal(
        stored.steps[8].observation.images["agentview"], episode.steps[8].observation.images["agentview"]
    )
    assert store.verify().ok


def write_demo_file(path: Path, lengths: list[int], successes: list[bool], size: int = 128) -> dict[str, np.ndarray]:
    """A small file in LIBERO's demonstration format (raw, upside-down images); returns demo_0's arrays."""
    rng = np.random.default_rng(0)
    first = {}
    with h5py.File(path, "w") as f:
        for i, (n, ok) in enumerate(zip(lengths, successes, strict=True)):
            demo = f.create_group(f"data/demo_{i}")
            arrays = {
                "actions": rng.uniform(-1, 1, (n, 7)),
                "dones": np.eye(n, dtype=np.uint8)[-1] * ok,
                "obs/agentview_rgb": rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8),
                "obs/eye_in_hand_rgb": rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8),
                "obs/ee_pos": rng.normal(size=(n, 3)),
                "obs/ee_ori": rng.normal(size=(n, 3)),
                "obs/gripper_states": rng.normal(size=(n, 2)),
            }
            for key, value in arrays.items():
                demo.create_dataset(key, data=value)
            first = first or arrays
    return first


def test_libero_demonstration_files_read_as_upright_episodes_the_policy_trains_on(env: LiberoEnv, tmp_path) -> None:
    path = demo_file(tmp_path, "libero_spatial", 0)
    assert path.name == "pick_up_the_black_bowl_between_the_plate_and_the_ramekin_and_place_it_on_the_plate_demo.hdf5"
    raw = write_demo_file(path, lengths=[6, 5, 7], successes=[True, False, True], size=128)
    demos = read_libero_demos(path, "libero_spatial", 0, image_size=64)
    assert [d.meta.num_steps for d in demos] == [5, 6]  # the unsuccessful one is left out
    first = demos[0]
    assert first.meta.kind == "demonstration" and first.meta.context.context_id == "libero_spatial/0/demo_0"
    assert first.meta.context.instruction == libero_contexts("libero_spatial", [0], [0])[0].instruction
    upright = raw["obs/agentview_rgb"][2, ::-1, ::-1].reshape(64, 2, 64, 2, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(first.steps[2].observation.images["agentview"], upright, atol=1)
    expected_state = np.concatenate([raw["obs/ee_pos"][2], raw["obs/ee_ori"][2], raw["obs/gripper_states"][2]])
    np.testing.assert_allclose(first.steps[2].observation.state, expected_state, rtol=1e-6)
    # LIBERO recorded observation t after actions[t]: what was done from it is actions[t + 1]
    np.testing.assert_allclose(first.steps[2].action, raw["actions"][3], rtol=1e-6)
    dataset = chunk_dataset(make_policy(TINY, env.spec), demos)  # the simulator's policy takes them as they are
    assert len(dataset) == 11 and dataset.inputs["image"].shape == (11, 2, 64, 64, 3)
    with h5py.File(path, "r+") as f:
        del f["data/demo_0/obs/ee_ori"]
    with pytest.raises(ValueError, match=r"data/demo_0 lacks \['obs/ee_ori'\]"):
        read_libero_demos(path, "libero_spatial", 0)


@pytest.mark.parametrize(("suite", "init"), [("libero_spatial", 5), ("libero_object", 5)])
def test_the_scripted_expert_picks_and_places_from_privileged_state(suite: str, init: int) -> None:
    env = LiberoEnv(suite, image_size=64)
    try:
        contexts = libero_contexts(suite, [0], [init])
        (demo,) = record_demonstrations(env, contexts, LiberoExpert(), successful_only=False, frame_every=8)
    finally:
        env.close()
    assert demo.meta.label is not None and demo.meta.label.success, (
        f"{demo.meta.end_reason} after {demo.meta.num_steps}"
    )
    assert demo.meta.num_steps < MAX_STEPS[suite] and demo.meta.kind == "demonstration"
    assert sum(bool(s.observation.images) for s in demo.steps) == len(range(0, demo.meta.num_steps, 8))
