"""The episode writer: an `EpisodeSink` that stores episodes without ever stalling a tick.

The control thread only puts references on a queue (a few microseconds per call); a
background thread does the copying, compression and I/O. Each episode is written under
`staging/<id>`, streamed in blocks of `flush_frames` steps so a long episode never
piles up in memory, and committed when it ends: its folder is promoted to
`episodes/<id>` and then its row is appended to the index. A crash at any point before
that row leaves the episode invisible to every reader (`ript store verify` lists what
was left in staging).

Layout of one episode group, readable with a plain `zarr.open_group`:
    images/<camera>  uint8 (F, H, W, 3)   the kept frames, chunked along time, blosc-compressed
    frame_steps      int32 (F,)           the step of each kept frame (all steps by default; a
                                          simulator that renders only to re-plan keeps fewer);
                                          a frame at step T (the step count) is the final scene
    state            float32 (T, S)       proprioception at each step
    actions          float32 (T, A)       command sent after the safety filter
    timestamps       float64 (T,)         wall-clock time of each step, seconds
    capture_stamps   float64 (T, N)       on an arm: the drivers' capture stamp of each input the
                                          step used (names in `capture_stamp_inputs`), seconds
    chunk_actions    float32 (C, H, A)    each action chunk as sampled by the policy
    chunk_log_prob   float32 (C, H)       per-action log-probability under the sampling policy
    chunk_extras/<n> float32 (C, ...)     what the family needs to re-score a chunk (a flow policy's chain)
    attributes       the `EpisodeMeta` fields, `chunk_starts` (the first step each chunk
                     executed), `chunk_observation_steps` (the step whose observation each chunk
                     was planned from: its start in lock step, earlier on an arm that plans
                     ahead while the previous chunk plays), `safety_clipped_steps` (the
                     filter changed the command), `safety_limited_steps` (and not only by the
                     policy's own action bounds: PPO does not credit them), `intervened` (the
                     steps a person commanded: their `actions` are the person's commands; the
                     counts are `interventions` and `intervened_steps`)
    ript_manifest    every object of the folder (but the group's zarr.json) with its size and sha256,
                     recorded as it was written; the index row seals it (`ript_robot.data.integrity`)
Every chunk of every array also carries a CRC32C checksum. The arrays are encoded in this process
(`ript_robot.data.arrays`), not through zarr-python, whose per-array overhead cost a short episode
about 40 ms; the bytes are the ones zarr writes.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ript_robot.data.arrays import ArrayStream, Blosc, group_metadata
from ript_robot.data.index import episode_row, meta_to_dict
from ript_robot.data.integrity import GROUP_METADATA, MANIFEST_ATTR, digest, seal
from ript_robot.types import ActionChunk, EpisodeMeta, Observation, StepRecord

if TYPE_CHECKING:
    from ript_robot.data.store import EpisodeStore

log = logging.getLogger(__name__)

STEP_ARRAYS = ("state", "actions", "timestamps")


@dataclass
class _Staged:
    """One episode being written: what is buffered and what already went to the store."""

    meta: EpisodeMeta
    images: dict[str, list[np.ndarray]] = field(default_factory=dict)
    steps: dict[str, list[np.ndarray]] = field(default_factory=lambda: {name: [] for name in STEP_ARRAYS})
    chunk_actions: list[np.ndarray] = field(default_factory=list)
    chunk_log_prob: list[np.ndarray] = field(default_factory=list)
    chunk_extras: dict[str, list[np.ndarray]] = field(default_factory=dict)
    chunk_starts: list[int] = field(default_factory=list)
    chunk_observation_steps: list[int] = field(default_factory=list)
    stamp_inputs: list[str] = field(default_factory=list)
    frame_steps: list[int] = field(default_factory=list)
    clipped: list[int] = field(default_factory=list)
    limited: list[int] = field(default_factory=list)
    intervened: list[int] = field(default_factory=list)
    streams: dict[str, ArrayStream] = field(default_factory=dict)  # arrays already in the store
    manifest: dict[str, list[Any]] = field(default_factory=dict)  # key -> [bytes, sha256] of each object written
    received: int = 0  # steps received
    written: int = 0  # steps already in the store


class EpisodeWriter:
    """Writes episodes to an `EpisodeStore` from a background thread.

    chunk_frames: steps per stored chunk of the camera arrays (>= 1).
    flush_frames: steps buffered before a block is written (a multiple of chunk_frames).
    compressor: blosc codec name ('lz4' is fast, 'zstd' smaller); clevel: 1..9.
    """

    def __init__(
        self,
        store: EpisodeStore,
        chunk_frames: int = 16,
        flush_frames: int = 64,
        compressor: str = "lz4",
        clevel: int = 5,
    ):
        if chunk_frames < 1 or flush_frames < chunk_frames or flush_frames % chunk_frames:
            raise ValueError(
                f"need chunk_frames >= 1 and flush_frames a multiple of it, got {chunk_frames} and {flush_frames}"
            )
        self.store = store
        self.chunk_frames = chunk_frames
        self.flush_frames = flush_frames
        # bit-shuffling uint8 images lets lz4 find the runs in sensor noise's high bits (1.0 -> 1.17 on noisy frames)
        self._image_codec = Blosc(compressor, clevel, "bitshuffle")
        self._codec = Blosc(compressor, clevel, "shuffle")
        self._queue: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._open: dict[str, _Staged] = {}
        self._pending = 0
        self._idle = threading.Condition()
        self.committed: list[str] = []
        self.failures: list[str] = []
        self._thread = threading.Thread(target=self._run, name="episode-writer", daemon=True)
        self._thread.start()

    # --- EpisodeSink: called on the control thread, never blocks on I/O ---

    def begin(self, meta: EpisodeMeta) -> None:
        self._put(("begin", meta))

    def add_chunk(
        self, episode_id: str, chunk: ActionChunk, observation: Observation, planned_step: int | None = None
    ) -> None:
        self._put(("chunk", episode_id, chunk, planned_step))

    def add_step(self, episode_id: str, record: StepRecord) -> None:
        self._put(("step", episode_id, record))

    def end(self, meta: EpisodeMeta, final: Observation | None = None) -> None:
        self._put(("end", meta, final))

    # --- control ---

    @property
    def backlog(self) -> int:
        """Queued calls not yet handled by the writer thread."""
        return self._pending

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every episode ended so far is committed (or failed)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._pending:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"episode writer still has {self._pending} queued calls after {timeout} s")
                self._idle.wait(remaining)

    def close(self) -> None:
        """Flush, then stop the thread. Episodes begun but not ended stay uncommitted."""
        self.flush()
        self._queue.put(None)
        self._thread.join()

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _put(self, item: tuple[Any, ...]) -> None:
        with self._idle:
            self._pending += 1
        self._queue.put(item)

    # --- writer thread ---

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                self._handle(item)
            except Exception as exc:  # one bad episode must not stop the writer
                episode_id = item[1].episode_id if item[0] in ("begin", "end") else item[1]
                self._open.pop(episode_id, None)
                message = f"episode {episode_id} was not stored: {type(exc).__name__}: {exc}"
                log.error(message)
                self.failures.append(message)
            finally:
                with self._idle:
                    self._pending -= 1
                    if not self._pending:
                        self._idle.notify_all()

    def _handle(self, item: tuple[Any, ...]) -> None:
        kind = item[0]
        if kind == "begin":
            meta: EpisodeMeta = item[1]
            self._open[meta.episode_id] = _Staged(meta)
            return
        if kind == "end":
            self._commit(item[1], item[2])
            return
        staged = self._open.get(item[1])
        if staged is None:  # the episode failed earlier; its remaining calls are dropped
            return
        if kind == "chunk":
            chunk: ActionChunk = item[2]
            staged.chunk_actions.append(np.asarray(chunk.actions, np.float32))
            staged.chunk_log_prob.append(np.asarray(chunk.step_log_prob, np.float32))
            if staged.chunk_extras and chunk.extras.keys() != staged.chunk_extras.keys():
                raise ValueError(
                    f"chunk extras {sorted(chunk.extras)}, the episode began with {sorted(staged.chunk_extras)}"
                )
            for name, value in chunk.extras.items():
                staged.chunk_extras.setdefault(name, []).append(np.asarray(value, np.float32))
            staged.chunk_starts.append(staged.received)
            staged.chunk_observation_steps.append(staged.received if item[3] is None else item[3])
        else:
            record: StepRecord = item[2]
            if record.observation.images:  # steps without a frame: the runtime kept none (RuntimeConfig.frame_every)
                self._add_frame(staged, record.observation.images, f"step {record.step}")
            staged.steps["state"].append(np.asarray(record.observation.state, np.float32))
            staged.steps["actions"].append(np.asarray(record.action, np.float32))
            staged.steps["timestamps"].append(np.float64(record.timestamp))
            stamps = record.observation.stamps
            if stamps:  # an arm's inputs: the drivers' capture stamps, in a fixed order per episode
                staged.stamp_inputs = staged.stamp_inputs or sorted(stamps)
                row = [stamps.get(name, np.nan) for name in staged.stamp_inputs]
                staged.steps.setdefault("capture_stamps", []).append(np.asarray(row, np.float64))
            if record.safety_clipped:
                staged.clipped.append(record.step)
            if record.safety_limited:
                staged.limited.append(record.step)
            if record.intervened:
                staged.intervened.append(record.step)
            staged.received += 1
            if staged.received - staged.written >= self.flush_frames:
                self._flush_steps(staged)

    @staticmethod
    def _add_frame(staged: _Staged, images: dict[str, np.ndarray], what: str) -> None:
        """Keep a frame of every camera as the frame of step `staged.received`."""
        if staged.images and images.keys() != staged.images.keys():  # every frame has the first's cameras
            raise ValueError(f"{what} has cameras {sorted(images)}, the episode began with {sorted(staged.images)}")
        for camera, image in images.items():
            staged.images.setdefault(camera, []).append(image)
        staged.frame_steps.append(staged.received)

    def _flush_steps(self, staged: _Staged) -> None:
        """Write the buffered steps and frames: each array's new and rewritten chunks, then its metadata."""
        if staged.received == staged.written and not staged.frame_steps:
            return
        if not staged.streams:  # the folder is a zarr group from its first block on
            self._write(staged, GROUP_METADATA, group_metadata())
            if staged.images:
                self._write(staged, f"images/{GROUP_METADATA}", group_metadata())
        blocks = {f"images/{cam}": np.stack(frames) for cam, frames in staged.images.items() if frames}
        if staged.frame_steps:
            blocks["frame_steps"] = np.asarray(staged.frame_steps, np.int32)
        blocks.update({name: np.stack(values) for name, values in staged.steps.items() if values})
        for name, block in blocks.items():
            self._append(staged, name, block, self.chunk_frames if name.startswith("images/") else 1024)
        staged.images = {cam: [] for cam in staged.images}
        staged.frame_steps = []
        staged.steps = {name: [] for name in staged.steps}
        staged.written = staged.received

    def _append(self, staged: _Staged, name: str, block: np.ndarray, rows_per_chunk: int) -> None:
        if name not in staged.streams:
            codec = self._image_codec if name.startswith("images/") else self._codec
            staged.streams[name] = ArrayStream(codec, rows_per_chunk)
        for key, data in staged.streams[name].append(block).items():
            self._write(staged, f"{name}/{key}", data)

    def _write(self, staged: _Staged, key: str, data: bytes) -> None:
        """Write one object of the staged folder and record it for the manifest (the last write of a key counts)."""
        self.store.backend.put(f"{_staging(staged.meta.episode_id)}/{key}", data)
        if key != GROUP_METADATA:
            staged.manifest[key] = [len(data), digest(data)]

    def _commit(self, meta: EpisodeMeta, final: Observation | None) -> None:
        staged = self._open.pop(meta.episode_id, None)
        if staged is None:  # the episode failed earlier and was reported then
            return
        staged.meta = meta
        if staged.received == 0:  # ended before its first step (a stop at once): nothing to learn from
            log.warning("episode %s ended before its first step (%s); not stored", meta.episode_id, meta.end_reason)
            return
        if final is not None and final.images and staged.images:  # episodes that keep frames keep the final one
            self._add_frame(staged, final.images, "the final observation")
        self._flush_steps(staged)
        if staged.chunk_actions:
            blocks = [("chunk_actions", staged.chunk_actions), ("chunk_log_prob", staged.chunk_log_prob)]
            blocks += [(f"chunk_extras/{name}", values) for name, values in staged.chunk_extras.items()]
            if staged.chunk_extras:
                self._write(staged, f"chunk_extras/{GROUP_METADATA}", group_metadata())
            for name, values in blocks:
                self._append(staged, name, np.stack(values), len(values))
        attrs = meta_to_dict(meta)
        attrs["chunk_starts"] = staged.chunk_starts
        attrs["chunk_observation_steps"] = staged.chunk_observation_steps
        if staged.stamp_inputs:
            attrs["capture_stamp_inputs"] = staged.stamp_inputs
        attrs["safety_clipped_steps"] = staged.clipped
        attrs["safety_limited_steps"] = staged.limited
        attrs["intervened"] = staged.intervened
        manifest = staged.manifest
        self._write(staged, GROUP_METADATA, group_metadata({"ript_episode": attrs, MANIFEST_ATTR: manifest}))
        self.store.backend.promote(_staging(meta.episode_id), f"episodes/{meta.episode_id}")
        self.store.index_writer.append(episode_row(meta, time.time(), seal(attrs, manifest)))
        self.committed.append(meta.episode_id)


def _staging(episode_id: str) -> str:
    return f"staging/{episode_id}"
