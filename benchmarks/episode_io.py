"""What one short episode costs the store: write and read time per episode, against zarr-python.

The built-in task's episodes are 14 steps: seven small arrays and one 64x64 camera. For them
the store's cost is per object, not per byte, and it decides how far `ript train` + `ript actor`
fall behind the in-process job. Measured in one run on the same episodes:

- write_ms: `EpisodeWriter` (in-process zarr v3 encoding, `ript_robot.data.arrays`), begin to
  commit, per episode, flushed every `--batch` episodes as the actor does;
- write_ms_zarr_python: the same arrays and attributes written with zarr-python's
  `create_array` on a local store (what the writer did before);
- read_ms: `EpisodeStore.read_episode` (manifest-checked, decoded in process);
- read_ms_zarr_python: `zarr.open_group` and every array read with zarr-python.

Prints the figures and saves benchmarks/results/episode_io.json (nothing with --smoke).

    python benchmarks/episode_io.py [--episodes 400] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec

from ript_robot.data import EpisodeStore
from ript_robot.types import ActionChunk, Context, Episode, EpisodeMeta, Label, Observation, StepRecord

RESULTS = Path(__file__).parent / "results"
STEPS, CHUNK, SIDE = 14, 8, 64


def pick_sized_episode(seed: int) -> Episode:
    """An episode shaped like the built-in task's: 14 steps, a 64x64 camera, state and actions of 3, 8-step chunks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIDE, :SIDE]
    meta = EpisodeMeta(uuid.uuid4().hex, Context(f"bench/{seed % 32}", "pick up the red block", seed), 0, "bench", 0.0)
    chunks = [
        ActionChunk(rng.normal(size=(CHUNK, 3)).astype(np.float32), rng.normal(size=CHUNK).astype(np.float32))
        for _ in range(-(-STEPS // CHUNK))
    ]
    steps = []
    for t in range(STEPS):
        disc = ((yy - 20 - t) ** 2 + (xx - 30) ** 2 < 36)[..., None] * np.array([200, 40, 40], np.uint8)
        obs = Observation({"top": (disc + 30).astype(np.uint8)}, rng.normal(size=3).astype(np.float32), "", float(t))
        steps.append(StepRecord(t, time.time(), obs, chunks[t // CHUNK].actions[t % CHUNK], t // CHUNK))
    meta.end_time, meta.num_steps, meta.end_reason = time.time(), STEPS, "missed"
    meta.label = Label(bool(seed % 2), "sim", labeler="benchmark")
    return Episode(meta, steps, chunks, [steps[0].observation, steps[CHUNK].observation])


def write_with_zarr_python(root: Path, episode: Episode) -> None:
    group = zarr.open_group(zarr.storage.LocalStore(root), path=f"episodes/{episode.meta.episode_id}", mode="w")
    arrays = {
        "images/top": np.stack([s.observation.images["top"] for s in episode.steps]),
        "frame_steps": np.arange(STEPS, dtype=np.int32),
        "state": np.stack([s.observation.state for s in episode.steps]),
        "actions": np.stack([s.action for s in episode.steps]).astype(np.float32),
        "timestamps": np.array([s.timestamp for s in episode.steps]),
        "chunk_actions": np.stack([c.actions for c in episode.chunks]),
        "chunk_log_prob": np.stack([c.step_log_prob for c in episode.chunks]),
    }
    for name, data in arrays.items():
        shuffle = "bitshuffle" if name.startswith("images/") else "shuffle"
        compressors = [BloscCodec(cname="lz4", clevel=5, shuffle=shuffle), Crc32cCodec()]
        group.create_array(name, data=data, chunks=(16 if name.startswith("images/") else 1024, *data.shape[1:]),
                           compressors=compressors)  # fmt: skip
    group.attrs.update({"ript_episode": {"episode_id": episode.meta.episode_id}})


def read_with_zarr_python(root: Path, episode_id: str) -> None:
    group = zarr.open_group(zarr.storage.LocalStore(root), path=f"episodes/{episode_id}", mode="r")
    for name in ("images/top", "frame_steps", "state", "actions", "timestamps", "chunk_actions", "chunk_log_prob"):
        np.asarray(group[name][...])


def per_episode_ms(seconds: float, episodes: int) -> float:
    return 1e3 * seconds / episodes


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=400, help="episodes written and read each way")
    parser.add_argument("--batch", type=int, default=64, help="episodes between writer flushes (an actor's claim)")
    parser.add_argument("--smoke", action="store_true", help="a few episodes, nothing saved")
    args = parser.parse_args()
    n = 8 if args.smoke else args.episodes
    episodes = [pick_sized_episode(i) for i in range(n)]
    result: dict = {"episodes": n, "steps_per_episode": STEPS}
    with tempfile.TemporaryDirectory(prefix="ript-episode-io-") as tmp:
        store = EpisodeStore(Path(tmp) / "store")
        start = time.perf_counter()
        with store.writer() as writer:
            for begin in range(0, n, args.batch):
                for episode in episodes[begin : begin + args.batch]:
                    store.write_episode(episode, writer)
                writer.flush()
        result["write_ms"] = per_episode_ms(time.perf_counter() - start, n)
        if writer.failures:
            raise SystemExit(f"the writer failed: {writer.failures[:3]}")
        store.refresh()
        start = time.perf_counter()
        for episode in episodes:
            store.read_episode(episode.meta.episode_id)
        result["read_ms"] = per_episode_ms(time.perf_counter() - start, n)
        reference = Path(tmp) / "zarr-python"
        start = time.perf_counter()
        for episode in episodes:
            write_with_zarr_python(reference, episode)
        result["write_ms_zarr_python"] = per_episode_ms(time.perf_counter() - start, n)
        start = time.perf_counter()
        for episode in episodes:
            read_with_zarr_python(reference, episode.meta.episode_id)
        result["read_ms_zarr_python"] = per_episode_ms(time.perf_counter() - start, n)
    result["write_speedup"] = result["write_ms_zarr_python"] / result["write_ms"]
    result["read_speedup"] = result["read_ms_zarr_python"] / result["read_ms"]
    result["zarr"] = zarr.__version__
    r = result
    print(f"per episode of {STEPS} steps: write {r['write_ms']:.1f} ms, read {r['read_ms']:.1f} ms")
    print(f"zarr-python: write {r['write_ms_zarr_python']:.1f} ms, read {r['read_ms_zarr_python']:.1f} ms")
    print(f"speed-up: write {r['write_speedup']:.1f}x, read {r['read_speedup']:.1f}x")
    if not args.smoke:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "episode_io.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
