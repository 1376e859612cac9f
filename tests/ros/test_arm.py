"""The policy node on a Franka FR3 through doubles of its JointTrajectoryController and of MoveIt Servo.

The doubles enforce the real controllers' documented rules (ript_ros.arm_double); the node runs the
shipped robot profiles with a policy that takes 300 ms per chunk. Asserted: nothing is ever rejected,
every rollout starts at home, joint 4 stays where a Franka's joint 4 lives, stamps are stored, the stop
answers while the policy is thinking, and generated hostile input never produces a bad command."""

from __future__ import annotations

import time

import numpy as np
import pytest
from armutil import (
    AWAY,
    Fuzzer,
    Operator,
    fr3_jtc_parameters,
    fr3_servo_parameters,
    fuzz_strategy,
    home_error,
    servo_timeouts_while_running,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rclpy.parameter import Parameter
from ript_ros.arm_double import FRANKA_FR3, JointTrajectoryControllerDouble, ServoDouble
from ript_ros.mujoco_arm import PhysicsArmDouble
from ript_ros.policy_node import PolicyNode
from rosutil import call, ros_context, spinning, wait_for
from std_srvs.srv import SetBool, Trigger

from ript_robot.data import EpisodeStore


def overrides(params: dict) -> list[Parameter]:
    """ROS parameter overrides; an empty list is typed as a string array (rclpy would guess bytes)."""
    return [
        Parameter(k, Parameter.Type.STRING_ARRAY, v) if v == [] else Parameter(k, value=v) for k, v in params.items()
    ]


@pytest.mark.parametrize("hardware", ["mock", "mujoco"])
def test_a_slow_policy_drives_a_franka_through_its_trajectory_controller_from_home_every_time(tmp_path, hardware):
    """mock: the command mirrored into the state; mujoco: LIBERO's Panda in physics, torque-tracking the JTC."""
    double = JointTrajectoryControllerDouble if hardware == "mock" else PhysicsArmDouble
    with ros_context() as ctx:
        arm = double(context=ctx, initial_positions=AWAY)
        params = fr3_jtc_parameters(tmp_path, policy_delay_s=0.3, plan_ahead_steps=6)
        node = PolicyNode(context=ctx, parameter_overrides=overrides(params))
        operator = Operator(ctx, auto_start=False)
        node.trigger_configure()
        node.trigger_activate()
        with spinning(ctx, arm, node, operator):
            wait_for(lambda: operator.state() == "resetting", what="the reset toward home")
            early = call(operator, Trigger, "policy/start", Trigger.Request())
            assert not early.success and "not ready to start: resetting" in early.message
            operator.auto_start = True
            wait_for(lambda: operator.state() == "ready", timeout=60, what="the arm at home and the scene prompt")
            assert "scene ready?" in operator.status[-1]["message"]
            call(operator, Trigger, "policy/start", Trigger.Request())
            wait_for(lambda: len(operator.ended()) >= 3, timeout=120, what="three episodes")
            # the stop, called while the policy is planning a chunk
            wait_for(lambda: operator.state() == "running" and node.arm.worker.busy, timeout=30, what="inference")
            received_before = arm.received
            assert call(operator, SetBool, "policy/software_stop", SetBool.Request(data=True)).success
            wait_for(lambda: arm.received > received_before, what="the hold after the stop")
            assert operator.state() == "stopped"
            refused = call(operator, Trigger, "policy/start", Trigger.Request())
            assert not refused.success and "software stop" in refused.message
        assert arm.rejected == {}, arm.rejected  # every trajectory the node sent, the controller took
        assert node.counters["callback_errors"] == 0 and node.counters["faults"] == 0
        store = EpisodeStore(tmp_path / "store", create=False)
        store.refresh()
        episodes = [store.read_episode(r.episode_id) for r in store.records()]
        assert len(episodes) >= 3
        for episode in episodes:
            states = np.stack([s.observation.state for s in episode.steps])
            assert home_error(states[0, :7]) <= 0.02  # every rollout starts at the profile's home pose
            assert np.all(states[:, 3] < -1.2)  # joint 4 lives near -2.36: never pulled toward a [-1, 1] box
            assert np.all((states[:, :7] >= FRANKA_FR3.lower) & (states[:, :7] <= FRANKA_FR3.upper))
            stamps = episode.steps[0].observation.stamps
            assert set(stamps) == {"camera/top", "joint_states", "ee_pose"}
            assert all(abs(t - episode.steps[0].timestamp) < 5.0 for t in stamps.values())
            assert all(o.images for o in episode.chunk_observations)  # each chunk's observation is kept whole


def test_the_servo_profile_homes_and_never_lets_servo_time_out_mid_episode(tmp_path):
    with ros_context() as ctx:
        arm = ServoDouble(context=ctx, initial_xyz=[0.45, 0.15, 0.45])
        params = fr3_servo_parameters(tmp_path, policy_delay_s=0.2, plan_ahead_steps=6)
        node = PolicyNode(context=ctx, parameter_overrides=overrides(params))
        operator = Operator(ctx)
        node.trigger_configure()
        node.trigger_activate()
        with spinning(ctx, arm, node, operator):
            mid_episode = servo_timeouts_while_running(arm, operator, episodes=2, timeout=90)
        assert arm.rejected == {}, arm.rejected
        assert mid_episode == 0  # between episodes the node stops commanding on purpose; Servo halting then is fine
        starts = [ok for _, ok, _ in operator.starts]
        assert starts and all(starts)  # started only once homed: the pose check passed each time


@pytest.fixture
def running_arm(tmp_path_factory):
    """One running node for all of the test's generated examples (torn down before the next test runs)."""
    tmp = tmp_path_factory.mktemp("fuzz")
    with ros_context() as ctx:
        arm = JointTrajectoryControllerDouble(context=ctx)
        node = PolicyNode(context=ctx, parameter_overrides=overrides(fr3_jtc_parameters(tmp, max_steps=100_000)))
        operator, fuzzer = Operator(ctx), Fuzzer(ctx)
        node.trigger_configure()
        node.trigger_activate()
        with spinning(ctx, arm, node, operator, fuzzer):
            wait_for(lambda: operator.state() == "running", timeout=30, what="a running episode")
            yield arm, node, operator, fuzzer


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(fuzz_strategy(FRANKA_FR3.names), min_size=1, max_size=25))
def test_generated_input_never_reaches_the_arm_as_a_bad_command(running_arm, batch):
    arm, node, operator, fuzzer = running_arm
    fuzzer.publish(batch)
    time.sleep(0.05)
    assert arm.rejected == {}, arm.rejected  # non-finite, out of limits or too fast: the JTC double would say
    assert node.counters["callback_errors"] == 0
    answer = call(operator, Trigger, "policy/stop", Trigger.Request(), timeout=5.0)  # the node keeps answering
    assert answer.message


def test_joints_the_arm_does_not_publish_are_refused_with_the_parameter_and_nothing_moves(tmp_path):
    joints = [*FRANKA_FR3.names[:3], "panda_joint4", *FRANKA_FR3.names[4:]]  # one name from another arm
    params = fr3_jtc_parameters(tmp_path, **{"command.joints": joints, "reset.timeout_s": 1.0})
    with ros_context() as ctx:
        arm = JointTrajectoryControllerDouble(context=ctx)
        node = PolicyNode(context=ctx, parameter_overrides=overrides(params))
        operator = Operator(ctx, auto_start=False)
        node.trigger_configure()
        node.trigger_activate()
        with spinning(ctx, arm, node, operator):
            failed = wait_for(
                lambda: next((s for s in operator.status if s["message"].startswith("reset failed")), None),
                timeout=30,
                what="the reset to fail",
            )
            assert "lacks ['panda_joint4']" in failed["message"] and "command.joints" in failed["message"]
            refused = call(operator, Trigger, "policy/start", Trigger.Request())
            assert not refused.success
        assert arm.received == 0  # not one trajectory reached the controller
