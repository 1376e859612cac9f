"""The policy node: the shared control loop on an arm, as a ROS 2 lifecycle node.

configure loads the policy (a checkpoint folder, or the store's latest published version,
hash-verified) and warms it up; activate starts the control timer; deactivate ends any
episode and holds the arm. Each frame of the first camera triggers one control tick, so a
command answers the newest picture: the tick runs `EpisodeController` (the very code the
simulated rollouts run), which plans chunks, applies the safety filter and logs every step
to the episode store. The control timer is the watchdog: when any input is older than
`max_input_age_s` it holds the arm, and after `stale_abort_s` it ends the episode as a
fault. Contexts come from the store's schedule (RIPT) or from the latched instruction.
An episode ends at max steps, on the outcome topic (simulator or detector), on the stop
or software-stop service, or on a non-finite action. New weights load only between episodes.

Services: ~/start and ~/stop (std_srvs/Trigger), ~/software_stop (std_srvs/SetBool: true
engages a latched stop, false releases it). Topics out: the command adapter's topics,
~/episode_status (std_msgs/String, JSON, transient local), /diagnostics.
"""

from __future__ import annotations

import gc
import json
import sys
import time
from collections import deque
from typing import Any

import numpy as np
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Bool, Float64, String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from ript_robot.config import ConfigError
from ript_robot.data.checkpoints import PolicyFollower
from ript_robot.data.schedule import Schedule
from ript_robot.data.store import EpisodeStore, StoreError
from ript_robot.policies import CheckpointError, Policy, load_policy
from ript_robot.runtime.loop import FAULT_REASON, EpisodeController
from ript_robot.runtime.safety import SafetyFilter
from ript_robot.runtime.timing import CycleTimer, Watchdog
from ript_robot.types import Context, Label, Observation
from ript_ros.config import PolicyNodeConfig
from ript_ros.convert import (
    CommandAdapter,
    InputError,
    compressed_to_rgb,
    image_to_rgb,
    joint_state_to_vector,
    pose_to_vector,
)
from ript_ros.params import declare, read
from ript_ros.spin import spin

LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
SLOT = 0  # one arm: one episode slot of the controller


def stamp_seconds(stamp: Any) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


class PolicyNode(LifecycleNode):
    """Runs a VLA policy on an arm through ROS 2; see the module docstring."""

    def __init__(self, name: str = "policy", **kwargs: Any):
        super().__init__(name, **kwargs)
        declare(self, PolicyNodeConfig)
        self.cfg: PolicyNodeConfig | None = None
        self.phase = "unconfigured"
        self.message = ""
        self.current_context: Context | None = None
        self.stopped = False  # the software stop is latched
        self.last_episode: dict[str, Any] | None = None
        self.input_error: tuple[float, str] | None = None
        self.counters = {"holds": 0, "rejected_frames": 0, "frames_without_tick": 0, "episodes": 0, "faults": 0}
        self.latencies: deque[float] = deque(maxlen=10_000)  # camera stamp -> command out, seconds
        self.plan_times: deque[float] = deque(maxlen=10_000)
        self._status_seq = 0
        self._timer = None
        self._io_subscriptions: list[Any] = []
        self.status_pub = self.create_publisher(String, "~/episode_status", LATCHED)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", RELIABLE)
        # the services exist in every state: a software stop must always be reachable
        self.create_service(Trigger, "~/start", self._on_start)
        self.create_service(Trigger, "~/stop", self._on_stop)
        self.create_service(SetBool, "~/software_stop", self._on_software_stop)
        self._publish_status()

    # ---- lifecycle -------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._configure()
        except (ConfigError, CheckpointError, StoreError, ValueError, FileNotFoundError) as exc:
            self.get_logger().error(f"configure failed: {exc}")
            self._set_phase("unconfigured", f"configure failed: {exc}")
            self._release()
            return TransitionCallbackReturn.FAILURE
        self._set_phase("inactive", f"policy v{self.controller.policy.version} loaded; activate to run")
        return TransitionCallbackReturn.SUCCESS

    def _configure(self) -> None:
        cfg = self.cfg = read(self, PolicyNodeConfig)
        if cfg.require_workspace and not cfg.runtime.safety.workspace:
            raise ConfigError(
                "no workspace calibration: set runtime.safety.workspace to the calibration YAML "
                "(or require_workspace to false, in simulation only)"
            )
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        needs_store = cfg.policy == "store" or cfg.context_source == "schedule" or (cfg.record and not cfg.dry_run)
        self.store = EpisodeStore(cfg.store.uri, create=True) if needs_store else None
        self.follower = None
        if cfg.policy == "store":
            assert self.store is not None
            self.follower = PolicyFollower(self.store.backend)
            self.follower.update()
            if self.follower.policy is None:
                raise CheckpointError(
                    f"no policy published in store {cfg.store.uri}: start `ript train --store {cfg.store.uri}` "
                    "or set the parameter policy to a checkpoint folder"
                )
            policy = self.follower.policy
        else:
            policy = load_policy(cfg.policy)
        self._warm_up(policy)
        safety = SafetyFilter(cfg.runtime.safety, policy.action_dim)
        self.adapter = CommandAdapter(cfg.command, policy.action_dim, cfg.control_hz)
        self.writer = None
        if cfg.record and not cfg.dry_run:
            s = cfg.store
            assert self.store is not None
            self.writer = self.store.writer(
                chunk_frames=s.chunk_frames, flush_frames=s.flush_frames, compressor=s.compressor, clevel=s.clevel
            )
        self.schedule = Schedule(self.store.backend) if cfg.context_source == "schedule" and self.store else None
        sinks = [self.writer] if self.writer else []
        self.controller = EpisodeController(policy, cfg.runtime, safety, sinks, cfg.robot_id, cfg.deterministic)
        cameras = list(cfg.topics.cameras)
        if len(cameras) < 1:
            raise ConfigError("topics.cameras is empty: name at least the camera the policy looks through")
        self.watchdog = Watchdog([f"camera/{c}" for c in cameras] + ["state"], cfg.max_input_age_s)
        self.cycle = CycleTimer(cfg.control_hz)  # warns when frames arrive too far apart or ticks overrun
        self.images: dict[str, np.ndarray] = {}
        self.frame_stamps: dict[str, float] = {}
        self.state: np.ndarray | None = None
        self.instruction = ""
        self._frames = 0  # primary frames received while an episode runs
        self._stale_since: float | None = None
        self._ending_deadline: float | None = None
        self._next_poll = 0.0
        self._create_io(cfg, cameras, policy)

    def _warm_up(self, policy: Policy) -> None:
        """Run the policy a few times on a blank observation, so the first real tick is not the slowest."""
        h, w = policy.image_shape
        blank = Observation(
            images={c: np.zeros((h, w, 3), np.uint8) for c in self.cfg.topics.cameras},
            state=np.zeros(policy.state_dim, np.float32),
            instruction="warm up",
        )
        for _ in range(3):
            policy.act([blank], deterministic=True)

    def _create_io(self, cfg: PolicyNodeConfig, cameras: list[str], policy: Policy) -> None:
        t = cfg.topics
        for camera in cameras:
            topic = t.image_topic.format(camera=camera)
            if t.image_transport == "compressed":
                kind, topic = CompressedImage, f"{topic}/compressed"
            else:
                kind = Image
            callback = self._image_callback(camera, primary=camera == cameras[0], hw=tuple(policy.image_shape))
            self._io_subscriptions.append(self.create_subscription(kind, topic, callback, qos_profile_sensor_data))
        state_kind = JointState if t.state_source == "joint_states" else PoseStamped
        self._io_subscriptions += [
            self.create_subscription(state_kind, t.state_topic, self._on_state, qos_profile_sensor_data),
            self.create_subscription(String, t.instruction_topic, self._on_instruction, LATCHED),
            self.create_subscription(Bool, t.outcome_topic, self._on_outcome, RELIABLE),
        ]
        c = cfg.command
        kinds = {
            "twist": (TwistStamped, c.twist_topic),
            "gripper": (Float64, c.gripper_topic),
            "trajectory": (JointTrajectory, c.trajectory_topic),
        }
        used = ["trajectory"] if c.adapter == "joint_trajectory" else ["twist"] + ["gripper"] * (c.gripper_index >= 0)
        self.publishers_by_kind = {}
        for kind in used:
            msg_type, topic = kinds[kind]
            if cfg.dry_run:  # nothing reaches the arm; the would-be commands go where people can look at them
                topic = f"~/dry_run/{kind}"
            self.publishers_by_kind[kind] = self.create_lifecycle_publisher(msg_type, topic, RELIABLE)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        assert self.cfg is not None
        # at twice the control rate, so a stale input is caught within half a period of going stale
        self._timer = self.create_timer(0.5 / self.cfg.control_hz, self._on_timer)
        self._diagnostics_timer = self.create_timer(1.0, self._publish_diagnostics)
        result = super().on_activate(state)  # activates the lifecycle publishers
        self._set_phase("idle", "looking for the next context")
        self._next_context()
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.phase in ("running", "ending"):
            self._finish("deactivated", None)
        self._hold()
        self._stop_timers()
        self._set_phase("inactive", "deactivated: the arm holds; activate to run")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self._set_phase("unconfigured", "cleaned up")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_timers()
        self.close()
        return TransitionCallbackReturn.SUCCESS

    def _stop_timers(self) -> None:
        for timer in (self._timer, getattr(self, "_diagnostics_timer", None)):
            if timer is not None:
                self.destroy_timer(timer)
        self._timer = self._diagnostics_timer = None

    def _release(self) -> None:
        """Close the writer (committing what it holds) and drop subscriptions and publishers."""
        writer = getattr(self, "writer", None)
        if writer is not None:
            writer.close()
            self.writer = None
        for sub in self._io_subscriptions:
            self.destroy_subscription(sub)
        self._io_subscriptions = []
        for pub in getattr(self, "publishers_by_kind", {}).values():
            self.destroy_lifecycle_publisher(pub)
        self.publishers_by_kind = {}

    # ---- inputs ----------------------------------------------------------------------------
    def _image_callback(self, camera: str, primary: bool, hw: tuple[int, int]):
        convert = compressed_to_rgb if self.cfg.topics.image_transport == "compressed" else image_to_rgb

        def callback(msg: Image | CompressedImage) -> None:
            try:
                image = convert(camera, msg, hw, self.cfg.topics.resize_images)
            except InputError as exc:
                self.counters["rejected_frames"] += 1
                self.input_error = (time.monotonic(), str(exc))
                self.get_logger().error(str(exc), throttle_duration_sec=5.0)
                return
            self.images[camera] = image
            self.frame_stamps[camera] = stamp_seconds(msg.header.stamp)
            self.watchdog.feed(f"camera/{camera}")
            if primary and self.phase == "running":
                self._tick(msg.header.stamp)

        return callback

    def _on_state(self, msg: JointState | PoseStamped) -> None:
        try:
            if isinstance(msg, JointState):
                self.state = joint_state_to_vector(msg, self.cfg.topics.state_joints)
            else:
                self.state = pose_to_vector(msg)
        except InputError as exc:
            self.input_error = (time.monotonic(), str(exc))
            self.get_logger().error(str(exc), throttle_duration_sec=5.0)
            return
        self.watchdog.feed("state")

    def _on_instruction(self, msg: String) -> None:
        self.instruction = msg.data.strip()
        between_episodes = self.phase in ("idle", "waiting", "ready")
        if between_episodes and self.cfg is not None and self.cfg.context_source == "instruction":
            self._next_context()  # announce the new task at once

    def _on_outcome(self, msg: Bool) -> None:
        if self.phase not in ("running", "ending"):
            return
        reason = "max steps" if self.phase == "ending" else ("success" if msg.data else "failure") + " reported"
        label = Label(success=bool(msg.data), source=self.cfg.label_source, labeler=self.cfg.topics.outcome_topic)
        self._finish(reason, label)

    # ---- the control tick ------------------------------------------------------------------
    def _tick(self, frame_stamp: Any) -> None:
        self._frames += 1
        if (self._frames - 1) % self.cfg.frames_per_tick:
            return  # a camera faster than the control rate: tick on every frames_per_tick-th frame
        now = time.monotonic()
        if self.watchdog.stale(now) or self.state is None:
            self.counters["frames_without_tick"] += 1
            return  # the control timer holds the arm
        self.cycle.start(now)
        assert self.current_context is not None
        obs = Observation(
            images={c: self.images[c] for c in self.cfg.topics.cameras},
            state=self.state,
            instruction=self.current_context.instruction,
        )
        try:
            command, fault = self.controller.tick({SLOT: obs})[SLOT]
            reason = FAULT_REASON if fault else ""
        except Exception as exc:  # a failing policy must not take the node (and the arm's commands) down
            reason = f"fault: policy error: {type(exc).__name__}: {exc}"
        if reason:
            self.counters["faults"] += 1
            self._hold()
            self.get_logger().error(f"{reason}; the episode ends")
            self._finish(reason, None)
            self.cycle.stop()
            return
        self._publish(self.adapter.to_messages(command, frame_stamp))
        self.latencies.append(time.time() - stamp_seconds(frame_stamp))
        if self.controller.plan_seconds:
            self.plan_times.append(self.controller.plan_seconds)
        if self.controller.step_of(SLOT) >= self.cfg.max_steps:
            self._hold()
            self._ending_deadline = now + self.cfg.outcome_grace_s
            self._set_phase("ending", "max steps: waiting for the outcome")
        elif self.controller.step_of(SLOT) % self.cfg.runtime.execute_steps == 0:
            self._publish_status()  # the tablet's live view follows the episode chunk by chunk
        self.cycle.stop()

    def _on_timer(self) -> None:
        """The control timer: watchdog while running, outcome deadline while ending, polling while idle."""
        now = time.monotonic()
        if self.phase == "running":
            stale = self.watchdog.stale(now)
            if self.state is None:
                stale["state"] = float("inf")
            if not stale:
                self._stale_since = None
                return
            self._hold()
            self.counters["holds"] += 1
            if self._stale_since is None:
                self._stale_since = now
                names = ", ".join(f"{k} ({v:.2f} s old)" for k, v in stale.items())
                self.get_logger().warning(f"holding the arm: stale input {names}")
            elif now - self._stale_since > self.cfg.stale_abort_s:
                self._finish(f"fault: stale input {', '.join(stale)}", None)
        elif self.phase == "saving":
            self._after_saving()
        elif self.phase == "ending" and self._ending_deadline is not None and now >= self._ending_deadline:
            self._finish("max steps", None)  # unlabeled: the operator labels it on the tablet
        elif self.phase in ("idle", "waiting") and now >= self._next_poll:
            self._next_poll = now + self.cfg.poll_s
            self._next_context()

    # ---- episodes --------------------------------------------------------------------------
    def _next_context(self) -> None:
        """Between episodes: take a newer policy if one is published, then find the next context."""
        if self.stopped:
            self._set_phase("stopped", "software stop engaged: release it to continue")
            return
        cfg = self.cfg
        if self.follower is not None and self.follower.update():
            try:
                self._warm_up(self.follower.policy)
                self.controller.set_policy(self.follower.policy)
                self.get_logger().info(f"loaded policy v{self.follower.version}")
            except ValueError as exc:
                self._set_phase("waiting", f"cannot run policy v{self.follower.version}: {exc}")
                return
        version = self.controller.policy.version
        if cfg.context_source == "schedule":
            if self.schedule.finished():
                self._set_phase("done", "the trainer marked the schedule done")
                return
            slots = self.schedule.claim(version, cfg.robot_id, 1)
            if not slots:
                self._set_phase("waiting", f"no scheduled work for policy v{version} yet")
                return
            self.current_context = slots[0].context
        else:
            if not self.instruction:
                self._set_phase("waiting", f"waiting for an instruction on {cfg.topics.instruction_topic}")
                return
            self.current_context = Context(f"{cfg.scene}/{self.instruction}", self.instruction, seed=0, scene=cfg.scene)
        self._set_phase("ready", f"set up context {self.current_context.context_id}, then call start")

    def _on_start(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        problem = None
        if self.stopped:
            problem = "the software stop is engaged: release it (software_stop false) first"
        elif self.phase != "ready":
            problem = f"not ready to start: {self.phase} ({self.message})"
        else:
            stale = self.watchdog.stale()
            if stale or self.state is None:
                problem = "inputs are stale: " + ", ".join(stale or ["state"]) + "; check the drivers"
        if problem:
            response.success, response.message = False, problem
            return response
        meta = self.controller.begin(SLOT, self.current_context)
        gc.disable()  # no collector pauses mid-episode: garbage is collected between episodes, while the arm holds
        self._frames = 0
        self._stale_since = None
        self.cycle.pause()
        self._set_phase("running", f"episode {meta.episode_id} on {self.current_context.context_id}")
        response.success, response.message = True, meta.episode_id
        return response

    def _on_stop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if self.phase not in ("running", "ending"):
            response.success, response.message = False, f"no episode is running ({self.phase})"
            return response
        episode = self._finish("operator stop", None)
        response.success, response.message = True, f"episode {episode} stopped; label it on the tablet"
        return response

    def _on_software_stop(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        if request.data:
            self.stopped = True
            self._hold()
            if self.phase in ("running", "ending"):
                self._finish("software stop", None)
            self._set_phase("stopped", "software stop engaged: release it to continue")
            self.get_logger().warning("software stop engaged")
            response.message = "software stop engaged: the arm holds"
        else:
            self.stopped = False
            if self.phase == "stopped":
                self._set_phase("idle", "software stop released")
                if self._timer is not None:
                    self._next_context()
                else:
                    self._set_phase("inactive", "software stop released; activate to run")
            response.message = "software stop released"
        response.success = True
        return response

    def _finish(self, reason: str, label: Label | None) -> str:
        meta = self.controller.finish(SLOT, reason, label)
        gc.enable()
        gc.collect()
        self.counters["episodes"] += 1
        self._ending_deadline = None
        self.cycle.pause()
        self._hold()
        self.last_episode = {
            "episode_id": meta.episode_id,
            "context_id": meta.context.context_id,
            "steps": meta.num_steps,
            "reason": reason,
            "success": None if label is None else label.success,
            "policy_version": meta.policy_version,
        }
        self.get_logger().info(f"episode {meta.episode_id} ended after {meta.num_steps} steps: {reason}")
        self.current_context = None
        # the next episode starts once this one is committed: its commit then never competes with control ticks
        self._set_phase("saving", f"episode ended: {reason}; committing it to the store")
        self._after_saving()
        return meta.episode_id

    def _after_saving(self) -> None:
        if self.writer is None or self.writer.backlog == 0:
            self._set_phase("idle", self.message.removesuffix("; committing it to the store"))
            if self._timer is not None:
                self._next_context()

    # ---- outputs ---------------------------------------------------------------------------
    def _publish(self, messages: dict[str, object]) -> None:
        for kind, msg in messages.items():
            self.publishers_by_kind[kind].publish(msg)

    def _hold(self) -> None:
        if not getattr(self, "publishers_by_kind", None) or not self.context.ok():
            return  # nothing to publish with (unconfigured, or ROS already shut down by a signal)
        positions = self.state if self.cfg.command.adapter == "joint_trajectory" else None
        self._publish(self.adapter.hold(self.get_clock().now().to_msg(), positions))

    def _set_phase(self, phase: str, message: str) -> None:
        self.phase, self.message = phase, message
        self._publish_status()

    def _publish_status(self) -> None:
        if not self.context.ok():
            return
        self._status_seq += 1
        controller = getattr(self, "controller", None)
        running = controller is not None and SLOT in controller.metas
        status = {
            "seq": self._status_seq,
            "state": self.phase,
            "message": self.message,
            "context": None if self.current_context is None else vars(self.current_context),
            "episode_id": controller.metas[SLOT].episode_id if running else None,
            "step": controller.step_of(SLOT) if running else 0,
            "policy_version": None if controller is None else controller.policy.version,
            "software_stop": self.stopped,
            "last_episode": self.last_episode,
        }
        self.status_pub.publish(String(data=json.dumps(status)))

    def stats(self) -> dict[str, float]:
        """Control-loop figures: ticks, missed ticks, latency and policy time percentiles, safety counts."""
        out: dict[str, float] = dict(self.cycle.stats()) if hasattr(self, "cycle") else {}
        for name, values in (("latency", self.latencies), ("policy", self.plan_times)):
            v = np.asarray(values) * 1e3 if values else np.full(1, np.nan)
            out[f"{name}_p50_ms"] = float(np.percentile(v, 50))
            out[f"{name}_p99_ms"] = float(np.percentile(v, 99))
        out.update(self.counters)
        if hasattr(self, "controller"):
            out.update({f"safety_{k}": v for k, v in self.controller.safety.counters.as_dict().items()})
        return out

    def _publish_diagnostics(self) -> None:
        stats = self.stats()
        status = DiagnosticStatus(name=f"ript: {self.get_name()}", hardware_id=self.cfg.robot_id)
        recent_error = self.input_error is not None and time.monotonic() - self.input_error[0] < 5.0
        if recent_error:
            status.level, status.message = DiagnosticStatus.ERROR, self.input_error[1]
        elif self._stale_since is not None:
            status.level, status.message = DiagnosticStatus.WARN, "holding the arm: stale input"
        elif stats.get("missed_ticks", 0) or stats.get("overruns", 0):
            status.level, status.message = DiagnosticStatus.WARN, "the control loop missed ticks"
        else:
            status.level, status.message = DiagnosticStatus.OK, f"{self.phase}: {self.message}"
        status.values = [KeyValue(key="phase", value=self.phase)] + [
            KeyValue(key=k, value=f"{v:.3f}" if isinstance(v, float) else str(v)) for k, v in stats.items()
        ]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(array)

    def close(self) -> None:
        """End a running episode (unlabeled, reason 'shutdown'), hold the arm and commit what the writer holds."""
        try:
            if self.phase in ("running", "ending"):
                self._finish("shutdown", None)
        finally:
            self._release()


def main(args: list[str] | None = None) -> None:
    """Entry point of `ros2 run ript_ros policy_node` (and the `policy_node` console script)."""
    # the episode writer's thread holds the GIL in slices of this length; the default 5 ms slices can
    # delay a control tick by several of them, so hand the GIL over every 0.5 ms instead
    sys.setswitchinterval(0.0005)
    rclpy.init(args=sys.argv if args is None else args)
    node = PolicyNode()
    if node.get_parameter("autostart").value and node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
        node.trigger_activate()
    spin(node, close=node.close)


if __name__ == "__main__":
    main()
