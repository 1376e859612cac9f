"""A scripted pick-and-place expert for LIBERO, from the simulator's privileged state.

LIBERO's own demonstrations cannot be downloaded here, so SFT starts from this expert's.
It reads the task's goal from the BDDL problem, `(On OBJECT TARGET)` or `(In OBJECT REGION)`
(every task of libero_spatial and libero_object is one of these), finds the object and the
target from the MuJoCo state, and runs a phase machine: approach above the grasp point,
descend, close, lift, carry above the target, lower, release, retreat. Positions follow a
proportional controller on the end-effector position (an action unit moves the OSC
controller's goal 5 cm; the arm settles about 1 cm per step), with an integral of the small
errors on the long moves, where the stretched arm sags short of its goal; the gripper points
down, turned about the vertical as the grasp needs. An object narrow enough in some horizontal
direction is grasped in the middle across it; a wider one (a bowl) by the rim. The grasp is
chosen from the geometry: the open gripper, as boxes, swept down from the approach height
must clear every other body's collision boxes (a bowl in a drawer is grasped shallower and
across the drawer, a bowl beside the cabinet from the free side), and the object must not be
held so far out that the arm cannot reach the target with it.
"""

from __future__ import annotations

import itertools

import mujoco
import numpy as np

from ript_robot.types import Context
from sim_bridge.libero_env import LiberoEnv

OPEN, CLOSE = -1.0, 1.0
KP, KR = 20.0, 4.0  # action units per metre of position error / per radian of orientation error
KI = 1.5  # action units per metre-step of the error integral, against the arm's steady-state sag
GRIPPER_SPAN_M = 0.075  # objects wider than this in every horizontal direction are grasped by the rim
DOWN = np.diag([1.0, -1.0, -1.0])  # the gripper pointing down, fingers closing along the world y axis
# the open gripper as boxes (low, high) in its frame: along the fingers' closing axis, across it, up from the
# end-effector site (slices of the Panda's collision meshes: the fingertips reach 1.3 cm below the site)
FINGER_BOXES = (([0.037, -0.009, -0.013], [0.054, 0.009, 0.012]), ([0.038, -0.009, 0.012], [0.066, 0.013, 0.049]))
GRIPPER_BOXES = (
    *(
        (np.array(low) * mirror, np.array(high) * mirror)
        for mirror in (np.array([1.0, 1.0, 1.0]), np.array([-1.0, 1.0, 1.0]))  # the two fingers: tip, upper part
        for low, high in FINGER_BOXES
    ),
    (np.array([-0.1, -0.018, 0.024]), np.array([0.1, 0.024, 0.08])),  # the hand: lower, upper part
    (np.array([-0.105, -0.03, 0.08]), np.array([0.105, 0.039, 0.126])),
)
CLEARANCE_M = 0.003  # a grasp whose sweep passes closer than this to another body is avoided
# the arm stalls with its elbow straight when the hand is farther out than about 0.77 m from the shoulder's
# vertical axis (measured at 1.08 m high, pointing down, not turned) and misses low goals by 1-2 cm from 0.75 m,
# so grasps that would need more than this reach are avoided
REACH_M = 0.73
ROBOT_PREFIXES = ("robot0_", "gripper0_", "mount0_")


def _yaw_matrix(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _box_gap(centre: np.ndarray, axes: np.ndarray, half: np.ndarray, boxes: tuple) -> float:
    """The smallest separating-axis gap (metres; < 0: they overlap) between one oriented box and many.

    centre (3,), axes (3, 3) with the box's axes as columns, half (3,); boxes = (centres (N, 3),
    axes (N, 3, 3), halves (N, 3)). The gap along the best separating axis is a lower bound of the distance.
    """
    centres, others, halves = boxes
    if not len(centres):
        return np.inf
    own = np.broadcast_to(axes.T, (len(centres), 3, 3))  # rows: this box's axes
    theirs = np.transpose(others, (0, 2, 1))  # rows: the other boxes' axes
    crossed = np.cross(own[:, :, None, :], theirs[:, None, :, :]).reshape(-1, 9, 3)
    candidates = np.concatenate([own, theirs, crossed], axis=1)  # (N, 15, 3)
    norms = np.linalg.norm(candidates, axis=2, keepdims=True)
    valid = norms[..., 0] > 1e-6
    unit = candidates / np.maximum(norms, 1e-6)
    reach = np.abs(unit @ axes) @ half + np.einsum("nkj,nj->nk", np.abs(unit @ others), halves)
    gap = np.abs(np.einsum("nkj,nj->nk", unit, centres - centre)) - reach
    return float(np.where(valid, gap, -np.inf).max(axis=1).min())


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
        self.libero = env
        self.env = env.sim.env  # robosuite's environment inside LIBERO's wrapper
        goal = self.env.parsed_problem["goal_state"]
        if len(goal) != 1 or goal[0][0] not in ("on", "in"):
            raise ValueError(f"the scripted expert solves (On A B) and (In A REGION) goals, not {goal}")
        self.predicate, self.object, self.target = goal[0]

    def position(self, name: str) -> np.ndarray:
        return self.libero.object_position(name)

    def corners(self, name: str) -> np.ndarray:
        """World corners (M, 3) of the oriented boxes of an object's collision geoms."""
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
        return np.array(corners)

    def box(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """World axis-aligned bounding box (low, high) of an object's collision geometry."""
        points = self.corners(name)
        return points.min(0), points.max(0)

    def shoulder(self) -> np.ndarray:
        """The xy of the arm's vertical shoulder axis."""
        body = mujoco.mj_name2id(self.env.sim.model._model, mujoco.mjtObj.mjOBJ_BODY, "robot0_link1")
        return self.env.sim.data.body_xpos[body][:2].copy()

    def obstacles(self, above: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Oriented boxes (centres, axes, halves) of the collision geometry the gripper must not touch.

        Everything but the robot, the object to grasp, planes and geometry wholly below `above`
        (the surface the object stands on).
        """
        model, data = self.env.sim.model._model, self.env.sim.data._data
        root = self.env.obj_body_id[self.object]
        centres, axes, halves = [], [], []
        for g in range(model.ngeom):
            solid = model.geom_contype[g] or model.geom_conaffinity[g]
            if not solid or model.geom_type[g] == mujoco.mjtGeom.mjGEOM_PLANE:
                continue
            body = model.geom_bodyid[g]
            name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, body) or ""
            if name.startswith(ROBOT_PREFIXES):
                continue
            while body not in (0, root):
                body = model.body_parentid[body]
            if body == root:
                continue
            rotation = data.geom_xmat[g].reshape(3, 3)
            centre, half = data.geom_xpos[g] + rotation @ model.geom_aabb[g][:3], model.geom_aabb[g][3:]
            if centre[2] + np.abs(rotation[2]) @ half < above:
                continue
            centres.append(centre)
            axes.append(rotation)
            halves.append(half)
        return np.array(centres).reshape(-1, 3), np.array(axes).reshape(-1, 3, 3), np.array(halves).reshape(-1, 3)

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
        self.yaw = 0.0  # the gripper's turn about the vertical from DOWN, chosen with the grasp
        self.turn_error = 0.0
        self.integral = np.zeros(3)

    def __call__(self, env: LiberoEnv) -> np.ndarray:
        if env.context is not self.context or env.steps == 0:  # a new episode
            self.context, self.scene = env.context, LiberoScene(env)
            self._plan_grasp()
            self._enter("approach")
        raw = env.raw
        eef = raw["robot0_eef_pos"]
        turn = _rotation_error(_yaw_matrix(self.yaw) @ DOWN, _quat_to_matrix(raw["robot0_eef_quat"]))
        self.turn_error = float(np.linalg.norm(turn))
        rotation = np.clip(KR * turn, -1, 1)
        move, grip = self._step(eef)
        self.phase_steps += 1
        return np.r_[move, rotation, grip].astype(np.float32)

    # ---- the phase machine -----------------------------------------------------------------
    def _step(self, eef: np.ndarray) -> tuple[np.ndarray, float]:
        phase, n = self.phase, self.phase_steps
        if phase == "approach":
            goal = np.r_[self.grasp_xy, self.approach_z]
            close = np.linalg.norm((goal - eef)[:2]) < 0.01 and abs(goal[2] - eef[2]) < 0.02
            if close and (self.turn_error < 0.1 or n > 80):
                self._enter("descend")
            return self._toward(eef, goal, integrate=True), OPEN
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
            return self._toward(eef, goal, integrate=True), CLOSE
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
        self.integral = np.zeros(3)

    def _toward(self, eef: np.ndarray, goal: np.ndarray, limit: float = 1.0, integrate: bool = False) -> np.ndarray:
        """Proportional control; with `integrate`, plus an integral of the small errors (the arm sags short
        of far or high goals, by a centimetre at full reach with a load)."""
        error = goal - eef
        action = KP * error
        if integrate:
            self.integral += np.where(np.abs(error) < 0.03, error, 0.0)  # no wind-up on the way
            action += np.clip(KI * self.integral, -0.3, 0.3)
        return np.clip(action, -limit, limit)

    def _sweep_gap(self, xy: np.ndarray, yaw: float, grasp_z: float, obstacles: tuple) -> float:
        """Clearance of the open gripper on its way straight down from the approach height to a grasp."""
        frame = _yaw_matrix(yaw)
        axes = frame[:, [1, 0, 2]] * np.array([-1.0, 1.0, 1.0])  # closing axis, across it, up (world columns)
        gaps = []
        for low, high in GRIPPER_BOXES:
            low, high = np.minimum(low, high), np.maximum(low, high)  # a mirrored finger
            low, high = low + np.r_[0, 0, grasp_z], high + np.r_[0, 0, self.approach_z]
            middle, half = (low + high) / 2, (high - low) / 2
            centre = np.r_[xy, 0.0] + axes @ middle
            gaps.append(_box_gap(centre, axes, half, obstacles))
        return min(gaps)

    def _plan_grasp(self) -> None:
        """Choose where, how deep and turned how far to grasp the object.

        An object narrower than the gripper's span in some horizontal direction is grasped in the
        middle across that direction (the narrowest, the least turn); a wider one (a bowl) by its
        rim, from any of 24 directions, as deep as the neighbourhood allows (a bowl in a drawer is
        grasped higher and across the drawer). Grasps whose sweep down would touch another body
        are avoided, then rims that would hold the bowl too far out for the arm to reach it or its
        target (the farther, the worse); of the rest the least turned, then the one with the most
        room, wins.
        """
        scene = self.scene
        low, high = scene.box(scene.object)
        size, middle = high - low, (low[:2] + high[:2]) / 2
        self.bottom_offset = scene.position(scene.object)[2] - low[2]  # body origin above the object's bottom
        self.approach_z = high[2] + 0.08
        corners = scene.corners(scene.object)[:, :2]  # its footprint, seen from above
        obstacles = scene.obstacles(low[2] + 0.005)
        candidates = []  # (preference key without the clearance, xy, yaw, z)
        for k in range(12):  # centre grasps, the closing axis every 15 degrees
            yaw = (k - 5) * np.pi / 12
            axis, across = np.array([-np.sin(yaw), np.cos(yaw)]), np.array([np.cos(yaw), np.sin(yaw)])
            along, side = corners @ axis, corners @ across
            width = along.max() - along.min()
            if width < GRIPPER_SPAN_M:
                xy = axis * (along.max() + along.min()) / 2 + across * (side.max() + side.min()) / 2
                z = max(high[2] - 0.035, low[2] + 0.4 * size[2], low[2] + 0.015)
                candidates.append(((round(width, 2), round(abs(yaw), 2)), xy, yaw, z))
        rim = not candidates
        if rim:  # rim grasps: the inner finger in the bowl, the outer one outside
            for k in range(24):
                direction = np.array([np.cos(k * np.pi / 12), np.sin(k * np.pi / 12)])
                radius = (corners @ direction).max() - middle @ direction
                yaw = k * np.pi / 12 % np.pi - np.pi / 2  # the closing axis along the direction, in [-90, 90) degrees
                for depth, inset in itertools.product((0.025, 0.02, 0.016, 0.013, 0.01), (0.012, 0.02)):
                    xy = middle + direction * (radius - inset)  # the hand's middle this far inside the rim
                    candidates.append(((-depth, round(abs(yaw), 2), inset), xy, yaw, high[2] - depth))
        shoulder, target = scene.shoulder(), scene.target_geometry()[0]
        held = scene.position(scene.object)[:2]
        best, best_key = None, None
        for preference, xy, yaw, z in candidates:
            gap = self._sweep_gap(xy, yaw, z, obstacles)
            reach = max(np.linalg.norm(xy - shoulder), np.linalg.norm(target + xy - held - shoulder))  # grasp, place
            beyond = round(max(reach - REACH_M, 0.0), 2) if rim else 0.0  # a rim grasp: the side nearer the arm
            key = (gap < CLEARANCE_M, beyond, *preference, -gap)
            if best_key is None or key < best_key:
                best, best_key = (xy, yaw, z), key
        self.grasp_xy, self.yaw, self.grasp_z = best

    def _plan_place(self, eef: np.ndarray) -> None:
        scene = self.scene
        centre, floor, region, top = scene.target_geometry()
        hold = eef - scene.position(scene.object)  # where the hand holds the object, measured after lifting
        self.place_xy = centre + hold[:2]
        release_bottom = floor + (0.03 if region else 0.015)  # let go just above the surface
        self.place_z = release_bottom + self.bottom_offset + hold[2]
        self.carry_z = max(self.place_z + 0.10, top + 0.05 + self.bottom_offset + hold[2], eef[2])
