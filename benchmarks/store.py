"""Episode store benchmark: what logging costs a robot, and what finding work costs the trainer.

A robot logs two 224x224 RGB cameras plus its state at 30 Hz through the `EpisodeWriter`,
which must never stall a control tick, and must drain its queue much faster than the robot
fills it. The trainer reads episodes back and, before every update, opens the store and asks
for complete groups of K rollouts; with 10,000 episodes that must stay well under a second,
locally and on S3-compatible object storage. Measured here:

- tick_block_*_ms: wall time per control step spent inside writer calls (begin/add_chunk/
  add_step/end) in a real-time 30 Hz loop (sleeping to each tick) over several episodes.
- realtime_factor: sustained writer throughput (steps/s, first begin to flush() returning,
  no sleeping) over the 30 steps/s a robot produces; also raw image MB/s.
- compression_ratio: raw image bytes over the bytes the image arrays take on disk, for the
  synthetic camera stream and for the built-in PickEnv task's 64x64 images.
- read_mb_s: decoded MB/s of `EpisodeStore.read_episode` over the committed episodes.
- index_*: opening a fresh `EpisodeStore`, `refresh()` and `complete_groups(8)` with 1,000 to
  10,000 committed episodes, on a local directory and on moto's S3-compatible server.

The camera images are not random noise (which never compresses) nor constant (which always
does): a smooth colour field with a few flat objects, panning 1 px every 4 frames, a disc
(the gripper) moving about 1.5 px per frame, and Gaussian sensor noise of 2 grey levels.
Prints the figures and saves benchmarks/results/store.json and store_index.png.

    python benchmarks/store.py            # the full run (about 10 minutes on 2 cores)
    python benchmarks/store.py --smoke    # a few seconds of each part, saves nothing
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import obstore
import zarr
from store_index import (
    ACTION_DIM,
    CHUNK,
    INSTRUCTION,
    STATE_DIM,
    K,
    check,
    finish,
    index_scaling,
    new_meta,
    plot_index,
)
from tqdm import tqdm

from ript_robot.data import EpisodeStore
from ript_robot.data.writer import EpisodeWriter
from ript_robot.envs.demos import record_demonstrations
from ript_robot.envs.pick import PickEnv, expert_action, make_contexts
from ript_robot.types import ActionChunk, Episode, Observation, StepRecord

RESULTS = Path(__file__).parent / "results"
HZ = 30.0
SIDE = 224
CAMERAS = ("front", "wrist")
PAN = 80  # margin of the scene the camera pans over, pixels
NOISE = 2.0  # sensor noise, grey levels (standard deviation)
IMAGES_NOTE = (
    f"{len(CAMERAS)} cameras {SIDE}x{SIDE} RGB uint8: smooth colour field (4 random low-frequency sinusoids per "
    "channel) with 6 flat-coloured rectangles, panning 1 px every 4 frames, a disc of radius 18 px moving "
    f"~1.5 px per frame, Gaussian sensor noise sigma={NOISE} grey levels drawn anew for every frame; one sequence "
    "of steps_per_episode frames per camera, generated before the runs and reused by every episode"
)


# --- synthetic data ---


def camera_frames(steps: int, seed: int = 0) -> dict[str, np.ndarray]:
    """(steps, SIDE, SIDE, 3) uint8 frames per camera of a slowly moving, noisy, smooth scene."""
    rng = np.random.default_rng(seed)
    size = SIDE + PAN
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / SIDE
    ys, xs = np.mgrid[0:SIDE, 0:SIDE]
    frames = {}
    for camera in CAMERAS:
        scene = np.full((size, size, 3), 120.0, np.float32)
        for c in range(3):
            for _ in range(4):
                fx, fy = rng.uniform(0.3, 2.5, 2)
                scene[..., c] += rng.uniform(8, 25) * np.sin(
                    2 * np.pi * (fx * xx + fy * yy) + rng.uniform(0, 2 * np.pi)
                )
        for _ in range(6):
            x0, y0 = rng.integers(0, size - 40, 2)
            w, h = rng.integers(15, 40, 2)
            scene[y0 : y0 + h, x0 : x0 + w] = rng.uniform(20, 235, 3)
        disc_color = rng.uniform(20, 235, 3).astype(np.float32)
        out = np.empty((steps, SIDE, SIDE, 3), np.uint8)
        for t in range(steps):
            offset = (t // 4) % PAN
            frame = scene[offset : offset + SIDE, offset // 2 : offset // 2 + SIDE].copy()
            cx, cy = SIDE / 2 + 60 * np.cos(t / 40), SIDE / 2 + 60 * np.sin(t / 40)
            frame[(xs - cx) ** 2 + (ys - cy) ** 2 < 18**2] = disc_color
            frame += rng.normal(0.0, NOISE, frame.shape).astype(np.float32)
            out[t] = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
        frames[camera] = out
    return frames


class CameraEpisode:
    """One episode of the camera stream: the objects the runtime hands the writer at each step."""

    def __init__(self, frames: dict[str, np.ndarray], index: int):
        rng = np.random.default_rng(index)
        self.frames = frames
        self.steps = len(next(iter(frames.values())))
        self.meta = new_meta(f"bench/camera/{index}", index)
        chunks = -(-self.steps // CHUNK)
        self.chunks = [
            ActionChunk(
                rng.normal(size=(CHUNK, ACTION_DIM)).astype(np.float32), rng.normal(size=CHUNK).astype(np.float32)
            )
            for _ in range(chunks)
        ]
        self.states = rng.normal(size=(self.steps, STATE_DIM)).astype(np.float32)

    def record(self, t: int) -> StepRecord:
        obs = Observation({cam: f[t] for cam, f in self.frames.items()}, self.states[t], INSTRUCTION, time.monotonic())
        return StepRecord(t, time.time(), obs, self.chunks[t // CHUNK].actions[t % CHUNK], t // CHUNK)

    def send(self, writer: EpisodeWriter, t: int, record: StepRecord) -> None:
        """The writer calls the control thread makes at step t."""
        episode_id = self.meta.episode_id
        if t == 0:
            writer.begin(self.meta)
        if t % CHUNK == 0:
            writer.add_chunk(episode_id, self.chunks[t // CHUNK], record.observation)
        writer.add_step(episode_id, record)
        if t == self.steps - 1:
            finish(self.meta, self.steps, success=True)
            writer.end(self.meta)


# --- the camera stream: tick blocking, throughput, compression, reads ---


def percentiles_ms(seconds: list[float], prefix: str) -> dict[str, float]:
    ms = 1000 * np.asarray(seconds)
    return {
        f"{prefix}_p50_ms": float(np.percentile(ms, 50)),
        f"{prefix}_p99_ms": float(np.percentile(ms, 99)),
        f"{prefix}_max_ms": float(ms.max()),
    }


def tick_blocking(store: EpisodeStore, frames: dict[str, np.ndarray], episodes: int) -> dict[str, Any]:
    """A real-time 30 Hz loop: time spent in writer calls per step, and how late each tick woke."""
    writer = store.writer()
    blocked, late = [], []
    backlog = 0
    period = 1.0 / HZ
    steps = len(frames[CAMERAS[0]])
    bar = tqdm(total=episodes * steps, desc="30 Hz control loop", unit="step")
    next_tick = time.perf_counter()
    for e in range(episodes):
        episode = CameraEpisode(frames, e)
        for t in range(steps):
            delay = next_tick - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            late.append(time.perf_counter() - next_tick)
            record = episode.record(t)
            t0 = time.perf_counter()
            episode.send(writer, t, record)
            blocked.append(time.perf_counter() - t0)
            backlog = max(backlog, writer.backlog)
            next_tick += period
            bar.update()
    bar.close()
    t0 = time.perf_counter()
    writer.close()
    check(writer)
    return {
        **percentiles_ms(blocked, "tick_block"),
        **percentiles_ms(late, "tick_wakeup_late"),
        "tick_steps": len(blocked),
        "writer_backlog_max_calls": backlog,
        "drain_after_last_end_s": time.perf_counter() - t0,
    }


def throughput(store: EpisodeStore, frames: dict[str, np.ndarray], episodes: int) -> dict[str, Any]:
    """Feed whole episodes with no sleeping; steps/s from the first begin to flush() returning."""
    writer = store.writer()
    steps = len(frames[CAMERAS[0]])
    t0 = time.perf_counter()
    for e in tqdm(range(episodes), desc="writer throughput", unit="episode"):
        episode = CameraEpisode(frames, 1000 + e)
        for t in range(steps):
            episode.send(writer, t, episode.record(t))
    writer.flush()
    elapsed = time.perf_counter() - t0
    writer.close()
    check(writer)
    total = episodes * steps
    image_bytes = total * sum(f[0].nbytes for f in frames.values())
    return {
        "realtime_factor": total / elapsed / HZ,
        "write_steps_per_s": total / elapsed,
        "write_image_mb_s": image_bytes / elapsed / 1e6,
        "throughput_steps": total,
        "throughput_s": elapsed,
    }


def image_compression(store: EpisodeStore) -> float:
    """Raw image bytes over on-disk bytes of every committed episode's image arrays (local store)."""
    assert store.backend.local_root is not None
    raw = disk = 0
    for record in store.refresh().records(kind=None):
        group = zarr.open_group(store.backend.zarr, path=f"episodes/{record.episode_id}", mode="r")
        for name, array in group["images"].arrays():
            raw += array.nbytes
            folder = store.backend.local_root / "episodes" / record.episode_id / "images" / name
            disk += sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return raw / disk


def decoded_bytes(episode: Episode) -> int:
    steps = sum(
        sum(img.nbytes for img in s.observation.images.values())
        + s.observation.state.nbytes
        + s.action.nbytes
        + 8  # float64 timestamp
        for s in episode.steps
    )
    return steps + sum(c.actions.nbytes + c.step_log_prob.nbytes for c in episode.chunks)


def read_throughput(uri: str) -> dict[str, Any]:
    store = EpisodeStore(uri, create=False).refresh()
    ids = [r.episode_id for r in store.records(kind=None)]
    t0 = time.perf_counter()
    total = sum(decoded_bytes(store.read_episode(i)) for i in tqdm(ids, desc="read episodes", unit="episode"))
    elapsed = time.perf_counter() - t0
    return {"read_mb_s": total / elapsed / 1e6, "read_episodes": len(ids), "read_mb": total / 1e6}


def pick_compression(root: Path, seeds: int) -> dict[str, Any]:
    """The built-in task's 64x64 images, from scripted-expert episodes of 4 tasks x `seeds` layouts."""
    store = EpisodeStore(root / "pick")
    episodes = record_demonstrations(PickEnv(), make_contexts("lab_a", range(seeds)), expert_action, False)
    with store.writer() as writer:
        for episode in episodes:
            store.write_episode(episode, writer)
    check(writer)
    return {
        "compression_ratio_pick": image_compression(store),
        "pick_episodes": len(episodes),
        "pick_steps": sum(len(e.steps) for e in episodes),
    }


def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="small sizes, save nothing (overrides the others)")
    parser.add_argument("--tick-episodes", type=int, default=3, help="episodes in the 30 Hz loop")
    parser.add_argument("--steps", type=int, default=300, help="steps per camera episode (10 s at 30 Hz)")
    parser.add_argument("--throughput-episodes", type=int, default=4, help="episodes fed with no sleeping")
    parser.add_argument("--pick-seeds", type=int, default=4, help="PickEnv layouts (x 4 tasks) for its compression")
    parser.add_argument("--index-sizes", default="1000,2000,5000,10000", help="store sizes for the index timings")
    parser.add_argument("--repeats", type=int, default=5, help="fresh opens per index timing (median)")
    parser.add_argument("--workers", type=int, default=2, help="processes populating the index store")
    parser.add_argument("--out", type=Path, default=RESULTS / "store.json", help="JSON output (PNG beside it)")
    args = parser.parse_args()
    if args.smoke:
        args.tick_episodes, args.steps, args.throughput_episodes, args.pick_seeds = 1, 60, 1, 1
        args.index_sizes, args.repeats = "200,400", 2
    sizes = sorted(int(n) for n in args.index_sizes.split(","))
    start = time.perf_counter()
    load = os.getloadavg()
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="ript-store-bench-") as tmp:
        root = Path(tmp)
        frames = camera_frames(args.steps)
        camera = EpisodeStore(root / "camera")
        result.update(tick_blocking(camera, frames, args.tick_episodes))
        result.update(throughput(camera, frames, args.throughput_episodes))
        result["compression_ratio"] = image_compression(camera)
        result.update(read_throughput(camera.uri))
        zstd = EpisodeStore(root / "camera-zstd")
        with zstd.writer(compressor="zstd") as writer:
            episode = CameraEpisode(frames, 2000)
            for t in range(episode.steps):
                episode.send(writer, t, episode.record(t))
        check(writer)
        result["compression_ratio_zstd5"] = image_compression(zstd)
        result.update(pick_compression(root, args.pick_seeds))
        result.update(index_scaling(root, sizes, args.repeats, args.workers))
    result.update(
        {
            "images": IMAGES_NOTE,
            "index_population": (
                f"local: tiny committed episodes (2 steps, one 8x8 camera, state {STATE_DIM}, one chunk of "
                f"{CHUNK}x{ACTION_DIM}, sim label, {K} per context) written by {args.workers} spawned processes, "
                "each with one shared EpisodeWriter (store.write_episode, flushed after every episode); every size "
                "step adds one index session per process. S3: the store marker, root group metadata and every "
                "index segment copied from the local store into a moto bucket with obstore.put (the exact objects "
                "the writers produced). The episode arrays were NOT copied: open, refresh and complete_groups never "
                "read them, and moto served only ~250 puts/s in development (GIL-bound, no faster with more client "
                "threads), so episode_objects_not_copied_to_s3 would take minutes. moto scans every key of a "
                "bucket on each list, so with the arrays present its lists would be a few ms slower; S3 would not."
            ),
            "index_timing": (
                f"median of {args.repeats} fresh EpisodeStore(uri, create=False) + refresh() + "
                f"complete_groups({K}) in this process (OS page cache warm)"
            ),
            "tick_block_note": (
                "per control step: summed wall time of the writer calls made that step (add_step, add_chunk "
                "every 8 steps, begin/end at the episode's first/last step); tick_wakeup_late: how late the "
                "loop woke after sleeping to each tick (GIL and CPU contention, not blocking in the writer)"
            ),
            "read_note": "decoded arrays (images, state, actions, timestamps, chunks), MB = 1e6 bytes, page cache warm",
            "compression_note": (
                "writer defaults: blosc lz4 clevel 5, images bit-shuffled, 16 frames per chunk; zstd5: the same "
                "episode written with compressor='zstd'; pick: scripted-expert PickEnv episodes, 64x64"
            ),
            "params": {
                "hz": HZ,
                "cameras": list(CAMERAS),
                "image": [SIDE, SIDE, 3],
                "state_dim": STATE_DIM,
                "action_dim": ACTION_DIM,
                "chunk": CHUNK,
                "steps_per_episode": args.steps,
                "tick_episodes": args.tick_episodes,
                "throughput_episodes": args.throughput_episodes,
                "pick_seeds": args.pick_seeds,
                "index_sizes": sizes,
                "repeats": args.repeats,
                "workers": args.workers,
                "smoke": args.smoke,
            },
            "machine": {
                "cpu_count": os.cpu_count(),
                "load_average_at_start": list(load),
                "platform": platform.platform(),
                "python": platform.python_version(),
                "zarr": zarr.__version__,
                "numcodecs": numcodecs.__version__,
                "numpy": np.__version__,
                "obstore": obstore.__version__,
            },
            "benchmark_wall_s": time.perf_counter() - start,
        }
    )
    if not args.smoke:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
        plot_index(result, args.out.with_name(f"{args.out.stem}_index.png"))
    print(
        f"tick blocked by the writer: p50 {result['tick_block_p50_ms']:.3f} ms, p99 {result['tick_block_p99_ms']:.3f}"
        f" ms, max {result['tick_block_max_ms']:.3f} ms (goal p99 <= 0.5 ms)\n"
        f"realtime factor {result['realtime_factor']:.1f} (goal >= 10), raw images {result['write_image_mb_s']:.0f}"
        f" MB/s\ncompression: camera {result['compression_ratio']:.2f} (zstd5 {result['compression_ratio_zstd5']:.2f}),"
        f" PickEnv {result['compression_ratio_pick']:.1f}\nread {result['read_mb_s']:.0f} MB/s decoded\n"
        f"index local {result['index_local_s']}\nindex S3 {result['index_s3_s']} (goal: 10k local <= 1 s)\n"
        f"wall {result['benchmark_wall_s']:.0f} s" + ("" if args.smoke else f"; saved {args.out}")
    )
    return result


if __name__ == "__main__":
    main()
