"""What the policy node builds at configure: the policy, the arm's settings checked together, and the loop.

`ArmSetup` refuses, with the parameter and the fix, settings that would move an arm wrongly:
a twist scale that disagrees with the workspace's metres per step, a twist or pose frame
other than the calibration's, joint limits that do not fit the adapter, a home pose outside
the workspace or the joint limits, no home pose while the reset is on. It then owns the
parts one arm runs: inputs, safety filter, command adapter, episode runner with its inference
worker, homing, the episode writer, the schedule and the policy follower.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from operator import attrgetter
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState, Joy
from std_msgs.msg import Bool, Float64, String
from trajectory_msgs.msg import JointTrajectory

from ript_robot.calibration.models import WorkspaceCalibration, load_workspace
from ript_robot.config import ConfigError
from ript_robot.data.schedule import Schedule
from ript_robot.data.store import EpisodeStore
from ript_robot.policies import CheckpointError, Policy, load_policy
from ript_robot.policies.published import PolicyFollower
from ript_robot.runtime.inference import InferenceWorker
from ript_robot.runtime.loop import EpisodeController
from ript_robot.runtime.safety import SafetyFilter
from ript_robot.runtime.timing import CycleTimer
from ript_robot.types import Context, Observation
from ript_ros.adapters import CommandAdapter
from ript_ros.config import PolicyNodeConfig
from ript_ros.control import EpisodeRunner
from ript_ros.inputs import ArmInputs
from ript_ros.phases import Phase, PhaseMachine
from ript_ros.reset import Homing
from ript_ros.teleop import Teleop

LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def warm_up(policy: Policy, cameras: list[str]) -> None:
    """Run the policy a few times on a blank observation, so the first real chunk is not the slowest."""
    h, w = policy.image_shape
    blank = Observation({c: np.zeros((h, w, 3), np.uint8) for c in cameras}, np.zeros(policy.state_dim, np.float32), "")
    for _ in range(3):
        policy.act([blank], deterministic=True)


def joint_limits(cfg: PolicyNodeConfig) -> dict[str, tuple[float, float, float]]:
    """(lower, upper, velocity) of each joint the trajectory adapter commands, by name."""
    c = cfg.command
    return dict(zip(c.joints, zip(c.joint_lower, c.joint_upper, c.joint_velocity, strict=True), strict=True))


def twist_scale(cfg: PolicyNodeConfig, workspace: WorkspaceCalibration | None) -> float:
    """m/s per action unit: `command.twist_scale`, or derived from the workspace; ConfigError when they disagree."""
    c = cfg.command
    if workspace is None:
        if not c.twist_scale:
            raise ConfigError("command.twist_scale is 0 (derive it from the workspace) but no workspace is set")
        return c.twist_scale
    derived = workspace.metres_per_action * cfg.control_hz
    if c.twist_scale and abs(c.twist_scale - derived) > 0.01 * derived:
        raise ConfigError(
            f"command.twist_scale {c.twist_scale} m/s per unit disagrees with the workspace: metres_per_action "
            f"{workspace.metres_per_action} m per step at control_hz {cfg.control_hz} is {derived:.4g} m/s per unit. "
            "Set command.twist_scale to 0 to derive it, or fix whichever is wrong"
        )
    return derived


def check_arm(cfg: PolicyNodeConfig, workspace: WorkspaceCalibration | None) -> str:
    """The frame commands and poses are in; ConfigError for settings that disagree with each other."""
    c, r = cfg.command, cfg.reset
    frame = workspace.frame if workspace is not None else c.twist_frame
    if c.twist_frame and workspace is not None and c.twist_frame != workspace.frame:
        raise ConfigError(
            f"command.twist_frame '{c.twist_frame}' differs from the workspace calibration's frame "
            f"'{workspace.frame}': leave twist_frame empty to use the calibration's, or re-calibrate in that frame"
        )
    if c.adapter == "twist" and not frame:
        raise ConfigError("the twist needs a frame_id: set command.twist_frame or a workspace calibration")
    if not r.enabled:
        return frame
    if c.adapter == "joint_trajectory":
        home = np.asarray(r.home_joints)
        if len(home) != len(c.joints):
            raise ConfigError(
                f"reset.home_joints has {len(home)} values for command.joints {c.joints}: give the home position "
                "of each joint (see the robot profiles in config/), or set reset.enabled false"
            )
        outside = [
            j for j, q, lo, hi in zip(c.joints, home, c.joint_lower, c.joint_upper, strict=True) if not lo <= q <= hi
        ]
        if outside:
            raise ConfigError(f"reset.home_joints puts {outside} outside command.joint_lower/joint_upper")
        return frame
    if workspace is None:
        raise ConfigError("the twist reset servos to reset.home_position in the workspace: set a workspace calibration")
    home = np.asarray(r.home_position)
    if len(home) != len(workspace.box.low) or not workspace.box.contains(home):
        raise ConfigError(
            f"reset.home_position {r.home_position} is not a point inside the workspace box "
            f"{workspace.box.low}..{workspace.box.high} (frame {workspace.frame}): pick a home inside it"
        )
    return frame


class ArmSetup:
    """Everything one arm runs, built from the node's parameters; see the module docstring."""

    def __init__(self, cfg: PolicyNodeConfig, clock: Callable[[], float]):
        """clock: the node's ROS clock in seconds (inputs are aged by their stamps on it)."""
        self.cfg = cfg
        self.worker: InferenceWorker | None = None
        self.writer = None
        ws_path = cfg.runtime.safety.workspace
        if cfg.require_workspace and not ws_path:
            raise ConfigError(
                "no workspace calibration: set runtime.safety.workspace to the calibration YAML "
                "(or require_workspace to false, in simulation only)"
            )
        self.workspace = load_workspace(ws_path) if ws_path else None
        frame = check_arm(cfg, self.workspace)
        if not cfg.topics.cameras:
            raise ConfigError("topics.cameras is empty: name at least the camera the policy looks through")
        needs_store = cfg.policy == "store" or cfg.context_source == "schedule" or (cfg.record and not cfg.dry_run)
        self.store = EpisodeStore(cfg.store.uri, create=True) if needs_store else None
        self.follower = None
        if cfg.policy == "store":
            self.follower = PolicyFollower(self.store.backend)
            self.follower.update()
            if self.follower.policy is None:
                raise CheckpointError(
                    self.follower.last_error
                    or f"no policy published in store {cfg.store.uri}: start `ript train --store {cfg.store.uri}` "
                    "or set the parameter policy to a checkpoint folder"
                )
            policy = self.follower.policy
        else:
            policy = load_policy(cfg.policy)
        warm_up(policy, cfg.topics.cameras)
        joint_space = cfg.command.adapter == "joint_trajectory"
        # the workspace's position limits predict end-effector motion from twist actions; joint actions are
        # limited by the adapter's joint limits instead, and the measured end effector by `workspace_breach`
        safety_ws = None if joint_space else self.workspace
        self.safety = SafetyFilter(cfg.runtime.safety, policy.action_dim, workspace=safety_ws)
        bound = float(np.max(np.abs(np.concatenate([self.safety.low, self.safety.high]))))
        self.adapter = CommandAdapter(
            cfg.command, policy.action_dim, cfg.control_hz, 1.0 if joint_space else twist_scale(cfg, self.workspace),
            frame, bound,
        )  # fmt: skip
        if self.store is not None and cfg.record and not cfg.dry_run:
            s = cfg.store
            self.writer = self.store.writer(
                chunk_frames=s.chunk_frames, flush_frames=s.flush_frames, compressor=s.compressor, clevel=s.clevel
            )
        self.schedule = Schedule(self.store.backend) if cfg.context_source == "schedule" else None
        sinks = [self.writer] if self.writer else []
        controller = EpisodeController(policy, cfg.runtime, self.safety, sinks, cfg.robot_id, cfg.deterministic)
        self.worker = InferenceWorker(policy, cfg.deterministic, cfg.policy_delay_s)
        self.runner = EpisodeRunner(controller, self.worker, cfg.plan_ahead_steps)
        pose_frame = self.workspace.frame if self.workspace is not None else ""
        self.inputs = ArmInputs(
            cfg.topics, tuple(policy.image_shape), cfg.command.joints if joint_space else [], pose_frame,
            cfg.max_input_age_s, cfg.max_clock_skew_s, clock, joint_limits(cfg) if joint_space else None,
        )  # fmt: skip
        # a person's takeover (teleoperation), when a device is configured
        self.teleop = Teleop(cfg.teleop, policy.action_dim, cfg.command.gripper_index) if cfg.teleop.enabled else None
        self.homing = Homing(cfg.reset, self.adapter, self.safety, self.workspace)
        self.slot_id: str | None = None  # the schedule slot of the claimed context
        self.cycle = CycleTimer(cfg.control_hz)  # warns when control periods come late or overrun

    @property
    def policy_version(self) -> int:
        return self.runner.controller.policy.version

    def next_context(self, instruction: str) -> tuple[Phase, str, Context | None]:
        """Between episodes: load a newer published policy, then claim the next context (its slot
        in `slot_id`). Returns READY with the context, or the phase to wait in and why."""
        cfg = self.cfg
        if self.follower is not None and self.follower.update():
            try:
                policy = self.follower.policy
                self.worker.call(lambda _: warm_up(policy, cfg.topics.cameras))
                self.runner.controller.set_policy(policy)
                self.worker.set_policy(policy)
            except (ValueError, RuntimeError) as exc:
                return Phase.WAITING, f"cannot run policy v{self.follower.version}: {exc}", None
        version = self.policy_version
        if self.schedule is not None:
            if self.schedule.finished():
                return Phase.DONE, "the trainer marked the schedule done", None
            slots = self.schedule.claim(version, cfg.robot_id, 1)
            if not slots:
                return Phase.WAITING, f"no scheduled work for policy v{version} yet", None
            self.slot_id = slots[0].slot_id
            return Phase.READY, "", slots[0].context
        self.slot_id = None  # an instruction run: kept for people and SFT, never in a RIPT group
        if not instruction:
            return Phase.WAITING, f"waiting for an instruction on {cfg.topics.instruction_topic}", None
        return Phase.READY, "", Context(f"{cfg.scene}/{instruction}", instruction, seed=0, scene=cfg.scene)

    def start_problem(self, phases: PhaseMachine, stopped: bool) -> str:
        """Why `~/start` must refuse now ('' when it may start): stop, phase, stale inputs, pose away from home."""
        if stopped:
            return "the software stop is engaged: release it (software_stop false) first"
        if phases.phase is not Phase.READY:
            return f"not ready to start: {phases.phase.value} ({phases.message})"
        stale = self.inputs.stale()
        if stale or self.inputs.state() is None:
            names = ", ".join(stale) or "the arm state"
            last = f" (last refused input: {self.inputs.last_error})" if self.inputs.last_error else ""
            return f"inputs are stale or invalid: {names}{last}; check the drivers"
        if self.cfg.reset.enabled:
            error, what = self.homing.pose_error(self.inputs)
            if error > self.homing.tolerance():
                return (
                    f"the arm is not at its home pose: {what} (tolerance {self.homing.tolerance()}); wait for the reset"
                )
        return ""

    def workspace_breach(self) -> str:
        """For joint actions: '' while the measured end effector is inside the workspace box, else why not."""
        if self.workspace is None or self.cfg.command.adapter != "joint_trajectory" or self.inputs.pose is None:
            return ""
        position = self.inputs.pose[:3]
        if len(self.workspace.box.low) != 3 or self.workspace.box.contains(position):
            return ""
        return f"the end effector left the workspace at {np.round(position, 3).tolist()}"

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def create_io(node: Any, cfg: PolicyNodeConfig) -> tuple[list[Any], dict[str, Any]]:
    """The policy node's subscriptions (sensors in its input group, the outcome in its safety group)
    and its command publishers by kind; with `dry_run` the commands go to ~/dry_run/<kind> only."""
    t, g = cfg.topics, node.input_group
    subs = []
    for camera in t.cameras:
        topic = t.image_topic.format(camera=camera)
        kind, topic = (CompressedImage, f"{topic}/compressed") if t.image_transport == "compressed" else (Image, topic)
        callback = functools.partial(node._on_input, attrgetter("inputs.on_image"), camera)
        subs.append(node.create_subscription(kind, topic, callback, qos_profile_sensor_data, callback_group=g))
    sensors = [(JointState, t.state_topic, attrgetter("inputs.on_joint_state"))] if node.arm.inputs.joint_names else []
    sensors += [(PoseStamped, t.ee_pose_topic, attrgetter("inputs.on_pose"))] if t.ee_pose_topic else []
    if node.arm.teleop is not None:  # a person's device: the dead-man (and maybe the motion) on Joy
        sensors.append((Joy, cfg.teleop.joy_topic, attrgetter("teleop.on_joy")))
        if cfg.teleop.source == "twist":
            sensors.append((TwistStamped, cfg.teleop.twist_topic, attrgetter("teleop.on_twist")))
    for kind, topic, route in sensors:
        callback = functools.partial(node._on_input, route)
        subs.append(node.create_subscription(kind, topic, callback, qos_profile_sensor_data, callback_group=g))
    subs.append(node.create_subscription(String, t.instruction_topic, node._on_instruction, LATCHED, callback_group=g))
    subs.append(
        node.create_subscription(Bool, t.outcome_topic, node._on_outcome, RELIABLE, callback_group=node.safety_group)
    )
    c = cfg.command
    kinds = {
        "twist": (TwistStamped, c.twist_topic),
        "gripper": (Float64, c.gripper_topic),
        "trajectory": (JointTrajectory, c.trajectory_topic),
    }
    used = ["trajectory" if c.adapter == "joint_trajectory" else "twist"] + ["gripper"] * (c.gripper_index >= 0)
    publishers = {}
    for kind in used:
        msg_type, topic = kinds[kind]
        if cfg.dry_run:  # nothing reaches the arm; the would-be commands go where people can look at them
            topic = f"~/dry_run/{kind}"
        publishers[kind] = node.create_lifecycle_publisher(msg_type, topic, RELIABLE)
    return subs, publishers
