"""The store benchmark's index part: what finding work costs the trainer as a store grows.

`index_scaling` commits tiny episodes from several processes (one index session each per size step), then
times opening a fresh `EpisodeStore`, `refresh()` and `complete_groups(K)` on the local directory and on
moto's S3-compatible server holding the same index objects. store.py runs it and saves the figures; the
episode helpers here are shared with its camera-stream part.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import time
import uuid
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, wait
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from tqdm import tqdm

from ript_robot.data import EpisodeStore
from ript_robot.data.backend import Backend
from ript_robot.data.local_s3 import create_bucket, s3_environment, start_s3_server
from ript_robot.data.store import MARKER
from ript_robot.data.writer import EpisodeWriter
from ript_robot.types import ActionChunk, Context, Episode, EpisodeMeta, Label, Observation, StepRecord

matplotlib.use("Agg")
import matplotlib.pyplot as plt

STATE_DIM = 7
ACTION_DIM = 7
CHUNK = 8  # actions per chunk, one chunk planned every CHUNK steps
K = 8  # rollouts per context in a complete group
INSTRUCTION = "pick up the red block"


def new_meta(context_id: str, seed: int, version: int = 0) -> EpisodeMeta:
    return EpisodeMeta(uuid.uuid4().hex, Context(context_id, INSTRUCTION, seed), version, "bench", time.time())


def finish(meta: EpisodeMeta, steps: int, success: bool) -> None:
    meta.end_time, meta.num_steps, meta.end_reason = time.time(), steps, "max steps"
    meta.label = Label(success, "sim", labeler="benchmark")


def tiny_episode(i: int) -> Episode:
    """Episode i of the index benchmark: 2 steps, one 8x8 camera, one chunk; context i // K."""
    rng = np.random.default_rng(i)
    meta = new_meta(f"bench/{i // K}", i, version=i // 1000)
    chunk = ActionChunk(
        rng.normal(size=(CHUNK, ACTION_DIM)).astype(np.float32), rng.normal(size=CHUNK).astype(np.float32)
    )
    steps = []
    for t in range(2):
        obs = Observation(
            {"top": rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)},
            rng.normal(size=STATE_DIM).astype(np.float32),
            INSTRUCTION,
            float(t),
        )
        steps.append(StepRecord(t, time.time(), obs, chunk.actions[t], 0))
    finish(meta, 2, success=i % 3 == 0)
    return Episode(meta, steps, [chunk], [steps[0].observation])


def check(writer: EpisodeWriter) -> None:
    if writer.failures:
        raise RuntimeError(f"the writer failed: {writer.failures[0]}")


# --- the index: 1k to 10k committed episodes, local and S3 ---

_progress: Synchronized | None = None


def _init_worker(progress: Synchronized) -> None:
    global _progress
    _progress = progress


def _populate(uri: str, start: int, count: int) -> None:
    """Worker process: commit tiny episodes start..start+count with one shared writer (one index session)."""
    assert _progress is not None
    store = EpisodeStore(uri)
    with store.writer() as writer:
        for i in range(start, start + count):
            store.write_episode(tiny_episode(i), writer)
            writer.flush()
            with _progress.get_lock():
                _progress.value += 1
    check(writer)


def time_index(uri: str, repeats: int) -> tuple[float, int]:
    """Median seconds to open a fresh store, refresh its index and find complete groups."""
    times, groups = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        store = EpisodeStore(uri, create=False)
        store.refresh()
        groups = len(store.complete_groups(K))
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), groups


def copy_index(local: Backend, remote: Backend) -> int:
    """Copy the marker, root group metadata and every index segment into the bucket; returns the count."""
    paths = [MARKER, "zarr.json", "episodes/zarr.json", *(m["path"] for m in local.list("index/"))]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda p: remote.put(p, local.get(p) or b""), paths))
    return len(paths)


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    """moto's S3-compatible server on a free loopback port, with a fresh bucket; returns (process, s3 uri)."""
    proc, endpoint = start_s3_server()
    os.environ.update(s3_environment(endpoint))
    bucket = f"ript-bench-{uuid.uuid4().hex[:8]}"
    create_bucket(endpoint, bucket)
    return proc, f"s3://{bucket}/store"


def index_scaling(root: Path, sizes: list[int], repeats: int, workers: int) -> dict[str, Any]:
    """Grow a local store to each size (tiny episodes from `workers` processes), time the index; same on S3."""
    uri = str(root / "index")
    local = EpisodeStore(uri).backend  # created here so the workers never race to create it
    proc, s3_uri = start_moto()
    try:
        remote = EpisodeStore(s3_uri).backend
        timings: dict[str, dict[str, float]] = {"local": {}, "s3": {}}
        copied: dict[str, int] = {}
        populate_s = 0.0
        progress = multiprocessing.get_context("spawn").Value("i", 0)
        with ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker, initargs=(progress,)
        ) as pool:
            done = 0
            for size in sizes:
                t0 = time.perf_counter()
                share = -(-(size - done) // workers)
                futures = [
                    pool.submit(_populate, uri, begin, min(share, size - begin)) for begin in range(done, size, share)
                ]
                with tqdm(total=size, initial=done, desc=f"populate {size} episodes", unit="episode") as bar:
                    while not all(f.done() for f in futures):
                        wait(futures, timeout=0.5)
                        bar.update(progress.value - bar.n)
                for f in futures:
                    f.result()
                populate_s += time.perf_counter() - t0
                done = size
                key = str(size)
                copied[key] = copy_index(local, remote)
                for name, target in (("local", uri), ("s3", s3_uri)):
                    seconds, groups = time_index(target, repeats)
                    if groups != size // K:
                        raise RuntimeError(f"{name} store with {size} episodes gave {groups} groups, not {size // K}")
                    timings[name][key] = seconds
                print(f"  {size} episodes: local {timings['local'][key]:.3f} s, S3 {timings['s3'][key]:.3f} s")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return {
        "index_local_s": timings["local"],
        "index_s3_s": timings["s3"],
        "index_objects_copied_to_s3": copied,
        "episode_objects_not_copied_to_s3": sum(1 for _ in local.list("episodes/")),
        "populate_local_s": populate_s,
        "populate_ms_per_episode_per_process": 1000 * populate_s * workers / sizes[-1],
        "index_sessions": workers * len(sizes),
        "index_10k_s": timings["local"].get("10000"),  # None when 10,000 is not among the sizes
        "index_10k_s3_s": timings["s3"].get("10000"),
    }


def plot_index(result: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for name, key in (("local directory", "index_local_s"), ("S3 (moto server)", "index_s3_s")):
        sizes = [int(n) for n in result[key]]
        ax.plot(sizes, list(result[key].values()), marker="o", label=name)
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1, label="goal (10k episodes)")
    ax.set_xlabel("committed episodes")
    ax.set_ylabel("open + refresh + complete_groups (s)")
    ax.set_title("Finding complete groups: median of fresh opens")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
