from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import IMAGE_SIZE, make_env

from ript_robot.envs.demos import record_demonstrations
from ript_robot.envs.pick import (
    CAMERA,
    MIN_SEPARATION,
    SCENES,
    TASKS,
    PickEnv,
    expert_action,
    layout,
    make_contexts,
    task_index,
)
from ript_robot.types import Context


def context(seed: int = 0, task: int = 0, scene: str = "lab_a") -> Context:
    return Context(context_id=f"{scene}/{task}/{seed}", instruction=TASKS[task], seed=seed, scene=scene)


def test_reset_is_deterministic_per_seed():
    a, b = make_env(), make_env()
    first, second = a.reset(context(11)), b.reset(context(11))
    np.testing.assert_array_equal(first.images[CAMERA], second.images[CAMERA])
    np.testing.assert_array_equal(first.state, second.state)
    np.testing.assert_array_equal(a.target_position, b.target_position)
    again = a.reset(context(11))  # resetting the same env again gives the same layout
    np.testing.assert_array_equal(first.images[CAMERA], again.images[CAMERA])


def test_different_seeds_give_different_layouts():
    env = make_env()
    images = [env.reset(context(seed)).images[CAMERA] for seed in range(5)]
    for x, y in itertools.combinations(images, 2):
        assert not np.array_equal(x, y)
    blocks = [layout(seed)[0] for seed in range(5)]
    for x, y in itertools.combinations(blocks, 2):
        assert not np.allclose(x, y)


def test_blocks_never_overlap_and_stay_in_the_arena():
    for seed in range(200):
        blocks, start = layout(seed)
        assert blocks.shape == (4, 2)
        assert start.shape == (2,)
        assert np.all((blocks >= 0.12) & (blocks <= 0.88))
        assert np.all((start >= 0.0) & (start <= 1.0))
        for p, q in itertools.combinations(blocks, 2):
            assert np.linalg.norm(p - q) >= MIN_SEPARATION


@pytest.mark.parametrize("scene", sorted(SCENES))
def test_scripted_expert_succeeds_in_every_scene(scene):
    env = make_env()
    contexts = make_contexts(scene, range(10))
    assert len(contexts) == 40
    episodes = record_demonstrations(env, contexts, expert_action, successful_only=False)
    assert len(episodes) == 40
    successes = sum(e.meta.label.success for e in episodes)
    assert successes >= 0.95 * 40
    for e in episodes:
        assert e.meta.label.source == "sim"
        assert e.meta.num_steps == len(e.steps)
        assert e.meta.end_reason in {"grasped", "missed", "timeout"}


def test_record_demonstrations_drops_failures_when_asked():
    def never_grasps(env: PickEnv) -> np.ndarray:
        return np.array([0.0, 0.0, -1.0], dtype=np.float32)

    env = make_env(max_steps=5)
    contexts = make_contexts("lab_a", range(2))
    assert record_demonstrations(env, contexts, never_grasps) == []
    kept = record_demonstrations(env, contexts, never_grasps, successful_only=False)
    assert len(kept) == len(contexts)
    assert all(e.reward == 0.0 and e.meta.end_reason == "timeout" and len(e.steps) == 5 for e in kept)


def test_grasp_succeeds_only_on_the_named_block():
    env = make_env()
    env.reset(context(3, task=2))
    env._pos = env.target_position.copy()  # put the gripper on the named block
    result = env.step(np.array([0.0, 0.0, 1.0]))
    assert result.done and result.success is True and result.reason == "grasped"

    env.reset(context(3, task=2))
    wrong = (2 + 1) % 4
    env._pos = env._blocks[wrong].copy()
    result = env.step(np.array([0.0, 0.0, 1.0]))
    assert result.done and result.success is False and result.reason == "missed"


def test_workcell_hand_eye_error_makes_the_marker_miss_far_blocks():
    env = make_env()
    seed = next(s for s in range(100) if np.linalg.norm(layout(s)[0][0] - 0.5) > 0.3)
    env.reset(context(seed, task=0, scene="workcell"))
    env._pos = env.target_position.copy()  # the drawn marker is on the block, the grasp point is not
    assert env.step(np.array([0.0, 0.0, 1.0])).success is False
    env.reset(context(seed, task=0, scene="workcell"))
    angle = np.deg2rad(-SCENES["workcell"].hand_eye_error_deg)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    env._pos = 0.5 + rot @ (env.target_position - 0.5)  # where the marker must be for the grasp point
    assert env.step(np.array([0.0, 0.0, 1.0])).success is True


def test_timeout_after_max_steps():
    env = make_env(max_steps=3)
    env.reset(context(0))
    results = [env.step(np.zeros(3)) for _ in range(3)]
    assert [r.done for r in results] == [False, False, True]
    assert results[-1].success is False
    assert results[-1].reason == "timeout"
    assert results[0].success is None


def test_movement_follows_scene_gain_and_is_clipped():
    for scene, scene_def in SCENES.items():
        env = make_env()
        env.reset(context(5, scene=scene))
        start = env._pos.copy()
        env.step(np.array([0.5, 5.0, -1.0]))  # dy beyond the bound moves at full speed only
        expected = np.clip(start + np.array([0.5, 1.0]) * 0.025 * scene_def.gain, 0.0, 1.0)
        np.testing.assert_allclose(env._pos, expected, atol=1e-12)


@pytest.mark.parametrize("bad", ["pick up the purple block", "PICK UP THE RED BLOCK"])
def test_unknown_instruction_raises_naming_it(bad):
    with pytest.raises(ValueError, match="unknown instruction") as info:
        task_index(bad)
    assert repr(bad) in str(info.value)
    env = make_env()
    with pytest.raises(ValueError, match=r"purple|PICK"):
        env.reset(Context("c", bad, 0, "lab_a"))
    with pytest.raises(ValueError, match="unknown instruction"):
        make_contexts("lab_a", range(1), tasks=(bad,))


def test_unknown_scene_raises_naming_it():
    with pytest.raises(ValueError, match="'mars'"):
        make_contexts("mars", range(1))
    env = make_env()
    with pytest.raises(ValueError, match="'mars'") as info:
        env.reset(Context("c", TASKS[0], 0, "mars"))
    assert "lab_a" in str(info.value)  # lists known scenes


def test_step_before_reset_raises():
    with pytest.raises(RuntimeError, match="before reset"):
        make_env().step(np.zeros(3))


@pytest.mark.parametrize(
    "action", [np.array([np.nan, 0.0, 0.0]), np.array([0.0, np.inf, 0.0]), np.zeros(2), np.zeros((1, 3))]
)
def test_non_finite_or_misshapen_action_raises(action):
    env = make_env()
    env.reset(context(0))
    with pytest.raises(ValueError, match="finite action of shape"):
        env.step(action)


def test_images_are_uint8_rgb_and_state_float32():
    env = make_env()
    obs = env.reset(context(2))
    assert set(obs.images) == {CAMERA}
    image = obs.images[CAMERA]
    assert image.dtype == np.uint8
    assert image.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
    assert obs.state.dtype == np.float32 and obs.state.shape == (3,)
    assert obs.state[2] == 0.0
    assert obs.instruction == TASKS[0]
    assert env.spec.cameras == {CAMERA: (IMAGE_SIZE, IMAGE_SIZE)}
    closed = env.step(np.array([0.0, 0.0, 1.0])).observation
    assert closed.state[2] == 1.0
    assert not np.array_equal(closed.images[CAMERA], image)  # the closed gripper is drawn differently


def test_scenes_look_different():
    env = make_env()
    images = {scene: env.reset(context(1, scene=scene)).images[CAMERA] for scene in SCENES}
    for a, b in itertools.combinations(SCENES, 2):
        assert not np.array_equal(images[a], images[b])


@pytest.mark.parametrize(("kwargs", "match"), [({"image_size": 8}, "image_size"), ({"max_steps": 0}, "max_steps")])
def test_constructor_validates(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PickEnv(**kwargs)


def test_make_contexts_ids_are_stable():
    contexts = make_contexts("workcell", [7, 8])
    assert len(contexts) == 2 * len(TASKS)
    assert contexts[0].context_id == "workcell/0/7"
    assert contexts[-1].context_id == f"workcell/{len(TASKS) - 1}/8"
    assert all(c.scene == "workcell" for c in contexts)
