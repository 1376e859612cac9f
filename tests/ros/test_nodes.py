"""The policy node and the sim bridge over real DDS: episodes, lifecycle, watchdog, bad input, stops."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import IMAGE_SIZE, chunk_extras, make_env, tiny_policy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import TwistStamped
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from ript_ros.policy_node import LATCHED, RELIABLE, PolicyNode, stamp_seconds
from ript_ros.sim_bridge_node import SimBridgeNode
from rosutil import call, ros_context, spinning, wait_for
from sensor_msgs.msg import Image
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger

from ript_robot.config import LiberoEnvConfig, PolicyConfig
from ript_robot.data import EpisodeStore
from ript_robot.data.schedule import Schedule
from ript_robot.envs.pick import make_contexts
from ript_robot.policies import make_policy
from ript_robot.policies.published import publish_policy

REPO = Path(__file__).parents[2]
WORKSPACE = REPO / "calibration" / "sim_pick_workspace.yaml"
HZ = 30.0


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return tiny_policy(seed=3).save(tmp_path / "policy")


def policy_parameters(checkpoint: Path, store: Path, **extra: object) -> dict[str, object]:
    return {
        "policy": str(checkpoint),
        "store.uri": str(store),
        "runtime.execute_steps": 4,
        "runtime.safety.workspace": str(WORKSPACE),
        "control_hz": HZ,
        "max_steps": 40,
        "reset.enabled": False,  # the sim bridge lays the scene out, arm included
        "command.gripper_close_above": 0.0,  # the simulator's own threshold
        "command.gripper_open_below": 0.0,
        **extra,
    }


def sim_parameters(**extra: object) -> dict[str, object]:
    return {"builtin.image_size": IMAGE_SIZE, "builtin.max_steps": 40, "control_hz": HZ, **extra}


def as_overrides(params: dict[str, object]) -> list[Parameter]:
    return [Parameter(k, value=v) for k, v in params.items()]


def as_cli(params: dict[str, object]) -> list[str]:
    out = ["--ros-args"]
    for k, v in params.items():
        out += ["-p", f"{k}:={json.dumps(v) if not isinstance(v, str) else v}"]
    return out


class Listener(Node):
    """The test's ears: episode status, commands and diagnostics, as they arrive."""

    def __init__(self, context) -> None:
        super().__init__("listener", context=context)
        self.status: list[dict] = []
        self.twists: list[tuple[float, TwistStamped]] = []
        self.diagnostics: list[DiagnosticStatus] = []
        self.create_subscription(
            String, "policy/episode_status", lambda m: self.status.append(json.loads(m.data)), LATCHED
        )
        self.create_subscription(
            TwistStamped, "command/twist", lambda m: self.twists.append((time.monotonic(), m)), RELIABLE
        )
        self.create_subscription(DiagnosticArray, "/diagnostics", lambda m: self.diagnostics.extend(m.status), RELIABLE)

    def state(self) -> str:
        return self.status[-1]["state"] if self.status else ""


def run_until_committed(nodes: list[tuple[str, list[str]]], store: EpisodeStore, n: int, timeout: float) -> list:
    """Start each (module, ROS arguments) as its own process, as `ros2 run` would; once the store holds
    `n` committed rollouts, stop them with SIGINT, check they exited cleanly and return the rollouts."""
    processes = [subprocess.Popen([sys.executable, "-m", module, *arguments]) for module, arguments in nodes]
    try:

        def committed():
            assert all(p.poll() is None for p in processes), "a node exited early; its error is printed above"
            store.refresh()
            return len(store.records()) >= n and store.records()

        records = wait_for(committed, timeout=timeout, what=f"{n} committed episodes")
    finally:
        for p in reversed(processes):
            p.send_signal(signal.SIGINT)
        codes = [p.wait(timeout=30) for p in processes]
    assert codes == [0] * len(processes)
    return records


@pytest.mark.parametrize("family", ["chunked", "quest", "oft", "flow", "flow_vlm", "openvla_oft"])
def test_full_episodes_over_dds_in_separate_processes_are_committed_with_the_sims_label(
    tmp_path: Path, family: str
) -> None:
    """The policy node as an actor: the store's published policy (of each family), the trainer's schedule,
    the sim's labels, and chunks the trainer re-scores to the log-probabilities the node reported."""
    store_uri = tmp_path / "store"
    store = EpisodeStore(store_uri, create=True)
    policy = tiny_policy(seed=3, family=family)
    publish_policy(store.backend, policy)
    contexts = make_contexts("workcell", range(2))[:2]
    Schedule(store.backend).write_round(0, contexts, rollouts_per_context=2)
    params = policy_parameters(Path("store"), store_uri, autostart=True)
    nodes = [("ript_ros.sim_bridge_node", as_cli(sim_parameters())), ("ript_ros.policy_node", as_cli(params))]
    records = run_until_committed(nodes, store, 4, timeout=60)
    assert sorted(r.meta.context.context_id for r in records) == sorted(c.context_id for c in contexts for _ in "kk")
    for record in records:
        meta = record.meta
        assert meta.label is not None and meta.label.source == "sim"
        assert meta.robot_id == "arm-0" and meta.policy_version == 0 and meta.num_steps > 0
        # replaying the stored commands in the simulator gives the label the bridge reported; the outcome
        # message may reach the policy node a frame or, on a loaded machine, several after the final command,
        # so those steps are logged too (the bridge applies nothing after it reported), and it ends the episode
        episode = store.read_episode(meta.episode_id)
        env = make_env(max_steps=40)
        env.reset(meta.context)
        results = [env.step(step.action) for step in episode.steps]
        done_at = next(i for i, r in enumerate(results, start=1) if r.done)
        assert bool(results[done_at - 1].success) == meta.label.success, meta.end_reason
        assert len(episode.steps) >= done_at
        assert meta.end_reason == ("success" if meta.label.success else "failure") + " reported"
        with torch.no_grad():
            rescored = policy.log_prob(
                policy.preprocess(episode.chunk_observations),
                torch.from_numpy(np.stack([c.actions for c in episode.chunks])),
                chunk_extras(episode.chunks),  # a flow policy's chains, read back from the store
            )
        reported = np.stack([c.step_log_prob for c in episode.chunks])
        np.testing.assert_allclose(rescored.numpy(), reported, atol=1e-4)
    assert store.verify().ok


def test_libero_episodes_over_dds_with_the_packaged_parameter_files(tmp_path: Path) -> None:
    """The sim bridge serving LIBERO and the policy node, as sim_libero.launch.xml starts them."""
    from sim_bridge.libero_env import LiberoEnv, libero_contexts

    store_uri = tmp_path / "store"
    store = EpisodeStore(store_uri, create=True)
    spec = LiberoEnv.from_config(LiberoEnvConfig(suite="libero_object", image_size=64)).spec
    publish_policy(store.backend, make_policy(PolicyConfig(hidden_dim=32, channels=4, keypoints=4), spec))
    (context,) = libero_contexts("libero_object", [0], [3])
    Schedule(store.backend).write_round(0, [context], rollouts_per_context=2)
    config = REPO / "ros2_ws" / "src" / "ript_ros" / "config"
    bridge_params = {"libero.suite": "libero_object", "libero.image_size": 64}
    policy_params = {"store.uri": str(store_uri), "max_steps": 10, "autostart": True}

    def args(params_file: str, params: dict[str, object]) -> list[str]:
        return ["--ros-args", "--params-file", str(config / params_file), *as_cli(params)[1:]]

    nodes = [
        ("ript_ros.sim_bridge_node", args("sim_bridge_libero.yaml", bridge_params)),
        ("ript_ros.policy_node", args("policy_node_libero.yaml", policy_params)),
    ]
    records = run_until_committed(nodes, store, 2, timeout=180)
    for record in records:
        meta = record.meta
        assert meta.context == context and meta.robot_id == "libero-ros-0" and meta.num_steps == 10
        assert meta.label is not None and meta.label.source == "sim" and meta.label.success is False
    episode = store.read_episode(records[0].episode_id)
    assert episode.steps[0].observation.images["agentview"].shape == (64, 64, 3)
    assert np.stack([s.action for s in episode.steps]).shape == (10, 7)


def running_steps(policy: PolicyNode) -> int:
    """Steps of the episode now running (0 between episodes)."""
    return policy.arm.runner.steps if policy.arm is not None else 0


def _lifecycle(listener: Node, transition: int) -> bool:
    return call(
        listener, ChangeState, "policy/change_state", ChangeState.Request(transition=Transition(id=transition))
    ).success


def _state(listener: Node) -> str:
    return call(listener, GetState, "policy/get_state", GetState.Request()).current_state.label


def test_lifecycle_configure_activate_deactivate_cleanup(checkpoint: Path, tmp_path: Path) -> None:
    with ros_context() as ctx:
        bad = PolicyNode(
            context=ctx,
            parameter_overrides=as_overrides(
                policy_parameters(tmp_path / "missing", tmp_path / "store", context_source="instruction")
            ),
        )
        node = None
        listener = Listener(ctx)
        with spinning(ctx, bad, listener):
            assert _state(listener) == "unconfigured"
            assert not _lifecycle(listener, Transition.TRANSITION_CONFIGURE)  # no checkpoint there
            assert _state(listener) == "unconfigured"
            assert "configure failed" in wait_for(
                lambda: listener.state() == "unconfigured" and listener.status[-1]["message"], what="status"
            )
            assert "missing" in listener.status[-1]["message"]
        listener = Listener(ctx)
        node = PolicyNode(
            context=ctx,
            parameter_overrides=as_overrides(
                policy_parameters(checkpoint, tmp_path / "store", context_source="instruction")
            ),
        )
        with spinning(ctx, node, listener):
            assert _lifecycle(listener, Transition.TRANSITION_CONFIGURE)
            assert _state(listener) == "inactive"
            refused = call(listener, Trigger, "policy/start", Trigger.Request())
            assert not refused.success and "inactive" in refused.message
            assert _lifecycle(listener, Transition.TRANSITION_ACTIVATE)
            assert _state(listener) == "active"
            wait_for(lambda: listener.state() == "waiting", what="waiting for an instruction")
            assert "instruction" in listener.status[-1]["message"]
            assert _lifecycle(listener, Transition.TRANSITION_DEACTIVATE)
            assert _state(listener) == "inactive"
            wait_for(lambda: listener.twists, what="the hold command on deactivate")
            assert _lifecycle(listener, Transition.TRANSITION_CLEANUP)
            assert _state(listener) == "unconfigured"


def _run_with_sim(ctx, checkpoint: Path, store: Path, policy_extra: dict, sim_extra: dict):
    policy = PolicyNode(
        context=ctx,
        parameter_overrides=as_overrides(
            policy_parameters(checkpoint, store, context_source="instruction", scene="workcell", **policy_extra)
        ),
    )
    sim = SimBridgeNode(
        context=ctx, parameter_overrides=as_overrides(sim_parameters(instruction="pick up the red block", **sim_extra))
    )
    policy.trigger_configure()
    policy.trigger_activate()
    return policy, sim


def test_a_stalled_camera_holds_the_arm_within_two_control_periods(checkpoint: Path, tmp_path: Path) -> None:
    with ros_context() as ctx:
        policy, sim = _run_with_sim(ctx, checkpoint, tmp_path / "store", {"max_steps": 400, "stale_abort_s": 0.5}, {})
        # a policy that never grasps, so the episode runs until the camera stalls
        with torch.no_grad():
            policy.arm.runner.controller.policy.mean_head.bias[2::3] = -5.0
        listener = Listener(ctx)
        with spinning(ctx, policy, sim, listener):
            wait_for(lambda: running_steps(policy) > 5, what="a running episode")
            sim.image_pubs = {}  # the camera driver dies; the arm state keeps coming
            stalled_at = time.monotonic()
            hold = wait_for(
                lambda: next(
                    (m for t, m in listener.twists if t > stalled_at and m.twist.linear.x == m.twist.linear.y == 0.0),
                    None,
                ),
                what="a hold command",
            )
            # on the stamps: the last frame the node got (its driver's stamp) and the hold it sent
            reaction = stamp_seconds(hold.header.stamp) - policy.arm.inputs.stamps["camera/top"]
            assert reaction <= policy.cfg.max_input_age_s + 2 / HZ
            wait_for(lambda: listener.status[-1].get("last_episode"), what="the episode to end")
            last = listener.status[-1]["last_episode"]
            assert last["reason"].startswith("fault: stale input camera/top") and last["success"] is None
            assert policy.counters["holds"] >= 1


def test_a_malformed_image_gives_a_clear_diagnostic_and_no_crash(checkpoint: Path, tmp_path: Path) -> None:
    with ros_context() as ctx:
        node = PolicyNode(
            context=ctx,
            parameter_overrides=as_overrides(
                policy_parameters(checkpoint, tmp_path / "store", context_source="instruction")
            ),
        )
        camera = Node("camera_driver", context=ctx)
        pub = camera.create_publisher(Image, "camera/top/image_raw", qos_profile_sensor_data)
        listener = Listener(ctx)
        node.trigger_configure()
        node.trigger_activate()
        with spinning(ctx, node, camera, listener):
            wait_for(lambda: pub.get_subscription_count() > 0, what="the policy node's camera subscription")
            depth = Image(height=IMAGE_SIZE, width=IMAGE_SIZE, encoding="16UC1", step=IMAGE_SIZE * 2)
            depth.data = bytes(IMAGE_SIZE * IMAGE_SIZE * 2)
            big = Image(height=48, width=64, encoding="rgb8", step=64 * 3)
            big.data = bytes(48 * 64 * 3)
            for msg in (depth, big):
                msg.header.stamp = camera.get_clock().now().to_msg()
                pub.publish(msg)
                time.sleep(0.2)
            errors = wait_for(
                lambda: [d.message for d in listener.diagnostics if d.level == DiagnosticStatus.ERROR],
                timeout=5,
                what="an ERROR diagnostic",
            )
            assert any("16UC1" in e and "rgb8" in e for e in errors) or node.counters["rejected_inputs"] == 2
            assert node.counters["rejected_inputs"] == 2
            assert "64x48" in node.input_error[1] and "resize_images" in node.input_error[1]
            good = Image(height=IMAGE_SIZE, width=IMAGE_SIZE, encoding="bgr8", step=IMAGE_SIZE * 3)
            good.data = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8).tobytes()
            good.header.stamp = camera.get_clock().now().to_msg()
            pub.publish(good)
            wait_for(lambda: "top" in node.arm.inputs.images, what="a good frame accepted after bad ones")


def test_software_stop_holds_ends_the_episode_and_latches(checkpoint: Path, tmp_path: Path) -> None:
    with ros_context() as ctx:
        policy, sim = _run_with_sim(ctx, checkpoint, tmp_path / "store", {"max_steps": 400}, {})
        with torch.no_grad():
            policy.arm.runner.controller.policy.mean_head.bias[2::3] = -5.0  # never grasps
        listener = Listener(ctx)
        with spinning(ctx, policy, sim, listener):
            wait_for(lambda: running_steps(policy) > 2, what="an episode")
            stopped_at = time.monotonic()
            engaged = call(listener, SetBool, "policy/software_stop", SetBool.Request(data=True))
            assert engaged.success
            wait_for(lambda: listener.state() == "stopped", what="the stopped state")
            assert listener.status[-1]["last_episode"]["reason"] == "software stop"
            holds = [m for t, m in listener.twists if t >= stopped_at and m.twist.linear.x == m.twist.linear.y == 0.0]
            assert holds, "the software stop must send a hold command"
            refused = call(listener, Trigger, "policy/start", Trigger.Request())
            assert not refused.success and "software stop" in refused.message
            time.sleep(0.3)
            assert listener.state() == "stopped"  # the sim bridge's start calls are refused too
            assert call(listener, SetBool, "policy/software_stop", SetBool.Request(data=False)).success
            wait_for(lambda: listener.state() == "running", what="a new episode after the release")
        store = EpisodeStore(tmp_path / "store", create=False)
        store.refresh()
        reasons = [r.meta.end_reason for r in store.records()]
        assert "software stop" in reasons


@pytest.mark.parametrize("validate", [False, True], ids=["nan-action", "policy-raises"])
def test_a_nan_action_or_a_failing_policy_holds_the_arm_and_ends_the_episode_as_a_fault(
    checkpoint: Path, tmp_path: Path, validate: bool
) -> None:
    previous = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(validate)  # off: NaN actions reach the filter
    try:
        with ros_context() as ctx:
            policy, sim = _run_with_sim(ctx, checkpoint, tmp_path / "store", {}, {})
            with torch.no_grad():
                policy.arm.runner.controller.policy.mean_head.bias[0] = float("nan")
            listener = Listener(ctx)
            with spinning(ctx, policy, sim, listener):
                ended = wait_for(lambda: listener.status and listener.status[-1].get("last_episode"), what="an end")
                expected = "fault: policy error" if validate else "fault: non-finite action"
                # with the simulator labeling (label_source sim) a policy fault is a known failure
                assert ended["reason"].startswith(expected) and ended["success"] is False
                assert policy.counters["faults"] >= 1
                assert all(np.isfinite(m.twist.linear.x) for _, m in listener.twists)  # no NaN reached the arm
                wait_for(lambda: listener.state() in ("ready", "running"), what="the node to carry on")
    finally:
        torch.distributions.Distribution.set_default_validate_args(previous)


def test_without_a_workspace_calibration_the_node_refuses_to_configure(checkpoint: Path, tmp_path: Path) -> None:
    with ros_context() as ctx:
        params = policy_parameters(checkpoint, tmp_path / "store", **{"runtime.safety.workspace": ""})
        node = PolicyNode(context=ctx, parameter_overrides=as_overrides(params))
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert node.phase == "unconfigured" and "runtime.safety.workspace" in node.phases.message
        node.destroy_node()


def test_dry_run_sends_nothing_to_the_arm_and_stores_nothing(checkpoint: Path, tmp_path: Path) -> None:
    with ros_context() as ctx:
        policy, sim = _run_with_sim(ctx, checkpoint, tmp_path / "store", {"dry_run": True}, {})
        listener = Listener(ctx)
        dry: list[TwistStamped] = []
        listener.create_subscription(TwistStamped, "policy/dry_run/twist", dry.append, 10)
        with spinning(ctx, policy, sim, listener):
            wait_for(lambda: len(dry) > 10, what="commands on ~/dry_run/twist")
            assert listener.twists == [] and sim.commands_applied == 0
        assert not (tmp_path / "store").exists() or EpisodeStore(tmp_path / "store", create=False).records() == []
