"""The built-in pick task: fast enough for CI, hard enough that one demonstration is not enough.

A top-down camera looks at four coloured blocks laid out by the context's seed. The
instruction names one block ("pick up the red block"); the gripper moves in the plane and
closing it is a single grasp attempt that ends the episode: success when it closes within
`GRASP_RADIUS` of the named block. Scenes differ in background colour, controller gain and
hand-eye calibration: in the target scene `workcell` the gripper sits 15 degrees (about the
arena centre) off the marker the camera shows, so a policy pretrained in the other scenes
reaches for the right block but closes beside it, by more the farther the block is from the
centre. One demonstration per task cannot teach that position-dependent correction; practice
over many layouts can. This mirrors RIPT's one-demonstration setting (pretrain elsewhere,
one demonstration of the target).

Actions are (dx, dy, grip) in [-1, 1]; grip > 0 closes. The state is (x, y, gripper).
Everything is numpy; one step including rendering a 64x64 image takes tens of microseconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ript_robot.envs.base import EnvSpec, RobotEnv, StepResult
from ript_robot.types import Context, Observation

if TYPE_CHECKING:
    from ript_robot.config import TaskConfig

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (50, 80, 230),
    "yellow": (235, 205, 40),
}
TASKS: tuple[str, ...] = tuple(f"pick up the {name} block" for name in COLORS)
STEP_SIZE = 0.025  # arena units moved per step at full command and gain 1
BLOCK_HALF = 0.045  # half side of a block, arena units (the arena is the unit square)
GRASP_RADIUS = 0.05  # closing within this distance of the block centre grasps it
MIN_SEPARATION = 0.2  # minimum distance between block centres
CAMERA = "top"


@dataclass(frozen=True)
class Scene:
    """A workcell: what the camera sees behind the blocks and how the arm responds."""

    background: tuple[int, int, int]
    gain: float  # arena units per unit command, relative to STEP_SIZE
    hand_eye_error_deg: float = 0.0  # the gripper sits this rotation (about the arena centre) off its marker


SCENES: dict[str, Scene] = {
    "lab_a": Scene(background=(200, 200, 200), gain=1.0),
    "lab_b": Scene(background=(170, 190, 215), gain=0.8),
    "lab_c": Scene(background=(215, 195, 160), gain=1.25),
    "workcell": Scene(background=(140, 150, 140), gain=1.0, hand_eye_error_deg=15.0),
}


def task_index(instruction: str) -> int:
    """Index of the block an instruction names; a clear error for unknown instructions."""
    try:
        return TASKS.index(instruction)
    except ValueError:
        raise ValueError(f"unknown instruction {instruction!r}; the built-in task knows {list(TASKS)}") from None


def make_contexts(scene: str, seeds: range | list[int], tasks: tuple[str, ...] = TASKS) -> list[Context]:
    """One context per (task, seed) in `scene`, with stable ids `scene/task/seed`."""
    if scene not in SCENES:
        raise ValueError(f"unknown scene {scene!r}; known scenes: {sorted(SCENES)}")
    return [
        Context(context_id=f"{scene}/{task_index(t)}/{s}", instruction=t, seed=int(s), scene=scene)
        for t in tasks
        for s in seeds
    ]


# Seed ranges keep the context sets disjoint: RIPT pool, held-out evaluation, demonstrations.
TRAIN_SEEDS, HELDOUT_SEEDS, TARGET_DEMO_SEEDS, PRETRAIN_DEMO_SEEDS = 0, 10_000, 20_000, 30_000


def context_sets(task: TaskConfig) -> tuple[list[Context], list[Context]]:
    """The RIPT pool (training contexts) and the held-out contexts of the task's target scene."""
    train = make_contexts(task.target_scene, range(TRAIN_SEEDS, TRAIN_SEEDS + task.train_contexts_per_task))
    heldout = make_contexts(task.target_scene, range(HELDOUT_SEEDS, HELDOUT_SEEDS + task.heldout_contexts_per_task))
    return train, heldout


def _rotate(point: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate an arena point about the arena centre."""
    if degrees == 0.0:
        return np.asarray(point, dtype=np.float64).copy()
    a = np.deg2rad(degrees)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return 0.5 + rot @ (np.asarray(point) - 0.5)


def layout(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Block centres (4, 2) and the gripper's start (2,) for a seed; blocks never overlap."""
    rng = np.random.default_rng(seed)
    blocks: list[np.ndarray] = []
    while len(blocks) < len(COLORS):
        p = rng.uniform(0.12, 0.88, size=2)
        if all(np.linalg.norm(p - q) >= MIN_SEPARATION for q in blocks):
            blocks.append(p)
    start = rng.uniform(0.1, 0.9, size=2)
    return np.stack(blocks), start


class PickEnv(RobotEnv):
    """The built-in task behind the `RobotEnv` contract (success known, like any simulator)."""

    def __init__(self, image_size: int = 64, max_steps: int = 40, control_hz: float = 20.0):
        """image_size: camera side in pixels (16-256). max_steps: step limit (>= 1)."""
        if not 16 <= image_size <= 256:
            raise ValueError(f"image_size must be in [16, 256], got {image_size}")
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.spec = EnvSpec(
            cameras={CAMERA: (image_size, image_size)},
            state_dim=3,
            action_dim=3,
            control_hz=control_hz,
            max_steps=max_steps,
            action_names=("dx", "dy", "grip"),
        )
        self.image_size = image_size
        self._context: Context | None = None
        self._blocks = np.zeros((len(COLORS), 2))
        self._pos = np.zeros(2)
        self._steps = 0
        self._scene = SCENES["lab_a"]
        self._target = 0

    @property
    def target_position(self) -> np.ndarray:
        """Centre of the block the instruction names (privileged; the expert uses it)."""
        return self._blocks[self._target].copy()

    @property
    def block_positions(self) -> np.ndarray:
        """Centres of all blocks (4, 2), in the order of COLORS (privileged)."""
        return self._blocks.copy()

    @property
    def target_index(self) -> int:
        """Which block the instruction names (privileged)."""
        return self._target

    @property
    def gripper_position(self) -> np.ndarray:
        """Where the gripper grasps: the marker's position rotated by the scene's hand-eye error."""
        return _rotate(self._pos, self._scene.hand_eye_error_deg)

    @property
    def marker_position(self) -> np.ndarray:
        """Where the camera shows the gripper."""
        return self._pos.copy()

    @property
    def scene(self) -> Scene:
        return self._scene

    @property
    def steps_left(self) -> int:
        """Steps before the episode times out."""
        return self.spec.max_steps - self._steps

    def reset(self, context: Context) -> Observation:
        if context.scene not in SCENES:
            raise ValueError(f"context {context.context_id}: unknown scene {context.scene!r}; known: {sorted(SCENES)}")
        self._context = context
        self._scene = SCENES[context.scene]
        self._target = task_index(context.instruction)
        self._blocks, self._pos = layout(context.seed)
        self._steps = 0
        return self._observe(closed=False)

    def step(self, action: np.ndarray, render: bool = True) -> StepResult:
        if self._context is None:
            raise RuntimeError("PickEnv.step() called before reset()")
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (3,) or not np.all(np.isfinite(action)):
            raise ValueError(f"PickEnv expects a finite action of shape (3,), got {action!r}")
        move = np.clip(action[:2], -1.0, 1.0) * STEP_SIZE * self._scene.gain
        self._pos = np.clip(self._pos + move, 0.0, 1.0)
        self._steps += 1
        if action[2] > 0.0:
            success = bool(np.linalg.norm(self.gripper_position - self._blocks[self._target]) < GRASP_RADIUS)
            return StepResult(self._observe(True, render), True, success, "grasped" if success else "missed")
        if self._steps >= self.spec.max_steps:
            return StepResult(self._observe(False, render), True, False, "timeout")
        return StepResult(self._observe(False, render), False, None)

    def _observe(self, closed: bool, render: bool = True) -> Observation:
        assert self._context is not None
        return Observation(
            images={CAMERA: self.render(closed)} if render else {},
            state=np.array([self._pos[0], self._pos[1], float(closed)], dtype=np.float32),
            instruction=self._context.instruction,
            timestamp=time.monotonic(),
        )

    def render(self, closed: bool = False) -> np.ndarray:
        """Top-down RGB image (H, W, 3) uint8: background, four blocks, the gripper as a cross."""
        n = self.image_size
        img = np.empty((n, n, 3), dtype=np.uint8)
        img[:] = self._scene.background
        half = max(1, round(BLOCK_HALF * n))
        for (x, y), color in zip(self._blocks, COLORS.values(), strict=True):
            cx, cy = round(x * (n - 1)), round(y * (n - 1))
            img[max(cy - half, 0) : cy + half + 1, max(cx - half, 0) : cx + half + 1] = color
        gx, gy = round(self._pos[0] * (n - 1)), round(self._pos[1] * (n - 1))
        arm = max(1, round(0.05 * n))
        shade = (255, 255, 255) if closed else (20, 20, 20)
        img[gy, max(gx - arm, 0) : gx + arm + 1] = shade
        img[max(gy - arm, 0) : gy + arm + 1, gx] = shade
        return img


def reach_action(env: PickEnv, goal: np.ndarray, hand_eye: bool = True) -> np.ndarray:
    """Move at full speed until the gripper is on `goal`, then close.

    hand_eye=False reaches as if the camera's marker were the gripper: the mistake of a
    policy that never learned the scene's hand-eye error (it closes beside the goal).
    """
    here = env.gripper_position if hand_eye else env.marker_position
    if np.linalg.norm(goal - here) < 0.3 * GRASP_RADIUS:
        return np.array([0.0, 0.0, 1.0], dtype=np.float32)
    move = np.clip(steps_to(env, goal, hand_eye), -1.0, 1.0)
    return np.array([move[0], move[1], -1.0], dtype=np.float32)


def steps_to(env: PickEnv, goal: np.ndarray, hand_eye: bool = True) -> np.ndarray:
    """The marker's way to put the gripper on `goal` (or the marker itself, without `hand_eye`), (2,), in full
    steps of the scene's gain: a command within [-1, 1] covers it in one step."""
    marker_goal = _rotate(goal, -env.scene.hand_eye_error_deg) if hand_eye else goal
    return (marker_goal - env.marker_position) / (STEP_SIZE * env.scene.gain)


def expert_action(env: PickEnv) -> np.ndarray:
    """Scripted expert: move straight to the named block at full speed, close when on it.

    Uses privileged state (block positions and the scene's gain), as simulators allow.
    """
    return reach_action(env, env.target_position)


class ScriptedOperator:
    """A scripted operator who takes over an episode about to fail, drives the scripted expert to the named
    block and grasps: a rescue, as a person with a gamepad would make it. About to fail: the policy is about
    to close the gripper away from the block (a grasp that would miss), or the steps left are just enough
    for the expert to reach the block and grasp (the policy dawdles into a timeout). It never takes over a
    policy about to grasp correctly. Callable as a `runtime.loop.Intervener` on `PickEnv`s."""

    def __call__(self, env: RobotEnv, proposed: np.ndarray | None) -> np.ndarray | None:
        if not isinstance(env, PickEnv):
            raise TypeError(f"the scripted operator drives the built-in PickEnv, not {type(env).__name__}")
        if proposed is None:  # in control: the expert to the end (its grasp ends the episode)
            return expert_action(env)
        on_block = np.linalg.norm(env.gripper_position - env.target_position) < GRASP_RADIUS
        if proposed[2] > 0.0:
            return None if on_block else expert_action(env)
        reach = int(np.ceil(np.abs(steps_to(env, env.target_position)).max()))
        return expert_action(env) if env.steps_left <= reach + 2 else None
