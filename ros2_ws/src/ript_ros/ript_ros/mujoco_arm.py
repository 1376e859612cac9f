"""LIBERO's Panda in MuJoCo physics behind the JointTrajectoryController double.

The mock hardware of `arm_double` mirrors every command into the state, as ros2_control's
mock_components do; a real arm lags, overshoots and carries its links' weight. `MujocoPanda`
loads robosuite's Panda model (the arm LIBERO simulates) and drives its joints with torques: a PD
toward the controller's commanded positions and velocities plus gravity compensation, within the
model's torque limits, the way an effort-controlled ros2_control arm tracks a JTC. The double then
publishes the measured joint states and the hand's pose, and a trajectory that starts now starts
from the measured positions (the JTC's closed-loop default). Needs the `sim` extra (robosuite).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from sensor_msgs.msg import JointState

from ript_ros.arm_double import JointTrajectoryControllerDouble

KP = np.array([600.0, 600.0, 600.0, 600.0, 250.0, 150.0, 50.0])  # N m / rad, per joint
TIMESTEP = 0.002  # s, the model's own


def panda_model() -> Any:
    """robosuite's Panda arm (7 joints, torque motors) as a MuJoCo model, angles in radians."""
    import mujoco
    import robosuite

    folder = Path(robosuite.__file__).parent / "models" / "assets" / "robots" / "panda"
    # the file is a fragment robosuite merges into a scene with radian angles; alone, MuJoCo would read degrees
    compiler = f'<compiler angle="radian" meshdir="{folder}"/>'
    wrapper = f'<mujoco model="panda">{compiler}<include file="{folder}/robot.xml"/></mujoco>'
    with tempfile.NamedTemporaryFile("w", suffix=".xml") as f:
        f.write(wrapper)
        f.flush()
        return mujoco.MjModel.from_xml_path(f.name)


class MujocoPanda:
    """The Panda's joints in physics, tracking commanded positions; `q`, `dq` and `hand_pose()` are measured."""

    def __init__(self, initial_positions: list[float], start_s: float):
        import mujoco

        self.mujoco = mujoco
        self.model = panda_model()
        self.data = mujoco.MjData(self.model)
        self.data.qpos[:7] = initial_positions
        mujoco.mj_forward(self.model, self.data)
        inertia = np.array([self.data.qM[self.model.dof_Madr[i]] for i in range(7)])
        self.kd = 2.0 * np.sqrt(KP * inertia)  # critically damped about the start pose
        self.low, self.high = self.model.actuator_ctrlrange[:7].T
        self.time = start_s

    @property
    def q(self) -> np.ndarray:
        return self.data.qpos[:7].copy()

    @property
    def dq(self) -> np.ndarray:
        return self.data.qvel[:7].copy()

    def advance(self, now: float, command: np.ndarray, velocity: np.ndarray) -> None:
        """Step the physics up to `now` (seconds) toward `command` (rad) moving at `velocity` (rad/s)."""
        d = self.data
        while self.time + TIMESTEP <= now:
            torque = KP * (command - d.qpos[:7]) + self.kd * (velocity - d.qvel[:7]) + d.qfrc_bias[:7]
            d.ctrl[:7] = np.clip(torque, self.low, self.high)
            self.mujoco.mj_step(self.model, d)
            self.time += TIMESTEP

    def hand_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """The hand's position (m) and orientation (quaternion x y z w) in the arm's base frame."""
        body = self.data.body("right_hand")
        w, x, y, z = body.xquat
        return body.xpos.copy(), np.array([x, y, z, w])


class PhysicsArmDouble(JointTrajectoryControllerDouble):
    """The JTC double with the Panda in MuJoCo as its hardware; takes the double's keyword arguments."""

    def __init__(self, name: str = "physics_arm_double", **kw: Any):
        super().__init__(name, **kw)
        with self.lock:
            self.physics = MujocoPanda(list(self.follower.positions(self.now_s())), self.now_s())
            self.follower.measured = lambda: self.physics.q

    def _tick(self) -> None:
        with self.lock:
            now = self.now_s()
            self.physics.advance(now, self.follower.sample(now), self.follower.velocities(now))
            q, dq = self.physics.q, self.physics.dq
            self._commands.append((now, tuple(map(float, q))))  # what is published: the measured state
            xyz, quat = self.physics.hand_pose()
        msg = JointState(name=list(self.follower.limits.names), position=list(map(float, q)))
        msg.velocity, msg.header.stamp = list(map(float, dq)), self.get_clock().now().to_msg()
        self.state_pub.publish(msg)
        self._publish_pose(xyz, quat)

    def ee_xyz(self) -> np.ndarray:
        with self.lock:
            return self.physics.hand_pose()[0]
