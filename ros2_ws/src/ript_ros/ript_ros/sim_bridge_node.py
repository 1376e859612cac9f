"""The sim bridge node: a simulated arm and its cameras, on the topics a real driver uses.

It serves the built-in task or LIBERO (`task`). It publishes camera images
(sensor_msgs/Image, rgb8) and the arm state (JointState) at `control_hz` (LIBERO, which
renders every frame it publishes, manages fewer on a CPU: give the policy node a
`max_input_age_s` to match), applies each command it receives (TwistStamped + gripper, through the same
`CommandAdapter` the policy node uses) on the next simulation step, and reports the
simulator's success on the outcome topic. It also plays the operator: when the policy node
announces the next context, it sets the scene up (resets the simulator to that context),
publishes the instruction and calls the policy node's start service; when the policy node
ends an episode without an outcome (max steps), it reports the simulator's verdict. With
`builtin.scripted_operator` it also plays a person with a gamepad (sensor_msgs/Joy on `joy_topic`):
when a command would grasp beside the block (or the policy dawdles), it catches the arm (that
command is not applied), holds the dead-man and drives the scripted expert until the grasp. So
the policy node cannot tell it from an arm, a camera driver and a person with a tablet.

Commands carry the stamp of the frame they answer; the bridge records camera-to-command
latency from it (`latencies`), which `benchmarks/ros_latency.py` reads.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import numpy as np
import rclpy
from geometry_msgs.msg import TwistStamped
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState, Joy
from std_msgs.msg import Bool, Float64, String
from std_srvs.srv import Trigger

from ript_robot.envs.base import RobotEnv
from ript_robot.envs.pick import STEP_SIZE, PickEnv, ScriptedOperator
from ript_robot.types import Context, Observation
from ript_ros.adapters import CommandAdapter
from ript_ros.config import SimBridgeConfig
from ript_ros.convert import rgb_to_image, vector_to_joint_state
from ript_ros.inputs import stamp_seconds
from ript_ros.params import declare, read
from ript_ros.setup import LATCHED, RELIABLE
from ript_ros.spin import spin


def make_env(cfg: SimBridgeConfig) -> RobotEnv:
    """The simulator the bridge serves: the built-in task, or LIBERO (contexts `suite/task/init` from the schedule)."""
    if cfg.task == "libero":
        from sim_bridge.libero_env import LiberoEnv

        return LiberoEnv.from_config(cfg.libero)
    return PickEnv(image_size=cfg.builtin.image_size, max_steps=cfg.builtin.max_steps, control_hz=cfg.control_hz)


class SimBridgeNode(Node):
    """A simulated arm, cameras and operator for the policy node; see the module docstring."""

    def __init__(self, name: str = "sim_bridge", **kwargs: Any):
        super().__init__(name, **kwargs)
        declare(self, SimBridgeConfig)
        cfg = self.cfg = read(self, SimBridgeConfig)
        self.env = make_env(cfg)
        spec = self.env.spec
        # the simulated arm's own speed per action unit, as a real Servo's scale is its own configuration
        scale = cfg.command.twist_scale or (STEP_SIZE * cfg.control_hz if cfg.task == "builtin" else 1.0)
        self.adapter = CommandAdapter(cfg.command, spec.action_dim, cfg.control_hz, twist_scale=scale)
        t = cfg.topics
        unknown = set(t.cameras) - set(spec.cameras)
        if unknown:
            raise ValueError(f"topics.cameras {sorted(unknown)} not in the simulator's cameras {sorted(spec.cameras)}")
        self.image_pubs = {
            c: self.create_publisher(Image, t.image_topic.format(camera=c), qos_profile_sensor_data) for c in t.cameras
        }
        self.state_pub = self.create_publisher(JointState, t.state_topic, qos_profile_sensor_data)
        self.instruction_pub = self.create_publisher(String, t.instruction_topic, LATCHED)
        self.outcome_pub = self.create_publisher(Bool, t.outcome_topic, RELIABLE)
        self.create_subscription(TwistStamped, cfg.command.twist_topic, self._on_twist, RELIABLE)
        self.create_subscription(Float64, cfg.command.gripper_topic, self._on_gripper, RELIABLE)
        self.create_subscription(String, f"{cfg.policy_node}/episode_status", self._on_status, LATCHED)
        self.start_client = self.create_client(Trigger, f"{cfg.policy_node}/start")
        self.observation: Observation | None = None
        self.scene_context: Context | None = None
        self.phase = "idle"  # idle, set_up (scene laid out, start pending) or running
        self.reported = False  # the outcome of this episode went out
        self.success = False
        self.twist: TwistStamped | None = None  # the newest command not yet applied
        self.gripper = -1.0
        self.frames_since_reset = 0
        self.start_pending = False
        self.latencies: list[float] = []  # frame stamp -> command arrival, seconds
        self.frames = 0
        self.commands_applied = 0
        self.steps_without_command = 0  # simulation ticks of a running episode that found no new command
        self.episode_commands = 0  # commands applied in this episode (its first tick has none to find)
        # the built-in task's scripted operator, on the gamepad topic a person's device would use
        self.operator = ScriptedOperator() if cfg.task == "builtin" and cfg.builtin.scripted_operator else None
        self.operating = False
        self.joy_pub = self.create_publisher(Joy, cfg.joy_topic, qos_profile_sensor_data)
        if cfg.instruction:
            self.instruction_pub.publish(String(data=cfg.instruction))
        self.create_timer(1.0 / cfg.control_hz, self._step)

    def _on_twist(self, msg: TwistStamped) -> None:
        self.latencies.append(time.time() - stamp_seconds(msg.header.stamp))
        self.twist = msg

    def _on_gripper(self, msg: Float64) -> None:
        self.gripper = float(msg.data)

    def _on_status(self, msg: String) -> None:
        """Follow the policy node's episode: set up each announced context, judge episodes it ends without us."""
        status = json.loads(msg.data)
        state = status["state"]
        if state == "ready" and status["context"]:
            context = Context(**status["context"])
            if self.phase != "set_up" or context != self.scene_context:
                self._set_up(context)
        elif state == "running" and self.phase == "set_up":
            self.phase = "running"
        elif state == "ending" and self.phase == "running" and not self.reported:
            self._report(self.success)  # max steps: the simulator's verdict labels the episode (unless told not to)
        elif state not in ("running", "ending", "ready"):
            self.phase, self.start_pending = "idle", False  # stopped, deactivated or done: no episode runs

    def _set_up(self, context: Context) -> None:
        """What an operator does between episodes: lay the scene out, say the instruction, press start."""
        try:
            self.observation = self.env.reset(context)
        except ValueError as exc:  # a context this simulator cannot lay out: say so, keep serving
            self.get_logger().error(f"cannot set up context {context.context_id}: {exc}", throttle_duration_sec=5.0)
            return
        self.scene_context = context
        self.twist, self.gripper, self.success, self.reported = None, -1.0, False, False
        self.operating = False
        self.phase = "set_up"
        self.episode_commands = 0
        self.frames_since_reset = 0
        self.start_pending = self.cfg.auto_start
        self.instruction_pub.publish(String(data=context.instruction))

    def _report(self, success: bool) -> None:
        if self.cfg.report_outcome:
            self.outcome_pub.publish(Bool(data=bool(success)))
        self.reported = True

    def _step(self) -> None:
        """One simulation tick: apply the newest command (if any), then publish the cameras and the state."""
        if self.observation is None:
            return
        if self.phase == "running" and not self.reported and self.twist is None and self.episode_commands:
            self.steps_without_command += 1  # the policy node missed this tick (or its command is late)
        if self.phase in ("set_up", "running") and not self.reported and self.twist is not None:
            action = self.adapter.twist_to_action(self.twist, self.gripper)
            self.twist = None
            if self.operator is not None and not self.operating and self.operator(self.env, action) is not None:
                self.operating = True  # the person catches the arm before this command: it is not applied
            else:
                result = self.env.step(action)
                self.commands_applied += 1
                self.episode_commands += 1
                self.observation = result.observation
                self.success = bool(result.success)
                if result.done:
                    self._report(self.success)
        if self.operator is not None:
            self._publish_joy()
        stamp = self.get_clock().now().to_msg()
        for camera, pub in self.image_pubs.items():
            pub.publish(rgb_to_image(self.observation.images[camera], stamp, camera))
        self.state_pub.publish(vector_to_joint_state(self.observation.state, self.cfg.topics.state_joints, stamp))
        self.frames += 1
        self.frames_since_reset += 1
        if self.start_pending and self.frames_since_reset >= 2 and self.start_client.service_is_ready():
            self.start_pending = False
            self.start_client.call_async(Trigger.Request()).add_done_callback(self._on_started)

    def _publish_joy(self) -> None:
        """The scripted operator's gamepad, every tick: while it commands, the dead-man (button 4) held and the
        expert's motion for the scene as it is now (axes 0 and 1: dx, dy; button 0 closes); else released."""
        command = self.operator(self.env, None) if self.operating and not self.reported else None
        buttons = [0] * 8
        if command is not None:
            buttons[4], buttons[0] = 1, int(command[2] > 0.0)
        axes = [0.0, 0.0] if command is None else [float(command[0]), float(command[1])]
        self.joy_pub.publish(Joy(axes=axes, buttons=buttons))

    def _on_started(self, future: Any) -> None:
        response = future.result()
        if not response.success:
            self.get_logger().warning(f"the policy node refused to start: {response.message}")
            self.start_pending = self.phase == "set_up" and self.cfg.auto_start  # try again two frames later
            self.frames_since_reset = 0

    def stats(self) -> dict[str, float]:
        v = np.asarray(self.latencies) * 1e3 if self.latencies else np.full(1, np.nan)
        return {
            "frames": self.frames,
            "commands_applied": self.commands_applied,
            "steps_without_command": self.steps_without_command,
            "latency_p50_ms": float(np.percentile(v, 50)),
            "latency_p99_ms": float(np.percentile(v, 99)),
        }


def main(args: list[str] | None = None) -> None:
    """Entry point of `ros2 run ript_ros sim_bridge_node` (and the `sim_bridge_node` console script)."""
    rclpy.init(args=sys.argv if args is None else args)
    node = SimBridgeNode()
    spin(node, close=node.env.close)  # a simulator's renderer is released before the interpreter tears it down


if __name__ == "__main__":
    main()
