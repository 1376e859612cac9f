"""The policy node: the shared control loop on an arm, as a ROS 2 lifecycle node.

configure loads the policy (a checkpoint folder, or the store's latest published version,
hash-verified), checks the arm's settings against each other (twist scale and frame against
the workspace calibration, joint limits, the home pose) and warms the policy up; activate
starts the control loop. Three threads of work never wait on each other:
- the control loop (a thread of its own, paced on a grid of deadlines) sends one command every
  period from the chunk queue through the safety filter and the command adapter
  (`ript_ros.control`), or a hold;
- the inference worker (`ript_robot.runtime.inference`) plans the next chunk beside it;
- services, the stop and the command watchdog (another callback group, on a multi-threaded
  executor) answer within a period whatever the policy is doing.
Inputs are checked where they enter (`ript_ros.inputs`); a stale or invalid input holds the
arm, and after `stale_abort_s` ends the episode as a fault. Before every episode the arm is
homed and its pose checked (`ript_ros.reset`); the phases are `ript_ros.phases`. New weights
load only between episodes.

Services: ~/start and ~/stop (std_srvs/Trigger), ~/software_stop (std_srvs/SetBool: true
engages a latched stop, false releases it). Topics out: the command adapter's topics,
~/episode_status (std_msgs/String, JSON, transient local), /diagnostics.
"""

from __future__ import annotations

import functools
import gc
import json
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from std_msgs.msg import Bool, String
from std_srvs.srv import SetBool, Trigger

from ript_robot.config import ConfigError
from ript_robot.policies import CheckpointError
from ript_robot.runtime.timing import PeriodicThread
from ript_robot.types import Label
from ript_ros.adapters import UnsafeCommand
from ript_ros.config import PolicyNodeConfig
from ript_ros.convert import InputError
from ript_ros.diagnostics import diagnostics, episode_status, loop_stats
from ript_ros.inputs import stamp_seconds
from ript_ros.params import declare, read
from ript_ros.phases import BETWEEN_EPISODES, EPISODE, Phase, PhaseMachine
from ript_ros.reset import Stage
from ript_ros.setup import LATCHED, RELIABLE, ArmSetup, create_io
from ript_ros.spin import spin
from ript_ros.teleop import Control, Decision

__all__ = ["LATCHED", "RELIABLE", "PolicyNode", "stamp_seconds"]


def guarded(callback: Callable[..., Any]) -> Callable[..., Any]:
    """No exception raised by a callback ends the node: it is logged, counted and the arm holds."""

    @functools.wraps(callback)
    def run(self: PolicyNode, *args: Any) -> Any:
        try:
            return callback(self, *args)
        except InputError as exc:
            self._input_rejected(str(exc))
        except Exception as exc:
            self.counters["callback_errors"] += 1
            self.get_logger().error(f"{callback.__name__}: {type(exc).__name__}: {exc}", throttle_duration_sec=2.0)
            self._hold()
        return args[-1] if len(args) == 2 and hasattr(args[-1], "success") else None  # a service's response

    return run


class PolicyNode(LifecycleNode):
    """Runs a VLA policy on an arm through ROS 2; see the module docstring."""

    EXECUTOR_THREADS = 3  # the safety, input and report groups run side by side; control has a thread of its own

    def __init__(self, name: str = "policy", **kwargs: Any):
        super().__init__(name, **kwargs)
        declare(self, PolicyNodeConfig)
        self.cfg: PolicyNodeConfig | None = None
        self.arm: ArmSetup | None = None
        self.phases = PhaseMachine(on_change=lambda phase, message: self._publish_status())
        self.lock = self.phases.lock
        self.current_context = None
        self.stopped = False  # the software stop is latched
        self.last_episode: dict[str, Any] | None = None
        self.input_error: tuple[float, str] | None = None
        self.counters = {
            "holds": 0, "rejected_inputs": 0, "episodes": 0, "faults": 0, "callback_errors": 0,
            "watchdog_holds": 0, "refused_commands": 0,
        }  # fmt: skip
        self.latencies: deque[float] = deque(maxlen=10_000)  # capture stamp of the observation -> command out, s
        # the same, split: periods beside a re-plan (a chunk adopted, submitted or being planned) and the others
        self.split_latencies = {"replan": deque(maxlen=10_000), "other": deque(maxlen=10_000)}
        self.hold_times: deque[float] = deque(maxlen=1000)  # monotonic time of each hold sent
        self._status_seq = 0
        self._timers: list[Any] = []
        self._control: PeriodicThread | None = None
        self._io: list[Any] = []
        self._last_command = 0.0
        self._stale_since: float | None = None
        self._ending_deadline: float | None = None
        self._next_poll = 0.0
        self._shown = Control.POLICY  # who the last status said commands the arm
        self.safety_group = MutuallyExclusiveCallbackGroup()  # services, the stop, the command watchdog
        self.input_group = MutuallyExclusiveCallbackGroup()  # sensor callbacks (image conversion takes ms)
        self.report_group = MutuallyExclusiveCallbackGroup()  # /diagnostics: percentiles take ms, never the stop's
        self.status_pub = self.create_publisher(String, "~/episode_status", LATCHED)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", RELIABLE)
        # the services exist in every state: a software stop must always be reachable
        for srv, name, callback in (
            (Trigger, "~/start", self._on_start),
            (Trigger, "~/stop", self._on_stop),
            (SetBool, "~/software_stop", self._on_software_stop),
        ):
            self.create_service(srv, name, callback, callback_group=self.safety_group)
        self._publish_status()

    @property
    def phase(self) -> str:
        return self.phases.phase.value

    # ---- lifecycle -------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            cfg = self.cfg = read(self, PolicyNodeConfig)
            if cfg.torch_threads:
                torch.set_num_threads(cfg.torch_threads)
            clock = lambda: self.get_clock().now().nanoseconds * 1e-9  # noqa: E731
            self.arm = ArmSetup(cfg, clock)
        except (ConfigError, CheckpointError, ValueError, FileNotFoundError) as exc:
            self.get_logger().error(f"configure failed: {exc}")
            self.phases.to(Phase.UNCONFIGURED, f"configure failed: {exc}")
            self._release()
            return TransitionCallbackReturn.FAILURE
        self._io, self.publishers_by_kind = create_io(self, cfg)
        self.phases.to(Phase.INACTIVE, f"policy v{self.arm.policy_version} loaded; activate to run")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        period = 1.0 / self.cfg.control_hz
        self._timers = [
            self.create_timer(period, self._on_watchdog, callback_group=self.safety_group),
            self.create_timer(1.0, self._publish_diagnostics, callback_group=self.report_group),
        ]
        # the control loop paces itself on its own thread: no executor queue between it and its deadline
        self._control = PeriodicThread(period, self._on_control, name="control")
        result = super().on_activate(state)  # activates the lifecycle publishers
        with self.lock:
            if self.stopped:
                self.phases.to(Phase.STOPPED, "software stop engaged: release it to continue")
            else:
                self.phases.to(Phase.IDLE, "looking for the next context")
                self._next_context()
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_timers()  # first: the control thread takes the lock every period
        with self.lock:
            if self.phases.phase in EPISODE:
                self._finish("deactivated", None)
            self._hold()
            self.phases.to(Phase.INACTIVE, "deactivated: the arm holds; activate to run")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.phases.to(Phase.UNCONFIGURED, "cleaned up")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.close()
        return TransitionCallbackReturn.SUCCESS

    def _stop_timers(self) -> None:
        if self._control is not None:
            self._control.stop()
            self._control = None
        for timer in self._timers:
            self.destroy_timer(timer)
        self._timers = []

    def _release(self) -> None:
        """Stop the inference worker, close the writer (committing what it holds), drop the topics."""
        if self.arm is not None:
            self.arm.close()
            self.arm = None
        for sub in self._io:
            self.destroy_subscription(sub)
        self._io = []
        for pub in getattr(self, "publishers_by_kind", {}).values():
            self.destroy_lifecycle_publisher(pub)
        self.publishers_by_kind = {}

    # ---- inputs ----------------------------------------------------------------------------
    def _input_rejected(self, message: str) -> None:
        self.counters["rejected_inputs"] += 1
        if self.arm is not None:
            self.arm.inputs.last_error = message
        self.input_error = (time.monotonic(), message)
        self.get_logger().error(message, throttle_duration_sec=5.0)

    @guarded
    def _on_input(self, route: Callable[[ArmSetup], Callable[..., None]], *args: Any) -> None:
        """A sensor or teleop message, handed to where `route` finds its handler on the arm (`ript_ros.setup`)."""
        if self.arm is not None:
            route(self.arm)(*args)

    @guarded
    def _on_instruction(self, msg: String) -> None:
        text = msg.data.strip()
        if len(text) > 1000 or not text.isprintable():
            raise InputError(f"instruction of {len(text)} characters refused: send one printable line")
        with self.lock:
            self.instruction = text
            if self.phases.phase in BETWEEN_EPISODES and self.cfg.context_source == "instruction":
                self._next_context()  # announce the new task at once

    @guarded
    def _on_outcome(self, msg: Bool) -> None:
        with self.lock:
            if self.phases.phase not in EPISODE:
                return
            ending = self.phases.phase is Phase.ENDING
            reason = "max steps" if ending else ("success" if msg.data else "failure") + " reported"
            label = Label(success=bool(msg.data), source=self.cfg.label_source, labeler=self.cfg.topics.outcome_topic)
            self._finish(reason, label)

    # ---- the control loop ------------------------------------------------------------------
    @guarded
    def _on_control(self) -> None:
        """Once per control period, on the control thread: a command (or a hold) while running, homing,
        deadlines, polling."""
        with self.lock:
            phase, now = self.phases.phase, time.monotonic()
            if self.arm is None:
                return  # released (cleanup or shutdown) while this period waited for the lock
            if phase is Phase.RUNNING:
                self._control_period(now)
            elif phase is Phase.RESETTING:
                self._homing_period()
            elif phase is Phase.SAVING:
                self._after_saving()
            elif phase is Phase.ENDING and self._ending_deadline is not None and now >= self._ending_deadline:
                self._finish("max steps", None)  # unlabeled: the operator labels it on the tablet
            elif phase in (Phase.IDLE, Phase.WAITING) and now >= self._next_poll:
                self._next_poll = now + self.cfg.poll_s
                if phase is Phase.WAITING and self.current_context is not None:  # a failed reset: try it again
                    self.arm.homing.begin()
                    self.phases.to(Phase.RESETTING, f"resetting the arm for {self.current_context.context_id}")
                else:
                    self._next_context()

    def _control_period(self, now: float) -> None:
        arm = self.arm
        arm.cycle.start(now)
        stale = arm.inputs.stale()
        decision = arm.teleop.decide() if arm.teleop is not None else Decision(Control.POLICY)
        if decision.control is Control.HOLD:  # the person's device went quiet with the dead-man held
            stale = {**stale, "teleop": arm.teleop.age()}
            self.get_logger().warning(f"holding the arm: {decision.reason}", throttle_duration_sec=1.0)
        observation = None if stale else arm.inputs.observation(self.current_context.instruction)
        period = arm.runner.period(observation, decision.command)
        if decision.control is not self._shown:  # the tablet shows at once who commands the arm
            self._shown = decision.control
            self._publish_status()
        policy_fault = bool(period.fault)  # the policy's own (a non-finite action, an exception)
        if not period.fault and period.command is not None:
            try:
                joints = arm.inputs.command_positions()
                messages = arm.adapter.to_messages(period.command, joints, self._now(), period.future)
                outside = arm.workspace_breach()
            except UnsafeCommand as exc:
                self.counters["refused_commands"] += 1
                period.fault = f"fault: command refused: {exc}"
            else:
                period.fault = f"fault: {outside}" if outside else ""
                if not outside:
                    self._publish(messages)
                    latency = self._now_s() - min(observation.stamps.values())
                    self.latencies.append(latency)
                    self.split_latencies["replan" if period.replanning else "other"].append(latency)
        if period.fault:
            self.counters["faults"] += 1
            self._hold()
            self.get_logger().error(f"{period.fault}; the episode ends")
            # a simulator knows a policy fault failed the task; on an arm the operator labels or discards it
            known = policy_fault and self.cfg.label_source == "sim"
            self._finish(period.fault, Label(False, "sim", labeler="fault") if known else None)
        elif period.hold:
            self._hold_period(now, stale)
        else:
            self._stale_since = None
            if arm.runner.steps >= self.cfg.max_steps:
                self._hold()
                self._ending_deadline = now + self.cfg.outcome_grace_s
                self.phases.to(Phase.ENDING, "max steps: waiting for the outcome")
            elif arm.runner.steps % self.cfg.runtime.execute_steps == 0:
                self._publish_status()  # the tablet's live view follows the episode chunk by chunk
        arm.cycle.stop()

    def _hold_period(self, now: float, stale: dict[str, float]) -> None:
        self._hold()
        self.counters["holds"] += 1
        if not stale:
            return
        if self._stale_since is None:
            self._stale_since = now
            names = ", ".join(f"{k} ({v:.2f} s old)" for k, v in stale.items())
            self.get_logger().warning(f"holding the arm: stale input {names}")
        elif now - self._stale_since > self.cfg.stale_abort_s:
            self._finish(f"fault: stale input {', '.join(stale)}", None)

    def _homing_period(self) -> None:
        messages, fault = self.arm.homing.period(self.arm.inputs, self._now())
        self._publish(messages)
        if fault:
            last = self.arm.inputs.last_error
            why = f"{fault}{f' (last refused input: {last})' if last else ''}"
            self.phases.to(Phase.WAITING, f"reset failed: {why}; fix it, then call start again or restart")
        elif self.arm.homing.stage is Stage.DONE:
            ctx = self.current_context
            self.phases.to(Phase.READY, f"scene ready? set up context {ctx.context_id} ({ctx.instruction}), then start")

    @guarded
    def _on_watchdog(self) -> None:
        """The command watchdog: while running, a control period that sent nothing gets a hold from here."""
        with self.lock:
            late = time.monotonic() - self._last_command > 1.5 / self.cfg.control_hz
            if self.phases.phase is Phase.RUNNING and late:
                self.counters["watchdog_holds"] += 1
                self._hold()

    # ---- episodes --------------------------------------------------------------------------
    def _next_context(self) -> None:
        """Between episodes: take a newer policy if one is published, find the next context, go home."""
        if self.stopped:
            self.phases.to(Phase.STOPPED, "software stop engaged: release it to continue")
            return
        phase, message, context = self.arm.next_context(getattr(self, "instruction", ""))
        self.current_context = None
        if phase is not Phase.READY:
            self.phases.to(phase, message)
            return
        self.current_context = context
        if self.cfg.reset.enabled:
            self.arm.homing.begin()
            self.phases.to(Phase.RESETTING, f"resetting the arm for context {context.context_id}")
        else:
            self.phases.to(Phase.READY, f"scene ready? set up context {context.context_id}, then start")

    @guarded
    def _on_start(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self.lock:
            problem = self.arm.start_problem(self.phases, self.stopped) if self.arm else "not configured"
            if problem:
                response.success, response.message = False, problem
                return response
            meta = self.arm.runner.begin(self.current_context, self.arm.slot_id)
            gc.disable()  # no collector pauses mid-episode: garbage is collected between episodes
            self._stale_since = None
            self._last_command = time.monotonic()
            self.arm.cycle.pause()
            self.phases.to(Phase.RUNNING, f"episode {meta.episode_id} on {self.current_context.context_id}")
            response.success, response.message = True, meta.episode_id
            return response

    @guarded
    def _on_stop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self.lock:
            if self.phases.phase not in EPISODE:
                response.success, response.message = False, f"no episode is running ({self.phase})"
                return response
            episode = self._finish("operator stop", None)
            response.success, response.message = True, f"episode {episode} stopped; label it on the tablet"
            return response

    @guarded
    def _on_software_stop(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        response.success = True
        if request.data:
            self._hold()  # first the arm, before any bookkeeping
            with self.lock:
                self.stopped = True
                if self.phases.phase in EPISODE:
                    self._finish("software stop", None)
                if self.phases.phase is not Phase.UNCONFIGURED:
                    self.phases.to(Phase.STOPPED, "software stop engaged: release it to continue")
            self.get_logger().warning("software stop engaged")
            response.message = "software stop engaged: the arm holds"
            return response
        with self.lock:
            self.stopped = False
            if self.phases.phase is Phase.STOPPED:
                if self._timers:
                    self.phases.to(Phase.IDLE, "software stop released")
                    self._next_context()
                else:
                    self.phases.to(Phase.INACTIVE, "software stop released; activate to run")
        response.message = "software stop released"
        return response

    def _finish(self, reason: str, label: Label | None) -> str:
        meta = self.arm.runner.finish(reason, label)
        gc.enable()
        self.counters["episodes"] += 1
        self._ending_deadline = None
        self.arm.cycle.pause()
        self._hold()
        self.last_episode = {
            "episode_id": meta.episode_id,
            "context_id": meta.context.context_id,
            "steps": meta.num_steps,
            "reason": reason,
            "success": None if label is None else label.success,
            "policy_version": meta.policy_version,
            "interventions": meta.interventions,
        }
        self.get_logger().info(f"episode {meta.episode_id} ended after {meta.num_steps} steps: {reason}")
        self.current_context = None
        # the next episode starts once this one is committed: its commit then never competes with control periods
        self.phases.to(Phase.SAVING, f"episode ended: {reason}; committing it to the store")
        self._after_saving()
        return meta.episode_id

    def _after_saving(self) -> None:
        if self.arm.writer is None or self.arm.writer.backlog == 0:
            gc.collect()
            if self.stopped:
                self.phases.to(Phase.STOPPED, "software stop engaged: release it to continue")
                return
            self.phases.to(Phase.IDLE, self.phases.message.removesuffix("; committing it to the store"))
            if self._timers:
                self._next_context()

    # ---- outputs ---------------------------------------------------------------------------
    def _now(self) -> Any:
        return self.get_clock().now().to_msg()

    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _publish(self, messages: dict[str, object]) -> None:
        for kind, msg in messages.items():
            self.publishers_by_kind[kind].publish(msg)
        if messages:
            self._last_command = time.monotonic()

    def _hold(self) -> None:
        if not getattr(self, "publishers_by_kind", None) or self.arm is None or not self.context.ok():
            return  # nothing to publish with (unconfigured, or ROS already shut down by a signal)
        self._publish(self.arm.adapter.hold(self._now(), self.arm.inputs.fresh_command_positions()))
        self.hold_times.append(time.monotonic())

    def _publish_status(self) -> None:
        if self.context.ok():
            self._status_seq += 1
            self.status_pub.publish(String(data=json.dumps(episode_status(self, self._status_seq))))

    def stats(self) -> dict[str, float]:
        """Control-loop figures: periods, misses, latency and policy time percentiles, safety counts."""
        return loop_stats(self)

    def _publish_diagnostics(self) -> None:
        self.diagnostics_pub.publish(diagnostics(self))

    def close(self) -> None:
        """Stop the control loop, end a running episode (unlabeled, reason 'shutdown'), hold the arm and
        commit what the writer holds."""
        try:
            self._stop_timers()
            with self.lock:
                if self.phases.phase in EPISODE:
                    self._finish("shutdown", None)
        finally:
            self._release()


def main(args: list[str] | None = None) -> None:
    """Entry point of `ros2 run ript_ros policy_node` (and the `policy_node` console script)."""
    # the writer and inference threads hold the GIL in slices of this length; the default 5 ms slices can
    # delay a control period by several of them, so hand the GIL over every 0.5 ms instead
    sys.setswitchinterval(0.0005)
    rclpy.init(args=sys.argv if args is None else args)
    node = PolicyNode()
    if node.get_parameter("autostart").value and node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
        node.trigger_activate()
    spin(node, executor=MultiThreadedExecutor(num_threads=PolicyNode.EXECUTOR_THREADS), close=node.close)


if __name__ == "__main__":
    main()
