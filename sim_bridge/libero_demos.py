"""LIBERO's official demonstrations (robomimic-style HDF5) as episodes for SFT.

LIBERO ships 50 human demonstrations per task as one file per task,
`<task name>_demo.hdf5`, laid out as:

    data/demo_<i>/actions            float (T, 7)   the commands, as `LiberoEnv.step` takes them
    data/demo_<i>/obs/agentview_rgb  uint8 (T, H, W, 3), upside down and mirrored like the simulator's
    data/demo_<i>/obs/eye_in_hand_rgb
    data/demo_<i>/obs/ee_pos         (T, 3)  end-effector position
    data/demo_<i>/obs/ee_ori         (T, 3)  its orientation as an axis-angle
    data/demo_<i>/obs/gripper_states (T, 2)  finger positions
    data/demo_<i>/dones, rewards     (T,)    1 at the last step of a successful demonstration

LIBERO's `create_dataset.py` stores at index t the observation that *followed* actions[t]
(the replay records after each step), so the action taken from observation t is
actions[t + 1]; the reader pairs them that way and drops the last observation, which no
action followed. `read_libero_demos` turns each demo into an `Episode` that looks exactly
like one `LiberoEnv` records (upright images at the env's size, the same 8-number state),
so a policy trained on them runs in the simulator unchanged. They cannot be downloaded here; users who have
them point `--demos` at their folder, and the tests write a small file in this format.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ript_robot.images import resize_area
from ript_robot.types import Context, Episode, EpisodeMeta, Label, Observation, StepRecord
from sim_bridge.libero_env import task_suite

DATASET_CAMERAS = {"agentview": "agentview_rgb", "wrist": "eye_in_hand_rgb"}  # our camera -> the file's key
STATE_KEYS = ("ee_pos", "ee_ori", "gripper_states")


def demo_file(folder: str | Path, suite: str, task_id: int) -> Path:
    """Where LIBERO keeps a task's demonstrations inside a suite's dataset folder."""
    return Path(folder) / f"{task_suite(suite).get_task(task_id).name}_demo.hdf5"


def _resize(frames: np.ndarray, size: int) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, size, size, 3), by area interpolation (the policy node's resize)."""
    return np.stack([resize_area(f, (size, size)) for f in frames]) if frames.shape[1:3] != (size, size) else frames


def read_libero_demos(
    path: str | Path,
    suite: str,
    task_id: int,
    image_size: int = 128,
    cameras: tuple[str, ...] = ("agentview", "wrist"),
    max_demos: int | None = None,
) -> list[Episode]:
    """The successful demonstrations of one task file, as demonstration episodes (kind 'demonstration')."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no LIBERO demonstration file {path}")
    instruction = task_suite(suite).get_task(task_id).language
    episodes = []
    with h5py.File(path, "r") as f:
        if "data" not in f:
            raise ValueError(f"{path} is not a LIBERO demonstration file: it has no 'data' group")
        names = sorted(f["data"], key=lambda n: int(n.removeprefix("demo_")) if n.startswith("demo_") else -1)
        for name in names[:max_demos] if max_demos else names:
            demo = f["data"][name]
            needed = ["actions", "dones"] + [f"obs/{k}" for k in (*STATE_KEYS, *(DATASET_CAMERAS[c] for c in cameras))]
            missing = [k for k in needed if k not in demo]
            if missing:
                raise ValueError(f"{path}: data/{name} lacks {missing}; LIBERO demonstrations have {needed}")
            dones = demo["dones"][()]
            if not dones[-1]:
                continue  # an unsuccessful demonstration teaches nothing
            actions = demo["actions"][()].astype(np.float32)
            state = np.concatenate([demo["obs"][k][()] for k in STATE_KEYS], axis=1).astype(np.float32)
            images = {c: _resize(demo["obs"][DATASET_CAMERAS[c]][()][:, ::-1, ::-1], image_size) for c in cameras}
            index = int(name.removeprefix("demo_"))
            context = Context(f"{suite}/{task_id}/{name}", instruction, seed=index, scene=f"{suite}/{task_id}")
            meta = EpisodeMeta(
                f"{path.stem}-{name}",
                context,
                -1,
                robot_id="libero-dataset",
                start_time=time.time(),
                kind="demonstration",
            )
            steps = [  # observation t was recorded after actions[t]: the action it led to is actions[t + 1]
                StepRecord(t, float(t), Observation({c: images[c][t] for c in cameras}, state[t], instruction), a, 0)
                for t, a in enumerate(actions[1:])
            ]
            meta.end_time, meta.num_steps, meta.end_reason = time.time(), len(steps), "success"
            meta.label = Label(success=True, source="sim", labeler="libero-dataset")
            episodes.append(Episode(meta, steps, chunks=[], chunk_observations=[]))
    return episodes
