"""A scripted pick-and-place expert for LIBERO, from the simulator's privileged state.

LIBERO's own demonstrations cannot be downloaded here, so SFT starts from this expert's.
It reads the task's goal from the BDDL problem, `(On OBJECT TARGET)` or `(In OBJECT REGION)`
(every task of libero_spatial and libero_object is one of these), finds the object and the
target from the MuJoCo state, and runs a phase machine: approach above the grasp point,
descend, close, lift, carry above the target, lower, release, retreat. Positions follow a
proportional controller on the end-effector position (an action unit moves the OSC
controller's goal 5 cm; the arm settles about 1 cm per step); the gripper is held pointing
down. Objects wider than the gripper's 8 cm (the bowls) are grasped by the rim, on the
side away from their neighbours.
"""

from __future__ import annotations

import itertools

import numpy as np

from ript_robot.types import Context
from sim_bridge.libero_env import LiberoEnv

OPEN, CLOSE = -1.0, 1.0
KP, KR = 20.0, 4.0  # action units per metre of position error / per radian of orientation error
GRIPPER_SPAN_M = 0.075  # wider objects are grasped by the rim
DOWN = np.diag([1.0, -1.0, -1.0])  # the gripper pointing down, fingers closing along the world y axis


def _quat_to_matrix(q: np.ndarray) -> np.ndarray:
    x, y, z, w = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _rotation_error(goal: np.ndarray, current: np.ndarray) -> np.ndarray:
    """The axis-angle (world frame) that turns `current` into `goal`."""
    delta = goal @ current.T
    angle = np.arccos(np.clip((np.trace(delta) - 1) / 2, -1, 1))
    if angle < 1e-6:
        return np.zeros(3)
    axis = np.array([delta[2, 1] - delta[1, 2], delta[0, 2] - delta[2, 0], delta[1, 0] - delta[0, 1]])
    return axis / (2 * np.sin(angle)) * angle


class LiberoScene:
    """Privileged geometry of the scene a `LiberoEnv` holds: bodies, their boxes, goal regions."""

    def __init__(self, env: LiberoEnv):
        self.env = env.sim.env  # robosuite's environment inside LIBERO's wrapper
        goal = self.env.parsed_problem["goal_state"]
        if len(goal) != 1 or goal[0][0] not in ("on", "in"):
            raise ValueError(f"the scripted expert solves (On A B) and (In A REGION) goals, not {goal}")
        self.predicate, self.object, self.target = goal[0]

    def position(self, name: str) -> np.ndarray:
        return self.env.sim.data.body_xpos[self.env.obj_body_id[name]].copy()

    def box(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """World axis-aligned bounding box (low, high) of an object's collision geometry."""
        model, data = self.env.sim.model._model, self.env.sim.data._data  # raw MuJoCo structs
        root = self.env.obj_body_id[name]
        corners = []
        for g in range(model.ngeom):
            body = model.geom_bodyid[g]
            while body not in (0, root):
                body = model.body_parentid[body]
            if body != root or not (model.geom_contype[g] or model.geom_conaffinity[g]):
                continue
            centre, half = model.geom_aabb[g][:3], model.geom_aabb[g][3:]
            rotation = data.geom_xmat[g].reshape(3, 3)
            for signs in itertools.product((-1, 1), repeat=3):
                corners.append(data.geom_xpos[g] + rotation @ (centre + np.array(signs) * half))
        points = np.array(corners)
        return points.min(0), points.max(0)

    def neighbours(self) -> list[np.ndarray]:
        return [self.position(n)[:2] for n in self.env.objects_dict if n != self.object]

    def target_geometry(self) -> tuple[np.ndarray, float, bool, float]:
        """(xy centre, floor z, is a region, top z including the walls of its owner)."""
        if self.target in self.env.obj_body_id:  # an object, e.g. plate_1: place on its top
            _, high = self.box(self.target)
            return self.position(self.target)[:2], float(high[2]), False, float(high[2])
        site = self.env.object_sites_dict[self.target]  # a region, e.g. basket_1_contain_region: place inside
        centre = self.env.sim.data.get_site_xpos(self.target).copy()
        half = np.abs(self.env.sim.data.get_site_xmat(self.target) @ site.size)
        top = centre[2] + half[2]
        owners = [n for n in self.env.obj_body_id if self.target.startswith(n + "_")]
        if owners:
            top = max(top, float(self.box(owners[0])[1][2]))
        return centre[:2], float(centre[2] - half[2]), True, float(top)


class LiberoExpert:
    """Call with a `LiberoEnv` after each reset or step; returns the next action (7,)."""

    def __init__(self) -> None:
        self.context: Context | None = None
        self.phase = "done"
        self.phase_steps = 0

    def __call__(self, env: LiberoEnv) -> np.ndarray:
        if env.context is not self.context or env.steps == 0:  # a new episode
            self.context, self.scene = env.context, LiberoScene(env)
            self._plan_grasp()
            self._enter("approach")
        raw = env.raw
        eef = raw["robot0_eef_pos"]
        rotation = np.clip(KR * _rotation_error(DOWN, _quat_to_matrix(raw["robot0_eef_quat"])), -1, 1)
        move, grip = self._step(eef)
        self.phase_steps += 1
        return np.r_[move, rotation, grip].astype(np.float32)

    # ---- the phase machine -----------------------------------------------------------------
    def _step(self, eef: np.ndarray) -> tuple[np.ndarray, float]:
        phase, n = self.phase, self.phase_steps
        if phase == "approach":
            goal = np.r_[self.grasp_xy, self.approach_z]
            if np.linalg.norm((goal - eef)[:2]) < 0.01 and abs(goal[2] - eef[2]) < 0.02:
                self._enter("descend")
            return self._toward(eef, goal), OPEN
        if phase == "descend":
            goal = np.r_[self.grasp_xy, self.grasp_z]
            if abs(goal[2] - eef[2]) < 0.006 or n > 40:
                self._enter("close")
            return self._toward(eef, goal, 0.6), OPEN
        if phase == "close":
            if n >= 12:
                self._enter("lift")
            return self._toward(eef, np.r_[self.grasp_xy, self.grasp_z], 0.3), CLOSE
        if phase == "lift":
            goal = np.r_[self.grasp_xy, self.approach_z + 0.04]
            if abs(goal[2] - eef[2]) < 0.02 or n > 40:
                self._plan_place(eef)
                self._enter("carry")
            return self._toward(eef, goal), CLOSE
        if phase == "carry":
            goal = np.r_[self.place_xy, self.carry_z]
            if np.linalg.norm((goal - eef)[:2]) < 0.008 and abs(goal[2] - eef[2]) < 0.03:
                self._enter("lower")
            return self._toward(eef, goal), CLOSE
        if phase == "lower":
            goal = np.r_[self.place_xy, self.place_z]
            if abs(goal[2] - eef[2]) < 0.008 or n > 50:
                self._enter("release")
            return self._toward(eef, goal, 0.5), CLOSE
        if phase == "release":
            if n >= 10:
                self._enter("retreat")
            return self._toward(eef, np.r_[self.place_xy, self.place_z], 0.3), OPEN
        return self._toward(eef, np.r_[eef[:2], self.place_z + 0.10], 0.5), OPEN  # retreat

    def _enter(self, phase: str) -> None:
        self.phase, self.phase_steps = phase, 0

    @staticmethod
    def _toward(eef: np.ndarray, goal: np.ndarray, limit: float = 1.0) -> np.ndarray:
        return np.clip(KP * (goal - eef), -limit, limit)

    def _plan_grasp(self) -> None:
        scene = self.scene
        low, high = scene.box(scene.object)
        size, centre = high - low, (low[:2] + high[:2]) / 2
        self.bottom_offset = scene.position(scene.object)[2] - low[2]  # body origin above the object's bottom
        if max(size[:2]) > GRIPPER_SPAN_M:  # a bowl: the rim on the side with the most room
            sides = [centre + np.array([0.0, sign * (size[1] / 2 - 0.012)]) for sign in (1, -1)]
            room = [min([np.linalg.norm(s - o) for o in scene.neighbours()] + [1.0]) for s in sides]
            self.grasp_xy, self.grasp_z = sides[int(np.argmax(room))], high[2] - 0.025
        else:  # fits between the fingers: the middle
            self.grasp_xy = centre
            self.grasp_z = max(high[2] - 0.035, low[2] + 0.4 * size[2], low[2] + 0.015)
        self.approach_z = high[2] + 0.08

    def _plan_place(self, eef: np.ndarray) -> None:
        scene = self.scene
        centre, floor, region, top = scene.target_geometry()
        hold = eef - scene.position(scene.object)  # where the hand holds the object, measured after lifting
        self.place_xy = centre + hold[:2]
        release_bottom = floor + (0.03 if region else 0.015)  # let go just above the surface
        self.place_z = release_bottom + self.bottom_offset + hold[2]
        self.carry_z = max(self.place_z + 0.10, top + 0.05 + self.bottom_offset + hold[2], eef[2])
