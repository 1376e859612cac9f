"""Teleoperation on the arm: the dead-man decides, stale input holds, and the runner hands over and back.

The device side runs on a virtual clock (no timing in the assertions); the runner side with the
tiny policy, as the control loop drives it each period."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import observations, tiny_policy
from geometry_msgs.msg import TwistStamped
from hypothesis import given, settings
from hypothesis import strategies as st
from ript_ros.config import TeleopConfig
from ript_ros.control import EpisodeRunner
from ript_ros.convert import InputError
from ript_ros.teleop import Control, Teleop
from sensor_msgs.msg import Joy

from ript_robot.config import RuntimeConfig
from ript_robot.runtime.inference import InferenceWorker
from ript_robot.runtime.loop import EpisodeBuffer, EpisodeController
from ript_robot.runtime.safety import SafetyFilter
from ript_robot.types import Context


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def joy(deadman: bool, close: bool = False, axes: tuple[float, ...] = (0.0, 0.0)) -> Joy:
    buttons = [0] * 8
    buttons[4], buttons[0] = int(deadman), int(close)
    return Joy(axes=list(axes), buttons=buttons)


def teleop(clock: Clock, **overrides) -> Teleop:
    return Teleop(TeleopConfig(enabled=True, joy_axes=[1, 0], **overrides), action_dim=3, gripper_index=2, clock=clock)


def test_only_a_held_fresh_dead_man_hands_the_arm_to_the_person_and_stale_input_holds_within_one_period() -> None:
    clock = Clock()
    t = teleop(clock)
    assert t.decide().control is Control.POLICY  # nothing heard: the policy
    t.on_joy(joy(False, axes=(0.9, -0.4)))
    assert t.decide().control is Control.POLICY  # axes without the dead-man move nothing
    t.on_joy(joy(True, close=True, axes=(0.9, -0.4)))
    decision = t.decide()
    assert decision.control is Control.PERSON and t.takeovers == 1
    np.testing.assert_allclose(decision.command, [-0.4, 0.9, 1.0])  # axis 1 -> dx, axis 0 -> dy, button 0 closes
    clock.now += 0.2  # within max_age_s (0.25): still the person
    assert t.decide().control is Control.PERSON
    clock.now += 0.1  # the device went quiet with the dead-man held: hold, never back to the policy
    held = t.decide()
    assert held.control is Control.HOLD and "dead-man held" in held.reason
    t.on_joy(joy(True))
    assert t.decide().control is Control.PERSON and t.takeovers == 1  # the same takeover goes on
    t.on_joy(joy(False))  # released: the policy, at once
    assert t.decide().control is Control.POLICY
    t.on_joy(joy(True))
    clock.now += 1.0  # a dead-man that went stale while the policy commanded was never a takeover
    t.person = False
    assert t.decide().control is Control.POLICY


@settings(max_examples=200, deadline=None)
@given(
    axes=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=6),
    buttons=st.lists(st.integers(0, 1), max_size=10),
)
def test_any_joy_message_is_taken_or_refused_with_a_message_and_never_yields_a_bad_command(axes, buttons) -> None:
    clock = Clock()
    t = teleop(clock)
    try:
        t.on_joy(Joy(axes=axes, buttons=buttons))
    except InputError as exc:
        assert "teleop Joy message" in str(exc)
        assert t.decide().control is Control.POLICY
        return
    decision = t.decide()
    if decision.control is Control.PERSON:
        assert np.all(np.isfinite(decision.command)) and decision.command.shape == (3,)
    else:
        assert not buttons[4]


def test_a_twist_device_moves_the_arm_only_under_the_dead_man_and_its_own_staleness_holds() -> None:
    clock = Clock()
    t = teleop(clock, source="twist", twist_fields=["linear.x", "linear.y"], scales=[2.0, 2.0])
    t.on_joy(joy(True))
    assert t.decide().control is Control.HOLD  # the dead-man, but no motion heard yet
    msg = TwistStamped()
    msg.twist.linear.x, msg.twist.linear.y = 0.25, -0.1
    t.on_twist(msg)
    np.testing.assert_allclose(t.decide().command, [0.5, -0.2, -1.0])
    clock.now += 0.3
    t.on_joy(joy(True))
    assert t.decide().control is Control.HOLD  # the twist went stale, the dead-man did not
    msg.twist.linear.x = float("nan")
    with pytest.raises(InputError, match="non-finite"):
        t.on_twist(msg)


def test_teleop_settings_that_cannot_work_are_refused_naming_the_key() -> None:
    with pytest.raises(ValueError, match=r"teleop\.scales"):
        TeleopConfig(joy_axes=[0, 1, 2], scales=[1.0])
    with pytest.raises(ValueError, match="different buttons"):
        TeleopConfig(close_button=4, deadman_button=4)
    with pytest.raises(ValueError, match="maps 4 dimensions"):
        Teleop(TeleopConfig(joy_axes=[0, 1, 2, 3], scales=[1.0] * 4), action_dim=3, gripper_index=2)


def test_the_runner_clears_the_policys_queue_on_a_takeover_and_replans_from_the_newest_observation() -> None:
    policy, buffer = tiny_policy(seed=1, chunk_size=6), EpisodeBuffer()
    config = RuntimeConfig(execute_steps=4)
    controller = EpisodeController(policy, config, SafetyFilter(config.safety, 3), [buffer])
    worker = InferenceWorker(policy, deterministic=False)
    runner = EpisodeRunner(controller, worker, plan_ahead_steps=1)
    obs = observations(12)
    try:
        runner.begin(Context("lab_a/0/0", obs[0].instruction, 0))
        assert runner.period(obs[0]).hold  # the first chunk is planned while the arm holds
        assert worker.wait_idle(30)
        for o in obs[1:4]:
            assert runner.period(o).command is not None
        person = np.array([0.3, -0.2, -1.0], np.float32)
        for o in obs[4:7]:  # a person takes over for three periods: their command goes out, filtered
            period = runner.period(o, person)
            np.testing.assert_allclose(period.command, person)
        assert runner.pending is None and not controller.can_step(0)  # the policy's queue was cleared
        released = runner.period(obs[7])  # let go: the policy plans from this observation; the arm holds meanwhile
        assert released.hold
        assert worker.wait_idle(30)
        assert runner.period(obs[8]).command is not None
        meta = runner.finish("operator stop", None)
    finally:
        worker.close()
    episode = buffer.episodes[0]
    assert [s.step for s in episode.steps if s.intervened] == [3, 4, 5]
    assert meta.interventions == 1 and meta.intervened_steps == 3
    assert episode.chunk_observations[-1].timestamp == obs[7].timestamp  # planned from the release step


def test_over_dds_the_bridges_scripted_operator_rescues_a_bad_grasp_and_the_store_says_so(tmp_path) -> None:
    """The sim bridge plays a person with a gamepad (sensor_msgs/Joy): it catches a policy about to grasp beside
    the block, holds the dead-man and drives the expert through the policy node's teleop input to the grasp."""
    from rosutil import ros_context, spinning, wait_for
    from test_nodes import Listener, _run_with_sim

    from ript_robot.data import EpisodeStore

    checkpoint = tiny_policy(seed=3).save(tmp_path / "policy")
    teleop_params = {"teleop.enabled": True, "teleop.joy_axes": [0, 1], "max_steps": 60}
    with ros_context() as ctx:
        policy, sim = _run_with_sim(
            ctx, checkpoint, tmp_path / "store", teleop_params, {"builtin.scripted_operator": True}
        )
        with torch.no_grad():  # a policy that closes the gripper at once, wherever it is
            policy.arm.runner.controller.policy.mean_head.bias[2::3] = 5.0
        listener = Listener(ctx)
        with spinning(ctx, policy, sim, listener):
            wait_for(lambda: listener.status and listener.status[-1].get("last_episode"), timeout=60,
                     what="the first episode to end")  # fmt: skip
    last = listener.status[-1]["last_episode"]
    assert last["interventions"] == 1 and last["success"] is True  # rescued: the person's grasp succeeded
    assert any(s.get("control") == "person" for s in listener.status)  # the tablet saw who was in control
    store = EpisodeStore(tmp_path / "store", create=False).refresh()
    (record,) = [r for r in store.records() if r.episode_id == last["episode_id"]]
    episode = store.read_episode(record.episode_id)
    flagged = [s for s in episode.steps if s.intervened]
    assert flagged and episode.meta.intervened_steps == len(flagged) and episode.meta.interventions == 1
    assert not episode.steps[0].intervened  # the policy's own first step, the one the person caught
    assert episode.reward == 0.0 and episode.meta.label.success  # the policy's reward, the operator's label
